"""Tensor and pipeline parallelism on CPU (gloo, 2 processes) give the same exit losses as one process, and
megatron-core sharded checkpoints move a run between parallel layouts."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.slow  # torchrun jobs of several processes

WORKER = os.path.join(os.path.dirname(__file__), "parallel_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(nproc: int, tp: int, pp: int, out: str, *flags: str) -> dict[str, list[float]]:
    os.makedirs(out, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), WORKER, str(tp), str(pp), out] + list(flags)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)  # a hang guard, not a speed test
    assert proc.returncode == 0, proc.stderr[-4000:]
    merged: dict[str, list[float]] = {}
    for rank in range(nproc):
        with open(os.path.join(out, f"losses_{rank}.json")) as f:
            data = json.load(f)
        for e in data["local_exits"]:
            series = [step[str(e)] for step in data["losses"]]
            if str(e) in merged:  # tensor-parallel ranks compute the same loss
                assert series == pytest.approx(merged[str(e)], abs=1e-5)
            merged[str(e)] = series
    return merged


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, 5 steps; its initial weights saved as a sharded checkpoint for the parallel runs."""
    out = str(tmp_path_factory.mktemp("tp1pp1"))
    return _launch(1, 1, 1, out, "--steps", "5", "--save-init"), os.path.join(out, "init_ckpt")


def test_reference_losses_fall(reference):
    losses, _ = reference
    assert set(losses) == {"3", "4", "5"}
    assert all(series[-1] < series[0] for series in losses.values())


def test_tensor_parallel_matches_one_process_and_its_checkpoint_resumes_in_one_process(reference, tmp_path):
    """TP=2 from the same initial weights gives the same losses; its step-3 checkpoint (weights and Adam
    moments, sharded over 2 ranks) loads into one process, which continues with the uninterrupted run's
    losses at steps 4 and 5."""
    losses = _launch(2, 2, 1, str(tmp_path / "tp2"), "--load", reference[1], "--steps", "3")
    assert set(losses) == set(reference[0])
    for e, series in reference[0].items():
        assert losses[e] == pytest.approx(series[:3], abs=2e-4), e
    resumed = _launch(1, 1, 1, str(tmp_path / "resumed"), "--load", str(tmp_path / "tp2" / "ckpt"), "--steps", "2")
    for e, series in reference[0].items():
        assert resumed[e] == pytest.approx(series[3:], abs=2e-4), e


def test_pipeline_parallel_matches_one_process(reference, tmp_path):
    losses = _launch(2, 1, 2, str(tmp_path), "--load", reference[1], "--check-branch-init")
    # exit 3's branch sits on stage 0 (layers 0-2) but is initialised from backbone layer 3 on stage 1;
    # exit 4's branch and its source layer 4 are both on stage 1
    checked = sorted(json.load(open(tmp_path / f"branch_init_{r}.json")) for r in range(2))
    assert checked == [[3], [4]]
    assert set(losses) == set(reference[0])  # exit 3 computed on stage 0, exits 4 and 5 on stage 1
    for e, series in reference[0].items():
        assert losses[e] == pytest.approx(series[:3], abs=2e-4), e


def _train_under_torchrun(demo_run, run_dir: str, **train_fields) -> tuple[list[dict], list[dict]]:
    """`torchrun --nproc_per_node 2 -m pipeline.cli train` on the demo's blends (its mix stage copied), with
    these train settings: the metrics rows of this run and of the demo's single-process train stage."""
    import shutil

    from pipeline.core.layout import claim_run_dir
    from pipeline.recipe import dump_recipe

    recipe = demo_run["recipe"].model_copy(deep=True)
    recipe.run_dir = run_dir
    for key, value in train_fields.items():
        setattr(recipe.train, key, value)
    claim_run_dir(run_dir)  # a run directory assembled by hand, as a user would: claimed, then the blends copied in
    shutil.copytree(demo_run["layout"].stage("mix"), os.path.join(recipe.run_dir, "mix"))
    path = os.path.join(os.path.dirname(run_dir), "recipe.yaml")
    dump_recipe(recipe, path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "pipeline.cli", "train", path]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    ours = [json.loads(line) for line in open(os.path.join(recipe.run_dir, "train", "metrics.jsonl"))]
    single = [json.loads(line) for line in open(os.path.join(demo_run["layout"].stage("train"), "metrics.jsonl"))]
    assert len(ours) == len(single)
    return ours, single


