/* ds4-bench - prefill and decode throughput of DeepSeek V4 Flash layers on
 * this OpenCL device, through the serving engine's forward pass (eng_fwd),
 * with synthetic weights generated in device memory (no model file).
 *
 *   ds4-bench [--layers N] [--dims full|test] [--prefill 512,2048,8192]
 *             [--decode-ctx 1024,8192,32768] [--steps K] [--repeats R]
 *             [--chunk C] [--exact] [--seed S] [--csv FILE] [--no-bw]
 *             [--bw-mb M] [--sessions 8,...] [--profile]
 *             [--restore-ctx X [--restore-dir DIR]]
 *
 * --dims full (default): DeepSeek V4 Flash widths (hidden 4096, 64 heads of
 * 512, 256 experts of 2048, vocab 129280) in ds4's q2 layout (routed
 * gate/up IQ2_XXS, down Q2_K; attention, shared expert, head Q8_0), the
 * first N of the 43 layers (their compression ratios and hash routing as in
 * the real model). --dims test: the small test-model widths (for a CI
 * smoke run on PoCL).
 *
 * Prefill: a fresh sequence per repeat, the whole prompt in chunks of C
 * (default 512); tok/s from the median of R repeats after one warm-up.
 * Decode at context X: a sequence prefilled to X tokens, then K one-token
 * steps (each: the layers, then the output head and a host argmax, as a
 * served decode step does); the median step gives tok/s. Bytes read per
 * decoded token (weights touched + KV at X, engined/eng_cost) over the
 * streaming-read bandwidth measured in the same run give the bound and the
 * achieved fraction. --restore-ctx X: KV restore versus prefill (SPEC 7,
 * issue 7): prefill X tokens, save the sequence's device state (what a kvd
 * checkpoint holds), write it to a file in DIR (default /tmp) with fsync,
 * drop the file from the page cache, then time reading it back, checking
 * its checksum (hash64, as kvd does) and loading it into a new sequence on
 * the device; the restored sequence's next logits are compared with the
 * original's. --profile: after the timed runs, one more prefill of
 * each size and K more decode steps at each context with every launch
 * waited for and timed (eng_fwd profiling), printed as shares per kernel
 * family (attention, compressor, indexer, MoE, dense GEMMs, mHC, head,
 * other) and per kernel; serialised, so shares only. --sessions B: also B sessions at context X decoding
 * together (one batched step per token of each, eng_fwd_decode_batch, with
 * every row's logits read and argmaxed): aggregate tok/s and its ratio to
 * one session (SPEC 7: 8 sessions >= 4x). (--bw-mb: the probe's buffer, default min(1 GiB, half
 * the largest allocation)). With N < 43 layers the per-layer time is scaled to 43
 * (head measured separately) to extrapolate the full model.
 *
 * Human-readable lines on stdout; --csv writes one row per measurement.
 * Exit status: 0 done, 1 engine error, 2 device error, 64 usage. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/dsv4_mkmodel.h"
#include "common/hash.h"
#include "common/util.h"
#include "engined/eng_bw.h"
#include "engined/eng_cl.h"
#include "engined/eng_cost.h"
#include "engined/eng_fwd.h"
#include "engined/eng_model.h"
#include "engined/eng_synth.h"

#define MAX_LIST 16

typedef struct bench_opts {
    uint32_t layers;
    int test_dims;
    uint32_t prefill[MAX_LIST], n_prefill;
    uint32_t ctx[MAX_LIST], n_ctx;
    uint32_t steps, repeats, chunk;
    int exact, no_bw, profile;
    uint32_t bw_mb;
    uint32_t sessions[MAX_LIST], n_sessions;
    uint32_t restore_ctx;
    const char *restore_dir;
    uint64_t seed;
    const char *csv;
} bench_opts;

static int usage(void)
{
    fprintf(stderr,
            "usage: ds4-bench [--layers N] [--dims full|test] [--prefill LIST] "
            "[--decode-ctx LIST]\n"
            "                 [--steps K] [--repeats R] [--chunk C] [--exact] "
            "[--seed S] [--csv FILE] [--no-bw] [--bw-mb M]\n"
            "                 [--sessions LIST] [--profile] [--restore-ctx X] "
            "[--restore-dir DIR]\n"
            "LIST: comma-separated token counts (empty string: none)\n");
    return 64;
}

static int parse_u32(const char *s, uint32_t *out, uint32_t max)
{
    char *end;
    if (!s || !*s)
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || v > max)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int parse_list(const char *s, uint32_t *out, uint32_t *n)
{
    *n = 0;
    if (!s)
        return -1;
    while (*s) {
        char buf[32];
        size_t len = strcspn(s, ",");
        if (len == 0 || len >= sizeof buf || *n >= MAX_LIST)
            return -1;
        memcpy(buf, s, len);
        buf[len] = 0;
        if (parse_u32(buf, &out[*n], 1u << 24) || out[*n] == 0)
            return -1;
        (*n)++;
        s += len;
        if (*s == ',')
            s++;
    }
    return 0;
}

static int parse_args(int argc, char **argv, bench_opts *o)
{
    memset(o, 0, sizeof *o);
    o->layers = 2;
    o->steps = 16;
    o->repeats = 3;
    o->chunk = 512;
    o->seed = 1;
    parse_list("512,2048,8192", o->prefill, &o->n_prefill);
    parse_list("1024,8192,32768", o->ctx, &o->n_ctx);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (strcmp(a, "--exact") == 0) {
            o->exact = 1;
            continue;
        } else if (strcmp(a, "--no-bw") == 0) {
            o->no_bw = 1;
            continue;
        } else if (strcmp(a, "--profile") == 0) {
            o->profile = 1;
            continue;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage();
            exit(0);
        }
        if (!v) {
            fprintf(stderr, "ds4-bench: %s needs a value\n", a);
            return usage();
        }
        i++;
        if (strcmp(a, "--layers") == 0)
            bad = parse_u32(v, &o->layers, 43) || o->layers == 0;
        else if (strcmp(a, "--dims") == 0) {
            if (strcmp(v, "full") == 0)
                o->test_dims = 0;
            else if (strcmp(v, "test") == 0)
                o->test_dims = 1;
            else
                bad = 1;
        } else if (strcmp(a, "--prefill") == 0)
            bad = parse_list(v, o->prefill, &o->n_prefill);
        else if (strcmp(a, "--decode-ctx") == 0)
            bad = parse_list(v, o->ctx, &o->n_ctx);
        else if (strcmp(a, "--steps") == 0)
            bad = parse_u32(v, &o->steps, 100000) || o->steps == 0;
        else if (strcmp(a, "--repeats") == 0)
            bad = parse_u32(v, &o->repeats, 1000) || o->repeats == 0;
        else if (strcmp(a, "--chunk") == 0)
            bad = parse_u32(v, &o->chunk, 1u << 16) || o->chunk == 0;
        else if (strcmp(a, "--seed") == 0) {
            uint32_t s;
            bad = parse_u32(v, &s, UINT32_MAX);
            o->seed = s;
        } else if (strcmp(a, "--restore-ctx") == 0)
            bad = parse_u32(v, &o->restore_ctx, 1u << 22) || o->restore_ctx == 0;
        else if (strcmp(a, "--restore-dir") == 0)
            o->restore_dir = v;
        else if (strcmp(a, "--sessions") == 0)
            bad = parse_list(v, o->sessions, &o->n_sessions);
        else if (strcmp(a, "--bw-mb") == 0)
            bad = parse_u32(v, &o->bw_mb, 1u << 20) || o->bw_mb == 0;
        else if (strcmp(a, "--csv") == 0)
            o->csv = v;
        else {
            fprintf(stderr, "ds4-bench: unknown option '%s'\n", a);
            return usage();
        }
        if (bad) {
            fprintf(stderr, "ds4-bench: bad value '%s' for %s\n", v, a);
            return usage();
        }
    }
    return 0;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, uint32_t n)
{
    qsort(v, n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void progress(void *ud, uint64_t done, uint64_t total, const char *what)
{
    (void)what;
    int *last = ud;
    int pct = total ? (int)(done * 100 / total) : 100;
    if (pct / 10 != *last / 10 || done == total) {
        fprintf(stderr, "\rds4-bench: synthetic weights %3d%%", pct);
        if (done == total)
            fputc('\n', stderr);
        *last = pct;
    }
}

/* Deterministic prompt ids spread over the vocabulary. */
static void make_ids(int32_t *ids, uint32_t n, uint32_t vocab, uint64_t seed)
{
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 12345;
    for (uint32_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((s >> 33) % vocab);
    }
}

