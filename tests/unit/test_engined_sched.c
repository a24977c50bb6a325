/* test_engined_sched.c - engined's scheduler and sessions:
 *   in process: the session pool over the ref backend (continue, fork
 *     while in use, LRU eviction under the state budget, uncached
 *     sessions, the external prefix-source hook);
 *   against the daemon: continuous batching (jobs decode in shared steps
 *     and still give their solo outputs), prefill chunks interleaved with
 *     decode steps, round-robin fairness between clients, the bounded
 *     queue (busy at once, with retry_after_ms), cancellation of queued
 *     and running jobs (within one step) and cancel races, a client that
 *     vanishes, prefix reuse (cached_tokens; reused-prefix logits equal a
 *     fresh prefill), LRU eviction of idle sessions, the stats segment,
 *     --trace lines and request ids in the log. */
#include <math.h>

#include "common/stats.h"
#include "engined/eng_backend.h"
#include "engined/eng_ref.h"
#include "engined/eng_sessions.h"
#include "engined_test_util.h"

static void *CTX;
static eng_ref *ORACLE;
static uint32_t NV;

static int is_ref(void) { return strcmp(t_backend(), "ref") == 0; }

static int32_t argmax(const float *l, uint32_t n)
{
    int32_t b = 0;
    for (uint32_t i = 1; i < n; i++)
        if (l[i] > l[b])
            b = (int32_t)i;
    return b;
}

/* The oracle's greedy continuation of p[0..n) (room for k more in p). */
static void oracle_greedy(int32_t *p, uint32_t n, uint32_t k)
{
    float *l = ds4_xmalloc(sizeof(float) * NV);
    for (uint32_t i = 0; i < k; i++) {
        CHECK(eng_ref_forward_rows(ORACLE, p, n + i, n + i - 1, l, NULL, 0) == 0);
        p[n + i] = argmax(l, NV);
    }
    free(l);
}

/* ---- in process: the session pool ------------------------------------------ */

struct fake_src {
    const eng_backend_ops *ops;
    eng_session *keep; /* offered as a longer prefix */
    int lookups, offers;
};

static int src_lookup(void *ud, const char *fp, const int32_t *ids, uint32_t n, uint32_t have,
                      void **blob, size_t *len, uint32_t *ntok)
{
    struct fake_src *f = ud;
    f->lookups++;
    uint32_t l = f->ops->session_len(f->keep);
    if (l <= have || l > n || memcmp(f->ops->session_tokens(f->keep), ids, l * 4) != 0)
        return 1;
    *ntok = l;
    return f->ops->snapshot(f->keep, blob, len, NULL, 0) == 0 ? 0 : -1;
}

static void src_offer(void *ud, const char *fp, const eng_backend_ops *ops, const eng_session *s,
                      const char *reason)
{
    ((struct fake_src *)ud)->offers++;
}

