"""Sources on object storage, against a real S3-compatible server (SeaweedFS's `weed mini` on 127.0.0.1): URLs
and globs listed once with sizes and ETags, every format read as from disk with the same document ids, the
filter stage's outputs byte-identical to the local run's, credentials only from the environment (never in the
run directory), and a missing bucket or an unreachable endpoint named before any work."""

from __future__ import annotations

import json
import os

import pytest
import zstandard

from pipeline.core.config import SourceConfig
from pipeline.core.sources import SourceReader
from tests.corpora import python_doc_pages, spam_assassin
from tests.s3_server import CREDENTIALS, ENDPOINT
from tests.warc_files import write_warc

pytestmark = pytest.mark.slow  # a server process per module

STORAGE = {"endpoint_url": ENDPOINT}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, s3):
    """The same corpus on disk and in bucket ``corpus``: e-mails as multi-frame .jsonl.zst, a Parquet file, and
    real HTML pages in a WARC file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    local = tmp_path_factory.mktemp("corpus")
    (local / "mail").mkdir()
    (local / "docs").mkdir()
    (local / "crawl").mkdir()
    mails = spam_assassin(limit=40)
    cctx = zstandard.ZstdCompressor()
    for part in range(2):
        lines = b"".join(json.dumps({"id": m["id"], "text": m["text"]}).encode() + b"\n" for m in mails[part::2])
        (local / "mail" / f"part-{part}.jsonl.zst").write_bytes(cctx.compress(lines[: len(lines) // 2]) + cctx.compress(lines[len(lines) // 2:]))
    pq.write_table(pa.Table.from_pylist([{"id": f"t{i}", "text": m["text"]} for i, m in enumerate(mails[:10])]),
                   local / "docs" / "table.parquet")
    pages = python_doc_pages(limit=12)
    write_warc(str(local / "crawl" / "CC-MAIN-0.warc.gz"),
               [{"url": f"https://docs.example.org/{n}", "body": b, "content_type": "text/html; charset=utf-8"} for n, b in pages])
    fs = s3.filesystem()
    fs.mkdir("corpus")
    fs.put(str(local) + "/", "corpus/", recursive=True)
    return local


def _sources(root: str, storage=None) -> list[SourceConfig]:
    extra = {"storage": storage} if storage else {}
    return [SourceConfig(name="mail", paths=[f"{root}/mail/*.jsonl.zst"], format="jsonl", domain="web", **extra),
            SourceConfig(name="docs", paths=[f"{root}/docs"], format="parquet", domain="docs", **extra),
            SourceConfig(name="crawl", paths=[f"{root}/crawl"], format="warc", domain="web", **extra)]


def test_sources_on_s3_list_once_and_read_like_the_same_files_on_disk(corpus, tmp_path):
    remote = _sources("s3://corpus", STORAGE)
    listing = remote[0].listing()
    assert listing.files == ["s3://corpus/mail/part-0.jsonl.zst", "s3://corpus/mail/part-1.jsonl.zst"]
    assert all(v["size"] > 0 and v["etag"] for v in listing.remote.values())
    listed = {s.name: s.listing().files for s in remote}
    read = {}
    for where, sources in (("local", _sources(str(corpus))), ("s3", remote)):
        reader = SourceReader(sources, str(tmp_path / where / "q"), listed=listed if where == "s3" else None)
        read[where] = [(d.id, d.text, {k: v for k, v in d.metadata.items()}) for d in reader.run(None, 0, 1)]
    assert len(read["local"]) == 3 * 40 + 10 + 12  # e-mails (40 of each kind), table rows, pages
    assert read["s3"] == read["local"]  # the same ids (names relative to the source's root), texts and metadata


def test_a_hugging_face_dataset_folder_in_a_bucket_is_read_like_the_same_folder_on_disk(s3, tmp_path):
    """The card's configs and the hub's conventions over the store's listing: the same split's files and the
    same documents (ids relative to the folder) as the folder on disk; a folder that is not there is named."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.core.hf_dataset import DatasetFolderError, dataset_files

    ds = tmp_path / "ds"
    for rel, rows in (("data/train-00000-of-00002.parquet", [{"id": "a", "text": "first shard"}]),
                      ("data/train-00001-of-00002.parquet", [{"id": "b", "text": "second shard"}]),
                      ("data/test-00000-of-00001.parquet", [{"id": "t", "text": "held out"}]),
                      ("zh/part-0.parquet", [{"id": "z", "text": "中文"}])):
        (ds / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), ds / rel)
    fs = s3.filesystem()
    fs.mkdir("hub")
    fs.put(str(ds) + "/", "hub/plain/", recursive=True)  # no card: the hub's conventions
    (ds / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n"
                                  "- config_name: zh\n  data_files: zh/*.parquet\n---\n# A dataset card\n")
    fs.put(str(ds) + "/", "hub/carded/", recursive=True)
    assert dataset_files("s3://hub/plain", split="test", options=STORAGE) == ["s3://hub/plain/data/test-00000-of-00001.parquet"]
    for folder, config in (("plain", "default"), ("carded", "default"), ("carded", "zh")):
        remote = SourceConfig(name="hf", paths=[f"s3://hub/{folder}"], format="hf_parquet", domain="web", hf_config=config,
                              storage=STORAGE)
        local = SourceConfig(name="hf", paths=[str(ds)], format="hf_parquet", domain="web", hf_config=config)
        listed = remote.listing().files
        assert [f.rsplit(f"hub/{folder}/", 1)[1] for f in listed] == [os.path.relpath(f, ds) for f in local.files()]
        docs = {}
        for where, src in (("local", local), ("s3", remote)):
            reader = SourceReader([src], str(tmp_path / f"{folder}-{config}-{where}"), listed={"hf": listed} if where == "s3" else None)
            docs[where] = [(d.id, d.text) for d in reader.run(None, 0, 1)]
        assert docs["s3"] == docs["local"] and docs["local"]
    with pytest.raises(DatasetFolderError, match="s3://hub/missing: not a folder"):
        dataset_files("s3://hub/missing", options=STORAGE)


