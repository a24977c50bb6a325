/* daemon.c - the daemon skeleton: options, run directory, pidfile,
 * detaching, signals through a signalfd inside zmq_poll, readiness, bounded
 * drain and cleanup. */
#include "daemon.h"

#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>


/* ---- run directory ---------------------------------------------------- */

/* Pick the run directory from option, environment or defaults. */
int ds4d_run_dir_resolve(const char *opt, char *out, size_t outlen)
{
    const char *env = getenv("DS4_RUN_DIR");
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    int n;
    if (opt && *opt)
        n = snprintf(out, outlen, "%s", opt);
    else if (env && *env)
        n = snprintf(out, outlen, "%s", env);
    else if (xdg && *xdg)
        n = snprintf(out, outlen, "%s/ds4", xdg);
    else
        n = snprintf(out, outlen, "/tmp/ds4-%u", (unsigned)getuid());
    return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

/* mkdir -p with mode 0700 for the directories we create. */
static int mkdir_p(const char *dir)
{
    char tmp[DS4D_PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", dir) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* Create the run directory; refuse one owned or writable by someone else,
 * because sockets and pidfiles in it would be theirs to replace. */
int ds4d_run_dir_make(const char *dir, char *err, size_t errlen)
{
    if (mkdir_p(dir) < 0) {
        ds4_seterr(err, errlen, "cannot create run directory %s: %s", dir,
               strerror(errno));
        return -1;
    }
    struct stat st;
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
        ds4_seterr(err, errlen, "run directory %s is not a directory", dir);
        return -1;
    }
    if (st.st_uid != getuid()) {
        ds4_seterr(err, errlen, "run directory %s is owned by uid %u, not us",
               dir, (unsigned)st.st_uid);
        return -1;
    }
    if (st.st_mode & 022) {
        ds4_seterr(err, errlen, "run directory %s is writable by others (mode %03o)",
               dir, (unsigned)(st.st_mode & 0777));
        return -1;
    }
    return 0;
}

/* ---- pidfile ---------------------------------------------------------- */

/* Replace the file's contents with our pid. */
int ds4d_pidfile_write(int fd)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)n, 0) != n)
        return -1;
    return 0;
}

/* Read a pid number from an open pidfile; 0 if unreadable. */
static long read_pid(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    char *end;
    long pid = strtol(buf, &end, 10);
    return pid > 0 && (*end == '\n' || *end == 0) ? pid : 0;
}

/* Lock, check the locked file is still the one at path (a previous owner
 * may have unlinked it between our open and our flock), write our pid. */
int ds4d_pidfile_lock(const char *path, int *fdp, char *err, size_t errlen)
{
    for (int attempt = 0; attempt < 5; attempt++) {
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0) {
            ds4_seterr(err, errlen, "cannot open pidfile %s: %s", path,
                   strerror(errno));
            return -1;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
            int e = errno;
            long pid = read_pid(fd);
            close(fd);
            if (e == EWOULDBLOCK) {
                ds4_seterr(err, errlen, "already running as pid %ld (pidfile %s)",
                       pid, path);
                errno = EEXIST;
            } else {
                ds4_seterr(err, errlen, "cannot lock pidfile %s: %s", path,
                       strerror(e));
                errno = e;
            }
            return -1;
        }
        struct stat a, b;
        if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_ino == b.st_ino &&
            a.st_dev == b.st_dev) {
            if (ds4d_pidfile_write(fd) < 0) {
                ds4_seterr(err, errlen, "cannot write pidfile %s: %s", path,
                       strerror(errno));
                close(fd);
                return -1;
            }
            *fdp = fd;
            return 0;
        }
        close(fd); /* raced with an unlink: try the new file */
    }
    ds4_seterr(err, errlen, "pidfile %s keeps changing under us", path);
    errno = EAGAIN;
    return -1;
}

/* Owner pid of a pidfile if some process holds its lock. */
long ds4d_pidfile_owner(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    long pid = 0;
    if (flock(fd, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK)
        pid = read_pid(fd);
    close(fd);
    return pid;
}

/* ---- signals ---------------------------------------------------------- */

/* Block the signals we handle and open a signalfd for them. */
static int setup_signals(ds4d *d)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &set, &d->old_mask) < 0)
        return -1;
    signal(SIGPIPE, SIG_IGN); /* a dead peer is an error code, not a death */
    d->sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    return d->sig_fd < 0 ? -1 : 0;
}

