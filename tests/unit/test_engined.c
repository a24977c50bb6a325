/* test_engined.c - the engined daemon over ZeroMQ, as a client sees it:
 * readiness, PING/STATS, generation streams (framing, usage, finish
 * reasons), greedy output equal to the reference forward pass, seeded
 * sampling (same seed same output, different seeds diverge), stop ids,
 * the context limit (context_overflow, never truncation), LOGITS_GET,
 * logprobs, and every kind of malformed or refused message (bad frames,
 * unknown type and version, out-of-range ids and fields, huge arrays),
 * test-only forced decoding, greedy sampling forced inside DSML structure
 * and the thinking-mode sampling override.
 *
 * Backend: DS4_TEST_BACKEND (default ref). The oracle checks that need
 * bit-exact logits run only on the ref backend. */
#include <math.h>

#include "engined/eng_ref.h"
#include "engined_test_util.h"
#include "tokenizerd/tok_bpe.h"

static void *CTX;
static tok_vocab *VOC;
static tok_encoder *ENC;
static eng_ref *ORACLE; /* same model, in this process (ref backend only) */
static uint32_t NV;

static int is_ref(void) { return strcmp(t_backend(), "ref") == 0; }

/* The oracle's next-token logits after ids[0..n). */
static float *oracle_logits(const int32_t *ids, uint32_t n)
{
    float *l = ds4_xmalloc(sizeof(float) * NV);
    char err[256];
    CHECKF(eng_ref_forward_rows(ORACLE, ids, n, n - 1, l, err, sizeof err) == 0, "%s", err);
    return l;
}

static int32_t argmax(const float *l, uint32_t n)
{
    int32_t b = 0;
    for (uint32_t i = 1; i < n; i++)
        if (l[i] > l[b])
            b = (int32_t)i;
    return b;
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    static char buf[4][512];
    static int k;
    char *b = buf[k++ & 3];
    va_list ap;
    va_start(ap, f);
    vsnprintf(b, sizeof buf[0], f, ap);
    va_end(ap);
    return b;
}

/* Run one job to its end; returns 0 if it ended within ms. */
static int run_job(void *sock, tstream *st, const char *json, const int32_t *p, size_t n, int ms)
{
    if (t_submit(sock, st, json, p, n, NULL, 0))
        return -1;
    tstream *ss[1] = {st};
    int rc = t_pump(sock, ss, 1, ms, NULL);
    CHECK(!st->bad);
    return rc;
}

static void test_ping_stats(void *sock)
{
    ds4w_msg m;
    CHECK(t_call(sock, DS4W_T_PING, NULL, NULL, -1, &m, 10000) == 0);
    CHECK(m.type == DS4W_T_PONG && json_is_true(json_object_get(m.json, "ready")));
    CHECK(strcmp(json_string_value(json_object_get(m.json, "daemon")), "engined") == 0);
    CHECK(json_is_true(json_object_get(m.json, "test_mode")));
    ds4w_msg_close(&m);
    CHECK(t_call(sock, DS4W_T_STATS_GET, NULL, NULL, -1, &m, 10000) == 0);
    CHECK(m.type == DS4W_T_STATS);
    json_t *info = json_object_get(m.json, "info");
    CHECK(strcmp(json_string_value(json_object_get(info, "backend")), t_backend()) == 0);
    CHECK(json_integer_value(json_object_get(info, "n_vocab")) == NV);
    CHECK(json_string_length(json_object_get(info, "fingerprint")) == 64);
    CHECK(json_is_integer(json_object_get(json_object_get(m.json, "counters"), "jobs_submitted")));
    ds4w_msg_close(&m);
}

/* Greedy generation = the reference's greedy continuation; LOGITS_GET =
 * the reference's logits; usage and finish reason; stop ids. */
