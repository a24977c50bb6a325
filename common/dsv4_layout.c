/* dsv4_layout.c - DeepSeek V4 hyper-parameters from GGUF metadata, the
 * expected tensor list derived from them, and the layout validator.
 *
 * The shape formulas were derived from the full-size q2 dump
 * (tests/data/ds4-layout/q2-layout-dump.txt) and the architecture notes, and
 * test_layout checks that they reproduce all 1328 tensors of that dump.
 */
#include "dsv4_layout.h"

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
#include "util.h"

#define ARCH "deepseek4."


/* ---- metadata ---------------------------------------------------------- */

/* Explain why a getter failed: absent (-1) or wrong type / out of range. */
static int key_fail(const gguf_file *f, const char *key, int rc,
                    const char *want, char *err, size_t errlen)
{
    if (rc == -1) {
        ds4_seterr(err, errlen, "missing metadata key '%s'", key);
    } else {
        const gguf_kv *kv = gguf_find_kv(f, key);
        ds4_seterr(err, errlen,
                "metadata key '%s' has type %s or an out-of-range value, "
                "expected %s", key, kv ? gguf_vtype_name(kv->type) : "?",
                want);
    }
    return -1;
}

/* Required unsigned 32-bit key (any integer width whose value fits). */
static int req_u32(const gguf_file *f, const char *key, uint32_t *out,
                   char *err, size_t errlen)
{
    int rc = gguf_get_u32(f, key, out);
    return rc ? key_fail(f, key, rc, "an unsigned integer", err, errlen) : 0;
}

/* Required unsigned 64-bit key (u32 or u64 as ds4 accepts, or any fitting). */
static int req_u64(const gguf_file *f, const char *key, uint64_t *out,
                   char *err, size_t errlen)
{
    int rc = gguf_get_u64(f, key, out);
    return rc ? key_fail(f, key, rc, "an unsigned integer", err, errlen) : 0;
}

/* Required float key (f32 or f64). */
static int req_f32(const gguf_file *f, const char *key, float *out,
                   char *err, size_t errlen)
{
    int rc = gguf_get_f32(f, key, out);
    return rc ? key_fail(f, key, rc, "a float", err, errlen) : 0;
}

/* Optional u32 key that must equal `want` when present. */
static int opt_u32_eq(const gguf_file *f, const char *key, uint32_t want,
                      char *err, size_t errlen)
{
    uint32_t v = 0;
    int rc = gguf_get_u32(f, key, &v);
    if (rc == -1)
        return 0;
    if (rc)
        return key_fail(f, key, rc, "an unsigned integer", err, errlen);
    if (v != want) {
        ds4_seterr(err, errlen, "metadata key '%s' = %u, must be %u", key, v,
                want);
        return -1;
    }
    return 0;
}

/* Optional string key that must equal `want` when present. */
static int opt_str_eq(const gguf_file *f, const char *key, const char *want,
                      char *err, size_t errlen)
{
    gguf_str s;
    int rc = gguf_get_str(f, key, &s);
    if (rc == -1)
        return 0;
    if (rc)
        return key_fail(f, key, rc, "a string", err, errlen);
    if (!gguf_str_eq(s, want)) {
        ds4_seterr(err, errlen, "metadata key '%s' is '%.*s', must be '%s'", key,
                (int)(s.len > 64 ? 64 : s.len), s.ptr, want);
        return -1;
    }
    return 0;
}

/* Look up a per-layer array key with at least n elements. */
static const gguf_kv *req_array(const gguf_file *f, const char *key,
                                uint32_t n, char *err, size_t errlen)
{
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) {
        ds4_seterr(err, errlen, "missing metadata key '%s'", key);
        return NULL;
    }
    if (kv->type != GGUF_VT_ARRAY) {
        ds4_seterr(err, errlen, "metadata key '%s' has type %s, expected an array",
                key, gguf_vtype_name(kv->type));
        return NULL;
    }
    if (kv->arr_n < n) {
        ds4_seterr(err, errlen,
                "metadata key '%s' has %llu elements, block_count needs %u",
                key, (unsigned long long)kv->arr_n, n);
        return NULL;
    }
    return kv;
}

/* Per-layer compress ratios and SwiGLU clamps (arrays of >= n_layer). */
static int load_layer_arrays(const gguf_file *f, dsv4_hparams *hp, char *err,
                             size_t errlen)
{
    const char *kr = ARCH "attention.compress_ratios";
    const char *kc = ARCH "swiglu_clamp_exp";
    const gguf_kv *r = req_array(f, kr, hp->n_layer, err, errlen);
    if (!r)
        return -1;
    const gguf_kv *c = req_array(f, kc, hp->n_layer, err, errlen);
    if (!c)
        return -1;
    for (uint32_t i = 0; i < hp->n_layer; i++) {
        if (gguf_arr_u32(r, i, &hp->compress_ratio[i])) {
            ds4_seterr(err, errlen, "metadata key '%s': element %u is not an "
                    "unsigned integer (array of %s)", kr, i,
                    gguf_vtype_name(r->arr_type));
            return -1;
        }
        if (gguf_arr_f32(c, i, &hp->swiglu_clamp[i])) {
            ds4_seterr(err, errlen, "metadata key '%s': element %u is not a "
                    "float (array of %s)", kc, i, gguf_vtype_name(c->arr_type));
            return -1;
        }
    }
    return 0;
}

