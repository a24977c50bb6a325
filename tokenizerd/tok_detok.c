/* tok_detok.c - decoding ids to bytes and streaming UTF-8 assembly. */
#include "tok_detok.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Concatenate the bytes of every id; reject unknown ids up front. */
int tok_decode_bytes(const tok_vocab *v, const uint32_t *ids, size_t n, tok_buf *out,
                     size_t *bad)
{
    size_t total = 0, len;
    for (size_t i = 0; i < n; i++) {
        if (!tok_vocab_bytes(v, ids[i], &len)) {
            if (bad)
                *bad = i;
            return -1;
        }
        total += len;
    }
    tok_buf_reserve(out, total);
    for (size_t i = 0; i < n; i++) {
        const char *b = tok_vocab_bytes(v, ids[i], &len);
        tok_buf_append(out, b, len);
    }
    return 0;
}

/* Decode to bytes, then replace ill-formed sequences. */
int tok_decode_text(const tok_vocab *v, const uint32_t *ids, size_t n, tok_buf *out,
                    size_t *bad)
{
    tok_buf raw = {0};
    int rc = tok_decode_bytes(v, ids, n, &raw, bad);
    if (rc == 0)
        tok_utf8_sanitize(raw.data ? raw.data : "", raw.len, out);
    tok_buf_free(&raw);
    return rc;
}

/* Start a stream with nothing held back. */
void tok_detok_init(tok_detok *d, const tok_vocab *v)
{
    memset(d, 0, sizeof *d);
    d->v = v;
}

/* Emit the complete part of s[0..n), hold a valid incomplete tail. */
static void assemble(tok_detok *d, const uint8_t *s, size_t n, tok_buf *out)
{
    size_t i = 0;
    d->npend = 0;
    while (i < n) {
        size_t ok = tok_utf8_valid_prefix((const char *)s + i, n - i);
        tok_buf_append(out, s + i, ok);
        i += ok;
        if (i >= n)
            break;
        int k = tok_utf8_classify(s + i, n - i);
        if (k == 0) {
            /* truncated: at most 3 bytes, kept for the next token */
            DS4_ASSERT(n - i <= 3);
            memcpy(d->pend, s + i, n - i);
            d->npend = (uint8_t)(n - i);
            return;
        }
        tok_buf_append(out, TOK_UTF8_REPLACEMENT, 3);
        i += (size_t)-k;
    }
}

/* Join the held tail with the token's bytes and emit what is complete. */
int tok_detok_feed(tok_detok *d, uint32_t id, tok_buf *out)
{
    size_t len;
    const char *b = tok_vocab_bytes(d->v, id, &len);
    if (!b)
        return -1;
    if (!d->npend) {
        assemble(d, (const uint8_t *)b, len, out);
        return 0;
    }
    uint8_t small[256];
    size_t n = d->npend + len;
    uint8_t *s = n <= sizeof small ? small : ds4_xmalloc(n);
    memcpy(s, d->pend, d->npend);
    memcpy(s + d->npend, b, len);
    assemble(d, s, n, out);
    if (s != small)
        free(s);
    return 0;
}

/* End of stream: whatever is held can no longer complete. */
void tok_detok_flush(tok_detok *d, tok_buf *out)
{
    if (d->npend)
        tok_buf_append(out, TOK_UTF8_REPLACEMENT, 3);
    d->npend = 0;
}
