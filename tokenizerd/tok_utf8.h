/* tok_utf8.h - UTF-8 helpers for the tokenizer: growable byte and id
 * buffers, decoding one code point, and turning arbitrary bytes into valid
 * UTF-8 the way Python's bytes.decode('utf-8', errors='replace') does (each
 * maximal invalid subpart becomes one U+FFFD, Unicode §3.9). */
#ifndef DS4_TOK_UTF8_H
#define DS4_TOK_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Growable byte buffer; data is always NUL-terminated when cap > 0. */
typedef struct tok_buf {
    char *data;
    size_t len;
    size_t cap;
} tok_buf;

/* Growable array of token ids. */
typedef struct tok_ids {
    uint32_t *v;
    size_t n;
    size_t cap;
} tok_ids;

void tok_buf_reserve(tok_buf *b, size_t extra);
void tok_buf_append(tok_buf *b, const void *p, size_t n);
void tok_buf_free(tok_buf *b);

void tok_ids_push(tok_ids *a, uint32_t id);
void tok_ids_append(tok_ids *a, const uint32_t *ids, size_t n);
void tok_ids_free(tok_ids *a);

/* The UTF-8 encoding of U+FFFD. */
#define TOK_UTF8_REPLACEMENT "\xEF\xBF\xBD"

/* Classify the sequence starting at s[0] (n > 0 bytes available):
 *   > 0  a complete well-formed sequence of that many bytes;
 *   0    a well-formed but truncated prefix (all n bytes belong to it);
 *   < 0  ill-formed: -k means the maximal subpart is k bytes (k >= 1), to be
 *        replaced by one U+FFFD, after which decoding resumes at s[k]. */
int tok_utf8_classify(const uint8_t *s, size_t n);

/* Decode the well-formed sequence of len bytes at s (as classified > 0). */
uint32_t tok_utf8_decode(const uint8_t *s, int len);

/* Encode code point c (<= 0x10FFFF, not a surrogate) into o; returns 1-4. */
int tok_utf8_encode(uint32_t c, char *o);

/* Length of the longest prefix of s that is well-formed UTF-8. */
size_t tok_utf8_valid_prefix(const char *s, size_t n);

/* Append s to out with every maximal ill-formed subpart (including a
 * truncated sequence at the end) replaced by U+FFFD. Returns the number of
 * replacements made. */
size_t tok_utf8_sanitize(const char *s, size_t n, tok_buf *out);

#endif