/* The u32 shape keys, in the order of ds4's metadata. */
static int load_shape_keys(const gguf_file *f, dsv4_hparams *hp, char *err,
                           size_t errlen)
{
    static const struct {
        const char *key;
        size_t off;
    } keys[] = {
#define K(k, field) {ARCH k, offsetof(dsv4_hparams, field)}
        K("block_count", n_layer),
        K("embedding_length", n_embd),
        K("vocab_size", n_vocab),
        K("attention.head_count", n_head),
        K("attention.head_count_kv", n_head_kv),
        K("attention.key_length", head_dim),
        K("attention.value_length", value_dim),
        K("rope.dimension_count", n_rot),
        K("attention.q_lora_rank", q_lora_rank),
        K("attention.output_lora_rank", o_lora_rank),
        K("attention.output_group_count", o_groups),
        K("expert_count", n_expert),
        K("expert_used_count", n_expert_used),
        K("expert_feed_forward_length", n_ff_exp),
        K("expert_shared_count", n_expert_shared),
        K("hash_layer_count", n_hash_layer),
        K("attention.sliding_window", n_swa),
        K("attention.indexer.head_count", n_idx_head),
        K("attention.indexer.key_length", idx_head_dim),
        K("attention.indexer.top_k", idx_top_k),
        K("hyper_connection.count", n_hc),
        K("hyper_connection.sinkhorn_iterations", hc_sinkhorn_iter),
#undef K
    };
    for (size_t i = 0; i < DS4_ARRAY_LEN(keys); i++)
        if (req_u32(f, keys[i].key, (uint32_t *)((char *)hp + keys[i].off),
                    err, errlen))
            return -1;
    return 0;
}

/* The float keys. */
static int load_float_keys(const gguf_file *f, dsv4_hparams *hp, char *err,
                           size_t errlen)
{
    static const struct {
        const char *key;
        size_t off;
    } keys[] = {
#define K(k, field) {ARCH k, offsetof(dsv4_hparams, field)}
        K("rope.freq_base", rope_freq_base),
        K("rope.scaling.factor", rope_scale_factor),
        K("rope.scaling.yarn_beta_fast", yarn_beta_fast),
        K("rope.scaling.yarn_beta_slow", yarn_beta_slow),
        K("attention.compress_rope_freq_base", compress_rope_freq_base),
        K("expert_weights_scale", expert_weights_scale),
        K("attention.layer_norm_rms_epsilon", rms_eps),
        K("hyper_connection.epsilon", hc_eps),
#undef K
    };
    for (size_t i = 0; i < DS4_ARRAY_LEN(keys); i++)
        if (req_f32(f, keys[i].key, (float *)((char *)hp + keys[i].off), err,
                    errlen))
            return -1;
    return 0;
}

int dsv4_hparams_load(const gguf_file *f, dsv4_hparams *hp, char *err,
                      size_t errlen)
{
    memset(hp, 0, sizeof *hp);
    gguf_str arch;
    int rc = gguf_get_str(f, "general.architecture", &arch);
    if (rc)
        return key_fail(f, "general.architecture", rc, "a string", err,
                        errlen);
    if (!gguf_str_eq(arch, "deepseek4")) {
        ds4_seterr(err, errlen,
                "general.architecture is '%.*s', expected 'deepseek4'",
                (int)(arch.len > 64 ? 64 : arch.len), arch.ptr);
        return -1;
    }
    if (load_shape_keys(f, hp, err, errlen) ||
        load_float_keys(f, hp, err, errlen) ||
        req_u64(f, ARCH "rope.scaling.original_context_length",
                &hp->rope_orig_ctx, err, errlen))
        return -1;
    rc = gguf_get_bool(f, ARCH "expert_weights_norm", &hp->expert_weights_norm);
    if (rc)
        return key_fail(f, ARCH "expert_weights_norm", rc, "a bool", err,
                        errlen);
    /* ds4 requires these to be 0 (no group-limited routing); absent = 0. */
    if (opt_u32_eq(f, ARCH "expert_group_count", 0, err, errlen) ||
        opt_u32_eq(f, ARCH "expert_group_used_count", 0, err, errlen) ||
        opt_str_eq(f, ARCH "rope.scaling.type", "yarn", err, errlen))
        return -1;
    if (hp->n_layer == 0 || hp->n_layer > DSV4_MAX_LAYERS) {
        ds4_seterr(err, errlen, ARCH "block_count = %u, must be 1..%d",
                hp->n_layer, DSV4_MAX_LAYERS);
        return -1;
    }
    if (load_layer_arrays(f, hp, err, errlen))
        return -1;
    rc = gguf_get_u64(f, ARCH "context_length", &hp->n_ctx);
    if (rc == -1)
        hp->n_ctx = 0; /* defaulted by check below */
    else if (rc)
        return key_fail(f, ARCH "context_length", rc, "an unsigned integer",
                        err, errlen);
    if (hp->n_ctx == 0 && isfinite(hp->rope_scale_factor) &&
        hp->rope_scale_factor >= 1 && hp->rope_scale_factor < 65536)
        hp->n_ctx = hp->rope_orig_ctx * (uint64_t)hp->rope_scale_factor;
    return dsv4_hparams_check(hp, err, errlen);
}

/* ---- range checks ------------------------------------------------------ */

/* 1 if x is a positive finite float below lim. */
static int pos_finite(float x, float lim)
{
    return isfinite(x) && x > 0 && x < lim;
}

/* Every dimension nonzero and bounded, so products cannot overflow. */
static int check_dims(const dsv4_hparams *hp, char *err, size_t errlen)
{
    const struct {
        const char *name;
        uint32_t v, max;
    } d[] = {
        {"embedding_length", hp->n_embd, 1u << 16},
        {"vocab_size", hp->n_vocab, 1u << 24},
        {"attention.head_count", hp->n_head, 1024},
        {"attention.key_length", hp->head_dim, 1u << 14},
        {"rope.dimension_count", hp->n_rot, 1u << 14},
        {"attention.q_lora_rank", hp->q_lora_rank, 1u << 16},
        {"attention.output_lora_rank", hp->o_lora_rank, 1u << 16},
        {"attention.output_group_count", hp->o_groups, 1024},
        {"expert_count", hp->n_expert, 1u << 16},
        {"expert_used_count", hp->n_expert_used, 1u << 16},
        {"expert_feed_forward_length", hp->n_ff_exp, 1u << 18},
        {"attention.sliding_window", hp->n_swa, 1u << 24},
        {"attention.indexer.head_count", hp->n_idx_head, 1024},
        {"attention.indexer.key_length", hp->idx_head_dim, 1u << 14},
        {"attention.indexer.top_k", hp->idx_top_k, 1u << 24},
        {"hyper_connection.count", hp->n_hc, 64},
        {"hyper_connection.sinkhorn_iterations", hp->hc_sinkhorn_iter, 1000},
    };
    for (size_t i = 0; i < DS4_ARRAY_LEN(d); i++)
        if (d[i].v == 0 || d[i].v > d[i].max) {
            ds4_seterr(err, errlen, ARCH "%s = %u, must be 1..%u", d[i].name,
                    d[i].v, d[i].max);
            return -1;
        }
    return 0;
}