static void test_pool(void)
{
    const eng_backend_ops *ops = eng_backend_find("ref");
    eng_backend *b = NULL;
    char err[256];
    /* room for 3 sessions: max_ctx ids + one logits row each */
    uint64_t charge = 64 * 4 + (uint64_t)NV * 4;
    eng_backend_opts o = {.model_path = T_MODEL, .max_ctx = 64, .state_budget = 3 * charge};
    if (ops->open(&o, &b, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        CHECK(0);
        return;
    }
    int32_t p[16];
    t_prompt(p, 16, 40);
    eng_pool pool;
    eng_pool_init(&pool, ops, b, 8, NULL);
    int A, B, C;
    eng_session *s1, *s2, *s3;
    uint32_t cached;
    CHECK(eng_pool_acquire(&pool, &A, p, 10, 1, &s1, &cached, err, sizeof err) == 0 && cached == 0);
    CHECK(ops->eval(s1, p, 10, 0, NULL, err, sizeof err) == 0);
    /* in use: a longer prompt forks it */
    CHECK(eng_pool_acquire(&pool, &B, p, 12, 1, &s2, &cached, err, sizeof err) == 0);
    CHECK(s2 != s1 && cached == 10 && ops->session_len(s2) == 10);
    CHECK(memcmp(ops->session_logits(s2), ops->session_logits(s1), NV * 4) == 0);
    /* idle: continued (the same session) */
    eng_pool_release(&pool, s1, 1);
    CHECK(eng_pool_acquire(&pool, &C, p, 11, 1, &s3, &cached, err, sizeof err) == 0);
    CHECK(s3 == s1 && cached == 10);
    CHECK(eng_pool_count(&pool) == 2);
    eng_pool_release(&pool, s2, 1);
    eng_pool_release(&pool, s3, 1);
    /* the budget holds 3: a 4th distinct prompt evicts the LRU idle one */
    int32_t q[4][2];
    eng_session *qs[4];
    for (int i = 0; i < 4; i++) {
        q[i][0] = 5000 + i;
        q[i][1] = 7;
        CHECKF(eng_pool_acquire(&pool, &A, q[i], 2, 1, &qs[i], &cached, err, sizeof err) == 0,
               "%s", err);
        CHECK(cached == 0 && ops->eval(qs[i], q[i], 2, 0, NULL, NULL, 0) == 0);
        eng_pool_release(&pool, qs[i], 1);
        CHECK(eng_pool_count(&pool) <= 3);
    }
    /* the two prefix sessions were least recently used: gone */
    CHECK(eng_pool_acquire(&pool, &A, p, 11, 1, &s1, &cached, err, sizeof err) == 0 && cached == 0);
    eng_pool_release(&pool, s1, 0);
    CHECK(eng_pool_acquire(&pool, &A, q[3], 2, 1, &s1, &cached, err, sizeof err) == 0 && cached == 2);
    eng_pool_release(&pool, s1, 1);
    /* while every session is owned the budget cannot be met */
    eng_session *own[3];
    int n_own = 0;
    for (int i = 0; i < 3; i++)
        if (eng_pool_acquire(&pool, &B, q[i], 1, 0, &own[i], &cached, err, sizeof err) == 0)
            n_own++;
    CHECK(n_own >= 1);
    /* uncached (reuse 0): fresh, not pooled, freed on release */
    for (int i = 0; i < n_own; i++)
        eng_pool_release(&pool, own[i], 0);
    uint32_t before = eng_pool_count(&pool);
    CHECK(eng_pool_acquire(&pool, &A, p, 4, 0, &s1, &cached, err, sizeof err) == 0 && cached == 0);
    CHECK(eng_pool_count(&pool) == before);
    eng_pool_release(&pool, s1, 1);
    CHECK(eng_pool_count(&pool) == before);
    /* the prefix source: a longer stored prefix is restored */
    while (eng_pool_evict_lru(&pool) == 0)
        ;
    struct fake_src f = {.ops = ops};
    CHECK(ops->session_new(b, &f.keep, err, sizeof err) == 0);
    CHECK(ops->eval(f.keep, p, 14, 0, NULL, NULL, 0) == 0);
    eng_prefix_source src = {.lookup = src_lookup, .offer = src_offer, .ud = &f};
    pool.src = &src;
    CHECK(eng_pool_acquire(&pool, &A, p, 16, 1, &s1, &cached, err, sizeof err) == 0);
    CHECK(cached == 14 && f.lookups == 1 && ops->session_len(s1) == 14);
    CHECK(memcmp(ops->session_logits(s1), ops->session_logits(f.keep), NV * 4) == 0);
    eng_pool_release(&pool, s1, 1);
    CHECK(eng_pool_evict_lru(&pool) == 0 && f.offers == 1);
    ops->session_free(f.keep);
    eng_pool_fini(&pool);
    ops->close(b);
}

/* ---- against the daemon ------------------------------------------------------- */

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    static char buf[8][512];
    static int k;
    char *b = buf[k++ & 7];
    va_list ap;
    va_start(ap, f);
    vsnprintf(b, sizeof buf[0], f, ap);
    va_end(ap);
    return b;
}

#define pump_until t_pump_until

