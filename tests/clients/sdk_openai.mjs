// sdk_openai.mjs - the official OpenAI Node SDK as an independent client of
// gatewayd: chat completions (plain, streamed through the SDK's own
// ChatCompletionStream assembler, raw chunks with include_usage), legacy
// completions, the Responses API (create, and the SDK's ResponseStream that
// checks the event sequence), tool-call round trips whose next turn is
// served from the engine's cache (exact replay of what the SDK sends back),
// models, and errors as the SDK's typed exceptions.
import OpenAI from 'openai';
import { URL_BASE, KEY, EOS, dsml, check, finish, assert } from './common.mjs';

const client = new OpenAI({ baseURL: `${URL_BASE}/v1`, apiKey: KEY, maxRetries: 0, timeout: 60000 });

const tools = [{
  type: 'function',
  function: {
    name: 'get_weather', description: 'Weather of a city',
    parameters: { type: 'object', properties: { city: { type: 'string' }, days: { type: 'integer' } }, required: ['city'] },
  },
}];
const TOOL_OUT = 'The user wants weather.</think>Checking.' + dsml('get_weather', [['city', 'Paris', true], ['days', '3', false]]) + EOS;
const ask = [{ role: 'user', content: 'Weather in Paris?' }];

await check('models.list and retrieve', async () => {
  const list = await client.models.list();
  const ids = list.data.map((m) => m.id);
  assert.ok(ids.includes('deepseek-v4-flash'));
  const m = await client.models.retrieve('deepseek-v4-flash');
  assert.equal(m.id, 'deepseek-v4-flash');
  await assert.rejects(client.models.retrieve('no-such-model'), (e) => e instanceof OpenAI.NotFoundError && e.status === 404);
});

let first; // the non-streamed tool-call answer, reused by the round trip
await check('chat.completions.create: reasoning, content, tool call, usage', async () => {
  const r = await client.chat.completions.create({ model: 'deepseek-v4-flash', messages: ask, tools, ds4_test_output: TOOL_OUT });
  const c = r.choices[0];
  assert.equal(r.object, 'chat.completion');
  assert.equal(c.finish_reason, 'tool_calls');
  assert.equal(c.message.content, 'Checking.');
  assert.equal(c.message.reasoning_content, 'The user wants weather.');
  assert.equal(c.message.tool_calls.length, 1);
  const tc = c.message.tool_calls[0];
  assert.equal(tc.type, 'function');
  assert.match(tc.id, /^call_[0-9a-f]{32}$/);
  assert.equal(tc.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(tc.function.arguments), { city: 'Paris', days: 3 });
  assert.ok(r.usage.prompt_tokens > 100); // the tools block is in the prompt
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  assert.equal(typeof r.usage.prompt_tokens_details.cached_tokens, 'number');
  assert.ok(r.usage.completion_tokens_details.reasoning_tokens > 0);
  first = r;
});

await check('chat tool round trip: the next turn is served from the cache (exact replay)', async () => {
  const msg = first.choices[0].message;
  const r = await client.chat.completions.create({
    model: 'deepseek-v4-flash', tools,
    messages: [...ask, msg, { role: 'tool', tool_call_id: msg.tool_calls[0].id, content: 'sunny, 21 C' }],
    ds4_test_output: 'Got it.</think>It is sunny in Paris.' + EOS,
  });
  assert.equal(r.choices[0].message.content, 'It is sunny in Paris.');
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.usage.prompt_tokens_details.cached_tokens, first.usage.prompt_tokens + first.usage.completion_tokens - 1);
});

await check('chat.completions.stream: the SDK assembles reasoning, content and tool calls', async () => {
  // no tools in this prompt (the reference engine's cost grows with the
  // prompt): the model's DSML is parsed into tool calls all the same
  const stream = client.chat.completions.stream({
    model: 'deepseek-v4-flash', messages: ask, stream_options: { include_usage: true }, ds4_test_output: TOOL_OUT,
  });
  let reasoning = '';
  let content = '';
  for await (const chunk of stream) {
    const d = chunk.choices[0]?.delta;
    if (d?.reasoning_content) reasoning += d.reasoning_content;
    if (d?.content) content += d.content;
  }
  const r = await stream.finalChatCompletion();
  assert.equal(reasoning, 'The user wants weather.');
  assert.equal(content, 'Checking.');
  const tc = r.choices[0].message.tool_calls[0];
  assert.equal(tc.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(tc.function.arguments), { city: 'Paris', days: 3 });
  assert.equal(r.choices[0].finish_reason, 'tool_calls');
  assert.ok(r.usage && r.usage.prompt_tokens > 3 && r.usage.completion_tokens > 20);
});