/* Unblock everything and restore SIGPIPE for a child about to exec. */
void ds4d_child_reset(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigprocmask(SIG_SETMASK, &set, NULL);
    signal(SIGPIPE, SIG_DFL);
}

/* Enter DRAINING with a deadline. */
void ds4d_drain(ds4d *d, const char *why)
{
    if (d->state != DS4D_RUNNING)
        return;
    d->state = DS4D_DRAINING;
    d->drain_deadline_ns = ds4_now_ns() + d->opt.drain_ms * 1000000ull;
    ds4_stats_set(&d->stats, DS4S_draining, 1);
    ds4_log_force(DS4_LOG_INFO, "draining (%s), at most %llu ms", why,
                  (unsigned long long)d->opt.drain_ms);
    if (d->on_drain)
        d->on_drain(d, d->hook_arg);
}

/* Change verbosity by delta and say so whatever the new level. */
static void bump_level(ds4d *d, int delta)
{
    ds4_log_set_level(ds4_log_get_level() + delta);
    ds4_stats_set(&d->stats, DS4S_log_level, (uint64_t)ds4_log_get_level());
    ds4_log_force(DS4_LOG_INFO, "log level %s",
                  ds4_log_level_name(ds4_log_get_level()));
}

/* Act on one delivered signal. */
static void handle_signal(ds4d *d, int sig)
{
    switch (sig) {
    case SIGTERM:
    case SIGINT:
        if (d->state == DS4D_RUNNING) {
            ds4d_drain(d, sig == SIGTERM ? "SIGTERM" : "SIGINT");
        } else if (d->state == DS4D_DRAINING) {
            ds4_log_force(DS4_LOG_WARN, "second %s: stopping now",
                          sig == SIGTERM ? "SIGTERM" : "SIGINT");
            d->state = DS4D_STOPPED;
        }
        break;
    case SIGHUP:
        ds4_log_force(DS4_LOG_INFO, "SIGHUP: reload");
        ds4_stats_add(&d->stats, DS4S_reloads, 1);
        if (d->on_reload)
            d->on_reload(d, d->hook_arg);
        break;
    case SIGUSR1:
        bump_level(d, +1);
        break;
    case SIGUSR2:
        bump_level(d, -1);
        break;
    default: /* SIGCHLD: children are reaped by whoever spawned them */
        break;
    }
}

/* Drain the signalfd. */
static void read_signals(ds4d *d)
{
    struct signalfd_siginfo si;
    while (read(d->sig_fd, &si, sizeof si) == (ssize_t)sizeof si)
        handle_signal(d, (int)si.ssi_signo);
}

/* ---- init ------------------------------------------------------------- */

/* Parse the command line into d->opt and the daemon's table. */
static int parse_options(ds4d *d, int argc, char **argv,
                         const struct ds4_opt *extra, const char *usage)
{
    static const struct ds4_opt empty[] = {{NULL}};
    struct ds4_opt common[DS4_COMMON_OPTS_N];
    ds4_common_opts_table(&d->opt, common);
    const struct ds4_opt *tables[] = {common, extra ? extra : empty, NULL};
    char err[256];
    if (ds4_opts_defaults(tables, err, sizeof err)) {
        ds4_log_force(DS4_LOG_ERROR, "bad default: %s", err);
        return DS4D_INIT_FAIL;
    }
    int rc = ds4_opts_parse(tables, argc, argv, NULL, NULL, err, sizeof err);
    if (rc == DS4_OPTS_HELP) {
        ds4_opts_help(stdout, d->name, usage, tables);
        return DS4D_INIT_HELP;
    }
    if (rc != DS4_OPTS_OK) {
        ds4_log_force(DS4_LOG_ERROR, "%s", err);
        return DS4D_INIT_FAIL;
    }
    int level;
    if (ds4_log_level_parse(d->opt.log_level, &level)) {
        ds4_log_force(DS4_LOG_ERROR, "--log-level: unknown level \"%s\"",
                      d->opt.log_level);
        return DS4D_INIT_FAIL;
    }
    ds4_log_set_level(level);
    return DS4D_INIT_OK;
}