/* Relations between dimensions that the layout and the engine rely on. */
static int check_relations(const dsv4_hparams *hp, char *err, size_t errlen)
{
#define REQ(cond, ...)                                                      \
    do {                                                                    \
        if (!(cond)) {                                                      \
            ds4_seterr(err, errlen, __VA_ARGS__);                              \
            return -1;                                                      \
        }                                                                   \
    } while (0)
    REQ(hp->n_head_kv == 1, "attention.head_count_kv = %u, must be 1 "
        "(one shared K=V head)", hp->n_head_kv);
    REQ(hp->value_dim == hp->head_dim, "attention.value_length = %u must "
        "equal key_length = %u (K = V)", hp->value_dim, hp->head_dim);
    REQ(hp->n_rot % 2 == 0 && hp->n_rot <= hp->head_dim &&
        hp->n_rot <= hp->idx_head_dim, "rope.dimension_count = %u must be "
        "even and <= key_length %u and indexer.key_length %u", hp->n_rot,
        hp->head_dim, hp->idx_head_dim);
    REQ((hp->head_dim - hp->n_rot) % 64 == 0, "key_length - "
        "rope.dimension_count = %u must be a multiple of 64 (FP8 KV blocks)",
        hp->head_dim - hp->n_rot);
    REQ((hp->idx_head_dim & (hp->idx_head_dim - 1)) == 0 &&
        hp->idx_head_dim % 32 == 0, "attention.indexer.key_length = %u must "
        "be a power of two >= 32 (Hadamard, FP4 blocks of 32)",
        hp->idx_head_dim);
    REQ(hp->n_head % hp->o_groups == 0, "attention.head_count %u is not a "
        "multiple of output_group_count %u", hp->n_head, hp->o_groups);
    REQ(hp->n_expert_used <= hp->n_expert, "expert_used_count %u > "
        "expert_count %u", hp->n_expert_used, hp->n_expert);
    REQ(hp->n_expert_shared == 1, "expert_shared_count = %u, the layout has "
        "exactly one shared expert", hp->n_expert_shared);
    REQ(hp->n_hash_layer <= hp->n_layer, "hash_layer_count %u > "
        "block_count %u", hp->n_hash_layer, hp->n_layer);
    /* Rows of Q8_0 tensors (ds4's type for the dense projections). */
    REQ(hp->n_embd % 32 == 0 && hp->q_lora_rank % 32 == 0 &&
        hp->n_ff_exp % 32 == 0 && (hp->o_groups * hp->o_lora_rank) % 32 == 0
        && (hp->n_head / hp->o_groups * hp->head_dim) % 32 == 0,
        "embedding_length, q_lora_rank, expert_feed_forward_length, "
        "output_group_count*output_lora_rank and head_count*key_length/"
        "output_group_count must be multiples of 32 (Q8_0 rows)");
    return 0;
#undef REQ
}

/* Float constants: finite and in a sane range. */
static int check_floats(const dsv4_hparams *hp, char *err, size_t errlen)
{
    const struct {
        const char *name;
        float v, lim;
    } c[] = {
        {"attention.layer_norm_rms_epsilon", hp->rms_eps, 1},
        {"hyper_connection.epsilon", hp->hc_eps, 1},
        {"rope.freq_base", hp->rope_freq_base, 1e9f},
        {"attention.compress_rope_freq_base", hp->compress_rope_freq_base,
         1e9f},
        {"rope.scaling.factor", hp->rope_scale_factor, 65536},
        {"rope.scaling.yarn_beta_fast", hp->yarn_beta_fast, 1e6f},
        {"rope.scaling.yarn_beta_slow", hp->yarn_beta_slow, 1e6f},
        {"expert_weights_scale", hp->expert_weights_scale, 1e6f},
    };
    for (size_t i = 0; i < DS4_ARRAY_LEN(c); i++)
        if (!pos_finite(c[i].v, c[i].lim)) {
            ds4_seterr(err, errlen, ARCH "%s = %g, must be finite, > 0 and < %g",
                    c[i].name, (double)c[i].v, (double)c[i].lim);
            return -1;
        }
    if (hp->rope_scale_factor < 1) {
        ds4_seterr(err, errlen, ARCH "rope.scaling.factor = %g, must be >= 1",
                (double)hp->rope_scale_factor);
        return -1;
    }
    return 0;
}

/* Per-layer arrays: ratios in {0, 4, 128}, clamps positive. */
static int check_layers(const dsv4_hparams *hp, char *err, size_t errlen)
{
    for (uint32_t i = 0; i < hp->n_layer; i++) {
        uint32_t r = hp->compress_ratio[i];
        if (r != 0 && r != 4 && r != 128) {
            ds4_seterr(err, errlen, ARCH "attention.compress_ratios[%u] = %u, "
                    "must be 0, 4 or 128", i, r);
            return -1;
        }
        if (!pos_finite(hp->swiglu_clamp[i], 1e9f)) {
            ds4_seterr(err, errlen, ARCH "swiglu_clamp_exp[%u] = %g, must be "
                    "finite and > 0", i, (double)hp->swiglu_clamp[i]);
            return -1;
        }
    }
    return 0;
}

