"""A trained run read through its one owner (`resnets.trained`): the layout, the metadata, and the
data as the network saw them, the same for every command and analysis."""

import pytest
import torch

from resnets.analysis import gradflow, responses
from resnets.data import load_dataset
from resnets.train import TrainConfig, train
from resnets.trained import RunFolder, describe_run, model_from_checkpoint, run_config, trained_data

# The `fast` and `fmnist-best` recipes' normalisation: mean and std of the training pixels.
RUN = {
    "model": "resnet8",
    "data": "synthetic:1,16,16,4",
    "subset": 96,
    "batch_size": 32,
    "epochs": 1,
    "device": "cpu",
    "seed": 3,
    "normalize": "pixel-mean-std",
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One short finished run, shared by the tests of this file."""
    out = tmp_path_factory.mktemp("trained") / "run"
    config = TrainConfig(**RUN, out=str(out))
    train(config)
    return config, RunFolder(out)


def _as_trained(config: TrainConfig, batch_size: int, seed: int):
    """The run's own loader, unaugmented: what its network saw in training."""
    return load_dataset(
        config.data,
        batch_size=batch_size,
        seed=seed,
        subset=config.subset,
        augment=False,
        normalize=config.normalize,
    )


def test_grad_flow_and_responses_see_the_training_normalisation(finished, monkeypatch):
    config, run = finished
    seen = {}

    def capture(name, function):
        def wrapped(model, images, *args, **kwargs):
            seen[name] = images.detach().clone()
            return function(model, images, *args, **kwargs)

        return wrapped

    monkeypatch.setattr(gradflow, "gradient_flow", capture("grad-flow", gradflow.gradient_flow))
    monkeypatch.setattr(responses, "layer_responses", capture("responses", responses.layer_responses))
    gradflow.gradient_flow_for(run.weights, batch_size=16, seed=5)
    responses.responses_for_checkpoints([run.weights], n_images=24)

    own = _as_trained(config, batch_size=16, seed=config.seed)  # a checkpoint's own order and images
    train_images, _ = next(iter(own.train.epoch(0)))
    test_images = torch.cat([x for x, _ in own.test.epoch(0)])[:24]
    assert torch.equal(seen["grad-flow"], train_images)
    assert torch.equal(seen["responses"], test_images)
    # Not a check that cannot fail: the default normalisation (the pixel mean alone) gives other inputs.
    plain = load_dataset(config.data, batch_size=16, seed=config.seed, subset=config.subset, augment=False)
    other, _ = next(iter(plain.train.epoch(0)))
    assert not torch.allclose(other, train_images)
    assert abs(train_images.std().item() - 1.0) < 0.1  # the std normalised away


def test_the_metadata_is_built_once_and_read_back_alike(finished):
    config, run = finished
    for path in (run.weights, run.last):  # the safetensors file and the checkpoint carry the same description
        _, meta = model_from_checkpoint(path)
        assert run_config(meta, path) == config
        data = trained_data(meta, path)
        expected = describe_run(config, data.info, *meta["normalization"].values())
        assert meta["class_names"] == expected["class_names"] and meta["data"] == expected["data"]
        assert all(
            torch.equal(meta["normalization"][k], expected["normalization"][k].reshape_as(meta["normalization"][k]))
            for k in ("mean", "std")
        )
    assert run.config.read_text().startswith("recipe: ") and run.metrics.is_file() and run.hardware.is_file()
