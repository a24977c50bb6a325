/* test_ops.c - operating the stack with scripts/ds4-up.sh, as an operator
 * would (docs/OPERATIONS.md), on this build's binaries, loopback only, in a
 * private run directory and shared-memory instance:
 *   - start waits for every stage's READY and reports each; a second start
 *     says the stack is running and starts nothing;
 *   - kill -9 of any one stage, then start: only that stage comes back
 *     (new pid), the others keep their pids and keep serving; no manual
 *     cleanup of sockets, pidfiles or segments;
 *   - restart of each stage alone: same, through SIGTERM and drain (here
 *     when some stage is not built; with all four, test_ops_stream does it
 *     while clients stream);
 *   - strace -p, gdb -batch -p and perf stat -p attached to a serving
 *     stage: requests sent meanwhile are answered, the stage survives;
 *   - kvd's storage directory swapped while it serves (ds4-up.sh kv-dir,
 *     and restart kvd --kv-disk-dir): lookups sent during the swap are all
 *     answered, entries of either directory are found again intact when
 *     it is switched back, a directory kvd cannot use is refused and the
 *     old one stays in use;
 *   - kill -9 of every stage, then start: the stack comes back with the
 *     settings it had (saved in the run directory);
 *   - stop: every stage gone, no pidfile held, no socket file, no stats
 *     segment left.
 * Stages whose binary is not built are reported and skipped (the script
 * skips them too). "Serving" is a PING over ZeroMQ answered with ready:
 * true, plus a real request per stage (TOKENIZE for tokenizerd; GET
 * /health for gatewayd).
 * The default test model is made once per build directory by the script
 * itself (DS4_CACHE_DIR=<build>/tests/ds4-cache). */
#include "kvd/kv_client.h"
#include "test_ops.h"

/* ---- scenarios --------------------------------------------------------------------- */

static void test_start_twice(long pid[ND])
{
    tp_proc p;
    const char *a[] = {START_ARGS, NULL};
    int rc = up(&p, a, 300000);
    CHECKF(rc == 0, "start: exit %d\n%s%s", rc, p.obuf, p.ebuf);
    CHECK(strstr(p.obuf, "ds4 stack is up") != NULL);
    CHECK(strstr(p.obuf, "TEST model") != NULL); /* no -m: says the output is noise */
    for (int i = 0; i < ND; i++) {
        char want[64];
        snprintf(want, sizeof want, g_built[i] ? "%s ready (pid" : "skip  %s:", DN[i]);
        CHECKF(strstr(p.obuf, want) != NULL, "start output lacks '%s'", want);
    }
    tp_free(&p);
    all_serve(pid, "after start");
    for (int i = 0; i < ND; i++) /* the script's pid command agrees */
        CHECK(!g_built[i] || stage_pid(DN[i]) == pid[i]);
    rc = up(&p, a, 60000);
    CHECKF(rc == 0 && strstr(p.obuf, "already running"), "second start: %d %s", rc, p.obuf);
    CHECK(strstr(p.obuf, "ready (pid") == NULL); /* nothing started */
    tp_free(&p);
    long again[ND] = {0};
    all_serve(again, "after second start");
    CHECK(memcmp(pid, again, sizeof again) == 0);
}

static int first_built(void)
{
    for (int i = 0; i < ND; i++)
        if (g_built[i])
            return i;
    return -1;
}

/* Stop one stage (kill -9, or restart through the script) and check that
 * only it changed and everything serves again. */
static void test_one_stage(long pid[ND], int victim, int use_restart)
{
    const char *d = DN[victim];
    tp_proc p;
    int rc;
    if (!use_restart) {
        CHECK(kill((pid_t)pid[victim], SIGKILL) == 0);
        CHECK(tp_wait_gone((pid_t)pid[victim], 10000) == 0);
    }
    if (!use_restart && victim == first_built()) {
        /* the script notices: status is not 0 and names it stopped */
        const char *s[] = {"status", NULL};
        rc = up(&p, s, 60000);
        char want[64];
        snprintf(want, sizeof want, "%-11s", d);
        const char *line = strstr(p.obuf, want);
        const char *eol = line ? strchr(line, '\n') : NULL;
        const char *st = line ? strstr(line, "stopped") : NULL;
        CHECKF(rc != 0 && st && eol && st < eol, "status after kill -9 %s: rc %d\n%s", d, rc,
               p.obuf);
        tp_free(&p);
    }
    if (!use_restart) {
        const char *a[] = {START_ARGS, NULL};
        rc = up(&p, a, 120000);
        int others = 0;
        for (int i = 0; i < ND; i++)
            others += g_built[i] && i != victim;
        /* with other stages still up, only the missing one is started */
        CHECKF(rc == 0 && strstr(p.obuf, others ? "recovering" : "restarting the stack"),
               "start after kill -9 %s: %d\n%s%s", d, rc, p.obuf, p.ebuf);
    } else {
        const char *a[] = {"restart", d, NULL};
        rc = up(&p, a, 120000);
        CHECKF(rc == 0, "restart %s: %d\n%s%s", d, rc, p.obuf, p.ebuf);
    }
    tp_free(&p);
    long now[ND] = {0};
    all_serve(now, use_restart ? "after restart" : "after kill -9 + start");
    for (int i = 0; i < ND; i++) {
        if (!g_built[i])
            continue;
        if (i == victim)
            CHECKF(now[i] > 0 && now[i] != pid[i], "%s: pid %ld -> %ld", d, pid[i], now[i]);
        else
            CHECKF(now[i] == pid[i], "%s changed (%ld -> %ld) when only %s was %s", DN[i],
                   pid[i], now[i], d, use_restart ? "restarted" : "killed");
    }
    memcpy(pid, now, sizeof now);
}