def test_the_filter_stage_on_s3_sources_writes_the_local_runs_bytes(corpus, tmp_path):
    """`ruyi2 filter` as a user runs it, the credentials in its environment (the worker processes inherit it)."""
    import subprocess
    import sys

    import yaml

    def run(root, storage, run_dir):
        sources = [s.model_dump(exclude_none=True) for s in _sources(root, storage)]
        path = tmp_path / f"{run_dir.name}.yaml"
        path.write_text(yaml.safe_dump({"run_dir": str(run_dir), "sources": sources, "executor": {"tasks": 2, "workers": 2},
                                        "filter": {"extract": {"extractor": "resiliparse"}},
                                        "mixture": {"stages": [{"name": "general", "tokens": 1000, "weights": {"web": 1.0}}]}}))
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", "filter", str(path)], capture_output=True, text=True,
                              timeout=600, env=dict(os.environ), cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert done.returncode == 0, done.stderr[-3000:]
        return run_dir / "filter"

    local, remote = run(str(corpus), None, tmp_path / "local"), run("s3://corpus", STORAGE, tmp_path / "s3")
    def files(folder):
        return sorted(os.listdir(folder)) if os.path.isdir(folder) else []

    assert files(local / "output") and files(local / "removed")
    for sub in ("output", "removed", "quarantine"):
        names = files(local / sub)
        assert names == files(remote / sub)
        for name in names:
            assert (local / sub / name).read_bytes() == (remote / sub / name).read_bytes(), (sub, name)
    profile = json.loads((remote / "profile.json").read_text())
    assert profile["store_retries"] == 0  # counted (none here: the store stayed up)
    manifest = json.loads((tmp_path / "s3" / "manifest.json").read_text())
    assert manifest["inputs"]["mail"]["entries"][0][0] == "s3://corpus/mail/part-0.jsonl.zst"
    for dirpath, _, files in os.walk(tmp_path / "s3"):  # the secret is in the environment only
        for f in files:
            data = open(os.path.join(dirpath, f), "rb").read()
            assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"].encode() not in data, f