/* Check the instance name and notify fd before touching the filesystem. */
static int check_options(ds4d *d)
{
    char name[DS4_SHM_NAME_MAX], err[256];
    if (ds4_shm_name(name, sizeof name, d->opt.instance, "x", err, sizeof err)) {
        ds4_log_force(DS4_LOG_ERROR, "--instance: %s", err);
        return -1;
    }
    if (d->opt.notify_fd >= 0) {
        if (d->opt.notify_fd <= 2 || fcntl(d->opt.notify_fd, F_GETFD) < 0) {
            ds4_log_force(DS4_LOG_ERROR, "--notify-fd %d is not an open fd above 2",
                          d->opt.notify_fd);
            return -1;
        }
        fcntl(d->opt.notify_fd, F_SETFD, FD_CLOEXEC);
    }
    return 0;
}

/* Make the run directory and take the pidfile. */
static int take_run_dir(ds4d *d)
{
    char err[DS4D_PATH_MAX + 128];
    if (ds4d_run_dir_resolve(d->opt.run_dir, d->run_dir, sizeof d->run_dir) ||
        ds4d_run_dir_make(d->run_dir, err, sizeof err)) {
        ds4_log_force(DS4_LOG_ERROR, "%s",
                      d->run_dir[0] ? err : "run directory path too long");
        return -1;
    }
    int n = d->opt.pidfile
                ? snprintf(d->pidfile, sizeof d->pidfile, "%s", d->opt.pidfile)
                : snprintf(d->pidfile, sizeof d->pidfile, "%s/%s.pid",
                           d->run_dir, d->name);
    if (n < 0 || (size_t)n >= sizeof d->pidfile) {
        ds4_log_force(DS4_LOG_ERROR, "pidfile path too long");
        return -1;
    }
    if (ds4d_pidfile_lock(d->pidfile, &d->pid_fd, err, sizeof err)) {
        ds4_log_force(DS4_LOG_ERROR, "%s", err);
        return -1;
    }
    return 0;
}

/* Fork; the parent waits for the child's READY byte and exits with 0 (ready)
 * or 1 (the child failed before READY). The child starts a new session. */
