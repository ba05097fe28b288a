"""The familial model on megatron-core (CPU, gloo, world size 1)."""

import math
import os

import pytest
import torch

from train_entry.exit_branch import ExitLossAutoScaler
from train_entry.loop_settings import CurriculumStage, LoopSettings, stage_steps
from train_entry.loss_schedule import ExitWeight
from train_entry.model import build_model, masked_mean
from train_entry.model_config import PRESETS, FamilialConfig, build_config
from train_entry.trainer import FamilialTrainer

TINY = FamilialConfig(num_layers=6, hidden_size=32, ffn_hidden_size=64, num_attention_heads=4, num_query_groups=2,
                      kv_channels=8, exits=(2, 4, 5), vocab_size=512, max_sequence_length=16)


def _trainer(tmp_path, **overrides) -> FamilialTrainer:
    """The trainer's model, DDP, optimizer and scheduler on TINY (seeded, so build_model after
    torch.manual_seed(1234) gives the same weights)."""
    fields = dict(steps=10, micro_batch_size=2, seq_length=16, lr=1e-3, min_lr=1e-4, weight_decay=0.1, seed=1234,
                  eval_samples=0, exit_weights=[ExitWeight(), ExitWeight(), ExitWeight()], tensorboard=False)
    return FamilialTrainer(TINY, LoopSettings(**{**fields, **overrides}), tokenizer=None, out_dir=str(tmp_path))


def _micro_batch(seed=1) -> dict:
    inp, lab, pos, mask = _batch(seed)
    return {"tokens": inp, "labels": lab, "position_ids": pos, "loss_mask": mask}


def test_presets_follow_the_report():
    ruyi = PRESETS["ruyi2-14b"]
    assert (ruyi.num_layers, ruyi.hidden_size, ruyi.ffn_hidden_size, ruyi.num_attention_heads, ruyi.num_query_groups,
            ruyi.kv_channels, ruyi.exits, ruyi.vocab_size, ruyi.rope_theta) == (40, 5120, 17408, 40, 8, 128, (2, 21, 39), 151936, 1e6)
    with pytest.raises(ValueError, match="last exit must be num_layers - 1"):
        build_config("tiny", 64, exits=[1, 2])
    with pytest.raises(ValueError, match="strictly increasing"):
        build_config("tiny", 64, exits=[2, 1, 3])


def test_exit_weight_schedules():
    cos = ExitWeight(start=1.0, end=0.1, schedule="cosine")
    vals = [cos.at(t, 11) for t in range(11)]
    assert vals[0] == pytest.approx(1.0) and vals[-1] == pytest.approx(0.1) and vals == sorted(vals, reverse=True)
    assert ExitWeight(start=0.5, end=0.0, schedule="linear").at(5, 11) == pytest.approx(0.25)
    assert ExitWeight(start=1.0, warmup_steps=4).at(1, 10) == pytest.approx(0.5)
    assert stage_steps([CurriculumStage("a", "", 300), CurriculumStage("b", "", 100)], 8) == [6, 2]


def test_branches_are_initialised_from_the_layer_after_the_exit(dist):
    torch.manual_seed(0)
    model = build_model(TINY)
    assert sorted(model.exits.keys()) == ["2", "4"]
    by_number = {layer.layer_number: layer for layer in model.decoder.layers}
    for key, branch in ((k, b.layer) for k, b in model.exits.items()):
        src = by_number[int(key) + 1].state_dict()  # 0-based layer e == layer_number e + 1
        for name, tensor in branch.state_dict().items():
            if isinstance(tensor, torch.Tensor):
                assert torch.equal(tensor, src[name]), (key, name)


def test_exits_are_spec_built_branches_fed_by_their_tap_layers_without_hooks(dist):
    """The decoder's spec builds layers e_k as tap layers, each exit is an ExitBranch module, no hook is
    registered anywhere, and the loss of exit k is what its branch module computes."""
    from train_entry.exit_branch import ExitBranch, ExitTapLayer

    torch.manual_seed(0)
    model = build_model(TINY)
    assert [layer.layer_number for layer in model.decoder.layers if isinstance(layer, ExitTapLayer)] == [2, 4]
    assert all(isinstance(branch, ExitBranch) for branch in model.exits.values()) and sorted(model.exits) == ["2", "4"]
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    inp, lab, pos, mask = _batch()
    with torch.no_grad():
        model(inp, pos, None, labels=lab, loss_mask=mask)
        before = dict(model.exit_losses)
        model.exits["2"].head.weight.zero_()  # uniform logits at exit 2: its loss is ln(vocab), nothing else moves
        model(inp, pos, None, labels=lab, loss_mask=mask)
    assert float(model.exit_losses[2]) == pytest.approx(float(torch.log(torch.tensor(float(TINY.vocab_size)))), abs=1e-5)
    assert abs(float(before[2]) - float(model.exit_losses[2])) > 1e-3 and float(model.exit_losses[4]) == float(before[4])


