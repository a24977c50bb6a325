/* test_ops.h - shared by the operations tests (test_ops, test_ops_stream):
 * a private stack instance (run directory under /tmp, instance name, a
 * gateway on a port of its own choosing), scripts/ds4-up.sh run on this
 * build's binaries, and the probes that say whether a stage serves.
 * Header-only; include once per test binary. */
#ifndef DS4_TEST_OPS_H
#define DS4_TEST_OPS_H

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "daemon.h"
#include "stats.h"
#include "test.h"
#include "test_proc.h"
#include "wire.h"

#define ND 4
static const char *const DN[ND] = {"kvd", "engined", "tokenizerd", "gatewayd"};

static char g_build[1800], g_run[256], g_inst[32], g_port[16], g_cache[2048];
static char g_env_extra[256]; /* one more NAME=value for the stages, or "" */
static char g_env_cache[2100], g_kv1[300], g_kv2[300];
static int g_built[ND];
static void *g_zctx;

/* ---- running the script ---------------------------------------------------------- */

/* Run ds4-up.sh with the stack's common options plus args; output in p
 * (caller frees). Returns the exit status, -1 on timeout. */
static int up(tp_proc *p, const char *const *args, int timeout_ms)
{
    char *argv[48];
    int n = 0;
    argv[n++] = "/bin/bash";
    argv[n++] = "scripts/ds4-up.sh";
    for (int i = 0; args[i] && n < 30; i++)
        argv[n++] = (char *)args[i];
    const char *common[] = {"--build", g_build, "--run-dir", g_run, "--instance", g_inst,
                            "--port", g_port, "--no-deps", "--no-build", NULL};
    /* subcommands that take a daemon name keep it right after the command */
    for (int i = 0; common[i]; i++)
        argv[n++] = (char *)common[i];
    argv[n] = NULL;
    char *env[] = {g_env_cache, "DS4_STOP_TIMEOUT=20", g_env_extra[0] ? g_env_extra : NULL, NULL};
    if (tp_spawn(p, argv, env))
        return -1;
    long long t0 = tp_now_ms();
    int rc = tp_finish(p, timeout_ms);
    if (getenv("DS4_OPS_TRACE"))
        printf("    ds4-up.sh %s: %lld ms\n", args[0], tp_now_ms() - t0);
    if (rc != 0 && rc != 1 && rc != 3)
        fprintf(stderr, "ds4-up.sh %s: exit %d\n--- stdout\n%s--- stderr\n%s\n", args[0], rc,
                p->obuf, p->ebuf);
    return rc;
}

/* Start options for this test's stack. */
#define START_ARGS "start", "--backend", "ref", "--test-mode", "--ctx", "1024", \
                   "--kv-disk-space-mb", "64", "--kv-disk-dir", g_kv1

/* Pid of a stage via `ds4-up.sh pid D`, 0 when not running. */
static __attribute__((unused)) long stage_pid(const char *d)
{
    tp_proc p;
    const char *args[] = {"pid", d, NULL};
    long pid = 0;
    if (up(&p, args, 30000) == 0)
        pid = strtol(p.obuf, NULL, 10);
    tp_free(&p);
    return pid;
}

/* ---- talking to the stages ------------------------------------------------------- */

/* One request/reply over a DEALER socket; reply type or -1. */
static int zcall(const char *d, uint16_t type, const char *json, int timeout_ms, json_t **reply)
{
    char ep[512];
    snprintf(ep, sizeof ep, "ipc://%s/%s.sock", g_run, d);
    void *s = zmq_socket(g_zctx, ZMQ_DEALER);
    int rc = -1;
    if (!s)
        return -1;
    if (ds4w_socket_setup(s, 0) == 0 && zmq_connect(s, ep) == 0) {
        ds4w_out o;
        uint8_t id[16];
        char err[256];
        ds4w_uuid_new(id);
        ds4w_out_init(&o, type, id);
        if (json)
            ds4w_out_json_text(&o, json, strlen(json));
        if (ds4w_send(s, NULL, &o, 0, err, sizeof err) == 0) {
            zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
            ds4w_msg m;
            memset(&m, 0, sizeof m);
            if (zmq_poll(&it, 1, timeout_ms) == 1 &&
                ds4w_recv(s, &m, 0, 0, err, sizeof err) == DS4W_OK && !memcmp(m.reqid, id, 16)) {
                rc = m.type;
                if (reply)
                    *reply = json_incref(m.json);
            }
            ds4w_msg_close(&m);
        }
        ds4w_out_free(&o);
    }
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_close(s);
    return rc;
}

/* The HTTP port the gateway picked (<run-dir>/gatewayd.port), 0 if none. */
static int gw_port(void)
{
    char f[300];
    snprintf(f, sizeof f, "%s/gatewayd.port", g_run);
    char *t = test_read_file(f, NULL);
    int port = t ? atoi(t) : 0;
    free(t);
    return port;
}

