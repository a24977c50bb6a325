/* test_shm.c - shared-memory segments: naming, create/publish/attach with a
 * random payload, generations, checksums, refusal of garbage and hostile
 * headers, replacement of a dead creator's segment, stale cleanup. */
#include "hash.h"
#include "shm.h"
#include "test.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char inst[32];
static unsigned seed = 20261125u;

/* Full segment name for a purpose in this test's instance. */
static const char *seg(const char *purpose)
{
    static char names[8][DS4_SHM_NAME_MAX];
    static int k;
    char *n = names[k++ % 8];
    char err[256];
    if (ds4_shm_name(n, DS4_SHM_NAME_MAX, inst, purpose, err, sizeof err))
        fprintf(stderr, "name: %s\n", err);
    return n;
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rand_r(&seed);
}

static void test_names(void)
{
    char out[DS4_SHM_NAME_MAX], err[256], want[64];
    CHECK(ds4_shm_name(out, sizeof out, "prod", "stats-engined", err, sizeof err) == 0);
    snprintf(want, sizeof want, "/ds4-%u-prod-stats-engined", (unsigned)getuid());
    CHECK(!strcmp(out, want));
    CHECK(ds4_shm_name(out, sizeof out, "a-b", "x", err, sizeof err) == -1 &&
          strstr(err, "instance"));
    CHECK(ds4_shm_name(out, sizeof out, "", "x", err, sizeof err) == -1);
    CHECK(ds4_shm_name(out, sizeof out, "a", "x/y", err, sizeof err) == -1 &&
          strstr(err, "purpose"));
    CHECK(ds4_shm_name(out, 10, "a", "longpurpose", err, sizeof err) == -1);
    ds4_shm s;
    CHECK(ds4_shm_create(&s, "noslash", 10, 0, err, sizeof err) == -1);
    CHECK(ds4_shm_attach(&s, "/a/b", 0, err, sizeof err) == -1);
}

static void test_roundtrip(void)
{
    char err[256];
    ds4_shm w, r;
    const char *name = seg("rt");
    size_t n = 100000 + (size_t)(rand_r(&seed) % 1000);
    CHECK(ds4_shm_create(&w, name, n, DS4_SHM_F_CHECKSUM, err, sizeof err) == 0);
    if (!w.hdr)
        return;
    CHECK(w.payload_size == n && w.hdr->creator_pid == (uint32_t)getpid());
    CHECK(w.hdr->creator_start != 0 && w.hdr->state == DS4_SHM_STATE_PUBLISHING);
    CHECK(!strcmp(w.hdr->purpose, "rt"));
    /* Not yet published: EAGAIN, unless any state is accepted. */
    errno = 0;
    CHECK(ds4_shm_attach(&r, name, DS4_SHM_RDONLY, err, sizeof err) == -1 &&
          errno == EAGAIN && strstr(err, "being published"));
    CHECK(ds4_shm_attach(&r, name, DS4_SHM_ANY_STATE, err, sizeof err) == 0);
    ds4_shm_detach(&r);

    fill_random(w.payload, n);
    ds4_shm_publish(&w);
    CHECK(ds4_shm_generation(&w) == 1 && ds4_shm_complete(&w));
    CHECK(w.hdr->payload_checksum == ds4_hash64(w.payload, n, 0));

    CHECK(ds4_shm_attach(&r, name, DS4_SHM_RDONLY | DS4_SHM_VERIFY, err, sizeof err) == 0);
    CHECK(r.payload_size == n && !memcmp(r.payload, w.payload, n) && !r.writable);
    CHECK(ds4_shm_generation(&r) == 1 && ds4_shm_verify_payload(&r) == 0);

    /* Republish: readers see the state flip and the generation move. */
    ds4_shm_begin_update(&w);
    CHECK(!ds4_shm_complete(&r));
    w.payload[17] ^= 0x55;
    ds4_shm_publish(&w);
    CHECK(ds4_shm_complete(&r) && ds4_shm_generation(&r) == 2);
    CHECK(r.payload[17] == w.payload[17] && ds4_shm_verify_payload(&r) == 0);
    ds4_shm_detach(&r);

    /* A payload changed behind the writer's back fails verification only
     * when asked for. */
    w.payload[n - 1] ^= 1;
    CHECK(ds4_shm_attach(&r, name, DS4_SHM_VERIFY, err, sizeof err) == -1 &&
          strstr(err, "payload checksum"));
    CHECK(ds4_shm_attach(&r, name, DS4_SHM_RDWR, err, sizeof err) == 0 && r.writable);
    ds4_shm_detach(&r);
    ds4_shm_detach(&r); /* detaching twice is harmless */

    /* Our own live segment cannot be re-created. */
    ds4_shm w2;
    errno = 0;
    CHECK(ds4_shm_create(&w2, name, 16, 0, err, sizeof err) == -1 && errno == EEXIST &&
          strstr(err, "alive"));
    ds4_shm_detach(&w);
    CHECK(ds4_shm_unlink(name) == 0);
    errno = 0;
    CHECK(ds4_shm_attach(&r, name, 0, err, sizeof err) == -1 && errno == ENOENT);
}

