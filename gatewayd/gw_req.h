/* gw_req.h - the gateway's internal request: what every HTTP API (OpenAI
 * chat and completions, Responses, Anthropic messages and count_tokens)
 * is mapped to before anything is sent to tokenizerd or engined.
 *
 * Mapping rules shared by all APIs (SPEC §6):
 *   - system text: OpenAI/Codex "system" and "developer" messages,
 *     Responses "instructions", Anthropic "system" blocks and a
 *     "system"-role message anywhere in a conversation are joined, in
 *     order, by blank lines into ONE leading system message (as ds4's
 *     server does; tokenizerd renders the tools block after it, as the
 *     official encoder does). Claude Code's volatile billing block
 *     ("x-anthropic-billing-header: ...") is dropped first, so the prefix
 *     stays byte-stable across requests.
 *   - tools: function definitions become {"type":"function","function":
 *     {name, description, parameters}}; tool kinds that are not plain
 *     functions (Codex's "namespace" and "web_search", Anthropic server
 *     tools) are ignored, not refused.
 *   - assistant turns the gateway generated get "_ds4_raw" from the replay
 *     memory (gw_replay.h), so they render to the ids the model sampled.
 *   - unknown fields are ignored; known fields of the wrong type are 400s
 *     naming the field. */
#ifndef DS4_GW_REQ_H
#define DS4_GW_REQ_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "gw_json.h"
#include "gw_replay.h"

enum gw_api {
    GW_API_CHAT = 1,        /* POST /v1/chat/completions */
    GW_API_COMPLETIONS = 2, /* POST /v1/completions */
    GW_API_RESPONSES = 3,   /* POST /v1/responses */
    GW_API_MESSAGES = 4,    /* POST /v1/messages */
    GW_API_COUNT = 5,       /* POST /v1/messages/count_tokens */
};

enum gw_tool_choice {
    GW_TC_AUTO = 0,     /* the model decides */
    GW_TC_NONE = 1,     /* no tools offered this turn */
    GW_TC_REQUIRED = 2, /* must call some tool (Anthropic "any") */
    GW_TC_NAMED = 3,    /* must call tool_name */
};

#define GW_MAX_STOP 16

typedef struct gw_req {
    int api;                /* enum gw_api */
    int stream;
    char *model;            /* as the client named it, or NULL */

    /* chat-shaped prompt (all APIs but completions) */
    json_t *messages;       /* canonical RENDER_CHAT messages (owned) */
    json_t *tools;          /* canonical tools or NULL (owned) */
    int tool_choice;        /* enum gw_tool_choice */
    char *tool_name;        /* GW_TC_NAMED */
    int parallel_tool_calls;/* 0: keep only the first call */
    json_t *response_format;/* JSON schema the answer must follow, or NULL */
    int thinking;           /* 1 thinking mode (default), 0 chat mode */
    int effort_max;         /* reasoning effort "max" (Think Max) */

    /* completion-shaped prompt */
    char *prompt;           /* text, or NULL when prompt_ids is used */
    int32_t *prompt_ids;
    size_t n_prompt_ids;

    /* sampling and limits */
    int64_t max_tokens;     /* -1: not given (the rest of the context) */
    int has_temperature, has_top_p, has_min_p, has_seed;
    double temperature, top_p, min_p;
    int64_t top_k;          /* -1: not given */
    int64_t seed;
    char *stop[GW_MAX_STOP];
    size_t n_stop;
    int logprobs;           /* 1: return logprobs */
    int top_logprobs;       /* alternatives per token (0..20) */

    /* output shaping */
    int include_usage;      /* chat streaming: usage chunk before [DONE] */
    int include_encrypted;  /* responses: reasoning.encrypted_content */
    int echo;               /* completions: echo the prompt */

    /* test-only forced decoding (accepted only with --test-mode) */
    char *test_output;      /* assistant text to force, tokenized raw */

    /* session hint for the engine (prompt_cache_key, user, ...) */
    char *session;

    /* filled by the mapping, for logs and tests */
    int n_system_parts;     /* system texts joined */
    int n_replayed;         /* assistant turns given _ds4_raw */
    int n_ignored_tools;    /* non-function tools skipped */
    int billing_stripped;   /* Claude Code billing block removed */
} gw_req;

