/*
 * dxfuzz: host-only fuzzer for dxcore (not part of the guest image).
 * Feeds grammar-made, mutated and random datagrams, random AUTH verdicts and
 * corrupted saved states into the core and checks every invariant, the reply
 * format, the limits and the save/load round trip. Built against either
 * application generation (-DDX_FORMAT=1 or 2, as the image is); a v2 build
 * also checks the FWD semantics, the v1 -> v2 conversion and the canonical v2
 * body.
 *
 *   gcc -O1 -g -fsanitize=address,undefined [-DDX_FORMAT=2] -o dxfuzz dxfuzz.c dxcore.c
 *   ./dxfuzz [seconds] [seed]
 *   ./dxfuzz --emit FILE       writes the state of a fixed script, in this build's format
 *   ./dxfuzz --load FILE       loads a state: "loaded" (exit 0) or "refused <why>" (exit 1)
 *   ./dxfuzz --convert FILE    (v2 build) loads a v1 state written by --emit of a v1
 *                              build and checks that it equals the v2 state of the script
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

static uint32_t rd32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#define FAIL(...)                                                                      \
    do {                                                                               \
        fprintf(stderr, "FAIL line %d: ", __LINE__);                                   \
        fprintf(stderr, __VA_ARGS__);                                                  \
        fputc('\n', stderr);                                                           \
        exit(1);                                                                       \
    } while (0)

static const char *cmds[] = {"REG", "CALL", "END", "GET", "STATS", "FWD", "reg", "FOO", ""};
#define NCMDS (sizeof cmds / sizeof *cmds)

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
    const char *cmd = cmds[rn(NCMDS)];
    gen_sub(a);
    gen_sub(b);
    switch (rn(7)) {
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
    case 5: /* FWD (BADCMD in a v1 build) */
        n = snprintf((char *)buf, cap, "i%u FWD %s %s", idn, a, rn(3) ? b : "-");
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

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Rewrites the header's format, body length and both CRCs for the body that
 * follows it, so a hand-made body reaches the body parser. */
static void seal(uint8_t *buf, uint32_t format, uint32_t blen)
{
    put32(buf + 8, format);
    put32(buf + 16, blen);
    put32(buf + 20, dx_crc32(buf + DX_STATE_HDR_LEN, blen));
    put32(buf + 56, dx_crc32(buf, 56));
}

#if DX_FORMAT >= 2
/* v1 -> v2 conversion: the v1 body of a state is its v2 body without the
 * forwarding table, so cutting that table off gives the v1 save of the same
 * state minus its forwards (no reply in these tests exceeds the v1 limit of
 * 128 bytes). Loading it must convert, forward nothing, keep everything else,
 * and save as that v1 body followed by an empty table (u32 0). */
static void convert_check(const dx_state *st, const uint8_t *v2, size_t n)
{
    static uint8_t v1[DX_STATE_MAX_LEN], again[DX_STATE_MAX_LEN];
    size_t blen = n - DX_STATE_HDR_LEN - 4 - 8 * (size_t)dx_nfwd(st);
    memcpy(v1, v2, DX_STATE_HDR_LEN + blen);
    seal(v1, 1, (uint32_t)blen);
    dx_state *t = dx_new("2.0.0");
    const char *why = "";
    if (dx_load(t, v1, DX_STATE_HDR_LEN + blen, &why) != 0)
        FAIL("v1 state not converted: %s", why);
    if (dx_loaded_format(t) != 1 || dx_nfwd(t) != 0 || dx_check(t) != 0)
        FAIL("converted state: format %u, %u forwards, check %d", dx_loaded_format(t),
             dx_nfwd(t), dx_check(t));
    if (dx_seq(t) != dx_seq(st) || dx_total(t) != dx_total(st) || dx_nsubs(t) != dx_nsubs(st) ||
        dx_active(t) != dx_active(st) || dx_ncache(t) != dx_ncache(st))
        FAIL("converted state counters differ");
    size_t m = dx_save(t, again, sizeof again);
    static const uint8_t empty_table[4];
    if (m != DX_STATE_HDR_LEN + blen + 4 || rd32le(again + 8) != 2 ||
        memcmp(again + DX_STATE_HDR_LEN, v1 + DX_STATE_HDR_LEN, blen) != 0 ||
        memcmp(again + DX_STATE_HDR_LEN + blen, empty_table, 4) != 0)
        FAIL("converted state does not save as the v1 body plus an empty forwarding table");
    dx_state *u = dx_new("2.0.0");
    if (dx_load(u, again, m, &why) != 0 || dx_loaded_format(u) != 2 || dx_digest(u) != dx_digest(t))
        FAIL("converted state does not reload as v2");
    dx_free(u);
    dx_free(t);
}
#endif

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
#if DX_FORMAT >= 2
    if (dx_loaded_format(t) != 2)
        FAIL("own save loaded as format %u", dx_loaded_format(t));
    convert_check(st, buf, n);
