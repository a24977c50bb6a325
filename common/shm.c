/* shm.c - create, publish, attach and clean up named shared-memory segments
 * with a validated header (layout in shm.h). */
#include "shm.h"

#include "hash.h"

#include "util.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the segment format is little-endian; add byte swapping for this host"
#endif

_Static_assert(sizeof(struct ds4_shm_header) == DS4_SHM_HEADER_SIZE,
               "header is 128 bytes");
_Static_assert(offsetof(struct ds4_shm_header, layout_version) == 8, "");
_Static_assert(offsetof(struct ds4_shm_header, total_size) == 16, "");
_Static_assert(offsetof(struct ds4_shm_header, creator_pid) == 32, "");
_Static_assert(offsetof(struct ds4_shm_header, creator_start) == 40, "");
_Static_assert(offsetof(struct ds4_shm_header, generation) == 48, "");
_Static_assert(offsetof(struct ds4_shm_header, state) == 56, "");
_Static_assert(offsetof(struct ds4_shm_header, payload_checksum) == 64, "");
_Static_assert(offsetof(struct ds4_shm_header, purpose) == 80, "");
_Static_assert(offsetof(struct ds4_shm_header, header_checksum) == 120, "");

/* How often a reader re-reads a header caught mid-update before giving up. */
#define HEADER_RETRIES 1000


/* Whether every byte of s is in the allowed character class. */
static int name_chars_ok(const char *s, int allow_dash)
{
    if (!*s)
        return 0;
    for (; *s; s++) {
        char c = *s;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 (c >= '0' && c <= '9') || c == '_' || c == '.' ||
                 (allow_dash && c == '-');
        if (!ok)
            return 0;
    }
    return 1;
}

/* Build the segment name for this user, instance and purpose. */
int ds4_shm_name(char *out, size_t outlen, const char *instance,
                 const char *purpose, char *err, size_t errlen)
{
    if (!instance || !name_chars_ok(instance, 0) || strlen(instance) > 64) {
        ds4_seterr(err, errlen,
               "bad instance name \"%s\" (1-64 of [A-Za-z0-9_.])",
               instance ? instance : "");
        return -1;
    }
    if (!purpose || !name_chars_ok(purpose, 1) || strlen(purpose) > 64) {
        ds4_seterr(err, errlen, "bad segment purpose \"%s\" (1-64 of [A-Za-z0-9_.-])",
               purpose ? purpose : "");
        return -1;
    }
    int n = snprintf(out, outlen, "/ds4-%u-%s-%s", (unsigned)getuid(),
                     instance, purpose);
    if (n < 0 || (size_t)n >= outlen) {
        ds4_seterr(err, errlen, "segment name too long");
        return -1;
    }
    return 0;
}

/* A name shm_open accepts: "/" then 1..NAME_MAX bytes without '/'. */
static int valid_name(const char *name, char *err, size_t errlen)
{
    size_t n = name ? strlen(name) : 0;
    if (n < 2 || n > DS4_SHM_NAME_MAX || name[0] != '/' ||
        strchr(name + 1, '/')) {
        ds4_seterr(err, errlen, "bad shared-memory name \"%s\"", name ? name : "");
        errno = EINVAL;
        return -1;
    }
    return 0;
}

/* Checksum of a header's first 120 bytes. */
static uint64_t header_sum(const struct ds4_shm_header *h)
{
    return ds4_hash64(h, offsetof(struct ds4_shm_header, header_checksum), 0);
}

/* Read /proc/<pid>/stat: state letter and start time (field 22). */
static int read_proc_stat(pid_t pid, char *state, uint64_t *start)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may contain anything */
    if (!p || p[1] != ' ' || !p[2])
        return -1;
    *state = p[2];
    p += 2;
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (!p)
            return -1;
        p++;
    }
    char *end;
    unsigned long long v = strtoull(p, &end, 10);
    if (end == p)
        return -1;
    *start = v;
    return 0;
}

/* Start time of a live (non-zombie) process. */
int ds4_proc_start_time(pid_t pid, uint64_t *out)
{
    char state;
    if (read_proc_stat(pid, &state, out))
        return -1;
    if (state == 'Z' || state == 'X')
        return -1;
    return 0;
}

