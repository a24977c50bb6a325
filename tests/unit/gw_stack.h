/* gw_stack.h - a whole ds4 stack for tests: a tiny test model (made in
 * well under a second), tokenizerd, engined (backend "ref" unless
 * DS4_TEST_BACKEND says otherwise, --test-mode so requests can script the
 * output through forced decoding) and gatewayd on a free loopback port,
 * all in a private run directory and stats instance; plus a small HTTP/1.1
 * client (whole responses, or a raw socket for streams and disconnects).
 *
 * Readiness is never a sleep: each daemon is started in the foreground
 * with --notify-fd and waited for ("READY <pid>") with a deadline, then
 * /health is polled until every stage answers ready. Teardown sends
 * SIGTERM, waits with a deadline (SIGKILL after), and removes the run
 * directory and the instance's shared-memory segments.
 *
 * Binaries are taken from the build directory of the test binary
 * (<build>/tests/test_x -> <build>/gatewayd ...). Set DS4_TEST_KEEP=1 to
 * keep the run directory (logs) for a post-mortem. Header-only. */
#ifndef DS4_GW_STACK_H
#define DS4_GW_STACK_H

#include <dirent.h>
#include <ftw.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/dsv4_mkmodel.h"
#include "common/shm.h"
#include "common/stats.h"

static inline long long gws_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the test model ------------------------------------------------------ */

/* A 1-layer, 64-wide exact-layout model with the real tokenizer: its output
 * is noise, the tests script what they need through forced decoding, and
 * the reference backend runs it fast. 0 or -1. */
static inline int gws_make_model(const char *path)
{
    dsv4_tokdata *tok = NULL;
    char err[512];
    const char *tj = getenv("DS4_TOKENIZER_JSON");
    if (dsv4_tokdata_load(tj && *tj ? tj : DSV4_TOKENIZER_JSON, &tok, err, sizeof err)) {
        fprintf(stderr, "tokenizer: %s\n", err);
        return -1;
    }
    dsv4_mkmodel_opts o;
    dsv4_mkmodel_defaults(&o);
    o.tok = tok;
    o.seed = 7;
    o.layout = DSV4_MK_EXACT;
    o.hp.n_vocab = tok->n_tokens;
    o.hp.n_layer = 1;
    o.hp.compress_ratio[0] = 0;
    o.hp.swiglu_clamp[0] = 10.0f;
    o.hp.n_hash_layer = 1;
    o.hp.n_embd = 64;
    o.hp.n_head = 2;
    o.hp.head_dim = 128;
    o.hp.n_rot = 64;
    o.hp.q_lora_rank = 32;
    o.hp.o_lora_rank = 32;
    o.hp.o_groups = 1;
    o.hp.n_expert = 2;
    o.hp.n_expert_used = 1;
    o.hp.n_ff_exp = 64;
    o.hp.n_idx_head = 4;
    o.hp.idx_head_dim = 64;
    o.hp.idx_top_k = 8;
    int rc = dsv4_mkmodel_write(&o, path, NULL, err, sizeof err);
    if (rc)
        fprintf(stderr, "mkmodel: %s\n", err);
    dsv4_tokdata_free(tok);
    return rc;
}

/* ---- processes ----------------------------------------------------------- */

typedef struct gws_proc {
    pid_t pid;
    char name[32];
    char log[256];
} gws_proc;

typedef struct gw_stack {
    char build[1024];
    char dir[64];
    char inst[48];
    char model[128];
    gws_proc tok, eng, gw;
    int port;
    int nextra;
} gw_stack;

static inline int gws_build_dir(char *out, size_t len)
{
    char self[1024];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return -1;
    self[n] = 0;
    for (int up = 0; up < 2; up++) {
        char *s = strrchr(self, '/');
        if (!s)
            return -1;
        *s = 0;
    }
    snprintf(out, len, "%s", self);
    return 0;
}

