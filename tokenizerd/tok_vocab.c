/* tok_vocab.c - loading the BPE vocabulary, merges and added tokens from
 * GGUF metadata or tokenizer.json, and the lookup structures built on them.
 * Both sources are untrusted: every count, length and reference is checked
 * and reported, never asserted. */
#include "tok_vocab.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_pretok.h"
#include "tok_utf8.h"
#include "util.h"

#define TOK_MAX_IDS (1u << 24)        /* far above any real vocabulary */
#define TOK_MAX_ADDED_BYTES (1u << 23) /* keeps trie node ids in 24 bits */

/* A vocabulary as either loader sees it, before the tables are built. */
typedef struct vsrc {
    uint32_t n;
    const char **s;      /* text of each id (NULL for a hole) */
    uint32_t *len;
    uint8_t *type;       /* enum tok_type */
    uint8_t *norm;       /* added token matched on normalized text */
    uint32_t n_merges;
    const char **ma, **mb;
    uint32_t *mal, *mbl;
} vsrc;

/* printf into the caller's error buffer. */
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* GPT-2's byte-to-unicode map: printable Latin-1 bytes stand for
 * themselves, the other 68 bytes take code points 256.. in byte order. */
static uint32_t byte_to_cp(int b)
{
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))
        return (uint32_t)b;
    uint32_t k = 0;
    for (int c = 0; c < b; c++)
        if (!((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF)))
            k++;
    return 256 + k;
}

/* FNV-1a; only used while loading and for rare lookups by string. */
static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Table capacity: a power of two >= n (and >= 16). */
static uint32_t pow2_at_least(uint64_t n)
{
    uint32_t c = 16;
    while (c < n)
        c *= 2;
    return c;
}

/* Id of stored text s, or -1. */
int32_t tok_vocab_lookup(const tok_vocab *v, const char *s, size_t len)
{
    uint32_t i = (uint32_t)hash_bytes(s, len) & v->map_mask;
    for (;;) {
        uint32_t e = v->map[i];
        if (!e)
            return -1;
        uint32_t id = e - 1;
        if (v->text_len[id] == len && memcmp(v->text + v->text_off[id], s, len) == 0)
            return (int32_t)id;
        i = (i + 1) & v->map_mask;
    }
}

/* Insert id under its text unless the text is already present. */
static void map_insert(tok_vocab *v, uint32_t id)
{
    const char *s = v->text + v->text_off[id];
    uint32_t len = v->text_len[id];
    uint32_t i = (uint32_t)hash_bytes(s, len) & v->map_mask;
    for (;;) {
        uint32_t e = v->map[i];
        if (!e) {
            v->map[i] = id + 1;
            return;
        }
        if (v->text_len[e - 1] == len && memcmp(v->text + v->text_off[e - 1], s, len) == 0)
            return;
        i = (i + 1) & v->map_mask;
    }
}

/* Set (or overwrite, as HF's map does for a repeated pair) a merge. */
static void merge_insert(tok_vocab *v, uint32_t a, uint32_t b, uint32_t rank,
                         uint32_t merged)
{
    uint64_t key = (uint64_t)a << 32 | b;
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    uint32_t i = (uint32_t)(h >> 32) & v->mmask;
    while (v->merges[i].key != UINT64_MAX && v->merges[i].key != key)
        i = (i + 1) & v->mmask;
    v->merges[i] = (tok_merge){key, rank, merged};
}

/* Child of node for byte c in the trie, or 0 (the root is never a child). */
static uint32_t trie_child(const tok_trie *t, uint32_t node, uint8_t c)
{
    uint32_t key = (node << 8 | c) + 1;
    uint32_t i = (key * 0x9E3779B1u >> 7) & t->emask;
    for (;;) {
        uint32_t k = t->ekey[i];
        if (k == key)
            return t->eval[i];
        if (!k)
            return 0;
        i = (i + 1) & t->emask;
    }
}