def test_exit_logits_at_positions_are_the_full_logits_at_those_positions(dist):
    torch.manual_seed(0)
    model = build_model(TINY)
    inp, _, pos, _ = _batch()
    positions = torch.tensor([[3, 0, 15], [7, 7, 1]])
    full, at = model.exit_logits(inp, pos), model.exit_logits(inp, pos, positions)
    assert sorted(full) == sorted(at) == [2, 4, 5]
    for e in full:
        want = torch.stack([full[e][b, positions[b]] for b in range(2)])
        assert at[e].shape == want.shape and torch.allclose(at[e], want, atol=1e-6), e


def _batch(seed=1, b=2, s=16):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 512, (b, s + 1), generator=g)
    return tokens[:, :-1], tokens[:, 1:], torch.arange(s).expand(b, s), torch.ones(b, s)


def test_injected_exit_losses_give_the_gradient_of_the_joint_loss(dist):
    """Backward through the injector path equals backward of sum_k lambda_k CE_k computed explicitly."""
    torch.manual_seed(0)
    model = build_model(TINY)
    lambdas = {2: 0.3, 4: 0.7, 5: 1.0}
    model.exit_weights.update(lambdas)
    inp, lab, pos, mask = _batch()
    ExitLossAutoScaler.set_loss_scale(torch.tensor(1.0))
    final = masked_mean(model(inp, pos, None, labels=lab, loss_mask=mask), mask)
    (lambdas[5] * final).backward()
    injected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.zero_grad(set_to_none=True)
    captured = {}
    hooks = []
    for e in (2, 4):  # explicit: run the branch on the tapped hidden state and add its loss to the graph
        tap = [l for l in model.decoder.layers if l.layer_number == e][0]
        def grab(module, args, kwargs, output, e=e):
            captured[e] = (output[0], dict(kwargs))
        hooks.append(tap.register_forward_hook(grab, with_kwargs=True))
    out = super(type(model), model).forward(inp, pos, None, labels=lab)  # plain GPTModel forward: no exit hooks fire
    total = lambdas[5] * masked_mean(out, mask)
    for e, (hidden, kw) in captured.items():
        kw = dict(kw, hidden_states=hidden)
        h, _ = model.exits[str(e)].layer(**kw)
        logits, _ = model.exits[str(e)].head(model.exits[str(e)].norm(h))
        total = total + lambdas[e] * masked_mean(model.compute_language_model_loss(lab, logits), mask)
    total.backward()
    for h in hooks:
        h.remove()
    explicit = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(explicit) == set(injected)
    worst = max((explicit[n] - injected[n]).abs().max().item() for n in explicit)
    assert worst < 1e-6, worst


def test_exit_losses_are_finite_and_fall_when_training(dist):
    torch.manual_seed(0)
    model = build_model(TINY)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    inp, lab, pos, mask = _batch(seed=3)
    history = []
    for _ in range(6):
        opt.zero_grad()
        final = masked_mean(model(inp, pos, None, labels=lab, loss_mask=mask), mask)
        final.backward()
        opt.step()
        history.append({**{e: float(v) for e, v in model.exit_losses.items()}, 5: final.item()})
    for e in (2, 4, 5):
        assert all(torch.isfinite(torch.tensor(h[e])) for h in history)
        assert history[-1][e] < history[0][e] - 0.2, (e, history[0][e], history[-1][e])


def test_pipeline_stages_are_balanced_for_the_exit_branches():
    from train_entry.pipeline_balance import balance_pipeline, head_flops, layer_flops, plan_pipeline

    ruyi = PRESETS["ruyi2-14b"]
    assert 2.1 < head_flops(ruyi) / layer_flops(ruyi, 4096) < 2.3  # a 151,936-token head ~ two decoder layers (causal)
    plan = balance_pipeline(ruyi, 8, 4096)
    assert sum(plan.layers_per_stage) == 40 and len(plan.layers_per_stage) == 8
    # the even split (5 layers each) leaves the stages with exits 2 and 21 and the final head ~60% over the others
    assert max(plan.even_stage_cost) / max(plan.stage_cost) > 1.15
    assert max(plan.stage_cost) <= min(max(plan_pipeline(ruyi, 8, 4096, list(c)).stage_cost)
                                       for c in ([5] * 8, [4, 6, 5, 5, 4, 6, 5, 5], [3, 5, 6, 6, 4, 6, 6, 4]))
    layout = plan.layout
    assert layout[0][0] == "embedding" and layout[-1][-1] == "loss"
    assert [row.count("decoder") for row in layout] == list(plan.layers_per_stage)
    # exact: brute force over every split of a small model agrees with the dynamic programme
    import itertools

    best = min(max(plan_pipeline(TINY, 3, 16, [a, b, 6 - a - b]).stage_cost)
               for a, b in itertools.product(range(1, 5), repeat=2) if 6 - a - b >= 1)
    assert max(balance_pipeline(TINY, 3, 16).stage_cost) == pytest.approx(best)
    with pytest.raises(ValueError, match="summing to 6"):
        plan_pipeline(TINY, 2, 16, [4, 3])


