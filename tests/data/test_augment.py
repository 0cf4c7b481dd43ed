"""RandAugment, TrivialAugment Wide and random erasing of whole batches: each op by its numbers and
against torchvision's, per-image draws, a function of the seed alone, and fast enough."""

import math
import time

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms.v2 import InterpolationMode, RandAugment, TrivialAugmentWide

from resnets.data.augment import LEVELS, OPS, _strongest, apply_op, rand_augment, random_erasing, trivial_augment

NEAREST = InterpolationMode.NEAREST


def random_images(n: int = 6, c: int = 3, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    """uint8 noise with a saturated band on top (solarize and autocontrast have 255s to work on)
    and one low-contrast image (autocontrast and equalize have a range to stretch)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    x[:, :, :2] = 255
    x[1] = x[1] // 4 + 60
    return x


def each(fn, images: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """torchvision's op, one image at a time."""
    return torch.stack([fn(image, *args, **kwargs) for image in images])


def one_row(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.uint8).view(1, 1, 1, -1)


def test_solarize_inverts_the_pixels_at_and_above_the_threshold():
    x = one_row([0, 100, 127, 128, 200, 255])
    assert apply_op(x, "Solarize", 128).flatten().tolist() == [0, 100, 127, 127, 55, 0]
    assert torch.equal(apply_op(x, "Solarize", 256), x)  # above every pixel: unchanged
    images = random_images()
    for threshold in (0, 100, 178.5, 255):
        assert torch.equal(apply_op(images, "Solarize", threshold), TF.solarize(images, threshold))


def test_posterize_keeps_the_top_bits():
    x = one_row([0b10110111, 0b01001100, 255, 0])
    assert apply_op(x, "Posterize", 3).flatten().tolist() == [0b10100000, 0b01000000, 0b11100000, 0]
    assert apply_op(x, "Posterize", 0).flatten().tolist() == [0, 0, 0, 0]
    assert torch.equal(apply_op(x, "Posterize", 8), x)
    images = random_images()
    for bits in range(9):
        assert torch.equal(apply_op(images, "Posterize", bits), TF.posterize(images, bits))


def test_brightness_scales_the_pixels_as_torchvision():
    assert apply_op(one_row([0, 10, 100, 200]), "Brightness", 1.5).flatten().tolist() == [0, 15, 150, 255]
    for c in (1, 3):
        images = random_images(c=c)
        for factor in (0.1, 0.5, 1.27, 1.9):
            assert torch.equal(apply_op(images, "Brightness", factor), each(TF.adjust_brightness, images, factor))


@pytest.mark.parametrize(
    ("op", "reference"),
    [("Color", TF.adjust_saturation), ("Contrast", TF.adjust_contrast), ("Sharpness", TF.adjust_sharpness)],
)
def test_enhancements_equal_torchvision(op, reference):
    for c in (1, 3):
        images = random_images(c=c)
        # Factors that are sums of powers of 2 round alike whatever the order of operations.
        for factor in (0.25, 0.5, 1.5, 1.75):
            assert torch.equal(apply_op(images, op, factor), each(reference, images, factor)), (c, factor)
        for factor in (0.1, 1.27, 1.9):  # else an odd truncation may land one level apart
            diff = (apply_op(images, op, factor).int() - each(reference, images, factor).int()).abs()
            assert diff.max() <= 1 and (diff > 0).float().mean() < 0.05


def test_contrast_blends_with_the_mean_grey_and_color_leaves_grey_images_alone():
    x = one_row([0, 40, 80, 120])  # mean 60
    assert apply_op(x, "Contrast", 0.5).flatten().tolist() == [30, 50, 70, 90]
    grey = random_images(c=1)
    assert torch.equal(apply_op(grey, "Color", 0.1), grey)


def test_autocontrast_stretches_each_channel_to_the_full_range():
    x = torch.tensor([[[[50, 100, 150]], [[7, 7, 7]], [[0, 128, 255]]]], dtype=torch.uint8)  # a flat channel is kept
    assert apply_op(x, "AutoContrast").tolist() == [[[[0, 127, 255]], [[7, 7, 7]], [[0, 128, 255]]]]  # 127.5 truncated
    # Torchvision divides by (high - low) / 255, rounded: 150 above becomes 254 there.
    images = random_images()
    diff = (apply_op(images, "AutoContrast").int() - each(TF.autocontrast, images).int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 0.1


def test_equalize_equals_torchvision_and_spreads_a_narrow_histogram():
    for c in (1, 3):
        images = random_images(c=c)
        images[2] = 90  # constant: PIL and torchvision leave it
        assert torch.equal(apply_op(images, "Equalize"), each(TF.equalize, images))
    narrow = random_images(c=1, h=32, w=32)[1:2]  # more than 255 pixels below the brightest
    out = apply_op(narrow, "Equalize")
    assert narrow.max() - narrow.min() < 70 and out.min() < 20 and out.max() > 235


def test_geometric_ops_move_pixels_by_their_numbers():
    x = torch.arange(1, 10, dtype=torch.uint8).view(1, 1, 3, 3)
    assert apply_op(x, "TranslateX", 1).tolist() == [[[[0, 1, 2], [0, 4, 5], [0, 7, 8]]]]
    assert apply_op(x, "TranslateY", -1.7).tolist() == [[[[4, 5, 6], [7, 8, 9], [0, 0, 0]]]]  # truncated to -1
    assert torch.equal(apply_op(x, "Rotate", 90), torch.rot90(x, 1, (2, 3)))  # counter-clockwise
    # ShearX by 1/2 about the top-left corner: row r samples the input (r + 1/2) / 2 pixels to
    # its right, the nearest pixel: 0, 1, 1 and 2 pixels for rows 0 to 3.
    x = torch.arange(1, 17, dtype=torch.uint8).view(1, 1, 4, 4)
    expected = [[1, 2, 3, 4], [6, 7, 8, 0], [10, 11, 12, 0], [15, 16, 0, 0]]
    assert apply_op(x, "ShearX", 0.5).tolist() == [[expected]]
    assert apply_op(x.transpose(2, 3), "ShearY", 0.5).transpose(2, 3).tolist() == [[expected]]


def mismatched(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a != b).float().mean().item()


@pytest.mark.parametrize("angle", [7.0, -30.0, 45.0, 90.0, 135.0, -13.5])
def test_rotate_equals_torchvision_nearest(angle):
    images = random_images(h=28, w=28)
    reference = each(TF.rotate, images, angle, interpolation=NEAREST)
    assert mismatched(apply_op(images, "Rotate", angle), reference) < 0.005


@pytest.mark.parametrize("s", [0.3, -0.09, 0.99, -0.5])
def test_shears_equal_torchvision_affine_about_the_corner(s):
    images = random_images(h=28, w=20)
    degrees = math.degrees(math.atan(s))  # torchvision's shear is an angle: atan of the factor
    for op, shear in (("ShearX", [degrees, 0.0]), ("ShearY", [0.0, degrees])):
        reference = each(TF.affine, images, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, center=[0, 0])
        assert mismatched(apply_op(images, op, s), reference) < 0.005, op


@pytest.mark.parametrize("t", [3.8, -12.7, 32.0])
def test_translations_equal_torchvision_affine(t):
    images = random_images(h=28, w=20)
    for op, shift in (("TranslateX", [int(t), 0]), ("TranslateY", [0, int(t)])):
        reference = each(TF.affine, images, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0])
        assert torch.equal(apply_op(images, op, t), reference), op


def test_neutral_magnitudes_give_the_input_back():
    images = random_images()
    neutral = {"Identity": 0, "ShearX": 0, "ShearY": 0, "TranslateX": 0, "TranslateY": 0, "Rotate": 0}
    neutral |= {"Brightness": 1, "Color": 1, "Contrast": 1, "Sharpness": 1, "Posterize": 8, "Solarize": 256}
    assert set(neutral) | {"AutoContrast", "Equalize"} == set(OPS)
    for op, magnitude in neutral.items():
        assert torch.equal(apply_op(images, op, magnitude), images), op
    assert rand_augment(images, torch.Generator().manual_seed(0), num_ops=0) is images


def test_level_0_leaves_a_flat_image_as_it_is():
    # At level 0 every op is the identity on a flat image below 255 (autocontrast and equalize
    # keep flat channels; the solarize threshold is 255), whichever op each image draws.
    flat = torch.full((64, 3, 8, 8), 77, dtype=torch.uint8)
    assert torch.equal(rand_augment(flat, torch.Generator().manual_seed(1), num_ops=3, magnitude=0), flat)


def a_gradient(n: int, c: int = 3, size: int = 16) -> torch.Tensor:
    ramp = torch.arange(size * size).view(size, size) * 255 // (size * size - 1)
    return ramp.to(torch.uint8).expand(n, c, size, size).clone()


@pytest.mark.parametrize("augment", [rand_augment, trivial_augment], ids=["randaugment", "trivialaugment"])
def test_each_image_draws_its_own_ops_and_the_seed_alone_decides(augment):
    images = a_gradient(64)
    out = augment(images, torch.Generator().manual_seed(3))
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert len({tuple(image.flatten().tolist()) for image in out}) > 20  # the copies came out different
    assert torch.equal(out, augment(images, torch.Generator().manual_seed(3)))
    assert not torch.equal(out, augment(images, torch.Generator().manual_seed(4)))


def torchvision_candidates(policy, images: torch.Tensor, levels: range) -> list[tuple[str, torch.Tensor]]:
    """Every (op, output) torchvision's policy can give at these levels, either sign."""
    h, w = images.shape[-2:]
    out = []
    for op, (bins, signed) in policy._AUGMENTATION_SPACE.items():
        values = bins(LEVELS + 1, h, w)
        # Rounded: torchvision's float32 table carries last-bit noise (level 15 of the wide
        # translation is 15.99999 px, which its int() makes 15; ours is 16).
        magnitudes = {0.0} if values is None else {round(float(values[k]), 4) for k in levels}
        for m in magnitudes | ({-m for m in magnitudes} if signed else set()):
            out.append((op, policy._apply_image_or_video_transform(images, op, m, NEAREST, policy._fill)))
    return out


@pytest.mark.parametrize(
    ("augment", "policy", "levels"),
    [
        (lambda x, g: rand_augment(x, g, num_ops=1, magnitude=9), RandAugment(), range(9, 10)),
        (lambda x, g: rand_augment(x, g, num_ops=1, magnitude=30), RandAugment(), range(30, 31)),
        (trivial_augment, TrivialAugmentWide(), range(LEVELS + 1)),
    ],
    ids=["randaugment-9", "randaugment-30", "trivialaugment"],
)
def test_every_augmented_image_is_one_of_torchvisions_ops_and_every_op_occurs(augment, policy, levels):
    images = random_images(n=96, h=20, w=20) // 2 + 60  # 60..187: autocontrast has a range to stretch
    images[::2] = images[0]  # the same image many times: its ops must differ
    out = augment(images, torch.Generator().manual_seed(5))
    explained = torch.zeros(len(images), dtype=torch.bool)
    ops_seen = set()
    for op, candidate in torchvision_candidates(policy, images, levels):
        # Blends may truncate one level apart, nearest sampling flip a pixel at a tie.
        close = ((out.int() - candidate.int()).abs() > 1).float().mean((1, 2, 3)) < 0.01
        explained |= close
        if bool((close & (out != images).flatten(1).any(1)).any()) or op == "Identity":
            ops_seen.add(op)
    assert bool(explained.all()), f"{int((~explained).sum())} images match no op of torchvision's"
    assert ops_seen == set(OPS)


@pytest.mark.parametrize(("policy", "wide"), [(RandAugment, False), (TrivialAugmentWide, True)])
def test_the_strongest_magnitudes_are_torchvisions(policy, wide):
    h, w = 28, 20
    expected = {}
    for op, (bins, _) in policy._AUGMENTATION_SPACE.items():
        values = bins(LEVELS + 1, h, w)
        if values is not None:  # Identity, AutoContrast and Equalize have no magnitude
            top = float(values[-1])
            # Ours are distances from the identity: bits removed, threshold lowered from 255.
            expected[op] = {"Posterize": 8 - top, "Solarize": 255 * (1 - top)}.get(op, top)
    assert _strongest(wide, h, w) == pytest.approx(expected, rel=1e-6)


def test_magnitude_std_draws_a_level_per_image():
    images = a_gradient(64, c=1)
    fixed = rand_augment(images, torch.Generator().manual_seed(0), num_ops=1, magnitude=15)
    spread = rand_augment(images, torch.Generator().manual_seed(0), num_ops=1, magnitude=15, magnitude_std=5.0)
    # The same ops, at other magnitudes: only the ops that ignore their magnitude agree.
    differ = (fixed != spread).flatten(1).any(1).float().mean()
    assert 0.4 < differ < 0.95


def test_random_erasing_with_p_0_is_the_identity():
    images = torch.randn(32, 3, 16, 16)
    assert torch.equal(random_erasing(images, torch.Generator().manual_seed(0), p=0.0), images)


@pytest.mark.parametrize("fill", ["pixel", "zero"])
def test_random_erasing_with_p_1_erases_one_box_per_image_within_the_bounds(fill):
    h, w = 24, 32
    images = torch.full((256, 2, h, w), 100.0)  # no fill value comes near 100
    out = random_erasing(images, torch.Generator().manual_seed(0), p=1.0, fill=fill)
    erased = out != images
    assert torch.equal(erased[:, 0], erased[:, 1])  # all channels
    heights, widths = [], []
    for box in erased[:, 0]:
        rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
        bh, bw = len(rows), len(cols)
        assert bh and bw and bool(box[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all()), "not one box"
        assert box.sum() == bh * bw
        heights.append(bh)
        widths.append(bw)
    bh, bw = torch.tensor(heights, dtype=torch.float64), torch.tensor(widths, dtype=torch.float64)
    # Each side is its real length (area * aspect) ** 0.5 or (area / aspect) ** 0.5 rounded, so
    # (bh - 1/2)(bw - 1/2) <= area <= (bh + 1/2)(bw + 1/2), and likewise for the aspect ratio.
    assert bool(((bh - 0.5) * (bw - 0.5) <= h * w / 3).all()) and bool(((bh + 0.5) * (bw + 0.5) >= 0.02 * h * w).all())
    assert bool(((bh - 0.5) / (bw + 0.5) <= 1 / 0.3).all()) and bool(((bh + 0.5) / (bw - 0.5) >= 0.3).all())
    assert bh.std() > 1 and bw.std() > 1 and (bh > bw).any() and (bh < bw).any()
    values = out[erased]
    if fill == "zero":
        assert bool((values == 0).all())
    else:  # standard normal values
        assert abs(values.mean()) < 0.05 and abs(values.std() - 1) < 0.05


def test_random_erasing_erases_about_p_of_the_images_and_the_seed_alone_decides():
    images = torch.randn(1000, 1, 8, 8)
    out = random_erasing(images, torch.Generator().manual_seed(0), p=0.25)
    assert 0.2 < (out != images).flatten(1).any(1).float().mean() < 0.3
    assert torch.equal(out, random_erasing(images, torch.Generator().manual_seed(0), p=0.25))


def test_bad_arguments_are_refused_in_one_line():
    g = torch.Generator()
    x = random_images()
    cases = [
        (lambda: rand_augment(x.float(), g), r"^expected uint8 images \(B, C, H, W\) with C 1 or 3, got torch.float32"),
        (lambda: rand_augment(x[:, :2], g), r"C 1 or 3, got torch.uint8 of shape \(6, 2, 16, 16\)$"),
        (lambda: rand_augment(x, g, magnitude=31), r"^magnitude=31 must be a level in \[0, 30\]$"),
        (lambda: rand_augment(x, g, num_ops=-1), r"^num_ops=-1 must be a non-negative integer$"),
        (lambda: rand_augment(x, g, magnitude_std=-0.5), r"^magnitude_std=-0.5 must be a finite non-negative number$"),
        (lambda: apply_op(x, "Invert"), r"^op='Invert' is not one of Identity, ShearX, .*, Equalize$"),
        (lambda: random_erasing(x, g), r"^expected float images \(B, C, H, W\), got torch.uint8"),
        (lambda: random_erasing(x.float(), g, p=1.5), r"^p=1.5 must be a probability in \[0, 1\]$"),
        (lambda: random_erasing(x.float(), g, area=(0.5, 0.1)), r"^area=\(0.5, 0.1\) must be fractions"),
        (lambda: random_erasing(x.float(), g, aspect=(0.0, 3.0)), r"^aspect=\(0.0, 3.0\) must be ratios"),
        (lambda: random_erasing(x.float(), g, fill="mean"), r"^fill='mean' is not one of pixel, zero$"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_a_batch_of_fashion_mnist_size_takes_well_under_a_second_on_the_cpu():
    images = random_images(n=512, c=1, h=28, w=28)
    for augment in (rand_augment, trivial_augment):
        augment(images, torch.Generator().manual_seed(0))  # warm-up
        start = time.perf_counter()
        augment(images, torch.Generator().manual_seed(1))
        assert time.perf_counter() - start < 0.5, augment.__name__
    start = time.perf_counter()
    random_erasing(images.float(), torch.Generator().manual_seed(1))
    assert time.perf_counter() - start < 0.5


@pytest.mark.gpu
def test_on_the_gpu_the_ops_equal_the_cpus_and_never_wait_for_the_host():
    images = random_images(n=64, h=28, w=28)
    gpu = images.cuda()
    magnitudes = {"Rotate": 30.0, "TranslateX": 5.0, "TranslateY": -5.0, "Posterize": 3, "Solarize": 100}
    for op in OPS:
        magnitude = magnitudes.get(op, 1.3 if op in ("Brightness", "Color", "Contrast", "Sharpness") else 0.2)
        diff = (apply_op(gpu, op, magnitude).cpu().int() - apply_op(images, op, magnitude).int()).abs()
        # Float rounding (fused multiply-adds on the GPU) may truncate a blend one level apart.
        assert (diff > 1).float().mean() < 0.005 and (diff > 0).float().mean() < 0.01, op
    g = torch.Generator(device="cuda").manual_seed(0)
    rand_augment(gpu, g, magnitude_std=0.5)  # warm-up: kernels load
    torch.cuda.set_sync_debug_mode("error")  # any host synchronisation raises
    try:
        out = rand_augment(gpu, g, magnitude_std=0.5)
        out = trivial_augment(out, g)
        erased = random_erasing(out.float(), g)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert erased.device.type == "cuda" and erased.shape == images.shape