int dsv4_hparams_check(const dsv4_hparams *hp, char *err, size_t errlen)
{
    if (hp->n_layer == 0 || hp->n_layer > DSV4_MAX_LAYERS) {
        ds4_seterr(err, errlen, ARCH "block_count = %u, must be 1..%d",
                hp->n_layer, DSV4_MAX_LAYERS);
        return -1;
    }
    if (check_dims(hp, err, errlen) || check_relations(hp, err, errlen) ||
        check_floats(hp, err, errlen) || check_layers(hp, err, errlen))
        return -1;
    if (hp->rope_orig_ctx == 0 || hp->rope_orig_ctx > (1ull << 32) ||
        hp->n_ctx == 0 || hp->n_ctx > (1ull << 32)) {
        ds4_seterr(err, errlen, ARCH "rope.scaling.original_context_length = "
                "%llu and context_length = %llu must be 1..2^32",
                (unsigned long long)hp->rope_orig_ctx,
                (unsigned long long)hp->n_ctx);
        return -1;
    }
    return 0;
}

void dsv4_hparams_full(dsv4_hparams *hp)
{
    memset(hp, 0, sizeof *hp);
    hp->n_layer = 43;
    hp->n_embd = 4096;
    hp->n_vocab = 129280;
    hp->n_head = 64;
    hp->n_head_kv = 1;
    hp->head_dim = 512;
    hp->value_dim = 512;
    hp->n_rot = 64;
    hp->q_lora_rank = 1024;
    hp->o_lora_rank = 1024;
    hp->o_groups = 8;
    hp->n_expert = 256;
    hp->n_expert_used = 6;
    hp->n_ff_exp = 2048;
    hp->n_expert_shared = 1;
    hp->n_hash_layer = 3;
    hp->n_swa = 128;
    hp->n_idx_head = 64;
    hp->idx_head_dim = 128;
    hp->idx_top_k = 512;
    hp->n_hc = 4;
    hp->hc_sinkhorn_iter = 20;
    hp->hc_eps = 1e-6f;
    hp->rms_eps = 1e-6f;
    hp->n_ctx = 1048576;
    hp->rope_orig_ctx = 65536;
    hp->rope_freq_base = 10000;
    hp->rope_scale_factor = 16;
    hp->yarn_beta_fast = 32;
    hp->yarn_beta_slow = 1;
    hp->compress_rope_freq_base = 160000;
    hp->expert_weights_scale = 1.5f;
    hp->expert_weights_norm = 1;
    /* Layers 0,1: ratio 0; then 4 on even and 128 on odd layers. */
    for (uint32_t i = 0; i < hp->n_layer; i++) {
        hp->compress_ratio[i] = i < 2 ? 0 : (i % 2 == 0 ? 4 : 128);
        hp->swiglu_clamp[i] = 10;
    }
}

/* ---- expected tensors -------------------------------------------------- */

/* Name suffixes by id (global tensors carry their full name). */
static const char *const k_suffix[DSV4_T_COUNT] = {
    [DSV4_T_TOKEN_EMBD] = "token_embd.weight",
    [DSV4_T_OUTPUT_HC_BASE] = "output_hc_base.weight",
    [DSV4_T_OUTPUT_HC_FN] = "output_hc_fn.weight",
    [DSV4_T_OUTPUT_HC_SCALE] = "output_hc_scale.weight",
    [DSV4_T_OUTPUT_NORM] = "output_norm.weight",
    [DSV4_T_OUTPUT] = "output.weight",
    [DSV4_T_HC_ATTN_FN] = "hc_attn_fn.weight",
    [DSV4_T_HC_ATTN_SCALE] = "hc_attn_scale.weight",
    [DSV4_T_HC_ATTN_BASE] = "hc_attn_base.weight",
    [DSV4_T_ATTN_NORM] = "attn_norm.weight",
    [DSV4_T_ATTN_Q_A] = "attn_q_a.weight",
    [DSV4_T_ATTN_Q_A_NORM] = "attn_q_a_norm.weight",
    [DSV4_T_ATTN_Q_B] = "attn_q_b.weight",
    [DSV4_T_ATTN_KV] = "attn_kv.weight",
    [DSV4_T_ATTN_KV_A_NORM] = "attn_kv_a_norm.weight",
    [DSV4_T_ATTN_SINKS] = "attn_sinks.weight",
    [DSV4_T_ATTN_OUTPUT_A] = "attn_output_a.weight",
    [DSV4_T_ATTN_OUTPUT_B] = "attn_output_b.weight",
    [DSV4_T_ATTN_COMP_APE] = "attn_compressor_ape.weight",
    [DSV4_T_ATTN_COMP_KV] = "attn_compressor_kv.weight",
    [DSV4_T_ATTN_COMP_GATE] = "attn_compressor_gate.weight",
    [DSV4_T_ATTN_COMP_NORM] = "attn_compressor_norm.weight",
    [DSV4_T_IDX_ATTN_Q_B] = "indexer.attn_q_b.weight",
    [DSV4_T_IDX_PROJ] = "indexer.proj.weight",
    [DSV4_T_IDX_COMP_APE] = "indexer_compressor_ape.weight",
    [DSV4_T_IDX_COMP_KV] = "indexer_compressor_kv.weight",
    [DSV4_T_IDX_COMP_GATE] = "indexer_compressor_gate.weight",
    [DSV4_T_IDX_COMP_NORM] = "indexer_compressor_norm.weight",
    [DSV4_T_HC_FFN_FN] = "hc_ffn_fn.weight",
    [DSV4_T_HC_FFN_SCALE] = "hc_ffn_scale.weight",
    [DSV4_T_HC_FFN_BASE] = "hc_ffn_base.weight",
    [DSV4_T_FFN_NORM] = "ffn_norm.weight",
    [DSV4_T_FFN_GATE_INP] = "ffn_gate_inp.weight",
    [DSV4_T_FFN_TID2EID] = "ffn_gate_tid2eid.weight",
    [DSV4_T_FFN_EXP_PROBS_B] = "exp_probs_b.bias",
    [DSV4_T_FFN_GATE_EXPS] = "ffn_gate_exps.weight",
    [DSV4_T_FFN_UP_EXPS] = "ffn_up_exps.weight",
    [DSV4_T_FFN_DOWN_EXPS] = "ffn_down_exps.weight",
    [DSV4_T_FFN_GATE_SHEXP] = "ffn_gate_shexp.weight",
    [DSV4_T_FFN_UP_SHEXP] = "ffn_up_shexp.weight",
    [DSV4_T_FFN_DOWN_SHEXP] = "ffn_down_shexp.weight",
};

