/* test_ds4_bench.c - smoke test of the benchmark tool on this OpenCL
 * device (PoCL in CI): ds4-bench on the test-model widths runs prefill and
 * decode (one session, and three batched; with the per-family profile)
 * through the engine with
 * synthetic device weights, writes one CSV
 * row per measurement with finite positive throughputs, bytes per token
 * equal to engined/eng_cost's count for that layout and context, and a
 * bound from the bandwidth it measured; bad arguments are a usage error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/dsv4_mkmodel.h"
#include "engined/eng_cost.h"
#include "test.h"

static int tool_path(char *out, size_t len)
{
    const char *env = getenv("DS4_BENCH");
    if (env && *env) {
        snprintf(out, len, "%s", env);
        return 0;
    }
    char self[2048] = "";
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return -1;
    self[n] = 0;
    for (int up = 0; up < 2; up++) {
        char *s = strrchr(self, '/');
        if (!s)
            return -1;
        *s = 0;
    }
    if (strlen(self) + 11 > len)
        return -1;
    memcpy(out, self, strlen(self));
    memcpy(out + strlen(self), "/ds4-bench", 11);
    return access(out, X_OK);
}

static int run(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int main(void)
{
    char bin[4096], csv[256], cmd[8192];
    if (tool_path(bin, sizeof bin)) {
        CHECKF(0, "ds4-bench binary not found (%s)", bin);
        return test_main_end("ds4_bench");
    }
    snprintf(csv, sizeof csv, "/tmp/test_ds4_bench_%d.csv", (int)getpid());
    snprintf(cmd, sizeof cmd,
             "%s --dims test --layers 6 --prefill 32,70 --decode-ctx 40,140 --steps 2 "
             "--repeats 1 --bw-mb 64 --sessions 3 --profile --restore-ctx 150 --csv %s > /tmp/test_ds4_bench_%d.out 2>&1",
             bin, csv, (int)getpid());
    int rc = run(cmd);
    CHECKF(rc == 0, "ds4-bench exited %d", rc);
    if (rc != 0) {
        snprintf(cmd, sizeof cmd, "cat /tmp/test_ds4_bench_%d.out >&2", (int)getpid());
        run(cmd);
    }
    dsv4_mkmodel_opts mo;
    dsv4_mkmodel_defaults(&mo);
    eng_model *m = eng_model_virtual(&mo.hp);
    FILE *f = fopen(csv, "r");
    CHECK(f != NULL);
    int prefill = 0, decode = 0, batch = 0, restore = 0;
    if (f) {
        char line[512];
        CHECK(fgets(line, sizeof line, f) && strncmp(line, "kind,layers,tokens,", 19) == 0);
        while (fgets(line, sizeof line, f)) {
            char kind[16];
            unsigned layers, tokens;
            double med, tps, bytes, bound, frac, t43;
            int n = sscanf(line, "%15[^,],%u,%u,%lf,%lf,%lf,%lf,%lf,%lf", kind, &layers, &tokens,
                           &med, &tps, &bytes, &bound, &frac, &t43);
            CHECKF(n == 9, "bad CSV row: %s", line);
            if (n != 9)
                continue;
            CHECK(layers == 6);
            CHECKF(isfinite(tps) && tps > 0 && med > 0, "%s", line);
            if (strcmp(kind, "prefill") == 0) {
                prefill++;
                CHECK(tokens == 32 || tokens == 70);
                CHECK(fabs(tps * med - tokens) < 1e-3 * tokens);
            } else if (strcmp(kind, "restore") == 0) {
                /* restored state continued bit-identically (else the tool
                 * exits non-zero), its size per token and speed-up shown */
                restore++;
                CHECK(tokens == 150 && bytes > 0 && frac > 0 && isfinite(frac));
            } else if (strcmp(kind, "decode_batch") == 0) {
                batch++;
                CHECK(tokens == 40 || tokens == 140);
                CHECK(frac > 0 && isfinite(frac)); /* aggregate / one session */
            } else if (strcmp(kind, "decode") == 0) {
                decode++;
                CHECK(tokens == 40 || tokens == 140);
                eng_token_bytes tb;
                eng_token_bytes_at(m, tokens, 4, 4, &tb);
                CHECKF(bytes == (double)tb.total, "bytes/token %.0f, eng_cost %llu", bytes,
                       (unsigned long long)tb.total);
                CHECK(isfinite(bound) && bound > 0 && frac > 0);
                CHECK(fabs(frac - tps / bound) < 1e-3 * frac);
            } else {
                CHECKF(0, "unknown row kind %s", kind);
            }
        }
        fclose(f);
    }
    CHECK(prefill == 2 && decode == 2 && batch == 2 && restore == 1);
    /* --profile: a family table per prefill size and decode context, whose
     * shares add up to 100 % */
    snprintf(cmd, sizeof cmd, "/tmp/test_ds4_bench_%d.out", (int)getpid());
    FILE *out = fopen(cmd, "r");
    CHECK(out != NULL);
    if (out) {
        char line[512];
        int tables = 0, in_table = 0;
        double sum = 0;
        while (fgets(line, sizeof line, out)) {
            double pct, ms;
            char fam[32];
            if (strncmp(line, "profile, ", 9) == 0) {
                if (in_table)
                    CHECKF(fabs(sum - 100) < 0.5, "family shares add up to %.1f%%", sum);
                tables++;
                in_table = 1;
                sum = 0;
            } else if (in_table && sscanf(line, "  %31[^0-9%]%lf%% %lf ms", fam, &pct, &ms) == 3 &&
                       line[2] != ' ') {
                sum += pct;
            }
        }
        if (in_table)
            CHECKF(fabs(sum - 100) < 0.5, "family shares add up to %.1f%%", sum);
        CHECKF(tables == 4, "%d profile tables, expected 4", tables);
        fclose(out);
    }
    eng_model_close(m);
    /* usage errors */
    snprintf(cmd, sizeof cmd, "%s --layers 0 > /dev/null 2>&1", bin);
    CHECK(run(cmd) == 64);
    snprintf(cmd, sizeof cmd, "%s --prefill 12,x > /dev/null 2>&1", bin);
    CHECK(run(cmd) == 64);
    snprintf(cmd, sizeof cmd, "%s --dims huge > /dev/null 2>&1", bin);
    CHECK(run(cmd) == 64);
    unlink(csv);
    snprintf(cmd, sizeof cmd, "/tmp/test_ds4_bench_%d.out", (int)getpid());
    unlink(cmd);
    return test_main_end("ds4_bench");
}
