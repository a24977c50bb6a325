/* test_engined_life.c - engined's life cycle and its shared weights
 * manifest:
 *   - a cold start publishes the manifest; after kill -9 with a job in
 *     flight the client sees its peer disconnect (no GEN_DONE ever comes),
 *     a new engined on the same endpoint re-attaches the manifest (no cold
 *     preparation) and serves the same client socket (DEALER reconnects);
 *   - a stale manifest is rebuilt: the file was modified (mtime), the
 *     segment is corrupt (checksum), or it was left PUBLISHING by a
 *     creator that died;
 *   - SIGTERM drains: new jobs get `unavailable`, the job still running at
 *     the drain deadline ends with GEN_DONE error `unavailable`, exit 0;
 *   - forced decoding is `forbidden` without --test-mode;
 *   - a model that cannot be loaded: no READY, exit status 1. */
#include <sys/mman.h>

#include "engined_test_util.h"
#include "engined/eng_weights.h"

static void *CTX;

/* DS4_TEST_VERBOSE=1: timestamps of the phases on stderr */
static void phase(const char *what)
{
    static uint64_t t0;
    if (!t0)
        t0 = t_now_ms();
    if (getenv("DS4_TEST_VERBOSE"))
        fprintf(stderr, "[%6.2f s] %s\n", (double)(t_now_ms() - t0) / 1e3, what);
}

static json_t *stats_info(void *sock)
{
    ds4w_msg m;
    if (t_call(sock, DS4W_T_STATS_GET, NULL, NULL, -1, &m, 10000))
        return NULL;
    json_t *i = json_incref(json_object_get(m.json, "info"));
    ds4w_msg_close(&m);
    return i;
}

static int reattached(void *sock, char *why, size_t wl)
{
    json_t *i = stats_info(sock);
    int r = json_is_true(json_object_get(i, "weights_reattached"));
    const char *w = json_string_value(json_object_get(i, "weights_stale"));
    snprintf(why, wl, "%s", w ? w : "");
    json_decref(i);
    return r;
}

/* A short greedy job must complete. */
static void check_serves(void *sock, uint64_t seed)
{
    int32_t p[8];
    t_prompt(p, 8, seed);
    tstream st;
    tstream *ss[1] = {&st};
    CHECK(t_submit(sock, &st, "{\"max_tokens\":2,\"temperature\":0}", p, 8, NULL, 0) == 0);
    CHECK(t_pump(sock, ss, 1, 60000, NULL) == 0 && st.n == 2 && !st.bad);
    t_stream_free(&st);
}

/* Wait for a disconnect event on the monitor of a client socket. */
static int wait_disconnect(void *mon, int ms)
{
    uint64_t end = t_now_ms() + (uint64_t)ms;
    while (t_now_ms() < end) {
        zmq_pollitem_t it = {mon, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, (long)(end - t_now_ms())) <= 0)
            continue;
        zmq_msg_t a, b;
        zmq_msg_init(&a);
        zmq_msg_init(&b);
        int ok = zmq_msg_recv(&a, mon, 0) >= 6 && zmq_msg_more(&a) && zmq_msg_recv(&b, mon, 0) >= 0;
        uint16_t ev = 0;
        if (ok)
            memcpy(&ev, zmq_msg_data(&a), 2);
        zmq_msg_close(&a);
        zmq_msg_close(&b);
        if (ok && ev == ZMQ_EVENT_DISCONNECTED)
            return 0;
    }
    return -1;
}