await check('chat stream raw chunks: role first, usage chunk last, stop strings', async () => {
  const stream = await client.chat.completions.create({
    model: 'deepseek-v4-flash', stream: true, stream_options: { include_usage: true }, stop: ['END'],
    messages: [{ role: 'user', content: 'count' }], reasoning_effort: 'none', ds4_test_output: 'one two END three' + EOS,
  });
  const chunks = [];
  for await (const ch of stream) chunks.push(ch);
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  const text = chunks.map((c) => c.choices[0]?.delta?.content || '').join('');
  assert.equal(text, 'one two ');
  const fin = chunks.find((c) => c.choices[0]?.finish_reason);
  assert.equal(fin.choices[0].finish_reason, 'stop');
  const last = chunks[chunks.length - 1];
  assert.equal(last.choices.length, 0);
  assert.ok(last.usage.completion_tokens >= 1);
});

await check('completions.create: text, stream, echo', async () => {
  const r = await client.completions.create({ model: 'deepseek-v4-flash', prompt: 'Once upon', echo: true, ds4_test_output: ' a time' + EOS });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices[0].text, 'Once upon a time');
  assert.equal(r.choices[0].finish_reason, 'stop');
  const s = await client.completions.create({ model: 'deepseek-v4-flash', prompt: 'Once upon', stream: true, ds4_test_output: ' a time' + EOS });
  let t = '';
  for await (const ch of s) t += ch.choices[0]?.text || '';
  assert.equal(t, ' a time');
});

let resp1;
await check('responses.create: output items and output_text', async () => {
  const r = await client.responses.create({
    model: 'deepseek-v4-flash', input: [{ role: 'user', content: 'Weather in Paris?' }],
    tools: [{ type: 'function', name: 'get_weather', parameters: tools[0].function.parameters, strict: false },
      { type: 'web_search' }],
    include: ['reasoning.encrypted_content'], store: false, ds4_test_output: TOOL_OUT,
  });
  assert.equal(r.status, 'completed');
  assert.equal(r.output_text, 'Checking.');
  const kinds = r.output.map((o) => o.type);
  assert.deepEqual(kinds, ['reasoning', 'message', 'function_call']);
  assert.equal(r.output[0].summary[0].text, 'The user wants weather.');
  assert.ok(r.output[0].encrypted_content);
  const fc = r.output[2];
  assert.equal(fc.name, 'get_weather');
  assert.match(fc.call_id, /^call_/);
  assert.deepEqual(JSON.parse(fc.arguments), { city: 'Paris', days: 3 });
  assert.equal(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens);
  resp1 = r;
});

await check('responses round trip as Codex sends it: cached from the engine', async () => {
  const prior = resp1.output.map((o) => ({ ...o }));
  const fc = prior[2];
  const r = await client.responses.create({
    model: 'deepseek-v4-flash', include: ['reasoning.encrypted_content'], store: false,
    tools: [{ type: 'function', name: 'get_weather', parameters: tools[0].function.parameters, strict: false }, { type: 'web_search' }],
    input: [{ role: 'user', content: 'Weather in Paris?' }, ...prior,
      { type: 'function_call_output', call_id: fc.call_id, output: 'sunny' }],
    ds4_test_output: 'ok</think>Sunny.' + EOS,
  });
  assert.equal(r.output_text, 'Sunny.');
  assert.equal(r.usage.input_tokens_details.cached_tokens, resp1.usage.input_tokens + resp1.usage.output_tokens - 1);
});

await check('responses.stream: the SDK event assembler accepts the sequence', async () => {
  const stream = client.responses.stream({ model: 'deepseek-v4-flash', input: 'Weather in Paris?', ds4_test_output: TOOL_OUT });
  const types = [];
  let seq = -1;
  for await (const ev of stream) {
    types.push(ev.type);
    assert.equal(ev.sequence_number, seq + 1);
    seq = ev.sequence_number;
  }
  const r = await stream.finalResponse();
  assert.equal(types[0], 'response.created');
  assert.equal(types[types.length - 1], 'response.completed');
  assert.ok(types.includes('response.reasoning_summary_text.delta'));
  assert.ok(types.includes('response.function_call_arguments.done'));
  assert.equal(r.output_text, 'Checking.');
  assert.deepEqual(r.output.map((o) => o.type), ['reasoning', 'message', 'function_call']);
});

await check('errors: typed exceptions with the API error fields', async () => {
  await assert.rejects(client.chat.completions.create({ model: 'x', messages: 'nope' }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError);
    assert.equal(e.status, 400);
    assert.equal(e.error.type, 'invalid_request_error');
    assert.equal(e.error.param, 'messages');
    return true;
  });
  const long = 'word '.repeat(2500);
  await assert.rejects(client.chat.completions.create({ model: 'x', messages: [{ role: 'user', content: long }] }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError);
    assert.equal(e.code, 'context_length_exceeded');
    return true;
  });
  const bad = new OpenAI({ baseURL: `${URL_BASE}/v1`, apiKey: 'wrong-key', maxRetries: 0 });
  await assert.rejects(bad.models.list(), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
});

finish('sdk_openai');
