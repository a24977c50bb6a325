/* stats_table.h - every counter and gauge of every daemon, declared once.
 *
 * X(name, type, help): name is [a-z0-9_] (at most 55 bytes), type is
 * COUNTER (only grows) or GAUGE (goes up and down), help is one line. The
 * tables generate the index enums (stats.h), the names and help stored in
 * each stats segment, and the Prometheus export. Every daemon's table
 * starts with DS4_STATS_COMMON, so common indices are the same everywhere.
 * Appending is compatible (readers take names from the segment); removing
 * or renaming breaks dashboards, not readers. Times are in nanoseconds,
 * summed (divide by the matching count for a mean). */
#ifndef DS4_STATS_TABLE_H
#define DS4_STATS_TABLE_H

#define DS4_STATS_COMMON(X)                                                   \
    X(start_time_seconds, GAUGE, "Unix time at which the daemon started")     \
    X(ready, GAUGE, "1 once the daemon signalled readiness")                  \
    X(draining, GAUGE, "1 while draining after SIGTERM")                      \
    X(log_level, GAUGE, "current log level (0 error .. 4 trace)")             \
    X(reloads, COUNTER, "SIGHUP reloads handled")                             \
    X(frames_in, COUNTER, "messages received")                                \
    X(frames_out, COUNTER, "messages sent")                                   \
    X(frames_bad, COUNTER, "malformed, unknown-type or unknown-version "      \
                           "messages answered with an error")

#define DS4_STATS_TOKENIZERD(X)                                               \
    X(encode_requests, COUNTER, "tokenize requests")                          \
    X(tokens_encoded, COUNTER, "token ids produced by tokenize")              \
    X(render_requests, COUNTER, "chat renderings (messages to prompt)")       \
    X(render_errors, COUNTER, "chat renderings refused (bad input)")          \
    X(count_requests, COUNTER, "count_tokens requests")                       \
    X(decode_requests, COUNTER, "detokenize requests")                        \
    X(tokens_decoded, COUNTER, "token ids turned back into text")             \
    X(parse_requests, COUNTER, "model outputs parsed (reasoning, DSML)")      \
    X(parse_errors, COUNTER, "model outputs with malformed DSML")             \
    X(request_ns, COUNTER, "time spent handling requests")                    \
    X(vocab_size, GAUGE, "tokens in the loaded vocabulary")

#define DS4_STATS_ENGINED(X)                                                  \
    X(jobs_submitted, COUNTER, "generation jobs accepted")                    \
    X(jobs_completed, COUNTER, "jobs finished with stop or length")          \
    X(jobs_cancelled, COUNTER, "jobs cancelled by the client")                \
    X(jobs_failed, COUNTER, "jobs ended by an error")                         \
    X(jobs_rejected_busy, COUNTER, "jobs refused because the queue was full") \
    X(jobs_queued, GAUGE, "jobs waiting in the queue (queue depth)")          \
    X(jobs_running, GAUGE, "jobs currently decoding")                         \
    X(tokens_prompt, COUNTER, "prompt tokens received")                       \
    X(tokens_cached, COUNTER, "prompt tokens served from resident or "        \
                              "restored KV state")                            \
    X(tokens_prefilled, COUNTER, "prompt tokens computed by prefill")         \
    X(tokens_generated, COUNTER, "tokens sampled")                            \
    X(prefill_ns, COUNTER, "time spent in prefill")                           \
    X(decode_ns, COUNTER, "time spent in decode steps")                       \
    X(decode_steps, COUNTER, "decode steps (batched forward passes)")         \
    X(context_overflows, COUNTER, "jobs refused for exceeding the context")   \
    X(sessions_resident, GAUGE, "sessions whose KV state is on the device")   \
    X(session_hits, COUNTER, "jobs that reused a resident prefix")           \
    X(session_misses, COUNTER, "jobs with no resident prefix")               \
    X(session_evictions, COUNTER, "resident sessions evicted (LRU)")          \
    X(kv_checkpoints, COUNTER, "checkpoints handed to kvd")                   \
    X(kv_restores, COUNTER, "sessions restored from kvd")                     \
    X(kv_restore_failures, COUNTER, "kvd restores rejected or failed")        \
    X(device_mem_bytes, GAUGE, "device memory in use")                        \
    X(device_mem_budget_bytes, GAUGE, "device memory budget for sessions")    \
    X(weights_bytes, GAUGE, "model weights resident on the device")         \
    X(kv_lookups, COUNTER, "longest-prefix lookups sent to kvd")             \
    X(kv_hits, COUNTER, "kvd lookups that found a longer prefix")           \
    X(kv_misses, COUNTER, "kvd lookups that found nothing usable")          \
    X(kv_lookup_errors, COUNTER, "kvd lookups that failed (down, timeout)") \
    X(kv_lookup_ns, COUNTER, "time spent in kvd lookups")                   \
    X(kv_restore_ns, COUNTER, "time spent restoring kvd checkpoints")       \
    X(kv_snapshot_ns, COUNTER, "time spent snapshotting sessions for kvd")  \
    X(kv_save_drops, COUNTER, "checkpoints dropped (writer queue full, "    \
                              "kvd down)")                                  \
    X(kv_save_errors, COUNTER, "checkpoints kvd did not store")             \
    X(kv_bytes_saved, COUNTER, "checkpoint bytes stored by kvd")