/* Four jobs share decode steps and each gives its solo greedy output. */
static void test_batching(void *sock)
{
    enum { NJ = 4, NP = 12, NG = 6 };
    int32_t p[NJ][NP + NG];
    tstream st[NJ];
    tstream *ss[NJ];
    json_int_t steps0 = t_counter(sock, "decode_steps");
    json_int_t gen0 = t_counter(sock, "tokens_generated");
    for (int i = 0; i < NJ; i++) {
        t_prompt(p[i], NP, 10 + (uint64_t)i);
        CHECK(t_submit(sock, &st[i],
                       fmt("{\"max_tokens\":%d,\"temperature\":0,\"client\":\"c%d\"}", NG, i),
                       p[i], NP, NULL, 0) == 0);
        ss[i] = &st[i];
    }
    CHECK(t_pump(sock, ss, NJ, 120000, NULL) == 0);
    for (int i = 0; i < NJ; i++) {
        CHECK(!st[i].bad && st[i].n == NG && strcmp(t_finish(&st[i]), "length") == 0);
        if (is_ref()) {
            oracle_greedy(p[i], NP, NG);
            CHECKF(memcmp(st[i].tok, p[i] + NP, NG * 4) == 0, "job %d differs from solo", i);
        }
        t_stream_free(&st[i]);
    }
    json_int_t steps = t_counter(sock, "decode_steps") - steps0;
    json_int_t gen = t_counter(sock, "tokens_generated") - gen0;
    CHECK(gen == NJ * NG);
    /* NJ * (NG - 1) decode evaluations in fewer steps: shared steps */
    CHECKF(steps < NJ * (NG - 1) * 3 / 4, "%lld decode steps for %d evaluations", (long long)steps,
           NJ * (NG - 1));
}

/* A long prompt is prefilled in chunks while another job keeps decoding. */
static void test_interleave(void *sock)
{
    int32_t a[8], b[112];
    t_prompt(a, 8, 20);
    t_prompt(b, 112, 21);
    tstream A, B;
    tstream *ss[2] = {&A, &B};
    memset(&B, 0, sizeof B);
    CHECK(t_submit(sock, &A, "{\"max_tokens\":60,\"temperature\":0,\"client\":\"a\"}", a, 8, NULL,
                   0) == 0);
    pump_until(sock, ss, 1, &A, 2, 60000);
    uint32_t n0 = A.n;
    CHECK(t_submit(sock, &B, "{\"max_tokens\":1,\"client\":\"b\"}", b, 112, NULL, 0) == 0);
    pump_until(sock, ss, 2, &B, 1000, 120000);
    CHECK(B.done && B.n == 1 && !A.done);
    CHECKF(A.n >= n0 + 3, "A got %u tokens during B's 7-chunk prefill", A.n - n0);
    uint32_t at_cancel = A.n;
    t_cancel(sock, &A);
    CHECK(t_pump(sock, ss, 2, 60000, NULL) == 0);
    CHECK(strcmp(t_finish(&A), "cancelled") == 0 && !A.bad && !B.bad);
    CHECKF(A.n <= at_cancel + 2, "%u tokens after the cancel", A.n - at_cancel);
    t_stream_free(&A);
    t_stream_free(&B);
}

