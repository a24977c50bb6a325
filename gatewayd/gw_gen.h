/* gw_gen.h - one generation request through the pipeline, independent of
 * the HTTP API that asked for it:
 *
 *   prepare  RENDER_CHAT (or TOKENIZE for /v1/completions) at tokenizerd;
 *            test-mode forced output tokenized; tool_choice required/named
 *            prefills the DSML opening; max_tokens clamped to the context
 *            (a prompt that does not fit is a 400, never truncated)
 *   submit   GEN_SUBMIT to engined, wait for GEN_ACCEPTED or its refusal
 *            (busy -> 429 + Retry-After, context_overflow -> 400, ...)
 *   step     one engine message at a time: token ids are detokenized here
 *            (tok_detok over the gateway's own copy of the vocabulary: no
 *            round trip per token), parsed into reasoning / content / DSML
 *            tool calls (tok_dsml), stop strings cut the content, and the
 *            API module's stream hooks turn each piece into SSE events
 *   finish   GEN_DONE gives finish reason and usage; the exact text and ids
 *            of the turn go to the replay memory under the ids the client
 *            got (tool-call ids, signature, message id, content hash).
 *
 * The API modules (gw_openai.c, gw_responses.c, gw_anthropic.c) provide a
 * gw_api_ops: stream hooks writing into g->sse, and a builder of the
 * non-streaming response body from what the driver accumulated.
 *
 * A gw_gen is used by one thread (the HTTP connection's). */
#ifndef DS4_GW_GEN_H
#define DS4_GW_GEN_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <pthread.h>

#include "gw_json.h"
#include "gw_replay.h"
#include "gw_req.h"
#include "gw_upstream.h"
#include "stats.h"
#include "tokenizerd/tok_detok.h"
#include "tokenizerd/tok_vocab.h"

/* Daemon-wide context, read-only after start (n_ctx updated atomically). */
typedef struct gw_ctx {
    gw_up *up;
    const tok_vocab *vocab;
    gw_replay *replay;
    ds4_stats *stats;          /* may be NULL */
    int test_mode;
    uint32_t n_ctx;            /* engine context size (tokens) */
    int keepalive_ms;          /* SSE comment interval while idle */
    int stage_timeout_ms;      /* tokenizerd replies, engined acceptance */
    const char *model_name;    /* advertised id ("deepseek-v4-flash") */
    const char *instance;      /* stack instance (stats segments) */
    int64_t start_time;        /* unix time the gateway started */
    int32_t eos_id, think_end_id;
    json_t *test_script;       /* test mode: scripted answers (gw_ctx_script_pick) */
    unsigned char *script_used;
    pthread_mutex_t script_mu;
} gw_ctx;

/* Test mode, for running real agents deterministically (--test-script): the
 * script is a JSON array whose entries are assistant texts, or
 * {"match": S, "output": T} for requests whose canonical messages (as JSON)
 * contain S. The candidates of a request are the entries whose match string
 * occurs, else (none does) the bare texts; it is forced to the first unused
 * candidate, or, once all were used, to the last one again. A request that
 * carries ds4_test_output keeps it. NULL when there is no candidate. */
const char *gw_ctx_script_pick(gw_ctx *cx, const json_t *messages, const char *rid);
/* Check the shape of a script: 0, or -1 with a message. */
int gw_script_check(const json_t *script, char *err, size_t errlen);

/* Publish the vocabulary (with eos_id / think_end_id) to the connection
 * threads; until then generation requests are answered 503. */
void gw_ctx_set_vocab(gw_ctx *cx, const tok_vocab *v);
/* The vocabulary, or NULL while not loaded. */
const tok_vocab *gw_ctx_vocab(gw_ctx *cx);

enum gw_finish {
    GW_FIN_NONE = 0,
    GW_FIN_STOP,       /* end of sentence */
    GW_FIN_TOOL_CALLS, /* stopped after tool calls */
    GW_FIN_STOP_SEQ,   /* a client stop string matched */
    GW_FIN_LENGTH,     /* max_tokens or the context ran out */
    GW_FIN_CANCELLED,  /* the client went away */
    GW_FIN_ERROR,      /* the engine failed mid-stream (g->err) */
};

typedef struct gw_call {
    char id[64];        /* call_..., toolu_... */
    char item_id[64];   /* Responses function_call item id */
    char *name;
    char *args;         /* JSON object text */
} gw_call;

typedef struct gw_gen gw_gen;

typedef struct gw_api_ops {
    const char *call_prefix;   /* tool-call id prefix: "call_", "toolu_" */
    /* streaming hooks (write SSE into g->sse) */
    void (*s_begin)(gw_gen *g);                  /* after GEN_ACCEPTED */
    void (*s_reasoning)(gw_gen *g, const char *s, size_t n);
    void (*s_content)(gw_gen *g, const char *s, size_t n);
    void (*s_tool_call)(gw_gen *g, size_t i);    /* g->calls[i] complete */
    void (*s_logprobs)(gw_gen *g, json_t *entries); /* may be NULL */
    void (*s_end)(gw_gen *g);                    /* finish or error: final events */
    /* the non-streaming response body */
    json_t *(*body)(gw_gen *g);
} gw_api_ops;

