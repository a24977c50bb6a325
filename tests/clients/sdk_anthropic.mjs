// sdk_anthropic.mjs - the official Anthropic Node SDK as an independent
// client of gatewayd, used the way Claude Code uses the API: messages
// (plain and through the SDK's MessageStream, which assembles thinking
// with its signature, text and tool_use input from input_json_delta), the
// beta path (?beta=true), count_tokens, a tool round trip sending back the
// blocks exactly as the SDK returned them (served from the engine's cache),
// stop sequences, and errors as typed exceptions.
import Anthropic from '@anthropic-ai/sdk';
import { URL_BASE, KEY, EOS, dsml, check, finish, assert } from './common.mjs';

const client = new Anthropic({ baseURL: URL_BASE, apiKey: KEY, maxRetries: 0, timeout: 60000 });

const tools = [{
  name: 'Bash', description: 'Run a shell command',
  input_schema: { type: 'object', properties: { command: { type: 'string' } }, required: ['command'] },
}];
const system = [
  { type: 'text', text: 'x-anthropic-billing-header: cc_version=2.1.197.1c0; cc_entrypoint=sdk-cli;' },
  { type: 'text', text: 'You are a coding agent.', cache_control: { type: 'ephemeral' } },
];
const TOOL_OUT = 'I will run it.</think>Running echo.' + dsml('Bash', [['command', 'echo hi', true]]) + EOS;
const ask = [{ role: 'user', content: [{ type: 'text', text: 'Run echo hi' }] }];
const base = { model: 'claude-sonnet-4-x', max_tokens: 32000, system, tools, thinking: { type: 'adaptive' } };

let first;
await check('messages.create: thinking, text, tool_use, usage', async () => {
  const m = await client.messages.create({ ...base, messages: ask, ds4_test_output: TOOL_OUT });
  assert.equal(m.type, 'message');
  assert.equal(m.role, 'assistant');
  assert.equal(m.stop_reason, 'tool_use');
  assert.deepEqual(m.content.map((b) => b.type), ['thinking', 'text', 'tool_use']);
  assert.equal(m.content[0].thinking, 'I will run it.');
  assert.ok(m.content[0].signature.length > 0);
  assert.equal(m.content[1].text, 'Running echo.');
  assert.equal(m.content[2].name, 'Bash');
  assert.match(m.content[2].id, /^toolu_/);
  assert.deepEqual(m.content[2].input, { command: 'echo hi' });
  assert.ok(m.usage.input_tokens + m.usage.cache_read_input_tokens > 100);
  assert.ok(m.usage.output_tokens > 5);
  first = m;
});

await check('count_tokens agrees with the prompt the generation used', async () => {
  const c = await client.messages.countTokens({ model: base.model, system, tools, messages: ask, thinking: base.thinking });
  assert.equal(c.input_tokens, first.usage.input_tokens + first.usage.cache_read_input_tokens);
});

await check('tool round trip with the SDK\'s own blocks: served from the cache', async () => {
  const m = await client.messages.create({
    ...base, system: [{ ...system[0], text: system[0].text.replace('1c0', '0cf') }, system[1]],
    messages: [...ask, { role: 'assistant', content: first.content },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: first.content[2].id, content: 'hi', is_error: false }] }],
    ds4_test_output: 'Done.</think>It printed hi.' + EOS,
  });
  assert.equal(m.stop_reason, 'end_turn');
  assert.equal(m.content[m.content.length - 1].text, 'It printed hi.');
  const prev = first.usage.input_tokens + first.usage.cache_read_input_tokens + first.usage.output_tokens;
  assert.equal(m.usage.cache_read_input_tokens, prev - 1);
});

await check('messages.stream: MessageStream assembles thinking, signature, text and tool input', async () => {
  // no tools in this prompt (the reference engine's cost grows with it)
  const stream = client.messages.stream({ ...base, tools: undefined, messages: ask, ds4_test_output: TOOL_OUT });
  let text = '';
  stream.on('text', (t) => { text += t; });
  const events = [];
  for await (const ev of stream) events.push(ev.type);
  const m = await stream.finalMessage();
  assert.equal(events[0], 'message_start');
  assert.equal(events[events.length - 1], 'message_stop');
  assert.equal(text, 'Running echo.');
  assert.deepEqual(m.content.map((b) => b.type), ['thinking', 'text', 'tool_use']);
  assert.equal(m.content[0].thinking, 'I will run it.');
  assert.ok(m.content[0].signature.startsWith('ds4r_'));
  assert.deepEqual(m.content[2].input, { command: 'echo hi' });
  assert.equal(m.stop_reason, 'tool_use');
  assert.ok(m.usage.output_tokens > 5);
});

await check('beta.messages (?beta=true), thinking disabled, stop_sequences', async () => {
  const m = await client.beta.messages.create({
    model: base.model, max_tokens: 100, thinking: { type: 'disabled' }, stop_sequences: ['STOP'],
    messages: [{ role: 'user', content: 'say stop' }], ds4_test_output: 'go on STOP not this' + EOS,
  });
  assert.equal(m.content.length, 1);
  assert.equal(m.content[0].text, 'go on ');
  assert.equal(m.stop_reason, 'stop_sequence');
  assert.equal(m.stop_sequence, 'STOP');
});

await check('max_tokens reached: stop_reason max_tokens', async () => {
  const m = await client.messages.create({
    model: base.model, max_tokens: 3, thinking: { type: 'disabled' },
    messages: [{ role: 'user', content: 'long' }], ds4_test_output: 'a b c d e f g h' + EOS,
  });
  assert.equal(m.stop_reason, 'max_tokens');
  assert.equal(m.usage.output_tokens, 3);
});

await check('errors: typed exceptions in Anthropic\'s shape', async () => {
  await assert.rejects(client.messages.create({ model: 'x', max_tokens: 5, messages: [{ role: 'user', content: [{ type: 'image', source: {} }] }] }),
    (e) => {
      assert.ok(e instanceof Anthropic.BadRequestError);
      assert.equal(e.status, 400);
      assert.equal(e.error.type, 'error');
      assert.equal(e.error.error.type, 'invalid_request_error');
      return true;
    });
  const bad = new Anthropic({ baseURL: URL_BASE, apiKey: 'wrong-key', maxRetries: 0 });
  await assert.rejects(bad.messages.create({ model: 'x', max_tokens: 5, messages: [{ role: 'user', content: 'q' }] }),
    (e) => e instanceof Anthropic.AuthenticationError && e.status === 401);
  await assert.rejects(client.messages.create({ model: 'x', max_tokens: 5, messages: [{ role: 'user', content: 'word '.repeat(2500) }] }),
    (e) => e instanceof Anthropic.BadRequestError && e.error.error.type === 'invalid_request_error');
});

finish('sdk_anthropic');
