/* tok_chat.c - DeepSeek V4 chat rendering (see tok_chat.h). The request JSON
 * is parsed with tok_pyjson (Python json semantics) because the tools block
 * and DSML arguments must be re-serialized exactly as Python's json module
 * does. */
#include "tok_chat.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_pyjson.h"
#include "util.h"

/* ------------------------------------------------------------------ */
/* Official encoder constants (data, from official-encoder-constants.json). */

#define K_BOS "<｜begin▁of▁sentence｜>"
#define K_EOS "<｜end▁of▁sentence｜>"
#define K_USER "<｜User｜>"
#define K_ASSISTANT "<｜Assistant｜>"
#define K_REMINDER "<｜latest_reminder｜>"
#define K_THINK_OPEN "<think>"
#define K_THINK_CLOSE "</think>"
#define K_DSML "｜DSML｜"

static const char K_REASONING_EFFORT_MAX[] =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to "
    "resolve the root cause, rigorously stress-testing your logic against all potential paths, "
    "edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate "
    "step, considered alternative, and rejected hypothesis to ensure absolutely no assumption "
    "is left unchecked.\n\n";

static const char K_TOOLS_TEMPLATE[] =
    "## Tools\n\nYou have access to a set of tools to help answer the user's question. You can "
    "invoke tools by writing a \"<{dsml_token}tool_calls>\" block like the following:\n\n"
    "<{dsml_token}tool_calls>\n<{dsml_token}invoke name=\"$TOOL_NAME\">\n"
    "<{dsml_token}parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE"
    "</{dsml_token}parameter>\n...\n</{dsml_token}invoke>\n<{dsml_token}invoke "
    "name=\"$TOOL_NAME2\">\n...\n</{dsml_token}invoke>\n</{dsml_token}tool_calls>\n\n"
    "String parameters should be specified as is and set `string=\"true\"`. For all other types "
    "(numbers, booleans, arrays, objects), pass the value in JSON format and set "
    "`string=\"false\"`.\n\nIf thinking_mode is enabled (triggered by {thinking_start_token}), "
    "you MUST output your complete reasoning inside {thinking_start_token}...{thinking_end_token} "
    "BEFORE any tool calls or final response.\n\nOtherwise, output directly after "
    "{thinking_end_token} with tool calls or final response.\n\n### Available Tool Schemas\n\n"
    "{tool_schemas}\n\nYou MUST strictly follow the above defined tool name and parameter "
    "schemas to invoke tool calls.\n";

static const char K_ASSISTANT_MSG[] = "{reasoning}{content}{tool_calls}" K_EOS;
static const char K_ASSISTANT_MSG_WO_EOS[] = "{reasoning}{content}{tool_calls}";
static const char K_MSG[] = "{content}"; /* system, user, latest_reminder templates */
static const char K_RESPONSE_FORMAT[] =
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n{schema}";
static const char K_THINKING_TEMPLATE[] = "{reasoning_content}";
static const char K_TOOL_CALL[] =
    "<{dsml_token}invoke name=\"{name}\">\n{arguments}\n</{dsml_token}invoke>";
static const char K_TOOL_CALLS[] =
    "<{dsml_token}{tc_block_name}>\n{tool_calls}\n</{dsml_token}{tc_block_name}>";
static const char K_TOOL_OUTPUT[] = "<tool_result>{content}</tool_result>";
/* The per-parameter line of encode_arguments_to_dsml (not in the constants
 * file; it is inline in the official encoder). */
static const char K_PARAM[] =
    "<{dsml_token}parameter name=\"{key}\" string=\"{is_str}\">{value}</{dsml_token}parameter>";

static const char *const task_names[] = {"action", "query", "authority", "domain", "title", "read_url"};
static const char *const task_tokens[] = {"<｜action｜>", "<｜query｜>", "<｜authority｜>",
                                          "<｜domain｜>", "<｜title｜>", "<｜read_url｜>"};
#define N_TASKS 6

static const struct {
    const char *name;
    const char *value;
} constants[] = {
    {"ASSISTANT_SP_TOKEN", K_ASSISTANT},
    {"LATEST_REMINDER_SP_TOKEN", K_REMINDER},
    {"REASONING_EFFORT_MAX", K_REASONING_EFFORT_MAX},
    {"TOOLS_TEMPLATE", K_TOOLS_TEMPLATE},
    {"USER_SP_TOKEN", K_USER},
    {"assistant_msg_template", K_ASSISTANT_MSG},
    {"assistant_msg_wo_eos_template", K_ASSISTANT_MSG_WO_EOS},
    {"bos_token", K_BOS},
    {"dsml_token", K_DSML},
    {"eos_token", K_EOS},
    {"latest_reminder_msg_template", K_MSG},
    {"response_format_template", K_RESPONSE_FORMAT},
    {"system_msg_template", K_MSG},
    {"thinking_end_token", K_THINK_CLOSE},
    {"thinking_start_token", K_THINK_OPEN},
    {"thinking_template", K_THINKING_TEMPLATE},
    {"tool_call_template", K_TOOL_CALL},
    {"tool_calls_block_name", "tool_calls"},
    {"tool_calls_template", K_TOOL_CALLS},
    {"tool_output_template", K_TOOL_OUTPUT},
    {"user_msg_template", K_MSG},
};