/* Many submits and cancels at every point of a stream's life. */
static void test_cancel_races(void *sock)
{
    enum { NJ = 12 };
    tstream st[NJ];
    tstream *ss[NJ];
    int32_t p[10];
    t_prompt(p, 10, 30);
    for (int i = 0; i < NJ; i++) {
        CHECK(t_submit(sock, &st[i], fmt("{\"max_tokens\":5,\"seed\":%d,\"client\":\"r%d\"}", i,
                                         i % 3),
                       p, 10, NULL, 0) == 0);
        ss[i] = &st[i];
        if (i % 4 == 0)
            t_cancel(sock, &st[i]); /* before it is even accepted */
    }
    uint64_t end = t_now_ms() + 120000;
    int cancelled[NJ] = {0};
    while (!t_all_done(ss, NJ) && t_now_ms() < end) {
        for (int i = 0; i < NJ; i++)
            if (!cancelled[i] && !st[i].done && st[i].n >= (uint32_t)(i % 4)) {
                t_cancel(sock, &st[i]);
                cancelled[i] = 1;
            }
        t_pump(sock, ss, NJ, 50, NULL);
    }
    int n_cancel = 0;
    for (int i = 0; i < NJ; i++) {
        CHECK(st[i].done && !st[i].bad && st[i].accepted);
        const char *f = t_finish(&st[i]);
        CHECK(strcmp(f, "cancelled") == 0 || strcmp(f, "length") == 0);
        n_cancel += strcmp(f, "cancelled") == 0;
        if (i % 4 == 0)
            CHECK(strcmp(f, "cancelled") == 0 && st[i].n == 0);
    }
    CHECK(n_cancel >= NJ / 4);
    /* cancel after the end: nothing comes back, the next reply is the PONG */
    t_cancel(sock, &st[1]);
    uint8_t id[16];
    ds4w_uuid_new(id);
    ds4w_out o;
    ds4w_out_init(&o, DS4W_T_PING, id);
    CHECK(ds4w_send(sock, NULL, &o, 0, NULL, 0) == 0);
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    ds4w_msg m;
    CHECK(zmq_poll(&it, 1, 10000) == 1 && ds4w_recv(sock, &m, 0, 0, NULL, 0) == DS4W_OK);
    CHECK(m.type == DS4W_T_PONG && memcmp(m.reqid, id, 16) == 0);
    ds4w_msg_close(&m);
    for (int i = 0; i < NJ; i++)
        t_stream_free(&st[i]);
}

/* A client that disappears mid-stream: its job is cancelled. */
static void test_vanish(void *sock, const tdaemon *d)
{
    json_int_t c0 = t_counter(sock, "jobs_cancelled");
    void *s2 = t_connect(CTX, d);
    int32_t p[8];
    t_prompt(p, 8, 31);
    tstream A;
    tstream *ss[1] = {&A};
    CHECK(t_submit(s2, &A, "{\"max_tokens\":200}", p, 8, NULL, 0) == 0);
    pump_until(s2, ss, 1, &A, 2, 60000);
    CHECK(A.n >= 2 && !A.done);
    zmq_close(s2);
    uint64_t end = t_now_ms() + 30000;
    json_int_t c = c0, running = 1;
    while (t_now_ms() < end && (c == c0 || running != 0)) {
        c = t_counter(sock, "jobs_cancelled");
        running = t_counter(sock, "jobs_running");
        if (c == c0 || running)
            poll(NULL, 0, 50); /* bounded wait for the daemon to notice */
    }
    CHECKF(c == c0 + 1 && running == 0, "vanished client: cancelled %lld, running %lld",
           (long long)(c - c0), (long long)running);
    t_stream_free(&A);
}

static int logits_full(void *sock, const int32_t *p, size_t n, int cache, float *out,
                       json_int_t *cached)
{
    ds4w_msg m;
    int rc = t_call(sock, DS4W_T_LOGITS_GET,
                    cache ? "{\"full\":true,\"top_k\":3}" : "{\"full\":true,\"cache\":false}", p,
                    (long)n, &m, 60000);
    if (rc == 0 && m.type == DS4W_T_LOGITS && ds4w_msg_count(&m, 1) == NV) {
        ds4w_msg_f32(&m, 1, out);
        *cached = json_integer_value(json_object_get(m.json, "cached_tokens"));
    } else
        rc = -1;
    if (rc == 0 || m.nparts)
        ds4w_msg_close(&m);
    return rc;
}

