/* tok_bpe.c - encoding: added-token split, pre-tokenize, BPE per piece.
 * BPE repeatedly merges the adjacent pair of lowest merge rank (leftmost
 * on ties), which is what HF's priority-queue BPE computes. Short pieces
 * use a compacting array (one hash lookup per new pair); long ones a
 * binary heap, so a megabyte-long word stays O(n log n). Results are
 * cached: short pieces in a two-way set-associative table, longer ones
 * (and short ones with many ids) in a direct-mapped table of allocations. */
#include "tok_bpe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_pretok.h"
#include "util.h"

#define CACHE_SLOTS (1u << 15)
#define CACHE_KEY 24       /* longest piece cached, bytes */
#define CACHE_IDS 12       /* most ids a cached piece may have */
#define ARRAY_MAX 128      /* pieces up to this many bytes use the array */
#define LCACHE_SLOTS 1024u /* second cache, for pieces of CACHE_KEY+1 .. */
#define LCACHE_MAX 1024    /* .. this many bytes (at most ~5 MB held) */
#define NO_RANK UINT32_MAX
#define MAX_INPUT 0x7FFFFFFFu /* symbol links are int32 */
#define SCRATCH_KEEP (1u << 20) /* larger scratch is freed after use */

typedef struct cache_slot {
    uint64_t h;
    uint16_t klen;         /* 0 = empty */
    uint8_t nid;
    uint8_t recent;        /* hit or filled more recently than its twin */
    uint32_t ids[CACHE_IDS];
    char key[CACHE_KEY];
} cache_slot;

/* A long piece's result: key bytes, then its ids, in one allocation. */
typedef struct lcache_slot {
    uint64_t h;
    uint32_t klen, nid;
    char *blob;
} lcache_slot;

/* One symbol of the heap algorithm: a doubly linked list over positions. */
typedef struct sym {
    uint32_t id;
    int32_t prev, next;
    uint32_t dead;
} sym;

struct tok_encoder {
    const tok_vocab *v;
    tok_pretok *pre;
    cache_slot *cache;
    lcache_slot *lcache;
    uint64_t hits, misses;
    tok_buf clean;          /* sanitized copy of invalid input */
    /* scratch for the heap algorithm */
    sym *syms;
    uint64_t *heap;
    size_t cap;
    tok_ids *out;           /* current destination (pre-tokenizer callback) */
};

/* An encoder with empty caches over a shared vocabulary. */
tok_encoder *tok_encoder_new(const tok_vocab *v, char *err, size_t errlen)
{
    tok_pretok *p = tok_pretok_new(err, errlen);
    if (!p)
        return NULL;
    tok_encoder *e = ds4_xcalloc(1, sizeof *e);
    e->v = v;
    e->pre = p;
    e->cache = ds4_xcalloc(CACHE_SLOTS, sizeof *e->cache);
    e->lcache = ds4_xcalloc(LCACHE_SLOTS, sizeof *e->lcache);
    return e;
}

/* Release caches and scratch; the vocabulary is not owned. */
void tok_encoder_free(tok_encoder *e)
{
    if (!e)
        return;
    tok_pretok_free(e->pre);
    free(e->cache);
    for (uint32_t i = 0; i < LCACHE_SLOTS; i++)
        free(e->lcache[i].blob);
    free(e->lcache);
    tok_buf_free(&e->clean);
    free(e->syms);
    free(e->heap);
    free(e);
}

/* Cache hit and miss counts since creation. */
void tok_encoder_stats(const tok_encoder *e, uint64_t *hits, uint64_t *misses)
{
    *hits = e->hits;
    *misses = e->misses;
}

/* Rank of merging (a, b), NO_RANK if they do not merge. */
static inline uint32_t pair_rank(const tok_vocab *v, uint32_t a, uint32_t b, uint32_t *m)
{
    uint32_t r;
    return tok_vocab_merge(v, a, b, &r, m) ? r : NO_RANK;
}

/* Array BPE for short pieces: ids[] shrinks as pairs merge; rank[i] is the
 * rank of (ids[i], ids[i+1]). */
