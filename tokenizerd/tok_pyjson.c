/* tok_pyjson.c - JSON parsing and serialization with Python json semantics
 * (see tok_pyjson.h). A local parser rather than jansson because the chat
 * tools block and DSML arguments must be re-serialized exactly as Python's
 * json module does: key order, separators, arbitrary-size integers kept
 * verbatim, floats in Python's shortest repr, last value winning for
 * duplicate keys. */
#include "tok_pyjson.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* ------------------------------------------------------------------ */
/* UTF-8. */

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned min;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, min = 0x10000;
    else
        return 0;
    if (n < len)
        return 0;
    unsigned cp = c & (0x3f >> (len - 1));
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* Append code point cp as UTF-8. */
static void put_utf8(struct tok_chat_sb *b, unsigned cp)
{
    char t[4];
    size_t n;
    if (cp < 0x80)
        t[0] = (char)cp, n = 1;
    else if (cp < 0x800)
        t[0] = (char)(0xc0 | cp >> 6), t[1] = (char)(0x80 | (cp & 0x3f)), n = 2;
    else if (cp < 0x10000)
        t[0] = (char)(0xe0 | cp >> 12), t[1] = (char)(0x80 | ((cp >> 6) & 0x3f)),
        t[2] = (char)(0x80 | (cp & 0x3f)), n = 3;
    else
        t[0] = (char)(0xf0 | cp >> 18), t[1] = (char)(0x80 | ((cp >> 12) & 0x3f)),
        t[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), t[3] = (char)(0x80 | (cp & 0x3f)), n = 4;
    tok_chat_sb_put(b, t, n);
}

/* A JSON string literal as json.dumps(ensure_ascii=False) writes it. */
void tok_chat_json_quote(struct tok_chat_sb *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    tok_chat_sb_put(b, "\"", 1);
    size_t i = 0, run = 0;
    while (i < n) {
        unsigned c = u[i];
        const char *esc = NULL;
        char hex[8];
        size_t step = 1;
        if (c == '"')
            esc = "\\\"";
        else if (c == '\\')
            esc = "\\\\";
        else if (c == '\n')
            esc = "\\n";
        else if (c == '\r')
            esc = "\\r";
        else if (c == '\t')
            esc = "\\t";
        else if (c == '\b')
            esc = "\\b";
        else if (c == '\f')
            esc = "\\f";
        else if (c < 0x20) {
            snprintf(hex, sizeof hex, "\\u%04x", c);
            esc = hex;
        } else if (c >= 0x80) {
            step = utf8_seq(u + i, n - i);
            if (!step) {
                esc = "\xef\xbf\xbd"; /* U+FFFD for a byte that is not UTF-8 */
                step = 1;
            }
        }
        if (esc) {
            tok_chat_sb_put(b, s + i - run, run);
            run = 0;
            tok_chat_sb_puts(b, esc);
        } else {
            run += step;
        }
        i += step;
    }
    tok_chat_sb_put(b, s + n - run, run);
    tok_chat_sb_put(b, "\"", 1);
}

/* ------------------------------------------------------------------ */
/* Parser. */

struct pj_parser {
    const char *p, *end, *start;
    int strict; /* 1: plain JSON, no NaN/Infinity */
    char err[160];
};

/* Free the storage of v (not v itself); see the header. */
void tok_pyjson_free(struct tok_pyjson *v)
{
    if (v->t == TOK_PYJSON_ARR)
        for (size_t i = 0; i < v->n; i++)
            tok_pyjson_free(&v->a[i]);
    if (v->t == TOK_PYJSON_OBJ)
        for (size_t i = 0; i < v->n; i++) {
            free(v->kv[i].k);
            tok_pyjson_free(&v->kv[i].v);
        }
    free(v->s);
    free(v->a);
    free(v->kv);
    memset(v, 0, sizeof *v);
}

