/* test_hash.c - SHA-256 against FIPS 180-2 vectors; checksum sensitivity. */
#include "common/hash.h"
#include "test.h"

int main(void)
{
    uint8_t d[32];
    char hex[65];
    ds4_sha256("abc", 3, d);
    ds4_hex(d, 32, hex);
    CHECK(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
    ds4_sha256("", 0, d);
    ds4_hex(d, 32, hex);
    CHECK(strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0);
    /* streaming equals one-shot */
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    ds4_sha256_ctx c;
    ds4_sha256_init(&c);
    for (const char *p = m; *p; p++)
        ds4_sha256_update(&c, p, 1);
    ds4_sha256_final(&c, d);
    ds4_hex(d, 32, hex);
    CHECK(strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1") == 0);
    /* every single-bit flip changes the checksum */
    uint8_t buf[37];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)(i * 7 + 1);
    uint64_t h0 = ds4_hash64(buf, sizeof buf, 0);
    int same = 0;
    for (size_t i = 0; i < sizeof buf * 8; i++) {
        buf[i / 8] ^= (uint8_t)(1u << (i % 8));
        same += ds4_hash64(buf, sizeof buf, 0) == h0;
        buf[i / 8] ^= (uint8_t)(1u << (i % 8));
    }
    CHECK(same == 0);
    CHECK(ds4_hash64(buf, sizeof buf, 1) != h0);
    CHECK(ds4_hash64(buf, sizeof buf - 1, 0) != h0);
    return test_main_end("hash");
}