#endif
    /* corrupted copies must be rejected or load into a consistent state */
    for (int k = 0; k < 20; k++) {
        memcpy(buf2, buf, n);
        size_t m = n;
        for (unsigned f = rn(3) + 1; f--;)
            buf2[rn((unsigned)m)] ^= (uint8_t)(1u << rn(8));
        if (rn(3) == 0)
            m = rn((unsigned)m + 1);
        if (rn(2) && m >= DX_STATE_HDR_LEN) /* reach the body parser itself */
            seal(buf2, rn(4) ? rd32le(buf2 + 8) : 1 + rn(2), (uint32_t)(m - DX_STATE_HDR_LEN));
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
#if DX_FORMAT >= 2
    for (int i = 0; i < DX_MAX_SUBS; i++) { /* every subscriber forwards */
        int n = sprintf(req, "f%d FWD sub%d sub%d", i, i, (i + 1) % DX_MAX_SUBS);
        dx_request(st, c, (uint8_t *)req, (size_t)n, 0, &r);
    }
    if (dx_nfwd(st) != DX_MAX_SUBS || dx_check(st) != 0)
        FAIL("forwarding capacity: %u forwards", dx_nfwd(st));
#endif
    if (DX_STATE_MAX_LEN > 1048576)
        FAIL("a full state (%zu bytes) would not fit the 1 MiB minimum disk",
             (size_t)DX_STATE_MAX_LEN);
    static uint8_t buf[DX_STATE_MAX_LEN], buf2[DX_STATE_MAX_LEN];
    size_t n = dx_save(st, buf, sizeof buf);
    printf("full state (%u subs, %u calls, %u cached): %zu bytes (max %zu)\n", dx_nsubs(st),
           dx_active(st), dx_ncache(st), n, (size_t)DX_STATE_MAX_LEN);
    roundtrip(st, buf, buf2);
    dx_free(st);
}

/* One request from a fixed client; AUTH answers OK, or DENY for "blocked*".
 * With `want` the reply must be exactly that (NULL: silence). */
static void ask(dx_state *st, const char *q, const char *want)
{
    dx_client c = {0x0100000a, 40000};
    dx_result r;
    dx_request(st, c, (const uint8_t *)q, strlen(q), 0, &r);
    if (r.action == DX_NEED_AUTH)
        dx_auth_done(st, strncmp(r.sub, "blocked", 7) ? DX_AUTH_OK : DX_AUTH_DENY, &r);
    const char *got = r.action == DX_REPLY ? r.reply : NULL;
    if ((want == NULL) != (got == NULL) || (want && strcmp(want, got) != 0))
        FAIL("%s -> %s, want %s", q, got ? got : "(silence)", want ? want : "(silence)");
    if (dx_check(st) != 0)
        FAIL("invariant broken after %s: %d", q, dx_check(st));
}

/* A fixed history whose replies are the same in v1 and v2 (no GET, STATS or
 * FWD): a v1 build saves it (--emit-v1), a v2 build converts that save and
 * compares it with its own run of the same history (--convert). */
static void script(dx_state *st)
{
    static const char *const q[][2] = {
        {"a REG alice", "a OK REG alice 1"},     {"b REG bob", "b OK REG bob 2"},
        {"c REG carol", "c OK REG carol 3"},     {"d REG dave", "d OK REG dave 4"},
        {"e REG blocked1", "e ERR DENIED blocked1"}, {"f CALL alice bob", "f OK CALL 1"},
        {"g CALL carol dave", "g OK CALL 2"},    {"h END 2", "h OK END 2"},
        {"i CALL dave carol", "i OK CALL 3"},    {"f CALL alice bob", "f OK CALL 1"},
        {"j CALL alice carol", "j ERR BUSY alice"}, {"k END 9", "k ERR NOCALL 9"},
        {"", NULL},                              {"l FROB x", "l ERR BADCMD FROB"},
        {"m REG -", "m OK REG - 5"},
    };
    for (size_t i = 0; i < sizeof q / sizeof *q; i++)
        ask(st, q[i][0], q[i][1]);
}

