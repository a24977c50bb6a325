/* ds4 - command-line client of a running ds4 stack.
 *
 *   ds4 [options] PROMPT...      one-shot: stream the answer, then exit
 *   ds4 [options]                interactive chat (stdin is a terminal), or
 *                                one-shot with the prompt read from stdin
 *   ds4 status [options]         every stage: pid, readiness (PING over
 *                                ZeroMQ), live counters from its stats
 *                                segment, and the gateway's /health
 *   ds4 kv-dir DIR [options]     switch kvd's storage directory while the
 *                                stack runs (KV_SET_DIR; created if needed)
 *
 * Talks HTTP/1.1 over a plain socket to the gateway's OpenAI endpoint
 * (POST /v1/chat/completions with stream: true) and parses the SSE stream
 * as it arrives: reasoning_content is shown dimmed (or on stderr when stdout
 * is not a terminal), content normally. Ctrl-C stops the generation (the
 * connection is closed, which makes the gateway cancel the job) and returns
 * to the prompt; at the prompt Ctrl-D or /quit leaves. */
#include "daemon.h"
#include "http_client.h"
#include "log.h"
#include "opts.h"
#include "shm.h"
#include "stats.h"
#include "util.h"
#include "wire.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DAEMONS_N 4
static const char *const DAEMONS[DAEMONS_N] = {"kvd", "engined", "tokenizerd", "gatewayd"};

static volatile sig_atomic_t g_sigint;

/* ---- options -------------------------------------------------------------- */

enum { THINK_DEFAULT = 0, THINK_OFF, THINK_MAX };

struct cfg {
    const char *host, *api_key, *model, *system, *prompt, *prompt_file;
    const char *color, *run_dir, *instance;
    int port, nothink, think_max, hide_thinking, interactive, verbose, watch;
    int top_k, max_tokens;
    double temperature, top_p, min_p;
    const char *seed;
    int timeout_s;
    /* derived */
    int think;
    int color_out, color_err;
};

static void cfg_table(struct cfg *c, struct ds4_opt *t)
{
    const struct ds4_opt tab[] = {
        {"host", 0, DS4_OPT_STRING, &c->host, "127.0.0.1", "gateway address"},
        {"port", 0, DS4_OPT_INT, &c->port, "8000", "gateway port"},
        {"api-key", 0, DS4_OPT_STRING, &c->api_key, NULL,
         "API key (default $DS4_API_KEY), sent as Authorization: Bearer"},
        {"model", 0, DS4_OPT_STRING, &c->model, "deepseek-v4-flash", "model name sent"},
        {"prompt", 'p', DS4_OPT_STRING, &c->prompt, NULL, "the prompt (one-shot)"},
        {"prompt-file", 0, DS4_OPT_STRING, &c->prompt_file, NULL, "read the prompt from a file"},
        {"system", 's', DS4_OPT_STRING, &c->system, NULL, "system prompt"},
        {"interactive", 'i', DS4_OPT_FLAG, &c->interactive, NULL,
         "chat interactively (after the prompt, if one is given)"},
        {"nothink", 0, DS4_OPT_FLAG, &c->nothink, NULL, "no thinking (reasoning_effort none)"},
        {"think-max", 0, DS4_OPT_FLAG, &c->think_max, NULL, "Think Max (reasoning_effort max)"},
        {"hide-thinking", 0, DS4_OPT_FLAG, &c->hide_thinking, NULL, "do not print reasoning"},
        {"temperature", 't', DS4_OPT_DOUBLE, &c->temperature, NULL,
         "sampling temperature (ignored by the server while thinking)"},
        {"top-p", 0, DS4_OPT_DOUBLE, &c->top_p, NULL, "nucleus sampling threshold"},
        {"top-k", 0, DS4_OPT_INT, &c->top_k, "-1", "sample from the k most likely tokens"},
        {"min-p", 0, DS4_OPT_DOUBLE, &c->min_p, NULL, "minimum probability relative to the top"},
        {"seed", 0, DS4_OPT_STRING, &c->seed, NULL, "sampling seed (integer)"},
        {"max-tokens", 'n', DS4_OPT_INT, &c->max_tokens, "-1", "output token limit"},
        {"color", 0, DS4_OPT_STRING, &c->color, "auto", "auto, always or never"},
        {"timeout", 0, DS4_OPT_INT, &c->timeout_s, "600",
         "give up when the server sends nothing for this many seconds"},
        {"verbose", 'v', DS4_OPT_FLAG, &c->verbose, NULL, "print usage and timing after answers"},
        {"run-dir", 0, DS4_OPT_STRING, &c->run_dir, NULL, "status: run directory of the stack"},
        {"instance", 0, DS4_OPT_STRING, &c->instance, "default", "status: stack instance"},
        {"watch", 'w', DS4_OPT_INT, &c->watch, "0", "status: refresh every N seconds"},
        {NULL, 0, 0, NULL, NULL, NULL},
    };
    memcpy(t, tab, sizeof tab);
}
#define CFG_TABLE_N 24

