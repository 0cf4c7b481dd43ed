"""Where a classifier fails: per-class accuracy, the confusion matrix, calibration error and the
worst mistakes, checked against counts made by hand on small examples."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from resnets.analysis.mistakes import (
    FILES,
    ErrorCounter,
    bin_index,
    calibration_sums,
    confusion_matrix,
    expected_calibration_error,
    most_confident_errors,
    per_class_accuracy,
    to_pixels,
    write_error_analysis,
)
from resnets.data import normalize
from resnets.errors import NonFiniteOutputs
from resnets.files import check_output_folder
from resnets.train.evaluate import evaluate

NAMES = ["cat", "dog", "bird"]
# Seven images of three classes: (logits, label); by hand, the prediction is the largest logit.
HAND = [
    ([3.0, 1.0, 0.0], 0),  # right
    ([0.0, 2.0, 1.0], 0),  # predicted dog
    ([0.0, 4.0, 1.0], 1),  # right
    ([0.0, 0.0, 5.0], 1),  # predicted bird
    ([2.0, 1.0, 0.0], 2),  # predicted cat
    ([0.0, 1.0, 3.0], 2),  # right
    ([1.0, 0.0, 2.0], 2),  # right
]
# Rows: true class; columns: predicted.
HAND_CONFUSION = [
    [1, 1, 0],
    [0, 1, 1],
    [1, 0, 2],
]


def hand_tensors():
    logits = torch.tensor([row for row, _ in HAND])
    labels = torch.tensor([label for _, label in HAND])
    return logits, labels


def counted(probs, labels, batch=3):
    """An ErrorCounter's result over `probs` (N, 3), fed `batch` images at a time."""
    counter = ErrorCounter(NAMES)
    for i in range(0, len(labels), batch):
        counter.update(probs[i : i + batch], labels[i : i + batch])
    return counter.result()


def test_confusion_and_per_class_accuracy_agree_with_a_hand_count():
    logits, labels = hand_tensors()
    assert confusion_matrix(logits.argmax(1), labels, 3).tolist() == HAND_CONFUSION
    result = counted(F.softmax(logits, 1), labels, batch=3)  # three batches: 3 + 3 + 1 images
    assert result.confusion == HAND_CONFUSION
    assert result.n == 7 and result.correct == 4
    assert result.top1_err == 3 / 7
    assert [(c["class"], c["n"], c["correct"], c["accuracy"]) for c in result.per_class()] == [
        ("cat", 2, 1, 0.5),
        ("dog", 2, 1, 0.5),
        ("bird", 3, 2, 2 / 3),
    ]
    assert [c["class"] for c in result.worst_classes(2)] == ["cat", "dog"]  # equal accuracy: label order
    assert per_class_accuracy(torch.tensor([[2, 0], [0, 0]])) == [1.0, None]  # a class without images


def test_counts_equal_evaluate_on_the_same_scores():
    """The single pass of `resnets eval --out` gives the errors that `evaluate` gives."""

    class Lookup(nn.Module):  # the logits are the image: (N, 1, 1, K)
        def __init__(self) -> None:
            super().__init__()
            self.anchor = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return x[:, 0, 0, :] + self.anchor

    logits = torch.randn(200, 7, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 7, (200,), generator=torch.Generator().manual_seed(2))
    reference = evaluate(Lookup(), [(logits[:, None, None, :], labels)], channels_last=False)
    counter = ErrorCounter([str(i) for i in range(7)], worst=4)
    for i in range(0, 200, 64):
        counter.update(F.softmax(logits[i : i + 64], 1), labels[i : i + 64])
    result = counter.result()
    assert (result.top1_err, result.top5_err, result.n) == (reference.top1_err, reference.top5_err, reference.n)
    assert math.isclose(result.loss, reference.loss, rel_tol=1e-6)  # float32 sums, batched otherwise
    assert 1 - sum(result.confusion[i][i] for i in range(7)) / result.n == pytest.approx(reference.top1_err)


