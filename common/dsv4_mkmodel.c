/* dsv4_mkmodel.c - deterministic DeepSeek V4 test models, the tokenizer
 * import from tokenizer.json, and single-edit GGUF rewrites.
 *
 * Value path (bit-for-bit the same on every machine): splitmix64 integers
 * -> small signed integers q -> q * 2^-k computed by exact float halving.
 * |q| <= 1023 and k <= 24 keep every value exactly representable in F16, so
 * the exact layout loses nothing by storing F16.
 */
#include "dsv4_mkmodel.h"

#include <fnmatch.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "quant.h"
#include "util.h"


/* ---- build: a writer and the buffers it references -------------------- */

struct dsv4_build {
    gguf_writer *w;
    void **bufs;
    size_t n, cap;
};

/* New empty build. */
static dsv4_build *build_new(void)
{
    dsv4_build *b = ds4_xcalloc(1, sizeof *b);
    b->w = gguf_writer_new();
    return b;
}

/* Allocate a buffer owned by the build (lives until dsv4_build_free). */
static void *build_alloc(dsv4_build *b, size_t n)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 64;
        b->bufs = ds4_xrealloc(b->bufs, b->cap * sizeof *b->bufs);
    }
    return b->bufs[b->n++] = ds4_xmalloc(n);
}

gguf_writer *dsv4_build_writer(dsv4_build *b)
{
    return b->w;
}

void dsv4_build_free(dsv4_build *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++)
        free(b->bufs[i]);
    free(b->bufs);
    gguf_writer_free(b->w);
    free(b);
}

/* ---- tokenizer.json ----------------------------------------------------- */

void dsv4_tokdata_free(dsv4_tokdata *t)
{
    if (!t)
        return;
    for (uint32_t i = 0; i < t->n_tokens; i++)
        free(t->tokens[i]);
    for (uint64_t i = 0; i < t->n_merges; i++)
        free(t->merges[i]);
    free(t->tokens);
    free(t->token_lens);
    free(t->token_types);
    free(t->merges);
    free(t);
}

/* Put token text s at id (an existing entry must have the same text). */
static int place_token(dsv4_tokdata *t, json_int_t id, const char *s,
                       size_t len, int32_t type, char *err, size_t errlen)
{
    if (id < 0 || id >= (json_int_t)t->n_tokens) {
        ds4_seterr(err, errlen, "tokenizer.json: token id %lld out of range",
                (long long)id);
        return -1;
    }
    if (t->tokens[id]) {
        if (t->token_lens[id] != len || memcmp(t->tokens[id], s, len)) {
            ds4_seterr(err, errlen, "tokenizer.json: id %lld is both '%s' and "
                    "'%s'", (long long)id, t->tokens[id], s);
            return -1;
        }
        free(t->tokens[id]);
    }
    t->tokens[id] = ds4_xstrndup(s, len);
    t->token_lens[id] = len;
    t->token_types[id] = type;
    return 0;
}

/* Largest id in model.vocab and added_tokens (the vocab is 0..max). */
static json_int_t max_token_id(json_t *vocab, json_t *added)
{
    json_int_t mx = -1;
    const char *k;
    json_t *v;
    json_object_foreach(vocab, k, v)
        if (json_is_integer(v) && json_integer_value(v) > mx)
            mx = json_integer_value(v);
    size_t i;
    json_array_foreach(added, i, v) {
        json_t *id = json_object_get(v, "id");
        if (json_is_integer(id) && json_integer_value(id) > mx)
            mx = json_integer_value(id);
    }
    return mx;
}

/* Fill tokens from model.vocab (normal) and added_tokens (control when
 * special, user-defined otherwise); then require no gaps. */
