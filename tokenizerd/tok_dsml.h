/* tok_dsml.h - incremental parser of DeepSeek V4 generated text into
 * reasoning, content and DSML tool calls.
 *
 * Text arrives in arbitrary byte chunks (token texts, possibly splitting tags
 * and UTF-8 sequences). The parser emits events through a callback:
 *   REASONING  text inside <think>...</think>. The opening tag is implicit
 *              when the prompt ended with "<think>" (start_in_reasoning = 1,
 *              i.e. tok_chat_result.ends_with == TOK_CHAT_END_THINK_OPEN); an
 *              explicit "<think>" at the very start of the output also opens it.
 *   CONTENT    visible text. The "\n\n" that precedes a tool-call block is not
 *              content (as in the official parser).
 *   TOOL_CALL  one complete, well-formed invoke of a block
 *                <｜DSML｜tool_calls>
 *                <｜DSML｜invoke name="N">
 *                <｜DSML｜parameter name="K" string="true|false">V</｜DSML｜parameter>
 *                </｜DSML｜invoke>
 *                </｜DSML｜tool_calls>
 *              with its arguments as a JSON object text built like the official
 *              decode_dsml_to_arguments: {"K": V, ...} with ", " and ": ";
 *              string="true" values become JSON strings (Python escaping);
 *              string="false" values are inserted verbatim when they are valid
 *              JSON, else (tolerance) as JSON strings. Whitespace between tags
 *              and attributes in any order are accepted.
 *   END        once: at "<｜end▁of▁sentence｜>" in the text (the rest is
 *              ignored) or at tok_dsml_finish().
 * Text is emitted as soon as it cannot be the start of a tag: only a possible
 * tag prefix (and an incomplete UTF-8 sequence at the end of a chunk) is held
 * back, so event texts are whole UTF-8 when the input is. A tool call is
 * emitted when its </｜DSML｜invoke> arrives. Malformed DSML (unknown tags or
 * attributes, bad string="..." values, duplicate parameters, a block cut off
 * by the end of output or by EOS, or more than the pending limit of
 * unfinished invoke text) falls back: the raw text of the unfinished invoke
 * (or block opening) is emitted as CONTENT and parsing goes on in content.
 * Memory stays bounded by that limit. Never crashes on any input.
 */
#ifndef TOK_DSML_H
#define TOK_DSML_H

#include <stddef.h>

enum tok_dsml_ev_type {
    TOK_DSML_EV_REASONING = 0,
    TOK_DSML_EV_CONTENT = 1,
    TOK_DSML_EV_TOOL_CALL = 2,
    TOK_DSML_EV_END = 3,
};

struct tok_dsml_event {
    int type;            /* enum tok_dsml_ev_type */
    const char *text;    /* REASONING / CONTENT bytes */
    size_t len;
    int call_index;      /* TOOL_CALL: 0, 1, ... over the whole output */
    const char *name;    /* TOOL_CALL: function name (raw attribute bytes) */
    size_t name_len;
    const char *args;    /* TOOL_CALL: JSON object text */
    size_t args_len;
};

/* Pointers in ev are valid only during the call. */
typedef void (*tok_dsml_cb)(void *ud, const struct tok_dsml_event *ev);

/* What the text being generated is, for the engine's greedy-in-DSML state
 * machine (SPEC §4): structure is sampled greedily, values and text are not. */
enum tok_dsml_struct {
    TOK_DSML_ST_TEXT = 0,       /* reasoning or content text */
    TOK_DSML_ST_STRUCT = 1,     /* inside DSML tags, attribute headers, between
                                   tags, or a held-back "…｜DSML｜" tag start */
    TOK_DSML_ST_VALUE_STR = 2,  /* inside a string="true" parameter value */
    TOK_DSML_ST_VALUE_JSON = 3, /* inside a string="false" parameter value */
    TOK_DSML_ST_DONE = 4,       /* END was emitted */
};

#define TOK_DSML_DEFAULT_LIMIT (16u << 20) /* bytes of unfinished invoke text */

struct tok_dsml;

struct tok_dsml *tok_dsml_new(int start_in_reasoning, tok_dsml_cb cb, void *ud);
/* Change the pending limit (bytes of one unfinished invoke kept for fallback). */
void tok_dsml_set_limit(struct tok_dsml *p, size_t limit);
/* Feed the next bytes of generated text. */
void tok_dsml_feed(struct tok_dsml *p, const char *s, size_t n);
/* End of output: flush held-back text, fall back on an unfinished block, END. */
void tok_dsml_finish(struct tok_dsml *p);
/* Current structure state (see enum tok_dsml_struct). */
int tok_dsml_struct_state(const struct tok_dsml *p);
/* Number of tool calls emitted so far. */
int tok_dsml_n_calls(const struct tok_dsml *p);
void tok_dsml_free(struct tok_dsml *p);

#endif
