"""Named training recipes: plain functions that return a `TrainConfig` for a model.

Each takes the model name, because the paper's recipe depends on it (ResNet-110 warms up).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from pathlib import Path

import torch

from ..data.base import SMALL_NORMALIZATIONS, of_image_files
from ..data.transforms import CROP_RATIO, crop_area, paper_scale_range
from ..models import create_model
from ..trained import CheckpointError, read_trained
from .config import ADAPTIVE, FOLDER_DEFAULTS, TrainConfig, load_yaml
from .loaders import folder_transforms

PAPER_WARMUP_LR = 0.01
PAPER_WARMUP_UNTIL_ERR = 0.8


def paper_warmup(model: str) -> tuple[float | None, str]:
    """(warm-up lr or None, why): the paper's rule for `model` under the CIFAR recipe.

    Section 4.2, for ResNet-110: "the initial learning rate of 0.1 is slightly too large to start
    converging. So we use 0.01 to warm up the training until the training error is below 80%
    (about 400 iterations), and then go back to 0.1"; ResNet-1202 is trained alike. So the CIFAR
    nets of section 4.2 (basic blocks, 6n+2 layers) warm up from 110 layers on; a plain net of
    that depth warms up as its residual twin does, so that the degradation experiment trains the
    two alike. Nothing else warms up: not ImageNet's ResNet-152, not the pre-activation nets.

    >>> paper_warmup("resnet110")[0], paper_warmup("resnet56")[0], paper_warmup("resnet152")[0]
    (0.01, None, None)
    """
    with torch.device("meta"):
        net = create_model(model)
    config = getattr(net, "config", None)
    if config is None or config.stem != "cifar" or config.block != "basic" or config.depth < 110:
        return None, "the paper warms up only its CIFAR nets of 110 layers and more"
    if config.shortcut is None:
        return PAPER_WARMUP_LR, "as its residual twin: the paper warms up ResNet-110 and ResNet-1202 (section 4.2)"
    return PAPER_WARMUP_LR, "the paper's rule for ResNet-110 and ResNet-1202 (section 4.2)"


def warmup_reason(config: TrainConfig) -> str | None:
    """Why a run warms up until its error falls, for its log: the paper's rule, or the config's own choice
    (None: no such warm-up; a linear one over `warmup_epochs` starts at `warmup_lr` instead)."""
    if config.warmup_lr is None or config.warmup_epochs:
        return None
    lr, why = paper_warmup(config.model) if config.recipe == "paper-cifar" else (None, "")
    if lr == config.warmup_lr and config.warmup_until_err == PAPER_WARMUP_UNTIL_ERR:
        return why
    return "set in the config, not by the paper's rule"


def paper_cifar(model: str = "resnet20") -> TrainConfig:
    """Section 4.2: batch 128, lr 0.1 divided by 10 at 32k and 48k iterations, stop at 64k.

    Weight decay 1e-4, momentum 0.9, He initialisation, 4-pixel pad-and-crop and flips. The
    110- and 1202-layer nets warm up at lr 0.01 until the training error is below 80% (about
    400 iterations), then return to 0.1 (`paper_warmup`).

    >>> paper_cifar("resnet110").warmup_lr
    0.01
    """
    return TrainConfig(
        recipe="paper-cifar",
        model=model,
        batch_size=128,
        iterations=64_000,
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-4,
        schedule="step",
        milestones=[0.5, 0.75],
        init="he",
        warmup_lr=paper_warmup(model)[0],
        warmup_until_err=PAPER_WARMUP_UNTIL_ERR,
    )


def paper_imagenet(model: str = "resnet50") -> TrainConfig:
    """Section 3.4: batch 256, lr 0.1 divided by 10 when the error plateaus, up to 60e4 iterations.

    Weight decay 1e-4, momentum 0.9, He initialisation; scale and colour augmentation. The
    plateau is watched on the validation split (`--val-split`), or on the training loss
    without one: the test set never steers training.
    """
    return TrainConfig(
        recipe="paper-imagenet",
        model=model,
        data="imagefolder:imagenet",
        batch_size=256,
        iterations=600_000,
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-4,
        schedule="plateau",
        plateau_patience=3,
        init="he",
    )


def explainer(model: str = "resnet20") -> TrainConfig:
    """The source explainer's table: Xavier init, weight decay 1e-5, batch 256, lr 0.1 on a plateau schedule."""
    return TrainConfig(
        recipe="explainer",
        model=model,
        batch_size=256,
        epochs=30,
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-5,
        schedule="plateau",
        plateau_patience=3,
        init="xavier",
    )


