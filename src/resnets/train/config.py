"""The training configuration: one dataclass, saved in the run folder and in every checkpoint."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..data.augment import RandAugmentPolicy
from ..data.base import BAD_IMAGES, FOLDER_NORMALIZATION, NORMALIZATIONS, SMALL_NORMALIZATIONS, of_image_files
from ..data.images import DECODERS, DEFAULT_MAX_PIXELS, check_max_pixels
from ..data.transforms import CROPS, INTERPOLATIONS, PAPER_SCALE_RANGE, paper_scale_range, paper_test_resize
from ..models.hub import SHARED
from ..models.resnet import INITS

SCHEDULES = ("step", "plateau", "onecycle", "cosine", "constant")
FOLDER_DEFAULTS = {
    "crop": "scale",
    "image_size": 224,
    "test_size": 224,
    "test_resize": None,
    "scale_range": None,
    "decode": "workers",
    "lighting": 0.1,
    "interpolation": "bilinear",
}
OPTIMIZERS = ("sgd", "adamw", "lamb", "lars")
# Optimizers with Adam's moments: their momentum is fixed (betas), and timm scales their lr with the
# square root of the batch size (`lr_base_scale`).
ADAPTIVE = ("adamw", "lamb")
LR_BASE_SCALES = ("linear", "sqrt")
# torch.compile's modes: reduce-overhead adds CUDA graphs, max-autotune benchmarks kernel choices (minutes).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_GRAPHS = ("auto", "on", "off")  # whole-step CUDA graphs: see resnets.train.step.graphs_wanted
# `init_from`'s name of torchvision's ImageNet weights for the model (create_model's weights="torchvision").
PRETRAINED = "torchvision"
EMA_DECAY = 0.9998  # timm's --model-ema-decay default, which its --model-ema switch takes


def legacy_values(saved: dict) -> dict:
    """The values that a run saved before a field existed had in effect, for the fields it lacks.

    A config from such a run (config.yaml, a checkpoint) takes these, so that resuming it goes on as
    it began: small images normalised with the std, image folders with brightness/contrast jitter and
    scale augmentation over the paper's [256, 480] whatever the crop's side. Some saved values are
    read anew: an image folder's small-image normalisation, which meant ImageNet's statistics, and the
    test resize of 256 that small images recorded and never used.
    """
    folders = of_image_files(saved.get("data", ""))
    legacy: dict = {
        "normalize": FOLDER_NORMALIZATION if folders else "pixel-mean-std",
        "color_jitter": 0.4 if folders else 0.0,
        "sync_bn": False,
        "accumulate": 1,
        "scale_range": list(PAPER_SCALE_RANGE) if folders and saved.get("crop", "scale") == "scale" else None,
    }
    kept = {k: v for k, v in legacy.items() if k not in saved}
    if isinstance(saved.get("randaugment"), bool):  # on or off, before timm's policies: torchvision's
        kept["randaugment"] = "torchvision" if saved["randaugment"] else None
    if folders and saved.get("normalize") in SMALL_NORMALIZATIONS:  # recorded, though ImageNet's were used
        kept["normalize"] = FOLDER_NORMALIZATION
    if not folders and saved.get("test_resize") == 256:  # the default of image folders, recorded by every run
        kept["test_resize"] = None
    return kept


def resolved_values(values: dict) -> dict:
    """A config's values with those left to the data filled in as they are used: the normalisation, and an
    image folder's test resize and scale range (the paper's ratios to the crop sides).

    >>> v = resolved_values(TrainConfig(data="imagefolder:x", image_size=32, test_size=32).to_dict())
    >>> v["normalize"], v["scale_range"], v["test_resize"]
    ('imagenet', [37, 69], 37)
    """
    folders = of_image_files(values["data"])
    values = dict(values)
    if values.get("normalize") is None:
        values["normalize"] = FOLDER_NORMALIZATION if folders else SMALL_NORMALIZATIONS[0]
    if folders and values.get("test_resize") is None:
        values["test_resize"] = paper_test_resize(values["test_size"])
    if folders and values.get("crop") == "scale" and values.get("scale_range") is None:
        values["scale_range"] = list(paper_scale_range(values["image_size"]))
    return values


# Fields that may change between a run and its resumption: they do not touch the arithmetic.
RESUMABLE_CHANGES = {
    "out",
    "device",
    "log_every",
    "keep",
    "tensorboard",
    "mlflow",
    "num_workers",
    "checkpoint_every",
    "eval_batch_size",
    "compile",
    "compile_mode",
    "data_dir",
    "max_image_pixels",
    "cuda_graphs",  # the same arithmetic, launched otherwise (fused SGD: rounding alone differs)
    "dist_timeout",
}


# The fields of a run's length: a resumption that knows where the run stands may change it (`check_resumable`).
LENGTH = ("epochs", "iterations")


def check_resumable(saved: dict, config: TrainConfig, run_dir: Path, position: dict | None = None) -> str | None:
    """Refuse to resume a run saved with `saved` (its config) under `config`, where a field outside
    `RESUMABLE_CHANGES` differs: the error names the first one.

    Given `position` (the checkpoint's "epoch", "epoch_step" and "step"), the run's length may change,
    in its own unit, to no less than it has trained: the line returned says so (None: the same length).
    The schedule is a function of the step and the length, so it is recomputed for the new one.

    >>> saved, done = TrainConfig(epochs=8).to_dict(), {"epoch": 8, "epoch_step": 0, "step": 64}
    >>> check_resumable(saved, TrainConfig(epochs=12), Path("runs/x"), done)
    'extending runs/x from 8 to 12 epochs: the learning-rate schedule is recomputed for 12'
    """
    # A run saved before a field existed had its legacy value, or else its default (as from_dict reads it);
    # a value left to the data compares as what it resolved to.
    saved = resolved_values({**TrainConfig().to_dict(), **saved, **legacy_values(saved)})
    current = resolved_values(config.to_dict())
    # A choice left to the optimizer compares as what it resolved to (runs saved before it could be left).
    for values, optimizer in ((saved, saved.get("optimizer", "sgd")), (current, config.optimizer)):
        if values.get("decay_norm_bias") is None:
            values["decay_norm_bias"] = optimizer == "sgd"
    fixed = [k for k in current if k not in RESUMABLE_CHANGES and (position is None or k not in LENGTH)]
    different = [k for k in fixed if saved.get(k) != current[k]]
    if different:
        k = different[0]
        raise ValueError(
            f"{run_dir} holds a run with {k}={saved.get(k)!r}, not {current[k]!r}: "
            "resume it with its own settings, or choose another --out"
        )
    return None if position is None else _length_change(saved, current, run_dir, position)


def _length_change(saved: dict, current: dict, run_dir: Path, position: dict) -> str | None:
    """The line that says a resumed run's length changed, or a ValueError where the new length cannot be."""

    def length(values: dict) -> tuple[str, int]:
        iterations = values["iterations"]
        return ("iterations", iterations) if iterations is not None else ("epochs", values["epochs"])

    (unit, old), (new_unit, new) = length(saved), length(current)
    if (unit, old) == (new_unit, new):
        return None
    flag = "--iterations" if unit == "iterations" else "--epochs"
    if new_unit != unit:
        raise ValueError(f"{run_dir} holds a run of {old} {unit}: give its new length with {flag} N")
    # The steps or epochs already trained, a partly trained epoch counting whole.
    done = position["step"] if unit == "iterations" else position["epoch"] + (1 if position["epoch_step"] else 0)
    if new < done:
        raise ValueError(
            f"{flag} {new} is shorter than the {done} {unit} that {run_dir} has trained: give at least {done}"
        )
    change = "extending" if new > old else "shortening"
    return f"{change} {run_dir} from {old} to {new} {unit}: the learning-rate schedule is recomputed for {new}"


MAX_SIDE = 4096  # the largest crop side: 4096 x 4096 images of 3 bytes a pixel are 48 MB each, 12 GB a batch of 256
MAX_SEED = 2**63 - 1  # torch.manual_seed takes 64-bit seeds; derive_seed's keys are 63-bit
MAX_LOG_EVERY = 1_000_000  # a progress line at least every million steps (and once an epoch anyway)
DEVICES = ("auto", "cpu", "cuda", "mps")  # and cuda:N, mps:N

# The fields whose value is one of a closed list: `TrainConfig.validate` refuses any other in one line
# naming both, and the CLI's flags take their `choices=` from here. The list lives with its code (the
# schedules in this file, the crops with the transforms, ...); this map only names the field of each.
CHOICES: dict[str, tuple[str, ...]] = {
    "schedule": SCHEDULES,
    "bad_images": BAD_IMAGES,
    "decode": DECODERS,
    "normalize": NORMALIZATIONS,
    "cuda_graphs": CUDA_GRAPHS,
    "optimizer": OPTIMIZERS,
    "crop": CROPS,
    "compile_mode": COMPILE_MODES,
    "interpolation": INTERPOLATIONS,
    "init": INITS,
    "lr_base_scale": LR_BASE_SCALES,  # or none: the optimizer's rule
}


@dataclass
class TrainConfig:
    """Every knob of a training run. Recipes (`recipes.py`) return one; the CLI overrides fields."""

    recipe: str = "paper-cifar"  # the recipe these values started from (for the record)
    model: str = "resnet20"  # a registered name, or resnet/plain + any 6n+2 depth
    model_options: dict = field(default_factory=dict)  # more create_model options: shortcut, stride_at, ...
    init: str = "he"  # the weights' initialisation (he: the paper's; xavier: the source explainer's)
    data: str = "fashion-mnist"  # the dataset trained and tested on (see resnets.data.DATASETS)
    data_dir: str | None = None  # where the dataset's files are (else $RESNETS_DATA, system folders, cache)
    subset: int | None = None  # train on the first N training images
    val_split: int = 0  # hold N training images out for validation (the paper's 45k/5k protocol)
    test_subset: int | None = None  # report test error on the first N test images only (quick runs)
    augment: bool = True  # pad-and-crop and flips (section 4.2); scale and colour for image folders
    normalize: str | None = None  # none: the data's (small images: pixel-mean, the paper's; image folders: imagenet)
    color_jitter: float = 0.0  # image folders: brightness/contrast/saturation jitter on top of the paper's PCA lighting
    lighting: float = 0.1  # image folders: std of AlexNet's PCA lighting noise (the paper's 0.1; 0: off, as RSB)
    interpolation: str = "bilinear"  # image folders: how crops and test views resize
    crop: str = "scale"  # image folders: scale (the paper's) or random-resized (Inception's; area 35-100% under 64 px)
    scale_range: list[int] | None = None  # crop scale: shorter side in [LO, HI] (none: image_size x 8/7, x 15/7)
    image_size: int = 224  # image folders: the side of the training crop
    test_size: int = 224  # image folders: the side of the centre crop tested
    test_resize: int | None = None  # image folders: the shorter side before the test crop (none: test_size x 256/224)
    batch_size: int = 128  # the paper: 128 on CIFAR, 256 on ImageNet
    eval_batch_size: int = 512  # images per evaluation batch (no gradients, so larger fits)
    epochs: int = 10  # training length, unless `iterations` is set
    iterations: int | None = None  # total SGD steps (the paper's 64k on CIFAR); overrides `epochs`
    lr: float = 0.1  # the paper's initial learning rate
    lr_base_scale: str | None = None  # how a recipe's lr follows another batch size (none: sqrt for adamw, lamb)
    momentum: float = 0.9  # SGD momentum, the paper's 0.9
    nesterov: bool = False  # Nesterov momentum (not the paper's)
    weight_decay: float = 1e-4  # the paper's; the explainer lists 1e-5
    schedule: str = "step"  # how the lr falls over training (the paper's: step at milestones)
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # step: fractions of training, lr /= 10
    gamma: float = 0.1  # the factor at each milestone or plateau
    plateau_patience: int = 3  # plateau: epochs without improvement before the lr drops
    onecycle_warmup: float = 0.25  # onecycle: fraction of training spent rising to `lr`
    warmup_lr: float | None = None  # lr held until the error < warmup_until_err (paper); with warmup_epochs: its start
    warmup_until_err: float = 0.8  # the warm-up ends once the training error is below this (the paper's 80%)
    label_smoothing: float = 0.0  # cross-entropy label smoothing (not the paper's)
    optimizer: str = "sgd"  # sgd: the paper's; lamb: RSB's; lars: for large batches
    decay_norm_bias: bool | None = None  # weight decay on BN and biases too (none: with sgd, the paper's; not others)
    clip_grad: float | None = None  # clip the global gradient norm to this (none: no clipping)
    warmup_epochs: float = 0.0  # linear warm-up of the lr from warmup_lr (none: 0) over this many epochs, step by step
    min_lr: float = 0.0  # cosine: the lr it ends at (timm's floor)
    ema: float | None = None  # decay of an average of the weights, evaluated and saved beside them (e.g. 0.9998)
    ema_warmup: bool = False  # ema: the decay grows with the steps towards ema (timm's ModelEmaV3 warm-up)
    mixup: float = 0.0  # mixup's Beta alpha (0: off; RSB A3: 0.1)
    cutmix: float = 0.0  # CutMix's Beta alpha (0: off; RSB A3: 1.0); with mixup, half the batches each
    bce: bool = False  # binary cross-entropy over classes (RSB) instead of softmax cross-entropy
    bce_target_thresh: float | None = None  # bce: targets above it become 1, the others 0 (timm's; RSB A3: 0.2)
    randaugment: str | None = None  # RandAugment: timm's policy (rand-m9-mstd0.5-inc1, ...) or torchvision
    randaugment_ops: int = 2  # RandAugment torchvision: operations per image (N)
    randaugment_magnitude: float = 9.0  # RandAugment torchvision: magnitude M on its levels 0..30 (timm's M x 3)
    randaugment_std: float = 0.0  # RandAugment torchvision: std of the magnitude drawn per image, in its levels
    trivialaugment: bool = False  # TrivialAugment Wide (Mueller and Hutter 2021): one op, random magnitude
    random_erasing: float = 0.0  # probability of erasing a random box of each image (Zhong et al. 2017)
    repeated_aug: int = 1  # image folders: each image N times in its batch, augmented anew (RSB A1, A2: 3)
    drop_path: float = 0.0  # stochastic depth: the last block's drop rate, rising linearly from 0
    tta_flip: bool = False  # average the logits of each test image and its mirror image
    seed: int = 0  # the initialisation, the order of the images and their augmentation derive from it
    device: str = "auto"  # auto: CUDA, then MPS, then CPU
    amp: bool = True  # bf16 autocast on CUDA (fp32 elsewhere)
    channels_last: bool = True  # NHWC memory format (faster convolutions on GPUs and most CPUs)
    compile: bool = False  # torch.compile the model
    compile_mode: str = "default"  # torch.compile's mode
    cuda_graphs: str = "auto"  # auto: CIFAR nets on a GPU train as one CUDA graph a step
    sync_bn: bool = False  # several processes: BatchNorm statistics over the global batch (else per process)
    accumulate: int = 1  # split each process's batch into K micro-batches (gradients added; one all-reduce)
    dist_timeout: float = 1800.0  # several processes: seconds one waits for the others before failing (30 min)
    out: str | None = None  # run folder; default runs/<model>-<data>-<time>
    keep: int = 3  # newest step checkpoints kept besides last.pt and best.pt
    checkpoint_every: int | None = None  # also checkpoint every N steps inside an epoch
    log_every: int = 50  # steps between progress lines (and the only host syncs of the loop)
    tensorboard: bool = False  # also log to TensorBoard (the tensorboard extra)
    mlflow: str | None = None  # also log to MLflow: a folder (a local file store) or a tracking URI (the mlflow extra)
    num_workers: int | None = None  # image folders: DataLoader worker processes (none: one per usable core)
    bad_images: str = "skip"  # image folders: skip (and count) or fail on an unreadable image
    max_image_pixels: int | None = DEFAULT_MAX_PIXELS  # image folders: refuse larger files undecoded (none: no limit)
    decode: str = "workers"  # image folders: where JPEGs are decoded (device: a batch at a time, nvJPEG)
    init_from: str | None = None  # start from these weights (torchvision: ImageNet's); a head for other classes is new
    num_classes: int | None = None  # override the dataset's class count (fine-tuning)
    freeze_backbone: bool = False  # fine-tuning: train only the new head

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise a ValueError naming the first field whose value is out of range."""
        _check_types(self)
        if self.device not in DEVICES and self.device.split(":")[0] not in ("cuda", "mps"):
            raise ValueError(f"device={self.device!r} is not one of {', '.join(DEVICES)}")
        for name, accepted in CHOICES.items():
            value = getattr(self, name)
            if value is not None and value not in accepted:  # None: an optional field left to its rule
                raise ValueError(f"{name}={value!r} is not one of {', '.join(accepted)}")
        for name in ("batch_size", "eval_batch_size", "epochs", "log_every", "keep", "accumulate"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be a positive integer")
        for name in ("image_size", "test_size", "test_resize"):  # sides of crops, in pixels (none: test_resize's rule)
            if getattr(self, name) is not None and not 1 <= getattr(self, name) <= MAX_SIDE:
                raise ValueError(f"{name}={getattr(self, name)!r} must be a side in pixels between 1 and {MAX_SIDE}")
        if self.test_resize is not None and self.test_resize < self.test_size:
            raise ValueError(
                f"test_resize={self.test_resize} must be at least test_size={self.test_size}: the test crop is cut "
                "from the resized image"
            )
        if self.log_every > MAX_LOG_EVERY:
            raise ValueError(f"log_every={self.log_every!r} must be at most {MAX_LOG_EVERY:,} steps")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed={self.seed!r} must be between 0 and 2**63 - 1")
        if not (self.dist_timeout > 0 and math.isfinite(self.dist_timeout)):
            raise ValueError(f"dist_timeout={self.dist_timeout!r} must be a positive number of seconds")
        for name in ("iterations", "checkpoint_every", "subset", "test_subset", "num_classes"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if self.val_split < 0:
            raise ValueError(f"val_split={self.val_split!r} must be >= 0")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr={self.lr!r} must be a positive number")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"weight_decay={self.weight_decay!r} must be a finite number >= 0")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum={self.momentum!r} must be in [0, 1)")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma={self.gamma!r} must be in (0, 1]: the factor the lr is multiplied by")
        if self.plateau_patience < 0:
            raise ValueError(f"plateau_patience={self.plateau_patience!r} must be >= 0 epochs")
        if not 0 < self.onecycle_warmup < 1:
            raise ValueError(f"onecycle_warmup={self.onecycle_warmup!r} must be a fraction of training in (0, 1)")
        if self.warmup_lr is not None and not (self.warmup_lr >= 0 and math.isfinite(self.warmup_lr)):
            raise ValueError(f"warmup_lr={self.warmup_lr!r} must be a number >= 0 (or none: no warm-up)")
        if self.warmup_lr == 0 and not self.warmup_epochs:
            raise ValueError("warmup_lr=0 would train nothing until the error falls: give a positive lr (or none)")
        if not 0 < self.warmup_until_err <= 1:
            raise ValueError(f"warmup_until_err={self.warmup_until_err!r} must be a training error in (0, 1]")
        check_max_pixels(self.max_image_pixels)
        if not 0 <= self.color_jitter < 1:
            raise ValueError(
                f"color_jitter={self.color_jitter!r} must be in [0, 1) (0: the paper's colour augmentation)"
            )
        if self.color_jitter and not of_image_files(self.data):
            raise ValueError(f"color_jitter applies to image folders, not to {self.data}")
        for name, default in FOLDER_DEFAULTS.items():
            if getattr(self, name) != default and not of_image_files(self.data):
                raise ValueError(f"{name} applies to image folders, not to {self.data}")
        self._validate_views()
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing={self.label_smoothing!r} must be in [0, 1)")
        if any(not 0 < m < 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones={self.milestones!r} must be increasing fractions of training in (0, 1)")
        self._validate_beyond_paper()
        if self.compile_mode != "default" and not self.compile:
            raise ValueError(f"compile_mode={self.compile_mode!r} is torch.compile's mode: add compile (--compile)")
        # The trainer sets these from the data and the run's own flags: a model option may not set them again.
        for key, flag in (("num_classes", "--num-classes"), ("in_channels", "the data"), ("drop_path", "--drop-path")):
            if key in self.model_options:
                raise ValueError(f"model_options may not set {key}: the run takes it from {flag}")
        if self.freeze_backbone and not self.init_from:
            raise ValueError("freeze_backbone needs init_from: a frozen random backbone learns nothing")

    def _validate_views(self) -> None:
        """The scale augmentation's range and the normalisation fit the data and the crop."""
        if self.scale_range is not None:
            if len(self.scale_range) != 2 or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in self.scale_range
            ):
                raise ValueError(f"scale_range={self.scale_range!r} must be two sides in pixels, LO HI")
            lo, hi = self.scale_range
            if not self.image_size <= lo <= hi <= MAX_SIDE:
                raise ValueError(
                    f"scale_range={lo} {hi} must satisfy image_size ({self.image_size}) <= LO <= HI <= {MAX_SIDE}: "
                    "each training crop is cut from the image resized to a shorter side in [LO, HI]"
                )
            if self.crop != "scale":
                raise ValueError(f"scale_range is the range of crop 'scale', not of crop={self.crop!r}")
        folders = of_image_files(self.data)
        if self.normalize in SMALL_NORMALIZATIONS and folders:
            raise ValueError(
                f"normalize={self.normalize!r} is for small images: image folders take {FOLDER_NORMALIZATION!r} "
                "(ImageNet's channel mean and std) or none"
            )
        if self.normalize == FOLDER_NORMALIZATION and not folders:
            raise ValueError(
                f"normalize={FOLDER_NORMALIZATION!r} is for image folders: {self.data} takes "
                f"{' or '.join(SMALL_NORMALIZATIONS)} (or none: pixel-mean)"
            )

    def _validate_beyond_paper(self) -> None:
        """The options of recipes after 2015 (mixup, EMA, ...): each off by default."""
        if self.clip_grad is not None and not (self.clip_grad > 0 and math.isfinite(self.clip_grad)):
            raise ValueError(f"clip_grad={self.clip_grad!r} must be a positive gradient norm (or none)")
        if not (self.warmup_epochs >= 0 and math.isfinite(self.warmup_epochs)):
            raise ValueError(f"warmup_epochs={self.warmup_epochs!r} must be a number of epochs >= 0")
        if self.warmup_epochs and self.warmup_lr is not None and self.warmup_lr >= self.lr:
            raise ValueError(
                f"warmup_lr={self.warmup_lr!r} is where the warm-up of warmup_epochs starts: it must be below "
                f"lr={self.lr!r}"
            )
        if self.warmup_epochs and self.iterations is None and self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs={self.warmup_epochs:g} spans the whole run of epochs={self.epochs}: the lr would end "
                "at its peak, never decaying; warm up for less than the run"
            )
        if not (0 <= self.min_lr < self.lr):
            raise ValueError(f"min_lr={self.min_lr!r} must be in [0, lr={self.lr!r})")
        if self.min_lr and self.schedule != "cosine":
            raise ValueError(f"min_lr is the floor of the cosine schedule, not of schedule={self.schedule!r}")
        self._validate_optimizer_options()
        if self.init_from == PRETRAINED and self.model not in SHARED:
            raise ValueError(
                f"init_from={PRETRAINED!r} (--pretrained): torchvision publishes ImageNet weights for "
                f"{', '.join(SHARED)}, not for {self.model}"
            )
        if self.bce_target_thresh is not None:
            if not 0 <= self.bce_target_thresh < 1:
                raise ValueError(f"bce_target_thresh={self.bce_target_thresh!r} must be in [0, 1) (or none)")
            if not self.bce:
                raise ValueError("bce_target_thresh applies to the binary cross-entropy: add bce (--bce)")
        if self.ema is not None and not 0 < self.ema < 1:
            raise ValueError(f"ema={self.ema!r} must be a decay in (0, 1), e.g. 0.9998 (or none)")
        if self.mlflow is not None and not self.mlflow.strip():
            raise ValueError("mlflow='' names no folder or tracking URI (leave --mlflow out to log nowhere)")
        if self.ema_warmup and self.ema is None:
            raise ValueError("ema_warmup warms up the average of the weights: add ema (--ema DECAY)")
        for name in ("mixup", "cutmix", "randaugment_std"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name}={value!r} must be a number >= 0 (0: off)")
        if self.randaugment_ops < 1:
            raise ValueError(f"randaugment_ops={self.randaugment_ops!r} must be a positive integer")
        if not 0 <= self.randaugment_magnitude <= 30:
            raise ValueError(f"randaugment_magnitude={self.randaugment_magnitude!r} must be in [0, 30]")
        policy = self.randaugment_policy  # a bad spec is one line naming it
        if policy is None or policy.style != "torchvision":
            for name, default in (("randaugment_ops", 2), ("randaugment_magnitude", 9.0), ("randaugment_std", 0.0)):
                if getattr(self, name) != default:
                    given = f"randaugment={self.randaugment!r}" if policy else "no randaugment"
                    raise ValueError(
                        f"{name} sets RandAugment torchvision's levels, which {given} does not use "
                        "(a timm policy carries its own: rand-m9-n2-mstd0.5)"
                    )
        if self.randaugment and self.trivialaugment:
            raise ValueError("randaugment and trivialaugment are two automatic augmentations: choose one")
        if not 0 <= self.random_erasing <= 1:
            raise ValueError(f"random_erasing={self.random_erasing!r} must be a probability in [0, 1]")
        if not 0 <= self.drop_path < 1:
            raise ValueError(f"drop_path={self.drop_path!r} must be a probability in [0, 1)")
        if self.repeated_aug < 1:
            raise ValueError(f"repeated_aug={self.repeated_aug!r} must be a positive integer (1: off)")
        if self.repeated_aug > 1 and not of_image_files(self.data):
            raise ValueError(f"repeated_aug applies to image folders, not to {self.data}")
        if self.repeated_aug > self.batch_size:
            raise ValueError(f"repeated_aug={self.repeated_aug} exceeds the batch of {self.batch_size} images")
        if (self.randaugment or self.trivialaugment or self.random_erasing) and not self.augment:
            raise ValueError("randaugment, trivialaugment and random_erasing need augment (--no-augment turns all off)")

    def _validate_optimizer_options(self) -> None:
        """Options that the chosen optimizer would ignore are refused (a default value is not an option given)."""
        ignored = []
        if self.optimizer in ADAPTIVE:
            if self.momentum != 0.9:
                ignored.append(f"momentum={self.momentum!r}")
            if self.nesterov:
                ignored.append("nesterov")
        elif self.optimizer == "lars" and self.nesterov:
            ignored.append("nesterov")
        if ignored:
            why = "its moments are Adam's" if self.optimizer in ADAPTIVE else "its momentum is plain"
            raise ValueError(f"{' and '.join(ignored)} would do nothing with optimizer={self.optimizer!r} ({why})")

    @property
    def randaugment_policy(self) -> RandAugmentPolicy | None:
        """The RandAugment `randaugment` names: timm's policy from its spec, torchvision's from the levels."""
        if self.randaugment is None:
            return None
        if self.randaugment == "torchvision":
            return RandAugmentPolicy(
                self.randaugment_ops, self.randaugment_magnitude, self.randaugment_std, style="torchvision"
            )
        return RandAugmentPolicy.parse(self.randaugment)

    @property
    def decays_norm_bias(self) -> bool:
        """Whether BN parameters and biases take weight decay: `decay_norm_bias`, else the optimizer's way
        (SGD: yes, as the paper; AdamW, LAMB, LARS: no, as timm's optimizer factory)."""
        return self.optimizer == "sgd" if self.decay_norm_bias is None else self.decay_norm_bias

    @property
    def lr_scaling(self) -> str:
        """How a recipe's lr follows the batch size: `lr_base_scale`, else timm's rule for the optimizer."""
        if self.lr_base_scale is not None:
            return self.lr_base_scale
        return "sqrt" if self.optimizer in ADAPTIVE else "linear"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def resolved(self) -> TrainConfig:
        """A copy with the values left to the data filled in as the run uses them (`resolved_values`): what
        its config.yaml records.

        >>> TrainConfig(data="imagefolder:x").resolved().normalize
        'imagenet'
        """
        return TrainConfig(**resolved_values(self.to_dict()))

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from a saved run's values (its config.yaml, a checkpoint), refusing unknown keys by name.

        A field the values lack takes the value runs had before the field existed (`legacy_values`),
        else its default: a run saved by an earlier version resumes as it began.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config key {unknown[0]!r}; accepted: {', '.join(sorted(known))}")
        return cls(**{**values, **legacy_values(values)})

    def replace(self, **changes) -> TrainConfig:
        """A copy with some fields changed, each converted to its declared type."""
        known = {f.name: f for f in dataclasses.fields(self)}
        values = self.to_dict()
        for key, value in changes.items():
            if key not in known:
                raise ValueError(f"unknown config key {key!r}; accepted: {', '.join(sorted(known))}")
            values[key] = coerce(key, value)
        return TrainConfig(**values)


