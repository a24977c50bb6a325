/* eng_fwd.h - the DeepSeek V4 forward pass on an OpenCL device, with
 * incremental (per-sequence) state on the device: chunked prefill and
 * one-token decode steps run the same code with S tokens per chunk.
 *
 * Mechanisms (eng_ref.c is the mechanism-by-mechanism specification and
 * the test oracle): embedding into hc streams; mHC pre (RMS, Sinkhorn,
 * collapse, RMSNorm) and post around attention and MoE; attention with
 * q LoRA, per-head unweighted norm, one shared K=V head, interleaved
 * partial RoPE (YaRN on compressed layers), sliding window with a ring,
 * per-head sinks, inverse RoPE of the output, grouped low-rank output;
 * ratio-4 compressor with overlapping windows plus the lightning indexer
 * (scores, causal top-k); ratio-128 compressor; MoE with sqrt(softplus)
 * routing, tid2eid hash routing, bias-corrected top-k, shared expert,
 * SwiGLU clamps; the output head.
 *
 * QAT mode (exact = 0, the default of the backend): KV rows (window and
 * compressed) get the FP8 E4M3 round trip on their non-RoPE dims and are
 * rounded to F16; indexer q and compressed indexer rows get Hadamard-128 +
 * FP4 E2M1 (common/qat.h semantics). exact = 1 turns all of it off (f32 KV).
 *
 * Session state: one f32 device buffer per sequence, per layer l:
 *   ring[n_swa][hd]            raw KV rows, position p at row p % n_swa
 *   ratio m > 0 (c = 2 lanes when m == 4, else 1):
 *     comp[max_ctx/m][hd]      compressed KV rows, block w at row w
 *     ckv[c*m][c*hd], csc[c*m][c*hd]  compressor inputs (kv, gate + ape)
 *                              of the last c*m tokens, token p at slot
 *                              p % (c*m): the incomplete block (and, with
 *                              overlap, the previous one)
 *   ratio 4 also: icomp[max_ctx/4][id], ikv[8][2*id], isc[8][2*id] (the
 *     indexer's compressor, same scheme)
 * plus hlast[hc*H], the residual streams of the last token (the head is
 * evaluated lazily from it). Nothing else: counts follow from the length.
 *
 * Not thread-safe: an eng_fwd and its sequences are driven by one thread
 * (they share eng_cl's queue and the chunk scratch). */
#ifndef DS4_ENG_FWD_H
#define DS4_ENG_FWD_H

#include <stddef.h>
#include <stdint.h>

#include "common/dsv4_layout.h"
#include "engined/eng_cl.h"
#include "engined/eng_model.h"

typedef struct eng_fwd eng_fwd;
typedef struct eng_fwd_seq eng_fwd_seq;

typedef struct eng_fwd_opts {
    int exact;           /* 1: no QAT simulation, f32 KV */
    uint32_t max_chunk;  /* most tokens per chunk (scratch size); 0: 256 */
    uint32_t max_ctx;    /* most tokens per sequence; 0: 32768 */
    int no_indexer_qat;  /* tests only: QAT mode without the indexer's
                            Hadamard + FP4 (isolates the KV simulations
                            from the indexer's discrete top-k decisions) */
} eng_fwd_opts;

/* Set up the forward pass on an uploaded model (eng_model_upload done,
 * kernels built with eng_cl_build): weight table, small f32 weights and
 * RoPE tables, chunk scratch. Refuses dims the kernels cannot handle and,
 * in QAT mode, dims the simulations need (id 128, non-RoPE dims a multiple
 * of 64). cl and m must outlive it. 0 or -1 + message. */
int eng_fwd_open(eng_cl *cl, const eng_model *m, const eng_fwd_opts *o,
                 eng_fwd **out, char *err, size_t errlen);
void eng_fwd_close(eng_fwd *f);

