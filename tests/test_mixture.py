"""Mixture planning and the blends megatron-core builds from them."""

import collections

import pytest

from mixtures.config import MixtureConfig
from mixtures.plan import MixtureError, Unit, plan_mixture, unit_weights
from pipeline.core.accounting import read_stats
from pipeline.core.config import SourceConfig

SOURCES = [
    SourceConfig(name="a", paths=["x"], format="jsonl", domain="web"),
    SourceConfig(name="b", paths=["x"], format="jsonl", domain="web"),
    SourceConfig(name="c", paths=["x"], format="text", domain="code", language="python"),
]


def test_domain_weight_is_shared_by_tokens_and_sources_can_override():
    units = _units({"a": 300, "b": 100, "c": 50})
    w = unit_weights({"web": 0.6, "code": 0.4}, units)
    assert w == pytest.approx({"a": 0.45, "b": 0.15, "c": 0.4})
    w = unit_weights({"web": 0.5, "b": 0.2, "c": 0.3}, units)
    assert w == pytest.approx({"a": 0.5, "b": 0.2, "c": 0.3})


def _units(tokens: dict[str, int]) -> list[Unit]:
    return [Unit(s.name, s.name, s.domain, tokens[s.name], tokens[s.name], f"p{s.name}" if tokens[s.name] else None)
            for s in SOURCES]


def test_plan_respects_the_repeat_cap_or_fails_clearly():
    mix = MixtureConfig(stages=[{"name": "s", "tokens": 1000, "weights": {"web": 0.5, "code": 0.5}}], max_epochs=4)
    plan = plan_mixture(mix, _units({"a": 300, "b": 100, "c": 200}))
    rows = {r["source"]: r for r in plan["stages"][0]["prefixes"]}
    assert rows["c"]["epochs"] == pytest.approx(2.5)
    mix.stages[0].tokens = 10_000
    with pytest.raises(MixtureError, match=r"'a' would be repeated 12.50 times .* > max_epochs 4"):
        plan_mixture(mix, _units({"a": 300, "b": 100, "c": 200}))


def test_sources_without_tokens_are_left_out_with_a_note():
    mix = MixtureConfig(stages=[{"name": "s", "tokens": 100, "weights": {"a": 1, "c": 1}}])
    plan = plan_mixture(mix, _units({"a": 0, "b": 10, "c": 200}))
    assert [r["source"] for r in plan["stages"][0]["prefixes"]] == ["c"]
    assert "['a'] have no tokens" in plan["notes"][0]


def test_bucket_weights_resolve_most_specific_first_and_epochs_count_unique_tokens():
    units = [Unit("a.low", "a", "web", 600, 600, "pl", "low"), Unit("a.high", "a", "web", 200, 100, "ph", "high"),
             Unit("b", "b", "web", 200, 200, "pb"), Unit("c", "c", "code", 100, 100, "pc")]
    # a named bucket keeps its weight; the domain's weight is shared by the remaining units by tokens
    w = unit_weights({"a.high": 0.2, "web": 0.6, "code": 0.2}, units)
    assert w == pytest.approx({"a.high": 0.2, "a.low": 0.45, "b": 0.15, "c": 0.2})
    w = unit_weights({"a": 0.5, "b": 0.5}, units)  # a source's weight is shared by its buckets
    assert w == pytest.approx({"a.low": 0.375, "a.high": 0.125, "b": 0.5})
    # a.high was physically upsampled x2: 200 tokens in its files, 100 unique; epochs count unique passes
    mix = MixtureConfig(stages=[{"name": "s", "tokens": 1000, "weights": {"a.high": 0.3, "a.low": 0.7}}], max_epochs=4)
    rows = {r["unit"]: r for r in plan_mixture(mix, units)["stages"][0]["prefixes"]}
    assert rows["a.high"]["epochs"] == pytest.approx(3.0) and rows["a.high"]["file_passes"] == pytest.approx(1.5)
    mix.stages[0].weights = {"a.high": 0.5, "a.low": 0.5}
    with pytest.raises(MixtureError, match=r"'a.high' would be repeated 5.00 times"):
        plan_mixture(mix, units)


@pytest.mark.slow
def test_blended_sampling_matches_the_planned_token_shares(demo_run):
    """Sample from BlendedMegatronDatasetBuilder with the demo's blend: each prefix's share of the sampled
    sequences is its planned weight."""
    from mixtures.megatron_writer import read_docids
    from train_entry.data import DatasetTokenizer, build_datasets

    layout = demo_run["layout"]
    mix = read_stats(layout.stats("mix"))
    tokenizer = DatasetTokenizer(151936, 151643, "qwen3")
    for st in mix["plan"]["stages"]:
        n = 4000
        train, _ = build_datasets(mix["data_args"][st["name"]]["train"], None, 64, n, 0, tokenizer, 1234, None)
        counts = collections.Counter(int(train.dataset_index[i]) for i in range(n))
        for i, row in enumerate(st["prefixes"]):
            assert counts[i] / n == pytest.approx(row["weight"], abs=0.01), (st["name"], row["source"])
        # the sampled sequences are real tokens of that prefix
        sample = train[0]
        assert tuple(sample["tokens"].shape) == (64,) and bool((sample["tokens"] >= 0).all())
    assert read_docids(mix["plan"]["stages"][0]["prefixes"][0]["prefix"])


def test_over_cap_units_can_be_held_at_the_cap_with_the_rest_redistributed():
    units = [Unit("a", "a", "web", 100, 100, "pa"), Unit("b", "b", "web", 1000, 1000, "pb"),
             Unit("c", "c", "code", 1000, 1000, "pc")]
    mix = MixtureConfig(stages=[{"name": "s", "tokens": 2000, "weights": {"a": 0.5, "b": 0.3, "c": 0.2}}],
                        max_epochs=4, over_cap="redistribute")
    plan = plan_mixture(mix, units)
    rows = {r["unit"]: r for r in plan["stages"][0]["prefixes"]}
    assert rows["a"]["tokens_planned"] == 400 and rows["a"]["epochs"] == pytest.approx(4.0)
    # the 1600 tokens left go to b and c as 0.3 : 0.2
    assert rows["b"]["tokens_planned"] == 960 and rows["c"]["tokens_planned"] == 640
    assert sum(r["weight"] for r in rows.values()) == pytest.approx(1.0)
    assert "['a'] held at 4" in plan["notes"][0]
    mix.stages[0].tokens = 9000  # 4 x 2100 unique tokens = 8400 at most
    with pytest.raises(MixtureError, match=r"cannot supply 9,000 tokens within max_epochs 4"):
        plan_mixture(mix, units)
