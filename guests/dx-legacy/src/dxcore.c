/*
 * dxcore: subscriber table, calls, call forwarding (v2), reply cache, request
 * parser and the saved-state formats (v1; v2 in a DX_FORMAT=2 build, which
 * also reads and converts v1). Pure and deterministic: no I/O, no clock, no
 * randomness, fixed hash functions, FIFO eviction. Must never crash on any
 * input; every length is checked against the limits in dxcore.h. Everything
 * v2 adds is inside "#if DX_FORMAT >= 2", so a v1 build is the v1 application.
 */
#include "dxcore.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUB_BUCKETS 8192   /* power of two, >= 2 * DX_MAX_SUBS */
#define CACHE_BUCKETS 8192 /* power of two, >= 2 * DX_CACHE_SIZE */
#define NIL (-1)

typedef struct {
    uint64_t calls;  /* calls this subscriber took part in */
    uint64_t callid; /* current call, 0 when idle */
    int32_t next;    /* hash chain */
#if DX_FORMAT >= 2
    int32_t fwd;     /* index of the subscriber calls are forwarded to, NIL if none */
#endif
    uint8_t len;
    char name[DX_MAX_SUB + 1];
} sub_t;

typedef struct {
    uint64_t callid;
    uint32_t a, b; /* subscriber indices */
} call_t;

typedef struct {
    uint32_t ip;
    uint16_t port;
    uint8_t idlen;
    uint8_t rlen;
    int32_t next; /* hash chain */
    char id[DX_MAX_ID];
    char reply[DX_MAX_REPLY];
} centry_t;

struct dx_state {
    char version[DX_MAX_VERSION + 1];
    uint64_t seq;
    uint64_t total;
    uint32_t nsubs;
    uint32_t ncalls;
    sub_t subs[DX_MAX_SUBS];
    int32_t sub_bucket[SUB_BUCKETS];
    call_t calls[DX_MAX_CALLS]; /* sorted by callid, ascending */
    centry_t cache[DX_CACHE_SIZE];
    int32_t cache_bucket[CACHE_BUCKETS];
    uint32_t cache_head; /* slot of the oldest entry */
    uint32_t cache_count;
#if DX_FORMAT >= 2
    uint32_t nfwd;          /* subscribers with fwd != NIL */
    uint32_t loaded_format; /* format of the state last loaded, 0 if none */
#endif
    /* the REG waiting for an AUTH verdict */
    int pending;
    dx_client pend_client;
    uint8_t pend_idlen;
    char pend_id[DX_MAX_ID];
    char pend_sub[DX_MAX_SUB + 1];
};

/* ---------------------------------------------------------------- crc32 */

static uint32_t crc_table[256];
static int crc_ready;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
    crc_ready = 1;
}

static uint32_t crc_update(uint32_t c, const uint8_t *p, size_t n)
{
    if (!crc_ready)
        crc_init();
    for (size_t i = 0; i < n; i++)
        c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c;
}

uint32_t dx_crc32(const uint8_t *p, size_t n)
{
    return crc_update(0xFFFFFFFFu, p, n) ^ 0xFFFFFFFFu;
}

/* ---------------------------------------------------------------- helpers */

static uint32_t fnv1a(const void *p, size_t n, uint32_t h)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 16777619u;
    }
    return h;
}

static int valid_sub(const char *s, size_t n)
{
    if (n < 1 || n > DX_MAX_SUB)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
              (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '+' ||
              ch == '-'))
            return 0;
    }
    return 1;
}

static int printable_token(const char *s, size_t n)
{
    if (n < 1)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((uint8_t)s[i] < 0x21 || (uint8_t)s[i] > 0x7E)
            return 0;
    return 1;
}

static int valid_id(const char *s, size_t n)
{
    return n <= DX_MAX_ID && printable_token(s, n);
}

/* ---------------------------------------------------------------- state */

static void reset(dx_state *st)
{
    st->seq = 0;
    st->total = 0;
    st->nsubs = 0;
    st->ncalls = 0;
    st->cache_head = 0;
    st->cache_count = 0;
    st->pending = 0;
#if DX_FORMAT >= 2
    st->nfwd = 0;
    st->loaded_format = 0;
#endif
    for (int i = 0; i < SUB_BUCKETS; i++)
        st->sub_bucket[i] = NIL;
    for (int i = 0; i < CACHE_BUCKETS; i++)
        st->cache_bucket[i] = NIL;
}

