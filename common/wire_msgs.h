/* wire_msgs.h - the message table of the ds4 wire protocol, declared once.
 *
 * Every message type appears exactly once in DS4W_MESSAGES, with its stable
 * numeric id, its name, its direction, the daemon that serves it and the
 * exact sequence of payload frames after the header (up to 4; optional
 * frames only at the end). The top-level fields of its JSON frame (if any)
 * appear in DS4W_FIELDS. wire.c builds its decoder tables from these two
 * macros and docs/PROTOCOL.md describes the same entries (a unit test checks
 * that every name here has a section there).
 *
 * Ids never change meaning once released; a removed id is never reused.
 *
 *   X(id, NAME, DIR, SVC, F0, F1, F2, F3)
 *     DIR: REQ (client -> daemon), REP (daemon -> client, one per request),
 *          EVT (daemon -> client, part of a stream)
 *     SVC: ANY (every daemon), TOK (tokenizerd), ENG (engined), KV (kvd)
 *     Fn : NONE, JSON, I32, F32, BYTES, SHMREF, BULK, or one of those with
 *          _OPT (may be absent; only trailing frames may be optional).
 *          BULK is SHMREF, or BYTES when the header has DS4W_FLAG_INLINE.
 *
 *   F(MSG, field, TYPE, REQ|OPT)
 *     TYPE: STRING, INT, UINT (integer >= 0), NUM (integer or real), BOOL,
 *           OBJECT, ARRAY, ANY. Unknown fields are ignored (forward
 *           compatible); a listed field of the wrong type is rejected.
 */
#ifndef DS4_WIRE_MSGS_H
#define DS4_WIRE_MSGS_H

#define DS4W_MESSAGES(X)                                                    \
    /* control: every daemon */                                             \
    X(0x0001, PING,         REQ, ANY, JSON_OPT, NONE, NONE, NONE)           \
    X(0x0002, PONG,         REP, ANY, JSON, NONE, NONE, NONE)               \
    X(0x0003, ERROR,        REP, ANY, JSON, NONE, NONE, NONE)               \
    X(0x0004, OK,           REP, ANY, JSON_OPT, NONE, NONE, NONE)           \
    X(0x0005, STATS_GET,    REQ, ANY, JSON_OPT, NONE, NONE, NONE)           \
    X(0x0006, STATS,        REP, ANY, JSON, NONE, NONE, NONE)               \
    /* tokenizerd */                                                        \
    X(0x0101, TOKENIZE,     REQ, TOK, JSON, NONE, NONE, NONE)               \
    X(0x0102, TOKENS,       REP, TOK, JSON, I32, NONE, NONE)                \
    X(0x0103, DETOKENIZE,   REQ, TOK, JSON, I32, BYTES_OPT, NONE)           \
    X(0x0104, TEXT,         REP, TOK, JSON, BYTES_OPT, NONE, NONE)          \
    X(0x0105, RENDER_CHAT,  REQ, TOK, JSON, NONE, NONE, NONE)               \
    X(0x0106, RENDERED,     REP, TOK, JSON, I32, NONE, NONE)                \
    X(0x0107, COUNT_TOKENS, REQ, TOK, JSON, NONE, NONE, NONE)               \
    X(0x0108, TOKEN_COUNT,  REP, TOK, JSON, NONE, NONE, NONE)               \
    /* engined */                                                           \
    X(0x0201, GEN_SUBMIT,   REQ, ENG, JSON, I32, I32_OPT, NONE)             \
    X(0x0202, GEN_ACCEPTED, EVT, ENG, JSON, NONE, NONE, NONE)               \
    X(0x0203, GEN_EVENT,    EVT, ENG, I32, JSON_OPT, NONE, NONE)            \
    X(0x0204, GEN_DONE,     EVT, ENG, JSON, NONE, NONE, NONE)               \
    X(0x0205, GEN_CANCEL,   REQ, ENG, JSON_OPT, NONE, NONE, NONE)           \
    X(0x0206, LOGITS_GET,   REQ, ENG, JSON, I32, NONE, NONE)                \
    X(0x0207, LOGITS,       REP, ENG, JSON, F32_OPT, NONE, NONE)            \
    /* kvd */                                                               \
    X(0x0301, KV_LOOKUP,    REQ, KV, JSON, I32, NONE, NONE)                 \
    X(0x0302, KV_FOUND,     REP, KV, JSON, BULK, NONE, NONE)                \
    X(0x0303, KV_MISS,      REP, KV, JSON_OPT, NONE, NONE, NONE)            \
    X(0x0304, KV_PUT,       REQ, KV, JSON, I32, BULK, NONE)                 \
    X(0x0305, KV_STORED,    REP, KV, JSON, NONE, NONE, NONE)                \
    X(0x0306, KV_RELEASE,   REQ, KV, SHMREF, NONE, NONE, NONE)              \
    X(0x0307, KV_SET_DIR,   REQ, KV, JSON, NONE, NONE, NONE)                \
    X(0x0308, KV_STATS,     REQ, KV, JSON_OPT, NONE, NONE, NONE)

