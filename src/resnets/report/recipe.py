"""A run's recipe as the report names it: the recipe, and the settings in which the run left it."""

from __future__ import annotations

import dataclasses

from ..train.config import RESUMABLE_CHANGES, TrainConfig, resolved_values
from ..train.recipes import get_recipe, with_overrides

# Fields that say which run it is, or where and how it ran, not how it trained: never named as overrides.
# The subsets are data choices that the report's notes name already.
NOT_RECIPE = RESUMABLE_CHANGES | {"recipe", "model", "data", "seed", "subset", "test_subset"}
# Named first, in this order (the length and the batch lead); the others in the config's order.
FIRST = ("epochs", "iterations", "batch_size", "optimizer", "lr", "schedule")
ORDER = {name: i for i, name in enumerate(dict.fromkeys([*FIRST, *(f.name for f in dataclasses.fields(TrainConfig))]))}
WORDS = {"batch_size": "batch", "augment": "augmentation"}
SCHEDULE_WORDS = {"onecycle": "one-cycle"}


def describe_recipe(config: dict) -> str:
    """The recipe of a run (its config.yaml as a mapping), with the settings in which the run differs from it.

    >>> describe_recipe({"recipe": "paper-cifar", "model": "resnet20", "epochs": 8, "iterations": None,
    ...                  "batch_size": 64, "schedule": "onecycle", "augment": False, "device": "cpu"})
    'paper-cifar, overridden: epochs 8, batch 64, one-cycle, no augmentation'
    >>> describe_recipe({"recipe": "paper-cifar", "model": "resnet20", "iterations": 64000, "batch_size": 128})
    'paper-cifar'
    """
    name = config.get("recipe")
    if name is None:
        return "?"
    overrides = recipe_overrides(config)
    return f"{name}, overridden: {', '.join(overrides)}" if overrides else str(name)


def recipe_overrides(config: dict) -> list[str]:
    """The settings of `config` that differ from its recipe's for its model, in words (none where the recipe or
    the model is not known here: a hand-edited config, a recipe of another version).

    A shorter run or another batch changes what the recipe derives from them (a warm-up's length, an lr scaled
    with the batch): those are compared with the recipe's values for the run's length and batch.
    """
    try:
        base = get_recipe(str(config.get("recipe")), str(config.get("model")))
    except (ValueError, KeyError, TypeError):
        return []
    words, length = [], {}
    if config.get("iterations") is not None:
        length = {"iterations": config["iterations"]}
    elif "epochs" in config:
        length = {"epochs": config["epochs"]}
    for key, value in length.items():  # a run in epochs overrides a recipe in iterations whatever their number
        if value != getattr(base, key) or (key == "epochs" and base.iterations is not None):
            words.append(_words(key, value))
    if "batch_size" in config and config["batch_size"] != base.batch_size:
        words.append(_words("batch_size", config["batch_size"]))
    try:
        expected = with_overrides(base, {**length, "batch_size": config.get("batch_size", base.batch_size)}).to_dict()
    except (ValueError, TypeError):  # values the config cannot hold: the recipe's own are compared
        expected = base.to_dict()
    # A value the recipe leaves to the data (none) matches what it resolves to for the run's data and sizes.
    shaped = {k: config[k] for k in ("data", "image_size", "test_size", "crop") if k in config}
    resolved = resolved_values({**expected, **shaped})
    others = [k for k in config if k in expected and k not in NOT_RECIPE and k not in ("epochs", "iterations")]
    for key in sorted((k for k in others if k != "batch_size"), key=lambda k: ORDER.get(k, len(ORDER))):
        if config[key] != expected[key] and not (expected[key] is None and config[key] == resolved[key]):
            words.append(_words(key, config[key]))
    return words


def _words(key: str, value: object) -> str:
    """One override as the report says it: 'batch 64', 'one-cycle', 'no augmentation', 'label smoothing 0.1'."""
    name = WORDS.get(key, key.replace("_", " "))
    if key == "schedule" and isinstance(value, str):
        return SCHEDULE_WORDS.get(value, f"{value} schedule")
    if isinstance(value, bool):
        return name if value else f"no {name}"
    if value is None:
        return f"no {name}"
    return f"{name} {_value(value)}"


def _value(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(_value(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_value(v)}" for k, v in value.items())
    return str(value)