/* Look up an embedded constant by its name in the constants file. */
const char *tok_chat_constant(const char *name)
{
    for (size_t i = 0; i < sizeof constants / sizeof constants[0]; i++)
        if (strcmp(constants[i].name, name) == 0)
            return constants[i].value;
    if (strncmp(name, "DS_TASK_SP_TOKENS.", 18) == 0)
        for (int i = 0; i < N_TASKS; i++)
            if (strcmp(name + 18, task_names[i]) == 0)
                return task_tokens[i];
    return NULL;
}

void tok_chat_opts_default(struct tok_chat_opts *o)
{
    memset(o, 0, sizeof *o);
    o->thinking = 1;
    o->drop_thinking = 1;
    o->add_bos = 1;
}

/* ------------------------------------------------------------------ */
/* Byte buffer. */

void tok_chat_sb_put(struct tok_chat_sb *b, const void *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->len + n + 1)
            c *= 2;
        b->p = ds4_xrealloc(b->p, c);
        b->cap = c;
    }
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void tok_chat_sb_puts(struct tok_chat_sb *b, const char *s) { tok_chat_sb_put(b, s, strlen(s)); }

void tok_chat_sb_free(struct tok_chat_sb *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ------------------------------------------------------------------ */
/* Messages: validation, merging of tool results, dropping of reasoning. */

enum { R_SYSTEM, R_DEVELOPER, R_USER, R_ASSISTANT, R_TOOL, R_REMINDER };
static const char *const role_names[] = {"system", "developer", "user", "assistant", "tool",
                                         "latest_reminder"};

/* One part of a merged user turn: text, or a tool result. */
struct blk {
    int tool;
    const char *s;
    size_t n;
    char *owned;      /* flattened tool content blocks */
    const char *id;   /* tool_call_id ("" if none) */
    size_t idn;
    int orig;
};

struct cmsg {
    int role, orig;
    const char *content;
    size_t content_n;
    const struct tok_pyjson *tools, *resp_fmt, *tool_calls;
    const char *reasoning;
    size_t reasoning_n;
    const struct tok_pyjson *raw_reasoning, *raw_body;
    int task, wo_eos;
    struct blk *blocks;
    size_t nblocks, capblocks;
};

/* Error with a printf message. */
static int fail(char *err, size_t errlen, const char *fmt_, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt_);
        vsnprintf(err, errlen, fmt_, ap);
        va_end(ap);
    }
    return -1;
}

/* Python truthiness of an optional container: present and non-empty. */
static int truthy(const struct tok_pyjson *v)
{
    if (!v || v->t == TOK_PYJSON_NULL || v->t == TOK_PYJSON_FALSE)
        return 0;
    if (v->t == TOK_PYJSON_ARR || v->t == TOK_PYJSON_OBJ || v->t == TOK_PYJSON_STR)
        return v->n > 0;
    return 1;
}

/* Optional string field: NULL/"" when absent or null; error otherwise. */
static int opt_str(const struct tok_pyjson *m, const char *key, int idx, const char **s, size_t *n, char *err,
                   size_t errlen)
{
    const struct tok_pyjson *v = tok_pyjson_get(m, key);
    *s = "";
    *n = 0;
    if (!v || v->t == TOK_PYJSON_NULL)
        return 0;
    if (v->t != TOK_PYJSON_STR)
        return fail(err, errlen, "messages[%d].%s: expected a string or null", idx, key);
    *s = v->s;
    *n = v->n;
    return 0;
}

/* Flatten a tool message's content (string, null, or [{type,text}] blocks)
 * the way the official encoder does: text blocks joined by blank lines,
 * other blocks as "[Unsupported <type>]". */
static int tool_content(const struct tok_pyjson *c, int idx, struct blk *b, char *err, size_t errlen)
{
    if (!c || c->t == TOK_PYJSON_NULL) {
        b->s = "";
        return 0;
    }
    if (c->t == TOK_PYJSON_STR) {
        b->s = c->s;
        b->n = c->n;
        return 0;
    }
    if (c->t != TOK_PYJSON_ARR)
        return fail(err, errlen, "messages[%d].content: expected a string, null or an array", idx);
    struct tok_chat_sb sb = {0};
    for (size_t i = 0; i < c->n; i++) {
        const struct tok_pyjson *e = &c->a[i];
        if (e->t != TOK_PYJSON_OBJ) {
            tok_chat_sb_free(&sb);
            return fail(err, errlen, "messages[%d].content[%zu]: expected an object", idx, i);
        }
        const struct tok_pyjson *ty = tok_pyjson_get(e, "type"), *tx = tok_pyjson_get(e, "text");
        if (i)
            tok_chat_sb_puts(&sb, "\n\n");
        if (ty && ty->t == TOK_PYJSON_STR && strcmp(ty->s, "text") == 0) {
            if (tx && tx->t != TOK_PYJSON_STR && tx->t != TOK_PYJSON_NULL) {
                tok_chat_sb_free(&sb);
                return fail(err, errlen, "messages[%d].content[%zu].text: expected a string", idx, i);
            }
            if (tx && tx->t == TOK_PYJSON_STR)
                tok_chat_sb_put(&sb, tx->s, tx->n);
        } else {
            tok_chat_sb_puts(&sb, "[Unsupported ");
            if (ty && ty->t == TOK_PYJSON_STR)
                tok_chat_sb_put(&sb, ty->s, ty->n);
            else
                tok_chat_sb_puts(&sb, "None");
            tok_chat_sb_puts(&sb, "]");
        }
    }
    if (!sb.p)
        sb.p = ds4_xstrdup("");
    b->owned = sb.p;
    b->s = sb.p;
    b->n = sb.len;
    return 0;
}

