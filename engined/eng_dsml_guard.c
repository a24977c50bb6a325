/* eng_dsml_guard.c - greedy-in-DSML state machine (see eng_dsml_guard.h). */
#include "eng_dsml_guard.h"

#include <string.h>

#define BAR "\xef\xbd\x9c" /* U+FF5C FULLWIDTH VERTICAL LINE, 3 bytes */
#define MARK "DSML" BAR

int eng_dsml_vocab_init(eng_dsml_vocab *dv, const tok_vocab *v)
{
    dv->v = v;
    dv->think_open = tok_vocab_added(v, "<think>");
    dv->think_close = tok_vocab_added(v, "</think>");
    dv->assistant = tok_vocab_added(v, "<" BAR "Assistant" BAR ">");
    return dv->think_open >= 0 && dv->think_close >= 0 && dv->assistant >= 0 ? 0 : -1;
}

/* Does the tail end with s? */
static int tail_ends(const eng_dsml_guard *g, const char *s, size_t n)
{
    return g->ntail >= n && memcmp(g->tail + g->ntail - n, s, n) == 0;
}

static void tail_push(eng_dsml_guard *g, char c)
{
    if (g->ntail == sizeof g->tail) {
        memmove(g->tail, g->tail + 1, sizeof g->tail - 1);
        g->ntail--;
    }
    g->tail[g->ntail++] = c;
}

/* After a byte: does the tail end with a DSML tag marker? 1 open, 2 close
 * ("</"), 0 none. Accepts "<｜DSML｜" and "<DSML｜" (first bar omitted). */
static int tail_marker(const eng_dsml_guard *g)
{
    const size_t m = sizeof MARK - 1;
    if (!tail_ends(g, MARK, m))
        return 0;
    size_t end = g->ntail - m; /* bytes before the marker */
    if (end >= 3 && memcmp(g->tail + end - 3, BAR, 3) == 0)
        end -= 3;
    if (end >= 2 && g->tail[end - 2] == '<' && g->tail[end - 1] == '/')
        return 2;
    if (end >= 1 && g->tail[end - 1] == '<')
        return 1;
    return 0;
}

static void enter_tag(eng_dsml_guard *g, int close)
{
    g->tag_from = g->state;
    g->tag_close = close;
    g->state = ENG_DSML_TAG;
    g->in_quote = 0;
    g->run = 0;
    g->nname = 0;
    g->name_done = 0;
    g->ntail = 0;
}

static int name_is(const eng_dsml_guard *g, const char *s)
{
    return g->nname == strlen(s) && memcmp(g->name, s, g->nname) == 0;
}

/* The '>' of a tag: decide where we are now. */
static void end_tag(eng_dsml_guard *g)
{
    int from = g->tag_from, close = g->tag_close;
    g->ntail = 0;
    g->run = 0;
    if (from == ENG_DSML_TEXT)
        g->state = !close && name_is(g, "tool_calls") ? ENG_DSML_BLOCK : ENG_DSML_TEXT;
    else if (from == ENG_DSML_BLOCK) {
        if (!close && name_is(g, "parameter"))
            g->state = ENG_DSML_VALUE;
        else if (close && name_is(g, "tool_calls"))
            g->state = ENG_DSML_TEXT;
        else
            g->state = ENG_DSML_BLOCK;
    } else /* VALUE */
        g->state = close && name_is(g, "parameter") ? ENG_DSML_BLOCK : ENG_DSML_VALUE;
}

static void byte(eng_dsml_guard *g, char c)
{
    switch (g->state) {
    case ENG_DSML_THINK:
        tail_push(g, c);
        if (tail_ends(g, "</think>", 8)) {
            g->state = ENG_DSML_TEXT;
            g->ntail = 0;
        }
        return;
    case ENG_DSML_TAG:
        if (++g->run > ENG_DSML_RUNAWAY) {
            g->state = ENG_DSML_TEXT;
            g->ntail = 0;
            return;
        }
        if (!g->name_done) {
            if (((c >= 'a' && c <= 'z') || c == '_') && g->nname < sizeof g->name)
                g->name[g->nname++] = c;
            else
                g->name_done = 1;
        }
        if (g->in_quote) {
            if (c == '"')
                g->in_quote = 0;
        } else if (c == '"') {
            g->in_quote = 1;
        } else if (c == '>') {
            end_tag(g);
        }
        return;
    case ENG_DSML_BLOCK:
        if (++g->run > ENG_DSML_RUNAWAY) {
            g->state = ENG_DSML_TEXT;
            g->ntail = 0;
            return;
        }
        /* fall through */
    default: { /* TEXT, VALUE */
        tail_push(g, c);
        int m = tail_marker(g);
        if (m)
            enter_tag(g, m == 2);
        return;
    }
    }
}

void eng_dsml_guard_bytes(eng_dsml_guard *g, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        byte(g, s[i]);
}

void eng_dsml_guard_token(eng_dsml_guard *g, int32_t id)
{
    const eng_dsml_vocab *dv = g->dv;
    if (!dv || !dv->v || id < 0)
        return;
    if (id == dv->think_open && g->state == ENG_DSML_TEXT) {
        g->state = ENG_DSML_THINK;
        g->ntail = 0;
        return;
    }
    if (id == dv->think_close && g->state == ENG_DSML_THINK) {
        g->state = ENG_DSML_TEXT;
        g->ntail = 0;
        return;
    }
    size_t len;
    const char *b = tok_vocab_bytes(dv->v, (uint32_t)id, &len);
    if (b)
        eng_dsml_guard_bytes(g, b, len);
}

void eng_dsml_guard_start(eng_dsml_guard *g, const eng_dsml_vocab *dv, const int32_t *prompt,
                          uint32_t n)
{
    memset(g, 0, sizeof *g);
    g->dv = dv;
    g->state = ENG_DSML_TEXT;
    if (!dv || !dv->v)
        return;
    uint32_t from = n > 4096 ? n - 4096 : 0;
    for (uint32_t i = n; i-- > 0;)
        if (prompt[i] == dv->assistant) {
            from = i + 1;
            break;
        }
    int seen_think = 0;
    for (uint32_t i = from; i < n; i++) {
        if (!seen_think && (prompt[i] == dv->think_open || prompt[i] == dv->think_close)) {
            seen_think = 1;
            g->thinking = prompt[i] == dv->think_open;
        }
        eng_dsml_guard_token(g, prompt[i]);
    }
}
