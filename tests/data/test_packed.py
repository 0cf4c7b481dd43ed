"""Packed datasets (resnets.data.shards): WebDataset-format shards read by sample index, from a folder or
over HTTP, giving the batches of the image folder they were packed from, bitwise; broken shards refused by name."""

import functools
import hashlib
import http.server
import io
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from resnets.cli import main
from resnets.data import load_dataset
from resnets.data import shards as shards_module
from resnets.data.shards import INDEX, ShardError, ShardSet, ShardUnavailable, iter_shard, pack_dataset
from resnets.train import TrainConfig, train


def make_folder(root: Path) -> Path:
    """A two-class image folder of JPEGs and PNGs of several sizes (10 training and 4 test images a class)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("val", 4)):
        for k, name in enumerate(("cat", "dog")):
            for i in range(n):
                pixels = rng.integers(0, 255, (20 + i, 24 + 2 * k, 3), dtype=np.uint8)
                pixels[..., k] = 255  # a colour per class, something to learn
                path = root / split / name / f"{i}.{'jpg' if i % 2 else 'png'}"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(path)
    return root


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """(folder, its shards): small shards, so that each split spans several."""
    root = make_folder(tmp_path_factory.mktemp("folder") / "pets")
    out = tmp_path_factory.mktemp("packed") / "pets-shards"
    pack_dataset(f"imagefolder:{root}", out, shard_bytes=4096, stream=open("/dev/null", "w"))  # noqa: SIM115
    return root, out


class Server:
    """A loopback HTTP server of one folder; `fail` answers that many requests with 503 first."""

    def __init__(self, folder: Path) -> None:
        self.fail = 0
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                if outer.fail:
                    outer.fail -= 1
                    self.send_error(503)
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=folder))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(packed, tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(shards_module.time, "sleep", lambda s: None)  # the back-off, without the wait
    server = Server(packed[1])
    yield server
    server.close()


def test_a_pack_holds_every_file_as_it_is_in_the_folder_s_order(packed):
    root, out = packed
    index = json.loads((out / INDEX).read_text())
    assert index["classes"] == ["cat", "dog"] and index["skipped"] == []
    train, val = index["splits"]["train"], index["splits"]["val"]
    assert len(train["samples"]) == 20 and len(val["samples"]) == 8 and len(train["shards"]) > 2
    from resnets.data.imagefolder import scan

    _, folder_train, folder_test = scan(root)
    for split, folder in ((train, folder_train), (val, folder_test)):
        members = dict(m for shard in split["shards"] for m in iter_shard(out / shard["name"]))
        for (name, _, _, _, label), (path, folder_label) in zip(split["samples"], folder, strict=True):
            assert label == folder_label
            assert members[name] == Path(path).read_bytes()  # the file's bytes, not re-encoded
            assert members[name.rsplit(".", 1)[0] + ".cls"] == str(label).encode()  # WebDataset's label member
        for shard in split["shards"]:
            data = (out / shard["name"]).read_bytes()
            assert len(data) == shard["size"] and hashlib.sha256(data).hexdigest() == shard["sha256"]


def test_shards_give_the_folder_s_batches_locally_and_over_http(packed, served):
    root, out = packed
    options = {"batch_size": 4, "seed": 5, "num_workers": 0}
    bundles = [
        load_dataset(f"imagefolder:{root}", **options),
        load_dataset(f"shards:{out}", **options),
        load_dataset(f"shards:{served.url}", **options),
    ]
    for epoch in (0, 1):
        batches = [list(b.train.epoch(epoch)) for b in bundles]
        for other in batches[1:]:
            assert all(
                torch.equal(x, y) and torch.equal(a, b) for (x, a), (y, b) in zip(batches[0], other, strict=True)
            )
    tests = [list(b.test.epoch(0)) for b in bundles]
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(tests[0], tests[2], strict=True))
    assert served.requests.count(f"/{INDEX}") == 1
    load_dataset(f"shards:{served.url}", **options)  # a second run: the shards come from the cache
    assert served.requests.count(f"/{INDEX}") == 2
    assert len([r for r in served.requests if r.endswith(".tar")]) == len(list(out.glob("*.tar")))


def test_a_run_on_shards_is_the_run_on_the_folder(packed, served, tmp_path):
    root, out = packed

    def run(data: str, name: str) -> tuple[list, dict]:
        config = TrainConfig(
            model="resnet8", data=data, image_size=16, test_size=16, test_resize=18, batch_size=4, epochs=1,
            num_workers=0, device="cpu", out=str(tmp_path / name), seed=3, log_every=1,
        )  # fmt: skip
        result = train(config)
        records = [{k: r[k] for k in ("train_loss", "test_err", "train_err")} for r in result.history]
        return records, load_file(tmp_path / name / "model.safetensors")

    folder = run(f"imagefolder:{root}", "folder")
    for data, name in ((f"shards:{out}", "local"), (f"shards:{served.url}", "http")):
        records, weights = run(data, name)
        assert records == folder[0]
        assert weights.keys() == folder[1].keys()
        assert all(torch.equal(weights[k], folder[1][k]) for k in weights)


def test_each_of_two_processes_reads_from_http_shards_its_rows_of_the_folder_s_batches(packed, served):
    """What each process of a 2-process group reads (its rows of every global training batch, its part of
    the test set): from shards over HTTP, the folder's, bitwise, and together the one-process batches. The
    group trains on exactly these inputs; the test below (slow) runs it under torchrun end to end."""
    root, _ = packed
    options = {"batch_size": 4, "seed": 5, "num_workers": 0}
    whole = [x for x, _ in load_dataset(f"imagefolder:{root}", **options).train.epoch(1)]
    shares = []
    for rank in (0, 1):
        folder, http = (
            load_dataset(data, **options, shard=(rank, 2)) for data in (f"imagefolder:{root}", f"shards:{served.url}")
        )
        mine = [list(b.train.epoch(1)) for b in (folder, http)]
        assert all(torch.equal(x, y) and torch.equal(a, b) for (x, a), (y, b) in zip(*mine, strict=True))
        tests = [list(b.test.epoch(0)) for b in (folder, http)]
        assert all(torch.equal(x, y) for (x, _), (y, _) in zip(*tests, strict=True))
        shares.append([x for x, _ in mine[1]])
    assert all(torch.equal(torch.cat(pair), w) for *pair, w in zip(*shares, whole, strict=True))


def test_a_truncated_or_missing_shard_is_refused_by_name(packed, tmp_path):
    _, out = packed
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in out.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    shard = copy / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[:-700])
    with pytest.raises(ShardError, match=r"shard .*train-000001\.tar holds .* bytes, not the .* of its index"):
        load_dataset(f"shards:{copy}", batch_size=4)
    shard.unlink()
    with pytest.raises(ShardError, match=r"shard .*train-000001\.tar is missing"):
        load_dataset(f"shards:{copy}", batch_size=4)
    (copy / INDEX).write_text("{}")
    with pytest.raises(ShardError, match="is not a resnets shard index"):
        ShardSet(copy)
    with pytest.raises(FileNotFoundError, match=r"holds no index\.json: not a packed dataset"):
        ShardSet(tmp_path)


def test_over_http_a_failing_server_is_retried_then_named_and_a_corrupt_shard_refused(packed, served, tmp_path):
    _, out = packed
    served.fail = 2  # two 503s, then the index: retried with back-off
    assert ShardSet(served.url).classes == ["cat", "dog"]
    served.fail = 100
    with pytest.raises(ShardUnavailable, match=rf"cannot fetch {served.url}index.json after 4 tries: .*Unavailable"):
        ShardSet(served.url)
    served.fail = 0
    broken = tmp_path / "served"
    broken.mkdir()
    for f in out.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    data = bytearray((broken / "val-000000.tar").read_bytes())
    data[600] ^= 0xFF  # one bit of an image flipped: the size is right, the checksum is not
    (broken / "val-000000.tar").write_bytes(bytes(data))
    other = Server(broken)
    try:
        with pytest.raises(ShardError, match=r"shard http://.*/val-000000\.tar is corrupt"):
            load_dataset(f"shards:{other.url}", batch_size=4)
    finally:
        other.close()


def test_pack_from_the_command_line_and_its_errors(packed, tmp_path, capsys):
    root, out = packed
    target = tmp_path / "again"
    assert main(["pack", f"imagefolder:{root}", "--out", str(target), "--shard-size", "1"]) == 0
    assert "train from it with: resnets train --data shards:" in capsys.readouterr().out
    mine, theirs = (json.loads((folder / INDEX).read_text())["splits"] for folder in (target, out))
    for split in mine:
        pairs = zip(mine[split]["samples"], theirs[split]["samples"], strict=True)
        assert all([s[0], s[4]] == [o[0], o[4]] for s, o in pairs)  # the same samples, in other shards
    assert main(["pack", f"imagefolder:{root}", "--out", str(target)]) == 2
    assert "already holds a packed dataset" in capsys.readouterr().err
    assert main(["pack", "mnist", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "resnets: error: cannot pack 'mnist': one of imagefolder:PATH, fashion-mnist, cifar10, cifar100"
    assert not (tmp_path / "x").exists()


@pytest.mark.slow  # two torchrun groups: 24 s on 2 cores (CI runs it with make test-slow)
def test_two_processes_on_shards_over_http_are_the_two_processes_on_the_folder(packed, served, tmp_path):
    """Under torchrun (gloo, 2 processes), each process reading its rows of every global batch: the run
    from the shards served over HTTP is the run from the folder, bitwise (metrics and weights)."""
    from group import records, train_ok

    root, _ = packed
    common = [
        "--model", "resnet8", "--image-size", "16", "--test-size", "16", "--test-resize", "18", "-b", "4",
        "--epochs", "1", "--num-workers", "0", "--device", "cpu", "--seed", "3", "--log-every", "1",
    ]  # fmt: skip
    runs = {}
    for name, data in (("folder", f"imagefolder:{root}"), ("http", f"shards:{served.url}")):
        train_ok(2, [*common, "--data", data, "--out", str(tmp_path / name)])
        runs[name] = (records(tmp_path / name), load_file(tmp_path / name / "model.safetensors"))
    keys = ("train_loss", "train_err", "test_err", "test_top5_err")
    assert [{k: r[k] for k in keys} for r in runs["http"][0]] == [{k: r[k] for k in keys} for r in runs["folder"][0]]
    assert all(torch.equal(runs["http"][1][k], v) for k, v in runs["folder"][1].items())


def test_shards_on_an_object_store_read_through_fsspec(packed, tmp_path, monkeypatch):
    """s3://, gs://, ... go through fsspec: its in-memory store stands in for one here."""
    fsspec = pytest.importorskip("fsspec")
    root, out = packed
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    store = fsspec.filesystem("memory")
    for f in out.iterdir():
        store.pipe(f"/bucket/pets/{f.name}", f.read_bytes())
    try:
        options = {"batch_size": 4, "seed": 2, "num_workers": 0}
        remote = list(load_dataset("shards:memory://bucket/pets/", **options).train.epoch(0))
        folder = list(load_dataset(f"imagefolder:{root}", **options).train.epoch(0))
        assert all(torch.equal(x, y) for (x, _), (y, _) in zip(remote, folder, strict=True))
        monkeypatch.setattr(shards_module.time, "sleep", lambda s: None)
        with pytest.raises(ShardUnavailable, match=r"cannot fetch memory://bucket/none/index\.json after 1 tries"):
            ShardSet("memory://bucket/none/")
    finally:
        store.rm("/bucket", recursive=True)