static int detach(ds4d *d)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        ds4_log_force(DS4_LOG_ERROR, "pipe: %s", strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        ds4_log_force(DS4_LOG_ERROR, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid > 0) {
        close(p[1]);
        char c = 0;
        ssize_t n;
        do
            n = read(p[0], &c, 1);
        while (n < 0 && errno == EINTR);
        _exit(n == 1 && c == 'R' ? 0 : 1);
    }
    close(p[0]);
    d->detach_fd = p[1];
    setsid();
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        dup2(null, 0);
        close(null);
    }
    if (ds4d_pidfile_write(d->pid_fd) < 0) {
        ds4_log_force(DS4_LOG_ERROR, "cannot rewrite pidfile: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* Create the stats segment; failure only disables stats. */
static void open_stats(ds4d *d)
{
    char err[256];
    if (ds4_stats_create(&d->stats, d->opt.instance, d->name, err, sizeof err)) {
        ds4_log_force(DS4_LOG_WARN, "stats disabled: %s", err);
        return;
    }
    ds4_stats_set(&d->stats, DS4S_start_time_seconds, (uint64_t)time(NULL));
    ds4_stats_set(&d->stats, DS4S_log_level, (uint64_t)ds4_log_get_level());
}

/* Bring the process up to the point where the daemon can bind sockets. */
int ds4d_init(ds4d *d, const char *name, int argc, char **argv,
              const struct ds4_opt *extra, const char *usage)
{
    memset(d, 0, sizeof *d);
    d->pid_fd = d->sig_fd = d->detach_fd = -1;
    d->stats.shm.fd = -1;
    snprintf(d->name, sizeof d->name, "%s", name);
    ds4_log_init(d->name);
    int rc = parse_options(d, argc, argv, extra, usage);
    if (rc != DS4D_INIT_OK)
        return rc;
    if (check_options(d) || take_run_dir(d))
        return DS4D_INIT_FAIL;
    if (!d->opt.foreground && detach(d))
        return DS4D_INIT_FAIL;
    if (setup_signals(d)) {
        ds4_log_force(DS4_LOG_ERROR, "signals: %s", strerror(errno));
        return DS4D_INIT_FAIL;
    }
    prctl(PR_SET_NAME, d->name, 0, 0, 0);
    open_stats(d);
    ds4_log(DS4_LOG_DEBUG, "started: run dir %s, instance %s, pidfile %s",
            d->run_dir, d->opt.instance, d->pidfile);
    return DS4D_INIT_OK;
}

/* Register the reload and drain callbacks. */
void ds4d_set_hooks(ds4d *d, ds4d_hook on_reload, ds4d_hook on_drain,
                    void *arg)
{
    d->on_reload = on_reload;
    d->on_drain = on_drain;
    d->hook_arg = arg;
}

/* ---- endpoints -------------------------------------------------------- */

/* Check the scheme and, for ipc://, that the path fits in sun_path. */
static int endpoint_ok(const char *ep)
{
    if (!strncmp(ep, "ipc://", 6)) {
        size_t max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;
        if (strlen(ep + 6) == 0 || strlen(ep + 6) > max) {
            ds4_log(DS4_LOG_ERROR, "endpoint %s: ipc path must be 1-%zu bytes",
                    ep, max);
            return -1;
        }
        return 0;
    }
    if (!strncmp(ep, "tcp://", 6) || !strncmp(ep, "inproc://", 9))
        return 0;
    ds4_log(DS4_LOG_ERROR, "endpoint %s: only ipc://, tcp:// or inproc://", ep);
    return -1;
}

/* Resolve where daemon `name` listens. */
int ds4d_endpoint(const ds4d *d, const char *name, char *out, size_t outlen)
{
    char var[64];
    size_t i = 0;
    i += (size_t)snprintf(var, sizeof var, "DS4_");
    for (const char *p = name; *p && i < sizeof var - 10; p++) {
        char c = *p;
        var[i++] = (c >= 'a' && c <= 'z') ? (char)(c - 32)
                   : ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) ? c : '_';
    }
    snprintf(var + i, sizeof var - i, "_ENDPOINT");
    const char *env = getenv(var);
    int n;
    if (d->opt.endpoint && !strcmp(name, d->name))
        n = snprintf(out, outlen, "%s", d->opt.endpoint);
    else if (env && *env)
        n = snprintf(out, outlen, "%s", env);
    else
        n = snprintf(out, outlen, "ipc://%s/%s.sock", d->run_dir, name);
    if (n < 0 || (size_t)n >= outlen) {
        ds4_log(DS4_LOG_ERROR, "endpoint for %s too long", name);
        return -1;
    }
    return endpoint_ok(out);
}

/* 1 if something accepts connections on the unix socket at path. */
static int socket_live(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int live = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return live;
}

/* Remove a dead ipc socket file so bind can succeed. */
static int clear_ipc_path(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return 0;
    if (!S_ISSOCK(st.st_mode)) {
        ds4_log(DS4_LOG_ERROR, "%s exists and is not a socket", path);
        return -1;
    }
    if (socket_live(path)) {
        ds4_log(DS4_LOG_ERROR, "%s is in use by another process", path);
        return -1;
    }
    ds4_log(DS4_LOG_DEBUG, "removing stale socket %s", path);
    unlink(path);
    return 0;
}

/* Bind a zmq socket, clearing a stale ipc socket file first. */
int ds4d_bind(ds4d *d, void *sock, const char *endpoint)
{
    if (endpoint_ok(endpoint))
        return -1;
    int ipc = !strncmp(endpoint, "ipc://", 6);
    if (ipc && clear_ipc_path(endpoint + 6))
        return -1;
    if (zmq_bind(sock, endpoint) != 0) {
        ds4_log(DS4_LOG_ERROR, "bind %s: %s", endpoint, zmq_strerror(zmq_errno()));
        return -1;
    }
    if (ipc && d->nbound < DS4D_BOUND_MAX)
        snprintf(d->bound[d->nbound++], DS4D_PATH_MAX, "%s", endpoint + 6);
    ds4_log(DS4_LOG_INFO, "listening on %s", endpoint);
    return 0;
}

/* ---- readiness, loop, shutdown ---------------------------------------- */

/* Write a whole buffer, retrying on EINTR. */
static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Announce readiness to the supervisor and the detached parent. */
int ds4d_ready(ds4d *d)
{
    int rc = 0;
    char line[32];
    int n = snprintf(line, sizeof line, "READY %ld\n", (long)getpid());
    if (d->opt.notify_fd >= 0) {
        if (write_all(d->opt.notify_fd, line, (size_t)n) < 0) {
            ds4_log_force(DS4_LOG_ERROR, "notify fd %d: %s", d->opt.notify_fd,
                          strerror(errno));
            rc = -1;
        }
        close(d->opt.notify_fd);
        d->opt.notify_fd = -1;
    }
    if (d->detach_fd >= 0) {
        if (write_all(d->detach_fd, "R", 1) < 0)
            rc = -1;
        close(d->detach_fd);
        d->detach_fd = -1;
    }
    ds4_stats_set(&d->stats, DS4S_ready, 1);
    ds4_log_force(DS4_LOG_INFO, "READY %ld", (long)getpid());
    return rc;
}

/* Milliseconds to wait: the caller's timeout bounded by the drain deadline. */
static long poll_timeout(const ds4d *d, long timeout_ms)
{
    if (d->state != DS4D_DRAINING)
        return timeout_ms;
    uint64_t now = ds4_now_ns();
    long left = now >= d->drain_deadline_ns
                    ? 0
                    : (long)((d->drain_deadline_ns - now + 999999) / 1000000);
    return timeout_ms < 0 || left < timeout_ms ? left : timeout_ms;
}

/* Stop if the drain deadline has passed. */
static void check_deadline(ds4d *d)
{
    if (d->state == DS4D_DRAINING && ds4_now_ns() >= d->drain_deadline_ns) {
        ds4_log_force(DS4_LOG_WARN, "drain deadline (%llu ms) passed, stopping "
                      "with work in flight",
                      (unsigned long long)d->opt.drain_ms);
        d->state = DS4D_STOPPED;
    }
}

/* Poll the caller's items and the signalfd; handle signals. */
int ds4d_poll(ds4d *d, zmq_pollitem_t *items, int nitems, long timeout_ms)
{
    zmq_pollitem_t all[DS4D_POLL_MAX + 1];
    if (nitems < 0 || nitems > DS4D_POLL_MAX) {
        ds4_log(DS4_LOG_ERROR, "ds4d_poll: %d items (max %d)", nitems,
                DS4D_POLL_MAX);
        return -1;
    }
    check_deadline(d);
    if (d->state == DS4D_STOPPED)
        return 0;
    if (nitems)
        memcpy(all, items, (size_t)nitems * sizeof *items);
    all[nitems] = (zmq_pollitem_t){.socket = NULL, .fd = d->sig_fd,
                                   .events = ZMQ_POLLIN};
    int rc = zmq_poll(all, nitems + 1, poll_timeout(d, timeout_ms));
    if (rc < 0) {
        if (zmq_errno() == EINTR)
            return 0;
        ds4_log(DS4_LOG_ERROR, "zmq_poll: %s", zmq_strerror(zmq_errno()));
        return -1;
    }
    int ready = 0;
    for (int i = 0; i < nitems; i++) {
        items[i].revents = all[i].revents;
        ready += all[i].revents != 0;
    }
    if (all[nitems].revents)
        read_signals(d);
    check_deadline(d);
    return ready;
}

/* Whether the loop should go on. */
int ds4d_running(const ds4d *d)
{
    return d->state != DS4D_STOPPED;
}

/* Whether we are draining. */
int ds4d_draining(const ds4d *d)
{
    return d->state == DS4D_DRAINING;
}

/* In-flight work done (or a fatal condition): leave the loop. */
void ds4d_stop(ds4d *d)
{
    d->state = DS4D_STOPPED;
}

/* Remove the pidfile, sockets and stats segment; restore signals. */
int ds4d_fini(ds4d *d)
{
    for (int i = 0; i < d->nbound; i++)
        unlink(d->bound[i]);
    d->nbound = 0;
    ds4_stats_close(&d->stats, 1);
    if (d->pid_fd >= 0) {
        unlink(d->pidfile); /* while still locked: nobody can take it half-way */
        close(d->pid_fd);
        d->pid_fd = -1;
    }
    if (d->sig_fd >= 0) {
        close(d->sig_fd);
        d->sig_fd = -1;
        sigprocmask(SIG_SETMASK, &d->old_mask, NULL);
    }
    if (d->detach_fd >= 0) {
        close(d->detach_fd);
        d->detach_fd = -1;
    }
    ds4_log(DS4_LOG_INFO, "exiting");
    return 0;
}
