/* tok_pretok.h - the DeepSeek V4 pre-tokenizer: HF's Sequence of three
 * Split(Isolated) regexes (each applied to every piece the previous one
 * produced; matches and the gaps between them both become pieces), then
 * ByteLevel without a regex (done by the BPE stage). Compiled with PCRE2
 * (UTF + UCP, JIT when available). HF runs these patterns with Oniguruma,
 * whose \s is Unicode White_Space (U+0085 included, U+180E excluded);
 * PCRE2's \s differs (it also matches U+180E), so \s and \S are spelled
 * out as explicit classes here. Input must be valid UTF-8.
 *
 * A tok_pretok holds match state: one per thread. */
#ifndef DS4_TOK_PRETOK_H
#define DS4_TOK_PRETOK_H

#include <stddef.h>

/* The three patterns exactly as tokenizer.json spells them (after JSON
 * decoding); the JSON loader refuses a file whose pre-tokenizer differs. */
#define TOK_PRETOK_HF_1 "\\p{N}{1,3}"
#define TOK_PRETOK_HF_2 "[\xE4\xB8\x80-\xE9\xBE\xA5\xE3\x81\x80-\xE3\x82\x9F\xE3\x82\xA0-\xE3\x83\xBF]+"
#define TOK_PRETOK_HF_3                                                     \
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|"                 \
    "[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|"   \
    "\\s*[\r\n]+|\\s+(?!\\S)|\\s+"

typedef struct tok_pretok tok_pretok;

/* Called for each piece, in order; return non-zero to stop early. */
typedef int (*tok_piece_fn)(const char *piece, size_t len, void *user);

/* Compile the patterns. NULL + err on failure (a broken PCRE2 build). */
tok_pretok *tok_pretok_new(char *err, size_t errlen);
void tok_pretok_free(tok_pretok *p);

/* Split valid UTF-8 text into pieces. Returns 0, the callback's non-zero
 * value if it stopped, or -1 on a PCRE2 matching error (err filled). */
int tok_pretok_split(tok_pretok *p, const char *text, size_t len,
                     tok_piece_fn fn, void *user, char *err, size_t errlen);

/* The same for text the caller has already checked to be valid UTF-8
 * (the encoder validates once per request, not once per gap). */
int tok_pretok_split_valid(tok_pretok *p, const char *text, size_t len,
                           tok_piece_fn fn, void *user, char *err,
                           size_t errlen);

#endif
