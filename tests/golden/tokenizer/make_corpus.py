#!/usr/bin/env python3
"""make_corpus.py - writes the tokenizer differential-test corpus.

Outputs (run from the repository root):
  tests/data/tokenizer/corpus.jsonl       one entry per line: a JSON string
                                          (text), or {"hex": "..."} for raw
                                          bytes that may be invalid UTF-8
  tests/data/tokenizer/invalid-utf8.jsonl {"hex", "replaced"}: Python's
                                          bytes.decode('utf-8', 'replace')

Deterministic (seeded). Characters unassigned in Unicode 14.0 (PCRE2 10.42
and Python 3.11 tables) are rejected so that \\p{..} classes agree between
the engines compared.
"""
import json
import random
import sys
import unicodedata

rng = random.Random(20261125)
texts = []


def add(s):
    texts.append(s)


# ---- source code -------------------------------------------------------
add('#include <stdio.h>\n\nint main(int argc, char **argv)\n{\n    for (int i = 0; i < argc; i++)\n        printf("%d: %s\\n", i, argv[i]);\n    return 0;\n}\n')
add('static inline uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }')
add('struct node {\n\tstruct node *next;\n\tchar name[64];\n\tdouble w[3];\n};\n\n/* free the list */\nvoid free_list(struct node *n) {\n\twhile (n) { struct node *t = n->next; free(n); n = t; }\n}\n')
add('#define MAX(a,b) ((a)>(b)?(a):(b))\n#if defined(__GNUC__) && __GNUC__ >= 4\n#  pragma GCC diagnostic ignored "-Wshadow"\n#endif')
add('x+=y*2-z/3%4;a&=~b|c^d;p->q[i++]=*r--;if(!ok&&n<=0||m>=1){return-1;}')
add('def fib(n: int) -> int:\n    """Return the n-th Fibonacci number."""\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n\n\nif __name__ == "__main__":\n    print([fib(i) for i in range(20)])\n')
add("class Foo(Base):\n    def __init__(self, *args, **kwargs):\n        super().__init__(*args, **kwargs)\n        self._cache: dict[str, list[int]] = {}\n\n    @property\n    def size(self):\n        return len(self._cache)\n")
add("    # indented comment\n        x = {'a': 1, \"b\": [2, 3], 'c': (4,)}\n\t\ty = f'{x!r:>10}'\n")
add('import numpy as np\narr = np.zeros((3, 4), dtype=np.float32)\narr[1:, ::2] = 1e-3\nprint(arr @ arr.T)\n')
add("const add = (a, b) => a + b;\nexport default async function main() {\n  const res = await fetch(`https://example.com/api?q=${encodeURIComponent('x y')}`);\n  if (!res.ok) throw new Error(`HTTP ${res.status}`);\n  return res.json();\n}\n")
add("let x = obj?.a?.b ?? 42; const re = /^[a-z]+\\d{2,}$/gi; x ||= 0; y &&= 1; z >>>= 2;")
add('document.querySelectorAll("div.item > span").forEach((el, i) => { el.textContent = `#${i}`; });')
add('fn main() {\n    let v: Vec<u64> = (1..=10).map(|x| x * x).collect();\n    println!("{:?}", v);\n    match v.get(3) {\n        Some(&n) if n > 5 => println!("big {n}"),\n        _ => {}\n    }\n}\n')
add("impl<'a, T: Clone + Send> Iterator for Iter<'a, T> {\n    type Item = &'a T;\n    fn next(&mut self) -> Option<Self::Item> { self.inner.next() }\n}\n#[derive(Debug, Clone, PartialEq)]\npub struct P<const N: usize>([f32; N]);")
add('#!/bin/sh\nset -eu\nfor f in "$@"; do\n  [ -f "$f" ] || { echo "missing: $f" >&2; exit 1; }\n  sha256sum "$f" | awk \'{print $1}\'\ndone\n')
add('grep -rn "TODO" src/ | sed -e \'s/:.*//\' | sort -u | xargs -I{} wc -l {} 2>/dev/null || true')
add('export PATH="$HOME/.local/bin:$PATH"; cd /tmp && tar -xzf pkg-1.2.3.tar.gz && ./configure --prefix=/usr/local && make -j$(nproc)')
add('package main\n\nimport "fmt"\n\nfunc main() {\n\tch := make(chan int, 3)\n\tgo func() { ch <- 1 }()\n\tfmt.Println(<-ch)\n}\n')
add('SELECT u.id, COUNT(*) AS n FROM users u JOIN orders o ON o.user_id = u.id WHERE o.created_at >= \'2024-01-01\' GROUP BY u.id HAVING n > 10 ORDER BY n DESC LIMIT 5;')
add('<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"><title>Test &amp; page</title></head>\n<body>\n  <div class="a b" id=\'x\'><p>Hi&nbsp;there</p></div>\n</body>\n</html>\n')
add('public static void main(String[] args) throws IOException {\n    Map<String, List<Integer>> m = new HashMap<>();\n    m.computeIfAbsent("k", k -> new ArrayList<>()).add(1);\n}')
add('template <typename T, std::size_t N>\nconstexpr auto sum(const std::array<T, N>& a) noexcept -> T {\n    return std::accumulate(a.begin(), a.end(), T{});\n}')
add(':root { --main-color: #ff6600; }\n.btn:hover::after { content: "\\2192"; margin: 0 0.5em; transform: rotate(45deg); }')
add('diff --git a/x.c b/x.c\nindex 83db48f..bf269f4 100644\n--- a/x.c\n+++ b/x.c\n@@ -1,3 +1,4 @@\n-int a;\n+int a = 0;\n+int b;\n')
add('Traceback (most recent call last):\n  File "/usr/lib/python3.11/runpy.py", line 198, in _run_module_as_main\nKeyError: \'missing\'\n')
# ---- markdown ----------------------------------------------------------
add('# Title\n\nSome *emphasis*, **strong**, `code`, and a [link](https://example.org/path?a=1&b=2#frag).\n\n- item one\n- item two\n  - nested\n\n1. first\n2. second\n')
add('| Name | Value | Notes |\n|------|------:|:-----:|\n| foo  |  1.5  | ok    |\n| bar  | -2e10 | n/a   |\n')
add('```python\nprint("hi")\n```\n\n> A quote\n> over two lines\n\n---\n\n![img](a.png "title")')
add('## Résumé\n\nThe café’s naïve coördinator — “smart quotes” and ‘single’ ones… ellipsis, en–dash.')
add('***bold italic*** ~~strike~~ <sub>x</sub> <kbd>Ctrl</kbd>+<kbd>C</kbd> \\*escaped\\* [^1]\n\n[^1]: Footnote.')
# ---- JSON --------------------------------------------------------------
add('{"name": "ds4", "version": "0.1.0", "tags": ["llm", "c"], "nested": {"a": null, "b": true, "c": 3.14e-2}}')
add('[{"id":1,"ok":false},{"id":2,"ok":true,"msg":"\\u00e9\\n\\t"}]')
add('{\n  "model": "deepseek-v4",\n  "messages": [\n    {"role": "user", "content": "Hello!"}\n  ],\n  "temperature": 0.7,\n  "max_tokens": 1024\n}\n')
add('{"type":"function","function":{"name":"get_weather","description":"Get weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}')
# ---- CJK ---------------------------------------------------------------
add('我们今天去公园散步，天气非常好。你觉得怎么样？')
add('人工智能（AI）是计算机科学的一个分支，它试图理解智能的本质，并生产出一种新的能以人类智能相似的方式做出反应的智能机器。')
add('中文与English混合的句子，包含数字123和符号！@#')
add('「你好」『世界』《书名》〈章节〉【注释】——破折号……省略号、顿号；分号：冒号')
add('日本語のテキストです。ひらがなとカタカナ、そして漢字が混ざっています。')
add('東京タワーは1958年に完成しました。スカイツリーは２０１２年です。ｶﾀｶﾅ半角もあります。')
add('ありがとうございます！　全角スペース　も　あります。')
add('한국어 문장입니다. 안녕하세요? 대한민국의 수도는 서울입니다.')
add('한글과 漢字 混用 문장: 大韓民國, 그리고 English words.')
add('繁體中文：臺灣、香港。簡體中文：台湾、香港。𠮷野家 𩸽')
add('龥龦鿿㐀㐁 〇 々 〆 ヶ ー ゝゞ ヽヾ')
# ---- emoji -------------------------------------------------------------
add('I love 🍕 and 🍣! 😀😃😄😁 🚀✨')
add('Family: 👨‍👩‍👧‍👦 couple: 👩‍❤️‍👨 tech: 👩🏽‍💻 rainbow: 🏳️‍🌈 pirate: 🏴‍☠️')
add('Thumbs: 👍 👍🏻 👍🏼 👍🏽 👍🏾 👍🏿 wave👋🏿end')
add('Flags: 🇺🇸 🇯🇵 🇩🇪 🇫🇷 🇨🇳 🇰🇷 🇬🇧🇮🇳 and 🏴󠁧󠁢󠁳󠁣󠁴󠁿')
add('Keycaps: 1️⃣ 2️⃣ #️⃣ *️⃣ ©️ ®️ ™️ ❤️ ❤ ☺️ ☺')
add('😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀')
add('emoji-in-code: let s = "🎉"; // party 🎊\n')
# ---- whitespace ----------------------------------------------------------
for n in (1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 64):
    add('a' + ' ' * n + 'b')