/* Limits and switches the mapping needs from the daemon's configuration. */
typedef struct gw_map_opts {
    gw_replay *replay;      /* may be NULL: no exact replay */
    int test_mode;          /* accept "ds4_test_output" */
    const char *model_name; /* advertised model id */
} gw_map_opts;

void gw_req_init(gw_req *r, int api);
void gw_req_free(gw_req *r);

/* Map one decoded JSON body to r (initialised by the caller with
 * gw_req_init). 0, or -1 with e filled (400 naming the field, or 403 for
 * a test-only field outside test mode). */
int gw_map_chat(const json_t *body, const gw_map_opts *o, gw_req *r, gw_err *e);
int gw_map_completions(const json_t *body, const gw_map_opts *o, gw_req *r, gw_err *e);
int gw_map_responses(const json_t *body, const gw_map_opts *o, gw_req *r, gw_err *e);
int gw_map_messages(const json_t *body, const gw_map_opts *o, gw_req *r, gw_err *e);
int gw_map_count_tokens(const json_t *body, const gw_map_opts *o, gw_req *r, gw_err *e);

/* Dispatch on r->api. */
int gw_map(const json_t *body, const gw_map_opts *o, gw_req *r, gw_err *e);

/* ---- helpers shared by the API mappers (gw_req.c) ---------------------- */

/* A conversation being built: system text parts and the other messages. */
typedef struct gw_conv {
    gw_buf system;          /* joined system text */
    int n_system;
    json_t *msgs;           /* non-system canonical messages */
    const gw_map_opts *o;
    gw_req *r;
} gw_conv;

void gw_conv_init(gw_conv *c, const gw_map_opts *o, gw_req *r);
/* Add system text (skips Claude Code's billing block and empty text). */
void gw_conv_system(gw_conv *c, const char *s, size_t n);
/* Append a user message with text content. */
void gw_conv_user(gw_conv *c, const char *s, size_t n);
/* Append a tool result. */
void gw_conv_tool(gw_conv *c, const char *call_id, const char *s, size_t n);
/* An assistant turn under construction. */
typedef struct gw_asst {
    gw_buf content;
    gw_buf reasoning;
    int has_reasoning;
    json_t *calls;          /* canonical tool_calls array */
    char *keys[8];          /* replay keys besides call ids */
    int nkeys;
} gw_asst;
void gw_asst_init(gw_asst *a);
void gw_asst_key(gw_asst *a, const char *key);
/* Add one call: arguments as JSON text (an object is dumped first). */
void gw_asst_call(gw_asst *a, const char *id, const char *name, const char *args);
/* Finish: look up the replay memory, append the canonical message, free a. */
void gw_conv_assistant(gw_conv *c, gw_asst *a);
/* Build r->messages: [system] + msgs. */
void gw_conv_finish(gw_conv *c);
void gw_conv_free(gw_conv *c);

/* Append a tool definition (name required); params may be NULL. */
void gw_tools_add(gw_req *r, const char *name, const char *desc, const json_t *params);

/* Text of a content value that is a string or an array of text parts
 * (types listed in ok_types, e.g. "text", "input_text"); other part types
 * are 400s naming path. Returns 0 with the text appended to out. */
int gw_content_text(const json_t *v, const char *path, const char *const *ok_types,
                    gw_buf *out, gw_err *e);

/* Sampling fields common to OpenAI-style bodies: temperature, top_p,
 * top_k, min_p, seed. */
int gw_map_sampling(const json_t *body, gw_req *r, gw_err *e);
/* "stop": string or array of strings (at most GW_MAX_STOP). */
int gw_map_stop(const json_t *body, const char *key, gw_req *r, gw_err *e);
/* reasoning effort text -> thinking/effort_max ("none" turns thinking off,
 * "max" is Think Max, every other known level is normal thinking). */
int gw_map_effort(const char *effort, const char *path, gw_req *r, gw_err *e);
/* OpenAI response_format ({type: json_schema, json_schema: {schema}} or
 * {type: json_object}) / Responses text.format ({type: json_schema,
 * schema}) -> r->response_format, rendered by tokenizerd as the official
 * "## Response Format" block after the system text; "text" is nothing. */
int gw_map_response_format(const json_t *fmt, const char *path, gw_req *r, gw_err *e);
/* ds4_test_output (test mode only). */
int gw_map_test_output(const json_t *body, const gw_map_opts *o, gw_req *r, gw_err *e);

#endif