static size_t bpe_array(const tok_vocab *v, const uint8_t *s, size_t n, uint32_t *ids)
{
    uint32_t rank[ARRAY_MAX], merged[ARRAY_MAX];
    for (size_t i = 0; i < n; i++)
        ids[i] = v->byte_id[s[i]];
    for (size_t i = 0; i + 1 < n; i++)
        rank[i] = pair_rank(v, ids[i], ids[i + 1], &merged[i]);
    while (n > 1) {
        size_t best = 0;
        for (size_t i = 1; i + 1 < n; i++)
            if (rank[i] < rank[best])
                best = i;
        if (rank[best] == NO_RANK)
            break;
        ids[best] = merged[best];
        size_t tail = n - best - 2;
        memmove(ids + best + 1, ids + best + 2, tail * sizeof *ids);
        memmove(rank + best + 1, rank + best + 2, (tail ? tail - 1 : 0) * sizeof *rank);
        memmove(merged + best + 1, merged + best + 2, (tail ? tail - 1 : 0) * sizeof *merged);
        n--;
        if (best > 0)
            rank[best - 1] = pair_rank(v, ids[best - 1], ids[best], &merged[best - 1]);
        if (best + 1 < n)
            rank[best] = pair_rank(v, ids[best], ids[best + 1], &merged[best]);
    }
    return n;
}

/* Min-heap of (rank << 32 | position). */
static void heap_push(uint64_t *h, size_t *n, uint64_t x)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p] <= x)
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

/* Remove and return the smallest entry (the heap must not be empty). */
static uint64_t heap_pop(uint64_t *h, size_t *n)
{
    uint64_t top = h[0], x = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && h[c + 1] < h[c])
            c++;
        if (x <= h[c])
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n)
        h[i] = x;
    return top;
}

/* Queue the pair starting at symbol i if it merges. */
static void heap_offer(const tok_vocab *v, sym *sy, uint64_t *h, size_t *hn, int32_t i)
{
    if (i < 0 || sy[i].next < 0)
        return;
    uint32_t m = 0, r = pair_rank(v, sy[i].id, sy[sy[i].next].id, &m);
    if (r != NO_RANK)
        heap_push(h, hn, (uint64_t)r << 32 | (uint32_t)i);
}

/* Heap BPE for long pieces; stale heap entries are skipped on pop. */
static void bpe_heap(tok_encoder *e, const uint8_t *s, size_t n, tok_ids *out)
{
    const tok_vocab *v = e->v;
    if (n > e->cap) {
        e->cap = n;
        e->syms = ds4_xrealloc(e->syms, n * sizeof *e->syms);
        /* n-1 pairs at first, and each merge pops one and pushes at most
         * two: the heap never holds more than 2n-2 entries */
        e->heap = ds4_xrealloc(e->heap, n * 2 * sizeof *e->heap);
    }
    sym *sy = e->syms;
    uint64_t *h = e->heap;
    size_t hn = 0;
    for (size_t i = 0; i < n; i++)
        sy[i] = (sym){v->byte_id[s[i]], (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1, 0};
    for (size_t i = 0; i + 1 < n; i++)
        heap_offer(v, sy, h, &hn, (int32_t)i);
    while (hn) {
        uint64_t top = heap_pop(h, &hn);
        int32_t i = (int32_t)(uint32_t)top;
        if (sy[i].dead || sy[i].next < 0)
            continue;
        int32_t j = sy[i].next;
        uint32_t m = 0, r = pair_rank(v, sy[i].id, sy[j].id, &m);
        if (r != (uint32_t)(top >> 32))
            continue; /* one side changed since this pair was queued */
        sy[i].id = m;
        sy[j].dead = 1;
        sy[i].next = sy[j].next;
        if (sy[j].next >= 0)
            sy[sy[j].next].prev = i;
        heap_offer(v, sy, h, &hn, sy[i].prev);
        heap_offer(v, sy, h, &hn, i);
    }
    for (int32_t i = 0; i >= 0; i = sy[i].next)
        tok_ids_push(out, sy[i].id);
    if (e->cap > SCRATCH_KEEP) {
        /* a daemon must not hold 32 bytes per symbol of its largest request */
        free(e->syms);
        free(e->heap);
        e->syms = NULL;
        e->heap = NULL;
        e->cap = 0;
    }
}

/* Hash a piece: each 8-byte word is folded in with a multiply, and the
 * murmur3 finalizer spreads every input bit over the low (index) bits. */
static uint64_t piece_hash(const char *s, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
        h ^= h >> 31;
    }
    if (i < n) {
        uint64_t w = 0;
        memcpy(&w, s + i, n - i);
        h = (h ^ w) * 0x94D049BB133111EBull;
    }
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 33;
    return h;
}

