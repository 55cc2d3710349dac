/*
 * dxlegacy: the reference legacy guest application (a DX200-style switching
 * application). Owns the sockets, the watchdog, the state disk and the
 * console lines; all protocol decisions are delegated to dxcore.
 *
 * Single-threaded and deterministic: the clock is read only to pace watchdog
 * kicks and AUTH retransmissions, never to shape a reply. The full contract
 * is ../PROTOCOL.md.
 *
 * Build switches (image-build/build-guest.sh sets them):
 *   DX_VERSION      the version string (PING, STATS, DX-READY, saved header)
 *   DX_FORMAT       application generation 1 or 2, see dxcore.h
 *   DX_BREAK_CRASH  a deliberately broken build for aborted-upgrade tests: it
 *                   loads the state, says DX-BROKEN and aborts before DX-READY
 *                   (the watchdog stays armed, as with any crash)
 *   DX_POISON       poison triggers for the poison-input tests, never in the
 *                   default image: a service request `<id> REG crash<...>`
 *                   crashes the guest (a kernel oops, so the whole unit goes
 *                   down as with a fault in a legacy RTOS), `<id> REG hang<...>`
 *                   hangs it (no service, no management, no watchdog kicks)
 */
#define _GNU_SOURCE
#include "dxcore.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/watchdog.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef DX_VERSION
#define DX_VERSION "0.0.0-dev"
#endif

#define SVC_RCVBUF (4 * 1024 * 1024) /* requests queue here while AUTH is asked */
#define AUTH_RETRY_MS 500            /* AUTHQ retransmission interval */
#define AUTH_TRIES 10                /* AUTHQ sends before ERR AUTHUNAVAIL */
#define SVC_BATCH 64                 /* service datagrams per loop turn */
#define MGMT_MAX 256                 /* management datagram buffer */

/* ---------------------------------------------------------------- config */

typedef struct {
    int port;            /* dx.port: service */
    int mport;           /* dx.mport: management */
    int aport;           /* dx.aport: local port AUTHQ is sent from */
    struct in_addr gw;   /* dx.gw: the only peer allowed on the management port */
    struct sockaddr_in auth; /* dx.auth */
    struct in_addr bind; /* local address to bind (0.0.0.0 in the guest) */
    int wdt;             /* dx.wdt: seconds, 0 = no watchdog */
    const char *wdt_dev;
    const char *state_path;
    int state_wait_ms;   /* how long to wait for the state disk to appear */
} config_t;

static config_t cfg;
static dx_state *st;
static int svc_fd = -1, mgmt_fd = -1, auth_fd = -1, wdt_fd = -1;
static int64_t kick_every_ms, next_kick_ms;
static uint8_t *save_buf;

/* ---------------------------------------------------------------- console */

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(STDOUT_FILENO, line, (size_t)n);
    (void)w;
}

/* ---------------------------------------------------------------- time */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- watchdog */

static void wdt_open(void)
{
    if (cfg.wdt <= 0) {
        say("DX-WDT off");
        return;
    }
    wdt_fd = open(cfg.wdt_dev, O_WRONLY | O_CLOEXEC);
    if (wdt_fd < 0) {
        say("DX-WDT unavailable %s: %s", cfg.wdt_dev, strerror(errno));
        return;
    }
    int t = cfg.wdt;
    if (ioctl(wdt_fd, WDIOC_SETTIMEOUT, &t) != 0) {
        say("DX-WDT settimeout %d failed: %s", cfg.wdt, strerror(errno));
        if (ioctl(wdt_fd, WDIOC_GETTIMEOUT, &t) != 0 || t <= 0)
            t = cfg.wdt;
    }
    ioctl(wdt_fd, WDIOC_KEEPALIVE, 0);
    kick_every_ms = (int64_t)t * 1000 / 4;
    if (kick_every_ms < 100)
        kick_every_ms = 100;
    next_kick_ms = now_ms() + kick_every_ms;
    say("DX-WDT timeout=%d", t);
}

/* Kicks if due; returns the poll timeout (ms) until the next kick, -1 if none. */
static int wdt_service(void)
{
    if (wdt_fd < 0)
        return -1;
    int64_t now = now_ms();
    if (now >= next_kick_ms) {
        ioctl(wdt_fd, WDIOC_KEEPALIVE, 0);
        next_kick_ms = now + kick_every_ms;
    }
    return (int)(next_kick_ms - now);
}

