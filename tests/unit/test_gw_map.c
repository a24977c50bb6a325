/* test_gw_map.c - gatewayd's request mapping (SPEC §6) without daemons:
 * each API's JSON body to the internal request and the canonical messages
 * tokenizerd renders, with the shapes real agents send (Claude Code's
 * billing block and mid-conversation system message, Codex's developer
 * items, namespace/web_search tools and reasoning items, opencode's
 * reasoning_content), every error naming its field, and the exact-replay
 * memory (keys, verification, bounds). */
#include <stdarg.h>

#include "gatewayd/gw_api.h"
#include "gatewayd/gw_replay.h"
#include "gatewayd/gw_req.h"
#include "test.h"

static gw_replay *RP;

/* Map body (JSON text) for api; returns the rc, fills r and e. */
static int map(int api, const char *json, gw_req *r, gw_err *e, int test_mode)
{
    json_error_t je;
    json_t *b = json_loads(json, JSON_REJECT_DUPLICATES, &je);
    if (!b) {
        fprintf(stderr, "bad test JSON: %s: %s\n", je.text, json);
        abort();
    }
    gw_map_opts o = {RP, test_mode, "deepseek-v4-flash"};
    gw_req_init(r, api);
    memset(e, 0, sizeof *e);
    int rc = gw_map(b, &o, r, e);
    json_decref(b);
    return rc;
}

/* Expect a 400-class failure naming param and containing text. */
static void expect_err(int api, const char *json, int status, const char *param, const char *text)
{
    gw_req r;
    gw_err e;
    int rc = map(api, json, &r, &e, 0);
    CHECKF(rc == -1, "accepted: %s", json);
    CHECKF(e.status == status, "status %d want %d (%s) for %s", e.status, status, e.msg, json);
    CHECKF(!param || !strcmp(e.param, param), "param '%s' want '%s' (%s)", e.param, param, e.msg);
    CHECKF(!text || strstr(e.msg, text), "message '%s' lacks '%s'", e.msg, text);
    gw_req_free(&r);
}

/* Canonical message i as compact JSON text. */
static char *msg_text(const gw_req *r, size_t i)
{
    return json_dumps(json_array_get(r->messages, i), JSON_COMPACT);
}

static void expect_msg(const gw_req *r, size_t i, const char *want)
{
    char *got = msg_text(r, i);
    CHECKF(got && !strcmp(got, want), "message %zu:\n got  %s\n want %s", i, got, want);
    free(got);
}