static int load_tokens(dsv4_tokdata *t, json_t *vocab, json_t *added,
                       char *err, size_t errlen)
{
    json_int_t mx = max_token_id(vocab, added);
    if (mx < 0 || mx >= (1 << 24)) {
        ds4_seterr(err, errlen, "tokenizer.json: bad vocabulary size");
        return -1;
    }
    t->n_tokens = (uint32_t)mx + 1;
    t->tokens = ds4_xcalloc(t->n_tokens, sizeof *t->tokens);
    t->token_lens = ds4_xcalloc(t->n_tokens, sizeof *t->token_lens);
    t->token_types = ds4_xcalloc(t->n_tokens, sizeof *t->token_types);
    const char *k;
    json_t *v;
    json_object_foreach(vocab, k, v) {
        if (!json_is_integer(v)) {
            ds4_seterr(err, errlen, "tokenizer.json: vocab entry '%s' has no "
                    "integer id", k);
            return -1;
        }
        if (place_token(t, json_integer_value(v), k, strlen(k), 1, err,
                        errlen))
            return -1;
    }
    size_t i;
    json_array_foreach(added, i, v) {
        json_t *id = json_object_get(v, "id");
        json_t *c = json_object_get(v, "content");
        if (!json_is_integer(id) || !json_is_string(c)) {
            ds4_seterr(err, errlen, "tokenizer.json: added_tokens[%zu] lacks "
                    "id/content", i);
            return -1;
        }
        int32_t type = json_is_true(json_object_get(v, "special")) ? 3 : 4;
        if (place_token(t, json_integer_value(id), json_string_value(c),
                        json_string_length(c), type, err, errlen))
            return -1;
    }
    for (uint32_t id = 0; id < t->n_tokens; id++)
        if (!t->tokens[id]) {
            ds4_seterr(err, errlen, "tokenizer.json: no token has id %u", id);
            return -1;
        }
    return 0;
}

/* Merges in rank order, as "a b" (from "a b" strings or [a, b] pairs). */
static int load_merges(dsv4_tokdata *t, json_t *merges, char *err,
                       size_t errlen)
{
    t->n_merges = json_array_size(merges);
    t->merges = ds4_xcalloc(t->n_merges ? t->n_merges : 1, sizeof *t->merges);
    size_t i;
    json_t *m;
    json_array_foreach(merges, i, m) {
        if (json_is_string(m)) {
            t->merges[i] = ds4_xstrndup(json_string_value(m),
                                        json_string_length(m));
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            const char *a = json_string_value(json_array_get(m, 0));
            const char *b = json_string_value(json_array_get(m, 1));
            size_t la = strlen(a), lb = strlen(b);
            t->merges[i] = ds4_xmalloc(la + lb + 2);
            memcpy(t->merges[i], a, la);
            t->merges[i][la] = ' ';
            memcpy(t->merges[i] + la + 1, b, lb + 1);
        } else {
            ds4_seterr(err, errlen, "tokenizer.json: merges[%zu] is neither "
                    "\"a b\" nor [a, b]", i);
            return -1;
        }
    }
    return 0;
}

/* Id of the token whose text is s; -1 if none. */
static int64_t token_id(const dsv4_tokdata *t, const char *s)
{
    size_t n = strlen(s);
    for (uint32_t i = 0; i < t->n_tokens; i++)
        if (t->token_lens[i] == n && memcmp(t->tokens[i], s, n) == 0)
            return i;
    return -1;
}

int dsv4_tokdata_load(const char *path, dsv4_tokdata **out, char *err,
                      size_t errlen)
{
    *out = NULL;
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        ds4_seterr(err, errlen, "%s: %s (line %d)", path, je.text, je.line);
        return -1;
    }
    json_t *model = json_object_get(root, "model");
    json_t *vocab = json_object_get(model, "vocab");
    json_t *merges = json_object_get(model, "merges");
    json_t *added = json_object_get(root, "added_tokens");
    dsv4_tokdata *t = ds4_xcalloc(1, sizeof *t);
    int rc = -1;
    if (!json_is_object(vocab) || !json_is_array(merges) ||
        (added && !json_is_array(added)))
        ds4_seterr(err, errlen, "%s: not a BPE tokenizer.json (model.vocab, "
                "model.merges, added_tokens)", path);
    else if (load_tokens(t, vocab, added, err, errlen) == 0 &&
             load_merges(t, merges, err, errlen) == 0)
        rc = 0;
    json_decref(root);
    if (rc == 0) {
        int64_t bos = token_id(t, "<\xef\xbd\x9c" "begin\xe2\x96\x81of"
                               "\xe2\x96\x81sentence\xef\xbd\x9c>");
        int64_t eos = token_id(t, "<\xef\xbd\x9c" "end\xe2\x96\x81of"
                               "\xe2\x96\x81sentence\xef\xbd\x9c>");
        if (bos < 0 || eos < 0) {
            ds4_seterr(err, errlen, "%s: no BOS/EOS token text", path);
            rc = -1;
        }
        t->bos = (uint32_t)bos;
        t->eos = (uint32_t)eos;
    }
    if (rc)
        dsv4_tokdata_free(t);
    else
        *out = t;
    return rc;
}

