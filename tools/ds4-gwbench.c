/* ds4-gwbench - load generator and pipeline-overhead benchmark for a
 * running ds4 stack (gatewayd over tokenizerd and engined).
 *
 *   ds4-gwbench [--host H] [--port P] [--clients N] [--requests M]
 *               [--max-tokens K] [--prompt-tokens T] [--endpoint chat|completions]
 *               [--warmup W] [--csv] [--timeout S]
 *
 * N client threads share M streaming requests (default M = N), each on its
 * own loopback HTTP/1.1 connection (common/http_client.h, the CLI's
 * client). Every stream is checked: HTTP 200, text/event-stream, every
 * data line a JSON object, a chunk with a finish_reason, the usage chunk,
 * then "data: [DONE]" as the last event; anything else counts as a lost
 * stream. Printed: requests ok/lost, wall time, requests/s and streamed
 * completion tokens/s, and percentiles of time to first token (TTFT),
 * end-to-end time and inter-chunk gaps, as the client sees them.
 *
 * Pipeline overhead: a gateway in --test-mode ends each stream with the
 * comment ": ds4-timings {queue_ms, prefill_ms, decode_ms, gw_ttft_ms}"
 * (engined's own GEN_DONE timings). Then also printed, per request:
 *   ttft overhead      = client TTFT - (queue_ms + prefill_ms)
 *   per-token overhead = ((last byte - first token) - decode_ms)
 *                        / (completion_tokens - 1)
 * i.e. what HTTP, gatewayd, tokenizerd (rendering, tokenizing,
 * detokenizing) and the ZeroMQ hops add on top of the engine; gateway_ttft
 * (gatewayd's request start to first token) splits the TTFT part. With
 * several clients engined interleaves jobs, and the time a job waits for
 * other jobs' prefill is in neither queue_ms nor prefill_ms, so the
 * overhead figures are only the pipeline's own with --clients 1.
 *
 * --csv prints one line per request (header first) on stdout and the
 * summary on stderr. Exit status: 0 every stream complete, 1 a stream was
 * lost or failed, 2 usage. Numbers only: it asserts nothing about speed. */
#include "http_client.h"
#include "opts.h"
#include "util.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct bcfg {
    const char *host, *api_key, *endpoint, *model;
    int port, clients, requests, max_tokens, prompt_tokens, warmup, csv, timeout_s;
    int completions; /* derived */
};

/* One request's observations (times in ms from its own start). */
typedef struct {
    int ok, status;
    char why[160];
    double ttft, last, end;      /* first token chunk, last token chunk, end of stream */
    long long prompt_tokens, completion_tokens;
    int chunks, saw_finish, saw_usage, saw_done, after_done;
    double *gaps;                /* inter-chunk gaps */
    size_t ngaps, capgaps;
    int have_eng;
    double queue_ms, prefill_ms, decode_ms, gw_ttft_ms;
    double t0, t_prev;
} breq;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void req_fail(breq *q, const char *why)
{
    if (!q->why[0])
        snprintf(q->why, sizeof q->why, "%.159s", why);
}