static void test_greedy(void *sock)
{
    enum { NP = 20, NG = 6 };
    int32_t p[NP + NG];
    t_prompt(p, NP, 1);
    tstream st;
    CHECK(run_job(sock, &st, "{\"max_tokens\":6,\"temperature\":0}", p, NP, 60000) == 0);
    CHECK(st.accepted && st.n == NG && strcmp(t_finish(&st), "length") == 0);
    CHECK(t_usage(&st, "prompt_tokens") == NP && t_usage(&st, "completion_tokens") == NG);
    json_t *tim = json_object_get(st.done_json, "timings");
    CHECK(json_is_number(json_object_get(tim, "prefill_ms")) &&
          json_is_number(json_object_get(tim, "decode_ms")));
    int32_t got[NG];
    memcpy(got, st.tok, sizeof got);
    if (is_ref()) {
        memcpy(p + NP, got, sizeof got);
        for (int i = 0; i < NG; i++) {
            float *l = oracle_logits(p, NP + (uint32_t)i);
            CHECKF(argmax(l, NV) == got[i], "greedy token %d: %d, oracle %d", i, got[i],
                   argmax(l, NV));
            free(l);
        }
    }
    t_stream_free(&st);
    /* LOGITS_GET: top entries and the full row */
    ds4w_msg m;
    CHECK(t_call(sock, DS4W_T_LOGITS_GET, "{\"top_k\":5,\"full\":true}", p, NP, &m, 60000) == 0);
    CHECK(m.type == DS4W_T_LOGITS && json_integer_value(json_object_get(m.json, "n_vocab")) == NV);
    json_t *top = json_object_get(m.json, "top");
    CHECK(json_array_size(top) == 5);
    CHECK(json_integer_value(json_array_get(json_array_get(top, 0), 0)) == got[0]);
    double lp0 = json_number_value(json_array_get(json_array_get(top, 0), 1));
    double lp1 = json_number_value(json_array_get(json_array_get(top, 1), 1));
    CHECK(lp0 <= 0 && lp1 <= lp0);
    CHECK(ds4w_msg_count(&m, 1) == NV);
    if (is_ref() && ds4w_msg_count(&m, 1) == NV) {
        float *full = ds4_xmalloc(sizeof(float) * NV);
        ds4w_msg_f32(&m, 1, full);
        float *want = oracle_logits(p, NP);
        CHECK(memcmp(full, want, sizeof(float) * NV) == 0);
        free(want);
        free(full);
    }
    ds4w_msg_close(&m);
    /* stop ids: the first token not seen before ends the stream */
    int k = 1;
    while (k < NG && (got[k] == got[0] || (k > 1 && got[k] == got[1])))
        k++;
    if (k < NG && k <= 2) {
        char *js = fmt("{\"temperature\":0,\"max_tokens\":6,\"stop_ids\":[%d,1]}", got[k]);
        CHECK(run_job(sock, &st, js, p, NP, 60000) == 0);
        CHECK(strcmp(t_finish(&st), "stop") == 0 && st.n == (uint32_t)k);
        CHECK(json_integer_value(json_object_get(st.done_json, "stop_id")) == got[k]);
        CHECK(t_usage(&st, "completion_tokens") == k + 1);
        CHECK(memcmp(st.tok, got, sizeof(int32_t) * (size_t)k) == 0);
        t_stream_free(&st);
    }
    /* max_tokens 0: prefill only */
    CHECK(run_job(sock, &st, "{\"max_tokens\":0}", p, NP, 60000) == 0);
    CHECK(st.n == 0 && strcmp(t_finish(&st), "length") == 0 &&
          t_usage(&st, "prompt_tokens") == NP);
    t_stream_free(&st);
}

/* Same seed -> same tokens; other seeds diverge; logprobs are reported and
 * are those of the raw distribution. */
static void test_seeds(void *sock)
{
    enum { NP = 12, NG = 8 };
    int32_t p[NP];
    t_prompt(p, NP, 2);
    tstream a, b;
    const char *js = "{\"max_tokens\":8,\"temperature\":1.5,\"min_p\":0,\"seed\":42,"
                     "\"logprobs\":3}";
    CHECK(run_job(sock, &a, js, p, NP, 60000) == 0);
    CHECK(run_job(sock, &b, js, p, NP, 60000) == 0);
    CHECK(a.n == NG && b.n == NG && memcmp(a.tok, b.tok, sizeof(int32_t) * NG) == 0);
    CHECK(json_array_size(a.lp) == NG);
    json_t *e0 = json_array_get(a.lp, 0);
    CHECK(json_integer_value(json_object_get(e0, "id")) == a.tok[0]);
    CHECK(json_array_size(json_object_get(e0, "top")) == 3);
    CHECK(json_equal(a.lp, b.lp));
    if (is_ref()) {
        float *l = oracle_logits(p, NP);
        double mx = l[argmax(l, NV)], z = 0;
        for (uint32_t i = 0; i < NV; i++)
            z += exp((double)l[i] - mx);
        double want = (double)l[a.tok[0]] - mx - log(z);
        double gotlp = json_number_value(json_object_get(e0, "logprob"));
        CHECKF(fabs(gotlp - want) < 1e-4, "logprob %f want %f", gotlp, want);
        free(l);
    }
    int diverged = 0;
    for (int seed = 43; seed < 46; seed++) {
        tstream c;
        char *j2 = fmt("{\"max_tokens\":8,\"temperature\":1.5,\"min_p\":0,\"seed\":%d}", seed);
        CHECK(run_job(sock, &c, j2, p, NP, 60000) == 0);
        diverged += c.n == NG && memcmp(c.tok, a.tok, sizeof(int32_t) * NG) != 0;
        t_stream_free(&c);
    }
    CHECKF(diverged >= 2, "only %d of 3 other seeds diverged", diverged);
    t_stream_free(&a);
    t_stream_free(&b);
}

