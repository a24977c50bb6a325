/* test_kvd_diskfull.c - kvd on a full disk: a small tmpfs mounted in a
 * private mount namespace (unshare, as `unshare -m` does; as root directly,
 * otherwise inside a new user namespace) holds kvd's directory. Puts fail
 * cleanly with ERROR internal naming the cause, leave no temp file, and
 * kvd keeps serving what it has; a smaller checkpoint that fits is stored
 * afterwards; switching to a directory with room works, and switching back
 * finds everything intact. Then a full /dev/shm (a small tmpfs mounted on
 * it): a lookup that needs a transfer segment is answered with ERROR, not
 * a crash, and inline lookups go on.
 *
 * If no mount namespace can be had here, the test says so loudly on stderr
 * and in its output line and checks nothing else (it cannot make a disk
 * full without one). */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvd/kv_format.h"
#include "kvd/kv_store.h"
#include "log.h"
#include "test.h"
#include "test_kvd_harness.h"
#include "util.h"

static const char *FP = "d15cf011d15cf011d15cf011d15cf011d15cf011d15cf011d15cf011d15cf011";
static char inst[32];

struct mnt {
    const char *target;
    const char *size;
    const char *shm_size; /* also a small tmpfs on /dev/shm, or NULL */
    int pipe_w; /* the child reports its setup here: 'R' root, 'U' userns, 'E' failed */
    char why[200];
};

static int write_file(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, s, strlen(s));
    close(fd);
    return n == (ssize_t)strlen(s) ? 0 : -1;
}

/* In the child: a private mount namespace with a small tmpfs on target. */
static int mount_small(void *arg)
{
    struct mnt *m = arg;
    char how = 'R';
    uid_t uid = getuid();
    gid_t gid = getgid();
    if (unshare(CLONE_NEWNS)) {
        /* not root: a user namespace gives the capability for our own
         * mounts; map our ids to themselves so names stay the same */
        how = 'U';
        char map[64];
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS))
            goto fail;
        snprintf(map, sizeof map, "%u %u 1", (unsigned)uid, (unsigned)uid);
        if (write_file("/proc/self/setgroups", "deny") ||
            write_file("/proc/self/uid_map", map))
            goto fail;
        snprintf(map, sizeof map, "%u %u 1", (unsigned)gid, (unsigned)gid);
        if (write_file("/proc/self/gid_map", map))
            goto fail;
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))
        goto fail;
    char opts[64];
    if (m->target) {
        snprintf(opts, sizeof opts, "size=%s,mode=0700", m->size);
        if (mount("kvd-diskfull", m->target, "tmpfs", MS_NOSUID | MS_NODEV, opts))
            goto fail;
    }
    if (m->shm_size) {
        snprintf(opts, sizeof opts, "size=%s,mode=1777", m->shm_size);
        if (mount("kvd-shmfull", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, opts))
            goto fail;
    }
    (void)!write(m->pipe_w, &how, 1);
    close(m->pipe_w);
    return 0;
fail:;
    char msg[220];
    int n = snprintf(msg, sizeof msg, "E%s (%s)", strerror(errno),
                     how == 'R' ? "unshare(CLONE_NEWNS)" : "user namespace");
    (void)!write(m->pipe_w, msg, (size_t)n);
    close(m->pipe_w);
    return 99;
}

static uint8_t *payload(int k, size_t len)
{
    uint8_t *p = ds4_xmalloc(len);
    uint64_t s = 777 + (uint64_t)k;
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)kvd_rnd(&s, 256);
    return p;
}

static int has_exact(kv_client *c, const int32_t *ids, size_t n, const uint8_t *want, size_t len)
{
    kvc_query q = {FP, NULL, 0, 0};
    kvc_found f;
    char err[256];
    int rc = kvc_lookup(c, ids, n, &q, &f, err, sizeof err);
    int ok = rc == 1 && f.tokens == n && f.len == len && !memcmp(f.data, want, len);
    if (rc == 1)
        kvc_found_free(&f);
    return ok;
}