/* Print the last lines of a daemon's log (for failures). */
static inline void gws_log_tail(const gws_proc *p, int lines)
{
    FILE *f = fopen(p->log, "r");
    if (!f)
        return;
    char *buf = NULL;
    size_t n = 0;
    char tmp[4096];
    size_t k;
    while ((k = fread(tmp, 1, sizeof tmp, f)) > 0) {
        buf = realloc(buf, n + k + 1);
        memcpy(buf + n, tmp, k);
        n += k;
    }
    fclose(f);
    if (!buf)
        return;
    buf[n] = 0;
    size_t at = n;
    for (int l = 0; at > 0 && l <= lines; at--)
        if (buf[at - 1] == '\n')
            l++;
    fprintf(stderr, "---- %s log (tail) ----\n%s\n", p->name, buf + at);
    free(buf);
}

/* Wait for "READY <pid>" on fd. */
static inline int gws_wait_ready(int fd, pid_t pid, int ms)
{
    char buf[64];
    size_t n = 0;
    long long end = gws_now_ms() + ms;
    while (n < sizeof buf - 1 && !memchr(buf, '\n', n)) {
        long long left = end - gws_now_ms();
        struct pollfd pf = {fd, POLLIN, 0};
        if (left <= 0 || poll(&pf, 1, (int)left) <= 0)
            return -1;
        ssize_t r = read(fd, buf + n, sizeof buf - 1 - n);
        if (r <= 0)
            return -1;
        n += (size_t)r;
    }
    buf[n] = 0;
    char want[32];
    snprintf(want, sizeof want, "READY %d\n", (int)pid);
    return strcmp(buf, want) == 0 ? 0 : -1;
}

/* Start <build>/<bin> in the foreground with the common options and extra
 * (NULL-terminated), wait for READY. 0 or -1 (log tail printed). */
static inline int gws_spawn(gw_stack *s, gws_proc *p, const char *bin, const char *name,
                            const char *const *extra)
{
    char path[1200], fdarg[16];
    snprintf(path, sizeof path, "%s/%s", s->build, bin);
    snprintf(p->name, sizeof p->name, "%s", name);
    snprintf(p->log, sizeof p->log, "%s/%s.log", s->dir, name);
    int nfd[2];
    if (pipe(nfd))
        return -1;
    snprintf(fdarg, sizeof fdarg, "%d", nfd[1]);
    const char *argv[64];
    int k = 0;
    argv[k++] = path;
    argv[k++] = "--foreground";
    argv[k++] = "--run-dir";
    argv[k++] = s->dir;
    argv[k++] = "--instance";
    argv[k++] = s->inst;
    argv[k++] = "--notify-fd";
    argv[k++] = fdarg;
    argv[k++] = "--log-level";
    argv[k++] = getenv("DS4_TEST_LOG_LEVEL") ? getenv("DS4_TEST_LOG_LEVEL") : "info";
    for (int i = 0; extra && extra[i] && k < 62; i++)
        argv[k++] = extra[i];
    argv[k] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(nfd[0]);
        int lf = open(p->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (lf >= 0) {
            dup2(lf, 1);
            dup2(lf, 2);
        }
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    close(nfd[1]);
    p->pid = pid;
    int ok = pid > 0 && gws_wait_ready(nfd[0], pid, 60000) == 0;
    close(nfd[0]);
    if (!ok) {
        fprintf(stderr, "%s did not signal READY\n", name);
        gws_log_tail(p, 20);
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        p->pid = 0;
        return -1;
    }
    return 0;
}

/* Signal a daemon and wait for it to exit (SIGKILL after ms). Returns
 * its wait status, or -1 if it had to be killed. */
static inline int gws_signal_wait(gws_proc *p, int sig, int ms)
{
    if (p->pid <= 0)
        return 0;
    kill(p->pid, sig);
    long long end = gws_now_ms() + ms;
    int st = 0;
    for (;;) {
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid) {
            p->pid = 0;
            return st;
        }
        if (gws_now_ms() >= end)
            break;
        poll(NULL, 0, 5); /* waiting for our own child to exit */
    }
    kill(p->pid, SIGKILL);
    waitpid(p->pid, &st, 0);
    p->pid = 0;
    return -1;
}