/* A refused GEN_SUBMIT: ERROR with the code (and field). */
static void expect_refused(void *sock, const char *json, const int32_t *p, size_t n, int code,
                           const char *field)
{
    tstream st;
    CHECK(t_submit(sock, &st, json, p, n, NULL, 0) == 0);
    tstream *ss[1] = {&st};
    CHECK(t_pump(sock, ss, 1, 30000, NULL) == 0);
    CHECKF(st.error == code && !st.accepted, "%s: error %d want %d", json, st.error, code);
    if (field) {
        const char *f = json_string_value(json_object_get(st.error_json, "field"));
        CHECKF(f && strcmp(f, field) == 0, "field %s want %s", f ? f : "(none)", field);
    }
    t_stream_free(&st);
}

static void test_refusals(void *sock, uint32_t ctx)
{
    int32_t p[128];
    t_prompt(p, 128, 3);
    /* context: prompt alone, prompt + max_tokens */
    expect_refused(sock, "{}", p, ctx, DS4W_E_CONTEXT_OVERFLOW, "prompt");
    expect_refused(sock, fmt("{\"max_tokens\":%u}", ctx - 9), p, 10, DS4W_E_CONTEXT_OVERFLOW,
                   "max_tokens");
    tstream st;
    /* exactly filling the context is allowed */
    CHECK(run_job(sock, &st, fmt("{\"max_tokens\":%u,\"temperature\":0}", 4), p, ctx - 4,
                  120000) == 0);
    CHECK(strcmp(t_finish(&st), "length") == 0 && st.n == 4);
    t_stream_free(&st);
    /* values */
    int32_t bad[3] = {5, (int32_t)NV, 7};
    expect_refused(sock, "{}", bad, 3, DS4W_E_INVALID_REQUEST, "prompt[1]");
    bad[1] = -3;
    expect_refused(sock, "{}", bad, 3, DS4W_E_INVALID_REQUEST, "prompt[1]");
    expect_refused(sock, "{}", p, 0, DS4W_E_INVALID_REQUEST, "prompt");
    expect_refused(sock, "{\"temperature\":\"hot\"}", p, 4, DS4W_E_INVALID_REQUEST,
                   "temperature");
    expect_refused(sock, "{\"top_p\":1.5}", p, 4, DS4W_E_INVALID_REQUEST, "top_p");
    expect_refused(sock, "{\"min_p\":-0.1}", p, 4, DS4W_E_INVALID_REQUEST, "min_p");
    expect_refused(sock, "{\"max_tokens\":-1}", p, 4, DS4W_E_INVALID_REQUEST, "max_tokens");
    expect_refused(sock, "{\"logprobs\":1000}", p, 4, DS4W_E_INVALID_REQUEST, "logprobs");
    expect_refused(sock, "{\"stop_ids\":[1,\"x\"]}", p, 4, DS4W_E_INVALID_REQUEST,
                   "stop_ids[1]");
    expect_refused(sock, fmt("{\"stop_ids\":[%u]}", NV), p, 4, DS4W_E_INVALID_REQUEST,
                   "stop_ids[0]");
    expect_refused(sock, "[1,2]", p, 4, DS4W_E_BAD_FRAME, NULL);
    expect_refused(sock, "{\"seed\":1.5}", p, 4, DS4W_E_INVALID_REQUEST, "seed");
    /* huge arrays: over the context, and over the wire limit */
    size_t big = 1u << 20;
    int32_t *h = ds4_xcalloc(big + (5u << 20), sizeof *h);
    expect_refused(sock, "{}", h, big, DS4W_E_CONTEXT_OVERFLOW, "prompt");
    expect_refused(sock, "{}", h, big + (5u << 20), DS4W_E_TOO_LARGE, NULL);
    free(h);
    /* the daemon still serves */
    CHECK(run_job(sock, &st, "{\"max_tokens\":2,\"temperature\":0}", p, 8, 60000) == 0);
    CHECK(st.n == 2);
    t_stream_free(&st);
}

