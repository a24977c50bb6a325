/* kv_format.h - the on-disk checkpoint file of kvd (docs/KV-FORMAT.md).
 *
 * One file per checkpoint, little-endian, named "<key>.kv":
 *
 *   0      header, 256 bytes (below), with its own checksum
 *   256    token ids: n_tokens x i32
 *   ...    zero padding up to payload_offset (a multiple of 4096)
 *   payload_offset  payload: payload_size opaque bytes (engined's session
 *          snapshot), checksum ds4_hash64(payload, payload_size, 0)
 *   file size == payload_offset + payload_size exactly.
 *
 * Header:
 *   0   u8  magic[8]          "DS4KVC\0\1"
 *   8   u32 version           1
 *   12  u32 header_size       256
 *   16  u64 file_size
 *   24  u32 n_tokens          1 .. KV_MAX_TOKENS
 *   28  u32 reason            enum kv_reason
 *   32  u64 ids_offset        256
 *   40  u64 payload_offset    kv_payload_offset(n_tokens)
 *   48  u64 payload_size      0 .. KV_MAX_PAYLOAD
 *   56  u64 ids_hash          kv_ids_hash(ids, n_tokens)
 *   64  u64 payload_checksum  ds4_hash64(payload, payload_size, 0)
 *   72  u64 created_unix_ns
 *   80  u64 prefill_us        what computing the prefix cost (eviction)
 *   88  u32 flags             0 (unknown bits are refused)
 *   92  u32 reserved          0
 *   96  char fingerprint[64]  exact model fingerprint, lower-case hex
 *   160 char family[64]       family fingerprint, lower-case hex, or all 0
 *   224 char quant[24]        NUL-padded [A-Za-z0-9_.-]{0,23}
 *   248 u64 header_checksum   ds4_hash64(bytes 0..247, 0)
 *
 * Everything read from a file is checked before use; nothing here trusts a
 * length or offset it did not verify. */
#ifndef DS4_KV_FORMAT_H
#define DS4_KV_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#define KV_MAGIC "DS4KVC\0\1"
#define KV_VERSION 1u
#define KV_HDR_SIZE 256u
#define KV_ALIGN 4096u
#define KV_MAX_TOKENS (4u << 20)          /* as the wire's max_tokens */
#define KV_MAX_PAYLOAD (1ull << 40)       /* 1 TiB: refuses hostile sizes */
#define KV_FP_LEN 64
#define KV_QUANT_MAX 23
#define KV_KEY_LEN 33                     /* 16 hex, '-', 16 hex */
#define KV_SUFFIX ".kv"

enum kv_reason {
    KV_REASON_UNKNOWN = 0,
    KV_REASON_COLD = 1,
    KV_REASON_PERIODIC = 2,
    KV_REASON_EVICT = 3,
    KV_REASON_SHUTDOWN = 4,
    KV_REASON_COUNT
};

/* A decoded (or to-be-encoded) header. Strings are NUL-terminated. */
typedef struct kv_hdr {
    uint64_t file_size;
    uint32_t n_tokens;
    uint32_t reason;
    uint64_t payload_offset;
    uint64_t payload_size;
    uint64_t ids_hash;
    uint64_t payload_checksum;
    uint64_t created_unix_ns;
    uint64_t prefill_us;
    char fingerprint[KV_FP_LEN + 1];
    char family[KV_FP_LEN + 1]; /* "" when absent */
    char quant[KV_QUANT_MAX + 1];
} kv_hdr;

/* Streaming form of ds4_hash64 (identical result for any split of the
 * input, given the total length up front). */
typedef struct kv_h64 {
    uint64_t h, total, done;
    uint8_t tail[8];
    unsigned ntail;
} kv_h64;
void kv_h64_init(kv_h64 *s, uint64_t total_len, uint64_t seed);
void kv_h64_update(kv_h64 *s, const void *p, size_t n);
/* The hash; the bytes given must add up to total_len. */
uint64_t kv_h64_final(kv_h64 *s);