/* ---- deterministic values ----------------------------------------------- */

/* splitmix64: the integer-only PRNG of the value path. */
static uint64_t sm64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Stream state for one tensor: seed and name, so values do not depend on
 * tensor order or on the other tensors. */
static uint64_t stream_for(uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
    uint64_t s = seed ^ (h * 0x2545f4914f6cdd1dull);
    sm64(&s);
    return s;
}

/* 2^-k, exactly (halving is exact down to far below 2^-24). */
static float pow2m(int k)
{
    float v = 1.0f;
    for (int i = 0; i < k; i++)
        v *= 0.5f;
    return v;
}

/* Uniform integer in [lo, hi]: the top 32 bits scaled by the range
 * (multiply-shift; exact integer arithmetic, no division). */
static int32_t uni(uint64_t *s, int32_t lo, int32_t hi)
{
    uint64_t r = sm64(s) >> 32;
    return lo + (int32_t)((r * (uint64_t)(hi - lo + 1)) >> 32);
}

/* How a tensor's values are drawn: v = (off + q) * 2^-k, q in [lo, hi]
 * (q = 0 replaced by 1 when nonzero is set). */
typedef struct recipe {
    int32_t lo, hi, off;
    int k;
    int nonzero;
} recipe;

/* Shift k with 1023 * 2^-k ~ gain * sqrt(3 / fan_in): uniform values with
 * standard deviation ~ gain / sqrt(fan_in), found with integers only. */
static int matrix_shift(uint64_t fan_in, uint64_t gain)
{
    int k = 0;
    while (k < 24 && 1023ull * 1023ull * fan_in > 3 * gain * gain * (1ull << (2 * k)))
        k++;
    return k;
}

/* Value recipe of each tensor kind (see the scales chosen below). */
static recipe recipe_for(const dsv4_tensor_spec *s)
{
    recipe r = {-1023, 1023, 0, matrix_shift(s->ne[0], 1), 0};
    switch (s->id) {
    case DSV4_T_TOKEN_EMBD: /* ~U(-1, 1): streams of magnitude ~0.6 */
        r.k = 10;
        break;
    case DSV4_T_OUTPUT: /* 4x gain: logits spread enough for stable argmax */
        r.k = matrix_shift(s->ne[0], 4);
        break;
    case DSV4_T_HC_ATTN_SCALE:
    case DSV4_T_HC_FFN_SCALE:
    case DSV4_T_OUTPUT_HC_SCALE: /* [0.25, 1] */
        r = (recipe){8, 32, 0, 5, 0};
        break;
    case DSV4_T_HC_ATTN_BASE:
    case DSV4_T_HC_FFN_BASE:
    case DSV4_T_OUTPUT_HC_BASE: /* [-0.5, 0.5], nonzero */
        r = (recipe){-16, 16, 0, 5, 1};
        break;
    case DSV4_T_ATTN_NORM:
    case DSV4_T_ATTN_Q_A_NORM:
    case DSV4_T_ATTN_KV_A_NORM:
    case DSV4_T_ATTN_COMP_NORM:
    case DSV4_T_IDX_COMP_NORM:
    case DSV4_T_FFN_NORM:
    case DSV4_T_OUTPUT_NORM: /* 1 +- 0.125 */
        r = (recipe){-16, 16, 128, 7, 0};
        break;
    case DSV4_T_ATTN_SINKS: /* [-2, 2], nonzero */
        r = (recipe){-32, 32, 0, 4, 1};
        break;
    case DSV4_T_ATTN_COMP_APE:
    case DSV4_T_IDX_COMP_APE: /* [-0.5, 0.5], nonzero */
        r = (recipe){-64, 64, 0, 7, 1};
        break;
    case DSV4_T_FFN_EXP_PROBS_B: /* [-0.125, 0.125], nonzero */
        r = (recipe){-32, 32, 0, 8, 1};
        break;
    default: /* weight matrices: ~1/sqrt(fan_in) */
        break;
    }
    return r;
}

