/* log.c - fixed-size, single-write log lines with a per-thread request id. */
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char log_name[32] = "ds4";
static int log_fd = 2;
static int log_level = DS4_LOG_INFO;
static __thread char log_reqid[DS4_LOG_REQID_MAX + 1];

static const char *const level_names[] = {"error", "warn", "info", "debug",
                                          "trace"};

/* Copy the program name used in every line's prefix. */
void ds4_log_init(const char *name)
{
    if (!name || !*name)
        name = "ds4";
    snprintf(log_name, sizeof log_name, "%s", name);
}

/* Redirect output (tests point this at a pipe). */
void ds4_log_set_fd(int fd)
{
    __atomic_store_n(&log_fd, fd, __ATOMIC_RELAXED);
}

/* Change verbosity; relaxed atomics because threads read it concurrently. */
void ds4_log_set_level(int level)
{
    if (level < DS4_LOG_ERROR)
        level = DS4_LOG_ERROR;
    if (level > DS4_LOG_TRACE)
        level = DS4_LOG_TRACE;
    __atomic_store_n(&log_level, level, __ATOMIC_RELAXED);
}

/* Current verbosity. */
int ds4_log_get_level(void)
{
    return __atomic_load_n(&log_level, __ATOMIC_RELAXED);
}

/* Whether a message at level passes the current filter. */
int ds4_log_enabled(int level)
{
    return level <= ds4_log_get_level();
}

/* Name of a level, "?" when out of range. */
const char *ds4_log_level_name(int level)
{
    if (level < 0 || level > DS4_LOG_TRACE)
        return "?";
    return level_names[level];
}

/* Parse "info", "INFO", "warning" or a digit 0-4. */
int ds4_log_level_parse(const char *s, int *level)
{
    if (!s)
        return -1;
    if (s[0] >= '0' && s[0] <= '4' && s[1] == 0) {
        *level = s[0] - '0';
        return 0;
    }
    for (int i = 0; i <= DS4_LOG_TRACE; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *level = i;
            return 0;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *level = DS4_LOG_WARN;
        return 0;
    }
    return -1;
}

/* Set this thread's request id (truncated copy, NULL or "" clears). */
void ds4_log_set_reqid(const char *reqid)
{
    if (!reqid) {
        log_reqid[0] = 0;
        return;
    }
    snprintf(log_reqid, sizeof log_reqid, "%s", reqid);
}

/* This thread's request id or NULL. */
const char *ds4_log_get_reqid(void)
{
    return log_reqid[0] ? log_reqid : NULL;
}

/* Replace control bytes so untrusted text cannot forge extra log lines. */
static void sanitize(char *p, int n)
{
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x20 || c == 0x7f)
            p[i] = (c == '\t') ? ' ' : '?';
    }
}

/* Format prefix and message into buf, truncating with "..."; returns length
 * including the final newline. */
int ds4_log_format(char *buf, int size, int level, const char *reqid,
                   const char *fmt, va_list ap)
{
    if (size < 2)
        return 0;
    if (!reqid || !*reqid)
        reqid = "-";
    int avail = size - 1; /* keep room for '\n' */
    int n = snprintf(buf, (size_t)avail + 1, "%s[%ld]: %s: %.*s: ", log_name,
                     (long)getpid(), ds4_log_level_name(level),
                     DS4_LOG_REQID_MAX, reqid);
    if (n < 0)
        n = 0;
    if (n > avail)
        n = avail;
    sanitize(buf, n); /* the request id may come from a peer */
    int m = vsnprintf(buf + n, (size_t)(avail - n) + 1, fmt, ap);
    if (m < 0)
        m = 0;
    if (m > avail - n) {
        m = avail - n;
        if (avail >= 3)
            memcpy(buf + avail - 3, "...", 3);
    }
    sanitize(buf + n, m);
    n += m;
    buf[n++] = '\n';
    return n;
}

/* Write the whole line with one write(2); retry only on EINTR or a short
 * write (which cannot happen for a pipe under PIPE_BUF). */
static void write_line(const char *buf, int n)
{
    int fd = __atomic_load_n(&log_fd, __ATOMIC_RELAXED);
    int saved = errno;
    while (n > 0) {
        ssize_t w = write(fd, buf, (size_t)n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        buf += w;
        n -= (int)w;
    }
    errno = saved;
}

/* Format and write unconditionally. */
static void emit(int level, const char *reqid, const char *fmt, va_list ap)
{
    char buf[DS4_LOG_LINE_MAX];
    int n = ds4_log_format(buf, sizeof buf, level, reqid, fmt, ap);
    write_line(buf, n);
}

/* Log with an explicit request id. */
void ds4_vlog_req(int level, const char *reqid, const char *fmt, va_list ap)
{
    if (!ds4_log_enabled(level))
        return;
    emit(level, reqid, fmt, ap);
}

/* Log with an explicit request id. */
void ds4_log_req(int level, const char *reqid, const char *fmt, ...)
{
    if (!ds4_log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    emit(level, reqid, fmt, ap);
    va_end(ap);
}

/* Log with this thread's request id. */
void ds4_log(int level, const char *fmt, ...)
{
    if (!ds4_log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    emit(level, ds4_log_get_reqid(), fmt, ap);
    va_end(ap);
}

/* Log whatever the level filter says (lifecycle events). */
void ds4_log_force(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit(level, ds4_log_get_reqid(), fmt, ap);
    va_end(ap);
}