def fast(model: str = "resnet20") -> TrainConfig:
    """A short recipe for small data: one-cycle lr, Nesterov, label smoothing, flip test-time augmentation.

    Batch 512, 15 epochs; the lr rises linearly to 0.4 over the first 20% of training and falls
    linearly to zero (Smith and Topin 2018, "super-convergence"); weight decay 5e-4.
    """
    return TrainConfig(
        recipe="fast",
        model=model,
        batch_size=512,
        epochs=15,
        lr=0.4,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        schedule="onecycle",
        onecycle_warmup=0.2,
        label_smoothing=0.1,
        tta_flip=True,
        normalize="pixel-mean-std",  # the pipeline its published figures were measured with
    )


def rsb_a3(model: str = "resnet50") -> TrainConfig:
    """ "ResNet strikes back" procedure A3 (Wightman, Touvron and Jegou 2021, Table 1): 100 epochs at
    160x160, tested at 224x224, for 78.1% top-1 with ResNet-50 on ImageNet.

    Table 1's A3, item by item: LAMB at lr 8e-3 for batch 2048 (another batch scales it by the
    square root of the ratio, timm's rule for LAMB), weight decay 0.02 (none on BN and biases, as
    timm's optimizer factory), cosine after 5 warm-up epochs, binary cross-entropy with targets
    thresholded at 0.2, mixup 0.1 and CutMix 1.0, RandAugment rand-m6-mstd0.5-inc1 (timm's policy),
    Inception crops and flips, no PCA lighting, no colour jitter, no random erasing, no label
    smoothing, no stochastic depth, no repeated augmentation, no EMA, test crop ratio 0.95 (224 of
    235, bicubic). From timm's code, which the table leaves implicit: the gradient norm clipped at 1
    (timm's LAMB default), the last BN of each residual block starting at zero (timm's ResNets), the
    warm-up from 1e-4 and the cosine's floor at 1e-6 (timm's train.py defaults when RSB was trained),
    training crops resized bilinear or bicubic at random (timm's default).

    >>> rsb_a3().optimizer, rsb_a3().image_size, rsb_a3().test_size, rsb_a3().test_resize
    ('lamb', 160, 224, 235)
    """
    bottleneck = "bottleneck" in _block_of(model)
    return TrainConfig(
        recipe="rsb-a3",
        model=model,
        model_options={"zero_init_residual": True, **({"stride_at": "3x3"} if bottleneck else {})},
        data="imagefolder:imagenet",
        batch_size=2048,
        epochs=100,
        optimizer="lamb",
        lr=8e-3,
        clip_grad=1.0,
        weight_decay=0.02,
        schedule="cosine",
        warmup_epochs=5,
        warmup_lr=1e-4,
        min_lr=1e-6,
        bce=True,
        bce_target_thresh=0.2,
        mixup=0.1,
        cutmix=1.0,
        randaugment="rand-m6-mstd0.5-inc1",
        crop="random-resized",
        lighting=0.0,
        interpolation="random",
        image_size=160,
        test_size=224,
        test_resize=235,  # floor(224 / 0.95), as timm's crop_pct
    )


def bag_of_tricks(model: str = "resnet50") -> TrainConfig:
    """ "Bag of Tricks for Image Classification" (He et al. 2019), its ImageNet training refinements.

    Nesterov SGD at lr 0.1 per 256 images (scaled linearly with the batch), 5 linear warm-up epochs
    then a cosine over 120 epochs, label smoothing 0.1, zero-initialised last BN of each residual
    branch, no weight decay on BN parameters and biases, Inception crops, colour jitter of
    [0.6, 1.4] and PCA lighting noise of std 0.1 (its baseline's augmentation). The paper's text
    jitters hue, saturation and brightness; GluonCV's script, which trained its models, jitters
    brightness, contrast and saturation, as this recipe does. Its ResNet-B tweak (the stride on the
    bottleneck's 3x3) is taken for bottleneck nets. Not built here: ResNet-C (three 3x3
    convolutions in the stem), ResNet-D (an average-pooled shortcut), knowledge distillation, and
    mixup (its 200-epoch runs); it trains in float32 or bf16, not its float16.
    """
    return TrainConfig(
        recipe="bag-of-tricks",
        model=model,
        model_options={
            "zero_init_residual": True,
            **({"stride_at": "3x3"} if "bottleneck" in _block_of(model) else {}),
        },
        data="imagefolder:imagenet",
        batch_size=256,
        epochs=120,
        lr=0.1,
        momentum=0.9,
        nesterov=True,
        weight_decay=1e-4,
        decay_norm_bias=False,
        schedule="cosine",
        warmup_epochs=5,
        label_smoothing=0.1,
        crop="random-resized",
        color_jitter=0.4,
    )


