"""Hugging Face interop: stock Qwen3 import and Ruyi2-layout export give the same logits at every exit."""

import json

import pytest
import torch
import transformers  # noqa: E402  (a test dependency: pip install -e ".[test]")
from safetensors.torch import load_file

from train_entry.hf_interop import export_ruyi_hf, mcore_to_ruyi_hf, ruyi_hf_to_mcore
from train_entry.init_from import config_from_qwen3, load_hf_qwen3
from train_entry.model import FamilialGPTModel


def _qwen3_config(layers: int):
    return transformers.Qwen3Config(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6, max_position_embeddings=64, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0}, attn_implementation="eager",
    )


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(_qwen3_config(4)).eval()
    folder = tmp_path_factory.mktemp("qwen3")
    model.save_pretrained(folder)
    return folder, model


def _familial(folder, exits=(1, 2, 3)) -> FamilialGPTModel:
    cfg = config_from_qwen3(str(folder), exits)
    model = FamilialGPTModel(cfg, cfg.transformer_config())
    load_hf_qwen3(model, cfg, str(folder))
    return model.eval()


def _inputs():
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(3))
    return ids, torch.arange(12).expand(2, 12)


def _stock_cut(hf, layers: int):
    """The stock model with only its first ``layers`` layers (then its own final norm and head)."""
    cut = transformers.Qwen3ForCausalLM(_qwen3_config(layers)).eval()
    cut.load_state_dict({k: v for k, v in hf.state_dict().items()
                         if not k.startswith("model.layers.") or int(k.split(".")[2]) < layers}, strict=False)
    return cut


def test_import_reproduces_the_stock_qwen3_logits(dist, qwen3_dir):
    """The full-depth exit is the stock model; exit e_k is the stock model cut after layer e_k (the branch
    is a copy of layer e_k, its norm and head the final ones), to 1e-5 in fp32."""
    folder, hf = qwen3_dir
    model = _familial(folder)
    ids, pos = _inputs()
    ours = model.exit_logits(ids, pos)
    with torch.no_grad():
        ref = hf(ids).logits
        assert (ours[3] - ref).abs().max().item() <= 1e-5
        for e in (1, 2):
            assert (ours[e] - _stock_cut(hf, e + 1)(ids).logits).abs().max().item() <= 1e-5, e
    # branches start as Ruyi2 builds them: branch k is a copy of backbone layer e_k
    for e in (1, 2):
        src = model.decoder.layers[e].state_dict()
        for name, t in model.exits[str(e)].layer.state_dict().items():
            if isinstance(t, torch.Tensor):
                assert torch.equal(t, src[name])


def _independent_forward(state: dict, config: dict, k: int, ids: torch.Tensor) -> torch.Tensor:
    """Exit k by stock transformers modules: layers[:e] + (eelayers[k] | layers[e]) + norms[k] + lm_head[k]."""
    e = config["early_exit_points"][k]
    last = k == len(config["early_exit_points"]) - 1
    hf = transformers.Qwen3ForCausalLM(_qwen3_config(e + 1)).eval()
    sd = {"model.embed_tokens.weight": state["model.embed_tokens.weight"], "model.norm.weight": state[f"model.norms.{k}.weight"],
          "lm_head.weight": state[f"lm_head.{k}.weight"]}
    for name, t in state.items():
        for i in range(e):
            if name.startswith(f"model.layers.{i}."):
                sd[name] = t
        src = f"model.layers.{e}." if last else f"model.eelayers.{k}."
        if name.startswith(src):
            sd[name.replace(src, f"model.layers.{e}.", 1)] = t
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    with torch.no_grad():
        return hf(ids).logits


def test_export_gives_the_same_logits_at_every_exit(dist, qwen3_dir, tmp_path):
    folder, _ = qwen3_dir
    model = _familial(folder)
    with torch.no_grad():  # make every branch differ from the backbone it was copied from
        for p in model.exits.parameters():
            p.add_(0.02 * torch.randn_like(p))
    out = export_ruyi_hf(model, model.fcfg, str(tmp_path / "ruyi"))
    config = json.load(open(f"{out}/config.json"))
    assert config["model_type"] == "ruyi_qwen3" and config["early_exit_points"] == [1, 2, 3] and config["shared_heads"] is False
    state = load_file(f"{out}/model.safetensors")
    assert {n.split(".")[2] for n in state if n.startswith("model.eelayers.")} == {"0", "1"}
    assert sorted(n for n in state if n.startswith("lm_head.")) == ["lm_head.0.weight", "lm_head.1.weight", "lm_head.2.weight"]
    ids, pos = _inputs()
    ours = model.exit_logits(ids, pos)
    for k, e in enumerate(config["early_exit_points"]):
        diff = (ours[e] - _independent_forward(state, config, k, ids)).abs().max().item()
        assert diff <= 1e-4, (e, diff)


def test_state_dict_round_trip(dist, qwen3_dir):
    folder, _ = qwen3_dir
    model = _familial(folder)
    sd = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    back = ruyi_hf_to_mcore(mcore_to_ruyi_hf(sd, model.fcfg), model.fcfg)
    assert set(back) == set(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_the_export_loads_with_automodel_and_generates_at_every_exit(dist, qwen3_dir, tmp_path):
    """Our modeling code (train_entry/hf_modeling, named by the export's auto_map) loads the Ruyi2-layout
    folder with AutoModelForCausalLM(trust_remote_code=True): every exit gives our model's logits, and greedy
    generation with the KV cache equals generation without it, at every exit and at the config's default."""
    folder, _ = qwen3_dir
    model = _familial(folder)
    with torch.no_grad():  # branches differ from the layers they were copied from
        for p in model.exits.parameters():
            p.add_(0.02 * torch.randn_like(p))
    out = export_ruyi_hf(model, model.fcfg, str(tmp_path / "ruyi"), default_exit=2)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True, torch_dtype=torch.float32).eval()
    assert type(hf).__name__ == "RuyiQwen3ForCausalLM"
    ids, pos = _inputs()
    ours = model.exit_logits(ids, pos)
    outputs = {}
    with torch.no_grad():
        for e in (1, 2, 3):
            diff = (hf(ids, early_exit_point=e).logits - ours[e]).abs().max().item()
            assert diff <= 1e-4, (e, diff)
            cached = hf.generate(ids[:1], max_new_tokens=6, do_sample=False, early_exit_point=e)
            plain = hf.generate(ids[:1], max_new_tokens=6, do_sample=False, early_exit_point=e, use_cache=False)
            assert torch.equal(cached, plain), e
            outputs[e] = cached
        assert len({tuple(o[0].tolist()) for o in outputs.values()}) == 3  # the exits generate differently
        assert torch.equal(hf.generate(ids[:1], max_new_tokens=6, do_sample=False), outputs[2])  # the default exit
        with pytest.raises(ValueError, match="exits are"):
            hf(ids, early_exit_point=0)