def _cli(*args: str):
    """`ruyi2 ARGS` in its own process, as a user runs it: the credentials in its environment reach its workers (a
    worker pool this test process started earlier would not have them)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, timeout=900,
                          env=dict(os.environ), cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_ruyi2_add_takes_objects_and_gives_the_increment_the_local_add_gives(corpus, tmp_path):
    """A run over the bucket's first mail file, then `ruyi2 add RECIPE mail=s3://...part-1`: the increment reads the
    object and writes what the same add of the file on disk writes; adding a local file to it is refused."""
    import yaml

    def run(root, storage, name):
        source = {"name": "mail", "paths": [f"{root}/mail/part-0.jsonl.zst"], "format": "jsonl", "domain": "web"}
        recipe = tmp_path / f"{name}.yaml"
        recipe.write_text(yaml.safe_dump({
            "run_dir": str(tmp_path / name), "sources": [source | ({"storage": storage} if storage else {})],
            "executor": {"tasks": 1, "workers": 1}, "decontam": {"benchmarks": ["mmlu"]},
            "mixture": {"stages": [{"name": "general", "tokens": 1000, "weights": {"web": 1.0}}]}}))
        for args in (["run", str(recipe), "--to", "mix"], ["add", str(recipe), f"mail={root}/mail/part-1.jsonl.zst"]):
            done = _cli(*args)
            assert done.returncode == 0, done.stderr[-3000:]
        return recipe, tmp_path / name / "increments" / "001"

    _, local = run(str(corpus), None, "local")
    recipe, remote = run("s3://corpus", STORAGE, "s3")
    with open(remote / "increment.json") as f:
        assert json.load(f)["added"] == {"mail": ["s3://corpus/mail/part-1.jsonl.zst"]}
    for stage in ("filter", "dedup", "decontam"):
        for sub in ("output", "removed"):
            names = sorted(os.listdir(local / stage / sub)) if (local / stage / sub).is_dir() else []
            assert names == (sorted(os.listdir(remote / stage / sub)) if (remote / stage / sub).is_dir() else [])
            for n in names:
                assert (local / stage / sub / n).read_bytes() == (remote / stage / sub / n).read_bytes(), (stage, sub, n)
    with open(local / "filter" / "stats.json") as f, open(remote / "filter" / "stats.json") as g:
        local_stats = json.load(f)["sources"]
        assert local_stats == json.load(g)["sources"]
    assert local_stats["mail"]["in"]["docs"] == 60 and local_stats["mail"]["kept"]["docs"] > 0
    assert (local / "tokenize" / "mail_text_document.bin").read_bytes() == (remote / "tokenize" / "mail_text_document.bin").read_bytes()
    mixed = _cli("add", str(recipe), f"mail={corpus}/mail/part-1.jsonl.zst")
    assert mixed.returncode != 0 and "would mix local files and objects" in mixed.stderr


def test_a_store_restarting_mid_read_is_waited_out_and_the_retries_are_counted(s3, tmp_path):
    """The source reader paused between two ranged GETs of a 3-block object while the server is down for 3 s:
    botocore's adaptive retries wait it out, every record is read, and the reader's stats count the retries."""
    import base64
    import random
    import threading
    import time

    from pipeline.core.sources import STORE_RETRIES

    rng = random.Random(0)
    lines = [json.dumps({"id": f"r{i}", "text": base64.b64encode(rng.randbytes(1500)).decode()}) + "\n" for i in range(16000)]
    blob = zstandard.ZstdCompressor().compress("".join(lines).encode())
    assert len(blob) > 2 * (8 << 20)  # several 8 MiB blocks: the reader has more to fetch after the first
    fs = s3.filesystem()
    fs.mkdir("restart")
    fs.pipe_file("restart/big.jsonl.zst", blob)
    src = SourceConfig(name="big", paths=["s3://restart/big.jsonl.zst"], format="jsonl", domain="web", storage=STORAGE)
    reader = SourceReader([src], str(tmp_path / "q"), listed={"big": src.files()})
    docs = reader.run(None, 0, 1)
    first = [next(docs) for _ in range(100)]  # the first block is in memory, the next GET is still to come
    s3.stop()
    threading.Thread(target=lambda: (time.sleep(3), s3.start())).start()
    rest = list(docs)
    assert [d.id for d in first + rest] == [f"big/r{i}" for i in range(16000)]
    assert reader.stats[STORE_RETRIES].total >= 1


def test_a_store_failure_while_reading_fails_the_task_instead_of_quarantining_the_input(corpus, tmp_path):
    """The store, not the input, failing (here: the endpoint gone after the listing) stops the task with the URL
    named, so the executor retries it; quarantining the object as unreadable would silently lose the corpus on a
    node without credentials or network."""
    from pipeline.core.storage import StorageInputError

    (source,) = _sources("s3://corpus", {"endpoint_url": "http://127.0.0.1:9", "max_attempts": 1})[:1]
    reader = SourceReader([source], str(tmp_path / "q"), listed={"mail": ["s3://corpus/mail/part-0.jsonl.zst"]})
    with pytest.raises(StorageInputError, match=r"s3://corpus/mail/part-0.jsonl.zst: the endpoint cannot be reached"):
        list(reader.run(None, 0, 1))
    assert not os.path.exists(tmp_path / "q")  # nothing quarantined


def test_a_missing_bucket_or_an_unreachable_endpoint_is_named_before_any_work(corpus, tmp_path):
    from pipeline.recipe import RecipeError, parse_recipe

    def recipe(url, storage):
        return {"run_dir": str(tmp_path / "run"), "mixture": {"stages": [{"name": "g", "tokens": 10, "weights": {"web": 1.0}}]},
                "sources": [{"name": "web", "paths": [url], "format": "jsonl", "domain": "web", "storage": storage}]}

    with pytest.raises(RecipeError, match=r"s3://no-such-bucket/x: no such bucket or object"):
        parse_recipe(recipe("s3://no-such-bucket/x", STORAGE))
    with pytest.raises(RecipeError, match=r"s3://corpus/mail: the endpoint cannot be reached: check storage.endpoint_url"):
        parse_recipe(recipe("s3://corpus/mail", {"endpoint_url": "http://127.0.0.1:9", "max_attempts": 1}))
    with pytest.raises(RecipeError, match=r"sources\[0\].storage.secret: unknown key"):  # no place for a secret
        parse_recipe(recipe("s3://corpus/mail", {"endpoint_url": ENDPOINT, "secret": "x"}))
    # no credentials anywhere (environment, shared files, instance metadata): named, with the remedy
    mp = pytest.MonkeyPatch()
    for key in CREDENTIALS:
        mp.delenv(key, raising=False)
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    mp.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
    try:
        with pytest.raises(RecipeError, match=r"s3://corpus/mail: no credentials: set AWS_ACCESS_KEY_ID"):
            parse_recipe(recipe("s3://corpus/mail", {"endpoint_url": ENDPOINT, "region": "eu-north-1", "max_attempts": 1}))
    finally:
        mp.undo()
    assert not os.path.exists(tmp_path / "run")


def test_a_paths_file_in_the_bucket_names_the_objects(corpus, tmp_path, s3):
    """Inputs too many to list: a file of object URLs, itself an object, read once."""
    from pipeline.recipe import parse_recipe

    s3.filesystem().pipe("corpus/lists/mail.txt", b"s3://corpus/mail/part-1.jsonl.zst\n")
    recipe = parse_recipe({"run_dir": str(tmp_path / "run"), "mixture": {"stages": [{"name": "g", "tokens": 10, "weights": {"web": 1.0}}]},
                           "sources": [{"name": "mail", "paths_file": "s3://corpus/lists/mail.txt", "format": "jsonl",
                                        "domain": "web", "storage": STORAGE}]})
    assert recipe.sources[0].files() == ["s3://corpus/mail/part-1.jsonl.zst"]


@pytest.fixture(scope="module")
def ray_cluster(s3):
    """Two Ray nodes on 127.0.0.1, started after the credentials are in the environment: the nodes' workers get
    them as a node gets its own (environment or instance role), never through the task's arguments."""
    from tests.ray_cluster import two_node_cluster

    with two_node_cluster() as cluster:
        yield cluster