def test_bins_are_half_open_at_the_bottom_as_in_guo_et_al():
    edges = torch.tensor([1e-6, 1 / 15, 1 / 15 + 1e-4, 0.5, 14 / 15 + 1e-4, 1.0], dtype=torch.float64)
    assert bin_index(edges).tolist() == [0, 0, 1, 7, 14, 14]


def test_ece_equals_a_hand_computation():
    probs = torch.tensor(
        [
            [0.95, 0.03, 0.02],  # label 0: right
            [0.95, 0.03, 0.02],  # label 1: wrong
            [0.62, 0.20, 0.18],  # label 0: right
            [0.18, 0.62, 0.20],  # label 1: right
            [0.45, 0.35, 0.20],  # label 2: wrong
        ]
    )
    labels = torch.tensor([0, 1, 0, 1, 2])
    # Bins of width 1/15: 0.95 in (14/15, 1], 0.62 in (9/15, 10/15], 0.45 in (6/15, 7/15].
    # |B|/n |acc - conf|: 2/5 |0.5 - 0.95| + 2/5 |1 - 0.62| + 1/5 |0 - 0.45| = 0.18 + 0.152 + 0.09
    hand = 0.422
    result = counted(probs, labels, batch=2)
    assert result.ece == pytest.approx(hand, abs=1e-6)
    bins = result.calibration()
    assert [i for i, b in enumerate(bins) if b["n"]] == [6, 9, 14]
    assert bins[14]["n"] == 2 and bins[14]["accuracy"] == 0.5 and bins[14]["confidence"] == pytest.approx(0.95)
    assert bins[0]["accuracy"] is None and bins[0]["confidence"] is None
    assert (bins[14]["lower"], bins[14]["upper"]) == (14 / 15, 1.0)
    sums = calibration_sums(probs.max(1).values, probs.argmax(1) == labels)
    assert expected_calibration_error(sums) == pytest.approx(hand, abs=1e-6)


def test_ece_is_zero_when_confidence_equals_accuracy():
    # Ten images at confidence 0.7 of which 7 are right, ten at 0.9 of which 9 are right.
    probs = torch.tensor([[0.7, 0.2, 0.1]] * 10 + [[0.9, 0.05, 0.05]] * 10)
    labels = torch.tensor([0] * 7 + [1] * 3 + [0] * 9 + [2])
    result = counted(probs, labels, batch=8)
    assert result.ece == pytest.approx(0.0, abs=1e-6)
    assert [b["accuracy"] for b in result.calibration() if b["n"]] == [0.7, 0.9]


def test_worst_mistakes_are_the_most_confident_wrong_answers_across_batches():
    # Twelve images of three classes; the wrong ones (at 1, 4, 6, 7, 11) with distinct confidences.
    confidence = [0.9, 0.5, 0.8, 0.7, 0.95, 0.6, 0.85, 0.4, 0.99, 0.7, 0.6, 0.75]
    wrong = {1, 4, 6, 7, 11}
    labels = torch.zeros(12, dtype=torch.long)
    probs = torch.zeros(12, 3)
    for i, c in enumerate(confidence):
        probs[i] = (1 - c) / 2  # the rest shared by the two other classes: c is the largest
        probs[i, 1 if i in wrong else 0] = c
    images = torch.arange(12, dtype=torch.float32).reshape(12, 1, 1, 1).expand(12, 1, 2, 2)  # image i is all i
    by_confidence = [4, 6, 11, 1, 7]  # 0.95, 0.85, 0.75, 0.5, 0.4
    predicted = probs.argmax(1)
    assert most_confident_errors(probs.max(1).values, predicted, labels, k=3).tolist() == by_confidence[:3]

    for k, batch in ((3, 5), (3, 12), (10, 4)):
        counter = ErrorCounter(NAMES, worst=k)
        for i in range(0, 12, batch):
            counter.update(probs[i : i + batch], labels[i : i + batch], images[i : i + batch])
        result = counter.result(mean=torch.zeros(1, 1, 1), std=torch.ones(1, 1, 1))
        expected = by_confidence[:k]
        assert [m.index for m in result.worst] == expected, (k, batch)
        assert [m.confidence for m in result.worst] == pytest.approx([confidence[i] for i in expected])
        assert all(m.label == 0 and m.predicted == 1 for m in result.worst)
        assert result.worst_pixels[:, 0, 0, 0].tolist() == expected  # each mistake kept with its own image

    counter = ErrorCounter(NAMES, worst=0)
    counter.update(probs, labels, images)
    assert counter.result().worst == []


