/* gw_api.h - the per-API modules: request mapping (gw_req.h) and output
 * (gw_gen.h's gw_api_ops) of each HTTP API, and each API's error shape.
 *
 *   gw_openai.c     /v1/chat/completions, /v1/completions
 *   gw_responses.c  /v1/responses (stateless, Codex's event sequence)
 *   gw_anthropic.c  /v1/messages, /v1/messages/count_tokens
 *
 * Error bodies:
 *   OpenAI and Responses: {"error":{"message","type","param","code"}}
 *   Anthropic:            {"type":"error","error":{"type","message"}}
 * The "type" matters to agents (opencode retries a 400 only when its type
 * is server_error), so client mistakes are always invalid_request_error. */
#ifndef DS4_GW_API_H
#define DS4_GW_API_H

#include <jansson.h>

#include "gw_gen.h"
#include "gw_json.h"

extern const gw_api_ops gw_ops_chat;
extern const gw_api_ops gw_ops_completions;
extern const gw_api_ops gw_ops_responses;
extern const gw_api_ops gw_ops_messages;

/* The ops of an API (enum gw_api); NULL for count_tokens. */
const gw_api_ops *gw_api_ops_for(int api);

/* Error body in the API's shape (a new object). */
json_t *gw_error_json(int api, const gw_err *e);
json_t *gw_openai_error_json(const gw_err *e);
json_t *gw_anthropic_error_json(const gw_err *e);

/* OpenAI chat logprobs content entries from engine entries
 * ({id, logprob, top:[[id, lp]...]}), with at most top alternatives. */
json_t *gw_openai_logprobs(const tok_vocab *v, const json_t *engine_entries, int top);

/* OpenAI-style tool_choice ("none" | "auto" | "required" | a named
 * function, nested as in chat or flat as in Responses). */
int gw_map_tool_choice_openai(const json_t *body, gw_req *r, gw_err *e);

/* Usage objects. */
json_t *gw_usage_openai(const gw_gen *g);
json_t *gw_usage_responses(const gw_gen *g);
json_t *gw_usage_anthropic(const gw_gen *g);

#endif