/* Check an assistant's tool_calls: [{function:{name: string, arguments}}]. */
static int check_tool_calls(const struct tok_pyjson *tc, int idx, char *err, size_t errlen)
{
    if (tc->t != TOK_PYJSON_ARR)
        return fail(err, errlen, "messages[%d].tool_calls: expected an array", idx);
    for (size_t j = 0; j < tc->n; j++) {
        const struct tok_pyjson *f = tok_pyjson_get(&tc->a[j], "function");
        if (tc->a[j].t != TOK_PYJSON_OBJ)
            return fail(err, errlen, "messages[%d].tool_calls[%zu]: expected an object", idx, j);
        if (!f || f->t != TOK_PYJSON_OBJ)
            return fail(err, errlen, "messages[%d].tool_calls[%zu].function: expected an object", idx, j);
        const struct tok_pyjson *nm = tok_pyjson_get(f, "name"), *ar = tok_pyjson_get(f, "arguments");
        if (!nm || nm->t != TOK_PYJSON_STR)
            return fail(err, errlen, "messages[%d].tool_calls[%zu].function.name: expected a string", idx,
                        j);
        if (!ar)
            return fail(err, errlen, "messages[%d].tool_calls[%zu].function.arguments: missing", idx, j);
        const struct tok_pyjson *id = tok_pyjson_get(&tc->a[j], "id");
        if (id && id->t != TOK_PYJSON_STR && id->t != TOK_PYJSON_NULL)
            return fail(err, errlen, "messages[%d].tool_calls[%zu].id: expected a string", idx, j);
    }
    return 0;
}

/* Check a tools list: an array of objects. */
static int check_tools(const struct tok_pyjson *t, const char *where, char *err, size_t errlen)
{
    if (t->t != TOK_PYJSON_ARR)
        return fail(err, errlen, "%s: expected an array", where);
    for (size_t j = 0; j < t->n; j++)
        if (t->a[j].t != TOK_PYJSON_OBJ)
            return fail(err, errlen, "%s[%zu]: expected an object", where, j);
    return 0;
}

/* Validate message idx and fill c (blocks are added by the merge step). */
static int load_msg(const struct tok_pyjson *m, int idx, struct cmsg *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->orig = idx;
    c->task = -1;
    if (m->t != TOK_PYJSON_OBJ)
        return fail(err, errlen, "messages[%d]: expected an object", idx);
    const struct tok_pyjson *role = tok_pyjson_get(m, "role");
    if (!role)
        return fail(err, errlen, "messages[%d].role: missing", idx);
    if (role->t != TOK_PYJSON_STR)
        return fail(err, errlen, "messages[%d].role: expected a string", idx);
    c->role = -1;
    for (int r = 0; r < 6; r++)
        if (strlen(role_names[r]) == role->n && memcmp(role->s, role_names[r], role->n) == 0)
            c->role = r;
    if (c->role < 0)
        return fail(err, errlen, "messages[%d].role: unknown role \"%.40s\"", idx, role->s);
    if (c->role != R_TOOL && opt_str(m, "content", idx, &c->content, &c->content_n, err, errlen))
        return -1;
    if (c->role == R_DEVELOPER && c->content_n == 0)
        return fail(err, errlen, "messages[%d].content: a developer message needs non-empty content", idx);
    if (opt_str(m, "reasoning_content", idx, &c->reasoning, &c->reasoning_n, err, errlen))
        return -1;
    char where[64];
    snprintf(where, sizeof where, "messages[%d].tools", idx);
    const struct tok_pyjson *v = tok_pyjson_get(m, "tools");
    if (v && v->t != TOK_PYJSON_NULL && check_tools(v, where, err, errlen))
        return -1;
    c->tools = truthy(v) && c->role != R_USER && c->role != R_TOOL ? v : NULL;
    v = tok_pyjson_get(m, "response_format");
    if (v && v->t != TOK_PYJSON_NULL && v->t != TOK_PYJSON_OBJ)
        return fail(err, errlen, "messages[%d].response_format: expected an object", idx);
    c->resp_fmt = truthy(v) ? v : NULL;
    v = tok_pyjson_get(m, "tool_calls");
    if (v && v->t != TOK_PYJSON_NULL && check_tool_calls(v, idx, err, errlen))
        return -1;
    c->tool_calls = c->role == R_ASSISTANT && truthy(v) ? v : NULL;
    v = tok_pyjson_get(m, "task");
    if (v && v->t != TOK_PYJSON_NULL) {
        for (int t = 0; t < N_TASKS && v->t == TOK_PYJSON_STR; t++)
            if (strcmp(v->s, task_names[t]) == 0 && strlen(task_names[t]) == v->n)
                c->task = t;
        if (c->task < 0)
            return fail(err, errlen, "messages[%d].task: expected one of action, query, authority, "
                                     "domain, title, read_url", idx);
    }
    v = tok_pyjson_get(m, "wo_eos");
    if (v && v->t != TOK_PYJSON_NULL && v->t != TOK_PYJSON_TRUE && v->t != TOK_PYJSON_FALSE)
        return fail(err, errlen, "messages[%d].wo_eos: expected a boolean", idx);
    c->wo_eos = v && v->t == TOK_PYJSON_TRUE;
    v = tok_pyjson_get(m, "_ds4_raw");
    if (v && v->t != TOK_PYJSON_NULL) {
        if (v->t != TOK_PYJSON_OBJ)
            return fail(err, errlen, "messages[%d]._ds4_raw: expected an object", idx);
        const struct tok_pyjson *rr = tok_pyjson_get(v, "reasoning"), *rb = tok_pyjson_get(v, "body");
        if ((rr && rr->t != TOK_PYJSON_STR && rr->t != TOK_PYJSON_NULL) || (rb && rb->t != TOK_PYJSON_STR && rb->t != TOK_PYJSON_NULL))
            return fail(err, errlen, "messages[%d]._ds4_raw.%s: expected a string or null", idx,
                        rr && rr->t != TOK_PYJSON_STR && rr->t != TOK_PYJSON_NULL ? "reasoning" : "body");
        if (c->role == R_ASSISTANT) {
            c->raw_reasoning = rr && rr->t == TOK_PYJSON_STR ? rr : NULL;
            c->raw_body = rb && rb->t == TOK_PYJSON_STR ? rb : NULL;
        }
    }
    if (c->role == R_TOOL) {
        struct blk b = {.tool = 1, .id = "", .orig = idx};
        if (tool_content(tok_pyjson_get(m, "content"), idx, &b, err, errlen))
            return -1;
        const struct tok_pyjson *id = tok_pyjson_get(m, "tool_call_id");
        if (id && id->t != TOK_PYJSON_STR && id->t != TOK_PYJSON_NULL) {
            free(b.owned);
            return fail(err, errlen, "messages[%d].tool_call_id: expected a string", idx);
        }
        if (id && id->t == TOK_PYJSON_STR)
            b.id = id->s, b.idn = id->n;
        c->blocks = ds4_xmalloc(sizeof b);
        c->blocks[0] = b;
        c->nblocks = c->capblocks = 1;
    }
    return 0;
}