/* Malformed messages: ERROR with the right code, the daemon goes on. */
static void test_malformed(void *sock)
{
    ds4w_msg m;
    ds4w_buf g = {(const uint8_t *)"garbage!", 8};
    CHECK(t_raw(sock, &g, 1, &m, 10000) == 0 && t_err_code(&m) == DS4W_E_BAD_FRAME);
    ds4w_msg_close(&m);
    uint8_t h[32] = "DS4W";
    h[4] = 2; /* version 2 */
    h[6] = 0x01;
    h[7] = 0x02;
    memset(h + 16, 0xab, 16);
    ds4w_buf v = {h, 32};
    CHECK(t_raw(sock, &v, 1, &m, 10000) == 0 &&
          t_err_code(&m) == DS4W_E_UNSUPPORTED_VERSION);
    CHECK(m.reqid[0] == 0xab); /* request id echoed */
    ds4w_msg_close(&m);
    h[4] = 1;
    h[6] = 0x77;
    h[7] = 0x77;
    CHECK(t_raw(sock, &v, 1, &m, 10000) == 0 && t_err_code(&m) == DS4W_E_UNKNOWN_TYPE);
    ds4w_msg_close(&m);
    /* GEN_SUBMIT without its I32 frame; with a ragged I32 frame */
    h[6] = 0x01;
    h[7] = 0x02;
    ds4w_buf f2[3] = {{h, 32}, {(const uint8_t *)"{}", 2}, {(const uint8_t *)"abcde", 5}};
    CHECK(t_raw(sock, f2, 2, &m, 10000) == 0 && t_err_code(&m) == DS4W_E_BAD_FRAME);
    ds4w_msg_close(&m);
    CHECK(t_raw(sock, f2, 3, &m, 10000) == 0 && t_err_code(&m) == DS4W_E_BAD_FRAME);
    ds4w_msg_close(&m);
    /* a reply type sent as a request; a tokenizerd request */
    CHECK(t_call(sock, DS4W_T_GEN_DONE, "{\"finish_reason\":\"stop\",\"usage\":{}}", NULL, -1,
                 &m, 10000) == 0 &&
          t_err_code(&m) == DS4W_E_INVALID_REQUEST);
    ds4w_msg_close(&m);
    CHECK(t_call(sock, DS4W_T_TOKENIZE, "{\"text\":\"hi\"}", NULL, -1, &m, 10000) == 0 &&
          t_err_code(&m) == DS4W_E_INVALID_REQUEST);
    ds4w_msg_close(&m);
    /* GEN_CANCEL of nothing: no reply, then PING still answers */
    tstream ghost;
    memset(&ghost, 0, sizeof ghost);
    ds4w_uuid_new(ghost.id);
    t_cancel(sock, &ghost);
    CHECK(t_call(sock, DS4W_T_PING, NULL, NULL, -1, &m, 10000) == 0 && m.type == DS4W_T_PONG);
    ds4w_msg_close(&m);
    CHECK(t_counter(sock, "frames_bad") >= 4);
}

/* Text -> ids with added tokens recognised (as the model emits them). */
static int32_t *encode_raw(const char *text, size_t *n)
{
    tok_ids ids = {0};
    CHECK(tok_encode(ENC, text, strlen(text), TOK_MODE_RAW, &ids, NULL, 0) == 0);
    *n = ids.n;
    return (int32_t *)ids.v;
}

/* Forced decoding: exactly the forced ids, each evaluated (logprobs are
 * the model's), stop ids still apply, usage real. */
