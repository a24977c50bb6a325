/* engined_test_util.h - helpers of the engined protocol tests: a small
 * test model (made once per test binary), the real daemon started and
 * stopped like a supervisor would (READY on --notify-fd), and a client
 * that demultiplexes GEN streams by request id and checks their framing
 * (seq without gaps, END only on the last message).
 *
 * The backend is DS4_TEST_BACKEND (default "ref"); the daemon binary is
 * <build>/engined next to <build>/tests/ (DS4_ENGINED overrides). */
#ifndef DS4_ENGINED_TEST_UTIL_H
#define DS4_ENGINED_TEST_UTIL_H

/* not every test binary uses every helper */
#pragma GCC diagnostic ignored "-Wunused-function"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/dsv4_mkmodel.h"
#include "common/shm.h"
#include "common/util.h"
#include "common/wire.h"
#include "test.h"

static char T_MODEL[256];

/* The test model: 3 layers (ratios 0, 4, 128), 4 experts, real tokenizer. */
static int t_make_model(uint64_t seed)
{
    snprintf(T_MODEL, sizeof T_MODEL, "/tmp/ds4-engtest-%d.gguf", (int)getpid());
    dsv4_tokdata *tok = NULL;
    char err[512];
    const char *path = getenv("DS4_TOKENIZER_JSON");
    if (dsv4_tokdata_load(path && *path ? path : DSV4_TOKENIZER_JSON, &tok, err, sizeof err)) {
        fprintf(stderr, "tokenizer: %s\n", err);
        return -1;
    }
    static const uint32_t ratios[] = {0, 4, 128};
    dsv4_mkmodel_opts o;
    dsv4_mkmodel_defaults(&o);
    o.tok = tok;
    o.seed = seed;
    o.hp.n_vocab = tok->n_tokens;
    o.hp.n_layer = 3;
    for (uint32_t i = 0; i < 3; i++)
        o.hp.compress_ratio[i] = ratios[i];
    o.hp.n_hash_layer = 1;
    o.hp.n_expert = 4;
    o.hp.n_expert_used = 2;
    int rc = dsv4_mkmodel_write(&o, T_MODEL, NULL, err, sizeof err);
    if (rc)
        fprintf(stderr, "mkmodel: %s\n", err);
    dsv4_tokdata_free(tok);
    return rc;
}

static const char *t_backend(void)
{
    const char *b = getenv("DS4_TEST_BACKEND");
    return b && *b ? b : "ref";
}

static uint64_t t_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A running engined. */
typedef struct tdaemon {
    pid_t pid;
    char dir[64];
    char inst[48];
    char ep[160];
    char log_path[96]; /* the daemon's stderr (appended across restarts) */
} tdaemon;

static int t_daemon_bin(char *out, size_t len)
{
    const char *env = getenv("DS4_ENGINED");
    if (env && *env) {
        snprintf(out, len, "%s", env);
        return 0;
    }
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
    snprintf(out, len, "%s/engined", self);
    return access(out, X_OK);
}

/* Read "READY <pid>\n" from fd within ms. */
static int t_wait_ready(int fd, pid_t pid, int ms)
{
    char buf[64];
    size_t n = 0;
    uint64_t end = t_now_ms() + (uint64_t)ms;
    while (n < sizeof buf - 1) {
        int left = (int)(end - t_now_ms());
        struct pollfd pf = {fd, POLLIN, 0};
        if (left <= 0 || poll(&pf, 1, left) <= 0)
            return -1;
        ssize_t r = read(fd, buf + n, sizeof buf - 1 - n);
        if (r <= 0)
            return -1;
        n += (size_t)r;
        buf[n] = 0;
        if (strchr(buf, '\n'))
            break;
    }
    char want[32];
    snprintf(want, sizeof want, "READY %d\n", (int)pid);
    return strcmp(buf, want) == 0 ? 0 : -1;
}

/* Start engined on the test model; extra args NULL-terminated. The run
 * directory and instance are new unless reuse is given (a restart). */
