/* kv_format.c - kvd checkpoint files: header codec, strict checks, ids and
 * payload readers (layout in kv_format.h, docs/KV-FORMAT.md). */
#include "kv_format.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hash.h"
#include "util.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the file format is little-endian; add byte swapping for this host"
#endif

/* ds4_hash64's final mix (same constants, so kv_h64 matches it). */
static uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

void kv_h64_init(kv_h64 *s, uint64_t total_len, uint64_t seed)
{
    memset(s, 0, sizeof *s);
    s->total = total_len;
    s->h = 0xcbf29ce484222325ULL ^ mix64(seed + total_len);
}

/* Fold 8-byte words; the word loop is ds4_hash64's. */
static uint64_t fold_words(uint64_t h, const uint8_t *p, size_t nwords)
{
    for (size_t i = 0; i < nwords; i++) {
        uint64_t w;
        memcpy(&w, p + 8 * i, 8);
        h = (h ^ w) * 0x100000001b3ULL;
        h ^= h >> 29;
    }
    return h;
}

void kv_h64_update(kv_h64 *s, const void *data, size_t n)
{
    const uint8_t *p = data;
    s->done += n;
    if (s->ntail) {
        size_t take = 8 - s->ntail < n ? 8 - s->ntail : n;
        memcpy(s->tail + s->ntail, p, take);
        s->ntail += (unsigned)take;
        p += take;
        n -= take;
        if (s->ntail < 8)
            return;
        s->h = fold_words(s->h, s->tail, 1);
        s->ntail = 0;
    }
    size_t words = n / 8;
    s->h = fold_words(s->h, p, words);
    p += words * 8;
    n -= words * 8;
    memcpy(s->tail, p, n);
    s->ntail = (unsigned)n;
}

uint64_t kv_h64_final(kv_h64 *s)
{
    DS4_ASSERT(s->done == s->total);
    uint64_t h = s->h;
    for (unsigned i = 0; i < s->ntail; i++)
        h = (h ^ s->tail[i]) * 0x100000001b3ULL;
    return mix64(h);
}

uint64_t kv_ids_final(uint64_t h, uint64_t n)
{
    return mix64(h ^ (n * 0x9e3779b97f4a7c15ull));
}

uint64_t kv_ids_hash(const int32_t *ids, size_t n)
{
    uint64_t h = KV_IDS_SEED;
    for (size_t i = 0; i < n; i++)
        h = kv_ids_step(h, ids[i]);
    return kv_ids_final(h, n);
}

uint64_t kv_payload_offset(uint32_t n_tokens)
{
    uint64_t end = KV_HDR_SIZE + 4ull * n_tokens;
    return (end + KV_ALIGN - 1) / KV_ALIGN * KV_ALIGN;
}

static int is_hex_lower(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

void kv_key(uint64_t ids_hash, const char *fingerprint, char out[KV_KEY_LEN + 1])
{
    snprintf(out, KV_KEY_LEN + 1, "%016llx-%.16s", (unsigned long long)ids_hash, fingerprint);
}

int kv_name_is_entry(const char *name, char key[KV_KEY_LEN + 1])
{
    size_t n = strlen(name);
    if (n != KV_KEY_LEN + strlen(KV_SUFFIX) || strcmp(name + KV_KEY_LEN, KV_SUFFIX))
        return 0;
    for (int i = 0; i < KV_KEY_LEN; i++) {
        if (i == 16 ? name[i] != '-' : !is_hex_lower(name[i]))
            return 0;
    }
    if (key) {
        memcpy(key, name, KV_KEY_LEN);
        key[KV_KEY_LEN] = 0;
    }
    return 1;
}

int kv_fp_ok(const char *s)
{
    if (!s)
        return 0;
    for (int i = 0; i < KV_FP_LEN; i++)
        if (!is_hex_lower(s[i]))
            return 0;
    return s[KV_FP_LEN] == 0;
}

static int quant_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == '-';
}

int kv_quant_ok(const char *s)
{
    if (!s)
        return 0;
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= KV_QUANT_MAX || !quant_char_ok(s[n]))
            return 0;
    return 1;
}

static const char *const REASONS[KV_REASON_COUNT] = {"unknown", "cold", "periodic", "evict",
                                                      "shutdown"};

const char *kv_reason_name(uint32_t r)
{
    return r < KV_REASON_COUNT ? REASONS[r] : "?";
}

int kv_reason_parse(const char *s)
{
    for (int i = 0; s && i < KV_REASON_COUNT; i++)
        if (!strcmp(s, REASONS[i]))
            return i;
    return -1;
}

static void put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}
static void put64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}
static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

void kv_hdr_finish(kv_hdr *h)
{
    h->payload_offset = kv_payload_offset(h->n_tokens);
    h->file_size = h->payload_offset + h->payload_size;
}

