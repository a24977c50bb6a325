/* test_kvd_harness.h - what the kvd tests share: start the real kvd binary
 * of this build (<build>/kvd, or $DS4_KVD) in the foreground with a notify
 * pipe, wait for READY or its death with deadlines (poll on the pipe and on
 * a pidfd, never sleeps), stop it, kill it, look at directories. */
#ifndef DS4_TEST_KVD_HARNESS_H
#define DS4_TEST_KVD_HARNESS_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kvd/kv_client.h"

typedef struct kvd_proc {
    pid_t pid;
    int pidfd;
    int status;          /* waitpid status once reaped */
    int reaped;
    char run_dir[PATH_MAX];
    char inst[64];
    char ep[PATH_MAX + 16];
} kvd_proc;

/* Called in the child before exec (e.g. to mount a small tmpfs); returns
 * 0 to go on, else the child exits with that status. */
typedef int (*kvd_pre_exec)(void *arg);

static inline int kvd_bin(char *out, size_t len)
{
    const char *env = getenv("DS4_KVD");
    if (env && *env) {
        snprintf(out, len, "%s", env);
        return 0;
    }
    char self[2048];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return -1;
    self[n] = 0;
    for (int up = 0; up < 2; up++) {
        char *s = strrchr(self, '/');
        if (!s)
            return -1;
        *s = 0;
    }
    snprintf(out, len, "%s/kvd", self);
    return access(out, X_OK);
}

static inline long long kvd_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reap the child if it has exited (or wait up to timeout_ms for it). */
static inline int kvd_wait_exit(kvd_proc *p, int timeout_ms)
{
    if (p->reaped)
        return 0;
    long long end = kvd_now_ms() + timeout_ms;
    for (;;) {
        pid_t r = waitpid(p->pid, &p->status, WNOHANG);
        if (r == p->pid) {
            p->reaped = 1;
            if (p->pidfd >= 0)
                close(p->pidfd);
            p->pidfd = -1;
            return 0;
        }
        long long left = end - kvd_now_ms();
        if (left <= 0)
            return -1;
        struct pollfd pf = {p->pidfd, POLLIN, 0};
        poll(&pf, 1, (int)left);
    }
}

/* Start kvd for instance inst in run_dir with storage dir kvdir plus extra
 * args (NULL-terminated, may be NULL) and env ("NAME=value", may be NULL).
 * 0 once READY; -1 if it failed or died first (p->status then tells). */
