/* kv_store.c - a kvd storage directory (see kv_store.h): open and rebuild,
 * lookup, durable put, eviction, quarantine, crash points for tests. */
#include "kv_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "hash.h"
#include "log.h"
#include "util.h"

#define HITS_XATTR "user.ds4kv.hits"
#define WRITE_CHUNK (8u << 20)

/* --- crash points ---------------------------------------------------------- */

static uint64_t crash_at, crash_count;
static char crash_filter[64];

void kv_crash_setup(uint64_t at, const char *filter)
{
    crash_at = at;
    crash_count = 0;
    snprintf(crash_filter, sizeof crash_filter, "%s", filter ? filter : "");
}

void kv_crashpoint(const char *name)
{
    if (crash_filter[0] && strncmp(name, crash_filter, strlen(crash_filter)))
        return;
    uint64_t n = __atomic_add_fetch(&crash_count, 1, __ATOMIC_SEQ_CST);
    if (crash_at && n == crash_at) {
        ds4_log_force(DS4_LOG_WARN, "test mode: crash point %llu (%s): SIGKILL",
                      (unsigned long long)n, name);
        raise(SIGKILL);
        _exit(137);
    }
}

uint64_t kv_crash_count(void)
{
    return __atomic_load_n(&crash_count, __ATOMIC_SEQ_CST);
}

/* --- helpers --------------------------------------------------------------- */

static uint64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void stat_add(const kv_store *s, unsigned i, uint64_t v)
{
    if (s->cfg.stats)
        ds4_stats_add(s->cfg.stats, i, v);
}

uint64_t kv_store_used(const kv_store *s)
{
    return s->idx.bytes + s->quarantine_bytes + s->pend_bytes;
}

void kv_store_gauges(const kv_store *s)
{
    if (!s->cfg.stats)
        return;
    ds4_stats_set(s->cfg.stats, DS4S_KV_entries, s->idx.n);
    ds4_stats_set(s->cfg.stats, DS4S_KV_disk_bytes, kv_store_used(s));
    ds4_stats_set(s->cfg.stats, DS4S_KV_disk_budget_bytes, s->cfg.budget_bytes);
}

static int fsync_dir(int fd, const char *what)
{
    if (fsync(fd) == 0)
        return 0;
    ds4_warn("fsync of directory %s: %s", what, strerror(errno));
    return -1;
}

/* mkdir -p with mode 0700 for the new components. */
static int mkdir_p(const char *path, char *err, size_t errlen)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        ds4_seterr(err, errlen, "path too long");
        return -1;
    }
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || !*p) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0700) && errno != EEXIST) {
                ds4_seterr(err, errlen, "mkdir %s: %s", buf, strerror(errno));
                return -1;
            }
            *p = c;
            if (!c)
                break;
        }
    }
    return 0;
}

/* Hits stored on a file (xattr), 0 if none or unreadable. */
static uint64_t read_hits(int fd)
{
    char v[24];
    ssize_t n = fgetxattr(fd, HITS_XATTR, v, sizeof v - 1);
    if (n <= 0)
        return 0;
    v[n] = 0;
    char *end;
    unsigned long long h = strtoull(v, &end, 10);
    return *end ? 0 : h;
}

/* Record a hit on the file: hits xattr and mtime (best effort). */
static void note_hit(int fd, uint64_t hits)
{
    char v[24];
    int n = snprintf(v, sizeof v, "%llu", (unsigned long long)hits);
    (void)fsetxattr(fd, HITS_XATTR, v, (size_t)n, 0);
    (void)futimens(fd, NULL);
}