const char *dsv4_tensor_suffix(int id)
{
    return id >= 0 && id < DSV4_T_COUNT ? k_suffix[id] : "?";
}

int dsv4_tensor_is_layer(int id)
{
    return id >= DSV4_T_HC_ATTN_FN && id < DSV4_T_COUNT;
}

char *dsv4_tensor_name(int id, int layer, char buf[DSV4_NAME_MAX])
{
    if (dsv4_tensor_is_layer(id))
        snprintf(buf, DSV4_NAME_MAX, "blk.%d.%s", layer, k_suffix[id]);
    else
        snprintf(buf, DSV4_NAME_MAX, "%s", dsv4_tensor_suffix(id));
    return buf;
}

/* Accepted type lists (ds4's q2 type first), per SPEC 3.2. */
enum type_class { TC_F32, TC_F16, TC_Q8_0, TC_I32, TC_EXP_GU, TC_EXP_DOWN };

/* Fill the accepted types of a class. */
static void set_types(dsv4_tensor_spec *s, enum type_class tc)
{
    static const uint32_t lists[][DSV4_MAX_TYPES + 1] = {
        /* count, then types */
        [TC_F32] = {1, DS4_TYPE_F32},
        [TC_F16] = {2, DS4_TYPE_F16, DS4_TYPE_F32},
        [TC_Q8_0] = {3, DS4_TYPE_Q8_0, DS4_TYPE_F16, DS4_TYPE_F32},
        [TC_I32] = {1, DS4_TYPE_I32},
        /* ds4 accepts IQ2_XXS, Q2_K or Q4_K for routed experts; Q8_0 and
         * F16 are the more precise alternatives SPEC 3.2 allows. */
        [TC_EXP_GU] = {5, DS4_TYPE_IQ2_XXS, DS4_TYPE_Q2_K, DS4_TYPE_Q4_K,
                       DS4_TYPE_Q8_0, DS4_TYPE_F16},
        [TC_EXP_DOWN] = {5, DS4_TYPE_Q2_K, DS4_TYPE_IQ2_XXS, DS4_TYPE_Q4_K,
                         DS4_TYPE_Q8_0, DS4_TYPE_F16},
    };
    s->n_types = lists[tc][0];
    for (uint32_t i = 0; i < s->n_types; i++)
        s->types[i] = lists[tc][i + 1];
}

typedef struct spec_list {
    dsv4_tensor_spec *out;
    size_t cap, n;
} spec_list;

/* Append one spec (counted even when the caller's array is full). */
static void add(spec_list *l, int id, int layer, enum type_class tc,
                uint32_t n_dims, uint64_t ne0, uint64_t ne1, uint64_t ne2)
{
    if (l->n < l->cap) {
        dsv4_tensor_spec *s = &l->out[l->n];
        memset(s, 0, sizeof *s);
        dsv4_tensor_name(id, layer, s->name);
        s->id = id;
        s->layer = layer;
        s->n_dims = n_dims;
        s->ne[0] = ne0;
        s->ne[1] = n_dims > 1 ? ne1 : 1;
        s->ne[2] = n_dims > 2 ? ne2 : 1;
        s->ne[3] = 1;
        set_types(s, tc);
    }
    l->n++;
}

/* HC pre/post parameters of one sublayer: fn [hc*H, mix] maps the
 * flattened streams to mix = (2+hc)*hc values (hc pre, hc post, hc*hc
 * comb); scale [3] (pre, post, comb); base [mix]. Dump: [16384,24],[3],[24]. */
static void add_hc(spec_list *l, int layer, int fn, const dsv4_hparams *hp)
{
    uint64_t mix = (uint64_t)(2 + hp->n_hc) * hp->n_hc;
    add(l, fn, layer, TC_F16, 2, (uint64_t)hp->n_hc * hp->n_embd, mix, 1);
    add(l, fn + 1, layer, TC_F32, 1, 3, 1, 1);   /* scale */
    add(l, fn + 2, layer, TC_F32, 1, mix, 1, 1); /* base */
}

/* Attention: q_a [H, q], q_a_norm [q], q_b [q, nH*hd], kv [H, hd],
 * kv_a_norm [hd], sinks [nH], output_a [nH*hd/g, g*r] (group j uses rows
 * j*r.., each group nH/g heads wide), output_b [g*r, H].
 * Dump: [4096,1024] [1024] [1024,32768] [4096,512] [512] [64]
 * [4096,8192] [8192,4096]. */
static void add_attention(spec_list *l, int il, const dsv4_hparams *hp)
{
    uint64_t H = hp->n_embd, q = hp->q_lora_rank, hd = hp->head_dim;
    uint64_t gr = (uint64_t)hp->o_groups * hp->o_lora_rank;
    add(l, DSV4_T_ATTN_NORM, il, TC_F32, 1, H, 1, 1);
    add(l, DSV4_T_ATTN_Q_A, il, TC_Q8_0, 2, H, q, 1);
    add(l, DSV4_T_ATTN_Q_A_NORM, il, TC_F32, 1, q, 1, 1);
    add(l, DSV4_T_ATTN_Q_B, il, TC_Q8_0, 2, q, hp->n_head * hd, 1);
    add(l, DSV4_T_ATTN_KV, il, TC_Q8_0, 2, H, hd, 1);
    add(l, DSV4_T_ATTN_KV_A_NORM, il, TC_F32, 1, hd, 1, 1);
    add(l, DSV4_T_ATTN_SINKS, il, TC_F32, 1, hp->n_head, 1, 1);
    add(l, DSV4_T_ATTN_OUTPUT_A, il, TC_Q8_0, 2,
        hp->n_head * hd / hp->o_groups, gr, 1);
    add(l, DSV4_T_ATTN_OUTPUT_B, il, TC_Q8_0, 2, gr, H, 1);
}