@pytest.mark.parametrize("tp,pp,vp", [(2, 1, 1), (1, 2, 2)])
def test_ruyi2_train_under_torchrun_matches_the_demo_run(demo_run, tmp_path, tp, pp, vp):
    """`torchrun -m pipeline.cli train` at TP=2, or PP=2 with two model chunks per rank (interleaved 1F1B
    over the demo's two micro-batches), on the demo's blends, continuing from the demo's Hugging Face base
    (each rank reads only its slice of it), logs the same exit losses as the single-process train stage of
    the demo run."""
    run_dir = str(tmp_path / "run")
    ours, single = _train_under_torchrun(demo_run, run_dir, tensor_parallel=tp, pipeline_parallel=pp,
                                         virtual_pipeline_parallel=vp)
    # step 0 is the starting weights' forward: each rank's slice of the base must give the same losses
    assert ours[0]["loss"] == pytest.approx(single[0]["loss"], rel=1e-5)
    # later steps drift: TP/PP reorder fp32 sums, and Adam's normalised steps amplify the last bits
    for a, b in zip(ours[1:], single[1:]):
        assert a["loss"] == pytest.approx(b["loss"], rel=3e-3)
    ckpt = os.path.join(run_dir, "train", "checkpoint")
    assert open(os.path.join(ckpt, "latest_checkpointed_iteration.txt")).read().strip() == str(len(ours))
    files = os.listdir(os.path.join(ckpt, f"iter_{len(ours):07d}"))
    assert ".metadata" in files and sum(f.endswith(".distcp") for f in files) >= 2  # both ranks wrote shards
    assert json.load(open(os.path.join(run_dir, "train", "stats.json")))["init_from"]["format"] == "hf"
    # the streamed export reads this TP/PP-written checkpoint module by module and writes the tensors that
    # megatron-core's own resharding load into a one-process model gives
    from train_entry.export import export_run

    export_run(run_dir, str(tmp_path / "streamed"), dtype="float32")
    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "export_memory.py")
    subprocess.run([sys.executable, bench, "--variant", "in_memory", "--run-dir", run_dir, "--out",
                    str(tmp_path / "whole"), "--shard", "5GB"], check=True, capture_output=True, timeout=300)
    assert _safetensors(tmp_path / "streamed") == _safetensors(tmp_path / "whole")


def test_background_checkpoints_under_torchrun_are_published_at_every_interval(demo_run, tmp_path):
    """train.async_save over two data-parallel ranks: training is unchanged (the demo's losses), every interval's
    checkpoint is complete (DCP metadata, megatron-core's metadata.json, both ranks' random generators) and the
    last one is the latest."""
    run_dir = str(tmp_path / "run")
    ours, single = _train_under_torchrun(demo_run, run_dir, save_interval=2, async_save=True)
    for a, b in zip(ours, single):
        assert a["loss"] == pytest.approx(b["loss"], rel=3e-3)
    ckpt = os.path.join(run_dir, "train", "checkpoint")
    iterations = sorted(f for f in os.listdir(ckpt) if f.startswith("iter_"))
    assert iterations == [f"iter_{s:07d}" for s in range(2, len(ours), 2)] + [f"iter_{len(ours):07d}"]
    for it in iterations:
        files = set(os.listdir(os.path.join(ckpt, it)))
        assert {".metadata", "metadata.json", "common.pt"} <= files, (it, files)
        assert sorted(os.listdir(os.path.join(ckpt, it, "rng"))) == ["rank_00000.pt", "rank_00001.pt"]
    assert open(os.path.join(ckpt, "latest_checkpointed_iteration.txt")).read().strip() == str(len(ours))


