#!/usr/bin/env python3
"""make_hf_expected.py - canonical token ids for the tokenizer corpus from HF
`tokenizers` (the oracle of SPEC §8; 0.23.2 on the GPU machine).

    python3 tests/golden/tokenizer/make_hf_expected.py \\
        node_modules/@lenml/tokenizer-deepseek_v4/models/tokenizer.json \\
        tests/data/tokenizer/corpus.jsonl \\
        [tests/data/tokenizer/expected-hf.jsonl]

Corpus entries are JSON strings, or {"hex": "..."} for raw bytes, decoded
first with bytes.decode('utf-8', errors='replace') (SPEC §8). Each text is
encoded with add_special_tokens=False (the raw tokenize request). Output: a
header object line (versions, sha256 of tokenizer.json and of the corpus,
and any line whose decode(ids) does not give back its text), then one JSON
array of ids per corpus line, in corpus order.
"""
import hashlib
import json
import platform
import sys

import tokenizers
from tokenizers import Tokenizer


def sha256_file(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    tok_path, corpus_path = sys.argv[1], sys.argv[2]
    out_path = sys.argv[3] if len(sys.argv) == 4 else 'tests/data/tokenizer/expected-hf.jsonl'
    if tokenizers.__version__ != '0.23.2':
        print('warning: tokenizers %s, SPEC names 0.23.2' % tokenizers.__version__, file=sys.stderr)
    tok = Tokenizer.from_file(tok_path)
    texts = []
    with open(corpus_path, 'rb') as f:
        for raw in f.read().split(b'\n'):
            if not raw:
                continue
            entry = json.loads(raw.decode('utf-8'))
            if isinstance(entry, str):
                texts.append(entry)
            else:
                texts.append(bytes.fromhex(entry['hex']).decode('utf-8', errors='replace'))
    rows, bad_decode = [], []
    for i, text in enumerate(texts):
        ids = tok.encode(text, add_special_tokens=False).ids
        rows.append(ids)
        if tok.decode(ids, skip_special_tokens=False) != text:
            bad_decode.append(i + 1)
    header = {
        'generator': 'make_hf_expected.py',
        'tokenizers': tokenizers.__version__,
        'python': platform.python_version(),
        'tokenizer_json_sha256': sha256_file(tok_path),
        'corpus_sha256': sha256_file(corpus_path),
        'lines': len(rows),
        'decode_mismatch_lines': bad_decode,
    }
    with open(out_path, 'w', encoding='utf-8', newline='\n') as f:
        f.write(json.dumps(header) + '\n')
        for ids in rows:
            f.write(json.dumps(ids, separators=(',', ':')) + '\n')
    print('wrote %d lines to %s (%d decode mismatches)' % (len(rows), out_path, len(bad_decode)),
          file=sys.stderr)


if __name__ == '__main__':
    main()