static void test_forced(void *sock)
{
    enum { NP = 10 };
    int32_t p[NP], f[4] = {300, 301, 302, 303};
    t_prompt(p, NP, 7);
    tstream st;
    CHECK(t_submit(sock, &st, "{\"logprobs\":2,\"temperature\":0}", p, NP, f, 4) == 0);
    tstream *ss[1] = {&st};
    CHECK(t_pump(sock, ss, 1, 60000, NULL) == 0 && !st.bad);
    CHECK(st.n == 4 && memcmp(st.tok, f, sizeof f) == 0 && strcmp(t_finish(&st), "length") == 0);
    CHECK(t_usage(&st, "prompt_tokens") == NP && t_usage(&st, "completion_tokens") == 4);
    CHECK(json_number_value(json_object_get(json_object_get(st.done_json, "timings"),
                                            "prefill_ms")) > 0);
    CHECK(json_array_size(st.lp) == 4);
    if (is_ref() && json_array_size(st.lp) == 4) {
        /* the logprob of forced[2] is the model's after prompt + forced[0..2) */
        int32_t q[NP + 2];
        memcpy(q, p, sizeof p);
        memcpy(q + NP, f, 2 * sizeof *f);
        float *l = oracle_logits(q, NP + 2);
        double mx = l[argmax(l, NV)], z = 0;
        for (uint32_t i = 0; i < NV; i++)
            z += exp((double)l[i] - mx);
        double want = (double)l[f[2]] - mx - log(z);
        json_t *e = json_array_get(st.lp, 2);
        CHECK(json_integer_value(json_object_get(e, "id")) == f[2]);
        CHECKF(fabs(json_number_value(json_object_get(e, "logprob")) - want) < 1e-4,
               "forced logprob %f want %f", json_number_value(json_object_get(e, "logprob")), want);
        CHECK(json_integer_value(json_array_get(json_array_get(json_object_get(e, "top"), 0), 0)) ==
              argmax(l, NV));
        free(l);
    }
    t_stream_free(&st);
    /* a stop id inside the forced ids ends it there; max_tokens cuts it */
    CHECK(t_submit(sock, &st, "{\"stop_ids\":[302]}", p, NP, f, 4) == 0);
    CHECK(t_pump(sock, ss, 1, 60000, NULL) == 0);
    CHECK(st.n == 2 && strcmp(t_finish(&st), "stop") == 0 &&
          json_integer_value(json_object_get(st.done_json, "stop_id")) == 302);
    t_stream_free(&st);
    CHECK(t_submit(sock, &st, "{\"max_tokens\":1}", p, NP, f, 4) == 0);
    CHECK(t_pump(sock, ss, 1, 60000, NULL) == 0);
    CHECK(st.n == 1 && st.tok[0] == 300 && strcmp(t_finish(&st), "length") == 0);
    t_stream_free(&st);
    /* forced ids are checked like the prompt */
    int32_t badf[2] = {1, -5};
    CHECK(t_submit(sock, &st, "{}", p, NP, badf, 2) == 0);
    CHECK(t_pump(sock, ss, 1, 30000, NULL) == 0 && st.error == DS4W_E_INVALID_REQUEST);
    CHECK(strcmp(json_string_value(json_object_get(st.error_json, "field")), "forced[1]") == 0);
    t_stream_free(&st);
}

/* Inside DSML structure every seed gives the greedy tokens (unless the
 * job turns the guard off); the same sampling settings diverge in text. */
static void test_dsml_greedy(void *sock)
{
    size_t n;
    int32_t *p = encode_raw("<｜begin▁of▁sentence｜>You are a helpful assistant<｜User｜>"
                            "Weather in Paris?<｜Assistant｜></think>\n\n<｜DSML｜tool_calls>\n"
                            "<｜DSML｜invoke name=\"",
                            &n);
    tstream g;
    CHECK(run_job(sock, &g, "{\"max_tokens\":4,\"temperature\":0}", p, n, 60000) == 0);
    CHECK(g.n == 4);
    int same = 0, differ = 0;
    for (int seed = 1; seed <= 3; seed++) {
        tstream a;
        CHECK(run_job(sock, &a,
                      fmt("{\"max_tokens\":4,\"temperature\":2,\"min_p\":0,\"seed\":%d}", seed),
                      p, n, 60000) == 0);
        same += a.n == 4 && memcmp(a.tok, g.tok, sizeof(int32_t) * 4) == 0;
        t_stream_free(&a);
        CHECK(run_job(sock, &a,
                      fmt("{\"max_tokens\":4,\"temperature\":2,\"min_p\":0,\"seed\":%d,"
                          "\"dsml_greedy\":false}",
                          seed),
                      p, n, 60000) == 0);
        differ += a.n == 4 && memcmp(a.tok, g.tok, sizeof(int32_t) * 4) != 0;
        t_stream_free(&a);
    }
    CHECKF(same == 3, "inside DSML: %d of 3 seeded runs were greedy", same);
    CHECKF(differ >= 2, "dsml_greedy false: only %d of 3 seeded runs diverged", differ);
    t_stream_free(&g);
    free(p);
}