/* Magic close: the watchdog stops instead of firing. */
static void wdt_close(void)
{
    if (wdt_fd < 0)
        return;
    ssize_t w = write(wdt_fd, "V", 1);
    (void)w;
    close(wdt_fd);
    wdt_fd = -1;
}

/* ---------------------------------------------------------------- state disk */

static int read_full(int fd, uint8_t *buf, size_t n, off_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, off + (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

static int wait_for_path(const char *path, int wait_ms)
{
    struct stat sb;
    int64_t deadline = now_ms() + wait_ms;
    while (stat(path, &sb) != 0) {
        if (now_ms() >= deadline)
            return -1;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
        wdt_service();
    }
    return 0;
}

static void state_load(void)
{
    const char *why = "nodisk";
    if (wait_for_path(cfg.state_path, cfg.state_wait_ms) != 0) {
        say("DX-STATE empty reason=nodisk");
        return;
    }
    int fd = open(cfg.state_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        say("DX-STATE empty reason=nodisk");
        return;
    }
    uint8_t hdr[DX_STATE_HDR_LEN];
    size_t blen = 0;
    if (read_full(fd, hdr, sizeof hdr, 0) != 0) {
        why = "short";
    } else {
        static const uint8_t zero[DX_STATE_HDR_LEN];
        if (memcmp(hdr, zero, sizeof hdr) == 0)
            why = "blank";
        else
            blen = dx_header_body_len(hdr, sizeof hdr, &why);
    }
    if (blen) {
        memcpy(save_buf, hdr, sizeof hdr);
        if (read_full(fd, save_buf + DX_STATE_HDR_LEN, blen, DX_STATE_HDR_LEN) != 0)
            why = "short";
        else if (dx_load(st, save_buf, DX_STATE_HDR_LEN + blen, &why) == 0) {
            close(fd);
#if DX_FORMAT >= 2
            say("DX-STATE loaded subs=%u total=%llu active=%u seq=%llu format=%u%s",
                dx_nsubs(st), (unsigned long long)dx_total(st), dx_active(st),
                (unsigned long long)dx_seq(st), dx_loaded_format(st),
                dx_loaded_format(st) == DX_STATE_FORMAT ? "" : " converted");
#else
            say("DX-STATE loaded subs=%u total=%llu active=%u seq=%llu", dx_nsubs(st),
                (unsigned long long)dx_total(st), dx_active(st),
                (unsigned long long)dx_seq(st));
#endif
            return;
        }
    }
    close(fd);
    say("DX-STATE empty reason=%s", why);
}

/* Returns bytes written, or -1 with *why set. */
static long state_save(const char **why)
{
    size_t n = dx_save(st, save_buf, DX_STATE_MAX_LEN);
    if (!n) {
        *why = "INTERNAL";
        return -1;
    }
    int fd = open(cfg.state_path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        *why = errno == ENOENT ? "NODEV" : "IO";
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) == 0 && S_ISBLK(sb.st_mode)) {
        uint64_t size = 0;
        if (ioctl(fd, BLKGETSIZE64, &size) != 0 || size < n) {
            close(fd);
            *why = "NOSPACE";
            return -1;
        }
    }
    size_t put = 0;
    while (put < n) {
        ssize_t w = pwrite(fd, save_buf + put, n - put, (off_t)put);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            close(fd);
            *why = errno == ENOSPC ? "NOSPACE" : "IO";
            return -1;
        }
        put += (size_t)w;
    }
    if (fsync(fd) != 0) {
        close(fd);
        *why = "IO";
        return -1;
    }
    close(fd);
    return (long)n;
}

/* ---------------------------------------------------------------- sockets */

static int udp_bind(int port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) != 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr = cfg.bind;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void send_to(int fd, const void *p, size_t n, const struct sockaddr_in *to)
{
    ssize_t w;
    do
        w = sendto(fd, p, n, 0, (const struct sockaddr *)to, sizeof *to);
    while (w < 0 && errno == EINTR);
}