/* ---- terminal output ------------------------------------------------------- */

#define DIM "\033[2m"
#define OFF "\033[0m"

/* What one streamed answer produced. */
struct turn {
    const struct cfg *c;
    hc_buf content, reasoning;
    json_t *tool_calls; /* array of {id, name, arguments} by index */
    char finish[32];
    int done, got_chunk, out_state; /* 0 nothing yet, 1 reasoning, 2 content */
    long long prompt_tokens, completion_tokens, cached_tokens;
    char err[512];
    double t0, t_first;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reasoning: dimmed on a terminal; on stderr when stdout is not one. */
static void show_reasoning(struct turn *t, const char *s, size_t n)
{
    const struct cfg *c = t->c;
    if (c->hide_thinking)
        return;
    FILE *f = c->color_out || isatty(1) ? stdout : stderr;
    int color = f == stdout ? c->color_out : c->color_err;
    if (t->out_state != 1) {
        if (color)
            fputs(DIM, f);
        t->out_state = 1;
    }
    fwrite(s, 1, n, f);
    if (color)
        fputs(OFF, f); /* keep the terminal sane if we are interrupted */
    fflush(f);
    if (color)
        fputs(DIM, f);
}

static void show_content(struct turn *t, const char *s, size_t n)
{
    if (t->out_state == 1) {
        const struct cfg *c = t->c;
        FILE *f = c->color_out || isatty(1) ? stdout : stderr;
        int color = f == stdout ? c->color_out : c->color_err;
        if (color)
            fputs(OFF, f);
        fputs(f == stdout ? "\n\n" : "\n", f);
        fflush(f);
    }
    t->out_state = 2;
    fwrite(s, 1, n, stdout);
    fflush(stdout);
}

/* Merge one streamed tool-call delta (OpenAI: index, id, function.name,
 * function.arguments in pieces). */
static void merge_tool_call(struct turn *t, json_t *d)
{
    json_int_t idx = json_integer_value(json_object_get(d, "index"));
    if (idx < 0 || idx > 1024)
        return;
    if (!t->tool_calls)
        t->tool_calls = json_array();
    while ((json_int_t)json_array_size(t->tool_calls) <= idx)
        json_array_append_new(t->tool_calls, json_pack("{s:s,s:s,s:s}", "id", "", "name", "",
                                                       "arguments", ""));
    json_t *tc = json_array_get(t->tool_calls, (size_t)idx);
    json_t *fn = json_object_get(d, "function");
    const char *id = json_string_value(json_object_get(d, "id"));
    const char *name = json_string_value(json_object_get(fn, "name"));
    const char *args = json_string_value(json_object_get(fn, "arguments"));
    if (id)
        json_object_set_new(tc, "id", json_string(id));
    if (name) {
        hc_buf b = {0};
        hc_buf_adds(&b, json_string_value(json_object_get(tc, "name")));
        hc_buf_adds(&b, name);
        json_object_set_new(tc, "name", json_stringn(b.p, b.n));
        hc_buf_free(&b);
    }
    if (args) {
        hc_buf b = {0};
        hc_buf_adds(&b, json_string_value(json_object_get(tc, "arguments")));
        hc_buf_adds(&b, args);
        json_object_set_new(tc, "arguments", json_stringn(b.p, b.n));
        hc_buf_free(&b);
    }
}

/* One SSE event of /v1/chat/completions. */
static int on_chat_event(void *ud, const char *event, const char *data, size_t len)
{
    struct turn *t = ud;
    if (len == 6 && !memcmp(data, "[DONE]", 6)) {
        t->done = 1;
        return 1;
    }
    json_error_t je;
    json_t *j = json_loadb(data, len, 0, &je);
    if (!j) {
        snprintf(t->err, sizeof t->err, "unparsable event from the server: %s", je.text);
        return 2;
    }
    json_t *e = json_object_get(j, "error");
    if (e || !strcmp(event, "error")) {
        char *s = json_dumps(j, JSON_COMPACT);
        hc_error_text(s, t->err, sizeof t->err);
        free(s);
        json_decref(j);
        return 2;
    }
    t->got_chunk = 1;
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
    json_t *delta = json_object_get(ch, "delta");
    json_t *v;
    if ((v = json_object_get(delta, "reasoning_content")) && json_is_string(v) &&
        json_string_length(v)) {
        if (!t->t_first)
            t->t_first = now_s();
        hc_buf_add(&t->reasoning, json_string_value(v), json_string_length(v));
        show_reasoning(t, json_string_value(v), json_string_length(v));
    }
    if ((v = json_object_get(delta, "content")) && json_is_string(v) && json_string_length(v)) {
        if (!t->t_first)
            t->t_first = now_s();
        hc_buf_add(&t->content, json_string_value(v), json_string_length(v));
        show_content(t, json_string_value(v), json_string_length(v));
    }
    size_t i;
    json_t *tc;
    json_array_foreach(json_object_get(delta, "tool_calls"), i, tc) merge_tool_call(t, tc);
    const char *fin = json_string_value(json_object_get(ch, "finish_reason"));
    if (fin)
        snprintf(t->finish, sizeof t->finish, "%s", fin);
    json_t *u = json_object_get(j, "usage");
    if (json_is_object(u)) {
        t->prompt_tokens = json_integer_value(json_object_get(u, "prompt_tokens"));
        t->completion_tokens = json_integer_value(json_object_get(u, "completion_tokens"));
        t->cached_tokens = json_integer_value(
            json_object_get(json_object_get(u, "prompt_tokens_details"), "cached_tokens"));
    }
    json_decref(j);
    return 0;
}

/* ---- chat ------------------------------------------------------------------- */

/* The request body for the conversation so far. */
static char *chat_body(const struct cfg *c, json_t *messages)
{
    json_t *req = json_object();
    json_object_set_new(req, "model", json_string(c->model));
    json_t *msgs = json_array();
    if (c->system && *c->system)
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "system", "content", c->system));
    json_array_extend(msgs, messages);
    json_object_set_new(req, "messages", msgs);
    json_object_set_new(req, "stream", json_true());
    json_object_set_new(req, "stream_options", json_pack("{s:b}", "include_usage", 1));
    if (c->think == THINK_OFF)
        json_object_set_new(req, "reasoning_effort", json_string("none"));
    else if (c->think == THINK_MAX)
        json_object_set_new(req, "reasoning_effort", json_string("max"));
    if (!isnan(c->temperature))
        json_object_set_new(req, "temperature", json_real(c->temperature));
    if (!isnan(c->top_p))
        json_object_set_new(req, "top_p", json_real(c->top_p));
    if (c->top_k >= 0)
        json_object_set_new(req, "top_k", json_integer(c->top_k));
    if (!isnan(c->min_p))
        json_object_set_new(req, "min_p", json_real(c->min_p));
    if (c->seed)
        json_object_set_new(req, "seed", json_integer(strtoll(c->seed, NULL, 10)));
    if (c->max_tokens >= 0)
        json_object_set_new(req, "max_tokens", json_integer(c->max_tokens));
    char *s = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    return s;
}

