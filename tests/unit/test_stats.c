/* test_stats.c - stats segments: the tables, values written by one process
 * and read by another, read-only readers, listing, Prometheus text, and
 * refusal of garbage stats payloads. */
#include "hash.h"
#include "shm.h"
#include "stats.h"
#include "test.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static char inst[32];

static void test_tables(void)
{
    size_t n;
    const struct ds4_stat_def *t = ds4_stats_table("engined", &n);
    CHECK(n == DS4S_ENG_N && !strcmp(t[DS4S_ENG_jobs_submitted].name, "jobs_submitted"));
    CHECK(!strcmp(t[DS4S_frames_bad].name, "frames_bad"));
    t = ds4_stats_table("gatewayd", &n);
    CHECK(n == DS4S_GW_N && !strcmp(t[DS4S_GW_http_5xx].name, "http_5xx"));
    t = ds4_stats_table("kvd", &n);
    CHECK(n == DS4S_KV_N && t[DS4S_KV_entries].type == DS4_STAT_GAUGE);
    t = ds4_stats_table("tokenizerd", &n);
    CHECK(n == DS4S_TOK_N && !strcmp(t[DS4S_TOK_tokens_encoded].name, "tokens_encoded"));
    t = ds4_stats_table("whatever", &n);
    CHECK(n == DS4S_COMMON_N);
    /* Names are unique within each table. */
    const char *kinds[] = {"tokenizerd", "engined", "kvd", "gatewayd"};
    for (int k = 0; k < 4; k++) {
        t = ds4_stats_table(kinds[k], &n);
        int dup = 0;
        for (size_t i = 0; i < n; i++)
            for (size_t j = i + 1; j < n; j++)
                dup += !strcmp(t[i].name, t[j].name);
        CHECKF(dup == 0, "%s has %d duplicate names", kinds[k], dup);
    }
}

/* Values the writer process sets (seeded, never zero). */
static uint64_t want_value(unsigned i)
{
    return 0x9e3779b97f4a7c15ull * (i + 1) >> 7;
}

/* Child: create engined stats, set values, tell the parent, wait. */
static void writer(int ready_fd, int go_fd)
{
    ds4_stats st;
    char err[256];
    if (ds4_stats_create(&st, inst, "engined", err, sizeof err)) {
        fprintf(stderr, "writer: %s\n", err);
        _exit(1);
    }
    for (unsigned i = 0; i < st.count; i++)
        ds4_stats_set(&st, i, want_value(i));
    ds4_stats_add(&st, DS4S_ENG_jobs_submitted, 5);
    ds4_stats_sub(&st, DS4S_ENG_jobs_queued, 3);
    CHECK(write(ready_fd, "r", 1) == 1);
    char c;
    if (read(go_fd, &c, 1) != 1)
        _exit(2);
    /* Second phase: bump a counter, then confirm. */
    ds4_stats_add(&st, DS4S_frames_bad, 1000);
    CHECK(write(ready_fd, "s", 1) == 1);
    if (read(go_fd, &c, 1) != 1)
        _exit(2);
    ds4_stats_close(&st, 1);
    _exit(0);
}

static void test_cross_process(void)
{
    int up[2], down[2];
    CHECK(pipe(up) == 0 && pipe(down) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(up[0]);
        close(down[1]);
        writer(up[1], down[0]);
    }
    close(up[1]);
    close(down[0]);
    char c = 0;
    CHECK(read(up[0], &c, 1) == 1 && c == 'r');

    ds4_stats st;
    char err[256];
    CHECK(ds4_stats_attach(&st, inst, "engined", err, sizeof err) == 0);
    CHECK(st.count == DS4S_ENG_N && !strcmp(st.daemon, "engined"));
    CHECK(st.shm.hdr && st.shm.hdr->creator_pid == (uint32_t)pid);
    int wrong = 0;
    for (unsigned i = 0; i < st.count; i++) {
        uint64_t w = want_value(i);
        if (i == DS4S_ENG_jobs_submitted)
            w += 5;
        if (i == DS4S_ENG_jobs_queued)
            w -= 3;
        wrong += ds4_stats_get(&st, i) != w;
    }
    CHECKF(wrong == 0, "%d wrong values", wrong);
    CHECK(ds4_stats_find(&st, "decode_ns") == DS4S_ENG_decode_ns);
    CHECK(ds4_stats_find(&st, "nope") == -1);
    CHECK(st.desc[DS4S_ENG_jobs_queued].type == DS4_STAT_GAUGE);
    CHECK(strstr(st.desc[DS4S_ENG_jobs_queued].help, "queue") != NULL);

    /* Updates through a read-only attachment are ignored, not a crash. */
    uint64_t before = ds4_stats_get(&st, DS4S_ready);
    ds4_stats_add(&st, DS4S_ready, 1);
    ds4_stats_set(&st, DS4S_ready, 77);
    CHECK(ds4_stats_get(&st, DS4S_ready) == before);

    /* Listing finds it. */
    char names[16][32];
    int n = ds4_stats_list(inst, names, 16);
    CHECK(n == 1 && !strcmp(names[0], "engined"));

    /* Live values are seen without re-attaching. */
    uint64_t fb = ds4_stats_get(&st, DS4S_frames_bad);
    CHECK(write(down[1], "g", 1) == 1);
    CHECK(read(up[0], &c, 1) == 1 && c == 's');
    CHECK(ds4_stats_get(&st, DS4S_frames_bad) == fb + 1000);

    /* Prometheus text. */
    char *buf = NULL, line[256];
    size_t len = 0;
    ds4_stats_prometheus(&st, inst, &buf, &len);
    CHECK(buf && strlen(buf) == len);
    snprintf(line, sizeof line, "\nds4_engined_jobs_submitted_total{instance=\"%s\"} %llu\n",
             inst, (unsigned long long)(want_value(DS4S_ENG_jobs_submitted) + 5));
    CHECKF(buf && strstr(buf, line), "missing %s", line);
    CHECK(buf && strstr(buf, "# TYPE ds4_engined_jobs_queued gauge\n"));
    CHECK(buf && strstr(buf, "# TYPE ds4_engined_decode_ns_total counter\n"));
    CHECK(buf && strstr(buf, "# HELP ds4_engined_frames_bad_total malformed"));
    int samples = 0;
    for (char *p = buf; p && (p = strstr(p, "\nds4_engined_")); p++)
        samples++;
    CHECKF(samples == DS4S_ENG_N, "%d samples", samples);
    free(buf);
    ds4_stats_close(&st, 0);

    CHECK(write(down[1], "x", 1) == 1);
    int status = -1;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(ds4_stats_attach(&st, inst, "engined", err, sizeof err) == -1 &&
          errno == ENOENT); /* the creator unlinked it */
    close(up[0]);
    close(down[1]);
}

