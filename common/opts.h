/* opts.h - table-driven long-option parser shared by every daemon and tool.
 *
 * A table is an array of struct ds4_opt ending with an entry whose name is
 * NULL. Each entry names a variable (ptr) of a type fixed by its kind:
 *   DS4_OPT_FLAG    int         set to 1 by --name (takes no value)
 *   DS4_OPT_STRING  const char* points into argv (or at the default literal)
 *   DS4_OPT_INT     int         decimal, range-checked
 *   DS4_OPT_U64     uint64_t    decimal, no sign, range-checked
 *   DS4_OPT_DOUBLE  double      finite
 * Defaults are strings, parsed by the same code as the command line, so a
 * bad default is caught by the unit tests. Accepted forms: --name value,
 * --name=value, -x value, -xVALUE; "--" ends options. Unknown options,
 * missing values and bad numbers are errors with a message naming them. */
#ifndef DS4_OPTS_H
#define DS4_OPTS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum ds4_opt_kind {
    DS4_OPT_FLAG = 1,
    DS4_OPT_STRING,
    DS4_OPT_INT,
    DS4_OPT_U64,
    DS4_OPT_DOUBLE,
};

struct ds4_opt {
    const char *name;  /* long name without "--"; NULL ends the table */
    char short_name;   /* 0 when none */
    int kind;          /* enum ds4_opt_kind */
    void *ptr;         /* variable of the kind's type */
    const char *def;   /* default as text; NULL leaves the variable alone */
    const char *help;  /* one line for --help */
};

/* Results of ds4_opts_parse. */
enum {
    DS4_OPTS_OK = 0,
    DS4_OPTS_HELP = 1,   /* --help or -h seen: caller prints help, exits 0 */
    DS4_OPTS_ERROR = -1, /* message in err */
};

/* Store every default of the NULL-terminated list of tables. 0, or -1 with
 * a message (a broken default is a programming error found by tests). */
int ds4_opts_defaults(const struct ds4_opt *const *tables, char *err,
                      size_t errlen);

/* Parse argv[1..argc-1] against the tables (a NULL-terminated list; the
 * first table that knows a name wins). Positional arguments are stored in
 * pos (room for argc entries) and counted in *npos; pass pos == NULL to
 * reject them. Defaults are NOT applied here: call ds4_opts_defaults first.
 * Returns DS4_OPTS_OK, DS4_OPTS_HELP or DS4_OPTS_ERROR. */
int ds4_opts_parse(const struct ds4_opt *const *tables, int argc, char **argv,
                   char **pos, int *npos, char *err, size_t errlen);

/* Parse one value for an entry (used for defaults and environment). */
int ds4_opt_set(const struct ds4_opt *o, const char *value, char *err,
                size_t errlen);

/* Print "usage: prog usage\n" then one aligned line per option. */
void ds4_opts_help(FILE *f, const char *prog, const char *usage,
                   const struct ds4_opt *const *tables);

/* Options every daemon takes (ds4d_init adds this block to its table). */
struct ds4_common_opts {
    const char *run_dir;   /* --run-dir: default $DS4_RUN_DIR, then
                              $XDG_RUNTIME_DIR/ds4, then /tmp/ds4-$UID */
    const char *instance;  /* --instance: names shm segments (default "default") */
    const char *log_level; /* --log-level error|warn|info|debug|trace */
    const char *pidfile;   /* --pidfile: default <run-dir>/<name>.pid */
    const char *endpoint;  /* --endpoint: this daemon's bind address */
    int notify_fd;         /* --notify-fd: READY line goes here; -1 none */
    int foreground;        /* --foreground: do not detach */
    uint64_t drain_ms;     /* --drain-ms: bound on draining after SIGTERM */
};

/* Fill table (room for DS4_COMMON_OPTS_N entries, NULL-terminated) with the
 * common block bound to c. */
#define DS4_COMMON_OPTS_N 9
void ds4_common_opts_table(struct ds4_common_opts *c,
                           struct ds4_opt table[DS4_COMMON_OPTS_N]);

#endif