/* Result of one turn. */
enum { TURN_OK = 0, TURN_ERR = 1, TURN_INTR = 130 };

/* Send the conversation, stream the answer to the terminal and append it
 * (also a partial one after Ctrl-C) to messages. */
static int chat_turn(const struct cfg *c, json_t *messages)
{
    char err[512] = "";
    char *body = chat_body(c, messages);
    struct turn t = {.c = c, .t0 = now_s()};
    hc_resp *r = ds4_xmalloc(sizeof *r);
    g_sigint = 0;
    int rc = hc_request(&(hc_target){c->host, c->port, c->api_key, c->timeout_s, NULL, &g_sigint},
                        "POST", "/v1/chat/completions", body, r, err, sizeof err);
    free(body);
    int result = TURN_OK;
    if (rc) {
        fprintf(stderr, "ds4: %s\n", err);
        free(r);
        return rc == HC_INTR ? TURN_INTR : TURN_ERR;
    }
    if (r->status / 100 != 2) {
        hc_buf b = {0};
        hc_slurp(r, &b, 1 << 20);
        hc_error_text(b.p ? b.p : "", err, sizeof err);
        fprintf(stderr, "ds4: HTTP %d: %s\n", r->status, err);
        hc_buf_free(&b);
        close(r->fd);
        free(r);
        return TURN_ERR;
    }
    hc_sse sp = {.cb = on_chat_event, .ud = &t};
    long n;
    int stop = hc_sse_run(r, &sp, &n);
    close(r->fd);
    if (t.out_state == 1 && c->color_out && !c->hide_thinking)
        fputs(OFF, stdout);
    if (t.out_state)
        fputs("\n", t.out_state == 2 || c->color_out || isatty(1) ? stdout : stderr);
    fflush(stdout);
    if (g_sigint || n == HC_INTR) {
        fprintf(stderr, "%s[interrupted]%s\n", c->color_err ? DIM : "", c->color_err ? OFF : "");
        result = TURN_INTR;
    } else if (t.err[0]) {
        fprintf(stderr, "ds4: server error: %s\n", t.err);
        result = TURN_ERR;
    } else if (stop < 0 || (!t.done && !t.finish[0])) {
        fprintf(stderr, "ds4: the stream ended before the answer was complete (%s)\n",
                n == HC_TIMEOUT ? "timeout" : stop < 0 ? "oversized event"
                : n == HC_TRUNC ? "connection closed" : n < 0 ? "read error" : "no final event");
        result = TURN_ERR;
    }
    if (t.tool_calls) {
        size_t i;
        json_t *tc;
        json_array_foreach(t.tool_calls, i, tc)
            printf("[tool call %s: %s(%s)]\n", json_string_value(json_object_get(tc, "id")),
                   json_string_value(json_object_get(tc, "name")),
                   json_string_value(json_object_get(tc, "arguments")));
    }
    if (result != TURN_ERR && (t.content.n || t.reasoning.n)) {
        json_t *m = json_pack("{s:s,s:s%}", "role", "assistant", "content",
                              t.content.p ? t.content.p : "", t.content.n);
        if (t.reasoning.n)
            json_object_set_new(m, "reasoning_content", json_stringn(t.reasoning.p, t.reasoning.n));
        json_array_append_new(messages, m);
    }
    if (c->verbose && result == TURN_OK) {
        double dt = now_s() - (t.t_first ? t.t_first : t.t0);
        fprintf(stderr, "%s[%lld prompt tokens (%lld cached), %lld generated, first token %.2f s, "
                "%.1f tok/s, finish %s]%s\n", c->color_err ? DIM : "", t.prompt_tokens,
                t.cached_tokens, t.completion_tokens, t.t_first ? t.t_first - t.t0 : 0.0,
                dt > 0 ? (double)t.completion_tokens / dt : 0.0,
                t.finish[0] ? t.finish : "?", c->color_err ? OFF : "");
    }
    hc_buf_free(&t.content);
    hc_buf_free(&t.reasoning);
    hc_buf_free(&sp.line);
    hc_buf_free(&sp.data);
    json_decref(t.tool_calls);
    free(r);
    return result;
}