/* The port a gatewayd wrote to its port file. */
static inline int gws_read_port(const char *file)
{
    FILE *f = fopen(file, "r");
    int port = 0;
    if (f) {
        if (fscanf(f, "%d", &port) != 1)
            port = 0;
        fclose(f);
    }
    return port;
}

static inline int gws_start_tok(gw_stack *s)
{
    /* debug: tokenizerd logs each request (with its id) only at debug */
    const char *a[] = {"--model", s->model, "--log-level", "debug", NULL};
    return gws_spawn(s, &s->tok, "tokenizerd", "tokenizerd", a);
}

/* engined; extra options (NULL-terminated, may be NULL) after the model. */
static inline int gws_start_eng(gw_stack *s, const char *const *extra)
{
    const char *be = getenv("DS4_TEST_BACKEND");
    be = be && *be ? be : "ref";
    const char *a[40] = {"--model", s->model, "--backend", be, "--test-mode"};
    int k = 5;
    if (strcmp(be, "cl") == 0)
        a[k++] = "--exact"; /* the tiny model's indexer is not Hadamard-128 */
    for (int i = 0; extra && extra[i] && k < 38; i++)
        a[k++] = extra[i];
    a[k] = NULL;
    return gws_spawn(s, &s->eng, "engined", "engined", a);
}

/* A gatewayd. The stack's main one (p == &s->gw) uses the default
 * endpoint and pidfile; extra ones get their own (and their own stats
 * instance), so several gateways with different options can share the
 * stages. Returns the HTTP port, or -1. */
static inline int gws_start_gw(gw_stack *s, gws_proc *p, const char *const *extra)
{
    char name[32], pf[128], ep[128], pid[128], inst[48];
    int main_gw = p == &s->gw;
    snprintf(name, sizeof name, main_gw ? "gatewayd" : "gatewayd%d", s->nextra);
    snprintf(pf, sizeof pf, "%s/%s.port", s->dir, name);
    snprintf(ep, sizeof ep, "ipc://%s/%s.sock", s->dir, name);
    snprintf(pid, sizeof pid, "%s/%s.pid", s->dir, name);
    snprintf(inst, sizeof inst, "%.40sx%d", s->inst, s->nextra);
    if (!main_gw)
        s->nextra++;
    const char *a[40] = {"--model", s->model, "--port", "0", "--port-file", pf};
    int k = 6;
    if (!main_gw) {
        const char *more[] = {"--endpoint", ep, "--pidfile", pid};
        for (int i = 0; i < 4; i++)
            a[k++] = more[i];
    }
    for (int i = 0; extra && extra[i] && k < 36; i++)
        a[k++] = extra[i];
    a[k] = NULL;
    if (!main_gw) {
        /* the stats segment is per instance: give this one its own */
        char *saved = strdup(s->inst);
        snprintf(s->inst, sizeof s->inst, "%s", inst);
        int rc = gws_spawn(s, p, "gatewayd", name, a);
        snprintf(s->inst, sizeof s->inst, "%s", saved);
        free(saved);
        if (rc)
            return -1;
    } else if (gws_spawn(s, p, "gatewayd", name, a)) {
        return -1;
    }
    return gws_read_port(pf);
}

/* ---- HTTP client ---------------------------------------------------------- */

typedef struct gws_resp {
    int status;
    char *head;     /* status line + headers, NUL-terminated */
    char *body;     /* de-chunked body, NUL-terminated */
    size_t body_len;
    long long ms;   /* time to the complete response */
} gws_resp;