for n in (1, 2, 3, 5, 8):
    add('x' + '\t' * n + 'y\t' * n)
add('\n')
add('\n\n\n\n\n')
add('\r\n')
add('line1\r\nline2\r\n\r\nline3\n\rline4\r\r\n')
add('   \n   \n\t\n \t \r\n  end  ')
add('trailing spaces    ')
add('    leading spaces')
add('  \n')
add(' ')
add('  ')
add('\t')
add('word\n\n\n    indented after blank lines\n')
add('a\u00a0b\u00a0\u00a0c  \u00a0d \u00a0 e')
add('em\u2003space\u2003\u2003and\u3000ideographic\u3000\u3000space')
add('next\u0085line and\u0085\u0085two and \u0085 spaced')
add('line\u2028separator and paragraph\u2029separator')
add('ogham\u1680space narrow\u202fnbsp math\u205fspace thin\u2009space hair\u200aspace')
add('zero\u200bwidth and joiner\u200dnon\u200cjoiner and bom\ufeffhere')
add('mongolian\u180evowel separator')
add('\u3000\u3000字下げ\u3000です')
add('\u00a0\u00a0\u00a0')
add('\u0085')
add('\u0085\n')
add('x\u0085\u0085\u0085y')
add('x \u0085y')
add('x\u0085 y')
add('\u2028\u2028\n\u2029')
add('a \ufeff b and c\ufeff\ufeff d and \ufeff\n')
add('x\u0085\u0085 y and tab\t\u0085\tz and end \u0085')
add('\u0085\u0085\u0085word \u0085\u0085 \u0085')
add('\ufeff\ufeffBOM at start')
add('tab\tsep\tvalues\there\n1\t2\t3\t4\n')
add('\x0b\x0cvertical tab and form feed\x0c')
ws_chars = [' ', '\t', '\n', '\r', '\u00a0', '\u2003', '\u3000', '\u0085', '\u2028', '\u2029',
            '\u1680', '\u202f', '\u205f', '\u2009', '\ufeff', '\u200b', '\u180e', '\x0b', '\x0c']
