"""CIFAR from generated archives in the release's exact format; malicious pickles are refused."""

import dataclasses
import hashlib
import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch
from datagen import cifar_batch, make_cifar, pickle_bytes, python2_batch, tar_gz

from resnets.data import cifar as cifar_module
from resnets.data import load_dataset
from resnets.data.cifar import RELEASES, load_arrays, locate, safe_extract, unpickle


@pytest.fixture
def cifar10(tmp_path):
    return make_cifar(tmp_path / "data")


def test_the_loader_reproduces_the_pixels_in_chw_order(cifar10):
    (images, labels), (test_images, test_labels), names = load_arrays("cifar10", cifar10["folder"], download=False)
    assert images.shape == (20, 3, 32, 32) and images.dtype == torch.uint8 and test_images.shape == (10, 3, 32, 32)
    assert torch.equal(images, torch.from_numpy(cifar10["train"])) and labels.tolist() == cifar10["train_labels"]
    assert (
        torch.equal(test_images, torch.from_numpy(cifar10["test"])) and test_labels.tolist() == cifar10["test_labels"]
    )
    # A row of the release: 1024 red values, then 1024 green, then 1024 blue, each a 32x32 image row by row.
    row = cifar10["train"][7].reshape(3072)
    assert images[7, 1, 2, 5] == row[1024 + 2 * 32 + 5] and images[7, 2, 31, 0] == row[2048 + 31 * 32]
    assert names == [f"class{i}" for i in range(10)]


@pytest.mark.parametrize("where", ["folder", "parent", "archive", "archive_parent"])
def test_the_release_is_found_as_folder_parent_or_archive(cifar10, tmp_path, where):
    folder = cifar10["folder"]
    archive = tar_gz(folder, tmp_path / "cifar-10-python.tar.gz")
    data_dir = {"folder": folder, "parent": folder.parent, "archive": archive, "archive_parent": tmp_path}[where]
    if where == "archive_parent":
        os.rename(folder.parent, tmp_path / "elsewhere")  # only the archive is left in tmp_path
    (images, _), (test_images, _), _ = load_arrays("cifar10", data_dir, download=False)
    assert torch.equal(images, torch.from_numpy(cifar10["train"]))
    assert torch.equal(test_images, torch.from_numpy(cifar10["test"]))


def test_the_cifar10_bundle(cifar10):
    bundle = load_dataset("cifar10", data_dir=cifar10["folder"], batch_size=8, val_split=4, download=False)
    info = bundle.info
    assert (info.num_classes, info.in_channels, info.image_size) == (10, 3, (32, 32))
    assert (info.n_train, info.n_val, info.n_test) == (16, 4, 10)
    assert bundle.train.padding == 4 and len(bundle.train) == 2
    assert torch.equal(bundle.val.images.cpu(), torch.from_numpy(cifar10["train"][16:]))


def test_cifar100_uses_the_fine_labels(tmp_path):
    data = make_cifar(tmp_path, "cifar100")
    bundle = load_dataset("cifar100", data_dir=tmp_path, download=False, batch_size=4)
    assert bundle.info.num_classes == 100 and bundle.info.class_names[:2] == ["class0", "class1"]
    assert bundle.train.labels.tolist() == data["train_labels"]
    assert torch.equal(bundle.test.images, torch.from_numpy(data["test"]))


