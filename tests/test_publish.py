"""The handoff to object storage (`mixture.publish`, `train.data_from: published`) against a real S3-compatible
server (SeaweedFS's `weed mini` on 127.0.0.1): the mix stage publishes every token prefix its blends name, with
blends naming the published prefixes and the manifest last; a second publish uploads nothing; a prefix another
run or a person filled is refused before any work; a killed upload leaves no object; an outage mid-publish is
retried and counted; and training reads the published prefixes through megatron-core to the local run's losses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from pipeline.cli import main
from pipeline.core.publish import CLAIM, MANIFEST, Publisher, sha256_of
from tests.conftest import write_demo_recipe
from tests.s3_server import CREDENTIALS, ENDPOINT

pytestmark = pytest.mark.slow  # a server process per module, the demo's data stages, two trainings

BUCKET = "handoff"
STORAGE = {"endpoint_url": ENDPOINT}


def _recipe(demo_run, folder, url: str, run_dir: str, name: str = "recipe.yaml", **train) -> str:
    mixture = demo_run["recipe"].mixture.model_dump(mode="json") | {"publish": {"url": url, "storage": STORAGE}}
    sections = {"train": demo_run["recipe"].train.model_dump(mode="json") | train} if train else {}
    return write_demo_recipe(demo_run, str(folder), name, run_dir=run_dir, mixture=mixture, **sections)


@pytest.fixture(scope="module")
def bucket(s3):
    s3.filesystem().mkdir(BUCKET)
    return BUCKET


@pytest.fixture(scope="module")
def published(demo_run, bucket, tmp_path_factory):
    folder = tmp_path_factory.mktemp("publish")
    run_dir = str(folder / "run")
    url = f"s3://{BUCKET}/demo/v1"
    path = _recipe(demo_run, folder, url, run_dir)
    assert main(["run", path, "--to", "mix"]) == 0
    mix = os.path.join(run_dir, "mix")
    with open(os.path.join(mix, "stats.json")) as f:
        stats = json.load(f)
    with open(os.path.join(mix, "publish.json")) as f:
        activity = json.load(f)
    return {"path": path, "run_dir": run_dir, "url": url, "stats": stats, "activity": activity, "folder": folder}


def _key(url: str) -> str:
    return url.split("://", 1)[1]


def test_the_mix_stage_publishes_every_prefix_its_blends_name_with_the_manifest_last(published, s3):
    fs = s3.filesystem()
    pub = published["stats"]["published"]
    manifest = json.loads(fs.cat_file(_key(pub["manifest"])))
    local_blends = published["stats"]["data_args"]
    named = set()
    for stage, splits in local_blends.items():
        for split, local in splits.items():
            if local is None:
                continue
            text = open(local).read().split()
            published_text = open(pub["data_args"][stage][split]).read().split()
            assert published_text[0::2] == text[0::2]  # the same weights, in the same order
            assert published_text[1::2] == [pub["prefixes"][p] for p in text[1::2]]
            assert fs.cat_file(_key(manifest["blends"][stage][split])).split() == [t.encode() for t in published_text]
            named |= {p.split(f"{published['url']}/", 1)[1] + ext for p in published_text[1::2] for ext in (".bin", ".idx")}
    tokens = {k for k in manifest["objects"] if not k.startswith("mix/")}
    assert tokens == named and len(tokens) >= 4
    for rel, info in manifest["objects"].items():
        remote = fs.cat_file(f"{_key(published['url'])}/{rel}")
        assert len(remote) == info["size"] and __import__("hashlib").sha256(remote).hexdigest() == info["sha256"]
        if not rel.startswith("mix/"):
            assert remote == open(os.path.join(published["run_dir"], rel), "rb").read()
    written = {info["name"]: info["LastModified"] for info in fs.find(_key(published["url"]), detail=True).values()}
    assert max(written.values()) == written[f"{_key(published['url'])}/{MANIFEST}"]  # written last
    assert published["activity"]["uploaded"] == pub["objects"] == len(manifest["objects"])
    assert published["activity"]["skipped"] == 0


def test_no_file_of_the_run_or_object_of_the_publish_holds_the_secret(published, s3):
    secret = CREDENTIALS["AWS_SECRET_ACCESS_KEY"].encode()
    for folder, _, files in os.walk(published["run_dir"]):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                assert secret not in f.read(), os.path.join(folder, name)
    fs = s3.filesystem()
    for key in fs.find(_key(published["url"])):
        assert secret not in fs.cat_file(key), key


def test_publishing_again_uploads_nothing_and_writes_the_same_stats(published):
    stats_path = os.path.join(published["run_dir"], "mix", "stats.json")
    before = open(stats_path, "rb").read()
    assert main(["mix", published["path"]]) == 0
    with open(os.path.join(published["run_dir"], "mix", "publish.json")) as f:
        again = json.load(f)
    assert again["uploaded"] == 0 and again["skipped"] == published["stats"]["published"]["objects"]
    assert open(stats_path, "rb").read() == before


def test_a_prefix_another_run_or_a_person_filled_is_refused_before_any_work(published, demo_run, s3, tmp_path, capsys):
    other = _recipe(demo_run, tmp_path, published["url"], str(tmp_path / "other_run"))
    assert main(["run", other, "--to", "mix"]) != 0
    assert "published by another run" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "other_run" / "filter")  # refused before the first stage
    s3.filesystem().pipe_file(f"{BUCKET}/someone/notes.txt", b"not ruyi2's")
    foreign = _recipe(demo_run, tmp_path, f"s3://{BUCKET}/someone", str(tmp_path / "foreign_run"))
    assert main(["run", foreign, "--to", "mix"]) != 0
    assert f"no {CLAIM}" in capsys.readouterr().err
    assert s3.filesystem().cat_file(f"{BUCKET}/someone/notes.txt") == b"not ruyi2's"


KILLED_UPLOAD = """
import sys
from pipeline.core.publish import Publisher
pub = Publisher(sys.argv[1], {"endpoint_url": sys.argv[2]}, owner="killed")
pub.claim()
put = pub.fs.put_file
def announce(*a, **k):
    print("uploading", flush=True)
    return put(*a, **k)