static int open_qdir(kv_store *s)
{
    if (s->qdir_fd >= 0)
        return 0;
    if (mkdirat(s->dir_fd, KV_QUARANTINE, 0700) && errno != EEXIST) {
        ds4_warn("%s: cannot create %s/: %s", s->dir, KV_QUARANTINE, strerror(errno));
        return -1;
    }
    s->qdir_fd = openat(s->dir_fd, KV_QUARANTINE, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (s->qdir_fd < 0) {
        ds4_warn("%s: cannot open %s/: %s", s->dir, KV_QUARANTINE, strerror(errno));
        return -1;
    }
    return 0;
}

int kv_store_quarantine(kv_store *s, const char *name, const char *why)
{
    struct stat st;
    uint64_t bytes = 0;
    if (fstatat(s->dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode))
        bytes = kv_disk_bytes((uint64_t)st.st_size);
    char qname[NAME_MAX + 1];
    snprintf(qname, sizeof qname, "%.200s.%llu", name, (unsigned long long)wall_ns());
    kv_crashpoint("quarantine.begin");
    if (open_qdir(s) == 0 && renameat(s->dir_fd, name, s->qdir_fd, qname) == 0) {
        kv_crashpoint("quarantine.renamed");
        fsync(s->qdir_fd);
        fsync_dir(s->dir_fd, s->dir);
        s->quarantine_bytes += bytes;
        stat_add(s, DS4S_KV_quarantined, 1);
        ds4_warn("%s/%s quarantined as %s/%s: %s", s->dir, name, KV_QUARANTINE, qname, why);
        return 0;
    }
    int e = errno;
    if (unlinkat(s->dir_fd, name, 0) == 0) {
        fsync_dir(s->dir_fd, s->dir);
        stat_add(s, DS4S_KV_quarantined, 1);
        ds4_warn("%s/%s deleted (cannot quarantine it: %s): %s", s->dir, name, strerror(e), why);
    } else {
        ds4_err("%s/%s is bad (%s) and can be neither quarantined nor deleted: %s", s->dir, name,
                why, strerror(errno));
    }
    return -1;
}

/* Sum the sizes of quarantined files (they count against the budget). */
static void scan_quarantine(kv_store *s)
{
    s->quarantine_bytes = 0;
    int fd = openat(s->dir_fd, KV_QUARANTINE, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return;
    s->qdir_fd = fd;
    int fd2 = dup(fd);
    DIR *d = fd2 >= 0 ? fdopendir(fd2) : NULL;
    if (!d) {
        if (fd2 >= 0)
            close(fd2);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        struct stat st;
        if (de->d_name[0] == '.' || fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) ||
            S_ISDIR(st.st_mode))
            continue;
        s->quarantine_bytes += kv_disk_bytes((uint64_t)st.st_size);
    }
    closedir(d);
}

/* Delete the oldest quarantined file. Returns its budget bytes, 0 if none. */
static uint64_t drop_oldest_quarantined(kv_store *s)
{
    if (s->qdir_fd < 0 || !s->quarantine_bytes)
        return 0;
    int fd2 = dup(s->qdir_fd);
    DIR *d = fd2 >= 0 ? fdopendir(fd2) : NULL;
    if (!d) {
        if (fd2 >= 0)
            close(fd2);
        return 0;
    }
    rewinddir(d);
    char best[NAME_MAX + 1] = "";
    struct timespec bt = {0, 0};
    uint64_t bbytes = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        struct stat st;
        if (de->d_name[0] == '.' ||
            fstatat(s->qdir_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) || S_ISDIR(st.st_mode))
            continue;
        if (!best[0] || st.st_mtim.tv_sec < bt.tv_sec ||
            (st.st_mtim.tv_sec == bt.tv_sec && st.st_mtim.tv_nsec < bt.tv_nsec)) {
            snprintf(best, sizeof best, "%s", de->d_name);
            bt = st.st_mtim;
            bbytes = kv_disk_bytes((uint64_t)st.st_size);
        }
    }
    closedir(d);
    if (!best[0]) {
        s->quarantine_bytes = 0;
        return 0;
    }
    if (unlinkat(s->qdir_fd, best, 0)) {
        ds4_warn("cannot delete quarantined %s: %s", best, strerror(errno));
        return 0;
    }
    fsync(s->qdir_fd);
    s->quarantine_bytes -= bbytes < s->quarantine_bytes ? bbytes : s->quarantine_bytes;
    ds4_info("deleted quarantined %s/%s/%s for space", s->dir, KV_QUARANTINE, best);
    return bbytes ? bbytes : 1;
}