fillers = ['a', 'Z', 'word', '1', '23', '!', '?!', '中', 'é', '😀', '-', '"', '.', 'の', 'x1']
for i in range(60):
    parts = []
    for _ in range(rng.randint(2, 10)):
        parts.append(''.join(rng.choice(ws_chars) for _ in range(rng.randint(0, 4))))
        parts.append(rng.choice(fillers))
    add(''.join(parts))
# ---- numbers -------------------------------------------------------------
add('1234567890 12 123 1234 12345 123456 1234567')
add('3.14159265358979 -0.5 +7 1e10 2.5E-3 0x1F 0b1010 1_000_000 1,234,567.89')
add('Version 2.0.1 (build 20241125) on 2026-11-25T23:59:59Z, port 8080, ip 192.168.0.1')
add('Arabic-Indic: ٠١٢٣٤٥٦٧٨٩ ١٢٣٤٥ and extended: ۰۱۲۳۴۵۶۷۸۹')
add('Devanagari: ०१२३४५६७८९ १२३४ Bengali: ০১২৩৪৫ Thai: ๐๑๒๓๔๕๖๗๘๙')
add('Full-width: ０１２３４５６７８９ １２３４５ ＡＢＣ ａｂｃ')
add('Other numbers: ½ ¾ ² ³ ¹ Ⅻ ⅷ ① ⑳ ㉑ 𝟙𝟚 ⁴⁵ ₆₇ 〡〢')
add('Mixed: 12٣४５ and 99९९ and ٩٩99')
add('phone: +1 (555) 123-4567, cost: $1,299.99, €5, £3.50, ¥1000, 50%')
add('0000000000000000000000000000000000000000000000000000000000000000')
# ---- mixed scripts ---------------------------------------------------------
add('Привет, мир! Как дела? Ёжик в тумане.')
add('Γειά σου Κόσμε! αβγδε ΑΒΓΔΕ ς')
add('مرحبا بالعالم! هذا نص عربي. السلام عليكم')
add('שלום עולם! זה טקסט בעברית.')
add('สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่างระหว่างคำ')
add('नमस्ते दुनिया! हिन्दी में पाठ। क्षत्रिय')
add('தமிழ் மொழி ஒரு அழகான மொழி')
add('Tiếng Việt có dấu: Xin chào thế giới, đường phố')
add('Decomposed: e\u0301 a\u0300 o\u0308 n\u0303 i\u0302 combining\u0301\u0302\u0303 marks')
add('\u0301\u0302 leading combining marks and 1\u0301 digit-mark')
add('Ελληνικά, русский, English, 中文, 日本語, 한국어, العربية, עברית in one line')
add('Zalgo: Z̷̢̛a̸̧̛l̵̨̛g̶̢̛o̷̡̢')
add('Math: ∀x∈ℝ, ∃y: x²+y²≤1 ⇒ |x|≤1; ∑ᵢ aᵢ = ∫₀¹ f(t) dt ≈ π/4 ≠ ∞')
add('Symbols: © ® ™ § ¶ † ‡ • ° ± × ÷ ← → ↑ ↓ ⟨⟩ ⌘ ⌥ ♠♣♥♦ ♩♪♫')
add('Currency and ligatures: ﬁ ﬂ Æ æ Œ œ ß ẞ ĳ ǆ ǅ')
add('Cherokee ᏣᎳᎩ Georgian ქართული Armenian Հայերեն Ethiopic ሰላም')
add('Control chars: \x01\x02\x1f\x7f and C1: \x80\x9f end')
add('NUL\x00inside')
# ---- punctuation / words ---------------------------------------------------
add("Don't stop; it's a 'quote' and \"double\" and it'll've been y'all's")
add('Hello, world! How are you? I\'m fine... Really?!? (yes) [no] {maybe}')
add('...!!!???---___***+++===~~~```|||\\\\///')
add('email: john.doe+tag@example.co.uk url: https://sub.example.com:8443/a/b?c=d&e=f#g')
add('path C:\\Users\\me\\file.txt and /usr/local/lib/libx.so.1.2 and ~/x/.config')
add('@mention #hashtag $var %fmt ^caret &amp *ptr _under -dash +plus =eq')
add('.NET .gitignore ,comma ;semi :colon !bang ?q /slash \\back |pipe')
add('snake_case camelCase PascalCase kebab-case SCREAMING_CASE mIxEd')
add('The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX.')
add('A' * 300)
add('abc' * 120)
add('ab' * 600 + 'c')
add('1' * 100)
add('!' * 150)
add(' ' * 500 + 'x')
add('\n' * 200)
add('\t \n' * 50)
add('中' * 200)
add('😀' * 100)
add('é' * 130)
add('Supercalifragilisticexpialidocious' * 8)
# ---- special-token strings (raw mode splits them; HF does too) -------------
add('<｜User｜>Hello<｜Assistant｜>')
add('<｜begin▁of▁sentence｜>You are a helpful assistant<｜User｜>Hi<｜Assistant｜><think>Let me think.</think>Hello!<｜end▁of▁sentence｜>')
add('<think></think><think>\n</think>\n')
add('text before <think> and after </think> text')
add('｜DSML｜ and <｜DSML｜tool_calls> and </｜DSML｜tool_calls>')
add('<｜DSML｜invoke name="get_weather">\n<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>\n</｜DSML｜invoke>')
add('<｜User｜<｜User｜>>|<｜User｜ <｜User|> <|User|> <｜user｜>')
add('<think <think>> </think </think>> <thinking> </thinking>')
add('<｜/table>｜DSML｜ <｜table｜><｜tr｜><｜td｜>x<｜/td｜><｜/tr｜>')
add('<dsml:foo> </dsml:bar> <|EOT|> <｜fim▁begin｜>a<｜fim▁hole｜>b<｜fim▁end｜>')
add('<｜place▁holder▁no▁0｜><｜place▁holder▁no▁17｜><｜▁pad▁｜>')
add('<｜latest_reminder｜>Remember.<｜tool▁calls▁begin｜><｜tool▁sep｜>')
add('begin▁of▁sentence ｜ ▁ <｜ ｜> <｜begin▁of▁sentence')
add('<｜end▁of▁sentence｜><｜end▁of▁sentence｜><｜end▁of▁sentence｜>')
add(' <｜User｜> spaced <｜Assistant｜> ')
add('\n<think>\n\n</think>\n\n')
add('中文<｜User｜>中文<think>日本語</think>한국어')
add('123<｜User｜>456<think>789')
# ---- chat renders from the official golden outputs ---------------------------
for k in range(1, 5):
    try:
        with open('tests/data/dsv4-encoding/test_output_%d.txt' % k, encoding='utf-8') as f:
            add(f.read())
    except OSError:
        print('warning: golden %d missing' % k, file=sys.stderr)
