/* test_opts.c - option parsing: every kind and form, defaults, positionals,
 * every error path with its message, --help text, the common block. */
#include "opts.h"
#include "test.h"

#include <stdarg.h>
#include <stdint.h>

static int flag, num;
static const char *str;
static uint64_t big;
static double temp;

static const struct ds4_opt table[] = {
    {"verbose", 'v', DS4_OPT_FLAG, &flag, NULL, "be chatty"},
    {"model", 'm', DS4_OPT_STRING, &str, "none.gguf", "model file"},
    {"ctx", 'c', DS4_OPT_INT, &num, "4096", "context size"},
    {"kv-disk-space-mb", 0, DS4_OPT_U64, &big, "8192", "disk budget"},
    {"temp", 't', DS4_OPT_DOUBLE, &temp, "0.6", "temperature"},
    {NULL},
};
static const struct ds4_opt *const tables[] = {table, NULL};

/* Parse a NULL-terminated argument list after resetting to defaults. */
static int parse(char *err, char **pos, int *npos, ...)
{
    char *argv[32] = {"prog"};
    int argc = 1;
    va_list ap;
    va_start(ap, npos);
    for (char *a; (a = va_arg(ap, char *)) && argc < 31;)
        argv[argc++] = a;
    va_end(ap);
    flag = 0;
    err[0] = 0;
    if (ds4_opts_defaults(tables, err, 256))
        return 99;
    return ds4_opts_parse(tables, argc, argv, pos, npos, err, 256);
}

static void test_good(void)
{
    char err[256], *pos[32];
    int np = -1;
    CHECK(parse(err, NULL, NULL, NULL) == DS4_OPTS_OK);
    CHECK(!flag && !strcmp(str, "none.gguf") && num == 4096 && big == 8192 &&
          temp == 0.6);

    CHECK(parse(err, NULL, NULL, "--verbose", "--model", "a.gguf", "--ctx=1000",
                "--kv-disk-space-mb", "18446744073709551615", "--temp=1.5",
                NULL) == DS4_OPTS_OK);
    CHECK(flag && !strcmp(str, "a.gguf") && num == 1000 &&
          big == UINT64_MAX && temp == 1.5);

    CHECK(parse(err, NULL, NULL, "-v", "-m", "b.gguf", "-c-7", "-t", "1e-3",
                NULL) == DS4_OPTS_OK);
    CHECK(flag && !strcmp(str, "b.gguf") && num == -7 && temp == 1e-3);

    /* --name= gives an empty string; the last occurrence wins. */
    CHECK(parse(err, NULL, NULL, "--model=", "--ctx", "1", "--ctx", "2", NULL) ==
          DS4_OPTS_OK);
    CHECK(!strcmp(str, "") && num == 2);

    CHECK(parse(err, pos, &np, "x", "--ctx", "5", "y", "--", "--ctx", "-v",
                NULL) == DS4_OPTS_OK);
    CHECK(np == 4 && num == 5 && !flag);
    CHECK(np == 4 && !strcmp(pos[0], "x") && !strcmp(pos[1], "y") &&
          !strcmp(pos[2], "--ctx") && !strcmp(pos[3], "-v"));
    /* A lone "-" is a positional (stdin by convention). */
    CHECK(parse(err, pos, &np, "-", NULL) == DS4_OPTS_OK && np == 1);
}

/* Expect an error whose message contains needle. */
#define BAD(needle, ...)                                                    \
    do {                                                                    \
        char e_[256];                                                       \
        int rc_ = parse(e_, NULL, NULL, __VA_ARGS__, NULL);                 \
        CHECKF(rc_ == DS4_OPTS_ERROR && strstr(e_, needle),                 \
               "rc %d msg [%s] want [%s]", rc_, e_, needle);                \
    } while (0)