/* Delete entry i's file and drop it from the index. */
static void evict(kv_store *s, int32_t i, const char *why)
{
    kv_entry e = s->idx.e[i];
    char name[KV_KEY_LEN + 8];
    snprintf(name, sizeof name, "%s%s", e.key, KV_SUFFIX);
    kv_crashpoint("evict.begin");
    if (unlinkat(s->dir_fd, name, 0) && errno != ENOENT)
        ds4_warn("evict %s: %s", name, strerror(errno));
    kv_crashpoint("evict.unlinked");
    fsync_dir(s->dir_fd, s->dir);
    kv_crashpoint("evict.synced");
    kv_index_remove(&s->idx, i);
    stat_add(s, DS4S_KV_evictions, 1);
    stat_add(s, DS4S_KV_evicted_bytes, e.disk_bytes);
    ds4_info("evicted %s (%u tokens, %llu bytes, %llu hits): %s", e.key, e.h.n_tokens,
             (unsigned long long)e.disk_bytes, (unsigned long long)e.hits, why);
}

/* Entries with a write in flight are not evicted (their file is about to
 * be replaced). */
static int skip_pending(void *arg, const kv_entry *e)
{
    return kv_store_pending(arg, e->key);
}

/* Make used + need <= budget. Returns files deleted, or -1 if it cannot be
 * done. */
static int make_room(kv_store *s, uint64_t need)
{
    int n = 0;
    uint64_t budget = s->cfg.budget_bytes;
    while (budget && kv_store_used(s) + need > budget) {
        if (drop_oldest_quarantined(s)) {
            n++;
            continue;
        }
        int32_t v = kv_index_victim_skip(&s->idx, wall_ns(), s->cfg.halflife_s, skip_pending, s);
        if (v < 0)
            return -1;
        evict(s, v, "space budget");
        n++;
    }
    return n;
}

unsigned kv_store_shrink(kv_store *s, uint64_t target)
{
    unsigned n = 0;
    while (kv_store_used(s) > target) {
        if (drop_oldest_quarantined(s)) {
            n++;
            continue;
        }
        int32_t v = kv_index_victim_skip(&s->idx, wall_ns(), s->cfg.halflife_s, skip_pending, s);
        if (v < 0)
            break;
        evict(s, v, "space budget");
        n++;
    }
    kv_store_gauges(s);
    return n;
}

/* --- open and rebuild -------------------------------------------------------- */

/* Read and check the header of an open entry file; full ids and payload
 * checks too when deep. 0 or -1 + err. */
static int check_file(int fd, const char *key, int deep, kv_hdr *h, struct stat *st, char *err,
                      size_t errlen)
{
    uint8_t hb[KV_HDR_SIZE];
    if (fstat(fd, st)) {
        ds4_seterr(err, errlen, "fstat: %s", strerror(errno));
        return -1;
    }
    if ((uint64_t)st->st_size < KV_HDR_SIZE) {
        ds4_seterr(err, errlen, "truncated: %lld bytes", (long long)st->st_size);
        return -1;
    }
    if (kv_pread_full(fd, hb, sizeof hb, 0)) {
        ds4_seterr(err, errlen, "reading header: %s", strerror(errno));
        return -1;
    }
    if (kv_hdr_decode(hb, h, err, errlen) || kv_hdr_check_size(h, (uint64_t)st->st_size, err, errlen))
        return -1;
    char want[KV_KEY_LEN + 1];
    kv_key(h->ids_hash, h->fingerprint, want);
    if (strcmp(want, key)) {
        ds4_seterr(err, errlen, "file name does not match its contents (key %s)", want);
        return -1;
    }
    if (!deep)
        return 0;
    if (kv_read_ids(fd, h, NULL, err, errlen))
        return -1;
    void *buf = malloc(h->payload_size ? (size_t)h->payload_size : 1);
    if (!buf) {
        ds4_seterr(err, errlen, "no memory to verify %llu bytes",
                   (unsigned long long)h->payload_size);
        return -1;
    }
    int corrupt;
    int rc = kv_read_payload(fd, h, buf, &corrupt, err, errlen);
    free(buf);
    return rc;
}