void kv_hdr_encode(const kv_hdr *h, uint8_t out[KV_HDR_SIZE])
{
    memset(out, 0, KV_HDR_SIZE);
    memcpy(out, KV_MAGIC, 8);
    put32(out + 8, KV_VERSION);
    put32(out + 12, KV_HDR_SIZE);
    put64(out + 16, h->file_size);
    put32(out + 24, h->n_tokens);
    put32(out + 28, h->reason);
    put64(out + 32, KV_HDR_SIZE);
    put64(out + 40, h->payload_offset);
    put64(out + 48, h->payload_size);
    put64(out + 56, h->ids_hash);
    put64(out + 64, h->payload_checksum);
    put64(out + 72, h->created_unix_ns);
    put64(out + 80, h->prefill_us);
    memcpy(out + 96, h->fingerprint, strnlen(h->fingerprint, KV_FP_LEN));
    memcpy(out + 160, h->family, strnlen(h->family, KV_FP_LEN));
    memcpy(out + 224, h->quant, strnlen(h->quant, KV_QUANT_MAX));
    put64(out + 248, ds4_hash64(out, 248, 0));
}

/* A fixed-width string field: its content up to the first NUL, nothing
 * but NULs after it. 0 ok (copied into out, NUL-terminated), -1 if not. */
static int get_str(const uint8_t *p, size_t width, char *out)
{
    size_t n = strnlen((const char *)p, width);
    for (size_t i = n; i < width; i++)
        if (p[i])
            return -1;
    memcpy(out, p, n);
    out[n] = 0;
    return 0;
}

int kv_hdr_decode(const uint8_t in[KV_HDR_SIZE], kv_hdr *h, char *err, size_t errlen)
{
    memset(h, 0, sizeof *h);
    if (memcmp(in, KV_MAGIC, 8)) {
        ds4_seterr(err, errlen, "not a kvd checkpoint (bad magic)");
        return -1;
    }
    if (get32(in + 8) != KV_VERSION) {
        ds4_seterr(err, errlen, "unsupported version %u (this build reads %u)", get32(in + 8),
                   KV_VERSION);
        return -1;
    }
    if (get32(in + 12) != KV_HDR_SIZE || get64(in + 32) != KV_HDR_SIZE) {
        ds4_seterr(err, errlen, "bad header size or ids offset");
        return -1;
    }
    if (get64(in + 248) != ds4_hash64(in, 248, 0)) {
        ds4_seterr(err, errlen, "header checksum mismatch");
        return -1;
    }
    h->file_size = get64(in + 16);
    h->n_tokens = get32(in + 24);
    h->reason = get32(in + 28);
    h->payload_offset = get64(in + 40);
    h->payload_size = get64(in + 48);
    h->ids_hash = get64(in + 56);
    h->payload_checksum = get64(in + 64);
    h->created_unix_ns = get64(in + 72);
    h->prefill_us = get64(in + 80);
    if (h->n_tokens < 1 || h->n_tokens > KV_MAX_TOKENS) {
        ds4_seterr(err, errlen, "token count %u out of range (1..%u)", h->n_tokens,
                   KV_MAX_TOKENS);
        return -1;
    }
    if (h->reason >= KV_REASON_COUNT) {
        ds4_seterr(err, errlen, "unknown reason %u", h->reason);
        return -1;
    }
    if (h->payload_offset != kv_payload_offset(h->n_tokens)) {
        ds4_seterr(err, errlen, "payload offset %llu, expected %llu",
                   (unsigned long long)h->payload_offset,
                   (unsigned long long)kv_payload_offset(h->n_tokens));
        return -1;
    }
    if (h->payload_size > KV_MAX_PAYLOAD ||
        h->file_size != h->payload_offset + h->payload_size) {
        ds4_seterr(err, errlen, "payload size %llu and file size %llu disagree",
                   (unsigned long long)h->payload_size, (unsigned long long)h->file_size);
        return -1;
    }
    if (get32(in + 88) != 0 || get32(in + 92) != 0) {
        ds4_seterr(err, errlen, "unknown flags or reserved bits set");
        return -1;
    }
    if (get_str(in + 96, KV_FP_LEN, h->fingerprint) || !kv_fp_ok(h->fingerprint)) {
        ds4_seterr(err, errlen, "bad model fingerprint");
        return -1;
    }
    if (get_str(in + 160, KV_FP_LEN, h->family) || (h->family[0] && !kv_fp_ok(h->family))) {
        ds4_seterr(err, errlen, "bad family fingerprint");
        return -1;
    }
    if (in[224 + KV_QUANT_MAX] != 0 || get_str(in + 224, KV_QUANT_MAX + 1, h->quant) ||
        !kv_quant_ok(h->quant)) {
        ds4_seterr(err, errlen, "bad quant name");
        return -1;
    }
    return 0;
}

int kv_hdr_check_size(const kv_hdr *h, uint64_t file_size, char *err, size_t errlen)
{
    if (file_size == h->file_size)
        return 0;
    ds4_seterr(err, errlen, "%s: %llu bytes, header says %llu",
               file_size < h->file_size ? "truncated" : "trailing data",
               (unsigned long long)file_size, (unsigned long long)h->file_size);
    return -1;
}