struct gw_gen {
    gw_ctx *cx;
    gw_req *req;
    const gw_api_ops *ops;
    gw_waiter *w;
    char rid[DS4W_UUID_STR];   /* request id text, for logs */
    int hup_fd;                /* client socket, -1 if unknown */

    /* prompt */
    int32_t *prompt;
    size_t nprompt;
    int start_in_reasoning;    /* the prompt ends with "<think>" */
    int32_t *forced;           /* test-mode forced output ids */
    size_t nforced;
    char *prefix_text;         /* prefilled assistant text (tool_choice) */
    int32_t *prefix;
    size_t nprefix;
    int64_t max_tokens;        /* sent to the engine, -1: none */

    /* engine stream */
    int submitted, accepted, done;
    uint32_t next_seq;
    int32_t *out;              /* every generated id */
    size_t nout, capout;
    int seen_think_end;
    size_t n_reasoning_tokens;
    tok_detok detok;
    tok_buf tbuf;              /* scratch for detokenized text */
    struct tok_dsml *dsml;     /* NULL for plain completions */
    int stop_hit;              /* a stop string matched: ignore the rest */
    gw_buf hold;               /* content held back for stop matching */
    uint64_t first_token_ns, start_ns;

    /* accumulated output */
    gw_buf reasoning, content;
    gw_call *calls;
    size_t ncalls;
    json_t *logprobs;          /* array of {id, logprob, top} or NULL */

    /* finish */
    int finish;                /* enum gw_finish */
    const char *stop_seq;      /* the matched stop string */
    uint64_t prompt_tokens, cached_tokens, completion_tokens;
    json_t *timings;
    gw_err err;
    int failed;                /* err is set; nothing more will come */

    /* response identity */
    char id[64];               /* chatcmpl-..., msg_..., resp_... */
    char turn_key[64];         /* replay key given to the client */
    char msg_item[64], rs_item[64];
    int64_t created;

    /* streaming */
    int stream;
    gw_buf sse;                /* SSE bytes not yet handed to the client */
    int began, ended;
    /* per-API stream state */
    int s_idx;                 /* next content block / output index */
    int s_open;                /* open block kind (API-defined), 0 none */
    int s_open_idx;
    int s_seq;                 /* Responses sequence_number */
    int s_rs_idx, s_msg_idx;   /* Responses output indices, -1 none */
    json_t *s_items;           /* Responses: output items completed so far */
    char s_item[64];           /* Responses: id of the open message item */
};

/* Set up g for req (the waiter is created here). reqid: the HTTP
 * request's UUID (NULL: a new one); hup_fd: the client's socket for
 * disconnect detection, or -1. */
void gw_gen_init(gw_gen *g, gw_ctx *cx, gw_req *req, const gw_api_ops *ops,
                 const uint8_t reqid[16], int hup_fd);
void gw_gen_free(gw_gen *g);

/* Render or tokenize the prompt and check it against the context. 0, or
 * -1 with g->err (400, 413, 503, ...). */
int gw_gen_prepare(gw_gen *g);
/* Submit to engined and wait for acceptance. 0, -1 with g->err, or -2
 * when the client went away meanwhile. */
int gw_gen_submit(gw_gen *g);
/* Process at most one engine message, waiting up to timeout_ms. Returns 1
 * when something was processed (g->done set at the end), 0 on timeout,
 * -1 when the client went away (the job is cancelled), -2 on shutdown. */
int gw_gen_step(gw_gen *g, int timeout_ms);
/* Cancel the engine job if it is still running. */
void gw_gen_cancel(gw_gen *g, const char *why);

/* Count tokens (/v1/messages/count_tokens) at tokenizerd. 0 with *count,
 * or -1 with e. */
int gw_count_tokens(gw_ctx *cx, gw_req *req, const uint8_t reqid[16], int hup_fd,
                    uint64_t *count, gw_err *e);

/* Map a wire error code (+ message, retry_after_ms) to a gw_err. */
void gw_err_from_wire(gw_err *e, int code, const char *msg, const char *field,
                      unsigned retry_after_ms);

/* Finish-reason strings per API. */
const char *gw_finish_openai(int finish);
const char *gw_finish_anthropic(int finish);

/* Create the output parser (prepare does it; exposed for tests). */
void gw_gen_start_output(gw_gen *g, int start_in_reasoning);
/* The job was accepted: stream begins (submit does it; exposed for tests). */
void gw_gen_on_accepted(gw_gen *g, uint64_t cached);
/* Feed text/ids of one GEN_EVENT (exposed for the unit tests, which drive
 * the parsing without an engine). */
void gw_gen_feed_ids(gw_gen *g, const int32_t *ids, size_t n, json_t *logprobs);
/* Test mode only: the engine's GEN_DONE timings and the gateway's own
 * time to first token as one SSE comment, ": ds4-timings {json}" (ignored
 * by SSE clients; ds4-gwbench subtracts them from what it observes). */
void gw_gen_timings_comment(gw_gen *g);
/* Complete the stream as GEN_DONE would (exposed for tests). */
void gw_gen_complete(gw_gen *g, const char *engine_finish, uint64_t prompt_tokens,
                     uint64_t cached, uint64_t completion);

#endif