/* Consider one directory entry during open. */
static void scan_one(kv_store *s, const char *name, int *changed)
{
    char key[KV_KEY_LEN + 1];
    char err[256];
    struct stat st;
    if (!strcmp(name, ".") || !strcmp(name, "..") || !strcmp(name, KV_LOCK_NAME))
        return;
    if (fstatat(s->dir_fd, name, &st, AT_SYMLINK_NOFOLLOW)) {
        ds4_warn("%s/%s: %s", s->dir, name, strerror(errno));
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        if (strcmp(name, KV_QUARANTINE))
            ds4_info("%s/%s: a directory, ignored", s->dir, name);
        return;
    }
    if (!strncmp(name, KV_TMP_PREFIX, strlen(KV_TMP_PREFIX)) && S_ISREG(st.st_mode)) {
        if (unlinkat(s->dir_fd, name, 0) == 0) {
            ds4_info("%s/%s: unfinished write removed", s->dir, name);
            s->opened_tmp_removed++;
            *changed = 1;
        } else {
            ds4_warn("%s/%s: cannot remove unfinished write: %s", s->dir, name, strerror(errno));
        }
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        kv_store_quarantine(s, name, "not a regular file");
        s->opened_quarantined++;
        return;
    }
    if (!kv_name_is_entry(name, key)) {
        kv_store_quarantine(s, name, "foreign file (not a kvd checkpoint name)");
        s->opened_quarantined++;
        return;
    }
    int fd = openat(s->dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        ds4_warn("%s/%s: %s", s->dir, name, strerror(errno));
        return;
    }
    kv_entry e;
    memset(&e, 0, sizeof e);
    if (check_file(fd, key, s->cfg.verify_on_open, &e.h, &st, err, sizeof err)) {
        close(fd);
        kv_store_quarantine(s, name, err);
        s->opened_quarantined++;
        return;
    }
    snprintf(e.key, sizeof e.key, "%s", key);
    e.disk_bytes = kv_disk_bytes(e.h.file_size);
    e.hits = read_hits(fd);
    e.last_used_ns = (uint64_t)st.st_mtim.tv_sec * 1000000000ull + (uint64_t)st.st_mtim.tv_nsec;
    close(fd);
    kv_index_put(&s->idx, &e);
}

int kv_store_open(kv_store *s, const char *dir, int create, const kv_store_cfg *cfg, char *err,
                  size_t errlen)
{
    memset(s, 0, sizeof *s);
    s->dir_fd = s->lock_fd = s->qdir_fd = -1;
    s->cfg = *cfg;
    if (!dir || !*dir) {
        ds4_seterr(err, errlen, "no directory given");
        return -1;
    }
    if (create && mkdir_p(dir, err, errlen))
        return -1;
    if (!realpath(dir, s->dir)) {
        ds4_seterr(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    s->dir_fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->dir_fd < 0) {
        ds4_seterr(err, errlen, "%s: %s", s->dir, strerror(errno));
        return -1;
    }
    s->lock_fd = openat(s->dir_fd, KV_LOCK_NAME, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (s->lock_fd < 0) {
        ds4_seterr(err, errlen, "%s: cannot create %s (not writable?): %s", s->dir, KV_LOCK_NAME,
                   strerror(errno));
        kv_store_close(s);
        return -1;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB)) {
        ds4_seterr(err, errlen, "%s is in use by another kvd (%s held)", s->dir, KV_LOCK_NAME);
        kv_store_close(s);
        return -1;
    }
    kv_index_init(&s->idx);
    scan_quarantine(s);
    int fd2 = dup(s->dir_fd);
    DIR *d = fd2 >= 0 ? fdopendir(fd2) : NULL;
    if (!d) {
        ds4_seterr(err, errlen, "%s: cannot list: %s", s->dir, strerror(errno));
        if (fd2 >= 0)
            close(fd2);
        kv_store_close(s);
        return -1;
    }
    /* Collect names first: quarantining renames entries under readdir. */
    char **names = NULL;
    size_t nn = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (nn == cap) {
            cap = cap ? 2 * cap : 64;
            names = ds4_xrealloc(names, cap * sizeof *names);
        }
        names[nn++] = ds4_xstrdup(de->d_name);
    }
    closedir(d);
    int changed = 0;
    for (size_t i = 0; i < nn; i++) {
        scan_one(s, names[i], &changed);
        free(names[i]);
    }
    free(names);
    if (changed)
        fsync_dir(s->dir_fd, s->dir);
    if (s->cfg.budget_bytes && kv_store_used(s) > s->cfg.budget_bytes) {
        ds4_warn("%s holds %llu bytes, over the budget of %llu: evicting", s->dir,
                 (unsigned long long)kv_store_used(s), (unsigned long long)s->cfg.budget_bytes);
        s->opened_evicted = kv_store_shrink(s, s->cfg.budget_bytes);
    }
    kv_store_gauges(s);
    ds4_info("%s: %zu checkpoints, %llu bytes (budget %llu), %u quarantined, %u unfinished "
             "writes removed",
             s->dir, s->idx.n, (unsigned long long)kv_store_used(s),
             (unsigned long long)s->cfg.budget_bytes, s->opened_quarantined,
             s->opened_tmp_removed);
    return 0;
}

