/* tok_dsml.c - incremental reasoning / content / DSML tool-call parser (see
 * tok_dsml.h). The machine consumes one byte at a time so that every split
 * of the input gives the same events; text is batched per feed() call. */
#include "tok_dsml.h"

#include <stdlib.h>
#include <string.h>

#include "tok_chat.h"
#include "util.h"

#define EOS "<｜end▁of▁sentence｜>"
#define THINK_OPEN "<think>"
#define THINK_CLOSE "</think>"
#define BLK_OPEN "<｜DSML｜tool_calls>"
#define BLK_CLOSE "</｜DSML｜tool_calls>"
#define INV_OPEN "<｜DSML｜invoke"
#define INV_CLOSE "</｜DSML｜invoke>"
#define PAR_OPEN "<｜DSML｜parameter"
#define PAR_CLOSE "</｜DSML｜parameter>"
#define DSML_MARK "｜DSML｜"

#define MAX_ATTR_NAME 32
#define MAX_ATTR_VALUE 4096
#define MAX_PEND 64 /* longer than every pattern */

enum state {
    S_REASON,   /* reasoning text */
    S_CONTENT,  /* content text */
    S_BLK_WS,   /* in a block, between invokes */
    S_INV_WS,   /* in an invoke, between parameters */
    S_TAG,      /* reading a tag name */
    S_ATTRS,    /* reading attributes of invoke/parameter */
    S_VALUE,    /* parameter value */
    S_DONE,
};

enum attr_sub { A_SEP, A_NAME, A_EQ, A_QUOTE, A_VAL };

struct param {
    struct tok_chat_sb key, val;
    int is_str;
};

struct tok_dsml {
    tok_dsml_cb cb;
    void *ud;
    size_t limit;
    int state;
    int at_start;          /* no output consumed yet (an explicit <think> may open) */
    char pend[MAX_PEND];   /* held-back possible tag prefix (text states, values) */
    size_t npend;
    struct tok_chat_sb out; /* text not yet emitted */
    int out_kind;
    /* structure */
    struct tok_chat_sb raw; /* raw text of the unfinished invoke / block opening */
    int tag_level;          /* 0: block level, 1: invoke level */
    char tag[MAX_PEND];
    size_t ntag;
    int attr_of;            /* 0: invoke, 1: parameter */
    int asub, had_ws;
    struct tok_chat_sb aname, aval;
    int have_name, have_string, string_val;
    struct tok_chat_sb cur_name, cur_key;
    struct param *params;
    size_t nparams, capparams;
    int calls, calls_in_block;
};

struct tok_dsml *tok_dsml_new(int start_in_reasoning, tok_dsml_cb cb, void *ud)
{
    struct tok_dsml *p = ds4_xcalloc(1, sizeof *p);
    p->cb = cb;
    p->ud = ud;
    p->limit = TOK_DSML_DEFAULT_LIMIT;
    p->state = start_in_reasoning ? S_REASON : S_CONTENT;
    p->at_start = !start_in_reasoning;
    p->out_kind = -1;
    return p;
}

void tok_dsml_set_limit(struct tok_dsml *p, size_t limit) { p->limit = limit ? limit : 1; }

int tok_dsml_n_calls(const struct tok_dsml *p) { return p->calls; }

/* Drop the parameters of the current invoke. */
static void clear_params(struct tok_dsml *p)
{
    for (size_t i = 0; i < p->nparams; i++) {
        tok_chat_sb_free(&p->params[i].key);
        tok_chat_sb_free(&p->params[i].val);
    }
    p->nparams = 0;
    p->cur_name.len = 0;
}

void tok_dsml_free(struct tok_dsml *p)
{
    if (!p)
        return;
    clear_params(p);
    free(p->params);
    tok_chat_sb_free(&p->out);
    tok_chat_sb_free(&p->raw);
    tok_chat_sb_free(&p->aname);
    tok_chat_sb_free(&p->aval);
    tok_chat_sb_free(&p->cur_name);
    tok_chat_sb_free(&p->cur_key);
    free(p);
}

/* Bytes at the end of [s, s+n) that start an incomplete UTF-8 sequence. */
static size_t utf8_tail(const char *s, size_t n)
{
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned char c = (unsigned char)s[n - k];
        if ((c & 0xc0) == 0x80)
            continue;
        size_t need = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xc2 && c <= 0xdf ? 2 : 1;
        return need > k ? k : 0;
    }
    return 0;
}

/* Emit the batched text; unless final, keep an incomplete UTF-8 tail. */
static void flush(struct tok_dsml *p, int final)
{
    if (!p->out.len)
        return;
    size_t hold = final ? 0 : utf8_tail(p->out.p, p->out.len);
    if (p->out.len > hold) {
        struct tok_dsml_event ev = {.type = p->out_kind, .text = p->out.p, .len = p->out.len - hold};
        p->cb(p->ud, &ev);
        memmove(p->out.p, p->out.p + ev.len, hold);
        p->out.len = hold;
    }
}

