/* test_daemon.c - the daemon skeleton end to end. The test binary re-runs
 * itself as a tiny daemon ("minid", argv[1] == "child") that answers "ping"
 * on a ZeroMQ REP socket. Checked: READY on --notify-fd (no sleeps: every
 * wait is a poll on a pipe with a failure bound), pidfile and single
 * instance, stale pidfile reuse, SIGHUP reload hook, SIGUSR1/SIGUSR2
 * verbosity, SIGTERM drain (prompt when idle, bounded by --drain-ms when
 * work hangs, immediate on a second SIGTERM), cleanup of pidfile, socket
 * and stats segment, detaching without --foreground, option errors. */
#include "daemon.h"
#include "log.h"
#include "stats.h"
#include "test.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

/* ---- the mini daemon --------------------------------------------------- */

/* SIGHUP hook: one debug line (visible only at debug) then a forced line. */
static void mini_reload(ds4d *d, void *arg)
{
    ds4_debug("hook debug");
    ds4_log_force(DS4_LOG_INFO, "hook done");
}

/* Drain hook: say so (the loop decides when in-flight work is over). */
static void mini_drain(ds4d *d, void *arg)
{
    ds4_log(DS4_LOG_INFO, "drain hook");
}

/* Answer one request on the REP socket. */
static void mini_serve(ds4d *d, void *rep)
{
    char buf[64];
    int n = zmq_recv(rep, buf, sizeof buf, ZMQ_DONTWAIT);
    if (n < 0)
        return;
    ds4_stats_add(&d->stats, DS4S_frames_in, 1);
    zmq_send(rep, "pong", 4, 0);
}

static int mini_main(int argc, char **argv)
{
    static int hang;
    const struct ds4_opt extra[] = {
        {"hang", 0, DS4_OPT_FLAG, &hang, NULL, "never finish in-flight work"},
        {NULL},
    };
    ds4d d;
    int rc = ds4d_init(&d, "minid", argc, argv, extra, NULL);
    if (rc != DS4D_INIT_OK)
        return rc > 0 ? 0 : 1;
    ds4d_set_hooks(&d, mini_reload, mini_drain, NULL);
    void *ctx = zmq_ctx_new();
    void *rep = zmq_socket(ctx, ZMQ_REP);
    int linger = 0;
    zmq_setsockopt(rep, ZMQ_LINGER, &linger, sizeof linger);
    char ep[DS4D_PATH_MAX];
    if (ds4d_endpoint(&d, "minid", ep, sizeof ep) || ds4d_bind(&d, rep, ep)) {
        zmq_close(rep);
        zmq_ctx_term(ctx);
        ds4d_fini(&d);
        return 1;
    }
    ds4d_ready(&d);
    while (ds4d_running(&d)) {
        zmq_pollitem_t it[1] = {{rep, 0, ZMQ_POLLIN, 0}};
        if (ds4d_poll(&d, it, 1, -1) < 0)
            break;
        if (it[0].revents & ZMQ_POLLIN)
            mini_serve(&d, rep);
        if (ds4d_draining(&d) && !hang)
            ds4d_stop(&d);
    }
    zmq_close(rep);
    zmq_ctx_term(ctx);
    return ds4d_fini(&d);
}

/* ---- harness ----------------------------------------------------------- */

static char top_dir[200], run_dir[256], inst[32], self[4096];

struct proc {
    pid_t pid;
    int out_fd;    /* child's stdout+stderr */
    int notify_fd; /* read end of --notify-fd, or -1 */
    char out[1 << 16];
    size_t len;
    int eof;
};

/* Fork and exec ourselves as a mini daemon with common args plus extra. */
static void spawn(struct proc *p, int notify, const char *const *extra)
{
    int o[2], nfd[2] = {-1, -1};
    memset(p, 0, sizeof *p);
    p->notify_fd = -1;
    if (pipe2(o, O_CLOEXEC) || (notify && pipe(nfd))) {
        CHECK(0);
        return;
    }
    fcntl(nfd[0], F_SETFD, FD_CLOEXEC);
    char fdarg[16];
    snprintf(fdarg, sizeof fdarg, "%d", nfd[1]);
    const char *argv[32] = {self, "child", "--run-dir", run_dir, "--instance", inst};
    int argc = 6;
    if (notify) {
        argv[argc++] = "--notify-fd";
        argv[argc++] = fdarg;
    }
    for (; extra && *extra && argc < 30; extra++)
        argv[argc++] = *extra;
    argv[argc] = NULL;
    p->pid = fork();
    if (p->pid == 0) {
        dup2(o[1], 1);
        dup2(o[1], 2);
        execv(self, (char *const *)argv);
        _exit(127);
    }
    close(o[1]);
    p->out_fd = o[0];
    if (notify) {
        close(nfd[1]);
        p->notify_fd = nfd[0];
    }
}

