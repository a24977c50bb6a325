/* qat.h - plain-C reference of DeepSeek V4's quantisation-aware-training
 * simulations (SPEC §3.1, ds4 reference §2.4, official kernel.py):
 *  - KV rows' non-RoPE dims: FP8 E4M3FN round trip in blocks of 64 with a
 *    power-of-two (ue8m0) scale per block;
 *  - indexer q and keys: normalised Hadamard-128, then an FP4 E2M1 round
 *    trip in blocks of 32 with a power-of-two scale per block;
 *  - stored KV rows rounded to F16.
 * Everything is plain IEEE binary32 arithmetic under the default rounding
 * mode (round to nearest even), so results are deterministic and bit-exact
 * with the torch fixtures in tests/data/qat/. */
#ifndef DS4_QAT_H
#define DS4_QAT_H

#include <stddef.h>
#include <stdint.h>

/* Largest finite E4M3FN magnitude, and the FP8 block scale's amax floor. */
#define DS4_FP8_E4M3_MAX 448.0f
#define DS4_FP8_AMAX_FLOOR 1e-4f
/* Largest E2M1 magnitude; FP4 amax floor is 6 * 2^-126 (keeps scale normal). */
#define DS4_FP4_E2M1_MAX 6.0f
/* Block sizes the model uses. */
#define DS4_QAT_FP8_BLOCK 64
#define DS4_QAT_FP4_BLOCK 32
#define DS4_QAT_HADAMARD_N 128

/* E4M3FN code (sign bit 7, exponent bits 6..3 bias 7, mantissa bits 2..0)
 * nearest to f, ties to even, exactly as torch's .to(float8_e4m3fn): no
 * saturation - magnitudes that round above 448 (i.e. > 464), infinities
 * and NaN give the NaN code 0x7F (with f's sign bit). */
uint8_t ds4_fp8_e4m3_encode(float f);

/* Value of an E4M3FN code (0x7F/0xFF decode to NaN). */
float ds4_fp8_e4m3_decode(uint8_t code);

/* f rounded to the nearest E4M3FN value (decode(encode(f))). */
float ds4_fp8_e4m3_round(float f);

/* In-place FP8 simulation of the official act_quant(x, block, ue8m0,
 * inplace=True) on n floats (n a multiple of block, block > 0): per block
 * amax = max(max|x|, 1e-4), s = 2^ceil(log2(amax * float(1/448))),
 * x = e4m3(clamp(x / s, -448, 448)) * s. Returns 0, or -1 if n % block. */
int ds4_fp8_block_roundtrip(float *x, size_t n, size_t block);

/* E2M1 code (sign bit 3, magnitude index 0..7 into {0,.5,1,1.5,2,3,4,6})
 * nearest to f, ties to the even index; magnitudes above 6 saturate to 6
 * (the simulation clamps before casting anyway). NaN encodes as +0. */
uint8_t ds4_fp4_e2m1_encode(float f);

/* Value of an E2M1 code (low 4 bits used). */
float ds4_fp4_e2m1_decode(uint8_t code);

/* f rounded to the nearest E2M1 value, sign kept (-0.2 -> -0.0); NaN
 * passes through unchanged. */
float ds4_fp4_e2m1_round(float f);

/* In-place FP4 simulation of the official fp4_act_quant(x, block,
 * inplace=True): per block amax = max(max|x|, 6*2^-126), s = 2^ceil(log2(
 * amax * float(1/6))), x = e2m1(clamp(x / s, -6, 6)) * s.
 * Returns 0, or -1 if n % block != 0 or block == 0. */
int ds4_fp4_block_roundtrip(float *x, size_t n, size_t block);

/* In-place normalised fast Walsh-Hadamard transform of 128 floats in
 * Sylvester (natural) order: x = H x * 128^-0.5, H[i][j] = (-1)^popcount(i&j).
 * Its own inverse up to rounding. */
void ds4_hadamard128(float *x);

/* The indexer's simulation of one 128-wide row: Hadamard-128, then the FP4
 * round trip in blocks of 32. */
void ds4_indexer_qat_row(float *x);

/* f rounded to the nearest F16 value (via quant.h's conversions). */
float ds4_f16_round(float f);

/* The KV row simulation: FP8 round trip of the first n_nope dims (a
 * multiple of 64), leaving the RoPE tail alone; then, if f16, the whole
 * row of n dims is rounded to F16. Returns 0, or -1 on a bad n_nope. */
int ds4_kv_qat_row(float *x, size_t n, size_t n_nope, int f16);

#endif