#define DS4W_FIELDS(F)                                                      \
    F(PING, wait_ready, BOOL, OPT)                                          \
    F(PONG, daemon, STRING, REQ)                                            \
    F(PONG, pid, UINT, REQ)                                                 \
    F(PONG, version, STRING, REQ)                                           \
    F(PONG, proto, UINT, REQ)                                               \
    F(PONG, ready, BOOL, REQ)                                               \
    F(PONG, uptime_ms, UINT, OPT)                                           \
    F(PONG, test_mode, BOOL, OPT)                                           \
    F(PONG, model, STRING, OPT)                                             \
    F(ERROR, code, UINT, REQ)                                               \
    F(ERROR, name, STRING, REQ)                                             \
    F(ERROR, message, STRING, REQ)                                          \
    F(ERROR, field, STRING, OPT)                                            \
    F(ERROR, retry_after_ms, UINT, OPT)                                     \
    F(STATS, daemon, STRING, REQ)                                           \
    F(STATS, counters, OBJECT, REQ)                                         \
    F(STATS, info, OBJECT, OPT)                                             \
    F(TOKENIZE, text, STRING, REQ)                                          \
    F(TOKENIZE, mode, STRING, OPT)                                          \
    F(TOKENIZE, add_bos, BOOL, OPT)                                         \
    F(TOKENS, count, UINT, REQ)                                             \
    F(DETOKENIZE, skip_special, BOOL, OPT)                                  \
    F(DETOKENIZE, final, BOOL, OPT)                                         \
    F(TEXT, text, STRING, REQ)                                              \
    F(RENDER_CHAT, messages, ARRAY, REQ)                                    \
    F(RENDER_CHAT, tools, ARRAY, OPT)                                       \
    F(RENDER_CHAT, thinking, BOOL, OPT)                                     \
    F(RENDER_CHAT, reasoning_effort, STRING, OPT)                           \
    F(RENDER_CHAT, n_ctx, UINT, OPT)                                        \
    F(RENDER_CHAT, add_generation_prompt, BOOL, OPT)                        \
    F(RENDER_CHAT, options, OBJECT, OPT)                                    \
    F(RENDERED, text, STRING, REQ)                                          \
    F(RENDERED, count, UINT, REQ)                                           \
    F(RENDERED, meta, OBJECT, OPT)                                          \
    F(COUNT_TOKENS, messages, ARRAY, OPT)                                   \
    F(COUNT_TOKENS, text, STRING, OPT)                                      \
    F(COUNT_TOKENS, tools, ARRAY, OPT)                                      \
    F(COUNT_TOKENS, thinking, BOOL, OPT)                                    \
    F(COUNT_TOKENS, reasoning_effort, STRING, OPT)                          \
    F(TOKEN_COUNT, count, UINT, REQ)                                        \
    F(GEN_SUBMIT, max_tokens, UINT, OPT)                                    \
    F(GEN_SUBMIT, temperature, NUM, OPT)                                    \
    F(GEN_SUBMIT, top_p, NUM, OPT)                                          \
    F(GEN_SUBMIT, top_k, UINT, OPT)                                         \
    F(GEN_SUBMIT, min_p, NUM, OPT)                                          \
    F(GEN_SUBMIT, seed, INT, OPT)                                           \
    F(GEN_SUBMIT, stop_ids, ARRAY, OPT)                                     \
    F(GEN_SUBMIT, logprobs, UINT, OPT)                                      \
    F(GEN_SUBMIT, thinking, BOOL, OPT)                                      \
    F(GEN_SUBMIT, dsml_greedy, BOOL, OPT)                                   \
    F(GEN_SUBMIT, session, STRING, OPT)                                     \
    F(GEN_SUBMIT, client, STRING, OPT)                                      \
    F(GEN_ACCEPTED, queue_pos, UINT, REQ)                                   \
    F(GEN_ACCEPTED, cached_tokens, UINT, OPT)                               \
    F(GEN_EVENT, logprobs, ARRAY, OPT)                                      \
    F(GEN_DONE, finish_reason, STRING, REQ)                                 \
    F(GEN_DONE, usage, OBJECT, REQ)                                         \
    F(GEN_DONE, timings, OBJECT, OPT)                                       \
    F(GEN_DONE, stop_id, INT, OPT)                                          \
    F(GEN_DONE, error, OBJECT, OPT)                                         \
    F(GEN_CANCEL, reason, STRING, OPT)                                      \
    F(LOGITS_GET, top_k, UINT, OPT)                                         \
    F(LOGITS_GET, full, BOOL, OPT)                                          \
    F(LOGITS_GET, cache, BOOL, OPT)                                         \
    F(LOGITS, n_vocab, UINT, REQ)                                           \
    F(LOGITS, top, ARRAY, OPT)                                              \
    F(LOGITS, prompt_tokens, UINT, OPT)                                     \
    F(LOGITS, cached_tokens, UINT, OPT)                                     \
    F(KV_LOOKUP, fingerprint, STRING, REQ)                                  \
    F(KV_LOOKUP, family_fingerprint, STRING, OPT)                           \
    F(KV_LOOKUP, allow_cross_quant, BOOL, OPT)                              \
    F(KV_LOOKUP, min_tokens, UINT, OPT)                                     \
    F(KV_FOUND, tokens, UINT, REQ)                                          \
    F(KV_FOUND, key, STRING, REQ)                                           \
    F(KV_FOUND, fingerprint, STRING, REQ)                                   \
    F(KV_FOUND, quant, STRING, OPT)                                         \
    F(KV_MISS, reason, STRING, OPT)                                         \
    F(KV_PUT, fingerprint, STRING, REQ)                                     \
    F(KV_PUT, family_fingerprint, STRING, OPT)                              \
    F(KV_PUT, quant, STRING, OPT)                                           \
    F(KV_PUT, reason, STRING, OPT)                                          \
    F(KV_PUT, prefill_ms, NUM, OPT)                                         \
    F(KV_STORED, key, STRING, REQ)                                          \
    F(KV_STORED, bytes, UINT, REQ)                                          \
    F(KV_STORED, evicted, UINT, OPT)                                        \
    F(KV_SET_DIR, dir, STRING, REQ)                                         \
    F(KV_SET_DIR, create, BOOL, OPT)

#endif