int main(void)
{
    ds4_log_set_level(getenv("DS4_TEST_VERBOSE") ? DS4_LOG_DEBUG : DS4_LOG_ERROR);
    snprintf(inst, sizeof inst, "kvdd%d", (int)getpid());
    char root[] = "/tmp/ds4-kvd-full-XXXXXX";
    if (!mkdtemp(root)) {
        CHECK(0);
        return test_main_end("test_kvd_diskfull");
    }
    char run[600], full[600], kv[700], other[600];
    snprintf(run, sizeof run, "%s/run", root);
    snprintf(full, sizeof full, "%s/full", root);
    snprintf(kv, sizeof kv, "%s/kv", full);
    snprintf(other, sizeof other, "%s/other", root);
    mkdir(run, 0700);
    mkdir(full, 0700);
    int pp[2];
    CHECK(pipe2(pp, O_CLOEXEC) == 0);
    struct mnt m = {full, "1000k", NULL, pp[1], ""};
    kvd_proc p;
    const char *args[] = {"--kv-disk-space-mb", "100", NULL};
    int up = kvd_start_ex(&p, run, inst, kv, args, NULL, mount_small, &m) == 0;
    close(pp[1]);
    char rep[256] = "";
    ssize_t rn = read(pp[0], rep, sizeof rep - 1);
    close(pp[0]);
    rep[rn > 0 ? rn : 0] = 0;
    if (rep[0] == 'E' || rep[0] == 0) {
        fprintf(stderr,
                "\n**********************************************************************\n"
                "** test_kvd_diskfull: DISK-FULL TEST NOT RUN: no private mount namespace\n"
                "** for a small tmpfs here: %s\n"
                "** (needs root, or unprivileged user namespaces)\n"
                "**********************************************************************\n\n",
                rep[0] ? rep + 1 : "setup did not report");
        printf("NOT RUN test_kvd_diskfull: cannot mount a small tmpfs (%s)\n",
               rep[0] ? rep + 1 : "?");
        if (p.pid && !p.reaped)
            kvd_kill9(&p);
        kvd_rm_rf(root);
        return test_main_end("test_kvd_diskfull");
    }
    CHECKF(up, "kvd did not start on the tmpfs (status 0x%x)", p.status);
    if (!up) {
        kvd_rm_rf(root);
        return test_main_end("test_kvd_diskfull");
    }
    /* kvd's view of its directory (the tmpfs is only in its namespace) */
    char view[800];
    snprintf(view, sizeof view, "/proc/%d/root%s", (int)p.pid, kv);
    kv_client *c = kvd_client(&p, 20000, 0);
    char err[512];
    enum { LEN = 400000 };
    int32_t ids[8][40];
    for (int k = 0; k < 8; k++)
        for (int i = 0; i < 40; i++)
            ids[k][i] = k * 1000 + i;
    int stored = 0, failed_at = -1;
    for (int k = 0; k < 8; k++) {
        uint8_t *pay = payload(k, LEN);
        kvc_meta mm = {FP, NULL, NULL, "cold", 100};
        kvc_stored st;
        int rc = kvc_put(c, ids[k], 40, pay, LEN, &mm, &st, err, sizeof err);
        free(pay);
        if (rc) {
            failed_at = k;
            CHECKF(kvc_errcode(c) == DS4W_E_INTERNAL, "code %d: %s", kvc_errcode(c), err);
            CHECKF(strstr(err, "No space left") != NULL, "error does not name the cause: %s",
                   err);
            break;
        }
        stored++;
    }
    printf("disk full (%s): %d checkpoints of %d KB stored in a 1000 KB tmpfs, then: %s\n",
           rep[0] == 'R' ? "root, unshare" : "user namespace", stored, LEN / 1000,
           failed_at >= 0 ? "ERROR internal" : "no error!");
    CHECK(failed_at >= 1 && stored == failed_at);
    /* nothing half-written is left, kvd serves on */
    CHECK(kvd_count(view, ".tmp-") == 0);
    CHECK(kvc_ping(c, err, sizeof err) == 0);
    for (int k = 0; k < stored; k++) {
        uint8_t *pay = payload(k, LEN);
        CHECKF(has_exact(c, ids[k], 40, pay, LEN), "checkpoint %d lost after the full disk", k);
        free(pay);
    }
    /* a repeat of the failed one fails the same way; a small one fits */
    uint8_t *pay = payload(failed_at, LEN);
    kvc_meta mm = {FP, NULL, NULL, "cold", 100};
    kvc_stored st;
    CHECK(kvc_put(c, ids[failed_at], 40, pay, LEN, &mm, &st, err, sizeof err) == -1 &&
          kvc_errcode(c) == DS4W_E_INTERNAL);
    free(pay);
    uint8_t *small = payload(50, 10000);
    CHECKF(kvc_put(c, ids[7], 5, small, 10000, &mm, &st, err, sizeof err) == 0, "%s", err);
    CHECK(has_exact(c, ids[7], 5, small, 10000));
    json_t *js = kvc_stats(c, err, sizeof err);
    CHECK(json_integer_value(json_object_get(json_object_get(js, "counters"), "save_errors")) ==
          2);
    json_decref(js);
    /* a directory with room: the big one goes there; back on the full one,
     * everything is as it was */
    CHECK(kvc_set_dir(c, other, 1, err, sizeof err) == 0);
    pay = payload(failed_at, LEN);
    CHECKF(kvc_put(c, ids[failed_at], 40, pay, LEN, &mm, &st, err, sizeof err) == 0, "%s", err);
    CHECK(kvc_set_dir(c, kv, 0, err, sizeof err) == 0);
    CHECK(!has_exact(c, ids[failed_at], 40, pay, LEN));
    free(pay);
    for (int k = 0; k < stored; k++) {
        pay = payload(k, LEN);
        CHECK(has_exact(c, ids[k], 40, pay, LEN));
        free(pay);
    }
    CHECK(has_exact(c, ids[7], 5, small, 10000));
    free(small);
    CHECK(kvd_count(view, ".tmp-") == 0);
    char qv[900];
    snprintf(qv, sizeof qv, "%s/%s", view, KV_QUARANTINE);
    CHECK(kvd_count(qv, "") == 0);
    kvc_close(c);
    CHECK(kvd_stop(&p) == 0); /* the tmpfs goes with its namespace */

    /* a full /dev/shm: a lookup that needs a transfer segment fails with
     * an ERROR (never a SIGBUS), kvd serves on (inline) */
    int pq[2];
    CHECK(pipe2(pq, O_CLOEXEC) == 0);
    struct mnt m2 = {NULL, NULL, "512k", pq[1], ""};
    char kv2[700];
    snprintf(kv2, sizeof kv2, "%s/kv2", root);
    up = kvd_start_ex(&p, run, inst, kv2, args, NULL, mount_small, &m2) == 0;
    close(pq[1]);
    rn = read(pq[0], rep, sizeof rep - 1);
    close(pq[0]);
    rep[rn > 0 ? rn : 0] = 0;
    CHECKF(up && rep[0] != 'E', "kvd on a small /dev/shm: %s", rep);
    if (up) {
        kv_client *ci = kvd_client(&p, 20000, 1), *cs = kvd_client(&p, 20000, 0);
        uint8_t *big = payload(60, 2u << 20);
        kvc_meta m3 = {FP, NULL, NULL, "cold", 100};
        CHECKF(kvc_put(ci, ids[0], 40, big, 2u << 20, &m3, &st, err, sizeof err) == 0, "%s", err);
        kvc_query q = {FP, NULL, 0, 0};
        kvc_found f;
        CHECK(kvc_lookup(cs, ids[0], 40, &q, &f, err, sizeof err) == -1 &&
              kvc_errcode(cs) == DS4W_E_INTERNAL && strstr(err, "shared memory"));
        CHECK(kvc_ping(cs, err, sizeof err) == 0);
        CHECK(has_exact(ci, ids[0], 40, big, 2u << 20));
        free(big);
        kvc_close(ci);
        kvc_close(cs);
        CHECK(kvd_stop(&p) == 0);
    }
    kvd_rm_rf(root);
    CHECK(kvd_count_shm(inst, "") == 0);
    return test_main_end("test_kvd_diskfull");
}