def _check_types(config: TrainConfig) -> None:
    """Each field holds a value of its declared type (a YAML `epochs: true` is not a number)."""
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        hint = hints[f.name]
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            continue
        base = next((a for a in args if a is not type(None)), hint) if args and type(None) in args else hint
        kind = typing.get_origin(base) or base
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind in (int, float):
            number = isinstance(value, int | float) and not isinstance(value, bool)
            ok = number and (kind is float or value == int(value))
        else:
            ok = isinstance(value, kind)
        if not ok:
            raise ValueError(f"{f.name}={value!r} is not a valid {getattr(kind, '__name__', kind)}")
    if any(isinstance(m, bool) or not isinstance(m, int | float) for m in config.milestones):
        raise ValueError(f"milestones={config.milestones!r} must be a list of numbers")


def coerce(name: str, value: typing.Any) -> object:
    """Convert a value from the command line or YAML to the field's type, naming the field on failure."""
    hint = typing.get_type_hints(TrainConfig)[name]
    args = typing.get_args(hint)
    optional = type(None) in args and typing.get_origin(hint) in (typing.Union, types.UnionType)
    if value is None or (optional and value in ("none", "None", "null")):
        if optional:
            return None
        raise ValueError(f"{name} cannot be empty")
    base = next(a for a in args if a is not type(None)) if optional else hint
    kind = typing.get_origin(base) or base
    try:
        if kind is bool:
            if isinstance(value, str):
                return {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}[value.lower()]
            if not isinstance(value, bool):
                raise ValueError
            return value
        if isinstance(value, bool) and kind in (int, float, list):
            raise ValueError  # YAML's `epochs: true` is not a number
        if kind is int:
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, float) and not number.is_integer():
                raise ValueError
            return int(number)
        if kind is float:
            return float(value)
        if kind is list:
            items = value.split(",") if isinstance(value, str) else value
            if any(isinstance(v, bool) for v in items):
                raise ValueError
            # "0.5,0.75", ["0.5", "0.75"] (space-separated flags) and [0.5, 0.75] (YAML) alike
            parts = [p for v in items for p in (v.split(",") if isinstance(v, str) else [v]) if p != ""]
            if typing.get_args(base) == (int,):  # sides in pixels: whole numbers
                numbers = [float(v) for v in parts]
                if not all(n.is_integer() for n in numbers):
                    raise ValueError
                return [int(n) for n in numbers]
            return [float(v) for v in parts]
        if kind is dict:
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
        return str(value)
    except (TypeError, ValueError, KeyError):
        raise ValueError(f"{name}={value!r} is not a valid {getattr(kind, '__name__', kind)}") from None


def field_help() -> dict[str, str]:
    """Each field's comment in the TrainConfig source, for `--help` (one source of truth for both).

    >>> field_help()["weight_decay"]
    "the paper's; the explainer lists 1e-5"
    """
    import inspect

    helps = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        match = re.match(r"\s+(\w+): [^=]+=.*?  # (.*)$", line)
        if match:
            helps[match.group(1)] = match.group(2)
    return helps


def load_yaml(path: str | Path) -> dict:
    """The mapping in a YAML config file (`--config FILE`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, found {type(values).__name__}")
    return {str(k).replace("-", "_"): v for k, v in values.items()}