dx_state *dx_new(const char *version)
{
    dx_state *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    size_t n = strlen(version);
    if (!printable_token(version, n) || n > DX_MAX_VERSION) {
        free(st);
        return NULL;
    }
    memcpy(st->version, version, n + 1);
    reset(st);
    return st;
}

void dx_free(dx_state *st) { free(st); }

uint64_t dx_seq(const dx_state *st) { return st->seq; }
uint64_t dx_total(const dx_state *st) { return st->total; }
uint32_t dx_nsubs(const dx_state *st) { return st->nsubs; }
uint32_t dx_active(const dx_state *st) { return st->ncalls; }
uint32_t dx_ncache(const dx_state *st) { return st->cache_count; }
const char *dx_version(const dx_state *st) { return st->version; }
int dx_auth_pending(const dx_state *st) { return st->pending; }
#if DX_FORMAT >= 2
uint32_t dx_loaded_format(const dx_state *st) { return st->loaded_format; }
uint32_t dx_nfwd(const dx_state *st) { return st->nfwd; }
#endif

/* ---------------------------------------------------------------- subscribers */

static uint32_t sub_hash(const char *name, size_t n)
{
    return fnv1a(name, n, 2166136261u) & (SUB_BUCKETS - 1);
}

static int32_t sub_find(const dx_state *st, const char *name, size_t n)
{
    for (int32_t i = st->sub_bucket[sub_hash(name, n)]; i != NIL; i = st->subs[i].next)
        if (st->subs[i].len == n && memcmp(st->subs[i].name, name, n) == 0)
            return i;
    return NIL;
}

/* Caller guarantees: valid name, not present, table not full. */
static int32_t sub_add(dx_state *st, const char *name, size_t n, uint64_t calls)
{
    int32_t i = (int32_t)st->nsubs++;
    sub_t *s = &st->subs[i];
    memcpy(s->name, name, n);
    s->name[n] = 0;
    s->len = (uint8_t)n;
    s->calls = calls;
    s->callid = 0;
#if DX_FORMAT >= 2
    s->fwd = NIL;
#endif
    uint32_t h = sub_hash(name, n);
    s->next = st->sub_bucket[h];
    st->sub_bucket[h] = i;
    return i;
}

/* ---------------------------------------------------------------- calls */

static int32_t call_find(const dx_state *st, uint64_t callid)
{
    uint32_t lo = 0, hi = st->ncalls;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (st->calls[mid].callid < callid)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < st->ncalls && st->calls[lo].callid == callid)
        return (int32_t)lo;
    return NIL;
}

/* ---------------------------------------------------------------- reply cache */

static uint32_t cache_hash(uint32_t ip, uint16_t port, const char *id, size_t n)
{
    uint32_t h = fnv1a(&ip, 4, 2166136261u);
    h = fnv1a(&port, 2, h);
    return fnv1a(id, n, h) & (CACHE_BUCKETS - 1);
}

static const centry_t *cache_find(const dx_state *st, dx_client c, const char *id, size_t n)
{
    for (int32_t i = st->cache_bucket[cache_hash(c.ip, c.port, id, n)]; i != NIL;
         i = st->cache[i].next) {
        const centry_t *e = &st->cache[i];
        if (e->ip == c.ip && e->port == c.port && e->idlen == n && memcmp(e->id, id, n) == 0)
            return e;
    }
    return NULL;
}

static void cache_unlink(dx_state *st, uint32_t slot)
{
    centry_t *e = &st->cache[slot];
    int32_t *link = &st->cache_bucket[cache_hash(e->ip, e->port, e->id, e->idlen)];
    while (*link != NIL) {
        if (*link == (int32_t)slot) {
            *link = e->next;
            return;
        }
        link = &st->cache[*link].next;
    }
}

static void cache_put(dx_state *st, dx_client c, const char *id, size_t idlen,
                      const char *reply, size_t rlen)
{
    uint32_t slot;
    if (st->cache_count == DX_CACHE_SIZE) {
        slot = st->cache_head;
        cache_unlink(st, slot);
        st->cache_head = (st->cache_head + 1) % DX_CACHE_SIZE;
        st->cache_count--;
    } else {
        slot = (st->cache_head + st->cache_count) % DX_CACHE_SIZE;
    }
    centry_t *e = &st->cache[slot];
    e->ip = c.ip;
    e->port = c.port;
    e->idlen = (uint8_t)idlen;
    memcpy(e->id, id, idlen);
    e->rlen = (uint8_t)rlen;
    memcpy(e->reply, reply, rlen);
    uint32_t h = cache_hash(c.ip, c.port, id, idlen);
    e->next = st->cache_bucket[h];
    st->cache_bucket[h] = (int32_t)slot;
    st->cache_count++;
}

