"""DaE stage 1: identity-initialised blocks after the smallest branch, backbone frozen."""

import pytest
import torch

from train_entry.dae import append_dae_blocks, freeze_for_dae
from train_entry.model import build_model, masked_mean
from train_entry.model_config import FamilialConfig

CFG = FamilialConfig(num_layers=6, hidden_size=32, ffn_hidden_size=64, num_attention_heads=4, num_query_groups=2,
                     kv_channels=8, exits=(2, 4, 5), vocab_size=256, max_sequence_length=16)


def _batch():
    tokens = torch.randint(0, 256, (2, 17), generator=torch.Generator().manual_seed(5))
    return tokens[:, :-1], tokens[:, 1:], torch.arange(16).expand(2, 16), torch.ones(2, 16)


def test_new_blocks_start_as_identity_and_only_they_and_the_head_train(dist):
    torch.manual_seed(0)
    model = build_model(CFG)
    inp, lab, pos, mask = _batch()
    before = model.exit_logits(inp, pos)
    blocks = append_dae_blocks(model, 2, blocks=3)
    assert len(blocks) == 3
    for b in blocks:  # random inside, zero output projections
        assert b.self_attention.linear_qkv.weight.std() > 0 and b.mlp.linear_fc1.weight.std() > 0
        assert not b.self_attention.linear_proj.weight.any() and not b.mlp.linear_fc2.weight.any()
    after = model.exit_logits(inp, pos)
    for e in CFG.exits:
        assert torch.allclose(before[e], after[e], atol=1e-6), e

    trainable = freeze_for_dae(model, 2)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(n.startswith(("exits.2.blocks.", "exits.2.head.")) for n in names)
    opt = torch.optim.AdamW(trainable, lr=3e-3)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(names)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    model.exit_weights.update({2: 1.0, 4: 0.0, 5: 0.0})
    losses = []
    for _ in range(5):
        opt.zero_grad()
        final = masked_mean(model(inp, pos, None, labels=lab, loss_mask=mask), mask)
        (0.0 * final + sum(model.pending_exit_losses)).backward()  # the trunk is frozen: exit 2's loss is pending
        model.pending_exit_losses.clear()
        opt.step()
        losses.append(float(model.exit_losses[2]))
    assert losses[-1] < losses[0] - 0.1
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert model.exits["2"].blocks[0].self_attention.linear_proj.weight.any()  # the new blocks did learn


def test_trainer_with_dae_optimises_only_the_new_blocks_and_head(dist, tmp_path):
    from train_entry.data import collate
    from train_entry.loop_settings import LoopSettings
    from train_entry.loss_schedule import ExitWeight
    from train_entry.trainer import FamilialTrainer

    settings = LoopSettings(steps=3, micro_batch_size=2, seq_length=16, lr=3e-3, min_lr=3e-3, weight_decay=0.0, seed=1,
                             eval_samples=0, exit_weights=[ExitWeight(1.0), ExitWeight(0.0), ExitWeight(0.0)], dae_exit=2)
    trainer = FamilialTrainer(CFG, settings, tokenizer=None, out_dir=str(tmp_path))
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert optimised == {id(p) for n, p in trainer.model.named_parameters() if n.startswith(("exits.2.blocks.", "exits.2.head."))}
    inp, lab, pos, mask = _batch()
    batch = collate([{"tokens": inp[i].numpy(), "labels": lab[i].numpy(), "loss_mask": mask[i].numpy(), "position_ids": pos[i].numpy()} for i in range(2)])
    above_tap = []  # the frozen layers above the tap take no part in the backward
    for layer in trainer.model.decoder.layers[3:]:
        layer.register_full_backward_hook(lambda *args: above_tap.append(1))
    losses = [trainer.train_step(batch)["losses"][2] for _ in range(3)]
    assert losses[-1] < losses[0]
    assert not above_tap


def test_a_dae_branch_exports_with_its_blocks_and_loads_with_automodel(dist, tmp_path):
    """A DaE-trained branch is exported with its blocks (our modeling code carries them): the exit's logits
    through AutoModelForCausalLM equal the trained model's, cached generation equals uncached; the published
    layout refuses it by name."""
    import dataclasses
    import json

    import pytest
    import transformers

    from train_entry.data import collate
    from train_entry.export import ExportError, export_run
    from train_entry.loop_settings import LoopSettings
    from train_entry.loss_schedule import ExitWeight
    from train_entry.trainer import FamilialTrainer

    settings = LoopSettings(steps=3, micro_batch_size=2, seq_length=16, lr=3e-2, min_lr=3e-2, weight_decay=0.0, seed=1,
                             eval_samples=0, exit_weights=[ExitWeight(1.0), ExitWeight(0.0), ExitWeight(0.0)], dae_exit=2,
                             tensorboard=False)
    train_dir = tmp_path / "run" / "train"
    trainer = FamilialTrainer(CFG, settings, tokenizer=None, out_dir=str(train_dir))
    inp, lab, pos, mask = _batch()
    batch = collate([{"tokens": inp[i].numpy(), "labels": lab[i].numpy(), "loss_mask": mask[i].numpy(),
                      "position_ids": pos[i].numpy()} for i in range(2)])
    for _ in range(3):
        trainer.train_step(batch)
    assert trainer.model.exits["2"].blocks[0].self_attention.linear_proj.weight.abs().max() > 0  # the blocks learned
    trainer.save_checkpoint({})
    (train_dir / "stats.json").write_text(json.dumps({"model": dataclasses.asdict(CFG)}))
    with pytest.raises(ExportError, match=r"DaE blocks after exit\(s\) \[2\]"):
        export_run(str(tmp_path / "run"), str(tmp_path / "published"), published=True)
    export_run(str(tmp_path / "run"), str(tmp_path / "ours"), dtype="float32", exit=2)
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert config["dae_blocks"] == {"2": 3}
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "ours"), trust_remote_code=True).eval()
    ours = trainer.model.eval().exit_logits(inp, pos)
    with torch.no_grad():
        for e in CFG.exits:
            assert (hf(inp, early_exit_point=e).logits - ours[e]).abs().max().item() <= 1e-4, e
        cached = hf.generate(inp[:1], max_new_tokens=5, do_sample=False)
        assert torch.equal(cached, hf.generate(inp[:1], max_new_tokens=5, do_sample=False, use_cache=False))


