/* test_engined_kv_gw.c - issue 7 item 2 through the whole stack: a
 * multi-turn tool-calling conversation through the gateway whose second
 * turn reuses the first turn's KV from kvd. engined keeps no idle session
 * (--max-sessions 0), so the first turn's session is checkpointed before
 * eviction and the second turn can only get its prefix from kvd; exact
 * replay of the sampled ids (the gateway) makes the prefixes match. The
 * stack is tests/unit/gw_stack.h (unchanged) plus a kvd started here. */
#include "gatewayd/gw_json.h"
#include "gw_stack.h"
#include "gw_test_sse.h"
#include "test.h"
#include "test_kvd_harness.h"

#define DSML "\xef\xbd\x9c" "DSML" "\xef\xbd\x9c"
#define EOS "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define TOOLS "[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"object\"}}}}}]"

static gw_stack S;

static int post(int port, const char *path, const char *body, gws_resp *r, json_t **j)
{
    if (gws_http(port, "POST", path, NULL, body, r, 120000)) {
        CHECKF(0, "POST %s: no response", path);
        *j = NULL;
        return -1;
    }
    *j = json_loadb(r->body, r->body_len, 0, NULL);
    return r->status;
}

static long long jint(json_t *j, const char *k1, const char *k2, const char *k3)
{
    if (k1)
        j = json_object_get(j, k1);
    if (k2)
        j = json_object_get(j, k2);
    if (k3)
        j = json_object_get(j, k3);
    return json_is_integer(j) ? (long long)json_integer_value(j) : -1;
}

static json_t *choice0(json_t *j) { return json_array_get(json_object_get(j, "choices"), 0); }

/* An engined counter, polled until >= want (deadline ms). */
static long long wait_stat(const char *name, long long want, int ms)
{
    long long end = gws_now_ms() + ms, v;
    for (;;) {
        v = gws_stat(S.inst, "engined", name);
        if (v >= want || gws_now_ms() > end)
            return v;
        poll(NULL, 0, 20); /* bounded polling of a counter with a deadline */
    }
}

int main(void)
{
    char kdir[] = "/tmp/ds4-engkvgw-XXXXXX";
    CHECK(mkdtemp(kdir) != NULL);
    char kvdir[96], inst[64];
    snprintf(kvdir, sizeof kvdir, "%s/store", kdir);
    snprintf(inst, sizeof inst, "engkvgw%d", (int)getpid());
    kvd_proc kv;
    if (kvd_start(&kv, kdir, inst, kvdir, NULL)) {
        fprintf(stderr, "FAIL test_engined_kv_gw: kvd did not start\n");
        return 1;
    }
    const char *eng_extra[] = {"--ctx", "1024", "--max-sessions", "0", "--kvd-endpoint", kv.ep,
                               "--kv-min-tokens", "16", "--kv-align", "16", "--kv-trim", "4",
                               "--kv-periodic", "0", NULL};
    const char *gw_extra[] = {"--test-mode", NULL};
    if (gws_start(&S, eng_extra, gw_extra)) {
        gws_stop(&S, NULL, 0);
        kvd_stop(&kv);
        kvd_rm_rf(kdir);
        fprintf(stderr, "FAIL test_engined_kv_gw: the stack did not start\n");
        return 1;
    }
    gws_resp r;
    json_t *j;
    /* turn 1: the model calls f (its argument written compactly: only exact
     * replay of the sampled ids reproduces it) */
    CHECK(post(S.port, "/v1/chat/completions",
               "{\"messages\":[{\"role\":\"user\",\"content\":\"call f\"}],\"tools\":" TOOLS ","
               "\"ds4_test_output\":\"ok</think>\\n\\n<" DSML "tool_calls>\\n<" DSML "invoke name=\\\"f\\\">\\n<" DSML
               "parameter name=\\\"n\\\" string=\\\"false\\\">{\\\"a\\\":1}</" DSML "parameter>\\n</" DSML "invoke>\\n</" DSML
               "tool_calls>" EOS "\"}",
               &r, &j) == 200);
    json_t *tc = json_array_get(json_object_get(json_object_get(choice0(j), "message"), "tool_calls"), 0);
    const char *fin = json_string_value(json_object_get(choice0(j), "finish_reason"));
    CHECK(fin && !strcmp(fin, "tool_calls"));
    long long p1 = jint(j, "usage", "prompt_tokens", NULL), c1 = jint(j, "usage", "completion_tokens", NULL);
    char id[80] = "";
    const char *tid = json_string_value(json_object_get(tc, "id"));
    snprintf(id, sizeof id, "%s", tid ? tid : "");
    CHECK(id[0] && p1 > 16 && c1 > 1);
    json_decref(j);
    gws_resp_free(&r);
    /* its session was evicted at once and checkpointed (the cold checkpoint
     * of its prompt, then the evicted session) */
    CHECK(wait_stat("kv_checkpoints", 2, 30000) >= 2);
    CHECK(gws_stat(S.inst, "engined", "sessions_resident") == 0);

    /* turn 2 as a client sends it: the tool result appended */
    char body[2048];
    snprintf(body, sizeof body,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"call f\"},{\"role\":\"assistant\",\"content\":\"\","
             "\"reasoning_content\":\"ok\",\"tool_calls\":[{\"id\":\"%s\",\"type\":\"function\",\"function\":"
             "{\"name\":\"f\",\"arguments\":\"{\\\"n\\\":{\\\"a\\\":1}}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"%s\","
             "\"content\":\"42\"}],\"tools\":" TOOLS ",\"ds4_test_output\":\"ok</think>Done." EOS "\"}",
             id, id);
    CHECK(post(S.port, "/v1/chat/completions", body, &r, &j) == 200);
    long long cached = jint(j, "usage", "prompt_tokens_details", "cached_tokens");
    CHECKF(cached == p1 + c1 - 1, "turn 2: cached %lld, want %lld (prompt %lld + generated %lld - EOS)", cached,
           p1 + c1 - 1, p1, c1);
    const char *content = json_string_value(json_object_get(json_object_get(choice0(j), "message"), "content"));
    CHECK(content && !strcmp(content, "Done."));
    json_decref(j);
    gws_resp_free(&r);
    CHECK(gws_stat(S.inst, "engined", "kv_restores") == 1);
    CHECK(gws_stat(S.inst, "engined", "kv_restore_failures") == 0);
    if (test_failures)
        gws_log_tail(&S.eng, 30);
    CHECKF(gws_stop(&S, NULL, 0) == 0, "a daemon did not stop cleanly");
    CHECK(kvd_stop(&kv) == 0);
    kvd_rm_rf(kdir);
    return test_main_end("test_engined_kv_gw");
}