void dsv4_mk_recipe(int id, uint64_t fan_in, dsv4_value_recipe *out)
{
    dsv4_tensor_spec sp;
    memset(&sp, 0, sizeof sp);
    sp.id = id;
    sp.ne[0] = fan_in;
    recipe r = recipe_for(&sp);
    out->lo = r.lo;
    out->hi = r.hi;
    out->off = r.off;
    out->k = r.k;
    out->nonzero = r.nonzero;
}

/* Draw n values of a recipe. */
static void draw(uint64_t *s, const recipe *r, float *out, uint64_t n)
{
    float scale = pow2m(r->k);
    for (uint64_t i = 0; i < n; i++) {
        int32_t q = uni(s, r->lo, r->hi);
        if (r->nonzero && q == 0)
            q = 1;
        out[i] = (float)(r->off + q) * scale;
    }
}

/* tid2eid [k, V]: per token k distinct expert ids (partial Fisher-Yates). */
static void fill_tid2eid(uint64_t *s, const dsv4_hparams *hp, int32_t *out)
{
    uint32_t E = hp->n_expert, k = hp->n_expert_used;
    int32_t *perm = ds4_xmalloc(E * sizeof *perm);
    for (uint32_t t = 0; t < hp->n_vocab; t++) {
        for (uint32_t e = 0; e < E; e++)
            perm[e] = (int32_t)e;
        for (uint32_t j = 0; j < k; j++) {
            uint32_t pick = j + (uint32_t)(sm64(s) % (E - j));
            int32_t tmp = perm[j];
            perm[j] = perm[pick];
            perm[pick] = tmp;
            out[(uint64_t)t * k + j] = perm[j];
        }
    }
    free(perm);
}

/* The type a layout stores a spec in. */
static uint32_t layout_type(const dsv4_tensor_spec *s, int layout)
{
    uint32_t t = s->types[0];
    int exps = s->id == DSV4_T_FFN_GATE_EXPS || s->id == DSV4_T_FFN_UP_EXPS ||
               s->id == DSV4_T_FFN_DOWN_EXPS;
    if (layout == DSV4_MK_Q4 && exps)
        return DS4_TYPE_Q4_K;
    if (layout == DSV4_MK_EXACT && (exps || t == DS4_TYPE_Q8_0))
        return DS4_TYPE_F16;
    return t;
}

/* Generate one tensor's bytes into a build-owned buffer, row by row. */
static int gen_tensor(dsv4_build *b, const dsv4_mkmodel_opts *o,
                      const dsv4_tensor_spec *s, char *err, size_t errlen)
{
    uint32_t type = layout_type(s, o->layout);
    uint64_t ne0 = s->ne[0], rows = s->ne[1] * s->ne[2] * s->ne[3];
    uint64_t row_bytes = ds4_type_nbytes(type, ne0);
    if (!row_bytes) {
        ds4_seterr(err, errlen, "tensor '%s': %llu is not a multiple of the %s "
                "block size", s->name, (unsigned long long)ne0,
                ds4_type_get(type) ? ds4_type_get(type)->name : "?");
        return -1;
    }
    uint8_t *data = build_alloc(b, row_bytes * rows);
    uint64_t st = stream_for(o->seed, s->name);
    if (s->id == DSV4_T_FFN_TID2EID) {
        fill_tid2eid(&st, &o->hp, (int32_t *)(void *)data);
    } else {
        recipe r = recipe_for(s);
        float *row = ds4_xmalloc(ne0 * sizeof *row);
        for (uint64_t i = 0; i < rows; i++) {
            draw(&st, &r, row, ne0);
            if (ds4_quantize(type, row, data + i * row_bytes, ne0)) {
                free(row);
                ds4_seterr(err, errlen, "tensor '%s': cannot encode as %s",
                        s->name, ds4_type_get(type)->name);
                return -1;
            }
        }
        free(row);
    }
    gguf_w_tensor(b->w, s->name, type, s->n_dims, s->ne, data,
                  row_bytes * rows);
    return 0;
}

