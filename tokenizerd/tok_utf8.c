/* tok_utf8.c - UTF-8 classification, replacement decoding, buffers. */
#include "tok_utf8.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Make room for extra more bytes plus a terminating NUL. */
void tok_buf_reserve(tok_buf *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    b->data = ds4_xrealloc(b->data, cap);
    b->cap = cap;
}

/* Append n bytes and keep the buffer NUL-terminated. */
void tok_buf_append(tok_buf *b, const void *p, size_t n)
{
    tok_buf_reserve(b, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

/* Release the storage; the buffer is empty and reusable after. */
void tok_buf_free(tok_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* Append one id, growing geometrically. */
void tok_ids_push(tok_ids *a, uint32_t id)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->v = ds4_xrealloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = id;
}

/* Append n ids. */
void tok_ids_append(tok_ids *a, const uint32_t *ids, size_t n)
{
    if (a->n + n > a->cap) {
        size_t cap = a->cap ? a->cap : 64;
        while (cap < a->n + n)
            cap *= 2;
        a->v = ds4_xrealloc(a->v, cap * sizeof *a->v);
        a->cap = cap;
    }
    if (n)
        memcpy(a->v + a->n, ids, n * sizeof *ids);
    a->n += n;
}

/* Release the storage; the array is empty and reusable after. */
void tok_ids_free(tok_ids *a)
{
    free(a->v);
    memset(a, 0, sizeof *a);
}

/* Table 3-7 of the Unicode standard: the allowed range of the second byte
 * depends on the lead byte (this is what excludes overlongs, surrogates and
 * code points above U+10FFFF); later bytes are always 80..BF. */
int tok_utf8_classify(const uint8_t *s, size_t n)
{
    uint8_t b = s[0];
    if (b < 0x80)
        return 1;
    int need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
        need = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 2;
        if (b == 0xE0)
            lo = 0xA0;
        else if (b == 0xED)
            hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3;
        if (b == 0xF0)
            lo = 0x90;
        else if (b == 0xF4)
            hi = 0x8F;
    } else {
        return -1; /* 80..C1 and F5..FF never start a sequence */
    }
    for (int k = 1; k <= need; k++) {
        if ((size_t)k >= n)
            return 0;
        uint8_t c = s[k];
        if (c < lo || c > hi)
            return -k;
        lo = 0x80;
        hi = 0xBF;
    }
    return need + 1;
}

/* Decode a sequence already known to be well-formed. */
uint32_t tok_utf8_decode(const uint8_t *s, int len)
{
    switch (len) {
    case 1:
        return s[0];
    case 2:
        return ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    case 3:
        return ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) |
               (s[2] & 0x3F);
    default:
        return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
               ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    }
}

/* Standard UTF-8 encoding. */
int tok_utf8_encode(uint32_t c, char *o)
{
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (char)(0xC0 | (c >> 6));
        o[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | (c >> 12));
        o[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (c >> 18));
    o[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* Walk well-formed sequences; ASCII runs take the fast path. */
size_t tok_utf8_valid_prefix(const char *s, size_t n)
{
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            /* skip ASCII eight bytes at a time */
            uint64_t w;
            while (i + 8 <= n && (memcpy(&w, u + i, 8), (w & 0x8080808080808080ull) == 0))
                i += 8;
            while (i < n && u[i] < 0x80)
                i++;
            continue;
        }
        int k = tok_utf8_classify(u + i, n - i);
        if (k <= 0)
            break;
        i += (size_t)k;
    }
    return i;
}

/* Copy valid runs; one U+FFFD per maximal subpart (a truncated tail is a
 * maximal subpart too, as with Python's final decode). */
size_t tok_utf8_sanitize(const char *s, size_t n, tok_buf *out)
{
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0, reps = 0;
    tok_buf_reserve(out, n);
    while (i < n) {
        size_t ok = tok_utf8_valid_prefix(s + i, n - i);
        tok_buf_append(out, s + i, ok);
        i += ok;
        if (i >= n)
            break;
        int k = tok_utf8_classify(u + i, n - i);
        size_t skip = k == 0 ? n - i : (size_t)-k;
        tok_buf_append(out, TOK_UTF8_REPLACEMENT, 3);
        reps++;
        i += skip;
    }
    if (!out->data)
        tok_buf_reserve(out, 0);
    return reps;
}
