/* test.h - a minimal test harness: CHECK() records a failure with its
 * location and carries on; test_main_end() turns failures into the exit
 * status. Tests find their fixtures under DS4_TEST_DATA (default
 * tests/data, relative to the repository root where make runs them). */
#ifndef DS4_TEST_H
#define DS4_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failures;
static int test_checks;

#define CHECK(cond)                                                         \
    do {                                                                    \
        test_checks++;                                                      \
        if (!(cond)) {                                                      \
            test_failures++;                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__,          \
                    __LINE__, #cond);                                       \
        }                                                                   \
    } while (0)

#define CHECKF(cond, ...)                                                   \
    do {                                                                    \
        test_checks++;                                                      \
        if (!(cond)) {                                                      \
            test_failures++;                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__,          \
                    __LINE__, #cond);                                       \
            fprintf(stderr, __VA_ARGS__);                                   \
            fputc('\n', stderr);                                            \
        }                                                                   \
    } while (0)

/* 1 in sanitizer builds (make asan): heavy numeric tests may then check one
 * representative case instead of all, since the release run checks them all
 * and the sanitizers look for memory errors, not numbers. */
static inline int test_sanitized(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return 1;
#else
    return 0;
#endif
}

/* Path of a fixture file under the test data directory (static buffer). */
static inline const char *test_data_path(const char *rel)
{
    static char buf[4096];
    const char *dir = getenv("DS4_TEST_DATA");
    snprintf(buf, sizeof buf, "%s/%s", dir && *dir ? dir : "tests/data", rel);
    return buf;
}

/* Read a whole file into a malloc'd buffer; NULL (and a message) if absent. */
static inline void *test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    if (p)
        p[n] = 0;
    fclose(f);
    if (len)
        *len = (size_t)n;
    return p;
}

static inline int test_main_end(const char *name)
{
    if (test_failures) {
        fprintf(stderr, "FAIL %s: %d of %d checks failed\n", name,
                test_failures, test_checks);
        return 1;
    }
    printf("ok   %s (%d checks)\n", name, test_checks);
    return 0;
}

#endif