def test_a_compressed_dae_branch_exports_and_loads_with_automodel(dist, tmp_path):
    """DaE stage 2 on a trained branch, then export: the low-rank factors travel as `down`/`up` linears that
    our modeling code builds from `dae_low_rank`, and every exit's logits equal the compressed model's."""
    import json

    import transformers

    from train_entry.compress import _covariances, compress_model
    from train_entry.data import collate
    from train_entry.hf_interop import export_ruyi_hf
    from train_entry.loop_settings import LoopSettings
    from train_entry.loss_schedule import ExitWeight
    from train_entry.trainer import FamilialTrainer

    settings = LoopSettings(steps=3, micro_batch_size=2, seq_length=16, lr=3e-2, min_lr=3e-2, weight_decay=0.0, seed=1,
                             eval_samples=0, exit_weights=[ExitWeight(1.0), ExitWeight(0.0), ExitWeight(0.0)], dae_exit=2,
                             dae_blocks=2, tensorboard=False)
    trainer = FamilialTrainer(CFG, settings, tokenizer=None, out_dir=str(tmp_path / "train"))
    inp, lab, pos, mask = _batch()
    batch = collate([{"tokens": inp[i].numpy(), "labels": lab[i].numpy(), "loss_mask": mask[i].numpy(),
                      "position_ids": pos[i].numpy()} for i in range(2)])
    for _ in range(3):
        trainer.train_step(batch)
    model = trainer.model.eval()
    dense = sum(p.numel() for p in model.exits["2"].blocks.parameters())
    head = model.exits["2"].head.weight.numel()
    rows = compress_model(model, _covariances(model, [batch], heads=True), 0.4, head_ratio=0.4)
    assert len(rows) == 9 and sum(p.numel() for p in model.exits["2"].blocks.parameters()) < 0.7 * dense
    # the branch's LM head too, as the report compresses the branch-specific heads: 40% of its parameters
    assert sum(p.numel() for p in model.exits["2"].head.parameters()) == pytest.approx(0.6 * head, rel=0.05)
    out = export_ruyi_hf(model, CFG, str(tmp_path / "hf"))
    config = json.loads(open(f"{out}/config.json").read())
    assert config["dae_low_rank"]["2.0.self_attn.q_proj"] == next(r["rank"] for r in rows if r["matrix"] == "exits.2.blocks.0.self_attention.linear_qkv")
    assert config["low_rank_heads"] == {"0": next(r["rank"] for r in rows if r["matrix"] == "exits.2.head")}
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    ours = model.exit_logits(inp, pos)
    with torch.no_grad():
        for e in CFG.exits:
            assert (hf(inp, early_exit_point=e).logits - ours[e]).abs().max().item() <= 1e-4, e
        assert torch.equal(hf.generate(inp[:1], max_new_tokens=4, do_sample=False, early_exit_point=2),
                           hf.generate(inp[:1], max_new_tokens=4, do_sample=False, early_exit_point=2, use_cache=False))


@pytest.mark.slow
def test_exports_round_trip_at_8k_tokens_for_plain_dae_and_compressed_branches(dist, tmp_path):
    """At the full 8,192-token context every exported exit gives megatron-core's logits in fp32: the plain
    branch, the full model, and a branch with two DaE blocks compressed to low rank; RoPE, full attention
    (no sliding window) and the low-rank modules all hold past 4,096 positions."""
    import dataclasses

    import transformers

    from train_entry.compress import _covariances, compress_model
    from train_entry.data import collate
    from train_entry.hf_interop import export_ruyi_hf

    cfg = dataclasses.replace(CFG, max_sequence_length=8192)
    torch.manual_seed(0)
    model = build_model(cfg)
    append_dae_blocks(model, 2, blocks=2)
    with torch.no_grad():  # every module non-trivial: branches unlike the backbone, DaE outputs non-zero
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    inp, lab, pos, mask = _batch()
    batch = collate([{"tokens": inp[i].numpy(), "labels": lab[i].numpy(), "loss_mask": mask[i].numpy(),
                      "position_ids": pos[i].numpy()} for i in range(2)])
    rows = compress_model(model.eval(), _covariances(model, [batch]), 0.4)
    assert rows and all(r["rank"] < min(r["shape"]) for r in rows)
    out = export_ruyi_hf(model, cfg, str(tmp_path / "hf"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True, torch_dtype=torch.float32).eval()
    assert hf.config.max_position_embeddings == 8192 and not hf.config.use_sliding_window
    ids = torch.randint(0, cfg.vocab_size, (1, 8192), generator=torch.Generator().manual_seed(3))
    ours = model.exit_logits(ids, torch.arange(8192).unsqueeze(0))
    with torch.no_grad():
        for e in cfg.exits:
            diff = (hf(ids, early_exit_point=e).logits - ours[e]).abs()
            assert diff.max().item() <= 1e-5, (e, diff.max().item())
            assert diff[:, 4096:].max().item() <= 1e-5  # past the published default window too
