/* opts.c - table-driven option parsing, defaults and --help text. */
#include "opts.h"

#include "util.h"
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>


/* Parse a signed decimal integer into [lo, hi]; no trailing junk. */
static int parse_i64(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    if (!*s)
        return -1;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Parse an unsigned decimal integer; a leading sign or junk is refused. */
static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

/* Parse a finite double with no trailing junk. */
static int parse_double(const char *s, double *out)
{
    char *end;
    if (!*s)
        return -1;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

/* Store value into the entry's variable according to its kind. */
int ds4_opt_set(const struct ds4_opt *o, const char *value, char *err,
                size_t errlen)
{
    long long i;
    switch (o->kind) {
    case DS4_OPT_FLAG:
        if (value && strcmp(value, "1") && strcmp(value, "0") &&
            strcmp(value, "true") && strcmp(value, "false")) {
            ds4_seterr(err, errlen, "--%s takes no value (got \"%s\")", o->name,
                   value);
            return -1;
        }
        *(int *)o->ptr = !value || !strcmp(value, "1") || !strcmp(value, "true");
        return 0;
    case DS4_OPT_STRING:
        *(const char **)o->ptr = value;
        return 0;
    case DS4_OPT_INT:
        if (parse_i64(value, INT_MIN, INT_MAX, &i)) {
            ds4_seterr(err, errlen, "--%s: \"%s\" is not an integer", o->name,
                   value);
            return -1;
        }
        *(int *)o->ptr = (int)i;
        return 0;
    case DS4_OPT_U64:
        if (parse_u64(value, (uint64_t *)o->ptr)) {
            ds4_seterr(err, errlen,
                   "--%s: \"%s\" is not a non-negative 64-bit integer",
                   o->name, value);
            return -1;
        }
        return 0;
    case DS4_OPT_DOUBLE:
        if (parse_double(value, (double *)o->ptr)) {
            ds4_seterr(err, errlen, "--%s: \"%s\" is not a finite number",
                   o->name, value);
            return -1;
        }
        return 0;
    }
    ds4_seterr(err, errlen, "--%s: bad option kind %d in table", o->name, o->kind);
    return -1;
}

/* Apply every table's defaults. */
int ds4_opts_defaults(const struct ds4_opt *const *tables, char *err,
                      size_t errlen)
{
    for (; *tables; tables++)
        for (const struct ds4_opt *o = *tables; o->name; o++)
            if (o->def && ds4_opt_set(o, o->def, err, errlen))
                return -1;
    return 0;
}

/* Find an entry by long name (len bytes of name). */
static const struct ds4_opt *find_long(const struct ds4_opt *const *tables,
                                       const char *name, size_t len)
{
    for (; *tables; tables++)
        for (const struct ds4_opt *o = *tables; o->name; o++)
            if (strlen(o->name) == len && !strncmp(o->name, name, len))
                return o;
    return NULL;
}

/* Find an entry by short letter. */
static const struct ds4_opt *find_short(const struct ds4_opt *const *tables,
                                        char c)
{
    for (; *tables; tables++)
        for (const struct ds4_opt *o = *tables; o->name; o++)
            if (o->short_name && o->short_name == c)
                return o;
    return NULL;
}

/* Handle "--name[=value]" at argv[*i]; may consume argv[*i + 1]. */
static int parse_long(const struct ds4_opt *const *tables, int argc,
                      char **argv, int *i, char *err, size_t errlen)
{
    const char *arg = argv[*i] + 2;
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    const struct ds4_opt *o = find_long(tables, arg, len);
    if (!o) {
        if (len == 4 && !strncmp(arg, "help", 4))
            return DS4_OPTS_HELP;
        ds4_seterr(err, errlen, "unknown option --%.*s (see --help)", (int)len,
               arg);
        return DS4_OPTS_ERROR;
    }
    const char *value = eq ? eq + 1 : NULL;
    if (!value && o->kind != DS4_OPT_FLAG) {
        if (*i + 1 >= argc) {
            ds4_seterr(err, errlen, "option --%s needs a value", o->name);
            return DS4_OPTS_ERROR;
        }
        value = argv[++*i];
    }
    return ds4_opt_set(o, value, err, errlen) ? DS4_OPTS_ERROR : DS4_OPTS_OK;
}

/* Handle "-x", "-x value" or "-xVALUE" at argv[*i]. */
static int parse_short(const struct ds4_opt *const *tables, int argc,
                       char **argv, int *i, char *err, size_t errlen)
{
    char c = argv[*i][1];
    const struct ds4_opt *o = find_short(tables, c);
    if (!o) {
        if (c == 'h' && !argv[*i][2])
            return DS4_OPTS_HELP;
        ds4_seterr(err, errlen, "unknown option -%c (see --help)", c);
        return DS4_OPTS_ERROR;
    }
    const char *value = argv[*i][2] ? argv[*i] + 2 : NULL;
    if (o->kind == DS4_OPT_FLAG && value) {
        ds4_seterr(err, errlen, "option -%c takes no value", c);
        return DS4_OPTS_ERROR;
    }
    if (!value && o->kind != DS4_OPT_FLAG) {
        if (*i + 1 >= argc) {
            ds4_seterr(err, errlen, "option -%c (--%s) needs a value", c, o->name);
            return DS4_OPTS_ERROR;
        }
        value = argv[++*i];
    }
    return ds4_opt_set(o, value, err, errlen) ? DS4_OPTS_ERROR : DS4_OPTS_OK;
}

/* Walk argv, dispatching options and collecting positionals. */
int ds4_opts_parse(const struct ds4_opt *const *tables, int argc, char **argv,
                   char **pos, int *npos, char *err, size_t errlen)
{
    int np = 0, only_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int rc = DS4_OPTS_OK;
        if (!only_pos && !strcmp(a, "--")) {
            only_pos = 1;
            continue;
        }
        if (!only_pos && a[0] == '-' && a[1] == '-')
            rc = parse_long(tables, argc, argv, &i, err, errlen);
        else if (!only_pos && a[0] == '-' && a[1])
            rc = parse_short(tables, argc, argv, &i, err, errlen);
        else if (pos)
            pos[np++] = argv[i];
        else {
            ds4_seterr(err, errlen, "unexpected argument \"%s\"", a);
            return DS4_OPTS_ERROR;
        }
        if (rc != DS4_OPTS_OK)
            return rc;
    }
    if (npos)
        *npos = np;
    return DS4_OPTS_OK;
}

/* Placeholder shown after an option name in --help. */
static const char *metavar(int kind)
{
    switch (kind) {
    case DS4_OPT_STRING: return " STR";
    case DS4_OPT_INT: return " N";
    case DS4_OPT_U64: return " N";
    case DS4_OPT_DOUBLE: return " X";
    }
    return "";
}

/* One aligned line per option, with its default when it has one. */
void ds4_opts_help(FILE *f, const char *prog, const char *usage,
                   const struct ds4_opt *const *tables)
{
    fprintf(f, "usage: %s %s\n\noptions:\n", prog, usage ? usage : "[options]");
    for (; *tables; tables++) {
        for (const struct ds4_opt *o = *tables; o->name; o++) {
            char left[64];
            if (o->short_name)
                snprintf(left, sizeof left, "-%c, --%s%s", o->short_name,
                         o->name, metavar(o->kind));
            else
                snprintf(left, sizeof left, "    --%s%s", o->name,
                         metavar(o->kind));
            fprintf(f, "  %-28s %s", left, o->help ? o->help : "");
            if (o->def && o->kind != DS4_OPT_FLAG)
                fprintf(f, " (default: %s)", o->def);
            fputc('\n', f);
        }
    }
    fprintf(f, "  %-28s %s\n", "-h, --help", "print this help and exit");
}

/* The block of options every daemon accepts. */
void ds4_common_opts_table(struct ds4_common_opts *c,
                           struct ds4_opt t[DS4_COMMON_OPTS_N])
{
    const struct ds4_opt tab[DS4_COMMON_OPTS_N] = {
        {"run-dir", 0, DS4_OPT_STRING, &c->run_dir, NULL,
         "run directory for sockets and pidfiles ($DS4_RUN_DIR, "
         "$XDG_RUNTIME_DIR/ds4 or /tmp/ds4-$UID)"},
        {"instance", 0, DS4_OPT_STRING, &c->instance, "default",
         "stack instance name (shared-memory segment names)"},
        {"log-level", 'l', DS4_OPT_STRING, &c->log_level, "info",
         "error, warn, info, debug or trace"},
        {"pidfile", 0, DS4_OPT_STRING, &c->pidfile, NULL,
         "pidfile path (default <run-dir>/<name>.pid)"},
        {"endpoint", 0, DS4_OPT_STRING, &c->endpoint, NULL,
         "bind address (default ipc://<run-dir>/<name>.sock; tcp:// allowed)"},
        {"notify-fd", 0, DS4_OPT_INT, &c->notify_fd, "-1",
         "write \"READY <pid>\" to this fd once ready, then close it"},
        {"foreground", 'f', DS4_OPT_FLAG, &c->foreground, NULL,
         "stay in the foreground (default: detach once ready)"},
        {"drain-ms", 0, DS4_OPT_U64, &c->drain_ms, "5000",
         "after SIGTERM, wait at most this long for in-flight work"},
        {NULL},
    };
    memcpy(t, tab, sizeof tab);
}