/* One SSE event of a chat or completions stream. */
static int on_event(void *ud, const char *event, const char *data, size_t len)
{
    breq *q = ud;
    double t = now_ms() - q->t0;
    if (q->saw_done) {
        q->after_done = 1;
        return 0;
    }
    if (len == 6 && !memcmp(data, "[DONE]", 6)) {
        q->saw_done = 1;
        return 0;
    }
    json_t *j = json_loadb(data, len, 0, NULL);
    if (!json_is_object(j)) {
        req_fail(q, "a data line is not a JSON object");
        json_decref(j);
        return 1;
    }
    if (json_object_get(j, "error")) {
        req_fail(q, "error event in the stream");
        json_decref(j);
        return 1;
    }
    json_t *u = json_object_get(j, "usage");
    if (json_is_object(u)) {
        q->saw_usage = 1;
        q->prompt_tokens = json_integer_value(json_object_get(u, "prompt_tokens"));
        q->completion_tokens = json_integer_value(json_object_get(u, "completion_tokens"));
    }
    json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
    if (c0) {
        json_t *d = json_object_get(c0, "delta");
        const char *txt = d ? json_string_value(json_object_get(d, "content"))
                            : json_string_value(json_object_get(c0, "text"));
        const char *rs = d ? json_string_value(json_object_get(d, "reasoning_content")) : NULL;
        int tok = (txt && *txt) || (rs && *rs) || (d && json_object_get(d, "tool_calls"));
        if (tok) {
            if (!q->chunks)
                q->ttft = t;
            else {
                if (q->ngaps == q->capgaps) {
                    q->capgaps = q->capgaps ? q->capgaps * 2 : 32;
                    q->gaps = ds4_xrealloc(q->gaps, q->capgaps * sizeof *q->gaps);
                }
                q->gaps[q->ngaps++] = t - q->t_prev;
            }
            q->chunks++;
            q->t_prev = q->last = t;
        }
        if (json_is_string(json_object_get(c0, "finish_reason")))
            q->saw_finish = 1;
    }
    json_decref(j);
    return 0;
}

/* ": ds4-timings {...}" from a gateway in test mode. */
static void on_comment(void *ud, const char *text, size_t len)
{
    breq *q = ud;
    static const char tag[] = " ds4-timings ";
    size_t tl = sizeof tag - 1;
    if (len <= tl || memcmp(text, tag, tl))
        return;
    json_t *j = json_loadb(text + tl, len - tl, 0, NULL);
    if (json_is_object(j)) {
        q->queue_ms = json_number_value(json_object_get(j, "queue_ms"));
        q->prefill_ms = json_number_value(json_object_get(j, "prefill_ms"));
        q->decode_ms = json_number_value(json_object_get(j, "decode_ms"));
        q->gw_ttft_ms = json_number_value(json_object_get(j, "gw_ttft_ms"));
        q->have_eng = 1;
    }
    json_decref(j);
}

static char *make_body(const struct bcfg *c, int idx)
{
    hc_buf p = {0};
    char head[64];
    snprintf(head, sizeof head, "Request %d.", idx);
    hc_buf_adds(&p, head);
    for (int i = 0; i < c->prompt_tokens; i++)
        hc_buf_adds(&p, " the");
    json_t *req = json_pack("{s:s,s:b,s:i,s:f,s:i,s:{s:b}}", "model", c->model, "stream", 1,
                            "max_tokens", c->max_tokens, "temperature", 0.0, "seed", idx,
                            "stream_options", "include_usage", 1);
    if (c->completions) {
        json_object_set_new(req, "prompt", json_string(p.p));
    } else {
        json_object_set_new(req, "messages",
                            json_pack("[{s:s,s:s}]", "role", "user", "content", p.p));
        json_object_set_new(req, "reasoning_effort", json_string("none"));
    }
    hc_buf_free(&p);
    char *s = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    return s;
}

