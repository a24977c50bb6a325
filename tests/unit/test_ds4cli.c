/* test_ds4cli.c - the ds4 command-line client (tools/ds4.c), run as a
 * program against a scripted HTTP server on loopback inside this test:
 * the request it sends (path, auth, messages, sampling and thinking
 * fields, files added with /read, the conversation history), how it reads
 * SSE streams (chunked or Content-Length, chunk boundaries inside lines and
 * inside UTF-8 characters, CRLF, keepalive comments, usage), reasoning
 * shown apart from content, errors (HTTP status with an API error body, an
 * error event, a stream cut before its end, nobody listening), Ctrl-C
 * interrupting one generation without ending the chat, and `ds4 status`
 * reading a stats segment. The binary is <build>/ds4 (DS4_CLI overrides). */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>

#include "stats.h"
#include "test.h"
#include "test_proc.h"

static char g_ds4[2048];
static int g_lfd = -1, g_port;

/* ---- the scripted server ----------------------------------------------------- */

static int listen_loopback(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 8) ||
        getsockname(fd, (struct sockaddr *)&a, &al)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

/* Accept the client's connection, pumping its output meanwhile. */
static int srv_accept(tp_proc *p, int ms)
{
    long long end = tp_now_ms() + ms;
    while (tp_now_ms() < end) {
        struct pollfd pf = {g_lfd, POLLIN, 0};
        if (poll(&pf, 1, 50) == 1)
            return accept4(g_lfd, NULL, NULL, SOCK_CLOEXEC);
        tp_pump(p, 0);
    }
    return -1;
}

struct req {
    char head[8192];
    json_t *json;
};

/* Read one request (headers + Content-Length body) within ms. */
static int srv_read_req(int fd, struct req *r, int ms)
{
    char buf[1 << 20];
    size_t n = 0;
    long long end = tp_now_ms() + ms;
    memset(r, 0, sizeof *r);
    for (;;) {
        char *he = memmem(buf, n, "\r\n\r\n", 4);
        if (he) {
            size_t hl = (size_t)(he - buf) + 4;
            const char *cl = strcasestr(buf, "Content-Length:");
            size_t blen = cl && cl < he ? strtoul(cl + 15, NULL, 10) : 0;
            if (n >= hl + blen) {
                snprintf(r->head, sizeof r->head, "%.*s", (int)hl, buf);
                if (blen)
                    r->json = json_loadb(buf + hl, blen, 0, NULL);
                return 0;
            }
        }
        long long left = end - tp_now_ms();
        struct pollfd pf = {fd, POLLIN, 0};
        if (left <= 0 || poll(&pf, 1, (int)left) != 1 || n == sizeof buf)
            return -1;
        ssize_t k = read(fd, buf + n, sizeof buf - n);
        if (k <= 0)
            return -1;
        n += (size_t)k;
    }
}

static void srv_write(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}
static void srv_puts(int fd, const char *s) { srv_write(fd, s, strlen(s)); }

/* Send body as HTTP chunks of varying sizes (1, 7, 3, 13, ...), so chunk
 * boundaries fall inside SSE lines and inside UTF-8 characters. */
static void srv_chunked_body(int fd, const char *body, int terminate)
{
    static const size_t sizes[] = {1, 7, 3, 13, 2, 29, 5, 64};
    size_t n = strlen(body), off = 0;
    for (int i = 0; off < n; i++) {
        size_t k = sizes[i % 8];
        if (k > n - off)
            k = n - off;
        char h[32];
        snprintf(h, sizeof h, "%zx\r\n", k);
        srv_puts(fd, h);
        srv_write(fd, body + off, k);
        srv_puts(fd, "\r\n");
        off += k;
    }
    if (terminate)
        srv_puts(fd, "0\r\n\r\n");
}