def test_a_truncated_checkpoint_is_named(dist, tmp_path):
    """A cut .distcp file fails as the project's CheckpointError naming the folder (DCP raises a
    BaseException subclass that a plain `except Exception` would let through)."""
    from train_entry import checkpointing

    trainer = _trainer(tmp_path / "a")
    trainer.train_step(_micro_batch())
    path = checkpointing.save(str(tmp_path / "ckpt"), 3, trainer.model, trainer.optimizer, {})
    shard = max((os.path.join(path, f) for f in os.listdir(path) if f.endswith(".distcp")), key=os.path.getsize)
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)
    fresh = _trainer(tmp_path / "b")
    with pytest.raises(checkpointing.CheckpointError, match=f"{path}: cannot load the checkpoint"):
        checkpointing.load(str(tmp_path / "ckpt"), fresh.model, fresh.optimizer)


def test_no_weight_decay_on_norms_biases_and_embeddings(dist, tmp_path):
    """megatron-core's optimizer groups: weight matrices decay, norms and embeddings do not (wd_mult 0)."""
    trainer = _trainer(tmp_path)
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    by_decay = {}
    for group in trainer.optimizer.param_groups:
        for p in group["params"]:
            by_decay[names[id(p)]] = group["weight_decay"]
    assert len(by_decay) == len(names)
    assert by_decay["embedding.word_embeddings.weight"] == 0.0
    assert by_decay["output_layer.weight"] == by_decay["decoder.layers.0.self_attention.linear_qkv.weight"] == 0.1
    assert by_decay["exits.2.head.weight"] == 0.1
    plain = {n for n, wd in by_decay.items() if wd == 0.0}
    assert all("norm" in n or "embedding" in n for n in plain) and any("layernorm" in n for n in plain)


def test_gradients_are_clipped_to_the_norm_over_the_whole_model(dist, tmp_path):
    """The optimizer's step returns the norm of the joint loss's gradient over every parameter (branches
    included) and leaves the gradients clipped to clip_grad."""
    trainer = _trainer(tmp_path, clip_grad=0.5)
    torch.manual_seed(1234)
    twin = build_model(TINY)  # the same weights, plain autograd
    inp, lab, pos, mask = _batch()
    ExitLossAutoScaler.set_loss_scale(torch.tensor(1.0))
    masked_mean(twin(inp, pos, None, labels=lab, loss_mask=mask), mask).backward()
    expected = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in twin.parameters() if p.grad is not None)).item()
    record = trainer.train_step(_micro_batch())
    assert record["grad_norm"] == pytest.approx(expected, rel=1e-5) and expected > 0.5
    after = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in trainer.model.parameters() if p.grad is not None)).item()
    assert after == pytest.approx(0.5, rel=1e-4)


def test_wsd_holds_the_learning_rate_until_the_anneal_stage(dist, tmp_path):
    """warm-up from 0, stable at lr through the general stage, decay to min_lr over the anneal stage
    (megatron-core's OptimizerParamScheduler, as the trainer sets it for the curriculum)."""
    from train_entry.lr_schedule import LRSchedule

    trainer = _trainer(tmp_path, lr_schedule=LRSchedule("wsd", warmup_steps=2, decay_style="linear"))
    trainer.scheduler = trainer._build_scheduler(["general", "anneal"], [6, 4])
    lrs = []
    for _ in range(11):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.scheduler.step(1)
    assert lrs[:3] == pytest.approx([0.0, 5e-4, 1e-3])
    assert lrs[3:7] == pytest.approx([1e-3] * 4)  # stable to the end of the general stage
    assert lrs[7:] == pytest.approx([1e-3 - 9e-4 * k / 4 for k in (1, 2, 3, 4)])
    with pytest.raises(ValueError, match="no curriculum stage 'cooldown'"):
        trainer.s.lr_schedule = LRSchedule("wsd", anneal_stage="cooldown")
        trainer._build_scheduler(["general", "anneal"], [6, 4])


