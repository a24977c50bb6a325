/* quant.h - GGML tensor types: sizes, scalar conversions, reference
 * (de)quantization in plain C.
 *
 * These are the references every OpenCL kernel is tested against, and the
 * quantizers the model tool uses to write test models.  Decoders are
 * bit-exact with ggml (checked against tests/data/quant-vectors).
 */
#ifndef DS4_QUANT_H
#define DS4_QUANT_H

#include <stddef.h>
#include <stdint.h>

/* GGML type ids, as stored in GGUF tensor tables. */
enum ds4_type {
    DS4_TYPE_F32 = 0,
    DS4_TYPE_F16 = 1,
    DS4_TYPE_Q4_0 = 2,
    DS4_TYPE_Q4_1 = 3,
    DS4_TYPE_Q5_0 = 6,
    DS4_TYPE_Q5_1 = 7,
    DS4_TYPE_Q8_0 = 8,
    DS4_TYPE_Q8_1 = 9,
    DS4_TYPE_Q2_K = 10,
    DS4_TYPE_Q3_K = 11,
    DS4_TYPE_Q4_K = 12,
    DS4_TYPE_Q5_K = 13,
    DS4_TYPE_Q6_K = 14,
    DS4_TYPE_Q8_K = 15,
    DS4_TYPE_IQ2_XXS = 16,
    DS4_TYPE_I8 = 24,
    DS4_TYPE_I16 = 25,
    DS4_TYPE_I32 = 26,
    DS4_TYPE_I64 = 27,
    DS4_TYPE_F64 = 28,
    DS4_TYPE_BF16 = 30,
};

/* Block geometry of one type: a row of n elements takes
 * n / block_elems * block_bytes bytes (n must be a multiple of block_elems). */
typedef struct ds4_type_info {
    const char *name;      /* ggml spelling: "F32", "Q8_0", "IQ2_XXS", ... */
    uint32_t block_elems;
    uint32_t block_bytes;
    int supported;         /* 1 if this project can (de)quantize it */
} ds4_type_info;

/* Geometry of a type id; NULL for an id ggml does not define (or that this
 * project does not know). Known-but-unsupported types return an entry with
 * supported == 0 so readers can still size them and name them in errors. */
const ds4_type_info *ds4_type_get(uint32_t type);

/* Type id for a ggml name ("Q8_0", case-insensitive); -1 if unknown. */
int ds4_type_from_name(const char *name);

/* Bytes for n elements of type; 0 if type unknown or n not a multiple of
 * the block size, or on overflow. */
uint64_t ds4_type_nbytes(uint32_t type, uint64_t n);

/* Scalar conversions, bit-exact with ggml's portable routines
 * (round to nearest even; NaN and Inf preserved). */
float ds4_f16_to_f32(uint16_t h);
uint16_t ds4_f32_to_f16(float f);
float ds4_bf16_to_f32(uint16_t h);
uint16_t ds4_f32_to_bf16(float f);

/* Dequantize n elements (a multiple of the block size) of type from src to
 * dst. Supports F32, F16, BF16, Q8_0, Q2_K, Q4_K, IQ2_XXS, I32 (converted).
 * Returns 0, or -1 for an unsupported type or bad n. */
int ds4_dequantize(uint32_t type, const void *src, float *dst, uint64_t n);

/* Quantize n elements (a multiple of the block size) from src into dst,
 * which must hold ds4_type_nbytes(type, n) bytes. Supports F32, F16, BF16,
 * Q8_0, Q2_K, Q4_K and IQ2_XXS. Deterministic: the same input gives the
 * same bytes on every machine. Returns 0, or -1 for an unsupported type. */
int ds4_quantize(uint32_t type, const float *src, void *dst, uint64_t n);

/* Dot product of n dequantized elements of a row with an f32 vector,
 * accumulated in double (the reference the mat-vec kernels are checked
 * against). Returns 0 or -1 as ds4_dequantize. */
int ds4_dot_ref(uint32_t type, const void *row, const float *x, uint64_t n,
                double *out);

/* IQ2_XXS lookup tables (from the ggml format definition, shipped as data):
 * 256 grid entries of 8 bytes each, and 128 sign patterns. Exposed so the
 * OpenCL path can upload exactly the same tables. */
extern const uint64_t ds4_iq2xxs_grid[256];
extern const uint8_t ds4_ksigns_iq2xs[128];

#endif
