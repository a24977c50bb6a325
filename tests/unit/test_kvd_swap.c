/* test_kvd_swap.c - kvd's storage directory under change, through the real
 * daemon: KV_SET_DIR back and forth while two client threads put and look
 * up checkpoints (nothing acknowledged is lost, nothing served is wrong,
 * both directories whole afterwards), a transfer segment handed out before
 * a switch stays readable, a restart with a new --kv-disk-dir leaves the old
 * directory intact and usable again later, and the space budget
 * (--kv-disk-space-mb) through the daemon: never exceeded, the valuable
 * checkpoints (expensive to recompute, often hit) are the ones kept. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "hash.h"
#include "kvd/kv_format.h"
#include "kvd/kv_store.h"
#include "log.h"
#include "test.h"
#include "test_kvd_harness.h"
#include "util.h"

static const char *FP = "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";
static char inst[32];

/* Payload of checkpoint (loader t, number k, length n): deterministic. */
static uint8_t *make_payload(int t, int k, size_t len)
{
    uint8_t *p = ds4_xmalloc(len);
    uint64_t s = 0x1234567ull + (uint64_t)t * 1000003 + (uint64_t)k * 7919;
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)kvd_rnd(&s, 256);
    return p;
}

#define NLOAD 2
#define NPUT 24

struct loader {
    int t;
    const kvd_proc *p;
    int32_t seq[NPUT + 40]; /* checkpoint k = seq[0 .. 20 + k) */
    size_t len[NPUT];
    int acked[NPUT];
    int found, bad, errors;
    int done;
};

static void *load(void *arg)
{
    struct loader *l = arg;
    kv_client *c = kvd_client(l->p, 30000, l->t == 1);
    char err[512];
    for (int k = 0; k < NPUT && c; k++) {
        uint8_t *pay = make_payload(l->t, k, l->len[k]);
        kvc_meta m = {FP, NULL, "q2", "periodic", 10.0 * (k + 1)};
        kvc_stored st;
        if (kvc_put(c, l->seq, 20 + (size_t)k, pay, l->len[k], &m, &st, err, sizeof err) == 0)
            l->acked[k] = 1;
        else
            l->errors++;
        free(pay);
        /* look up the longest so far: whatever is served must be exact */
        kvc_query q = {FP, NULL, 0, 0};
        kvc_found f;
        int rc = kvc_lookup(c, l->seq, 20 + (size_t)k, &q, &f, err, sizeof err);
        if (rc == 1) {
            l->found++;
            int kk = (int)f.tokens - 20;
            uint8_t *want = kk >= 0 && kk < NPUT ? make_payload(l->t, kk, l->len[kk]) : NULL;
            if (!want || f.len != l->len[kk] || memcmp(f.data, want, f.len))
                l->bad++;
            free(want);
            kvc_found_free(&f);
        } else if (rc < 0) {
            l->errors++;
        }
    }
    kvc_close(c);
    __atomic_store_n(&l->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* Every checkpoint file in dir is whole; how many. */
static int check_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!kv_name_is_entry(e->d_name, NULL))
            continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        size_t len;
        uint8_t *b = test_read_file(p, &len);
        kv_hdr h;
        const uint8_t *pl;
        char err[256];
        CHECKF(b && kv_file_parse(b, len, &h, &pl, err, sizeof err) == 0, "%s: %s", p, err);
        free(b);
        n++;
    }
    if (d)
        closedir(d);
    return n;
}

/* Exact checkpoint (ids, n) with payload want in c's current directory. */
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

