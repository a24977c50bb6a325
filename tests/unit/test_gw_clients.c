/* test_gw_clients.c - the official SDKs (npm "openai" and
 * "@anthropic-ai/sdk", pinned in package.json) as independent clients of a
 * live stack: starts tokenizerd, engined and gatewayd (test mode, an API
 * key) and runs each script of tests/clients/ with node, passing the
 * gateway's URL and key in the environment. A script prints one line per
 * check and "<suite>: N passed, M failed"; it must exit 0. The SDKs come
 * from node_modules (scripts/deps.sh runs npm ci). */
#include "gw_stack.h"
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
    run_script(node, "sdk_openai.mjs", s.port);
    run_script(node, "sdk_anthropic.mjs", s.port);
    if (test_failures)
        gws_log_tail(&s.gw, 30);
    CHECKF(gws_stop(&s, NULL, 0) == 0, "a daemon did not stop cleanly");
    return test_main_end("test_gw_clients");
}
