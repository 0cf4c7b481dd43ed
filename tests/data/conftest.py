"""Fixtures for the data tests: no network, no user cache, tiny generated datasets."""

from pathlib import Path

import pytest
from datagen import save_image


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    # Tests never read the user's RESNETS_DATA or write to ~/.cache.
    monkeypatch.delenv("RESNETS_DATA", raising=False)
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def image_root(tmp_path) -> Path:
    """train/{cat,dog,eel} with 4 images each (JPEG, PNG, one greyscale, one corrupt), val/ with 2 each."""
    root = tmp_path / "images"
    colors = {"cat": (200, 40, 40), "dog": (40, 200, 40), "eel": (40, 40, 200)}
    for k, (name, color) in enumerate(colors.items()):
        for i in range(4):
            size = (64, 48) if i % 2 else (48, 60)
            suffix = ".png" if (i + k) % 2 else ".jpg"
            save_image(root / "train" / name / f"{i}{suffix}", size, color)
        for i in range(2):
            save_image(root / "val" / name / f"{i}.png", (56, 48), color)
    save_image(root / "train" / "dog" / "grey.png", (50, 50), (90, 90, 90), mode="L")
    (root / "train" / "eel" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" + bytes(range(256)))
    (root / "train" / "eel" / "notes.txt").write_text("not an image: ignored")
    return root