const dsv4_hparams *eng_fwd_hparams(const eng_fwd *f);
int eng_fwd_exact(const eng_fwd *f);
uint32_t eng_fwd_max_chunk(const eng_fwd *f);
uint32_t eng_fwd_max_ctx(const eng_fwd *f);
/* Device bytes of the small weights and the chunk scratch. */
uint64_t eng_fwd_scratch_bytes(const eng_fwd *f);
/* Device bytes of one sequence's state (its buffer + hlast). */
uint64_t eng_fwd_seq_state_bytes(const eng_fwd *f);

/* A new empty sequence (allocates its state buffer). 0 or -1. */
int eng_fwd_seq_new(eng_fwd *f, eng_fwd_seq **out, char *err, size_t errlen);
void eng_fwd_seq_free(eng_fwd_seq *s);
uint32_t eng_fwd_seq_len(const eng_fwd_seq *s);

/* Append ids[0..n) in chunks of at most chunk tokens (0 or above the
 * maximum: the maximum). all_logits (may be NULL): n * n_vocab floats,
 * row i the next-token logits after ids[i]. Ids must be < n_vocab and the
 * length stay within max_ctx (checked: -1 without any change). A device
 * failure leaves the sequence unusable (every later call fails). */
int eng_fwd_eval(eng_fwd_seq *s, const int32_t *ids, uint32_t n,
                 uint32_t chunk, float *all_logits, char *err, size_t errlen);

/* The same with logits only for the rows i whose want[i] is nonzero
 * (want NULL: every row), written consecutively to out. */
int eng_fwd_eval_rows(eng_fwd_seq *s, const int32_t *ids, uint32_t n,
                      uint32_t chunk, const uint8_t *want, float *out,
                      char *err, size_t errlen);

/* One decode step for n distinct sequences of this eng_fwd at once:
 * sequence i appends ids[i]; logits (may be NULL) gets n rows, row i the
 * next-token logits of sequence i. The weights are read once for the whole
 * batch (up to the chunk size at a time); only attention, the compressors
 * and the indexer run per sequence. Arguments are checked before anything
 * changes; a device failure leaves every sequence of the call unusable. */
int eng_fwd_decode_batch(eng_fwd_seq **s, const int32_t *ids, uint32_t n,
                         float *logits, char *err, size_t errlen);

/* Profiling (also DS4_FWD_PROFILE=1 at open, which prints the table on
 * stderr at close): every launch is waited for and its wall time added to
 * an entry per kernel name (GEMMs as "matvec|matmul ROWSxCOLS tTYPE"), so
 * the step is serialised: use the shares, not the absolute times. */
void eng_fwd_set_profile(eng_fwd *f, int on);
void eng_fwd_profile_reset(eng_fwd *f);
int eng_fwd_profile_count(const eng_fwd *f);
void eng_fwd_profile_entry(const eng_fwd *f, int i, const char **name,
                           double *seconds, uint64_t *calls);

/* Next-token logits after the whole sequence (n_vocab floats), from the
 * last token's streams. -1 when the sequence is empty or broken. */
int eng_fwd_logits(eng_fwd_seq *s, float *logits, char *err, size_t errlen);

/* dst (same eng_fwd) becomes a copy of src: length, state, hlast. */
int eng_fwd_seq_copy(eng_fwd_seq *dst, const eng_fwd_seq *src, char *err,
                     size_t errlen);

/* Serialised state of a sequence of length n: the rings and compressor
 * inputs whole, compressed rows only up to n / ratio (hlast not included:
 * a snapshot carries the logits instead). */
uint64_t eng_fwd_state_blob_bytes(const eng_fwd *f, uint32_t n);
int eng_fwd_state_save(const eng_fwd_seq *s, void *dst, char *err,
                       size_t errlen);
/* Load a state of length n (<= max_ctx) saved by eng_fwd_state_save on
 * the same model and mode; the sequence then has length n (its hlast is
 * unknown: eng_fwd_logits fails until the next eval). */
int eng_fwd_state_load(eng_fwd_seq *s, uint32_t n, const void *src,
                       char *err, size_t errlen);

#endif
