"""ImageNet-style folders at tiny sizes: classes, bad files, views, replayable epochs."""

import shutil

import pytest
import torch
from datagen import save_image

from resnets.data import FolderTransforms, load_dataset
from resnets.data.base import derive_seed
from resnets.data.imagefolder import ImageFiles, UnreadableImage, _BatchKeys, scan
from resnets.data.transforms import normalize

TINY = FolderTransforms(image_size=32, resize_range=(36, 48), test_resize=36, scales=(32, 36, 40, 44, 48))


def load(root, **kwargs):
    options = {"batch_size": 4, "eval_batch_size": 4, "num_workers": 0, "folder_transforms": TINY, **kwargs}
    return load_dataset(f"imagefolder:{root}", **options)


def test_classes_splits_and_batches(image_root):
    bundle = load(image_root)
    info = bundle.info
    assert info.class_names == ["cat", "dog", "eel"] and info.num_classes == 3
    assert (info.n_train, info.n_val, info.n_test) == (14, 0, 6)  # 12 + a greyscale + a corrupt file; no .txt
    assert (info.in_channels, info.image_size) == (3, (32, 32))
    images, labels = next(bundle.train.epoch(0))
    assert images.dtype == torch.float32 and images.shape[1:] == (3, 32, 32) and labels.dtype == torch.int64
    mean, std = bundle.normalization
    assert torch.allclose(mean.flatten(), torch.tensor([0.485, 0.456, 0.406]) * 255)
    assert torch.allclose(std.flatten(), torch.tensor([0.229, 0.224, 0.225]) * 255)


def test_a_corrupt_training_image_is_replaced_in_its_place_and_counted(image_root):
    bundle = load(image_root, batch_size=7)  # 14 images: two full batches, every image met once
    batches = list(bundle.train.epoch(0))
    broken = str(image_root / "train" / "eel" / "broken.jpg")
    assert [len(y) for _, y in batches] == [7, 7]  # the batch keeps its size
    assert bundle.train.bad_images == 1 and bundle.train.bad_files == [broken]
    # In its place: the training image drawn from (seed, epoch, batch, place), augmented with the seed of
    # the place, as any process holding that place draws it.
    keys = _BatchKeys(bundle.train, 0, 0)
    i, (k, (_, seed, place)) = next(
        (i, (k, key))
        for i in range(2)
        for k, key in enumerate(keys.keys(i))
        if bundle.train.dataset.samples[key[0]][0] == broken
    )
    index = derive_seed(0, "replace", 0, i, place, 0) % bundle.train.num_samples
    (view,), shift, label = bundle.train.dataset.decoded(index, seed)
    expected = normalize(view[None], *bundle.normalization)[0]
    expected += (shift / bundle.normalization[1].reshape(-1))[:, None, None]
    assert torch.equal(batches[i][0][k], expected) and batches[i][1][k] == label
    list(bundle.train.epoch(1))
    assert bundle.train.bad_images == 2 and bundle.train.bad_files == [broken]  # a running count, each file named once


def test_a_folder_of_unreadable_files_is_an_error_not_a_run_on_replacements(tmp_path):
    for name in ("cat", "dog"):
        for i in range(3):
            folder = tmp_path / "train" / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}.jpg").write_bytes(b"not a jpeg")
        save_image(tmp_path / "val" / name / "0.png", (40, 40), (10, 20, 30))
    with pytest.raises(UnreadableImage, match=r"cannot decode image .*\.jpg .* nor any of the 16 training images"):
        list(load(tmp_path, batch_size=2).train.epoch(0))


def test_fail_mode_names_the_unreadable_file(image_root):
    bundle = load(image_root, bad_images="fail", batch_size=7)
    with pytest.raises(ValueError, match=r"cannot decode image .*eel/broken\.jpg"):
        list(bundle.train.epoch(0))