/* Read a whole file (bounded) into b. 0 or -1 with a message printed. */
static int read_file(const char *path, hc_buf *b, size_t max)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "ds4: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char tmp[8192];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) {
        if (b->n + n > max) {
            fprintf(stderr, "ds4: %s: larger than %zu bytes\n", path, max);
            fclose(f);
            return -1;
        }
        hc_buf_add(b, tmp, n);
    }
    int bad = ferror(f);
    fclose(f);
    if (bad)
        fprintf(stderr, "ds4: %s: read error\n", path);
    return bad ? -1 : 0;
}

/* One line from stdin without stdio buffering surprises: EINTR (Ctrl-C)
 * returns -2, end of input -1 (0 with a partial line). */
static int read_line(hc_buf *line)
{
    hc_buf_clear(line);
    for (;;) {
        char ch;
        ssize_t n = read(0, &ch, 1);
        if (n < 0 && errno == EINTR)
            return -2;
        if (n < 0)
            return -1;
        if (n == 0)
            return line->n ? 0 : -1;
        if (ch == '\n')
            return 0;
        hc_buf_add(line, &ch, 1);
    }
}

static void chat_help(void)
{
    printf("Commands:\n"
           "  /read FILE     add a file's contents to the next message\n"
           "  /system TEXT   set the system prompt (empty: none)\n"
           "  /think         thinking on (default)   /think-max  Think Max   /nothink  off\n"
           "  /clear         forget the conversation\n"
           "  /quit          leave (or Ctrl-D)\n"
           "A line ending in \\ continues on the next line. Ctrl-C stops a generation.\n");
}

