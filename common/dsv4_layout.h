/* dsv4_layout.h - the DeepSeek V4 Flash GGUF layout as ds4 defines it:
 * hyper-parameters read from metadata, the expected tensor list (names,
 * accepted types, exact shapes) derived from them, and a validator that
 * reports the first mismatch by name and classifies the file.
 *
 * Nothing here is a compile-time model constant: the same code describes the
 * full-size 43-layer model and the small seeded test models.
 *
 * Shapes are in GGML order (ne[0] first, contiguous). Abbreviations used in
 * the comments: H hidden, V vocab, nH heads, hd head dim, q q-LoRA rank,
 * g output groups, r output-LoRA rank, E experts, I expert FFN width,
 * k experts per token, hc streams, mix = (2+hc)*hc, m compress ratio,
 * c = 2 on ratio-4 layers (overlapping windows) else 1, iH/id indexer
 * heads/head dim.
 */
#ifndef DS4_DSV4_LAYOUT_H
#define DS4_DSV4_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

#define DSV4_MAX_LAYERS 256
#define DSV4_MAX_TYPES 6
#define DSV4_NAME_MAX 64

/* Every dimension and constant the engine needs, from deepseek4.* keys. */
typedef struct dsv4_hparams {
    uint32_t n_layer;          /* block_count */
    uint32_t n_embd;           /* embedding_length (H) */
    uint32_t n_vocab;          /* vocab_size (V) */
    uint32_t n_head;           /* attention.head_count (nH) */
    uint32_t n_head_kv;        /* attention.head_count_kv (must be 1) */
    uint32_t head_dim;         /* attention.key_length (hd) */
    uint32_t value_dim;        /* attention.value_length (== hd: K = V) */
    uint32_t n_rot;            /* rope.dimension_count (last n_rot dims) */
    uint32_t q_lora_rank;      /* attention.q_lora_rank (q) */
    uint32_t o_lora_rank;      /* attention.output_lora_rank (r) */
    uint32_t o_groups;         /* attention.output_group_count (g) */
    uint32_t n_expert;         /* expert_count (E) */
    uint32_t n_expert_used;    /* expert_used_count (k) */
    uint32_t n_ff_exp;         /* expert_feed_forward_length (I) */
    uint32_t n_expert_shared;  /* expert_shared_count (must be 1) */
    uint32_t n_hash_layer;     /* hash_layer_count: layers < this use tid2eid */
    uint32_t n_swa;            /* attention.sliding_window */
    uint32_t n_idx_head;       /* attention.indexer.head_count (iH) */
    uint32_t idx_head_dim;     /* attention.indexer.key_length (id) */
    uint32_t idx_top_k;        /* attention.indexer.top_k */
    uint32_t n_hc;             /* hyper_connection.count (hc) */
    uint32_t hc_sinkhorn_iter; /* hyper_connection.sinkhorn_iterations */
    float hc_eps;              /* hyper_connection.epsilon */
    float rms_eps;             /* attention.layer_norm_rms_epsilon */
    uint64_t n_ctx;            /* context_length (optional; default
                                  rope_orig_ctx * rope_scale_factor) */
    uint64_t rope_orig_ctx;    /* rope.scaling.original_context_length */
    float rope_freq_base;      /* rope.freq_base (ratio-0 layers) */
    float rope_scale_factor;   /* rope.scaling.factor (YaRN) */
    float yarn_beta_fast;      /* rope.scaling.yarn_beta_fast */
    float yarn_beta_slow;      /* rope.scaling.yarn_beta_slow */
    float compress_rope_freq_base; /* attention.compress_rope_freq_base */
    float expert_weights_scale;    /* expert_weights_scale (1.5) */
    int expert_weights_norm;       /* expert_weights_norm (bool) */
    uint32_t compress_ratio[DSV4_MAX_LAYERS]; /* per layer: 0, 4 or 128 */
    float swiglu_clamp[DSV4_MAX_LAYERS];      /* swiglu_clamp_exp per layer */
} dsv4_hparams;

/* Read and validate every key the engine needs. Integer keys accept any
 * GGUF integer width whose value fits (ds4 writes u32, and u32 or u64 for
 * the context lengths); float keys accept f32 or f64. Keys ds4 never reads
 * are optional. Returns 0, or -1 with a message naming the key or rule. */
int dsv4_hparams_load(const gguf_file *f, dsv4_hparams *hp, char *err,
                      size_t errlen);

/* Range and consistency checks on a filled struct (also run by load; the
 * model generator runs it on its options). 0 or -1 + message. */
int dsv4_hparams_check(const dsv4_hparams *hp, char *err, size_t errlen);

/* The hyper-parameters of the full-size DeepSeek V4 Flash (ds4's values). */
void dsv4_hparams_full(dsv4_hparams *hp);