/* Queue text of a kind (REASONING or CONTENT). */
static void put_text(struct tok_dsml *p, int kind, const char *s, size_t n)
{
    if (!n)
        return;
    if (p->out_kind != kind)
        flush(p, 1);
    p->out_kind = kind;
    tok_chat_sb_put(&p->out, s, n);
}

/* Emit END once and stop. */
static void finish_end(struct tok_dsml *p)
{
    flush(p, 1);
    struct tok_dsml_event ev = {.type = TOK_DSML_EV_END};
    p->state = S_DONE;
    p->cb(p->ud, &ev);
}

/* Fall back: the raw unfinished structure text becomes content. */
static void fallback(struct tok_dsml *p)
{
    put_text(p, TOK_DSML_EV_CONTENT, p->raw.p, p->raw.len);
    p->raw.len = 0;
    p->npend = 0;
    clear_params(p);
    p->state = S_CONTENT;
}

/* Is pend a prefix of pattern pat (or equal: returns 2)? */
static int prefix_of(const char *pend, size_t n, const char *pat)
{
    size_t l = strlen(pat);
    if (n > l || memcmp(pend, pat, n) != 0)
        return 0;
    return n == l ? 2 : 1;
}

/* The patterns watched in a text state. */
static size_t text_patterns(const struct tok_dsml *p, const char **pats)
{
    size_t k = 0;
    pats[k++] = EOS;
    if (p->state == S_REASON) {
        pats[k++] = THINK_CLOSE;
    } else {
        pats[k++] = "\n\n" BLK_OPEN;
        pats[k++] = "\n" BLK_OPEN;
        pats[k++] = BLK_OPEN;
        if (p->at_start)
            pats[k++] = THINK_OPEN;
    }
    return k;
}

/* Act on a complete pattern in a text state. */
static void text_match(struct tok_dsml *p, const char *pat)
{
    p->npend = 0;
    if (strcmp(pat, EOS) == 0) {
        finish_end(p);
    } else if (strcmp(pat, THINK_CLOSE) == 0) {
        p->state = S_CONTENT;
    } else if (strcmp(pat, THINK_OPEN) == 0) {
        p->state = S_REASON;
    } else { /* a tool_calls block opens */
        p->raw.len = 0;
        tok_chat_sb_puts(&p->raw, pat);
        p->state = S_BLK_WS;
        p->calls_in_block = 0;
    }
    p->at_start = 0;
}

/* One byte in a text state: hold back only what may start a pattern. */
static void text_byte(struct tok_dsml *p, char c)
{
    const char *pats[8];
    int kind = p->state == S_REASON ? TOK_DSML_EV_REASONING : TOK_DSML_EV_CONTENT;
    p->pend[p->npend++] = c;
    for (;;) {
        size_t np = text_patterns(p, pats);
        int partial = 0;
        for (size_t i = 0; i < np; i++) {
            int m = prefix_of(p->pend, p->npend, pats[i]);
            if (m == 2) {
                text_match(p, pats[i]);
                return;
            }
            partial |= m;
        }
        if (partial || !p->npend)
            return;
        put_text(p, kind, p->pend, 1); /* the first byte cannot start a pattern */
        memmove(p->pend, p->pend + 1, --p->npend);
        p->at_start = 0;
    }
}

/* Arguments JSON of the current invoke, as decode_dsml_to_arguments. */
static void build_args(struct tok_dsml *p, struct tok_chat_sb *a)
{
    tok_chat_sb_put(a, "{", 1);
    for (size_t i = 0; i < p->nparams; i++) {
        struct param *q = &p->params[i];
        if (i)
            tok_chat_sb_put(a, ", ", 2);
        tok_chat_json_quote(a, q->key.p ? q->key.p : "", q->key.len);
        tok_chat_sb_put(a, ": ", 2);
        if (!q->is_str && q->val.len && tok_chat_json_valid(q->val.p, q->val.len))
            tok_chat_sb_put(a, q->val.p, q->val.len);
        else
            tok_chat_json_quote(a, q->val.p ? q->val.p : "", q->val.len);
    }
    tok_chat_sb_put(a, "}", 1);
}