/* ---------------------------------------------------------------- requests */

typedef struct {
    const char *p;
    size_t n;
} tok_t;

#define MAX_TOKENS 5 /* command + up to 3 args, one more to detect excess */

/* Formats "<id> <fmt...>" into out and caches it for (c, id). */
static void reply(dx_state *st, dx_client c, const char *id, size_t idlen,
                  dx_result *out, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static void reply(dx_state *st, dx_client c, const char *id, size_t idlen,
                  dx_result *out, const char *fmt, ...)
{
    char body[DX_MAX_REPLY + 1];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    size_t room = DX_MAX_REPLY - idlen - 1; /* limits guarantee n fits; stay safe anyway */
    if ((size_t)n > room)
        n = (int)room;
    memcpy(out->reply, id, idlen);
    out->reply[idlen] = ' ';
    memcpy(out->reply + idlen + 1, body, (size_t)n);
    out->reply_len = idlen + 1 + (size_t)n;
    out->reply[out->reply_len] = 0;
    out->action = DX_REPLY;
    cache_put(st, c, id, idlen, out->reply, out->reply_len);
}

static int parse_callid(const tok_t *t, uint64_t *v)
{
    if (t->n < 1 || t->n > 19)
        return -1;
    uint64_t x = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (t->p[i] < '0' || t->p[i] > '9')
            return -1;
        x = x * 10 + (uint64_t)(t->p[i] - '0');
    }
    *v = x;
    return 0;
}

#define REPLY(...) reply(st, c, id, idlen, out, __VA_ARGS__)
#define U64(x) ((unsigned long long)(x))

static void do_reg(dx_state *st, dx_client c, const char *id, size_t idlen,
                   const tok_t *t, int nt, dx_result *out)
{
    if (nt != 2 || !valid_sub(t[1].p, t[1].n)) {
        REPLY("ERR BADARGS");
        return;
    }
    if (sub_find(st, t[1].p, t[1].n) != NIL) {
        REPLY("OK REG %.*s %u", (int)t[1].n, t[1].p, st->nsubs);
        return;
    }
    if (st->nsubs >= DX_MAX_SUBS) {
        REPLY("ERR FULL");
        return;
    }
    st->pending = 1;
    st->pend_client = c;
    st->pend_idlen = (uint8_t)idlen;
    memcpy(st->pend_id, id, idlen);
    memcpy(st->pend_sub, t[1].p, t[1].n);
    st->pend_sub[t[1].n] = 0;
    memcpy(out->sub, t[1].p, t[1].n);
    out->sub[t[1].n] = 0;
    out->action = DX_NEED_AUTH;
    out->reply_len = 0;
    out->reply[0] = 0;
}

/* The arguments of CALL <a> <b> and FWD <a> <b>: exactly two valid subscriber
 * names, not the same one twice unless same_ok (FWD <a> -, where "-" is also a
 * valid name). 0 means ERR BADARGS. */
static int two_sub_args(const tok_t *t, int nt, int same_ok)
{
    return nt == 3 && valid_sub(t[1].p, t[1].n) && valid_sub(t[2].p, t[2].n) &&
           (same_ok || t[1].n != t[2].n || memcmp(t[1].p, t[2].p, t[1].n) != 0);
}