#if DX_FORMAT >= 2
/* FWD and CALL-to-a-forwarded-subscriber, exactly as PROTOCOL.md §11 says. */
static void fwd_semantics(void)
{
    dx_state *st = dx_new("2.0.0");
    ask(st, "r1 REG alice", "r1 OK REG alice 1");
    ask(st, "r2 REG bob", "r2 OK REG bob 2");
    ask(st, "r3 REG carol", "r3 OK REG carol 3");
    ask(st, "r4 REG dave", "r4 OK REG dave 4");
    ask(st, "g0 GET alice", "g0 OK GET alice calls=0 state=idle fwd=-");
    /* errors, in the order they are checked */
    ask(st, "x1 FWD alice", "x1 ERR BADARGS");
    ask(st, "x2 FWD alice bob carol", "x2 ERR BADARGS");
    ask(st, "x3 FWD alice alice", "x3 ERR BADARGS");
    ask(st, "x4 FWD al*ce bob", "x4 ERR BADARGS");
    ask(st, "x5 FWD zed bob", "x5 ERR UNKNOWN zed");
    ask(st, "x6 FWD zed -", "x6 ERR UNKNOWN zed");
    ask(st, "x7 FWD alice zed", "x7 ERR UNKNOWN zed");
    if (dx_nfwd(st) != 0)
        FAIL("a refused FWD changed the state");
    /* calls to alice ring bob; alice's own counters do not move */
    ask(st, "f1 FWD alice bob", "f1 OK FWD alice bob");
    ask(st, "g1 GET alice", "g1 OK GET alice calls=0 state=idle fwd=bob");
    ask(st, "c1 CALL carol alice", "c1 OK CALL 1");
    ask(st, "g2 GET bob", "g2 OK GET bob calls=1 state=busy fwd=-");
    ask(st, "g3 GET alice", "g3 OK GET alice calls=0 state=idle fwd=bob");
    ask(st, "c2 CALL dave alice", "c2 ERR BUSY bob");   /* names who would ring */
    ask(st, "c3 CALL carol bob", "c3 ERR BUSY carol");  /* caller checked first */
    ask(st, "c4 CALL zed alice", "c4 ERR UNKNOWN zed");
    /* one hop only: bob -> alice is not followed on a call to alice */
    ask(st, "f2 FWD bob alice", "f2 OK FWD bob alice");
    ask(st, "e1 END 1", "e1 OK END 1");
    ask(st, "c5 CALL dave alice", "c5 OK CALL 2");
    ask(st, "g4 GET bob", "g4 OK GET bob calls=2 state=busy fwd=alice");
    ask(st, "e2 END 2", "e2 OK END 2");
    /* never back to the caller: bob calling alice (-> bob) rings alice */
    ask(st, "c6 CALL bob alice", "c6 OK CALL 3");
    ask(st, "g5 GET alice", "g5 OK GET alice calls=1 state=busy fwd=bob");
    ask(st, "e3 END 3", "e3 OK END 3");
    /* forwarding is unconditional: a busy or idle subscriber alike */
    ask(st, "c7 CALL alice carol", "c7 OK CALL 4");
    ask(st, "f3 FWD alice dave", "f3 OK FWD alice dave");
    ask(st, "c8 CALL bob alice", "c8 OK CALL 5");
    ask(st, "g6 GET dave", "g6 OK GET dave calls=2 state=busy fwd=-");
    /* clearing: idempotent; "-" as the target always means none */
    ask(st, "f4 FWD alice -", "f4 OK FWD alice -");
    ask(st, "f5 FWD alice -", "f5 OK FWD alice -");
    ask(st, "g7 GET alice", "g7 OK GET alice calls=2 state=busy fwd=-");
    ask(st, "r5 REG -", "r5 OK REG - 5");
    ask(st, "f6 FWD - carol", "f6 OK FWD - carol");
    ask(st, "g8 GET -", "g8 OK GET - calls=0 state=idle fwd=carol");
    ask(st, "f7 FWD - -", "f7 OK FWD - -");
    ask(st, "g9 GET -", "g9 OK GET - calls=0 state=idle fwd=-");
    ask(st, "f1 FWD carol dave", "f1 OK FWD alice bob"); /* a retry is not applied again */
    if (dx_nfwd(st) != 1)
        FAIL("forwards: %u, want 1 (bob)", dx_nfwd(st));
    /* the longest reply fits */
    /* the longest GET (ids and names at their limits) is built in full */
#define ID16 "i234567890123456"
#define X32 "x2345678901234567890123456789012"
#define Y32 "y2345678901234567890123456789012"
    ask(st, ID16 " REG " X32, ID16 " OK REG " X32 " 6");
    ask(st, "j234567890123456 REG " Y32, "j234567890123456 OK REG " Y32 " 7");
    ask(st, "k234567890123456 FWD " X32 " " Y32, "k234567890123456 OK FWD " X32 " " Y32);
    ask(st, "l234567890123456 GET " X32,
        "l234567890123456 OK GET " X32 " calls=0 state=idle fwd=" Y32);
    /* a saved v2 state keeps the forwards and is canonical */
    static uint8_t b1[DX_STATE_MAX_LEN], b2[DX_STATE_MAX_LEN];
    roundtrip(st, b1, b2);
    /* a v2 body must be valid to the end: bad forwarding tables are refused */
    size_t n = dx_save(st, b1, sizeof b1);
    uint32_t blen = (uint32_t)(n - DX_STATE_HDR_LEN);
    const char *why = "";
    struct { const char *what; size_t at; uint32_t v; } bad[] = {
        {"target out of range", n - 4, 99},
        {"forward to itself", n - 4, rd32le(b1 + n - 8)},
        {"count too high", n - 8 * dx_nfwd(st) - 4, 9999},
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        memcpy(b2, b1, n);
        put32(b2 + bad[k].at, bad[k].v);
        seal(b2, 2, blen);
        why = "";
        dx_state *u = dx_new("2.0.0");
        if (dx_load(u, b2, n, &why) == 0 || strcmp(why, "badbody") != 0)
            FAIL("v2 body with %s loaded (%s)", bad[k].what, why);
        dx_free(u);
    }
    memcpy(b2, b1, n);
    seal(b2, 3, blen);
    if (dx_load(st, b2, n, &why) == 0 || strcmp(why, "badformat") != 0)
        FAIL("format 3 accepted (%s)", why);
    dx_free(st);
}
#endif