# ---- seeded random mixtures -------------------------------------------------
pool = ('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'
        ' \t\n\r.,;:!?\'"()[]{}<>/\\|-_=+*&^%$#@`~'
        'éèàüößçñ中文日本語テストかなカナ한국어АБВгдеαβγ١٢٣४५６７😀👍🏽🇯🇵\u200d\ufe0f\u0301'
        '\u00a0\u3000\u0085\u2028\u2003｜▁')
for i in range(80):
    n = rng.randint(1, 60)
    add(''.join(rng.choice(pool) for _ in range(n)))
specials = ['<｜User｜>', '<｜Assistant｜>', '<think>', '</think>', '｜DSML｜',
            '<｜begin▁of▁sentence｜>', '<｜end▁of▁sentence｜>']
for i in range(20):
    parts = []
    for _ in range(rng.randint(2, 6)):
        parts.append(''.join(rng.choice(pool) for _ in range(rng.randint(0, 12))))
        parts.append(rng.choice(specials))
    add(''.join(parts))
add('')

# ---- invalid UTF-8 ---------------------------------------------------------
invalid = [
    'ff', 'fe', 'fffe', 'c0', 'c1', 'c080', 'c1bf', 'c0af', 'e08080', 'e09fbf', 'e080af',
    'f0808080', 'f08fbfbf', 'f8888080 80'.replace(' ', ''), 'fc8480808080',
    'eda080', 'edbfbf', 'eda080edb080', 'edafbfedbfbf', 'f4908080', 'f5808080', 'f7bfbfbf',
    '80', 'bf', '808080', 'bfbfbf41', '41808042',
    'e282', 'f09f98', 'c3', 'e2', 'f0', 'f09f', '61e282', '61f09f9862',
    'e28241', 'f09f4142', 'c341', 'e2c3a9', 'f0e282ac',
    '68656c6c6f20ff20776f726c64', 'e4b8ade4b8e69687', '3cefbd9c55736572efbd9c3eff',
    'efbd9cff', '3c7468696e6bff3e', 'ff3c7468696e6b3e', '20ff20', 'ffffffff', '0aff0a',
    'efbfbd', 'efbfbdff', 'f48fbfbf', 'f4bfbfbf', 'eeb880', 'ef80', 'c2a0ff', 'c285c2',
]
rbytes = [0x00, 0x20, 0x41, 0x0a, 0x7f, 0x80, 0x8f, 0x9f, 0xa0, 0xbf, 0xc0, 0xc2, 0xdf, 0xe0,
          0xe1, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff]