static inline void gws_resp_free(gws_resp *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* Connect to 127.0.0.1:port. fd or -1. */
static inline int gws_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static inline int gws_send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Send a request (Connection: close). headers: extra "Name: v\r\n" lines. */
static inline int gws_send_req(int fd, const char *method, const char *path, const char *headers,
                               const char *body, size_t blen)
{
    char head[4096];
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s%s"
                     "Content-Length: %zu\r\n\r\n",
                     method, path, body ? "Content-Type: application/json\r\n" : "", headers ? headers : "",
                     body ? blen : (size_t)0);
    if (n <= 0 || (size_t)n >= sizeof head)
        return -1;
    if (gws_send_all(fd, head, (size_t)n))
        return -1;
    return body && blen ? gws_send_all(fd, body, blen) : 0;
}

/* Read everything until EOF (or ms). Returns the bytes (NUL-terminated). */
static inline char *gws_read_all(int fd, size_t *len, int ms)
{
    size_t n = 0, cap = 65536;
    char *b = malloc(cap);
    long long end = gws_now_ms() + ms;
    for (;;) {
        long long left = end - gws_now_ms();
        struct pollfd pf = {fd, POLLIN, 0};
        if (left <= 0 || poll(&pf, 1, (int)left) <= 0)
            break;
        if (n + 65536 > cap)
            b = realloc(b, cap *= 2);
        ssize_t k = recv(fd, b + n, 65536, 0);
        if (k <= 0)
            break;
        n += (size_t)k;
    }
    b[n] = 0;
    *len = n;
    return b;
}

/* A response header's value (first match, case-insensitive) into out. */
static inline const char *gws_header(const gws_resp *r, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    for (const char *h = r->head; h && *h;) {
        const char *eol = strstr(h, "\r\n");
        size_t ll = eol ? (size_t)(eol - h) : strlen(h);
        if (ll > nl && h[nl] == ':' && !strncasecmp(h, name, nl)) {
            const char *v = h + nl + 1;
            while (*v == ' ')
                v++;
            snprintf(out, cap, "%.*s", (int)(ll - (size_t)(v - h)), v);
            return out;
        }
        h = eol ? eol + 2 : NULL;
    }
    return NULL;
}

/* Split raw bytes into head and (de-chunked) body. */
static inline void gws_parse_resp(const char *raw, size_t n, gws_resp *r)
{
    const char *sep = strstr(raw, "\r\n\r\n");
    size_t hl = sep ? (size_t)(sep - raw) : n;
    r->head = strndup(raw, hl);
    r->status = 0;
    sscanf(raw, "HTTP/1.%*d %d", &r->status);
    const char *b = sep ? sep + 4 : raw + n;
    size_t bl = (size_t)(raw + n - b);
    char te[64];
    int chunked = gws_header(r, "Transfer-Encoding", te, sizeof te) && strcasestr(te, "chunked");
    r->body = malloc(bl + 1);
    r->body_len = 0;
    if (!chunked) {
        memcpy(r->body, b, bl);
        r->body_len = bl;
    } else {
        const char *p = b, *e = b + bl;
        while (p < e) {
            char *end;
            unsigned long sz = strtoul(p, &end, 16);
            const char *crlf = strstr(end, "\r\n");
            if (!crlf || sz == 0)
                break;
            p = crlf + 2;
            if (sz > (size_t)(e - p))
                sz = (size_t)(e - p);
            memcpy(r->body + r->body_len, p, sz);
            r->body_len += sz;
            p += sz + 2;
        }
    }
    r->body[r->body_len] = 0;
}

/* One whole request/response. 0, or -1 when the connection failed. */
static inline int gws_http(int port, const char *method, const char *path, const char *headers,
                           const char *body, gws_resp *r, int ms)
{
    memset(r, 0, sizeof *r);
    long long t0 = gws_now_ms();
    int fd = gws_connect(port);
    if (fd < 0)
        return -1;
    if (gws_send_req(fd, method, path, headers, body, body ? strlen(body) : 0)) {
        close(fd);
        return -1;
    }
    size_t n;
    char *raw = gws_read_all(fd, &n, ms);
    close(fd);
    gws_parse_resp(raw, n, r);
    free(raw);
    r->ms = gws_now_ms() - t0;
    return r->status ? 0 : -1;
}