/* Strips one trailing "\n" or "\r\n". */
static size_t chomp(const char *s, size_t n)
{
    if (n >= 2 && s[n - 2] == '\r' && s[n - 1] == '\n')
        return n - 2;
    if (n >= 1 && s[n - 1] == '\n')
        return n - 1;
    return n;
}

/* ---------------------------------------------------------------- management */

static void mgmt_reply(const struct sockaddr_in *to, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void mgmt_reply(const struct sockaddr_in *to, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line)
        n = sizeof line - 1;
    send_to(mgmt_fd, line, (size_t)n, to);
}

static void mgmt_one(void)
{
    char buf[MGMT_MAX];
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    ssize_t r = recvfrom(mgmt_fd, buf, sizeof buf, MSG_DONTWAIT | MSG_TRUNC,
                         (struct sockaddr *)&from, &fl);
    if (r < 0)
        return;
    if (fl < sizeof from || from.sin_family != AF_INET ||
        from.sin_addr.s_addr != cfg.gw.s_addr)
        return; /* only the controller (dx.gw) may manage the guest */
    if ((size_t)r > sizeof buf) {
        mgmt_reply(&from, "ERR BADCMD");
        return;
    }
    size_t n = chomp(buf, (size_t)r);
    unsigned long long seq = (unsigned long long)dx_seq(st);
#define IS(lit) (n == sizeof(lit) - 1 && memcmp(buf, lit, n) == 0)
    if (IS("PING")) {
        mgmt_reply(&from, "OK PING %s seq=%llu", dx_version(st), seq);
    } else if (IS("STATE")) {
        mgmt_reply(&from, "OK STATE seq=%llu subs=%u active=%u total=%llu cache=%u crc=%08x",
                   seq, dx_nsubs(st), dx_active(st), (unsigned long long)dx_total(st),
                   dx_ncache(st), dx_digest(st));
    } else if (IS("SAVE") || IS("SAVE STOP")) {
        int stop = IS("SAVE STOP");
        const char *why = "IO";
        long bytes = state_save(&why);
        if (bytes < 0) {
            say("DX-SAVE failed %s", why);
            mgmt_reply(&from, "ERR SAVE %s", why);
            return;
        }
        say("DX-SAVE bytes=%ld seq=%llu", bytes, seq);
        mgmt_reply(&from, "OK SAVE %ld seq=%llu", bytes, seq);
        if (stop) {
            wdt_close();
            say("DX-STOP seq=%llu", seq);
            exit(0);
        }
    } else if (IS("HANG")) {
        mgmt_reply(&from, "OK HANG");
        say("DX-HANG");
        for (;;) /* no kicks, no service: the watchdog must fire */
            pause();
    } else {
        mgmt_reply(&from, "ERR BADCMD");
    }
#undef IS
}

/* ---------------------------------------------------------------- AUTH */

static void auth_drain(void)
{
    char buf[256];
    while (recv(auth_fd, buf, sizeof buf, MSG_DONTWAIT) >= 0)
        ;
}

/* "AUTHR <sub> OK|DENY" for our sub: 0 = OK, 1 = DENY, -1 = not ours. */
static int auth_parse(const char *buf, size_t n, const char *sub)
{
    size_t sl = strlen(sub);
    n = chomp(buf, n);
    if (n < 6 + sl + 1 || memcmp(buf, "AUTHR ", 6) != 0 || memcmp(buf + 6, sub, sl) != 0 ||
        buf[6 + sl] != ' ')
        return -1;
    const char *v = buf + 6 + sl + 1;
    size_t vn = n - (6 + sl + 1);
    if (vn == 2 && memcmp(v, "OK", 2) == 0)
        return 0;
    if (vn == 4 && memcmp(v, "DENY", 4) == 0)
        return 1;
    return -1;
}

/* Blocks the service (not the watchdog or the management port) until AUTH
 * answers for `sub` or AUTH_TRIES sends went unanswered. */
