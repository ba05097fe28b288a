"""The compiled MinHash signature is the numpy definition's, bit for bit: on real English, Chinese, Japanese
and mail text, on code points the tokeniser treats specially, and on random Unicode; its XXH64 is xxhash's."""

import random

import numpy as np
import xxhash

from dedup.fuzzy import minhash, permutations, shingle_hashes
from dedup.minhash_kernel import RUN, SEPARATOR, SINGLE, code_point_classes, signature, xxh64
from tests.corpora import chinese_fortunes, chinese_manpages, shakespeare_speeches, spam_assassin


def _definition(text: str, n_words: int, n_chars: int, a, b) -> np.ndarray:
    sh = shingle_hashes(text, n_words, n_chars)
    return minhash(sh, a, b) if len(sh) else np.empty(0, np.uint32)


def test_xxh64_equals_xxhash_on_every_length_path():
    rng = random.Random(1)
    for n in list(range(0, 80)) + [127, 1000]:  # below and above the 32-byte stripes, every tail length
        data = bytes(rng.randrange(256) for _ in range(n))
        buf = np.frombuffer(b"pad" + data + b"pad", np.uint8)
        assert int(xxh64(buf, 3, 3 + n)) == xxhash.xxh64_intdigest(data), n


def test_code_point_classes_follow_the_tokeniser():
    table = code_point_classes()
    assert table[ord("a")] == table[ord("7")] == table[ord("ß")] == table[ord("٣")] == RUN
    assert table[ord("_")] == table[ord(" ")] == table[ord("。")] == table[0xD800] == SEPARATOR
    assert table[ord("中")] == table[ord("カ")] == table[ord("・")] == table[0x20000] == SINGLE


def test_signatures_equal_the_numpy_definition():
    rng = random.Random(0)
    texts = [d["text"] for d in shakespeare_speeches(limit=300)]
    texts += [d["text"] for d in spam_assassin(kinds=("spam",), limit=200)]  # mail: HTML, odd encodings, long tokens
    texts += [d["text"] for d in chinese_manpages(limit=100)] + [d["text"] for d in chinese_fortunes()[:200]]
    texts += ["", "  \n", "_", "a_b", "ゝゞ゠・゛゜ カタカナ ひらがな", "𠀀𠀁 ext-b 𝔘𝔫𝔦 🙂 x", "a\ud800b c", "Straße ǅ İstanbul",
              "x" * 100, "中文 mixed with English 文本", "word " * 3]
    for _ in range(300):  # random code points from every plane the table covers
        texts.append("".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x3000), rng.randrange(0x3000, 0xA000),
                                             rng.randrange(0x10000, 0x32000)])) for _ in range(rng.randrange(1, 80))))
    for n_words, n_chars, perms in ((5, 3, 100), (13, 5, 112)):
        a, b = permutations(perms, 7)
        for text in texts:
            assert np.array_equal(signature(text, n_words, n_chars, a, b), _definition(text, n_words, n_chars, a, b)), text[:80]
    assert len(signature("  ,;", 5, 3, a, b)) == 0  # no tokens: no signature