static void test_swap_under_load(const char *root)
{
    char run[600], a[600], b[600], c3[600];
    snprintf(run, sizeof run, "%s/run", root);
    snprintf(a, sizeof a, "%s/A", root);
    snprintf(b, sizeof b, "%s/B", root);
    snprintf(c3, sizeof c3, "%s/C", root);
    mkdir(run, 0700);
    kvd_proc p;
    const char *args[] = {"--kv-disk-space-mb", "0", NULL};
    if (kvd_start(&p, run, inst, a, args)) {
        CHECKF(0, "kvd does not start");
        return;
    }
    static struct loader L[NLOAD];
    uint64_t s = 42;
    for (int t = 0; t < NLOAD; t++) {
        memset(&L[t], 0, sizeof L[t]);
        L[t].t = t;
        L[t].p = &p;
        for (size_t i = 0; i < sizeof L[t].seq / sizeof L[t].seq[0]; i++)
            L[t].seq[i] = (int32_t)(t * 100000 + kvd_rnd(&s, 100000));
        for (int k = 0; k < NPUT; k++)
            L[t].len[k] = 20000 + kvd_rnd(&s, 150000);
    }
    /* a transfer segment handed out before the switches */
    kv_client *ctl = kvd_client(&p, 30000, 0);
    char err[512];
    uint8_t *p0 = make_payload(9, 0, 70000);
    int32_t ids0[30];
    for (int i = 0; i < 30; i++)
        ids0[i] = 7000000 + i;
    kvc_meta m = {FP, NULL, NULL, NULL, 5};
    kvc_stored st;
    CHECK(kvc_put(ctl, ids0, 30, p0, 70000, &m, &st, err, sizeof err) == 0);
    kvc_query q = {FP, NULL, 0, 0};
    kvc_found held;
    CHECK(kvc_lookup(ctl, ids0, 30, &q, &held, err, sizeof err) == 1);
    pthread_t th[NLOAD];
    for (int t = 0; t < NLOAD; t++)
        pthread_create(&th[t], NULL, load, &L[t]);
    /* switch back and forth while they work (at least 30 times, and until
     * both are done) */
    int swaps = 0, swap_fail = 0;
    for (int i = 0;; i++) {
        int busy = 0;
        for (int t = 0; t < NLOAD; t++)
            busy |= !__atomic_load_n(&L[t].done, __ATOMIC_ACQUIRE);
        if (i >= 30 && !busy)
            break;
        if (kvc_set_dir(ctl, i % 2 ? a : b, 1, err, sizeof err) == 0)
            swaps++;
        else {
            swap_fail++;
            fprintf(stderr, "set_dir: %s\n", err);
        }
    }
    for (int t = 0; t < NLOAD; t++)
        pthread_join(th[t], NULL);
    if (swaps % 2) /* end in A */
        swaps += kvc_set_dir(ctl, a, 1, err, sizeof err) == 0;
    CHECK(swaps >= 30 && swap_fail == 0);
    CHECK(held.len == 70000 && !memcmp(held.data, p0, 70000));
    kvc_found_free(&held);
    for (int t = 0; t < NLOAD; t++) {
        CHECKF(L[t].errors == 0 && L[t].bad == 0, "loader %d: %d errors, %d bad", t, L[t].errors,
               L[t].bad);
        for (int k = 0; k < NPUT; k++)
            CHECK(L[t].acked[k]);
    }
    json_t *js = kvc_stats(ctl, err, sizeof err);
    CHECK(json_integer_value(json_object_get(json_object_get(js, "counters"), "path_swaps")) ==
          swaps);
    json_decref(js);
    kvc_close(ctl);
    CHECK(kvd_stop(&p) == 0);
    /* every acknowledged checkpoint is in exactly one of A and B, exact */
    int where[NLOAD][NPUT] = {{0}};
    const char *dirs[2] = {a, b};
    for (int d = 0; d < 2; d++) {
        CHECK(kvd_start(&p, run, inst, dirs[d], args) == 0);
        kv_client *c = kvd_client(&p, 30000, 0);
        for (int t = 0; t < NLOAD; t++)
            for (int k = 0; k < NPUT; k++) {
                uint8_t *want = make_payload(t, k, L[t].len[k]);
                if (has_exact(c, L[t].seq, 20 + (size_t)k, want, L[t].len[k]))
                    where[t][k] |= 1 << d;
                free(want);
            }
        kvc_close(c);
        CHECK(kvd_stop(&p) == 0);
        char qd[700];
        snprintf(qd, sizeof qd, "%s/%s", dirs[d], KV_QUARANTINE);
        CHECK(kvd_count(dirs[d], ".tmp-") == 0 && kvd_count(qd, "") == 0);
    }
    int in_a = 0, in_b = 0;
    for (int t = 0; t < NLOAD; t++)
        for (int k = 0; k < NPUT; k++) {
            CHECKF(where[t][k] == 1 || where[t][k] == 2, "checkpoint %d/%d: in %d", t, k,
                   where[t][k]);
            in_a += where[t][k] == 1;
            in_b += where[t][k] == 2;
        }
    printf("swap under load: %d switches, %d checkpoints landed in A, %d in B\n", swaps, in_a,
           in_b);
    CHECK(check_files(a) + check_files(b) == NLOAD * NPUT + 1);

    /* restart with a new directory C; A is left alone and serves again */
    CHECK(kvd_start(&p, run, inst, c3, args) == 0);
    kv_client *c = kvd_client(&p, 30000, 0);
    CHECK(kvc_lookup(c, ids0, 30, &q, &held, err, sizeof err) == 0); /* A's, not here */
    uint8_t *pc = make_payload(8, 0, 1000);
    CHECK(kvc_put(c, ids0, 10, pc, 1000, &m, &st, err, sizeof err) == 0);
    kvc_close(c);
    CHECK(kvd_stop(&p) == 0);
    CHECK(kvd_start(&p, run, inst, a, args) == 0);
    c = kvd_client(&p, 30000, 0);
    CHECK(has_exact(c, ids0, 30, p0, 70000));
    for (int t = 0; t < NLOAD; t++)
        for (int k = 0; k < NPUT; k++)
            if (where[t][k] == 1) {
                uint8_t *want = make_payload(t, k, L[t].len[k]);
                CHECK(has_exact(c, L[t].seq, 20 + (size_t)k, want, L[t].len[k]));
                free(want);
            }
    CHECK(kvc_lookup(c, ids0, 10, &q, &held, err, sizeof err) == 0); /* C's stays in C */
    /* a switch to a directory locked by another kvd is refused, the old one
     * stays in use */
    kvd_proc p2;
    char run2[700];
    snprintf(run2, sizeof run2, "%s/run2", root);
    mkdir(run2, 0700);
    char inst2[48];
    snprintf(inst2, sizeof inst2, "%sb", inst);
    CHECK(kvd_start(&p2, run2, inst2, c3, args) == 0);
    CHECK(kvc_set_dir(c, c3, 0, err, sizeof err) == -1 &&
          kvc_errcode(c) == DS4W_E_INVALID_REQUEST && strstr(err, "in use"));
    CHECK(has_exact(c, ids0, 30, p0, 70000));
    /* and a second kvd on the same directory does not start */
    kvd_proc p3;
    char run3[700];
    snprintf(run3, sizeof run3, "%s/run3", root);
    mkdir(run3, 0700);
    char inst3[48];
    snprintf(inst3, sizeof inst3, "%sc", inst);
    CHECK(kvd_start(&p3, run3, inst3, c3, args) != 0 && p3.reaped && WIFEXITED(p3.status) &&
          WEXITSTATUS(p3.status) != 0);
    CHECK(kvd_stop(&p2) == 0);
    kvc_close(c);
    CHECK(kvd_stop(&p) == 0);
    free(pc);
    free(p0);
}

