/* test_engined_kv.c - engined wired to kvd (SPEC §5, issue 7): engined and
 * kvd started for real, small checkpoint thresholds.
 *   (a) a cold checkpoint is stored; a job that restores it gives the same
 *       logits as a fresh prefill (LOGITS_GET cache false): exactly on "ref",
 *       within a tolerance on "cl";
 *   evict / shutdown checkpoints: with one idle session kept, the released
 *       sessions are saved before eviction and at shutdown;
 *   (b) a restarted engined (no resident sessions) serves prompts that
 *       extend checkpointed ones with cached_tokens from kvd;
 *   (d) an engined on another model (other fingerprint) never uses them;
 *   (c) kvd stuck (SIGSTOP) or down: jobs still succeed, promptly, and the
 *       failure is counted; snapshots beyond the writer's queue are dropped
 *       and counted, the queued ones stored once kvd is back.
 * DS4_TEST_BACKEND=cl runs it on the OpenCL backend. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engined_test_util.h"
#include "test_kvd_harness.h"

#define NV_MAX 200000

static char MODEL2[256];

/* The same small model with another expert count: another fingerprint. */
static int make_model2(void)
{
    snprintf(MODEL2, sizeof MODEL2, "/tmp/ds4-engkvtest2-%d.gguf", (int)getpid());
    dsv4_tokdata *tok = NULL;
    char err[512];
    const char *path = getenv("DS4_TOKENIZER_JSON");
    if (dsv4_tokdata_load(path && *path ? path : DSV4_TOKENIZER_JSON, &tok, err, sizeof err))
        return -1;
    static const uint32_t ratios[] = {0, 4, 128};
    dsv4_mkmodel_opts o;
    dsv4_mkmodel_defaults(&o);
    o.tok = tok;
    o.seed = 7;
    o.hp.n_vocab = tok->n_tokens;
    o.hp.n_layer = 3;
    for (uint32_t i = 0; i < 3; i++)
        o.hp.compress_ratio[i] = ratios[i];
    o.hp.n_hash_layer = 1;
    o.hp.n_expert = 8;
    o.hp.n_expert_used = 2;
    int rc = dsv4_mkmodel_write(&o, MODEL2, NULL, err, sizeof err);
    dsv4_tokdata_free(tok);
    return rc;
}

static int is_ref(void) { return !strcmp(t_backend(), "ref"); }

/* Poll a counter until it reaches want (deadline ms). Its last value. */
static json_int_t wait_counter(void *sock, const char *name, json_int_t want, int ms)
{
    uint64_t end = t_now_ms() + (uint64_t)ms;
    json_int_t v;
    for (;;) {
        v = t_counter(sock, name);
        if (v >= want || t_now_ms() > end)
            return v;
        poll(NULL, 0, 20); /* bounded polling of a counter with a deadline */
    }
}

/* LOGITS_GET of ids: full row into out (n_vocab floats), cached tokens. */
static int logits(void *sock, const int32_t *ids, uint32_t n, int cache, float *out,
                  uint32_t *nv, json_int_t *cached)
{
    ds4w_msg m;
    const char *js = cache ? "{\"top_k\":1,\"full\":true,\"cache\":true}"
                           : "{\"top_k\":1,\"full\":true,\"cache\":false}";
    if (t_call(sock, DS4W_T_LOGITS_GET, js, ids, n, &m, 120000))
        return -1;
    int ok = m.type == DS4W_T_LOGITS;
    if (ok) {
        *nv = (uint32_t)json_integer_value(json_object_get(m.json, "n_vocab"));
        *cached = json_integer_value(json_object_get(m.json, "cached_tokens"));
        ok = *nv > 0 && *nv <= NV_MAX && ds4w_msg_count(&m, 1) == *nv;
        if (ok)
            ds4w_msg_f32(&m, 1, out);
    } else {
        fprintf(stderr, "LOGITS_GET: %s\n", m.json ? json_dumps(m.json, 0) : "?");
    }
    ds4w_msg_close(&m);
    return ok ? 0 : -1;
}

