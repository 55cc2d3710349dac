/*
 * dxcore: the deterministic heart of the DX200-style switching application.
 *
 * Owns the subscriber table, the active calls, the reply cache, the request
 * parser and the saved-state (de)serialiser. It does no I/O and reads no clock:
 * every reply is a pure function of the state and the request sequence, which
 * is what lets a primary and a backup guest compute identical replies.
 * The AUTH exchange is the only outside input a request can need; the core
 * asks for it (DX_NEED_AUTH) and the I/O layer (dxlegacy.c) supplies the
 * verdict. See ../PROTOCOL.md for the contract this implements.
 */
#ifndef DXCORE_H
#define DXCORE_H

#include <stddef.h>
#include <stdint.h>

/* The application generation this build implements, chosen at compile time
 * (image-build/build-guest.sh passes -DDX_FORMAT=<major of DX_VERSION>):
 *   1: the v1 protocol and saved-state format v1 (the default; unchanged)
 *   2: adds call forwarding (FWD, GET's fwd= field) and saved-state format v2;
 *      reads format v1 states and converts them (PROTOCOL.md §8, §11) */
#ifndef DX_FORMAT
#define DX_FORMAT 1
#endif
#if DX_FORMAT != 1 && DX_FORMAT != 2
#error "DX_FORMAT must be 1 or 2"
#endif

#define DX_MAX_ID 16        /* request id: 1..16 chars 0x21..0x7E */
#define DX_MAX_SUB 32       /* subscriber name: 1..32 chars [A-Za-z0-9_.+-] */
#define DX_MAX_SUBS 4096    /* registered subscribers */
#define DX_MAX_CALLS 2048   /* concurrent active calls */
#define DX_CACHE_SIZE 4096  /* reply cache entries, FIFO eviction */
#define DX_V1_MAX_REPLY 128 /* longest v1 reply; the limit for cached replies in a v1 body */
#if DX_FORMAT >= 2
/* GET grows by " fwd=<sub>": 16 id + 1 + "OK GET " 7 + 32 + " calls=" 7 + 20 digits
 * + " state=busy" 11 + " fwd=" 5 + 32 = 131 */
#define DX_MAX_REPLY 131
#else
#define DX_MAX_REPLY DX_V1_MAX_REPLY /* longest reply the core can produce, bytes */
#endif
#define DX_MAX_VERSION 32   /* longest application version string */
#define DX_MAX_DATAGRAM 2048 /* longer service datagrams get ERR MALFORMED */

/* Saved-state format (see PROTOCOL.md "Saved state"). */
#define DX_STATE_MAGIC "DXSTATE"   /* 8 bytes with the trailing NUL */
#define DX_STATE_FORMAT DX_FORMAT /* the format this build writes */
#define DX_STATE_HDR_LEN 64
#if DX_FORMAT >= 2
/* v2 appends the forwarding table: u32 nfwd, nfwd * (u32 sub, u32 target) */
#define DX_STATE_FWD_MAX_LEN (4 + (size_t)DX_MAX_SUBS * (4 + 4))
#else
#define DX_STATE_FWD_MAX_LEN 0
#endif
/* Upper bound of a state written by this build (header + full tables). */
#define DX_STATE_MAX_LEN                                                  \
    (DX_STATE_HDR_LEN + 8 + 8 + 4 + (size_t)DX_MAX_SUBS * (1 + DX_MAX_SUB + 8) + \
     4 + (size_t)DX_MAX_CALLS * (8 + 4 + 4) + 4 +                           \
     (size_t)DX_CACHE_SIZE * (4 + 2 + 1 + DX_MAX_ID + 1 + DX_MAX_REPLY) + \
     DX_STATE_FWD_MAX_LEN)

typedef struct dx_state dx_state;

/* A client is the datagram's source: IPv4 address in network byte order and
 * the UDP port in host byte order. */
typedef struct {
    uint32_t ip;
    uint16_t port;
} dx_client;

enum dx_action {
    DX_SILENT = 0,  /* no reply (no readable id) */
    DX_REPLY = 1,   /* send reply[0..reply_len) to the client */
    DX_NEED_AUTH = 2 /* ask AUTH about `sub`, then call dx_auth_done() */
};

enum dx_verdict { DX_AUTH_OK = 0, DX_AUTH_DENY = 1, DX_AUTH_UNAVAIL = 2 };

typedef struct {
    enum dx_action action;
    size_t reply_len;
    char reply[DX_MAX_REPLY + 1];
    char sub[DX_MAX_SUB + 1]; /* DX_NEED_AUTH: the subscriber to ask about */
} dx_result;

dx_state *dx_new(const char *version);
void dx_free(dx_state *st);

/* Processes one service datagram. `truncated` says the datagram was longer
 * than the buffer. While a DX_NEED_AUTH is outstanding no other request may
 * be passed in (the guest blocks; PROTOCOL.md explains why). */
void dx_request(dx_state *st, dx_client c, const uint8_t *buf, size_t len,
                int truncated, dx_result *out);
/* Completes the pending REG with the AUTH verdict; always yields DX_REPLY. */
void dx_auth_done(dx_state *st, enum dx_verdict v, dx_result *out);
int dx_auth_pending(const dx_state *st);

/* Counters for PING/STATE/console lines. */
uint64_t dx_seq(const dx_state *st);      /* service datagrams processed */
uint64_t dx_total(const dx_state *st);    /* calls set up since the state began */
uint32_t dx_nsubs(const dx_state *st);
uint32_t dx_active(const dx_state *st);
uint32_t dx_ncache(const dx_state *st);
const char *dx_version(const dx_state *st);

/* Serialises the whole state (header + body, format DX_STATE_FORMAT) into buf.
 * Returns the length, or 0 if cap is too small. */
size_t dx_save(const dx_state *st, uint8_t *buf, size_t cap);
/* CRC32 of the canonical body (of format DX_STATE_FORMAT): equal digests mean
 * equal states. */
uint32_t dx_digest(const dx_state *st);
/* Validates a saved state in full and, only if it is valid, replaces st's
 * contents with it. Returns 0 on success, else -1 and *why names the reason
 * (one word: short, nomagic, badformat, badhdrcrc, toolong, badcrc, badbody). */
int dx_load(dx_state *st, const uint8_t *buf, size_t len, const char **why);
#if DX_FORMAT >= 2
/* The format of the state dx_load() last accepted (1: converted from v1), 0 if none. */
uint32_t dx_loaded_format(const dx_state *st);
/* Number of subscribers that forward their calls. */
uint32_t dx_nfwd(const dx_state *st);
#endif
/* Reads only the header: returns the body length (0 if the header is invalid). */
size_t dx_header_body_len(const uint8_t *hdr, size_t len, const char **why);

/* Checks every internal invariant; returns 0 if consistent (used by the fuzzer). */
int dx_check(const dx_state *st);

uint32_t dx_crc32(const uint8_t *p, size_t n);

#endif
