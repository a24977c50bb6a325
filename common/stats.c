/* stats.c - stats segments: creation from the counter tables, validated
 * read-only attach, listing, and Prometheus text export. */
#include "stats.h"

#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STATS_MAGIC "DS4STAT1"
#define STATS_HEAD 64u

/* The head of the stats payload (layout in stats.h). */
struct stats_head {
    char magic[8];
    uint32_t count;
    uint32_t desc_size;
    uint64_t desc_offset;
    uint64_t values_offset;
    char daemon[32];
};
_Static_assert(sizeof(struct stats_head) == STATS_HEAD, "stats head size");
_Static_assert(sizeof(struct ds4_stats_desc) == 192, "descriptor size");

#define DEF_(n, t, h) {#n, DS4_STAT_##t, h},
static const struct ds4_stat_def tab_common[] = {DS4_STATS_COMMON(DEF_)};
static const struct ds4_stat_def tab_tok[] = {
    DS4_STATS_COMMON(DEF_) DS4_STATS_TOKENIZERD(DEF_)};
static const struct ds4_stat_def tab_eng[] = {
    DS4_STATS_COMMON(DEF_) DS4_STATS_ENGINED(DEF_)};
static const struct ds4_stat_def tab_kv[] = {
    DS4_STATS_COMMON(DEF_) DS4_STATS_KVD(DEF_)};
static const struct ds4_stat_def tab_gw[] = {
    DS4_STATS_COMMON(DEF_) DS4_STATS_GATEWAYD(DEF_)};
_Static_assert(DS4_ARRAY_LEN(tab_tok) == DS4S_TOK_N, "tokenizerd table");
_Static_assert(DS4_ARRAY_LEN(tab_eng) == DS4S_ENG_N, "engined table");
_Static_assert(DS4_ARRAY_LEN(tab_kv) == DS4S_KV_N, "kvd table");
_Static_assert(DS4_ARRAY_LEN(tab_gw) == DS4S_GW_N, "gatewayd table");


/* The compiled-in table for a daemon kind. */
const struct ds4_stat_def *ds4_stats_table(const char *daemon, size_t *n)
{
    static const struct {
        const char *name;
        const struct ds4_stat_def *t;
        size_t n;
    } kinds[] = {
        {"tokenizerd", tab_tok, DS4_ARRAY_LEN(tab_tok)},
        {"engined", tab_eng, DS4_ARRAY_LEN(tab_eng)},
        {"kvd", tab_kv, DS4_ARRAY_LEN(tab_kv)},
        {"gatewayd", tab_gw, DS4_ARRAY_LEN(tab_gw)},
    };
    for (size_t i = 0; i < DS4_ARRAY_LEN(kinds); i++) {
        if (daemon && !strcmp(daemon, kinds[i].name)) {
            *n = kinds[i].n;
            return kinds[i].t;
        }
    }
    *n = DS4_ARRAY_LEN(tab_common);
    return tab_common;
}

