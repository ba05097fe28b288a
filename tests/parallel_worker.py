"""One rank of a tensor/pipeline-parallel check, launched by torchrun from test_parallel.py.

    torchrun --nproc_per_node N tests/parallel_worker.py TP PP OUT_DIR [REFERENCE_STATE]

Trains the small familial model for a few steps on a fixed batch with megatron-core's schedules and
writes this rank's exit losses to OUT_DIR/losses_<rank>.json. With PP > 1 the weights are loaded from
REFERENCE_STATE (a TP=PP=1 state dict), renumbering the layers of each stage.
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from train_entry.config import FamilialConfig  # noqa: E402
from train_entry.data import collate  # noqa: E402
from train_entry.loss_schedule import ExitWeight  # noqa: E402
from train_entry.trainer import DistributedContext, FamilialTrainer, TrainSettings  # noqa: E402

CFG = FamilialConfig(num_layers=6, hidden_size=32, ffn_hidden_size=64, num_attention_heads=4, num_query_groups=2,
                     kv_channels=8, exits=(3, 4, 5), vocab_size=512, max_sequence_length=16)
STEPS = 3


def fixed_batch() -> dict:
    g = torch.Generator().manual_seed(7)
    tokens = torch.randint(0, 512, (2, 17), generator=g)
    sample = lambda i: {"tokens": tokens[i, :-1].numpy(), "labels": tokens[i, 1:].numpy(),  # noqa: E731
                        "loss_mask": torch.ones(16).numpy(), "position_ids": torch.arange(16).numpy()}
    return collate([sample(0), sample(1)])


def load_reference(model, path: str) -> None:
    from megatron.core.transformer.transformer_layer import get_transformer_layer_offset

    ref = torch.load(path, weights_only=False)
    offset = get_transformer_layer_offset(model.config)
    own = model.state_dict()
    mapped = {}
    for key in own:
        src = key
        if key.startswith("decoder.layers."):
            i, rest = key[len("decoder.layers."):].split(".", 1)
            src = f"decoder.layers.{int(i) + offset}.{rest}"
        if src in ref:
            mapped[key] = ref[src]
    missing = [k for k in own if k not in mapped and not k.endswith("_extra_state")]
    assert not missing, missing
    model.load_state_dict(mapped, strict=False)


def check_branch_init(model, out: str) -> None:
    """Each branch layer equals backbone layer e (which may sit on the other pipeline stage)."""
    from megatron.core import parallel_state

    mine = {n: {k: v for k, v in layer.state_dict().items() if isinstance(v, torch.Tensor)} for n, layer in
            ((layer.layer_number, layer) for layer in model.decoder.layers)}
    gathered = [None] * parallel_state.get_pipeline_model_parallel_world_size()
    torch.distributed.all_gather_object(gathered, mine, group=parallel_state.get_pipeline_model_parallel_group())
    layers = {n: sd for part in gathered for n, sd in part.items()}
    checked = []
    for key, branch in model.ee_layers.items():
        for name, t in branch.state_dict().items():
            if isinstance(t, torch.Tensor):
                assert torch.equal(t, layers[int(key) + 1][name]), (key, name)
        checked.append(int(key))
    with open(os.path.join(out, f"branch_init_{torch.distributed.get_rank()}.json"), "w") as f:
        json.dump(checked, f)


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    tp, pp, out = int(args[0]), int(args[1]), args[2]
    reference = args[3] if len(args) > 3 else None
    settings = TrainSettings(steps=STEPS, micro_batch_size=2, seq_length=16, lr=3e-3, min_lr=3e-3, weight_decay=0.0,
                             seed=1234, eval_samples=0, exit_weights=[ExitWeight(0.5), ExitWeight(0.8), ExitWeight(1.0)],
                             tp=tp, pp=pp)
    with DistributedContext(tp=tp, pp=pp):
        trainer = FamilialTrainer(CFG, settings, tokenizer=None, out_dir=out)
        if reference and "--check-branch-init" in sys.argv:  # before loading: the model's own init
            check_branch_init(trainer.model, out)
        if reference:
            load_reference(trainer.model, reference)
        rank = torch.distributed.get_rank()
        if tp == pp == 1:
            torch.save(trainer.model.state_dict(), os.path.join(out, "reference_state.pt"))
        losses = [trainer.train_step(fixed_batch())["losses"] for _ in range(STEPS)]
        with open(os.path.join(out, f"losses_{rank}.json"), "w") as f:
            json.dump({"local_exits": trainer.model.local_exits, "losses": [{str(k): v for k, v in s.items()} for s in losses]}, f)


if __name__ == "__main__":
    main()