def test_greyscale_images_are_decoded_as_rgb(image_root):
    _, train, _ = scan(image_root)
    index = next(i for i, (path, _) in enumerate(train) if path.endswith("grey.png"))
    (view,), shift, label = ImageFiles(train, "center", TINY)[index, None]
    assert view.shape == (3, 32, 32) and shift is None and label == 1
    assert torch.equal(view[0], view[1]) and torch.equal(view[1], view[2])


def test_resuming_gives_the_tail_of_the_epoch_and_epochs_differ(image_root):
    bundle = load(image_root, bad_images="skip", batch_size=3, seed=5)
    full = list(bundle.train.epoch(2))
    tail = list(bundle.train.epoch(2, start=2))
    assert len(full) == 4 and len(tail) == 2
    for (x, y), (u, v) in zip(full[2:], tail, strict=True):
        assert torch.equal(x, u) and torch.equal(y, v)
    other = list(bundle.train.epoch(3))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(full, other, strict=False) if a[0].shape == b[0].shape)


def test_the_same_seed_gives_the_same_batches_and_the_global_rng_is_left_alone(image_root):
    state = torch.get_rng_state()
    a = list(load(image_root, seed=1).train.epoch(0))
    b = list(load(image_root, seed=1).train.epoch(0))
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b, strict=True))


def test_workers_do_not_change_the_batches(image_root):
    one = list(load(image_root, seed=2, num_workers=0).train.epoch(1))
    two = list(load(image_root, seed=2, num_workers=2).train.epoch(1))
    assert all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(one, two, strict=True))


def test_val_split_holds_out_training_images_with_the_test_transform(image_root):
    bundle = load(image_root, val_split=4, subset=12)
    assert (bundle.info.n_train, bundle.info.n_val) == (8, 4)
    assert bundle.val.num_samples == 4 and len(bundle.val) == 1
    assert bundle.train.num_samples + bundle.val.num_samples == 12
    first = list(bundle.val.epoch(0))
    assert all(torch.equal(x, u) for (x, _), (u, _) in zip(first, bundle.val.epoch(7), strict=True))


def test_the_test_views(image_root):
    bundle = load(image_root)
    (center,), labels = next(bundle.test_views("center"))
    assert center.shape == (4, 3, 32, 32) and labels.tolist() == [0, 0, 1, 1]
    assert torch.equal(center, next(bundle.test.epoch(0))[0])
    crops, labels = next(bundle.test_views("ten_crop"))
    assert len(crops) == 10 and all(c.shape == (4, 3, 32, 32) for c in crops)
    batches = list(bundle.test_views("multi_scale"))
    assert len(batches) == 6  # one image per batch: the views differ in size
    views, labels = batches[0]
    assert len(views) == 5 and labels.shape == (1,)  # five scales, no mirror images (the paper's)
    # val/ images are 56x48: the shorter side (48) goes to each scale, the aspect ratio is kept.
    assert [tuple(v.shape[-2:]) for v in views] == [(32, 37), (36, 42), (40, 46), (44, 51), (48, 56)]


def test_an_empty_class_folder_is_named(image_root):
    (image_root / "train" / "fox").mkdir()
    (image_root / "train" / "fox" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=f"class folder {image_root / 'train' / 'fox'} holds no images"):
        load(image_root)


def test_a_missing_split_is_named(image_root):
    shutil.rmtree(image_root / "val")
    with pytest.raises(FileNotFoundError, match=f"{image_root / 'val'} not found"):
        load(image_root)
    with pytest.raises(FileNotFoundError, match=r"image folder .*nowhere not found"):
        load(image_root / "nowhere")


def test_val_must_hold_the_classes_of_train(image_root):
    shutil.move(image_root / "val" / "eel", image_root / "val" / "ray")
    with pytest.raises(ValueError, match=r"must hold the classes of train/: extra \['ray'\], missing \['eel'\]"):
        load(image_root)


def test_training_order_mixes_the_classes_for_subsets(image_root):
    _, train, _ = scan(image_root)
    assert len({label for _, label in train[:6]}) > 1  # not all of class 0, as a sorted order would give
    assert sorted(train) == sorted(scan(image_root)[1]) and train == scan(image_root)[1]
