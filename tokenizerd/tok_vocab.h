/* tok_vocab.h - the DeepSeek V4 byte-level BPE vocabulary: token strings,
 * merge ranks and the added tokens (the 1283 strings HF splits out before
 * BPE), loaded from GGUF metadata (tokenizer.ggml.*) or from a HF
 * tokenizer.json. The object is immutable after loading and may be shared
 * by any number of threads; encoders and detokenizers keep their own state.
 *
 * Token texts are stored as in the source: normal tokens in the GPT-2
 * byte-to-unicode form ("Ġthe"), added tokens literally ("<｜User｜>").
 * Added tokens are found by string, never by id. */
#ifndef DS4_TOK_VOCAB_H
#define DS4_TOK_VOCAB_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

/* Token kinds, numbered like GGUF's tokenizer.ggml.token_type. */
enum tok_type {
    TOK_T_NONE = 0,    /* an id no source defined (a hole) */
    TOK_T_NORMAL = 1,  /* model vocabulary (also GGUF types 2, 5, 6) */
    TOK_T_CONTROL = 3, /* added token, special: true */
    TOK_T_USER = 4,    /* added token, special: false */
};

/* Byte trie over the added tokens of one matching pass. */
typedef struct tok_trie {
    uint32_t n_nodes;
    int32_t *term;       /* per node: id of the token ending here, or -1 */
    uint32_t *ekey;      /* edge table: (node << 8 | byte) + 1, 0 = empty */
    uint32_t *eval;      /* child node of each edge */
    uint32_t emask;
    uint8_t first[256];  /* 1 if some token starts with this byte */
    uint32_t n_tokens;
} tok_trie;

/* One slot of the merge table. */
typedef struct tok_merge {
    uint64_t key;          /* left << 32 | right, UINT64_MAX = empty */
    uint32_t rank;
    uint32_t merged;
} tok_merge;

typedef struct tok_vocab {
    uint32_t n;            /* ids are 0 .. n-1 */
    uint8_t *type;         /* enum tok_type per id */
    char *text;            /* pool of token texts (each NUL-terminated) */
    uint32_t *text_off;
    uint32_t *text_len;
    char *bytes;           /* pool of decoded bytes of each token */
    uint32_t *bytes_off;
    uint32_t *bytes_len;
    /* token text -> id, open addressing (value id + 1, 0 = empty) */
    uint32_t *map;
    uint32_t map_mask;
    /* merge (left id, right id) -> rank and merged id; one 16-byte entry
     * per slot so a probe touches one cache line */
    tok_merge *merges;
    uint32_t mmask;
    uint32_t n_merges;
    uint32_t byte_id[256]; /* id of the one-character token of each byte */
    /* added tokens: pass 0 holds those matched on the raw text
     * (normalized: false), pass 1 the normalized ones, as HF does */
    tok_trie added[2];
    uint32_t n_added;
    char pre[64];          /* pre-tokenizer name from the source, if any */
} tok_vocab;

/* Load from an opened GGUF: tokenizer.ggml.tokens, .merges, .token_type.
 * Types 3 (control) and 4 (user-defined) are the added tokens; control ones
 * are matched in pass 0, user-defined ones in pass 1 (tokenizer.json's
 * normalized flag is not in GGUF; for this vocabulary the split is the
 * same either way). token_type is required. 0, or -1 + err. */
int tok_vocab_from_gguf(const gguf_file *f, tok_vocab **out, char *err,
                        size_t errlen);

/* Load from the text of a tokenizer.json (len bytes). 0, or -1 + err. */
int tok_vocab_from_json(const char *json, size_t len, tok_vocab **out,
                        char *err, size_t errlen);

/* Load a tokenizer.json file. 0, or -1 + err. */
int tok_vocab_from_json_file(const char *path, tok_vocab **out, char *err,
                             size_t errlen);

void tok_vocab_free(tok_vocab *v);

/* Id of the token whose stored text is s[0..len), or -1. */
int32_t tok_vocab_lookup(const tok_vocab *v, const char *s, size_t len);

/* Id of the added token whose literal text is s (NUL-terminated), or -1. */
int32_t tok_vocab_added(const tok_vocab *v, const char *s);

/* Length of the longest added token of pass `pass` that starts at s[0]
 * within n bytes (0 if none); its id in *id. */
size_t tok_vocab_match_added(const tok_vocab *v, int pass, const char *s,
                             size_t n, uint32_t *id);

/* 1 for added tokens (control or user-defined). */
static inline int tok_vocab_is_added(const tok_vocab *v, uint32_t id)
{
    return id < v->n && (v->type[id] == TOK_T_CONTROL || v->type[id] == TOK_T_USER);
}

/* The bytes a token stands for (added tokens: their literal text); NULL
 * for an id out of range or a hole. */
static inline const char *tok_vocab_bytes(const tok_vocab *v, uint32_t id,
                                          size_t *len)
{
    if (id >= v->n || v->type[id] == TOK_T_NONE) {
        *len = 0;
        return NULL;
    }
    *len = v->bytes_len[id];
    return v->bytes + v->bytes_off[id];
}

/* The stored text of a token (NUL-terminated), NULL when out of range. */
static inline const char *tok_vocab_text(const tok_vocab *v, uint32_t id)
{
    return id < v->n && v->type[id] != TOK_T_NONE ? v->text + v->text_off[id] : NULL;
}

/* Rank and result of merging the adjacent tokens (a, b); 0 if no merge. */
static inline int tok_vocab_merge(const tok_vocab *v, uint32_t a, uint32_t b,
                                  uint32_t *rank, uint32_t *merged)
{
    uint64_t key = (uint64_t)a << 32 | b;
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    uint32_t i = (uint32_t)(h >> 32) & v->mmask;
    for (;;) {
        uint64_t k = v->merges[i].key;
        if (k == key) {
            *rank = v->merges[i].rank;
            *merged = v->merges[i].merged;
            return 1;
        }
        if (k == UINT64_MAX)
            return 0;
        i = (i + 1) & v->mmask;
    }
}

#endif