class Evil:
    """Unpickling this would run a shell command that creates a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_malicious_pickle_is_refused_and_runs_nothing(cifar10, tmp_path):
    marker = tmp_path / "pwned"
    batch = cifar10["folder"] / "data_batch_3"
    batch.write_bytes(pickle.dumps({b"data": Evil(marker), b"labels": [0]}, protocol=2))
    with pytest.raises(ValueError, match=f"{batch} refers to (posix|os).system; refused: only numpy arrays"):
        load_arrays("cifar10", cifar10["folder"], download=False)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        pickle_bytes(eval),  # a bare global
        b"\x80\x02cbuiltins\nexec\nX\x0b\x00\x00\x00import os\x85R.",  # exec("import os")
        b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x04\x00\x00\x00zlib\x86R.",  # a codec other than latin1
    ],
)
def test_only_what_numpy_arrays_need_is_allowed(payload):
    with pytest.raises(ValueError, match=r"test_batch .*refused"):
        unpickle(payload, "test_batch")


def test_arrays_and_bytes_written_by_this_numpy_load_back():
    data = np.arange(3072 * 2, dtype=np.uint8).reshape(2, 3072)
    content = unpickle(cifar_batch(data.reshape(2, 3, 32, 32), [1, 2]), "batch")
    assert np.array_equal(content[b"data"], data) and content[b"labels"] == [1, 2]
    assert content[b"batch_label"] == b"generated batch"


def test_a_truncated_batch_names_the_file(cifar10):
    batch = cifar10["folder"] / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:1000])
    with pytest.raises(ValueError, match=f"{batch} is not a readable pickle \\(truncated or corrupt"):
        load_arrays("cifar10", cifar10["folder"], download=False)


def test_a_missing_batch_names_the_file(cifar10):
    (cifar10["folder"] / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match="lacks data_batch_4"):
        load_arrays("cifar10", cifar10["folder"], download=False)


def test_a_batch_of_the_wrong_shape_names_the_file_and_what_was_expected(cifar10):
    batch = cifar10["folder"] / "data_batch_1"
    batch.write_bytes(pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, protocol=2))
    with pytest.raises(ValueError, match=f"{batch}: expected b'data' as an \\(N, 3072\\) uint8 array, found uint8"):
        load_arrays("cifar10", cifar10["folder"], download=False)


def test_a_corrupt_archive_names_itself(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00 this is no archive")
    with pytest.raises(ValueError, match=f"{archive} is not a readable .tar.gz"):
        load_arrays("cifar10", archive, download=False)


def test_nothing_found_and_no_download_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETS_DATA", str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match=f"cifar10 .* not found in {tmp_path / 'nothing'}, "):
        load_arrays("cifar10", download=False)


def test_a_missing_data_dir_is_refused_never_replaced_by_another_copy(cifar10, tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETS_DATA", str(cifar10["folder"].parent))  # a good copy elsewhere
    with pytest.raises(FileNotFoundError, match=f"--data-dir {tmp_path / 'typo'} does not exist"):
        load_arrays("cifar10", tmp_path / "typo", download=True)


def test_a_download_is_checked_extracted_into_the_cache_and_the_archive_removed(cifar10, tmp_path, monkeypatch):
    archive = tar_gz(cifar10["folder"], tmp_path / "served.tar.gz").read_bytes()
    release = dataclasses.replace(RELEASES["cifar10"], md5=hashlib.md5(archive).hexdigest())
    urls = []

    def transport(url):
        urls.append(url)
        return io.BytesIO(archive)

    folder, is_archive = locate(release, None, True, transport)
    cache = tmp_path / "cache" / "cifar10"
    assert urls == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert (folder, is_archive) == (cache / "cifar-10-batches-py", False)
    assert sorted(p.name for p in cache.iterdir()) == ["cifar-10-batches-py"]
    monkeypatch.setitem(cifar_module.RELEASES, "cifar10", release)
    (images, _), _, _ = load_arrays("cifar10", None, download=False)  # now found in the cache
    assert torch.equal(images, torch.from_numpy(cifar10["train"]))


def test_a_download_with_the_wrong_md5_is_deleted(cifar10, tmp_path):
    archive = tar_gz(cifar10["folder"], tmp_path / "served.tar.gz").read_bytes()
    with pytest.raises(
        ValueError, match=r"checksum mismatch for cifar-10-python\.tar\.gz .*md5 c58f30108f718f92721af3b95e74349a"
    ):
        locate(RELEASES["cifar10"], None, True, lambda url: io.BytesIO(archive))
    assert list((tmp_path / "cache" / "cifar10").iterdir()) == []


@pytest.mark.parametrize("member", ["../escaped.txt", "/tmp/absolute-escape.txt", "link"])
def test_extraction_refuses_paths_outside_the_destination(tmp_path, member):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(member)
        if member == "link":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match=f"{archive} holds '{member}', which would be extracted outside {dest}"):
        safe_extract(archive, dest)
    assert not (tmp_path / "escaped.txt").exists() and list(dest.iterdir()) == []


def test_a_batch_pickled_by_python2_and_numpy1_loads_as_the_real_release_does(cifar10):
    images, labels = cifar10["train"][:4], cifar10["train_labels"][:4]
    (cifar10["folder"] / "data_batch_1").write_bytes(python2_batch(images, labels))
    (loaded, loaded_labels), _, _ = load_arrays("cifar10", cifar10["folder"], download=False)
    assert torch.equal(loaded, torch.from_numpy(cifar10["train"])) and loaded_labels.tolist() == cifar10["train_labels"]
