/* hash.h - hashes: SHA-256 (OpenSSL libcrypto) for fingerprints and
 * fixtures, and a fast non-cryptographic 64-bit hash (FNV-1a over 8-byte
 * words, then mixed) for checksums of segments and frames. */
#ifndef DS4_HASH_H
#define DS4_HASH_H

#include <stddef.h>
#include <stdint.h>

typedef struct ds4_sha256_ctx {
    void *evp; /* EVP_MD_CTX */
} ds4_sha256_ctx;

void ds4_sha256_init(ds4_sha256_ctx *c);
void ds4_sha256_update(ds4_sha256_ctx *c, const void *data, size_t len);
void ds4_sha256_final(ds4_sha256_ctx *c, uint8_t out[32]);

/* One-shot SHA-256. */
void ds4_sha256(const void *data, size_t len, uint8_t out[32]);

/* Lower-case hex of n bytes into out (2n+1 bytes, NUL-terminated). */
void ds4_hex(const uint8_t *bytes, size_t n, char *out);

/* SHA-256 of a whole file, as 64 hex chars + NUL. 0, or -1 with errno. */
int ds4_sha256_file(const char *path, char out_hex[65]);

/* Fast 64-bit checksum (not cryptographic); seed lets callers chain. */
uint64_t ds4_hash64(const void *data, size_t len, uint64_t seed);

#endif
