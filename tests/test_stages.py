"""Every stage checked on the small demo run (real text from installed packages)."""

import collections
import gzip
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from filters.config import RULE_ORDER
from pipeline.core.accounting import read_stats
from pipeline.demo import BAD_RECORDS
from pipeline.registry import DOC_STAGES
from tests.conftest import read_docs

pytestmark = pytest.mark.slow  # every stage on the demo run


def _records_in(source) -> int:
    """Records in a source's input files, counted independently of the reader (blank lines hold none)."""
    n = 0
    for f in source.files():
        if source.format == "parquet":
            n += pq.ParquetFile(f).metadata.num_rows
        elif source.format == "text":
            n += 1
        else:
            with (gzip.open(f, "rb") if f.endswith(".gz") else open(f, "rb")) as fh:
                n += sum(1 for line in fh if line.strip())
    return n


def test_counts_add_up_in_every_document_stage(demo_run):
    """Every record that entered is in exactly one of output/, removed/, quarantine/ of each stage, and what a
    stage kept is what the next one read; the stats say the same as the files."""
    layout, recipe = demo_run["layout"], demo_run["recipe"]
    entered = {s.name: _records_in(s) for s in recipe.sources}
    for stage in DOC_STAGES:
        stats = read_stats(layout.stats(stage))["sources"]
        counted = {part: collections.Counter(d["metadata"]["source"] for d in read_docs(os.path.join(layout.stage(stage), part)))
                   for part in ("output", "removed", "quarantine")}
        for src, n_in in entered.items():
            kept, removed, quarantined = (counted[p][src] for p in ("output", "removed", "quarantine"))
            assert n_in == kept + removed + quarantined, (stage, src)
            assert (stats[src]["in"]["docs"], stats[src]["kept"]["docs"], stats[src]["removed"]["docs"],
                    stats[src]["quarantined"]["docs"]) == (n_in, kept, removed, quarantined), (stage, src)
        entered = {src: counted["output"][src] for src in entered}
    assert read_stats(layout.stats("filter"))["totals"]["quarantined"]["docs"] == len(BAD_RECORDS)


def test_accounting_refuses_a_stage_that_lost_a_document(demo_run, tmp_path):
    import shutil

    from pipeline.core.accounting import AccountingError, previous_kept, stage_accounting

    layout = demo_run["layout"]
    stage_dir = tmp_path / "dedup"
    shutil.copytree(layout.stage("dedup"), stage_dir)
    shard = sorted((stage_dir / "output").glob("*.parquet"))[0]
    table = pq.read_table(shard)
    pq.write_table(table.slice(1), shard)  # one kept document vanishes
    lost = json.loads(table.slice(0, 1).to_pylist()[0]["metadata"])["source"]
    names = [s.name for s in demo_run["recipe"].sources]
    with pytest.raises(AccountingError, match=f"{lost}: .* in != .* kept"):
        stage_accounting("dedup", str(stage_dir), previous_kept(layout.stats("filter")), names)


def test_filter_quarantines_planted_bad_records(demo_run):
    quarantined = read_docs(demo_run["layout"].quarantine("filter"))
    reasons = sorted(q["metadata"]["quarantine_reason"] for q in quarantined if q["metadata"]["source"] == "web")
    assert reasons == sorted(reason for _, reason in BAD_RECORDS)


def test_filter_removed_documents_carry_rule_and_reason(demo_run):
    removed = read_docs(demo_run["layout"].removed("filter"))
    assert removed
    rules = set(RULE_ORDER) | {"edit"}
    for d in removed:
        rule, _, reason = d["metadata"]["removed_reason"].partition(":")
        assert rule in rules and reason and d["metadata"]["removed_stage"] == "filter"
        assert d["metadata"]["lid_language"] and "n_tokens" in d["metadata"]
        assert "sanity" in d["metadata"]["signals"]
    # the signals are stored so thresholds can be re-applied: the language rule's decisions follow them
    for d in removed:
        if d["metadata"]["removed_reason"] == "language:low_language_score":
            assert d["metadata"]["lid_score"] < 0.65 or d["metadata"]["domain"] in ("docs", "math")