/* Compressor (ratio m != 0), c = 2 lanes (previous/current window) when
 * m == 4 else 1: ape [c*hd, m] (row = p mod m), kv/gate [H, c*hd],
 * norm [hd]. Dump ratio 4: [1024,4] [4096,1024] [512]; ratio 128:
 * [512,128] [4096,512] [512].
 * Indexer (m == 4 only): attn_q_b [q, iH*id] (reuses the normed q-LoRA
 * vector), proj [H, iH], and its own overlapping compressor of width id:
 * ape [2*id, 4], kv/gate [H, 2*id], norm [id]. Dump: [1024,8192] [4096,64]
 * [256,4] [4096,256] [128]. */
static void add_compressor(spec_list *l, int il, const dsv4_hparams *hp)
{
    uint64_t m = hp->compress_ratio[il];
    if (m == 0)
        return;
    uint64_t H = hp->n_embd, hd = hp->head_dim, c = m == 4 ? 2 : 1;
    add(l, DSV4_T_ATTN_COMP_APE, il, TC_F16, 2, c * hd, m, 1);
    add(l, DSV4_T_ATTN_COMP_KV, il, TC_F16, 2, H, c * hd, 1);
    add(l, DSV4_T_ATTN_COMP_GATE, il, TC_F16, 2, H, c * hd, 1);
    add(l, DSV4_T_ATTN_COMP_NORM, il, TC_F32, 1, hd, 1, 1);
    if (m != 4)
        return;
    uint64_t id = hp->idx_head_dim;
    add(l, DSV4_T_IDX_ATTN_Q_B, il, TC_F16, 2, hp->q_lora_rank,
        (uint64_t)hp->n_idx_head * id, 1);
    add(l, DSV4_T_IDX_PROJ, il, TC_F16, 2, H, hp->n_idx_head, 1);
    add(l, DSV4_T_IDX_COMP_APE, il, TC_F16, 2, 2 * id, 4, 1);
    add(l, DSV4_T_IDX_COMP_KV, il, TC_F16, 2, H, 2 * id, 1);
    add(l, DSV4_T_IDX_COMP_GATE, il, TC_F16, 2, H, 2 * id, 1);
    add(l, DSV4_T_IDX_COMP_NORM, il, TC_F32, 1, id, 1, 1);
}

/* FFN: norm [H], router gate_inp [H, E], then tid2eid [k, V] (row = token
 * id) on hash layers or the selection bias exp_probs_b [E] on the others,
 * routed experts gate/up [H, I, E] and down [I, H, E], shared expert
 * gate/up [H, I] and down [I, H]. Dump: [4096] [4096,256] [6,129280] / [256]
 * [4096,2048,256] [2048,4096,256] [4096,2048] [2048,4096]. */
static void add_ffn(spec_list *l, int il, const dsv4_hparams *hp)
{
    uint64_t H = hp->n_embd, E = hp->n_expert, I = hp->n_ff_exp;
    add(l, DSV4_T_FFN_NORM, il, TC_F32, 1, H, 1, 1);
    add(l, DSV4_T_FFN_GATE_INP, il, TC_F16, 2, H, E, 1);
    if ((uint32_t)il < hp->n_hash_layer)
        add(l, DSV4_T_FFN_TID2EID, il, TC_I32, 2, hp->n_expert_used,
            hp->n_vocab, 1);
    else
        add(l, DSV4_T_FFN_EXP_PROBS_B, il, TC_F32, 1, E, 1, 1);
    add(l, DSV4_T_FFN_GATE_EXPS, il, TC_EXP_GU, 3, H, I, E);
    add(l, DSV4_T_FFN_UP_EXPS, il, TC_EXP_GU, 3, H, I, E);
    add(l, DSV4_T_FFN_DOWN_EXPS, il, TC_EXP_DOWN, 3, I, H, E);
    add(l, DSV4_T_FFN_GATE_SHEXP, il, TC_Q8_0, 2, H, I, 1);
    add(l, DSV4_T_FFN_UP_SHEXP, il, TC_Q8_0, 2, H, I, 1);
    add(l, DSV4_T_FFN_DOWN_SHEXP, il, TC_Q8_0, 2, I, H, 1);
}

size_t dsv4_expected_tensors(const dsv4_hparams *hp, dsv4_tensor_spec *out,
                             size_t cap)
{
    spec_list l = {out, out ? cap : 0, 0};
    uint64_t H = hp->n_embd, V = hp->n_vocab, hc = hp->n_hc;
    add(&l, DSV4_T_TOKEN_EMBD, -1, TC_F16, 2, H, V, 1);
    for (int il = 0; il < (int)hp->n_layer; il++) {
        add_hc(&l, il, DSV4_T_HC_ATTN_FN, hp);
        add_attention(&l, il, hp);
        add_compressor(&l, il, hp);
        add_hc(&l, il, DSV4_T_HC_FFN_FN, hp);
        add_ffn(&l, il, hp);
    }
    /* Output head: stream collapse fn [hc*H, hc], base [hc], scale [1]. */
    add(&l, DSV4_T_OUTPUT_HC_BASE, -1, TC_F32, 1, hc, 1, 1);
    add(&l, DSV4_T_OUTPUT_HC_FN, -1, TC_F16, 2, hc * H, hc, 1);
    add(&l, DSV4_T_OUTPUT_HC_SCALE, -1, TC_F32, 1, 1, 1, 1);
    add(&l, DSV4_T_OUTPUT_NORM, -1, TC_F32, 1, H, 1, 1);
    add(&l, DSV4_T_OUTPUT, -1, TC_Q8_0, 2, H, V, 1);
    return l.n;
}