def test_ruyi2_train_in_bf16_with_the_distributed_optimizer_over_two_replicas(demo_run, tmp_path):
    """The recipe's `precision: bf16` and `distributed_optimizer: true` under torchrun (two data-parallel
    replicas, the demo's global batch of 4): the run starts at the base's losses (to bf16's precision),
    trains, and writes bf16 weights with fp32 master weights and moments; its export reads them."""
    from megatron.core import dist_checkpointing

    run_dir = str(tmp_path / "run")
    ours, single = _train_under_torchrun(demo_run, run_dir, precision="bf16", distributed_optimizer=True)
    assert ours[0]["loss"] == pytest.approx(single[0]["loss"], rel=2e-2)
    full = list(ours[0]["loss"])[-1]
    assert ours[-1]["loss"][full] < ours[0]["loss"][full] - 0.05
    path = os.path.join(run_dir, "train", "checkpoint", f"iter_{len(ours):07d}")
    dtypes = {key: sh.dtype for key, sh in dist_checkpointing.load_tensors_metadata(path).items()}
    weights = {k: d for k, d in dtypes.items() if not k.startswith("optimizer.")}
    assert "embedding.word_embeddings.weight" in weights and set(weights.values()) == {torch.bfloat16}
    assert {d for k, d in dtypes.items() if k.startswith("optimizer.")} == {torch.float32}
    from train_entry.export import export_run

    export_run(run_dir, str(tmp_path / "export"))
    exported = _safetensors(tmp_path / "export")
    last = max(k for k in exported if k.startswith("model.norms."))  # the full model's final norm
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(path, str(tmp_path / "whole.pt"))  # the checkpoint as one file, read without a process group
    trained = torch.load(tmp_path / "whole.pt", weights_only=False)["decoder.final_layernorm.weight"]
    assert exported[last] == trained.view(torch.int16).numpy().tobytes()


def _safetensors(folder) -> dict:
    """The folder's tensors in bfloat16 (the in-memory variant writes bfloat16), as bytes for comparison."""
    import torch
    from safetensors.torch import load_file

    out = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors"):
            out.update({k: v.to(torch.bfloat16).view(torch.int16).numpy().tobytes() for k, v in load_file(os.path.join(folder, f)).items()})
    return out


def test_uneven_pipeline_layout_matches_one_process(reference, tmp_path):
    """megatron-core's per-stage layout with 4 + 2 layers: exits 3 and 4 both on stage 0, exit 4's branch
    initialised from layer 4 on stage 1; the TP=PP=1 checkpoint loads into this layout and the losses match."""
    losses = _launch(2, 1, 2, str(tmp_path), "--load", reference[1], "--check-branch-init", "--layers-per-stage", "4,2")
    checked = sorted(json.load(open(tmp_path / f"branch_init_{r}.json")) for r in range(2))
    assert checked == [[], [3, 4]]
    for e, series in reference[0].items():
        assert losses[e] == pytest.approx(series[:3], abs=2e-4), e


def test_the_logged_loss_under_data_parallelism_is_the_mean_over_replicas(tmp_path):
    """Two data-parallel replicas, each on its own batch: every rank logs the mean of the two replicas'
    losses (the global batch), not its own share."""
    out = str(tmp_path / "dp2")
    _launch(2, 1, 1, out, "--replica-batches", "--steps", "2")
    ranks = [json.load(open(os.path.join(out, f"losses_{r}.json"))) for r in range(2)]
    for step in range(2):
        replicas = [r["replica_losses"][step] for r in ranks]
        assert all(abs(replicas[0][e] - replicas[1][e]) > 1e-3 for e in replicas[0])  # the batches differ
        for r in ranks:
            assert r["losses"][step] == pytest.approx({e: (replicas[0][e] + replicas[1][e]) / 2 for e in replicas[0]}, abs=1e-9)


def test_data_parallel_with_accumulation_equals_one_process_with_the_same_global_batch(tmp_path):
    """A global batch of 8: one process accumulates 4 micro-batches of 2; two replicas accumulate 2 each and
    megatron-core's DDP averages their gradients. The losses of every exit agree step after step."""
    one = _launch(1, 1, 1, str(tmp_path / "one"), "--global-batch", "8", "--steps", "3")
    two = _launch(2, 1, 1, str(tmp_path / "dp2"), "--global-batch", "8", "--steps", "3")
    assert set(one) == set(two) == {"3", "4", "5"}
    for e in one:
        assert two[e] == pytest.approx(one[e], rel=1e-5), e
        assert one[e][-1] < one[e][0]