def test_filter_keeps_code_away_from_web_rules(demo_run):
    stats = read_stats(demo_run["layout"].stats("filter"))["sources"]["stdlib_code"]
    assert stats["removed"]["docs"] == 0 and stats["kept"]["docs"] > 0
    kept = [d for d in read_docs(demo_run["layout"].output("filter")) if d["metadata"]["source"] == "stdlib_code"]
    files = demo_run["recipe"].source("stdlib_code").files()
    root = os.path.commonpath(files)
    for d in kept[:5]:  # code passes through byte for byte
        with open(os.path.join(root, d["id"].split("/", 1)[1]), encoding="utf-8") as f:
            assert f.read() == d["text"]


def test_kept_english_documents_are_english(demo_run):
    for d in read_docs(demo_run["layout"].output("filter")):
        if d["metadata"]["domain"] in ("web", "book"):
            assert d["metadata"]["lid_language"] == "en" and d["metadata"]["lid_score"] >= 0.65


def test_dedup_removes_the_planted_copies_and_keeps_the_originals(demo_run):
    """Every planted copy (exact mirror, re-typeset scene, near-duplicate re-post or edition) whose original
    survived filtering is removed, and the original is the copy kept: the default keeper prefers the earliest
    document, not the longest (a re-post is the original plus a trailer line)."""
    layout = demo_run["layout"]
    removed = {d["id"]: d for d in read_docs(layout.removed("dedup"))}
    kept_ids = {d["id"] for d in read_docs(layout.output("dedup"))}
    filtered = {d["id"]: d for d in read_docs(layout.output("filter"))}
    planted = {i: d for i, d in filtered.items() if d["metadata"].get("planted") in ("near_duplicate", "exact_duplicate")}
    pairs = [(i, f"{d['metadata']['source']}/{d['metadata']['of']}") for i, d in planted.items()]
    pairs = [(copy, original) for copy, original in pairs if original in filtered]
    kinds = {planted[c]["metadata"]["planted"] for c, _ in pairs}
    assert kinds == {"near_duplicate", "exact_duplicate"} and len(pairs) >= 4
    for copy, original in pairs:
        assert copy in removed and original in kept_ids, (copy, original)
        why = removed[copy]["metadata"]
        expected = "exact_duplicate" if planted[copy]["metadata"]["planted"] == "exact_duplicate" else "minhash_duplicate"
        assert why["removed_reason"] == expected
        if expected == "minhash_duplicate":
            assert why["duplicate_of"] == original and why["minhash_cluster_size"] >= 2
    assert set(removed) == {c for c, _ in pairs}  # nothing else was a duplicate


def test_decontam_finds_the_planted_benchmark_items(demo_run):
    layout = demo_run["layout"]
    removed = {d["id"]: d for d in read_docs(layout.removed("decontam"))}
    dedup_kept = {d["id"]: d for d in read_docs(layout.output("dedup"))}
    planted = {i: d for i, d in dedup_kept.items() if "planted" in d["metadata"] and ":" in d["metadata"]["planted"]}
    assert planted
    for doc_id, d in planted.items():
        bench, item = d["metadata"]["planted"].split(":", 1)
        assert doc_id in removed, doc_id
        matches = removed[doc_id]["metadata"]["decontam_matches"]
        assert {"benchmark": bench, "item": item} in [{k: m[k] for k in ("benchmark", "item")} for m in matches]
    assert set(removed) == set(planted)  # nothing clean was flagged
    report = json.load(open(os.path.join(layout.stage("decontam"), "contamination.json")))
    assert report["benchmarks"]["gsm8k"]["items_found"] == sum(1 for d in planted.values() if d["metadata"]["planted"].startswith("gsm8k"))
    assert report["benchmarks"]["mmlu"]["items_indexed"] == 14042
    # the corpus-common pass counted every document that entered the stage before any was tagged
    assert report["index"]["corpus_common"]["documents"] == len(dedup_kept)


