/* test_kvd_fault.c - kill -9 of kvd at every crash point of a workload
 * that writes, replaces, evicts, quarantines and switches directories,
 * then restart and check: nothing half-written is served or even left in
 * the directory, every acknowledged checkpoint is there with its exact
 * payload (unless the workload's own eviction removed it), no temp file
 * survives, nothing of ours was quarantined, the budget holds.
 *
 * The crash points come from kvd itself (kv_crashpoint, --test-mode,
 * DS4_KVD_CRASH_AT=N): a clean run of the workload reports how many it
 * passed, then the workload is rerun once per point with kvd killed there.
 * The workload is deterministic, so the N-th point is the same step every
 * time. */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "kvd/kv_format.h"
#include "kvd/kv_store.h"
#include "log.h"
#include "test.h"
#include "test_kvd_harness.h"
#include "util.h"

static const char *FP = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
#define PLANTED "0000000000000000-aaaaaaaaaaaaaaaa.kv"
#define PAYLEN 300000u /* 4 files of this size exceed the 1 MiB budget, 3 fit */

static char inst[32];
static int32_t S1[2000], S2[2000];

/* The checkpoints the workload writes. */
enum { E1, E2, E3, E4, E2B, E6, E7, NE };
static const struct {
    const int32_t *seq;
    uint32_t n;
    double cost_ms;
    int in_b; /* written to directory B */
} ENT[NE] = {
    [E1] = {S1, 300, 1, 0},     [E2] = {S1, 600, 5000, 0}, [E3] = {S2, 300, 3000, 0},
    [E4] = {S2, 900, 2000, 0},  [E2B] = {S1, 600, 5000, 0}, [E6] = {S1, 100, 100, 1},
    [E7] = {S2, 50, 100, 0},
};

static uint8_t *PAY[NE];

/* What happened in one run of the workload. */
struct run {
    int started[NE + 4]; /* per step: the request was sent */
    int acked[NE + 4];   /* per step: the reply said it was done */
};

/* Steps, in order. */
enum { ST_PUT1, ST_PUT2, ST_PUT3, ST_LOOK, ST_PUT4, ST_PUT2B, ST_TOB, ST_PUT6, ST_TOA, ST_PUT7, NST };
static const int STEP_ENT[NST] = {E1, E2, E3, -1, E4, E2B, -1, E6, -1, E7};

/* Run the workload until it ends or kvd stops answering. */
static void workload(const kvd_proc *p, const char *dir_b, const char *dir_a, struct run *r)
{
    memset(r, 0, sizeof *r);
    kv_client *c = kvd_client(p, 20000, 0);
    if (!c)
        return;
    char err[512];
    for (int s = 0; s < NST; s++) {
        r->started[s] = 1;
        int ok;
        if (s == ST_LOOK) {
            kvc_query q = {FP, NULL, 0, 0};
            kvc_found f;
            ok = kvc_lookup(c, S1, 1000, &q, &f, err, sizeof err) == 1;
            if (ok)
                CHECK(f.tokens == 600 && f.len == PAYLEN && !memcmp(f.data, PAY[E2], PAYLEN));
            kvc_found_free(&f);
        } else if (s == ST_TOB || s == ST_TOA) {
            ok = kvc_set_dir(c, s == ST_TOB ? dir_b : dir_a, 1, err, sizeof err) == 0;
        } else {
            int e = STEP_ENT[s];
            kvc_meta m = {FP, NULL, "q2", "cold", ENT[e].cost_ms};
            kvc_stored st;
            ok = kvc_put(c, ENT[e].seq, ENT[e].n, PAY[e], PAYLEN, &m, &st, err, sizeof err) == 0;
        }
        if (!ok)
            break;
        r->acked[s] = 1;
    }
    kvc_close(c);
}

/* Crash points passed by a clean run (from KV_STATS). */
static long crash_points(const kvd_proc *p)
{
    kv_client *c = kvd_client(p, 20000, 0);
    char err[256];
    json_t *s = c ? kvc_stats(c, err, sizeof err) : NULL;
    long n = (long)json_integer_value(json_object_get(json_object_get(s, "info"), "crash_points"));
    json_decref(s);
    kvc_close(c);
    return n;
}