def fmnist_best(model: str = "wrn16_4") -> TrainConfig:
    """A Fashion-MNIST recipe meant to be the project's best: a wide ResNet (WRN-16-4, dropout 0.3) with random
    erasing (Zhong et al. 2017 train theirs with p = 0.5), pad-and-crop and flips, Nesterov SGD at
    lr 0.1 with a cosine after 1 warm-up epoch, weight decay 5e-4, label smoothing 0.1, 40 epochs,
    and flip test-time augmentation. Not yet measured at its length: BENCHMARKS.md says what was.
    """
    return TrainConfig(
        recipe="fmnist-best",
        model=model,
        data="fashion-mnist",
        batch_size=128,
        epochs=40,
        lr=0.1,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        schedule="cosine",
        warmup_epochs=1,
        label_smoothing=0.1,
        random_erasing=0.5,
        tta_flip=True,
        normalize="pixel-mean-std",
    )


def _block_of(model: str) -> str:
    """The block kind of a registered ResNet (empty for other families)."""
    with torch.device("meta"):
        config = getattr(create_model(model), "config", None)
    return getattr(config, "block", "")


RECIPES: dict[str, Callable[[str], TrainConfig]] = {
    "paper-cifar": paper_cifar,
    "paper-imagenet": paper_imagenet,
    "explainer": explainer,
    "fast": fast,
    "rsb-a3": rsb_a3,
    "bag-of-tricks": bag_of_tricks,
    "fmnist-best": fmnist_best,
}
# Recipes whose lr is given for a batch size: another batch size scales it, linearly (Goyal et al. 2017,
# section 2.1) or by the square root of the ratio for Adam-family optimizers (timm's `--lr-base-scale`).
LR_BATCH = ("rsb-a3", "bag-of-tricks")


def lr_ratio(batch: int, reference: int, scaling: str) -> float:
    """The factor of a recipe's lr at `batch` images when it is given for `reference` ones.

    >>> lr_ratio(256, 2048, "linear"), round(lr_ratio(256, 2048, "sqrt"), 4)
    (0.125, 0.3536)
    """
    ratio = batch / reference
    return math.sqrt(ratio) if scaling == "sqrt" else ratio


def with_overrides(config: TrainConfig, values: dict, scale_warmup: bool = True) -> TrainConfig:
    """`config` with the fields in `values` replaced; a length in epochs replaces the recipe's iterations.

    >>> with_overrides(paper_cifar("resnet20"), {"epochs": 3}).iterations is None
    True

    A recipe whose lr is given for a batch size (`LR_BATCH`) scales it with a new batch size, as timm
    does: linearly for SGD and LARS, by the square root for AdamW and LAMB (`lr_base_scale` decides):

    >>> round(with_overrides(rsb_a3("resnet50"), {"batch_size": 256}).lr, 6)  # LAMB: 8e-3 x sqrt(256 / 2048)
    0.002828
    >>> with_overrides(bag_of_tricks("resnet50"), {"batch_size": 1024}).lr  # SGD: 0.1 x 1024 / 256
    0.4
    """
    if "epochs" in values and "iterations" not in values:
        values = {**values, "iterations": None}
        # A recipe's warm-up shrinks with a shortened run, keeping its share (5 of RSB's 100 epochs: 0.5 of 10).
        epochs = int(values["epochs"])
        if (
            scale_warmup
            and config.warmup_epochs
            and "warmup_epochs" not in values
            and config.iterations is None
            and epochs < config.epochs
        ):
            values = {**values, "warmup_epochs": config.warmup_epochs * epochs / config.epochs}
    if config.recipe in LR_BATCH and "batch_size" in values and "lr" not in values:
        optimizer = values.get("optimizer", config.optimizer)
        scaling = values.get("lr_base_scale", config.lr_base_scale) or ("sqrt" if optimizer in ADAPTIVE else "linear")
        values = {**values, "lr": config.lr * lr_ratio(int(values["batch_size"]), config.batch_size, scaling)}
    return config.replace(**values)


