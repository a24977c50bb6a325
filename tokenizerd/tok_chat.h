/* tok_chat.h - DeepSeek V4 chat rendering, byte-identical to the official
 * encoder (encoding_dsv4.py semantics; strings from
 * tests/data/dsv4-encoding/official-encoder-constants.json), producing the
 * prompt both as one text and as a sequence of pieces that tell the
 * tokenizer where control tokens may be recognised.
 *
 * INPUT (canonical message JSON, UTF-8). Either a bare array of messages, or
 * an object:
 *   { "messages": [...],                         required
 *     "tools": [...],                            optional, see below
 *     "thinking_mode": "thinking" | "chat",      overrides opts->thinking
 *     "thinking": true | false,                  same, as a boolean
 *     "reasoning_effort": "max" | "high" | null, overrides opts->effort_max
 *     "drop_thinking": bool,  "add_bos": bool,   override the options
 *     "context_size": integer }                  overrides opts->ctx_size
 * Unknown top-level and message fields are ignored. Message fields:
 *   role             system | developer | user | assistant | tool | latest_reminder
 *   content          string or null (tool: also an array of {type,text} blocks;
 *                    developer: a non-empty string)
 *   reasoning_content  string or null (assistant)
 *   tool_calls       [{id?, type?, function:{name, arguments}}] (assistant);
 *                    arguments is a JSON text (or an object); text that is not
 *                    a JSON object is rendered as one string parameter
 *                    "arguments", as the official encoder does for bad JSON
 *   tool_call_id     string (tool; orders parallel results by call order)
 *   tools            [{type:"function", function:{...}}] or bare function
 *                    objects (system, developer, latest_reminder, assistant;
 *                    ignored on user messages, as upstream)
 *   response_format  object (system, developer)
 *   task             action | query | authority | domain | title | read_url
 *   wo_eos           bool (assistant: no end-of-sentence, for prefill)
 *   _ds4_raw         {"reasoning": string|null, "body": string|null}
 *                    (assistant; exact replay, see below)
 * A top-level "tools" list attaches to messages[0] when that is a system or
 * developer message without tools of its own; otherwise an empty system
 * message carrying it is put first. null content renders as "".
 *
 * RENDERING follows the official encoder: tool messages merge into user turns
 * as <tool_result> blocks, consecutive user turns merge with blank lines,
 * earlier reasoning is dropped in thinking mode unless a message carries tools
 * (then developer messages before the last user turn are dropped too), task
 * tokens and the generation prefix "<｜Assistant｜><think>" / "</think>" follow
 * the last user/developer message. "Think Max" (reasoning_effort "max") is
 * context-gated like ds4: it applies only in thinking mode and when the
 * context size is at least TOK_CHAT_THINK_MAX_MIN_CTX; otherwise it falls back
 * to normal thinking (result->think_max tells which happened).
 *
 * EXACT REPLAY (SPEC §5). An assistant message may carry "_ds4_raw": the
 * exact text the model generated for that turn, split at its </think>:
 *   reasoning  the text between "<think>" and "</think>" (exclusive)
 *   body       the text after "</think>" (or after the prompt's "</think>" in
 *              chat mode) up to but excluding the end-of-sentence token:
 *              content plus the DSML tool-call block exactly as sampled.
 * When present, "reasoning" replaces reasoning_content where the turn shows
 * its reasoning, and "body" replaces content + tool_calls. Each becomes one
 * TOK_PIECE_RAW piece (msg_index = the assistant message's index in the input
 * array, raw_field says which) that the caller tokenizes from the token ids it
 * stored for that text instead of re-tokenizing; "</think>" and the EOS around
 * them stay TEMPLATE pieces. A turn whose reasoning is dropped simply omits the
 * reasoning piece.
 *
 * PIECES. TOK_PIECE_TEMPLATE: text from the template (control tokens such as
 * "<｜User｜>", "<think>", "｜DSML｜" are to be looked up as added tokens here).
 * TOK_PIECE_CONTENT: user-supplied text, tokenized as plain text with no
 * added-token splitting. Pieces are NOT pre-tokenization boundaries: to match
 * the HF tokenization of the golden prompts, split only at the added tokens
 * found in TEMPLATE pieces (and at RAW pieces) and run the pre-tokenizer over
 * each whole text run between them, across piece boundaries (e.g. the
 * system text "…assistant." and the template "\n\n" form one chunk ".\n\n").
 */