/* Thinking mode ignores the client's sampling settings (the seed stays). */
static void test_thinking_override(void *sock)
{
    size_t n;
    int32_t *p = encode_raw("<｜begin▁of▁sentence｜><｜User｜>Why is the sky blue?"
                            "<｜Assistant｜><think>",
                            &n);
    tstream a, b, c, d;
    /* inferred from the prompt: temperature 0 ignored = the defaults */
    CHECK(run_job(sock, &a, "{\"max_tokens\":6,\"temperature\":0,\"top_k\":1,\"seed\":9}", p, n,
                  60000) == 0);
    CHECK(run_job(sock, &b, "{\"max_tokens\":6,\"seed\":9,\"thinking\":false}", p, n, 60000) ==
          0);
    CHECK(a.n == 6 && b.n == 6 && memcmp(a.tok, b.tok, sizeof(int32_t) * 6) == 0);
    /* explicit thinking:true on the same prompt, explicit false honours T=0 */
    CHECK(run_job(sock, &c, "{\"max_tokens\":6,\"temperature\":0,\"seed\":9,\"thinking\":true}",
                  p, n, 60000) == 0);
    CHECK(c.n == 6 && memcmp(a.tok, c.tok, sizeof(int32_t) * 6) == 0);
    CHECK(run_job(sock, &d, "{\"max_tokens\":1,\"temperature\":0,\"thinking\":false}", p, n,
                  60000) == 0);
    if (is_ref() && d.n == 1) {
        float *l = oracle_logits(p, (uint32_t)n);
        CHECK(d.tok[0] == argmax(l, NV));
        free(l);
    }
    t_stream_free(&a);
    t_stream_free(&b);
    t_stream_free(&c);
    t_stream_free(&d);
    free(p);
}

int main(void)
{
    if (t_make_model(5)) {
        CHECK(0);
        return test_main_end("test_engined");
    }
    char err[256];
    if (eng_ref_open(T_MODEL, &ORACLE, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        CHECK(0);
        unlink(T_MODEL);
        return test_main_end("test_engined");
    }
    NV = eng_ref_hparams(ORACLE)->n_vocab;
    const char *tj = getenv("DS4_TOKENIZER_JSON");
    CHECKF(tok_vocab_from_json_file(tj && *tj ? tj : DSV4_TOKENIZER_JSON, &VOC, err,
                                    sizeof err) == 0,
           "%s", err);
    ENC = VOC ? tok_encoder_new(VOC, err, sizeof err) : NULL;
    CTX = zmq_ctx_new();
    tdaemon d;
    const uint32_t ctx = 48;
    if (t_daemon_start(&d, NULL, "--test-mode", "--ctx", "48", "--prefill-chunk", "16",
                       (char *)NULL) == 0) {
        void *sock = t_connect(CTX, &d);
        test_ping_stats(sock);
        test_greedy(sock);
        test_seeds(sock);
        test_refusals(sock, ctx);
        test_malformed(sock);
        if (ENC) {
            test_forced(sock);
            test_dsml_greedy(sock);
            test_thinking_override(sock);
        }
        zmq_close(sock);
        int st = t_daemon_signal_wait(&d, SIGTERM, 30000);
        CHECKF(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status 0x%x", st);
        t_daemon_cleanup(&d);
    } else {
        CHECK(0);
        t_daemon_cleanup(&d);
    }
    zmq_ctx_term(CTX);
    eng_ref_close(ORACLE);
    tok_encoder_free(ENC);
    tok_vocab_free(VOC);
    unlink(T_MODEL);
    return test_main_end("test_engined");
}