/* Append a block to a merged user turn. */
static void add_blk(struct cmsg *u, const struct blk *b)
{
    if (u->nblocks == u->capblocks) {
        u->capblocks = u->capblocks ? u->capblocks * 2 : 4;
        u->blocks = ds4_xrealloc(u->blocks, u->capblocks * sizeof *u->blocks);
    }
    u->blocks[u->nblocks++] = *b;
}

/* merge_tool_messages: every tool result joins the preceding user turn (or
 * starts one); a user message joins a preceding user turn without a task. */
static size_t merge_msgs(struct cmsg *in, size_t n, struct cmsg *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        struct cmsg *m = &in[i];
        struct cmsg *prev = k ? &out[k - 1] : NULL;
        if (m->role == R_TOOL) {
            if (prev && prev->role == R_USER) {
                add_blk(prev, &m->blocks[0]);
            } else {
                struct cmsg u = {.role = R_USER, .orig = m->orig, .task = -1};
                add_blk(&u, &m->blocks[0]);
                out[k++] = u;
            }
            free(m->blocks);
            m->blocks = NULL;
        } else if (m->role == R_USER) {
            struct blk t = {.s = m->content, .n = m->content_n, .id = "", .orig = m->orig};
            if (prev && prev->role == R_USER && prev->task < 0) {
                add_blk(prev, &t);
            } else {
                struct cmsg u = *m;
                u.tools = u.resp_fmt = NULL;
                add_blk(&u, &t);
                out[k++] = u;
            }
        } else {
            out[k++] = *m;
        }
    }
    return k;
}

/* The ids of an assistant's tool calls ("id", else "function.id"; NULL when
 * empty), in call order. */
static const struct tok_pyjson **call_ids(const struct tok_pyjson *calls)
{
    const struct tok_pyjson **ids = ds4_xcalloc(calls->n + 1, sizeof *ids);
    for (size_t j = 0; j < calls->n; j++) {
        const struct tok_pyjson *id = tok_pyjson_get(&calls->a[j], "id");
        if (!truthy(id))
            id = tok_pyjson_get(tok_pyjson_get(&calls->a[j], "function"), "id");
        ids[j] = truthy(id) && id->t == TOK_PYJSON_STR ? id : NULL;
    }
    return ids;
}

/* Order of a tool call id among ids (0 when unknown; the last duplicate
 * wins, as dict assignment does). */
static size_t call_order(const struct tok_pyjson **ids, size_t n, const struct blk *b)
{
    size_t best = 0;
    for (size_t j = 0; j < n; j++)
        if (ids[j] && ids[j]->n == b->idn && memcmp(ids[j]->s, b->id, b->idn) == 0)
            best = j;
    return best;
}

struct keyed_blk {
    size_t key, pos;
    struct blk b;
};

/* Order by call position, then by original position (a stable sort). */
static int keyed_cmp(const void *x, const void *y)
{
    const struct keyed_blk *a = x, *b = y;
    if (a->key != b->key)
        return a->key < b->key ? -1 : 1;
    return a->pos < b->pos ? -1 : a->pos > b->pos;
}

/* sort_tool_results_by_call_order: stable sort of the tool results of each
 * user turn by the position of their call in the last assistant tool_calls. */