static int run_gen(void *sock, tstream *st, const int32_t *p, uint32_t n, int ms)
{
    if (t_submit(sock, st, "{\"max_tokens\":1,\"temperature\":0}", p, n, NULL, 0))
        return -1;
    tstream *ss[1] = {st};
    int rc = t_pump(sock, ss, 1, ms, NULL);
    if (rc || st->bad || strcmp(t_finish(st), "length") != 0) {
        fprintf(stderr, "job: rc %d bad %d finish %s\n", rc, st->bad, t_finish(st));
        return -1;
    }
    return 0;
}

static double max_abs_diff(const float *a, const float *b, uint32_t n)
{
    double m = 0;
    for (uint32_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m))
            m = isfinite(d) ? d : INFINITY;
    }
    return m;
}

#define NP 40   /* cold checkpoint at (40 - 4) / 16 * 16 = 32 */
#define COLD 32

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    CHECK(t_make_model(11) == 0);
    CHECK(make_model2() == 0);
    char kdir[] = "/tmp/ds4-engkv-XXXXXX";
    CHECK(mkdtemp(kdir) != NULL);
    char kvdir[96], inst[64];
    snprintf(kvdir, sizeof kvdir, "%s/store", kdir);
    snprintf(inst, sizeof inst, "engkv%d", (int)getpid());
    kvd_proc kv;
    CHECK(kvd_start(&kv, kdir, inst, kvdir, NULL) == 0);
    const char *kvargs_fmt = "--kvd-endpoint";
    const char *A[] = {"--ctx", "512", "--max-sessions", "1", "--kv-min-tokens", "16",
                       "--kv-align", "16", "--kv-trim", "4", "--kv-periodic", "0",
                       "--kv-lookup-timeout-ms", "2000", "--kv-put-timeout-ms", "3000"};
