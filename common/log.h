/* log.h - one-line logging for every daemon and tool.
 *
 * Each line is "name[pid]: level: request-id: message\n" on stderr (or the
 * fd set by ds4_log_set_fd), written with a single write(2) of at most
 * DS4_LOG_LINE_MAX bytes so lines from concurrent processes sharing a pipe
 * never interleave mid-line (PIPE_BUF). The request id is "-" when none is
 * set; one grep on a request UUID follows it through every stage.
 *
 * The level is global and may change at runtime (the daemon skeleton maps
 * SIGUSR1/SIGUSR2 to more/less verbose). The level is checked before any
 * formatting, so disabled debug/trace calls cost one atomic load. Nothing
 * here allocates. Never call these from a signal handler (the skeleton uses
 * signalfd, so it never needs to). */
#ifndef DS4_LOG_H
#define DS4_LOG_H

#include <stdarg.h>

enum ds4_log_level {
    DS4_LOG_ERROR = 0,
    DS4_LOG_WARN = 1,
    DS4_LOG_INFO = 2,
    DS4_LOG_DEBUG = 3,
    DS4_LOG_TRACE = 4,
};

/* Longest line written, newline included; longer messages end in "...". */
#define DS4_LOG_LINE_MAX 4096
/* Longest request id kept (a UUID is 36 characters). */
#define DS4_LOG_REQID_MAX 63

/* Set the program name used as the line prefix (copied, truncated to 31). */
void ds4_log_init(const char *name);
/* Send lines to fd instead of stderr (tests capture through a pipe). */
void ds4_log_set_fd(int fd);

void ds4_log_set_level(int level); /* clamped to ERROR..TRACE */
int ds4_log_get_level(void);
/* True when a message at level would be written. */
int ds4_log_enabled(int level);
/* "error", "warn", "info", "debug", "trace". */
const char *ds4_log_level_name(int level);
/* Parse a level name (or digit 0-4); 0 on success, -1 if unknown. */
int ds4_log_level_parse(const char *s, int *level);

/* This thread's current request id (NULL clears it); copied. */
void ds4_log_set_reqid(const char *reqid);
/* This thread's request id, or NULL when none. */
const char *ds4_log_get_reqid(void);

/* Log with this thread's request id. */
void ds4_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Log with an explicit request id (NULL or "" means "-"). */
void ds4_log_req(int level, const char *reqid, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void ds4_vlog_req(int level, const char *reqid, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
/* Log regardless of the current level (level changes, READY, shutdown). */
void ds4_log_force(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Format one line into buf (size >= 2) without writing it; returns its
 * length. Exposed for tests and for tools that log elsewhere. */
int ds4_log_format(char *buf, int size, int level, const char *reqid,
                   const char *fmt, va_list ap)
    __attribute__((format(printf, 5, 0)));

#define ds4_err(...) ds4_log(DS4_LOG_ERROR, __VA_ARGS__)
#define ds4_warn(...) ds4_log(DS4_LOG_WARN, __VA_ARGS__)
#define ds4_info(...) ds4_log(DS4_LOG_INFO, __VA_ARGS__)
#define ds4_debug(...)                                                      \
    do {                                                                    \
        if (ds4_log_enabled(DS4_LOG_DEBUG))                                 \
            ds4_log(DS4_LOG_DEBUG, __VA_ARGS__);                            \
    } while (0)
#define ds4_trace(...)                                                      \
    do {                                                                    \
        if (ds4_log_enabled(DS4_LOG_TRACE))                                 \
            ds4_log(DS4_LOG_TRACE, __VA_ARGS__);                            \
    } while (0)

#endif