/* A stat name Prometheus accepts after our prefix: [a-z0-9_]+. */
static int stat_name_ok(const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    if (n == 0 || n == max)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

/* Bytes needed by the payload for n stats, and the values offset. */
static uint64_t payload_size(size_t n, uint64_t *values_off)
{
    uint64_t off = STATS_HEAD + (uint64_t)n * sizeof(struct ds4_stats_desc);
    off = (off + 63) & ~(uint64_t)63;
    *values_off = off;
    return off + (uint64_t)n * 8;
}

/* Point st at the descriptors and values of its mapped payload. */
static void bind_payload(ds4_stats *st, const struct stats_head *h)
{
    st->count = h->count;
    st->desc = (const struct ds4_stats_desc *)(st->shm.payload + h->desc_offset);
    st->values = (uint64_t *)(void *)(st->shm.payload + h->values_offset);
    _Static_assert(sizeof st->daemon == sizeof h->daemon, "daemon name size");
    memcpy(st->daemon, h->daemon, sizeof st->daemon);
    st->daemon[sizeof st->daemon - 1] = 0; /* validated, but never trust */
}

/* Create a stats segment from an explicit table. */
int ds4_stats_create_defs(ds4_stats *st, const char *instance,
                          const char *daemon, const struct ds4_stat_def *defs,
                          size_t n, char *err, size_t errlen)
{
    memset(st, 0, sizeof *st);
    st->shm.fd = -1;
    if (n == 0 || n > DS4_STATS_MAX || strlen(daemon) >= 32) {
        ds4_seterr(err, errlen, "bad stats table for %s (%zu entries)", daemon, n);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (!stat_name_ok(defs[i].name, DS4_STATS_NAME_MAX)) {
            ds4_seterr(err, errlen, "bad stat name \"%s\"", defs[i].name);
            return -1;
        }
    }
    char purpose[64], name[DS4_SHM_NAME_MAX];
    snprintf(purpose, sizeof purpose, "stats-%s", daemon);
    if (ds4_shm_name(name, sizeof name, instance, purpose, err, errlen))
        return -1;
    uint64_t voff;
    uint64_t size = payload_size(n, &voff);
    if (ds4_shm_create(&st->shm, name, size, 0, err, errlen))
        return -1;
    struct stats_head *h = (struct stats_head *)(void *)st->shm.payload;
    memcpy(h->magic, STATS_MAGIC, 8);
    h->count = (uint32_t)n;
    h->desc_size = sizeof(struct ds4_stats_desc);
    h->desc_offset = STATS_HEAD;
    h->values_offset = voff;
    snprintf(h->daemon, sizeof h->daemon, "%s", daemon);
    struct ds4_stats_desc *d =
        (struct ds4_stats_desc *)(void *)(st->shm.payload + STATS_HEAD);
    for (size_t i = 0; i < n; i++) {
        snprintf(d[i].name, sizeof d[i].name, "%s", defs[i].name);
        d[i].type = (uint32_t)defs[i].type;
        snprintf(d[i].help, sizeof d[i].help, "%s", defs[i].help);
    }
    bind_payload(st, h);
    ds4_shm_publish(&st->shm);
    return 0;
}

/* Create a daemon's stats segment from its compiled-in table. */
int ds4_stats_create(ds4_stats *st, const char *instance, const char *daemon,
                     char *err, size_t errlen)
{
    size_t n;
    const struct ds4_stat_def *t = ds4_stats_table(daemon, &n);
    return ds4_stats_create_defs(st, instance, daemon, t, n, err, errlen);
}

/* Check a mapped payload's head and every descriptor. */
static int validate_payload(const ds4_stats *st, char *err, size_t errlen)
{
    uint64_t psize = st->shm.payload_size;
    if (psize < STATS_HEAD) {
        ds4_seterr(err, errlen, "stats payload too small (%llu bytes)",
               (unsigned long long)psize);
        return -1;
    }
    const struct stats_head *h = (const void *)st->shm.payload;
    if (memcmp(h->magic, STATS_MAGIC, 8) || h->count == 0 ||
        h->count > DS4_STATS_MAX ||
        h->desc_size != sizeof(struct ds4_stats_desc)) {
        ds4_seterr(err, errlen, "not a stats segment (magic, count or descriptor size)");
        return -1;
    }
    uint64_t dend = h->desc_offset + (uint64_t)h->count * h->desc_size;
    if (h->desc_offset < STATS_HEAD || h->desc_offset > psize || dend > psize ||
        h->values_offset % 8 || h->values_offset < dend ||
        h->values_offset > psize || (psize - h->values_offset) / 8 < h->count) {
        ds4_seterr(err, errlen, "stats offsets out of bounds");
        return -1;
    }
    if (strnlen(h->daemon, sizeof h->daemon) == sizeof h->daemon) {
        ds4_seterr(err, errlen, "stats daemon name not terminated");
        return -1;
    }
    const struct ds4_stats_desc *d = (const void *)(st->shm.payload + h->desc_offset);
    for (uint32_t i = 0; i < h->count; i++) {
        if (!stat_name_ok(d[i].name, sizeof d[i].name) || d[i].type > 1 ||
            strnlen(d[i].help, sizeof d[i].help) == sizeof d[i].help) {
            ds4_seterr(err, errlen, "bad stats descriptor %u", i);
            return -1;
        }
    }
    return 0;
}

/* Attach read-only to a segment by its full name. */
int ds4_stats_attach_name(ds4_stats *st, const char *shm_name, char *err,
                          size_t errlen)
{
    memset(st, 0, sizeof *st);
    if (ds4_shm_attach(&st->shm, shm_name, DS4_SHM_RDONLY, err, errlen))
        return -1;
    if (validate_payload(st, err, errlen)) {
        ds4_shm_detach(&st->shm);
        memset(st, 0, sizeof *st);
        st->shm.fd = -1;
        errno = EINVAL;
        return -1;
    }
    bind_payload(st, (const void *)st->shm.payload);
    return 0;
}

/* Attach read-only to a daemon's stats in an instance. */
int ds4_stats_attach(ds4_stats *st, const char *instance, const char *daemon,
                     char *err, size_t errlen)
{
    char purpose[64], name[DS4_SHM_NAME_MAX];
    memset(st, 0, sizeof *st);
    st->shm.fd = -1;
    if (snprintf(purpose, sizeof purpose, "stats-%s", daemon) >= (int)sizeof purpose) {
        ds4_seterr(err, errlen, "daemon name too long");
        return -1;
    }
    if (ds4_shm_name(name, sizeof name, instance, purpose, err, errlen))
        return -1;
    return ds4_stats_attach_name(st, name, err, errlen);
}

/* Detach (and, for the creator at shutdown, unlink). */
void ds4_stats_close(ds4_stats *st, int unlink_it)
{
    if (unlink_it && st->shm.hdr && st->shm.writable)
        ds4_shm_unlink(st->shm.name);
    ds4_shm_detach(&st->shm);
    memset(st, 0, sizeof *st);
    st->shm.fd = -1;
}

/* qsort comparator for the daemon list. */
static int cmp_names(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* List daemons of instance that have a stats segment. */
int ds4_stats_list(const char *instance, char out[][32], int max)
{
    char prefix[128];
    snprintf(prefix, sizeof prefix, "ds4-%u-%s-stats-", (unsigned)getuid(),
             instance);
    DIR *d = opendir("/dev/shm");
    if (!d)
        return -1;
    size_t plen = strlen(prefix);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        if (strncmp(e->d_name, prefix, plen) || strlen(e->d_name + plen) >= 32 ||
            !e->d_name[plen])
            continue;
        snprintf(out[n++], 32, "%s", e->d_name + plen);
    }
    closedir(d);
    qsort(out, (size_t)n, 32, cmp_names);
    return n;
}

/* Index of the stat called name, or -1. */
int ds4_stats_find(const ds4_stats *st, const char *name)
{
    for (uint32_t i = 0; st->desc && i < st->count; i++)
        if (!strncmp(st->desc[i].name, name, sizeof st->desc[i].name) &&
            strlen(name) < sizeof st->desc[i].name)
            return (int)i;
    return -1;
}

/* Append printf output to a growing buffer. */
__attribute__((format(printf, 3, 4))) static void append(char **buf,
                                                          size_t *len,
                                                          const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    *buf = ds4_xrealloc(*buf, *len + (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(*buf + *len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    *len += (size_t)n;
}

enum { CLEAN_NAME, CLEAN_HELP, CLEAN_LABEL };

/* Copy s keeping only what is safe in a metric name, a HELP line (escape
 * backslash) or a label value (escape backslash and quote); other bytes
 * outside printable ASCII become spaces. */
static void clean(char *out, size_t outlen, const char *s, size_t max, int mode)
{
    size_t o = 0;
    for (size_t i = 0; i < max && s[i] && o + 3 < outlen; i++) {
        char c = s[i];
        if (mode == CLEAN_NAME) {
            int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
            out[o++] = ok ? c : '_';
        } else if (c == '\\' || (mode == CLEAN_LABEL && c == '"')) {
            out[o++] = '\\';
            out[o++] = c;
        } else {
            out[o++] = (c >= 0x20 && c < 0x7f) ? c : ' ';
        }
    }
    out[o] = 0;
}

/* Prometheus text format, one HELP/TYPE pair and one sample per stat. */
void ds4_stats_prometheus(const ds4_stats *st, const char *instance,
                          char **buf, size_t *len)
{
    if (!st || !st->desc || !st->values)
        return;
    char daemon[40], label[160] = "";
    clean(daemon, sizeof daemon, st->daemon, sizeof st->daemon, CLEAN_NAME);
    if (instance) {
        char inst[128];
        clean(inst, sizeof inst, instance, 64, CLEAN_LABEL);
        snprintf(label, sizeof label, "{instance=\"%s\"}", inst);
    }
    for (uint32_t i = 0; i < st->count; i++) {
        const struct ds4_stats_desc *d = &st->desc[i];
        char name[DS4_STATS_NAME_MAX + 8], help[2 * DS4_STATS_HELP_MAX];
        clean(name, sizeof name, d->name, sizeof d->name, CLEAN_NAME);
        clean(help, sizeof help, d->help, sizeof d->help, CLEAN_HELP);
        int counter = d->type == DS4_STAT_COUNTER;
        size_t nl = strlen(name);
        const char *suffix =
            counter && !(nl > 6 && !strcmp(name + nl - 6, "_total")) ? "_total" : "";
        append(buf, len, "# HELP ds4_%s_%s%s %s\n# TYPE ds4_%s_%s%s %s\n",
               daemon, name, suffix, help, daemon, name, suffix,
               counter ? "counter" : "gauge");
        append(buf, len, "ds4_%s_%s%s%s %llu\n", daemon, name, suffix, label,
               (unsigned long long)ds4_stats_get(st, i));
    }
}