#define KVARGS A[0], A[1], A[2], A[3], A[4], A[5], A[6], A[7], A[8], A[9], A[10], A[11], \
               A[12], A[13], A[14], A[15], kvargs_fmt, kv.ep
    tdaemon d;
    CHECK(t_daemon_start(&d, NULL, KVARGS, NULL) == 0);
    void *ctx = zmq_ctx_new();
    void *sock = t_connect(ctx, &d);
    CHECK(sock != NULL);

    int32_t p[NP + 64], p2[COLD + 8], p3[COLD + 6];
    t_prompt(p, NP, 1);
    memcpy(p2, p, COLD * sizeof *p);
    t_prompt(p2 + COLD, 8, 2);
    memcpy(p3, p, COLD * sizeof *p);
    t_prompt(p3 + COLD, 6, 3);
    float *fresh = ds4_xmalloc(sizeof(float) * NV_MAX);
    float *rest = ds4_xmalloc(sizeof(float) * NV_MAX);
    uint32_t nv = 0, nv2 = 0;
    json_int_t cached = -1;
    double tol = is_ref() ? 0.0 : 2e-2;

    /* 1. a first long prompt: cold checkpoint of its first 32 tokens */
    tstream st1;
    CHECK(run_gen(sock, &st1, p, NP, 120000) == 0);
    CHECK(t_usage(&st1, "cached_tokens") == 0);
    CHECK(wait_counter(sock, "kv_checkpoints", 1, 20000) == 1);
    CHECK(t_counter(sock, "kv_save_drops") == 0 && t_counter(sock, "kv_save_errors") == 0);
    /* the session that stays resident: the prompt (and the generated tokens
     * evaluated after it: none with max_tokens 1) */
    int32_t s1[NP + 8];
    memcpy(s1, p, NP * sizeof *p);
    uint32_t n1 = NP;
    for (uint32_t i = 0; i + 1 < st1.n; i++)
        s1[n1++] = st1.tok[i];
    CHECK(st1.n == 1);
    t_stream_free(&st1);

    /* (a) p2 shares the 32-token prefix but not the resident session: the
     * job restores the checkpoint and its logits equal a fresh prefill's */
    CHECK(logits(sock, p2, COLD + 8, 0, fresh, &nv, &cached) == 0);
    CHECK(cached == 0);
    CHECK(logits(sock, p2, COLD + 8, 1, rest, &nv2, &cached) == 0);
    CHECKF(cached == COLD, "cached_tokens %lld, want %d", (long long)cached, COLD);
    CHECK(nv == nv2);
    double dd = max_abs_diff(fresh, rest, nv);
    printf("%s: restored vs fresh logits, max |diff| %g\n", t_backend(), dd);
    CHECKF(dd <= tol, "restored vs fresh logits differ by %g (tolerance %g)", dd, tol);
    CHECK(t_counter(sock, "kv_restores") == 1 && t_counter(sock, "kv_hits") == 1);
    CHECK(t_counter(sock, "kv_restore_failures") == 0);
    /* one idle session kept: job 1's session was evicted, and checkpointed
     * first ("evict") */
    CHECK(wait_counter(sock, "kv_checkpoints", 2, 20000) == 2);
    CHECK(t_counter(sock, "session_evictions") >= 1);
    zmq_close(sock);

    /* (b) restart: the idle p2 session is checkpointed at shutdown; the new
     * process has nothing resident and serves extensions from kvd */
    CHECK(t_daemon_signal_wait(&d, SIGTERM, 30000) == 0);
    CHECK(t_daemon_start(&d, &d, KVARGS, NULL) == 0);
    sock = t_connect(ctx, &d);
    CHECK(sock != NULL);
    tstream st;
    CHECK(run_gen(sock, &st, p3, COLD + 6, 120000) == 0);
    CHECKF(t_usage(&st, "cached_tokens") == COLD, "cached %lld",
           (long long)t_usage(&st, "cached_tokens"));
    t_stream_free(&st);
    int32_t ext[COLD + 8 + 4];
    memcpy(ext, p2, (COLD + 8) * sizeof *ext);
    t_prompt(ext + COLD + 8, 4, 4);
    CHECK(run_gen(sock, &st, ext, COLD + 12, 120000) == 0);
    CHECKF(t_usage(&st, "cached_tokens") == COLD + 8, "shutdown checkpoint: cached %lld",
           (long long)t_usage(&st, "cached_tokens"));
    t_stream_free(&st);
    s1[n1] = 5000;
    CHECK(run_gen(sock, &st, s1, n1 + 1, 120000) == 0);
    CHECKF(t_usage(&st, "cached_tokens") == n1, "evict checkpoint: cached %lld of %u",
           (long long)t_usage(&st, "cached_tokens"), n1);
    t_stream_free(&st);
    /* the restored prefix gives the same logits as a fresh prefill here too */
    CHECK(logits(sock, p2, COLD + 8, 0, fresh, &nv, &cached) == 0 && cached == 0);
    zmq_close(sock);
    CHECK(t_daemon_signal_wait(&d, SIGTERM, 30000) == 0);

    /* (d) another model: same kvd, same prompts, never a restore */
    tdaemon d2;
    char keep[256];
    memcpy(keep, T_MODEL, sizeof keep);
    memcpy(T_MODEL, MODEL2, sizeof T_MODEL);
    /* (no cold saves, no evictions: it stores nothing of its own before
     * shutdown, so every restore would be of model 1's checkpoints) */
    CHECK(t_daemon_start(&d2, NULL, KVARGS, "--kv-cross-quant", "--kv-align", "4096",
                         "--max-sessions", "8", NULL) == 0);
    memcpy(T_MODEL, keep, sizeof T_MODEL);
    sock = t_connect(ctx, &d2);
    CHECK(sock != NULL);
    CHECK(run_gen(sock, &st, p3, COLD + 6, 120000) == 0);
    CHECK(t_usage(&st, "cached_tokens") == 0);
    t_stream_free(&st);
    CHECK(run_gen(sock, &st, ext, COLD + 12, 120000) == 0);
    CHECK(t_usage(&st, "cached_tokens") == 0);
    t_stream_free(&st);
    CHECK(logits(sock, p2, COLD + 8, 1, rest, &nv2, &cached) == 0 && cached == 0);
    CHECK(t_counter(sock, "kv_restores") == 0 && t_counter(sock, "kv_hits") == 0);
    CHECK(t_counter(sock, "kv_lookups") >= 3 && t_counter(sock, "kv_misses") >= 3);
    CHECK(t_counter(sock, "kv_checkpoints") == 0);
    zmq_close(sock);
    CHECK(t_daemon_signal_wait(&d2, SIGTERM, 30000) == 0);
    t_daemon_cleanup(&d2);

    /* (c) kvd stuck (SIGSTOP): the lookup passes its deadline, the job is
     * prefilled in full and succeeds */
    /* and the writer's queue is bounded: with one slot, the writer stuck in
     * job A's put and B's cold snapshot waiting, the rest are dropped and
     * counted */
    int32_t p6[3][NP];
    CHECK(t_daemon_start(&d, &d, KVARGS, "--kv-save-queue", "1", "--kv-put-timeout-ms", "120000",
                         "--kv-lookup-timeout-ms", "500", NULL) == 0);
    sock = t_connect(ctx, &d);
    CHECK(sock != NULL);
    CHECK(kill(kv.pid, SIGSTOP) == 0);
    for (int i = 0; i < 3; i++) {
        t_prompt(p6[i], NP, 6 + (uint64_t)i);
        CHECK(run_gen(sock, &st, p6[i], NP, 120000) == 0);
        CHECK(t_usage(&st, "cached_tokens") == 0);
        t_stream_free(&st);
    }
    CHECK(t_counter(sock, "kv_lookup_errors") >= 1);
    /* dropped: C's cold snapshot and the evict snapshots of A and B */
    CHECKF(t_counter(sock, "kv_save_drops") == 3, "drops %lld",
           (long long)t_counter(sock, "kv_save_drops"));
    CHECK(t_counter(sock, "kv_checkpoints") == 0);
    CHECK(kill(kv.pid, SIGCONT) == 0);
    CHECK(wait_counter(sock, "kv_checkpoints", 2, 30000) == 2);
    zmq_close(sock);
    CHECK(t_daemon_signal_wait(&d, SIGTERM, 30000) == 0);

    /* (c) kvd down: jobs succeed without it, promptly */
    CHECK(kvd_stop(&kv) == 0);
    CHECK(t_daemon_start(&d, &d, KVARGS, NULL) == 0);
    sock = t_connect(ctx, &d);
    CHECK(sock != NULL);
    uint64_t t0 = t_now_ms();
    CHECK(run_gen(sock, &st, p3, COLD + 6, 120000) == 0);
    CHECK(t_usage(&st, "cached_tokens") == 0);
    t_stream_free(&st);
    int32_t p5[NP];
    t_prompt(p5, NP, 9);
    CHECK(run_gen(sock, &st, p5, NP, 120000) == 0);
    t_stream_free(&st);
    uint64_t el = t_now_ms() - t0;
    printf("two jobs with kvd down: %llu ms\n", (unsigned long long)el);
    CHECK(t_counter(sock, "kv_lookup_errors") >= 1);
    CHECK(t_counter(sock, "kv_restores") == 0);
    /* logits unaffected */
    CHECK(logits(sock, p2, COLD + 8, 1, rest, &nv2, &cached) == 0 && cached == 0);
    dd = max_abs_diff(fresh, rest, nv);
    CHECK(dd <= tol);
    zmq_close(sock);
    CHECK(t_daemon_signal_wait(&d, SIGTERM, 30000) == 0);
    t_daemon_cleanup(&d);

    zmq_ctx_term(ctx);
    free(fresh);
    free(rest);
    unlink(T_MODEL);
    unlink(MODEL2);
    kvd_rm_rf(kdir);
    return test_main_end("test_engined_kv");
}