/* What a tensor is, so the engine and the generator can find it by id. */
enum dsv4_tensor_id {
    DSV4_T_TOKEN_EMBD,
    DSV4_T_OUTPUT_HC_BASE,
    DSV4_T_OUTPUT_HC_FN,
    DSV4_T_OUTPUT_HC_SCALE,
    DSV4_T_OUTPUT_NORM,
    DSV4_T_OUTPUT,
    /* per layer */
    DSV4_T_HC_ATTN_FN,
    DSV4_T_HC_ATTN_SCALE,
    DSV4_T_HC_ATTN_BASE,
    DSV4_T_ATTN_NORM,
    DSV4_T_ATTN_Q_A,
    DSV4_T_ATTN_Q_A_NORM,
    DSV4_T_ATTN_Q_B,
    DSV4_T_ATTN_KV,
    DSV4_T_ATTN_KV_A_NORM,
    DSV4_T_ATTN_SINKS,
    DSV4_T_ATTN_OUTPUT_A,
    DSV4_T_ATTN_OUTPUT_B,
    DSV4_T_ATTN_COMP_APE,
    DSV4_T_ATTN_COMP_KV,
    DSV4_T_ATTN_COMP_GATE,
    DSV4_T_ATTN_COMP_NORM,
    DSV4_T_IDX_ATTN_Q_B,
    DSV4_T_IDX_PROJ,
    DSV4_T_IDX_COMP_APE,
    DSV4_T_IDX_COMP_KV,
    DSV4_T_IDX_COMP_GATE,
    DSV4_T_IDX_COMP_NORM,
    DSV4_T_HC_FFN_FN,
    DSV4_T_HC_FFN_SCALE,
    DSV4_T_HC_FFN_BASE,
    DSV4_T_FFN_NORM,
    DSV4_T_FFN_GATE_INP,
    DSV4_T_FFN_TID2EID,
    DSV4_T_FFN_EXP_PROBS_B,
    DSV4_T_FFN_GATE_EXPS,
    DSV4_T_FFN_UP_EXPS,
    DSV4_T_FFN_DOWN_EXPS,
    DSV4_T_FFN_GATE_SHEXP,
    DSV4_T_FFN_UP_SHEXP,
    DSV4_T_FFN_DOWN_SHEXP,
    DSV4_T_COUNT
};

/* One expected tensor. types[0] is ds4's type in the q2 file; the rest are
 * the more precise types SPEC 3.2 also accepts. */
typedef struct dsv4_tensor_spec {
    char name[DSV4_NAME_MAX];
    int id;                 /* enum dsv4_tensor_id */
    int layer;              /* -1 for global tensors */
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* unused dims are 1 */
    uint32_t n_types;
    uint32_t types[DSV4_MAX_TYPES];
} dsv4_tensor_spec;

/* Fill out[0..cap) with the expected tensors in ds4's file order and return
 * how many there are (call with out NULL / cap 0 to count). hp must have
 * passed dsv4_hparams_check. */
size_t dsv4_expected_tensors(const dsv4_hparams *hp, dsv4_tensor_spec *out,
                             size_t cap);

/* Name suffix of a tensor id ("attn_q_a.weight"; global ones are full). */
const char *dsv4_tensor_suffix(int id);

/* Full GGUF name of tensor id in layer (ignored for global ids) written to
 * buf ("blk.3.attn_q_a.weight"); returns buf. */
char *dsv4_tensor_name(int id, int layer, char buf[DSV4_NAME_MAX]);

/* 1 if id is a per-layer tensor (0 for token_embd and the output head). */
int dsv4_tensor_is_layer(int id);

/* Classification of a valid file. */
enum dsv4_layout_kind {
    DSV4_LAYOUT_INVALID = 0,
    DSV4_LAYOUT_Q2,       /* exactly ds4's q2 file: routed IQ2_XXS/Q2_K */
    DSV4_LAYOUT_Q4,       /* exactly ds4's q4 file: routed Q4_K */
    DSV4_LAYOUT_MIXED,    /* ds4 types, some layers q2 experts, some q4 */
    DSV4_LAYOUT_EXTENDED, /* some tensors in a more precise accepted type */
};

const char *dsv4_layout_name(int kind);

typedef struct dsv4_validation {
    int kind;                  /* enum dsv4_layout_kind */
    uint64_t n_tensors;        /* expected tensors found */
    uint64_t n_extra;          /* tensors in the file the layout lacks */
    char first_extra[DSV4_NAME_MAX];
    uint64_t tensor_bytes;     /* bytes of the expected tensors */
} dsv4_validation;

/* Check tokenizer keys, then every expected tensor (presence, accepted type,
 * block-size compatibility, exact shape; gate and up experts of one layer
 * share a type; tid2eid ids < expert count), in file order, stopping at the
 * first problem. Extra tensors are allowed and counted (res->n_extra).
 * Returns 0 with res filled, or -1 with a message naming the tensor/key. */
int dsv4_validate(const gguf_file *f, const dsv4_hparams *hp,
                  dsv4_validation *res, char *err, size_t errlen);

/* The tokenizer part alone: tokenizer.ggml.tokens (strings, n_vocab of
 * them), tokenizer.ggml.merges (strings, nonempty), model "gpt2" and pre
 * "joyai-llm" when present, and the special tokens the engine looks up by
 * text (BOS, EOS, User, Assistant, think, /think, DSML) present. */
int dsv4_validate_tokenizer(const gguf_file *f, const dsv4_hparams *hp,
                            char *err, size_t errlen);

/* Load + validate in one go (what the engine and `ds4-gguf info` apply). */
int dsv4_check_file(const gguf_file *f, dsv4_hparams *hp,
                    dsv4_validation *res, char *err, size_t errlen);

#endif
