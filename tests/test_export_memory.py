"""`ruyi2 export` streams: the checkpoint is read one module at a time into shards, so the export's peak
memory does not grow with the model's depth, and the folder equals the one written from the whole model."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _export_figures(tmp_path, layers: int) -> dict:
    out = tmp_path / f"figures_{layers}.json"
    subprocess.run([sys.executable, os.path.join(ROOT, "bench", "export_memory.py"), "--layers", str(layers), "--hidden", "768",
                    "--ffn", "3072", "--vocab", "16000", "--shard", "20MB", "--json", str(out)], check=True, cwd=ROOT)
    return json.loads(out.read_text())


@pytest.mark.slow
def test_the_streamed_export_memory_stays_flat_as_the_model_grows_and_writes_the_same_tensors(tmp_path):
    small, big = _export_figures(tmp_path, 4), _export_figures(tmp_path, 16)
    assert small["same_tensors"] and big["same_tensors"]  # streamed folder == the whole model's folder
    assert big["fp32_mib"] > 2 * small["fp32_mib"]
    # the whole model in memory grows with it; the stream holds one module and one shard whatever the depth
    grown = big["in_memory"]["peak_above_imports_mib"] - small["in_memory"]["peak_above_imports_mib"]
    assert grown > 0.8 * (big["fp32_mib"] - small["fp32_mib"])
    assert big["streamed"]["peak_above_imports_mib"] < 1.15 * small["streamed"]["peak_above_imports_mib"]
    assert big["streamed"]["peak_above_imports_mib"] < 0.5 * big["in_memory"]["peak_above_imports_mib"]