def test_tokens_decode_back_to_the_kept_text(demo_run):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from mixtures.megatron_writer import read_docids
    from pipeline.core.tokens import load_tokenizer

    layout, recipe = demo_run["layout"], demo_run["recipe"]
    tok = load_tokenizer(recipe.tokenizer.path)
    kept = {d["id"]: d["text"] for d in read_docs(layout.output("decontam"))}
    stats = read_stats(layout.stats("tokenize"))["sources"]
    seen, copies = set(), {}
    for s in stats.values():
        prefixes = [(u["prefix"], u["documents"]) for u in s["units"].values()]
        for prefix, n_docs in prefixes + [(s["heldout_prefix"], s["heldout_documents"])]:
            if not prefix:
                continue
            ds = IndexedDataset(prefix)
            ids = read_docids(prefix)
            assert len(ds) == len(ids) == n_docs
            assert ds.index.dtype == np.int32
            for i, doc_id in enumerate(ids):
                seq = ds[i]
                assert seq[-1] == tok.token_to_id("<|endoftext|>")
                assert tok.decode(seq[:-1].tolist(), skip_special_tokens=False) == kept[doc_id]
                seen.add(doc_id)
                copies[doc_id] = copies.get(doc_id, 0) + 1
    assert seen == set(kept)
    # physical upsampling: the demo writes every math document twice (held-out ones once), nothing else twice
    math_ids = {d["id"] for d in read_docs(layout.output("decontam")) if d["metadata"]["source"] == "sympy_math"}
    math = stats["sympy_math"]
    held = set(read_docids(math["heldout_prefix"])) if math["heldout_prefix"] else set()
    assert {i: n for i, n in copies.items() if n > 1} == dict.fromkeys(math_ids - held, 2)
    assert math["repeated_documents"] == len(math_ids - held) > 0


def test_quality_buckets_split_a_source_by_its_stored_score(demo_run):
    """The demo buckets the book source by lid_score at 0.97: every document lands in the bucket its stored
    score says, and the anneal stage draws its book share from the upper bucket only."""
    from mixtures.megatron_writer import read_docids

    layout = demo_run["layout"]
    score = {d["id"]: d["metadata"]["lid_score"] for d in read_docs(layout.output("decontam"))
             if d["metadata"]["source"] == "shakespeare"}
    units = read_stats(layout.stats("tokenize"))["sources"]["shakespeare"]["units"]
    assert set(units) == {"shakespeare.low", "shakespeare.high"}
    low, high = (set(read_docids(units[u]["prefix"])) for u in ("shakespeare.low", "shakespeare.high"))
    assert low and high and not low & high
    assert all(score[i] < 0.97 for i in low) and all(score[i] >= 0.97 for i in high)
    mix = read_stats(layout.stats("mix"))
    plan = {st["name"]: {r["unit"]: r for r in st["prefixes"]} for st in mix["plan"]["stages"]}
    assert {"shakespeare.low", "shakespeare.high"} <= set(plan["general"])
    assert "shakespeare.high" in plan["anneal"] and "shakespeare.low" not in plan["anneal"]
    # the general stage's book weight is shared by the buckets in proportion to their tokens
    g = plan["general"]
    assert g["shakespeare.low"]["weight"] / g["shakespeare.high"]["weight"] == pytest.approx(
        units["shakespeare.low"]["tokens"] / units["shakespeare.high"]["tokens"], rel=1e-6)
    assert os.path.getsize(mix["plot"]) > 1000


def test_blend_files_are_what_megatron_reads(demo_run):
    from train_entry.data import read_blend

    mix = read_stats(demo_run["layout"].stats("mix"))
    assert [s["name"] for s in mix["plan"]["stages"]] == ["general", "anneal"]
    for st in mix["plan"]["stages"]:
        prefixes, weights = read_blend(mix["data_args"][st["name"]]["train"])
        assert prefixes == [r["prefix"] for r in st["prefixes"]]
        assert np.isclose(sum(weights), 1.0)
        assert all(os.path.exists(p + ".bin") and os.path.exists(p + ".idx") for p in prefixes)
        assert all(r["epochs"] <= mix["plan"]["max_epochs"] for r in st["prefixes"])