/* Every checkpoint file in dir must be whole and correct. */
static int check_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
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
    closedir(d);
    return n;
}

/* Sum of budget bytes of the directory's files (entries and quarantine). */
static uint64_t used_bytes(const char *dir)
{
    uint64_t sum = 0;
    const char *subs[] = {"", "/" KV_QUARANTINE};
    for (int k = 0; k < 2; k++) {
        char dd[600];
        snprintf(dd, sizeof dd, "%s%s", dir, subs[k]);
        DIR *d = opendir(dd);
        if (!d)
            continue;
        struct dirent *e;
        while ((e = readdir(d))) {
            char p[1024];
            struct stat st;
            snprintf(p, sizeof p, "%s/%s", dd, e->d_name);
            if (e->d_name[0] != '.' && !lstat(p, &st) && !S_ISDIR(st.st_mode))
                sum += kv_disk_bytes((uint64_t)st.st_size);
        }
        closedir(d);
    }
    return sum;
}

/* The payload served for ENT[e]'s ids: 1 found with exactly its length
 * (*which = index of the payload matched, -1 none), 0 not there. */
static int probe(kv_client *c, int e, int *which)
{
    kvc_query q = {FP, NULL, 0, 0};
    kvc_found f;
    char err[256];
    *which = -1;
    int rc = kvc_lookup(c, ENT[e].seq, ENT[e].n, &q, &f, err, sizeof err);
    CHECKF(rc >= 0, "lookup failed: %s", err);
    if (rc != 1)
        return 0;
    if (f.tokens != ENT[e].n) {
        kvc_found_free(&f);
        return 0;
    }
    for (int k = 0; k < NE; k++)
        if (f.len == PAYLEN && !memcmp(f.data, PAY[k], PAYLEN))
            *which = k;
    kvc_found_free(&f);
    return 1;
}

/* Lookups through an in-process store (directory B). */
static void *m_alloc(void *arg, uint64_t size, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    uint8_t **b = arg;
    *b = ds4_xmalloc(size ? (size_t)size : 1);
    return *b;
}
static void m_discard(void *arg, void *dest)
{
    uint8_t **b = arg;
    free(dest);
    *b = NULL;
}

static int probe_b(kv_store *s, int e, int *which)
{
    uint8_t *buf = NULL;
    kv_sink sink = {m_alloc, m_discard, &buf};
    kv_query q = {FP, NULL, 0, 0};
    kv_found f;
    const char *why;
    char err[256];
    *which = -1;
    int rc = kv_store_lookup(s, ENT[e].seq, ENT[e].n, &q, &sink, &f, &why, err, sizeof err);
    CHECK(rc >= 0);
    if (rc != 1)
        return 0;
    int full = f.h.n_tokens == ENT[e].n;
    for (int k = 0; full && k < NE; k++)
        if (f.h.payload_size == PAYLEN && !memcmp(f.dest, PAY[k], PAYLEN))
            *which = k;
    free(f.dest);
    return full;
}

/* In the child before exec: the killed kvds' last words go to /dev/null
 * unless DS4_TEST_VERBOSE is set. */
static int quiet(void *arg)
{
    (void)arg;
    if (!getenv("DS4_TEST_VERBOSE")) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0)
            dup2(fd, 2);
    }
    return 0;
}

