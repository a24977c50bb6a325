/* util.h - small helpers every part uses: allocation that never returns
 * NULL (out of memory is fatal), and assertions that stay on in release
 * builds (for broken internal invariants only, never for bad input). */
#ifndef DS4_UTIL_H
#define DS4_UTIL_H

#include <stddef.h>
#include <stdint.h>

void ds4_fatal(const char *file, int line, const char *what)
    __attribute__((noreturn));

#define DS4_ASSERT(cond)                                                    \
    do {                                                                    \
        if (!(cond))                                                        \
            ds4_fatal(__FILE__, __LINE__, "assertion failed: " #cond);      \
    } while (0)

void *ds4_xmalloc(size_t n);
void *ds4_xcalloc(size_t n, size_t size);
void *ds4_xrealloc(void *p, size_t n);
char *ds4_xstrdup(const char *s);
char *ds4_xstrndup(const char *s, size_t n);

/* printf into a caller's error buffer (NULL or errlen 0: ignored); the
 * result is always NUL-terminated. */
void ds4_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Monotonic time in nanoseconds. */
uint64_t ds4_now_ns(void);

#define DS4_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