/* ---- validation -------------------------------------------------------- */

const char *dsv4_layout_name(int kind)
{
    switch (kind) {
    case DSV4_LAYOUT_Q2:
        return "ds4 q2 layout";
    case DSV4_LAYOUT_Q4:
        return "ds4 q4 layout";
    case DSV4_LAYOUT_MIXED:
        return "ds4 mixed q2/q4 layout";
    case DSV4_LAYOUT_EXTENDED:
        return "extended layout (more precise types)";
    default:
        return "invalid";
    }
}

/* GGML name of a type id, for messages. */
static const char *type_name(uint32_t t)
{
    const ds4_type_info *ti = ds4_type_get(t);
    return ti ? ti->name : "unknown";
}

/* "A, B or C" list of a spec's accepted types. */
static void types_list(const dsv4_tensor_spec *s, char *buf, size_t cap)
{
    size_t o = 0;
    buf[0] = 0;
    for (uint32_t i = 0; i < s->n_types && o < cap; i++) {
        const char *sep = i == 0 ? "" : (i + 1 == s->n_types ? " or " : ", ");
        o += (size_t)snprintf(buf + o, cap - o, "%s%s", sep,
                              type_name(s->types[i]));
    }
}

/* "[a, b, c]" of a shape with n dims. */
static void shape_str(const uint64_t *ne, uint32_t n, char *buf, size_t cap)
{
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (uint32_t i = 0; i < n && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%llu", i ? ", " : "",
                              (unsigned long long)ne[i]);
    if (o < cap)
        snprintf(buf + o, cap - o, "]");
}

/* Number of dims once trailing 1s are dropped (at least 1). */
static uint32_t eff_dims(const uint64_t *ne, uint32_t n)
{
    while (n > 1 && ne[n - 1] == 1)
        n--;
    return n ? n : 1;
}

/* Check one tensor against its spec: type accepted, rows a whole number of
 * blocks, shape exact (trailing 1-dims ignored). */
static int check_tensor(const gguf_tensor *t, const dsv4_tensor_spec *s,
                        char *err, size_t errlen)
{
    int ok = 0;
    for (uint32_t i = 0; i < s->n_types; i++)
        ok |= t->type == s->types[i];
    if (!ok) {
        char list[96];
        types_list(s, list, sizeof list);
        ds4_seterr(err, errlen, "tensor '%s': type %s, expected %s", s->name,
                type_name(t->type), list);
        return -1;
    }
    uint64_t tne[GGUF_MAX_DIMS] = {1, 1, 1, 1};
    for (uint32_t i = 0; i < t->n_dims && i < GGUF_MAX_DIMS; i++)
        tne[i] = t->ne[i];
    if (memcmp(tne, s->ne, sizeof tne) != 0) {
        char want[80], got[80];
        shape_str(s->ne, eff_dims(s->ne, GGUF_MAX_DIMS), want, sizeof want);
        shape_str(tne, eff_dims(tne, t->n_dims ? t->n_dims : 1), got,
                  sizeof got);
        ds4_seterr(err, errlen, "tensor '%s': shape %s, expected %s", s->name,
                got, want);
        return -1;
    }
    const ds4_type_info *ti = ds4_type_get(t->type);
    if (!ti || tne[0] % ti->block_elems != 0) {
        ds4_seterr(err, errlen, "tensor '%s': row of %llu elements is not a "
                "multiple of the %s block size", s->name,
                (unsigned long long)tne[0], type_name(t->type));
        return -1;
    }
    return 0;
}

/* tid2eid entries must be expert ids the engine can index with. */
static int check_tid2eid(const gguf_tensor *t, const dsv4_hparams *hp,
                         const char *name, char *err, size_t errlen)
{
    uint64_t n = (uint64_t)hp->n_expert_used * hp->n_vocab;
    const uint8_t *p = t->data;
    if (t->nbytes < n * 4) {
        ds4_seterr(err, errlen, "tensor '%s': %llu bytes, expected %llu", name,
                (unsigned long long)t->nbytes, (unsigned long long)(n * 4));
        return -1;
    }
    for (uint64_t i = 0; i < n; i++) {
        int32_t v;
        memcpy(&v, p + i * 4, 4);
        if (v < 0 || (uint32_t)v >= hp->n_expert) {
            ds4_seterr(err, errlen, "tensor '%s': token %llu maps to expert %d, "
                    "expert_count is %u", name,
                    (unsigned long long)(i / hp->n_expert_used), v,
                    hp->n_expert);
            return -1;
        }
    }
    return 0;
}

/* Routed-expert quant family of a layer: 2 = q2 (IQ2_XXS/IQ2_XXS/Q2_K),
 * 4 = q4 (Q4_K x3), 0 = anything else. */
static int expert_family(uint32_t gate, uint32_t up, uint32_t down)
{
    if (gate == DS4_TYPE_IQ2_XXS && up == DS4_TYPE_IQ2_XXS &&
        down == DS4_TYPE_Q2_K)
        return 2;
    if (gate == DS4_TYPE_Q4_K && up == DS4_TYPE_Q4_K && down == DS4_TYPE_Q4_K)
        return 4;
    return 0;
}

typedef struct classify_state {
    int non_ds4;      /* a non-expert tensor in a non-ds4 type */
    int fam_mask;     /* bit 2: a q2 layer, bit 4: a q4 layer, bit 1: other */
    uint32_t gate_type, up_type;
} classify_state;

/* Track expert types per layer (gate == up rule) and overall family. */
static int track_types(classify_state *cs, const dsv4_tensor_spec *s,
                       uint32_t type, char *err, size_t errlen)
{
    if (s->id == DSV4_T_FFN_GATE_EXPS) {
        cs->gate_type = type;
    } else if (s->id == DSV4_T_FFN_UP_EXPS) {
        cs->up_type = type;
        if (type != cs->gate_type) {
            ds4_seterr(err, errlen, "tensor '%s': type %s differs from the "
                    "layer's ffn_gate_exps type %s (gate and up must share a "
                    "type)", s->name, type_name(type),
                    type_name(cs->gate_type));
            return -1;
        }
    } else if (s->id == DSV4_T_FFN_DOWN_EXPS) {
        int fam = expert_family(cs->gate_type, cs->up_type, type);
        cs->fam_mask |= fam ? fam : 1;
    } else if (type != s->types[0]) {
        cs->non_ds4 = 1;
    }
    return 0;
}