/* Reusing a resident prefix gives the logits of a fresh prefill. */
static void test_reuse(void *sock)
{
    int32_t p[40];
    t_prompt(p, 40, 50);
    float *a = ds4_xmalloc(NV * 4), *b = ds4_xmalloc(NV * 4);
    json_int_t ca = -1, cb = -1;
    CHECK(logits_full(sock, p, 20, 1, a, &ca) == 0 && ca == 0);
    json_int_t hits0 = t_counter(sock, "session_hits");
    CHECK(logits_full(sock, p, 30, 1, a, &ca) == 0);
    CHECKF(ca == 20, "cached %lld", (long long)ca);
    CHECK(t_counter(sock, "session_hits") == hits0 + 1);
    CHECK(logits_full(sock, p, 30, 0, b, &cb) == 0 && cb == 0);
    if (is_ref())
        CHECK(memcmp(a, b, NV * 4) == 0);
    else {
        double num = 0, den = 0;
        for (uint32_t i = 0; i < NV; i++)
            num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), den += (double)b[i] * b[i];
        CHECKF(sqrt(num / den) < 1e-3, "reused vs fresh rel L2 %g", sqrt(num / den));
    }
    /* a generation continuing the resident 30 reports them cached, and its
     * logprobs are those of the fresh distribution */
    tstream g;
    tstream *ss[1] = {&g};
    CHECK(t_submit(sock, &g, "{\"max_tokens\":2,\"temperature\":0,\"logprobs\":2}", p, 30, NULL,
                   0) == 0);
    CHECK(t_pump(sock, ss, 1, 60000, NULL) == 0 && g.n == 2);
    CHECK(t_usage(&g, "cached_tokens") == 30 && t_usage(&g, "prompt_tokens") == 30);
    CHECK(g.tok[0] == argmax(b, NV));
    double mx = b[argmax(b, NV)], z = 0;
    for (uint32_t i = 0; i < NV; i++)
        z += exp((double)b[i] - mx);
    double lp = json_number_value(json_object_get(json_array_get(g.lp, 0), "logprob"));
    CHECKF(fabs(lp - ((double)b[g.tok[0]] - mx - log(z))) < 1e-3, "logprob %f", lp);
    t_stream_free(&g);
    free(a);
    free(b);
}

/* --max-sessions 2: the least recently used idle sessions are evicted. */
static void test_lru(void *sock)
{
    int32_t s[3][12];
    for (int i = 0; i < 3; i++)
        t_prompt(s[i], 12, 60 + (uint64_t)i);
    json_int_t ev0 = t_counter(sock, "session_evictions");
    tstream g;
    tstream *ss[1] = {&g};
    for (int i = 0; i < 3; i++) {
        CHECK(t_submit(sock, &g, "{\"max_tokens\":0}", s[i], 10, NULL, 0) == 0);
        CHECK(t_pump(sock, ss, 1, 60000, NULL) == 0 && t_usage(&g, "cached_tokens") == 0);
        t_stream_free(&g);
    }
    CHECK(t_counter(sock, "session_evictions") > ev0);
    CHECK(t_counter(sock, "sessions_resident") <= 2);
    CHECK(t_submit(sock, &g, "{\"max_tokens\":0}", s[2], 12, NULL, 0) == 0);
    CHECK(t_pump(sock, ss, 1, 60000, NULL) == 0 && t_usage(&g, "cached_tokens") == 10);
    t_stream_free(&g);
    CHECK(t_submit(sock, &g, "{\"max_tokens\":0}", s[0], 12, NULL, 0) == 0);
    CHECK(t_pump(sock, ss, 1, 60000, NULL) == 0 && t_usage(&g, "cached_tokens") == 0);
    t_stream_free(&g);
}

