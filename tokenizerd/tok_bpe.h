/* tok_bpe.h - text to token ids: HF-compatible added-token splitting, the
 * DeepSeek V4 pre-tokenizer, and byte-level BPE by merge rank.
 *
 *   TOK_MODE_RAW    as HF encode(text, add_special_tokens=False): all added
 *                   tokens (special or not) found in the text become their
 *                   ids (leftmost-longest; non-normalized ones first, then
 *                   normalized ones in the remaining gaps), the rest is BPE.
 *   TOK_MODE_PLAIN  no added-token splitting at all: used for chat message
 *                   content, so "<｜User｜>" typed by a user is plain text.
 *
 * Input bytes need not be valid UTF-8: they are first decoded with
 * replacement exactly like Python's errors="replace" (SPEC §8).
 * A tok_encoder holds caches and scratch space: one per thread; the
 * vocabulary it points to may be shared. */
#ifndef DS4_TOK_BPE_H
#define DS4_TOK_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "tok_utf8.h"
#include "tok_vocab.h"

enum tok_mode { TOK_MODE_RAW = 0, TOK_MODE_PLAIN = 1 };

typedef struct tok_encoder tok_encoder;

/* NULL + err only if the pre-tokenizer cannot be compiled. */
tok_encoder *tok_encoder_new(const tok_vocab *v, char *err, size_t errlen);
void tok_encoder_free(tok_encoder *e);

/* Append the ids of text[0..len) to out. 0, or -1 + err: input over
 * 2 GiB, or an internal regex failure (never for bad bytes). */
int tok_encode(tok_encoder *e, const char *text, size_t len, enum tok_mode mode,
               tok_ids *out, char *err, size_t errlen);

/* BPE of one pre-tokenized piece of raw bytes, appended to out (cached). */
void tok_bpe_piece(tok_encoder *e, const char *piece, size_t len, tok_ids *out);

/* The same result by the plainest algorithm (rescan every pair after each
 * merge), uncached: the test's second opinion. */
void tok_bpe_piece_ref(const tok_vocab *v, const char *piece, size_t len, tok_ids *out);

/* Cache statistics since creation (for the benchmark). */
void tok_encoder_stats(const tok_encoder *e, uint64_t *hits, uint64_t *misses);

#endif
