"""TeX, Chinese, spam/boilerplate and PII rules on real text: pari-doc TeX, manpages-zh and fortunes-zh,
SpamAssassin e-mails."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from filters.apply import apply_edits
from filters.boilerplate import boilerplate_edit, boilerplate_signals
from filters.chinese import chinese_signals
from filters.config import FilterConfig
from filters.language import FastTextLanguageTagger, cjk_share
from filters.pii import pii_signals, redact
from filters.rules import first_failing_rule as first_failure
from filters.tagger import tag_document
from filters.tex import prose_view
from filters.url import url_signals
from pipeline.core.config import SourceConfig
from tests.corpora import chinese_fortunes, chinese_manpages, spam_assassin, tex_sections
from tests.realdata import need


def _rules(domain="web", language="en", **overrides):
    return FilterConfig.model_validate(overrides).rules_for(
        SourceConfig(name="s", paths=["x"], format="jsonl", domain=domain, language=language))


@pytest.fixture(scope="module")
def lid():
    return FastTextLanguageTagger().predict


def _decide(text, rules, language, lid, metadata=None):
    sig = tag_document(text, metadata or {}, rules, language, lid)
    failed = first_failure(sig, rules, language)
    return sig, (":".join(failed) if failed else None)


# ------------------------------------------------------------------------------------------------- TeX
def test_tex_is_judged_on_prose_and_kept_verbatim(lid):
    docs = need(tex_sections)
    assert len(docs) > 150
    math, web = _rules("math"), _rules("web")
    decided = [(d, *_decide(d["text"], math, "en", lid)) for d in docs]
    kept_math = [(d, sig) for d, sig, reason in decided if reason is None]
    kept_web = sum(_decide(d["text"], web, "en", lid)[1] is None for d in docs)
    # the web rules throw the PARI manual away (curly brackets, symbols); the math rules keep most of it
    assert kept_web <= 0.05 * len(docs)
    assert len(kept_math) >= 0.5 * len(docs)
    # a kept TeX document leaves the filter byte for byte: no edit touches its LaTeX
    assert all(apply_edits(d["text"], sig, math) == d["text"] for d, sig in kept_math)
    assert any("$" in d["text"] and "\\" in d["text"] for d, _ in kept_math)
    # the prose view masks math and commands, the document itself is untouched
    d = next(d for d in docs if d["text"].count("$") > 20)
    view = prose_view(d["text"])
    assert "$" not in view and "MATH" in view and "\\" not in view.replace("\\\\", "")
    sig, reason = _decide(d["text"], math, "en", lid)
    assert sig["tex"]["math_fraction"] > 0


def test_broken_tex_is_named():
    from filters.tex import tex_signals

    assert tex_signals("Let $x$ be real and $y > 0.")["unbalanced_math"]
    assert not tex_signals("Let $x$ be real and \\$5 a price.")["unbalanced_math"]


# --------------------------------------------------------------------------------------------- Chinese
def test_chinese_rules_on_real_chinese(lid):
    man = need(chinese_manpages)
    rules = _rules("web", "zh")
    assert rules.chinese.enabled and not rules.gopher_quality.enabled and not rules.c4.enabled
    outcomes = Counter(_decide(d["text"], rules, "zh", lid)[1] for d in man)
    assert outcomes[None] >= 0.6 * len(man), outcomes.most_common(5)
    # jieba segments what whitespace cannot
    text = next(d["text"] for d in man if len(d["text"]) > 2000 and cjk_share(d["text"]) > 0.6)
    sig = chinese_signals(text, [2], [10])
    assert sig["words"] > 3 * len(text.split())
    assert 1 <= sig["avg_cjk_word_length"] <= 3


def test_chinese_character_repetition_and_size(lid):
    poems = need(chinese_fortunes)
    rules = _rules("web", "zh")
    poem = max((p["text"] for p in poems), key=len)
    spam = "".join([poem.replace("\n", "")[:60]] * 30) + "。"  # a real verse repeated inside one paragraph: character-level repetition
    assert _decide(spam, rules, "zh", lid)[1].startswith("chinese:")
    # as separate lines, the boilerplate family (templated lines) takes it first
    assert _decide("\n".join([poem[:60]] * 30), rules, "zh", lid)[1] == "boilerplate:mostly_boilerplate"
    short = min((p["text"] for p in poems if len(p["text"]) > 5), key=len)
    assert _decide(short, rules, "zh", lid)[1].split(":")[0] in ("chinese", "fineweb", "language")  # too short to be a page


def test_mixed_script_documents_are_decided_deliberately(lid):
    man = need(chinese_manpages)
    zh = next(d["text"] for d in man if 1500 < len(d["text"]) < 6000 and cjk_share(d["text"]) > 0.6)
    en = " ".join(d["text"] for d in need(spam_assassin, kinds=("easy-ham",), limit=40))[: len(zh)]
    mixed = zh + "\n\n" + en
    sig_zh, decision_zh = _decide(mixed, _rules("web", "zh", rules={"chinese": {"min_words": 1}}), "zh", lid)
    share = sig_zh["language"]["cjk_share"]
    assert 0.3 <= share <= 0.7
    # a Chinese target keeps it (enough Chinese), an English target calls it mixed
    assert not (decision_zh or "").startswith("language:")
    sig_en, decision_en = _decide(mixed, _rules("web", "en"), "en", lid)
    assert decision_en in ("language:mixed_script", f"language:not_en({sig_en['language']['lid_language']})")
    assert decision_en == "language:mixed_script" or sig_en["language"]["lid_language"] != "en"


def test_per_language_score_thresholds(lid):
    strict = _rules("web", "en", rules={"language": {"min_scores": {"en": 0.99}}})
    mails = need(spam_assassin, kinds=("easy-ham",), limit=200)
    # an English mail lid.176 is sure is English, but not 99% sure
    mail = next(d["text"] for d in mails if 0.8 <= lid(d["text"])[1] < 0.99 and lid(d["text"])[0] == "en")
    sig, decision = _decide(mail, strict, "en", lid)
    assert decision == "language:low_language_score"
    _, default = _decide(mail, _rules("web", "en"), "en", lid)
    assert not (default or "").startswith("language:")  # the default 0.65 keeps it for the language rule


# ------------------------------------------------------------------------------------ spam, boilerplate
def test_boilerplate_lines_removed_exactly():
    ham = need(spam_assassin, kinds=("easy-ham",), limit=30)
    body = max((d["text"] for d in ham), key=len)
    page = ("Skip to main content\nHome | News | Sport | Weather | Contact\n"
            "This website uses cookies to improve your experience. By continuing you accept our cookie policy.\n"
            "Please enable JavaScript to view the comments.\n" + body + "\nPosted by admin on 12/03/2019\n"
            "Posted by admin on 14/03/2019\nPosted by admin on 02/04/2019\n© 2019 Example Ltd. All rights reserved.\n")
    sig, cleaned = boilerplate_signals(page, 3, 120)
    assert sig["cookie"] == 1 and sig["javascript"] == 1 and sig["navigation"] >= 3 and sig["template"] == 3
    assert body.strip()[:200] in cleaned and "cookie policy" not in cleaned and "Posted by admin" not in cleaned
    assert boilerplate_edit(page, sig["kept"]) == cleaned  # the edit re-applies from the stored ranges


def test_url_block_lists_bad_words_and_pii():
    assert url_signals("https://www.wikipedia.org/wiki/Cat", 2, [])["verdict"] == "ok"
    assert url_signals("https://some-shop.example/sex-videos-xxx", 2, [])["verdict"] != "ok"
    assert url_signals("https://blocked.example.com/page", 2, ["example.com"])["verdict"] == "domain"
    assert url_signals(None, 2, [])["verdict"] is None
    mails = need(spam_assassin, kinds=("easy-ham",), limit=300)
    with_pii = [d["text"] for d in mails if pii_signals(d["text"])["emails"]]
    assert len(with_pii) > 10
    red = redact(with_pii[0], True, True)
    found = set(re.findall(r"[\w.+-]+@[\w-]+\.[\w.-]+", with_pii[0]))
    replacements = {"email@example.com", "firstname.lastname@example.org"}
    assert found - replacements and not any(e in red for e in found - replacements)  # every real address is gone
    assert set(re.findall(r"[\w.+-]+@[\w-]+\.[\w.-]+", red)) <= replacements
    assert redact(with_pii[0], True, True) == red  # the same text gets the same replacements


def test_spam_mails_trip_the_spam_families(lid):
    rules = _rules("web", "en")
    spam = need(spam_assassin, kinds=("spam",), limit=400)
    ham = need(spam_assassin, kinds=("easy-ham",), limit=400)
    removed_spam = sum(_decide(d["text"], rules, "en", lid)[1] is not None for d in spam) / len(spam)
    removed_ham = sum(_decide(d["text"], rules, "en", lid)[1] is not None for d in ham) / len(ham)
    assert removed_spam > removed_ham


def test_bad_words_on_real_spam():
    from filters.bad_words import bad_word_list, bad_word_signals, bad_words_reason
    from filters.config import BadWordsRule

    words = bad_word_list(None)
    assert len(words) > 100  # datatrove's bundled list
    cfg = BadWordsRule(enabled=True)
    spam = need(spam_assassin, kinds=("spam",), limit=500)
    ham = need(spam_assassin, kinds=("easy-ham",), limit=500)
    flagged_spam = sum(bad_words_reason(bad_word_signals(d["text"], None), cfg) is not None for d in spam)
    flagged_ham = sum(bad_words_reason(bad_word_signals(d["text"], None), cfg) is not None for d in ham)
    assert flagged_spam > flagged_ham
    sample = sorted(words)[:12]
    sig = bad_word_signals(" ".join(sample) + " and some ordinary words", None)
    assert sig["distinct"] == len(sample) and bad_words_reason(sig, cfg) == "too_many_bad_words"


def test_c4_sentence_mode_through_tagger_and_edits(lid):
    """``c4.split_paragraph: false`` is a tag-time setting: the tagger stores sentence spans, and the
    threshold step's edit, from those spans alone, gives the text datatrove's sentence-mode C4 leaves."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import C4QualityFilter

    from filters.config import tag_time_settings

    ham = need(spam_assassin, kinds=("easy-ham",), limit=600)
    by_line = _rules(rules={"c4": {"min_num_sentences": 2}})
    by_sentence = _rules(rules={"c4": {"min_num_sentences": 2, "split_paragraph": False}})
    assert tag_time_settings(by_line) != tag_time_settings(by_sentence)  # --retune refuses the switch
    theirs = C4QualityFilter(split_paragraph=False, min_num_sentences=2)
    kept = 0
    for d in ham:
        sig, decision = _decide(d["text"], by_sentence, "en", lid)
        if decision is None:
            kept += 1
            assert sig["heuristics"]["c4_unit"] == "sentence"
            view = boilerplate_edit(d["text"], sig["boilerplate"]["kept"])  # what the heuristics read
            doc = Document(text=view, id="d")
            assert theirs.filter(doc) is True
            assert apply_edits(d["text"], sig, by_sentence) == doc.text
    assert kept > 10


def test_cjk_share_counts_what_the_script_patterns_match():
    """cjk_share counts letters and CJK characters by code-point tables built from the two patterns; on real
    Chinese and English text, fullwidth forms, kana, Hangul, lone surrogates, digits-that-are-not-decimal and
    characters past the 20,000th it equals counting with the patterns themselves."""
    from filters.language import _CJK, _LETTER, LID_MAX_CHARS

    def by_pattern(text):
        head = text[:LID_MAX_CHARS]
        letters = len(_LETTER.findall(head))
        return round(len(_CJK.findall(head)) / letters, 4) if letters else 0.0

    texts = [d["text"] for d in need(chinese_manpages, 40) + need(spam_assassin, kinds=("spam",), limit=40)]
    texts += ["", "123 ___", "ａｂｃ漢字かなカナ한글", "\ud800漢x", "²½ⅷ_9abc", "𠀀𠀁 ext-B", "x" * LID_MAX_CHARS + "漢" * 50]
    shares = [cjk_share(t) for t in texts]
    assert shares == [by_pattern(t) for t in texts]
    assert 0 < max(shares[:40]) and shares[-1] == 0.0 and shares[-5] == round(8 / 11, 4)  # kana, Han and Hangul among 11 letters