/* The stats segment agrees with STATS_GET; the trace and request ids. */
static void test_stats_and_log(void *sock, const tdaemon *d)
{
    ds4_stats st;
    char err[256];
    if (ds4_stats_attach(&st, d->inst, "engined", err, sizeof err)) {
        fprintf(stderr, "stats segment: %s\n", err);
        CHECK(0);
    } else {
        const char *names[] = {"jobs_submitted", "jobs_completed", "tokens_generated",
                               "tokens_prompt", "decode_steps", "session_hits"};
        for (size_t i = 0; i < DS4_ARRAY_LEN(names); i++) {
            int k = ds4_stats_find(&st, names[i]);
            json_int_t v = t_counter(sock, names[i]);
            CHECKF(k >= 0 && v > 0 && ds4_stats_get(&st, (unsigned)k) == (uint64_t)v,
                   "%s: segment %llu, STATS %lld", names[i],
                   k >= 0 ? (unsigned long long)ds4_stats_get(&st, (unsigned)k) : 0ull,
                   (long long)v);
        }
        int q = ds4_stats_find(&st, "jobs_queued");
        CHECK(q >= 0 && ds4_stats_get(&st, (unsigned)q) == 0);
        CHECK(ds4_stats_get(&st, (unsigned)ds4_stats_find(&st, "device_mem_bytes")) > 0);
        ds4_stats_close(&st, 0);
    }
    char *log = t_daemon_log(d);
    CHECK(strstr(log, "trace: decode step of ") != NULL);
    CHECK(strstr(log, "trace: prefill chunk ") != NULL);
    /* every "done:" line names its request */
    int lines = 0, with_id = 0;
    for (char *l = strstr(log, "done: "); l; l = strstr(l + 1, "done: ")) {
        char *bol = l;
        while (bol > log && bol[-1] != '\n')
            bol--;
        char *c = strstr(bol, "info: ");
        uint8_t id[16];
        char u[37];
        lines++;
        if (c && c < l && l - (c + 6) >= 38) {
            memcpy(u, c + 6, 36);
            u[36] = 0;
            with_id += ds4w_uuid_parse(u, id) == 0;
        }
    }
    CHECK(lines >= 10 && with_id == lines);
    free(log);
}

/* --max-batch 1 --max-queue 2: busy at once; round-robin order; a
 * cancelled queued job ends at once. */
static void test_fair_busy(void *sock)
{
    int32_t p[6];
    t_prompt(p, 6, 70);
    tstream x[3], y;
    memset(x, 0, sizeof x);
    memset(&y, 0, sizeof y);
    tstream *ss[4] = {&x[0], &x[1], &x[2], &y};
    /* x0 runs; x1 and x2 wait; y is refused (queue of 2 full) */
    CHECK(t_submit(sock, &x[0], "{\"max_tokens\":3,\"client\":\"x\"}", p, 6, NULL, 0) == 0);
    pump_until(sock, ss, 1, &x[0], 1, 60000);
    CHECK(t_submit(sock, &x[1], "{\"max_tokens\":3,\"client\":\"x\"}", p, 6, NULL, 0) == 0);
    CHECK(t_submit(sock, &x[2], "{\"max_tokens\":3,\"client\":\"x\"}", p, 6, NULL, 0) == 0);
    CHECK(t_submit(sock, &y, "{\"max_tokens\":3,\"client\":\"y\"}", p, 6, NULL, 0) == 0);
    pump_until(sock, ss, 4, &y, 1000, 5000);
    CHECK(y.error == DS4W_E_BUSY && !x[0].done);
    CHECK(json_integer_value(json_object_get(y.error_json, "retry_after_ms")) == 250);
    CHECK(x[1].queue_pos >= 1 && x[2].queue_pos > x[1].queue_pos);
    CHECK(t_pump(sock, ss, 4, 60000, NULL) == 0);
    for (int i = 0; i < 3; i++)
        CHECK(x[i].n == 3 && !x[i].bad);
    CHECK(t_counter(sock, "jobs_rejected_busy") == 1);
    for (int i = 0; i < 3; i++)
        t_stream_free(&x[i]);
    t_stream_free(&y);
    /* fairness: x has two jobs waiting, y arrives after them but runs first */
    tstream f[3];
    memset(f, 0, sizeof f);
    tstream *sf[3] = {&f[0], &f[1], &f[2]};
    tstream g;
    tstream *sg[4] = {&f[0], &f[1], &f[2], &g};
    memset(&g, 0, sizeof g);
    CHECK(t_submit(sock, &g, "{\"max_tokens\":3,\"client\":\"x\"}", p, 6, NULL, 0) == 0);
    pump_until(sock, sg + 3, 1, &g, 1, 60000);
    CHECK(t_submit(sock, &f[0], "{\"max_tokens\":2,\"client\":\"x\"}", p, 6, NULL, 0) == 0);
    CHECK(t_submit(sock, &f[1], "{\"max_tokens\":2,\"client\":\"x\"}", p, 6, NULL, 0) == 0);
    pump_until(sock, sg, 4, &f[1], 0, 5000); /* both accepted (queued) */
    CHECK(f[0].accepted && f[1].accepted && !g.done);
    CHECK(t_submit(sock, &f[2], "{\"max_tokens\":2,\"client\":\"y\"}", p, 6, NULL, 0) == 0);
    CHECK(t_pump(sock, sg, 4, 60000, NULL) == 0);
    (void)sf;
    CHECKF(f[2].t_done_ms <= f[0].t_done_ms && f[0].t_done_ms <= f[1].t_done_ms,
           "order: y %llu, x1 %llu, x2 %llu", (unsigned long long)f[2].t_done_ms,
           (unsigned long long)f[0].t_done_ms, (unsigned long long)f[1].t_done_ms);
    for (int i = 0; i < 3; i++)
        t_stream_free(&f[i]);
    t_stream_free(&g);
    /* a queued job cancelled ends at once, before the running one */
    tstream r, q;
    memset(&r, 0, sizeof r);
    memset(&q, 0, sizeof q);
    tstream *sr[2] = {&r, &q};
    CHECK(t_submit(sock, &r, "{\"max_tokens\":30}", p, 6, NULL, 0) == 0);
    pump_until(sock, sr, 1, &r, 1, 60000);
    CHECK(t_submit(sock, &q, "{\"max_tokens\":3}", p, 6, NULL, 0) == 0);
    t_cancel(sock, &q);
    pump_until(sock, sr, 2, &q, 1000, 30000);
    CHECK(strcmp(t_finish(&q), "cancelled") == 0 && q.n == 0 && !r.done);
    t_cancel(sock, &r);
    CHECK(t_pump(sock, sr, 2, 30000, NULL) == 0 && strcmp(t_finish(&r), "cancelled") == 0);
    CHECK(!r.bad && !q.bad);
    t_stream_free(&r);
    t_stream_free(&q);
}