def test_accumulated_micro_batches_give_the_gradient_of_the_whole_batch(dist, tmp_path):
    """Two micro-batches of 2 accumulated in one step train exactly like one batch of 4."""
    whole = _trainer(tmp_path / "whole", micro_batch_size=4)
    split = _trainer(tmp_path / "split", micro_batch_size=2, global_batch_size=4)
    assert split.micro_batches == 2
    a, b = _micro_batch(1), _micro_batch(2)
    both = {k: torch.cat([a[k], b[k]]) for k in a}
    for _ in range(3):
        rw, rs = whole.train_step(both), split.train_step([a, b])
        assert rw["grad_norm"] == pytest.approx(rs["grad_norm"], rel=1e-5)
        for e in (2, 4, 5):
            assert rw["losses"][e] == pytest.approx(rs["losses"][e], rel=1e-5)
    # Adam moves every weight by up to lr per step (3e-3 here) whatever the gradient's size, so the last-bit
    # differences of a reordered sum show up on near-zero gradients: a bound well under one step's move
    for (name, p), q in zip(whole.model.named_parameters(), split.model.parameters()):
        assert (p - q).abs().max().item() < 1e-5, (name, (p - q).abs().max().item())


def test_full_recompute_gives_the_same_gradients(dist, tmp_path):
    """Activation recompute re-runs the tap layers (and their exit hooks) in the backward; the gradients of
    every parameter, branches included, are those without it."""
    plain, recomputed = _trainer(tmp_path / "p", clip_grad=0.0), _trainer(tmp_path / "r", clip_grad=0.0, recompute="full")
    assert recomputed.model.config.recompute_granularity == "full"
    grads = []
    for trainer in (plain, recomputed):
        for ddp in trainer.ddp:
            ddp.zero_grad_buffer()
        losses = trainer.passes.run([_micro_batch()], forward_only=False)
        grads.append(({n: p.main_grad.clone() for n, p in trainer.model.named_parameters()}, losses))
    (g0, l0), (g1, l1) = grads
    assert l0 == pytest.approx(l1, rel=1e-6)
    assert max((g0[n] - g1[n]).abs().max().item() for n in g0) < 1e-6
    assert max(g0[n].abs().max().item() for n in g0 if n.startswith("exits.") and ".head." in n) > 1e-4  # the exits did get gradient


def test_a_curriculum_stage_can_restart_the_exit_weights():
    """The anneal stage restarts its own schedule over its own steps; the general stage continues the run's."""
    from train_entry.loss_schedule import StageSpan, exit_weights_at

    run = [ExitWeight(1.0, 0.2, "linear"), ExitWeight(1.0)]
    anneal = [ExitWeight(0.5, 0.0, "linear"), ExitWeight(1.0)]
    general, last = StageSpan("general", 0, 6), StageSpan("anneal", 6, 5)
    per = {"anneal": anneal}
    assert exit_weights_at(3, 11, run, general, per) == [pytest.approx(1.0 - 0.8 * 3 / 10), 1.0]
    assert exit_weights_at(6, 11, run, last, per) == [0.5, 1.0]  # restarted at the stage's first step
    assert exit_weights_at(10, 11, run, last, per) == [pytest.approx(0.0), 1.0]
    assert exit_weights_at(10, 11, run, last, {}) == [pytest.approx(0.2), 1.0]  # without it: the run's schedule


def test_document_masks_change_the_loss_exactly_where_sequences_are_packed(dist):
    """Two documents packed in one sequence: with document masks (megatron-core's GPTDataset masks and
    positions) the first document's token losses are unchanged and the second's equal those of the second
    document on its own; without them the second document sees the first."""
    from megatron.core.datasets.gpt_dataset import _get_ltor_masks_and_position_ids

    torch.manual_seed(0)
    model = build_model(TINY).eval()
    eod = 0
    g = torch.Generator().manual_seed(5)
    a, b = torch.randint(1, 512, (6,), generator=g), torch.randint(1, 512, (10,), generator=g)
    packed = torch.cat([a, torch.tensor([eod]), b])  # 17 tokens: 16 inputs + 16 labels
    inp, lab = packed[:-1].unsqueeze(0), packed[1:].unsqueeze(0)
    mask, _, pos = _get_ltor_masks_and_position_ids(inp[0], eod, True, True, False, True)

    def token_losses(tokens, labels, position_ids, attention_mask):
        with torch.no_grad():
            return model(tokens, position_ids, attention_mask, labels=labels)[0]

    plain = token_losses(inp, lab, torch.arange(16).unsqueeze(0), None)
    masked = token_losses(inp, lab, pos.unsqueeze(0), mask.unsqueeze(0))
    alone = token_losses(b[:-1].unsqueeze(0), b[1:].unsqueeze(0), torch.arange(9).unsqueeze(0), None)
    first = 7  # the inputs up to and including the end-of-document token
    assert torch.allclose(masked[:first], plain[:first], atol=1e-6)
    assert torch.allclose(masked[first:], alone, atol=1e-5)
    assert (masked[first:] - plain[first:]).abs().max() > 1e-3


