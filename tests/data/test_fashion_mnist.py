"""Fashion-MNIST: the IDX parser on generated files, the lookup order, downloads, the real data."""

import gzip
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from datagen import idx_bytes, write_idx

from resnets.data import load_dataset
from resnets.data.fashion_mnist import CLASS_NAMES, DEBIAN_DIR, FILES, find_files, load_arrays, parse_idx, read_idx

REAL = DEBIAN_DIR / "train-images-idx3-ubyte.gz"
needs_real_data = pytest.mark.skipif(
    not REAL.is_file(), reason=f"{DEBIAN_DIR} absent: `apt-get install dataset-fashion-mnist` provides the real files"
)


@pytest.mark.parametrize("gz", [False, True])
def test_the_idx_parser_gives_the_exact_pixels(tmp_path, gz):
    pixels = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 7
    path = write_idx(tmp_path / ("images.gz" if gz else "images"), pixels, gz=gz)
    array = read_idx(path, magic=2051)
    assert array.dtype == np.uint8 and array.shape == (2, 3, 4)
    assert array.tolist() == pixels.tolist()
    assert read_idx(write_idx(tmp_path / "labels", np.array([9, 0, 3])), magic=2049).tolist() == [9, 0, 3]


def test_a_truncated_idx_file_names_the_file_its_size_and_the_expected_size(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((10, 28, 28), np.uint8))[:-5])
    with pytest.raises(
        ValueError, match=f"{path} is 7851 bytes, expected 7856 for shape \\(10, 28, 28\\) \\(truncated\\)"
    ):
        read_idx(path)


def test_a_truncated_gzip_file_names_the_file(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(1000, np.uint8)))[:-20])
    with pytest.raises(ValueError, match=f"{path} is a truncated or corrupt gzip file"):
        read_idx(path)


def test_a_wrong_magic_number_is_refused():
    labels = idx_bytes(np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="magic number 2049; expected 2051"):
        parse_idx(labels, "labels", magic=2051)
    with pytest.raises(ValueError, match=f"junk is not an IDX file .*magic number {int.from_bytes(b'abcd', 'big')}"):
        parse_idx(b"abcdefgh", "junk")


def fake_release(folder: Path, gz: bool = False) -> Path:
    """Placeholder files with the release's names (find_files looks at names only)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (folder / (f"{name}.gz" if gz else name)).write_bytes(b"")
    return folder


def test_files_are_looked_up_in_data_dir_then_resnets_data_then_the_system_then_the_cache(tmp_path, monkeypatch):
    system = fake_release(tmp_path / "debian", gz=True)
    cache = fake_release(tmp_path / "cache" / "fashion-mnist")
    found = find_files(None, system=(system,), download_missing=False)
    assert found["train-images-idx3-ubyte"] == system / "train-images-idx3-ubyte.gz"
    assert find_files(None, system=(), download_missing=False)["t10k-labels-idx1-ubyte"].parent == cache
    shared = fake_release(tmp_path / "shared" / "fashion-mnist")
    monkeypatch.setenv("RESNETS_DATA", str(tmp_path / "shared"))
    assert find_files(None, system=(system,), download_missing=False)["t10k-images-idx3-ubyte"].parent == shared
    mine = fake_release(tmp_path / "mine")
    assert find_files(mine, system=(system,), download_missing=False)["t10k-images-idx3-ubyte"].parent == mine


def test_a_folder_missing_a_file_is_passed_over_and_nothing_found_says_where_it_looked(tmp_path, monkeypatch):
    partial = fake_release(tmp_path / "partial")
    (partial / "t10k-labels-idx1-ubyte").unlink()
    monkeypatch.setenv("RESNETS_DATA", str(partial))
    with pytest.raises(FileNotFoundError, match=f"not found in {partial}, .*dataset-fashion-mnist"):
        find_files(None, system=(), download_missing=False)


def test_an_incomplete_or_missing_data_dir_is_refused_never_replaced(tmp_path):
    system = fake_release(tmp_path / "debian", gz=True)  # a complete copy the lookup must not fall back to
    partial = fake_release(tmp_path / "partial")
    (partial / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=f"--data-dir {partial} lacks t10k-labels-idx1-ubyte"):
        find_files(partial, system=(system,), download_missing=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_files(tmp_path / "typo", system=(system,), download_missing=True)


def test_files_of_the_wrong_shape_are_refused(tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    for name, (_, shape) in FILES.items():
        write_idx(folder / name, np.zeros([2] * len(shape), np.uint8))
    with pytest.raises(ValueError, match="holds an array of shape \\(2, 2, 2\\), expected \\(60000, 28, 28\\)"):
        load_arrays(folder, download=False, system=())


@needs_real_data
def test_the_real_fashion_mnist_has_the_published_sizes_labels_and_pixels():
    (images, labels), (test_images, test_labels) = load_arrays(download=False)
    assert images.shape == (60000, 1, 28, 28) and test_images.shape == (10000, 1, 28, 28)
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert CLASS_NAMES[int(labels[0])] == "Ankle boot"
    assert labels.bincount().tolist() == [6000] * 10 and test_labels.bincount().tolist() == [1000] * 10
    # Pixel sums measured once on the Debian files (the official release's bytes).
    assert int(images.sum(dtype=torch.int64)) == 3_431_114_169
    assert int(test_images.sum(dtype=torch.int64)) == 573_469_082
    assert int(images[0].sum(dtype=torch.int64)) == 76_247


@needs_real_data
def test_the_real_fashion_mnist_bundle_with_subset_and_validation():
    bundle = load_dataset("fashion-mnist", download=False, batch_size=100, subset=1000, val_split=200)
    info = bundle.info
    assert (info.n_train, info.n_val, info.n_test, info.in_channels, info.image_size) == (800, 200, 10000, 1, (28, 28))
    assert info.class_names == list(CLASS_NAMES)
    assert len(bundle.train) == 8 and len(bundle.val) == 1 and len(bundle.test) == 50
    mean, std = bundle.normalization
    assert mean.shape == (1, 28, 28) and std.shape == (1, 1, 1)
    assert bundle.train.padding == 2
    images, _ = next(bundle.train.epoch(0))
    assert images.shape == (100, 1, 28, 28) and torch.isfinite(images).all()


@needs_real_data
def test_a_download_is_decompressed_checked_and_cached(tmp_path):
    served = []

    def mirror(url):  # the Debian files stand in for the official server
        served.append(url)
        return (DEBIAN_DIR / url.rsplit("/", 1)[1]).open("rb")

    found = find_files(None, system=(), transport=mirror)
    cache = tmp_path / "cache" / "fashion-mnist"
    assert served == [f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{name}.gz" for name in FILES]
    assert found == {name: cache / name for name in FILES}
    labels = (cache / "t10k-labels-idx1-ubyte").read_bytes()
    assert hashlib.sha256(labels).hexdigest() == FILES["t10k-labels-idx1-ubyte"][0]
    assert find_files(None, system=(), transport=None) == found  # found in the cache: no second download


def test_a_download_with_the_wrong_content_is_deleted(tmp_path):
    bogus = gzip.compress(idx_bytes(np.zeros(10, np.uint8)))
    with pytest.raises(ValueError, match=r"checksum mismatch for train-images-idx3-ubyte .* expected sha256 c59f468a"):
        find_files(None, system=(), transport=lambda url: io.BytesIO(bogus))
    cache = tmp_path / "cache" / "fashion-mnist"
    assert list(cache.iterdir()) == []