/* deepseek4.* keys with the value types of ds4's files, in their order. */
static void write_hparams(gguf_writer *w, const dsv4_hparams *hp)
{
#define U32(k, v) gguf_w_u32(w, "deepseek4." k, v)
#define F32(k, v) gguf_w_f32(w, "deepseek4." k, v)
    U32("block_count", hp->n_layer);
    U32("embedding_length", hp->n_embd);
    U32("vocab_size", hp->n_vocab);
    U32("attention.head_count", hp->n_head);
    U32("attention.head_count_kv", hp->n_head_kv);
    U32("attention.key_length", hp->head_dim);
    U32("attention.value_length", hp->value_dim);
    U32("rope.dimension_count", hp->n_rot);
    U32("attention.q_lora_rank", hp->q_lora_rank);
    U32("attention.output_lora_rank", hp->o_lora_rank);
    U32("attention.output_group_count", hp->o_groups);
    U32("expert_count", hp->n_expert);
    U32("expert_used_count", hp->n_expert_used);
    U32("expert_feed_forward_length", hp->n_ff_exp);
    U32("expert_shared_count", hp->n_expert_shared);
    U32("hash_layer_count", hp->n_hash_layer);
    U32("expert_group_count", 0);
    U32("expert_group_used_count", 0);
    U32("attention.sliding_window", hp->n_swa);
    U32("attention.indexer.head_count", hp->n_idx_head);
    U32("attention.indexer.key_length", hp->idx_head_dim);
    U32("attention.indexer.top_k", hp->idx_top_k);
    U32("hyper_connection.count", hp->n_hc);
    U32("hyper_connection.sinkhorn_iterations", hp->hc_sinkhorn_iter);
    gguf_w_u64(w, "deepseek4.context_length", hp->n_ctx);
    gguf_w_u64(w, "deepseek4.rope.scaling.original_context_length",
               hp->rope_orig_ctx);
    F32("rope.freq_base", hp->rope_freq_base);
    F32("rope.scaling.factor", hp->rope_scale_factor);
    F32("rope.scaling.yarn_beta_fast", hp->yarn_beta_fast);
    F32("rope.scaling.yarn_beta_slow", hp->yarn_beta_slow);
    F32("attention.compress_rope_freq_base", hp->compress_rope_freq_base);
    F32("expert_weights_scale", hp->expert_weights_scale);
    F32("attention.layer_norm_rms_epsilon", hp->rms_eps);
    F32("hyper_connection.epsilon", hp->hc_eps);
    gguf_w_str(w, "deepseek4.rope.scaling.type", "yarn");
    gguf_w_bool(w, "deepseek4.expert_weights_norm", hp->expert_weights_norm);
    gguf_w_arr(w, "deepseek4.attention.compress_ratios", GGUF_VT_UINT32,
               hp->compress_ratio, hp->n_layer);
    gguf_w_arr(w, "deepseek4.swiglu_clamp_exp", GGUF_VT_FLOAT32,
               hp->swiglu_clamp, hp->n_layer);
#undef U32
#undef F32
}

/* tokenizer.ggml.* keys as in ds4's files (pad = EOS, as the HF config). */
static void write_tokenizer(gguf_writer *w, const dsv4_tokdata *t)
{
    gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_w_str(w, "tokenizer.ggml.pre", "joyai-llm");
    gguf_w_arr_str(w, "tokenizer.ggml.tokens",
                   (const char *const *)t->tokens, t->token_lens,
                   t->n_tokens);
    gguf_w_arr(w, "tokenizer.ggml.token_type", GGUF_VT_INT32, t->token_types,
               t->n_tokens);
    gguf_w_arr_str(w, "tokenizer.ggml.merges", (const char *const *)t->merges,
                   NULL, t->n_merges);
    gguf_w_u32(w, "tokenizer.ggml.bos_token_id", t->bos);
    gguf_w_u32(w, "tokenizer.ggml.eos_token_id", t->eos);
    gguf_w_u32(w, "tokenizer.ggml.padding_token_id", t->eos);
    gguf_w_bool(w, "tokenizer.ggml.add_bos_token", 0);
    gguf_w_bool(w, "tokenizer.ggml.add_eos_token", 0);
}

static const char *const k_layout_names[] = {"q2", "q4", "exact"};

