"""Import keeps the model what it was: a tied Qwen3 base trains and exports tied (or is untied by name), RoPE
scaling (YaRN, linear) is read, reproduced and carried to the export, unsupported scaling and shapes a
tensor-parallel size cannot split are refused before work, and a vocabulary padded for tensor parallelism
never leaves the checkpoint."""

import json
import os
import subprocess
import sys

import pytest
import torch
import transformers
import yaml
from safetensors.torch import load_file

from train_entry.hf_interop import export_ruyi_hf
from train_entry.init_from import InitError, config_from_qwen3, load_hf_qwen3
from train_entry.model import FamilialGPTModel
from train_entry.model_config import padded_vocab

VOCAB = 256


def _config(vocab=VOCAB, tied=False, rope=None, layers=4, positions=64):
    return transformers.Qwen3Config(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6, max_position_embeddings=positions, tie_word_embeddings=tied,
        rope_parameters={"rope_type": "default", "rope_theta": 10_000.0, **(rope or {})}, attn_implementation="eager")


def _save(tmp_path, name, **kw):
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(_config(**kw)).eval()
    folder = tmp_path / name
    model.save_pretrained(folder)
    return str(folder), model


def _familial(folder, exits=(1, 2, 3), **kw):
    cfg = config_from_qwen3(folder, exits, **kw)
    model = FamilialGPTModel(cfg, cfg.transformer_config())
    load_hf_qwen3(model, cfg, folder)
    return model.eval()


def _ids(n=40, vocab=VOCAB):
    return torch.randint(0, vocab, (2, n), generator=torch.Generator().manual_seed(3))


def _logits(model, ids):
    return model.exit_logits(ids, torch.arange(ids.shape[1]).expand_as(ids))


def _max_diff(a, b) -> float:
    return (a - b).abs().max().item()


def test_a_tied_base_trains_and_exports_tied(dist, tmp_path):
    folder, hf = _save(tmp_path, "tied", tied=True)
    assert "lm_head.weight" not in load_file(os.path.join(folder, "model.safetensors"))
    model = _familial(folder)
    assert model.fcfg.tie_embeddings and model.output_layer.weight is None  # the head is the embedding
    names = {n for n, _ in model.named_parameters()}
    assert "output_layer.weight" not in names and "embedding.word_embeddings.weight" in names
    ids = _ids()
    ours = _logits(model, ids)
    with torch.no_grad():
        assert _max_diff(ours[3], hf(ids).logits) <= 1e-5
    # the exits keep heads of their own, started from the base's head (its embedding)
    assert torch.equal(model.exits["1"].head.weight, model.embedding.word_embeddings.weight)
    out = export_ruyi_hf(model, model.fcfg, str(tmp_path / "ruyi"))
    config = json.load(open(os.path.join(out, "config.json")))
    written = load_file(os.path.join(out, "model.safetensors"))
    assert config["tie_word_embeddings"] is True and "lm_head.2.weight" not in written and "lm_head.0.weight" in written
    back = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True, dtype=torch.float32).eval()
    assert back.lm_head[2].weight is back.model.embed_tokens.weight
    with torch.no_grad():
        for e in (1, 2, 3):
            assert _max_diff(back(ids, early_exit_point=e).logits, ours[e]) <= 1e-4, e
    # the published layout loads every head by name: the full model's written out, the config untied
    published = export_ruyi_hf(model, model.fcfg, str(tmp_path / "published"), published=True)
    written = load_file(os.path.join(published, "model.safetensors"))
    assert json.load(open(os.path.join(published, "config.json")))["tie_word_embeddings"] is False
    assert torch.equal(written["lm_head.2.weight"], written["model.embed_tokens.weight"])
    # a plain model (one exit) exports as a stock tied Qwen3
    plain = _familial(folder, exits=(3,))
    stock = export_ruyi_hf(plain, plain.fcfg, str(tmp_path / "stock"))
    assert "lm_head.weight" not in load_file(os.path.join(stock, "model.safetensors"))
    reloaded = transformers.Qwen3ForCausalLM.from_pretrained(stock, dtype=torch.float32).eval()
    assert reloaded.config.tie_word_embeddings
    with torch.no_grad():
        assert _max_diff(reloaded(ids).logits, hf(ids).logits) <= 1e-5


def test_untie_embeddings_gives_the_full_model_a_head_of_its_own(dist, tmp_path):
    folder, hf = _save(tmp_path, "tied", tied=True)
    model = _familial(folder, untie_embeddings=True)
    assert not model.fcfg.tie_embeddings
    assert torch.equal(model.output_layer.weight, model.embedding.word_embeddings.weight)
    assert model.output_layer.weight is not model.embedding.word_embeddings.weight
    with torch.no_grad():
        assert _max_diff(_logits(model, _ids())[3], hf(_ids()).logits) <= 1e-5
    out = export_ruyi_hf(model, model.fcfg, str(tmp_path / "untied"))
    assert json.load(open(os.path.join(out, "config.json")))["tie_word_embeddings"] is False
    assert "lm_head.2.weight" in load_file(os.path.join(out, "model.safetensors"))