def test_worst_images_are_shown_unnormalised():
    pixels = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = pixels.float().mean(0), torch.tensor([50.0, 60.0, 70.0]).reshape(3, 1, 1)
    assert torch.equal(to_pixels(normalize(pixels, mean, std), mean, std), pixels)


def test_non_finite_scores_and_empty_input_are_refused():
    counter = ErrorCounter(NAMES)
    counter.update(torch.tensor([[float("nan"), 0.5, 0.5]]), torch.tensor([0]))
    with pytest.raises(NonFiniteOutputs, match="not finite"):
        counter.result()
    with pytest.raises(ValueError, match="no images"):
        ErrorCounter(NAMES).result()
    with pytest.raises(ValueError, match=r"scores of shape \(2, 4\) for 3 classes"):
        ErrorCounter(NAMES).update(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="worst=-1"):
        ErrorCounter(NAMES, worst=-1)


def test_files_written_hold_the_values_and_valid_pngs(tmp_path):
    logits, labels = hand_tensors()
    counter = ErrorCounter(NAMES, worst=2)
    counter.update(F.softmax(logits, 1), labels, torch.rand(7, 3, 8, 8))
    result = counter.result(mean=torch.full((3, 1, 1), 128.0), std=torch.full((3, 1, 1), 60.0))
    paths = write_error_analysis(result, tmp_path / "eval")
    assert [p.name for p in paths] == list(FILES)
    saved = json.loads(paths[0].read_text())
    assert saved["confusion"] == HAND_CONFUSION
    assert saved["class_names"] == NAMES
    assert saved["ece"] == pytest.approx(result.ece)
    assert [w["index"] for w in saved["worst"]] == [m.index for m in result.worst]
    assert saved["worst"][0]["predicted_class"] == NAMES[result.worst[0].predicted]
    for png in paths[1:]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(png) as image:
            image.verify()

    perfect = ErrorCounter(NAMES)
    perfect.update(torch.eye(3), torch.arange(3), torch.zeros(3, 1, 4, 4))
    paths = write_error_analysis(perfect.result(), tmp_path / "perfect")  # no mistake: the sheet says so
    assert Image.open(paths[3]).size[0] > 0


def test_an_output_folder_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"--out .*file is a file, not a folder"):
        check_output_folder(tmp_path / "file", FILES)
    with pytest.raises(ValueError, match=r"below: .*file is a file, not a folder"):
        check_output_folder(tmp_path / "file" / "below", FILES)
    assert check_output_folder(tmp_path / "new" / "eval", FILES) == tmp_path / "new" / "eval"
    assert not (tmp_path / "new").exists()  # checked, not made: a failed command leaves no empty folder


@pytest.mark.gpu
def test_counting_on_a_gpu_never_waits_for_it_until_the_result():
    g = torch.Generator().manual_seed(0)
    probs = F.softmax(torch.randn(3, 64, 10, generator=g), -1)
    labels = torch.randint(0, 10, (3, 64), generator=g)
    images = torch.randn(3, 64, 3, 8, 8, generator=g)
    names = [str(i) for i in range(10)]
    results = []
    for device in ("cpu", "cuda"):
        counter = ErrorCounter(names, device, worst=8)
        batches = list(zip(probs.to(device), labels.to(device), images.to(device), strict=True))
        torch.cuda.set_sync_debug_mode("error" if device == "cuda" else "default")  # a host sync per batch raises
        try:
            for p, y, x in batches:
                counter.update(p, y, x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        results.append(counter.result())
    cpu, cuda = results
    assert cuda.confusion == cpu.confusion and cuda.top5_correct == cpu.top5_correct
    assert cuda.ece == pytest.approx(cpu.ece, abs=1e-6)
    assert [m.index for m in cuda.worst] == [m.index for m in cpu.worst]
