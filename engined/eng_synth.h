/* eng_synth.h - synthetic weights generated in device memory (kernels/
 * synth.cl) for a layout-only model (eng_model_virtual): the benchmark runs
 * full-width DeepSeek V4 Flash layers through the serving engine without
 * an 81 GB file.
 *
 * Values follow the test-model generator's recipes (dsv4_mk_recipe): norms
 * near 1, weight matrices with standard deviation ~ 1/sqrt(fan_in), mHC
 * scales and bases, sinks, routing biases in their ranges. Quantized
 * tensors get random payload bytes (every IQ2_XXS grid index and sign
 * pattern, every K-quant scale is valid) with block scales d (and dmin)
 * chosen so the dequantized values have about the recipe's standard
 * deviation and near-zero mean; routing is therefore spread over the
 * experts as with trained weights' random-looking inputs. tid2eid holds k
 * distinct experts per token. Deterministic in (seed, tensor, element),
 * whatever the buffer split. */
#ifndef DS4_ENG_SYNTH_H
#define DS4_ENG_SYNTH_H

#include <stdint.h>

#include "engined/eng_model.h"

/* Allocate the plan's buffers (eng_model_alloc) and fill every tensor.
 * progress (may be NULL) is called after each tensor part with bytes done
 * of the plan's tensor bytes. 0, or -1 with err. */
int eng_synth_fill(eng_model *m, eng_cl *cl, const eng_plan *plan,
                   uint64_t seed, eng_progress_fn progress, void *ud,
                   char *err, size_t errlen);

/* The dequantized standard deviation eng_synth aims at for a tensor id of
 * fan-in fan_in (for tests and the bench's sanity report). */
double eng_synth_target_std(int id, uint64_t fan_in);

#endif
