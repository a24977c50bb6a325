/* util.c - fatal errors, never-NULL allocation, clocks. */
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void ds4_fatal(const char *file, int line, const char *what)
{
    fprintf(stderr, "fatal: %s:%d: %s\n", file, line, what);
    abort();
}

void *ds4_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        ds4_fatal(__FILE__, __LINE__, "out of memory");
    return p;
}

void *ds4_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        ds4_fatal(__FILE__, __LINE__, "out of memory");
    return p;
}

void *ds4_xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        ds4_fatal(__FILE__, __LINE__, "out of memory");
    return p;
}

char *ds4_xstrdup(const char *s)
{
    return ds4_xstrndup(s, strlen(s));
}

char *ds4_xstrndup(const char *s, size_t n)
{
    char *p = ds4_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

uint64_t ds4_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void ds4_seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}
