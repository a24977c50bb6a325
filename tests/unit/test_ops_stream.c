/* test_ops_stream.c - restarting and killing stages while HTTP clients
 * stream chat completions through the gateway (SPEC §2: a restarted stage
 * re-attaches; in-flight requests of the dead stage fail cleanly with an
 * error to the client, the others keep serving, new requests succeed).
 *
 * For each stage, a client's stream is in flight (its first delta has
 * arrived) when the stage is restarted with ds4-up.sh; then only that
 * stage has a new pid, every stage answers, and:
 *   - kvd, tokenizerd: the stream completes normally (finish_reason and
 *     [DONE]): generation does not depend on them once it runs;
 *   - engined (started with a 300 ms drain, the job still running): the
 *     stream ends with an error in the API's shape (an error event or an
 *     HTTP error), never a hang and never a silent cut;
 *   - gatewayd: the stream ends (drained to completion, or the connection
 *     closes), never hangs;
 *   - a new request afterwards completes.
 * Then kill -9 of engined mid-stream: an error reaches the client, and
 * `ds4-up.sh start` brings engined back; kill -9 of gatewayd mid-stream:
 * the connection closes, `start` brings the gateway back. Finally the ds4
 * CLI against the real gateway: a chat answer streams, Ctrl-C stops it and
 * engined counts the job as cancelled (the disconnect reached it), and the
 * chat goes on with the next question. Everything runs
 * on loopback with engined's plain-C "ref" backend and the default test
 * model. Needs all four daemons built; otherwise it says what is missing
 * and checks nothing. */
#include "test_ops.h"

enum { S_COMPLETE, S_ERROR, S_CUT, S_TIMEOUT, S_NOCONN };
static const char *const SNAME[] = {"complete", "error", "cut", "timeout", "no connection"};

struct stream {
    int fd;
    char *raw;
    size_t n;
    int eof;
    char why[512]; /* status and the start of the body, for messages */
};

/* Open a streaming chat completion of at most max_tokens. */
static int stream_open(struct stream *s, int max_tokens, const char *text)
{
    memset(s, 0, sizeof *s);
    s->raw = calloc(1, 1);
    s->fd = gw_connect();
    if (s->fd < 0)
        return -1;
    char body[512], req[1024];
    int bl = snprintf(body, sizeof body,
                      "{\"model\":\"deepseek-v4-flash\",\"stream\":true,\"max_tokens\":%d,"
                      "\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}", max_tokens, text);
    int rl = snprintf(req, sizeof req, "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Content-Type: application/json\r\nContent-Length: %d\r\n"
                      "Connection: close\r\n\r\n%s", bl, body);
    return write(s->fd, req, (size_t)rl) == rl ? 0 : -1;
}

/* Read what arrives within ms (or until EOF). */
static void stream_read(struct stream *s, int ms)
{
    long long end = tp_now_ms() + ms;
    while (!s->eof && s->fd >= 0) {
        long long left = end - tp_now_ms();
        struct pollfd pf = {s->fd, POLLIN, 0};
        if (left <= 0 || poll(&pf, 1, (int)left) != 1)
            return;
        char buf[16384];
        ssize_t k = read(s->fd, buf, sizeof buf);
        if (k <= 0) {
            s->eof = 1;
            return;
        }
        tp_append(&s->raw, &s->n, buf, (size_t)k);
    }
}

/* HTTP status, and the body with chunked framing removed (an incomplete
 * last chunk gives what arrived of it). Caller frees *body. */
static int stream_body(const struct stream *s, char **body)
{
    *body = calloc(1, 1);
    size_t bn = 0;
    int status = 0;
    const char *he = strstr(s->raw, "\r\n\r\n");
    if (!he || sscanf(s->raw, "HTTP/1.%*d %d", &status) != 1)
        return 0;
    const char *p = he + 4, *end = s->raw + s->n;
    const char *te = strcasestr(s->raw, "Transfer-Encoding: chunked");
    if (!te || te > he) {
        tp_append(body, &bn, p, (size_t)(end - p));
        return status;
    }
    while (p < end) {
        char *e;
        unsigned long sz = strtoul(p, &e, 16);
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (e == p || !nl || sz == 0)
            break;
        p = nl + 1;
        size_t k = sz < (size_t)(end - p) ? sz : (size_t)(end - p);
        tp_append(body, &bn, p, k);
        p += k;
        if (p + 2 > end)
            break;
        p += 2; /* CRLF after the data */
    }
    return status;
}