static FILE *g_csv;

static void csv_row(const char *kind, uint32_t layers, uint32_t tokens, double median_s,
                    double tok_s, double bytes_tok, double bound, double frac, double tok_s_43)
{
    if (!g_csv)
        return;
    fprintf(g_csv, "%s,%u,%u,%.6f,%.3f,%.0f,%.3f,%.4f,%.3f\n", kind, layers, tokens, median_s,
            tok_s, bytes_tok, bound, frac, tok_s_43);
    fflush(g_csv);
}

/* Kernel family of a profile entry. */
static const char *family_of(const char *name, uint32_t vocab)
{
    unsigned rows = 0, cols = 0, type = 0;
    if (sscanf(name, "matvec %ux%u t%u", &rows, &cols, &type) == 3 ||
        sscanf(name, "matmul %ux%u t%u", &rows, &cols, &type) == 3)
        return rows == vocab ? "head" : "dense GEMM";
    static const struct {
        const char *prefix, *family;
    } map[] = {
        {"fwd_attend", "attention"},   {"fwd_ring", "attention"},
        {"fwd_comp", "compressor"},    {"fwd_idx", "indexer"},
        {"fwd_moe", "MoE (routed)"},   {"fwd_swiglu", "MoE (routed)"},
        {"fwd_hc", "mHC"},             {"fwd_head", "head"},
        {"fwd_embed", "head"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strncmp(name, map[i].prefix, strlen(map[i].prefix)) == 0)
            return map[i].family;
    return "other";
}

/* Print the profile accumulated since the last reset, then reset. */
static void print_profile(eng_fwd *f, const char *what)
{
    static const char *fams[] = {"attention", "compressor", "indexer", "MoE (routed)",
                                 "dense GEMM", "mHC", "head", "other"};
    enum { NF = sizeof fams / sizeof fams[0] };
    double fs[NF] = {0}, total = 0;
    int n = eng_fwd_profile_count(f);
    uint32_t vocab = eng_fwd_hparams(f)->n_vocab;
    for (int i = 0; i < n; i++) {
        const char *name;
        double sec;
        uint64_t calls;
        eng_fwd_profile_entry(f, i, &name, &sec, &calls);
        const char *fam = family_of(name, vocab);
        for (int k = 0; k < NF; k++)
            if (strcmp(fam, fams[k]) == 0)
                fs[k] += sec;
        total += sec;
    }
    printf("profile, %s (serialised launches, %.3f s in all):\n", what, total);
    for (int k = 0; k < NF; k++)
        if (fs[k] > 0)
            printf("  %-14s %6.1f%%  %9.3f ms\n", fams[k], 100 * fs[k] / total, fs[k] * 1e3);
    for (int i = 0; i < n; i++) {
        const char *name;
        double sec;
        uint64_t calls;
        eng_fwd_profile_entry(f, i, &name, &sec, &calls);
        if (sec >= 0.01 * total)
            printf("    %-36s %6.1f%%  %8llu calls\n", name, 100 * sec / total,
                   (unsigned long long)calls);
    }
    eng_fwd_profile_reset(f);
}

/* Prefill X tokens vs restoring the same state from a file (see above). */
static int bench_restore(eng_fwd *f, const bench_opts *o, uint32_t layers, const int32_t *ids,
                         char *err, size_t errlen)
{
    uint32_t X = o->restore_ctx, V = eng_fwd_hparams(f)->n_vocab;
    eng_fwd_seq *a = NULL, *b = NULL;
    float *la = malloc(sizeof(float) * V), *lb = malloc(sizeof(float) * V);
    uint64_t bytes = eng_fwd_state_blob_bytes(f, X);
    void *blob = malloc(bytes), *back = malloc(bytes);
    char path[512];
    snprintf(path, sizeof path, "%.400s/ds4-bench-restore-%d.kv",
             o->restore_dir ? o->restore_dir : "/tmp", (int)getpid());
    int rc = -1, fd = -1;
    if (!la || !lb || !blob || !back) {
        snprintf(err, errlen, "out of memory for a %llu-byte state", (unsigned long long)bytes);
        goto out;
    }
    if (eng_fwd_seq_new(f, &a, err, errlen) || eng_fwd_seq_new(f, &b, err, errlen))
        goto out;
    uint64_t t0 = ds4_now_ns();
    if (eng_fwd_eval(a, ids, X, o->chunk, NULL, err, errlen) || eng_fwd_logits(a, la, err, errlen))
        goto out;
    uint64_t t1 = ds4_now_ns();
    if (eng_fwd_state_save(a, blob, err, errlen))
        goto out;
    uint64_t sum = ds4_hash64(blob, bytes, 0);
    uint64_t t2 = ds4_now_ns();
    fd = open(path, O_CREAT | O_TRUNC | O_RDWR, 0600);
    if (fd < 0 || write(fd, blob, bytes) != (ssize_t)bytes || fsync(fd)) {
        snprintf(err, errlen, "%.400s: %.200s", path, strerror(errno));
        goto out;
    }
    uint64_t t3 = ds4_now_ns();
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED); /* read it back from the disk */
    memset(back, 0, bytes);
    uint64_t t4 = ds4_now_ns();
    if (pread(fd, back, bytes, 0) != (ssize_t)bytes) {
        snprintf(err, errlen, "%.400s: short read: %.200s", path, strerror(errno));
        goto out;
    }
    uint64_t t5 = ds4_now_ns();
    if (ds4_hash64(back, bytes, 0) != sum) {
        snprintf(err, errlen, "%.400s: checksum mismatch after the round trip", path);
        goto out;
    }
    uint64_t t6 = ds4_now_ns();
    if (eng_fwd_state_load(b, X, back, err, errlen))
        goto out;
    uint64_t t7 = ds4_now_ns();
    /* one more token on both: the restored sequence must continue alike */
    int32_t next = ids[X];
    if (eng_fwd_eval(a, &next, 1, 1, la, err, errlen) || eng_fwd_eval(b, &next, 1, 1, lb, err, errlen))
        goto out;
    double maxd = 0;
    for (uint32_t v = 0; v < V; v++)
        maxd = fmax(maxd, fabs((double)la[v] - lb[v]));
    double prefill = (t1 - t0) / 1e9, rd = (t5 - t4) / 1e9, ck = (t6 - t5) / 1e9,
           ld = (t7 - t6) / 1e9, restore = rd + ck + ld;
    char b1[32];
    printf("restore of %u tokens: state %s (%.1f KiB/token); prefill %.3f s; save %.3f s, "
           "write+fsync %.3f s; restore %.3f s (read %.3f, checksum %.3f, load %.3f) = %.0fx "
           "faster than prefill; next-token logits max |diff| %.3g\n",
           X, eng_fmt_bytes(bytes, b1, sizeof b1), bytes / 1024.0 / X, prefill, (t2 - t1) / 1e9,
           (t3 - t2) / 1e9, restore, rd, ck, ld, prefill / restore, maxd);
    csv_row("restore", layers, X, restore, X / restore, (double)bytes / X, 0, prefill / restore, 0);
    if (maxd != 0) {
        snprintf(err, errlen, "restored sequence diverges (max |diff| %g)", maxd);
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0) {
        close(fd);
        unlink(path);
    }
    eng_fwd_seq_free(a);
    eng_fwd_seq_free(b);
    free(la);
    free(lb);
    free(blob);
    free(back);
    return rc ? 1 : 0;
}