/* Header metadata: architecture, a descriptive name, generator record. */
static void write_general(gguf_writer *w, const dsv4_mkmodel_opts *o)
{
    char name[160];
    snprintf(name, sizeof name, "DeepSeek-V4 test model (ds4-gguf mkmodel, "
             "seed %llu, layout %s)", (unsigned long long)o->seed,
             k_layout_names[o->layout]);
    gguf_w_str(w, "general.architecture", "deepseek4");
    gguf_w_str(w, "general.name", name);
    write_hparams(w, &o->hp);
    write_tokenizer(w, o->tok);
    gguf_w_u64(w, "ds4.mkmodel.seed", o->seed);
    gguf_w_str(w, "ds4.mkmodel.layout", k_layout_names[o->layout]);
    gguf_w_u32(w, "ds4.mkmodel.version", 1);
}

void dsv4_mkmodel_defaults(dsv4_mkmodel_opts *o)
{
    static const uint32_t ratios[] = {0, 0, 4, 128, 4, 128};
    memset(o, 0, sizeof *o);
    o->seed = 1;
    o->layout = DSV4_MK_Q2;
    dsv4_hparams *hp = &o->hp;
    dsv4_hparams_full(hp); /* ds4's constants (RoPE, YaRN, eps, scale) */
    hp->n_layer = DS4_ARRAY_LEN(ratios);
    hp->n_embd = 256;      /* one K-quant / IQ2_XXS block per row */
    hp->n_head = 4;
    hp->head_dim = 128;    /* 64 RoPE dims + 64 = one FP8 block */
    hp->value_dim = 128;
    hp->n_rot = 64;
    hp->q_lora_rank = 128;
    hp->o_lora_rank = 128;
    hp->o_groups = 2;
    hp->n_expert = 8;
    hp->n_expert_used = 2;
    hp->n_ff_exp = 256;    /* Q2_K down-projection rows */
    hp->n_hash_layer = 3;  /* layers 0-2 hash, 3-5 biased top-k */
    hp->n_swa = 64;
    hp->n_idx_head = 16;   /* enough heads that top-k ties do not occur */
    hp->idx_head_dim = 128;
    hp->idx_top_k = 32;    /* < the 100 ratio-4 rows of a 400-token prompt */
    hp->n_ctx = 65536;
    for (uint32_t i = 0; i < DSV4_MAX_LAYERS; i++) {
        hp->compress_ratio[i] = i < hp->n_layer ? ratios[i] : 0;
        hp->swiglu_clamp[i] = i < hp->n_layer ? 10.0f : 0;
    }
}

int dsv4_mkmodel_build(const dsv4_mkmodel_opts *o, dsv4_build **out,
                       char *err, size_t errlen)
{
    *out = NULL;
    if (!o->tok || o->layout < DSV4_MK_Q2 || o->layout > DSV4_MK_EXACT) {
        ds4_seterr(err, errlen, "mkmodel: no tokenizer or bad layout");
        return -1;
    }
    if (o->hp.n_vocab != o->tok->n_tokens) {
        ds4_seterr(err, errlen, "mkmodel: vocab_size %u but the tokenizer has "
                "%u tokens", o->hp.n_vocab, o->tok->n_tokens);
        return -1;
    }
    if (dsv4_hparams_check(&o->hp, err, errlen))
        return -1;
    size_t n = dsv4_expected_tensors(&o->hp, NULL, 0);
    dsv4_tensor_spec *specs = ds4_xcalloc(n, sizeof *specs);
    dsv4_expected_tensors(&o->hp, specs, n);
    dsv4_build *b = build_new();
    write_general(b->w, o);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (o->progress && specs[i].layer >= 0 &&
            (i == 0 || specs[i].layer != specs[i - 1].layer))
            fprintf(stderr, "mkmodel: layer %d of %u\n", specs[i].layer,
                    o->hp.n_layer);
        rc = gen_tensor(b, o, &specs[i], err, errlen);
    }
    free(specs);
    if (rc) {
        dsv4_build_free(b);
        return -1;
    }
    *out = b;
    return 0;
}

int dsv4_mkmodel_write(const dsv4_mkmodel_opts *o, const char *path,
                       char *sha_hex, char *err, size_t errlen)
{
    dsv4_build *b;
    if (dsv4_mkmodel_build(o, &b, err, errlen))
        return -1;
    if (o->progress)
        fprintf(stderr, "mkmodel: writing %s\n", path);
    int rc = gguf_writer_write(b->w, path, err, errlen);
    dsv4_build_free(b);
    if (rc == 0 && sha_hex && ds4_sha256_file(path, sha_hex)) {
        ds4_seterr(err, errlen, "%s: cannot hash the written file", path);
        rc = -1;
    }
    return rc;
}

