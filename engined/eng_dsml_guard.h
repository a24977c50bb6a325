/* eng_dsml_guard.h - where the model is inside DSML tool-call structure,
 * so that engined samples that structure greedily (SPEC §4, ds4's "tool
 * calling": temperature 0 for tags and parameter headers, the request's
 * sampling for argument values and for text).
 *
 * A byte-level state machine over the texts of the generated tokens (the
 * bytes tokenizer.ggml.tokens stands for, from tok_vocab): no round trip
 * to tokenizerd per token.
 *
 *   THINK  reasoning after "<think>": never structure; "</think>" -> TEXT
 *   TEXT   content; "<｜DSML｜" (or "</｜DSML｜", or the variants with the
 *          first bar omitted, "<DSML｜") starts a TAG
 *   TAG    the rest of a DSML tag up to its '>' (outside double quotes):
 *          structure. Then, by where it started and what it was:
 *            from TEXT:  <…tool_calls> -> BLOCK; anything else -> TEXT
 *            from BLOCK: <…parameter …> -> VALUE; </…tool_calls> -> TEXT;
 *                        else (invoke open/close) -> BLOCK
 *            from VALUE: </…parameter> -> BLOCK; else -> VALUE
 *   BLOCK  between tags inside a tool_calls block: structure; a new tag
 *          starts at a marker as above
 *   VALUE  a parameter value (string or JSON): sampled normally; the
 *          closing "</｜DSML｜" starts a TAG
 * Greedy is forced in TAG and BLOCK. So that a model that wandered off
 * the format is not held greedy forever, more than ENG_DSML_RUNAWAY bytes
 * in BLOCK without a tag, or a tag longer than that, fall back to TEXT.
 *
 * The start state comes from the prompt: the tokens after the last
 * "<｜Assistant｜>" are fed first (so a prompt that ends inside a tool call
 * is handled), "<think>" there meaning the turn is in thinking mode. */
#ifndef DS4_ENG_DSML_GUARD_H
#define DS4_ENG_DSML_GUARD_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizerd/tok_vocab.h"

#define ENG_DSML_RUNAWAY 4096

enum eng_dsml_state {
    ENG_DSML_THINK = 0,
    ENG_DSML_TEXT = 1,
    ENG_DSML_TAG = 2,
    ENG_DSML_BLOCK = 3,
    ENG_DSML_VALUE = 4,
};

/* Special token ids the guard needs, looked up by text once. */
typedef struct eng_dsml_vocab {
    const tok_vocab *v;
    int32_t think_open, think_close, assistant;
} eng_dsml_vocab;

typedef struct eng_dsml_guard {
    const eng_dsml_vocab *dv;
    int state;          /* enum eng_dsml_state */
    int tag_from;       /* state the current TAG started in */
    int tag_close;      /* the tag started with "</" */
    int in_quote;
    int thinking;       /* the turn opened with <think> */
    uint32_t run;       /* bytes in the current BLOCK stretch or TAG */
    char tail[16];      /* last bytes seen (marker detection) */
    uint8_t ntail;
    char name[16];      /* tag name read so far */
    uint8_t nname;
    uint8_t name_done;
} eng_dsml_guard;

/* Find the special tokens; 0, or -1 when the vocabulary lacks them. */
int eng_dsml_vocab_init(eng_dsml_vocab *dv, const tok_vocab *v);

/* Start a guard in state TEXT, then feed the prompt's last assistant turn
 * (ids after the last <｜Assistant｜>; at most the last 4096 ids when
 * there is none). */
void eng_dsml_guard_start(eng_dsml_guard *g, const eng_dsml_vocab *dv,
                          const int32_t *prompt, uint32_t n);

/* Advance over one token (its bytes, or the think tokens by id). */
void eng_dsml_guard_token(eng_dsml_guard *g, int32_t id);

/* Advance over raw bytes (exposed for tests). */
void eng_dsml_guard_bytes(eng_dsml_guard *g, const char *s, size_t n);

/* 1 when the next token must be chosen greedily. */
static inline int eng_dsml_guard_greedy(const eng_dsml_guard *g)
{
    return g->state == ENG_DSML_TAG || g->state == ENG_DSML_BLOCK;
}

#endif