static void do_call(dx_state *st, dx_client c, const char *id, size_t idlen,
                    const tok_t *t, int nt, dx_result *out)
{
    if (!two_sub_args(t, nt, 0)) {
        REPLY("ERR BADARGS");
        return;
    }
    int32_t a = sub_find(st, t[1].p, t[1].n);
    if (a == NIL) {
        REPLY("ERR UNKNOWN %.*s", (int)t[1].n, t[1].p);
        return;
    }
    int32_t b = sub_find(st, t[2].p, t[2].n);
    if (b == NIL) {
        REPLY("ERR UNKNOWN %.*s", (int)t[2].n, t[2].p);
        return;
    }
#if DX_FORMAT >= 2
    /* One hop, and never back to the caller (PROTOCOL.md §11.2). */
    if (st->subs[b].fwd != NIL && st->subs[b].fwd != a)
        b = st->subs[b].fwd;
#endif
    if (st->subs[a].callid) {
        REPLY("ERR BUSY %.*s", (int)t[1].n, t[1].p);
        return;
    }
#if DX_FORMAT >= 2
    if (st->subs[b].callid) { /* names the subscriber that would ring */
        REPLY("ERR BUSY %s", st->subs[b].name);
        return;
    }
#else
    if (st->subs[b].callid) {
        REPLY("ERR BUSY %.*s", (int)t[2].n, t[2].p);
        return;
    }
#endif
    if (st->ncalls >= DX_MAX_CALLS) {
        REPLY("ERR FULL");
        return;
    }
    uint64_t callid = ++st->total;
    call_t *k = &st->calls[st->ncalls++]; /* callids only grow: stays sorted */
    k->callid = callid;
    k->a = (uint32_t)a;
    k->b = (uint32_t)b;
    st->subs[a].callid = callid;
    st->subs[b].callid = callid;
    st->subs[a].calls++;
    st->subs[b].calls++;
    REPLY("OK CALL %llu", U64(callid));
}

static void do_end(dx_state *st, dx_client c, const char *id, size_t idlen,
                   const tok_t *t, int nt, dx_result *out)
{
    uint64_t callid;
    if (nt != 2 || parse_callid(&t[1], &callid) != 0) {
        REPLY("ERR BADARGS");
        return;
    }
    int32_t k = call_find(st, callid);
    if (k == NIL) {
        REPLY("ERR NOCALL %llu", U64(callid));
        return;
    }
    st->subs[st->calls[k].a].callid = 0;
    st->subs[st->calls[k].b].callid = 0;
    memmove(&st->calls[k], &st->calls[k + 1], (st->ncalls - (uint32_t)k - 1) * sizeof(call_t));
    st->ncalls--;
    REPLY("OK END %llu", U64(callid));
}

static void do_get(dx_state *st, dx_client c, const char *id, size_t idlen,
                   const tok_t *t, int nt, dx_result *out)
{
    if (nt != 2 || !valid_sub(t[1].p, t[1].n)) {
        REPLY("ERR BADARGS");
        return;
    }
    int32_t s = sub_find(st, t[1].p, t[1].n);
    if (s == NIL) {
        REPLY("ERR UNKNOWN %.*s", (int)t[1].n, t[1].p);
        return;
    }
#if DX_FORMAT >= 2
    REPLY("OK GET %.*s calls=%llu state=%s fwd=%s", (int)t[1].n, t[1].p,
          U64(st->subs[s].calls), st->subs[s].callid ? "busy" : "idle",
          st->subs[s].fwd == NIL ? "-" : st->subs[st->subs[s].fwd].name);
#else
    REPLY("OK GET %.*s calls=%llu state=%s", (int)t[1].n, t[1].p, U64(st->subs[s].calls),
          st->subs[s].callid ? "busy" : "idle");
#endif
}

#if DX_FORMAT >= 2
/* FWD <a> <b> forwards a's calls to b; FWD <a> - clears it (PROTOCOL.md §11.1). */
static void do_fwd(dx_state *st, dx_client c, const char *id, size_t idlen,
                   const tok_t *t, int nt, dx_result *out)
{
    int clear = nt == 3 && t[2].n == 1 && t[2].p[0] == '-';
    if (!two_sub_args(t, nt, clear)) {
        REPLY("ERR BADARGS");
        return;
    }
    int32_t a = sub_find(st, t[1].p, t[1].n);
    if (a == NIL) {
        REPLY("ERR UNKNOWN %.*s", (int)t[1].n, t[1].p);
        return;
    }
    int32_t b = NIL;
    if (!clear) {
        b = sub_find(st, t[2].p, t[2].n);
        if (b == NIL) {
            REPLY("ERR UNKNOWN %.*s", (int)t[2].n, t[2].p);
            return;
        }
    }
    st->nfwd += (uint32_t)(b != NIL) - (uint32_t)(st->subs[a].fwd != NIL);
    st->subs[a].fwd = b;
    REPLY("OK FWD %.*s %.*s", (int)t[1].n, t[1].p, (int)t[2].n, t[2].p);
}
#endif

static void do_stats(dx_state *st, dx_client c, const char *id, size_t idlen,
                     const tok_t *t, int nt, dx_result *out)
{
    (void)t;
    if (nt != 1) {
        REPLY("ERR BADARGS");
        return;
    }
    REPLY("OK STATS subs=%u active=%u total=%llu version=%s", st->nsubs, st->ncalls,
          U64(st->total), st->version);
}