#ifndef TOK_CHAT_H
#define TOK_CHAT_H

#include <stddef.h>
#include <stdint.h>

#define TOK_CHAT_THINK_MAX_MIN_CTX 393216u /* ds4's DS4_THINK_MAX_MIN_CONTEXT */

enum tok_piece_kind { TOK_PIECE_TEMPLATE = 0, TOK_PIECE_CONTENT = 1, TOK_PIECE_RAW = 2 };
enum tok_raw_field { TOK_RAW_NONE = 0, TOK_RAW_REASONING = 1, TOK_RAW_BODY = 2 };
/* How the rendered prompt ends (what the parser should expect first). */
enum tok_chat_end { TOK_CHAT_END_OTHER = 0, TOK_CHAT_END_THINK_OPEN = 1, TOK_CHAT_END_THINK_CLOSE = 2 };

struct tok_chat_opts {
    int thinking;       /* 1: thinking mode, 0: chat mode */
    int effort_max;     /* 1: reasoning_effort "max" requested */
    int drop_thinking;  /* official default 1 */
    int add_bos;        /* official default 1 */
    uint64_t ctx_size;  /* context size, gates Think Max */
};

struct tok_chat_piece {
    int kind;       /* enum tok_piece_kind */
    size_t off;     /* byte range in tok_chat_result.text */
    size_t len;
    int msg_index;  /* index in the input messages array, -1 for BOS etc. */
    int raw_field;  /* enum tok_raw_field (RAW pieces only) */
};

struct tok_chat_result {
    char *text;     /* NUL-terminated concatenation of all pieces */
    size_t len;
    struct tok_chat_piece *pieces;
    size_t n_pieces;
    int ends_with;  /* enum tok_chat_end */
    int thinking;   /* effective mode after JSON overrides */
    int think_max;  /* 1 if the Think Max prefix was rendered */
};

/* Growable byte buffer (also used by tok_dsml). */
struct tok_chat_sb {
    char *p;
    size_t len, cap;
};

/* Defaults of the official encoder: thinking, drop_thinking, BOS, no max. */
void tok_chat_opts_default(struct tok_chat_opts *o);

/* Render the canonical message JSON [json, json+len). Returns 0 and fills
 * *out (free with tok_chat_result_free), or -1 with a message naming the
 * offending field (e.g. "messages[2].role: unknown role \"bot\"") in err. */
int tok_chat_render(const char *json, size_t len, const struct tok_chat_opts *opts,
                    struct tok_chat_result *out, char *err, size_t errlen);

void tok_chat_result_free(struct tok_chat_result *r);

/* An official encoder constant by its name in official-encoder-constants.json
 * ("bos_token", "TOOLS_TEMPLATE", "DS_TASK_SP_TOKENS.action", ...); NULL if
 * unknown. */
const char *tok_chat_constant(const char *name);

/* Byte-buffer helpers. */
void tok_chat_sb_put(struct tok_chat_sb *b, const void *s, size_t n);
void tok_chat_sb_puts(struct tok_chat_sb *b, const char *s);
void tok_chat_sb_free(struct tok_chat_sb *b);

/* Append [s, s+n) as a JSON string literal exactly as Python's
 * json.dumps(ensure_ascii=False) writes it; invalid UTF-8 bytes become U+FFFD. */
void tok_chat_json_quote(struct tok_chat_sb *b, const char *s, size_t n);

/* 1 if [s, s+n) is exactly one JSON value (surrounding whitespace allowed). */
int tok_chat_json_valid(const char *s, size_t n);

/* Re-serialize one JSON value the way Python json.dumps(json.loads(s),
 * ensure_ascii=False) would (key order kept, ", " and ": " separators,
 * Python float repr). Returns 0, or -1 if s is not valid JSON. */
int tok_chat_json_canon(const char *s, size_t n, struct tok_chat_sb *out);

#endif