/* Record a parse error (the first one wins). */
static int pj_fail(struct pj_parser *ps, const char *what)
{
    if (!ps->err[0])
        snprintf(ps->err, sizeof ps->err, "invalid JSON at byte %zu: %s", (size_t)(ps->p - ps->start),
                 what);
    return -1;
}

/* Skip JSON whitespace (exactly the four characters the grammar allows). */
static void pj_ws(struct pj_parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

/* Four hex digits at p, or -1. */
static int pj_hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int c = p[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Parse a string literal (p at the opening quote) into out (malloc'd). */
static int pj_string(struct pj_parser *ps, char **out, size_t *outn)
{
    struct tok_chat_sb b = {0};
    const char *why = "unterminated string";
    ps->p++;
    while (ps->p < ps->end && *ps->p != '"') {
        unsigned char c = (unsigned char)*ps->p;
        if (c < 0x20) {
            why = "control character in string";
            goto bad;
        }
        if (c != '\\') { /* a run of plain UTF-8 */
            const char *q = ps->p;
            size_t l;
            while (q < ps->end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20 &&
                   (l = utf8_seq((const unsigned char *)q, (size_t)(ps->end - q))))
                q += l;
            if (q == ps->p) {
                why = "invalid UTF-8";
                goto bad;
            }
            tok_chat_sb_put(&b, ps->p, (size_t)(q - ps->p));
            ps->p = q;
            continue;
        }
        char e = ps->end - ps->p >= 2 ? ps->p[1] : 0;
        const char *simple = e ? strchr("\"\\/bfnrt", e) : NULL;
        why = "bad escape";
        if (simple) {
            tok_chat_sb_put(&b, &"\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"], 1);
            ps->p += 2;
            continue;
        }
        int cp = e == 'u' && ps->end - ps->p >= 6 ? pj_hex4(ps->p + 2) : -1;
        if (cp < 0)
            goto bad;
        ps->p += 6;
        why = "lone surrogate";
        if (cp >= 0xd800 && cp <= 0xdbff) {
            int lo = ps->end - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u' ? pj_hex4(ps->p + 2) : -1;
            if (lo < 0xdc00 || lo > 0xdfff)
                goto bad;
            ps->p += 6;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        } else if (cp >= 0xdc00 && cp <= 0xdfff) {
            goto bad;
        }
        put_utf8(&b, (unsigned)cp);
        why = "unterminated string";
    }
    if (ps->p >= ps->end)
        goto bad;
    ps->p++;
    *out = b.p ? b.p : ds4_xstrdup("");
    *outn = b.len;
    return 0;
bad:
    tok_chat_sb_free(&b);
    return pj_fail(ps, why);
}

/* Parse a number lexeme (JSON grammar), kept verbatim. */
static int pj_number(struct pj_parser *ps, struct tok_pyjson *v)
{
    const char *s = ps->p, *p = s, *e = ps->end;
    int isf = 0;
    if (p < e && *p == '-')
        p++;
    if (p < e && *p == '0')
        p++;
    else if (p < e && *p >= '1' && *p <= '9')
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    else
        return pj_fail(ps, "bad number");
    if (p < e && *p == '.') {
        p++, isf = 1;
        if (!(p < e && *p >= '0' && *p <= '9'))
            return pj_fail(ps, "bad number");
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++, isf = 1;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        if (!(p < e && *p >= '0' && *p <= '9'))
            return pj_fail(ps, "bad number");
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    v->t = TOK_PYJSON_NUM;
    v->is_float = isf;
    v->s = ds4_xstrndup(s, (size_t)(p - s));
    v->n = (size_t)(p - s);
    ps->p = p;
    return 0;
}

/* Compare two object members by key bytes, then by position. */
static int kv_cmp(const void *a, const void *b, void *ctx)
{
    const struct tok_pyjson_kv *kv = ctx;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    size_t n = kv[i].kn < kv[j].kn ? kv[i].kn : kv[j].kn;
    int c = memcmp(kv[i].k, kv[j].k, n);
    if (c)
        return c;
    if (kv[i].kn != kv[j].kn)
        return kv[i].kn < kv[j].kn ? -1 : 1;
    return i < j ? -1 : i > j;
}

/* Python dict semantics for duplicate keys: the first position keeps the
 * last value; the later duplicates disappear. */
static void pj_dedupe(struct tok_pyjson *o)
{
    if (o->n < 2)
        return;
    size_t *idx = ds4_xmalloc(o->n * sizeof *idx);
    char *drop = ds4_xcalloc(o->n, 1);
    int any = 0;
    for (size_t i = 0; i < o->n; i++)
        idx[i] = i;
    qsort_r(idx, o->n, sizeof *idx, kv_cmp, o->kv);
    for (size_t i = 0; i + 1 < o->n; i++) {
        size_t g = i;
        while (i + 1 < o->n && o->kv[idx[i + 1]].kn == o->kv[idx[g]].kn &&
               memcmp(o->kv[idx[i + 1]].k, o->kv[idx[g]].k, o->kv[idx[g]].kn) == 0)
            i++;
        if (i > g) { /* group idx[g..i], ascending positions */
            any = 1;
            struct tok_pyjson last = o->kv[idx[i]].v;
            memset(&o->kv[idx[i]].v, 0, sizeof last);
            tok_pyjson_free(&o->kv[idx[g]].v);
            o->kv[idx[g]].v = last;
            for (size_t j = g + 1; j <= i; j++)
                drop[idx[j]] = 1;
        }
    }
    if (any) {
        size_t w = 0;
        for (size_t i = 0; i < o->n; i++) {
            if (drop[i]) {
                free(o->kv[i].k);
                tok_pyjson_free(&o->kv[i].v);
            } else {
                o->kv[w++] = o->kv[i];
            }
        }
        o->n = w;
    }
    free(idx);
    free(drop);
}

static int pj_value(struct pj_parser *ps, struct tok_pyjson *v, int depth);

/* Parse an array (p at '['). */
static int pj_array(struct pj_parser *ps, struct tok_pyjson *v, int depth)
{
    size_t cap = 0;
    v->t = TOK_PYJSON_ARR;
    ps->p++;
    pj_ws(ps);
    if (ps->p < ps->end && *ps->p == ']') {
        ps->p++;
        return 0;
    }
    for (;;) {
        if (v->n == cap) {
            cap = cap ? cap * 2 : 4;
            v->a = ds4_xrealloc(v->a, cap * sizeof *v->a);
        }
        memset(&v->a[v->n], 0, sizeof v->a[0]);
        v->n++;
        if (pj_value(ps, &v->a[v->n - 1], depth + 1))
            return -1;
        pj_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == ']') {
            ps->p++;
            return 0;
        }
        return pj_fail(ps, "expected ',' or ']'");
    }
}

/* Parse an object (p at '{'). */
static int pj_object(struct pj_parser *ps, struct tok_pyjson *v, int depth)
{
    size_t cap = 0;
    v->t = TOK_PYJSON_OBJ;
    ps->p++;
    pj_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
        return 0;
    }
    for (;;) {
        pj_ws(ps);
        if (!(ps->p < ps->end && *ps->p == '"'))
            return pj_fail(ps, "expected a key");
        if (v->n == cap) {
            cap = cap ? cap * 2 : 4;
            v->kv = ds4_xrealloc(v->kv, cap * sizeof *v->kv);
        }
        struct tok_pyjson_kv *kv = &v->kv[v->n];
        memset(kv, 0, sizeof *kv);
        v->n++;
        if (pj_string(ps, &kv->k, &kv->kn))
            return -1;
        pj_ws(ps);
        if (!(ps->p < ps->end && *ps->p == ':'))
            return pj_fail(ps, "expected ':'");
        ps->p++;
        if (pj_value(ps, &kv->v, depth + 1))
            return -1;
        pj_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == '}') {
            ps->p++;
            pj_dedupe(v);
            return 0;
        }
        return pj_fail(ps, "expected ',' or '}'");
    }
}