def test_without_fsspec_an_object_store_is_one_line_naming_the_extra(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_fsspec(name, *args, **kwargs):
        if name == "fsspec":
            raise ImportError("No module named 'fsspec'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_fsspec)
    with pytest.raises(ImportError, match=r"needs fsspec, of the 'remote' extra: pip install 'resnets\[remote\]' to"):
        ShardSet("s3://bucket/imagenet-shards/")


def test_the_cache_keeps_under_its_cap_evicting_the_least_recently_used(packed, served, tmp_path, monkeypatch):
    _, out = packed
    total = sum(p.stat().st_size for p in out.glob("*.tar"))
    old = tmp_path / "cache" / "shards-0000000000000000"
    old.mkdir(parents=True)
    (old / "train-000000.tar").write_bytes(b"x" * total)  # another dataset's shard, used long ago
    os.utime(old / "train-000000.tar", (0, 0))
    monkeypatch.setenv("RESNETS_SHARD_CACHE_GB", str(1.5 * total / 1024**3))
    load_dataset(f"shards:{served.url}", batch_size=4)
    assert not (old / "train-000000.tar").exists()  # evicted to make room
    cached = [p for p in (tmp_path / "cache").glob("shards-*/*.tar")]
    assert sum(p.stat().st_size for p in cached) == total
    monkeypatch.setenv("RESNETS_SHARD_CACHE_GB", str(0.5 * total / 1024**3))
    with pytest.raises(ValueError, match=r"the dataset's shards take .* GB, more than RESNETS_SHARD_CACHE_GB allows"):
        load_dataset(f"shards:{served.url}", batch_size=4)
    monkeypatch.setenv("RESNETS_SHARD_CACHE_GB", "lots")
    with pytest.raises(ValueError, match=r"RESNETS_SHARD_CACHE_GB='lots' must be a positive number of gigabytes"):
        load_dataset(f"shards:{served.url}", batch_size=4)


def test_a_source_file_that_cannot_be_read_is_left_out_and_listed(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "pets")
    gone = root / "train" / "dog" / "3.jpg"
    real = Path.read_bytes

    def read_bytes(self):
        if self == gone:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    stream = io.StringIO()
    pack_dataset(f"imagefolder:{root}", tmp_path / "out", stream=stream)
    index = json.loads((tmp_path / "out" / INDEX).read_text())
    assert index["skipped"] == [{"file": "train/dog/3.jpg", "error": "Permission denied"}]
    assert len(index["splits"]["train"]["samples"]) == 19
    assert "warning: 1 unreadable files left out (first: train/dog/3.jpg: Permission denied)" in stream.getvalue()


def test_a_stopped_pack_leaves_no_index_and_a_new_pack_replaces_it(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "pets")
    real = shards_module._ShardWriter.add
    calls = []

    def stop_at_the_seventh(self, *args):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return real(self, *args)

    monkeypatch.setattr(shards_module._ShardWriter, "add", stop_at_the_seventh)
    with pytest.raises(KeyboardInterrupt):
        pack_dataset(f"imagefolder:{root}", tmp_path / "out", shard_bytes=4096, stream=io.StringIO())
    assert not (tmp_path / "out" / INDEX).exists()  # not a packed dataset: nothing can train from it
    with pytest.raises(FileNotFoundError, match=r"holds no index\.json"):
        ShardSet(tmp_path / "out")
    monkeypatch.setattr(shards_module._ShardWriter, "add", real)
    pack_dataset(f"imagefolder:{root}", tmp_path / "out", shard_bytes=4096, stream=io.StringIO())
    index = json.loads((tmp_path / "out" / INDEX).read_text())
    listed = {s["name"] for split in index["splits"].values() for s in split["shards"]}
    assert {p.name for p in (tmp_path / "out").iterdir()} == listed | {INDEX}  # no temporary left
    assert len(ShardSet(tmp_path / "out").samples("train")) == 20


def test_processes_sharing_a_cache_fetch_each_shard_once(packed, served):
    """The processes of a machine (threads here, each its own ShardSet) fetch at once into one cache:
    a lock per shard lets one download it while the others wait and read it from the cache."""
    _, out = packed
    sets = [ShardSet(served.url) for _ in range(3)]
    threads = [threading.Thread(target=s.prepare, args=("train",)) for s in sets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    fetched = [r for r in served.requests if r.endswith(".tar")]
    assert sorted(fetched) == sorted(f"/{p.name}" for p in out.glob("train-*.tar"))  # each once
    assert sets[0].prepare("train") == sets[2].prepare("train")
