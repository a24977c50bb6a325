/* test_eng_fwd_dims.c - the OpenCL forward pass takes every dimension from
 * the GGUF metadata: a test model with other widths than the default one
 * (3 hyper-connection streams, 8 heads of 256 with 3 FP8 blocks, 4 output
 * groups, hidden 320, 12 experts with 3 used, window 24, 8 indexer heads,
 * top-k 12, layers with ratios 0 4 128 4 0, per-layer SwiGLU clamps, 2
 * hash layers) is decoded one token at a time (and, in QAT mode, in chunks
 * of 5) and compared with eng_ref on the same prompt, in exact mode and
 * with the KV QAT simulations (FP8 + F16, here 3 FP8 blocks per row) on
 * both sides. The indexer's Hadamard + FP4 is left out of this comparison:
 * its top-k decisions can move under rounding and make rows jump
 * (test_eng_fwd.h); test_eng_fwd_state.c compares the full QAT mode. */
#include "engined/eng_ref.h"
#include "test_eng_fwd.h"

/* exact: the f32 engine against the double-accumulating reference (both
 * reach ~1e-6 against each other on the default model); QAT:
 * qat_compare (test_eng_fwd.h) */
#define TOL_EXACT 1e-4

static int gen_dims_model(char *path)
{
    char err[512], sha[65];
    dsv4_tokdata *tok = NULL;
    if (dsv4_tokdata_load(DSV4_TOKENIZER_JSON, &tok, err, sizeof err)) {
        fprintf(stderr, "tokenizer: %s\n", err);
        return -1;
    }
    dsv4_mkmodel_opts o;
    dsv4_mkmodel_defaults(&o);
    o.tok = tok;
    o.layout = DSV4_MK_EXACT;
    o.seed = 7;
    dsv4_hparams *hp = &o.hp;
    static const uint32_t ratios[] = {0, 4, 128, 4, 0};
    static const float clamps[] = {10.0f, 7.0f, 10.0f, 5.0f, 10.0f};
    hp->n_vocab = tok->n_tokens;
    hp->n_layer = 5;
    hp->n_embd = 320;
    hp->n_head = 8;
    hp->head_dim = hp->value_dim = 256;
    hp->q_lora_rank = 96;
    hp->o_groups = 4;
    hp->o_lora_rank = 64;
    hp->n_expert = 12;
    hp->n_expert_used = 3;
    hp->n_ff_exp = 160;
    hp->n_hash_layer = 2;
    hp->n_swa = 24;
    hp->n_idx_head = 8;
    hp->idx_top_k = 12;
    hp->n_hc = 3;
    for (uint32_t i = 0; i < DSV4_MAX_LAYERS; i++) {
        hp->compress_ratio[i] = i < hp->n_layer ? ratios[i] : 0;
        hp->swiglu_clamp[i] = i < hp->n_layer ? clamps[i] : 0;
    }
    strcpy(path, "/tmp/test_eng_fwd_dims_XXXXXX");
    int fd = mkstemp(path);
    if (fd >= 0)
        close(fd);
    int rc = fd >= 0 ? dsv4_mkmodel_write(&o, path, sha, err, sizeof err) : -1;
    if (rc)
        fprintf(stderr, "mkmodel: %s\n", err);
    dsv4_tokdata_free(tok);
    return rc;
}

/* Device rows [N - nrows, N) of ids in chunks of chunk, exact or KV QAT,
 * vs eng_ref rows computed with the same setting. */
static void compare(dev *d, eng_ref *r, const int32_t *ids, uint32_t N,
                    uint32_t nrows, uint32_t chunk, int exact)
{
    char err[512];
    uint32_t V = d->m->hp.n_vocab;
    uint8_t *want = ds4_xcalloc(N, 1);
    memset(want + N - nrows, 1, nrows);
    float *got = ds4_xmalloc(sizeof(float) * V * nrows);
    float *ref = ds4_xmalloc(sizeof(float) * V * nrows);
    eng_fwd *f = fwd_open(d, exact ? FWD_EXACT : FWD_QAT_KV, 64, 512);
    eng_fwd_seq *s = NULL;
    double t0 = now_s();
    if (!f || eng_fwd_seq_new(f, &s, err, sizeof err) ||
        eng_fwd_eval_rows(s, ids, N, chunk, want, got, err, sizeof err)) {
        CHECKF(0, "%s", err);
        goto out;
    }
    double t1 = now_s();
    if (eng_ref_set_qat(r, exact ? 0 : ENG_REF_QAT_KV, err, sizeof err) ||
        eng_ref_forward_rows(r, ids, N, N - nrows, ref, err, sizeof err)) {
        CHECKF(0, "%s", err);
        goto out;
    }
    char what[96];
    snprintf(what, sizeof what, "%s, chunk %u (device %.2f s, eng_ref %.2f s) vs "
             "eng_ref", exact ? "exact" : "QAT (KV)", chunk, t1 - t0, now_s() - t1);
    if (!exact) {
        qat_compare(what, got, ref, nrows, V, 1);
        goto out;
    }
    double mx = 0;
    size_t near = 0;
    for (uint32_t i = 0; i < nrows; i++) {
        int am;
        double e = row_err(got + (size_t)i * V, ref + (size_t)i * V, V, &am);
        mx = fmax(mx, e);
        near += am == 2;
        CHECKF(e <= TOL_EXACT, "exact row %u: rel L2 %g", N - nrows + i, e);
        CHECKF(am != 0, "exact row %u: argmax differs (not a near-tie)", N - nrows + i);
    }
    printf("%s: %u rows, rel L2 max %.3g, %zu near-ties\n", what, nrows, mx, near);
out:
    eng_fwd_seq_free(s);
    eng_fwd_close(f);
    free(want);
    free(got);
    free(ref);
}

int main(void)
{
    int nd = test_no_device();
    if (nd)
        return nd == 2 ? 0 : 1;
    char path[64], err[512];
    if (gen_dims_model(path)) {
        CHECK(0);
        return test_main_end("eng_fwd_dims");
    }
    dev d;
    eng_ref *r = NULL;
    if (dev_open(&d, path) == 0 && eng_ref_open(path, &r, err, sizeof err) == 0) {
        const dsv4_hparams *hp = &d.m->hp;
        CHECK(hp->n_hc == 3 && hp->head_dim == 256 && hp->compress_ratio[2] == 128);
        /* 264 tokens: 66 ratio-4 rows (> top-k 12), 2 ratio-128 blocks,
         * the 24-row window wrapped 11 times */
        int32_t *ids = synth_prompt(264, 31);
        compare(&d, r, ids, 264, 24, 1, 1);
        compare(&d, r, ids, 264, 24, 5, 0);
        free(ids);
    } else {
        CHECKF(0, "%s", err);
    }
    eng_ref_close(r);
    dev_close(&d);
    unlink(path);
    return test_main_end("eng_fwd_dims");
}