/* True if the input at p starts with the literal lit. */
static int pj_lit(struct pj_parser *ps, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, lit, n) != 0)
        return 0;
    ps->p += n;
    return 1;
}

/* Parse any value; Python's json also accepts NaN, Infinity, -Infinity. */
static int pj_value(struct pj_parser *ps, struct tok_pyjson *v, int depth)
{
    if (depth > TOK_PYJSON_MAX_DEPTH)
        return pj_fail(ps, "nested too deeply");
    pj_ws(ps);
    if (ps->p >= ps->end)
        return pj_fail(ps, "unexpected end");
    char c = *ps->p;
    if (c == '{')
        return pj_object(ps, v, depth);
    if (c == '[')
        return pj_array(ps, v, depth);
    if (c == '"') {
        v->t = TOK_PYJSON_STR;
        return pj_string(ps, &v->s, &v->n);
    }
    if (pj_lit(ps, "null")) {
        v->t = TOK_PYJSON_NULL;
        return 0;
    }
    if (pj_lit(ps, "true")) {
        v->t = TOK_PYJSON_TRUE;
        return 0;
    }
    if (pj_lit(ps, "false")) {
        v->t = TOK_PYJSON_FALSE;
        return 0;
    }
    const char *lits[] = {"NaN", "Infinity", "-Infinity"};
    for (int i = 0; i < 3 && !ps->strict; i++)
        if (pj_lit(ps, lits[i])) {
            v->t = TOK_PYJSON_NUM;
            v->is_float = 1;
            v->s = ds4_xstrdup(lits[i]);
            v->n = strlen(lits[i]);
            return 0;
        }
    return pj_number(ps, v);
}

