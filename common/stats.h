/* stats.h - per-daemon counters in a shared-memory segment.
 *
 * A daemon creates "/ds4-<uid>-<instance>-stats-<daemon>" holding the names,
 * types and help of its counters (from stats_table.h) and their u64 values;
 * it updates values with relaxed atomics (no locks, no syscalls). Readers
 * (ds4stat, gatewayd's /metrics) attach read-only and need no compile-time
 * knowledge of the table: everything is described inside the segment.
 *
 * Stats payload (after the 128-byte shm header), little-endian:
 *   0   char magic[8]  "DS4STAT1"
 *   8   u32 count          number of stats
 *   12  u32 desc_size      192
 *   16  u64 desc_offset    64
 *   24  u64 values_offset  64-byte aligned, after the descriptors
 *   32  char daemon[32]    NUL-padded
 *   desc[i]:  char name[56], u32 type (0 counter, 1 gauge), u32 reserved,
 *             char help[128]
 *   values[i]: u64
 * Updating a disabled (zeroed) or read-only ds4_stats is a no-op, so a daemon whose
 * segment could not be created keeps running. */
#ifndef DS4_STATS_H
#define DS4_STATS_H

#include "shm.h"
#include "stats_table.h"

#include <stddef.h>
#include <stdint.h>

enum ds4_stat_type { DS4_STAT_COUNTER = 0, DS4_STAT_GAUGE = 1 };

#define DS4_STATS_NAME_MAX 56
#define DS4_STATS_HELP_MAX 128
#define DS4_STATS_MAX 4096

/* Indices: DS4S_<name> for the common block, then per daemon kind
 * DS4S_TOK_<name>, DS4S_ENG_<name>, DS4S_KV_<name>, DS4S_GW_<name>. */
#define DS4_STAT_ENUM_(n, t, h) DS4S_##n,
enum { DS4_STATS_COMMON(DS4_STAT_ENUM_) DS4S_COMMON_N };
#define DS4_STAT_ENUM_TOK_(n, t, h) DS4S_TOK_##n,
enum { DS4S_TOK_BASE_ = DS4S_COMMON_N - 1,
       DS4_STATS_TOKENIZERD(DS4_STAT_ENUM_TOK_) DS4S_TOK_N };
#define DS4_STAT_ENUM_ENG_(n, t, h) DS4S_ENG_##n,
enum { DS4S_ENG_BASE_ = DS4S_COMMON_N - 1,
       DS4_STATS_ENGINED(DS4_STAT_ENUM_ENG_) DS4S_ENG_N };
#define DS4_STAT_ENUM_KV_(n, t, h) DS4S_KV_##n,
enum { DS4S_KV_BASE_ = DS4S_COMMON_N - 1, DS4_STATS_KVD(DS4_STAT_ENUM_KV_) DS4S_KV_N };
#define DS4_STAT_ENUM_GW_(n, t, h) DS4S_GW_##n,
enum { DS4S_GW_BASE_ = DS4S_COMMON_N - 1,
       DS4_STATS_GATEWAYD(DS4_STAT_ENUM_GW_) DS4S_GW_N };

/* One compile-time definition (tables above), or a custom table. */
struct ds4_stat_def {
    const char *name;
    int type;
    const char *help;
};

/* Descriptor as stored in the segment. */
struct ds4_stats_desc {
    char name[DS4_STATS_NAME_MAX];
    uint32_t type;
    uint32_t reserved;
    char help[DS4_STATS_HELP_MAX];
};

typedef struct ds4_stats {
    ds4_shm shm;
    uint32_t count;
    uint64_t *values;                  /* NULL when disabled */
    const struct ds4_stats_desc *desc; /* count entries */
    char daemon[32];
} ds4_stats;

/* The full table (common block + kind block) for a daemon name; an
 * unknown name gets the common block only. *n receives its length. */
const struct ds4_stat_def *ds4_stats_table(const char *daemon, size_t *n);

/* Create and publish the stats segment of daemon in instance, using
 * ds4_stats_table(daemon). A segment left by a dead daemon is replaced.
 * 0, or -1 with a message (st is then disabled). */
int ds4_stats_create(ds4_stats *st, const char *instance, const char *daemon,
                     char *err, size_t errlen);
/* Same with an explicit table (tests, tools). */
int ds4_stats_create_defs(ds4_stats *st, const char *instance,
                          const char *daemon, const struct ds4_stat_def *defs,
                          size_t n, char *err, size_t errlen);
/* Attach read-only to a daemon's stats and validate every descriptor. */
int ds4_stats_attach(ds4_stats *st, const char *instance, const char *daemon,
                     char *err, size_t errlen);
/* Attach to a named segment (for tools that list /dev/shm). */
int ds4_stats_attach_name(ds4_stats *st, const char *shm_name, char *err,
                          size_t errlen);
/* Detach; the creator also unlinks its segment when unlink is set. */
void ds4_stats_close(ds4_stats *st, int unlink);

/* Daemons with a stats segment in instance, sorted, as names into out
 * (room for max); returns how many (at most max), -1 if /dev/shm fails. */
int ds4_stats_list(const char *instance, char out[][32], int max);

/* Index of a stat by name or -1. */
int ds4_stats_find(const ds4_stats *st, const char *name);

/* Add to a counter or gauge (relaxed atomic; no-op when disabled). */
static inline void ds4_stats_add(ds4_stats *st, unsigned i, uint64_t v)
{
    if (st && st->values && st->shm.writable && i < st->count)
        __atomic_fetch_add(&st->values[i], v, __ATOMIC_RELAXED);
}
/* Subtract from a gauge. */
static inline void ds4_stats_sub(ds4_stats *st, unsigned i, uint64_t v)
{
    if (st && st->values && st->shm.writable && i < st->count)
        __atomic_fetch_sub(&st->values[i], v, __ATOMIC_RELAXED);
}
/* Set a gauge. */
static inline void ds4_stats_set(ds4_stats *st, unsigned i, uint64_t v)
{
    if (st && st->values && st->shm.writable && i < st->count)
        __atomic_store_n(&st->values[i], v, __ATOMIC_RELAXED);
}
/* Read one value (0 when disabled or out of range). */
static inline uint64_t ds4_stats_get(const ds4_stats *st, unsigned i)
{
    if (!st || !st->values || i >= st->count)
        return 0;
    return __atomic_load_n(&st->values[i], __ATOMIC_RELAXED);
}

/* Append Prometheus text exposition for st to a malloc'd buffer (*buf may
 * be NULL; *len is its current length, updated). Metric names are
 * ds4_<daemon>_<name>, counters get "_total"; every sample carries
 * {instance="..."} when instance is non-NULL. */
void ds4_stats_prometheus(const ds4_stats *st, const char *instance,
                          char **buf, size_t *len);

#endif