static int t_daemon_start(tdaemon *d, const tdaemon *reuse, ...)
{
    char bin[2048];
    if (t_daemon_bin(bin, sizeof bin)) {
        fprintf(stderr, "engined binary not found; build it first\n");
        return -1;
    }
    if (reuse) {
        *d = *reuse;
    } else {
        memset(d, 0, sizeof *d);
        snprintf(d->dir, sizeof d->dir, "/tmp/ds4-engd-test-XXXXXX");
        if (!mkdtemp(d->dir))
            return -1;
        static int serial;
        snprintf(d->inst, sizeof d->inst, "engt%d_%d", (int)getpid(), serial++);
        snprintf(d->ep, sizeof d->ep, "ipc://%s/engined.sock", d->dir);
        snprintf(d->log_path, sizeof d->log_path, "%s/engined.log", d->dir);
    }
    const char *argv[64];
    int k = 0;
    char fdarg[16];
    int nfd[2];
    if (pipe(nfd))
        return -1;
    snprintf(fdarg, sizeof fdarg, "%d", nfd[1]);
    argv[k++] = bin;
    argv[k++] = "--foreground";
    argv[k++] = "--run-dir";
    argv[k++] = d->dir;
    argv[k++] = "--instance";
    argv[k++] = d->inst;
    argv[k++] = "--notify-fd";
    argv[k++] = fdarg;
    argv[k++] = "--model";
    argv[k++] = T_MODEL;
    argv[k++] = "--backend";
    argv[k++] = t_backend();
    argv[k++] = "--log-level";
    argv[k++] = getenv("DS4_TEST_ENGINED_LOG") ? getenv("DS4_TEST_ENGINED_LOG") : "warn";
    va_list ap;
    va_start(ap, reuse);
    const char *a;
    while ((a = va_arg(ap, const char *)) && k < 62)
        argv[k++] = a;
    va_end(ap);
    argv[k] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        close(nfd[0]);
        int lf = open(d->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (lf >= 0 && !getenv("DS4_TEST_ENGINED_LOG"))
            dup2(lf, 2);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(nfd[1]);
    d->pid = pid;
    int ok = pid > 0 && t_wait_ready(nfd[0], pid, 120000) == 0;
    close(nfd[0]);
    if (!ok) {
        fprintf(stderr, "engined did not signal READY\n");
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            d->pid = 0;
        }
        return -1;
    }
    return 0;
}

/* The daemon's log so far (malloc'd, NUL-terminated; "" if none). */
static char *t_daemon_log(const tdaemon *d)
{
    size_t n = 0;
    char *t = test_read_file(d->log_path, &n);
    if (!t)
        t = calloc(1, 1);
    return t;
}

/* Send sig and wait for the exit (pidfd: an event, not a sleep); returns
 * the wait status, or -1 after ms (the daemon is then SIGKILLed). */
static int t_daemon_signal_wait(tdaemon *d, int sig, int ms)
{
    if (d->pid <= 0)
        return -1;
    int pfd = (int)syscall(SYS_pidfd_open, d->pid, 0);
    kill(d->pid, sig);
    int st = 0;
    if (pfd >= 0) {
        struct pollfd pf = {pfd, POLLIN, 0};
        int r = poll(&pf, 1, ms);
        close(pfd);
        if (r == 1 && waitpid(d->pid, &st, 0) == d->pid) {
            d->pid = 0;
            return st;
        }
    } else {
        uint64_t end = t_now_ms() + (uint64_t)ms;
        while (t_now_ms() < end) {
            if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
                d->pid = 0;
                return st;
            }
            poll(NULL, 0, 10); /* no pidfd: bounded polling of the child */
        }
    }
    kill(d->pid, SIGKILL);
    waitpid(d->pid, &st, 0);
    d->pid = 0;
    return -1;
}

/* Remove what a daemon's instance leaves (the weights manifest, the dir). */
static void t_daemon_cleanup(tdaemon *d)
{
    char name[256];
    if (ds4_shm_name(name, sizeof name, d->inst, "weights", NULL, 0) == 0)
        ds4_shm_unlink(name);
    char p[256];
    snprintf(p, sizeof p, "%s/engined.sock", d->dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/engined.pid", d->dir);
    unlink(p);
    unlink(d->log_path);
    rmdir(d->dir);
}

static void *t_connect(void *ctx, const tdaemon *d)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    if (!s || ds4w_socket_setup(s, 0) || zmq_connect(s, d->ep)) {
        fprintf(stderr, "connect %s failed\n", d->ep);
        return NULL;
    }
    return s;
}

/* ---- streams ---------------------------------------------------------------- */

#define T_MAXTOK 2048

typedef struct tstream {
    uint8_t id[16];
    int accepted;        /* GEN_ACCEPTED seen */
    int queue_pos;       /* its queue_pos */
    int done;            /* GEN_DONE or ERROR seen */
    int error;           /* ERROR code (refused), 0 if none */
    json_t *error_json;
    int bad;             /* framing problem seen (seq gap, END misuse...) */
    uint32_t next_seq;
    int32_t tok[T_MAXTOK];
    uint32_t n;
    json_t *lp;          /* array of logprob entries (GEN_EVENT JSON) */
    json_t *done_json;   /* GEN_DONE */
    uint64_t t_first_ms, t_done_ms;
} tstream;

