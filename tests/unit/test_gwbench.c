/* test_gwbench.c - ds4-gwbench (tools/ds4-gwbench.c), run as a program
 * against a private stack (gw_stack.h: tiny model, ref backend, gatewayd in
 * --test-mode): a few concurrent streaming clients on both OpenAI
 * endpoints; its CSV has one well-formed row per request, every stream
 * complete, the engine's timings present (the gateway's test-mode
 * ": ds4-timings" comment), the summary counts agree, and engined really
 * ran every job. Nobody listening, or a scripted server whose stream lacks
 * its [DONE], has data after it, a non-JSON chunk or an error event: every
 * request is reported lost and the exit status says so. It never asserts
 * on speed. */
#include <jansson.h>
#include <pthread.h>

#include "gw_stack.h"
#include "test.h"
#include "test_proc.h"

static gw_stack S;
static char g_bin[1200];

/* Run the bench with argv (after the binary); fills p, returns exit code. */
static int bench(tp_proc *p, const char *const *args)
{
    char *argv[32];
    int k = 0;
    argv[k++] = g_bin;
    for (int i = 0; args[i] && k < 31; i++)
        argv[k++] = (char *)args[i];
    argv[k] = NULL;
    memset(p, 0, sizeof *p);
    if (tp_spawn(p, argv, NULL))
        return -1;
    return tp_finish(p, 60000);
}

/* Check the CSV rows on stdout: n rows, each ok with sane numbers. */
static void check_csv(const char *out, int n, int max_tokens)
{
    const char *hdr = "idx,ok,status,ttft_ms,end_ms,prompt_tokens,completion_tokens,chunks,"
                      "queue_ms,prefill_ms,decode_ms,gw_ttft_ms,ttft_overhead_ms,token_overhead_ms,error\n";
    CHECKF(strncmp(out, hdr, strlen(hdr)) == 0, "csv header: %.200s", out);
    const char *l = strstr(out, "\n");
    int rows = 0;
    unsigned char seen[64] = {0};
    while (l && l[1]) {
        l++;
        int idx, ok, status, chunks;
        long long pt, ct;
        double ttft, end, q, pf, dc, gwt;
        int got = sscanf(l, "%d,%d,%d,%lf,%lf,%lld,%lld,%d,%lf,%lf,%lf,%lf", &idx, &ok, &status, &ttft,
                         &end, &pt, &ct, &chunks, &q, &pf, &dc, &gwt);
        CHECKF(got == 12, "csv row: %.120s", l);
        if (got != 12)
            return;
        CHECKF(idx >= 0 && idx < n && idx < 64 && !seen[idx], "row index %d", idx);
        if (idx >= 0 && idx < 64)
            seen[idx] = 1;
        CHECKF(ok == 1 && status == 200, "row %d: ok %d status %d", idx, ok, status);
        CHECKF(pt >= 8 && ct >= 1 && ct <= max_tokens, "row %d: %lld prompt, %lld completion", idx, pt, ct);
        CHECKF(chunks >= 1 && ttft > 0 && end >= ttft, "row %d: chunks %d ttft %f end %f", idx, chunks, ttft, end);
        CHECKF(q >= 0 && pf > 0 && dc >= 0 && gwt > 0, "row %d: engine timings %f %f %f %f", idx, q, pf, dc, gwt);
        CHECKF(strstr(l, ",\"\"\n") == strchr(l, '\n') - 3, "row %d has an error text", idx);
        rows++;
        l = strchr(l, '\n');
    }
    CHECKF(rows == n, "%d csv rows, want %d", rows, n);
}

static void test_streams(const char *endpoint)
{
    char port[16];
    snprintf(port, sizeof port, "%d", S.port);
    long long jobs0 = gws_stat(S.inst, "engined", "jobs_submitted");
    const char *args[] = {"--port", port, "--clients", "4", "--requests", "8", "--max-tokens", "4",
                          "--prompt-tokens", "8", "--endpoint", endpoint, "--csv", NULL};
    tp_proc p;
    int rc = bench(&p, args);
    CHECKF(rc == 0, "%s: exit %d; stderr: %.600s", endpoint, rc, p.ebuf ? p.ebuf : "");
    check_csv(p.obuf ? p.obuf : "", 8, 4);
    const char *e = p.ebuf ? p.ebuf : "";
    CHECKF(strstr(e, "requests: 8 ok, 0 lost\n") != NULL, "summary: %.600s", e);
    CHECKF(strstr(e, "wall_s: ") && strstr(e, "completion_tok_per_s: "), "throughput line: %.600s", e);
    const char *names[] = {"  ttft ", "  end_to_end ", "  inter_chunk ", "  engine_ttft ",
                           "  ttft_overhead ", "  gateway_ttft ", "  per_token_overhead "};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        const char *s = strstr(e, names[i]);
        double p50, p90, p99, mx, mean;
        size_t n = 0;
        int got = s ? sscanf(s + strlen(names[i]), " n=%zu p50=%lf p90=%lf p99=%lf max=%lf mean=%lf", &n,
                             &p50, &p90, &p99, &mx, &mean) : 0;
        CHECKF(got == 6 && p50 <= p90 && p90 <= p99 && p99 <= mx, "%s line: %.200s", names[i], s ? s : "(none)");
        if (i < 2 || (i >= 3 && i <= 5))
            CHECKF(n == 8, "%s n=%zu", names[i], n);
    }
    /* the warm-up plus eight jobs reached the engine */
    long long jobs1 = gws_stat(S.inst, "engined", "jobs_submitted");
    CHECKF(jobs1 - jobs0 == 9, "engined saw %lld jobs, want 9", jobs1 - jobs0);
    tp_free(&p);
}