/* Add one added token's text to a trie (first id wins on duplicates). */
static void trie_add(tok_trie *t, const char *s, uint32_t len, uint32_t id)
{
    uint32_t node = 0;
    for (uint32_t k = 0; k < len; k++) {
        uint8_t c = (uint8_t)s[k];
        uint32_t child = trie_child(t, node, c);
        if (!child) {
            child = t->n_nodes++;
            t->term[child] = -1;
            uint32_t key = (node << 8 | c) + 1;
            uint32_t i = (key * 0x9E3779B1u >> 7) & t->emask;
            while (t->ekey[i])
                i = (i + 1) & t->emask;
            t->ekey[i] = key;
            t->eval[i] = child;
        }
        node = child;
    }
    if (t->term[node] < 0)
        t->term[node] = (int32_t)id;
    t->first[(uint8_t)s[0]] = 1;
    t->n_tokens++;
}

/* Allocate a trie with room for total_bytes nodes beyond the root. */
static void trie_init(tok_trie *t, uint64_t total_bytes)
{
    memset(t, 0, sizeof *t);
    t->term = ds4_xmalloc((total_bytes + 1) * sizeof *t->term);
    t->term[0] = -1;
    t->n_nodes = 1;
    uint32_t cap = pow2_at_least(total_bytes * 2 + 2);
    t->ekey = ds4_xcalloc(cap, sizeof *t->ekey);
    t->eval = ds4_xcalloc(cap, sizeof *t->eval);
    t->emask = cap - 1;
}

/* Release a trie built by trie_init. */
static void trie_free(tok_trie *t)
{
    free(t->term);
    free(t->ekey);
    free(t->eval);
    memset(t, 0, sizeof *t);
}

/* Longest token of the pass starting at s[0]. */
size_t tok_vocab_match_added(const tok_vocab *v, int pass, const char *s,
                             size_t n, uint32_t *id)
{
    const tok_trie *t = &v->added[pass];
    if (!n || !t->first[(uint8_t)s[0]])
        return 0;
    uint32_t node = 0;
    size_t best = 0;
    for (size_t k = 0; k < n; k++) {
        node = trie_child(t, node, (uint8_t)s[k]);
        if (!node)
            break;
        if (t->term[node] >= 0) {
            best = k + 1;
            *id = (uint32_t)t->term[node];
        }
    }
    return best;
}

/* Exact lookup of an added token in either pass. */
int32_t tok_vocab_added(const tok_vocab *v, const char *s)
{
    size_t n = strlen(s);
    for (int pass = 0; pass < 2; pass++) {
        uint32_t id;
        if (n && tok_vocab_match_added(v, pass, s, n, &id) == n)
            return (int32_t)id;
    }
    return -1;
}

/* Decode a normal token's byte-level text to bytes; a token with a
 * character outside the map stands for its literal text (as HF's ByteLevel
 * decoder does). Returns the decoded length written to out. */
static uint32_t decode_bytelevel(const char *s, uint32_t len, const int16_t *cp_byte,
                                 char *out)
{
    const uint8_t *u = (const uint8_t *)s;
    uint32_t i = 0, o = 0;
    while (i < len) {
        int k = tok_utf8_classify(u + i, len - i);
        if (k <= 0)
            break;
        uint32_t cp = tok_utf8_decode(u + i, k);
        if (cp >= 0x144 || cp_byte[cp] < 0)
            break;
        out[o++] = (char)cp_byte[cp];
        i += (uint32_t)k;
    }
    if (i == len)
        return o;
    memcpy(out, s, len);
    return len;
}

