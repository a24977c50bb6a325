/* tok_detok.h - token ids back to text. Normal tokens map their byte-level
 * characters back to bytes; added tokens stand for their literal text.
 * The incremental detokenizer is fed one id at a time (as a model samples
 * them) and emits only whole UTF-8 sequences: an incomplete tail is held
 * until the next token completes it, a sequence that can no longer become
 * valid is emitted as U+FFFD at once, and flush turns a leftover tail into
 * U+FFFD. The concatenation of everything emitted therefore equals the
 * replacement decoding (Python errors="replace", HF decode) of all bytes. */
#ifndef DS4_TOK_DETOK_H
#define DS4_TOK_DETOK_H

#include <stddef.h>
#include <stdint.h>

#include "tok_utf8.h"
#include "tok_vocab.h"

/* Append the raw bytes of ids to out (may be invalid UTF-8 when a
 * character is split across an id list's end). -1 (with the offending
 * index in *bad) on an id outside the vocabulary; out is then unchanged. */
int tok_decode_bytes(const tok_vocab *v, const uint32_t *ids, size_t n, tok_buf *out,
                     size_t *bad);

/* As tok_decode_bytes, but the result is valid UTF-8 (replacement). */
int tok_decode_text(const tok_vocab *v, const uint32_t *ids, size_t n, tok_buf *out,
                    size_t *bad);

typedef struct tok_detok {
    const tok_vocab *v;
    uint8_t pend[4];  /* a well-formed but incomplete sequence */
    uint8_t npend;
} tok_detok;

void tok_detok_init(tok_detok *d, const tok_vocab *v);

/* Feed one id; append what became complete to out. -1 for an id outside
 * the vocabulary (nothing appended, state unchanged). */
int tok_detok_feed(tok_detok *d, uint32_t id, tok_buf *out);

/* End of stream: a held incomplete tail becomes one U+FFFD. */
void tok_detok_flush(tok_detok *d, tok_buf *out);

/* Number of bytes currently held back. */
static inline size_t tok_detok_pending(const tok_detok *d)
{
    return d->npend;
}

#endif