/* After a run (crashed at point n, 0: clean), restart and check. */
static void verify(const char *root, const char *dir_a, const char *dir_b, const struct run *r,
                   long n)
{
    char run[600];
    snprintf(run, sizeof run, "%s/run", root);
    kvd_proc p;
    const char *args[] = {"--kv-disk-space-mb", "1", NULL};
    int up = kvd_start_ex(&p, run, inst, dir_a, args, NULL, quiet, NULL) == 0;
    CHECKF(up, "crash point %ld: kvd does not restart (status 0x%x)", n, p.status);
    if (!up)
        return;
    kv_client *c = kvd_client(&p, 20000, 0);
    int w;
#define MUST(e, cond)                                                                      \
    CHECKF(cond, "crash point %ld: checkpoint %d: %s (found payload %d)", n, e, #cond, w)
    /* E1: acknowledged, unless the workload's eviction (step PUT4) may have
     * removed it */
    int has = probe(c, E1, &w);
    if (r->acked[ST_PUT1] && !r->started[ST_PUT4])
        MUST(E1, has);
    if (has)
        MUST(E1, w == E1);
    /* E2 and its replacement E2B (same key) */
    has = probe(c, E2, &w);
    if (r->acked[ST_PUT2B])
        MUST(E2, has && w == E2B);
    else if (r->acked[ST_PUT2])
        MUST(E2, has && (w == E2 || (r->started[ST_PUT2B] && w == E2B)));
    else if (has)
        MUST(E2, w == E2);
    has = probe(c, E3, &w);
    if (r->acked[ST_PUT3])
        MUST(E3, has);
    if (has)
        MUST(E3, w == E3);
    has = probe(c, E4, &w); /* step PUT2B's eviction may remove E4 */
    if (r->acked[ST_PUT4] && !r->started[ST_PUT2B])
        MUST(E4, has);
    if (has)
        MUST(E4, w == E4);
    has = probe(c, E7, &w);
    if (r->acked[ST_PUT7])
        MUST(E7, has);
    if (has)
        MUST(E7, w == E7);
    has = probe(c, E6, &w); /* went to B */
    MUST(E6, !has);
    kvc_close(c);
    CHECKF(kvd_stop(&p) == 0, "crash point %ld: kvd did not stop cleanly", n);
    /* the directory itself: whole files only, no temp files, only the
     * planted junk in quarantine, within the budget */
    check_files(dir_a);
    CHECKF(kvd_count(dir_a, ".tmp-") == 0, "crash point %ld: temp files left", n);
    char q[700];
    snprintf(q, sizeof q, "%s/%s", dir_a, KV_QUARANTINE);
    int nq = kvd_count(q, ""), planted_q = kvd_count(q, PLANTED ".");
    CHECKF(nq == planted_q && nq <= 1, "crash point %ld: %d quarantined", n, nq);
    CHECKF(kvd_count(dir_a, PLANTED) == 0, "crash point %ld: the planted file was not set aside", n);
    CHECKF(used_bytes(dir_a) <= (1u << 20), "crash point %ld: %llu bytes used", n,
           (unsigned long long)used_bytes(dir_a));
    /* directory B: its own checkpoint when acknowledged */
    struct stat st;
    if (stat(dir_b, &st) == 0) {
        kv_store s;
        kv_store_cfg cfg = {1u << 20, 3600, 1, NULL};
        char err[256];
        CHECKF(kv_store_open(&s, dir_b, 0, &cfg, err, sizeof err) == 0, "B: %s", err);
        CHECK(s.opened_quarantined == 0);
        has = probe_b(&s, E6, &w);
        if (r->acked[ST_PUT6])
            MUST(E6, has);
        if (has)
            MUST(E6, w == E6);
        for (int e = 0; e < NE; e++)
            if (e != E6) {
                int ww;
                CHECKF(!probe_b(&s, e, &ww), "crash point %ld: checkpoint %d in B", n, e);
            }
        kv_store_close(&s);
        check_files(dir_b);
    } else {
        CHECKF(!r->acked[ST_TOB], "crash point %ld: B missing after the switch", n);
    }
#undef MUST
}

/* Fresh directories with a planted junk file and a temp leftover. */
static void fresh(const char *root, char *dir_a, char *dir_b, size_t len)
{
    char p[700];
    snprintf(p, sizeof p, "%s/A", root);
    kvd_rm_rf(p);
    snprintf(p, sizeof p, "%s/B", root);
    kvd_rm_rf(p);
    snprintf(dir_a, len, "%s/A", root);
    snprintf(dir_b, len, "%s/B", root);
    mkdir(dir_a, 0700);
    snprintf(p, sizeof p, "%s/%s", dir_a, PLANTED);
    FILE *f = fopen(p, "w");
    fputs("not a checkpoint", f);
    fclose(f);
    snprintf(p, sizeof p, "%s/.tmp-0000000000000000-aaaaaaaaaaaaaaaa-1-1", dir_a);
    f = fopen(p, "w");
    fputs("half", f);
    fclose(f);
}

int main(void)
{
    ds4_log_set_level(getenv("DS4_TEST_VERBOSE") ? DS4_LOG_DEBUG : DS4_LOG_ERROR);
    if (!getenv("DS4_TEST_VERBOSE"))
        ds4_log_set_fd(open("/dev/null", O_WRONLY | O_CLOEXEC));
    snprintf(inst, sizeof inst, "kvdf%d", (int)getpid());
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 2000; i++) {
        S1[i] = (int32_t)kvd_rnd(&seed, 129280);
        S2[i] = (int32_t)kvd_rnd(&seed, 129280);
    }
    for (int e = 0; e < NE; e++) {
        PAY[e] = ds4_xmalloc(PAYLEN);
        for (size_t i = 0; i < PAYLEN; i++)
            PAY[e][i] = (uint8_t)kvd_rnd(&seed, 256);
    }
    /* On tmpfs when there is one: a kill -9 leaves the page cache alone on
     * any filesystem, so what is tested is the same, and 70 rounds of
     * fsyncs on a real disk would take most of the time. */
    char root[64] = "/dev/shm/ds4-kvd-fault-XXXXXX";
    struct stat rs;
    if (stat("/dev/shm", &rs) || !S_ISDIR(rs.st_mode) || access("/dev/shm", W_OK))
        snprintf(root, sizeof root, "/tmp/ds4-kvd-fault-XXXXXX");
    if (!mkdtemp(root)) {
        CHECK(0);
        return test_main_end("test_kvd_fault");
    }
    char run[600], dir_a[600], dir_b[600];
    snprintf(run, sizeof run, "%s/run", root);
    mkdir(run, 0700);
    const char *crash_args[] = {"--test-mode", "--kv-disk-space-mb", "1", NULL};
    /* the clean run: every acknowledged step, and the number of points */
    fresh(root, dir_a, dir_b, sizeof dir_a);
    kvd_proc p;
    struct run r;
    long total = 0;
    if (kvd_start_ex(&p, run, inst, dir_a, crash_args, NULL, quiet, NULL) == 0) {
        workload(&p, dir_b, dir_a, &r);
        for (int s = 0; s < NST; s++)
            CHECKF(r.acked[s], "clean run: step %d failed", s);
        total = crash_points(&p);
        CHECK(kvd_stop(&p) == 0);
        verify(root, dir_a, dir_b, &r, 0);
    } else {
        CHECKF(0, "kvd does not start");
    }
    CHECKF(total >= 60, "only %ld crash points", total);
    /* every point */
    long crashed = 0;
    uint64_t t0 = ds4_now_ns();
    for (long n = 1; n <= total; n++) {
        fresh(root, dir_a, dir_b, sizeof dir_a);
        char envv[64];
        snprintf(envv, sizeof envv, "DS4_KVD_CRASH_AT=%ld", n);
        const char *env[] = {envv, NULL};
        int up = kvd_start_ex(&p, run, inst, dir_a, crash_args, env, quiet, NULL) == 0;
        if (up)
            workload(&p, dir_b, dir_a, &r);
        else
            memset(&r, 0, sizeof r); /* died while opening the directory */
        CHECKF(kvd_wait_exit(&p, 20000) == 0, "crash point %ld: kvd still running", n);
        if (!p.reaped) {
            kvd_kill9(&p);
            continue;
        }
        int killed = WIFSIGNALED(p.status) && WTERMSIG(p.status) == SIGKILL;
        CHECKF(killed, "crash point %ld: kvd ended with status 0x%x, not SIGKILL", n, p.status);
        crashed += killed;
        /* the socket file of the killed kvd is left behind: the restart
         * must cope with it */
        verify(root, dir_a, dir_b, &r, n);
    }
    printf("fault injection: %ld crash points, %ld kills verified, %.1f s\n", total, crashed,
           (double)(ds4_now_ns() - t0) / 1e9);
    for (int e = 0; e < NE; e++)
        free(PAY[e]);
    kvd_rm_rf(root);
    CHECK(kvd_count_shm(inst, "") == 0);
    return test_main_end("test_kvd_fault");
}
