#!/usr/bin/env python3
"""An attacker on the simulated chassis's partner link, for test/integration/partner-channel.test.ts.

Run inside a board's network namespace (the test starts and ends it). Listens on IFACE with a raw
packet socket for SECONDS and records the TCP payloads sent to SERVER_IP:SERVER_PORT (one connection:
the first seen), in either direction of the interface. With `inject` (run in the namespace of the
connection's client, so that a frame sent on IFACE arrives at the server across the link), it forges
segments into that live connection: the next
sequence number after a segment it saw, the sender's addresses, ports and MACs, and a TLS
application-data record of random bytes (what an attacker writes to pass as the sender), retrying on
later segments up to 3 times. Prints `ready` on stderr once it listens, then one JSON line on stdout: {"captured": [hex...], "injected": n}.
Test tool only; no traffic leaves the namespace's link.
"""
import json
import os
import socket
import struct
import sys
import time

iface, server_ip, server_port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
inject = len(sys.argv) > 5 and sys.argv[5] == 'inject'
ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800

s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(ETH_P_ALL))
s.bind((iface, 0))
s.settimeout(0.2)
print('ready', file=sys.stderr, flush=True)
dst = socket.inet_aton(server_ip)


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b'\0'
    total = sum(struct.unpack('!%dH' % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def forge(frame: bytes, ihl: int, seq_next: int, ack: int, sport: int, payload: bytes) -> bytes:
    eth = frame[:14]
    ip_src, ip_dst = frame[14 + 12:14 + 16], frame[14 + 16:14 + 20]
    tcp = struct.pack('!HHIIBBHHH', sport, server_port, seq_next, ack, 5 << 4, 0x18, 65535, 0, 0)
    pseudo = ip_src + ip_dst + struct.pack('!BBH', 0, socket.IPPROTO_TCP, len(tcp) + len(payload))
    tcp = tcp[:16] + struct.pack('!H', csum(pseudo + tcp + payload)) + tcp[18:]
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(tcp) + len(payload), 0x4242, 0x4000, 64, socket.IPPROTO_TCP, 0, ip_src, ip_dst)
    ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
    return eth + ip + tcp + payload


captured = []
conn_port = None
injected = 0
end = time.time() + seconds
while time.time() < end:
    try:
        frame, addr = s.recvfrom(65535)
    except socket.timeout:
        continue
    if frame[14 + 4:14 + 6] == b'\x42\x42':
        continue  # a frame we forged (IP id 0x4242)
    if len(frame) < 34 or struct.unpack('!H', frame[12:14])[0] != ETH_P_IP:
        continue
    ihl = (frame[14] & 0x0F) * 4
    if frame[14 + 9] != socket.IPPROTO_TCP or frame[14 + 16:14 + 20] != dst:
        continue
    total_len = struct.unpack('!H', frame[16:18])[0]
    t = 14 + ihl
    sport, dport, seq, ack, off = struct.unpack('!HHIIB', frame[t:t + 13])
    if dport != server_port:
        continue
    data = frame[t + (off >> 4) * 4:14 + total_len]
    if not data:
        continue
    if conn_port is None:
        conn_port = sport
    if sport != conn_port:
        continue
    captured.append(data.hex())
    if inject and injected < 3 and len(captured) % 4 == 3:
        body = os.urandom(48)
        record = bytes([23, 3, 3]) + struct.pack('!H', len(body)) + body
        s.send(forge(frame, ihl, (seq + len(data)) & 0xFFFFFFFF, ack, sport, record))
        injected += 1
print(json.dumps({'captured': captured, 'injected': injected, 'port': conn_port}))