def test_an_untied_checkpoint_without_its_head_is_refused(dist, tmp_path):
    folder, _ = _save(tmp_path, "untied")
    tensors = load_file(os.path.join(folder, "model.safetensors"))
    from safetensors.torch import save_file

    save_file({k: v for k, v in tensors.items() if k != "lm_head.weight"}, os.path.join(folder, "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(InitError, match="no lm_head.weight, and config.json does not tie"):
        _familial(folder)


@pytest.mark.parametrize("rope", [{"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8},
                                  {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8,
                                   "attention_factor": 1.3},
                                  {"rope_type": "linear", "factor": 2.0}], ids=["yarn", "yarn-attention-factor", "linear"])
def test_a_scaled_rope_base_gives_its_own_logits_and_exports_its_scaling(dist, tmp_path, rope):
    """40 positions, past YaRN's original 8: the scaling changes the logits (a plain-RoPE model differs), ours
    equal transformers' to 1e-5; the export's config carries the scaling and reloads to the same logits."""
    folder, hf = _save(tmp_path, "scaled", rope=rope)
    model = _familial(folder)
    assert model.fcfg.rope_scaling["rope_type"] == rope["rope_type"]
    ids = _ids()
    ours = _logits(model, ids)
    plain_folder, _ = _save(tmp_path, "plain")
    plain = _familial(plain_folder)  # the same weights (same seed), plain RoPE
    with torch.no_grad():
        want = hf(ids).logits
        assert _max_diff(ours[3], want) <= 1e-5
        assert _max_diff(_logits(plain, ids)[3], want) > 1e-2
    out = export_ruyi_hf(model, model.fcfg, str(tmp_path / "export"))
    assert json.load(open(os.path.join(out, "config.json")))["rope_scaling"]["rope_type"] == rope["rope_type"]
    back = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True, dtype=torch.float32).eval()
    with torch.no_grad():
        assert _max_diff(back(ids, early_exit_point=3).logits, ours[3]) <= 1e-4


def test_rope_scaling_the_trainer_cannot_reproduce_is_refused_by_name(tmp_path):
    folder, _ = _save(tmp_path, "dynamic", rope={"rope_type": "dynamic", "factor": 2.0})
    with pytest.raises(InitError, match=r"dynamic\.?/config.json: rope_scaling 'dynamic' is not one|rope_scaling 'dynamic'"):
        config_from_qwen3(folder, (1, 2, 3))


def test_a_padded_vocabulary_is_zeros_in_training_and_absent_from_the_export(dist, tmp_path):
    """A 250-token vocabulary padded to 256 rows (128 and TP=2): the padding rows start at zero, the exits'
    logits have 250 entries equal to the base's, and the export holds 250 rows."""
    from dataclasses import replace

    assert padded_vocab(250, 2, 128) == 256 and padded_vocab(151936, 8, 128) is None
    assert padded_vocab(50257, 1, 128) == padded_vocab(50257, 4, 128) == 50304  # the same rows at every TP
    folder, hf = _save(tmp_path, "v250", vocab=250)
    cfg = replace(config_from_qwen3(folder, (1, 2, 3)), padded_vocab_size=256)
    model = FamilialGPTModel(cfg, cfg.transformer_config())
    load_hf_qwen3(model, cfg, folder)
    model.eval()
    assert model.embedding.word_embeddings.weight.shape[0] == 256
    assert not model.output_layer.weight[250:].any() and not model.exits["1"].head.weight[250:].any()
    ids = _ids(vocab=250)
    ours = _logits(model, ids)
    assert all(lg.shape[-1] == 250 for lg in ours.values())
    with torch.no_grad():
        assert _max_diff(ours[3], hf(ids).logits) <= 1e-5
    out = export_ruyi_hf(model, cfg, str(tmp_path / "export"))
    written = load_file(os.path.join(out, "model.safetensors"))
    assert {written[k].shape[0] for k in written if k.startswith(("lm_head", "model.embed_tokens"))} == {250}


def test_shapes_tensor_parallelism_cannot_split_fail_validation(tmp_path):
    """2 key/value groups over tensor_parallel 4: `ruyi2 validate` names the key, `ruyi2 train` refuses before any
    work."""
    folder, _ = _save(tmp_path, "base")
    (tmp_path / "in.jsonl").write_text('{"text": "hello"}\n')
    recipe = {"run_dir": str(tmp_path / "run"),
              "sources": [{"name": "web", "paths": [str(tmp_path / "in.jsonl")], "format": "jsonl", "domain": "web"}],
              "mixture": {"stages": [{"name": "general", "tokens": 1000, "weights": {"web": 1.0}}]},
              "train": {"init_from": {"path": folder}, "model": {"exits": [1, 2, 3]}, "tensor_parallel": 4}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "pipeline.cli", *args, str(path)], capture_output=True, text=True,
                              timeout=300)

    want = "train.tensor_parallel: 4 does not divide model.num_query_groups 2 (num_key_value_heads"
    validated = cli("validate")
    assert want in validated.stdout and "not: train (" in validated.stdout
    assert "model.num_attention_heads" not in validated.stdout  # 4 heads over 4 ranks: fine
    trained = cli("train")
    assert trained.returncode != 0 and want in trained.stderr
    assert not os.path.exists(tmp_path / "run")  # refused before any work