static enum dx_verdict auth_ask(const char *sub)
{
    char q[8 + DX_MAX_SUB];
    int qn = snprintf(q, sizeof q, "AUTHQ %s", sub);
    auth_drain(); /* a late answer to an earlier, abandoned question */
    for (int attempt = 0; attempt < AUTH_TRIES; attempt++) {
        send_to(auth_fd, q, (size_t)qn, &cfg.auth);
        int64_t deadline = now_ms() + AUTH_RETRY_MS;
        for (;;) {
            int64_t left = deadline - now_ms();
            if (left <= 0)
                break;
            int kick = wdt_service();
            int timeout = (kick >= 0 && kick < left) ? kick : (int)left;
            struct pollfd p[2] = {{auth_fd, POLLIN, 0}, {mgmt_fd, POLLIN, 0}};
            if (poll(p, 2, timeout) < 0)
                continue;
            wdt_service();
            if (p[1].revents & POLLIN)
                mgmt_one();
            if (p[0].revents & POLLIN) {
                char buf[256];
                ssize_t r;
                while ((r = recv(auth_fd, buf, sizeof buf, MSG_DONTWAIT)) >= 0) {
                    int v = auth_parse(buf, (size_t)r > sizeof buf ? sizeof buf : (size_t)r, sub);
                    if (v == 0)
                        return DX_AUTH_OK;
                    if (v == 1)
                        return DX_AUTH_DENY;
                }
            }
        }
    }
    say("DX-AUTH unavailable %s", sub);
    return DX_AUTH_UNAVAIL;
}

/* ---------------------------------------------------------------- service */

#ifdef DX_POISON
/* The poison triggers (build switch DX_POISON): deterministic, decided by the request's bytes
 * alone, so both copies fed the same stream fail on the same request. */
static void poison_check(const uint8_t *buf, size_t n)
{
    char line[64];
    size_t m = n < sizeof line - 1 ? n : sizeof line - 1;
    memcpy(line, buf, m);
    line[m] = 0;
    const char *reg = strstr(line, " REG ");
    if (!reg)
        return;
    const char *sub = reg + 5;
    if (strncmp(sub, "crash", 5) == 0) {
        say("DX-POISON crash on %s", line);
        int fd = open("/proc/sysrq-trigger", O_WRONLY);
        if (fd >= 0 && write(fd, "c", 1) == 1) /* an oops: oops=panic, panic=-1 reboots */
            pause();
        abort(); /* no sysrq: the application dies and the watchdog fires */
    }
    if (strncmp(sub, "hang", 4) == 0) {
        say("DX-POISON hang on %s", line);
        for (;;) /* no kicks, no service, no management: the watchdog must fire */
            ;
    }
}
#endif

static int svc_one(void)
{
    static uint8_t buf[DX_MAX_DATAGRAM];
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    ssize_t r = recvfrom(svc_fd, buf, sizeof buf, MSG_DONTWAIT | MSG_TRUNC,
                         (struct sockaddr *)&from, &fl);
    if (r < 0)
        return -1;
    if (fl < sizeof from || from.sin_family != AF_INET)
        return 0;
    int truncated = (size_t)r > sizeof buf;
#ifdef DX_POISON
    poison_check(buf, truncated ? sizeof buf : (size_t)r);
#endif
    dx_client c = {from.sin_addr.s_addr, ntohs(from.sin_port)};
    dx_result res;
    dx_request(st, c, buf, truncated ? sizeof buf : (size_t)r, truncated, &res);
    if (res.action == DX_NEED_AUTH)
        dx_auth_done(st, auth_ask(res.sub), &res);
    if (res.action == DX_REPLY)
        send_to(svc_fd, res.reply, res.reply_len, &from);
    return 0;
}

/* ---------------------------------------------------------------- options */

static int parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_hostport(const char *s, struct sockaddr_in *a)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    int port;
    if (!colon || (size_t)(colon - s) >= sizeof host)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    if (parse_int(colon + 1, 1, 65535, &port) != 0)
        return -1;
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
}

static void usage(void)
{
    say("usage: dxlegacy [--port N] [--mport N] [--aport N] [--auth IP:PORT] [--gw IP]\n"
        "                [--bind IP] [--wdt SECONDS] [--wdt-dev PATH] [--state PATH]\n"
        "                [--state-wait MS] [--version]");
}

/* A bad value is reported on the console and the default is kept: the guest
 * must come up even with a typo on the kernel command line. */