/* Wait until the first delta with text arrived. 0, or -1. */
static int stream_wait_delta(struct stream *s, int ms)
{
    long long end = tp_now_ms() + ms;
    for (;;) {
        char *b;
        stream_body(s, &b);
        int got = strstr(b, "\"content\":\"") || strstr(b, "\"reasoning_content\":\"");
        free(b);
        if (got)
            return 0;
        if (s->eof || tp_now_ms() >= end)
            return -1;
        stream_read(s, 100);
    }
}

/* Read to the end (bounded) and classify. */
static int stream_outcome(struct stream *s, int ms)
{
    if (s->fd < 0)
        return S_NOCONN;
    long long end = tp_now_ms() + ms;
    while (!s->eof && tp_now_ms() < end)
        stream_read(s, 200);
    char *b;
    int status = stream_body(s, &b);
    int r;
    if (status != 200 && status != 0)
        r = S_ERROR; /* an HTTP error in the API's shape */
    else if (strstr(b, "\"error\":"))
        r = S_ERROR;
    else if (strstr(b, "data: [DONE]") && strstr(b, "\"finish_reason\":\""))
        r = S_COMPLETE;
    else
        r = s->eof ? S_CUT : S_TIMEOUT;
    snprintf(s->why, sizeof s->why, "HTTP %d, body: %.400s", status, b);
    free(b);
    return r;
}

static void stream_close(struct stream *s)
{
    if (s->fd >= 0)
        close(s->fd);
    free(s->raw);
    memset(s, 0, sizeof *s);
    s->fd = -1;
}

/* A new short request completes. */
static void check_new_request(const char *when)
{
    struct stream s;
    int rc = stream_open(&s, 2, "Still there?");
    int o = rc ? S_NOCONN : stream_outcome(&s, 60000);
    CHECKF(o == S_COMPLETE, "new request %s: %s (%s)", when, SNAME[o], s.why);
    stream_close(&s);
}

static int want_one_of(int o, int a, int b) { return o == a || o == b; }

/* Restart stage i with a stream in flight. */
static void restart_while_streaming(int i)
{
    const char *d = DN[i];
    struct stream s;
    /* engined's job must still run at SIGTERM: a long one (cut by the
     * 300 ms drain, so it costs no time); the others: a short one */
    CHECK(stream_open(&s, !strcmp(d, "engined") ? 64 : 6, "Tell me a story") == 0);
    int flowing = stream_wait_delta(&s, 60000) == 0;
    CHECKF(flowing, "no delta before restarting %s", d);
    long before[ND], now[ND];
    for (int k = 0; k < ND; k++)
        before[k] = owner_pid(DN[k]);
    tp_proc p;
    const char *a[] = {"restart", d, NULL};
    int rc = up(&p, a, 120000);
    CHECKF(rc == 0, "restart %s: %d\n%s%s", d, rc, p.obuf, p.ebuf);
    tp_free(&p);
    /* only that stage has a new process; every stage serves */
    all_serve(now, "after restart");
    for (int k = 0; k < ND; k++)
        CHECKF(k == i ? now[k] > 0 && now[k] != before[k] : now[k] == before[k],
               "restart %s: %s pid %ld -> %ld", d, DN[k], before[k], now[k]);
    check_new_request(d);
    int o = stream_outcome(&s, 60000);
    printf("  restart %-11s in-flight stream: %s\n", d, SNAME[o]);
    if (!strcmp(d, "kvd") || !strcmp(d, "tokenizerd"))
        CHECKF(o == S_COMPLETE, "restart %s: in-flight stream %s (%s)", d, SNAME[o], s.why);
    else if (!strcmp(d, "engined"))
        CHECKF(o == S_ERROR, "restart engined: in-flight stream %s (%s)", SNAME[o], s.why);
    else
        CHECKF(want_one_of(o, S_COMPLETE, S_CUT), "restart gatewayd: in-flight stream %s (%s)",
               SNAME[o], s.why);
    stream_close(&s);
}

/* kill -9 stage i with a stream in flight, then start. */
static void kill_while_streaming(int i, int want)
{
    const char *d = DN[i];
    struct stream s;
    CHECK(stream_open(&s, 64, "Tell me a story") == 0);
    CHECKF(stream_wait_delta(&s, 60000) == 0, "no delta before killing %s", d);
    long pid = owner_pid(d);
    CHECK(pid > 0 && kill((pid_t)pid, SIGKILL) == 0);
    int o = stream_outcome(&s, 60000);
    printf("  kill -9 %-11s in-flight stream: %s\n", d, SNAME[o]);
    CHECKF(o == want, "kill -9 %s: in-flight stream %s, want %s (%s)", d, SNAME[o], SNAME[want],
           s.why);
    stream_close(&s);
    CHECK(tp_wait_gone((pid_t)pid, 10000) == 0);
    tp_proc p;
    const char *a[] = {"start", NULL};
    int rc = up(&p, a, 120000);
    CHECKF(rc == 0 && strstr(p.obuf, "recovering"), "start after kill -9 %s: %d\n%s%s", d, rc,
           p.obuf, p.ebuf);
    tp_free(&p);
    check_new_request(d);
}