def test_the_familial_run_continues_from_the_base_model(demo_run):
    """The demo trains a plain Qwen3 first and exports it; the familial run starts from it: its full-depth
    exit starts at the base's loss, far below a random model's ln(vocabulary), and so do the branches,
    which start as copies of the base's layers."""
    import math

    base = demo_run["results"]["base"]
    stats = read_stats(demo_run["layout"].stats("train"))
    assert stats["init_from"] == {"path": demo_run["recipe"].train.init_from.path, "format": "hf"}
    assert base["exits"] == [3] and base["last_loss"]["exit3"] < math.log(151936) - 2
    first = stats["first_loss"]  # step 0, before any update of the familial run
    assert first["exit3"] < base["last_loss"]["exit3"] + 1.0 and first["exit3"] < math.log(151936) - 2.5
    assert all(v < math.log(151936) - 2 for v in first.values())


def test_train_logs_every_exit_and_losses_fall(demo_run):
    stats = read_stats(demo_run["layout"].stats("train"))
    rows = [json.loads(line) for line in open(stats["metrics"])]
    exits = [f"exit{e}" for e in stats["exits"]]
    assert len(rows) == stats["steps"] == 8
    assert [r["stage"] for r in rows] == ["general"] * 6 + ["anneal"] * 2
    for r in rows:
        assert set(r["loss"]) == set(exits) and all(np.isfinite(v) for v in r["loss"].values())
    for e in exits:
        assert rows[-1]["loss"][e] < rows[0]["loss"][e] - 0.1, e
    lam = [r["lambda"]["exit1"] for r in rows]
    assert lam[0] == pytest.approx(1.0) and lam[-1] == pytest.approx(0.3) and lam == sorted(lam, reverse=True)
    assert set(stats["eval"]) == {"general", "anneal"}
    sources = {f"{s.domain}/{s.name}" for s in demo_run["recipe"].sources}
    for sets in stats["eval"].values():  # the stage's blend and every held-out source, each at every exit
        assert "blend" in sets and set(sets) - {"blend"} <= sources | {f"{d.split('/')[0]}/*" for d in sources}
        assert len(sets) > 1 and all(set(v) == set(exits) and all(np.isfinite(x) for x in v.values()) for v in sets.values())
    assert stats["checkpoint"].endswith(f"iter_{stats['steps']:07d}") and os.path.isdir(stats["checkpoint"])


def test_train_accumulates_micro_batches_and_anneals_the_rate_in_the_last_stage(demo_run):
    """The demo's global batch of 4 is two micro-batches of 2; the WSD rate holds through the general stage
    and falls to min_lr over the anneal stage; every step logs throughput, model TFLOP/s and peak memory."""
    recipe = demo_run["recipe"].train
    stats = read_stats(demo_run["layout"].stats("train"))
    assert (stats["micro_batches_per_step"], stats["global_batch_size"]) == (2, 4)
    rows = [json.loads(line) for line in open(stats["metrics"])]
    lrs = [r["lr"] for r in rows]
    # megatron-core's scheduler gives step t the rate after t completed steps: the anneal stage (steps 6, 7)
    # starts at lr and its second step is half-way down to min_lr
    assert lrs[:7] == pytest.approx([recipe.lr] * 7)
    assert lrs[7] == pytest.approx((recipe.lr + recipe.min_lr) / 2)
    for r in rows:
        assert r["tokens_per_s"] > 0 and r["tflops_per_device"] > 0 and r["grad_norm"] > 0
        assert r["memory"]["peak_host_rss_gib"] > 0.1
        assert r["mfu"] is None  # no known peak for a CPU