static void t_stream_free(tstream *s)
{
    json_decref(s->lp);
    json_decref(s->done_json);
    json_decref(s->error_json);
    memset(s, 0, sizeof *s);
}

static const char *t_finish(const tstream *s)
{
    const char *f = json_string_value(json_object_get(s->done_json, "finish_reason"));
    return f ? f : "";
}

static json_int_t t_usage(const tstream *s, const char *k)
{
    return json_integer_value(json_object_get(json_object_get(s->done_json, "usage"), k));
}

/* Send GEN_SUBMIT: json text, prompt, optional forced ids (nf 0: none). */
static int t_submit(void *sock, tstream *st, const char *json, const int32_t *p, size_t n,
                    const int32_t *forced, size_t nf)
{
    memset(st, 0, sizeof *st);
    st->lp = json_array();
    ds4w_uuid_new(st->id);
    ds4w_out o;
    ds4w_out_init(&o, DS4W_T_GEN_SUBMIT, st->id);
    ds4w_out_json_text(&o, json, strlen(json));
    ds4w_out_i32(&o, p, n);
    if (nf)
        ds4w_out_i32(&o, forced, nf);
    char err[256];
    if (ds4w_send(sock, NULL, &o, 0, err, sizeof err)) {
        fprintf(stderr, "send: %s\n", err);
        return -1;
    }
    return 0;
}

static void t_cancel(void *sock, const tstream *st)
{
    ds4w_out o;
    ds4w_out_init(&o, DS4W_T_GEN_CANCEL, st->id);
    ds4w_out_json_text(&o, "{\"reason\":\"test\"}", 17);
    CHECK(ds4w_send(sock, NULL, &o, 0, NULL, 0) == 0);
}

/* Route one received message to its stream. Unmatched: returned in *other
 * (caller closes) when other is non-NULL, else counted as a failure. */
static void t_dispatch(ds4w_msg *m, tstream **ss, int n)
{
    for (int i = 0; i < n; i++) {
        tstream *s = ss[i];
        if (!s || memcmp(s->id, m->reqid, 16) != 0)
            continue;
        if (s->done) {
            s->bad = 1;
            fprintf(stderr, "message %s after the end of a stream\n", ds4w_type_name(m->type));
            return;
        }
        int end = (m->flags & DS4W_FLAG_END) != 0;
        if (m->type == DS4W_T_ERROR) {
            if (s->accepted) {
                s->bad = 1;
                fprintf(stderr, "ERROR inside an accepted stream\n");
            }
            s->error = (int)json_integer_value(json_object_get(m->json, "code"));
            s->error_json = json_incref(m->json);
            s->done = 1;
            if (!end)
                s->bad = 1;
            s->t_done_ms = t_now_ms();
            return;
        }
        if (m->seq != s->next_seq) {
            s->bad = 1;
            fprintf(stderr, "seq %u, expected %u\n", m->seq, s->next_seq);
        }
        s->next_seq = m->seq + 1;
        if (m->type == DS4W_T_GEN_ACCEPTED) {
            if (s->accepted || m->seq != 0 || end)
                s->bad = 1;
            s->accepted = 1;
            s->queue_pos = (int)json_integer_value(json_object_get(m->json, "queue_pos"));
        } else if (m->type == DS4W_T_GEN_EVENT) {
            if (!s->accepted || end)
                s->bad = 1;
            size_t k = ds4w_msg_count(m, 0);
            int32_t v[64];
            if (k > 64)
                k = 64, s->bad = 1;
            ds4w_msg_i32(m, 0, v);
            for (size_t j = 0; j < k && s->n < T_MAXTOK; j++)
                s->tok[s->n++] = v[j];
            if (!s->t_first_ms)
                s->t_first_ms = t_now_ms();
            json_t *a = m->json ? json_object_get(m->json, "logprobs") : NULL;
            for (size_t j = 0; a && j < json_array_size(a); j++)
                json_array_append(s->lp, json_array_get(a, j));
        } else if (m->type == DS4W_T_GEN_DONE) {
            if (!s->accepted || !end)
                s->bad = 1;
            s->done_json = json_incref(m->json);
            s->done = 1;
            s->t_done_ms = t_now_ms();
        } else {
            s->bad = 1;
        }
        return;
    }
    fprintf(stderr, "unexpected %s for no stream\n", ds4w_type_name(m->type));
    CHECK(0);
}