static void parse_args(int argc, char **argv)
{
    cfg.port = 5000;
    cfg.mport = 5002;
    cfg.aport = 5001;
    inet_pton(AF_INET, "10.0.0.1", &cfg.gw);
    parse_hostport("10.0.0.1:7000", &cfg.auth);
    cfg.bind.s_addr = htonl(INADDR_ANY);
    cfg.wdt = 10;
    cfg.wdt_dev = "/dev/watchdog";
    cfg.state_path = "/dev/sda";
    cfg.state_wait_ms = 1000;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        if (!strcmp(k, "--version")) {
            say("%s", DX_VERSION);
            exit(0);
        }
        if (!strcmp(k, "--help")) {
            usage();
            exit(0);
        }
        if (i + 1 >= argc) {
            say("DX-CONFIG missing value for %s", k);
            usage();
            exit(2);
        }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(k, "--port"))
            bad = parse_int(v, 1, 65535, &cfg.port);
        else if (!strcmp(k, "--mport"))
            bad = parse_int(v, 1, 65535, &cfg.mport);
        else if (!strcmp(k, "--aport"))
            bad = parse_int(v, 1, 65535, &cfg.aport);
        else if (!strcmp(k, "--wdt"))
            bad = parse_int(v, 0, 3600, &cfg.wdt);
        else if (!strcmp(k, "--state-wait"))
            bad = parse_int(v, 0, 600000, &cfg.state_wait_ms);
        else if (!strcmp(k, "--auth")) {
            struct sockaddr_in a;
            bad = parse_hostport(v, &a);
            if (!bad)
                cfg.auth = a;
        } else if (!strcmp(k, "--gw") || !strcmp(k, "--bind")) {
            struct in_addr a;
            bad = inet_pton(AF_INET, v, &a) == 1 ? 0 : -1;
            if (!bad)
                *(!strcmp(k, "--gw") ? &cfg.gw : &cfg.bind) = a;
        } else if (!strcmp(k, "--wdt-dev"))
            cfg.wdt_dev = v;
        else if (!strcmp(k, "--state"))
            cfg.state_path = v;
        else {
            say("DX-CONFIG unknown option %s", k);
            usage();
            exit(2);
        }
        if (bad)
            say("DX-CONFIG bad value %s %s (default kept)", k, v);
    }
    if (cfg.port == cfg.mport || cfg.port == cfg.aport || cfg.mport == cfg.aport) {
        say("DX-CONFIG ports must differ (port=%d mport=%d aport=%d), using defaults", cfg.port,
            cfg.mport, cfg.aport);
        cfg.port = 5000;
        cfg.mport = 5002;
        cfg.aport = 5001;
    }
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    parse_args(argc, argv);
    st = dx_new(DX_VERSION);
    save_buf = malloc(DX_STATE_MAX_LEN);
    if (!st || !save_buf) {
        say("DX-FATAL out of memory");
        return 1;
    }
    /* The watchdog is armed first: if anything below fails, the guest is
     * reset instead of sitting silently without a service. */
    wdt_open();
    state_load();
#ifdef DX_BREAK_CRASH
    say("DX-BROKEN crash after state load (DX_BREAK=crash build)");
    abort();
#endif
    svc_fd = udp_bind(cfg.port, SVC_RCVBUF);
    mgmt_fd = udp_bind(cfg.mport, 0);
    auth_fd = udp_bind(cfg.aport, 0);
    if (svc_fd < 0 || mgmt_fd < 0 || auth_fd < 0) {
        say("DX-FATAL cannot bind udp ports %d/%d/%d: %s", cfg.port, cfg.mport, cfg.aport,
            strerror(errno));
        return 1;
    }
    say("DX-READY %s", DX_VERSION);

    for (;;) {
        struct pollfd p[2] = {{mgmt_fd, POLLIN, 0}, {svc_fd, POLLIN, 0}};
        if (poll(p, 2, wdt_service()) < 0 && errno != EINTR) {
            say("DX-FATAL poll: %s", strerror(errno));
            return 1;
        }
        wdt_service();
        if (p[0].revents & POLLIN)
            mgmt_one();
        if (p[1].revents & POLLIN) {
            for (int i = 0; i < SVC_BATCH; i++) {
                if (svc_one() < 0)
                    break;
                wdt_service();
            }
        }
    }
}