def test_interleaved_pipeline_matches_one_process_and_its_checkpoint_resumes_in_one_process(tmp_path):
    """Interleaved 1F1B: two pipeline ranks holding two model chunks each (layers 0-1 | 2 | 3-4 | 5 as
    virtual stages: exit 3's tap on rank 1's first chunk, its source layer on rank 0's second; exit 4 and its
    source both on rank 0's second chunk; the final exit on rank 1's second). From the same weights and
    global batch (two micro-batches, megatron-core's interleaved schedule), the losses are one process's;
    the checkpoint (chunks saved as model0/model1) loads into one process, which continues with the
    uninterrupted run's losses. An evaluation of three micro-batches (the schedule takes multiples of two)
    gives one process's held-out losses."""
    flags = ("--global-batch", "4", "--evaluate", "3")
    one = _launch(1, 1, 1, str(tmp_path / "one"), *flags, "--steps", "3", "--save-init")
    out = tmp_path / "vp"
    vp = _launch(2, 1, 2, str(out), *flags, "--steps", "2", "--vp", "2", "--layers-per-stage", "2,1,2,1",
                 "--load", str(tmp_path / "one" / "init_ckpt"), "--check-branch-init")
    ranks = [json.load(open(out / f"losses_{r}.json")) for r in range(2)]
    reference = json.load(open(tmp_path / "one" / "losses_0.json"))["evaluation"]
    assert set(reference) == {"3", "4", "5"}
    for r in ranks:
        assert r["evaluation"] == pytest.approx(reference, rel=1e-5)
    assert {r["schedule"] for r in ranks} == {"forward_backward_pipelining_with_interleaving"}
    assert [r["local_exits"] for r in ranks] == [[4], [3, 5]]
    assert sorted(json.load(open(out / f"branch_init_{r}.json")) for r in range(2)) == [[3], [4]]
    resumed = _launch(1, 1, 1, str(tmp_path / "resumed"), *flags, "--steps", "1", "--load", str(out / "ckpt"))
    for e, series in one.items():
        assert vp[e] == pytest.approx(series[:2], rel=1e-5), e
        assert resumed[e] == pytest.approx(series[2:], rel=1e-5), e


def test_tensor_and_pipeline_parallel_together_match_one_process(reference, tmp_path):
    """TP=2 x PP=2, four processes, from the reference's initial weights: the same losses."""
    losses = _launch(4, 2, 2, str(tmp_path), "--load", reference[1], "--steps", "3")
    assert set(losses) == set(reference[0])
    for e, series in reference[0].items():
        assert losses[e][0] == pytest.approx(series[0], rel=1e-5), e
        assert losses[e] == pytest.approx(series[:3], rel=3e-3), e


def test_bf16_distributed_optimizer_over_two_replicas_trains_like_the_plain_one_and_resumes(tmp_path):
    """bf16 with fp32 master weights, global batch 8 over two data-parallel replicas: megatron-core's
    distributed optimizer (each replica steps half of the master weights and Adam's moments) logs the plain
    optimizer's losses; its checkpoint (each replica's buckets) resumes bitwise at two replicas and loads
    at one, which accumulates the same global batch."""
    flags = ("--global-batch", "8", "--bf16")
    plain = _launch(2, 1, 1, str(tmp_path / "plain"), *flags, "--steps", "3")
    first = _launch(2, 1, 1, str(tmp_path / "dist"), *flags, "--distributed-optimizer", "--steps", "2")
    ckpt = str(tmp_path / "dist" / "ckpt")
    resumed = _launch(2, 1, 1, str(tmp_path / "resumed"), *flags, "--distributed-optimizer", "--load", ckpt, "--steps", "1")
    one = _launch(1, 1, 1, str(tmp_path / "one"), *flags, "--distributed-optimizer", "--load", ckpt, "--steps", "1")
    assert set(plain) == {"3", "4", "5"}
    for e, series in plain.items():
        assert first[e] == series[:2], e
        assert resumed[e] == series[2:], e
        assert one[e] == pytest.approx(series[2:], rel=1e-5), e
        assert series[-1] < series[0]


@pytest.mark.parametrize("documents", [False, True], ids=["causal", "documents"])
def test_fused_attention_trains_like_megatron_cores_under_tensor_parallelism(reference, tmp_path, documents):
    """TP=2, fp32, from the same weights: the fused core attention (SDPA; documents as per-token ids) and
    megatron-core's DotProductAttention (scores and a dense mask) give the same losses over three steps, so
    their gradients agree too (each step moves the weights by them)."""
    flags = ["--load", reference[1], "--steps", "3"] + (["--documents"] if documents else [])
    fused = _launch(2, 2, 1, str(tmp_path / "fused"), *flags)
    unfused = _launch(2, 2, 1, str(tmp_path / "unfused"), *flags, "--attention", "unfused")
    assert set(fused) == set(unfused) == set(reference[0])
    for e, series in unfused.items():
        assert fused[e] == pytest.approx(series, abs=1e-5), e
    if documents:  # the documents matter: the losses differ from the unmasked run's
        assert any(abs(a - b) > 1e-3 for e in fused for a, b in zip(fused[e], reference[0][e][:3]))