static void test_chat(void)
{
    gw_req r;
    gw_err e;
    /* system, developer and a late system message become one system text;
     * content parts are joined; unknown fields and nulls are ignored */
    CHECK(map(GW_API_CHAT,
              "{\"model\":\"m1\",\"frobnicate\":1,\"temperature\":null,\"messages\":["
              "{\"role\":\"system\",\"content\":\"S1\"},"
              "{\"role\":\"developer\",\"content\":[{\"type\":\"text\",\"text\":\"D1\"}]},"
              "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]},"
              "{\"role\":\"system\",\"content\":\"S2\"},"
              "{\"role\":\"assistant\",\"content\":null,\"reasoning_content\":\"R\",\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\","
              "\"function\":{\"name\":\"f\",\"arguments\":{\"x\":1}}}]},"
              "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"out\"}]}",
              &r, &e, 0) == 0);
    CHECK(json_array_size(r.messages) == 4);
    expect_msg(&r, 0, "{\"role\":\"system\",\"content\":\"S1\\n\\nD1\\n\\nS2\"}");
    expect_msg(&r, 1, "{\"role\":\"user\",\"content\":\"a\\n\\nb\"}");
    expect_msg(&r, 2, "{\"role\":\"assistant\",\"content\":\"\",\"reasoning_content\":\"R\",\"tool_calls\":"
                      "[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":1}\"}}]}");
    expect_msg(&r, 3, "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"out\"}");
    CHECK(r.n_system_parts == 3);
    CHECK(r.thinking == 1 && !r.effort_max && r.max_tokens == -1 && !r.has_temperature);
    CHECK(!strcmp(r.model, "m1"));
    gw_req_free(&r);

    /* tools, tool_choice, sampling, stop, limits */
    CHECK(map(GW_API_CHAT,
              "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"max_completion_tokens\":12,\"max_tokens\":99,"
              "\"temperature\":0.5,\"top_p\":0.9,\"top_k\":40,\"min_p\":0.1,\"seed\":7,\"stop\":[\"X\",\"YY\"],"
              "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"logprobs\":true,\"top_logprobs\":3,"
              "\"parallel_tool_calls\":false,\"reasoning_effort\":\"max\","
              "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"description\":\"d\",\"parameters\":{\"type\":\"object\"}}},"
              "{\"type\":\"web_search\"}],\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}}}",
              &r, &e, 0) == 0);
    CHECK(r.max_tokens == 12 && r.stream && r.include_usage && r.logprobs && r.top_logprobs == 3);
    CHECK(r.has_temperature && r.temperature == 0.5 && r.top_k == 40 && r.has_seed && r.seed == 7);
    CHECK(r.n_stop == 2 && !strcmp(r.stop[1], "YY"));
    CHECK(!r.parallel_tool_calls && r.effort_max && r.thinking);
    CHECK(json_array_size(r.tools) == 1 && r.n_ignored_tools == 1);
    CHECK(r.tool_choice == GW_TC_NAMED && !strcmp(r.tool_name, "f"));
    char *t = json_dumps(r.tools, JSON_COMPACT);
    CHECK(!strcmp(t, "[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"description\":\"d\",\"parameters\":{\"type\":\"object\"}}}]"));
    free(t);
    gw_req_free(&r);

    /* aliases and effort */
    CHECK(map(GW_API_CHAT, "{\"model\":\"deepseek-chat\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", &r, &e, 0) == 0);
    CHECK(r.thinking == 0);
    gw_req_free(&r);
    CHECK(map(GW_API_CHAT, "{\"reasoning_effort\":\"none\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", &r, &e, 0) == 0);
    CHECK(r.thinking == 0);
    gw_req_free(&r);
    CHECK(map(GW_API_CHAT, "{\"thinking\":{\"type\":\"disabled\"},\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", &r, &e, 0) == 0);
    CHECK(r.thinking == 0);
    gw_req_free(&r);
    CHECK(map(GW_API_CHAT, "{\"tool_choice\":\"none\",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
                           "\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", &r, &e, 0) == 0);
    CHECK(r.tool_choice == GW_TC_NONE);
    gw_req_free(&r);

    /* response_format: the schema goes to the system message (created if none) */
    CHECK(map(GW_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"response_format\":{\"type\":\"json_schema\","
                           "\"json_schema\":{\"name\":\"n\",\"schema\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}}}}",
              &r, &e, 0) == 0);
    expect_msg(&r, 0, "{\"role\":\"system\",\"content\":\"\",\"response_format\":{\"type\":\"object\",\"properties\":"
                      "{\"a\":{\"type\":\"integer\"}}}}");
    gw_req_free(&r);
    CHECK(map(GW_API_RESPONSES, "{\"instructions\":\"I\",\"input\":\"q\",\"text\":{\"format\":{\"type\":\"json_schema\",\"name\":\"n\","
                                "\"schema\":{\"type\":\"array\"}}}}", &r, &e, 0) == 0);
    expect_msg(&r, 0, "{\"role\":\"system\",\"content\":\"I\",\"response_format\":{\"type\":\"array\"}}");
    gw_req_free(&r);
    CHECK(map(GW_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"response_format\":{\"type\":\"text\"}}", &r, &e, 0) == 0);
    CHECK(json_array_size(r.messages) == 1);
    gw_req_free(&r);
    expect_err(GW_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"response_format\":{\"type\":\"xml\"}}", 400,
               "response_format.type", "unknown format");
    expect_err(GW_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"response_format\":{\"type\":\"json_schema\","
                            "\"json_schema\":{\"name\":\"n\"}}}", 400, "response_format.json_schema.schema", "missing");

    /* errors name the field */
    expect_err(GW_API_CHAT, "{}", 400, "messages", "missing required field 'messages'");
    expect_err(GW_API_CHAT, "{\"messages\":[]}", 400, "messages", "at least one");
    expect_err(GW_API_CHAT, "{\"messages\":{}}", 400, "messages", "expected array, got object");
    expect_err(GW_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"max_tokens\":\"10\"}", 400,
               "max_tokens", "expected integer, got string");
    expect_err(GW_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"max_tokens\":0}", 400,
               "max_tokens", "out of range");
    expect_err(GW_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"temperature\":3}", 400,
               "temperature", "out of range");
    expect_err(GW_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"stream\":\"yes\"}", 400,
               "stream", "expected boolean, got string");
    expect_err(GW_API_CHAT, "{\"messages\":[{\"role\":\"bot\",\"content\":\"q\"}]}", 400, "messages[0].role", "unknown role");
    expect_err(GW_API_CHAT, "{\"messages\":[{\"content\":\"q\"}]}", 400, "messages[0].role", "missing");
    expect_err(GW_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
                            "{\"type\":\"image_url\",\"image_url\":{\"url\":\"x\"}}]}]}",
               400, "messages[0].content[1]", "image_url");
    expect_err(GW_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"n\":2}", 400, "n", NULL);
    expect_err(GW_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"tool_choice\":\"required\"}", 400,
               "tool_choice", "needs at least one tool");
    expect_err(GW_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"tools\":[{\"type\":\"function\","
                            "\"function\":{\"name\":\"f\"}}],\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"g\"}}}",
               400, "tool_choice", "no tool named 'g'");
    expect_err(GW_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"reasoning_effort\":\"huge\"}", 400,
               "reasoning_effort", "unknown reasoning effort");
    expect_err(GW_API_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{\"arguments\":\"{}\"}}]}]}",
               400, "messages[0].tool_calls[0].function.name", "missing");
    expect_err(GW_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"stop\":[1]}", 400, "stop[0]", NULL);
    /* forced decoding is test-only */
    expect_err(GW_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"ds4_test_output\":\"x\"}", 403,
               "ds4_test_output", "--test-mode");
    CHECK(map(GW_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"ds4_test_output\":\"x\"}", &r, &e, 1) == 0);
    CHECK(r.test_output && !strcmp(r.test_output, "x"));
    gw_req_free(&r);
}

