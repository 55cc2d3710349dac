/*
 * dxfuzz: host-only fuzzer for dxcore (not part of the guest image).
 * Feeds grammar-made, mutated and random datagrams, random AUTH verdicts and
 * corrupted saved states into the core and checks every invariant, the reply
 * format, the limits and the save/load round trip.
 *
 *   gcc -O1 -g -fsanitize=address,undefined -o dxfuzz dxfuzz.c dxcore.c
 *   ./dxfuzz [seconds] [seed]
 */
#include "dxcore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static unsigned rn(unsigned n) { return n ? (unsigned)(rnd() % n) : 0; }

#define FAIL(...)                                                                      \
    do {                                                                               \
        fprintf(stderr, "FAIL line %d: ", __LINE__);                                   \
        fprintf(stderr, __VA_ARGS__);                                                  \
        fputc('\n', stderr);                                                           \
        exit(1);                                                                       \
    } while (0)

static const char *cmds[] = {"REG", "CALL", "END", "GET", "STATS", "reg", "FOO", ""};

static void gen_sub(char *o)
{
    if (rn(20) == 0) { /* invalid or odd names */
        static const char *odd[] = {"", "a b", "x*", "0123456789012345678901234567890123",
                                    "\xff", "+", "a.b-c_d+e"};
        strcpy(o, odd[rn(7)]);
        return;
    }
    sprintf(o, "s%u", rn(40));
}

static size_t gen_request(uint8_t *buf, size_t cap, uint64_t total)
{
    char a[64], b[64];
    int n = 0;
    unsigned idn = rn(60);
    const char *cmd = cmds[rn(8)];
    gen_sub(a);
    gen_sub(b);
    switch (rn(6)) {
    case 0:
        n = snprintf((char *)buf, cap, "i%u REG %s", idn, a);
        break;
    case 1:
        n = snprintf((char *)buf, cap, "i%u CALL %s %s", idn, a, b);
        break;
    case 2:
        n = snprintf((char *)buf, cap, "i%u END %llu", idn,
                     (unsigned long long)(total > 3 ? total - rn(6) : rn(4)));
        break;
    case 3:
        n = snprintf((char *)buf, cap, "i%u GET %s", idn, a);
        break;
    case 4:
        n = snprintf((char *)buf, cap, "i%u STATS", idn);
        break;
    default:
        n = snprintf((char *)buf, cap, "i%u %s %s %s %s", idn, cmd, a, b, a);
        break;
    }
    size_t len = (size_t)n < cap ? (size_t)n : cap;
    switch (rn(10)) {
    case 0:
        if (len + 1 < cap)
            buf[len++] = '\n';
        break;
    case 1:
        if (len + 2 < cap) {
            buf[len++] = '\r';
            buf[len++] = '\n';
        }
        break;
    case 2: /* mutate bytes */
        for (unsigned k = rn(4) + 1; k-- && len;)
            buf[rn((unsigned)len)] = (uint8_t)rnd();
        break;
    case 3: /* cut */
        len = rn((unsigned)len + 1);
        break;
    default:
        break;
    }
    return len;
}

static void check_reply(const dx_result *r, const uint8_t *req, size_t len)
{
    if (r->action != DX_REPLY)
        return;
    if (r->reply_len < 3 || r->reply_len > DX_MAX_REPLY)
        FAIL("reply length %zu", r->reply_len);
    for (size_t i = 0; i < r->reply_len; i++)
        if ((uint8_t)r->reply[i] < 0x20 || (uint8_t)r->reply[i] > 0x7E)
            FAIL("unprintable reply byte");
    size_t idl = 0;
    while (idl < len && req[idl] != ' ' && req[idl] != '\n' && req[idl] != '\r')
        idl++;
    if (memcmp(r->reply, req, idl) != 0 || r->reply[idl] != ' ')
        FAIL("reply does not start with the id: %.*s -> %s", (int)len, req, r->reply);
    const char *rest = r->reply + idl + 1;
    if (strncmp(rest, "OK ", 3) != 0 && strncmp(rest, "ERR ", 4) != 0)
        FAIL("reply neither OK nor ERR: %s", r->reply);
}

static void roundtrip(dx_state *st, uint8_t *buf, uint8_t *buf2)
{
    size_t n = dx_save(st, buf, DX_STATE_MAX_LEN);
    if (!n)
        FAIL("save failed");
    dx_state *t = dx_new(dx_version(st));
    const char *why = "";
    if (dx_load(t, buf, n, &why) != 0)
        FAIL("load of own save failed: %s", why);
    if (dx_check(t) != 0)
        FAIL("loaded state inconsistent");
    size_t n2 = dx_save(t, buf2, DX_STATE_MAX_LEN);
    if (n2 != n || memcmp(buf, buf2, n) != 0)
        FAIL("save/load/save not identical");
    if (dx_digest(t) != dx_digest(st))
        FAIL("digest differs after round trip");
    /* corrupted copies must be rejected or load into a consistent state */
    for (int k = 0; k < 20; k++) {
        memcpy(buf2, buf, n);
        size_t m = n;
        for (unsigned f = rn(3) + 1; f--;)
            buf2[rn((unsigned)m)] ^= (uint8_t)(1u << rn(8));
        if (rn(3) == 0)
            m = rn((unsigned)m + 1);
        if (rn(2) && m >= DX_STATE_HDR_LEN) {
            /* fix the CRCs so the body parser itself is exercised */
            uint32_t blen = (uint32_t)(m - DX_STATE_HDR_LEN);
            uint32_t c;
            memcpy(buf2 + 16, &blen, 4);
            c = dx_crc32(buf2 + DX_STATE_HDR_LEN, blen);
            memcpy(buf2 + 20, &c, 4);
            c = dx_crc32(buf2, 56);
            memcpy(buf2 + 56, &c, 4);
        }
        dx_state *u = dx_new("9.9.9");
        if (dx_load(u, buf2, m, &why) == 0 && dx_check(u) != 0)
            FAIL("corrupted state loaded inconsistent");
        dx_free(u);
    }
    dx_free(t);
}