rand_invalid = []
for i in range(300):
    n = rng.randint(1, 12)
    rand_invalid.append(bytes(rng.choice(rbytes) if rng.random() < 0.7 else rng.randrange(256)
                              for _ in range(n)).hex())


def check(s):
    for ch in s:
        if unicodedata.category(ch) == 'Cn' and not (0xFDD0 <= ord(ch) <= 0xFDEF or ord(ch) & 0xFFFE == 0xFFFE):
            raise SystemExit('unassigned in Unicode %s: U+%04X' % (unicodedata.unidata_version, ord(ch)))


with open('tests/data/tokenizer/corpus.jsonl', 'w', encoding='utf-8', newline='\n') as f:
    for s in texts:
        check(s)
        f.write(json.dumps(s, ensure_ascii=True) + '\n')
    for h in invalid + rand_invalid[:60]:
        f.write(json.dumps({'hex': h}) + '\n')
with open('tests/data/tokenizer/invalid-utf8.jsonl', 'w', encoding='utf-8', newline='\n') as f:
    for h in invalid + rand_invalid:
        f.write(json.dumps({'hex': h, 'replaced': bytes.fromhex(h).decode('utf-8', 'replace')},
                           ensure_ascii=True) + '\n')
# ---- random stress set (tests/data/tokenizer/stress.jsonl) ------------------
# Seeded random strings over many Unicode blocks, whitespace kinds, added-token
# strings and their fragments: a wide net for pre-tokenizer differences.
srng = random.Random(7)
ranges = [(0x20,0x7e),(0x09,0x0d),(0xa0,0x17f),(0x300,0x36f),(0x370,0x3ff),(0x400,0x4ff),(0x591,0x5f4),(0x600,0x6ff),
 (0x900,0x97f),(0x980,0x9ff),(0xe00,0xe7f),(0x1100,0x11ff),(0x1680,0x1680),(0x180e,0x180e),(0x2000,0x206f),(0x2070,0x209f),
 (0x20a0,0x20bf),(0x2100,0x214f),(0x2150,0x218b),(0x2190,0x23ff),(0x2460,0x24ff),(0x2500,0x27bf),(0x3000,0x303f),
 (0x3040,0x30ff),(0x3100,0x312f),(0x3200,0x32ff),(0x4e00,0x9fff),(0xa000,0xa48c),(0xac00,0xd7a3),(0xf900,0xfaff),
 (0xfe00,0xfe0f),(0xfe30,0xfe4f),(0xff00,0xffef),(0xfff9,0xfffd),(0x10000,0x1007f),(0x1d400,0x1d7ff),(0x1f300,0x1faff),
 (0x1f1e6,0x1f1ff),(0x1f3fb,0x1f3ff),(0x20000,0x2a6df),(0xe0020,0xe007f),(0x0,0x1f),(0x7f,0x9f)]