static int tok_is(const tok_t *t, const char *s)
{
    size_t n = strlen(s);
    return t->n == n && memcmp(t->p, s, n) == 0;
}

void dx_request(dx_state *st, dx_client c, const uint8_t *buf, size_t len, int truncated,
                dx_result *out)
{
    out->action = DX_SILENT;
    out->reply_len = 0;
    out->reply[0] = 0;
    out->sub[0] = 0;
    if (st->pending) /* caller bug: the guest blocks while AUTH is asked */
        return;

    const char *s = (const char *)buf;
    if (!truncated) {
        if (len >= 2 && s[len - 2] == '\r' && s[len - 1] == '\n')
            len -= 2;
        else if (len >= 1 && s[len - 1] == '\n')
            len -= 1;
    }
    size_t idlen = 0;
    while (idlen < len && s[idlen] != ' ')
        idlen++;
    if (idlen == 0 || !valid_id(s, idlen)) {
        st->seq++;
        return; /* no readable id: silence */
    }
    const char *id = s;

    const centry_t *hit = cache_find(st, c, id, idlen);
    if (hit) {
        memcpy(out->reply, hit->reply, hit->rlen);
        out->reply_len = hit->rlen;
        out->reply[hit->rlen] = 0;
        out->action = DX_REPLY;
        st->seq++;
        return;
    }

    tok_t t[MAX_TOKENS];
    int nt = 0;
    if (truncated) {
        REPLY("ERR MALFORMED");
        goto done;
    }
    if (idlen == len) {
        REPLY("ERR BADCMD");
        goto done;
    }
    /* after the id: single-space separated printable tokens, nothing else */
    size_t i = idlen + 1;
    for (;;) {
        size_t start = i;
        while (i < len && s[i] != ' ')
            i++;
        if (i == start || !printable_token(s + start, i - start)) {
            REPLY("ERR MALFORMED");
            goto done;
        }
        if (nt < MAX_TOKENS) {
            t[nt].p = s + start;
            t[nt].n = i - start;
        }
        nt++;
        if (i == len)
            break;
        i++; /* the single space */
    }
    if (nt > MAX_TOKENS)
        nt = MAX_TOKENS; /* every command rejects that many tokens as BADARGS */

    if (tok_is(&t[0], "REG"))
        do_reg(st, c, id, idlen, t, nt, out);
    else if (tok_is(&t[0], "CALL"))
        do_call(st, c, id, idlen, t, nt, out);
    else if (tok_is(&t[0], "END"))
        do_end(st, c, id, idlen, t, nt, out);
    else if (tok_is(&t[0], "GET"))
        do_get(st, c, id, idlen, t, nt, out);
    else if (tok_is(&t[0], "STATS"))
        do_stats(st, c, id, idlen, t, nt, out);
#if DX_FORMAT >= 2
    else if (tok_is(&t[0], "FWD"))
        do_fwd(st, c, id, idlen, t, nt, out);
#endif
    else if (t[0].n <= 16)
        REPLY("ERR BADCMD %.*s", (int)t[0].n, t[0].p);
    else
        REPLY("ERR BADCMD");
done:
    if (out->action != DX_NEED_AUTH)
        st->seq++;
}

void dx_auth_done(dx_state *st, enum dx_verdict v, dx_result *out)
{
    out->action = DX_SILENT;
    out->reply_len = 0;
    out->reply[0] = 0;
    out->sub[0] = 0;
    if (!st->pending)
        return;
    st->pending = 0;
    dx_client c = st->pend_client;
    const char *id = st->pend_id;
    size_t idlen = st->pend_idlen;
    const char *sub = st->pend_sub;
    size_t n = strlen(sub);
    if (v == DX_AUTH_OK) {
        /* table space and absence were checked before asking AUTH and no
         * other request ran since */
        sub_add(st, sub, n, 0);
        REPLY("OK REG %s %u", sub, st->nsubs);
    } else if (v == DX_AUTH_DENY) {
        REPLY("ERR DENIED %s", sub);
    } else {
        REPLY("ERR AUTHUNAVAIL %s", sub);
    }
    st->seq++;
}

/* ---------------------------------------------------------------- saved state */

typedef struct {
    uint8_t *buf; /* NULL: only compute the crc */
    size_t cap, len;
    uint32_t crc;
    int overflow;
} wr_t;