/* BPE without any cache: array for short pieces, heap for long ones. */
static void bpe_compute(tok_encoder *e, const char *piece, size_t len, tok_ids *out)
{
    if (len > ARRAY_MAX) {
        bpe_heap(e, (const uint8_t *)piece, len, out);
        return;
    }
    uint32_t ids[ARRAY_MAX];
    size_t k = bpe_array(e->v, (const uint8_t *)piece, len, ids);
    tok_ids_append(out, ids, k);
}

/* Look a piece up in the long-result cache; 1 and ids appended on a hit. */
static int lcache_get(tok_encoder *e, uint64_t h, const char *piece, size_t len, tok_ids *out)
{
    lcache_slot *c = &e->lcache[h & (LCACHE_SLOTS - 1)];
    if (!c->blob || c->h != h || c->klen != len || memcmp(c->blob, piece, len) != 0)
        return 0;
    uint32_t *ids = (uint32_t *)(void *)(c->blob + ((len + 3) & ~(size_t)3));
    tok_ids_append(out, ids, c->nid);
    return 1;
}

/* Remember a result in the long-result cache (replacing the slot). */
static void lcache_put(tok_encoder *e, uint64_t h, const char *piece, size_t len,
                       const uint32_t *ids, size_t nid)
{
    lcache_slot *c = &e->lcache[h & (LCACHE_SLOTS - 1)];
    size_t koff = (len + 3) & ~(size_t)3;
    free(c->blob);
    c->blob = ds4_xmalloc(koff + nid * sizeof(uint32_t));
    memcpy(c->blob, piece, len);
    memcpy(c->blob + koff, ids, nid * sizeof(uint32_t));
    c->h = h;
    c->klen = (uint32_t)len;
    c->nid = (uint32_t)nid;
}

/* Long pieces: the heap-allocated cache, then BPE on a miss. */
static void bpe_long_cached(tok_encoder *e, const char *piece, size_t len, tok_ids *out)
{
    uint64_t h = piece_hash(piece, len);
    if (lcache_get(e, h, piece, len, out)) {
        e->hits++;
        return;
    }
    e->misses++;
    size_t start = out->n;
    bpe_compute(e, piece, len, out);
    lcache_put(e, h, piece, len, out->v + start, out->n - start);
}

/* BPE of one piece through the two caches. */
void tok_bpe_piece(tok_encoder *e, const char *piece, size_t len, tok_ids *out)
{
    if (len == 0)
        return;
    if (len == 1) {
        tok_ids_push(out, e->v->byte_id[(uint8_t)piece[0]]);
        return;
    }
    if (len > CACHE_KEY) {
        if (len <= LCACHE_MAX)
            bpe_long_cached(e, piece, len, out);
        else
            bpe_compute(e, piece, len, out);
        return;
    }
    /* two-way set: a pair of pieces that hash alike does not thrash */
    uint64_t h = piece_hash(piece, len);
    cache_slot *set = &e->cache[h & (CACHE_SLOTS - 2)];
    for (int w = 0; w < 2; w++) {
        cache_slot *c = &set[w];
        if (c->h == h && c->klen == len && memcmp(c->key, piece, len) == 0) {
            e->hits++;
            c->recent = 1;
            set[!w].recent = 0;
            tok_ids_append(out, c->ids, c->nid);
            return;
        }
    }
    /* short pieces with more ids than a slot holds live in the long cache */
    if (lcache_get(e, h, piece, len, out)) {
        e->hits++;
        return;
    }
    e->misses++;
    uint32_t ids[CACHE_KEY];
    size_t k = bpe_array(e->v, (const uint8_t *)piece, len, ids);
    tok_ids_append(out, ids, k);
    if (k > CACHE_IDS) {
        lcache_put(e, h, piece, len, ids, k);
        return;
    }
    int w = set[0].recent ? 1 : 0;
    cache_slot *c = &set[w];
    c->h = h;
    c->klen = (uint16_t)len;
    c->nid = (uint8_t)k;
    c->recent = 1;
    set[!w].recent = 0;
    memcpy(c->key, piece, len);
    memcpy(c->ids, ids, k * sizeof *ids);
}