def test_the_filter_stage_as_ray_tasks_reads_the_bucket_on_both_nodes(corpus, ray_cluster, tmp_path):
    """The filter stage on two Ray nodes with its sources in the bucket (no input file on any local disk):
    the same output bytes as the local executor over the same files on disk."""
    import glob

    import ray

    from pipeline.recipe import parse_recipe
    from pipeline.runner import run_stages

    def recipe(root, storage, run_dir, executor):
        return parse_recipe({"run_dir": str(run_dir), "sources": [s.model_dump(exclude_none=True) for s in _sources(root, storage)],
                             "executor": executor, "filter": {"extract": {"extractor": "resiliparse"}},
                             "mixture": {"stages": [{"name": "general", "tokens": 1000, "weights": {"web": 1.0}}]}})

    run_stages(recipe(str(corpus), None, tmp_path / "local", {"tasks": 2, "workers": 2}), ["filter"], quiet=True)
    ray_executor = {"kind": "ray", "tasks": 2, "ray": {"address": ray_cluster.address, "mem_per_cpu_gb": 0.5}}
    run_stages(recipe("s3://corpus", STORAGE, tmp_path / "ray", ray_executor), ["filter"], quiet=True)
    nodes = {node for path in glob.glob(str(tmp_path / "ray" / "filter" / "logs" / "**" / "ray_nodes.json"), recursive=True)
             for node in json.load(open(path)).values()}
    assert nodes == {n["NodeID"] for n in ray.nodes()}  # both nodes read from the bucket
    for sub in ("output", "removed"):
        local, remote = tmp_path / "local" / "filter" / sub, tmp_path / "ray" / "filter" / sub
        assert sorted(os.listdir(local)) == sorted(os.listdir(remote))
        for name in os.listdir(local):
            assert (local / name).read_bytes() == (remote / name).read_bytes(), (sub, name)
