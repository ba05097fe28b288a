"""One rank of a tensor/pipeline-parallel check, launched by torchrun from test_parallel.py.

    torchrun --nproc_per_node N tests/parallel_worker.py TP PP OUT_DIR [--load CKPT_DIR] [--steps N]
                                                         [--save-init] [--check-branch-init]
                                                         [--global-batch N] [--bf16] [--distributed-optimizer]
                                                         [--vp N] [--evaluate N] [--attention fused|unfused]
                                                         [--documents]

Trains the small familial model for N steps on a fixed batch with megatron-core's schedules and writes this
rank's exit losses to OUT_DIR/losses_<rank>.json, then saves a sharded checkpoint to OUT_DIR/ckpt.
``--save-init`` also saves the initial weights to OUT_DIR/init_ckpt (step 0). ``--load`` restores model and
optimizer from a sharded checkpoint written at any TP/PP layout (megatron-core reshards on load).
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from train_entry.data import collate  # noqa: E402
from train_entry.distributed import DistributedContext  # noqa: E402
from train_entry.loop_settings import LoopSettings  # noqa: E402
from train_entry.loss_schedule import ExitWeight  # noqa: E402
from train_entry.model_config import FamilialConfig  # noqa: E402
from train_entry.trainer import FamilialTrainer  # noqa: E402

CFG = FamilialConfig(num_layers=6, hidden_size=32, ffn_hidden_size=64, num_attention_heads=4, num_query_groups=2,
                     kv_channels=8, exits=(3, 4, 5), vocab_size=512, max_sequence_length=16)
STEPS = 3


EOD = 0


def fixed_batch(seed: int = 7, documents: bool = False) -> dict:
    """Two fixed samples of 16 tokens; with ``documents`` each packs several documents (end-of-document tokens
    at fixed places) and the batch carries their ids for the attention."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 512, (2, 17), generator=g)
    if documents:
        tokens[0, [4, 11]] = EOD
        tokens[1, 7] = EOD
    sample = lambda i: {"tokens": tokens[i, :-1].numpy(), "labels": tokens[i, 1:].numpy(),  # noqa: E731
                        "loss_mask": torch.ones(16).numpy(), "position_ids": torch.arange(16).numpy()}
    return collate([sample(0), sample(1)], EOD if documents else None)


def check_branch_init(chunks, out: str) -> None:
    """Each branch layer equals backbone layer e (which may sit on the other pipeline stage or chunk)."""
    from megatron.core import parallel_state

    mine = {layer.layer_number: {k: v for k, v in layer.state_dict().items() if isinstance(v, torch.Tensor)}
            for model in chunks for layer in model.decoder.layers}
    gathered = [None] * parallel_state.get_pipeline_model_parallel_world_size()
    torch.distributed.all_gather_object(gathered, mine, group=parallel_state.get_pipeline_model_parallel_group())
    layers = {n: sd for part in gathered for n, sd in part.items()}
    checked = []
    for key, branch in ((k, b.layer) for model in chunks for k, b in model.exits.items()):
        for name, t in branch.state_dict().items():
            if isinstance(t, torch.Tensor):
                assert torch.equal(t, layers[int(key) + 1][name]), (key, name)
        checked.append(int(key))
    with open(os.path.join(out, f"branch_init_{torch.distributed.get_rank()}.json"), "w") as f:
        json.dump(checked, f)