static void capacity(void)
{
    dx_state *st = dx_new("1.0.0");
    dx_client c = {0x0100000a, 40000};
    dx_result r;
    char req[80];
    uint32_t full = 0;
    for (int i = 0; i < DX_MAX_SUBS + 10; i++) {
        int n = sprintf(req, "r%d REG sub%d", i, i);
        dx_request(st, c, (uint8_t *)req, (size_t)n, 0, &r);
        if (r.action == DX_NEED_AUTH)
            dx_auth_done(st, DX_AUTH_OK, &r);
        if (strstr(r.reply, "ERR FULL"))
            full++;
    }
    if (dx_nsubs(st) != DX_MAX_SUBS || full != 10)
        FAIL("subscriber capacity: %u subs, %u FULL", dx_nsubs(st), full);
    full = 0;
    for (int i = 0; i < DX_MAX_SUBS / 2; i++) {
        int n = sprintf(req, "c%d CALL sub%d sub%d", i, 2 * i, 2 * i + 1);
        dx_request(st, c, (uint8_t *)req, (size_t)n, 0, &r);
        if (strstr(r.reply, "ERR FULL"))
            full++;
    }
    if (dx_active(st) != DX_MAX_CALLS || dx_check(st) != 0)
        FAIL("call capacity: %u active", dx_active(st));
    static uint8_t buf[DX_STATE_MAX_LEN], buf2[DX_STATE_MAX_LEN];
    size_t n = dx_save(st, buf, sizeof buf);
    printf("full state (%u subs, %u calls, %u cached): %zu bytes (max %zu)\n", dx_nsubs(st),
           dx_active(st), dx_ncache(st), n, (size_t)DX_STATE_MAX_LEN);
    roundtrip(st, buf, buf2);
    dx_free(st);
}

int main(int argc, char **argv)
{
    int seconds = argc > 1 ? atoi(argv[1]) : 10;
    if (argc > 2)
        rng = strtoull(argv[2], NULL, 0) | 1;
    capacity();
    static uint8_t save1[DX_STATE_MAX_LEN], save2[DX_STATE_MAX_LEN];
    time_t end = time(NULL) + seconds;
    unsigned long long reqs = 0, replies = 0, silent = 0, auths = 0;
    while (time(NULL) < end) {
        dx_state *st = dx_new("1.0.0");
        for (int i = 0; i < 20000; i++) {
            uint8_t buf[DX_MAX_DATAGRAM];
            size_t len;
            if (rn(8) == 0) {
                len = rn(rn(2) ? 40 : DX_MAX_DATAGRAM);
                for (size_t k = 0; k < len; k++)
                    buf[k] = rn(3) ? (uint8_t)(0x20 + rn(0x60)) : (uint8_t)rnd();
            } else {
                len = gen_request(buf, sizeof buf, dx_total(st));
            }
            dx_client c = {0x0100000a, (uint16_t)(40000 + rn(3))};
            dx_result r;
            uint64_t seq0 = dx_seq(st);
            dx_request(st, c, buf, len, rn(200) == 0, &r);
            reqs++;
            if (r.action == DX_NEED_AUTH) {
                auths++;
                if (dx_seq(st) != seq0)
                    FAIL("seq advanced before the AUTH verdict");
                dx_auth_done(st, (enum dx_verdict)rn(3), &r);
            }
            if (dx_seq(st) != seq0 + 1)
                FAIL("seq must advance by one per datagram");
            if (r.action == DX_REPLY) {
                replies++;
                check_reply(&r, buf, len);
            } else {
                silent++;
            }
            if (i % 97 == 0 && dx_check(st) != 0)
                FAIL("invariant broken: %d", dx_check(st));
            if (i % 5000 == 4999)
                roundtrip(st, save1, save2);
        }
        dx_free(st);
    }
    /* random blobs */
    for (int k = 0; k < 20000; k++) {
        size_t m = rn(400);
        for (size_t i = 0; i < m; i++)
            save1[i] = (uint8_t)rnd();
        if (m >= 8 && rn(2))
            memcpy(save1, DX_STATE_MAGIC, 8);
        dx_state *u = dx_new("1.0.0");
        const char *why;
        if (dx_load(u, save1, m, &why) == 0 && dx_check(u) != 0)
            FAIL("random blob loaded inconsistent");
        dx_free(u);
    }
    printf("ok: %llu requests, %llu replies, %llu silent, %llu AUTH asks\n", reqs, replies,
           silent, auths);
    return 0;
}
