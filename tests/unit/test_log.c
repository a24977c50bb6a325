/* test_log.c - log line format, level filtering and runtime changes,
 * request ids (explicit and per thread), truncation, sanitising, and that
 * concurrent processes never interleave inside a line. */
#include "log.h"
#include "test.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

static int rfd = -1, wfd = -1;

/* Read whatever is in the pipe right now (all lines were written already). */
static int drain(char *buf, int size)
{
    int n = 0;
    for (;;) {
        ssize_t r = read(rfd, buf + n, (size_t)(size - 1 - n));
        if (r <= 0)
            break;
        n += (int)r;
        if (n >= size - 1)
            break;
    }
    buf[n] = 0;
    return n;
}

/* Expected line with our pid. */
static const char *expect(const char *level, const char *req, const char *msg)
{
    static char buf[512];
    snprintf(buf, sizeof buf, "test_log[%ld]: %s: %s: %s\n", (long)getpid(),
             level, req, msg);
    return buf;
}

static void test_format(void)
{
    char buf[8192];
    ds4_log_set_level(DS4_LOG_INFO);
    ds4_log(DS4_LOG_INFO, "hello %d %s", 42, "world");
    drain(buf, sizeof buf);
    CHECKF(!strcmp(buf, expect("info", "-", "hello 42 world")), "got [%s]", buf);

    ds4_log_req(DS4_LOG_WARN, "5f0c3e9a-1b2c-4d5e-8f90-123456789abc", "x=%u", 7u);
    drain(buf, sizeof buf);
    CHECKF(!strcmp(buf, expect("warn", "5f0c3e9a-1b2c-4d5e-8f90-123456789abc", "x=7")),
           "got [%s]", buf);

    ds4_log_req(DS4_LOG_ERROR, "", "empty id");
    drain(buf, sizeof buf);
    CHECK(!strcmp(buf, expect("error", "-", "empty id")));

    ds4_log_set_reqid("req-1");
    ds4_log(DS4_LOG_INFO, "with thread id");
    ds4_log_set_reqid(NULL);
    ds4_log(DS4_LOG_INFO, "without");
    drain(buf, sizeof buf);
    char want[1024];
    snprintf(want, sizeof want, "%s", expect("info", "req-1", "with thread id"));
    strcat(want, expect("info", "-", "without"));
    CHECKF(!strcmp(buf, want), "got [%s]", buf);

    /* A hostile request id or message cannot start a new line. */
    ds4_log_req(DS4_LOG_INFO, "evil\nline", "a\nb\rc\td");
    drain(buf, sizeof buf);
    CHECKF(!strcmp(buf, expect("info", "evil?line", "a?b?c d")), "got [%s]", buf);
}

static void test_levels(void)
{
    char buf[8192];
    ds4_log_set_level(DS4_LOG_INFO);
    ds4_debug("hidden %d", 1);
    ds4_trace("hidden");
    CHECK(drain(buf, sizeof buf) == 0);
    ds4_log_set_level(DS4_LOG_TRACE);
    ds4_debug("shown %d", 2);
    ds4_trace("shown trace");
    drain(buf, sizeof buf);
    char want[1024];
    snprintf(want, sizeof want, "%s", expect("debug", "-", "shown 2"));
    strcat(want, expect("trace", "-", "shown trace"));
    CHECKF(!strcmp(buf, want), "got [%s]", buf);

    ds4_log_set_level(DS4_LOG_ERROR);
    ds4_log(DS4_LOG_WARN, "hidden warn");
    CHECK(drain(buf, sizeof buf) == 0);
    ds4_log_force(DS4_LOG_INFO, "forced");
    drain(buf, sizeof buf);
    CHECK(!strcmp(buf, expect("info", "-", "forced")));

    ds4_log_set_level(99);
    CHECK(ds4_log_get_level() == DS4_LOG_TRACE);
    ds4_log_set_level(-5);
    CHECK(ds4_log_get_level() == DS4_LOG_ERROR);

    int l = -1;
    CHECK(ds4_log_level_parse("debug", &l) == 0 && l == DS4_LOG_DEBUG);
    CHECK(ds4_log_level_parse("WARNING", &l) == 0 && l == DS4_LOG_WARN);
    CHECK(ds4_log_level_parse("4", &l) == 0 && l == DS4_LOG_TRACE);
    CHECK(ds4_log_level_parse("verbose", &l) == -1);
    CHECK(ds4_log_level_parse("5", &l) == -1);
    CHECK(ds4_log_level_parse("", &l) == -1);
    CHECK(!strcmp(ds4_log_level_name(DS4_LOG_TRACE), "trace"));
    CHECK(!strcmp(ds4_log_level_name(17), "?"));
    ds4_log_set_level(DS4_LOG_INFO);
}

