"""The fused core attention (train_entry/attention.py) against megatron-core's DotProductAttention: the same
losses and gradients (fp32) with and without packed documents, documents as ids and never as a dense mask,
no s x s tensor kept for the backward; and the fused kernels the configuration asks for on a GPU."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from train_entry.attention import document_ids, flex_document_attention, segment_attention
from train_entry.model import build_model, dense_document_mask
from train_entry.model_config import FamilialConfig

CFG = FamilialConfig(4, 64, 128, 4, 2, 16, (1, 2, 3), vocab_size=512, max_sequence_length=32)
EOD = 0


def _batch(documents: bool):
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(1, 512, (2, 32), generator=g)
    if documents:
        tokens[0, [7, 20]] = EOD
        tokens[1, 12] = EOD
    return tokens, torch.roll(tokens, -1, 1), torch.arange(32).expand(2, 32)


def _loss_and_grads(attention: str, documents: bool, dtype=torch.float32):
    from train_entry.exit_branch import ExitLossAutoScaler

    tokens, labels, pos = _batch(documents)
    torch.manual_seed(0)
    model = build_model(CFG, attention=attention)
    ExitLossAutoScaler.set_loss_scale(torch.tensor(1.0))
    mask = document_ids(tokens, EOD).view(2, 1, 1, 32) if documents else None
    loss = model(tokens, pos, mask, labels=labels, loss_mask=torch.ones(2, 32)).mean()
    loss.backward()
    return loss.item(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("documents", [False, True], ids=["causal", "documents"])
def test_fused_attention_computes_what_megatron_cores_computes(dist, documents):
    loss_f, grads_f = _loss_and_grads("fused", documents)
    loss_u, grads_u = _loss_and_grads("unfused", documents)
    assert loss_f == pytest.approx(loss_u, abs=1e-6)
    assert set(grads_f) == set(grads_u) and len(grads_f) > 40
    worst = max((grads_f[n] - grads_u[n]).abs().max().item() for n in grads_f)
    assert worst < 1e-5, worst
    if documents:  # the documents change the result: they are not ignored
        assert abs(loss_f - _loss_and_grads("fused", False)[0]) > 1e-3


def test_document_ids_give_megatron_cores_mask():
    """The dense mask built from the ids (for megatron-core's DotProductAttention) is the mask megatron-core's
    GPTDataset builds with --reset-attention-mask; an end-of-document token belongs to the document it ends."""
    from megatron.core.datasets.gpt_dataset import _get_ltor_masks_and_position_ids

    tokens, _, _ = _batch(True)
    ids = document_ids(tokens, EOD)
    assert ids[0, :8].tolist() == [0] * 8 and ids[0, 8].item() == 1 and ids[0, 21].item() == 2
    theirs = torch.stack([_get_ltor_masks_and_position_ids(t, EOD, False, True, False, True)[0] for t in tokens])
    assert torch.equal(dense_document_mask(ids.view(2, 1, 1, 32)), theirs)


def test_flex_attention_masks_what_the_document_segments_mask():
    """On a GPU documents run as one FlexAttention call; its block mask (checked here in a forward on the CPU,
    where FlexAttention has no backward) gives what the per-document calls give."""
    tokens, _, _ = _batch(True)
    ids = document_ids(tokens, EOD)
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(2, 4, 32, 16, generator=g), torch.randn(2, 2, 32, 16, generator=g), torch.randn(2, 2, 32, 16, generator=g)
    flex = flex_document_attention(q, k, v, ids, 0.25, True, compiled=False)
    assert (flex - segment_attention(q, k, v, ids, 0.25, True)).abs().max().item() < 1e-5


def test_no_score_matrix_is_kept_for_the_backward(dist):
    """The unfused attention keeps s x s scores and probabilities per layer; the fused one none."""
    from train_entry.exit_branch import ExitLossAutoScaler

    s = 40  # no weight is s x s
    cfg = FamilialConfig(2, 64, 128, 4, 2, 16, (1,), vocab_size=512, max_sequence_length=s)
    for attention, kept in (("unfused", True), ("fused", False)):
        shapes = []

        def pack(t, shapes=shapes):
            shapes.append(tuple(t.shape))
            return t

        torch.manual_seed(0)
        model = build_model(cfg, attention=attention)
        tokens = torch.randint(0, 512, (2, s))
        ExitLossAutoScaler.set_loss_scale(torch.tensor(1.0))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(tokens, torch.arange(s).expand(2, s), None, labels=tokens, loss_mask=torch.ones(2, s))
        assert any(len(sh) >= 3 and sh[-2:] == (s, s) for sh in shapes) == kept, attention


def test_document_masks_reach_the_batches_as_ids_not_dense_masks():
    from train_entry.data import DatasetTokenizer, _dataset_config, collate

    tokens, labels, pos = _batch(True)
    samples = [{"tokens": tokens[i].numpy(), "labels": labels[i].numpy(), "loss_mask": torch.ones(32).numpy(),
                "position_ids": pos[i].numpy()} for i in range(2)]
    batch = collate(samples, EOD)
    assert batch["attention_mask"].dtype == torch.int32 and batch["attention_mask"].shape == (2, 1, 1, 32)
    assert "attention_mask" not in collate(samples)
    config = _dataset_config([None, None, None], 32, DatasetTokenizer(512, EOD, "t"), 1, None, document_masks=True)
    assert config.reset_attention_mask and config.reset_position_ids and not config.create_attention_mask


def test_the_configuration_asks_for_the_fused_kernels_on_a_gpu():
    with mock.patch.object(torch.cuda, "is_available", return_value=True):
        bf16 = CFG.transformer_config(params_dtype=torch.bfloat16)
        fp32 = CFG.transformer_config()
    assert bf16.bias_activation_fusion and bf16.bias_dropout_fusion and bf16.cross_entropy_loss_fusion
    assert fp32.bias_activation_fusion and not fp32.cross_entropy_loss_fusion  # its gradient comes back in bf16
    import importlib.util

    assert bf16.apply_rope_fusion == (importlib.util.find_spec("transformer_engine") is not None)
    assert bf16.gradient_accumulation_fusion == (importlib.util.find_spec("fused_weight_gradient_mlp_cuda") is not None)
    cpu = CFG.transformer_config(params_dtype=torch.bfloat16)
    assert not (cpu.bias_activation_fusion or cpu.cross_entropy_loss_fusion or cpu.apply_rope_fusion)


def test_the_pytorch_written_fusions_compute_the_same_function(dist):
    """SwiGLU and bias-dropout-add through megatron-core's jit fuser run on a CPU too: the same loss and
    gradients as the plain path; its fused cross-entropy the same loss, its gradient rounded to bf16."""
    import train_entry.model_config as mc
    from train_entry.exit_branch import ExitLossAutoScaler

    plain = mc.fused_kernels(False)

    def run(flags):
        tokens, labels, pos = _batch(False)
        with mock.patch.object(mc, "fused_kernels", lambda on_cuda, bf16=True: flags):
            torch.manual_seed(0)
            model = build_model(CFG)
        ExitLossAutoScaler.set_loss_scale(torch.tensor(1.0))
        loss = model(tokens, pos, None, labels=labels, loss_mask=torch.ones(2, 32)).mean()
        loss.backward()
        return loss.item(), {n: p.grad for n, p in model.named_parameters()}

    ref_loss, ref = run(plain)
    loss, got = run(plain | {"bias_activation_fusion": True, "bias_dropout_fusion": True})
    assert loss == ref_loss and max((got[n] - ref[n]).abs().max().item() for n in ref) < 1e-6
    loss, got = run(plain | {"cross_entropy_loss_fusion": True})
    assert loss == pytest.approx(ref_loss, abs=1e-6)
    rel = max(((got[n] - ref[n]).abs().max() / ref[n].abs().max()).item() for n in ref)
    assert 0 < rel < 2**-7  # within bf16's rounding