void kv_store_close(kv_store *s)
{
    if (s->qdir_fd >= 0)
        close(s->qdir_fd);
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* releases the flock */
    if (s->dir_fd >= 0)
        close(s->dir_fd);
    kv_index_free(&s->idx);
    DS4_ASSERT(s->npend == 0);
    free(s->pend);
    s->pend = NULL;
    s->cappend = 0;
    s->dir_fd = s->lock_fd = s->qdir_fd = -1;
}

/* --- lookup -------------------------------------------------------------------- */

/* The header read back must be the one indexed (else the file changed
 * under us: treat as bad). */
static int same_hdr(const kv_hdr *a, const kv_hdr *b)
{
    return a->file_size == b->file_size && a->n_tokens == b->n_tokens &&
           a->ids_hash == b->ids_hash && a->payload_checksum == b->payload_checksum &&
           !strcmp(a->fingerprint, b->fingerprint);
}

/* Try one candidate: 1 served, 0 not this one (*bad set if quarantined,
 * *gone if the file vanished), -1 failure not due to the file. */
static int try_candidate(kv_store *s, int32_t idx, const int32_t *ids, const kv_sink *sink,
                         kv_found *out, int *bad, char *err, size_t errlen)
{
    kv_entry e = s->idx.e[idx];
    char name[KV_KEY_LEN + 8], why[256];
    snprintf(name, sizeof name, "%s%s", e.key, KV_SUFFIX);
    *bad = 0;
    if (kv_store_pending(s, e.key))
        return 0; /* being rewritten: its file may change under us */
    int fd = openat(s->dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            ds4_warn("%s/%s vanished from the directory; dropped from the index", s->dir, name);
            kv_index_remove(&s->idx, idx);
            return 0;
        }
        ds4_seterr(err, errlen, "open %s: %s", name, strerror(errno));
        return -1;
    }
    kv_hdr h;
    struct stat st;
    int32_t *fids = NULL;
    if (check_file(fd, e.key, 0, &h, &st, why, sizeof why))
        goto corrupt;
    if (!same_hdr(&h, &e.h)) {
        snprintf(why, sizeof why, "file changed since it was indexed");
        goto corrupt;
    }
    fids = ds4_xmalloc((size_t)h.n_tokens * sizeof *fids);
    if (kv_read_ids(fd, &h, fids, why, sizeof why))
        goto corrupt;
    if (memcmp(fids, ids, (size_t)h.n_tokens * sizeof *fids)) {
        /* a hash collision, not damage: just not our prefix */
        ds4_debug("%s: prefix hash matched but the ids differ", e.key);
        free(fids);
        close(fd);
        return 0;
    }
    free(fids);
    fids = NULL;
    uint64_t t0 = ds4_now_ns();
    void *dest = sink->alloc(sink->arg, h.payload_size, err, errlen);
    if (!dest) {
        close(fd);
        return -1;
    }
    int corrupt = 0;
    if (kv_read_payload(fd, &h, dest, &corrupt, why, sizeof why)) {
        sink->discard(sink->arg, dest);
        if (corrupt)
            goto corrupt;
        ds4_seterr(err, errlen, "%s: %s", name, why);
        close(fd);
        return -1;
    }
    stat_add(s, DS4S_KV_bytes_read, h.payload_size);
    stat_add(s, DS4S_KV_read_ns, ds4_now_ns() - t0);
    kv_entry *pe = &s->idx.e[idx];
    pe->hits++;
    pe->last_used_ns = wall_ns();
    note_hit(fd, pe->hits);
    close(fd);
    snprintf(out->key, sizeof out->key, "%s", e.key);
    out->h = h;
    out->dest = dest;
    return 1;