/* Run one streaming request and check its stream. */
static void run_one(const struct bcfg *c, int idx, breq *q)
{
    memset(q, 0, sizeof *q);
    char *body = make_body(c, idx);
    hc_resp *r = ds4_xmalloc(sizeof *r);
    char err[256];
    q->t0 = now_ms();
    hc_target t = {c->host, c->port, c->api_key, c->timeout_s, "ds4-gwbench", NULL};
    const char *path = c->completions ? "/v1/completions" : "/v1/chat/completions";
    if (hc_request(&t, "POST", path, body, r, err, sizeof err)) {
        req_fail(q, err);
        goto out;
    }
    q->status = r->status;
    if (r->status != 200 || !strstr(r->ctype, "text/event-stream")) {
        hc_buf b = {0};
        hc_slurp(r, &b, 65536);
        char msg[140];
        hc_error_text(b.p ? b.p : "", msg, sizeof msg);
        snprintf(err, sizeof err, "HTTP %d: %s", r->status, msg);
        req_fail(q, err);
        hc_buf_free(&b);
        close(r->fd);
        goto out;
    }
    hc_sse sp = {.cb = on_event, .ud = q, .on_comment = on_comment};
    long n;
    int stop = hc_sse_run(r, &sp, &n);
    q->end = now_ms() - q->t0;
    close(r->fd);
    hc_buf_free(&sp.line);
    hc_buf_free(&sp.data);
    if (stop < 0)
        req_fail(q, "an SSE line over 64 MiB");
    else if (!stop && n < 0)
        req_fail(q, n == HC_TIMEOUT ? "stream timed out" : "stream cut before its end");
    else if (!q->saw_finish)
        req_fail(q, "no chunk with a finish_reason");
    else if (!q->saw_usage)
        req_fail(q, "no usage chunk");
    else if (!q->saw_done || q->after_done)
        req_fail(q, "stream did not end with data: [DONE]");
    else if (q->completion_tokens > 0 && !q->chunks)
        req_fail(q, "completion tokens reported but none streamed");
    q->ok = !q->why[0];
out:
    free(r);
    free(body);
}

/* ---- the client threads -------------------------------------------------- */

typedef struct {
    const struct bcfg *c;
    breq *reqs;
    atomic_int next;
} bshared;

static void *client_main(void *arg)
{
    bshared *s = arg;
    for (;;) {
        int i = atomic_fetch_add(&s->next, 1);
        if (i >= s->c->requests)
            break;
        run_one(s->c, i, &s->reqs[i]);
    }
    return NULL;
}

/* ---- statistics ----------------------------------------------------------- */

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* "p50 p90 p99 max mean" of v (sorted in place). */
static void print_pct(FILE *f, const char *name, double *v, size_t n)
{
    if (!n) {
        fprintf(f, "%-24s n=0\n", name);
        return;
    }
    qsort(v, n, sizeof *v, cmp_d);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
#define PCT(p) v[(size_t)fmin((double)(n - 1), ceil((p) / 100.0 * (double)n) - 1)]
    fprintf(f, "%-24s n=%zu p50=%.3f p90=%.3f p99=%.3f max=%.3f mean=%.3f\n", name, n,
            PCT(50), PCT(90), PCT(99), v[n - 1], sum / (double)n);
#undef PCT
}

static void print_csv(const breq *q, int n)
{
    printf("idx,ok,status,ttft_ms,end_ms,prompt_tokens,completion_tokens,chunks,"
           "queue_ms,prefill_ms,decode_ms,gw_ttft_ms,ttft_overhead_ms,token_overhead_ms,error\n");
    for (int i = 0; i < n; i++, q++) {
        double tov = NAN, kov = NAN;
        if (q->ok && q->have_eng && q->chunks)
            tov = q->ttft - q->queue_ms - q->prefill_ms;
        if (q->ok && q->have_eng && q->completion_tokens > 1 && q->chunks)
            kov = (q->end - q->ttft - q->decode_ms) / (double)(q->completion_tokens - 1);
        printf("%d,%d,%d,%.3f,%.3f,%lld,%lld,%d,%.3f,%.3f,%.3f,%.3f,%.3f,%.4f,\"%s\"\n", i, q->ok,
               q->status, q->ttft, q->end, q->prompt_tokens, q->completion_tokens, q->chunks,
               q->queue_ms, q->prefill_ms, q->decode_ms, q->gw_ttft_ms, tov, kov, q->why);
    }
}