#define DS4_STATS_KVD(X)                                                      \
    X(lookups, COUNTER, "longest-prefix lookups")                            \
    X(hits, COUNTER, "lookups that found a stored prefix")                    \
    X(misses, COUNTER, "lookups that found nothing")                          \
    X(hit_tokens, COUNTER, "tokens covered by lookup hits")                   \
    X(saves, COUNTER, "checkpoints persisted")                                \
    X(save_errors, COUNTER, "checkpoints that could not be written")          \
    X(bytes_written, COUNTER, "bytes written to checkpoint files")            \
    X(bytes_read, COUNTER, "bytes read from checkpoint files")                \
    X(write_ns, COUNTER, "time spent writing checkpoints")                    \
    X(read_ns, COUNTER, "time spent loading checkpoints")                     \
    X(entries, GAUGE, "checkpoints in the index")                             \
    X(disk_bytes, GAUGE, "bytes used by checkpoint files")                    \
    X(disk_budget_bytes, GAUGE, "space budget (--kv-disk-space-mb)")          \
    X(evictions, COUNTER, "checkpoints evicted for space")                    \
    X(evicted_bytes, COUNTER, "bytes freed by eviction")                      \
    X(quarantined, COUNTER, "corrupt, truncated or foreign files set aside")  \
    X(path_swaps, COUNTER, "storage directory switches")

#define DS4_STATS_GATEWAYD(X)                                                 \
    X(http_requests, COUNTER, "HTTP requests received")                       \
    X(http_2xx, COUNTER, "responses with a 2xx status")                       \
    X(http_4xx, COUNTER, "responses with a 4xx status")                       \
    X(http_5xx, COUNTER, "responses with a 5xx status")                       \
    X(http_401, COUNTER, "requests refused for a bad or missing API key")     \
    X(http_413, COUNTER, "requests refused for body size")                    \
    X(http_429, COUNTER, "requests refused because the engine was busy")      \
    X(http_inflight, GAUGE, "requests being served")                          \
    X(streams, COUNTER, "SSE streams opened")                                 \
    X(keepalives, COUNTER, "SSE keepalive comments sent")                     \
    X(client_disconnects, COUNTER, "clients gone before the response ended") \
    X(bytes_in, COUNTER, "request body bytes")                                \
    X(bytes_out, COUNTER, "response body bytes")                              \
    X(upstream_errors, COUNTER, "errors from tokenizerd or engined")          \
    X(upstream_timeouts, COUNTER, "stages that did not answer in time")       \
    X(tool_calls, COUNTER, "tool calls returned to clients")                  \
    X(prompt_tokens, COUNTER, "prompt tokens of served requests")             \
    X(completion_tokens, COUNTER, "completion tokens of served requests")     \
    X(ttft_ns, COUNTER, "time to first token, summed over requests")          \
    X(request_ns, COUNTER, "time from request to last byte, summed")

#endif