static void test_completions(void)
{
    gw_req r;
    gw_err e;
    CHECK(map(GW_API_COMPLETIONS, "{\"prompt\":\"Once\",\"max_tokens\":5,\"echo\":true,\"logprobs\":2,\"stop\":\"\\n\"}", &r, &e, 0) == 0);
    CHECK(!strcmp(r.prompt, "Once") && r.max_tokens == 5 && r.echo && r.logprobs && r.top_logprobs == 2 && r.n_stop == 1);
    gw_req_free(&r);
    CHECK(map(GW_API_COMPLETIONS, "{\"prompt\":[\"only\"]}", &r, &e, 0) == 0);
    CHECK(!strcmp(r.prompt, "only"));
    gw_req_free(&r);
    CHECK(map(GW_API_COMPLETIONS, "{\"prompt\":[1,2,3]}", &r, &e, 0) == 0);
    CHECK(r.n_prompt_ids == 3 && r.prompt_ids[2] == 3 && !r.prompt);
    gw_req_free(&r);
    CHECK(map(GW_API_COMPLETIONS, "{\"prompt\":[[4,5]]}", &r, &e, 0) == 0);
    CHECK(r.n_prompt_ids == 2 && r.prompt_ids[0] == 4);
    gw_req_free(&r);
    expect_err(GW_API_COMPLETIONS, "{}", 400, "prompt", "missing");
    expect_err(GW_API_COMPLETIONS, "{\"prompt\":[\"a\",\"b\"]}", 400, "prompt", "only one prompt");
    expect_err(GW_API_COMPLETIONS, "{\"prompt\":[1,-2]}", 400, "prompt[1]", "out of range");
    expect_err(GW_API_COMPLETIONS, "{\"prompt\":{}}", 400, "prompt", NULL);
}

