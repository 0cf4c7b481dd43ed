"""The folder the docstring examples of src/ run in (`--doctest-modules`).

An example is written as a user would type it, naming files in the current folder; each runs in a
folder of the session that holds them all: two tiny finished runs (runs/r20, runs/plain20), a few
images (photo.jpg, a.jpg, b.jpg, boot.png) and an image folder (pets/, classes cat and dog). It is
built when the first example runs, in about a second; tests that are not examples never build it.
"""

import io
from pathlib import Path

import pytest
import torch

# Trained through the library as `resnets train` would: one epoch of two steps on small greyscale
# images (16x16: the examples that evaluate take a fraction of a second). The weights are noise: the
# examples show shapes and names, and `...` for an error or a probability.
RUN = {
    "recipe": "test",
    "data": "synthetic:1,16,16,10",
    "subset": 64,
    "batch_size": 32,
    "eval_batch_size": 64,
    "epochs": 1,
    "device": "cpu",
    "seed": 0,
}
RUNS = {"r20": "resnet20", "plain20": "plain20"}  # folder: model (Fig. 7's examples compare the two)
IMAGES = {"photo.jpg": (500, 375, "RGB"), "a.jpg": (64, 48, "RGB"), "b.jpg": (48, 64, "RGB"), "boot.png": (28, 28, "L")}
FOLDER = {"train": 4, "val": 2}  # images a class in each split of pets/


def _image(path: Path, width: int, height: int, mode: str) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.radial_gradient("L").resize((width, height)).convert(mode).save(path)


@pytest.fixture(scope="session")
def example_folder(tmp_path_factory) -> Path:
    """A folder holding the files that the docstring examples name."""
    from resnets.train import TrainConfig, train

    root = tmp_path_factory.mktemp("examples")
    for folder, model in RUNS.items():
        train(TrainConfig(**RUN, model=model, out=str(root / "runs" / folder)), stream=io.StringIO())
    for name, (width, height, mode) in IMAGES.items():
        _image(root / name, width, height, mode)
    for split, n in FOLDER.items():
        for label in ("cat", "dog"):
            for i in range(n):
                _image(root / "pets" / split / label / f"{i}.jpg", 40, 32, "RGB")
    return root


def pytest_collection_modifyitems(config, items):
    # export_model's example writes TorchScript, which torch deprecates (as tests/test_export.py notes).
    torchscript_deprecated = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
    for item in items:
        if isinstance(item, pytest.DoctestItem):
            item.add_marker(torchscript_deprecated)


@pytest.fixture(autouse=True)
def _examples_run_in_their_folder(request, monkeypatch):
    if not isinstance(request.node, pytest.DoctestItem):
        yield
        return
    # One thread: the examples' batches are tiny, and two threads on a machine whose cores are
    # busy with other work wait on each other (the examples took four times as long).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        monkeypatch.chdir(request.getfixturevalue("example_folder"))
        yield
    finally:
        torch.set_num_threads(threads)