corrupt:
    free(fids);
    close(fd);
    kv_index_remove(&s->idx, idx);
    kv_store_quarantine(s, name, why);
    *bad = 1;
    return 0;
}

int kv_store_lookup(kv_store *s, const int32_t *ids, size_t n, const kv_query *q,
                    const kv_sink *sink, kv_found *out, const char **miss_reason, char *err,
                    size_t errlen)
{
    memset(out, 0, sizeof *out);
    *miss_reason = "none";
    int fp_mismatch = 0;
    enum { MAXC = 16 };
    kv_cand c[MAXC];
    /* Removing an entry reorders the index, so look again after each bad
     * candidate (rare). */
    for (int round = 0; round < 64; round++) {
        size_t nc = kv_index_lookup(&s->idx, ids, n, q, c, MAXC, round ? NULL : &fp_mismatch);
        if (fp_mismatch)
            *miss_reason = "fingerprint";
        int changed = 0;
        for (size_t i = 0; i < nc && !changed; i++) {
            int bad = 0;
            size_t before = s->idx.n;
            int rc = try_candidate(s, c[i].idx, ids, sink, out, &bad, err, errlen);
            if (rc != 0) {
                if (rc > 0)
                    out->exact = c[i].exact;
                kv_store_gauges(s);
                return rc;
            }
            if (bad) {
                out->quarantined++;
                *miss_reason = "corrupt";
            }
            changed = s->idx.n != before;
        }
        if (!changed)
            break;
    }
    kv_store_gauges(s);
    return 0;
}

/* --- put ---------------------------------------------------------------------- */

/* Write the temp file's contents; fills h->payload_checksum. 0 or -1. */
static int write_body(int fd, kv_hdr *h, const kv_put_req *r, char *err, size_t errlen)
{
    if (fallocate(fd, 0, 0, (off_t)h->file_size) && errno != EOPNOTSUPP && errno != ENOSYS) {
        ds4_seterr(err, errlen, "reserving %llu bytes: %s", (unsigned long long)h->file_size,
                   strerror(errno));
        return -1;
    }
    size_t rlen = (size_t)kv_ids_region(h);
    uint8_t *region = ds4_xcalloc(1, rlen);
    for (size_t i = 0; i < r->n; i++) {
        uint32_t v = (uint32_t)r->ids[i];
        memcpy(region + 4 * i, &v, 4);
    }
    int rc = kv_pwrite_full(fd, region, rlen, KV_HDR_SIZE);
    free(region);
    if (rc) {
        ds4_seterr(err, errlen, "writing token ids: %s", strerror(errno));
        return -1;
    }
    kv_crashpoint("put.ids_written");
    kv_h64 hs;
    kv_h64_init(&hs, r->len, 0);
    const uint8_t *p = r->payload;
    uint8_t *bounce = NULL;
    if (r->src_fd >= 0 && r->len)
        bounce = ds4_xmalloc(r->len < WRITE_CHUNK ? (size_t)r->len : WRITE_CHUNK);
    uint64_t off = h->payload_offset, left = r->len, done = 0;
    /* First half, a crash point, then the rest in chunks. */
    uint64_t first = left / 2;
    while (left) {
        size_t n = (size_t)(first ? first : left);
        if (n > WRITE_CHUNK)
            n = WRITE_CHUNK;
        const uint8_t *src = p + done;
        if (bounce) {
            if (kv_pread_full(r->src_fd, bounce, n, r->src_off + done)) {
                ds4_seterr(err, errlen, "reading the payload from the sender's segment: %s",
                           strerror(errno));
                free(bounce);
                errno = EBADMSG;
                return -1;
            }
            src = bounce;
        }
        kv_h64_update(&hs, src, n);
        if (kv_pwrite_full(fd, src, n, off)) {
            ds4_seterr(err, errlen, "writing payload: %s", strerror(errno));
            free(bounce);
            return -1;
        }
        done += n;
        off += n;
        left -= n;
        if (first) {
            first -= n;
            if (!first)
                kv_crashpoint("put.payload_half");
        }
    }
    free(bounce);
    h->payload_checksum = kv_h64_final(&hs);
    if (r->expect_checksum && r->expect_checksum != h->payload_checksum) {
        ds4_seterr(err, errlen, "payload checksum %016llx differs from the declared %016llx",
                   (unsigned long long)h->payload_checksum,
                   (unsigned long long)r->expect_checksum);
        errno = EBADMSG;
        return -1;
    }
    uint8_t hb[KV_HDR_SIZE];
    kv_hdr_encode(h, hb);
    if (kv_pwrite_full(fd, hb, sizeof hb, 0)) {
        ds4_seterr(err, errlen, "writing header: %s", strerror(errno));
        return -1;
    }
    kv_crashpoint("put.written");
    if (fsync(fd)) {
        ds4_seterr(err, errlen, "fsync: %s", strerror(errno));
        return -1;
    }
    kv_crashpoint("put.synced");
    return 0;
}