static void wr_bytes(wr_t *w, const void *p, size_t n)
{
    if (w->buf) {
        if (w->len + n > w->cap) {
            w->overflow = 1;
            return;
        }
        memcpy(w->buf + w->len, p, n);
    }
    w->crc = crc_update(w->crc, p, n);
    w->len += n;
}

static void wr_u8(wr_t *w, uint8_t v) { wr_bytes(w, &v, 1); }
static void wr_u16(wr_t *w, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    wr_bytes(w, b, 2);
}
static void wr_u32(wr_t *w, uint32_t v)
{
    uint8_t b[4];
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    wr_bytes(w, b, 4);
}
static void wr_u64(wr_t *w, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    wr_bytes(w, b, 8);
}

/* The canonical body of format DX_STATE_FORMAT: see PROTOCOL.md §8 (v1) and
 * §11.3 (v2 = the v1 body, then the forwarding table). */
static void write_body(const dx_state *st, wr_t *w)
{
    wr_u64(w, st->seq);
    wr_u64(w, st->total);
    wr_u32(w, st->nsubs);
    for (uint32_t i = 0; i < st->nsubs; i++) {
        wr_u8(w, st->subs[i].len);
        wr_bytes(w, st->subs[i].name, st->subs[i].len);
        wr_u64(w, st->subs[i].calls);
    }
    wr_u32(w, st->ncalls);
    for (uint32_t i = 0; i < st->ncalls; i++) {
        wr_u64(w, st->calls[i].callid);
        wr_u32(w, st->calls[i].a);
        wr_u32(w, st->calls[i].b);
    }
    wr_u32(w, st->cache_count);
    for (uint32_t k = 0; k < st->cache_count; k++) {
        const centry_t *e = &st->cache[(st->cache_head + k) % DX_CACHE_SIZE];
        wr_bytes(w, &e->ip, 4); /* network byte order as on the wire */
        wr_u16(w, e->port);
        wr_u8(w, e->idlen);
        wr_bytes(w, e->id, e->idlen);
        wr_u8(w, e->rlen);
        wr_bytes(w, e->reply, e->rlen);
    }
#if DX_FORMAT >= 2
    wr_u32(w, st->nfwd);
    for (uint32_t i = 0; i < st->nsubs; i++) {
        if (st->subs[i].fwd != NIL) {
            wr_u32(w, i);
            wr_u32(w, (uint32_t)st->subs[i].fwd);
        }
    }
#endif
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint32_t dx_digest(const dx_state *st)
{
    wr_t w = {NULL, 0, 0, 0xFFFFFFFFu, 0};
    write_body(st, &w);
    return w.crc ^ 0xFFFFFFFFu;
}

size_t dx_save(const dx_state *st, uint8_t *buf, size_t cap)
{
    if (cap < DX_STATE_HDR_LEN)
        return 0;
    wr_t w = {buf + DX_STATE_HDR_LEN, cap - DX_STATE_HDR_LEN, 0, 0xFFFFFFFFu, 0};
    write_body(st, &w);
    if (w.overflow)
        return 0;
    uint8_t *h = buf;
    memset(h, 0, DX_STATE_HDR_LEN);
    memcpy(h, DX_STATE_MAGIC, 8);
    wr_t hw = {h + 8, DX_STATE_HDR_LEN - 8, 0, 0, 0};
    wr_u32(&hw, DX_STATE_FORMAT);
    wr_u32(&hw, DX_STATE_HDR_LEN);
    wr_u32(&hw, (uint32_t)w.len);
    wr_u32(&hw, w.crc ^ 0xFFFFFFFFu);
    memcpy(h + 24, st->version, strlen(st->version)); /* 32 bytes, NUL padded */
    uint32_t hcrc = dx_crc32(h, 56);
    for (int i = 0; i < 4; i++)
        h[56 + i] = (uint8_t)(hcrc >> (8 * i));
    return DX_STATE_HDR_LEN + w.len;
}

size_t dx_header_body_len(const uint8_t *h, size_t len, const char **why)
{
    if (len < DX_STATE_HDR_LEN) {
        *why = "short";
        return 0;
    }
    if (memcmp(h, DX_STATE_MAGIC, 8) != 0) {
        *why = "nomagic";
        return 0;
    }
    if (dx_crc32(h, 56) != rd32(h + 56)) {
        *why = "badhdrcrc";
        return 0;
    }
#if DX_FORMAT >= 2
    /* format 1 is read and converted (PROTOCOL.md §11.4) */
    uint32_t format = rd32(h + 8);
    if ((format != 1 && format != DX_STATE_FORMAT) || rd32(h + 12) != DX_STATE_HDR_LEN) {
        *why = "badformat";
        return 0;
    }
    uint32_t blen = rd32(h + 16);
    size_t min_blen = 8 + 8 + 4 + 4 + 4 + (format >= 2 ? 4 : 0);
    if (blen < min_blen || blen > DX_STATE_MAX_LEN - DX_STATE_HDR_LEN) {
#else
    if (rd32(h + 8) != DX_STATE_FORMAT || rd32(h + 12) != DX_STATE_HDR_LEN) {
        *why = "badformat";
        return 0;
    }
    uint32_t blen = rd32(h + 16);
    if (blen < 8 + 8 + 4 + 4 + 4 || blen > DX_STATE_MAX_LEN - DX_STATE_HDR_LEN) {
#endif
        *why = "toolong";
        return 0;
    }
    return blen;
}

typedef struct {
    const uint8_t *p;
    size_t n, off;
    int bad;
} rd_t;

static const uint8_t *rd_bytes(rd_t *r, size_t n)
{
    if (r->bad || r->n - r->off < n) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *p = r->p + r->off;
    r->off += n;
    return p;
}
static uint8_t rd_u8(rd_t *r)
{
    const uint8_t *p = rd_bytes(r, 1);
    return p ? p[0] : 0;
}
static uint16_t rd_u16(rd_t *r)
{
    const uint8_t *p = rd_bytes(r, 2);
    return p ? (uint16_t)(p[0] | p[1] << 8) : 0;
}
static uint32_t rd_u32(rd_t *r)
{
    const uint8_t *p = rd_bytes(r, 4);
    return p ? rd32(p) : 0;
}
static uint64_t rd_u64(rd_t *r)
{
    const uint8_t *p = rd_bytes(r, 8);
    return p ? (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32 : 0;
}

/* Parses a body of the given format (1, or DX_STATE_FORMAT) into st. */
static int parse_body(dx_state *st, const uint8_t *body, size_t blen, uint32_t format)
{
#if DX_FORMAT >= 2
    size_t max_reply = format == 1 ? DX_V1_MAX_REPLY : DX_MAX_REPLY;
#else
    (void)format;
#define max_reply DX_MAX_REPLY
#endif
    rd_t r = {body, blen, 0, 0};
    reset(st);
    st->seq = rd_u64(&r);
    st->total = rd_u64(&r);
    uint32_t nsubs = rd_u32(&r);
    if (r.bad || nsubs > DX_MAX_SUBS)
        return -1;
    for (uint32_t i = 0; i < nsubs; i++) {
        uint8_t n = rd_u8(&r);
        const uint8_t *name = rd_bytes(&r, n);
        uint64_t calls = rd_u64(&r);
        if (r.bad || !valid_sub((const char *)name, n) ||
            sub_find(st, (const char *)name, n) != NIL)
            return -1;
        sub_add(st, (const char *)name, n, calls);
    }
    uint32_t ncalls = rd_u32(&r);
    if (r.bad || ncalls > DX_MAX_CALLS)
        return -1;
    uint64_t prev = 0;
    for (uint32_t i = 0; i < ncalls; i++) {
        uint64_t callid = rd_u64(&r);
        uint32_t a = rd_u32(&r), b = rd_u32(&r);
        if (r.bad || callid <= prev || callid > st->total || a >= nsubs || b >= nsubs ||
            a == b || st->subs[a].callid || st->subs[b].callid)
            return -1;
        st->calls[i].callid = callid;
        st->calls[i].a = a;
        st->calls[i].b = b;
        st->subs[a].callid = callid;
        st->subs[b].callid = callid;
        st->ncalls = i + 1;
        prev = callid;
    }
    uint32_t ncache = rd_u32(&r);
    if (r.bad || ncache > DX_CACHE_SIZE)
        return -1;
    for (uint32_t k = 0; k < ncache; k++) {
        const uint8_t *ip = rd_bytes(&r, 4);
        dx_client c = {0, 0};
        if (ip)
            memcpy(&c.ip, ip, 4);
        c.port = rd_u16(&r);
        uint8_t idlen = rd_u8(&r);
        const uint8_t *id = rd_bytes(&r, idlen);
        uint8_t rlen = rd_u8(&r);
        const uint8_t *rep = rd_bytes(&r, rlen);
        if (r.bad || !valid_id((const char *)id, idlen) || rlen < 1 || rlen > max_reply ||
            cache_find(st, c, (const char *)id, idlen))
            return -1;
        cache_put(st, c, (const char *)id, idlen, (const char *)rep, rlen);
    }
#if DX_FORMAT >= 2
    /* v1 has no forwarding table: a converted state forwards nothing */
    if (format >= 2) {
        uint32_t nfwd = rd_u32(&r);
        if (r.bad || nfwd > nsubs)
            return -1;
        uint32_t prev_sub = 0;
        for (uint32_t k = 0; k < nfwd; k++) {
            uint32_t sub = rd_u32(&r), target = rd_u32(&r);
            if (r.bad || (k && sub <= prev_sub) || sub >= nsubs || target >= nsubs ||
                target == sub)
                return -1;
            st->subs[sub].fwd = (int32_t)target;
            st->nfwd = k + 1;
            prev_sub = sub;
        }
    }
#endif
    if (r.off != r.n)
        return -1;
    return 0;
#undef max_reply
}

int dx_load(dx_state *st, const uint8_t *buf, size_t len, const char **why)
{
    size_t blen = dx_header_body_len(buf, len, why);
    if (!blen)
        return -1;
    if (len - DX_STATE_HDR_LEN < blen) {
        *why = "short";
        return -1;
    }
    const uint8_t *body = buf + DX_STATE_HDR_LEN;
    if (dx_crc32(body, blen) != rd32(buf + 20)) {
        *why = "badcrc";
        return -1;
    }
    dx_state *tmp = dx_new(st->version);
    if (!tmp) {
        *why = "nomem";
        return -1;
    }
    uint32_t format = DX_FORMAT >= 2 ? rd32(buf + 8) : DX_STATE_FORMAT;
    if (parse_body(tmp, body, blen, format) != 0) {
        dx_free(tmp);
        *why = "badbody";
        return -1;
    }
#if DX_FORMAT >= 2
    tmp->loaded_format = format;
#endif
    memcpy(st, tmp, sizeof *st); /* no pointers inside: a flat copy is exact */
    dx_free(tmp);
    return 0;
}

/* ---------------------------------------------------------------- invariants */

int dx_check(const dx_state *st)
{
    if (st->nsubs > DX_MAX_SUBS || st->ncalls > DX_MAX_CALLS ||
        st->cache_count > DX_CACHE_SIZE)
        return -1;
    uint32_t busy = 0;
#if DX_FORMAT >= 2
    uint32_t nfwd = 0;
#endif
    for (uint32_t i = 0; i < st->nsubs; i++) {
        const sub_t *s = &st->subs[i];
        if (!valid_sub(s->name, s->len) || sub_find(st, s->name, s->len) != (int32_t)i)
            return -2;
#if DX_FORMAT >= 2
        if (s->fwd != NIL) {
            if (s->fwd < 0 || (uint32_t)s->fwd >= st->nsubs || s->fwd == (int32_t)i)
                return -8;
            nfwd++;
        }
#endif
        if (s->callid) {
            int32_t k = call_find(st, s->callid);
            if (k == NIL || (st->calls[k].a != i && st->calls[k].b != i))
                return -3;
            busy++;
        }
    }
    if (busy != 2 * st->ncalls)
        return -4;
#if DX_FORMAT >= 2
    if (nfwd != st->nfwd)
        return -9;
#endif
    for (uint32_t k = 0; k < st->ncalls; k++) {
        const call_t *c = &st->calls[k];
        if (c->callid == 0 || c->callid > st->total || (k && c->callid <= st->calls[k - 1].callid))
            return -5;
        if (c->a >= st->nsubs || c->b >= st->nsubs || c->a == c->b ||
            st->subs[c->a].callid != c->callid || st->subs[c->b].callid != c->callid)
            return -6;
    }
    for (uint32_t k = 0; k < st->cache_count; k++) {
        const centry_t *e = &st->cache[(st->cache_head + k) % DX_CACHE_SIZE];
        dx_client c = {e->ip, e->port};
        if (!valid_id(e->id, e->idlen) || e->rlen < 1 || e->rlen > DX_MAX_REPLY ||
            cache_find(st, c, e->id, e->idlen) != e)
            return -7;
    }
    return 0;
}