static void test_bad(void)
{
    BAD("unknown option --nope", "--nope");
    BAD("unknown option --nope", "--nope=3");
    BAD("unknown option -x", "-x");
    BAD("--ctx needs a value", "--ctx");
    BAD("-m (--model) needs a value", "-m");
    BAD("--ctx: \"12x\" is not an integer", "--ctx", "12x");
    BAD("--ctx: \"\" is not an integer", "--ctx=");
    BAD("--ctx: \"99999999999\" is not an integer", "--ctx", "99999999999");
    BAD("--ctx: \"0x10\" is not an integer", "--ctx", "0x10");
    BAD("--kv-disk-space-mb: \"-1\" is not", "--kv-disk-space-mb", "-1");
    BAD("--kv-disk-space-mb: \"18446744073709551616\"", "--kv-disk-space-mb",
        "18446744073709551616");
    BAD("--kv-disk-space-mb: \"+5\"", "--kv-disk-space-mb=+5");
    BAD("--temp: \"nan\" is not a finite number", "--temp", "nan");
    BAD("--temp: \"1e999\"", "--temp", "1e999");
    BAD("--temp: \"0.5abc\"", "--temp", "0.5abc");
    BAD("--verbose takes no value", "--verbose=yes");
    BAD("-v takes no value", "-vv");
    BAD("unexpected argument \"stray\"", "stray");
    char err[256];
    CHECK(parse(err, NULL, NULL, "--help", NULL) == DS4_OPTS_HELP);
    CHECK(parse(err, NULL, NULL, "-h", NULL) == DS4_OPTS_HELP);
    CHECK(parse(err, NULL, NULL, "--ctx", "1", "-h", "--bogus", NULL) == DS4_OPTS_HELP);

    /* A broken default is reported, not ignored. */
    int x;
    const struct ds4_opt badt[] = {{"n", 0, DS4_OPT_INT, &x, "ten", "n"}, {NULL}};
    const struct ds4_opt *const bt[] = {badt, NULL};
    CHECK(ds4_opts_defaults(bt, err, sizeof err) == -1 && strstr(err, "\"ten\""));
}

static void test_help(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ds4_opts_help(f, "prog", "[options] FILE", tables);
    fclose(f);
    CHECK(text && strstr(text, "usage: prog [options] FILE\n"));
    CHECK(text && strstr(text, "-m, --model STR"));
    CHECK(text && strstr(text, "model file (default: none.gguf)"));
    CHECK(text && strstr(text, "    --kv-disk-space-mb N"));
    CHECK(text && strstr(text, "-v, --verbose"));
    CHECK(text && strstr(text, "-h, --help"));
    CHECK(text && !strstr(text, "be chatty (default"));
    free(text);
}

static void test_common(void)
{
    struct ds4_common_opts c;
    memset(&c, 0x5a, sizeof c); /* poison: every field must be set */
    c.foreground = 0;
    struct ds4_opt t[DS4_COMMON_OPTS_N];
    ds4_common_opts_table(&c, t);
    CHECK(t[DS4_COMMON_OPTS_N - 1].name == NULL);
    const struct ds4_opt *const tabs[] = {t, table, NULL};
    char err[256];
    c.run_dir = c.pidfile = c.endpoint = NULL;
    CHECK(ds4_opts_defaults(tabs, err, sizeof err) == 0);
    CHECK(c.drain_ms == 5000 && c.notify_fd == -1 && !strcmp(c.instance, "default") &&
          !strcmp(c.log_level, "info") && c.run_dir == NULL);
    char *argv[] = {"d", "--run-dir", "/tmp/x", "--instance=i1", "-l", "debug",
                    "--notify-fd", "7", "-f", "--drain-ms", "250",
                    "--endpoint", "tcp://127.0.0.1:5555", "--ctx", "9", NULL};
    CHECK(ds4_opts_parse(tabs, 15, argv, NULL, NULL, err, sizeof err) == DS4_OPTS_OK);
    CHECK(!strcmp(c.run_dir, "/tmp/x") && !strcmp(c.instance, "i1") &&
          !strcmp(c.log_level, "debug") && c.notify_fd == 7 && c.foreground == 1 &&
          c.drain_ms == 250 && !strcmp(c.endpoint, "tcp://127.0.0.1:5555") &&
          num == 9);
}

int main(void)
{
    test_good();
    test_bad();
    test_help();
    test_common();
    return test_main_end("test_opts");
}
