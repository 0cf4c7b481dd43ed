"""decode="device": JPEGs read as bytes by the workers, decoded a batch at a time where the batch is
assembled. On a CPU the pixels must equal the workers' to the bit; on a GPU (nvJPEG) be close."""

import pytest
import torch
from datagen import save_image
from PIL import Image

from resnets.data import FolderTransforms, load_dataset
from resnets.data.augment import RandAugmentPolicy
from resnets.data.imagefolder import ImageFiles, scan
from resnets.data.images import Encoded, ImageError, decode_batch, read_encoded, read_image
from resnets.train.config import TrainConfig

TINY = FolderTransforms(image_size=32, resize_range=(36, 48), test_resize=36, scales=(32, 40))
# Every per-image draw of the training view: crop, flip, RandAugment, lighting, erasing.
BUSY = FolderTransforms(
    image_size=32,
    resize_range=(36, 48),
    test_resize=36,
    scales=(32, 40),
    randaugment=RandAugmentPolicy(2, 9, 0.5, style="torchvision"),
    erasing=0.5,
)


@pytest.fixture
def jpeg_root(image_root):
    """image_root, with JPEGs in val/, a truncated JPEG (header fine, data cut), a CMYK JPEG and a PNG named .jpg."""
    for name, color in (("cat", (200, 40, 40)), ("dog", (40, 200, 40))):
        save_image(image_root / "val" / name / "2.jpg", (52, 44), color)
    whole = image_root / "train" / "cat" / "0.jpg"
    noise = torch.randint(0, 256, (40, 48, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    Image.fromarray(noise.numpy()).save(image_root / "train" / "cat" / "cut.jpg")  # mostly data, little header
    data = (image_root / "train" / "cat" / "cut.jpg").read_bytes()
    (image_root / "train" / "cat" / "cut.jpg").write_bytes(data[: len(data) // 2])
    Image.open(whole).convert("CMYK").save(image_root / "train" / "dog" / "cmyk.jpg")
    Image.open(whole).save(image_root / "train" / "eel" / "png.jpg", format="PNG")
    return image_root


def load(root, decode, **kwargs):
    options = {"batch_size": 5, "eval_batch_size": 3, "num_workers": 0, "folder_transforms": BUSY, **kwargs}
    return load_dataset(f"imagefolder:{root}", decode=decode, **options)


def same(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b, strict=True)
    )


def test_read_encoded_keeps_the_bytes_of_plain_jpegs_and_decodes_the_rest(jpeg_root):
    plain = read_encoded(jpeg_root / "train" / "cat" / "0.jpg")
    assert isinstance(plain, Encoded) and plain.data == (jpeg_root / "train" / "cat" / "0.jpg").read_bytes()
    for path in ("train/dog/cmyk.jpg", "train/eel/png.jpg", "train/dog/grey.png"):
        pixels = read_encoded(jpeg_root / path)
        assert isinstance(pixels, torch.Tensor) and torch.equal(pixels, read_image(str(jpeg_root / path)))


def test_read_encoded_refuses_what_read_image_refuses_with_its_message(jpeg_root):
    big = jpeg_root / "train" / "cat" / "1.jpg"
    broken = jpeg_root / "train" / "eel" / "broken.jpg"
    for path, limit in ((big, 100), (broken, None)):
        with pytest.raises(ImageError) as expected:
            read_image(str(path), 3, limit)
        with pytest.raises(ImageError) as got:
            read_encoded(path, 3, limit)
        assert str(got.value) == str(expected.value)


def test_decode_batch_equals_read_image_and_names_a_corrupt_file(jpeg_root):
    paths = [
        jpeg_root / "train" / "cat" / "0.jpg",
        jpeg_root / "train" / "cat" / "cut.jpg",
        jpeg_root / "val" / "dog" / "2.jpg",
    ]
    images = decode_batch([read_encoded(p) for p in paths], 3, torch.device("cpu"))
    assert torch.equal(images[0], read_image(str(paths[0]))) and torch.equal(images[2], read_image(str(paths[2])))
    assert isinstance(images[1], ImageError) and str(paths[1]) in str(images[1])
    assert decode_batch([], 3, torch.device("cpu")) == []


def test_on_a_cpu_the_device_decoder_gives_the_workers_batches_to_the_bit(jpeg_root):
    workers, device = load(jpeg_root, "workers"), load(jpeg_root, "device")
    assert same(list(workers.train.epoch(1)), list(device.train.epoch(1)))
    assert workers.train.bad_images == device.train.bad_images == 2  # broken.jpg, cut.jpg
    assert same(list(workers.train.epoch(2, start=1)), list(device.train.epoch(2, start=1)))
    assert same(list(workers.test.epoch(0)), list(device.test.epoch(0)))
    for view in ("ten_crop", "multi_scale"):
        for (a, y), (b, v) in zip(workers.test_views(view), device.test_views(view), strict=True):
            assert torch.equal(y, v) and len(a) == len(b) and all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_the_device_decoder_with_worker_processes_and_fail_mode(jpeg_root):
    assert same(
        list(load(jpeg_root, "device").train.epoch(0)), list(load(jpeg_root, "device", num_workers=2).train.epoch(0))
    )
    bundle = load(jpeg_root, "device", bad_images="fail", batch_size=19)  # every training image in one batch
    with pytest.raises(ValueError, match=r"cannot decode image .*(broken|cut)\.jpg"):
        list(bundle.train.epoch(0))


def test_worker_items_are_bytes_for_jpegs_and_views_for_other_files(jpeg_root):
    _, train, _ = scan(jpeg_root)
    files = ImageFiles(train, "train", TINY, decode="device")
    kinds = {path.rsplit("/", 1)[-1]: type(files[i, 7][0]).__name__ for i, (path, _) in enumerate(train)}
    assert kinds["0.jpg"] == "Encoded" and kinds["cmyk.jpg"] == kinds["grey.png"] == "list"
    assert type(files[[p for p, _ in train].index(str(jpeg_root / "train" / "eel" / "broken.jpg")), 7]).__name__ == (
        "Unreadable"
    )


def test_decode_is_checked_and_belongs_to_image_folders(jpeg_root):
    with pytest.raises(ValueError, match="decode='gpu' is not one of workers, device"):
        load(jpeg_root, "gpu")
    with pytest.raises(ValueError, match="decode='gpu' is not one of workers, device"):
        TrainConfig(data=f"imagefolder:{jpeg_root}", decode="gpu")
    with pytest.raises(ValueError, match="decode applies to image folders, not to fashion-mnist"):
        TrainConfig(data="fashion-mnist", decode="device")


@pytest.mark.gpu
def test_nvjpeg_pixels_are_close_to_libjpeg_turbo_and_batches_keep_their_order(jpeg_root):
    cuda = torch.device("cuda")
    paths = sorted((jpeg_root / "train").rglob("[0-9].jpg")) + sorted((jpeg_root / "val").rglob("*.jpg"))
    images = decode_batch([read_encoded(p) for p in paths], 3, cuda)
    for path, image in zip(paths, images, strict=True):
        reference = read_image(str(path)).float()
        assert image.device.type == "cuda" and image.shape == reference.shape
        # nvJPEG's IDCT and chroma upsampling differ from libjpeg-turbo's by a few levels at edges.
        assert (image.cpu().float() - reference).abs().mean() < 2.0, path
    workers, device = load(jpeg_root, "workers", device=cuda), load(jpeg_root, "device", device=cuda)
    std = workers.normalization[1]
    for (a, y), (b, v) in zip(workers.train.epoch(1), device.train.epoch(1), strict=True):
        assert torch.equal(y, v) and b.device.type == "cuda"
        assert ((a - b) * std).abs().mean() < 4.0  # pixel levels, after resizing on different devices
    assert device.train.bad_images == 2


def test_a_run_that_decodes_on_the_device_trains_resumes_and_evaluates_as_it_decoded(jpeg_root, tmp_path):
    from resnets.inference import evaluate_checkpoint
    from resnets.train import TrainConfig, train

    common = {"model": "resnet8", "data": f"imagefolder:{jpeg_root}", "batch_size": 4, "num_workers": 0}
    common |= {
        "device": "cpu",
        "image_size": 32,
        "test_size": 32,
        "test_resize": 36,
        "randaugment": "rand-m6-mstd0.5-inc1",
    }
    common |= {"epochs": 2, "keep": 10}
    whole = train(TrainConfig(**common, decode="device", out=str(tmp_path / "whole")))
    workers = train(TrainConfig(**common, out=str(tmp_path / "workers")))
    assert [r["train_loss"] for r in whole.history] == [r["train_loss"] for r in workers.history]  # bitwise on a CPU
    # broken.jpg and cut.jpg, in each of 2 epochs, and once as the replacement drawn for one of them.
    assert whole.history[-1]["bad_images"] == workers.history[-1]["bad_images"] == 5
    assert whole.history[-1]["bad_image_files"] == [
        str(jpeg_root / "train" / "cat" / "cut.jpg"),
        str(jpeg_root / "train" / "eel" / "broken.jpg"),
    ]
    checkpoint = tmp_path / "whole" / "checkpoints" / "step-00000004.pt"  # the end of epoch 1
    resumed = train(TrainConfig(**common, decode="device", out=str(tmp_path / "resumed")), resume=checkpoint)
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert evaluate_checkpoint(str(whole.weights), device="cpu").top1_err == whole.history[-1]["test_err"]


@pytest.mark.gpu
def test_decoding_on_the_gpu_never_makes_the_host_wait_for_it(jpeg_root):
    # Not RandAugment: torchvision's own ops are not this project's to vouch for.
    transforms = FolderTransforms(image_size=32, resize_range=(36, 48), test_resize=36, erasing=0.5)
    bundle = load(jpeg_root, "device", device="cuda", folder_transforms=transforms)
    batches = bundle.train.epoch(0)
    next(batches)  # nvJPEG's decoder is created here, once
    torch.cuda.set_sync_debug_mode("error")  # a copy from pageable memory, an .item(), ... raises
    try:
        rest = list(batches)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert rest and all(images.device.type == labels.device.type == "cuda" for images, labels in rest)


def test_a_packed_batch_holds_a_tensor_a_view_not_a_tensor_a_file(jpeg_root):
    # Each tensor a worker sends holds a shared-memory file descriptor until it is received: one a file
    # would open hundreds a batch (thousands with prefetching) and exhaust a common limit of 1,024.
    from resnets.data.imagefolder import pack

    _, train, _ = scan(jpeg_root)
    files = ImageFiles(train, "train", TINY, decode="device")
    marks, (views, shifts, labels, bad) = pack([files[i, 7] for i in range(len(train))])
    jpegs = [m for m in marks if not isinstance(m, bool)]
    assert len(jpegs) == 7 and all(type(m[0].data) is bytearray for m in jpegs)  # 6 of the 12, and cut.jpg
    # 6 PNGs, grey.png, cmyk.jpg and png.jpg decoded by the worker; broken.jpg unreadable.
    assert marks.count(True) == len(labels) == len(views[0]) == 9 and marks.count(False) == len(bad) == 1
    assert len(views) == 1 and views[0].shape[1:] == (3, 32, 32) and shifts.shape == (len(labels), 3)


def test_a_file_the_device_decoder_refuses_is_decoded_on_the_cpu_and_a_refusing_decoder_is_named(
    jpeg_root, monkeypatch
):
    import resnets.data.images as images_module

    real = images_module.decode_jpeg

    def refusing(data, mode, device="cpu"):  # a device decoder that reads no file: nvJPEG on a subsampling it lacks
        if torch.device(device).type == "meta":
            raise RuntimeError("Unknown chroma subsampling")
        return real(data, mode=mode, device=device)

    moved = []  # what goes to the device, kept on the CPU so that its pixels can be compared

    def keep(tensor, device):
        moved.append(device)
        return tensor

    monkeypatch.setattr(images_module, "decode_jpeg", refusing)
    monkeypatch.setattr(images_module, "to_device", keep)
    good, cut = jpeg_root / "train" / "cat" / "0.jpg", jpeg_root / "train" / "cat" / "cut.jpg"
    image, bad = decode_batch([read_encoded(good), read_encoded(cut)], 3, torch.device("meta"))
    assert torch.equal(image, read_image(str(good))) and moved == [torch.device("meta")]  # libjpeg-turbo's pixels
    assert isinstance(bad, ImageError) and "Image is incomplete or truncated" in str(bad)  # libjpeg-turbo's words
    both = [read_encoded(good), read_encoded(jpeg_root / "val" / "dog" / "2.jpg")]
    with pytest.raises(ValueError, match=r"decoder on meta refuses all 2 files .*0\.jpg: Unknown chroma subsampling"):
        decode_batch(both, 3, torch.device("meta"))
