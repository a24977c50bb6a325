/* ds4stat - print the counters of running ds4 daemons from their stats
 * segments (read-only: the daemons are never disturbed).
 *
 *   ds4stat [--run-dir D] [--instance I] [--watch N] [--prometheus] [daemon...]
 *
 * With no daemon names, every stats segment of the instance is shown. The
 * run directory is only used to show whether each daemon's pidfile is held. */
#include "daemon.h"
#include "log.h"
#include "opts.h"
#include "shm.h"
#include "stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct cfg {
    const char *run_dir;
    const char *instance;
    int watch;
    int prometheus;
};

/* One daemon's block of "name value" lines. */
static void print_text(const ds4_stats *st, const char *run_dir)
{
    const struct ds4_shm_header *h = st->shm.hdr;
    char pidfile[DS4D_PATH_MAX + 64];
    snprintf(pidfile, sizeof pidfile, "%s/%s.pid", run_dir, st->daemon);
    long owner = ds4d_pidfile_owner(pidfile);
    printf("%s: pid %u (%s)%s\n", st->daemon, h->creator_pid,
           ds4_shm_creator_alive(h) ? "running" : "dead",
           owner && owner != (long)h->creator_pid ? ", pidfile differs" : "");
    for (uint32_t i = 0; i < st->count; i++)
        printf("  %-28.*s %20llu  %s\n", DS4_STATS_NAME_MAX, st->desc[i].name,
               (unsigned long long)ds4_stats_get(st, i),
               st->desc[i].type == DS4_STAT_GAUGE ? "gauge" : "");
}

/* Show every requested daemon once; returns how many could not be read. */
static int show(const struct cfg *c, char **names, int n, const char *run_dir)
{
    int bad = 0;
    char *buf = NULL;
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        ds4_stats st;
        char err[256];
        if (ds4_stats_attach(&st, c->instance, names[i], err, sizeof err)) {
            fprintf(stderr, "ds4stat: %s: %s\n", names[i], err);
            bad++;
            continue;
        }
        if (c->prometheus)
            ds4_stats_prometheus(&st, c->instance, &buf, &len);
        else
            print_text(&st, run_dir);
        ds4_stats_close(&st, 0);
    }
    if (buf)
        fwrite(buf, 1, len, stdout);
    free(buf);
    fflush(stdout);
    return bad;
}

int main(int argc, char **argv)
{
    struct cfg c = {0};
    const struct ds4_opt table[] = {
        {"run-dir", 0, DS4_OPT_STRING, &c.run_dir, NULL, "run directory of the stack"},
        {"instance", 'i', DS4_OPT_STRING, &c.instance, "default", "stack instance"},
        {"watch", 'w', DS4_OPT_INT, &c.watch, "0", "refresh every N seconds"},
        {"prometheus", 'p', DS4_OPT_FLAG, &c.prometheus, NULL,
         "print Prometheus text format"},
        {NULL},
    };
    const struct ds4_opt *tables[] = {table, NULL};
    char err[256], run_dir[DS4D_PATH_MAX];
    char **pos = calloc((size_t)argc + 1, sizeof *pos);
    char found[64][32];
    char *names[64];
    int npos = 0;
    ds4_log_init("ds4stat");
    if (!pos || ds4_opts_defaults(tables, err, sizeof err))
        return 2;
    int rc = ds4_opts_parse(tables, argc, argv, pos, &npos, err, sizeof err);
    if (rc == DS4_OPTS_HELP) {
        ds4_opts_help(stdout, "ds4stat", "[options] [daemon...]", tables);
        return 0;
    }
    if (rc != DS4_OPTS_OK || c.watch < 0) {
        fprintf(stderr, "ds4stat: %s\n", rc != DS4_OPTS_OK ? err : "--watch must be >= 0");
        return 2;
    }
    ds4d_run_dir_resolve(c.run_dir, run_dir, sizeof run_dir);
    for (;;) {
        int n = npos;
        if (n > 64)
            n = 64;
        for (int i = 0; i < n; i++)
            names[i] = pos[i];
        if (npos == 0) {
            n = ds4_stats_list(c.instance, found, 64);
            for (int i = 0; i < n; i++)
                names[i] = found[i];
            if (n <= 0 && !c.watch) {
                fprintf(stderr, "ds4stat: no stats segments for instance %s\n",
                        c.instance);
                free(pos);
                return 1;
            }
        }
        if (c.watch)
            printf("\033[H\033[2J");
        int bad = show(&c, names, n < 0 ? 0 : n, run_dir);
        if (!c.watch) {
            free(pos);
            return bad ? 1 : 0;
        }
        sleep((unsigned)c.watch);
    }
}