static int t_all_done(tstream **ss, int n)
{
    for (int i = 0; i < n; i++)
        if (ss[i] && !ss[i]->done)
            return 0;
    return 1;
}

/* Receive until every stream ended or ms passed; 0 if all ended. until:
 * optional predicate checked after each message (stop early when true). */
static int t_pump(void *sock, tstream **ss, int n, int ms, int (*until)(tstream **, int))
{
    uint64_t end = t_now_ms() + (uint64_t)ms;
    while (!t_all_done(ss, n)) {
        if (until && until(ss, n))
            return 0;
        int left = (int)(end - t_now_ms());
        if (left <= 0)
            return -1;
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, left) <= 0)
            continue;
        ds4w_msg m;
        char err[256];
        int rc = ds4w_recv(sock, &m, 0, ZMQ_DONTWAIT, err, sizeof err);
        if (rc == DS4W_OK)
            t_dispatch(&m, ss, n);
        else if (rc > 0) {
            fprintf(stderr, "client decode error: %s\n", err);
            CHECK(0);
        }
        ds4w_msg_close(&m);
    }
    return 0;
}

/* Pump every given stream until the watched one ended or has `want`
 * tokens (want 0: until it was accepted), or ms passed. */
static tstream *t_watch_;
static uint32_t t_want_;
static int t_watch_pred_(tstream **ss, int n)
{
    return t_watch_->done || (t_want_ ? t_watch_->n >= t_want_ : t_watch_->accepted);
}
static void t_pump_until(void *sock, tstream **ss, int n, tstream *w, uint32_t want, int ms)
{
    t_watch_ = w;
    t_want_ = want;
    t_pump(sock, ss, n, ms, t_watch_pred_);
}

/* One request / one reply (PING, STATS_GET, LOGITS_GET...): frames after
 * the header given as JSON text (may be NULL) and an I32 array (n < 0:
 * none). The reply is left in *m (caller closes). */
static int t_call(void *sock, uint16_t type, const char *json, const int32_t *ids, long n,
                  ds4w_msg *m, int ms)
{
    uint8_t id[16];
    ds4w_uuid_new(id);
    ds4w_out o;
    ds4w_out_init(&o, type, id);
    if (json)
        ds4w_out_json_text(&o, json, strlen(json));
    if (n >= 0)
        ds4w_out_i32(&o, ids, (size_t)n);
    char err[256];
    if (ds4w_send(sock, NULL, &o, 0, err, sizeof err))
        return -1;
    uint64_t end = t_now_ms() + (uint64_t)ms;
    for (;;) {
        int left = (int)(end - t_now_ms());
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        if (left <= 0 || zmq_poll(&it, 1, left) <= 0)
            return -1;
        int rc = ds4w_recv(sock, m, 0, 0, err, sizeof err);
        if (rc == DS4W_OK && memcmp(m->reqid, id, 16) == 0)
            return 0;
        ds4w_msg_close(m); /* a stray message of an older stream */
    }
}

/* Send raw frames (for malformed-message tests) and read one reply. */
static int t_raw(void *sock, const ds4w_buf *fr, int n, ds4w_msg *m, int ms)
{
    for (int i = 0; i < n; i++)
        if (zmq_send(sock, fr[i].data, fr[i].len, i + 1 < n ? ZMQ_SNDMORE : 0) < 0)
            return -1;
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, ms) <= 0)
        return -1;
    char err[256];
    return ds4w_recv(sock, m, 0, 0, err, sizeof err) == DS4W_OK ? 0 : -1;
}

static int t_err_code(const ds4w_msg *m)
{
    return m->type == DS4W_T_ERROR ? (int)json_integer_value(json_object_get(m->json, "code"))
                                   : 0;
}

/* A counter of STATS_GET. */
static json_int_t t_counter(void *sock, const char *name)
{
    ds4w_msg m;
    if (t_call(sock, DS4W_T_STATS_GET, NULL, NULL, -1, &m, 10000))
        return -1;
    json_int_t v = json_integer_value(json_object_get(json_object_get(m.json, "counters"), name));
    ds4w_msg_close(&m);
    return v;
}

/* Deterministic prompt of n ids: BOS-free ordinary vocabulary ids. */
static void t_prompt(int32_t *p, size_t n, uint64_t seed)
{
    uint64_t r = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (int32_t)(1000 + (r >> 33) % 60000);
    }
}

#endif
