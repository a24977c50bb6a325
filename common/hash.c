/* hash.c - SHA-256 through OpenSSL's EVP interface, and a fast checksum. */
#include "hash.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

void ds4_sha256_init(ds4_sha256_ctx *c)
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    DS4_ASSERT(m != NULL);
    DS4_ASSERT(EVP_DigestInit_ex(m, EVP_sha256(), NULL) == 1);
    c->evp = m;
}

void ds4_sha256_update(ds4_sha256_ctx *c, const void *data, size_t len)
{
    DS4_ASSERT(EVP_DigestUpdate((EVP_MD_CTX *)c->evp, data, len) == 1);
}

void ds4_sha256_final(ds4_sha256_ctx *c, uint8_t out[32])
{
    unsigned int n = 0;
    DS4_ASSERT(EVP_DigestFinal_ex((EVP_MD_CTX *)c->evp, out, &n) == 1 && n == 32);
    EVP_MD_CTX_free((EVP_MD_CTX *)c->evp);
    c->evp = NULL;
}

void ds4_sha256(const void *data, size_t len, uint8_t out[32])
{
    ds4_sha256_ctx c;
    ds4_sha256_init(&c);
    ds4_sha256_update(&c, data, len);
    ds4_sha256_final(&c, out);
}

void ds4_hex(const uint8_t *bytes, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * n] = 0;
}

int ds4_sha256_file(const char *path, char out_hex[65])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ds4_sha256_ctx c;
    ds4_sha256_init(&c);
    static __thread uint8_t buf[1 << 16];
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            uint8_t junk[32];
            ds4_sha256_final(&c, junk);
            close(fd);
            errno = e;
            return -1;
        }
        if (r == 0)
            break;
        ds4_sha256_update(&c, buf, (size_t)r);
    }
    close(fd);
    uint8_t d[32];
    ds4_sha256_final(&c, d);
    ds4_hex(d, 32, out_hex);
    return 0;
}

/* Mix the final state so that nearby inputs spread over all 64 bits. */
static uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

uint64_t ds4_hash64(const void *data, size_t len, uint64_t seed)
{
    const uint8_t *p = data;
    uint64_t h = 0xcbf29ce484222325ULL ^ mix64(seed + len);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ULL;
        h ^= h >> 29;
    }
    for (; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return mix64(h);
}
