/* test_gw_agents.c - real coding agents against a real stack (SPEC §8,
 * issue 6 item 4): Claude Code (`claude -p`, /v1/messages), Codex CLI
 * (`codex exec`, /v1/responses) and opencode (`opencode run`,
 * /v1/chat/completions), each asked to run a shell command and report its
 * output.
 *
 * Safety: the whole test runs in its own network namespace that has
 * nothing but loopback (unshare(CLONE_NEWNET), then lo up), with the stack
 * started inside it and each agent's non-essential traffic switched off;
 * an attempt to reach any other address fails at once. Needs root; run as
 * another user (or with DS4_TEST_SKIP_AGENTS=1) it reports SKIP and runs
 * nothing.
 *
 * The agents (pinned in tests/agents/package.json, about 1 GB with their
 * native binaries) are installed with `npm install --no-save` into tests/agents/ on first
 * use, before the namespace is entered.
 *
 * Determinism: the model is the tiny random test model, so the gateway runs
 * with --test-script: each agent's requests are answered with scripted
 * assistant text (matched by a phrase of the agent's own system prompt),
 * forced through the engine (the `cl` backend on PoCL, which handles the
 * agents' 7k-19k-token prompts). First a DSML tool call of the agent's
 * shell tool, then, after the agent ran it and sent the result back, the
 * final answer. What is checked: the agent exits 0 and prints the final
 * answer (so it parsed the tool call, ran the command and accepted the
 * final event sequence); the tool really ran; and the second request of
 * each agent was served from the engine's cache up to the whole first turn
 * (exact replay through the agent's own re-serialization). */
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>

#include "gatewayd/gw_json.h"
#include "gw_stack.h"
#include "util.h"
#include "test.h"
#include "test_proc.h"

#define DSML "\xef\xbd\x9c" "DSML" "\xef\xbd\x9c"
#define EOS "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define AGENTS "tests/agents"

static gw_stack S;

/* One scripted tool call as the model writes it (JSON string content). */
static void tool_call(gw_buf *b, const char *tool, const char *cmd_param)
{
    gw_buf_printf(b,
                  "I will run the command.</think>Running it.\\n\\n<" DSML "tool_calls>\\n<" DSML
                  "invoke name=\\\"%s\\\">\\n<" DSML "parameter name=\\\"%s\\\" string=\\\"true\\\">echo "
                  "hello-from-tool</" DSML "parameter>\\n<" DSML "parameter name=\\\"description\\\" "
                  "string=\\\"true\\\">Print a greeting</" DSML "parameter>\\n</" DSML "invoke>\\n</" DSML
                  "tool_calls>" EOS,
                  tool, cmd_param);
}

/* The script: per agent, the tool call then the final answer. */
static int write_script(const char *path)
{
    static const struct {
        const char *match, *tool, *param;
    } ag[] = {
        {"Claude Agent SDK", "Bash", "command"},
        {"running in the Codex CLI", "exec_command", "cmd"},
        {"You are opencode", "bash", "command"},
    };
    gw_buf b = {0};
    gw_buf_puts(&b, "[{\"match\":\"You are a title generator\",\"output\":\"A title.</think>Echo test" EOS "\"}");
    for (size_t i = 0; i < DS4_ARRAY_LEN(ag); i++) {
        gw_buf_printf(&b, ",{\"match\":\"%s\",\"output\":\"", ag[i].match);
        tool_call(&b, ag[i].tool, ag[i].param);
        gw_buf_printf(&b, "\"},{\"match\":\"%s\",\"output\":\"Done.</think>The tool said: hello-from-tool" EOS "\"}",
                      ag[i].match);
    }
    gw_buf_puts(&b, "]");
    FILE *f = fopen(path, "w");
    int rc = f && fwrite(b.p, 1, b.len, f) == b.len ? 0 : -1;
    if (f)
        fclose(f);
    gw_buf_free(&b);
    return rc;
}