def warmup_note(config: TrainConfig) -> str | None:
    """How the run's warm-up came from its recipe's, when a shorter run scaled it (for the log)."""
    if config.recipe not in RECIPES or not config.warmup_epochs:
        return None
    base = get_recipe(config.recipe, config.model)
    if not base.warmup_epochs or config.iterations is not None or config.epochs >= base.epochs:
        return None
    if not math.isclose(config.warmup_epochs, base.warmup_epochs * config.epochs / base.epochs, rel_tol=1e-9):
        return None  # a warm-up of the run's own
    return (
        f"warm-up of {config.warmup_epochs:g} epochs: {config.recipe}'s {base.warmup_epochs:g} of "
        f"{base.epochs}, scaled to this run's {config.epochs}"
    )


def warmup_lines(config: TrainConfig, warming_up: bool) -> list[str]:
    """What the log says of the run's warm-up at the start: how a recipe's was scaled (`warmup_note`), and
    the warm-up until the training error falls, while it is not over (`warming_up`)."""
    lines = [note] if (note := warmup_note(config)) is not None else []
    reason = warmup_reason(config)
    if reason is not None and warming_up:
        lines.append(
            f"warm-up: lr {config.warmup_lr} until the training error is below "
            f"{100 * config.warmup_until_err:.0f}%, checked every {config.log_every} steps ({reason})"
        )
    return lines


def lr_note(config: TrainConfig) -> str | None:
    """How the run's lr came from its recipe's, when a batch size of its own scaled it (for the log)."""
    if config.recipe not in LR_BATCH:
        return None
    base = get_recipe(config.recipe, config.model)
    if config.batch_size == base.batch_size:
        return None
    scaling = config.lr_scaling
    if not math.isclose(config.lr, base.lr * lr_ratio(config.batch_size, base.batch_size, scaling), rel_tol=1e-9):
        return None  # an lr of the run's own
    how = "the square root of" if scaling == "sqrt" else ""
    return (
        f"{config.recipe}'s {base.lr:g} for batch {base.batch_size}, scaled by {how} "
        f"{config.batch_size}/{base.batch_size} (--lr-base-scale {scaling})"
    ).replace("by  ", "by ")


def resolve_config(
    flags: dict,
    *,
    recipe: str | None = None,
    config_file: str | Path | None = None,
    resume: bool = False,
    model_options: dict | None = None,
) -> TrainConfig:
    """A run's config: the recipe's for the model, then the YAML file's values, then `flags` (which win).

    With `resume` and an `out` folder, and neither a recipe nor a file named, the run's own
    `config.yaml` takes the recipe's place, so that `--resume --out RUN` alone continues RUN.
    `model_options` (shortcut, stride_at, ...) are added to the config's own.

    >>> resolve_config({"model": "resnet56", "epochs": 2}, recipe="fast").batch_size
    512
    """
    file_values = load_yaml(config_file) if config_file else {}
    saved = Path(flags["out"]) / "config.yaml" if resume and flags.get("out") else None
    own = saved is not None and not (recipe or config_file)  # the run's own config: its warm-up is its own
    if saved is not None and own:
        if not saved.is_file():
            raise ValueError(f"nothing to resume: {saved} does not exist")
        config = TrainConfig.from_dict(load_yaml(saved))
    else:
        name = recipe or file_values.pop("recipe", None) or "paper-cifar"
        model = (
            flags.get("model")
            or file_values.get("model")
            or trained_model_name(flags, file_values)
            or default_model(name)
        )
        config = for_data(get_recipe(name, str(model)), flags.get("data") or file_values.get("data"))
    for values in (file_values, flags):
        config = with_overrides(config, values, scale_warmup=not own)
    return config.replace(model_options={**config.model_options, **(model_options or {})})


