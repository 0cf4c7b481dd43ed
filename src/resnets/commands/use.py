"""Using a trained model: `resnets eval`, `predict`, `embed`, `export` and `convert`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..analysis.mistakes import CALIBRATION_BINS, WORST, write_error_analysis
from ..analysis.mistakes import FILES as ERROR_FILES
from ..data.base import BAD_IMAGES
from ..export import FORMATS, export_model
from ..files import atomic_write, check_output_file, check_output_folder
from ..inference import Predictor, analyse_checkpoint, evaluate_checkpoint, expand_paths, predictions_csv
from ..models.convert import SOURCES, Inputs, convert_file
from ..text import printable
from ..trained import model_from_checkpoint, trained_metadata
from . import SUMMARIES
from .arguments import ShownDefaults, Subparsers, add_device, add_pixel_limit, positive_int, print_json

MAX_WORST = 1000  # images on one sheet of mistakes (a sheet of 1,000 thumbnails is already hard to read)
CHECKPOINT_HELP = "a run folder (its model.safetensors), a checkpoint .pt, or a .safetensors file"
IMAGES_HELP = "image files, or folders searched for them"


def add_eval(sub: Subparsers) -> None:
    p = sub.add_parser(
        "eval",
        help=SUMMARIES["eval"],
        formatter_class=ShownDefaults,
    )
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--data", help="dataset (default: the one it was trained on)")
    p.add_argument("--data-dir", help="where the dataset's files are (default: the usual places)")
    p.add_argument("--ten-crop", action="store_true", help="average 10 crops (corners, centre, flips)")
    p.add_argument("--multi-scale", action="store_true", help="fully convolutional, 5 scales (image folders)")
    p.add_argument("--flip", action="store_true", help="also average each view's mirror image (not in the paper)")
    add_test_view(p)
    p.add_argument("--batch-size", type=positive_int, help="images per batch (default: the run's eval batch)")
    add_device(p, "auto")
    p.add_argument(
        "--bad-images",
        choices=BAD_IMAGES,
        default="skip",
        help="an unreadable test image: left out, counted and named beside the errors (skip), or an error (fail)",
    )
    p.add_argument(
        "--allow-other-classes",
        action="store_true",
        help="evaluate on a dataset whose class names differ from the checkpoint's (labels compared by index)",
    )
    add_pixel_limit(p)
    p.add_argument(
        "--out",
        metavar="DIR",
        help="also write where the model fails into DIR: eval.json (accuracy per class, confusion matrix, "
        "calibration), confusion.png, reliability.png, worst.png",
    )
    p.add_argument(
        "--worst",
        type=positive_int,
        metavar="K",
        help=f"misclassified images of highest confidence on worst.png (default: {WORST}; needs --out)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print {top1_err, top5_err, loss, n, ece, per_class} as JSON on stdout",
    )
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    if args.ten_crop and args.multi_scale:
        raise ValueError("--ten-crop and --multi-scale are exclusive: choose one test view")
    if args.worst is not None and args.out is None:
        raise ValueError(f"--worst {args.worst} sets the images of worst.png: give --out DIR too")
    if args.worst is not None and args.worst > MAX_WORST:
        raise ValueError(f"--worst {args.worst}: worst.png shows at most {MAX_WORST:,} images")
    view = "ten_crop" if args.ten_crop else "multi_scale" if args.multi_scale else "center"
    out = check_output_folder(args.out, ERROR_FILES) if args.out is not None else None  # before the work, not after it
    where = (args.checkpoint, args.data, args.data_dir, view, args.device, args.batch_size)
    options = {"allow_other_classes": args.allow_other_classes, "max_image_pixels": args.max_image_pixels}
    options.update(bad_images=args.bad_images, test_size=args.test_size, test_resize=args.test_resize)
    if out is None and not args.json:
        result = evaluate_checkpoint(*where, **options, flip=args.flip)
        print(_eval_line(args.checkpoint, result, view))
        return 0
    worst = 0 if out is None else args.worst or WORST  # no sheet without --out: no images kept
    analysis = analyse_checkpoint(*where, **options, flip=args.flip, worst=worst)
    if out is not None:
        write_error_analysis(analysis, out)
    if args.json:
        print_json(analysis.summary())
        return 0
    print(_eval_line(args.checkpoint, analysis, view))
    print(f"expected calibration error {100 * analysis.ece:.2f}% ({CALIBRATION_BINS} bins of confidence)")
    worst_classes = [
        f"{printable(c['class'])} {100 * c['accuracy']:.1f}% ({c['correct']}/{c['n']})"
        for c in analysis.worst_classes(3)
    ]
    print("least accurate classes: " + ", ".join(worst_classes))
    print(f"written to {out}: {', '.join(ERROR_FILES)} ({len(analysis.worst)} mistakes on the sheet)")
    return 0


def add_test_view(p: argparse.ArgumentParser) -> None:
    """--test-size and --test-resize: the test view of image files, in place of the one the weights record."""
    p.add_argument("--test-size", type=positive_int, help="side of the test crop (default: the one the weights record)")
    p.add_argument(
        "--test-resize",
        type=positive_int,
        help="shorter side before the crop (default: the recorded one; with --test-size, 256/224 of it)",
    )


def _eval_line(checkpoint: str, result, view: str) -> str:
    line = (
        f"{checkpoint}: top-1 error {100 * result.top1_err:.2f}%, top-5 error "
        f"{100 * result.top5_err:.2f}% on {result.n} test images ({view.replace('_', '-')})"
    )
    return line + unreadable_note(result.unreadable)


def unreadable_note(files: list[str]) -> str:
    """What a figure computed without some unreadable test images says beside itself.

    >>> unreadable_note(["a.jpg", "b.jpg"])
    '; 2 unreadable images left out (a.jpg and 1 more)'
    """
    if not files:
        return ""
    more = f" and {len(files) - 1} more" if len(files) > 1 else ""
    s = "s" if len(files) != 1 else ""
    return f"; {len(files)} unreadable image{s} left out ({printable(files[0])}{more})"


def add_predict(sub: Subparsers) -> None:
    p = sub.add_parser("predict", help=SUMMARIES["predict"], formatter_class=ShownDefaults)
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help=IMAGES_HELP)
    p.add_argument("--topk", type=positive_int, default=5, help="classes shown per image")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per batch")
    add_device(p, "auto")
    add_pixel_limit(p)
    add_test_view(p)
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout (classes and indices)")
    p.add_argument("--csv", metavar="FILE", help="also write the top-k classes, indices and probabilities as CSV")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    out = (
        check_output_file(args.csv, ".csv", flag="--csv") if args.csv is not None else None
    )  # before the work, not after it
    paths = expand_paths(args.images)
    view = {"test_size": args.test_size, "test_resize": args.test_resize}
    predictor = Predictor(args.checkpoint, args.device, args.max_image_pixels, **view)
    results = predictor.predict(paths, args.topk, args.batch_size)
    if out is not None:
        atomic_write(out, predictions_csv(results, min(args.topk, len(predictor.class_names))).encode())
    for r in results:
        if args.json:
            print(json.dumps(r.to_dict()))
        elif r.error is None:
            print(f"{printable(r.path)}: " + ", ".join(f"{printable(name)} {100 * p:.1f}%" for name, p in r.top))
        if r.error is not None:
            print(f"resnets: {printable(r.error)}", file=sys.stderr)
    failed = sum(r.error is not None for r in results)
    if out is not None:
        print(f"{len(results)} predictions written to {out}", file=sys.stderr)
    if failed:
        print(f"resnets: {failed} of {len(results)} images could not be read", file=sys.stderr)
    return 1 if failed else 0


def add_embed(sub: Subparsers) -> None:
    p = sub.add_parser("embed", help=SUMMARIES["embed"], formatter_class=ShownDefaults)
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help=IMAGES_HELP)
    p.add_argument(
        "--out", required=True, help="the .npy file to write (N, num_features); OUT.paths.json lists each row's file"
    )
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per batch")
    add_device(p, "auto")
    add_pixel_limit(p)
    add_test_view(p)
    p.set_defaults(func=cmd_embed)


def cmd_embed(args: argparse.Namespace) -> int:
    out = check_output_file(args.out, ".npy")  # before the work, not after it
    paths = expand_paths(args.images)
    view = {"test_size": args.test_size, "test_resize": args.test_resize}
    result = Predictor(args.checkpoint, args.device, args.max_image_pixels, **view).embed(paths, args.batch_size)
    npy, index = result.save(out)
    for f in result.failures:
        print(f"resnets: {printable(str(f.error))}", file=sys.stderr)
    rows, size = result.vectors.shape
    print(f"{rows} embeddings of size {size} written to {npy}; the file of each row in {index}")
    return 1 if result.failures else 0


def add_export(sub: Subparsers) -> None:
    p = sub.add_parser(
        "export",
        help=SUMMARIES["export"],
        formatter_class=ShownDefaults,
    )
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--format", required=True, choices=FORMATS, help="the artefact's format")
    p.add_argument("--out", required=True, help="the file to write")
    p.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the export and PyTorch on one batch; fail over 1e-4 times the outputs' scale",
    )
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    model, meta = model_from_checkpoint(args.checkpoint)
    data = meta.get("data") or {}
    size = (data["in_channels"], *data["image_size"]) if "image_size" in data and "in_channels" in data else None
    extra = trained_metadata(meta)  # what the run's own model.safetensors carries
    result = export_model(model, args.format, args.out, input_size=size, check=args.check, metadata=extra)
    checked = (
        f", max abs difference {result.max_abs_diff:.2e} against PyTorch" if result.max_abs_diff is not None else ""
    )
    print(f"{args.format} written to {result.path}{checked}")
    return 0


def add_convert(sub: Subparsers) -> None:
    p = sub.add_parser(
        "convert",
        help=SUMMARIES["convert"],
        formatter_class=ShownDefaults,
    )
    p.add_argument("file", help="the .pth/.pt/.safetensors state dict, or a timm/torchvision training checkpoint")
    p.add_argument("--from", dest="source", required=True, choices=SOURCES, help="the library the file comes from")
    p.add_argument("--to", required=True, help="OUT.safetensors")
    p.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compare outputs with the source library's model (when installed)",
    )
    shown = p.add_argument_group(
        "what the network is shown (stored in the file, used by eval and predict)",
        "ImageNet's by default: 224 crops of images resized to 256, ImageNet's mean and std and class names",
    )
    shown.add_argument("--input-size", type=positive_int, default=224, help="side of the test crop, in pixels")
    shown.add_argument("--test-resize", type=positive_int, help="shorter side before the crop (default: 256/224 of it)")
    shown.add_argument("--mean", type=float, nargs="+", metavar="M", help="per channel, in [0, 1] (timm's units)")
    shown.add_argument("--std", type=float, nargs="+", metavar="S", help="per channel, in [0, 1] units")
    shown.add_argument("--interpolation", choices=("bilinear", "bicubic"), default="bilinear", help="of the resize")
    shown.add_argument("--class-names", metavar="FILE", help="a text file of class names, one a line, in class order")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    names = None
    if args.class_names is not None:
        try:
            text = Path(args.class_names).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--class-names {args.class_names}: cannot read it ({exc})") from None
        names = tuple(line.strip() for line in text.splitlines() if line.strip())
    inputs = Inputs(
        input_size=args.input_size,
        test_resize=args.test_resize,
        mean=tuple(args.mean) if args.mean else None,
        std=tuple(args.std) if args.std else None,
        interpolation=args.interpolation,
        class_names=names,
    )
    result = convert_file(args.file, args.source, args.to, verify=args.verify, inputs=inputs)
    verified = (
        f"outputs equal {args.source}'s within {result.max_abs_diff:.1e}"
        if result.max_abs_diff is not None
        else f"not verified ({args.source} not installed)"
        if args.verify
        else "not verified"
    )
    options = ", ".join(f"{k}={v!r}" for k, v in result.options.items())
    taken = f" (weights taken from its entry {result.entry!r})" if result.entry else ""
    print(f"{result.path}: {result.model_name} ({options}); {verified}{taken}")
    print(f"stored for eval and predict: {_shown(result.path)}")
    print(f"load with: resnets.create_model({result.model_name!r}, weights={str(result.path)!r})")
    return 0


def _shown(path: Path) -> str:
    """What a converted file tells eval and predict, in words."""
    _, meta = model_from_checkpoint(path)
    data = meta["data"]
    parts = [f"{data['test_size']} crops of images resized to {data['test_resize']} ({data['interpolation']})"]
    norm = meta.get("normalization")
    if norm is not None:
        mean = ", ".join(f"{v / 255:.3f}" for v in norm["mean"].flatten().tolist())
        std = ", ".join(f"{v / 255:.3f}" for v in norm["std"].flatten().tolist())
        parts.append(f"mean ({mean}), std ({std})")
    else:
        parts.append("no normalisation (give --mean and --std)")
    names = meta.get("class_names")
    parts.append(f"{len(names)} class names" if names else "no class names (give --class-names)")
    return "; ".join(parts)