/* A counter of engined's stats segment. */
static uint64_t eng_stat(const char *name)
{
    ds4_stats st;
    char err[256];
    if (ds4_stats_attach(&st, g_inst, "engined", err, sizeof err))
        return 0;
    int i = ds4_stats_find(&st, name);
    uint64_t v = i >= 0 ? ds4_stats_get(&st, (unsigned)i) : 0;
    ds4_stats_close(&st, 0);
    return v;
}

/* The ds4 CLI: Ctrl-C during an answer cancels the job in engined. */
static void test_cli_ctrl_c(void)
{
    char ds4[2048], port[16];
    snprintf(ds4, sizeof ds4, "%s/ds4", g_build);
    snprintf(port, sizeof port, "%d", gw_port());
    if (access(ds4, X_OK)) {
        printf("skip CLI: %s not built\n", ds4);
        return;
    }
    uint64_t cancelled0 = eng_stat("jobs_cancelled");
    tp_proc p;
    char *argv[] = {ds4, "--port", port, "-i", "--max-tokens", "200", "--color", "never", NULL};
    CHECK(tp_spawn(&p, argv, NULL) == 0);
    CHECK(write(p.in, "Tell me a long story\n", 21) == 21);
    /* reasoning goes to stderr (stdout is a pipe); wait for some of it */
    long long end = tp_now_ms() + 60000;
    while (p.elen + p.olen < 8 && tp_now_ms() < end)
        tp_pump(&p, 100);
    CHECKF(p.elen + p.olen >= 8, "no answer streamed: %s", p.ebuf);
    kill(p.pid, SIGINT);
    CHECK(tp_wait_for(&p, 2, "[interrupted]", 10000) == 0);
    end = tp_now_ms() + 10000;
    while (eng_stat("jobs_cancelled") == cancelled0 && tp_now_ms() < end)
        poll(NULL, 0, 20);
    CHECKF(eng_stat("jobs_cancelled") > cancelled0, "engined did not cancel the job");
    /* the chat goes on: the next answer streams (stopped again, then EOF) */
    size_t seen = p.olen + p.elen;
    CHECK(write(p.in, "/nothink\nShort answer?\n", 24) == 24);
    end = tp_now_ms() + 60000;
    while (p.olen + p.elen < seen + 8 && tp_now_ms() < end)
        tp_pump(&p, 100);
    CHECKF(p.olen + p.elen >= seen + 8, "no second answer: %s", p.ebuf);
    kill(p.pid, SIGINT);
    tp_close_stdin(&p);
    int rc = tp_finish(&p, 30000);
    CHECKF(rc == 0, "ds4 chat exit %d: %s", rc, p.ebuf);
    tp_free(&p);
}

int main(void)
{
    if (ops_setup("opsst"))
        return 1;
    for (int i = 0; i < ND; i++)
        if (!g_built[i]) {
            printf("ok   test_ops_stream (skipped: needs all four daemons)\n");
            cleanup();
            zmq_ctx_term(g_zctx);
            return 0;
        }
    /* a short drain, so an engined restart cuts the in-flight job */
    snprintf(g_env_extra, sizeof g_env_extra, "DS4_ENGINED_ARGS=--drain-ms 300");
    tp_proc p;
    const char *a[] = {"start", "--backend", "ref", "--ctx", "512", "--kv-disk-dir", g_kv1, NULL};
    int rc = up(&p, a, 300000);
    CHECKF(rc == 0, "start: %d\n%s%s", rc, p.obuf, p.ebuf);
    tp_free(&p);
    long long t = tp_now_ms();
    if (rc == 0) {
        for (int i = 0; i < ND; i++)
            restart_while_streaming(i);
        printf("  %-40s %5lld ms\n", "restarts while streaming", tp_now_ms() - t);
        t = tp_now_ms();
        kill_while_streaming(1, S_ERROR); /* engined: the client gets an error */
        kill_while_streaming(3, S_CUT);   /* gatewayd: the connection closes */
        printf("  %-40s %5lld ms\n", "kill -9 while streaming", tp_now_ms() - t);
        t = tp_now_ms();
        test_cli_ctrl_c();
        printf("  %-40s %5lld ms\n", "ds4 CLI Ctrl-C cancels the job", tp_now_ms() - t);
        long pid[ND];
        all_serve(pid, "at the end");
    }
    cleanup();
    zmq_ctx_term(g_zctx);
    return test_main_end("test_ops_stream");
}
