/* dsv4_mkmodel.h - seeded, deterministic small DeepSeek V4 test models in
 * the exact ds4 GGUF layout (names, types, metadata keys), with the real
 * DeepSeek V4 tokenizer; and single-edit rewrites of a GGUF (the mutated
 * files the validator tests reject).
 *
 * Determinism: every weight value is an integer from a splitmix64 stream
 * (one stream per tensor, keyed by seed and tensor name) times an exact
 * power of two, so the float values are the same on every machine and
 * exactly representable in F16; no libm is involved. Quantized layouts then
 * go through ds4_quantize, which is deterministic by contract.
 */
#ifndef DS4_DSV4_MKMODEL_H
#define DS4_DSV4_MKMODEL_H

#include <stddef.h>
#include <stdint.h>

#include "dsv4_layout.h"
#include "gguf.h"

/* Where `npm install` puts the DeepSeek V4 tokenizer, from the repo root. */
#define DSV4_TOKENIZER_JSON \
    "node_modules/@lenml/tokenizer-deepseek_v4/models/tokenizer.json"

/* The tokenizer as GGUF wants it: tokens in id order, merges in rank order. */
typedef struct dsv4_tokdata {
    uint32_t n_tokens;
    char **tokens;         /* owned, may contain no NUL */
    uint64_t *token_lens;
    int32_t *token_types;  /* 1 normal, 3 control, 4 user-defined */
    uint64_t n_merges;
    char **merges;         /* "a b", owned */
    uint32_t bos, eos;     /* looked up by text */
} dsv4_tokdata;

/* Parse a HF tokenizer.json (BPE model.vocab + added_tokens; merges as
 * "a b" strings or [a, b] pairs). Fails on gaps, conflicting ids, missing
 * BOS/EOS. 0 or -1 + message. */
int dsv4_tokdata_load(const char *path, dsv4_tokdata **out, char *err,
                      size_t errlen);
void dsv4_tokdata_free(dsv4_tokdata *t);

enum dsv4_mk_layout {
    DSV4_MK_Q2,    /* ds4 q2: routed gate/up IQ2_XXS, down Q2_K */
    DSV4_MK_Q4,    /* ds4 q4: routed Q4_K */
    DSV4_MK_EXACT, /* F16 where ds4 quantizes (values are F16-exact) */
};

typedef struct dsv4_mkmodel_opts {
    uint64_t seed;
    int layout;              /* enum dsv4_mk_layout */
    dsv4_hparams hp;         /* n_vocab must equal the tokenizer's size */
    const dsv4_tokdata *tok; /* required */
    int progress;            /* progress lines on stderr */
} dsv4_mkmodel_opts;

/* Test-model defaults (SPEC 3.4): 6 layers, ratios [0,0,4,128,4,128],
 * 3 hash layers, hidden 256, 4 heads of 128 (64 RoPE dims), q/o LoRA 128,
 * 2 output groups, 8 experts (2 used) of width 256, window 64, 16 indexer
 * heads of 128, top-k 32, 4 HC streams, 20 Sinkhorn iterations, vocab
 * 129280. seed 1, layout q2, tok NULL. */
void dsv4_mkmodel_defaults(dsv4_mkmodel_opts *o);

/* How the generator draws a tensor's values: v = (off + q) * 2^-k with q
 * uniform in [lo, hi] (q = 0 replaced by 1 when nonzero): norms near 1,
 * weight matrices with standard deviation ~ 1/sqrt(fan_in), and so on.
 * Exposed for the synthetic full-width weights of the benchmark. */
typedef struct dsv4_value_recipe {
    int32_t lo, hi, off;
    int k;
    int nonzero;
} dsv4_value_recipe;

void dsv4_mk_recipe(int id, uint64_t fan_in, dsv4_value_recipe *out);

/* A writer plus the buffers its tensors reference. */
typedef struct dsv4_build dsv4_build;

gguf_writer *dsv4_build_writer(dsv4_build *b);
void dsv4_build_free(dsv4_build *b);

/* Generate the model into a writer (nothing written yet). 0 or -1 + msg. */
int dsv4_mkmodel_build(const dsv4_mkmodel_opts *o, dsv4_build **out,
                       char *err, size_t errlen);

/* Generate and write to path; sha_hex (65 bytes, may be NULL) gets the
 * file's SHA-256. 0 or -1 + message. */
int dsv4_mkmodel_write(const dsv4_mkmodel_opts *o, const char *path,
                       char *sha_hex, char *err, size_t errlen);

/* Generate into a malloc'd buffer. 0 or -1 + message. */
int dsv4_mkmodel_to_mem(const dsv4_mkmodel_opts *o, uint8_t **buf,
                        uint64_t *len, char *err, size_t errlen);

/* One edit applied while copying a GGUF (NULL fields do nothing). Tensor
 * names are fnmatch(3) globs ("blk.*.ffn_*_exps.weight"). */
typedef struct dsv4_gguf_edit {
    const char *drop_tensor;   /* leave these tensors out */
    const char *retype_tensor; /* re-encode these tensors as new_type */
    uint32_t new_type;
    const char *grow_tensor;   /* one more row/element on the outer dim */
    const char *drop_key;      /* leave this metadata key out (exact) */
} dsv4_gguf_edit;

/* Copy every key and tensor of f into a new writer, applying e. The
 * result references f's mapped data: keep f open until written. Fails if
 * a pattern matches no tensor, a key does not exist, or a type cannot be
 * converted. */
int dsv4_gguf_rewrite(const gguf_file *f, const dsv4_gguf_edit *e,
                      dsv4_build **out, char *err, size_t errlen);

#endif