/* Run a debugging tool against a serving stage; requests sent while it is
 * attached are answered. tool_ok: its output proves it saw the process. */
static void attach_tool(const char *what, char *const argv[], int i, const char *wait_err,
                        const char *want_out)
{
    tp_proc t;
    CHECK(tp_spawn(&t, argv, NULL) == 0);
    if (wait_err && tp_wait_for(&t, 2, wait_err, 30000)) {
        int rc = tp_finish(&t, 10000);
        if (strstr(t.ebuf, "ermission") || strstr(t.ebuf, "not permitted") ||
            strstr(t.ebuf, "No such file"))
            printf("skip %s: cannot attach here (%s)\n", what, t.ebuf);
        else
            CHECKF(0, "%s did not attach (exit %d): %s", what, rc, t.ebuf);
        tp_free(&t);
        return;
    }
    int answered = 0;
    for (int k = 0; k < 5; k++)
        answered += serves(i);
    CHECKF(answered == 5, "%s attached: %d/5 requests answered", what, answered);
    if (wait_err)
        kill(t.pid, SIGINT); /* strace detaches on SIGINT */
    int rc = tp_finish(&t, 60000);
    int out_ok = strstr(t.obuf, want_out) || strstr(t.ebuf, want_out);
    if (!wait_err && rc != 0 && (strstr(t.ebuf, "ermission") || strstr(t.ebuf, "not supported") ||
                                 strstr(t.ebuf, "perf_event_paranoid")))
        printf("skip %s: not permitted here\n", what);
    else
        CHECKF(out_ok, "%s: output lacks '%s' (exit %d)\n%s%s", what, want_out, rc, t.obuf,
               t.ebuf);
    tp_free(&t);
}

static int have_tool(const char *name)
{
    char path[256];
    const char *dirs[] = {"/usr/bin", "/bin", "/usr/sbin", "/usr/local/bin", NULL};
    for (int k = 0; dirs[k]; k++) {
        snprintf(path, sizeof path, "%s/%s", dirs[k], name);
        if (access(path, X_OK) == 0)
            return 1;
    }
    return 0;
}

static void test_debuggers(const long pid[ND])
{
    int i = 2; /* tokenizerd: always present */
    if (!g_built[i])
        return;
    char ps[32], out[300];
    snprintf(ps, sizeof ps, "%ld", pid[i]);
    snprintf(out, sizeof out, "%s/strace.out", g_run);
    if (have_tool("strace")) {
        char *a[] = {"/usr/bin/strace", "-f", "-p", ps, "-o", out, NULL};
        attach_tool("strace -p", a, i, "attached", "attached");
        char *txt = test_read_file(out, NULL);
        CHECKF(txt && (strstr(txt, "recv") || strstr(txt, "read(") || strstr(txt, "poll")),
               "strace saw no socket activity: %.300s", txt ? txt : "");
        free(txt);
        unlink(out);
    } else {
        printf("skip strace: not installed (scripts/deps.sh installs it)\n");
    }
    if (have_tool("gdb")) {
        char *a[] = {"/usr/bin/gdb", "-batch", "-nx", "-p", ps, "-ex", "info threads",
                     "-ex", "bt", NULL};
        attach_tool("gdb -batch -p", a, i, NULL, "main");
    } else {
        printf("skip gdb: not installed (scripts/deps.sh installs it)\n");
    }
    if (have_tool("perf")) {
        char *a[] = {"/usr/bin/perf", "stat", "-e", "task-clock", "-p", ps, "--", "sleep", "0.5",
                     NULL};
        attach_tool("perf stat -p", a, i, NULL, "task-clock");
    } else {
        printf("skip perf: not installed\n");
    }
    CHECK(owner_pid("tokenizerd") == pid[i]);
}