/* Copy texts into pools and compute each token's decoded bytes. */
static int build_texts(tok_vocab *v, const vsrc *src, char *err, size_t errlen)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i < src->n; i++)
        if (src->s[i])
            total += src->len[i] + 1;
    if (total >= UINT32_MAX)
        return fail(err, errlen, "tokenizer: token texts total %llu bytes, too large",
                    (unsigned long long)total);
    int16_t cp_byte[0x144];
    for (int c = 0; c < 0x144; c++)
        cp_byte[c] = -1;
    for (int b = 0; b < 256; b++)
        cp_byte[byte_to_cp(b)] = (int16_t)b;
    v->text = ds4_xmalloc(total + 1);
    v->bytes = ds4_xmalloc(total + 1);
    uint32_t off = 0, boff = 0;
    for (uint32_t i = 0; i < src->n; i++) {
        v->type[i] = src->s[i] ? src->type[i] : TOK_T_NONE;
        v->text_off[i] = off;
        v->bytes_off[i] = boff;
        if (!src->s[i])
            continue;
        uint32_t len = src->len[i];
        memcpy(v->text + off, src->s[i], len);
        v->text[off + len] = 0;
        v->text_len[i] = len;
        off += len + 1;
        if (tok_vocab_is_added(v, i)) {
            memcpy(v->bytes + boff, src->s[i], len);
            v->bytes_len[i] = len;
        } else {
            v->bytes_len[i] = decode_bytelevel(src->s[i], len, cp_byte, v->bytes + boff);
        }
        boff += v->bytes_len[i];
    }
    return 0;
}

/* Hash every token: model vocabulary first so that a merge result always
 * resolves to a model token even if an added token has the same text. */
static void build_map(tok_vocab *v)
{
    uint32_t cap = pow2_at_least((uint64_t)v->n * 2);
    v->map = ds4_xcalloc(cap, sizeof *v->map);
    v->map_mask = cap - 1;
    for (uint32_t i = 0; i < v->n; i++)
        if (v->type[i] == TOK_T_NORMAL)
            map_insert(v, i);
    for (uint32_t i = 0; i < v->n; i++)
        if (tok_vocab_is_added(v, i))
            map_insert(v, i);
}

/* Resolve each merge "a b" to ids and the id of "ab"; HF refuses a file
 * whose merge parts or results are missing from the vocabulary, so do we. */
static int build_merges(tok_vocab *v, const vsrc *src, char *err, size_t errlen)
{
    uint32_t cap = pow2_at_least((uint64_t)src->n_merges * 2);
    v->merges = ds4_xmalloc(cap * sizeof *v->merges);
    for (uint32_t i = 0; i < cap; i++)
        v->merges[i] = (tok_merge){UINT64_MAX, 0, 0};
    v->mmask = cap - 1;
    v->n_merges = src->n_merges;
    char *cat = NULL;
    size_t catcap = 0;
    int rc = 0;
    for (uint32_t r = 0; r < src->n_merges && rc == 0; r++) {
        int32_t a = tok_vocab_lookup(v, src->ma[r], src->mal[r]);
        int32_t b = tok_vocab_lookup(v, src->mb[r], src->mbl[r]);
        size_t cl = (size_t)src->mal[r] + src->mbl[r];
        if (cl > catcap) {
            catcap = cl * 2;
            cat = ds4_xrealloc(cat, catcap);
        }
        memcpy(cat, src->ma[r], src->mal[r]);
        memcpy(cat + src->mal[r], src->mb[r], src->mbl[r]);
        int32_t m = tok_vocab_lookup(v, cat, cl);
        if (a < 0 || b < 0 || m < 0)
            rc = fail(err, errlen, "tokenizer: merge %u ('%.*s' '%.*s') refers to a "
                      "token missing from the vocabulary", r, (int)(src->mal[r] > 40 ? 40 : src->mal[r]),
                      src->ma[r], (int)(src->mbl[r] > 40 ? 40 : src->mbl[r]), src->mb[r]);
        else
            merge_insert(v, (uint32_t)a, (uint32_t)b, r, (uint32_t)m);
    }
    free(cat);
    return rc;
}

/* Two tries: pass 0 (raw text) and pass 1 (normalized text). */
static int build_added(tok_vocab *v, const vsrc *src, char *err, size_t errlen)
{
    uint64_t total[2] = {0, 0};
    for (uint32_t i = 0; i < v->n; i++)
        if (tok_vocab_is_added(v, i))
            total[src->norm[i] ? 1 : 0] += v->text_len[i];
    if (total[0] + total[1] > TOK_MAX_ADDED_BYTES)
        return fail(err, errlen, "tokenizer: added tokens total %llu bytes, too large",
                    (unsigned long long)(total[0] + total[1]));
    trie_init(&v->added[0], total[0]);
    trie_init(&v->added[1], total[1]);
    for (uint32_t i = 0; i < v->n; i++) {
        if (!tok_vocab_is_added(v, i) || v->text_len[i] == 0)
            continue;
        trie_add(&v->added[src->norm[i] ? 1 : 0], v->text + v->text_off[i],
                 v->text_len[i], i);
        v->n_added++;
    }
    return 0;
}