/* Interactive loop: returns the exit status. first: an initial prompt. */
static int chat_loop(struct cfg *c, json_t *messages, const char *first)
{
    hc_buf line = {0}, msg = {0}, files = {0};
    char *system_own = NULL;
    int interrupts = 0;
    if (isatty(0))
        printf("ds4 chat with %s at %s:%d. /help for commands, Ctrl-D to leave.\n", c->model,
               c->host, c->port);
    if (first && *first) {
        json_array_append_new(messages, json_pack("{s:s,s:s}", "role", "user", "content", first));
        chat_turn(c, messages);
    }
    for (;;) {
        if (isatty(0)) {
            printf("%s> ", c->think == THINK_OFF ? "nothink" : c->think == THINK_MAX ? "think-max" : "");
            fflush(stdout);
        }
        hc_buf_clear(&msg);
        int rc;
        for (;;) { /* continuation lines */
            rc = read_line(&line);
            if (rc < 0)
                break;
            if (line.n && line.p[line.n - 1] == '\\') {
                hc_buf_add(&msg, line.p, line.n - 1);
                hc_buf_add(&msg, "\n", 1);
                if (isatty(0))
                    fputs("... ", stdout), fflush(stdout);
                continue;
            }
            hc_buf_add(&msg, line.p ? line.p : "", line.n);
            break;
        }
        if (rc == -2) { /* Ctrl-C at the prompt */
            g_sigint = 0;
            if (++interrupts >= 2)
                break;
            printf("\n(Ctrl-C again, Ctrl-D or /quit to leave)\n");
            continue;
        }
        interrupts = 0;
        if (rc == -1) {
            if (isatty(0))
                printf("\n");
            break;
        }
        const char *s = msg.p ? msg.p : "";
        if (!*s)
            continue;
        if (!strcmp(s, "/quit") || !strcmp(s, "/exit") || !strcmp(s, "/q"))
            break;
        if (!strcmp(s, "/help") || !strcmp(s, "/?")) {
            chat_help();
            continue;
        }
        if (!strcmp(s, "/think") || !strcmp(s, "/nothink") || !strcmp(s, "/think-max")) {
            c->think = !strcmp(s, "/think") ? THINK_DEFAULT : !strcmp(s, "/nothink") ? THINK_OFF
                                                                                   : THINK_MAX;
            continue;
        }
        if (!strcmp(s, "/clear")) {
            json_array_clear(messages);
            hc_buf_clear(&files);
            printf("(conversation cleared)\n");
            continue;
        }
        if (!strncmp(s, "/system", 7) && (s[7] == 0 || s[7] == ' ')) {
            free(system_own);
            system_own = strdup(s[7] ? s + 8 : "");
            c->system = system_own;
            printf("(system prompt %s)\n", *c->system ? "set" : "cleared");
            continue;
        }
        if (!strncmp(s, "/read ", 6)) {
            const char *path = s + 6;
            while (*path == ' ')
                path++;
            hc_buf f = {0};
            if (read_file(path, &f, 8u << 20) == 0) {
                hc_buf_adds(&files, "File ");
                hc_buf_adds(&files, path);
                hc_buf_adds(&files, ":\n```\n");
                hc_buf_add(&files, f.p ? f.p : "", f.n);
                hc_buf_adds(&files, f.n && f.p[f.n - 1] == '\n' ? "```\n\n" : "\n```\n\n");
                printf("(%s: %zu bytes, added to the next message)\n", path, f.n);
            }
            hc_buf_free(&f);
            continue;
        }
        if (s[0] == '/' && s[1] != '/' && !strchr(s, ' ')) {
            printf("unknown command %s (/help)\n", s);
            continue;
        }
        hc_buf content = {0};
        hc_buf_add(&content, files.p ? files.p : "", files.n);
        hc_buf_adds(&content, s[0] == '/' && s[1] == '/' ? s + 1 : s);
        hc_buf_clear(&files);
        json_array_append_new(messages, json_pack("{s:s,s:s%}", "role", "user", "content",
                                                  content.p, content.n));
        hc_buf_free(&content);
        if (chat_turn(c, messages) == TURN_ERR) /* forget the unanswered question */
            json_array_remove(messages, json_array_size(messages) - 1);
    }
    hc_buf_free(&line);
    hc_buf_free(&msg);
    hc_buf_free(&files);
    free(system_own);
    return 0;
}

/* Endpoint of a stage: $DS4_<NAME>_ENDPOINT, else its ipc socket. */
static void stage_endpoint(const struct cfg *c, const char *d, char *out, size_t len)
{
    char run_dir[DS4D_PATH_MAX], var[64];
    snprintf(var, sizeof var, "DS4_%s_ENDPOINT", d);
    for (char *p = var; *p; p++)
        *p = *p >= 'a' && *p <= 'z' ? (char)(*p - 32) : *p;
    const char *env = getenv(var);
    if (env && *env) {
        snprintf(out, len, "%s", env);
        return;
    }
    if (ds4d_run_dir_resolve(c->run_dir, run_dir, sizeof run_dir))
        run_dir[0] = 0;
    snprintf(out, len, "ipc://%s/%s.sock", run_dir, d);
}

/* ---- status ----------------------------------------------------------------- */

/* PING a daemon over ZeroMQ; fills pong (ready flag, model) and the round
 * trip. 0 answered, -1 no answer within timeout_ms. */
static int ping_daemon(void *ctx, const char *endpoint, int timeout_ms, int *ready, double *ms,
                       char *info, size_t infolen)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    if (!s)
        return -1;
    int rc = -1;
    char err[256];
    ds4w_msg m;
    memset(&m, 0, sizeof m);
    if (ds4w_socket_setup(s, 0) || zmq_connect(s, endpoint)) {
        zmq_close(s);
        return -1;
    }
    ds4w_out o;
    uint8_t id[16];
    ds4w_uuid_new(id);
    ds4w_out_init(&o, DS4W_T_PING, id);
    double t0 = now_s();
    if (ds4w_send(s, NULL, &o, 0, err, sizeof err) == 0) {
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, timeout_ms) == 1 &&
            ds4w_recv(s, &m, 0, 0, err, sizeof err) == DS4W_OK && m.type == DS4W_T_PONG) {
            *ms = (now_s() - t0) * 1e3;
            *ready = json_is_true(json_object_get(m.json, "ready"));
            const char *model = json_string_value(json_object_get(m.json, "model"));
            snprintf(info, infolen, "%s%s", json_is_true(json_object_get(m.json, "test_mode"))
                     ? "test mode " : "", model ? model : "");
            rc = 0;
        }
        ds4w_msg_close(&m);
    }
    ds4w_out_free(&o);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_close(s);
    return rc;
}