/* Occurrences of needle in the captured output. */
static int count(const struct proc *p, const char *needle)
{
    int n = 0;
    for (const char *s = p->out; (s = strstr(s, needle)); s++)
        n++;
    return n;
}

/* Read output until needle occurs times times, or EOF, or ms elapse. */
static int wait_out(struct proc *p, const char *needle, int times, int ms)
{
    uint64_t end = ds4_now_ns() + (uint64_t)ms * 1000000ull;
    while (!(needle && count(p, needle) >= times) && !p->eof) {
        uint64_t now = ds4_now_ns();
        if (now >= end)
            break;
        struct pollfd pf = {p->out_fd, POLLIN, 0};
        if (poll(&pf, 1, (int)((end - now) / 1000000 + 1)) <= 0)
            continue;
        ssize_t n = read(p->out_fd, p->out + p->len, sizeof p->out - 1 - p->len);
        if (n <= 0)
            p->eof = 1;
        else
            p->len += (size_t)n;
        p->out[p->len] = 0;
    }
    return needle ? count(p, needle) >= times : p->eof;
}

/* Wait for "READY <pid>\n" on the notify pipe; returns the pid or 0. */
static long wait_ready(struct proc *p, int ms)
{
    char buf[64];
    size_t n = 0;
    uint64_t end = ds4_now_ns() + (uint64_t)ms * 1000000ull;
    while (n < sizeof buf - 1 && !memchr(buf, '\n', n)) {
        uint64_t now = ds4_now_ns();
        struct pollfd pf = {p->notify_fd, POLLIN, 0};
        if (now >= end || poll(&pf, 1, (int)((end - now) / 1000000 + 1)) < 0)
            break;
        ssize_t r = read(p->notify_fd, buf + n, sizeof buf - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = 0;
    long pid = 0;
    if (sscanf(buf, "READY %ld\n", &pid) != 1)
        fprintf(stderr, "no READY (got [%s]); output:\n%s\n", buf, p->out);
    /* The daemon closes the fd after READY: EOF follows. */
    char c;
    struct pollfd pf = {p->notify_fd, POLLIN, 0};
    if (pid && poll(&pf, 1, 5000) == 1)
        CHECK(read(p->notify_fd, &c, 1) == 0);
    return pid;
}

/* Wait for the child's exit (EOF on its output first); exit status or -1. */
static int wait_exit(struct proc *p, int ms)
{
    wait_out(p, NULL, 0, ms);
    if (!p->eof) {
        fprintf(stderr, "child %ld did not exit; output:\n%s\n", (long)p->pid, p->out);
        kill(p->pid, SIGKILL);
    }
    int st = -1;
    waitpid(p->pid, &st, 0);
    close(p->out_fd);
    if (p->notify_fd >= 0)
        close(p->notify_fd);
    return p->eof && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static const char *path_in(const char *leaf)
{
    static char buf[4][512];
    static int k;
    char *b = buf[k++ % 4];
    snprintf(b, 512, "%s/%s", run_dir, leaf);
    return b;
}

/* Send ping over ZeroMQ, expect pong within the bound. */
static int ping(void)
{
    void *ctx = zmq_ctx_new();
    void *req = zmq_socket(ctx, ZMQ_REQ);
    int linger = 0, tmo = 5000;
    zmq_setsockopt(req, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(req, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    char ep[600], buf[16];
    snprintf(ep, sizeof ep, "ipc://%s", path_in("minid.sock"));
    int ok = zmq_connect(req, ep) == 0 && zmq_send(req, "ping", 4, 0) == 4 &&
             zmq_recv(req, buf, sizeof buf, 0) == 4 && !memcmp(buf, "pong", 4);
    zmq_close(req);
    zmq_ctx_term(ctx);
    return ok;
}

/* ---- tests ------------------------------------------------------------- */

static void test_lifecycle(void)
{
    struct proc a, b;
    const char *fg[] = {"--foreground", "--drain-ms", "3000", NULL};
    spawn(&a, 1, fg);
    long pid = wait_ready(&a, 10000);
    CHECK(pid == (long)a.pid);
    CHECK(wait_out(&a, "READY", 1, 5000));
    CHECK(ds4d_pidfile_owner(path_in("minid.pid")) == pid);
    struct stat st;
    CHECK(stat(path_in("minid.sock"), &st) == 0 && S_ISSOCK(st.st_mode));
    CHECK(stat(run_dir, &st) == 0 && (st.st_mode & 0777) == 0700);

    ds4_stats s;
    char err[256];
    CHECK(ds4_stats_attach(&s, inst, "minid", err, sizeof err) == 0);
    CHECK(ds4_stats_get(&s, DS4S_ready) == 1 && ds4_stats_get(&s, DS4S_draining) == 0);
    CHECK(s.shm.hdr && s.shm.hdr->creator_pid == (uint32_t)pid);

    CHECK(ping());
    CHECK(ping());
    CHECK(ds4_stats_get(&s, DS4S_frames_in) == 2);

    /* A second instance on the same run dir is refused. */
    spawn(&b, 1, fg);
    CHECK(wait_exit(&b, 10000) == 1);
    char want[128];
    snprintf(want, sizeof want, "already running as pid %ld", pid);
    CHECKF(strstr(b.out, want) != NULL, "output: %s", b.out);
    CHECK(ds4d_pidfile_owner(path_in("minid.pid")) == pid);

    /* Verbosity: the hook's debug line appears only after SIGUSR1. */
    kill(a.pid, SIGHUP);
    CHECK(wait_out(&a, "hook done", 1, 5000));
    CHECK(count(&a, "hook debug") == 0);
    kill(a.pid, SIGUSR1);
    CHECK(wait_out(&a, "log level debug", 1, 5000));
    kill(a.pid, SIGHUP);
    CHECK(wait_out(&a, "hook done", 2, 5000));
    CHECK(count(&a, "hook debug") == 1);
    CHECK(ds4_stats_get(&s, DS4S_log_level) == DS4_LOG_DEBUG);
    kill(a.pid, SIGUSR2); /* one at a time: pending signals coalesce */
    CHECK(wait_out(&a, "log level info", 1, 5000));
    kill(a.pid, SIGUSR2);
    CHECK(wait_out(&a, "log level warn", 1, 5000));
    kill(a.pid, SIGHUP);
    CHECK(wait_out(&a, "hook done", 3, 5000));
    CHECK(count(&a, "hook debug") == 1);
    CHECK(ds4_stats_get(&s, DS4S_reloads) == 3);
    snprintf(want, sizeof want, "minid[%ld]: info: -: log level debug\n", pid);
    CHECKF(strstr(a.out, want) != NULL, "format: %s", a.out);
    kill(a.pid, SIGCHLD); /* ignored */
    CHECK(ping());

    /* SIGTERM while idle: prompt exit 0, everything removed. */
    uint64_t t0 = ds4_now_ns();
    kill(a.pid, SIGTERM);
    CHECK(wait_exit(&a, 10000) == 0);
    uint64_t ms = (ds4_now_ns() - t0) / 1000000;
    CHECKF(ms < 2500, "idle drain took %llu ms", (unsigned long long)ms);
    CHECK(strstr(a.out, "draining") != NULL);
    CHECK(access(path_in("minid.pid"), F_OK) != 0);
    CHECK(access(path_in("minid.sock"), F_OK) != 0);
    ds4_stats_close(&s, 0);
    CHECK(ds4_stats_attach(&s, inst, "minid", err, sizeof err) == -1);
}

static void test_drain_bound(void)
{
    struct proc a;
    const char *hang[] = {"--foreground", "--hang", "--drain-ms", "300", NULL};
    spawn(&a, 1, hang);
    CHECK(wait_ready(&a, 10000) == (long)a.pid);
    uint64_t t0 = ds4_now_ns();
    kill(a.pid, SIGTERM);
    CHECK(wait_out(&a, "drain hook", 1, 5000));
    CHECK(wait_exit(&a, 10000) == 0);
    uint64_t ms = (ds4_now_ns() - t0) / 1000000;
    CHECKF(ms >= 300 && ms < 3300, "bounded drain took %llu ms", (unsigned long long)ms);
    CHECK(strstr(a.out, "drain deadline") != NULL);
    CHECK(access(path_in("minid.pid"), F_OK) != 0);

    /* A second SIGTERM during a long drain stops at once. */
    const char *longd[] = {"--foreground", "--hang", "--drain-ms", "600000", NULL};
    spawn(&a, 1, longd);
    CHECK(wait_ready(&a, 10000) == (long)a.pid);
    t0 = ds4_now_ns();
    kill(a.pid, SIGTERM);
    CHECK(wait_out(&a, "draining", 1, 5000));
    kill(a.pid, SIGINT);
    CHECK(wait_exit(&a, 10000) == 0);
    ms = (ds4_now_ns() - t0) / 1000000;
    CHECKF(ms < 5000, "second signal took %llu ms", (unsigned long long)ms);
    CHECK(strstr(a.out, "stopping now") != NULL);
}

/* A unix socket bound at path; listening (live) or closed (a dead file). */
static int unix_socket_at(const char *path, int live)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    if (live) {
        CHECK(listen(fd, 1) == 0);
        return fd;
    }
    close(fd);
    return -1;
}

static void test_stale_and_detach(void)
{
    unix_socket_at(path_in("minid.sock"), 0);
    /* A pidfile nobody holds (crashed daemon) and a dead socket file. */
    FILE *f = fopen(path_in("minid.pid"), "w");
    if (f) {
        fputs("999999\n", f);
        fclose(f);
    }
    struct proc a;
    const char *nofg[] = {"--drain-ms", "2000", NULL};
    spawn(&a, 1, nofg); /* detaches: a.pid is the waiting parent */
    long pid = wait_ready(&a, 10000);
    CHECK(pid > 0 && pid != (long)a.pid);
    int st = -1;
    waitpid(a.pid, &st, 0); /* the parent exits 0 once the child is ready */
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(ds4d_pidfile_owner(path_in("minid.pid")) == pid);
    CHECK(ping());
    kill((pid_t)pid, SIGTERM);
    wait_out(&a, NULL, 0, 10000); /* the daemon holds our pipe until exit */
    CHECK(a.eof);
    close(a.out_fd);
    close(a.notify_fd);
    CHECK(access(path_in("minid.pid"), F_OK) != 0);

    /* Someone else listening on our socket path: refuse, do not steal it. */
    int lfd = unix_socket_at(path_in("minid.sock"), 1);
    const char *fg[] = {"--foreground", NULL};
    spawn(&a, 1, fg);
    CHECK(wait_exit(&a, 10000) == 1);
    CHECKF(strstr(a.out, "in use by another process") != NULL, "%s", a.out);
    close(lfd);
    unlink(path_in("minid.sock"));
}

static void test_bad_options(void)
{
    struct proc a;
    const char *bogus[] = {"--foreground", "--bogus", NULL};
    spawn(&a, 0, bogus);
    CHECK(wait_exit(&a, 10000) == 1);
    CHECK(strstr(a.out, "unknown option --bogus") != NULL);
    const char *lvl[] = {"--foreground", "--log-level", "loud", NULL};
    spawn(&a, 0, lvl);
    CHECK(wait_exit(&a, 10000) == 1);
    CHECK(strstr(a.out, "unknown level \"loud\"") != NULL);
    const char *badfd[] = {"--foreground", "--notify-fd", "999", NULL};
    spawn(&a, 0, badfd);
    CHECK(wait_exit(&a, 10000) == 1);
    CHECK(strstr(a.out, "--notify-fd 999") != NULL);
    const char *badinst[] = {"--foreground", "--instance", "a-b", NULL};
    spawn(&a, 0, badinst);
    CHECK(wait_exit(&a, 10000) == 1);
    const char *help[] = {"--help", NULL};
    spawn(&a, 0, help);
    CHECK(wait_exit(&a, 10000) == 0);
    CHECK(strstr(a.out, "--drain-ms N") && strstr(a.out, "--hang"));
    CHECK(access(path_in("minid.pid"), F_OK) != 0); /* nothing was started */
}

static void test_helpers(void)
{
    char out[600], err[600];
    /* pidfile: live holder refused with its pid, stale one reused. */
    const char *pf = path_in("unit.pid");
    int fd = -1, fd2 = -1;
    CHECK(ds4d_pidfile_lock(pf, &fd, err, sizeof err) == 0);
    pid_t kid = fork();
    if (kid == 0) {
        char e[600];
        int f2;
        int rc = ds4d_pidfile_lock(pf, &f2, e, sizeof e);
        char want[64];
        snprintf(want, sizeof want, "already running as pid %ld", (long)getppid());
        _exit(rc == -1 && errno == EEXIST && strstr(e, want) ? 0 : 1);
    }
    int st = -1;
    waitpid(kid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(ds4d_pidfile_owner(pf) == (long)getpid());
    close(fd); /* "crash": lock released, file left behind */
    CHECK(access(pf, F_OK) == 0 && ds4d_pidfile_owner(pf) == 0);
    CHECK(ds4d_pidfile_lock(pf, &fd2, err, sizeof err) == 0);
    close(fd2);
    unlink(pf);

    /* Run directory resolution order. */
    setenv("DS4_RUN_DIR", "/x/env", 1);
    setenv("XDG_RUNTIME_DIR", "/x/xdg", 1);
    CHECK(ds4d_run_dir_resolve("/x/opt", out, sizeof out) == 0 && !strcmp(out, "/x/opt"));
    CHECK(ds4d_run_dir_resolve(NULL, out, sizeof out) == 0 && !strcmp(out, "/x/env"));
    unsetenv("DS4_RUN_DIR");
    CHECK(ds4d_run_dir_resolve(NULL, out, sizeof out) == 0 && !strcmp(out, "/x/xdg/ds4"));
    unsetenv("XDG_RUNTIME_DIR");
    char want[64];
    snprintf(want, sizeof want, "/tmp/ds4-%u", (unsigned)getuid());
    CHECK(ds4d_run_dir_resolve("", out, sizeof out) == 0 && !strcmp(out, want));
    CHECK(ds4d_run_dir_make(path_in("sub/dir"), err, sizeof err) == 0);
    CHECK(ds4d_run_dir_make("/proc/nope", err, sizeof err) == -1 && err[0]);
    chmod(path_in("sub/dir"), 0777); /* others could swap our sockets */
    CHECK(ds4d_run_dir_make(path_in("sub/dir"), err, sizeof err) == -1 &&
          strstr(err, "writable by others"));
    rmdir(path_in("sub/dir"));
    rmdir(path_in("sub"));

    /* Endpoints: own --endpoint, environment, default, too long. */
    static ds4d d;
    memset(&d, 0, sizeof d);
    snprintf(d.name, sizeof d.name, "kvd");
    snprintf(d.run_dir, sizeof d.run_dir, "/run/ds4");
    d.opt.endpoint = "tcp://127.0.0.1:7000";
    CHECK(ds4d_endpoint(&d, "kvd", out, sizeof out) == 0 && !strcmp(out, d.opt.endpoint));
    CHECK(ds4d_endpoint(&d, "engined", out, sizeof out) == 0 &&
          !strcmp(out, "ipc:///run/ds4/engined.sock"));
    setenv("DS4_ENGINED_ENDPOINT", "tcp://10.0.0.2:9000", 1);
    CHECK(ds4d_endpoint(&d, "engined", out, sizeof out) == 0 &&
          !strcmp(out, "tcp://10.0.0.2:9000"));
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    ds4_log_set_fd(devnull); /* the next two errors are expected */
    setenv("DS4_ENGINED_ENDPOINT", "udp://x", 1);
    CHECK(ds4d_endpoint(&d, "engined", out, sizeof out) == -1);
    unsetenv("DS4_ENGINED_ENDPOINT");
    memset(d.run_dir, 'a', 200);
    d.run_dir[0] = '/';
    d.run_dir[200] = 0;
    CHECK(ds4d_endpoint(&d, "engined", out, sizeof out) == -1);
    ds4_log_set_fd(2);
    close(devnull);
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "child"))
        return mini_main(argc - 1, argv + 1);
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return 1;
    self[n] = 0;
    snprintf(top_dir, sizeof top_dir, "/tmp/ds4-test-daemon-XXXXXX");
    if (!mkdtemp(top_dir))
        return 1;
    /* The first daemon creates the run directory itself (mode 0700). */
    snprintf(run_dir, sizeof run_dir, "%s/run", top_dir);
    snprintf(inst, sizeof inst, "tdmn%ld", (long)getpid());
    ds4_log_init("test_daemon");
    ds4_log_set_level(DS4_LOG_ERROR);
    unsetenv("DS4_RUN_DIR");
    unsetenv("DS4_MINID_ENDPOINT");
    test_lifecycle();
    test_drain_bound();
    test_stale_and_detach();
    test_bad_options();
    test_helpers();
    rmdir(run_dir);
    rmdir(top_dir);
    return test_main_end("test_daemon");
}