/* Find the one-character token of every byte (BPE starts from these). */
static int build_bytes(tok_vocab *v, char *err, size_t errlen)
{
    for (int b = 0; b < 256; b++) {
        char u[4];
        int k = tok_utf8_encode(byte_to_cp(b), u);
        int32_t id = tok_vocab_lookup(v, u, (size_t)k);
        if (id < 0 || v->type[id] != TOK_T_NORMAL)
            return fail(err, errlen, "tokenizer: no vocabulary token for byte 0x%02x", b);
        v->byte_id[b] = (uint32_t)id;
    }
    return 0;
}

/* Build every table from a source description. */
static int vocab_build(const vsrc *src, tok_vocab **out, char *err, size_t errlen)
{
    if (src->n == 0 || src->n > TOK_MAX_IDS)
        return fail(err, errlen, "tokenizer: vocabulary size %u out of range", src->n);
    tok_vocab *v = ds4_xcalloc(1, sizeof *v);
    v->n = src->n;
    v->type = ds4_xcalloc(v->n, 1);
    v->text_off = ds4_xcalloc(v->n, sizeof(uint32_t));
    v->text_len = ds4_xcalloc(v->n, sizeof(uint32_t));
    v->bytes_off = ds4_xcalloc(v->n, sizeof(uint32_t));
    v->bytes_len = ds4_xcalloc(v->n, sizeof(uint32_t));
    int rc = build_texts(v, src, err, errlen);
    if (rc == 0) {
        build_map(v);
        rc = build_bytes(v, err, errlen);
    }
    if (rc == 0)
        rc = build_merges(v, src, err, errlen);
    if (rc == 0)
        rc = build_added(v, src, err, errlen);
    if (rc) {
        tok_vocab_free(v);
        return -1;
    }
    *out = v;
    return 0;
}

/* Release every table; NULL is fine. */
void tok_vocab_free(tok_vocab *v)
{
    if (!v)
        return;
    free(v->type);
    free(v->text);
    free(v->text_off);
    free(v->text_len);
    free(v->bytes);
    free(v->bytes_off);
    free(v->bytes_len);
    free(v->map);
    free(v->merges);
    trie_free(&v->added[0]);
    trie_free(&v->added[1]);
    free(v);
}

/* Zeroed per-id and per-merge arrays for a loader to fill. */
static void vsrc_alloc(vsrc *s, uint32_t n, uint32_t n_merges)
{
    memset(s, 0, sizeof *s);
    s->n = n;
    s->s = ds4_xcalloc(n, sizeof *s->s);
    s->len = ds4_xcalloc(n, sizeof *s->len);
    s->type = ds4_xcalloc(n, 1);
    s->norm = ds4_xcalloc(n, 1);
    s->n_merges = n_merges;
    s->ma = ds4_xcalloc(n_merges + 1, sizeof *s->ma);
    s->mb = ds4_xcalloc(n_merges + 1, sizeof *s->mb);
    s->mal = ds4_xcalloc(n_merges + 1, sizeof *s->mal);
    s->mbl = ds4_xcalloc(n_merges + 1, sizeof *s->mbl);
}

/* Release the loader arrays (the texts they point to are not owned). */
static void vsrc_free(vsrc *s)
{
    free(s->s);
    free(s->len);
    free(s->type);
    free(s->norm);
    free(s->ma);
    free(s->mb);
    free(s->mal);
    free(s->mbl);
}