ws = ' \t\n\r\x0b\x0c\x85\xa0\u1680\u2000\u2003\u200a\u2028\u2029\u202f\u205f\u3000\ufeff\u200b\u180e'
specials = ['<｜User｜>','<｜Assistant｜>','<think>','</think>','｜DSML｜','<｜begin▁of▁sentence｜>','<｜end▁of▁sentence｜>',
 '<｜User','｜>','<think','<dsml:','<｜/table>｜','<｜tool▁calls▁begin｜>','<|EOT|>','▁','｜']
words = ['the','The',' of','ing','tion','http','://','www','.com','def','return','  ','    ','\n\n','\r\n','123','4567','...','!!','?"',"'s","n't",'😀','👨‍👩‍👧','🇯🇵','中文','日本','カタカナ','한국']
def ch():
    a,b = srng.choice(ranges)
    while True:
        c = chr(srng.randint(a,b))
        if 0xd800 <= ord(c) <= 0xdfff: continue
        if unicodedata.category(c) == 'Cn': continue
        return c
stress = []
for i in range(1500):
    parts = []
    for _ in range(srng.randint(1, 40)):
        r = srng.random()
        if r < 0.35:
            parts.append(ch())
        elif r < 0.55:
            parts.append(srng.choice(ws) * srng.randint(1, 3))
        elif r < 0.62:
            parts.append(srng.choice(specials))
        elif r < 0.85:
            parts.append(srng.choice(words))
        else:
            parts.append(chr(srng.randint(0x20, 0x7e)))
    stress.append(''.join(parts))
with open('tests/data/tokenizer/stress.jsonl', 'w', encoding='utf-8', newline='\n') as f:
    for s in stress:
        check(s)
        f.write(json.dumps(s, ensure_ascii=True) + '\n')
print('corpus: %d text lines, %d hex lines; invalid-utf8: %d' %
      (len(texts), len(invalid) + 60, len(invalid) + len(rand_invalid)), file=sys.stderr)