/* "1d02h", "5m03s" */
static void fmt_uptime(uint64_t secs, char *out, size_t len)
{
    if (secs >= 86400)
        snprintf(out, len, "%llud%02lluh", (unsigned long long)(secs / 86400),
                 (unsigned long long)(secs % 86400 / 3600));
    else if (secs >= 3600)
        snprintf(out, len, "%lluh%02llum", (unsigned long long)(secs / 3600),
                 (unsigned long long)(secs % 3600 / 60));
    else
        snprintf(out, len, "%llum%02llus", (unsigned long long)(secs / 60),
                 (unsigned long long)(secs % 60));
}

/* One "name value" cell of the counter table (three per line). */
static void print_cell(const char *name, uint64_t v, int *col)
{
    char val[32];
    size_t nl = strlen(name);
    if (nl > 3 && !strcmp(name + nl - 3, "_ns"))
        snprintf(val, sizeof val, "%.1fms", (double)v / 1e6);
    else if (nl > 6 && !strcmp(name + nl - 6, "_bytes") && v >= (1u << 20))
        snprintf(val, sizeof val, "%.1fMiB", (double)v / (1u << 20));
    else
        snprintf(val, sizeof val, "%llu", (unsigned long long)v);
    printf("%s%-24s %10s", *col ? "  " : "    ", name, val);
    if (++*col == 3) {
        printf("\n");
        *col = 0;
    }
}

/* The message counters and every counter of the stage's own block. */
static void print_counters(const ds4_stats *st)
{
    int col = 0;
    static const unsigned common[] = {DS4S_frames_in, DS4S_frames_out, DS4S_frames_bad};
    for (unsigned k = 0; k < 3; k++) {
        char name[DS4_STATS_NAME_MAX + 1];
        snprintf(name, sizeof name, "%.*s", DS4_STATS_NAME_MAX, st->desc[common[k]].name);
        print_cell(name, ds4_stats_get(st, common[k]), &col);
    }
    for (uint32_t i = DS4S_COMMON_N; i < st->count; i++) {
        char name[DS4_STATS_NAME_MAX + 1];
        snprintf(name, sizeof name, "%.*s", DS4_STATS_NAME_MAX, st->desc[i].name);
        print_cell(name, ds4_stats_get(st, i), &col);
    }
    if (col)
        printf("\n");
}

/* One status report; returns how many built stages are not healthy. */
static int status_once(const struct cfg *c, void *ctx)
{
    char run_dir[DS4D_PATH_MAX];
    if (ds4d_run_dir_resolve(c->run_dir, run_dir, sizeof run_dir)) {
        fprintf(stderr, "ds4: run directory path too long\n");
        return 1;
    }
    printf("ds4 stack: run dir %s, instance %s\n", run_dir, c->instance);
    int bad = 0;
    long gw_pid = 0;
    for (int i = 0; i < DAEMONS_N; i++) {
        const char *d = DAEMONS[i];
        char pidfile[DS4D_PATH_MAX + 64], sock[DS4D_PATH_MAX + 64], ep[DS4D_PATH_MAX + 80];
        snprintf(pidfile, sizeof pidfile, "%s/%s.pid", run_dir, d);
        long pid = ds4d_pidfile_owner(pidfile);
        if (!strcmp(d, "gatewayd"))
            gw_pid = pid;
        ds4_stats st;
        char err[256];
        int have_stats = ds4_stats_attach(&st, c->instance, d, err, sizeof err) == 0;
        int alive_stats = have_stats && ds4_shm_creator_alive(st.shm.hdr);
        if (!pid && !alive_stats) {
            printf("  %-11s %s\n", d, have_stats ? "not running (stale stats segment of a dead process)"
                                                 : "not running");
            if (have_stats)
                ds4_stats_close(&st, 0);
            continue;
        }
        const char *env = NULL;
        char var[64];
        snprintf(var, sizeof var, "DS4_%s_ENDPOINT", d);
        for (char *p = var; *p; p++)
            *p = *p >= 'a' && *p <= 'z' ? (char)(*p - 32) : *p;
        env = getenv(var);
        snprintf(sock, sizeof sock, "%s/%s.sock", run_dir, d);
        stage_endpoint(c, d, ep, sizeof ep);
        struct stat sb;
        int ready = 0;
        double ms = 0;
        char info[256] = "", line[1024], up[32] = "?";
        int pinged = ((env && *env) || stat(sock, &sb) == 0) &&
                     ping_daemon(ctx, ep, 1000, &ready, &ms, info, sizeof info) == 0;
        if (have_stats) {
            uint64_t t0 = ds4_stats_get(&st, DS4S_start_time_seconds);
            uint64_t now = (uint64_t)time(NULL);
            if (t0 && now >= t0)
                fmt_uptime(now - t0, up, sizeof up);
        }
        if (pinged)
            snprintf(line, sizeof line, "%s, PING %.2f ms%s%s", ready ? "ready" : "NOT READY", ms,
                     info[0] ? ", " : "", info);
        else
            snprintf(line, sizeof line, "NO ANSWER to PING on %s", ep);
        if (!pinged || !ready)
            bad++;
        printf("  %-11s pid %-7ld up %-7s %s\n", d, pid ? pid : (long)st.shm.hdr->creator_pid, up,
               line);
        if (have_stats) {
            print_counters(&st);
            ds4_stats_close(&st, 0);
        }
    }
    /* The gateway's own view. */
    if (gw_pid > 0) {
        hc_target hc = {c->host, c->port, c->api_key, 3, NULL, &g_sigint};
        hc_resp *r = ds4_xmalloc(sizeof *r);
        char err[256];
        g_sigint = 0;
        if (hc_request(&hc, "GET", "/health", NULL, r, err, sizeof err) == 0) {
            hc_buf b = {0};
            hc_slurp(r, &b, 65536);
            close(r->fd);
            for (size_t i = 0; i < b.n; i++)
                if (b.p[i] == '\n' || b.p[i] == '\r')
                    b.p[i] = ' ';
            printf("  gateway     http://%s:%d/health: HTTP %d %.300s\n", c->host, c->port,
                   r->status, b.p ? b.p : "");
            hc_buf_free(&b);
        } else {
            printf("  gateway     http://%s:%d: %s\n", c->host, c->port, err);
        }
        free(r);
    }
    fflush(stdout);
    return bad;
}