/* A TCP connection to the gateway, or -1. */
static int gw_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons((uint16_t)gw_port())};
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* GET path from the gateway; HTTP status or -1. */
static int http_get(const char *path, int timeout_ms)
{
    int fd = gw_connect();
    if (fd < 0)
        return -1;
    char req[256], buf[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                     path);
    int status = -1;
    if (write(fd, req, (size_t)n) == n) {
        struct pollfd pf = {fd, POLLIN, 0};
        ssize_t k;
        if (poll(&pf, 1, timeout_ms) == 1 && (k = read(fd, buf, sizeof buf - 1)) > 12) {
            buf[k] = 0;
            sscanf(buf, "HTTP/1.%*d %d", &status);
        }
    }
    close(fd);
    return status;
}

/* The stage answers PING with ready:true and a real request (TOKENIZE for
 * tokenizerd, GET /health for the gateway when its stages exist). */
static int serves(int i)
{
    const char *d = DN[i];
    json_t *j = NULL;
    int ok = zcall(d, DS4W_T_PING, NULL, 10000, &j) == DS4W_T_PONG &&
             json_is_true(json_object_get(j, "ready"));
    json_decref(j);
    if (ok && !strcmp(d, "tokenizerd"))
        ok = zcall(d, DS4W_T_TOKENIZE, "{\"text\":\"Hello, ops\"}", 10000, NULL) == DS4W_T_TOKENS;
    /* the gateway: its HTTP side reaches the stages it needs */
    if (ok && !strcmp(d, "gatewayd") && g_built[1] && g_built[2]) {
        int st = http_get("/health", 10000);
        if (st != 200)
            fprintf(stderr, "GET /health: %d\n", st);
        ok = st == 200;
    }
    return ok;
}

/* Pid holding a stage's pidfile (what `ds4-up.sh pid` prints), 0 if none. */
static long owner_pid(const char *d)
{
    char f[300];
    snprintf(f, sizeof f, "%s/%s.pid", g_run, d);
    return ds4d_pidfile_owner(f);
}

/* Every built stage runs with a pid and serves; pids into pid[]. */
static int all_serve(long pid[ND], const char *when)
{
    int ok = 1;
    for (int i = 0; i < ND; i++) {
        if (!g_built[i])
            continue;
        pid[i] = owner_pid(DN[i]);
        int s = pid[i] > 0 && serves(i);
        CHECKF(s, "%s: %s not serving (pid %ld)", when, DN[i], pid[i]);
        ok &= s;
    }
    return ok;
}

/* A sanitizer build's daemons report memory errors, undefined behaviour
 * and leaks on stderr, which is their log: none may appear. */
static void check_logs_clean(void)
{
    static const char *const bad[] = {"AddressSanitizer", "LeakSanitizer", "runtime error:",
                                      NULL};
    for (int i = 0; i < ND; i++) {
        char f[300];
        snprintf(f, sizeof f, "%s/%s.log", g_run, DN[i]);
        char *t = test_read_file(f, NULL);
        for (int k = 0; t && bad[k]; k++) {
            const char *hit = strstr(t, bad[k]);
            CHECKF(!hit, "%s: %.600s", f, hit);
        }
        free(t);
    }
}

/* Stop the stack, check its logs, remove the run directory (logs, the kv
 * directories) and anything left of the instance. */
static void cleanup(void)
{
    tp_proc p;
    const char *a[] = {"stop", NULL};
    up(&p, a, 120000);
    tp_free(&p);
    check_logs_clean();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_run);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", g_run);
    ds4_shm_cleanup_stale(getuid(), g_inst);
}

/* Set up the private instance; 0, or -1 (message printed) when the tree
 * is not usable. */
static int ops_setup(const char *name)
{
    if (tp_build_dir(g_build, sizeof g_build) || access("scripts/ds4-up.sh", R_OK)) {
        fprintf(stderr, "%s: run from the repository root with a built tree\n", name);
        return -1;
    }
    signal(SIGPIPE, SIG_IGN);
    snprintf(g_run, sizeof g_run, "/tmp/ds4-%s-%d-XXXXXX", name, (int)getpid());
    if (!mkdtemp(g_run))
        return -1;
    chmod(g_run, 0700);
    snprintf(g_inst, sizeof g_inst, "%s%d", name, (int)getpid());
    snprintf(g_cache, sizeof g_cache, "%s/tests/ds4-cache", g_build);
    snprintf(g_env_cache, sizeof g_env_cache, "DS4_CACHE_DIR=%s", g_cache);
    snprintf(g_kv1, sizeof g_kv1, "%s/kv1", g_run);
    snprintf(g_kv2, sizeof g_kv2, "%s/kv2", g_run);
    snprintf(g_port, sizeof g_port, "0"); /* the gateway picks a free port */
    for (int i = 0; i < ND; i++) {
        char b[2048];
        snprintf(b, sizeof b, "%s/%s", g_build, DN[i]);
        g_built[i] = access(b, X_OK) == 0;
        if (!g_built[i])
            printf("note: %s is not built in %s; its operations are not tested\n", DN[i], g_build);
    }
    g_zctx = zmq_ctx_new();
    return 0;
}

#endif
