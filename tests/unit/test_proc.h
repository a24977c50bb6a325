/* test_proc.h - run a program of this build as a child with pipes on its
 * stdin, stdout and stderr, wait for text on its output or for its exit,
 * always with deadlines (poll), never with sleeps. Header-only, for the
 * tests that drive binaries and scripts (test_ds4cli, test_ops). */
#ifndef DS4_TEST_PROC_H
#define DS4_TEST_PROC_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct tp_proc {
    pid_t pid;
    int in, out, err;      /* our ends; -1 once closed */
    char *obuf, *ebuf;     /* everything read so far, NUL-terminated */
    size_t olen, elen;
    int status;            /* waitpid status once reaped */
    int reaped;
} tp_proc;

static inline long long tp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* <build> of this test binary (<build>/tests/test_x), into out. */
static inline int tp_build_dir(char *out, size_t len)
{
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
    if (strlen(self) >= len)
        return -1;
    memcpy(out, self, strlen(self) + 1);
    return 0;
}

/* Start argv[0] with argv; env: NULL-terminated "NAME=value" to add. */
static inline int tp_spawn(tp_proc *p, char *const argv[], char *const env[])
{
    int pi[2], po[2], pe[2];
    memset(p, 0, sizeof *p);
    p->in = p->out = p->err = -1;
    if (pipe2(pi, O_CLOEXEC) || pipe2(po, O_CLOEXEC) || pipe2(pe, O_CLOEXEC))
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(pi[0], 0);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        for (int i = 0; env && env[i]; i++)
            putenv(env[i]);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        execv(argv[0], argv);
        _exit(127);
    }
    close(pi[0]);
    close(po[1]);
    close(pe[1]);
    p->pid = pid;
    p->in = pi[1];
    p->out = po[0];
    p->err = pe[0];
    p->obuf = calloc(1, 1);
    p->ebuf = calloc(1, 1);
    return 0;
}

static inline void tp_append(char **b, size_t *n, const char *s, size_t k)
{
    *b = realloc(*b, *n + k + 1);
    memcpy(*b + *n, s, k);
    *n += k;
    (*b)[*n] = 0;
}

/* Read what is available on stdout/stderr within ms; 0, or -1 when both
 * are closed. */
static inline int tp_pump(tp_proc *p, int ms)
{
    struct pollfd pf[2] = {{p->out, POLLIN, 0}, {p->err, POLLIN, 0}};
    if (p->out < 0 && p->err < 0)
        return -1;
    int n = poll(pf, 2, ms);
    if (n <= 0)
        return 0;
    char buf[65536];
    for (int i = 0; i < 2; i++) {
        if (pf[i].fd < 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        ssize_t r = read(pf[i].fd, buf, sizeof buf);
        if (r > 0) {
            if (i == 0)
                tp_append(&p->obuf, &p->olen, buf, (size_t)r);
            else
                tp_append(&p->ebuf, &p->elen, buf, (size_t)r);
        } else if (r == 0 || errno != EINTR) {
            close(pf[i].fd);
            if (i == 0)
                p->out = -1;
            else
                p->err = -1;
        }
    }
    return 0;
}

/* Wait until stdout (which 1) or stderr (2) contains needle. 0 or -1. */
static inline int tp_wait_for(tp_proc *p, int which, const char *needle, int timeout_ms)
{
    long long end = tp_now_ms() + timeout_ms;
    for (;;) {
        if (strstr(which == 1 ? p->obuf : p->ebuf, needle))
            return 0;
        long long left = end - tp_now_ms();
        if (left <= 0 || tp_pump(p, (int)(left < 100 ? left : 100)) < 0)
            return strstr(which == 1 ? p->obuf : p->ebuf, needle) ? 0 : -1;
    }
}

/* The process exists and is not a zombie (a daemon that exited is
 * reparented to init, which may take a while to reap it). */
static inline int tp_alive(pid_t pid)
{
    char path[64], buf[512];
    if (pid <= 0 || kill(pid, 0) != 0)
        return 0;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *rp = strrchr(buf, ')');
    return !(rp && rp[1] == ' ' && rp[2] == 'Z');
}

/* Wait until pid is gone (or a zombie); 0, or -1 after timeout_ms. */
static inline int tp_wait_gone(pid_t pid, int timeout_ms)
{
    long long end = tp_now_ms() + timeout_ms;
    while (tp_alive(pid)) {
        if (tp_now_ms() >= end)
            return -1;
        poll(NULL, 0, 10);
    }
    return 0;
}

static inline void tp_close_stdin(tp_proc *p)
{
    if (p->in >= 0)
        close(p->in);
    p->in = -1;
}

/* Read all output and reap the child within timeout_ms; on timeout it is
 * killed. Returns the exit code (128+sig if signalled), or -1 on timeout. */
static inline int tp_finish(tp_proc *p, int timeout_ms)
{
    long long end = tp_now_ms() + timeout_ms;
    tp_close_stdin(p);
    int timed_out = 0;
    while (p->out >= 0 || p->err >= 0) {
        long long left = end - tp_now_ms();
        if (left <= 0) {
            timed_out = 1;
            break;
        }
        tp_pump(p, (int)(left < 100 ? left : 100));
    }
    while (!p->reaped) {
        pid_t r = waitpid(p->pid, &p->status, WNOHANG);
        if (r == p->pid) {
            p->reaped = 1;
            break;
        }
        if (r < 0)
            break;
        if (tp_now_ms() >= end) {
            timed_out = 1;
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &p->status, 0);
            p->reaped = 1;
            break;
        }
        struct pollfd none;
        poll(&none, 0, 10); /* bounded wait for the exit after its pipes closed */
    }
    if (p->out >= 0)
        close(p->out), p->out = -1;
    if (p->err >= 0)
        close(p->err), p->err = -1;
    if (timed_out)
        return -1;
    return WIFEXITED(p->status) ? WEXITSTATUS(p->status) : 128 + WTERMSIG(p->status);
}

static inline void tp_free(tp_proc *p)
{
    if (!p->reaped && p->pid > 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &p->status, 0);
        p->reaped = 1;
    }
    if (p->in >= 0)
        close(p->in);
    if (p->out >= 0)
        close(p->out);
    if (p->err >= 0)
        close(p->err);
    free(p->obuf);
    free(p->ebuf);
    memset(p, 0, sizeof *p);
}

#endif