/* Write raw bytes as a segment (as a hostile or crashed process would). */
static void put_raw(const char *name, const void *data, size_t n)
{
    shm_unlink(name);
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    CHECK(ftruncate(fd, (off_t)n) == 0);
    if (n)
        CHECK(pwrite(fd, data, n, 0) == (ssize_t)n);
    close(fd);
}

/* Build a valid published image of payload n in buf (for mutation). */
static size_t valid_image(uint8_t *buf, size_t cap, size_t n)
{
    char err[256];
    ds4_shm w;
    const char *name = seg("img");
    if (ds4_shm_create(&w, name, n, DS4_SHM_F_CHECKSUM, err, sizeof err))
        return 0;
    fill_random(w.payload, n);
    ds4_shm_publish(&w);
    size_t total = DS4_SHM_HEADER_SIZE + n;
    memcpy(buf, w.hdr, total < cap ? total : cap);
    ds4_shm_detach(&w);
    ds4_shm_unlink(name);
    return total;
}

/* Attach must fail with a message, never crash. */
static int attach_fails(const char *name, unsigned mode)
{
    ds4_shm r;
    char err[256] = "";
    int rc = ds4_shm_attach(&r, name, mode, err, sizeof err);
    if (rc == 0)
        ds4_shm_detach(&r);
    return rc == -1 && err[0];
}

static void test_garbage(void)
{
    const char *name = seg("garbage");
    static uint8_t buf[8192], img[8192];
    /* Random bytes of many sizes, including empty and header-sized. */
    size_t sizes[] = {0, 1, 64, 127, 128, 129, 4096, 8192};
    for (size_t i = 0; i < DS4_ARRAY_LEN(sizes); i++) {
        fill_random(buf, sizes[i]);
        put_raw(name, buf, sizes[i]);
        CHECKF(attach_fails(name, DS4_SHM_VERIFY), "size %zu", sizes[i]);
    }
    size_t total = valid_image(img, sizeof img, 1000);
    CHECK(total == 1128);
    put_raw(name, img, total);
    CHECK(!attach_fails(name, DS4_SHM_VERIFY)); /* the pristine image is fine */

    /* Every single-byte change of the header is caught. */
    int missed = 0;
    for (size_t off = 0; off < DS4_SHM_HEADER_SIZE; off++) {
        memcpy(buf, img, total);
        buf[off] ^= (uint8_t)(1 + rand_r(&seed) % 255);
        put_raw(name, buf, total);
        missed += !attach_fails(name, DS4_SHM_VERIFY);
    }
    CHECKF(missed == 0, "%d header mutations accepted", missed);

    /* Hostile but self-consistent header: huge sizes with a valid checksum. */
    struct ds4_shm_header h;
    memcpy(&h, img, sizeof h);
    h.payload_size = (1ull << 62);
    h.total_size = h.payload_size + 128;
    h.header_checksum = ds4_hash64(&h, offsetof(struct ds4_shm_header, header_checksum), 0);
    memcpy(buf, img, total);
    memcpy(buf, &h, sizeof h);
    put_raw(name, buf, total);
    CHECK(attach_fails(name, 0));
    /* Sizes that claim more than the file holds. */
    memcpy(&h, img, sizeof h);
    h.payload_size += 4096;
    h.total_size += 4096;
    h.header_checksum = ds4_hash64(&h, offsetof(struct ds4_shm_header, header_checksum), 0);
    memcpy(buf, &h, sizeof h);
    put_raw(name, buf, total);
    CHECK(attach_fails(name, 0));
    /* Truncated segment (file shorter than the header says). */
    put_raw(name, img, total - 10);
    CHECK(attach_fails(name, 0));
    /* Corrupt payload: caught only with VERIFY. */
    memcpy(buf, img, total);
    buf[total - 1] ^= 0x80;
    put_raw(name, buf, total);
    CHECK(attach_fails(name, DS4_SHM_VERIFY));
    CHECK(!attach_fails(name, 0));
    /* Garbage whose magic and version are right. */
    for (int k = 0; k < 50; k++) {
        fill_random(buf, total);
        memcpy(buf, DS4_SHM_MAGIC, 8);
        uint32_t v = DS4_SHM_VERSION;
        memcpy(buf + 8, &v, 4);
        put_raw(name, buf, total);
        CHECK(attach_fails(name, DS4_SHM_VERIFY));
    }
    shm_unlink(name);
}