/* Classification from the tracked types. */
static int classify(const classify_state *cs)
{
    if (cs->non_ds4 || (cs->fam_mask & 1))
        return DSV4_LAYOUT_EXTENDED;
    if (cs->fam_mask == 2)
        return DSV4_LAYOUT_Q2;
    if (cs->fam_mask == 4)
        return DSV4_LAYOUT_Q4;
    return DSV4_LAYOUT_MIXED;
}

/* Count tensors in the file that are not in the expected list. */
static void count_extras(const gguf_file *f, const dsv4_tensor_spec *specs,
                         size_t n, dsv4_validation *res)
{
    /* Every expected tensor was found exactly once (names are unique in a
     * file), so the rest are extras; name the first one. */
    res->n_extra = f->n_tensors - res->n_tensors;
    if (!res->n_extra)
        return;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        int found = 0;
        for (size_t j = 0; j < n && !found; j++)
            found = t->name.len == strlen(specs[j].name) &&
                    memcmp(t->name.ptr, specs[j].name, t->name.len) == 0;
        if (!found) {
            size_t len = t->name.len < DSV4_NAME_MAX - 1 ? t->name.len
                                                         : DSV4_NAME_MAX - 1;
            memcpy(res->first_extra, t->name.ptr, len);
            res->first_extra[len] = 0;
            return;
        }
    }
}

/* Presence, type and shape of every expected tensor, in file order. */
static int validate_tensors(const gguf_file *f, const dsv4_hparams *hp,
                            dsv4_validation *res, char *err, size_t errlen)
{
    size_t n = dsv4_expected_tensors(hp, NULL, 0);
    dsv4_tensor_spec *specs = ds4_xcalloc(n, sizeof *specs);
    dsv4_expected_tensors(hp, specs, n);
    classify_state cs = {0};
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const dsv4_tensor_spec *s = &specs[i];
        const gguf_tensor *t = gguf_find_tensor(f, s->name);
        if (!t) {
            ds4_seterr(err, errlen, "tensor '%s' is missing", s->name);
            rc = -1;
        } else if (check_tensor(t, s, err, errlen) ||
                   track_types(&cs, s, t->type, err, errlen) ||
                   (s->id == DSV4_T_FFN_TID2EID &&
                    check_tid2eid(t, hp, s->name, err, errlen))) {
            rc = -1;
        } else {
            res->n_tensors++;
            res->tensor_bytes += t->nbytes;
        }
    }
    if (rc == 0) {
        res->kind = classify(&cs);
        count_extras(f, specs, n, res);
    }
    free(specs);
    return rc;
}

/* Find a token by its text (a linear scan: done once at load). */
static int find_token(const gguf_kv *tokens, const char *text)
{
    for (uint64_t i = 0; i < tokens->arr_n; i++) {
        gguf_str s;
        if (gguf_arr_str(tokens, i, &s) == 0 && gguf_str_eq(s, text))
            return 0;
    }
    return -1;
}

int dsv4_validate_tokenizer(const gguf_file *f, const dsv4_hparams *hp,
                            char *err, size_t errlen)
{
    static const char *const specials[] = {
        "<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
        "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
        "<\xef\xbd\x9cUser\xef\xbd\x9c>",
        "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>",
        "<think>",
        "</think>",
        "\xef\xbd\x9c" "DSML\xef\xbd\x9c",
    };
    const gguf_kv *tok = gguf_find_kv(f, "tokenizer.ggml.tokens");
    const gguf_kv *mer = gguf_find_kv(f, "tokenizer.ggml.merges");
    if (!tok || !mer) {
        ds4_seterr(err, errlen, "missing metadata key '%s'",
                tok ? "tokenizer.ggml.merges" : "tokenizer.ggml.tokens");
        return -1;
    }
    if (tok->type != GGUF_VT_ARRAY || tok->arr_type != GGUF_VT_STRING ||
        tok->arr_n != hp->n_vocab) {
        ds4_seterr(err, errlen, "metadata key 'tokenizer.ggml.tokens' must be an "
                "array of %u strings (vocab_size)", hp->n_vocab);
        return -1;
    }
    if (mer->type != GGUF_VT_ARRAY || mer->arr_type != GGUF_VT_STRING ||
        mer->arr_n == 0) {
        ds4_seterr(err, errlen, "metadata key 'tokenizer.ggml.merges' must be a "
                "nonempty array of strings");
        return -1;
    }
    if (opt_str_eq(f, "tokenizer.ggml.model", "gpt2", err, errlen) ||
        opt_str_eq(f, "tokenizer.ggml.pre", "joyai-llm", err, errlen))
        return -1;
    for (size_t i = 0; i < DS4_ARRAY_LEN(specials); i++)
        if (find_token(tok, specials[i])) {
            ds4_seterr(err, errlen, "tokenizer.ggml.tokens lacks the special "
                    "token '%s'", specials[i]);
            return -1;
        }
    return 0;
}

int dsv4_validate(const gguf_file *f, const dsv4_hparams *hp,
                  dsv4_validation *res, char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    if (dsv4_validate_tokenizer(f, hp, err, errlen) ||
        validate_tensors(f, hp, res, err, errlen)) {
        res->kind = DSV4_LAYOUT_INVALID;
        return -1;
    }
    return 0;
}

int dsv4_check_file(const gguf_file *f, dsv4_hparams *hp,
                    dsv4_validation *res, char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    if (dsv4_hparams_load(f, hp, err, errlen))
        return -1;
    return dsv4_validate(f, hp, res, err, errlen);
}