/* --- pending writes ----------------------------------------------------------- */

static int pending_idx(const kv_store *s, const char *key)
{
    for (size_t i = 0; i < s->npend; i++)
        if (!strcmp(s->pend[i].key, key))
            return (int)i;
    return -1;
}

int kv_store_pending(const kv_store *s, const char *key)
{
    return pending_idx(s, key) >= 0;
}

static void pending_add(kv_store *s, const char *key, uint64_t bytes)
{
    if (s->npend == s->cappend) {
        s->cappend = s->cappend ? 2 * s->cappend : 8;
        s->pend = ds4_xrealloc(s->pend, s->cappend * sizeof *s->pend);
    }
    snprintf(s->pend[s->npend].key, sizeof s->pend[s->npend].key, "%s", key);
    s->pend[s->npend].bytes = bytes;
    s->pend_bytes += bytes;
    s->npend++;
}

static void pending_del(kv_store *s, const char *key)
{
    int i = pending_idx(s, key);
    DS4_ASSERT(i >= 0);
    s->pend_bytes -= s->pend[i].bytes;
    s->pend[i] = s->pend[--s->npend];
}

/* --- put ------------------------------------------------------------------------ */

int kv_store_put_begin(kv_store *s, const kv_put_req *r, kv_put_job *job, kv_put_res *res,
                       char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    memset(job, 0, sizeof *job);
    job->t0 = ds4_now_ns();
    kv_hdr *h = &job->h;
    h->n_tokens = (uint32_t)r->n;
    h->reason = r->reason;
    h->payload_size = r->len;
    h->ids_hash = kv_ids_hash(r->ids, r->n);
    h->created_unix_ns = wall_ns();
    h->prefill_us = r->prefill_us;
    snprintf(h->fingerprint, sizeof h->fingerprint, "%s", r->fingerprint);
    snprintf(h->family, sizeof h->family, "%s", r->family ? r->family : "");
    snprintf(h->quant, sizeof h->quant, "%s", r->quant ? r->quant : "");
    kv_hdr_finish(h);
    kv_key(h->ids_hash, h->fingerprint, res->key);
    snprintf(job->key, sizeof job->key, "%s", res->key);
    job->disk = kv_disk_bytes(h->file_size);
    int32_t old = kv_index_find(&s->idx, res->key);
    if (old >= 0 && r->expect_checksum && !kv_store_pending(s, res->key) &&
        s->idx.e[old].h.payload_checksum == r->expect_checksum &&
        s->idx.e[old].h.payload_size == r->len && s->idx.e[old].h.n_tokens == r->n) {
        /* The same checkpoint again: keep the file, note the use. */
        s->idx.e[old].last_used_ns = wall_ns();
        res->bytes = s->idx.e[old].h.file_size;
        res->unchanged = 1;
        return KV_DONE;
    }
    if (s->cfg.budget_bytes && job->disk > s->cfg.budget_bytes) {
        ds4_seterr(err, errlen, "checkpoint of %llu bytes exceeds the whole budget of %llu",
                   (unsigned long long)job->disk, (unsigned long long)s->cfg.budget_bytes);
        stat_add(s, DS4S_KV_save_errors, 1);
        return KV_ERR_TOO_LARGE;
    }
    int ev = make_room(s, job->disk);
    if (ev < 0) {
        ds4_seterr(err, errlen, "cannot make room for %llu bytes (writes in progress)",
                   (unsigned long long)job->disk);
        stat_add(s, DS4S_KV_save_errors, 1);
        kv_store_gauges(s);
        return KV_ERR_TOO_LARGE;
    }
    res->evicted = (unsigned)ev;
    job->dir_fd = s->dir_fd;
    snprintf(job->dir, sizeof job->dir, "%s", s->dir);
    snprintf(job->tmp, sizeof job->tmp, "%s%s-%ld-%llu", KV_TMP_PREFIX, res->key,
             (long)getpid(), (unsigned long long)++s->seq);
    snprintf(job->name, sizeof job->name, "%s%s", res->key, KV_SUFFIX);
    pending_add(s, res->key, job->disk);
    return KV_OK;
}