/* A Codex-like Responses request with a tool round trip. */
static void test_responses(void)
{
    gw_req r;
    gw_err e;
    CHECK(map(GW_API_RESPONSES,
              "{\"model\":\"deepseek-v4-flash\",\"stream\":true,\"instructions\":\"I\",\"store\":false,"
              "\"include\":[\"reasoning.encrypted_content\"],\"prompt_cache_key\":\"sess-1\",\"reasoning\":{\"summary\":\"auto\"},"
              "\"tool_choice\":\"auto\",\"parallel_tool_calls\":true,"
              "\"tools\":[{\"type\":\"function\",\"name\":\"exec_command\",\"parameters\":{\"type\":\"object\"},\"strict\":false},"
              "{\"type\":\"namespace\",\"name\":\"multi_agent_v1\",\"tools\":[]},{\"type\":\"web_search\",\"external_web_access\":false}],"
              "\"input\":["
              "{\"type\":\"message\",\"role\":\"developer\",\"id\":\"msg_a\",\"content\":[{\"type\":\"input_text\",\"text\":\"DEV\"}]},"
              "{\"type\":\"message\",\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"ENV\"}]},"
              "{\"type\":\"message\",\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"hi\"}]},"
              "{\"type\":\"reasoning\",\"id\":\"rs_1\",\"summary\":[{\"type\":\"summary_text\",\"text\":\"think\"}],\"content\":null,"
              "\"encrypted_content\":\"ds4r_x\"},"
              "{\"type\":\"function_call\",\"status\":\"completed\",\"id\":\"fc_1\",\"name\":\"exec_command\",\"arguments\":\"{\\\"cmd\\\":\\\"ls\\\"}\","
              "\"call_id\":\"call_1\"},"
              "{\"type\":\"function_call_output\",\"id\":\"fco_1\",\"call_id\":\"call_1\",\"output\":\"a b\"},"
              "{\"type\":\"web_search_call\",\"id\":\"ws\"}]}",
              &r, &e, 0) == 0);
    CHECK(r.stream && r.include_encrypted && !strcmp(r.session, "sess-1"));
    CHECK(json_array_size(r.tools) == 1 && r.n_ignored_tools == 2);
    CHECK(json_array_size(r.messages) == 5);
    expect_msg(&r, 0, "{\"role\":\"system\",\"content\":\"I\\n\\nDEV\"}");
    expect_msg(&r, 1, "{\"role\":\"user\",\"content\":\"ENV\"}");
    expect_msg(&r, 2, "{\"role\":\"user\",\"content\":\"hi\"}");
    expect_msg(&r, 3, "{\"role\":\"assistant\",\"content\":\"\",\"reasoning_content\":\"think\",\"tool_calls\":[{\"id\":\"call_1\","
                      "\"type\":\"function\",\"function\":{\"name\":\"exec_command\",\"arguments\":\"{\\\"cmd\\\":\\\"ls\\\"}\"}}]}");
    expect_msg(&r, 4, "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"a b\"}");
    gw_req_free(&r);
    CHECK(map(GW_API_RESPONSES, "{\"input\":\"plain\",\"max_output_tokens\":7,\"reasoning\":{\"effort\":\"none\"}}", &r, &e, 0) == 0);
    CHECK(r.max_tokens == 7 && !r.thinking && json_array_size(r.messages) == 1);
    expect_msg(&r, 0, "{\"role\":\"user\",\"content\":\"plain\"}");
    gw_req_free(&r);
    /* the assistant message and the function call of one turn stay one turn */
    CHECK(map(GW_API_RESPONSES, "{\"input\":[{\"role\":\"user\",\"content\":\"q\"},"
                                "{\"type\":\"message\",\"role\":\"assistant\",\"id\":\"msg_9\",\"content\":[{\"type\":\"output_text\",\"text\":\"A\"}]},"
                                "{\"type\":\"function_call\",\"call_id\":\"c\",\"name\":\"f\",\"arguments\":\"{}\"}]}", &r, &e, 0) == 0);
    CHECK(json_array_size(r.messages) == 2);
    expect_msg(&r, 1, "{\"role\":\"assistant\",\"content\":\"A\",\"tool_calls\":[{\"id\":\"c\",\"type\":\"function\","
                      "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}");
    gw_req_free(&r);
    expect_err(GW_API_RESPONSES, "{}", 400, "input", "missing");
    expect_err(GW_API_RESPONSES, "{\"input\":5}", 400, "input", NULL);
    expect_err(GW_API_RESPONSES, "{\"input\":\"x\",\"previous_response_id\":\"resp_1\"}", 400, "previous_response_id", "stateless");
    expect_err(GW_API_RESPONSES, "{\"input\":[{\"type\":\"function_call\",\"name\":\"f\"}]}", 400, "input[0].call_id", "missing");
    expect_err(GW_API_RESPONSES, "{\"input\":[{\"type\":\"message\",\"role\":\"user\",\"content\":[{\"type\":\"input_image\",\"image_url\":\"x\"}]}]}",
               400, "input[0].content[0]", "input_image");
    expect_err(GW_API_RESPONSES, "{\"input\":\"x\",\"max_output_tokens\":1.5}", 400, "max_output_tokens", "expected integer");
}