/* Alive means: the pid exists, is not a zombie, and started when recorded. */
int ds4_shm_creator_alive(const struct ds4_shm_header *h)
{
    pid_t pid = (pid_t)h->creator_pid;
    if (pid <= 0)
        return 0;
    if (kill(pid, 0) < 0 && errno == ESRCH)
        return 0;
    char state;
    uint64_t start;
    if (read_proc_stat(pid, &state, &start))
        return access("/proc/self/stat", R_OK) != 0; /* no /proc: trust kill */
    if (state == 'Z' || state == 'X')
        return 0;
    return start == h->creator_start;
}

/* Validate a header copy against the file size. */
int ds4_shm_header_check(const struct ds4_shm_header *h, uint64_t file_size,
                         char *err, size_t errlen)
{
    if (memcmp(h->magic, DS4_SHM_MAGIC, 8)) {
        ds4_seterr(err, errlen, "bad magic (not a ds4 segment)");
        return -1;
    }
    if (h->layout_version != DS4_SHM_VERSION) {
        ds4_seterr(err, errlen, "layout version %u, expected %u",
               h->layout_version, DS4_SHM_VERSION);
        return -1;
    }
    if (h->header_size != DS4_SHM_HEADER_SIZE) {
        ds4_seterr(err, errlen, "header size %u, expected %u", h->header_size,
               DS4_SHM_HEADER_SIZE);
        return -1;
    }
    if (h->payload_size > DS4_SHM_PAYLOAD_MAX ||
        h->total_size != h->header_size + h->payload_size) {
        ds4_seterr(err, errlen, "inconsistent sizes (total %llu, payload %llu)",
               (unsigned long long)h->total_size,
               (unsigned long long)h->payload_size);
        return -1;
    }
    if (h->total_size != file_size) {
        ds4_seterr(err, errlen, "header says %llu bytes but segment has %llu",
               (unsigned long long)h->total_size,
               (unsigned long long)file_size);
        return -1;
    }
    if (h->state != DS4_SHM_STATE_PUBLISHING &&
        h->state != DS4_SHM_STATE_COMPLETE) {
        ds4_seterr(err, errlen, "bad state %u", h->state);
        return -1;
    }
    if (header_sum(h) != h->header_checksum) {
        ds4_seterr(err, errlen, "header checksum mismatch");
        return -1;
    }
    return 0;
}

/* Read the header of an open fd; 1 if stale (dead creator or invalid). */
static int fd_is_stale(int fd, struct ds4_shm_header *h)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size < (off_t)sizeof *h)
        return 1;
    if (pread(fd, h, sizeof *h, 0) != (ssize_t)sizeof *h)
        return 1;
    if (ds4_shm_header_check(h, (uint64_t)st.st_size, NULL, 0))
        return 1;
    return !ds4_shm_creator_alive(h);
}

/* Unlink name if its segment is stale; 1 removed, 2 already gone, 0 kept
 * (live creator or another user's: pid through *live_pid), -1 error. */
static int remove_if_stale(const char *name, uid_t uid, pid_t *live_pid)
{
    int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return errno == ENOENT ? 2 : -1;
    struct stat st;
    struct ds4_shm_header h = {0};
    int stale = fstat(fd, &st) == 0 && st.st_uid == uid && fd_is_stale(fd, &h);
    if (!stale && live_pid)
        *live_pid = (pid_t)h.creator_pid;
    close(fd);
    if (!stale)
        return 0;
    if (shm_unlink(name) < 0)
        return errno == ENOENT ? 2 : -1;
    return 1;
}

/* Recompute the header checksum after the writer changed fields. */
static void reseal(struct ds4_shm_header *h)
{
    __atomic_store_n(&h->header_checksum, header_sum(h), __ATOMIC_RELEASE);
}

/* Fill a fresh header in the new mapping. */
static void init_header(ds4_shm *s, uint64_t payload_size, uint32_t flags)
{
    struct ds4_shm_header *h = s->hdr;
    memcpy(h->magic, DS4_SHM_MAGIC, 8);
    h->layout_version = DS4_SHM_VERSION;
    h->header_size = DS4_SHM_HEADER_SIZE;
    h->total_size = DS4_SHM_HEADER_SIZE + payload_size;
    h->payload_size = payload_size;
    h->creator_pid = (uint32_t)getpid();
    h->flags = flags & DS4_SHM_F_CHECKSUM;
    uint64_t start = 0;
    ds4_proc_start_time(getpid(), &start);
    h->creator_start = start;
    h->generation = 0;
    h->state = DS4_SHM_STATE_PUBLISHING;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    h->created_unix_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    const char *p = strrchr(s->name, '-');
    snprintf(h->purpose, sizeof h->purpose, "%s", p ? p + 1 : s->name + 1);
    reseal(h);
}