/* The budget through the daemon. Checkpoints of 300 KB in a 2 MiB budget
 * (6 fit): cheap ones churn, expensive or often-hit ones stay. Values
 * (cost/bytes x (1 + hits)): k % 10 == 0 cost 600 ms; k % 10 == 5 cost
 * 50 ms but looked up 3 times after every later put (63, 33, 3 hits at the
 * end); the rest 50 ms, never looked up. */
static void test_budget(const char *root)
{
    char run[600], dir[600];
    snprintf(run, sizeof run, "%s/runb", root);
    snprintf(dir, sizeof dir, "%s/budget", root);
    mkdir(run, 0700);
    kvd_proc p;
    const char *args[] = {"--kv-disk-space-mb", "2", NULL};
    if (kvd_start(&p, run, inst, dir, args)) {
        CHECKF(0, "kvd does not start");
        return;
    }
    kv_client *c = kvd_client(&p, 30000, 0);
    char err[512];
    enum { NB = 26, LEN = 300000 };
    static int32_t ids[NB][64];
    uint64_t s = 99;
    for (int k = 0; k < NB; k++)
        for (int i = 0; i < 64; i++)
            ids[k][i] = (int32_t)kvd_rnd(&s, 129280);
    unsigned evicted = 0;
    for (int k = 0; k < NB; k++) {
        uint8_t *pay = make_payload(5, k, LEN);
        kvc_meta m = {FP, NULL, NULL, NULL, k % 10 == 0 ? 600.0 : 50.0};
        kvc_stored st;
        CHECK(kvc_put(c, ids[k], 64, pay, LEN, &m, &st, err, sizeof err) == 0);
        evicted += st.evicted;
        free(pay);
        for (int j = 0; j <= k; j++)
            if (j % 10 == 5) {
                kvc_query q = {FP, NULL, 0, 0};
                kvc_found f;
                for (int h = 0; h < 3; h++)
                    if (kvc_lookup(c, ids[j], 64, &q, &f, err, sizeof err) == 1)
                        kvc_found_free(&f);
            }
        json_t *js = kvc_stats(c, err, sizeof err);
        json_t *info = json_object_get(js, "info");
        CHECKF(json_integer_value(json_object_get(info, "disk_bytes")) <= 2 << 20, "%lld",
               (long long)json_integer_value(json_object_get(info, "disk_bytes")));
        json_decref(js);
    }
    json_t *js = kvc_stats(c, err, sizeof err);
    json_t *cn = json_object_get(js, "counters");
    CHECK(json_integer_value(json_object_get(cn, "evictions")) == (json_int_t)evicted &&
          evicted == NB - 6 && json_integer_value(json_object_get(cn, "entries")) == 6);
    json_decref(js);
    /* survivors: the three expensive ones, the three often-hit ones */
    for (int k = 0; k < NB; k++) {
        uint8_t *want = make_payload(5, k, LEN);
        int has = has_exact(c, ids[k], 64, want, LEN);
        free(want);
        int valuable = k % 10 == 0 || k % 10 == 5;
        CHECKF(has == valuable, "checkpoint %d: %s", k, has ? "kept" : "evicted");
    }
    /* larger than the whole budget: refused, nothing evicted for it */
    uint8_t *huge = ds4_xcalloc(1, 3 << 20);
    kvc_meta m = {FP, NULL, NULL, NULL, 1};
    kvc_stored st;
    CHECK(kvc_put(c, ids[0], 10, huge, 3 << 20, &m, &st, err, sizeof err) == -1 &&
          kvc_errcode(c) == DS4W_E_TOO_LARGE);
    free(huge);
    kvc_close(c);
    CHECK(kvd_stop(&p) == 0);
    /* the files agree, and a restart with a smaller budget evicts down to
     * it, keeping the most valuable (hits are remembered on the files) */
    uint64_t used = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        struct stat stt;
        char pth[1024];
        snprintf(pth, sizeof pth, "%s/%s", dir, e->d_name);
        if (kv_name_is_entry(e->d_name, NULL) && !stat(pth, &stt))
            used += kv_disk_bytes((uint64_t)stt.st_size);
    }
    if (d)
        closedir(d);
    CHECK(used <= 2 << 20 && used > 0);
    const char *args1[] = {"--kv-disk-space-mb", "1", NULL};
    CHECK(kvd_start(&p, run, inst, dir, args1) == 0);
    c = kvd_client(&p, 30000, 0);
    js = kvc_stats(c, err, sizeof err);
    CHECK(json_integer_value(json_object_get(json_object_get(js, "info"), "entries")) == 3 &&
          json_integer_value(json_object_get(json_object_get(js, "info"), "disk_bytes")) <=
              1 << 20);
    json_decref(js);
    /* 1 MiB holds 3: the two most hit (63 and 33 hits: 50 ms x 64 beats
     * 600 ms x 1) and the newest expensive one; the one with 3 hits goes.
     * Only where the filesystem keeps user xattrs (hits live there). */
    int xattrs = setxattr(dir, "user.ds4kv.probe", "1", 1, 0) == 0 || errno != ENOTSUP;
    int want_keep[NB] = {0};
    want_keep[5] = want_keep[15] = want_keep[20] = 1;
    for (int k = 0; xattrs && k < NB; k++) {
        uint8_t *want = make_payload(5, k, LEN);
        int has = has_exact(c, ids[k], 64, want, LEN);
        free(want);
        CHECKF(has == want_keep[k], "after the restart, checkpoint %d: %s", k,
               has ? "kept" : "evicted");
    }
    if (!xattrs)
        printf("test_kvd_swap: no user xattrs on %s: hit counts are not kept across restarts\n",
               dir);
    kvc_close(c);
    CHECK(kvd_stop(&p) == 0);
}

int main(void)
{
    ds4_log_set_level(getenv("DS4_TEST_VERBOSE") ? DS4_LOG_DEBUG : DS4_LOG_ERROR);
    snprintf(inst, sizeof inst, "kvds%d", (int)getpid());
    char root[] = "/tmp/ds4-kvd-swap-XXXXXX";
    if (!mkdtemp(root)) {
        CHECK(0);
        return test_main_end("test_kvd_swap");
    }
    test_swap_under_load(root);
    test_budget(root);
    kvd_rm_rf(root);
    CHECK(kvd_count_shm(inst, "") == 0);
    return test_main_end("test_kvd_swap");
}