/* Reference: rescan every adjacent pair after each merge. */
void tok_bpe_piece_ref(const tok_vocab *v, const char *piece, size_t len, tok_ids *out)
{
    uint32_t *ids = ds4_xmalloc((len + 1) * sizeof *ids);
    size_t n = len;
    for (size_t i = 0; i < n; i++)
        ids[i] = v->byte_id[(uint8_t)piece[i]];
    for (;;) {
        uint32_t best_r = NO_RANK, best_m = 0, m = 0;
        size_t best = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            uint32_t r = pair_rank(v, ids[i], ids[i + 1], &m);
            if (r < best_r) {
                best_r = r;
                best_m = m;
                best = i;
            }
        }
        if (best_r == NO_RANK)
            break;
        ids[best] = best_m;
        memmove(ids + best + 1, ids + best + 2, (n - best - 2) * sizeof *ids);
        n--;
    }
    tok_ids_append(out, ids, n);
    free(ids);
}

/* Pre-tokenizer callback: BPE each piece into the current output. */
static int on_piece(const char *piece, size_t len, void *user)
{
    tok_encoder *e = user;
    tok_bpe_piece(e, piece, len, e->out);
    return 0;
}

/* Pre-tokenize and BPE a stretch of text that holds no added token. */
static int encode_plain(tok_encoder *e, const char *s, size_t n, char *err, size_t errlen)
{
    if (!n)
        return 0;
    return tok_pretok_split_valid(e->pre, s, n, on_piece, e, err, errlen) ? -1 : 0;
}

/* Split s on the added tokens of one pass (leftmost-longest); gaps go to
 * the next pass, or to BPE after the last. */
static int encode_pass(tok_encoder *e, int pass, const char *s, size_t n, char *err,
                       size_t errlen)
{
    const tok_vocab *v = e->v;
    const tok_trie *t = &v->added[pass];
    size_t last = 0, i = 0;
    while (i < n) {
        uint32_t id;
        size_t m = t->first[(uint8_t)s[i]] ? tok_vocab_match_added(v, pass, s + i, n - i, &id) : 0;
        if (!m) {
            i++;
            continue;
        }
        int rc = pass == 0 ? encode_pass(e, 1, s + last, i - last, err, errlen)
                           : encode_plain(e, s + last, i - last, err, errlen);
        if (rc)
            return rc;
        tok_ids_push(e->out, id);
        i += m;
        last = i;
    }
    if (pass == 0)
        return encode_pass(e, 1, s + last, n - last, err, errlen);
    return encode_plain(e, s + last, n - last, err, errlen);
}

/* Replace invalid UTF-8, then split added tokens (raw mode) and BPE. */
int tok_encode(tok_encoder *e, const char *text, size_t len, enum tok_mode mode,
               tok_ids *out, char *err, size_t errlen)
{
    if (len > MAX_INPUT) {
        snprintf(err, errlen, "tokenize: input of %zu bytes is over the 2 GiB limit", len);
        return -1;
    }
    if (tok_utf8_valid_prefix(text, len) != len) {
        e->clean.len = 0;
        tok_utf8_sanitize(text, len, &e->clean);
        text = e->clean.data;
        len = e->clean.len;
    }
    e->out = out;
    int rc = mode == TOK_MODE_PLAIN ? encode_plain(e, text, len, err, errlen)
                                    : encode_pass(e, 0, text, len, err, errlen);
    e->out = NULL;
    if (e->clean.cap > 16 * (size_t)SCRATCH_KEEP)
        tok_buf_free(&e->clean);
    return rc;
}