/* </｜DSML｜invoke>: emit the tool call. */
static void commit_invoke(struct tok_dsml *p)
{
    struct tok_chat_sb a = {0};
    build_args(p, &a);
    flush(p, 1);
    struct tok_dsml_event ev = {.type = TOK_DSML_EV_TOOL_CALL, .call_index = p->calls,
                                .name = p->cur_name.p ? p->cur_name.p : "", .name_len = p->cur_name.len,
                                .args = a.p, .args_len = a.len};
    p->cb(p->ud, &ev);
    tok_chat_sb_free(&a);
    p->calls++;
    p->calls_in_block++;
    clear_params(p);
    p->raw.len = 0;
    p->state = S_BLK_WS;
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* One byte of a tag name; returns -1 when malformed. */
static int tag_byte(struct tok_dsml *p, char c)
{
    const char *open = p->tag_level ? PAR_OPEN : INV_OPEN;
    const char *close = p->tag_level ? INV_CLOSE : BLK_CLOSE;
    if (p->ntag >= sizeof p->tag)
        return -1;
    p->tag[p->ntag++] = c;
    int mo = prefix_of(p->tag, p->ntag, open), mc = prefix_of(p->tag, p->ntag, close);
    if (mo == 2) {
        p->state = S_ATTRS;
        p->attr_of = p->tag_level;
        p->asub = A_SEP;
        p->had_ws = 0;
        p->have_name = p->have_string = 0;
        p->cur_key.len = 0;
        if (!p->tag_level)
            p->cur_name.len = 0;
        return 0;
    }
    if (mc == 2) {
        if (p->tag_level) {
            commit_invoke(p);
        } else { /* the block closes */
            p->raw.len = 0;
            p->state = S_CONTENT;
        }
        return 0;
    }
    return mo || mc ? 0 : -1;
}

/* An attribute name="value" is complete; -1 when not allowed. */
static int attr_done(struct tok_dsml *p)
{
    const char *n = p->aname.p ? p->aname.p : "";
    if (strcmp(n, "name") == 0 && !p->have_name) {
        p->have_name = 1;
        struct tok_chat_sb *dst = p->attr_of ? &p->cur_key : &p->cur_name;
        dst->len = 0;
        tok_chat_sb_put(dst, p->aval.p ? p->aval.p : "", p->aval.len);
        return 0;
    }
    if (p->attr_of && strcmp(n, "string") == 0 && !p->have_string) {
        const char *v = p->aval.p ? p->aval.p : "";
        if (strcmp(v, "true") != 0 && strcmp(v, "false") != 0)
            return -1;
        p->have_string = 1;
        p->string_val = strcmp(v, "true") == 0;
        return 0;
    }
    return -1;
}

/* '>' closes the attributes of an invoke or a parameter. */
static int attrs_close(struct tok_dsml *p)
{
    if (!p->have_name)
        return -1;
    if (!p->attr_of) {
        p->state = S_INV_WS;
        p->tag_level = 1;
        return 0;
    }
    if (!p->have_string)
        return -1;
    for (size_t i = 0; i < p->nparams; i++)
        if (p->params[i].key.len == p->cur_key.len &&
            memcmp(p->params[i].key.p ? p->params[i].key.p : "", p->cur_key.p ? p->cur_key.p : "", p->cur_key.len) == 0)
            return -1; /* duplicate parameter name */
    if (p->nparams == p->capparams) {
        p->capparams = p->capparams ? p->capparams * 2 : 4;
        p->params = ds4_xrealloc(p->params, p->capparams * sizeof *p->params);
    }
    struct param *q = &p->params[p->nparams++];
    memset(q, 0, sizeof *q);
    tok_chat_sb_put(&q->key, p->cur_key.p ? p->cur_key.p : "", p->cur_key.len);
    q->is_str = p->string_val;
    p->state = S_VALUE;
    p->npend = 0;
    return 0;
}

/* One byte of the attribute list; -1 when malformed. */
static int attr_byte(struct tok_dsml *p, char c)
{
    switch (p->asub) {
    case A_SEP:
        if (is_ws(c)) {
            p->had_ws = 1;
            return 0;
        }
        if (c == '>')
            return attrs_close(p);
        if (!p->had_ws || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'))
            return -1;
        p->aname.len = 0;
        tok_chat_sb_put(&p->aname, &c, 1);
        p->asub = A_NAME;
        return 0;
    case A_NAME:
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (c >= '0' && c <= '9')) {
            if (p->aname.len >= MAX_ATTR_NAME)
                return -1;
            tok_chat_sb_put(&p->aname, &c, 1);
            return 0;
        }
        p->asub = A_EQ;
        /* fall through */
    case A_EQ:
        if (c != '=')
            return -1;
        p->asub = A_QUOTE;
        return 0;
    case A_QUOTE:
        if (c != '"')
            return -1;
        p->aval.len = 0;
        tok_chat_sb_put(&p->aval, "", 0);
        p->asub = A_VAL;
        return 0;
    default: /* A_VAL */
        if (c == '"') {
            p->asub = A_SEP;
            p->had_ws = 0;
            return attr_done(p);
        }
        if (p->aval.len >= MAX_ATTR_VALUE || c == '\n' || c == '<' || c == '>')
            return -1;
        tok_chat_sb_put(&p->aval, &c, 1);
        return 0;
    }
}

/* One byte of a parameter value; watches for the closing tag and EOS.
 * Returns -1 when malformed, 1 at EOS. */
static int value_byte(struct tok_dsml *p, char c)
{
    struct param *q = &p->params[p->nparams - 1];
    p->pend[p->npend++] = c;
    for (;;) {
        int mc = prefix_of(p->pend, p->npend, PAR_CLOSE), me = prefix_of(p->pend, p->npend, EOS);
        if (mc == 2) {
            p->npend = 0;
            p->state = S_INV_WS;
            return 0;
        }
        if (me == 2)
            return 1;
        if (mc || me || !p->npend)
            return 0;
        tok_chat_sb_put(&q->val, p->pend, 1);
        memmove(p->pend, p->pend + 1, --p->npend);
    }
}

static void feed_byte(struct tok_dsml *p, char c);

/* One byte in a structure state. */
static void struct_byte(struct tok_dsml *p, char c)
{
    int rc = 0, was_tag = p->state == S_TAG;
    tok_chat_sb_put(&p->raw, &c, 1);
    switch (p->state) {
    case S_BLK_WS:
    case S_INV_WS:
        if (c == '<') {
            p->tag_level = p->state == S_INV_WS;
            p->ntag = 0;
            p->state = S_TAG;
            rc = tag_byte(p, c);
        } else if (!is_ws(c)) {
            rc = -1;
        }
        break;
    case S_TAG: rc = tag_byte(p, c); break;
    case S_ATTRS: rc = attr_byte(p, c); break;
    default: rc = value_byte(p, c); break;
    }
    if (rc == 1) { /* EOS inside a value: the invoke is cut off */
        p->raw.len -= strlen(EOS);
        fallback(p);
        finish_end(p);
    } else if (rc < 0) {
        /* The offending byte, and a tag it was part of, are read again as
         * content, so that EOS or a new block opening there is still seen. */
        char again[MAX_PEND + 1];
        size_t k = was_tag || p->state == S_TAG ? (p->ntag < sizeof p->tag ? p->ntag : p->ntag + 1) : 1;
        if (k > p->raw.len)
            k = p->raw.len;
        memcpy(again, p->raw.p + p->raw.len - k, k);
        p->raw.len -= k;
        fallback(p);
        for (size_t i = 0; i < k && p->state != S_DONE; i++)
            feed_byte(p, again[i]);
    } else if (p->raw.len > p->limit && p->state != S_CONTENT) {
        fallback(p);
    }
}

/* One byte in whatever state the parser is in. */
static void feed_byte(struct tok_dsml *p, char c)
{
    if (p->state == S_REASON || p->state == S_CONTENT)
        text_byte(p, c);
    else
        struct_byte(p, c);
}

void tok_dsml_feed(struct tok_dsml *p, const char *s, size_t n)
{
    for (size_t i = 0; i < n && p->state != S_DONE; i++)
        feed_byte(p, s[i]);
    if (p->state != S_DONE)
        flush(p, 0);
}

/* Is the block's unfinished text only whitespace after a committed call? */
static int closed_enough(const struct tok_dsml *p)
{
    if (p->state != S_BLK_WS || !p->calls_in_block)
        return 0;
    for (size_t i = 0; i < p->raw.len; i++)
        if (!is_ws(p->raw.p[i]))
            return 0;
    return 1;
}

void tok_dsml_finish(struct tok_dsml *p)
{
    if (p->state == S_DONE)
        return;
    if (p->state == S_REASON || p->state == S_CONTENT) {
        put_text(p, p->state == S_REASON ? TOK_DSML_EV_REASONING : TOK_DSML_EV_CONTENT, p->pend, p->npend);
        p->npend = 0;
    } else if (closed_enough(p)) {
        p->raw.len = 0;
    } else {
        fallback(p);
    }
    finish_end(p);
}

/* Does [s, s+n) contain the DSML marker? */
static int has_mark(const char *s, size_t n)
{
    size_t l = strlen(DSML_MARK);
    for (size_t i = 0; i + l <= n; i++)
        if (memcmp(s + i, DSML_MARK, l) == 0)
            return 1;
    return 0;
}

int tok_dsml_struct_state(const struct tok_dsml *p)
{
    switch (p->state) {
    case S_DONE: return TOK_DSML_ST_DONE;
    case S_REASON:
    case S_CONTENT: return has_mark(p->pend, p->npend) ? TOK_DSML_ST_STRUCT : TOK_DSML_ST_TEXT;
    case S_VALUE:
        if (has_mark(p->pend, p->npend))
            return TOK_DSML_ST_STRUCT;
        return p->params[p->nparams - 1].is_str ? TOK_DSML_ST_VALUE_STR : TOK_DSML_ST_VALUE_JSON;
    default: return TOK_DSML_ST_STRUCT;
    }
}
