"""A full disk or a read-only run directory stops `ruyi2 run` with a message naming the path (and the space
left), exit status 1, not a worker's traceback. Real filesystems: small tmpfs mounts (root only)."""

import os
import subprocess

import pytest
import yaml

from pipeline.cli import main
from pipeline.demo import prepare_demo


@pytest.fixture
def mount(tmp_path):
    mounted = []

    def make(name: str, options: str) -> str:
        path = tmp_path / name
        path.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
        mounted.append(path)
        return str(path)

    yield make
    for path in mounted:
        subprocess.run(["umount", str(path)], check=False)


def _recipe_on(tmp_path, run_dir: str) -> str:
    recipe = yaml.safe_load(open(prepare_demo(str(tmp_path / "demo"), "local", small=True)))
    recipe["run_dir"] = run_dir
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


@pytest.mark.slow
def test_a_full_disk_fails_naming_the_run_directory_and_the_space_left(tmp_path, mount, capsys):
    run_dir = os.path.join(mount("full", "size=256k"), "run")
    assert main(["run", _recipe_on(tmp_path, run_dir), "--to", "filter"]) == 1
    err = capsys.readouterr().err
    assert f"error: stage filter: no space left on the device writing {run_dir}" in err
    assert "MiB free" in err and "--resume" in err


def test_a_read_only_run_directory_fails_before_any_stage_naming_it(tmp_path, mount, capsys):
    run_dir = os.path.join(mount("readonly", "ro,size=1M"), "run")
    assert main(["run", _recipe_on(tmp_path, run_dir), "--to", "filter"]) == 1
    err = capsys.readouterr().err
    assert f"error: run_dir: the filesystem is read-only writing {run_dir}" in err
