/* gguf.h - GGUF v3 reader (over mmap or a caller's buffer) and writer.
 *
 * The reader treats every file as hostile: every length, count, offset and
 * type is bounds-checked before use, and any problem is reported as an error
 * string naming it ("tensor 'blk.3.attn_kv.weight': data extends past end of
 * file"). Nothing here aborts on bad input.
 *
 * Versions 2 and 3 are accepted (same little-endian encoding). Nested
 * arrays are rejected; bools must be 0 or 1; keys and tensor names are
 * 1..65535 bytes and unique; tensors have 1..4 nonzero dims, a type known
 * to quant.h (supported or not), aligned non-overlapping data inside the
 * file. Counts are checked against the bytes left before any allocation.
 *
 * Everything returned by the reader points into the mapped bytes (strings
 * are NOT NUL-terminated: use ptr+len), and stays valid until gguf_close().
 */
#ifndef DS4_GGUF_H
#define DS4_GGUF_H

#include <stddef.h>
#include <stdint.h>

/* Metadata value types, as numbered by the GGUF spec. */
enum gguf_vtype {
    GGUF_VT_UINT8 = 0,
    GGUF_VT_INT8 = 1,
    GGUF_VT_UINT16 = 2,
    GGUF_VT_INT16 = 3,
    GGUF_VT_UINT32 = 4,
    GGUF_VT_INT32 = 5,
    GGUF_VT_FLOAT32 = 6,
    GGUF_VT_BOOL = 7,
    GGUF_VT_STRING = 8,
    GGUF_VT_ARRAY = 9,
    GGUF_VT_UINT64 = 10,
    GGUF_VT_INT64 = 11,
    GGUF_VT_FLOAT64 = 12,
};

#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32

typedef struct gguf_str {
    const char *ptr;   /* not NUL-terminated */
    uint64_t len;
} gguf_str;

typedef struct gguf_kv {
    gguf_str key;
    uint32_t type;          /* enum gguf_vtype */
    uint32_t arr_type;      /* element type when type == ARRAY */
    uint64_t arr_n;         /* element count when type == ARRAY */
    const uint8_t *data;    /* scalar value, string (u64 len + bytes) or
                               first array element, inside the map */
    const uint64_t *str_off;/* for arrays of strings: arr_n offsets (from
                               data) of each element's u64 length prefix */
} gguf_kv;

typedef struct gguf_tensor {
    gguf_str name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS];  /* ne[0] is the contiguous (row) dimension;
                                    unused dims are 1 */
    uint32_t type;               /* enum ds4_type */
    uint64_t offset;             /* relative to data_offset */
    uint64_t nbytes;
    const void *data;            /* inside the map */
} gguf_tensor;

typedef struct gguf_file {
    const uint8_t *base;     /* whole file */
    uint64_t size;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;    /* absolute offset of the tensor data section
                                (at most size when there are no tensors) */
    uint64_t n_kv;
    gguf_kv *kv;
    uint64_t n_tensors;
    gguf_tensor *tensors;
    /* private */
    int fd;                  /* -1 when parsed from a caller's buffer */
    void *map;
    uint64_t map_len;
} gguf_file;

/* Open and parse a file (mmap, read-only, MAP_SHARED). 0 on success;
 * -1 with a message in err (always NUL-terminated) otherwise. */
int gguf_open(const char *path, gguf_file **out, char *err, size_t errlen);

/* Parse a caller-owned buffer (kept, not copied; must outlive the result).
 * The fuzz target uses this. */
int gguf_parse(const void *buf, uint64_t len, gguf_file **out, char *err,
               size_t errlen);

void gguf_close(gguf_file *f);

/* Lookup by name (exact, case-sensitive); NULL when absent. */
const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);

/* Typed getters. Integer getters accept any integer value type whose value
 * fits the destination (and BOOL for gguf_get_bool only). Return 0 on
 * success, -1 if absent, -2 if present with an incompatible type or a value
 * that does not fit. */