int main(void)
{
    if (t_make_model(6)) {
        CHECK(0);
        return test_main_end("test_engined_sched");
    }
    char err[256];
    if (eng_ref_open(T_MODEL, &ORACLE, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        CHECK(0);
        unlink(T_MODEL);
        return test_main_end("test_engined_sched");
    }
    NV = eng_ref_hparams(ORACLE)->n_vocab;
    test_pool();
    CTX = zmq_ctx_new();
    tdaemon d;
    if (t_daemon_start(&d, NULL, "--ctx", "256", "--prefill-chunk", "16", "--max-batch", "4",
                       "--max-sessions", "2", "--trace", "--log-level", "info",
                       (char *)NULL) == 0) {
        void *sock = t_connect(CTX, &d);
        test_batching(sock);
        test_interleave(sock);
        test_cancel_races(sock);
        test_vanish(sock, &d);
        test_reuse(sock);
        test_lru(sock);
        test_stats_and_log(sock, &d);
        zmq_close(sock);
        int st = t_daemon_signal_wait(&d, SIGTERM, 30000);
        CHECKF(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status 0x%x", st);
    } else
        CHECK(0);
    t_daemon_cleanup(&d);
    if (t_daemon_start(&d, NULL, "--max-batch", "1", "--max-queue", "2", "--retry-after-ms",
                       "250", (char *)NULL) == 0) {
        void *sock = t_connect(CTX, &d);
        test_fair_busy(sock);
        zmq_close(sock);
        int st = t_daemon_signal_wait(&d, SIGTERM, 30000);
        CHECKF(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status 0x%x", st);
    } else
        CHECK(0);
    t_daemon_cleanup(&d);
    zmq_ctx_term(CTX);
    eng_ref_close(ORACLE);
    unlink(T_MODEL);
    return test_main_end("test_engined_sched");
}