int kv_put_write(kv_put_job *job, const kv_put_req *r)
{
    char *err = job->err;
    size_t errlen = sizeof job->err;
    kv_crashpoint("put.begin");
    int fd = openat(job->dir_fd, job->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    0600);
    if (fd < 0) {
        ds4_seterr(err, errlen, "create %s/%s: %s", job->dir, job->tmp, strerror(errno));
        return job->rc = KV_ERR_IO;
    }
    kv_crashpoint("put.created");
    if (write_body(fd, &job->h, r, err, errlen)) {
        int e = errno;
        close(fd);
        unlinkat(job->dir_fd, job->tmp, 0);
        return job->rc = e == EBADMSG ? KV_ERR_CHECKSUM : KV_ERR_IO;
    }
    if (close(fd)) {
        ds4_seterr(err, errlen, "close %s: %s", job->tmp, strerror(errno));
        unlinkat(job->dir_fd, job->tmp, 0);
        return job->rc = KV_ERR_IO;
    }
    if (renameat(job->dir_fd, job->tmp, job->dir_fd, job->name)) {
        ds4_seterr(err, errlen, "rename %s to %s: %s", job->tmp, job->name, strerror(errno));
        unlinkat(job->dir_fd, job->tmp, 0);
        return job->rc = KV_ERR_IO;
    }
    job->renamed = 1;
    kv_crashpoint("put.renamed");
    if (fsync(job->dir_fd)) {
        /* The rename may not be durable: do not acknowledge it. */
        ds4_seterr(err, errlen, "fsync of %s: %s", job->dir, strerror(errno));
        unlinkat(job->dir_fd, job->name, 0);
        return job->rc = KV_ERR_IO;
    }
    kv_crashpoint("put.dir_synced");
    return job->rc = KV_OK;
}

int kv_store_put_end(kv_store *s, kv_put_job *job, kv_put_res *res, char *err, size_t errlen)
{
    pending_del(s, job->key);
    int32_t old = kv_index_find(&s->idx, job->key);
    if (job->rc != KV_OK) {
        if (job->renamed && old >= 0) /* its file was replaced, then removed */
            kv_index_remove(&s->idx, old);
        ds4_seterr(err, errlen, "%s", job->err);
        stat_add(s, DS4S_KV_save_errors, 1);
        kv_store_gauges(s);
        return job->rc;
    }
    kv_entry e;
    memset(&e, 0, sizeof e);
    snprintf(e.key, sizeof e.key, "%s", job->key);
    e.h = job->h;
    e.disk_bytes = job->disk;
    e.hits = old >= 0 ? s->idx.e[old].hits : 0;
    e.last_used_ns = wall_ns();
    kv_index_put(&s->idx, &e);
    res->bytes = job->h.file_size;
    stat_add(s, DS4S_KV_saves, 1);
    stat_add(s, DS4S_KV_bytes_written, job->h.file_size);
    stat_add(s, DS4S_KV_write_ns, ds4_now_ns() - job->t0);
    kv_store_gauges(s);
    return KV_OK;
}

int kv_store_put(kv_store *s, const kv_put_req *r, kv_put_res *res, char *err, size_t errlen)
{
    kv_put_job job;
    int rc = kv_store_put_begin(s, r, &job, res, err, errlen);
    if (rc == KV_DONE)
        return KV_OK;
    if (rc)
        return rc;
    kv_put_write(&job, r);
    return kv_store_put_end(s, &job, res, err, errlen);
}