/* A child creates a segment and dies without cleaning up. */
static pid_t dead_creator(const char *name)
{
    pid_t pid = fork();
    if (pid == 0) {
        ds4_shm w;
        char err[256];
        if (ds4_shm_create(&w, name, 4096, 0, err, sizeof err))
            _exit(1);
        fill_random(w.payload, 4096);
        ds4_shm_publish(&w);
        _exit(0);
    }
    int st = -1;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    return pid;
}

static void test_stale(void)
{
    char err[256];
    const char *a = seg("stale-a"), *b = seg("stale-b"), *live = seg("live");
    pid_t dead = dead_creator(a);
    dead_creator(b);

    /* The dead creator's segment is readable but reported dead ... */
    ds4_shm r;
    CHECK(ds4_shm_attach(&r, a, 0, err, sizeof err) == 0);
    CHECK(r.hdr && r.hdr->creator_pid == (uint32_t)dead &&
          !ds4_shm_creator_alive(r.hdr));
    /* ... and a new creator replaces it. */
    ds4_shm w;
    CHECK(ds4_shm_create(&w, a, 256, 0, err, sizeof err) == 0);
    CHECK(w.hdr && w.hdr->creator_pid == (uint32_t)getpid() && w.payload_size == 256);
    CHECK(ds4_shm_creator_alive(w.hdr));
    ds4_shm_publish(&w);
    ds4_shm_detach(&r);
    ds4_shm_detach(&w);

    /* A header with a live pid but another start time is a reused pid. */
    ds4_shm l;
    CHECK(ds4_shm_create(&l, live, 64, 0, err, sizeof err) == 0);
    struct ds4_shm_header h = *l.hdr;
    h.creator_start += 1;
    CHECK(!ds4_shm_creator_alive(&h));
    h.creator_pid = 0;
    CHECK(!ds4_shm_creator_alive(&h));
    uint64_t st0;
    CHECK(ds4_proc_start_time(getpid(), &st0) == 0 && st0 == l.hdr->creator_start);
    CHECK(ds4_proc_start_time(dead, &st0) == -1);

    /* Garbage under our prefix is stale too. */
    const char *junk = seg("junk");
    uint8_t g[300];
    fill_random(g, sizeof g);
    put_raw(junk, g, sizeof g);

    /* Cleanup removes b and junk, keeps our live ones (a, live). */
    int removed = ds4_shm_cleanup_stale(getuid(), inst);
    CHECKF(removed == 2, "removed %d", removed);
    CHECK(!attach_fails(a, 0));
    CHECK(!attach_fails(live, DS4_SHM_ANY_STATE));
    CHECK(shm_open(b, O_RDONLY, 0) == -1 && errno == ENOENT);
    CHECK(shm_open(junk, O_RDONLY, 0) == -1 && errno == ENOENT);
    CHECK(ds4_shm_cleanup_stale(getuid(), inst) == 0);
    ds4_shm_detach(&l);
    shm_unlink(a);
    shm_unlink(live);
}

int main(void)
{
    snprintf(inst, sizeof inst, "tshm%ld", (long)getpid());
    test_names();
    test_roundtrip();
    test_garbage();
    test_stale();
    return test_main_end("test_shm");
}