/* Parse a whole document (strict: no Python extensions); on error *v is
 * freed and err filled. */
int tok_pyjson_parse(const char *s, size_t n, struct tok_pyjson *v, int strict, char *err, size_t errlen)
{
    struct pj_parser ps = {.p = s, .end = s + n, .start = s, .strict = strict};
    memset(v, 0, sizeof *v);
    int rc = pj_value(&ps, v, 0);
    if (!rc) {
        pj_ws(&ps);
        if (ps.p != ps.end)
            rc = pj_fail(&ps, "trailing characters");
    }
    if (rc) {
        tok_pyjson_free(v);
        if (err && errlen)
            snprintf(err, errlen, "%s", ps.err);
    }
    return rc;
}

/* Python's repr() of a double: shortest round-trip digits, exponent form
 * when the decimal point position is <= -4 or > 16. */
static void py_float_repr(struct tok_chat_sb *b, double d)
{
    if (isnan(d)) {
        tok_chat_sb_puts(b, "NaN");
        return;
    }
    if (isinf(d)) {
        tok_chat_sb_puts(b, d < 0 ? "-Infinity" : "Infinity");
        return;
    }
    char buf[64];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    char dig[32];
    size_t nd = 0;
    const char *p = buf;
    int neg = *p == '-';
    if (neg)
        p++;
    for (; *p && *p != 'e'; p++)
        if (*p != '.')
            dig[nd++] = *p;
    int exp = atoi(p + 1);
    while (nd > 1 && dig[nd - 1] == '0')
        nd--;
    int decpt = d == 0 ? 1 : exp + 1;
    if (neg)
        tok_chat_sb_put(b, "-", 1);
    if (decpt <= -4 || decpt > 16) {
        tok_chat_sb_put(b, dig, 1);
        if (nd > 1) {
            tok_chat_sb_put(b, ".", 1);
            tok_chat_sb_put(b, dig + 1, nd - 1);
        }
        snprintf(buf, sizeof buf, "e%c%02d", decpt - 1 < 0 ? '-' : '+', abs(decpt - 1));
        tok_chat_sb_puts(b, buf);
    } else if (decpt <= 0) {
        tok_chat_sb_puts(b, "0.");
        for (int i = 0; i < -decpt; i++)
            tok_chat_sb_put(b, "0", 1);
        tok_chat_sb_put(b, dig, nd);
    } else if ((size_t)decpt < nd) {
        tok_chat_sb_put(b, dig, (size_t)decpt);
        tok_chat_sb_put(b, ".", 1);
        tok_chat_sb_put(b, dig + decpt, nd - (size_t)decpt);
    } else {
        tok_chat_sb_put(b, dig, nd);
        for (size_t i = nd; i < (size_t)decpt; i++)
            tok_chat_sb_put(b, "0", 1);
        tok_chat_sb_puts(b, ".0");
    }
}

