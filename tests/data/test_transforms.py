"""Augmentation and normalisation: crops are windows of the padded image, statistics are exact."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from resnets.data.transforms import (
    IMAGENET_EIGVAL,
    IMAGENET_EIGVEC,
    FolderTransforms,
    center_view,
    crop_flip,
    lighting_shift,
    multi_scale_views,
    normalize,
    padded_ten_crop,
    pixel_statistics,
    ten_crop_views,
    train_view,
)


def position_images(n: int, c: int = 2, h: int = 8, w: int = 8) -> torch.Tensor:
    """Pixel (r, col) of channel k holds 1 + r * w + col + 100 k: every value says where it was."""
    grid = 1 + torch.arange(h * w).reshape(h, w)
    return torch.stack([grid + 100 * k for k in range(c)]).expand(n, c, h, w).to(torch.uint8).clone()


def windows(image: torch.Tensor, padding: int) -> list[tuple[int, int, bool]]:
    """Every (dy, dx, flipped, window) that a crop of the padded `image` and a flip can give."""
    h, w = image.shape[-2:]
    padded = F.pad(image, (padding,) * 4)
    out = []
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            window = padded[:, dy : dy + h, dx : dx + w]
            out += [(dy, dx, False, window), (dy, dx, True, window.flip(-1))]
    return out


def test_every_augmented_image_is_a_shifted_or_flipped_window_of_the_padded_original():
    images = position_images(64)
    padding = 2
    out = crop_flip(images, padding, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    candidates = windows(images[0], padding)
    seen = set()
    for image in out:
        matches = [(dy, dx, flip) for dy, dx, flip, window in candidates if torch.equal(window, image)]
        assert len(matches) == 1, "not a window of the padded image"
        seen.add(matches[0])
    offsets = {(dy, dx) for dy, dx, _ in seen}
    assert len(offsets) > 10 and {flip for *_, flip in seen} == {False, True}


def test_crop_flip_is_a_function_of_the_generator_seed():
    images = position_images(16)
    a = crop_flip(images, 4, torch.Generator().manual_seed(7))
    b = crop_flip(images, 4, torch.Generator().manual_seed(7))
    c = crop_flip(images, 4, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_padded_ten_crop_gives_the_corners_the_centre_and_their_mirrors():
    images = position_images(3, h=6, w=6)
    views = padded_ten_crop(images, 2)
    assert len(views) == 10
    assert torch.equal(views[4], images)  # the centre of the padded image is the image itself
    assert views[0][0, 0, 2, 2] == images[0, 0, 0, 0]  # top-left: shifted down-right by the padding
    assert views[3][0, 0, 0, 0] == images[0, 0, 2, 2]  # bottom-right
    for crop, mirror in zip(views[:5], views[5:], strict=True):
        assert torch.equal(mirror, crop.flip(-1))


def test_pixel_statistics_are_exact_and_normalised_images_have_zero_mean_unit_variance():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (300, 3, 5, 4), generator=g, dtype=torch.uint8)
    mean, std = pixel_statistics(images, chunk=64)
    x = images.double()
    assert torch.allclose(mean.double(), x.mean(0), atol=1e-5)
    assert torch.allclose(std.double().flatten(), (x - x.mean(0)).pow(2).mean((0, 2, 3)).sqrt(), rtol=1e-6)
    assert mean.shape == (3, 5, 4) and std.shape == (3, 1, 1)
    normalized = normalize(images, mean, std).double()
    assert normalized.mean(0).abs().max() < 1e-5
    assert torch.allclose(normalized.pow(2).mean((0, 2, 3)), torch.ones(3, dtype=torch.float64), atol=1e-5)


def test_a_constant_channel_gets_unit_std_and_an_empty_set_is_refused():
    mean, std = pixel_statistics(torch.full((4, 1, 2, 2), 9, dtype=torch.uint8))
    assert mean.unique().tolist() == [9.0] and std.item() == 1.0
    with pytest.raises(ValueError, match="empty"):
        pixel_statistics(torch.zeros(0, 1, 2, 2, dtype=torch.uint8))


def test_normalize_takes_std_per_channel_in_either_shape():
    images = torch.tensor([[[[10]], [[20]]]], dtype=torch.uint8)
    mean = torch.tensor([4.0, 10.0]).reshape(2, 1, 1)
    flat = normalize(images, mean, torch.tensor([2.0, 5.0]))
    assert flat.flatten().tolist() == [3.0, 2.0]
    assert torch.equal(flat, normalize(images, mean, torch.tensor([2.0, 5.0]).reshape(2, 1, 1)))


SMALL = FolderTransforms(image_size=16, resize_range=(20, 30), test_resize=20, scales=(16, 20, 24))


def test_train_view_crops_the_requested_size_and_depends_only_on_its_seed():
    image = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    a = train_view(image, SMALL, torch.Generator().manual_seed(5))
    b = train_view(image, SMALL, torch.Generator().manual_seed(5))
    c = train_view(image, SMALL, torch.Generator().manual_seed(6))
    assert a[0].shape == (3, 16, 16) and a[0].dtype == torch.uint8 and a[1].shape == (3,)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_lighting_noise_follows_the_imagenet_principal_components():
    shifts = torch.stack([lighting_shift(0.1, torch.Generator().manual_seed(i)) for i in range(2000)])
    # shift = V (alpha * eigval) * 255 with alpha ~ N(0, 0.1^2): Var(shift_j) = sum_i (V_ji eigval_i 0.1 255)^2.
    expected = (torch.tensor(IMAGENET_EIGVEC) * torch.tensor(IMAGENET_EIGVAL) * 0.1 * 255).pow(2).sum(1).sqrt()
    assert shifts.mean(0).abs().max() < 0.5
    assert torch.allclose(shifts.std(0), expected, rtol=0.1)
    assert torch.equal(lighting_shift(0.0, torch.Generator()), torch.zeros(3))


def test_test_views_have_the_configured_sizes():
    image = torch.randint(0, 256, (3, 30, 45), dtype=torch.uint8)
    assert center_view(image, SMALL).shape == (3, 16, 16)
    crops = ten_crop_views(image, SMALL)
    assert len(crops) == 10 and all(v.shape == (3, 16, 16) for v in crops)
    views = multi_scale_views(image, SMALL)  # the paper averages scales only: no mirror images
    assert [tuple(v.shape[-2:]) for v in views] == [(16, 24), (20, 30), (24, 36)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image_size": 32, "resize_range": (24, 40)},
        {"resize_range": (300, 256)},
        {"test_resize": 100},
        {"scales": ()},
        {"jitter": 1.5},
    ],
)
def test_folder_transforms_refuse_inconsistent_sizes(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        FolderTransforms(**kwargs)


def test_without_lighting_a_training_view_has_no_shift_and_lighting_belongs_to_image_folders():
    from resnets.train.config import TrainConfig

    image = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    crop, shift = train_view(image, replace(SMALL, lighting=0.0), torch.Generator().manual_seed(5))
    assert shift is None and crop.shape == (3, SMALL.image_size, SMALL.image_size)
    with pytest.raises(ValueError, match="lighting applies to image folders, not to fashion-mnist"):
        TrainConfig(lighting=0.0)