def _main_params(trainer) -> dict:
    """model parameter name -> the fp32 master copy the mixed-precision optimizer steps."""
    from train_entry.optim import inner_optimizers

    names = {id(p): n for n, p in trainer.model.named_parameters()}
    out = {}
    for inner in inner_optimizers(trainer.optimizer):
        for model_group, main_group in zip(inner.float16_groups, inner.fp32_from_float16_groups):
            out.update({names[id(p)]: m for p, m in zip(model_group, main_group)})
    return out


def test_bf16_trains_bf16_weights_through_fp32_master_copies(dist, tmp_path):
    """precision bf16 (megatron-core's Float16Module and mixed-precision optimizer, here on CPU): every
    parameter is bf16, norms included; the optimizer steps an fp32 master copy of each and writes it back
    rounded, so updates smaller than a bf16 step are kept rather than lost; the losses fall."""
    trainer = _trainer(tmp_path, bf16=True, lr=1e-4, min_lr=1e-4, weight_decay=0.0)
    params = dict(trainer.model.named_parameters())
    assert {p.dtype for p in params.values()} == {torch.bfloat16}  # the local spec builds norms in fp32
    main = _main_params(trainer)
    assert set(main) == set(params) and all(m.dtype == torch.float32 for m in main.values())
    before = {n: m.detach().clone() for n, m in main.items()}
    losses = [trainer.train_step(_micro_batch())["losses"] for _ in range(4)]
    for n, p in params.items():
        assert torch.equal(p.detach(), main[n].detach().to(torch.bfloat16)), n
    # a norm gain of 1.0 moves by ~lr a step, under bf16's step of 2^-7 there: only the master copy shows it
    gain = "decoder.layers.0.input_layernorm.weight"
    assert torch.equal(params[gain].detach(), torch.ones_like(params[gain]))
    assert (main[gain] - before[gain]).abs().max().item() > 1e-4
    assert all(math.isfinite(v) for v in losses[-1].values())
    assert all(losses[-1][e] < losses[0][e] for e in (2, 4, 5))


def test_the_distributed_optimizer_steps_like_the_plain_one(dist, tmp_path):
    """megatron-core's distributed optimizer (one data-parallel rank here; two in test_parallel.py) gives
    the plain optimizer's losses, gradient norms and weights (to the last bit), in bf16 as in fp32."""
    for bf16 in (False, True):
        plain = _trainer(tmp_path / f"plain{bf16}", bf16=bf16)
        sharded = _trainer(tmp_path / f"dist{bf16}", bf16=bf16, distributed_optimizer=True)
        assert type(sharded.optimizer.chained_optimizers[0]).__name__ == "DistributedOptimizer"
        for seed in (1, 2, 3):
            a, b = plain.train_step(_micro_batch(seed)), sharded.train_step(_micro_batch(seed))
            assert a["losses"] == b["losses"] and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-6)
        # Adam over one flat shard vs per tensor: the last bits of a weight may differ (lr 1e-3 moves them ~1e-3): by
        # 1e-7 at most, or one fp32 unit in the last place where that is more (2^-23 at the norm gains' 1.0)
        for (name, p), q in zip(plain.model.named_parameters(), sharded.model.parameters()):
            bound = torch.clamp(p.float().abs() * torch.finfo(torch.float32).eps, min=1e-7)
            assert bool(((p.float() - q.float()).abs() <= bound).all()), name


def test_a_checkpoint_of_the_other_optimizer_is_refused_by_name(dist, tmp_path):
    from train_entry import checkpointing

    sharded = _trainer(tmp_path / "dist", distributed_optimizer=True)
    sharded.train_step(_micro_batch())
    path = checkpointing.save(str(tmp_path / "ckpt"), 1, sharded.model, sharded.optimizer, {})
    plain = _trainer(tmp_path / "plain")
    with pytest.raises(checkpointing.CheckpointError, match=f"{path}: written with the distributed optimizer, this run "
                                                            "has the plain one"):
        checkpointing.load(str(tmp_path / "ckpt"), plain.model, plain.optimizer)