/* Open with O_EXCL, replacing a stale segment of the same name once. */
static int open_exclusive(const char *name, char *err, size_t errlen)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0)
            return fd;
        if (errno != EEXIST) {
            ds4_seterr(err, errlen, "shm_open %s: %s", name, strerror(errno));
            return -1;
        }
        pid_t live = 0;
        int r = remove_if_stale(name, getuid(), &live);
        if (r == 0) {
            ds4_seterr(err, errlen, "segment %s exists and its creator pid %ld is alive",
                   name, (long)live);
            errno = EEXIST;
            return -1;
        }
        if (r < 0) {
            ds4_seterr(err, errlen, "cannot remove stale %s: %s", name,
                   strerror(errno));
            return -1;
        }
    }
    ds4_seterr(err, errlen, "segment %s keeps reappearing", name);
    errno = EEXIST;
    return -1;
}

/* Create and map a new segment in state PUBLISHING. */
int ds4_shm_create(ds4_shm *s, const char *name, uint64_t payload_size,
                   uint32_t flags, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    s->fd = -1;
    if (valid_name(name, err, errlen))
        return -1;
    if (payload_size > DS4_SHM_PAYLOAD_MAX) {
        ds4_seterr(err, errlen, "payload of %llu bytes is too large",
               (unsigned long long)payload_size);
        errno = EINVAL;
        return -1;
    }
    snprintf(s->name, sizeof s->name, "%s", name);
    int fd = open_exclusive(name, err, errlen);
    if (fd < 0)
        return -1;
    size_t total = DS4_SHM_HEADER_SIZE + (size_t)payload_size;
    void *base = MAP_FAILED;
    if (ftruncate(fd, (off_t)total) == 0)
        base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        int e = errno;
        ds4_seterr(err, errlen, "cannot size/map %s (%zu bytes): %s", name, total,
               strerror(e));
        close(fd);
        shm_unlink(name);
        errno = e;
        return -1;
    }
    s->fd = fd;
    s->writable = 1;
    s->map_size = total;
    s->hdr = base;
    s->payload = (uint8_t *)base + DS4_SHM_HEADER_SIZE;
    s->payload_size = payload_size;
    init_header(s, payload_size, flags);
    return 0;
}

