// make_js_expected.mjs - token ids from the JS reference tokenizer (npm
// @lenml/tokenizer-deepseek_v4, a transformers.js port) for every entry of
// the tokenizer corpus, as encode(text, {add_special_tokens: false}).
//
//   node tests/golden/tokenizer/make_js_expected.mjs \
//        [tests/data/tokenizer/corpus.jsonl] [tests/data/tokenizer/expected-js.jsonl]
//
// Corpus entries are JSON strings, or {"hex": "..."} for raw bytes that are
// first decoded with replacement (WHATWG TextDecoder, the same maximal-
// subpart rule as Python's errors="replace"). Output: a header object line,
// then one JSON array of ids per corpus line. This is the CI-side second
// reference only: HF tokenizers is canonical (SPEC §8); the JS regex \s
// differs from Oniguruma's on U+0085 and U+FEFF.
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fromPreTrained } from "@lenml/tokenizer-deepseek_v4";

const corpusPath = process.argv[2] ?? "tests/data/tokenizer/corpus.jsonl";
const outPath = process.argv[3] ?? "tests/data/tokenizer/expected-js.jsonl";
const require = createRequire(import.meta.url);
const tokJsonPath = require.resolve("@lenml/tokenizer-deepseek_v4/models/tokenizer.json");
// package.json is not in the package's exports: read it beside models/
const pkg = JSON.parse(readFileSync(new URL("../package.json", `file://${tokJsonPath}`)));

const sha256 = (buf) => createHash("sha256").update(buf).digest("hex");
const corpus = readFileSync(corpusPath);
const tok = fromPreTrained();
const dec = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

const out = [JSON.stringify({
  generator: "make_js_expected.mjs",
  package: `${pkg.name}@${pkg.version}`,
  node: process.version,
  tokenizer_json_sha256: sha256(readFileSync(tokJsonPath)),
  corpus_sha256: sha256(corpus),
})];
const lines = corpus.toString("utf8").split("\n").filter((l) => l.length > 0);
for (const line of lines) {
  const entry = JSON.parse(line);
  const text = typeof entry === "string" ? entry : dec.decode(Buffer.from(entry.hex, "hex"));
  out.push(JSON.stringify(tok.encode(text, { add_special_tokens: false })));
}
writeFileSync(outPath, out.join("\n") + "\n");
console.error(`wrote ${lines.length} lines to ${outPath}`);