static void sort_tool_results(struct cmsg *ms, size_t n)
{
    const struct tok_pyjson **ids = NULL;
    size_t nids = 0;
    for (size_t i = 0; i < n; i++) {
        struct cmsg *m = &ms[i];
        if (m->role == R_ASSISTANT && m->tool_calls) {
            free(ids);
            ids = call_ids(m->tool_calls);
            nids = m->tool_calls->n;
            continue;
        }
        if (m->role != R_USER || !ids)
            continue;
        size_t nt = 0;
        for (size_t j = 0; j < m->nblocks; j++)
            nt += m->blocks[j].tool;
        if (nt < 2)
            continue;
        struct keyed_blk *t = ds4_xmalloc(nt * sizeof *t);
        size_t w = 0;
        for (size_t j = 0; j < m->nblocks; j++)
            if (m->blocks[j].tool) {
                t[w] = (struct keyed_blk){call_order(ids, nids, &m->blocks[j]), w, m->blocks[j]};
                w++;
            }
        qsort(t, nt, sizeof *t, keyed_cmp);
        w = 0;
        for (size_t j = 0; j < m->nblocks; j++)
            if (m->blocks[j].tool)
                m->blocks[j] = t[w++].b;
        free(t);
    }
    free(ids);
}

/* Index of the last user or developer message, or -1. */
static long last_user_index(const struct cmsg *ms, size_t n)
{
    for (size_t i = n; i-- > 0;)
        if (ms[i].role == R_USER || ms[i].role == R_DEVELOPER)
            return (long)i;
    return -1;
}

/* _drop_thinking_messages: before the last user turn, assistants lose their
 * reasoning and developer messages disappear. Works in place. */
static size_t drop_thinking(struct cmsg *ms, size_t n)
{
    long lu = last_user_index(ms, n);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (ms[i].role == R_DEVELOPER && (long)i < lu) {
            free(ms[i].blocks);
            continue;
        }
        if (ms[i].role == R_ASSISTANT && (long)i < lu) {
            ms[i].reasoning = "";
            ms[i].reasoning_n = 0;
            ms[i].raw_reasoning = NULL;
        }
        ms[k++] = ms[i];
    }
    return k;
}

/* ------------------------------------------------------------------ */
/* Rendering into pieces. */

struct rend {
    struct tok_chat_sb text;
    struct tok_chat_piece *pc;
    size_t np, cap;
};

/* Append text of one kind, merging with the previous piece when possible. */
static void emit(struct rend *r, int kind, const char *s, size_t n, int msg, int rawf)
{
    if (!n)
        return;
    struct tok_chat_piece *last = r->np ? &r->pc[r->np - 1] : NULL;
    if (last && kind != TOK_PIECE_RAW && last->kind == kind && last->msg_index == msg) {
        last->len += n;
    } else {
        if (r->np == r->cap) {
            r->cap = r->cap ? r->cap * 2 : 64;
            r->pc = ds4_xrealloc(r->pc, r->cap * sizeof *r->pc);
        }
        r->pc[r->np++] = (struct tok_chat_piece){kind, r->text.len, n, msg, rawf};
    }
    tok_chat_sb_put(&r->text, s, n);
}

static void emit_t(struct rend *r, const char *s, int msg) { emit(r, TOK_PIECE_TEMPLATE, s, strlen(s), msg, 0); }

typedef void (*field_cb)(struct rend *r, const void *ctx, int msg);
struct field {
    const char *name;
    int kind;          /* for s/n */
    const char *s;
    size_t n;
    field_cb cb;       /* or a callback that emits the field */
    const void *ctx;
};

/* Python str.format for the encoder's templates: literal text is TEMPLATE,
 * each {name} is expanded from fields. */
static void fmt(struct rend *r, const char *tmpl, const struct field *f, size_t nf, int msg)
{
    const char *p = tmpl;
    while (*p) {
        const char *q = p;
        while (*q && *q != '{' && *q != '}')
            q++;
        emit(r, TOK_PIECE_TEMPLATE, p, (size_t)(q - p), msg, 0);
        if (!*q)
            break;
        if (q[0] == q[1]) { /* "{{" or "}}" */
            emit(r, TOK_PIECE_TEMPLATE, q, 1, msg, 0);
            p = q + 2;
            continue;
        }
        const char *e = strchr(q, '}');
        DS4_ASSERT(q[0] == '{' && e);
        size_t i;
        for (i = 0; i < nf; i++)
            if (strlen(f[i].name) == (size_t)(e - q - 1) && memcmp(f[i].name, q + 1, (size_t)(e - q - 1)) == 0)
                break;
        DS4_ASSERT(i < nf);
        if (f[i].cb)
            f[i].cb(r, f[i].ctx, msg);
        else
            emit(r, f[i].kind, f[i].s, f[i].n, msg, 0);
        p = e + 1;
    }
}

#define FT(nm, str) {nm, TOK_PIECE_TEMPLATE, str, sizeof(str) - 1, NULL, NULL}
#define FC(nm, str, len) {nm, TOK_PIECE_CONTENT, str, len, NULL, NULL}
#define FCB(nm, fn, c) {nm, 0, NULL, 0, fn, c}

/* The JSON of each tool's function object, one per line. */
static void cb_tool_schemas(struct rend *r, const void *ctx, int msg)
{
    const struct tok_pyjson *tools = ctx;
    for (size_t i = 0; i < tools->n; i++) {
        const struct tok_pyjson *fn = tok_pyjson_get(&tools->a[i], "function");
        struct tok_chat_sb b = {0};
        tok_pyjson_dump(&b, fn ? fn : &tools->a[i]);
        if (i)
            emit_t(r, "\n", msg);
        emit(r, TOK_PIECE_CONTENT, b.p, b.len, msg, 0);
        tok_chat_sb_free(&b);
    }
}

