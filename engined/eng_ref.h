/* eng_ref.h - plain-C float32 reference of the complete DeepSeek V4 forward
 * pass (prefill of a whole prompt, no incremental state), in "exact" mode:
 * no QAT simulation (FP8 KV, Hadamard + FP4 indexer), KV kept in float32.
 * It follows HF transformers' DeepseekV4ForCausalLM, the oracle of the
 * golden fixtures in tests/data/forward/, and is what the OpenCL engine is
 * checked against. Speed is not a goal: every step is a plain loop.
 *
 * Weights are dequantized by the first forward (ds4_dequantize, every
 * tensor of the layout) and cached as row-major float arrays, GGUF ne[0]
 * being the contiguous (input) dim; the full-size model would need ~1 TB,
 * so this is for the small test models. Large products use 4 threads.
 * Every dimension comes from the GGUF metadata (dsv4_hparams). */
#ifndef DS4_ENG_REF_H
#define DS4_ENG_REF_H

#include <stddef.h>
#include <stdint.h>

#include "common/dsv4_layout.h"
#include "common/gguf.h"

typedef struct eng_ref eng_ref;

/* Open and validate a ds4-layout GGUF (gguf_open + dsv4_check_file).
 * 0, or -1 with a message naming the problem. */
int eng_ref_open(const char *path, eng_ref **out, char *err, size_t errlen);

void eng_ref_close(eng_ref *m);

const dsv4_hparams *eng_ref_hparams(const eng_ref *m);

/* The parsed file (for fingerprints). */
const gguf_file *eng_ref_file(const eng_ref *m);

/* Full prefill of ids[0..n): logits[n * n_vocab], row i = next-token
 * logits after ids[0..i]. Token ids must be < n_vocab. 0, or -1 + message
 * (bad id, tensor that cannot be dequantized). */
int eng_ref_forward(eng_ref *m, const int32_t *ids, uint32_t n, float *logits,
                    char *err, size_t errlen);

/* The same, but logits only for rows row0..n-1: logits[(n - row0) *
 * n_vocab] (row0 = n - 1: just the next-token distribution, which skips
 * most of the output head's cost). */
int eng_ref_forward_rows(eng_ref *m, const int32_t *ids, uint32_t n,
                         uint32_t row0, float *logits, char *err,
                         size_t errlen);

/* QAT mode (off after open): the simulations the engine applies by default
 * (SPEC 3.1, ds4 reference 2.4), with common/qat.h as the building block -
 * ENG_REF_QAT_KV: window KV rows and compressed KV rows get the FP8 E4M3
 * round trip of their non-RoPE dims in blocks of 64, then F16 rounding;
 * ENG_REF_QAT_INDEXER: indexer q heads and compressed indexer rows get
 * Hadamard-128 + FP4 E2M1 in blocks of 32 (after their RoPE). parts is a
 * mask of them (ENG_REF_QAT_ALL: the engine's QAT mode; 0: exact). The
 * oracle of the OpenCL engine's QAT mode. Fails (-1 + message) when the
 * dims do not allow it. */
#define ENG_REF_QAT_KV 1
#define ENG_REF_QAT_INDEXER 2
#define ENG_REF_QAT_ALL 3
int eng_ref_set_qat(eng_ref *m, int parts, char *err, size_t errlen);

/* ---- mechanisms, exposed for unit tests -------------------------------- */

/* mHC split of one mix vector (2+hc)*hc: pre[hc], post[hc], comb[hc*hc]
 * (comb[j*hc+k]: source stream j into destination k; Sinkhorn-projected). */
void eng_ref_hc_split(const float *mix, const float *scale, const float *base,
                      uint32_t hc, uint32_t iters, float eps, float *pre,
                      float *post, float *comb);

/* RoPE inverse frequencies (n_rot/2 of them): plain base^(-2i/n_rot), or
 * YaRN (factor, original context, beta fast/slow) when yarn is nonzero. */
void eng_ref_rope_freqs(float *inv_freq, uint32_t n_rot, float base, int yarn,
                        float factor, double orig_ctx, float beta_fast,
                        float beta_slow);

/* Interleaved RoPE of the LAST n_rot dims of x[dim] at position pos;
 * inverse (conjugate rotation) when inverse is nonzero. */
void eng_ref_rope(float *x, uint32_t dim, uint32_t n_rot, const float *inv_freq,
                  uint32_t pos, int inverse);

#endif
