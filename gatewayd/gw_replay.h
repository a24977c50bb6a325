/* gw_replay.h - the exact-replay memory: what the model really generated
 * for each assistant turn the gateway served, keyed by the ids the client
 * gets back (tool-call ids, the thinking signature / encrypted reasoning
 * token, the Responses message id, and a hash of the visible content).
 *
 * Why (SPEC §5, §6): the prefix cache only hits when a replayed conversation
 * reproduces the token ids the model sampled. Clients send earlier turns
 * back as JSON (re-serialized tool arguments, trimmed text, reasoning
 * dropped or echoed); rendering that canonically does not in general give
 * the sampled ids. When an incoming assistant message matches a remembered
 * turn, the gateway attaches the turn's exact text and ids as "_ds4_raw"
 * for tokenizerd (docs/PROTOCOL.md §5.2).
 *
 * An entry is used only when the incoming message still says what the model
 * said: same visible content and the same tool calls (names, ids when
 * given, JSON-equal arguments). Otherwise the message is rendered
 * canonically from its JSON, which is always correct, just not cache-exact.
 *
 * Bounded: at most max_entries turns and max_bytes of text and ids; the
 * least recently used turn goes first (a hit refreshes it). Thread-safe. */
#ifndef DS4_GW_REPLAY_H
#define DS4_GW_REPLAY_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

typedef struct gw_replay gw_replay;

/* One tool call as the client saw it. */
typedef struct gw_replay_call {
    const char *id;
    const char *name;
    const char *args; /* JSON object text */
} gw_replay_call;

/* One generated turn, as stored. Texts need not be NUL-terminated. */
typedef struct gw_replay_turn {
    const char *reasoning;       /* exact text between <think> and </think>, or NULL */
    size_t reasoning_len;
    const char *body;            /* exact text after </think>, up to EOS */
    size_t body_len;
    const int32_t *reasoning_ids; /* the sampled ids of each (NULL: text only) */
    size_t n_reasoning_ids;
    const int32_t *body_ids;
    size_t n_body_ids;
    const char *content;         /* visible content returned to the client */
    size_t content_len;
    const gw_replay_call *calls;
    size_t n_calls;
    const char *const *keys;     /* extra keys: signature, message id */
    size_t n_keys;
} gw_replay_turn;

gw_replay *gw_replay_new(size_t max_entries, size_t max_bytes);
void gw_replay_free(gw_replay *r);

/* Remember a turn under its tool-call ids, its extra keys and the hash of
 * its content (only when it has no tool calls). A key already present is
 * moved to the new turn. */
void gw_replay_put(gw_replay *r, const gw_replay_turn *t);

/* Find the turn of an incoming assistant message: the candidate keys in
 * order (signature, message id...), then the calls' ids, then the content
 * hash. The turn must
 * match content and calls (see above). Returns a new "_ds4_raw" object
 * ({reasoning, body, reasoning_ids, body_ids}) or NULL. */
json_t *gw_replay_lookup(gw_replay *r, const char *const *keys, size_t n_keys,
                         const char *content, size_t content_len,
                         const gw_replay_call *calls, size_t n_calls);

/* Counters for /metrics and tests. */
typedef struct gw_replay_stats {
    uint64_t entries, bytes, hits, misses, mismatches, evictions;
} gw_replay_stats;
void gw_replay_get_stats(gw_replay *r, gw_replay_stats *s);

/* "sha256:<hex>" key of a content text (out: 72 bytes). */
void gw_replay_content_key(const char *s, size_t n, char out[72]);

#endif