/* Install the agents into tests/agents when missing or stale. */
static int install_agents(void)
{
    char stamp[] = AGENTS "/node_modules/.ds4-stamp";
    struct stat ss, ls;
    if (stat(stamp, &ss) == 0 && stat(AGENTS "/package-lock.json", &ls) == 0 && ss.st_mtime >= ls.st_mtime &&
        access(AGENTS "/node_modules/.bin/claude", X_OK) == 0 && access(AGENTS "/node_modules/.bin/codex", X_OK) == 0 &&
        access(AGENTS "/node_modules/.bin/opencode", X_OK) == 0)
        return 0;
    fprintf(stderr, "test_gw_agents: installing the agents into " AGENTS "\n");
    /* npm install (not ci): npm leaves some of opencode-ai's optional
     * per-platform packages out of the lock file and then refuses npm ci; the
     * versions are pinned in package.json and the lock all the same */
    int rc = system("npm install --prefix " AGENTS " --no-save --no-audit --no-fund --loglevel=error >/dev/null");
    if (rc != 0)
        return -1;
    FILE *f = fopen(stamp, "w");
    if (f)
        fclose(f);
    return 0;
}

/* A private network namespace with only loopback, up. */
static int private_net(void)
{
    if (unshare(CLONE_NEWNET))
        return -1;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
    int rc = fd >= 0 && ioctl(fd, SIOCGIFFLAGS, &ifr) == 0 ? 0 : -1;
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (!rc)
        rc = ioctl(fd, SIOCSIFFLAGS, &ifr);
    if (fd >= 0)
        close(fd);
    return rc;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* Run one agent (argv in dir with env); returns its output (malloc'd). */
static char *run_agent(const char *name, char *const argv[], char *const env[], const char *dir, int *rc)
{
    char cwd[1024];
    if (!getcwd(cwd, sizeof cwd) || chdir(dir)) {
        *rc = -1;
        return strdup("");
    }
    tp_proc p;
    long long t0 = tp_now_ms();
    *rc = tp_spawn(&p, argv, env) ? -1 : tp_finish(&p, 240000);
    if (chdir(cwd))
        *rc = -1;
    gw_buf out = {0};
    gw_buf_printf(&out, "%s\n%s", p.obuf ? p.obuf : "", p.ebuf ? p.ebuf : "");
    fprintf(stderr, "%s: exit %d in %lld ms\n", name, *rc, tp_now_ms() - t0);
    tp_free(&p);
    return out.p;
}

/* Gateway counter from /metrics. */
static long long metric(const char *name)
{
    gws_resp r;
    long long v = -1;
    if (gws_http(S.port, "GET", "/metrics", NULL, NULL, &r, 5000) == 0) {
        char key[128];
        snprintf(key, sizeof key, "\n%s ", name);
        const char *p = strstr(r.body, key);
        if (p)
            v = atoll(p + strlen(key));
    }
    gws_resp_free(&r);
    return v;
}

/* Requests served from the engine's cache up to the whole of an earlier
 * turn, from the gateway log ("done: stop, N prompt (C cached), G
 * generated"): C == N' + G' - 1 for an earlier request (prompt N',
 * G' generated; the end-of-sentence token is never evaluated). */
static void check_replays(const char *agent, int expected)
{
    size_t n;
    char *log = test_read_file(S.gw.log, &n);
    long long pg[64][2];
    int np = 0, hits = 0;
    for (char *l = log ? strstr(log, "done: stop, ") : NULL; l; l = strstr(l + 1, "done: stop, ")) {
        long long p, c, g;
        if (sscanf(l, "done: stop, %lld prompt (%lld cached), %lld generated", &p, &c, &g) != 3)
            continue;
        for (int i = 0; i < np; i++)
            if (c > 0 && c == pg[i][0] + pg[i][1] - 1) {
                hits++;
                break;
            }
        if (np < 64) {
            pg[np][0] = p;
            pg[np][1] = g;
            np++;
        }
    }
    free(log);
    CHECKF(hits >= expected, "%s: %d turns served from the cache up to an earlier turn, want >= %d", agent, hits,
           expected);
}

int main(void)
{
    if (getenv("DS4_TEST_SKIP_AGENTS") && *getenv("DS4_TEST_SKIP_AGENTS") == '1') {
        printf("SKIP test_gw_agents: DS4_TEST_SKIP_AGENTS=1 (nothing run)\n");
        return 0;
    }
    if (geteuid() != 0) {
        printf("SKIP test_gw_agents: needs root for a private network namespace (nothing run)\n");
        return 0;
    }
    if (install_agents()) {
        fprintf(stderr, "FAIL test_gw_agents: npm install in " AGENTS " failed\n");
        return 1;
    }
    if (private_net()) {
        fprintf(stderr, "FAIL test_gw_agents: cannot create a loopback-only network namespace: %s\n", strerror(errno));
        return 1;
    }
    char script[64];
    snprintf(script, sizeof script, "/tmp/ds4-gwagents-%d.json", (int)getpid());
    if (write_script(script)) {
        fprintf(stderr, "FAIL test_gw_agents: cannot write %s\n", script);
        return 1;
    }
    /* the agents' prompts are 7k-19k tokens: the reference backend recomputes
     * the whole prefix per token, the OpenCL one (PoCL here) does not */
    if (!getenv("DS4_TEST_BACKEND"))
        setenv("DS4_TEST_BACKEND", "cl", 1);
    const char *eng[] = {"--ctx", "65536", NULL};
    const char *gw[] = {"--test-mode", "--test-script", script, NULL};
    if (gws_start(&S, eng, gw)) {
        gws_stop(&S, NULL, 0);
        unlink(script);
        fprintf(stderr, "FAIL test_gw_agents: the stack did not start\n");
        return 1;
    }
    char cwd[1024], bin[1200], url[64], home[256], work[256], e_home[300], e_url[128], e_codex[300];
    if (!getcwd(cwd, sizeof cwd))
        cwd[0] = 0;
    snprintf(url, sizeof url, "http://127.0.0.1:%d", S.port);
    snprintf(home, sizeof home, "%s/home", S.dir);
    snprintf(work, sizeof work, "%s/work", S.dir);
    mkdir(home, 0700);
    mkdir(work, 0700);
    snprintf(e_home, sizeof e_home, "HOME=%s", home);
    long long hits0 = metric("ds4_gatewayd_replay_hits_total");

    /* Claude Code */
    snprintf(bin, sizeof bin, "%s/" AGENTS "/node_modules/.bin/claude", cwd);
    snprintf(e_url, sizeof e_url, "ANTHROPIC_BASE_URL=%s", url);
    char *cl_argv[] = {bin, "-p", "Run echo hello-from-tool", "--output-format", "json", "--allowedTools", "Bash", NULL};
    char *cl_env[] = {e_home, e_url, "ANTHROPIC_API_KEY=test", "ANTHROPIC_MODEL=deepseek-v4-flash",
                      "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1", "DISABLE_TELEMETRY=1", "DISABLE_ERROR_REPORTING=1",
                      "DISABLE_AUTOUPDATER=1", NULL};
    int rc;
    char *out = run_agent("claude", cl_argv, cl_env, work, &rc);
    CHECKF(rc == 0 && strstr(out, "\"result\":\"The tool said: hello-from-tool\"") && strstr(out, "\"is_error\":false"),
           "claude: exit %d\n%s", rc, out);
    free(out);
    check_replays("claude", 1);

    /* Codex CLI */
    char codex_home[256], cfg[512];
    snprintf(codex_home, sizeof codex_home, "%s/codex", S.dir);
    mkdir(codex_home, 0700);
    snprintf(e_codex, sizeof e_codex, "CODEX_HOME=%s", codex_home);
    char cfg_path[400];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.toml", codex_home);
    snprintf(cfg, sizeof cfg,
             "model = \"deepseek-v4-flash\"\nmodel_provider = \"localds\"\ncheck_for_update_on_startup = false\n"
             "[model_providers.localds]\nname = \"Local DeepSeek\"\nbase_url = \"%s/v1\"\nenv_key = \"LOCALDS_API_KEY\"\n"
             "wire_api = \"responses\"\n[analytics]\nenabled = false\n[feedback]\nenabled = false\n",
             url);
    write_file(cfg_path, cfg);
    snprintf(bin, sizeof bin, "%s/" AGENTS "/node_modules/.bin/codex", cwd);
    char *cx_argv[] = {bin, "exec", "--skip-git-repo-check", "Run echo hello-from-tool", NULL};
    char *cx_env[] = {e_home, e_codex, "LOCALDS_API_KEY=test", NULL};
    out = run_agent("codex", cx_argv, cx_env, work, &rc);
    CHECKF(rc == 0 && strstr(out, "The tool said: hello-from-tool") && strstr(out, "\nhello-from-tool"),
           "codex: exit %d\n%s", rc, out);
    free(out);
    check_replays("codex", 2);

    /* opencode (also sends a title request in parallel) */
    char oc_cfg[512], oc_path[400];
    snprintf(oc_path, sizeof oc_path, "%s/opencode.json", work);
    snprintf(oc_cfg, sizeof oc_cfg,
             "{ \"provider\": { \"localds\": { \"npm\": \"@ai-sdk/openai-compatible\", \"name\": \"Local DeepSeek\","
             " \"options\": { \"baseURL\": \"%s/v1\", \"apiKey\": \"test\" },"
             " \"models\": { \"deepseek-v4-flash\": { \"name\": \"DeepSeek V4 Flash\" } } } },"
             " \"model\": \"localds/deepseek-v4-flash\", \"autoupdate\": false, \"share\": \"disabled\" }\n",
             url);
    write_file(oc_path, oc_cfg);
    snprintf(bin, sizeof bin, "%s/" AGENTS "/node_modules/.bin/opencode", cwd);
    char *oc_argv[] = {bin, "run", "Run echo hello-from-tool", NULL};
    char e_pwd[300];
    snprintf(e_pwd, sizeof e_pwd, "PWD=%s", work); /* opencode takes its project directory from PWD */
    char *oc_env[] = {e_home, e_pwd, "OPENCODE_DISABLE_AUTOUPDATE=1", "OPENCODE_DISABLE_MODELS_FETCH=1",
                      "OPENCODE_DISABLE_LSP_DOWNLOAD=1", "OPENCODE_DISABLE_SHARE=1", "OPENCODE_DISABLE_DEFAULT_PLUGINS=1",
                      NULL};
    out = run_agent("opencode", oc_argv, oc_env, work, &rc);
    CHECKF(rc == 0 && strstr(out, "The tool said: hello-from-tool") && strstr(out, "\nhello-from-tool"),
           "opencode: exit %d\n%s", rc, out);
    free(out);
    check_replays("opencode", 3);

    long long hits = metric("ds4_gatewayd_replay_hits_total");
    CHECKF(hits - hits0 >= 3, "replay hits %lld", hits - hits0);
    if (test_failures)
        gws_log_tail(&S.gw, 40);
    /* engined's exit is not judged here: under ASan, PoCL's worker threads
     * trip a sanitizer CHECK at exit (the engine's own tests cover its
     * lifecycle); the gateway and tokenizerd must stop cleanly */
    int st = gws_signal_wait(&S.eng, SIGTERM, 10000);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fprintf(stderr, "note: engined (cl backend) exit status 0x%x\n", st);
    CHECKF(gws_stop(&S, NULL, 0) == 0, "a daemon did not stop cleanly");
    unlink(script);
    return test_main_end("test_gw_agents");
}