static void summary(FILE *f, const struct bcfg *c, const breq *reqs, double wall_ms)
{
    int n = c->requests, ok = 0, eng = 0;
    long long toks = 0, ptoks = 0;
    size_t ngaps = 0;
    for (int i = 0; i < n; i++) {
        ok += reqs[i].ok;
        eng += reqs[i].ok && reqs[i].have_eng;
        if (reqs[i].ok)
            toks += reqs[i].completion_tokens, ptoks += reqs[i].prompt_tokens, ngaps += reqs[i].ngaps;
    }
    double *ttft = ds4_xcalloc((size_t)n + 1, sizeof *ttft), *e2e = ds4_xcalloc((size_t)n + 1, sizeof *e2e);
    double *tov = ds4_xcalloc((size_t)n + 1, sizeof *tov), *kov = ds4_xcalloc((size_t)n + 1, sizeof *kov);
    double *ettft = ds4_xcalloc((size_t)n + 1, sizeof *ettft), *etok = ds4_xcalloc((size_t)n + 1, sizeof *etok);
    double *gaps = ds4_xcalloc(ngaps + 1, sizeof *gaps), *gttft = ds4_xcalloc((size_t)n + 1, sizeof *gttft);
    size_t nt = 0, nf = 0, nto = 0, nko = 0, ng = 0, nek = 0;
    for (int i = 0; i < n; i++) {
        const breq *q = &reqs[i];
        if (!q->ok)
            continue;
        e2e[nt++] = q->end;
        if (q->chunks)
            ttft[nf++] = q->ttft;
        if (q->ngaps)
            memcpy(gaps + ng, q->gaps, q->ngaps * sizeof *gaps);
        ng += q->ngaps;
        if (q->have_eng && q->chunks) {
            gttft[nto] = q->gw_ttft_ms;
            ettft[nto] = q->queue_ms + q->prefill_ms;
            tov[nto++] = q->ttft - q->queue_ms - q->prefill_ms;
        }
        if (q->have_eng && q->chunks && q->completion_tokens > 1) {
            etok[nek++] = q->decode_ms / (double)(q->completion_tokens - 1);
            kov[nko++] = (q->end - q->ttft - q->decode_ms) / (double)(q->completion_tokens - 1);
        }
    }
    fprintf(f, "ds4-gwbench: %s:%d %s, %d clients, %d requests, max_tokens %d, prompt +%d words\n",
            c->host, c->port, c->completions ? "/v1/completions" : "/v1/chat/completions",
            c->clients, n, c->max_tokens, c->prompt_tokens);
    fprintf(f, "requests: %d ok, %d lost\n", ok, n - ok);
    for (int i = 0, shown = 0; i < n && shown < 5; i++)
        if (!reqs[i].ok)
            fprintf(f, "  request %d: %s\n", i, reqs[i].why), shown++;
    fprintf(f, "tokens: %lld prompt, %lld completion\n", ptoks, toks);
    fprintf(f, "wall_s: %.3f  req_per_s: %.2f  completion_tok_per_s: %.1f\n", wall_ms / 1e3,
            wall_ms > 0 ? ok / (wall_ms / 1e3) : 0, wall_ms > 0 ? (double)toks / (wall_ms / 1e3) : 0);
    fprintf(f, "client latency (ms):\n");
    print_pct(f, "  ttft", ttft, nf);
    print_pct(f, "  end_to_end", e2e, nt);
    print_pct(f, "  inter_chunk", gaps, ng);
    if (eng) {
        fprintf(f, "engine timings (ms, from the gateway's test-mode ds4-timings):\n");
        print_pct(f, "  engine_ttft", ettft, nto);
        print_pct(f, "  engine_per_token", etok, nek);
        print_pct(f, "  gateway_ttft", gttft, nto);
        fprintf(f, "pipeline overhead (ms, client minus engine):\n");
        print_pct(f, "  ttft_overhead", tov, nto);
        print_pct(f, "  per_token_overhead", kov, nko);
    } else {
        fprintf(f, "pipeline overhead: no engine timings (start gatewayd with --test-mode)\n");
    }
    free(ttft), free(e2e), free(tov), free(kov), free(ettft), free(etok), free(gaps), free(gttft);
}