/* Writer: mark PUBLISHING before changing the payload. */
void ds4_shm_begin_update(ds4_shm *s)
{
    struct ds4_shm_header *h = s->hdr;
    if (!h || !s->writable)
        return;
    __atomic_store_n(&h->state, DS4_SHM_STATE_PUBLISHING, __ATOMIC_RELEASE);
    reseal(h);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* Writer: checksums, generation++, then COMPLETE with release ordering so a
 * reader that sees COMPLETE also sees the payload. */
void ds4_shm_publish(ds4_shm *s)
{
    struct ds4_shm_header *h = s->hdr;
    if (!h || !s->writable)
        return;
    if (h->flags & DS4_SHM_F_CHECKSUM)
        h->payload_checksum = ds4_hash64(s->payload, s->payload_size, 0);
    __atomic_store_n(&h->generation, h->generation + 1, __ATOMIC_RELEASE);
    struct ds4_shm_header copy = *h;
    copy.state = DS4_SHM_STATE_COMPLETE;
    __atomic_store_n(&h->header_checksum, header_sum(&copy), __ATOMIC_RELEASE);
    __atomic_store_n(&h->state, DS4_SHM_STATE_COMPLETE, __ATOMIC_RELEASE);
}

/* Copy a consistent header out of the mapping, retrying while the writer
 * is between two stores; 0 ok, -1 invalid (message in err). */
static int snapshot_header(const ds4_shm *s, uint64_t file_size,
                           struct ds4_shm_header *out, char *err,
                           size_t errlen)
{
    for (int i = 0; i < HEADER_RETRIES; i++) {
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        memcpy(out, (const void *)s->hdr, sizeof *out);
        if (ds4_shm_header_check(out, file_size, err, errlen) == 0)
            return 0;
        if (memcmp(out->magic, DS4_SHM_MAGIC, 8) ||
            out->layout_version != DS4_SHM_VERSION)
            return -1; /* garbage never becomes valid by waiting */
        sched_yield();
    }
    return -1;
}

/* Map an existing segment and validate it. */
int ds4_shm_attach(ds4_shm *s, const char *name, unsigned mode, char *err,
                   size_t errlen)
{
    memset(s, 0, sizeof *s);
    s->fd = -1;
    if (valid_name(name, err, errlen))
        return -1;
    snprintf(s->name, sizeof s->name, "%s", name);
    int rw = (mode & DS4_SHM_RDWR) != 0;
    int fd = shm_open(name, (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        ds4_seterr(err, errlen, "cannot open segment %s: %s", name, strerror(e));
        errno = e;
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size < (off_t)DS4_SHM_HEADER_SIZE ||
        (uint64_t)st.st_size > DS4_SHM_HEADER_SIZE + DS4_SHM_PAYLOAD_MAX) {
        ds4_seterr(err, errlen, "segment %s: size %lld cannot hold a header", name,
               (long long)st.st_size);
        close(fd);
        errno = EINVAL;
        return -1;
    }
    void *base = mmap(NULL, (size_t)st.st_size,
                      PROT_READ | (rw ? PROT_WRITE : 0), MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        int e = errno;
        ds4_seterr(err, errlen, "cannot map segment %s: %s", name, strerror(e));
        close(fd);
        errno = e;
        return -1;
    }
    s->fd = fd;
    s->writable = rw;
    s->map_size = (size_t)st.st_size;
    s->hdr = base;
    struct ds4_shm_header h;
    char why[200];
    if (snapshot_header(s, (uint64_t)st.st_size, &h, why, sizeof why)) {
        ds4_seterr(err, errlen, "segment %s: %s", name, why);
        ds4_shm_detach(s);
        errno = EINVAL;
        return -1;
    }
    s->payload = (uint8_t *)base + DS4_SHM_HEADER_SIZE;
    s->payload_size = h.payload_size;
    if (!(mode & DS4_SHM_ANY_STATE) && h.state != DS4_SHM_STATE_COMPLETE) {
        ds4_seterr(err, errlen, "segment %s is still being published", name);
        ds4_shm_detach(s);
        errno = EAGAIN;
        return -1;
    }
    if ((mode & DS4_SHM_VERIFY) && (h.flags & DS4_SHM_F_CHECKSUM) &&
        ds4_hash64(s->payload, s->payload_size, 0) != h.payload_checksum) {
        ds4_seterr(err, errlen, "segment %s: payload checksum mismatch", name);
        ds4_shm_detach(s);
        errno = EINVAL;
        return -1;
    }
    return 0;
}

/* Unmap and close; leaves s zeroed with fd -1. */
void ds4_shm_detach(ds4_shm *s)
{
    if (s->hdr)
        munmap(s->hdr, s->map_size);
    if (s->fd >= 0)
        close(s->fd);
    memset(s, 0, sizeof *s);
    s->fd = -1;
}

/* Remove a segment name. */
int ds4_shm_unlink(const char *name)
{
    return shm_unlink(name);
}

/* Generation with acquire ordering. */
uint64_t ds4_shm_generation(const ds4_shm *s)
{
    return s->hdr ? __atomic_load_n(&s->hdr->generation, __ATOMIC_ACQUIRE) : 0;
}

/* Whether the segment is COMPLETE right now. */
int ds4_shm_complete(const ds4_shm *s)
{
    return s->hdr && __atomic_load_n(&s->hdr->state, __ATOMIC_ACQUIRE) ==
                         DS4_SHM_STATE_COMPLETE;
}

/* Recompute the payload checksum and compare. */
int ds4_shm_verify_payload(const ds4_shm *s)
{
    if (!s->hdr || !(s->hdr->flags & DS4_SHM_F_CHECKSUM))
        return -1;
    uint64_t want = __atomic_load_n(&s->hdr->payload_checksum, __ATOMIC_ACQUIRE);
    return ds4_hash64(s->payload, s->payload_size, 0) == want ? 0 : -1;
}

/* Remove every stale segment of ours in /dev/shm. */
int ds4_shm_cleanup_stale(uid_t uid, const char *instance)
{
    char prefix[128];
    if (instance)
        snprintf(prefix, sizeof prefix, "ds4-%u-%s-", (unsigned)uid, instance);
    else
        snprintf(prefix, sizeof prefix, "ds4-%u-", (unsigned)uid);
    DIR *d = opendir("/dev/shm");
    if (!d)
        return -1;
    int removed = 0;
    struct dirent *e;
    size_t plen = strlen(prefix);
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, prefix, plen) ||
            strlen(e->d_name) >= DS4_SHM_NAME_MAX)
            continue;
        char name[300];
        snprintf(name, sizeof name, "/%s", e->d_name);
        if (remove_if_stale(name, uid, NULL) == 1)
            removed++;
    }
    closedir(d);
    return removed;
}