/* render_tools: the tools block. */
static void render_tools(struct rend *r, const struct tok_pyjson *tools, int msg)
{
    struct field f[] = {FT("dsml_token", K_DSML), FT("thinking_start_token", K_THINK_OPEN),
                        FT("thinking_end_token", K_THINK_CLOSE), FCB("tool_schemas", cb_tool_schemas, tools)};
    fmt(r, K_TOOLS_TEMPLATE, f, 4, msg);
}

/* "\n\n" + the response format block. */
static void render_resp_fmt(struct rend *r, const struct tok_pyjson *rf, int msg)
{
    struct tok_chat_sb b = {0};
    tok_pyjson_dump(&b, rf);
    struct field f[] = {FC("schema", b.p, b.len)};
    emit_t(r, "\n\n", msg);
    fmt(r, K_RESPONSE_FORMAT, f, 1, msg);
    tok_chat_sb_free(&b);
}

/* The developer turn body: <｜User｜> + content + tools + response format. */
static void cb_developer(struct rend *r, const void *ctx, int msg)
{
    const struct cmsg *m = ctx;
    emit_t(r, K_USER, msg);
    emit(r, TOK_PIECE_CONTENT, m->content, m->content_n, msg, 0);
    if (m->tools) {
        emit_t(r, "\n\n", msg);
        render_tools(r, m->tools, msg);
    }
    if (m->resp_fmt)
        render_resp_fmt(r, m->resp_fmt, msg);
}

/* encode_arguments_to_dsml: one parameter line per argument. */
static void cb_arguments(struct rend *r, const void *ctx, int msg)
{
    const struct tok_pyjson *ar = ctx;
    struct tok_pyjson parsed = {0}, synth = {0};
    struct tok_pyjson_kv one;
    const struct tok_pyjson *obj = NULL;
    if (ar->t == TOK_PYJSON_OBJ) {
        obj = ar;
    } else if (ar->t == TOK_PYJSON_STR && tok_pyjson_parse(ar->s, ar->n, &parsed, 0, NULL, 0) == 0 && parsed.t == TOK_PYJSON_OBJ) {
        obj = &parsed;
    } else { /* not a JSON object: one parameter "arguments" holding it */
        one.k = (char *)"arguments";
        one.kn = 9;
        one.v = *ar;
        synth.t = TOK_PYJSON_OBJ;
        synth.n = 1;
        synth.kv = &one;
        obj = &synth;
    }
    for (size_t i = 0; i < obj->n; i++) {
        const struct tok_pyjson *v = &obj->kv[i].v;
        struct tok_chat_sb b = {0};
        int is_str = v->t == TOK_PYJSON_STR;
        if (!is_str)
            tok_pyjson_dump(&b, v);
        struct field f[] = {FT("dsml_token", K_DSML), FC("key", obj->kv[i].k, obj->kv[i].kn),
                            {"is_str", TOK_PIECE_TEMPLATE, is_str ? "true" : "false", is_str ? 4u : 5u, NULL, NULL},
                            FC("value", is_str ? v->s : b.p, is_str ? v->n : b.len)};
        if (i)
            emit_t(r, "\n", msg);
        fmt(r, K_PARAM, f, 4, msg);
        tok_chat_sb_free(&b);
    }
    tok_pyjson_free(&parsed);
}

/* The invoke lines of a tool_calls block, joined by newlines. */
static void cb_invokes(struct rend *r, const void *ctx, int msg)
{
    const struct tok_pyjson *calls = ctx;
    for (size_t j = 0; j < calls->n; j++) {
        const struct tok_pyjson *fn = tok_pyjson_get(&calls->a[j], "function");
        const struct tok_pyjson *nm = tok_pyjson_get(fn, "name"), *ar = tok_pyjson_get(fn, "arguments");
        struct field f[] = {FT("dsml_token", K_DSML), FC("name", nm->s, nm->n), FCB("arguments", cb_arguments, ar)};
        if (j)
            emit_t(r, "\n", msg);
        fmt(r, K_TOOL_CALL, f, 3, msg);
    }
}

struct asst_ctx {
    const struct cmsg *m;
    int show_reasoning;
};

/* {reasoning}: the kept reasoning and </think>, or nothing. */
static void cb_reasoning(struct rend *r, const void *ctx, int msg)
{
    const struct asst_ctx *a = ctx;
    if (!a->show_reasoning)
        return;
    if (a->m->raw_reasoning) {
        emit(r, TOK_PIECE_RAW, a->m->raw_reasoning->s, a->m->raw_reasoning->n, msg, TOK_RAW_REASONING);
    } else {
        struct field f[] = {FC("reasoning_content", a->m->reasoning, a->m->reasoning_n)};
        fmt(r, K_THINKING_TEMPLATE, f, 1, msg);
    }
    emit_t(r, K_THINK_CLOSE, msg);
}

/* {content}: the content, or the replayed raw body. */
static void cb_content(struct rend *r, const void *ctx, int msg)
{
    const struct asst_ctx *a = ctx;
    if (a->m->raw_body)
        emit(r, TOK_PIECE_RAW, a->m->raw_body->s, a->m->raw_body->n, msg, TOK_RAW_BODY);
    else
        emit(r, TOK_PIECE_CONTENT, a->m->content, a->m->content_n, msg, 0);
}