static size_t read_state(const char *path, uint8_t *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(buf, 1, cap, f) : 0;
    if (f)
        fclose(f);
    return n;
}

static int file_mode(const char *mode, const char *path)
{
    static uint8_t buf[DX_STATE_MAX_LEN];
    dx_state *st = dx_new(DX_FORMAT >= 2 ? "2.0.0" : "1.0.0");
    script(st);
    if (!strcmp(mode, "--emit")) {
        size_t n = dx_save(st, buf, sizeof buf);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(buf, 1, n, f) != n || fclose(f) != 0)
            FAIL("cannot write %s", path);
        printf("ok: v%d state of the script, %zu bytes, digest %08x\n", DX_FORMAT, n, dx_digest(st));
        dx_free(st);
        return 0;
    }
    if (!strcmp(mode, "--load")) {
        size_t n = read_state(path, buf, sizeof buf);
        const char *why = "";
        int rc = dx_load(st, buf, n, &why);
        printf(rc == 0 ? "loaded\n" : "refused %s\n", why);
        dx_free(st);
        return rc == 0 ? 0 : 1;
    }
#if DX_FORMAT >= 2
    if (!strcmp(mode, "--convert")) {
        static uint8_t own[DX_STATE_MAX_LEN];
        size_t n = read_state(path, buf, sizeof buf);
        dx_state *t = dx_new("2.0.0");
        const char *why = "";
        if (dx_load(t, buf, n, &why) != 0 || dx_loaded_format(t) != 1)
            FAIL("%s: not a convertible v1 state (%s)", path, why);
        if (dx_digest(t) != dx_digest(st))
            FAIL("converted v1 state differs from the v2 run of the same script");
        size_t m = dx_save(st, own, sizeof own);
        if (m != n + 4 || memcmp(own + DX_STATE_HDR_LEN, buf + DX_STATE_HDR_LEN, n - DX_STATE_HDR_LEN))
            FAIL("v2 body is not the v1 body followed by the forwarding table");
        printf("ok: v1 state converted, equal to the v2 run (digest %08x)\n", dx_digest(t));
        dx_free(t);
        dx_free(st);
        return 0;
    }
#endif
    fprintf(stderr, "%s is not available in a DX_FORMAT=%d build\n", mode, DX_FORMAT);
    dx_free(st);
    return 2;
}

int main(int argc, char **argv)
{
    if (argc == 3 && argv[1][0] == '-')
        return file_mode(argv[1], argv[2]);
#if DX_FORMAT >= 2
    fwd_semantics();
#endif
    int seconds = argc > 1 ? atoi(argv[1]) : 10;
    if (argc > 2)
        rng = strtoull(argv[2], NULL, 0) | 1;
    capacity();
    static uint8_t save1[DX_STATE_MAX_LEN], save2[DX_STATE_MAX_LEN];
    time_t end = time(NULL) + seconds;
    unsigned long long reqs = 0, replies = 0, silent = 0, auths = 0;
    while (time(NULL) < end) {
        dx_state *st = dx_new(DX_FORMAT >= 2 ? "2.0.0" : "1.0.0");
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