int dsv4_mkmodel_to_mem(const dsv4_mkmodel_opts *o, uint8_t **buf,
                        uint64_t *len, char *err, size_t errlen)
{
    dsv4_build *b;
    if (dsv4_mkmodel_build(o, &b, err, errlen))
        return -1;
    int rc = gguf_writer_to_mem(b->w, buf, len, err, errlen);
    dsv4_build_free(b);
    return rc;
}

/* ---- rewrite ------------------------------------------------------------ */

/* NUL-terminated copy of a gguf_str, owned by the build. */
static char *build_str(dsv4_build *b, gguf_str s)
{
    char *p = build_alloc(b, s.len + 1);
    memcpy(p, s.ptr, s.len);
    p[s.len] = 0;
    return p;
}

/* Copy one scalar metadata value (little-endian in the map). */
static int copy_scalar(dsv4_build *b, const char *key, const gguf_kv *kv)
{
    const uint8_t *d = kv->data;
    union {
        uint8_t u8;
        uint16_t u16;
        uint32_t u32;
        uint64_t u64;
        float f32;
        double f64;
    } v;
    switch (kv->type) {
    case GGUF_VT_UINT8: case GGUF_VT_INT8: case GGUF_VT_BOOL:
        memcpy(&v.u8, d, 1);
        if (kv->type == GGUF_VT_BOOL)
            gguf_w_bool(b->w, key, v.u8);
        else if (kv->type == GGUF_VT_UINT8)
            gguf_w_u8(b->w, key, v.u8);
        else
            gguf_w_i8(b->w, key, (int8_t)v.u8);
        return 0;
    case GGUF_VT_UINT16: case GGUF_VT_INT16:
        memcpy(&v.u16, d, 2);
        if (kv->type == GGUF_VT_UINT16)
            gguf_w_u16(b->w, key, v.u16);
        else
            gguf_w_i16(b->w, key, (int16_t)v.u16);
        return 0;
    case GGUF_VT_UINT32: case GGUF_VT_INT32: case GGUF_VT_FLOAT32:
        memcpy(&v.u32, d, 4);
        if (kv->type == GGUF_VT_UINT32)
            gguf_w_u32(b->w, key, v.u32);
        else if (kv->type == GGUF_VT_INT32)
            gguf_w_i32(b->w, key, (int32_t)v.u32);
        else
            gguf_w_f32(b->w, key, v.f32);
        return 0;
    case GGUF_VT_UINT64: case GGUF_VT_INT64: case GGUF_VT_FLOAT64:
        memcpy(&v.u64, d, 8);
        if (kv->type == GGUF_VT_UINT64)
            gguf_w_u64(b->w, key, v.u64);
        else if (kv->type == GGUF_VT_INT64)
            gguf_w_i64(b->w, key, (int64_t)v.u64);
        else
            gguf_w_f64(b->w, key, v.f64);
        return 0;
    default:
        return -1;
    }
}

/* Copy one metadata entry of any type. */
static int copy_kv(dsv4_build *b, const gguf_kv *kv)
{
    char *key = build_str(b, kv->key);
    if (kv->type == GGUF_VT_STRING) {
        gguf_str s;
        memcpy(&s.len, kv->data, 8);
        s.ptr = (const char *)kv->data + 8;
        gguf_w_str(b->w, key, build_str(b, s));
        return 0;
    }
    if (kv->type != GGUF_VT_ARRAY)
        return copy_scalar(b, key, kv);
    if (kv->arr_type != GGUF_VT_STRING) {
        gguf_w_arr(b->w, key, kv->arr_type, kv->data, kv->arr_n);
        return 0;
    }
    const char **v = build_alloc(b, (kv->arr_n + 1) * sizeof *v);
    uint64_t *lens = build_alloc(b, (kv->arr_n + 1) * sizeof *lens);
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        gguf_str s;
        if (gguf_arr_str(kv, i, &s))
            return -1;
        v[i] = s.ptr;
        lens[i] = s.len;
    }
    gguf_w_arr_str(b->w, key, v, lens, kv->arr_n);
    return 0;
}