static const char SSE_HEAD_CHUNKED[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                       "Transfer-Encoding: chunked\r\n\r\n";

#define EV(json) "data: " json "\n\n"
static const char BODY_FULL[] =
    ": keepalive\n\n" EV("{\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}")
    EV("{\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"Let me think\"}}]}")
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\" about 世界.\"}}]}\r\n\r\n"
    EV("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Bonjour, \"}}]}")
    ": prefill\n\n"
    EV("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"世界!\"}}]}")
    EV("{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}")
    EV("{\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":7,"
       "\"prompt_tokens_details\":{\"cached_tokens\":4}}}")
    "data: [DONE]\n\n";

/* ---- helpers ------------------------------------------------------------------- */

static int start_cli(tp_proc *p, const char *const *args)
{
    char *argv[64];
    char port[16];
    snprintf(port, sizeof port, "%d", g_port);
    int n = 0;
    argv[n++] = g_ds4;
    argv[n++] = "--port";
    argv[n++] = port;
    for (int i = 0; args[i] && n < 62; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;
    static char *env[] = {"NO_COLOR=", "DS4_API_KEY=", NULL};
    return tp_spawn(p, argv, env);
}

static const char *jstr(json_t *o, const char *path1, const char *path2)
{
    json_t *v = json_object_get(o, path1);
    if (path2)
        v = json_object_get(v, path2);
    return json_string_value(v);
}

/* messages[i] of a request */
static json_t *msg(const struct req *r, size_t i)
{
    return json_array_get(json_object_get(r->json, "messages"), i);
}

/* ---- cases ----------------------------------------------------------------------- */

/* One-shot with every sampling flag; chunked SSE with awkward boundaries. */
static void test_oneshot_stream(int color)
{
    tp_proc p;
    const char *args[] = {"--api-key", "sekret", "--system", "Be brief", "--temperature", "0.5",
                          "--top-p", "0.9", "--top-k", "40", "--min-p", "0.1", "--seed", "7",
                          "--max-tokens", "33", "-v", "--color", color ? "always" : "never",
                          "Hello", "there", NULL};
    CHECK(start_cli(&p, args) == 0);
    int fd = srv_accept(&p, 10000);
    CHECK(fd >= 0);
    struct req r;
    if (fd >= 0 && srv_read_req(fd, &r, 10000) == 0) {
        CHECK(strncmp(r.head, "POST /v1/chat/completions HTTP/1.1\r\n", 36) == 0);
        CHECK(strstr(r.head, "\r\nAuthorization: Bearer sekret\r\n") != NULL);
        CHECK(strstr(r.head, "Content-Type: application/json") != NULL);
        json_t *j = r.json;
        CHECK(j != NULL);
        CHECK(json_is_true(json_object_get(j, "stream")));
        CHECK(json_is_true(json_object_get(json_object_get(j, "stream_options"), "include_usage")));
        CHECK(jstr(j, "model", NULL) && !strcmp(jstr(j, "model", NULL), "deepseek-v4-flash"));
        CHECK(json_array_size(json_object_get(j, "messages")) == 2);
        CHECK(!strcmp(jstr(msg(&r, 0), "role", NULL), "system") &&
              !strcmp(jstr(msg(&r, 0), "content", NULL), "Be brief"));
        CHECK(!strcmp(jstr(msg(&r, 1), "role", NULL), "user") &&
              !strcmp(jstr(msg(&r, 1), "content", NULL), "Hello there"));
        CHECK(json_real_value(json_object_get(j, "temperature")) == 0.5);
        CHECK(json_real_value(json_object_get(j, "top_p")) == 0.9);
        CHECK(json_integer_value(json_object_get(j, "top_k")) == 40);
        CHECK(json_real_value(json_object_get(j, "min_p")) == 0.1);
        CHECK(json_integer_value(json_object_get(j, "seed")) == 7);
        CHECK(json_integer_value(json_object_get(j, "max_tokens")) == 33);
        CHECK(json_object_get(j, "reasoning_effort") == NULL);
        json_decref(j);
        srv_puts(fd, SSE_HEAD_CHUNKED);
        srv_chunked_body(fd, BODY_FULL, 1);
    } else {
        CHECK(!"no request");
    }
    if (fd >= 0)
        close(fd);
    int rc = tp_finish(&p, 10000);
    CHECKF(rc == 0, "exit %d, stderr: %s", rc, p.ebuf);
    if (!color) {
        /* stdout is a pipe: only the answer there, the reasoning on stderr */
        CHECKF(!strcmp(p.obuf, "Bonjour, 世界!\n"), "stdout '%s'", p.obuf);
        CHECKF(strstr(p.ebuf, "Let me think about 世界.") != NULL, "stderr '%s'", p.ebuf);
    } else {
        /* forced colors: reasoning dimmed on stdout, then the answer */
        CHECKF(strstr(p.obuf, "\033[2mLet me think") != NULL, "stdout '%s'", p.obuf);
        const char *a = strstr(p.obuf, "Bonjour, 世界!\n");
        const char *b = strstr(p.obuf, " about 世界.");
        CHECK(a && b && b < a);
        CHECK(a && strstr(a, "\033[2m") == NULL); /* the answer is not dimmed */
    }
    CHECKF(strstr(p.ebuf, "12 prompt tokens (4 cached), 7 generated") != NULL, "stderr '%s'",
           p.ebuf);
    CHECK(strstr(p.ebuf, "finish stop") != NULL);
    tp_free(&p);
}

/* A plain Content-Length body; --nothink and --think-max map to
 * reasoning_effort; the prompt comes from stdin. */
static void test_think_flags(const char *flag, const char *effort)
{
    tp_proc p;
    const char *args[] = {flag, NULL};
    CHECK(start_cli(&p, args) == 0);
    srv_write(p.in, "from stdin\n", 11);
    tp_close_stdin(&p);
    int fd = srv_accept(&p, 10000);
    struct req r;
    if (fd >= 0 && srv_read_req(fd, &r, 10000) == 0) {
        CHECKF(jstr(r.json, "reasoning_effort", NULL) &&
               !strcmp(jstr(r.json, "reasoning_effort", NULL), effort), "%s", flag);
        CHECK(!strcmp(jstr(msg(&r, 0), "content", NULL), "from stdin\n"));
        json_decref(r.json);
        const char *body = EV("{\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}")
            EV("{\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}") "data: [DONE]\n\n";
        char head[256];
        snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                 "Content-Length: %zu\r\n\r\n", strlen(body));
        srv_puts(fd, head);
        srv_puts(fd, body);
    } else {
        CHECK(!"no request");
    }
    if (fd >= 0)
        close(fd);
    int rc = tp_finish(&p, 10000);
    CHECKF(rc == 0 && !strcmp(p.obuf, "ok\n"), "exit %d out '%s' err '%s'", rc, p.obuf, p.ebuf);
    tp_free(&p);
}

/* The server answers with head then body (mode 0: a Content-Length header
 * is added to head; 1: chunked, without the terminating chunk; 2: the body
 * ends when the connection closes); the client must fail with exit 1 and
 * a message containing want_err. */
static void test_failure(const char *what, const char *head, const char *body, int mode,
                         const char *want_err, const char *want_out)
{
    tp_proc p;
    const char *args[] = {"-p", "hi", NULL};
    CHECK(start_cli(&p, args) == 0);
    int fd = srv_accept(&p, 10000);
    struct req r;
    if (fd >= 0 && srv_read_req(fd, &r, 10000) == 0) {
        json_decref(r.json);
        srv_puts(fd, head);
        if (mode == 0) {
            char cl[64];
            snprintf(cl, sizeof cl, "Content-Length: %zu\r\n\r\n", strlen(body));
            srv_puts(fd, cl);
        }
        if (mode == 1)
            srv_chunked_body(fd, body, 0); /* no terminating chunk */
        else
            srv_puts(fd, body);
    }
    if (fd >= 0)
        close(fd);
    int rc = tp_finish(&p, 10000);
    CHECKF(rc == 1, "%s: exit %d", what, rc);
    CHECKF(strstr(p.ebuf, want_err) != NULL, "%s: stderr '%s'", what, p.ebuf);
    CHECKF(!want_out || strstr(p.obuf, want_out), "%s: stdout '%s'", what, p.obuf);
    tp_free(&p);
}

static void test_error_cases(void)
{
    test_failure("401", "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
                 "X-Test: 1\r\n",
                 "{\"error\":{\"message\":\"bad API key\",\"type\":\"authentication_error\",\"x\":1}}\n  ",
                 0, "HTTP 401: bad API key (authentication_error)", NULL);
    test_failure("503", "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n",
                 "{\"error\":{\"message\":\"engined is down\",\"type\":\"server_error\"}}", 2,
                 "HTTP 503: engined is down (server_error)", NULL);
    test_failure("cut", SSE_HEAD_CHUNKED,
                 EV("{\"choices\":[{\"delta\":{\"content\":\"partial\"}}]}"), 1,
                 "ended before the answer was complete", "partial");
    test_failure("error event", SSE_HEAD_CHUNKED,
                 EV("{\"choices\":[{\"delta\":{\"content\":\"so far\"}}]}")
                 EV("{\"error\":{\"message\":\"engined went away\",\"type\":\"server_error\"}}"),
                 1, "engined went away", "so far");
    test_failure("garbage", SSE_HEAD_CHUNKED, "data: {not json\n\n", 1, "unparsable event", NULL);
    /* nobody listening */
    int port = 0, fd = listen_loopback(&port);
    close(fd);
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    tp_proc p;
    char *argv[] = {g_ds4, "--port", ps, "hello", NULL};
    CHECK(tp_spawn(&p, argv, NULL) == 0);
    int rc = tp_finish(&p, 10000);
    CHECKF(rc == 1 && strstr(p.ebuf, "cannot connect"), "refused: exit %d '%s'", rc, p.ebuf);
    tp_free(&p);
}

/* A streamed answer: reasoning, content pieces, finish, [DONE]. */
static void serve_answer(int fd, const char *reasoning, const char *content)
{
    json_t *a = json_pack("{s:[{s:{s:s}}]}", "choices", "delta", "reasoning_content", reasoning);
    json_t *b = json_pack("{s:[{s:{s:s}}]}", "choices", "delta", "content", content);
    char *sa = json_dumps(a, JSON_COMPACT), *sb = json_dumps(b, JSON_COMPACT);
    char *body = malloc(strlen(sa) + strlen(sb) + 256);
    sprintf(body, "data: %s\n\ndata: %s\n\n" EV("{\"choices\":[{\"delta\":{},\"finish_reason\":"
            "\"stop\"}]}") "data: [DONE]\n\n", sa, sb);
    srv_puts(fd, SSE_HEAD_CHUNKED);
    srv_chunked_body(fd, body, 1);
    free(body);
    free(sa);
    free(sb);
    json_decref(a);
    json_decref(b);
}

/* Interactive (stdin is a pipe, -i): /read adds a file to the next
 * message only, the history carries the answers with their reasoning,
 * /nothink applies to later turns. */
static void test_interactive(void)
{
    char path[] = "/tmp/test_ds4cli_XXXXXX";
    int tfd = mkstemp(path);
    CHECK(tfd >= 0);
    srv_write(tfd, "line one\nline two\n", 18);
    close(tfd);
    tp_proc p;
    const char *args[] = {"-i", NULL};
    CHECK(start_cli(&p, args) == 0);
    char in[512];
    snprintf(in, sizeof in, "/read %s\nWhat is in the file?\n/nothink\n/bogus\nAnd \\\nagain?\n",
             path);
    srv_write(p.in, in, strlen(in));
    tp_close_stdin(&p);
    int fd = srv_accept(&p, 10000);
    struct req r;
    if (fd >= 0 && srv_read_req(fd, &r, 10000) == 0) {
        const char *c = jstr(msg(&r, 0), "content", NULL);
        CHECKF(c && strstr(c, "line one\nline two\n") && strstr(c, path) &&
               strstr(c, "What is in the file?") > strstr(c, "line two"), "first: %s", c);
        CHECK(json_object_get(r.json, "reasoning_effort") == NULL);
        json_decref(r.json);
        serve_answer(fd, "Reading.", "Two lines.");
    } else {
        CHECK(!"no first request");
    }
    if (fd >= 0)
        close(fd);
    fd = srv_accept(&p, 10000);
    if (fd >= 0 && srv_read_req(fd, &r, 10000) == 0) {
        CHECK(json_array_size(json_object_get(r.json, "messages")) == 3);
        CHECK(!strcmp(jstr(msg(&r, 1), "role", NULL), "assistant"));
        CHECK(!strcmp(jstr(msg(&r, 1), "content", NULL), "Two lines."));
        CHECK(!strcmp(jstr(msg(&r, 1), "reasoning_content", NULL), "Reading."));
        const char *c = jstr(msg(&r, 2), "content", NULL);
        CHECKF(c && !strcmp(c, "And \nagain?"), "second: %s", c);
        CHECK(jstr(r.json, "reasoning_effort", NULL) &&
              !strcmp(jstr(r.json, "reasoning_effort", NULL), "none"));
        json_decref(r.json);
        serve_answer(fd, "", "Again two.");
    } else {
        CHECK(!"no second request");
    }
    if (fd >= 0)
        close(fd);
    int rc = tp_finish(&p, 10000);
    CHECKF(rc == 0, "exit %d: %s", rc, p.ebuf);
    CHECK(strstr(p.obuf, "Two lines.\n") && strstr(p.obuf, "Again two.\n"));
    CHECK(strstr(p.obuf, "unknown command /bogus") != NULL);
    unlink(path);
    tp_free(&p);
}

/* Ctrl-C during a generation closes the connection (the gateway cancels
 * the job), keeps the partial answer, and the chat goes on. */
static void test_ctrl_c(void)
{
    tp_proc p;
    const char *args[] = {"-i", NULL};
    CHECK(start_cli(&p, args) == 0);
    srv_write(p.in, "first\n", 6);
    int fd = srv_accept(&p, 10000);
    struct req r;
    if (fd >= 0 && srv_read_req(fd, &r, 10000) == 0) {
        json_decref(r.json);
        srv_puts(fd, SSE_HEAD_CHUNKED);
        srv_chunked_body(fd, EV("{\"choices\":[{\"delta\":{\"content\":\"Partial\"}}]}"), 0);
        CHECK(tp_wait_for(&p, 1, "Partial", 10000) == 0);
        kill(p.pid, SIGINT);
        /* the client hangs up: read returns 0 */
        char b[64];
        struct pollfd pf = {fd, POLLIN, 0};
        CHECK(poll(&pf, 1, 10000) == 1 && read(fd, b, sizeof b) == 0);
        CHECK(tp_wait_for(&p, 2, "[interrupted]", 10000) == 0);
    } else {
        CHECK(!"no first request");
    }
    if (fd >= 0)
        close(fd);
    srv_write(p.in, "second\n", 7);
    tp_close_stdin(&p);
    fd = srv_accept(&p, 10000);
    if (fd >= 0 && srv_read_req(fd, &r, 10000) == 0) {
        CHECK(json_array_size(json_object_get(r.json, "messages")) == 3);
        CHECK(!strcmp(jstr(msg(&r, 1), "content", NULL), "Partial"));
        CHECK(!strcmp(jstr(msg(&r, 2), "content", NULL), "second"));
        json_decref(r.json);
        serve_answer(fd, "", "Done.");
    } else {
        CHECK(!"no request after Ctrl-C");
    }
    if (fd >= 0)
        close(fd);
    int rc = tp_finish(&p, 10000);
    CHECKF(rc == 0 && strstr(p.obuf, "Done.\n"), "exit %d out '%s'", rc, p.obuf);
    tp_free(&p);

    /* one-shot: Ctrl-C ends the program with 130 */
    const char *a1[] = {"once", NULL};
    CHECK(start_cli(&p, a1) == 0);
    fd = srv_accept(&p, 10000);
    if (fd >= 0 && srv_read_req(fd, &r, 10000) == 0) {
        json_decref(r.json);
        srv_puts(fd, SSE_HEAD_CHUNKED);
        srv_chunked_body(fd, EV("{\"choices\":[{\"delta\":{\"reasoning_content\":\"hmm\"}}]}"), 0);
        CHECK(tp_wait_for(&p, 2, "hmm", 10000) == 0);
        kill(p.pid, SIGINT);
    }
    rc = tp_finish(&p, 10000);
    CHECKF(rc == 130, "one-shot Ctrl-C: exit %d", rc);
    if (fd >= 0)
        close(fd);
    tp_free(&p);
}

/* `ds4 status` reads a stage's stats segment and reports a stage that
 * holds its pidfile but answers no PING. */
static void test_status(void)
{
    char dir[] = "/tmp/test_ds4cli_run_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char inst[32], pidfile[256];
    snprintf(inst, sizeof inst, "clitest%d", (int)getpid());
    snprintf(pidfile, sizeof pidfile, "%s/engined.pid", dir);
    int pfd = open(pidfile, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    CHECK(pfd >= 0 && flock(pfd, LOCK_EX) == 0);
    char pid[32];
    snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    srv_write(pfd, pid, strlen(pid));
    ds4_stats st;
    char err[256];
    CHECKF(ds4_stats_create(&st, inst, "engined", err, sizeof err) == 0, "%s", err);
    ds4_stats_set(&st, DS4S_ENG_jobs_submitted, 4242);
    ds4_stats_set(&st, DS4S_ENG_prefill_ns, 2500000);
    tp_proc p;
    char *argv[] = {g_ds4, "status", "--run-dir", dir, "--instance", inst, NULL};
    CHECK(tp_spawn(&p, argv, NULL) == 0);
    int rc = tp_finish(&p, 20000);
    CHECKF(rc == 1, "status exit %d", rc); /* a stage does not answer */
    CHECKF(strstr(p.obuf, "jobs_submitted") && strstr(p.obuf, "4242"), "%s", p.obuf);
    CHECK(strstr(p.obuf, "2.5ms") != NULL);
    CHECK(strstr(p.obuf, "NO ANSWER to PING") != NULL);
    CHECK(strstr(p.obuf, "kvd         not running") != NULL);
    snprintf(pid, sizeof pid, "pid %d", (int)getpid());
    CHECK(strstr(p.obuf, pid) != NULL);
    tp_free(&p);
    ds4_stats_close(&st, 1);
    close(pfd);
    unlink(pidfile);
    rmdir(dir);
}

int main(void)
{
    const char *env = getenv("DS4_CLI");
    char build[1800];
    if (env && *env)
        snprintf(g_ds4, sizeof g_ds4, "%s", env);
    else if (tp_build_dir(build, sizeof build) == 0)
        snprintf(g_ds4, sizeof g_ds4, "%s/ds4", build);
    if (access(g_ds4, X_OK) != 0) {
        fprintf(stderr, "test_ds4cli: %s is not built\n", g_ds4);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    g_lfd = listen_loopback(&g_port);
    CHECK(g_lfd >= 0);
    if (g_lfd >= 0) {
        test_oneshot_stream(0);
        test_oneshot_stream(1);
        test_think_flags("--nothink", "none");
        test_think_flags("--think-max", "max");
        test_error_cases();
        test_interactive();
        test_ctrl_c();
        close(g_lfd);
    }
    test_status();
    return test_main_end("test_ds4cli");
}