# The fields that apply to image folders alone; a recipe for ImageNet sets some of them.
FOLDER_ONLY = (*FOLDER_DEFAULTS, "color_jitter", "repeated_aug")


def for_data(config: TrainConfig, data: str | None) -> TrainConfig:
    """A recipe's `config` for `data`: an ImageNet recipe on small images (Fashion-MNIST, CIFAR) leaves its
    image-folder settings (Inception crops, colour jitter, image sizes) at their defaults.

    Adapted rather than refused: the rest of such a recipe (optimizer, schedule, label smoothing, mixup,
    RandAugment) is what was asked for, and its image-folder settings have no counterpart on small images,
    which take the paper's pad-and-crop and flips; a refusal would only make the user type each default
    back. `small_data_note` says it in the run's log. A value given for such a field is still refused.

    >>> for_data(bag_of_tricks("resnet20"), "fashion-mnist").crop
    'scale'

    A recipe for small images on an image folder leaves its normalisation of small images to the data's own
    (ImageNet's channel statistics):

    >>> for_data(fast("resnet20"), "imagefolder:x").normalize is None
    True
    """
    if data is not None and of_image_files(str(data)) and not of_image_files(config.data):
        return config.replace(normalize=None) if config.normalize in SMALL_NORMALIZATIONS else config
    if data is None or not of_image_files(config.data) or of_image_files(str(data)):
        return config
    defaults = TrainConfig()
    return config.replace(**{name: getattr(defaults, name) for name in FOLDER_ONLY})


def small_data_note(config: TrainConfig) -> str | None:
    """What the log says when `for_data` left an ImageNet recipe's image-folder settings out."""
    if config.recipe not in RECIPES or of_image_files(config.data):
        return None
    base, defaults = get_recipe(config.recipe, config.model), TrainConfig()
    if not of_image_files(base.data):
        return None
    left = [f"{k}={getattr(base, k)!r}" for k in FOLDER_ONLY if getattr(base, k) != getattr(defaults, k)]
    if not left:
        return None
    return (
        f"{config.recipe} on {config.data}: its image-folder settings ({', '.join(left)}) are left out; "
        "small images take the paper's pad-and-crop and flips instead"
    )


def check_recipe_data(config: TrainConfig) -> None:
    """Refuse, before anything is built, a recipe's own placeholder data (imagefolder:imagenet) where no such
    folder is: the run needs the user's ImageNet, or other data."""
    if config.recipe not in RECIPES or not of_image_files(config.data):
        return
    folder = Path(config.data.split(":", 1)[1]).expanduser()
    if config.data == get_recipe(config.recipe, config.model).data and not folder.is_dir():
        raise ValueError(
            f"{config.recipe} trains on ImageNet, and no folder {folder} (its --data {config.data}) is here: "
            "pass --data imagefolder:PATH, PATH holding train/ and val/ class folders"
        )


def length_note(config: TrainConfig, steps_per_epoch: int) -> str | None:
    """What the log says first when a recipe's length in iterations meets `--subset`: many epochs of few steps.

    >>> length_note(with_overrides(paper_cifar(), {"subset": 512}), 4).split(" (")[0]
    'paper-cifar counts 64,000 iterations, not epochs: on --subset 512 that is 16,000 epochs of 4 steps'
    """
    if config.subset is None or config.iterations is None or config.recipe not in RECIPES:
        return None
    if get_recipe(config.recipe, config.model).iterations != config.iterations:
        return None  # a length of the run's own
    epochs = math.ceil(config.iterations / steps_per_epoch)
    return (
        f"{config.recipe} counts {config.iterations:,} iterations, not epochs: on --subset {config.subset} that is "
        f"{epochs:,} epochs of {steps_per_epoch} steps (--epochs N sets a length in epochs)"
    )


def dropped_note(config: TrainConfig, n_train: int, steps_per_epoch: int) -> str | None:
    """A warning when `--subset` leaves training images out of every epoch: an epoch is full batches only
    (`resnets.data.base.train_batches`), so the last partial batch of each shuffled epoch is dropped."""
    batch = min(config.batch_size, n_train)
    dropped = n_train - steps_per_epoch * batch
    if config.subset is None or config.repeated_aug > 1 or dropped <= 0:  # repeated augmentation: by design
        return None
    return (
        f"warning: --subset {config.subset} leaves {n_train} training images, {steps_per_epoch} batches of {batch}: "
        f"{dropped} of them (a different {dropped} each epoch) are dropped from every epoch; "
        f"--subset {config.subset - dropped} uses every image"
    )