int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out);
int gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out);
int gguf_get_i64(const gguf_file *f, const char *key, int64_t *out);
int gguf_get_f32(const gguf_file *f, const char *key, float *out); /* F32 or F64 */
int gguf_get_bool(const gguf_file *f, const char *key, int *out);
int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out);

/* Array element access (index checked against arr_n). Return 0 or -1/-2
 * as the getters above. Integer element types convert as above. */
int gguf_arr_u32(const gguf_kv *kv, uint64_t i, uint32_t *out);
int gguf_arr_i64(const gguf_kv *kv, uint64_t i, int64_t *out);
int gguf_arr_f32(const gguf_kv *kv, uint64_t i, float *out);
int gguf_arr_str(const gguf_kv *kv, uint64_t i, gguf_str *out);

/* Human name of a value type ("u32", "str", "arr", ...; "unknown" for an
 * invalid id). gguf_kv_type_name() adds an array's element type. */
const char *gguf_vtype_name(uint32_t type);

/* Type name of a kv including the element type of arrays ("arr[f32]");
 * "absent" for NULL. */
const char *gguf_kv_type_name(const gguf_kv *kv);

/* 1 if s equals the NUL-terminated c string. */
int gguf_str_eq(gguf_str s, const char *c);

/* ---- writer ------------------------------------------------------------
 * Collects metadata and tensors in memory order of insertion, then writes a
 * GGUF v3 file. Tensor data is referenced, not copied: it must stay valid
 * until gguf_writer_write() returns. Allocation failures abort (the writer
 * runs in tools and tests only). Keys and tensor names must be unique; the
 * writer reports a duplicate as an error at write time.
 */
typedef struct gguf_writer gguf_writer;

gguf_writer *gguf_writer_new(void);
void gguf_writer_free(gguf_writer *w);
void gguf_writer_set_alignment(gguf_writer *w, uint32_t alignment);

void gguf_w_u8(gguf_writer *w, const char *key, uint8_t v);
void gguf_w_i8(gguf_writer *w, const char *key, int8_t v);
void gguf_w_u16(gguf_writer *w, const char *key, uint16_t v);
void gguf_w_i16(gguf_writer *w, const char *key, int16_t v);
void gguf_w_u32(gguf_writer *w, const char *key, uint32_t v);
void gguf_w_i32(gguf_writer *w, const char *key, int32_t v);
void gguf_w_u64(gguf_writer *w, const char *key, uint64_t v);
void gguf_w_i64(gguf_writer *w, const char *key, int64_t v);
void gguf_w_f32(gguf_writer *w, const char *key, float v);
void gguf_w_f64(gguf_writer *w, const char *key, double v);
void gguf_w_bool(gguf_writer *w, const char *key, int v);
void gguf_w_str(gguf_writer *w, const char *key, const char *v);
/* Arrays: elem_type is a scalar gguf_vtype (not STRING or ARRAY); data
 * holds n packed little-endian elements and is copied. */
void gguf_w_arr(gguf_writer *w, const char *key, uint32_t elem_type,
                const void *data, uint64_t n);
/* Array of n strings (copied). lens may be NULL for NUL-terminated. */
void gguf_w_arr_str(gguf_writer *w, const char *key, const char *const *v,
                    const uint64_t *lens, uint64_t n);

/* Add a tensor; ne[0] is the row dimension. nbytes must equal
 * ds4_type_nbytes(type, ne0*ne1*...), checked at write time. */
void gguf_w_tensor(gguf_writer *w, const char *name, uint32_t type,
                   uint32_t n_dims, const uint64_t *ne, const void *data,
                   uint64_t nbytes);

/* Write to path atomically (path.tmp, fsync, rename). 0 or -1 + err. */
int gguf_writer_write(gguf_writer *w, const char *path, char *err,
                      size_t errlen);

/* Serialize to a malloc'd buffer (tests, fuzz corpus). 0 or -1 + err. */
int gguf_writer_to_mem(gguf_writer *w, uint8_t **out, uint64_t *len,
                       char *err, size_t errlen);

#endif