/* Split a merge "a b" at its single space. */
static int split_merge(const char *m, uint64_t len, vsrc *s, uint32_t r)
{
    const char *sp = memchr(m, ' ', len);
    if (!sp || sp == m || (uint64_t)(sp - m) + 1 >= len || memchr(sp + 1, ' ', len - (uint64_t)(sp - m) - 1))
        return -1;
    s->ma[r] = m;
    s->mal[r] = (uint32_t)(sp - m);
    s->mb[r] = sp + 1;
    s->mbl[r] = (uint32_t)(len - (uint64_t)(sp - m) - 1);
    return 0;
}

/* GGUF: tokens (string array, id order), merges ("a b", rank order),
 * token_type (i32: 3 control = special added, 4 user-defined = added). */
int tok_vocab_from_gguf(const gguf_file *f, tok_vocab **out, char *err, size_t errlen)
{
    const gguf_kv *tk = gguf_find_kv(f, "tokenizer.ggml.tokens");
    const gguf_kv *mk = gguf_find_kv(f, "tokenizer.ggml.merges");
    const gguf_kv *ty = gguf_find_kv(f, "tokenizer.ggml.token_type");
    if (!tk || tk->type != GGUF_VT_ARRAY || tk->arr_type != GGUF_VT_STRING)
        return fail(err, errlen, "tokenizer: GGUF lacks string array tokenizer.ggml.tokens");
    if (!mk || mk->type != GGUF_VT_ARRAY || mk->arr_type != GGUF_VT_STRING)
        return fail(err, errlen, "tokenizer: GGUF lacks string array tokenizer.ggml.merges");
    /* without types the added tokens cannot be told apart, and raw
     * tokenization would silently differ from HF: refuse */
    if (!ty || ty->type != GGUF_VT_ARRAY || ty->arr_n != tk->arr_n)
        return fail(err, errlen, "tokenizer: tokenizer.ggml.token_type is missing or not an "
                    "array of %llu", (unsigned long long)tk->arr_n);
    if (tk->arr_n == 0 || tk->arr_n > TOK_MAX_IDS || mk->arr_n >= UINT32_MAX)
        return fail(err, errlen, "tokenizer: %llu tokens / %llu merges out of range",
                    (unsigned long long)tk->arr_n, (unsigned long long)mk->arr_n);
    gguf_str model;
    if (gguf_get_str(f, "tokenizer.ggml.model", &model) == 0 && !gguf_str_eq(model, "gpt2"))
        return fail(err, errlen, "tokenizer: tokenizer.ggml.model is '%.*s', expected 'gpt2'",
                    (int)(model.len > 40 ? 40 : model.len), model.ptr);
    vsrc s;
    vsrc_alloc(&s, (uint32_t)tk->arr_n, (uint32_t)mk->arr_n);
    int rc = 0;
    for (uint32_t i = 0; i < s.n && rc == 0; i++) {
        gguf_str t;
        int64_t tt = TOK_T_NORMAL;
        if (gguf_arr_str(tk, i, &t) != 0 || t.len >= UINT32_MAX)
            rc = fail(err, errlen, "tokenizer: token %u unreadable", i);
        else if (gguf_arr_i64(ty, i, &tt) != 0)
            rc = fail(err, errlen, "tokenizer: token_type %u unreadable", i);
        if (rc)
            break;
        s.s[i] = t.ptr;
        s.len[i] = (uint32_t)t.len;
        s.type[i] = tt == 3 ? TOK_T_CONTROL : tt == 4 ? TOK_T_USER : TOK_T_NORMAL;
        s.norm[i] = tt == 4;
    }
    for (uint32_t r = 0; r < s.n_merges && rc == 0; r++) {
        gguf_str m;
        if (gguf_arr_str(mk, r, &m) != 0 || split_merge(m.ptr, m.len, &s, r) != 0)
            rc = fail(err, errlen, "tokenizer: merge %u is not of the form 'a b'", r);
    }
    if (rc == 0)
        rc = vocab_build(&s, out, err, errlen);
    if (rc == 0) {
        gguf_str pre;
        if (gguf_get_str(f, "tokenizer.ggml.pre", &pre) == 0)
            snprintf((*out)->pre, sizeof (*out)->pre, "%.*s",
                     (int)(pre.len > 60 ? 60 : pre.len), pre.ptr);
    }
    vsrc_free(&s);
    return rc;
}