static int cmd_status(const struct cfg *c)
{
    void *ctx = zmq_ctx_new();
    int bad = 0;
    for (;;) {
        if (c->watch)
            printf("\033[H\033[2J");
        bad = status_once(c, ctx);
        if (!c->watch || g_sigint)
            break;
        for (int i = 0; i < c->watch * 10 && !g_sigint; i++)
            usleep(100000);
        if (g_sigint)
            break;
    }
    zmq_ctx_term(ctx);
    return bad ? 1 : 0;
}

/* KV_SET_DIR to kvd: the directory is made absolute (and created). */
static int cmd_kv_dir(const struct cfg *c, const char *dir)
{
    char abs[4096], ep[DS4D_PATH_MAX + 80], err[256];
    if (dir[0] == '/')
        snprintf(abs, sizeof abs, "%s", dir);
    else {
        char cwd[2048];
        if (!getcwd(cwd, sizeof cwd)) {
            fprintf(stderr, "ds4: getcwd: %s\n", strerror(errno));
            return 1;
        }
        snprintf(abs, sizeof abs, "%s/%s", cwd, dir);
    }
    stage_endpoint(c, "kvd", ep, sizeof ep);
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int rc = 1;
    if (s && ds4w_socket_setup(s, 0) == 0 && zmq_connect(s, ep) == 0) {
        json_t *j = json_pack("{s:s,s:b}", "dir", abs, "create", 1);
        ds4w_out o;
        uint8_t id[16];
        ds4w_uuid_new(id);
        ds4w_out_init(&o, DS4W_T_KV_SET_DIR, id);
        ds4w_out_json(&o, j);
        json_decref(j);
        ds4w_msg m;
        memset(&m, 0, sizeof m);
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        if (ds4w_send(s, NULL, &o, 0, err, sizeof err))
            fprintf(stderr, "ds4: cannot send to kvd at %s: %s\n", ep, err);
        else if (zmq_poll(&it, 1, c->timeout_s * 1000) != 1)
            fprintf(stderr, "ds4: kvd at %s did not answer (is it running?)\n", ep);
        else if (ds4w_recv(s, &m, 0, 0, err, sizeof err) != DS4W_OK)
            fprintf(stderr, "ds4: bad reply from kvd: %s\n", err);
        else if (m.type == DS4W_T_OK) {
            json_t *e = json_object_get(m.json, "entries");
            printf("kvd now stores KV checkpoints in %s (%lld entries there)\n",
                   json_string_value(json_object_get(m.json, "dir")) ?: abs,
                   (long long)json_integer_value(e));
            rc = 0;
        } else {
            fprintf(stderr, "ds4: kvd refused: %s\n",
                    json_string_value(json_object_get(m.json, "message")) ?: "error");
        }
        ds4w_msg_close(&m);
        ds4w_out_free(&o);
    }
    if (s) {
        int zero = 0;
        zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(s);
    }
    zmq_ctx_term(ctx);
    return rc;
}