/* {tool_calls}: "\n\n" + the DSML block (not when the raw body replaces it). */
static void cb_tool_calls(struct rend *r, const void *ctx, int msg)
{
    const struct asst_ctx *a = ctx;
    if (a->m->raw_body || !a->m->tool_calls)
        return;
    struct field f[] = {FT("dsml_token", K_DSML), FT("tc_block_name", "tool_calls"),
                        FCB("tool_calls", cb_invokes, a->m->tool_calls)};
    emit_t(r, "\n\n", msg);
    fmt(r, K_TOOL_CALLS, f, 3, msg);
}

struct rctx {
    int thinking, drop, think_max;
    long last_user;
};

/* render_message for ms[i]: the message itself plus the transition tokens. */
static void render_msg(struct rend *r, const struct cmsg *ms, size_t n, size_t i, const struct rctx *x)
{
    const struct cmsg *m = &ms[i];
    int mi = m->orig;
    if (i == 0 && x->think_max)
        emit_t(r, K_REASONING_EFFORT_MAX, -1);
    if (m->role == R_SYSTEM) {
        struct field f[] = {FC("content", m->content, m->content_n)};
        fmt(r, K_MSG, f, 1, mi);
        if (m->tools) {
            emit_t(r, "\n\n", mi);
            render_tools(r, m->tools, mi);
        }
        if (m->resp_fmt)
            render_resp_fmt(r, m->resp_fmt, mi);
    } else if (m->role == R_DEVELOPER) {
        struct field f[] = {FCB("content", cb_developer, m)};
        fmt(r, K_MSG, f, 1, mi);
    } else if (m->role == R_USER) {
        emit_t(r, K_USER, mi);
        for (size_t j = 0; j < m->nblocks; j++) {
            const struct blk *b = &m->blocks[j];
            struct field f[] = {FC("content", b->s, b->n)};
            if (j)
                emit_t(r, "\n\n", mi);
            if (b->tool)
                fmt(r, K_TOOL_OUTPUT, f, 1, b->orig);
            else
                emit(r, TOK_PIECE_CONTENT, b->s, b->n, b->orig, 0);
        }
    } else if (m->role == R_REMINDER) {
        struct field f[] = {FC("content", m->content, m->content_n)};
        emit_t(r, K_REMINDER, mi);
        fmt(r, K_MSG, f, 1, mi);
    } else {
        DS4_ASSERT(m->role == R_ASSISTANT);
        int prev_task = i > 0 && ms[i - 1].task >= 0;
        struct asst_ctx a = {m, x->thinking && !prev_task && (!x->drop || (long)i > x->last_user)};
        struct field f[] = {FCB("reasoning", cb_reasoning, &a), FCB("content", cb_content, &a),
                            FCB("tool_calls", cb_tool_calls, &a)};
        fmt(r, m->wo_eos ? K_ASSISTANT_MSG_WO_EOS : K_ASSISTANT_MSG, f, 3, mi);
    }
    if (i + 1 < n && ms[i + 1].role != R_ASSISTANT && ms[i + 1].role != R_REMINDER)
        return;
    if (m->task >= 0) {
        if (strcmp(task_names[m->task], "action") != 0) {
            emit_t(r, task_tokens[m->task], mi);
        } else {
            emit_t(r, K_ASSISTANT, mi);
            emit_t(r, x->thinking ? K_THINK_OPEN : K_THINK_CLOSE, mi);
            emit_t(r, task_tokens[m->task], mi);
        }
    } else if (m->role == R_USER || m->role == R_DEVELOPER) {
        emit_t(r, K_ASSISTANT, mi);
        emit_t(r, x->thinking && (!x->drop || (long)i >= x->last_user) ? K_THINK_OPEN : K_THINK_CLOSE, mi);
    }
}

/* ------------------------------------------------------------------ */
/* Entry point. */

/* Read a boolean override. */
static int get_bool(const struct tok_pyjson *root, const char *key, int *dst, char *err, size_t errlen)
{
    const struct tok_pyjson *v = tok_pyjson_get(root, key);
    if (!v || v->t == TOK_PYJSON_NULL)
        return 0;
    if (v->t != TOK_PYJSON_TRUE && v->t != TOK_PYJSON_FALSE)
        return fail(err, errlen, "%s: expected a boolean", key);
    *dst = v->t == TOK_PYJSON_TRUE;
    return 0;
}

/* Apply the top-level option overrides of an object request. */
static int read_overrides(const struct tok_pyjson *root, struct tok_chat_opts *o, char *err, size_t errlen)
{
    const struct tok_pyjson *v = tok_pyjson_get(root, "thinking_mode");
    if (v && v->t != TOK_PYJSON_NULL) {
        if (v->t != TOK_PYJSON_STR || (strcmp(v->s, "thinking") != 0 && strcmp(v->s, "chat") != 0))
            return fail(err, errlen, "thinking_mode: expected \"thinking\" or \"chat\"");
        o->thinking = strcmp(v->s, "thinking") == 0;
    }
    if (get_bool(root, "thinking", &o->thinking, err, errlen) ||
        get_bool(root, "drop_thinking", &o->drop_thinking, err, errlen) ||
        get_bool(root, "add_bos", &o->add_bos, err, errlen))
        return -1;
    v = tok_pyjson_get(root, "reasoning_effort");
    if (v && v->t != TOK_PYJSON_NULL) {
        if (v->t != TOK_PYJSON_STR || (strcmp(v->s, "max") != 0 && strcmp(v->s, "high") != 0))
            return fail(err, errlen, "reasoning_effort: expected \"max\", \"high\" or null");
        o->effort_max = strcmp(v->s, "max") == 0;
    }
    v = tok_pyjson_get(root, "context_size");
    if (v && v->t != TOK_PYJSON_NULL) {
        char *end;
        errno = 0;
        unsigned long long c = v->t == TOK_PYJSON_NUM && !v->is_float && v->s[0] != '-' ? strtoull(v->s, &end, 10) : 0;
        if (v->t != TOK_PYJSON_NUM || v->is_float || v->s[0] == '-' || errno)
            return fail(err, errlen, "context_size: expected a non-negative integer");
        o->ctx_size = c;
    }
    return 0;
}

