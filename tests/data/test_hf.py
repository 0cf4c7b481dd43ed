"""Hugging Face datasets (resnets.data.hf): Parquet folders and save_to_disk's Arrow files read by row,
through the image folder's loader, giving the batches of the folder whose files they hold."""

import json

import pytest
import torch
from test_packed import make_folder

from resnets.data import load_dataset
from resnets.data.imagefolder import scan

pa = pytest.importorskip("pyarrow")
import pyarrow.ipc  # noqa: E402
import pyarrow.parquet  # noqa: E402


def table_of(samples, classes):
    """An Arrow table as `datasets` writes one: an Image struct (bytes, path) and a ClassLabel label."""
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "image": pa.array([{"bytes": open(p, "rb").read(), "path": p} for p, _ in samples], image),  # noqa: SIM115
            "label": pa.array([label for _, label in samples], pa.int64()),
        }
    )
    features = {"image": {"_type": "Image"}, "label": {"names": classes, "_type": "ClassLabel"}}
    return table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = make_folder(tmp_path_factory.mktemp("hf") / "pets")
    return root, *scan(root)


def test_parquet_and_save_to_disk_give_the_folder_s_batches(folder, tmp_path):
    root, classes, train, test = folder
    parquet = tmp_path / "parquet" / "data"
    parquet.mkdir(parents=True)
    half = len(train) // 2  # a split over two files, as the hub shards them
    pyarrow.parquet.write_table(table_of(train[:half], classes), parquet / "train-00000-of-00002.parquet")
    pyarrow.parquet.write_table(table_of(train[half:], classes), parquet / "train-00001-of-00002.parquet")
    pyarrow.parquet.write_table(table_of(test, classes), parquet / "test-00000-of-00001.parquet")
    arrow = tmp_path / "saved"
    for split, samples in (("train", train), ("validation", test)):
        (arrow / split).mkdir(parents=True)
        table = table_of(samples, classes)
        path = str(arrow / split / "data-00000-of-00001.arrow")
        with pa.OSFile(path, "wb") as sink, pyarrow.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    (arrow / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "validation"]}))
    options = {"batch_size": 4, "seed": 7, "num_workers": 0}
    reference = load_dataset(f"imagefolder:{root}", **options)
    for data in (f"hf:{tmp_path / 'parquet'}", f"hf:{arrow}"):
        bundle = load_dataset(data, **options)
        assert bundle.info.class_names == ["cat", "dog"] and (bundle.info.n_train, bundle.info.n_test) == (20, 8)
        for a, b in ((bundle.train, reference.train), (bundle.test, reference.test)):
            pairs = zip(a.epoch(1), b.epoch(1), strict=True)
            assert all(torch.equal(x, y) and torch.equal(k, m) for (x, k), (y, m) in pairs)
    workers = load_dataset(f"hf:{tmp_path / 'parquet'}", **{**options, "num_workers": 2})  # tables opened in each
    pairs = zip(workers.train.epoch(0), reference.train.epoch(0), strict=True)
    assert all(torch.equal(x, y) for (x, _), (y, _) in pairs)


def test_a_dataset_without_its_columns_or_splits_is_one_line(folder, tmp_path):
    _, classes, train, test = folder
    only_train = tmp_path / "a"
    only_train.mkdir()
    pyarrow.parquet.write_table(table_of(train, classes), only_train / "train.parquet")
    with pytest.raises(
        ValueError, match=r"needs a train split and a test split \(test, validation, val\); found: train"
    ):
        load_dataset(f"hf:{only_train}", batch_size=4)
    renamed = tmp_path / "b"
    renamed.mkdir()
    for split, samples in (("train", train), ("test", test)):
        table = table_of(samples, classes).rename_columns(["picture", "label"])
        pyarrow.parquet.write_table(table, renamed / f"{split}.parquet")
    with pytest.raises(ValueError, match=r"has no image column \(image or img\); its columns: picture, label"):
        load_dataset(f"hf:{renamed}", batch_size=4)


def test_a_missing_folder_is_not_taken_for_a_hub_name(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"hf:/.*/nowhere: no such folder"):
        load_dataset(f"hf:{tmp_path / 'nowhere'}", batch_size=4)


def test_a_hub_name_without_the_datasets_package_names_the_extra(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(ImportError, match=r"needs datasets, of the 'hf' extra: pip install 'resnets\[hf\]' to load"):
        load_dataset("hf:uoft-cs/cifar10", batch_size=4)