/* ---- main ------------------------------------------------------------------- */

static void on_sigint(int sig)
{
    (void)sig;
    g_sigint = 1;
}

/* Colors: --color, NO_COLOR, TERM=dumb, and whether each stream is a tty. */
static int decide_color(const struct cfg *c, int fd)
{
    if (!strcmp(c->color, "always"))
        return 1;
    if (!strcmp(c->color, "never"))
        return 0;
    const char *term = getenv("TERM");
    return isatty(fd) && !getenv("NO_COLOR") && !(term && !strcmp(term, "dumb"));
}

int main(int argc, char **argv)
{
    static struct cfg c;
    struct ds4_opt table[CFG_TABLE_N + 1];
    cfg_table(&c, table);
    c.temperature = c.top_p = c.min_p = NAN;
    const struct ds4_opt *tables[] = {table, NULL};
    char err[256];
    char **pos = ds4_xmalloc(((size_t)argc + 1) * sizeof *pos);
    int npos = 0;
    ds4_log_init("ds4");
    if (ds4_opts_defaults(tables, err, sizeof err)) {
        fprintf(stderr, "ds4: %s\n", err);
        return 2;
    }
    int rc = ds4_opts_parse(tables, argc, argv, pos, &npos, err, sizeof err);
    if (rc == DS4_OPTS_HELP) {
        ds4_opts_help(stdout, "ds4", "[options] [PROMPT...] | ds4 status | ds4 kv-dir DIR",
                      tables);
        printf("\nWithout a prompt and with a terminal on stdin: interactive chat (/help).\n"
               "Reasoning is shown dimmed; when stdout is not a terminal it goes to stderr.\n");
        free(pos);
        return 0;
    }
    if (rc != DS4_OPTS_OK) {
        fprintf(stderr, "ds4: %s (ds4 --help)\n", err);
        free(pos);
        return 2;
    }
    if (!c.api_key)
        c.api_key = getenv("DS4_API_KEY");
    if (strcmp(c.color, "auto") && strcmp(c.color, "always") && strcmp(c.color, "never")) {
        fprintf(stderr, "ds4: --color must be auto, always or never\n");
        return 2;
    }
    if (c.seed) {
        char *e;
        errno = 0;
        strtoll(c.seed, &e, 10);
        if (!*c.seed || *e || errno) {
            fprintf(stderr, "ds4: --seed must be an integer\n");
            return 2;
        }
    }
    if (c.nothink && c.think_max) {
        fprintf(stderr, "ds4: --nothink and --think-max exclude each other\n");
        return 2;
    }
    if (c.port <= 0 || c.port > 65535) {
        fprintf(stderr, "ds4: --port must be 1-65535\n");
        return 2;
    }
    c.think = c.nothink ? THINK_OFF : c.think_max ? THINK_MAX : THINK_DEFAULT;
    c.color_out = decide_color(&c, 1);
    c.color_err = decide_color(&c, 2);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_sigint}; /* no SA_RESTART: reads see EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);

    if (npos >= 1 && !strcmp(pos[0], "status")) {
        if (npos > 1) {
            fprintf(stderr, "ds4 status: unexpected argument %s\n", pos[1]);
            return 2;
        }
        free(pos);
        return cmd_status(&c);
    }
    if (npos >= 1 && !strcmp(pos[0], "kv-dir")) {
        if (npos != 2) {
            fprintf(stderr, "usage: ds4 kv-dir DIR [--run-dir D]\n");
            return 2;
        }
        int r = cmd_kv_dir(&c, pos[1]);
        free(pos);
        return r;
    }
    /* The prompt: -p, --prompt-file, the positional words, or stdin. */
    hc_buf prompt = {0};
    if (c.prompt)
        hc_buf_adds(&prompt, c.prompt);
    if (c.prompt_file) {
        if (prompt.n)
            hc_buf_adds(&prompt, "\n\n");
        if (read_file(c.prompt_file, &prompt, 64u << 20))
            return 1;
    }
    for (int i = 0; i < npos; i++) {
        if (prompt.n)
            hc_buf_adds(&prompt, " ");
        hc_buf_adds(&prompt, pos[i]);
    }
    free(pos);
    json_t *messages = json_array();
    int status = 0;
    if (!prompt.n && !isatty(0) && !c.interactive) {
        char tmp[8192];
        ssize_t n;
        while ((n = read(0, tmp, sizeof tmp)) > 0)
            hc_buf_add(&prompt, tmp, (size_t)n);
    }
    if (c.interactive || !prompt.n) {
        status = chat_loop(&c, messages, prompt.p);
    } else {
        json_array_append_new(messages, json_pack("{s:s,s:s%}", "role", "user", "content",
                                                  prompt.p, prompt.n));
        status = chat_turn(&c, messages);
    }
    json_decref(messages);
    hc_buf_free(&prompt);
    return status;
}