# Below this share of the test view's area, a training crop on average sees too little of what the test
# view sees for the two to agree (the paper's sizes give 0.53; 32-pixel crops of [256, 480] give 0.008).
MIN_CROP_SHARE = 0.25


def view_lines(config: TrainConfig) -> list[str]:
    """What the log says of an image folder's views at the start: the training view with its resize range, the
    test view, and a warning when a training crop covers under `MIN_CROP_SHARE` of the test view's area.

    >>> view_lines(TrainConfig(data="imagefolder:x", image_size=32, test_size=32, test_resize=32))[0].split("; ")
    ['training view: shorter side resized to 37-69 pixels (--scale-range), a random 32x32 crop and a flip', \
'test view: shorter side 32, the central 32x32']
    """
    if not of_image_files(config.data):
        return []
    t, side = folder_transforms(config), config.image_size
    test = f"test view: shorter side {t.resized}, the central {t.tested}x{t.tested}"
    if not config.augment:
        return [f"training view: the test view's (--no-augment); {test}"]
    if t.crop == "random-resized":
        lo = crop_area(side)[0]
        ratio = f"{CROP_RATIO[0]:.2f}-{CROP_RATIO[1]:.2f}"
        view = f"a random {100 * lo:.0f}-100% of the area, aspect {ratio}, resized to {side}x{side}, and a flip"
    else:
        lo, hi = t.sides
        view = f"shorter side resized to {lo}-{hi} pixels (--scale-range), a random {side}x{side} crop and a flip"
    lines = [f"training view: {view}; {test}"]
    share = t.crop_share()
    if share < MIN_CROP_SHARE:
        fix = " ".join(map(str, paper_scale_range(side)))
        lines.append(
            f"warning: a training crop covers on average {100 * share:.1f}% of the area that the test view sees: "
            f"the net trains on details and is tested on whole images; --scale-range {fix} (the paper's ratios to "
            f"--image-size {side}) trains on views like the test's"
        )
    return lines


def start_lines(
    config: TrainConfig, header: str, n_train: int, steps_per_epoch: int, warming_up: bool, more: list[str]
) -> list[str]:
    """What the log says as a run starts: a recipe's length in iterations on a subset (first), the `header`
    with the recipe's lr scaled to the batch, the lines `more` (the group, fine-tuning), an image folder's
    views (`view_lines`), the recipe adapted
    to small data, images dropped from each epoch, and the warm-up."""
    lr = f", lr {config.lr:.3g} ({note})" if (note := lr_note(config)) else ""
    lines = [length_note(config, steps_per_epoch), header + lr, *more, *view_lines(config)]
    lines += [small_data_note(config), dropped_note(config, n_train, steps_per_epoch)]
    return [line for line in lines if line] + warmup_lines(config, warming_up)


def trained_model_name(*sources: dict) -> str | None:
    """The model that an `init_from` file holds, when it records one (a resnets checkpoint or safetensors)."""
    path = next((s["init_from"] for s in sources if s.get("init_from")), None)
    if path is None:
        return None
    try:
        _, meta = read_trained(path)
    except (CheckpointError, ValueError, OSError):  # a plain state dict: --model must name the architecture
        return None
    return meta.get("model_name")


def default_model(recipe: str) -> str:
    """The model a recipe trains when none is named: its function's default.

    >>> default_model("paper-cifar"), default_model("rsb-a3"), default_model("fmnist-best")
    ('resnet20', 'resnet50', 'wrn16_4')
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; accepted: {', '.join(RECIPES)}")
    return inspect.signature(RECIPES[recipe]).parameters["model"].default


def get_recipe(name: str, model: str | None = None) -> TrainConfig:
    """The config of recipe `name` for `model` (default: the recipe's own model, `default_model`).

    >>> get_recipe("explainer", "resnet20").init
    'xavier'
    >>> get_recipe("rsb-a3").model, get_recipe("paper-cifar").model
    ('resnet50', 'resnet20')
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; accepted: {', '.join(RECIPES)}")
    return RECIPES[name](model or default_model(name))