def test_train_writes_tensorboard_events(demo_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    stats = read_stats(demo_run["layout"].stats("train"))
    events = EventAccumulator(os.path.join(os.path.dirname(stats["metrics"]), "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"lm loss/exit1", "lm loss/exit3", "lambda/exit1", "learning-rate", "grad-norm",
            "throughput/tokens_per_s", "memory/peak_host_rss_gib"} <= tags
    rows = [json.loads(line) for line in open(stats["metrics"])]
    logged = events.Scalars("lm loss/exit2")
    assert [e.step for e in logged] == [r["step"] for r in rows]
    assert [e.value for e in logged] == pytest.approx([r["loss"]["exit2"] for r in rows], rel=1e-6)


def test_train_resumes_from_a_sharded_checkpoint_with_the_same_losses(demo_run, tmp_path):
    """Checkpoint every 4 steps; after a crash past step 4 (step 8's checkpoint lost), --resume continues
    from step 4 and logs exactly the losses and evaluations of the uninterrupted run."""
    import shutil

    from pipeline.core.layout import RunLayout
    from pipeline.core.stage import StageContext
    from train_entry.stage import TrainStage

    recipe = demo_run["recipe"].model_copy(deep=True)
    recipe.run_dir = str(tmp_path / "run")
    recipe.train.save_interval = 4
    layout = RunLayout(recipe.run_dir)
    shutil.copytree(demo_run["layout"].stage("mix"), layout.stage("mix"))
    full = TrainStage().run(StageContext(recipe, layout))
    uninterrupted = [json.loads(line) for line in open(full["metrics"])]
    ckpt = os.path.join(layout.stage("train"), "checkpoint")
    assert sorted(os.listdir(ckpt)) == ["iter_0000004", "iter_0000008", "latest_checkpointed_iteration.txt"]
    shutil.rmtree(os.path.join(ckpt, "iter_0000008"))
    with open(os.path.join(ckpt, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write("4\n")
    resumed = TrainStage().run(StageContext(recipe, layout, resume=True))
    rows = [json.loads(line) for line in open(resumed["metrics"])]
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert [r["loss"] for r in rows] == [r["loss"] for r in uninterrupted]
    assert resumed["eval"] == full["eval"]


def test_report_has_the_funnel(demo_run):
    report = json.load(open(os.path.join(demo_run["layout"].root, "report.json")))
    rows = {r["source"]: r for r in report["funnel"]}
    assert set(rows) == {s.name for s in demo_run["recipe"].sources}
    for r in rows.values():
        assert r["raw_docs"] >= r["filter_docs"] >= r["dedup_docs"] >= r["decontam_docs"]
    assert report["contamination"]["gsm8k"]["documents"] >= 1


def test_dedup_clusters_are_inspectable(demo_run, capsys):
    from pipeline.cli import main

    layout = demo_run["layout"]
    report = json.load(open(os.path.join(layout.stage("dedup"), "clusters.json")))
    removed = read_docs(layout.removed("dedup"))
    fuzzy_removed = [d for d in removed if d["metadata"]["removed_reason"] == "minhash_duplicate"]
    m = report["minhash"]
    assert m["clusters"] >= 1 and m["documents"] == m["clusters"] + len(fuzzy_removed)  # one kept per cluster
    assert sum(m["size_histogram"].values()) == m["clusters"]
    for c in m["largest"]:
        assert [e["role"] for e in c["members"]].count("kept") == 1 and c["size"] >= 2
        # every removed member is verified against the kept one (dedup.minhash.min_similarity, default 0.6)
        assert all(e["similarity"] >= 0.6 for e in c["members"] if e["role"] == "removed")
    assert all(d["metadata"]["duplicate_similarity"] >= 0.6 for d in fuzzy_removed)
    exact_removed = sum(d["metadata"]["removed_reason"] == "exact_duplicate" for d in removed)
    assert report["exact"]["removed"] == exact_removed > 0 and report["exact"]["groups"] >= 1
    assert main(["dedup", os.path.join(layout.root, "recipe.yaml"), "--show-clusters"]) == 0
    out = capsys.readouterr().out
    assert f"MinHash clusters: {m['clusters']:,}" in out and "largest MinHash clusters" in out


def test_export_writes_a_folder_transformers_loads(demo_run, tmp_path, dist):
    """`ruyi2 export` of the familial demo run: bf16 shards with an index (a 1 MB cap forces several), the
    run's tokenizer (AutoTokenizer gives the ids the tokenize stage wrote), a generation config, full
    attention over the context, the chosen default exit. The demo's base, exported in the stock Qwen3
    layout, loads with AutoModelForCausalLM and greedy-generates; its logits equal the familial model's
    full-depth exit read from the same folder."""
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.cli import main
    from pipeline.core.tokens import load_tokenizer
    from train_entry.init_from import config_from_qwen3, load_hf_qwen3
    from train_entry.model import build_model

    out = tmp_path / "ruyi2"
    assert main(["export", demo_run["layout"].root, "--out", str(out), "--max-shard-size", "1MB", "--exit", "1"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "ruyi_qwen3" and config["default_early_exit_point"] == 1
    assert config["torch_dtype"] == "bfloat16" and config["sliding_window"] == config["max_position_embeddings"] >= 64
    assert config["use_sliding_window"] is False
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    files = {s: [k for k, v in index["weight_map"].items() if v == s] for s in shards}
    # a shard stays under the cap unless one tensor is bigger (a 151,936 x 64 embedding is 19 MB in bf16)
    assert len(shards) > 1 and all(os.path.getsize(out / s) <= 1_100_000 or len(files[s]) == 1 for s in shards)
    for shard in shards:
        with safe_open(str(out / shard), "pt") as f:
            assert all(f.get_tensor(k).dtype == torch.bfloat16 for k in f.keys())
            assert set(f.keys()) == set(files[shard])
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 151643
    text = "def main():\n    return 42  # the answer"
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok(text)["input_ids"] == load_tokenizer(demo_run["recipe"].tokenizer.path).encode(text).ids
    with pytest.raises(SystemExit):
        main(["export", demo_run["layout"].root, "--out", str(tmp_path / "x"), "--dtype", "int8"])
    assert main(["export", demo_run["layout"].root, "--out", str(tmp_path / "y"), "--exit", "0"]) == 1

    base = demo_run["recipe"].train.init_from.path
    hf = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32).eval()
    ids = torch.tensor([tok(text)["input_ids"]])
    generated = hf.generate(ids, max_new_tokens=5, do_sample=False)
    assert generated.shape == (1, ids.shape[1] + 5)
    fcfg = config_from_qwen3(base, (hf.config.num_hidden_layers - 1,), 64)
    ours = build_model(fcfg)
    load_hf_qwen3(ours, fcfg, base)
    with torch.no_grad():
        theirs = hf(ids).logits
    mine = ours.exit_logits(ids, torch.arange(ids.shape[1]).unsqueeze(0))[fcfg.exits[-1]]
    assert (mine - theirs).abs().max().item() < 1e-4


def test_dae_continues_from_the_joint_checkpoint_and_exports_with_its_blocks(demo_run, tmp_path):
    """The user's path for DaE stage 1: a recipe with train.dae and init_from the joint run's checkpoint.
    It starts from the joint weights (exit 1 near its trained loss), trains only the new blocks and exit 1's
    head (the backbone and the other heads export unchanged), and the export carries the blocks."""
    import shutil

    import torch
    from safetensors.torch import load_file

    from pipeline.core.layout import RunLayout
    from pipeline.core.stage import StageContext
    from train_entry.export import export_run
    from train_entry.stage import TrainStage

    joint = demo_run["layout"]
    recipe = demo_run["recipe"].model_copy(deep=True)
    recipe.run_dir = str(tmp_path / "dae")
    recipe.train = recipe.train.model_validate({**recipe.train.model_dump(), "steps": 3, "eval_samples": 0,
                                                "init_from": {"path": os.path.join(joint.stage("train"), "checkpoint"),
                                                              "format": "mcore"},
                                                "dae": {"enabled": True, "exit": 1, "blocks": 2}})
    layout = RunLayout(recipe.run_dir)
    shutil.copytree(joint.stage("mix"), layout.stage("mix"))
    shutil.copy(os.path.join(joint.root, "recipe.yaml"), os.path.join(layout.root, "recipe.yaml"))
    stats = TrainStage().run(StageContext(recipe, layout))
    assert stats["init_from"]["format"] == "mcore"
    joint_last = read_stats(joint.stats("train"))["last_loss"]["exit1"]
    assert stats["first_loss"]["exit1"] < joint_last + 0.5  # continued, not random (ln 151936 = 11.9)
    export_run(joint.root, str(tmp_path / "joint_hf"), dtype="float32")
    export_run(layout.root, str(tmp_path / "dae_hf"), dtype="float32")
    before = load_file(str(tmp_path / "joint_hf" / "model.safetensors"))
    after = load_file(str(tmp_path / "dae_hf" / "model.safetensors"))
    assert sorted({k.split(".")[3] for k in after if k.startswith("model.dae_blocks.1.")}) == ["0", "1"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"lm_head.0.weight"}  # exit 1's head; every backbone, branch and other head tensor is as it was
    # DaE stage 2 from the command line: SVD-LLM v2 on the blocks, 40% fewer of their parameters, ranks per
    # matrix from the truncation losses, only the deepened exit touched
    from pipeline.cli import main

    assert main(["compress", layout.root, "--ratio", "0.4", "--calibration", "8", "--heldout", "8"]) == 0
    done = json.load(open(os.path.join(layout.root, "compress", "stats.json")))
    assert 0.55 < done["added_parameters_after"] / done["added_parameters_before"] < 0.65
    by_kind: dict = {}
    for row in done["matrices"]:
        by_kind.setdefault(row["kind"], []).append(row["ratio"])
    assert len(done["matrices"]) == 8 and all(sum(v) / len(v) == pytest.approx(0.4, abs=0.01) for v in by_kind.values())
    for other in ("exit2", "exit3"):
        assert done["loss_after"][other] == pytest.approx(done["loss_before"][other], abs=1e-5)
    assert abs(done["loss_after"]["exit1"] - done["loss_before"]["exit1"]) < 0.05 * done["loss_before"]["exit1"]
    assert os.path.isdir(done["checkpoint"])
    # ... and the compressed model exports and loads: only the deepened exit differs from the uncompressed one
    from transformers import AutoModelForCausalLM

    assert main(["export", layout.root, "--out", str(tmp_path / "small"), "--compressed", "--dtype", "float32"]) == 0
    config = json.load(open(tmp_path / "small" / "config.json"))
    assert len(config["dae_low_rank"]) == 2 * 7  # q, k, v, o, gate, up, down in each of the two blocks
    small = AutoModelForCausalLM.from_pretrained(str(tmp_path / "small"), trust_remote_code=True).eval()
    full = AutoModelForCausalLM.from_pretrained(str(tmp_path / "dae_hf"), trust_remote_code=True).eval()
    ids = torch.arange(100, 116).unsqueeze(0)
    with torch.no_grad():
        for e in (2, 3):
            assert torch.allclose(small(ids, early_exit_point=e).logits, full(ids, early_exit_point=e).logits, atol=1e-5)
        assert not torch.allclose(small(ids, early_exit_point=1).logits, full(ids, early_exit_point=1).logits, atol=1e-5)
        assert small.generate(ids, max_new_tokens=3, do_sample=False, early_exit_point=1).shape == (1, 19)


def test_run_report_html_shows_every_part_of_the_run_in_chromium(demo_run):
    """`ruyi2 report RECIPE --html`: funnel, removal reasons with examples, clusters, contamination with
    the matched spans, the plan and the training curves, in one page that renders offline."""
    from pipeline.cli import main
    from tests.browser import drawn_figures, render

    layout = demo_run["layout"]
    path = os.path.join(layout.root, "recipe.yaml")
    assert main(["report", path, "--html"]) == 0
    dom = render(os.path.join(layout.root, "report.html"), "run_report", height=9000)
    for heading in ("Funnel", "Removal reasons", "Duplicate clusters", "Contamination", "Mixture plan", "Training"):
        assert f"<h2>{heading}</h2>" in dom
    assert drawn_figures(dom) == 4  # funnel, cluster sizes, plan, training curves
    assert "web/planted-gsm8k-" in dom and "exact_duplicate" in dom and "minhash" in dom
    assert "item covered" in dom and "of the corpus's" in dom  # coverage of each match, the index's exclusions
