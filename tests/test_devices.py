"""Every command that runs a model puts it and its inputs on one device. There is no GPU here, so the call
sites are checked with a stand-in: the model's device is reported as ``meta`` and the inputs must arrive
there; megatron-core's CUDA initialisation is made to fail, and the export skeleton must not need it."""

from __future__ import annotations

from unittest import mock

import torch

import train_entry.devices as devices
from train_entry.eval_scoring import HFScorer, MegatronScorer

META = torch.device("meta")


class _Recorder(torch.nn.Module):
    """A model that records the devices of what it is given and answers with CPU logits."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[torch.device] = []

    def exit_logits(self, tokens, position_ids, positions=None):
        self.seen += [tokens.device, position_ids.device] + ([positions.device] if positions is not None else [])
        k = positions.shape[1] if positions is not None else tokens.shape[1]
        return {3: torch.zeros(tokens.shape[0], k, 7)}

    def forward(self, input_ids, use_cache=False, logits_to_keep=1, **kwargs):
        self.seen.append(input_ids.device)
        return mock.Mock(logits=torch.zeros(input_ids.shape[0], logits_to_keep, 7))


def test_the_scorers_give_the_model_its_inputs_on_its_device_and_return_cpu_logits():
    tokens, positions = torch.zeros(2, 5, dtype=torch.long), torch.tensor([[4], [3]])
    for scorer in (MegatronScorer(_Recorder(), (3,), 16), HFScorer(_Recorder(), (3,), 16, familial=False)):
        with mock.patch.object(devices, "model_device", return_value=META):
            out = scorer.logits(tokens, (3,), positions)
        assert scorer.model.seen and all(d == META for d in scorer.model.seen), scorer.model.seen
        assert out[3].device.type == "cpu"


def test_compress_moves_every_batch_to_the_models_device():
    from train_entry import compress

    model = _Recorder()
    batch = {"tokens": torch.zeros(1, 4, dtype=torch.long), "position_ids": torch.arange(4)[None], "labels": torch.zeros(1, 4),
             "loss_mask": torch.ones(1, 4)}
    moved = []
    real = devices.to_device

    def spy(b, device):
        moved.append(device)
        return real(b, torch.device("cpu"))  # the stand-in device holds no data: the batch stays usable

    with mock.patch.object(devices, "model_device", return_value=META), mock.patch.object(devices, "to_device", spy):
        compress._covariances(model, [batch, batch])
        compress._losses(model, [batch])
    assert moved == [META, META, META]


def test_the_export_skeleton_needs_no_gpu_memory(dist):
    """With CUDA present megatron-core would create every weight on GPU 0 inside a meta-device context (its
    explicit device wins): the skeleton asks for its CPU initialisation, so nothing touches CUDA."""
    from train_entry.model_config import FamilialConfig
    from train_entry.run_model import skeleton

    fcfg = FamilialConfig(4, 64, 128, 4, 2, 16, (1, 3), vocab_size=512, max_sequence_length=32)
    refuse = mock.Mock(side_effect=RuntimeError("a CUDA device was asked for"))
    with mock.patch.object(torch.cuda, "is_available", return_value=True), \
            mock.patch.object(torch.cuda, "current_device", refuse):
        model = skeleton(fcfg, {})
    assert all(p.device == META for p in model.parameters()) and not refuse.called


def test_a_rebuilt_run_model_lives_on_the_compute_device(dist, tmp_path):
    """``rebuild`` moves the whole model (the local spec's norms included) to ``compute_device()``."""
    from train_entry import checkpointing
    from train_entry.model import build_model
    from train_entry.model_config import FamilialConfig
    from train_entry.run_model import rebuild

    fcfg = FamilialConfig(4, 64, 128, 4, 2, 16, (1, 3), vocab_size=512, max_sequence_length=32)
    checkpointing.save_weights(str(tmp_path / "ckpt"), 1, build_model(fcfg))
    target = []

    def to(self, device):
        target.append(device)
        return self

    with mock.patch.object(devices, "compute_device", return_value=META), mock.patch.object(torch.nn.Module, "to", to):
        rebuild(fcfg, str(tmp_path / "ckpt"), {})
    assert target == [META]
