#!/usr/bin/env python3
"""make_hf_chat_ids.py - expected prompt token ids of rendered chat
transcripts, from HF `tokenizers` (the oracle of SPEC §8).

    python3 tests/golden/chat/make_hf_chat_ids.py \\
        node_modules/@lenml/tokenizer-deepseek_v4/models/tokenizer.json \\
        OUT_DIR tests/data/dsv4-encoding/test_output_*.txt [more .txt ...]

Each rendered prompt text (e.g. the official golden test_output_N.txt) is
encoded with add_special_tokens=False. Inside the official golden pairs the
message contents contain no added-token strings, so every added token HF
finds there comes from the template: the result equals the chat encoding
tokenizerd produces (template tokens looked up, content as plain text).
For transcripts whose content does contain added-token strings the ids
differ from a chat rendering by design; the C test only compares the ones
it names.

Output: OUT_DIR/<name>.ids.json per input (name = file name without .txt):
{"generator", "tokenizers", "transformers", "python",
 "tokenizer_json_sha256", "source", "text_sha256", "count", "ids",
 "decode_roundtrip"}.
"""
import hashlib
import json
import os
import platform
import sys

import tokenizers
from tokenizers import Tokenizer


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def transformers_version():
    try:
        import transformers
        return transformers.__version__
    except Exception:  # informative only
        return None


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    tok_path, out_dir, inputs = sys.argv[1], sys.argv[2], sys.argv[3:]
    with open(tok_path, 'rb') as f:
        tok_sha = sha256_bytes(f.read())
    tok = Tokenizer.from_file(tok_path)
    os.makedirs(out_dir, exist_ok=True)
    for path in inputs:
        with open(path, 'rb') as f:
            raw = f.read()
        text = raw.decode('utf-8')  # golden texts are valid UTF-8
        ids = tok.encode(text, add_special_tokens=False).ids
        name = os.path.basename(path)
        if name.endswith('.txt'):
            name = name[:-4]
        rec = {
            'generator': 'make_hf_chat_ids.py',
            'tokenizers': tokenizers.__version__,
            'transformers': transformers_version(),
            'python': platform.python_version(),
            'tokenizer_json_sha256': tok_sha,
            'source': os.path.basename(path),
            'text_sha256': sha256_bytes(raw),
            'count': len(ids),
            'decode_roundtrip': tok.decode(ids, skip_special_tokens=False) == text,
            'ids': ids,
        }
        with open(os.path.join(out_dir, name + '.ids.json'), 'w', encoding='utf-8', newline='\n') as f:
            f.write(json.dumps(rec, separators=(',', ':')) + '\n')
        print('%s: %d ids' % (name, len(ids)), file=sys.stderr)


if __name__ == '__main__':
    main()
