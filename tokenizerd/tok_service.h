/* tok_service.h - tokenizerd's request handlers as plain functions: a
 * decoded request (ds4w_msg) in, a reply (ds4w_out) or an error code with
 * a message out. No sockets, so the unit test drives every handler directly
 * and the daemon's loop only receives, dispatches and sends.
 *
 * Requests served (docs/PROTOCOL.md §5.1, §5.2):
 *   PING          -> PONG (ready once the vocabulary is loaded)
 *   STATS_GET     -> STATS (the tokenizerd counters of the stats segment)
 *   TOKENIZE      -> TOKENS   text, mode "plain" (default) | "raw", add_bos
 *   DETOKENIZE    -> TEXT     ids + carried incomplete UTF-8 tail (BYTES,
 *                             at most 3 bytes, a well-formed prefix),
 *                             skip_special, final
 *   RENDER_CHAT   -> RENDERED messages, tools, thinking, reasoning_effort,
 *                             n_ctx, add_generation_prompt (only true), and
 *                             options {drop_thinking: bool, add_bos: bool}
 *   COUNT_TOKENS  -> TOKEN_COUNT  messages (rendered as RENDER_CHAT) or text
 *                             (plain mode); exactly one of the two
 *
 * Chat tokenization (tok_chat.h): added tokens are looked up only inside
 * TEMPLATE pieces; every maximal run of other text, across piece
 * boundaries, is one plain-mode chunk. A RAW piece (exact replay of an
 * earlier assistant turn) is tokenized like template text (the model
 * sampled its DSML and other added tokens as tokens), unless the message's
 * "_ds4_raw" carries the sampled ids: "reasoning_ids" / "body_ids" (arrays
 * of token ids whose bytes must equal the replayed text exactly), which are
 * then used verbatim.
 *
 * Every range or meaning problem is answered with invalid_request naming
 * the field (e.g. "ids[3]", "mode", "messages[2].role"). */
#ifndef DS4_TOK_SERVICE_H
#define DS4_TOK_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "stats.h"
#include "tok_bpe.h"
#include "tok_vocab.h"
#include "wire.h"

#ifndef TOKENIZERD_VERSION
#define TOKENIZERD_VERSION "0.1.0"
#endif

#define TOK_SVC_FIELD_MAX 128

typedef struct tok_service {
    const tok_vocab *v;        /* shared, not owned */
    tok_encoder *enc;          /* owned */
    ds4_stats *stats;          /* may be NULL (no counting) */
    const char *model;         /* GGUF or tokenizer.json path, for PONG/STATS */
    int32_t bos_id;            /* "<｜begin▁of▁sentence｜>", -1 if absent */
    uint64_t start_ns;
    int test_mode;
    char field[TOK_SVC_FIELD_MAX]; /* field named by the last error */
} tok_service;

/* Prepare a service over a loaded vocabulary. 0, or -1 + err. */
int tok_service_init(tok_service *s, const tok_vocab *v, ds4_stats *stats,
                     const char *model, char *err, size_t errlen);
void tok_service_fini(tok_service *s);

/* Handle one decoded request m. Returns DS4W_OK with the reply built in
 * *out (initialised here; the caller sends or frees it), or an error code
 * (enum ds4w_err) with a human message in err and, for invalid_request,
 * the offending field in *field (NULL if none; points into s). On error
 * *out is left freed/empty. Counts the request in the stats. */
int tok_service_handle(tok_service *s, const ds4w_msg *m, ds4w_out *out,
                       const char **field, char *err, size_t errlen);

/* The chat tokenization of a rendered prompt (see above), appended to ids.
 * raw_ids_json: the messages array (to find "_ds4_raw" ids), or NULL.
 * DS4W_OK, or DS4W_E_INVALID_REQUEST / DS4W_E_INTERNAL + err (+ field). */
struct tok_chat_result;
int tok_service_chat_ids(tok_service *s, const struct tok_chat_result *r,
                         const void *messages_json, tok_ids *ids,
                         const char **field, char *err, size_t errlen);

#endif