int main(int argc, char **argv)
{
    struct bcfg c = {0};
    const struct ds4_opt tab[] = {
        {"host", 0, DS4_OPT_STRING, &c.host, "127.0.0.1", "gateway address"},
        {"port", 0, DS4_OPT_INT, &c.port, "8000", "gateway port"},
        {"api-key", 0, DS4_OPT_STRING, &c.api_key, NULL, "API key (default $DS4_API_KEY)"},
        {"model", 0, DS4_OPT_STRING, &c.model, "deepseek-v4-flash", "model name sent"},
        {"clients", 'c', DS4_OPT_INT, &c.clients, "8", "concurrent client connections"},
        {"requests", 'n', DS4_OPT_INT, &c.requests, "0", "requests in all (default: --clients)"},
        {"max-tokens", 0, DS4_OPT_INT, &c.max_tokens, "16", "max_tokens of each request"},
        {"prompt-tokens", 0, DS4_OPT_INT, &c.prompt_tokens, "32",
         "prompt length: this many extra words (about one token each)"},
        {"endpoint", 0, DS4_OPT_STRING, &c.endpoint, "chat", "chat or completions"},
        {"warmup", 0, DS4_OPT_INT, &c.warmup, "1", "requests run (and not counted) first"},
        {"csv", 0, DS4_OPT_FLAG, &c.csv, NULL, "per-request CSV on stdout, summary on stderr"},
        {"timeout", 0, DS4_OPT_INT, &c.timeout_s, "120", "idle bound per read (seconds)"},
        {NULL, 0, 0, NULL, NULL, NULL},
    };
    const struct ds4_opt *const tabs[] = {tab, NULL};
    char err[256];
    if (ds4_opts_defaults(tabs, err, sizeof err)) {
        fprintf(stderr, "ds4-gwbench: %s\n", err);
        return 2;
    }
    int prc = ds4_opts_parse(tabs, argc, argv, NULL, NULL, err, sizeof err);
    if (prc == DS4_OPTS_HELP) {
        ds4_opts_help(stdout, "ds4-gwbench", "[options]", tabs);
        return 0;
    }
    if (prc != DS4_OPTS_OK) {
        fprintf(stderr, "ds4-gwbench: %s\n", err);
        return 2;
    }
    if (!c.api_key)
        c.api_key = getenv("DS4_API_KEY");
    if (!c.requests)
        c.requests = c.clients;
    c.completions = !strcmp(c.endpoint, "completions");
    if (c.port <= 0 || c.port > 65535 || c.clients < 1 || c.clients > 4096 || c.requests < 1 ||
        c.max_tokens < 1 || c.prompt_tokens < 0 || c.warmup < 0 ||
        (!c.completions && strcmp(c.endpoint, "chat"))) {
        fprintf(stderr, "ds4-gwbench: bad option value (see --help)\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    for (int i = 0; i < c.warmup; i++) {
        breq w;
        run_one(&c, -1 - i, &w);
        free(w.gaps);
        if (!w.ok) {
            fprintf(stderr, "ds4-gwbench: warm-up request failed: %s\n", w.why);
            return 1;
        }
    }
    breq *reqs = ds4_xcalloc((size_t)c.requests, sizeof *reqs);
    bshared sh = {.c = &c, .reqs = reqs};
    atomic_init(&sh.next, 0);
    int nth = c.clients < c.requests ? c.clients : c.requests;
    pthread_t *th = ds4_xcalloc((size_t)nth, sizeof *th);
    double t0 = now_ms();
    int started = 0;
    for (; started < nth; started++)
        if (pthread_create(&th[started], NULL, client_main, &sh))
            break;
    if (!started) {
        fprintf(stderr, "ds4-gwbench: cannot start client threads\n");
        return 1;
    }
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    double wall = now_ms() - t0;
    if (c.csv)
        print_csv(reqs, c.requests);
    summary(c.csv ? stderr : stdout, &c, reqs, wall);
    int lost = 0;
    for (int i = 0; i < c.requests; i++) {
        lost += !reqs[i].ok;
        free(reqs[i].gaps);
    }
    free(reqs);
    free(th);
    return lost ? 1 : 0;
}