/* Free the per-message storage. */
static void free_msgs(struct cmsg *ms, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < ms[i].nblocks; j++)
            free(ms[i].blocks[j].owned);
        free(ms[i].blocks);
    }
    free(ms);
}

int tok_chat_render(const char *json, size_t len, const struct tok_chat_opts *opts,
                    struct tok_chat_result *out, char *err, size_t errlen)
{
    struct tok_chat_opts o;
    struct tok_pyjson root;
    char perr[200];
    memset(out, 0, sizeof *out);
    if (opts)
        o = *opts;
    else
        tok_chat_opts_default(&o);
    if (tok_pyjson_parse(json, len, &root, 1, perr, sizeof perr))
        return fail(err, errlen, "%s", perr);
    const struct tok_pyjson *msgs = &root, *top_tools = NULL;
    if (root.t == TOK_PYJSON_OBJ) {
        msgs = tok_pyjson_get(&root, "messages");
        if (!msgs || msgs->t != TOK_PYJSON_ARR) {
            tok_pyjson_free(&root);
            return fail(err, errlen, "messages: %s", msgs ? "expected an array" : "missing");
        }
        top_tools = tok_pyjson_get(&root, "tools");
        if ((top_tools && top_tools->t != TOK_PYJSON_NULL && check_tools(top_tools, "tools", err, errlen)) ||
            read_overrides(&root, &o, err, errlen)) {
            tok_pyjson_free(&root);
            return -1;
        }
        top_tools = truthy(top_tools) ? top_tools : NULL;
    } else if (root.t != TOK_PYJSON_ARR) {
        tok_pyjson_free(&root);
        return fail(err, errlen, "request: expected an array of messages or an object");
    }
    size_t n = msgs->n;
    struct cmsg *in = ds4_xcalloc(n + 1, sizeof *in);
    size_t base = 0;
    for (size_t i = 0; i < n; i++)
        if (load_msg(&msgs->a[i], (int)i, &in[i + 1], err, errlen)) {
            free_msgs(in, i + 1);
            tok_pyjson_free(&root);
            return -1;
        }
    /* Top-level tools go to a leading system/developer message, else to a new empty system message. */
    if (top_tools && n > 0 && (in[1].role == R_SYSTEM || in[1].role == R_DEVELOPER) && !in[1].tools) {
        in[1].tools = top_tools;
        base = 1;
    } else if (top_tools) {
        in[0] = (struct cmsg){.role = R_SYSTEM, .orig = -1, .content = "", .tools = top_tools, .task = -1};
    } else {
        base = 1;
    }
    size_t nin = n + 1 - base;
    struct cmsg *ms = ds4_xcalloc(nin + 1, sizeof *ms);
    size_t nm = merge_msgs(in + base, nin, ms);
    free(in);
    sort_tool_results(ms, nm);
    int drop = o.drop_thinking;
    for (size_t i = 0; i < nm; i++)
        if (ms[i].tools)
            drop = 0;
    if (o.thinking && drop)
        nm = drop_thinking(ms, nm);
    struct rctx x = {o.thinking ? 1 : 0, drop, o.thinking && o.effort_max && o.ctx_size >= TOK_CHAT_THINK_MAX_MIN_CTX,
                     last_user_index(ms, nm)};
    struct rend r = {0};
    if (o.add_bos)
        emit_t(&r, K_BOS, -1);
    for (size_t i = 0; i < nm; i++)
        render_msg(&r, ms, nm, i, &x);
    if (x.think_max && nm == 0)
        emit_t(&r, K_REASONING_EFFORT_MAX, -1);
    free_msgs(ms, nm);
    tok_pyjson_free(&root);
    if (!r.text.p)
        r.text.p = ds4_xstrdup("");
    out->text = r.text.p;
    out->len = r.text.len;
    out->pieces = r.pc;
    out->n_pieces = r.np;
    out->thinking = x.thinking;
    out->think_max = x.think_max;
    const struct tok_chat_piece *lp = r.np ? &r.pc[r.np - 1] : NULL;
    if (lp && lp->kind == TOK_PIECE_TEMPLATE && lp->len >= 7 &&
        memcmp(r.text.p + r.text.len - 7, K_THINK_OPEN, 7) == 0)
        out->ends_with = TOK_CHAT_END_THINK_OPEN;
    else if (lp && lp->kind == TOK_PIECE_TEMPLATE && lp->len >= 8 &&
             memcmp(r.text.p + r.text.len - 8, K_THINK_CLOSE, 8) == 0)
        out->ends_with = TOK_CHAT_END_THINK_CLOSE;
    return 0;
}

void tok_chat_result_free(struct tok_chat_result *r)
{
    free(r->text);
    free(r->pieces);
    memset(r, 0, sizeof *r);
}
