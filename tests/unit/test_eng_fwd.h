/* test_eng_fwd.h - helpers shared by the forward-pass tests
 * (test_eng_fwd.c: HF fixtures, greedy, QAT kernels; test_eng_fwd_state.c:
 * incremental state, QAT vs eng_ref, the "cl" backend contract): model
 * generation, device set-up, synthetic prompts, row comparisons. */
#ifndef DS4_TEST_ENG_FWD_H
#define DS4_TEST_ENG_FWD_H

#include <execinfo.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/dsv4_mkmodel.h"
#include "common/util.h"
#include "engined/eng_cl.h"
#include "engined/eng_fwd.h"
#include "engined/eng_model.h"
#include "test.h"

static inline double now_s(void) { return ds4_now_ns() / 1e9; }

/* One device model: eng_cl + uploaded eng_model. */
typedef struct dev {
    eng_cl cl;
    eng_model *m;
    char path[64];
    int ok;
} dev;

/* Generate mkmodel(layout, seed 1) into a temp file; sha into sha_out. */
static inline int gen_model(int layout, char *path, char sha[65])
{
    char err[512];
    dsv4_tokdata *tok = NULL;
    if (dsv4_tokdata_load(DSV4_TOKENIZER_JSON, &tok, err, sizeof err)) {
        fprintf(stderr, "tokenizer: %s\n", err);
        return -1;
    }
    dsv4_mkmodel_opts o;
    dsv4_mkmodel_defaults(&o);
    o.tok = tok;
    o.layout = layout;
    o.seed = 1;
    o.hp.n_vocab = tok->n_tokens;
    strcpy(path, "/tmp/test_eng_fwd_XXXXXX");
    int fd = mkstemp(path);
    if (fd >= 0)
        close(fd);
    int rc = fd >= 0 ? dsv4_mkmodel_write(&o, path, sha, err, sizeof err) : -1;
    if (rc)
        fprintf(stderr, "mkmodel: %s\n", err);
    dsv4_tokdata_free(tok);
    return rc;
}

static inline int dev_open(dev *d, const char *path)
{
    char err[1024];
    memset(d, 0, sizeof *d);
    if (eng_cl_open(&d->cl) || eng_cl_build(&d->cl, NULL)) {
        fprintf(stderr, "opencl: %s\n", d->cl.err);
        return -1;
    }
    eng_plan plan;
    if (eng_model_open(path, &d->m, err, sizeof err) ||
        eng_model_plan(d->m, &d->cl, NULL, &plan, err, sizeof err)) {
        fprintf(stderr, "model: %s\n", err);
        return -1;
    }
    int rc = eng_model_upload(d->m, &d->cl, &plan, NULL, NULL, err, sizeof err);
    eng_plan_free(&plan);
    if (rc) {
        fprintf(stderr, "upload: %s\n", err);
        return -1;
    }
    d->ok = 1;
    return 0;
}

static inline void dev_close(dev *d)
{
    eng_model_close(d->m);
    eng_cl_close(&d->cl);
}

static inline eng_fwd *fwd_open(dev *d, int exact, uint32_t chunk, uint32_t ctx)
{
    char err[512];
    eng_fwd_opts o = {exact, chunk, ctx};
    eng_fwd *f = NULL;
    CHECKF(eng_fwd_open(&d->cl, d->m, &o, &f, err, sizeof err) == 0, "%s", err);
    return f;
}

static inline uint32_t argmax(const float *row, uint32_t V)
{
    uint32_t am = 0;
    for (uint32_t v = 1; v < V; v++)
        if (row[v] > row[am])
            am = v;
    return am;
}

static inline int32_t *synth_prompt(uint32_t n, uint64_t seed)
{
    int32_t *ids = ds4_xmalloc(sizeof(int32_t) * n);
    for (uint32_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = 1000 + (int32_t)((seed >> 33) % 100000); /* ordinary tokens */
    }
    return ids;
}

/* rel L2 of a against b (V floats) and whether argmax agrees or is a
 * near-tie of b (top-1/top-2 gap <= 10x the max abs difference). */
static inline double row_err(const float *a, const float *b, uint32_t V, int *argmax_ok)
{
    double dn = 0, rn = 0, mx = 0;
    uint32_t b1 = 0, b2 = 1;
    for (uint32_t v = 0; v < V; v++) {
        double dd = (double)a[v] - b[v];
        dn += dd * dd;
        rn += (double)b[v] * b[v];
        mx = fmax(mx, fabs(dd));
    }
    if (b[1] > b[0]) {
        b1 = 1;
        b2 = 0;
    }
    for (uint32_t v = 2; v < V; v++)
        if (b[v] > b[b1]) {
            b2 = b1;
            b1 = v;
        } else if (b[v] > b[b2]) {
            b2 = v;
        }
    uint32_t am = argmax(a, V);
    *argmax_ok = am == b1 ? 1 : (b[b1] - b[b2] <= 10 * mx ? 2 : 0);
    return sqrt(dn / (rn > 0 ? rn : 1e-30));
}


/* On SIGSEGV/SIGBUS/SIGABRT: the stack on stderr (addresses for
 * addr2line on machines without a debugger), then die. */
static void test_crash_handler(int sig)
{
    void *pc[64];
    int n = backtrace(pc, 64);
    static const char msg[] = "test_eng_fwd: fatal signal, backtrace:\n";
    if (write(2, msg, sizeof msg - 1) < 0)
        _exit(128 + sig);
    backtrace_symbols_fd(pc, n, 2);
    _exit(128 + sig);
}

/* Open a device for the test binary (no device: skip when allowed). */
static inline int test_no_device(void)
{
    signal(SIGSEGV, test_crash_handler);
    signal(SIGBUS, test_crash_handler);
    setvbuf(stdout, NULL, _IOLBF, 0);
    eng_cl probe;
    if (eng_cl_open(&probe)) {
        const char *allow = getenv("DS4_ALLOW_NO_OPENCL");
        fprintf(stderr, "no OpenCL device: %s\n", probe.err);
        return allow && *allow == '1' ? 2 : 1;
    }
    printf("device: %s\n", probe.info.name);
    eng_cl_close(&probe);
    return 0;
}

#endif