static void test_kill_restart_manifest(void)
{
    tdaemon d;
    if (t_daemon_start(&d, NULL, "--test-mode", (char *)NULL)) {
        CHECK(0);
        t_daemon_cleanup(&d);
        return;
    }
    void *sock = t_connect(CTX, &d);
    char why[128];
    phase("cold start");
    CHECK(!reattached(sock, why, sizeof why) && strcmp(why, "absent") == 0);
    /* monitor the client's connection, start a long job, kill -9 */
    CHECK(zmq_socket_monitor(sock, "inproc://engt-mon", ZMQ_EVENT_DISCONNECTED) == 0);
    void *mon = zmq_socket(CTX, ZMQ_PAIR);
    CHECK(zmq_connect(mon, "inproc://engt-mon") == 0);
    int32_t p[8];
    t_prompt(p, 8, 2);
    tstream st;
    tstream *ss[1] = {&st};
    CHECK(t_submit(sock, &st, "{\"max_tokens\":500}", p, 8, NULL, 0) == 0);
    t_pump_until(sock, ss, 1, &st, 2, 60000);
    CHECK(st.accepted && st.n >= 2 && !st.done);
    phase("job running: kill -9");
    int status = t_daemon_signal_wait(&d, SIGKILL, 10000);
    CHECK(status >= 0 && WIFSIGNALED(status));
    CHECKF(wait_disconnect(mon, 10000) == 0, "the client saw no disconnect");
    t_pump(sock, ss, 1, 300, NULL);
    CHECK(!st.done); /* no GEN_DONE from a dead engine */
    t_stream_free(&st);
    zmq_socket_monitor(sock, NULL, 0);
    zmq_close(mon);
    /* a new engined on the same run dir and instance: re-attaches */
    tdaemon d2;
    if (t_daemon_start(&d2, &d, "--test-mode", (char *)NULL) == 0) {
        phase("restarted");
        CHECKF(reattached(sock, why, sizeof why), "restart did not re-attach: %s", why);
        check_serves(sock, 3); /* the same DEALER, reconnected */
        int st2 = t_daemon_signal_wait(&d2, SIGTERM, 30000);
        CHECKF(st2 == 0, "status 0x%x", st2);
        /* the model file changed (mtime): rebuilt */
        struct timespec ts[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
        CHECK(utimensat(AT_FDCWD, T_MODEL, ts, 0) == 0);
        CHECK(t_daemon_start(&d2, &d, "--test-mode", (char *)NULL) == 0);
        phase("mtime");
        CHECK(!reattached(sock, why, sizeof why) && strstr(why, "changed") != NULL);
        CHECK(t_daemon_signal_wait(&d2, SIGTERM, 30000) == 0);
        /* a corrupt segment: rebuilt */
        char name[256];
        CHECK(ds4_shm_name(name, sizeof name, d.inst, ENG_WEIGHTS_PURPOSE, NULL, 0) == 0);
        int fd = shm_open(name, O_RDWR, 0);
        CHECK(fd >= 0);
        if (fd >= 0) {
            CHECK(pwrite(fd, "garbage!", 8, DS4_SHM_HEADER_SIZE + 300) == 8);
            close(fd);
        }
        CHECK(t_daemon_start(&d2, &d, "--test-mode", (char *)NULL) == 0);
        phase("corrupt");
        CHECK(!reattached(sock, why, sizeof why) && strcmp(why, "invalid") == 0);
        CHECK(t_daemon_signal_wait(&d2, SIGTERM, 30000) == 0);
        /* left PUBLISHING by a creator that died half-way: rebuilt */
        ds4_shm_unlink(name);
        pid_t c = fork();
        if (c == 0) {
            ds4_shm sh;
            _exit(ds4_shm_create(&sh, name, ENG_WEIGHTS_PAYLOAD, DS4_SHM_F_CHECKSUM, NULL, 0) ? 1
                                                                                             : 0);
        }
        int cs = -1;
        CHECK(c > 0 && waitpid(c, &cs, 0) == c && WIFEXITED(cs) && WEXITSTATUS(cs) == 0);
        CHECK(t_daemon_start(&d2, &d, "--test-mode", (char *)NULL) == 0);
        phase("publishing");
        CHECK(!reattached(sock, why, sizeof why) && strcmp(why, "incompletely published") == 0);
        CHECK(t_daemon_signal_wait(&d2, SIGTERM, 30000) == 0);
        CHECK(t_daemon_start(&d2, &d, "--test-mode", (char *)NULL) == 0);
        CHECK(reattached(sock, why, sizeof why));
        CHECK(t_daemon_signal_wait(&d2, SIGTERM, 30000) == 0);
    } else
        CHECK(0);
    zmq_close(sock);
    t_daemon_cleanup(&d);
}

/* SIGTERM with a job that cannot finish within --drain-ms. */
static void test_drain(void)
{
    tdaemon d;
    if (t_daemon_start(&d, NULL, "--drain-ms", "1500", (char *)NULL)) {
        CHECK(0);
        t_daemon_cleanup(&d);
        return;
    }
    void *sock = t_connect(CTX, &d);
    ds4w_msg m;
    CHECK(t_call(sock, DS4W_T_PING, NULL, NULL, -1, &m, 10000) == 0);
    CHECK(m.type == DS4W_T_PONG && !json_is_true(json_object_get(m.json, "test_mode")));
    ds4w_msg_close(&m);
    int32_t p[8], f[2] = {5, 6};
    t_prompt(p, 8, 9);
    /* forced decoding outside test mode */
    tstream st, late;
    tstream *ss[2] = {&st, &late};
    CHECK(t_submit(sock, &st, "{}", p, 8, f, 2) == 0);
    CHECK(t_pump(sock, ss, 1, 30000, NULL) == 0 && st.error == DS4W_E_FORBIDDEN && !st.accepted);
    t_stream_free(&st);
    CHECK(t_submit(sock, &st, "{\"max_tokens\":1000}", p, 8, NULL, 0) == 0);
    t_pump_until(sock, ss, 1, &st, 1, 60000);
    CHECK(st.accepted && st.n >= 1 && !st.done);
    phase("drain: SIGTERM");
    kill(d.pid, SIGTERM);
    /* while draining: refused (the PING round trip proves the signal was
     * handled: it is answered from the same loop) */
    CHECK(t_call(sock, DS4W_T_PING, NULL, NULL, -1, &m, 10000) == 0);
    ds4w_msg_close(&m);
    CHECK(t_submit(sock, &late, "{}", p, 8, NULL, 0) == 0);
    CHECK(t_pump(sock, ss, 2, 60000, NULL) == 0);
    CHECK(late.error == DS4W_E_UNAVAILABLE);
    CHECK(st.done && !st.bad && strcmp(t_finish(&st), "error") == 0);
    json_t *e = json_object_get(st.done_json, "error");
    CHECK(json_integer_value(json_object_get(e, "code")) == DS4W_E_UNAVAILABLE);
    CHECK(t_usage(&st, "completion_tokens") == st.n && st.n >= 1);
    int status = t_daemon_signal_wait(&d, 0, 30000);
    CHECKF(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "status 0x%x", status);
    t_stream_free(&st);
    t_stream_free(&late);
    zmq_close(sock);
    t_daemon_cleanup(&d);
}

/* A model that cannot be loaded: exit 1, no READY. */
static void test_bad_model(void)
{
    char bad[256];
    snprintf(bad, sizeof bad, "/tmp/ds4-engtest-bad-%d.gguf", (int)getpid());
    FILE *f = fopen(bad, "wb");
    if (f) {
        fputs("GGUF but not really", f);
        fclose(f);
    }
    char saved[256];
    snprintf(saved, sizeof saved, "%s", T_MODEL);
    snprintf(T_MODEL, sizeof T_MODEL, "%s", bad);
    tdaemon d;
    phase("bad model");
    CHECK(t_daemon_start(&d, NULL, (char *)NULL) != 0);
    phase("bad model done");
    char *log = t_daemon_log(&d);
    CHECK(strstr(log, "cannot use the model") != NULL || strstr(log, "cannot open") != NULL);
    free(log);
    t_daemon_cleanup(&d);
    snprintf(T_MODEL, sizeof T_MODEL, "%s", saved);
    unlink(bad);
}

int main(void)
{
    if (t_make_model(7)) {
        CHECK(0);
        return test_main_end("test_engined_life");
    }
    CTX = zmq_ctx_new();
    test_kill_restart_manifest();
    test_drain();
    test_bad_model();
    zmq_ctx_term(CTX);
    unlink(T_MODEL);
    return test_main_end("test_engined_life");
}