static void test_truncation(void)
{
    static char big[10000], buf[16384];
    for (int i = 0; i < (int)sizeof big - 1; i++)
        big[i] = (char)('a' + i % 26);
    big[sizeof big - 1] = 0;
    ds4_log(DS4_LOG_INFO, "%s", big);
    int n = drain(buf, sizeof buf);
    CHECKF(n == DS4_LOG_LINE_MAX, "line length %d", n);
    CHECK(buf[n - 1] == '\n' && !memcmp(buf + n - 4, "...", 3));
    CHECK(memchr(buf, '\n', (size_t)n - 1) == NULL);
    /* A long request id is cut at DS4_LOG_REQID_MAX. */
    ds4_log_req(DS4_LOG_INFO, big, "m");
    n = drain(buf, sizeof buf);
    const char *p = strstr(buf, ": info: ");
    CHECK(p && (int)(strstr(p + 8, ": m\n") - (p + 8)) == DS4_LOG_REQID_MAX);
}

static void *thread_main(void *arg)
{
    ds4_log_set_reqid("thread-req");
    const char **out = arg;
    *out = ds4_log_get_reqid();
    return NULL;
}

static void test_thread_reqid(void)
{
    ds4_log_set_reqid("main-req");
    const char *theirs = NULL;
    pthread_t t;
    pthread_create(&t, NULL, thread_main, &theirs);
    pthread_join(t, NULL);
    CHECK(theirs != NULL);
    CHECK(!strcmp(ds4_log_get_reqid(), "main-req"));
    ds4_log_set_reqid(NULL);
    CHECK(ds4_log_get_reqid() == NULL);
}

/* Several processes log lines of random lengths into one pipe; every line
 * read back must be exactly one whole line of one writer. */
static void test_no_interleave(void)
{
    int p[2];
    CHECK(pipe(p) == 0);
    enum { KIDS = 4, LINES = 300 };
    pid_t kids[KIDS];
    for (int k = 0; k < KIDS; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            close(p[0]);
            ds4_log_set_fd(p[1]);
            unsigned seed = 1234u + (unsigned)k;
            char payload[3000];
            for (int i = 0; i < LINES; i++) {
                int len = (int)(rand_r(&seed) % 2900);
                memset(payload, 'A' + k, (size_t)len);
                payload[len] = 0;
                ds4_log(DS4_LOG_INFO, "k%d i%d len%d %s", k, i, len, payload);
            }
            _exit(0);
        }
    }
    close(p[1]);
    size_t cap = 1 << 24, n = 0;
    char *all = malloc(cap);
    ssize_t r;
    while (all && (r = read(p[0], all + n, cap - n - 1)) > 0)
        n += (size_t)r;
    close(p[0]);
    for (int k = 0; k < KIDS; k++)
        waitpid(kids[k], NULL, 0);
    if (!all)
        return;
    all[n] = 0;
    int lines = 0, bad = 0;
    for (char *line = all, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
        *nl = 0;
        int k, i, len, off = 0;
        char *msg = strstr(line, ": info: -: ");
        if (!msg || sscanf(msg, ": info: -: k%d i%d len%d %n", &k, &i, &len, &off) != 3) {
            bad++;
            continue;
        }
        char *pl = msg + off;
        int ok = (int)strlen(pl) == len;
        for (int j = 0; ok && j < len; j++)
            ok = pl[j] == 'A' + k;
        bad += !ok;
        lines++;
    }
    CHECKF(lines == KIDS * LINES && bad == 0, "%d lines, %d bad", lines, bad);
    free(all);
}

int main(void)
{
    int p[2];
    if (pipe2(p, O_NONBLOCK) != 0)
        return 1;
    fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
    rfd = p[0];
    wfd = p[1];
    ds4_log_init("test_log");
    ds4_log_set_fd(wfd);
    test_format();
    test_levels();
    test_truncation();
    test_thread_reqid();
    ds4_log_set_fd(2);
    test_no_interleave();
    return test_main_end("test_log");
}