/* B sessions prefilled to X (one prefill, copied), then batched steps. */
static int bench_batch(eng_fwd *f, eng_cl *cl, const bench_opts *o, uint32_t layers,
                       const int32_t *ids, uint32_t X, uint32_t B, double single_tok_s,
                       char *err, size_t errlen)
{
    const dsv4_hparams *hp = eng_fwd_hparams(f);
    eng_fwd_seq **s = calloc(B, sizeof *s);
    int32_t *next = malloc(sizeof(int32_t) * B);
    float *lg = malloc(sizeof(float) * hp->n_vocab * B);
    double *ts = calloc(o->steps, sizeof *ts);
    int rc = -1;
    if (!s || !next || !lg || !ts) {
        snprintf(err, errlen, "out of memory for %u sessions", B);
        goto out;
    }
    for (uint32_t i = 0; i < B; i++) {
        if (eng_fwd_seq_new(f, &s[i], err, errlen))
            goto out;
        if (i == 0 ? eng_fwd_eval(s[0], ids, X, o->chunk, NULL, err, errlen)
                   : eng_fwd_seq_copy(s[i], s[0], err, errlen))
            goto out;
        next[i] = ids[(X + i) % X];
    }
    for (int k = -1; k < (int)o->steps; k++) {
        uint64_t a = ds4_now_ns();
        if (eng_fwd_decode_batch(s, next, B, lg, err, errlen) || eng_cl_finish(cl))
            goto out;
        for (uint32_t i = 0; i < B; i++) {
            const float *row = lg + (size_t)hp->n_vocab * i;
            uint32_t best = 0;
            for (uint32_t v = 1; v < hp->n_vocab; v++)
                best = row[v] > row[best] ? v : best;
            next[i] = (int32_t)best;
        }
        if (k >= 0)
            ts[k] = (ds4_now_ns() - a) / 1e9;
    }
    double step = median(ts, o->steps), agg = B / step;
    printf("decode at %6u, %2u sessions batched: step %7.2f ms, %8.2f tok/s aggregate = "
           "%.2fx one session\n", X, B, step * 1e3, agg, agg / single_tok_s);
    csv_row("decode_batch", layers, X, step, agg, 0, 0, agg / single_tok_s, 0);
    rc = 0;
out:
    if (s)
        for (uint32_t i = 0; i < B; i++)
            eng_fwd_seq_free(s[i]);
    free(s);
    free(next);
    free(lg);
    free(ts);
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    bench_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc;
    char err[1024];
    eng_cl cl;
    if (eng_cl_open(&cl) || eng_cl_build(&cl, NULL)) {
        fprintf(stderr, "ds4-bench: OpenCL: %s\n", cl.err);
        eng_cl_close(&cl);
        return 2;
    }
    eng_cl_print_info(&cl, stdout);

    dsv4_hparams hp;
    if (o.test_dims) {
        dsv4_mkmodel_opts mo;
        dsv4_mkmodel_defaults(&mo);
        hp = mo.hp;
        hp.n_vocab = 129280;
        if (o.layers > hp.n_layer) {
            fprintf(stderr, "ds4-bench: the test dims have %u layers\n", hp.n_layer);
            return 64;
        }
    } else {
        dsv4_hparams_full(&hp);
    }
    hp.n_layer = o.layers;
    if (hp.n_hash_layer > hp.n_layer)
        hp.n_hash_layer = hp.n_layer;
    if (dsv4_hparams_check(&hp, err, sizeof err)) {
        fprintf(stderr, "ds4-bench: %s\n", err);
        return 64;
    }
    uint32_t max_ctx = 16;
    for (uint32_t i = 0; i < o.n_prefill; i++)
        max_ctx = o.prefill[i] > max_ctx ? o.prefill[i] : max_ctx;
    for (uint32_t i = 0; i < o.n_ctx; i++)
    {
        /* the warm-up step, the timed steps, and the profiled ones */
        uint32_t need = o.ctx[i] + (o.profile ? 2 : 1) * o.steps + 1;
        max_ctx = need > max_ctx ? need : max_ctx;
    }

    if (o.restore_ctx + 2 > max_ctx)
        max_ctx = o.restore_ctx + 2;
    eng_model *m = eng_model_virtual(&hp);
    eng_plan plan;
    eng_plan_opts po = {0};
    if (eng_model_plan(m, &cl, &po, &plan, err, sizeof err)) {
        fprintf(stderr, "ds4-bench: %s\n", err);
        return 1;
    }
    char b1[32];
    printf("model: %s widths, %u layer(s) (ratios", o.test_dims ? "test" : "DeepSeek V4 Flash",
           hp.n_layer);
    for (uint32_t l = 0; l < hp.n_layer; l++)
        printf(" %u", hp.compress_ratio[l]);
    printf("), q2 layout, %s of weights in %u buffer(s), %s mode\n",
           eng_fmt_bytes(plan.tensor_bytes, b1, sizeof b1), plan.n_bufs,
           o.exact ? "exact" : "QAT");
    int last = -1;
    uint64_t t0 = ds4_now_ns();
    if (eng_synth_fill(m, &cl, &plan, o.seed, progress, &last, err, sizeof err)) {
        fprintf(stderr, "ds4-bench: %s\n", err);
        return 2;
    }
    printf("synthetic weights generated on the device in %.2f s\n", (ds4_now_ns() - t0) / 1e9);
    eng_plan_free(&plan);

    eng_bw_result bw = {0};
    if (!o.no_bw) {
        if (eng_bw_measure(&cl, (uint64_t)o.bw_mb << 20, 5, &bw)) {
            fprintf(stderr, "ds4-bench: bandwidth: %s\n", cl.err);
            return 2;
        }
        printf("streaming read bandwidth: %.1f GB/s (median of %d over %s; best %.1f)\n",
               bw.gbps_median, bw.repeats, eng_fmt_bytes(bw.bytes, b1, sizeof b1), bw.gbps_best);
    }

    eng_fwd *f = NULL;
    eng_fwd_opts fo = {.exact = o.exact, .max_chunk = o.chunk, .max_ctx = max_ctx};
    if (eng_fwd_open(&cl, m, &fo, &f, err, sizeof err)) {
        fprintf(stderr, "ds4-bench: %s\n", err);
        return 1;
    }
    if (o.csv) {
        g_csv = fopen(o.csv, "w");
        if (!g_csv) {
            fprintf(stderr, "ds4-bench: %s: %s\n", o.csv, strerror(errno));
            return 1;
        }
        fprintf(g_csv, "kind,layers,tokens,median_s,tok_s,bytes_per_token,bound_tok_s,"
                       "fraction_of_bound,tok_s_43_layers\n");
    }
    int32_t *ids = malloc(sizeof(int32_t) * max_ctx);
    float *logits = malloc(sizeof(float) * hp.n_vocab);
    double *ts = calloc(o.repeats > o.steps ? o.repeats : o.steps, sizeof *ts);
    double *th = calloc(o.steps, sizeof *th);
    make_ids(ids, max_ctx, hp.n_vocab, o.seed);
    int status = 0;

    for (uint32_t pi = 0; pi < o.n_prefill && !status; pi++) {
        uint32_t P = o.prefill[pi];
        for (int r = -1; r < (int)o.repeats; r++) {
            eng_fwd_seq *s = NULL;
            if (eng_fwd_seq_new(f, &s, err, sizeof err)) {
                status = 1;
                break;
            }
            uint64_t a = ds4_now_ns();
            int e = eng_fwd_eval(s, ids, P, o.chunk, NULL, err, sizeof err);
            e = e ? e : eng_fwd_logits(s, logits, err, sizeof err);
            double dt = (ds4_now_ns() - a) / 1e9;
            eng_fwd_seq_free(s);
            if (e) {
                status = 1;
                break;
            }
            if (r >= 0)
                ts[r] = dt;
        }
        if (status)
            break;
        double med = median(ts, o.repeats);
        printf("prefill %6u tokens: %8.3f s  %10.1f tok/s\n", P, med, P / med);
        csv_row("prefill", hp.n_layer, P, med, P / med, 0, 0, 0, 0);
        if (o.profile) {
            eng_fwd_seq *s = NULL;
            eng_fwd_profile_reset(f);
            eng_fwd_set_profile(f, 1);
            int e = eng_fwd_seq_new(f, &s, err, sizeof err);
            e = e ? e : eng_fwd_eval(s, ids, P, o.chunk, NULL, err, sizeof err);
            e = e ? e : eng_fwd_logits(s, logits, err, sizeof err);
            eng_fwd_seq_free(s);
            eng_fwd_set_profile(f, 0);
            if (e) {
                status = 1;
                break;
            }
            char what[64];
            snprintf(what, sizeof what, "prefill of %u tokens", P);
            print_profile(f, what);
        }
    }

    for (uint32_t ci = 0; ci < o.n_ctx && !status; ci++) {
        uint32_t X = o.ctx[ci];
        eng_fwd_seq *s = NULL;
        if (eng_fwd_seq_new(f, &s, err, sizeof err)) {
            status = 1;
            break;
        }
        if (eng_fwd_eval(s, ids, X, o.chunk, NULL, err, sizeof err)) {
            eng_fwd_seq_free(s);
            status = 1;
            break;
        }
        int32_t next = ids[X];
        /* one untimed warm-up step, then the timed steps */
        for (int k = -1; k < (int)o.steps; k++) {
            uint64_t a = ds4_now_ns();
            if (eng_fwd_eval(s, &next, 1, 1, NULL, err, sizeof err) || eng_cl_finish(&cl)) {
                status = 1;
                break;
            }
            uint64_t b = ds4_now_ns();
            if (eng_fwd_logits(s, logits, err, sizeof err)) {
                status = 1;
                break;
            }
            uint32_t best = 0;
            for (uint32_t v = 1; v < hp.n_vocab; v++)
                best = logits[v] > logits[best] ? v : best;
            next = (int32_t)best;
            uint64_t c = ds4_now_ns();
            if (k >= 0) {
                ts[k] = (c - a) / 1e9;
                th[k] = (c - b) / 1e9;
            }
        }
        if (!status && o.profile) {
            eng_fwd_profile_reset(f);
            eng_fwd_set_profile(f, 1);
            for (uint32_t k = 0; k < o.steps && !status; k++) {
                if (eng_fwd_eval(s, &next, 1, 1, NULL, err, sizeof err) ||
                    eng_fwd_logits(s, logits, err, sizeof err))
                    status = 1;
            }
            eng_fwd_set_profile(f, 0);
            char what[64];
            snprintf(what, sizeof what, "%u decode steps at context %u", o.steps, X);
            if (!status)
                print_profile(f, what);
        }
        eng_fwd_seq_free(s);
        if (status)
            break;
        double step = median(ts, o.steps), head = median(th, o.steps);
        eng_token_bytes tb;
        eng_token_bytes_at(m, X, 4, 4, &tb); /* eng_fwd keeps KV rows in f32 */
        double bound = bw.gbps_median > 0 ? bw.gbps_median * 1e9 / tb.total : 0;
        double frac = bound > 0 ? (1.0 / step) / bound : 0;
        /* extrapolate: the layers scale with 43 / N, the head does not */
        double step43 = head + (step - head) * 43.0 / hp.n_layer;
        eng_model *full = NULL;
        double tok43 = 1.0 / step43, frac43 = 0;
        if (!o.test_dims) {
            dsv4_hparams fh;
            dsv4_hparams_full(&fh);
            full = eng_model_virtual(&fh);
            eng_token_bytes tf;
            eng_token_bytes_at(full, X, 4, 4, &tf);
            if (bw.gbps_median > 0)
                frac43 = tok43 / (bw.gbps_median * 1e9 / tf.total);
            eng_model_close(full);
        }
        printf("decode at %6u: step %7.2f ms (head %.2f ms) %8.2f tok/s, %s/token, bound "
               "%.1f tok/s, %.1f%% of bound",
               X, step * 1e3, head * 1e3, 1.0 / step, eng_fmt_bytes(tb.total, b1, sizeof b1),
               bound, 100 * frac);
        if (hp.n_layer < 43 && !o.test_dims)
            printf("; 43 layers: %.2f tok/s (%.1f%% of its bound)", tok43, 100 * frac43);
        printf("\n");
        csv_row("decode", hp.n_layer, X, step, 1.0 / step, (double)tb.total, bound, frac,
                o.test_dims ? 0 : tok43);
        for (uint32_t bi = 0; bi < o.n_sessions && !status; bi++)
            status = bench_batch(f, &cl, &o, hp.n_layer, ids, X, o.sessions[bi], 1.0 / step,
                                 err, sizeof err);
    }
    if (!status && o.restore_ctx)
        status = bench_restore(f, &o, hp.n_layer, ids, err, sizeof err);
    if (status)
        fprintf(stderr, "ds4-bench: %s\n", err);
    free(ids);
    free(logits);
    free(ts);
    free(th);
    if (g_csv)
        fclose(g_csv);
    eng_fwd_close(f);
    eng_model_close(m);
    eng_cl_close(&cl);
    return status;
}
