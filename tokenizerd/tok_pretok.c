/* tok_pretok.c - the three-stage Split(Isolated) pre-tokenizer on PCRE2.
 * Each stage runs its regex inside one piece of the previous stage only
 * (the subject is the piece, so lookaheads stop at the piece's end, as in
 * HF where every piece is a separate string). */
#include "tok_pretok.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_utf8.h"
#include "util.h"

/* Oniguruma's \s in Unicode mode: 9-D, 20, 85, Zs, Zl, Zp (= White_Space). */
#define WS "\\t\\n\\x0B\\f\\r\\x20\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}" \
           "\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

/* The tokenizer.json patterns in PCRE2 syntax, \s and \S spelled out. */
static const char *const patterns[3] = {
    "\\p{N}{1,3}",
    "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+"
    "|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
    "| ?[\\p{P}\\p{S}]+[\\r\\n]*"
    "|[" WS "]*[\\r\\n]+"
    "|[" WS "]+(?![^" WS "])"
    "|[" WS "]+",
};

struct tok_pretok {
    pcre2_code *re[3];
    int jit[3];
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *stack;
};

/* Compile the three patterns (and JIT them when the library can). */
tok_pretok *tok_pretok_new(char *err, size_t errlen)
{
    tok_pretok *p = ds4_xcalloc(1, sizeof *p);
    for (int i = 0; i < 3; i++) {
        int ec;
        PCRE2_SIZE eo;
        p->re[i] = pcre2_compile((PCRE2_SPTR)patterns[i], PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
        if (!p->re[i]) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(ec, msg, sizeof msg);
            snprintf(err, errlen, "pretok: pattern %d at %zu: %s", i + 1, (size_t)eo, (char *)msg);
            tok_pretok_free(p);
            return NULL;
        }
        p->jit[i] = pcre2_jit_compile(p->re[i], PCRE2_JIT_COMPLETE) == 0;
    }
    p->md = pcre2_match_data_create(2, NULL);
    p->mctx = pcre2_match_context_create(NULL);
    /* long whitespace runs backtrack; give JIT room instead of failing */
    p->stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
    if (!p->md || !p->mctx || !p->stack)
        ds4_fatal(__FILE__, __LINE__, "out of memory");
    pcre2_jit_stack_assign(p->mctx, NULL, p->stack);
    /* The default limit (10M steps) fails on a ~10 MB whitespace run, where
     * "\s*[\r\n]+" backtracks over the whole run once. Every pattern here
     * is linear per match (no nested quantifiers), so lifting it is safe. */
    pcre2_set_match_limit(p->mctx, UINT32_MAX);
    pcre2_set_depth_limit(p->mctx, UINT32_MAX);
    return p;
}

/* Release the compiled patterns and match state; NULL is fine. */
void tok_pretok_free(tok_pretok *p)
{
    if (!p)
        return;
    for (int i = 0; i < 3; i++)
        pcre2_code_free(p->re[i]);
    pcre2_match_data_free(p->md);
    pcre2_match_context_free(p->mctx);
    pcre2_jit_stack_free(p->stack);
    free(p);
}

typedef struct split_ctx {
    tok_pretok *p;
    tok_piece_fn fn;
    void *user;
    char *err;
    size_t errlen;
} split_ctx;

static int split_level(split_ctx *c, int level, const char *s, size_t n);

/* Hand a piece to the next stage, or to the caller after the last one. */
static int emit(split_ctx *c, int level, const char *s, size_t n)
{
    if (level == 2)
        return c->fn(s, n, c->user);
    return split_level(c, level + 1, s, n);
}

/* Run one stage's regex over s[0..n): matches and gaps both go on. */
static int split_level(split_ctx *c, int level, const char *s, size_t n)
{
    tok_pretok *p = c->p;
    size_t off = 0, last = 0;
    int rc;
    while (off < n) {
        if (p->jit[level])
            rc = pcre2_jit_match(p->re[level], (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK,
                                 p->md, p->mctx);
        else
            rc = pcre2_match(p->re[level], (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK,
                             p->md, p->mctx);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(rc, msg, sizeof msg);
            snprintf(c->err, c->errlen, "pretok: stage %d: %s", level + 1, (char *)msg);
            return -1;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(p->md);
        size_t ms = ov[0], me = ov[1];
        if (ms > last && (rc = emit(c, level, s + last, ms - last)) != 0)
            return rc;
        if (me > ms) {
            if ((rc = emit(c, level, s + ms, me - ms)) != 0)
                return rc;
            last = off = me;
        } else {
            /* cannot happen with these patterns; never loop on one */
            off = me + 1;
            while (off < n && ((uint8_t)s[off] & 0xC0) == 0x80)
                off++;
        }
    }
    if (last < n)
        return emit(c, level, s + last, n - last);
    return 0;
}

/* Validate once, then split through the three stages. */
int tok_pretok_split(tok_pretok *p, const char *text, size_t len, tok_piece_fn fn,
                     void *user, char *err, size_t errlen)
{
    if (tok_utf8_valid_prefix(text, len) != len) {
        snprintf(err, errlen, "pretok: input is not valid UTF-8");
        return -1;
    }
    return tok_pretok_split_valid(p, text, len, fn, user, err, errlen);
}

/* Split already-validated text through the three stages. */
int tok_pretok_split_valid(tok_pretok *p, const char *text, size_t len, tok_piece_fn fn,
                           void *user, char *err, size_t errlen)
{
    split_ctx c = {p, fn, user, err, errlen};
    return len ? split_level(&c, 0, text, len) : 0;
}