/* Prefix hash of token ids: a running state over the ids, so the hash of
 * every prefix length comes out of one pass (kv_index lookup). */
#define KV_IDS_SEED 0x6b76642d69647331ull
static inline uint64_t kv_ids_step(uint64_t h, int32_t id)
{
    h = (h ^ (uint32_t)id) * 0x100000001b3ull;
    return h ^ (h >> 29);
}
uint64_t kv_ids_final(uint64_t h, uint64_t n);
/* kv_ids_final(fold of kv_ids_step from KV_IDS_SEED over ids, n). */
uint64_t kv_ids_hash(const int32_t *ids, size_t n);

/* Offset of the payload after n token ids (4096-aligned). */
uint64_t kv_payload_offset(uint32_t n_tokens);
/* The key of an entry: "<ids_hash 16 hex>-<first 16 hex of fingerprint>". */
void kv_key(uint64_t ids_hash, const char *fingerprint, char out[KV_KEY_LEN + 1]);
/* 1 if name is "<key>.kv" with a well-formed key (key copied to out). */
int kv_name_is_entry(const char *name, char key[KV_KEY_LEN + 1]);

/* Field checks shared with the request handlers. */
int kv_fp_ok(const char *s);     /* exactly 64 of [0-9a-f] */
int kv_quant_ok(const char *s);  /* 0..23 of [A-Za-z0-9_.-] */
const char *kv_reason_name(uint32_t r);
/* Reason by name, or -1. */
int kv_reason_parse(const char *s);

/* Fill the derived fields (payload_offset, file_size) of h from n_tokens
 * and payload_size, then encode it with its checksum. */
void kv_hdr_finish(kv_hdr *h);
void kv_hdr_encode(const kv_hdr *h, uint8_t out[KV_HDR_SIZE]);
/* Decode and check a header: magic, version, sizes and offsets consistent
 * with each other, every field in range, strings well-formed, checksum.
 * Does not know the file's real size (kv_hdr_check_size). 0, or -1 + err. */
int kv_hdr_decode(const uint8_t in[KV_HDR_SIZE], kv_hdr *h, char *err, size_t errlen);
/* The file on disk has exactly the size the header says. 0 or -1 + err. */
int kv_hdr_check_size(const kv_hdr *h, uint64_t file_size, char *err, size_t errlen);

/* Bytes of the ids region including padding (payload_offset - 256). */
uint64_t kv_ids_region(const kv_hdr *h);
/* Check an ids region as read from the file (ids then zero padding) against
 * the header; on success copies the ids (host order) into ids (n_tokens
 * entries) if non-NULL. 0, or -1 + err. */
int kv_ids_check(const kv_hdr *h, const uint8_t *region, size_t len, int32_t *ids, char *err,
                 size_t errlen);

/* A whole file in memory (tests, fuzzing): header, size, ids, payload
 * checksum. On success *payload points into buf. 0, or -1 + err. */
int kv_file_parse(const uint8_t *buf, size_t len, kv_hdr *h, const uint8_t **payload, char *err,
                  size_t errlen);
/* Build a whole file in memory (tests, seed corpus); malloc'd, *len set. */
uint8_t *kv_file_build(const kv_hdr *meta, const int32_t *ids, const void *payload, size_t *len);

/* pread/pwrite that finish the job (EINTR, short transfers). 0 or -1 (errno;
 * a read past the end gives EIO). */
int kv_pread_full(int fd, void *buf, size_t n, uint64_t off);
int kv_pwrite_full(int fd, const void *buf, size_t n, uint64_t off);

/* Read the ids region of an open file and check it (kv_ids_check). */
int kv_read_ids(int fd, const kv_hdr *h, int32_t *ids, char *err, size_t errlen);
/* Read the payload into dest (payload_size bytes) in chunks, hashing each
 * chunk while it is still in cache; -1 + err on an I/O error or a checksum
 * mismatch (*corrupt set to 1 for the latter, and for a short file). */
int kv_read_payload(int fd, const kv_hdr *h, void *dest, int *corrupt, char *err, size_t errlen);

#endif