/* A custom table, escaping and a disabled (zeroed) stats handle. */
static void test_custom_and_disabled(void)
{
    ds4_stats off;
    memset(&off, 0, sizeof off);
    ds4_stats_add(&off, 0, 1); /* no-op, no crash */
    CHECK(ds4_stats_get(&off, 0) == 0);
    char *buf = NULL;
    size_t len = 0;
    ds4_stats_prometheus(&off, NULL, &buf, &len);
    CHECK(buf == NULL && len == 0);

    const struct ds4_stat_def defs[] = {
        {"a_total", DS4_STAT_COUNTER, "help with \\ backslash"},
        {"b", DS4_STAT_GAUGE, "gauge"},
    };
    ds4_stats st;
    char err[256];
    CHECK(ds4_stats_create_defs(&st, inst, "custom", defs, 2, err, sizeof err) == 0);
    ds4_stats_add(&st, 0, 3);
    ds4_stats_set(&st, 1, 9);
    ds4_stats_add(&st, 7, 1); /* out of range: ignored */
    ds4_stats_prometheus(&st, "we\"ird", &buf, &len);
    CHECK(buf && strstr(buf, "# HELP ds4_custom_a_total help with \\\\ backslash\n"));
    CHECK(buf && strstr(buf, "ds4_custom_a_total{instance=\"we\\\"ird\"} 3\n"));
    CHECK(buf && strstr(buf, "ds4_custom_b{instance=\"we\\\"ird\"} 9\n"));
    free(buf);
    const struct ds4_stat_def bad[] = {{"Bad-Name", DS4_STAT_GAUGE, "x"}};
    ds4_stats st2;
    CHECK(ds4_stats_create_defs(&st2, inst, "custom2", bad, 1, err, sizeof err) == -1);
    ds4_stats_close(&st, 1);
}

/* Valid shm header around a garbage stats payload: attach refuses. */
static void test_garbage_payload(void)
{
    unsigned seed = 77;
    char name[DS4_SHM_NAME_MAX], err[256];
    CHECK(ds4_shm_name(name, sizeof name, inst, "stats-evil", err, sizeof err) == 0);
    size_t sizes[] = {0, 8, 64, 300, 5000};
    int refused = 0;
    for (int k = 0; k < 200; k++) {
        size_t n = sizes[k % 5];
        ds4_shm w;
        if (ds4_shm_create(&w, name, n, 0, err, sizeof err)) {
            CHECK(0);
            break;
        }
        for (size_t i = 0; i < n; i++)
            w.payload[i] = (uint8_t)rand_r(&seed);
        if (n >= 64 && k % 2) {
            /* Plausible head, hostile counts and offsets. */
            memcpy(w.payload, "DS4STAT1", 8);
            uint32_t cnt = (uint32_t)(rand_r(&seed) % 40);
            uint32_t dsz = 192;
            memcpy(w.payload + 8, &cnt, 4);
            memcpy(w.payload + 12, &dsz, 4);
            uint64_t doff = 64, voff = (uint64_t)rand_r(&seed) % 9000;
            memcpy(w.payload + 16, &doff, 8);
            memcpy(w.payload + 24, &voff, 8);
        }
        ds4_shm_publish(&w);
        ds4_stats st;
        int rc = ds4_stats_attach_name(&st, name, err, sizeof err);
        if (rc == 0) { /* only possible if everything is in bounds */
            for (unsigned i = 0; i < st.count; i++)
                (void)ds4_stats_get(&st, i);
            char *b = NULL;
            size_t l = 0;
            ds4_stats_prometheus(&st, NULL, &b, &l);
            free(b);
            ds4_stats_close(&st, 0);
        }
        refused += rc == -1;
        ds4_shm_detach(&w);
        shm_unlink(name);
    }
    /* Random descriptor names are never valid, so every one is refused. */
    CHECKF(refused == 200, "%d of 200 garbage payloads refused", refused);
}

int main(void)
{
    snprintf(inst, sizeof inst, "tstats%ld", (long)getpid());
    test_tables();
    test_cross_process();
    test_custom_and_disabled();
    test_garbage_payload();
    return test_main_end("test_stats");
}
