/* test_eng_dsml_guard.c - the greedy-in-DSML state machine on scripted
 * model outputs, tokenized with the real DeepSeek V4 vocabulary (added
 * tokens such as ｜DSML｜ and <think> as single ids, as the model emits
 * them): for every token, "would it be chosen greedily" must match the
 * script (tags and the space between them: yes; parameter values, text
 * and reasoning: no), also when the same text is fed byte by byte;
 * a prompt that ends inside a tool call starts greedy; DSML inside
 * reasoning is text; a runaway block is released. */
#include <string.h>

#include "engined/eng_dsml_guard.h"
#include "test.h"
#include "tokenizerd/tok_bpe.h"

#define DEFAULT_TOKJSON "node_modules/@lenml/tokenizer-deepseek_v4/models/tokenizer.json"
#define D "｜DSML｜"

static tok_vocab *V;
static tok_encoder *E;
static eng_dsml_vocab DV;

/* A script: text pieces and whether tokens starting in them are greedy. */
struct seg {
    const char *text;
    int greedy;
};

/* Tokenize the whole script (raw mode), then feed token by token and
 * compare the guard's decision before each token with the flag of the
 * segment the token starts in. Also byte by byte (same decisions at
 * every segment start). prompt: ids fed first with guard_start. */
static void run_script(const char *name, const char *prompt, const struct seg *sg, int n)
{
    char text[8192];
    size_t len = 0, start[64];
    for (int i = 0; i < n; i++) {
        start[i] = len;
        size_t l = strlen(sg[i].text);
        memcpy(text + len, sg[i].text, l);
        len += l;
    }
    tok_ids pids = {0}, ids = {0};
    CHECK(tok_encode(E, prompt, strlen(prompt), TOK_MODE_RAW, &pids, NULL, 0) == 0);
    CHECK(tok_encode(E, text, len, TOK_MODE_RAW, &ids, NULL, 0) == 0);
    eng_dsml_guard g;
    eng_dsml_guard_start(&g, &DV, (const int32_t *)pids.v, (uint32_t)pids.n);
    size_t off = 0;
    int bad = 0;
    for (size_t k = 0; k < ids.n; k++) {
        int seg = 0;
        while (seg + 1 < n && start[seg + 1] <= off)
            seg++;
        int want = sg[seg].greedy, got = eng_dsml_guard_greedy(&g);
        size_t bl;
        const char *b = tok_vocab_bytes(V, ids.v[k], &bl);
        if (want != got && bad++ < 5)
            fprintf(stderr, "%s: token %zu '%.*s' (segment %d) greedy %d, want %d\n", name, k,
                    (int)bl, b, seg, got, want);
        eng_dsml_guard_token(&g, (int32_t)ids.v[k]);
        off += bl;
    }
    CHECKF(bad == 0, "%s: %d tokens decided wrongly", name, bad);
    CHECK(off == len);
    /* byte by byte: at each segment start the state is the segment's */
    eng_dsml_guard_start(&g, &DV, (const int32_t *)pids.v, (uint32_t)pids.n);
    for (int i = 0; i < n; i++) {
        CHECKF(eng_dsml_guard_greedy(&g) == sg[i].greedy, "%s: bytes at segment %d", name, i);
        eng_dsml_guard_bytes(&g, sg[i].text, strlen(sg[i].text));
    }
    tok_ids_free(&pids);
    tok_ids_free(&ids);
}

static void test_tool_call(void)
{
    const struct seg s[] = {
        {"Let me look that up for you.\n\n<", 0},
        {D, 0},
        {"tool_calls>\n<" D "invoke name=\"get_weather\">\n<" D
         "parameter name=\"city\" string=\"true\">",
         1},
        {"Paris, \"France\" <b>bold</b>", 0},
        {"</" D, 0},
        {"parameter>\n<" D "parameter name=\"days\" string=\"false\">", 1},
        {"[1, 2, {\"a\": \"x>y\"}]", 0},
        {"</" D, 0},
        {"parameter>\n</" D "invoke>\n<" D "invoke name=\"second\">\n</" D "invoke>\n</" D
         "tool_calls>",
         1},
        {"<｜end▁of▁sentence｜>", 0},
    };
    run_script("tool call", "<｜begin▁of▁sentence｜>hi<｜User｜>weather?<｜Assistant｜></think>", s,
               (int)(sizeof s / sizeof s[0]));
}

static void test_thinking(void)
{
    /* DSML written inside reasoning is text; after </think> it counts */
    const struct seg s[] = {
        {"I could call <" D "tool_calls> here, or write \"</" D "parameter>\".\n", 0},
        {"</think>The answer.\n\n<" D, 0},
        {"tool_calls>\n<" D "invoke name=\"f\">\n</" D "invoke>\n</" D "tool_calls>", 1},
        {" done", 0},
    };
    run_script("thinking", "<｜User｜>q<｜Assistant｜><think>", s, (int)(sizeof s / sizeof s[0]));
    eng_dsml_guard g;
    tok_ids p = {0};
    CHECK(tok_encode(E, "<｜User｜>q<｜Assistant｜><think>", strlen("<｜User｜>q<｜Assistant｜><think>"),
                     TOK_MODE_RAW, &p, NULL, 0) == 0);
    eng_dsml_guard_start(&g, &DV, (const int32_t *)p.v, (uint32_t)p.n);
    CHECK(g.thinking == 1 && g.state == ENG_DSML_THINK);
    tok_ids_free(&p);
    CHECK(tok_encode(E, "<｜User｜>q<｜Assistant｜></think>", strlen("<｜User｜>q<｜Assistant｜></think>"),
                     TOK_MODE_RAW, &p, NULL, 0) == 0);
    eng_dsml_guard_start(&g, &DV, (const int32_t *)p.v, (uint32_t)p.n);
    CHECK(g.thinking == 0 && g.state == ENG_DSML_TEXT);
    tok_ids_free(&p);
}