/* 1 if the JSON value is absent, null, false or an empty string. */
static int json_off(const json_t *j)
{
    return !j || json_is_null(j) || json_is_false(j) ||
           (json_is_string(j) && json_string_length(j) == 0);
}

/* The pre-tokenizer must be exactly the one this code implements. */
static int check_pretok(const json_t *root, char *err, size_t errlen)
{
    static const char *const want[3] = {TOK_PRETOK_HF_1, TOK_PRETOK_HF_2, TOK_PRETOK_HF_3};
    const json_t *pt = json_object_get(root, "pre_tokenizer");
    const json_t *seq = json_object_get(pt, "pretokenizers");
    if (!json_is_array(seq) || json_array_size(seq) != 4)
        return fail(err, errlen, "tokenizer.json: pre_tokenizer is not the DeepSeek V4 sequence");
    for (size_t i = 0; i < 3; i++) {
        const json_t *sp = json_array_get(seq, i);
        const char *ty = json_string_value(json_object_get(sp, "type"));
        const char *beh = json_string_value(json_object_get(sp, "behavior"));
        const char *re = json_string_value(json_object_get(json_object_get(sp, "pattern"), "Regex"));
        if (!ty || strcmp(ty, "Split") || !beh || strcmp(beh, "Isolated") || !re ||
            strcmp(re, want[i]) || json_is_true(json_object_get(sp, "invert")))
            return fail(err, errlen, "tokenizer.json: pre_tokenizer step %zu differs from the "
                        "DeepSeek V4 pattern this implementation knows", i);
    }
    const json_t *bl = json_array_get(seq, 3);
    const char *ty = json_string_value(json_object_get(bl, "type"));
    if (!ty || strcmp(ty, "ByteLevel") || json_is_true(json_object_get(bl, "use_regex")) ||
        json_is_true(json_object_get(bl, "add_prefix_space")))
        return fail(err, errlen, "tokenizer.json: last pre_tokenizer step is not ByteLevel "
                    "without regex and prefix space");
    const json_t *norm = json_object_get(root, "normalizer");
    const json_t *nl = json_object_get(norm, "normalizers");
    if (!json_is_null(norm) && norm && !(json_is_array(nl) && json_array_size(nl) == 0))
        return fail(err, errlen, "tokenizer.json: a non-empty normalizer is not supported");
    return 0;
}

/* Fill the merges of s from model.merges ("a b" strings or [a, b] pairs). */
static int json_merges(const json_t *merges, vsrc *s, char *err, size_t errlen)
{
    for (uint32_t r = 0; r < s->n_merges; r++) {
        const json_t *m = json_array_get(merges, r);
        if (json_is_string(m)) {
            if (split_merge(json_string_value(m), json_string_length(m), s, r) == 0)
                continue;
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
            s->ma[r] = json_string_value(json_array_get(m, 0));
            s->mal[r] = (uint32_t)json_string_length(json_array_get(m, 0));
            s->mb[r] = json_string_value(json_array_get(m, 1));
            s->mbl[r] = (uint32_t)json_string_length(json_array_get(m, 1));
            continue;
        }
        return fail(err, errlen, "tokenizer.json: merge %u is malformed", r);
    }
    return 0;
}

/* Largest id used by model.vocab and added_tokens, or -1 on a bad id. */
static int64_t json_max_id(const json_t *vocab, const json_t *added)
{
    int64_t max = -1;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 ||
            json_integer_value(val) >= TOK_MAX_IDS)
            return -2;
        if (json_integer_value(val) > max)
            max = json_integer_value(val);
    }
    size_t i;
    json_array_foreach(added, i, val) {
        const json_t *id = json_object_get(val, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= TOK_MAX_IDS || !json_is_string(json_object_get(val, "content")))
            return -2;
        if (json_integer_value(id) > max)
            max = json_integer_value(id);
    }
    return max;
}

/* Record added tokens; flags this implementation does not model are refused
 * rather than silently ignored. */