uint64_t kv_ids_region(const kv_hdr *h)
{
    return h->payload_offset - KV_HDR_SIZE;
}

int kv_ids_check(const kv_hdr *h, const uint8_t *region, size_t len, int32_t *ids, char *err,
                 size_t errlen)
{
    if (len != kv_ids_region(h)) {
        ds4_seterr(err, errlen, "ids region of %zu bytes, expected %llu", len,
                   (unsigned long long)kv_ids_region(h));
        return -1;
    }
    size_t nb = 4ull * h->n_tokens;
    for (size_t i = nb; i < len; i++)
        if (region[i]) {
            ds4_seterr(err, errlen, "non-zero padding after the token ids");
            return -1;
        }
    uint64_t s = KV_IDS_SEED;
    for (size_t i = 0; i < h->n_tokens; i++) {
        int32_t id = (int32_t)get32(region + 4 * i);
        if (id < 0) {
            ds4_seterr(err, errlen, "negative token id at %zu", i);
            return -1;
        }
        s = kv_ids_step(s, id);
        if (ids)
            ids[i] = id;
    }
    if (kv_ids_final(s, h->n_tokens) != h->ids_hash) {
        ds4_seterr(err, errlen, "token ids do not match their hash");
        return -1;
    }
    return 0;
}

int kv_file_parse(const uint8_t *buf, size_t len, kv_hdr *h, const uint8_t **payload, char *err,
                  size_t errlen)
{
    *payload = NULL;
    if (len < KV_HDR_SIZE) {
        ds4_seterr(err, errlen, "truncated: %zu bytes, no room for a header", len);
        return -1;
    }
    if (kv_hdr_decode(buf, h, err, errlen) || kv_hdr_check_size(h, len, err, errlen))
        return -1;
    if (kv_ids_check(h, buf + KV_HDR_SIZE, (size_t)kv_ids_region(h), NULL, err, errlen))
        return -1;
    const uint8_t *p = buf + h->payload_offset;
    if (ds4_hash64(p, (size_t)h->payload_size, 0) != h->payload_checksum) {
        ds4_seterr(err, errlen, "payload checksum mismatch");
        return -1;
    }
    *payload = p;
    return 0;
}

uint8_t *kv_file_build(const kv_hdr *meta, const int32_t *ids, const void *payload, size_t *len)
{
    kv_hdr h = *meta;
    h.ids_hash = kv_ids_hash(ids, h.n_tokens);
    h.payload_checksum = ds4_hash64(payload, (size_t)h.payload_size, 0);
    kv_hdr_finish(&h);
    uint8_t *b = ds4_xcalloc(1, (size_t)h.file_size);
    kv_hdr_encode(&h, b);
    for (uint32_t i = 0; i < h.n_tokens; i++)
        put32(b + KV_HDR_SIZE + 4 * i, (uint32_t)ids[i]);
    if (h.payload_size)
        memcpy(b + h.payload_offset, payload, (size_t)h.payload_size);
    *len = (size_t)h.file_size;
    return b;
}

int kv_pread_full(int fd, void *buf, size_t n, uint64_t off)
{
    uint8_t *p = buf;
    while (n) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0) {
            errno = EIO;
            return -1;
        }
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

int kv_pwrite_full(int fd, const void *buf, size_t n, uint64_t off)
{
    const uint8_t *p = buf;
    while (n) {
        ssize_t r = pwrite(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0) {
            errno = ENOSPC;
            return -1;
        }
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

int kv_read_ids(int fd, const kv_hdr *h, int32_t *ids, char *err, size_t errlen)
{
    size_t len = (size_t)kv_ids_region(h);
    uint8_t *region = ds4_xmalloc(len);
    int rc = -1;
    if (kv_pread_full(fd, region, len, KV_HDR_SIZE))
        ds4_seterr(err, errlen, "reading token ids: %s", strerror(errno));
    else
        rc = kv_ids_check(h, region, len, ids, err, errlen);
    free(region);
    return rc;
}

/* Bytes read (and hashed) per step: large enough for few syscalls, small
 * enough to still be in cache when hashed. */
#define KV_READ_CHUNK (2u << 20)

int kv_read_payload(int fd, const kv_hdr *h, void *dest, int *corrupt, char *err, size_t errlen)
{
    *corrupt = 0;
    kv_h64 hs;
    kv_h64_init(&hs, h->payload_size, 0);
    uint8_t *p = dest;
    uint64_t left = h->payload_size, off = h->payload_offset;
    while (left) {
        size_t n = left < KV_READ_CHUNK ? (size_t)left : KV_READ_CHUNK;
        if (kv_pread_full(fd, p, n, off)) {
            *corrupt = errno == EIO;
            ds4_seterr(err, errlen, "reading payload: %s", strerror(errno));
            return -1;
        }
        kv_h64_update(&hs, p, n);
        p += n;
        off += n;
        left -= n;
    }
    if (kv_h64_final(&hs) != h->payload_checksum) {
        *corrupt = 1;
        ds4_seterr(err, errlen, "payload checksum mismatch");
        return -1;
    }
    return 0;
}
