/* daemon.h - the skeleton every ds4 daemon runs on.
 *
 * Lifecycle:
 *   ds4d_init()   options (common block + the daemon's table), log level,
 *                 run directory (0700), pidfile lock, detach unless
 *                 --foreground (the parent exits 0 only once the child is
 *                 READY, 1 if it failed), signals blocked and routed to a
 *                 signalfd, process title, stats segment.
 *                 Call it first in main(): before any thread and before
 *                 zmq_ctx_new() (it may fork, and it blocks signals so
 *                 every later thread inherits the mask).
 *   ds4d_bind()   bind sockets (stale ipc socket files are removed).
 *   ds4d_ready()  "READY <pid>\n" to --notify-fd (then closed), logged.
 *   loop:         while (ds4d_running(&d)) { ds4d_poll(&d, items, n, ms); ... }
 *                 SIGTERM/SIGINT -> DRAINING (a second one -> STOPPED at
 *                 once); the daemon calls ds4d_stop() when its in-flight work
 *                 is done, and ds4d_poll() stops it anyway --drain-ms after
 *                 the signal. SIGHUP -> reload hook; SIGUSR1/SIGUSR2 -> log
 *                 level up/down; SIGCHLD and SIGPIPE are ignored.
 *   ds4d_fini()   removes the pidfile, bound ipc socket files and the stats
 *                 segment; returns the exit status (0). */
#ifndef DS4_DAEMON_H
#define DS4_DAEMON_H

#include "opts.h"
#include "stats.h"

#include <signal.h>
#include <stdint.h>
#include <zmq.h>

enum ds4d_state { DS4D_RUNNING = 0, DS4D_DRAINING = 1, DS4D_STOPPED = 2 };

#define DS4D_PATH_MAX 512
#define DS4D_POLL_MAX 63
#define DS4D_BOUND_MAX 8

typedef struct ds4d ds4d;
typedef void (*ds4d_hook)(ds4d *d, void *arg);

struct ds4d {
    char name[32];
    struct ds4_common_opts opt;
    char run_dir[DS4D_PATH_MAX];
    char pidfile[DS4D_PATH_MAX];
    int pid_fd;      /* holds the flock for the daemon's lifetime */
    int sig_fd;      /* signalfd, polled by ds4d_poll */
    int detach_fd;   /* pipe to the waiting parent (detached mode), or -1 */
    int state;       /* enum ds4d_state */
    uint64_t drain_deadline_ns;
    ds4_stats stats; /* disabled (no-op) if the segment could not be made */
    ds4d_hook on_reload, on_drain;
    void *hook_arg;
    char bound[DS4D_BOUND_MAX][DS4D_PATH_MAX];
    int nbound;
    sigset_t old_mask;
};

/* Result codes of ds4d_init. */
enum { DS4D_INIT_OK = 0, DS4D_INIT_HELP = 1, DS4D_INIT_FAIL = -1 };

/* Start a daemon called name (also its pidfile, socket and stats name).
 * extra: the daemon's own option table (NULL-terminated) or NULL; usage:
 * text after the program name in --help (NULL for "[options]").
 * DS4D_INIT_OK: run; DS4D_INIT_HELP: help printed, exit 0;
 * DS4D_INIT_FAIL: reason logged, exit 1. */
int ds4d_init(ds4d *d, const char *name, int argc, char **argv,
              const struct ds4_opt *extra, const char *usage);

/* Callbacks from ds4d_poll: on_reload at SIGHUP, on_drain when draining
 * starts (close listening sockets, refuse new work). */
void ds4d_set_hooks(ds4d *d, ds4d_hook on_reload, ds4d_hook on_drain,
                    void *arg);

/* Endpoint of daemon `name`: --endpoint when name is this daemon, else env
 * DS4_<NAME>_ENDPOINT, else "ipc://<run-dir>/<name>.sock". 0, or -1 with a
 * logged message (bad scheme, ipc path longer than sun_path). */
int ds4d_endpoint(const ds4d *d, const char *name, char *out, size_t outlen);

/* zmq_bind sock to endpoint; for ipc:// a leftover socket file nobody
 * listens on is removed first (a live listener is an error), and the file
 * is removed again by ds4d_fini. 0, or -1 with a logged message. */
int ds4d_bind(ds4d *d, void *sock, const char *endpoint);

/* Tell the supervisor we are ready. 0, or -1 if the notify fd failed. */
int ds4d_ready(ds4d *d);

/* zmq_poll over the caller's items plus the signal fd; signals are handled
 * before it returns. Returns how many caller items have revents (0 on
 * timeout or when only a signal arrived), -1 on a poll error (logged).
 * The timeout (ms, -1 = forever) is shortened to the drain deadline. */
int ds4d_poll(ds4d *d, zmq_pollitem_t *items, int nitems, long timeout_ms);

/* Not yet STOPPED. */
int ds4d_running(const ds4d *d);
/* Draining after SIGTERM/SIGINT (stop accepting, finish in-flight work). */
int ds4d_draining(const ds4d *d);
/* Enter DRAINING as if SIGTERM arrived (e.g. from a control message). */
void ds4d_drain(ds4d *d, const char *why);
/* In-flight work is done: STOPPED. */
void ds4d_stop(ds4d *d);

/* Release everything; returns the process exit status. */
int ds4d_fini(ds4d *d);

/* Helpers, exposed for tests and tools. */

/* Take an exclusive flock on path and write our pid into it. A file left
 * by a dead process (unlocked) is reused. On a live holder: -1, errno
 * EEXIST, message "already running as pid N". *fd keeps the lock. */
int ds4d_pidfile_lock(const char *path, int *fd, char *err, size_t errlen);
/* Rewrite the pid in a locked pidfile (after fork). */
int ds4d_pidfile_write(int fd);
/* Pid recorded in a pidfile that is currently locked, else 0. */
long ds4d_pidfile_owner(const char *path);
/* The run directory: opt, else $DS4_RUN_DIR, else $XDG_RUNTIME_DIR/ds4,
 * else /tmp/ds4-$UID. */
int ds4d_run_dir_resolve(const char *opt, char *out, size_t outlen);
/* Create the run directory (mode 0700) if needed; it must be a directory
 * owned by us and not writable by group or others. 0, or -1 with a message. */
int ds4d_run_dir_make(const char *dir, char *err, size_t errlen);
/* In a child forked from a daemon, before exec: unblock signals and reset
 * SIGPIPE, so the new program starts with default signal handling. */
void ds4d_child_reset(void);

#endif