static void test_prompt_inside_call(void)
{
    /* the prompt already opened the block and the invoke's name attribute;
     * only the last assistant turn counts (an earlier, unfinished call in
     * history does not) */
    const char *prompt = "<｜User｜>x<｜Assistant｜></think><" D "tool_calls>\n<" D
                         "invoke name=\"a\"><｜end▁of▁sentence｜><｜User｜>y<｜Assistant｜>"
                         "</think>\n\n<" D "tool_calls>\n<" D "invoke name=\"";
    const struct seg s[] = {
        {"read_file\">\n<" D "parameter name=\"path\" string=\"true\">", 1},
        {"/etc/hosts", 0},
        {"</" D, 0},
        {"parameter>\n</" D "invoke>\n</" D "tool_calls>", 1},
    };
    run_script("prompt inside call", prompt, s, (int)(sizeof s / sizeof s[0]));
    /* a finished call in the prompt leaves text state */
    eng_dsml_guard g;
    tok_ids p = {0};
    const char *done = "<｜Assistant｜></think><" D "tool_calls>\n</" D "tool_calls>";
    CHECK(tok_encode(E, done, strlen(done), TOK_MODE_RAW, &p, NULL, 0) == 0);
    eng_dsml_guard_start(&g, &DV, (const int32_t *)p.v, (uint32_t)p.n);
    CHECK(!eng_dsml_guard_greedy(&g));
    tok_ids_free(&p);
}

static void test_variants_and_runaway(void)
{
    /* the first bar omitted ("<DSML｜") is recognised too */
    const struct seg s[] = {
        {"x <DSML｜", 0},
        {"tool_calls>\n<DSML｜invoke name=\"f\">\n<DSML｜parameter name=\"k\" string=\"true\">", 1},
        {"v", 0},
        {"</DSML｜", 0},
        {"parameter>\n</DSML｜invoke>\n</DSML｜tool_calls>", 1},
        {"after", 0},
    };
    run_script("variant", "<｜Assistant｜></think>", s, (int)(sizeof s / sizeof s[0]));
    /* a tag name that is not tool_calls, in text: released at its '>' */
    const struct seg s2[] = {
        {"see <", 0}, {D, 0}, {"note>", 1}, {" and more text", 0}};
    run_script("other tag", "<｜Assistant｜></think>", s2, (int)(sizeof s2 / sizeof s2[0]));
    /* runaway: a block that never gets another tag */
    eng_dsml_guard g;
    eng_dsml_guard_start(&g, &DV, NULL, 0);
    eng_dsml_guard_bytes(&g, "<" D "tool_calls>", strlen("<" D "tool_calls>"));
    CHECK(eng_dsml_guard_greedy(&g) && g.state == ENG_DSML_BLOCK);
    for (int i = 0; i < ENG_DSML_RUNAWAY && eng_dsml_guard_greedy(&g); i++)
        eng_dsml_guard_bytes(&g, "z", 1);
    CHECK(eng_dsml_guard_greedy(&g));
    eng_dsml_guard_bytes(&g, "z", 1);
    CHECK(!eng_dsml_guard_greedy(&g) && g.state == ENG_DSML_TEXT);
    /* a tag that never closes */
    eng_dsml_guard_start(&g, &DV, NULL, 0);
    eng_dsml_guard_bytes(&g, "<" D "tool_calls", strlen("<" D "tool_calls"));
    CHECK(g.state == ENG_DSML_TAG);
    for (int i = 0; i <= ENG_DSML_RUNAWAY; i++)
        eng_dsml_guard_bytes(&g, "\"", 1); /* quotes toggle; still no '>' */
    CHECK(g.state == ENG_DSML_TEXT);
    /* no vocabulary: never greedy, no crash */
    eng_dsml_guard_start(&g, NULL, NULL, 0);
    eng_dsml_guard_token(&g, 5);
    CHECK(!eng_dsml_guard_greedy(&g));
}

int main(void)
{
    const char *path = getenv("DS4_TOKENIZER_JSON");
    char err[256] = "";
    if (tok_vocab_from_json_file(path && *path ? path : DEFAULT_TOKJSON, &V, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        CHECK(0);
        return test_main_end("test_eng_dsml_guard");
    }
    E = tok_encoder_new(V, err, sizeof err);
    CHECK(eng_dsml_vocab_init(&DV, V) == 0);
    test_tool_call();
    test_thinking();
    test_prompt_inside_call();
    test_variants_and_runaway();
    tok_encoder_free(E);
    tok_vocab_free(V);
    return test_main_end("test_eng_dsml_guard");
}