/* ---- the stack ----------------------------------------------------------- */

/* Poll /health until 200 (deadline ms). */
static inline int gws_wait_health(int port, int ms)
{
    long long end = gws_now_ms() + ms;
    for (;;) {
        gws_resp r;
        int ok = gws_http(port, "GET", "/health", NULL, NULL, &r, 2000) == 0 && r.status == 200;
        gws_resp_free(&r);
        if (ok)
            return 0;
        if (gws_now_ms() >= end)
            return -1;
        poll(NULL, 0, 20); /* retry interval of a readiness poll with a deadline */
    }
}

/* Create the run directory and model, start the three daemons. */
static inline int gws_start(gw_stack *s, const char *const *eng_extra, const char *const *gw_extra)
{
    memset(s, 0, sizeof *s);
    if (gws_build_dir(s->build, sizeof s->build))
        return -1;
    snprintf(s->dir, sizeof s->dir, "/tmp/ds4-gwtest-XXXXXX");
    if (!mkdtemp(s->dir))
        return -1;
    static int serial;
    snprintf(s->inst, sizeof s->inst, "gwt%d_%d", (int)getpid(), serial++);
    snprintf(s->model, sizeof s->model, "%s/model.gguf", s->dir);
    if (gws_make_model(s->model) || gws_start_tok(s) || gws_start_eng(s, eng_extra))
        return -1;
    s->port = gws_start_gw(s, &s->gw, gw_extra);
    if (s->port <= 0 || gws_wait_health(s->port, 30000)) {
        fprintf(stderr, "the stack did not become healthy\n");
        gws_log_tail(&s->gw, 20);
        return -1;
    }
    return 0;
}

/* Remove every shared-memory segment of an instance prefix. */
static inline void gws_unlink_shm(const char *inst)
{
    char prefix[128];
    snprintf(prefix, sizeof prefix, "ds4-%u-%s", (unsigned)getuid(), inst);
    DIR *d = opendir("/dev/shm");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, prefix, strlen(prefix))) {
            char n[300];
            snprintf(n, sizeof n, "/%s", e->d_name);
            shm_unlink(n);
        }
    closedir(d);
}

/* SIGTERM one daemon; 1 if it did not exit cleanly (status 0) in time:
 * its log tail (a sanitizer report, say) is printed. */
static inline int gws_stop_one(gws_proc *p)
{
    if (p->pid <= 0)
        return 0;
    int st = gws_signal_wait(p, SIGTERM, 10000);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "%s did not exit cleanly (status 0x%x)\n", p->name, st);
        gws_log_tail(p, 40);
        return 1;
    }
    return 0;
}

static inline int gws_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path) ? 0 : 0; /* best effort: keep going */
}

/* Stop every daemon (SIGTERM, bounded) and remove the run directory.
 * Returns how many daemons did not exit cleanly. */
static inline int gws_stop(gw_stack *s, gws_proc *extra, int nextra)
{
    int bad = 0;
    for (int i = 0; i < nextra; i++)
        bad += gws_stop_one(&extra[i]);
    bad += gws_stop_one(&s->gw);
    bad += gws_stop_one(&s->eng);
    bad += gws_stop_one(&s->tok);
    gws_unlink_shm(s->inst);
    if (getenv("DS4_TEST_KEEP") || bad) {
        fprintf(stderr, "kept %s\n", s->dir);
        return bad;
    }
    nftw(s->dir, gws_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    rmdir(s->dir);
    return 0;
}

/* A counter of a daemon's stats segment (by name), or -1. */
static inline long long gws_stat(const char *inst, const char *daemon, const char *name)
{
    ds4_stats st;
    char err[256];
    if (ds4_stats_attach(&st, inst, daemon, err, sizeof err))
        return -1;
    int i = ds4_stats_find(&st, name);
    long long v = i < 0 ? -1 : (long long)ds4_stats_get(&st, (unsigned)i);
    ds4_stats_close(&st, 0);
    return v;
}

#endif
