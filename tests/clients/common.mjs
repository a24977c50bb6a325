// common.mjs - shared pieces of the SDK client tests (run by
// tests/unit/test_gw_clients.c against a live stack in test mode).
//
// The model's output is scripted with "ds4_test_output" (forced decoding:
// the engine still runs every forward pass); these strings are what a
// DeepSeek V4 model writes: reasoning, "</think>", content, DSML tool calls,
// the end-of-sentence token.
import assert from 'node:assert/strict';

export const URL_BASE = process.env.DS4_GW_URL;
export const KEY = process.env.DS4_GW_KEY || 'none';
if (!URL_BASE) {
  console.error('DS4_GW_URL is not set');
  process.exit(2);
}

export const EOS = '<\uff5cend\u2581of\u2581sentence\uff5c>';
const D = '\uff5cDSML\uff5c';

// One DSML tool-call block; params: [name, value, isString].
export function dsml(name, params) {
  let s = `\n\n<${D}tool_calls>\n<${D}invoke name="${name}">\n`;
  for (const [k, v, str] of params)
    s += `<${D}parameter name="${k}" string="${str ? 'true' : 'false'}">${v}</${D}parameter>\n`;
  return s + `</${D}invoke>\n</${D}tool_calls>`;
}

let passed = 0;
let failed = 0;

// Run one named check; failures are reported and counted, not thrown.
export async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}

// The closing line and the exit status.
export function finish(suite) {
  console.log(`${suite}: ${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

export { assert };