/* ---- kvd storage swap ------------------------------------------------------------ */

static const char FP[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/* A checkpoint: n token ids from seed and a payload of len bytes. */
static void make_entry(uint32_t seed, int32_t *ids, size_t n, uint8_t *blob, size_t len)
{
    uint64_t x = 0x9e3779b97f4a7c15ull * (seed + 1);
    for (size_t i = 0; i < n; i++) {
        x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
        ids[i] = (int32_t)((x * 0x2545F4914F6CDD1Dull >> 33) % 129280);
    }
    for (size_t i = 0; i < len; i++) {
        x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
        blob[i] = (uint8_t)(x * 0x2545F4914F6CDD1Dull >> 56);
    }
}

/* Lookup of entry seed: 1 found with the exact payload, 0 miss, -1 error. */
static int kv_has(kv_client *c, uint32_t seed)
{
    int32_t ids[64];
    uint8_t blob[4096];
    make_entry(seed, ids, 64, blob, sizeof blob);
    kvc_query q = {.fingerprint = FP};
    kvc_found f;
    char err[256];
    memset(&f, 0, sizeof f);
    int rc = kvc_lookup(c, ids, 64, &q, &f, err, sizeof err);
    if (rc == 1)
        rc = f.tokens == 64 && f.len == sizeof blob && !memcmp(f.data, blob, sizeof blob) ? 1 : -1;
    if (rc < 0)
        fprintf(stderr, "kv lookup %u: %s\n", seed, err);
    kvc_found_free(&f);
    return rc;
}

static int kv_put_entry(kv_client *c, uint32_t seed)
{
    int32_t ids[64];
    uint8_t blob[4096];
    make_entry(seed, ids, 64, blob, sizeof blob);
    kvc_meta m = {.fingerprint = FP, .reason = "cold", .prefill_ms = 10};
    kvc_stored st;
    char err[256];
    int rc = kvc_put(c, ids, 64, blob, sizeof blob, &m, &st, err, sizeof err);
    CHECKF(rc == 0, "kv put %u: %s", seed, err);
    return rc;
}

/* Run a ds4-up.sh command while sending lookups of entry seed to kvd; all
 * of them must be answered (found or miss, no error). Returns its exit. */
static int up_while_looking(const char *const *args, kv_client *c, uint32_t seed)
{
    char *argv[48];
    int n = 0;
    argv[n++] = "/bin/bash";
    argv[n++] = "scripts/ds4-up.sh";
    for (int i = 0; args[i]; i++)
        argv[n++] = (char *)args[i];
    const char *common[] = {"--build", g_build, "--run-dir", g_run, "--instance", g_inst,
                            "--no-deps", "--no-build", NULL};
    for (int i = 0; common[i]; i++)
        argv[n++] = (char *)common[i];
    argv[n] = NULL;
    char *env[] = {g_env_cache, NULL};
    tp_proc p;
    if (tp_spawn(&p, argv, env))
        return -1;
    int lookups = 0, errors = 0;
    long long end = tp_now_ms() + 60000;
    while (tp_alive(p.pid) && tp_now_ms() < end) {
        int r = kv_has(c, seed);
        lookups++;
        errors += r < 0;
        tp_pump(&p, 0);
    }
    int rc = tp_finish(&p, 60000);
    CHECKF(errors == 0, "%s: %d of %d lookups failed during the swap", args[0], errors, lookups);
    if (rc)
        fprintf(stderr, "%s\n%s", p.obuf, p.ebuf);
    tp_free(&p);
    return rc;
}

static void test_kv_swap(void)
{
    if (!g_built[0])
        return;
    char ep[400], err[256];
    snprintf(ep, sizeof ep, "ipc://%s/kvd.sock", g_run);
    kvc_opts o = {.endpoint = ep, .instance = g_inst, .timeout_ms = 10000, .zmq_ctx = g_zctx};
    kv_client *c = kvc_open(&o, err, sizeof err);
    CHECKF(c != NULL, "%s", err);
    if (!c)
        return;
    CHECK(kv_put_entry(c, 1) == 0);
    CHECK(kv_has(c, 1) == 1);
    /* 1. KV_SET_DIR through the script while lookups flow */
    const char *a1[] = {"kv-dir", g_kv2, NULL};
    CHECK(up_while_looking(a1, c, 1) == 0);
    CHECK(kv_has(c, 1) == 0); /* the new directory is empty */
    CHECK(kv_put_entry(c, 2) == 0);
    CHECK(kv_has(c, 2) == 1);
    char conf[300];
    snprintf(conf, sizeof conf, "%s/stack.conf", g_run);
    char *txt = test_read_file(conf, NULL);
    CHECKF(txt && strstr(txt, g_kv2), "stack.conf does not record the new directory");
    free(txt);
    /* 2. restart kvd on the first directory: its entry is back, intact */
    const char *a2[] = {"restart", "kvd", "--kv-disk-dir", g_kv1, NULL};
    tp_proc p;
    CHECK(up(&p, a2, 60000) == 0);
    tp_free(&p);
    CHECK(kv_has(c, 1) == 1);
    CHECK(kv_has(c, 2) == 0);
    /* 3. a directory kvd cannot use is refused; the old one stays */
    char bad[400];
    snprintf(bad, sizeof bad, "%s/kvd.log/sub", g_run); /* below a regular file */
    const char *a3[] = {"kv-dir", bad, NULL};
    CHECK(up(&p, a3, 60000) != 0);
    tp_free(&p);
    CHECK(kv_has(c, 1) == 1);
    /* 4. back to the second directory without a restart: nothing lost */
    const char *a4[] = {"kv-dir", g_kv2, NULL};
    CHECK(up_while_looking(a4, c, 2) == 0);
    CHECK(kv_has(c, 2) == 1);
    CHECK(kv_has(c, 1) == 0);
    kvc_close(c);
}

/* kill -9 every stage at once; start brings back the same stack. */
static void test_kill_all(long pid[ND])
{
    for (int i = 0; i < ND; i++)
        if (g_built[i] && pid[i] > 0)
            kill((pid_t)pid[i], SIGKILL);
    for (int i = 0; i < ND; i++)
        CHECK(!g_built[i] || tp_wait_gone((pid_t)pid[i], 10000) == 0);
    tp_proc p;
    const char *a[] = {"start", NULL}; /* no options: the saved settings apply */
    int rc = up(&p, a, 120000);
    CHECKF(rc == 0 && strstr(p.obuf, "restarting the stack that last ran"),
           "start after kill -9 of everything: %d\n%s%s", rc, p.obuf, p.ebuf);
    tp_free(&p);
    long now[ND] = {0};
    all_serve(now, "after kill -9 of all + start");
    memcpy(pid, now, sizeof now);
    /* the saved settings were used (the ctx given at the first start) */
    char conf[300];
    snprintf(conf, sizeof conf, "%s/stack.conf", g_run);
    char *txt = test_read_file(conf, NULL);
    CHECK(txt && strstr(txt, "SAVED_CTX=1024") && strstr(txt, "SAVED_BACKEND=ref"));
    free(txt);
}

static void test_stop(const long pid[ND])
{
    tp_proc p;
    const char *a[] = {"stop", NULL};
    int rc = up(&p, a, 120000);
    CHECKF(rc == 0 && strstr(p.obuf, "stopped"), "stop: %d %s", rc, p.obuf);
    tp_free(&p);
    for (int i = 0; i < ND; i++) {
        if (!g_built[i])
            continue;
        CHECKF(!tp_alive((pid_t)pid[i]), "%s (pid %ld) still alive after stop", DN[i], pid[i]);
        char f[300];
        snprintf(f, sizeof f, "%s/%s.pid", g_run, DN[i]);
        CHECK(ds4d_pidfile_owner(f) == 0);
        snprintf(f, sizeof f, "%s/%s.sock", g_run, DN[i]);
        CHECKF(access(f, F_OK) != 0, "%s left behind", f);
    }
    char names[8][32];
    CHECK(ds4_stats_list(g_inst, names, 8) == 0);
    const char *s[] = {"status", NULL};
    rc = up(&p, s, 30000);
    CHECK(rc != 0);
    tp_free(&p);
}

int main(void)
{
    if (ops_setup("ops"))
        return 1;
    long pid[ND] = {0};
    long long t = tp_now_ms();
#define PHASE(name) (printf("  %-28s %5lld ms\n", name, tp_now_ms() - t), t = tp_now_ms())
    test_start_twice(pid);
    PHASE("start, start again");
    for (int i = 0; i < ND; i++)
        if (g_built[i])
            test_one_stage(pid, i, 0);
    PHASE("kill -9 + start, each stage");
    /* restart of each stage alone: test_ops_stream, with clients streaming;
     * here only for a stack without all four stages */
    for (int i = 0; i < ND; i++)
        if (g_built[i] && !(g_built[0] && g_built[1] && g_built[2] && g_built[3]))
            test_one_stage(pid, i, 1);
    PHASE("restart, each stage");
    test_debuggers(pid);
    PHASE("strace, gdb, perf");
    test_kv_swap();
    all_serve(pid, "after the kv swap");
    PHASE("kvd storage swap");
    test_kill_all(pid);
    PHASE("kill -9 all + start");
    test_stop(pid);
    PHASE("stop");
    cleanup();
    zmq_ctx_term(g_zctx);
    return test_main_end("test_ops");
}