pub.fs.put_file = announce
pub.upload(sys.argv[3], "big.bin")
print("finished", flush=True)
"""


def test_a_killed_upload_leaves_no_object_and_a_resumed_publish_completes(s3, bucket, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(400 << 20))
    url = f"s3://{BUCKET}/killed"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_UPLOAD, url, ENDPOINT, str(big)], stdout=subprocess.PIPE,
                            text=True, start_new_session=True, env=os.environ | CREDENTIALS)
    assert proc.stdout.readline().strip() == "uploading"
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    fs = s3.filesystem()
    fs.invalidate_cache()
    assert sorted(k.rsplit("/", 1)[1] for k in fs.find(_key(url))) == [CLAIM]  # no partial object under any key
    pub = Publisher(url, STORAGE, owner="killed")
    pub.claim()
    assert pub.upload(str(big), "big.bin")["sha256"] == sha256_of(str(big))
    assert pub.stats.uploaded == 1
    fs.invalidate_cache()
    assert fs.info(f"{_key(url)}/big.bin")["size"] == big.stat().st_size
    assert fs.metadata(f"{_key(url)}/big.bin")["sha256"] == sha256_of(str(big))


def test_an_outage_mid_publish_is_retried_and_counted(s3, bucket, tmp_path):
    files = []
    for i in range(60):
        files.append(tmp_path / f"part-{i:02d}.bin")
        files[-1].write_bytes(os.urandom(1 << 20))
    # botocore's own attempts off: the outage reaches the object-level retries that the stats count
    pub = Publisher(f"s3://{BUCKET}/outage", STORAGE | {"max_attempts": 1}, owner="outage", attempts=8)
    pub.claim()
    done: list = []

    def publish():
        for f in files:
            pub.upload(str(f), f.name)
        done.append(True)

    worker = threading.Thread(target=publish)
    worker.start()
    while pub.stats.uploaded < 5:
        time.sleep(0.05)
    s3.stop()
    time.sleep(3)
    s3.start()
    worker.join(timeout=300)
    assert done and pub.stats.uploaded == len(files)
    assert pub.stats.retries >= 1
    fs = s3.filesystem()
    for f in files:
        assert fs.cat_file(f"{BUCKET}/outage/{f.name}") == f.read_bytes()


def test_training_reads_the_published_prefixes_to_the_local_runs_losses(published, demo_run, tmp_path):
    import shutil

    from pipeline.core.layout import RunLayout
    from pipeline.core.stage import StageContext
    from pipeline.recipe import load_recipe
    from train_entry.stage import TrainStage

    layout = RunLayout(published["run_dir"])
    local = TrainStage().run(StageContext(load_recipe(published["path"]), layout))
    local_losses = [json.loads(line)["loss"] for line in open(local["metrics"])]
    shutil.move(layout.stage("train"), str(tmp_path / "train_local"))
    from_store = _recipe(demo_run, published["folder"], published["url"], published["run_dir"], "from_store.yaml",
                         data_from="published")
    remote = TrainStage().run(StageContext(load_recipe(from_store), layout))
    assert [json.loads(line)["loss"] for line in open(remote["metrics"])] == local_losses
    assert remote["eval"] == local["eval"]
    cached = [os.path.join(d, n) for d, _, names in os.walk(os.path.join(layout.stage("train"), "dataset_cache", "object_index"))
              for n in names]
    assert cached and all(n.endswith(".idx") for n in cached)  # the indexes are cached, the data is read remotely