static void test_nobody_listening(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
          getsockname(fd, (struct sockaddr *)&a, &al) == 0);
    char port[16];
    snprintf(port, sizeof port, "%d", ntohs(a.sin_port));
    close(fd); /* bound, never listened, closed: connections are refused */
    const char *args[] = {"--port", port, "--clients", "2", "--requests", "3", "--warmup", "0", NULL};
    tp_proc p;
    int rc = bench(&p, args);
    CHECKF(rc == 1, "exit %d with nobody listening", rc);
    CHECKF(p.obuf && strstr(p.obuf, "requests: 0 ok, 3 lost\n"), "summary: %.400s", p.obuf ? p.obuf : "");
    tp_free(&p);
    /* usage errors */
    const char *bad[] = {"--clients", "0", NULL};
    rc = bench(&p, bad);
    CHECKF(rc == 2, "exit %d for --clients 0", rc);
    tp_free(&p);
}

/* ---- a scripted server that breaks one stream in a given way ----------- */

typedef struct {
    int lfd, n;          /* serve n connections */
    const char *tail;    /* what follows the finish and usage chunks */
} broken_srv;

static void *broken_main(void *arg)
{
    broken_srv *b = arg;
    for (int i = 0; i < b->n; i++) {
        struct pollfd pf = {b->lfd, POLLIN, 0};
        if (poll(&pf, 1, 20000) <= 0)
            break;
        int fd = accept(b->lfd, NULL, NULL);
        if (fd < 0)
            break;
        char req[65536];
        size_t got = 0;
        long long end = gws_now_ms() + 10000;
        /* read the head and the Content-Length body */
        while (got < sizeof req - 1 && gws_now_ms() < end) {
            struct pollfd rf = {fd, POLLIN, 0};
            if (poll(&rf, 1, 100) <= 0)
                continue;
            ssize_t r = read(fd, req + got, sizeof req - 1 - got);
            if (r <= 0)
                break;
            got += (size_t)r;
            req[got] = 0;
            char *h = strstr(req, "\r\n\r\n"), *cl = strcasestr(req, "Content-Length:");
            if (h && cl && got >= (size_t)(h + 4 - req) + strtoul(cl + 15, NULL, 10))
                break;
        }
        char out[1024];
        int n = snprintf(out, sizeof out,
                         "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
                         "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n"
                         "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
                         "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n%s",
                         b->tail);
        gws_send_all(fd, out, (size_t)n);
        close(fd);
    }
    return NULL;
}

/* The bench against a server whose streams end with tail: want_ok is
 * whether the streams count as complete. */
static void check_broken(const char *tail, int want_ok, const char *what)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    CHECK(lfd >= 0 && bind(lfd, (struct sockaddr *)&a, sizeof a) == 0 && listen(lfd, 8) == 0 &&
          getsockname(lfd, (struct sockaddr *)&a, &al) == 0);
    broken_srv b = {lfd, 2, tail};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, broken_main, &b) == 0);
    char port[16];
    snprintf(port, sizeof port, "%d", ntohs(a.sin_port));
    const char *args[] = {"--port", port, "--clients", "1", "--requests", "2", "--warmup", "0", "--timeout", "10", NULL};
    tp_proc p;
    int rc = bench(&p, args);
    pthread_join(th, NULL);
    close(lfd);
    const char *want = want_ok ? "requests: 2 ok, 0 lost\n" : "requests: 0 ok, 2 lost\n";
    CHECKF(rc == (want_ok ? 0 : 1) && p.obuf && strstr(p.obuf, want), "%s: exit %d, %.400s %.1500s", what,
           rc, p.obuf ? p.obuf : "", p.ebuf ? p.ebuf : "");
    tp_free(&p);
}

static void test_broken_streams(void)
{
    check_broken("data: [DONE]\n\n", 1, "a complete stream");
    check_broken("", 0, "no [DONE]");
    check_broken("data: [DONE]\n\ndata: {}\n\n", 0, "data after [DONE]");
    check_broken("data: {not json\n\ndata: [DONE]\n\n", 0, "a chunk that is not JSON");
    check_broken("data: {\"error\":{\"message\":\"x\"}}\n\ndata: [DONE]\n\n", 0, "an error event");
}

int main(void)
{
    if (tp_build_dir(g_bin, sizeof g_bin - 16) == 0)
        strcat(g_bin, "/ds4-gwbench");
    const char *gw_extra[] = {"--test-mode", NULL};
    if (gws_start(&S, NULL, gw_extra)) {
        gws_stop(&S, NULL, 0);
        fprintf(stderr, "FAIL test_gwbench: the stack did not start\n");
        return 1;
    }
    test_streams("chat");
    test_streams("completions");
    test_nobody_listening();
    test_broken_streams();
    CHECKF(gws_stop(&S, NULL, 0) == 0, "a daemon did not stop cleanly");
    return test_main_end("test_gwbench");
}