/* Serialize v as Python json.dumps(v, ensure_ascii=False). */
void tok_pyjson_dump(struct tok_chat_sb *b, const struct tok_pyjson *v)
{
    switch (v->t) {
    case TOK_PYJSON_NULL: tok_chat_sb_puts(b, "null"); break;
    case TOK_PYJSON_TRUE: tok_chat_sb_puts(b, "true"); break;
    case TOK_PYJSON_FALSE: tok_chat_sb_puts(b, "false"); break;
    case TOK_PYJSON_STR: tok_chat_json_quote(b, v->s, v->n); break;
    case TOK_PYJSON_NUM:
        if (!v->is_float)
            tok_chat_sb_puts(b, strcmp(v->s, "-0") == 0 ? "0" : v->s);
        else if (v->s[0] == 'N' || v->s[0] == 'I' || v->s[1] == 'I')
            tok_chat_sb_puts(b, v->s);
        else
            py_float_repr(b, strtod(v->s, NULL));
        break;
    case TOK_PYJSON_ARR:
        tok_chat_sb_put(b, "[", 1);
        for (size_t i = 0; i < v->n; i++) {
            if (i)
                tok_chat_sb_put(b, ", ", 2);
            tok_pyjson_dump(b, &v->a[i]);
        }
        tok_chat_sb_put(b, "]", 1);
        break;
    case TOK_PYJSON_OBJ:
        tok_chat_sb_put(b, "{", 1);
        for (size_t i = 0; i < v->n; i++) {
            if (i)
                tok_chat_sb_put(b, ", ", 2);
            tok_chat_json_quote(b, v->kv[i].k, v->kv[i].kn);
            tok_chat_sb_put(b, ": ", 2);
            tok_pyjson_dump(b, &v->kv[i].v);
        }
        tok_chat_sb_put(b, "}", 1);
        break;
    }
}

/* Member key of object o, or NULL. */
const struct tok_pyjson *tok_pyjson_get(const struct tok_pyjson *o, const char *key)
{
    if (!o || o->t != TOK_PYJSON_OBJ)
        return NULL;
    size_t kn = strlen(key);
    for (size_t i = 0; i < o->n; i++)
        if (o->kv[i].kn == kn && memcmp(o->kv[i].k, key, kn) == 0)
            return &o->kv[i].v;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* The helpers declared in tok_chat.h. */

/* Strict validity check (no NaN/Infinity): used for DSML argument values. */
int tok_chat_json_valid(const char *s, size_t n)
{
    struct tok_pyjson v;
    if (tok_pyjson_parse(s, n, &v, 1, NULL, 0))
        return 0;
    tok_pyjson_free(&v);
    return 1;
}

/* Parse (Python extensions allowed) and dump again. */
int tok_chat_json_canon(const char *s, size_t n, struct tok_chat_sb *out)
{
    struct tok_pyjson v;
    if (tok_pyjson_parse(s, n, &v, 0, NULL, 0))
        return -1;
    tok_pyjson_dump(out, &v);
    tok_pyjson_free(&v);
    return 0;
}
