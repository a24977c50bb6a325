/* test_gw_clients.c - the official SDKs (npm "openai" and
 * "@anthropic-ai/sdk", pinned in package.json) as independent clients of a
 * live stack: starts tokenizerd, engined and gatewayd (test mode, an API
 * key) and runs each script of tests/clients/ with node, passing the
 * gateway's URL and key in the environment. A script prints one line per
 * check and "<suite>: N passed, M failed"; it must exit 0. The SDKs come
 * from node_modules (scripts/deps.sh runs npm ci). Before them, 32 raw
 * clients stream at once over the three APIs: each must get exactly its own
 * answer, complete with its API's final event. */
#include <pthread.h>

#include "gatewayd/gw_json.h"
#include "gw_stack.h"
#include "gw_test_sse.h"
#include "test.h"
#include "test_proc.h"

/* node on the PATH (absolute path into out). */
static int find_node(char *out, size_t cap)
{
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/local/bin:/usr/bin:/bin";
    char *dup = strdup(path), *save = NULL;
    int rc = -1;
    for (char *d = strtok_r(dup, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(out, cap, "%s/node", d);
        if (access(out, X_OK) == 0) {
            rc = 0;
            break;
        }
    }
    free(dup);
    return rc;
}

static void run_script(const char *node, const char *script, int port)
{
    char url[64], env_url[96], path[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    snprintf(env_url, sizeof env_url, "DS4_GW_URL=%s", url);
    snprintf(path, sizeof path, "tests/clients/%s", script);
    char *argv[] = {(char *)node, path, NULL};
    char *env[] = {env_url, "DS4_GW_KEY=k-test", NULL};
    tp_proc p;
    long long t0 = tp_now_ms();
    CHECK(tp_spawn(&p, argv, env) == 0);
    int rc = tp_finish(&p, 300000); /* sanitizer builds are slow */
    char suite[64];
    snprintf(suite, sizeof suite, "%.*s: ", (int)strcspn(script, "."), script);
    const char *closing = strstr(p.obuf, suite);
    if (closing)
        closing += strlen(suite);
    CHECKF(rc == 0 && closing && strstr(closing, " passed, 0 failed"), "%s: exit %d\n%s\n%s", script, rc, p.obuf,
           p.ebuf);
    fprintf(stderr, "%s: %.*s (%lld ms)\n", script, closing ? (int)strcspn(closing, "\n") : 0, closing ? closing : "",
            tp_now_ms() - t0);
    tp_free(&p);
}

/* Many clients at once: every stream completes with its own answer (replies
 * are routed by request id; nothing is lost or crossed). */
#define NCONC 32
struct conc {
    int port, i, ok;
};

static void *conc_one(void *arg)
{
    struct conc *c = arg;
    static const char *const paths[] = {"/v1/chat/completions", "/v1/messages", "/v1/responses"};
    char body[512];
    int k = c->i % 3;
    snprintf(body, sizeof body,
             "{\"stream\":true,\"max_tokens\":40,%s,\"ds4_test_output\":\"r</think>answer-%d-end"
             "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>\"}",
             k == 2 ? "\"input\":\"question\"" : "\"messages\":[{\"role\":\"user\",\"content\":\"question\"}]", c->i);
    gws_resp r;
    if (gws_http(c->port, "POST", paths[k], "Authorization: Bearer k-test\r\n", body, &r, 60000) == 0 &&
        r.status == 200) {
        /* the streamed text, glued back from the API's deltas */
        sse_list l;
        sse_parse(r.body, r.body_len, &l);
        gw_buf t = {0};
        gw_buf_puts(&t, "");
        for (size_t i = 0; i < l.n; i++) {
            json_t *d = l.ev[i].data;
            const char *s = k == 0   ? sse_str(json_object_get(json_array_get(json_object_get(d, "choices"), 0), "delta"),
                                               "content", NULL)
                            : k == 1 ? (!strcmp(l.ev[i].name, "content_block_delta") ? sse_str(d, "delta", "text", NULL) : NULL)
                                     : (!strcmp(l.ev[i].name, "response.output_text.delta") ? sse_str(d, "delta", NULL) : NULL);
            if (s)
                gw_buf_puts(&t, s);
        }
        char want[32];
        snprintf(want, sizeof want, "answer-%d-end", c->i);
        const char *last = l.n ? l.ev[l.n - 1].name : "";
        int fin = k == 0 ? l.n && json_is_string(l.ev[l.n - 1].data)
                  : k == 1 ? !strcmp(last, "message_stop") : !strcmp(last, "response.completed");
        c->ok = fin && !l.bad && !strcmp(t.p, want);
        gw_buf_free(&t);
        sse_free(&l);
    }
    gws_resp_free(&r);
    return NULL;
}

static void t_concurrent(int port)
{
    pthread_t th[NCONC];
    struct conc c[NCONC];
    long long t0 = tp_now_ms();
    for (int i = 0; i < NCONC; i++) {
        c[i] = (struct conc){port, i, 0};
        pthread_create(&th[i], NULL, conc_one, &c[i]);
    }
    int ok = 0;
    for (int i = 0; i < NCONC; i++) {
        pthread_join(th[i], NULL);
        ok += c[i].ok;
    }
    CHECKF(ok == NCONC, "%d of %d concurrent streams complete and uncrossed", ok, NCONC);
    fprintf(stderr, "%d concurrent streams (chat, messages, responses): %d complete in %lld ms\n", NCONC, ok,
            tp_now_ms() - t0);
}

int main(void)
{
    char node[512];
    if (find_node(node, sizeof node)) {
        fprintf(stderr, "FAIL test_gw_clients: node is not installed (scripts/deps.sh installs it)\n");
        return 1;
    }
    if (access("node_modules/openai/package.json", R_OK) || access("node_modules/@anthropic-ai/sdk/package.json", R_OK)) {
        fprintf(stderr, "FAIL test_gw_clients: the SDKs are not in node_modules (run scripts/deps.sh)\n");
        return 1;
    }
    gw_stack s;
    const char *eng[] = {"--ctx", "2048", NULL};
    const char *gw[] = {"--test-mode", "--api-key", "k-test", NULL};
    if (gws_start(&s, eng, gw)) {
        gws_stop(&s, NULL, 0);
        fprintf(stderr, "FAIL test_gw_clients: the stack did not start\n");
        return 1;
    }
    t_concurrent(s.port);
    run_script(node, "sdk_openai.mjs", s.port);
    run_script(node, "sdk_anthropic.mjs", s.port);
    if (test_failures)
        gws_log_tail(&s.gw, 30);
    CHECKF(gws_stop(&s, NULL, 0) == 0, "a daemon did not stop cleanly");
    return test_main_end("test_gw_clients");
}