/* Re-encode a tensor's data as another type (via F32). */
static int retype(dsv4_build *b, const gguf_tensor *t, uint32_t type,
                  const void **data, uint64_t *nbytes)
{
    uint64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    uint64_t out = ds4_type_nbytes(type, n);
    if (!out || ds4_type_nbytes(type, t->ne[0]) == 0)
        return -1;
    float *f = ds4_xmalloc(n * sizeof *f);
    int rc = t->type == DS4_TYPE_I32 ? -1
                                     : ds4_dequantize(t->type, t->data, f, n);
    void *dst = build_alloc(b, out);
    if (rc == 0)
        rc = ds4_quantize(type, f, dst, n);
    free(f);
    *data = dst;
    *nbytes = out;
    return rc;
}

/* Append one more row (a copy of the last) on the outermost dimension. */
static void grow(dsv4_build *b, const gguf_tensor *t, uint64_t *ne,
                 const void **data, uint64_t *nbytes)
{
    uint32_t outer = t->n_dims ? t->n_dims - 1 : 0;
    uint64_t slice = t->nbytes / (t->ne[outer] ? t->ne[outer] : 1);
    uint8_t *dst = build_alloc(b, t->nbytes + slice);
    memcpy(dst, t->data, t->nbytes);
    memcpy(dst + t->nbytes, (const uint8_t *)t->data + t->nbytes - slice,
           slice);
    ne[outer]++;
    *data = dst;
    *nbytes = t->nbytes + slice;
}

/* 1 if the gguf_str equals the optional c string. */
static int is(gguf_str s, const char *c)
{
    return c && gguf_str_eq(s, c);
}

/* 1 if a tensor name matches the optional glob pattern. */
static int matches(gguf_str name, const char *pat)
{
    if (!pat)
        return 0;
    char buf[256];
    if (name.len >= sizeof buf)
        return 0;
    memcpy(buf, name.ptr, name.len);
    buf[name.len] = 0;
    return fnmatch(pat, buf, 0) == 0;
}

/* 1 if some tensor of f matches pat. */
static int any_match(const gguf_file *f, const char *pat)
{
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (matches(f->tensors[i].name, pat))
            return 1;
    return 0;
}

int dsv4_gguf_rewrite(const gguf_file *f, const dsv4_gguf_edit *e,
                      dsv4_build **out, char *err, size_t errlen)
{
    *out = NULL;
    const char *named[] = {e->drop_tensor, e->retype_tensor, e->grow_tensor};
    for (size_t i = 0; i < DS4_ARRAY_LEN(named); i++)
        if (named[i] && !any_match(f, named[i])) {
            ds4_seterr(err, errlen, "no tensor '%s' to edit", named[i]);
            return -1;
        }
    if (e->drop_key && !gguf_find_kv(f, e->drop_key)) {
        ds4_seterr(err, errlen, "no metadata key '%s' to drop", e->drop_key);
        return -1;
    }
    dsv4_build *b = build_new();
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        if (is(kv->key, e->drop_key))
            continue;
        if (copy_kv(b, kv)) {
            ds4_seterr(err, errlen, "cannot copy metadata key '%.*s'",
                    (int)kv->key.len, kv->key.ptr);
            dsv4_build_free(b);
            return -1;
        }
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        if (matches(t->name, e->drop_tensor))
            continue;
        uint64_t ne[GGUF_MAX_DIMS];
        memcpy(ne, t->ne, sizeof ne);
        const void *data = t->data;
        uint64_t nbytes = t->nbytes;
        uint32_t type = t->type;
        if (matches(t->name, e->retype_tensor)) {
            type = e->new_type;
            if (retype(b, t, type, &data, &nbytes)) {
                ds4_seterr(err, errlen, "tensor '%.*s': cannot convert to "
                        "type %u", (int)t->name.len, t->name.ptr, type);
                dsv4_build_free(b);
                return -1;
            }
        }
        if (matches(t->name, e->grow_tensor))
            grow(b, t, ne, &data, &nbytes);
        gguf_w_tensor(b->w, build_str(b, t->name), type, t->n_dims, ne, data,
                      nbytes);
    }
    *out = b;
    return 0;
}