/* A Claude Code-like Messages request. */
static void test_messages(void)
{
    gw_req r;
    gw_err e;
    CHECK(map(GW_API_MESSAGES,
              "{\"model\":\"claude-x\",\"max_tokens\":32000,\"stream\":true,\"thinking\":{\"type\":\"adaptive\"},"
              "\"output_config\":{\"effort\":\"high\"},\"context_management\":{\"edits\":[]},\"metadata\":{\"user_id\":\"{\\\"session_id\\\":\\\"s\\\"}\"},"
              "\"system\":[{\"type\":\"text\",\"text\":\"x-anthropic-billing-header: cc_version=2.1.197.1c0; cc_entrypoint=sdk-cli;\"},"
              "{\"type\":\"text\",\"text\":\"You are Claude Code.\",\"cache_control\":{\"type\":\"ephemeral\"}},"
              "{\"type\":\"text\",\"text\":\"Main instructions.\"}],"
              "\"tools\":[{\"name\":\"Bash\",\"description\":\"run\",\"input_schema\":{\"type\":\"object\",\"properties\":{\"command\":{\"type\":\"string\"}}}},"
              "{\"type\":\"web_search_20250305\",\"name\":\"web_search\"}],"
              "\"messages\":["
              "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"<system-reminder>ctx</system-reminder>\"},{\"type\":\"text\",\"text\":\"Say hello\"}]},"
              "{\"role\":\"system\",\"content\":\"Agents list\"},"
              "{\"role\":\"assistant\",\"content\":[{\"type\":\"thinking\",\"thinking\":\"T\",\"signature\":\"ds4r_sig\"},"
              "{\"type\":\"text\",\"text\":\"Running.\"},{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"Bash\",\"input\":{\"command\":\"echo hi\"}}]},"
              "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_1\",\"content\":\"hi\",\"is_error\":false,"
              "\"cache_control\":{\"type\":\"ephemeral\"}}]}]}",
              &r, &e, 0) == 0);
    CHECK(r.billing_stripped && r.stream && r.max_tokens == 32000 && r.thinking && !r.effort_max);
    CHECK(json_array_size(r.tools) == 1 && r.n_ignored_tools == 1);
    CHECK(json_array_size(r.messages) == 4);
    expect_msg(&r, 0, "{\"role\":\"system\",\"content\":\"You are Claude Code.\\n\\nMain instructions.\\n\\nAgents list\"}");
    expect_msg(&r, 1, "{\"role\":\"user\",\"content\":\"<system-reminder>ctx</system-reminder>\\n\\nSay hello\"}");
    expect_msg(&r, 2, "{\"role\":\"assistant\",\"content\":\"Running.\",\"reasoning_content\":\"T\",\"tool_calls\":[{\"id\":\"toolu_1\","
                      "\"type\":\"function\",\"function\":{\"name\":\"Bash\",\"arguments\":\"{\\\"command\\\":\\\"echo hi\\\"}\"}}]}");
    expect_msg(&r, 3, "{\"role\":\"tool\",\"tool_call_id\":\"toolu_1\",\"content\":\"hi\"}");
    gw_req_free(&r);

    /* tool_result as blocks; tool_choice kinds; thinking disabled; effort max */
    CHECK(map(GW_API_MESSAGES, "{\"thinking\":{\"type\":\"disabled\"},\"tools\":[{\"name\":\"A\",\"input_schema\":{}}],"
                               "\"tool_choice\":{\"type\":\"any\",\"disable_parallel_tool_use\":true},"
                               "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"t\","
                               "\"content\":[{\"type\":\"text\",\"text\":\"l1\"},{\"type\":\"text\",\"text\":\"l2\"}]},{\"type\":\"text\",\"text\":\"go\"}]}]}",
              &r, &e, 0) == 0);
    CHECK(!r.thinking && r.tool_choice == GW_TC_REQUIRED && !r.parallel_tool_calls);
    expect_msg(&r, 0, "{\"role\":\"tool\",\"tool_call_id\":\"t\",\"content\":\"l1\\n\\nl2\"}");
    expect_msg(&r, 1, "{\"role\":\"user\",\"content\":\"go\"}");
    gw_req_free(&r);
    CHECK(map(GW_API_MESSAGES, "{\"output_config\":{\"effort\":\"max\"},\"tools\":[{\"name\":\"A\"}],\"tool_choice\":{\"type\":\"tool\",\"name\":\"A\"},"
                               "\"system\":\"plain system\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", &r, &e, 0) == 0);
    CHECK(r.effort_max && r.tool_choice == GW_TC_NAMED && !strcmp(r.tool_name, "A"));
    expect_msg(&r, 0, "{\"role\":\"system\",\"content\":\"plain system\"}");
    gw_req_free(&r);
    /* count_tokens takes the same body */
    CHECK(map(GW_API_COUNT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}", &r, &e, 0) == 0);
    CHECK(r.api == GW_API_COUNT && json_array_size(r.messages) == 1);
    gw_req_free(&r);

    expect_err(GW_API_MESSAGES, "{\"max_tokens\":10}", 400, "messages", "missing");
    expect_err(GW_API_MESSAGES, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image\",\"source\":{}}]}]}", 400,
               "messages[0].content[0]", "'image' is not supported");
    expect_err(GW_API_MESSAGES, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"tool_choice\":{\"type\":\"sometimes\"}}",
               400, "tool_choice.type", "unknown value");
    expect_err(GW_API_MESSAGES, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"max_tokens\":-1}", 400, "max_tokens", NULL);
    expect_err(GW_API_MESSAGES, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\"}]}]}", 400,
               "messages[0].content[0].tool_use_id", "missing");
    expect_err(GW_API_MESSAGES, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"system\":7}", 400, "system", NULL);
}

/* Error bodies in each API's shape and type. */
static void test_error_shapes(void)
{
    gw_err e;
    gw_fail(&e, GW_E_INVALID, "messages[1].content", "bad");
    snprintf(e.code, sizeof e.code, "context_length_exceeded");
    json_t *j = gw_error_json(GW_API_CHAT, &e);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    CHECK(!strcmp(s, "{\"error\":{\"message\":\"bad\",\"type\":\"invalid_request_error\",\"param\":\"messages[1].content\","
                     "\"code\":\"context_length_exceeded\"}}"));
    free(s);
    j = gw_error_json(GW_API_MESSAGES, &e);
    s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    CHECK(!strcmp(s, "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"bad\"}}"));
    free(s);
    gw_fail(&e, GW_E_RATE_LIMIT, NULL, "busy");
    CHECK(e.status == 429);
    j = gw_error_json(GW_API_MESSAGES, &e);
    CHECK(!strcmp(json_string_value(json_object_get(json_object_get(j, "error"), "type")), "rate_limit_error"));
    json_decref(j);
    gw_fail(&e, GW_E_UNAVAILABLE, NULL, "down");
    CHECK(e.status == 503);
    j = gw_error_json(GW_API_RESPONSES, &e);
    CHECK(!strcmp(json_string_value(json_object_get(json_object_get(j, "error"), "type")), "server_error"));
    json_decref(j);
}

/* The replay memory: keys, verification, eviction. */
static void test_replay(void)
{
    gw_replay *rp = gw_replay_new(3, 1 << 20);
    int32_t rids[] = {10, 11}, bids[] = {20, 21, 22};
    gw_replay_call calls[] = {{"call_a", "f", "{\"x\": 1, \"y\": [1, 2]}"}};
    const char *keys[] = {"ds4r_sig1"};
    gw_replay_turn t = {"R", 1, "Body<DSML>", 10, rids, 2, bids, 3, "Body", 4, calls, 1, keys, 1};
    gw_replay_put(rp, &t);
    /* found by call id with re-serialized, reordered arguments */
    gw_replay_call in1[] = {{"call_a", "f", "{\"y\":[1,2],\"x\":1}"}};
    json_t *raw = gw_replay_lookup(rp, NULL, 0, "Body", 4, in1, 1);
    CHECK(raw != NULL);
    char *s = json_dumps(raw, JSON_COMPACT);
    CHECK(s && !strcmp(s, "{\"reasoning\":\"R\",\"body\":\"Body<DSML>\",\"reasoning_ids\":[10,11],\"body_ids\":[20,21,22]}"));
    free(s);
    json_decref(raw);
    /* by the signature key alone (no call ids given) */
    gw_replay_call in2[] = {{NULL, "f", "{\"x\":1,\"y\":[1,2]}"}};
    const char *k2[] = {"ds4r_sig1"};
    raw = gw_replay_lookup(rp, k2, 1, " Body\n", 6, in2, 1);
    CHECK(raw != NULL); /* surrounding whitespace tolerated */
    json_decref(raw);
    /* changed arguments, content, name or count: not replayed */
    gw_replay_call in3[] = {{"call_a", "f", "{\"x\":2,\"y\":[1,2]}"}};
    CHECK(!gw_replay_lookup(rp, NULL, 0, "Body", 4, in3, 1));
    CHECK(!gw_replay_lookup(rp, NULL, 0, "Other", 5, in1, 1));
    gw_replay_call in4[] = {{"call_a", "g", "{\"x\":1,\"y\":[1,2]}"}};
    CHECK(!gw_replay_lookup(rp, NULL, 0, "Body", 4, in4, 1));
    CHECK(!gw_replay_lookup(rp, NULL, 0, "Body", 4, NULL, 0));
    gw_replay_stats st;
    gw_replay_get_stats(rp, &st);
    CHECK(st.hits == 2 && st.mismatches == 3 && st.misses == 1 && st.entries == 1);
    /* a plain answer is found by the hash of its content */
    gw_replay_turn t2 = {NULL, 0, "Hello!", 6, NULL, 0, bids, 3, "Hello!", 6, NULL, 0, NULL, 0};
    gw_replay_put(rp, &t2);
    raw = gw_replay_lookup(rp, NULL, 0, "Hello!", 6, NULL, 0);
    CHECK(raw && json_is_null(json_object_get(raw, "reasoning")) && !json_object_get(raw, "reasoning_ids"));
    json_decref(raw);
    CHECK(!gw_replay_lookup(rp, NULL, 0, "Hello", 5, NULL, 0));
    /* bounded: 3 entries, least recently used goes first */
    gw_replay_turn t3 = {NULL, 0, "B3", 2, NULL, 0, NULL, 0, "B3", 2, NULL, 0, NULL, 0};
    gw_replay_turn t4 = {NULL, 0, "B4", 2, NULL, 0, NULL, 0, "B4", 2, NULL, 0, NULL, 0};
    gw_replay_put(rp, &t3);
    raw = gw_replay_lookup(rp, NULL, 0, "Body", 4, in1, 1); /* refresh the first turn */
    json_decref(raw);
    gw_replay_put(rp, &t4); /* evicts "Hello!" */
    gw_replay_get_stats(rp, &st);
    CHECK(st.entries == 3 && st.evictions == 1);
    CHECK(!gw_replay_lookup(rp, NULL, 0, "Hello!", 6, NULL, 0));
    raw = gw_replay_lookup(rp, NULL, 0, "Body", 4, in1, 1);
    CHECK(raw != NULL);
    json_decref(raw);
    gw_replay_free(rp);
    /* byte bound */
    rp = gw_replay_new(1000, 4096);
    char big[1500];
    memset(big, 'a', sizeof big);
    for (int i = 0; i < 20; i++) {
        big[0] = (char)('A' + i);
        gw_replay_turn tb = {NULL, 0, big, sizeof big, NULL, 0, NULL, 0, big, sizeof big, NULL, 0, NULL, 0};
        gw_replay_put(rp, &tb);
    }
    gw_replay_get_stats(rp, &st);
    CHECKF(st.bytes <= 4096 && st.entries >= 1 && st.entries < 20, "bytes %llu entries %llu",
           (unsigned long long)st.bytes, (unsigned long long)st.entries);
    gw_replay_free(rp);
}

/* Assistant turns found in the replay memory get _ds4_raw when mapped. */
static void test_map_replay(void)
{
    int32_t bids[] = {1, 2};
    gw_replay_call calls[] = {{"toolu_r", "Bash", "{\"command\": \"ls\"}"}};
    const char *keys[] = {"ds4r_k"};
    gw_replay_turn t = {"why", 3, "Run.\n\n<DSML...>", 15, NULL, 0, bids, 2, "Run.", 4, calls, 1, keys, 1};
    gw_replay_put(RP, &t);
    gw_req r;
    gw_err e;
    CHECK(map(GW_API_MESSAGES, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":["
                               "{\"type\":\"thinking\",\"thinking\":\"why\",\"signature\":\"ds4r_k\"},{\"type\":\"text\",\"text\":\"Run.\"},"
                               "{\"type\":\"tool_use\",\"id\":\"toolu_r\",\"name\":\"Bash\",\"input\":{\"command\":\"ls\"}}]},"
                               "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_r\",\"content\":\"x\"}]}]}",
              &r, &e, 0) == 0);
    CHECK(r.n_replayed == 1);
    json_t *raw = json_object_get(json_array_get(r.messages, 1), "_ds4_raw");
    CHECK(raw && !strcmp(json_string_value(json_object_get(raw, "body")), "Run.\n\n<DSML...>"));
    CHECK(json_array_size(json_object_get(raw, "body_ids")) == 2);
    gw_req_free(&r);
    /* the same turn through the chat API (opencode drops the signature) */
    CHECK(map(GW_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"Run.\","
                           "\"reasoning_content\":\"\",\"tool_calls\":[{\"id\":\"toolu_r\",\"type\":\"function\",\"function\":"
                           "{\"name\":\"Bash\",\"arguments\":\"{\\\"command\\\":\\\"ls\\\"}\"}}]}]}", &r, &e, 0) == 0);
    CHECK(r.n_replayed == 1);
    gw_req_free(&r);
    /* edited by the client: rendered canonically */
    CHECK(map(GW_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"Run!\","
                           "\"tool_calls\":[{\"id\":\"toolu_r\",\"type\":\"function\",\"function\":"
                           "{\"name\":\"Bash\",\"arguments\":\"{\\\"command\\\":\\\"ls\\\"}\"}}]}]}", &r, &e, 0) == 0);
    CHECK(r.n_replayed == 0 && !json_object_get(json_array_get(r.messages, 1), "_ds4_raw"));
    gw_req_free(&r);
}

int main(void)
{
    RP = gw_replay_new(100, 1 << 20);
    test_chat();
    test_completions();
    test_responses();
    test_messages();
    test_error_shapes();
    test_replay();
    test_map_replay();
    gw_replay_free(RP);
    return test_main_end("test_gw_map");
}