static int json_added(const json_t *added, vsrc *s, char *err, size_t errlen)
{
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a) {
        static const char *const unsupported[] = {"lstrip", "rstrip", "single_word"};
        for (size_t k = 0; k < 3; k++)
            if (json_is_true(json_object_get(a, unsupported[k])))
                return fail(err, errlen, "tokenizer.json: added token %zu sets %s, "
                            "which is not supported", i, unsupported[k]);
        uint32_t id = (uint32_t)json_integer_value(json_object_get(a, "id"));
        const json_t *c = json_object_get(a, "content");
        s->s[id] = json_string_value(c);
        s->len[id] = (uint32_t)json_string_length(c);
        s->type[id] = json_is_true(json_object_get(a, "special")) ? TOK_T_CONTROL : TOK_T_USER;
        s->norm[id] = json_is_true(json_object_get(a, "normalized"));
    }
    return 0;
}

/* tokenizer.json: model.vocab, model.merges, added_tokens. */
int tok_vocab_from_json(const char *text, size_t len, tok_vocab **out, char *err,
                        size_t errlen)
{
    json_error_t je;
    json_t *root = json_loadb(text, len, 0, &je);
    if (!root)
        return fail(err, errlen, "tokenizer.json: line %d: %s", je.line, je.text);
    int rc = 0;
    const json_t *model = json_object_get(root, "model");
    const json_t *vocab = json_object_get(model, "vocab");
    const json_t *merges = json_object_get(model, "merges");
    const json_t *added = json_object_get(root, "added_tokens");
    const char *mt = json_string_value(json_object_get(model, "type"));
    if (!mt || strcmp(mt, "BPE") || !json_is_object(vocab) || !json_is_array(merges) ||
        (added && !json_is_array(added)))
        rc = fail(err, errlen, "tokenizer.json: not a BPE model with vocab, merges and added_tokens");
    else if (!json_off(json_object_get(model, "byte_fallback")) ||
             !json_off(json_object_get(model, "ignore_merges")) ||
             !json_off(json_object_get(model, "continuing_subword_prefix")) ||
             !json_off(json_object_get(model, "end_of_word_suffix")) ||
             !json_off(json_object_get(model, "dropout")))
        rc = fail(err, errlen, "tokenizer.json: unsupported BPE option set");
    else
        rc = check_pretok(root, err, errlen);
    int64_t max = rc ? -1 : json_max_id(vocab, added);
    if (rc == 0 && max < 0)
        rc = fail(err, errlen, "tokenizer.json: bad or missing token ids");
    if (rc == 0 && json_array_size(merges) >= UINT32_MAX)
        rc = fail(err, errlen, "tokenizer.json: too many merges");
    if (rc == 0) {
        vsrc s;
        vsrc_alloc(&s, (uint32_t)(max + 1), (uint32_t)json_array_size(merges));
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)vocab, key, val) {
            uint32_t id = (uint32_t)json_integer_value(val);
            s.s[id] = key;
            s.len[id] = (uint32_t)strlen(key);
            s.type[id] = TOK_T_NORMAL;
        }
        rc = json_added(added, &s, err, errlen);
        if (rc == 0)
            rc = json_merges(merges, &s, err, errlen);
        if (rc == 0)
            rc = vocab_build(&s, out, err, errlen);
        if (rc == 0)
            snprintf((*out)->pre, sizeof (*out)->pre, "tokenizer.json");
        vsrc_free(&s);
    }
    json_decref(root);
    return rc;
}

/* Read and load a tokenizer.json file. */
int tok_vocab_from_json_file(const char *path, tok_vocab **out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(err, errlen, "tokenizer.json: cannot open %s", path);
    tok_buf b = {0};
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        tok_buf_append(&b, chunk, got);
    int bad = ferror(f);
    fclose(f);
    int rc = bad ? fail(err, errlen, "tokenizer.json: read error on %s", path)
                 : tok_vocab_from_json(b.data ? b.data : "", b.len, out, err, errlen);
    tok_buf_free(&b);
    return rc;
}