static inline int kvd_start_ex(kvd_proc *p, const char *run_dir, const char *inst,
                               const char *kvdir, const char *const *extra,
                               const char *const *env, kvd_pre_exec pre, void *pre_arg)
{
    char bin[PATH_MAX];
    memset(p, 0, sizeof *p);
    p->pidfd = -1;
    snprintf(p->run_dir, sizeof p->run_dir, "%s", run_dir);
    snprintf(p->inst, sizeof p->inst, "%s", inst);
    snprintf(p->ep, sizeof p->ep, "ipc://%s/kvd.sock", run_dir);
    if (kvd_bin(bin, sizeof bin)) {
        fprintf(stderr, "kvd binary not found (%s): build it first\n", bin);
        return -1;
    }
    int nfd[2];
    if (pipe2(nfd, O_CLOEXEC))
        return -1;
    char fdarg[16];
    snprintf(fdarg, sizeof fdarg, "%d", nfd[1]);
    const char *argv[48];
    int a = 0;
    argv[a++] = bin;
    argv[a++] = "--foreground";
    argv[a++] = "--run-dir";
    argv[a++] = run_dir;
    argv[a++] = "--instance";
    argv[a++] = inst;
    argv[a++] = "--notify-fd";
    argv[a++] = fdarg;
    argv[a++] = "--kv-disk-dir";
    argv[a++] = kvdir;
    argv[a++] = "--log-level";
    argv[a++] = getenv("DS4_TEST_VERBOSE") ? "debug" : "error";
    for (int i = 0; extra && extra[i] && a < 46; i++)
        argv[a++] = extra[i];
    argv[a] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        close(nfd[0]);
        fcntl(nfd[1], F_SETFD, 0); /* the notify fd survives exec */
        for (int i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (pre) {
            int rc = pre(pre_arg);
            if (rc)
                _exit(rc);
        }
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(nfd[1]);
    p->pid = pid;
    p->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    /* READY <pid>\n, or EOF when it dies first */
    char buf[64];
    size_t n = 0;
    long long end = kvd_now_ms() + 30000;
    int ok = 0;
    while (n < sizeof buf - 1) {
        long long left = end - kvd_now_ms();
        struct pollfd pf = {nfd[0], POLLIN, 0};
        if (left <= 0 || poll(&pf, 1, (int)left) <= 0)
            break;
        ssize_t r = read(nfd[0], buf + n, sizeof buf - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
        buf[n] = 0;
        if (strchr(buf, '\n')) {
            char want[32];
            snprintf(want, sizeof want, "READY %d\n", (int)pid);
            ok = !strcmp(buf, want);
            break;
        }
    }
    close(nfd[0]);
    if (!ok) {
        if (kvd_wait_exit(p, 5000)) {
            kill(pid, SIGKILL);
            kvd_wait_exit(p, 5000);
        }
        return -1;
    }
    return 0;
}

static inline int kvd_start(kvd_proc *p, const char *run_dir, const char *inst,
                            const char *kvdir, const char *const *extra)
{
    return kvd_start_ex(p, run_dir, inst, kvdir, extra, NULL, NULL, NULL);
}

/* SIGTERM and wait (SIGKILL after 10 s). Returns the exit status or -1. */
static inline int kvd_stop(kvd_proc *p)
{
    if (!p->pid)
        return -1;
    if (!p->reaped)
        kill(p->pid, SIGTERM);
    if (kvd_wait_exit(p, 10000)) {
        kill(p->pid, SIGKILL);
        kvd_wait_exit(p, 5000);
        return -1;
    }
    return WIFEXITED(p->status) ? WEXITSTATUS(p->status) : -1;
}

static inline void kvd_kill9(kvd_proc *p)
{
    if (p->pid && !p->reaped) {
        kill(p->pid, SIGKILL);
        kvd_wait_exit(p, 10000);
    }
}

/* A client of p with a request deadline. */
static inline kv_client *kvd_client(const kvd_proc *p, int timeout_ms, int force_inline)
{
    kvc_opts o = {.endpoint = p->ep, .instance = p->inst, .timeout_ms = timeout_ms,
                  .force_inline = force_inline, .verify = 1};
    char err[256];
    kv_client *c = kvc_open(&o, err, sizeof err);
    if (!c)
        fprintf(stderr, "kvc_open: %s\n", err);
    return c;
}

static inline int kvd_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(path);
}
static inline void kvd_rm_rf(const char *dir)
{
    nftw(dir, kvd_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Entries in dir whose name starts with prefix (hidden ones only if the
 * prefix asks for them). */
static inline int kvd_count(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (e->d_name[0] == '.' && prefix[0] != '.')
            continue;
        n += !strncmp(e->d_name, prefix, strlen(prefix));
    }
    closedir(d);
    return n;
}

/* Shared-memory segments of an instance still present in /dev/shm. */
static inline int kvd_count_shm(const char *inst, const char *purpose_prefix)
{
    char pre[160];
    snprintf(pre, sizeof pre, "ds4-%u-%s-%s", (unsigned)getuid(), inst, purpose_prefix);
    return kvd_count("/dev/shm", pre);
}

/* xorshift64*, seeded */
static inline uint32_t kvd_rnd(uint64_t *s, uint32_t n)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return (uint32_t)((*s * 0x2545F4914F6CDD1Dull) >> 33) % n;
}

#endif