def main() -> None:
    import argparse

    from train_entry import checkpointing

    ap = argparse.ArgumentParser()
    ap.add_argument("tp", type=int)
    ap.add_argument("pp", type=int)
    ap.add_argument("out")
    ap.add_argument("--load")
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--save-init", action="store_true")
    ap.add_argument("--check-branch-init", action="store_true")
    ap.add_argument("--layers-per-stage", help="e.g. 4,2 (default: an even split)")
    ap.add_argument("--replica-batches", action="store_true", help="each data-parallel replica trains on its own batch")
    ap.add_argument("--global-batch", type=int, help="samples per step, accumulated in micro-batches of 2 over the replicas")
    ap.add_argument("--bf16", action="store_true", help="bf16 parameters, fp32 master weights")
    ap.add_argument("--distributed-optimizer", action="store_true")
    ap.add_argument("--vp", type=int, default=1, help="model chunks per pipeline rank (interleaved 1F1B)")
    ap.add_argument("--evaluate", type=int, default=0, help="first evaluate N micro-batches of 2 fixed samples")
    ap.add_argument("--attention", default="fused", choices=["fused", "unfused"])
    ap.add_argument("--documents", action="store_true", help="the fixed batch packs documents that must not see each other")
    a = ap.parse_args()
    settings = LoopSettings(steps=a.steps, micro_batch_size=2, seq_length=16, lr=3e-3, min_lr=3e-3, weight_decay=0.0,
                             seed=1234, eval_samples=0, exit_weights=[ExitWeight(0.5), ExitWeight(0.8), ExitWeight(1.0)],
                             tp=a.tp, pp=a.pp, global_batch_size=a.global_batch, bf16=a.bf16,
                             distributed_optimizer=a.distributed_optimizer, vp=a.vp, attention=a.attention,
                             pipeline_balance=[int(x) for x in a.layers_per_stage.split(",")] if a.layers_per_stage else "even")
    with DistributedContext(tp=a.tp, pp=a.pp, vp=a.vp):
        trainer = FamilialTrainer(CFG, settings, tokenizer=None, out_dir=a.out)
        if a.check_branch_init:  # before loading: the model's own init
            check_branch_init(trainer.chunks, a.out)
        if a.save_init:
            checkpointing.save(os.path.join(a.out, "init_ckpt"), 0, trainer.chunks, trainer.optimizer, {})
        if a.load:
            trainer.step = int(checkpointing.load(a.load, trainer.chunks, trainer.optimizer)["step"])
        from megatron.core import parallel_state

        if a.global_batch:  # this replica's micro-batches of one fixed global batch, in Megatron-LM's order
            from train_entry.loop_settings import sample_indices

            pool = [fixed_batch(100 + i) for i in range(a.global_batch // 2)]  # 2 samples each
            dp, rank = parallel_state.get_data_parallel_world_size(), parallel_state.get_data_parallel_rank()
            batch = [pool[sample_indices(0, m, rank, dp, 2, trainer.micro_batches).start // 2]
                     for m in range(trainer.micro_batches)]
        else:
            batch = fixed_batch(7 + parallel_state.get_data_parallel_rank() if a.replica_batches else 7, a.documents)
        evaluation = {}
        if a.evaluate:  # held-out samples as the trainer's evaluation reads them: indexable, one dict each
            pool = [fixed_batch(200 + i) for i in range(a.evaluate)]
            samples = [{k: v[j].numpy() for k, v in b.items()} for b in pool for j in range(2)]
            evaluation = {str(e): v for e, v in trainer.evaluate(samples, a.evaluate).items()}
        steps = [trainer.train_step(batch) for _ in range(a.steps)]
        checkpointing.save(os.path.join(a.out, "ckpt"), trainer.step, trainer.chunks, trainer.optimizer, {})
        with open(os.path.join(a.out, f"losses_{torch.distributed.get_rank()}.json"), "w") as f:
            from megatron.core.pipeline_parallel import get_forward_backward_func

            json.dump({"local_exits": sorted({e for chunk in trainer.chunks for e in chunk.local_exits}),
                       "schedule": get_forward_backward_func().__name__, "evaluation": evaluation,
                       "losses": [{str(k): v for k, v in s["losses"].items()} for s in steps],
                       "replica_losses": [{str(k): v for k, v in s["replica_losses"].items()} for s in steps]}, f)


if __name__ == "__main__":
    main()
