"""experiment(): reproducibility, outputs, config files, and the torch reference trainer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from jaxcnn.train import TrainConfig, Trainer, experiment, load_config_file
from jaxcnn.train.logging import read_results

# A few seconds per run: the MLP on 192 digits, 24-example batches.
TINY = dict(
    model="mlp", dataset="digits", epochs=2, batch_size=24, train_limit=192, eval_limit=96,
    lr=0.1, momentum=0.9, progress=False,
)  # fmt: skip
_TIMINGS = ("epoch_seconds", "run_seconds", "resumed_from")


def _numbers(result):
    return {k: v for k, v in result.items() if k not in _TIMINGS}


def test_experiment_is_seeded_and_reproducible():
    config, first = experiment(TrainConfig(**TINY, seed=3))
    _, second = experiment(TrainConfig(**TINY, seed=3))
    _, other = experiment(TrainConfig(**TINY, seed=4))
    assert _numbers(first) == _numbers(second)  # bitwise: floats compared exactly
    assert first["train_losses"] != other["train_losses"]
    assert config["num_classes"] == 10 and config["seed"] == 3
    for key in ("train_losses", "val_losses", "train_accs", "val_accs"):
        assert len(first[key]) == 2
    assert first["train_acc"] == first["train_accs"][-1] and first["val_acc"] == first["val_accs"][-1]
    assert 0.0 <= first["test_acc"] <= 100.0 and first["complete"]
    assert first["steps"] == 2 * first["steps_per_epoch"] == 2 * math.ceil(192 / 24)


def test_outputs_results_plots_tensorboard(tmp_path):
    out = tmp_path / "run"
    config = TrainConfig(**{**TINY, "epochs": 1}, out=str(out), schedule="cosine", augment=True, compute_dtype="bfloat16")
    _, result = experiment(config)
    assert all(math.isfinite(v) for v in result["train_losses"] + result["val_losses"])
    saved = read_results(out)
    assert saved["framework"] == "jax" and saved["config"]["out"] == str(out)
    assert saved["result"]["test_acc"] == pytest.approx(result["test_acc"])
    assert saved["result"]["train_losses"] == result["train_losses"]
    for name in ("loss.png", "accuracy.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    assert json.loads((out / "config.json").read_text())["model"] == "mlp"
    assert (out / "checkpoints").is_dir()


def test_plots_write_test_accuracy_on_the_accuracy_plot(tmp_path):
    from jaxcnn.plots import plot_accuracy, plot_loss

    result = {"train_losses": [1.0, 0.5], "val_losses": [1.1, 0.7], "train_accs": [60.0, 80.0],
              "val_accs": [55.0, 75.0], "test_acc": 74.25}  # fmt: skip
    fig = plot_accuracy(result, tmp_path / "acc.png")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["Test Acc: 74.250"]
    assert len(plot_loss({"result": result}).axes[0].lines) == 2
    assert (tmp_path / "acc.png").stat().st_size > 0


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".toml"])
def test_config_files_and_overrides(tmp_path, suffix):
    path = tmp_path / f"run{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps({"model": "mlp", "lr": 0.2, "batch-size": 16, "milestones": [1, 2]}))
    elif suffix == ".yaml":
        path.write_text("model: mlp\nlr: 0.2\nbatch_size: 16\nmilestones: [1, 2]\n")
    else:
        path.write_text('[train]\nmodel = "mlp"\nlr = 0.2\nbatch_size = 16\nmilestones = [1, 2]\n')
    config = TrainConfig.from_file(path, overrides={"lr": 0.3})
    assert (config.model, config.lr, config.batch_size, config.milestones) == ("mlp", 0.3, 16, [1, 2])
    assert config.epochs == TrainConfig().epochs
    assert load_config_file(path)["lr"] == 0.2


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="unknown config keys"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="compute_dtype"):
        TrainConfig(compute_dtype="int8")
    assert TrainConfig(model="googlenet").resolved_aux_loss_weight == 0.3
    assert TrainConfig(model="mnist_cnn").resolved_aux_loss_weight == 0.0


def test_trained_model_scores_like_evaluate():
    trainer = Trainer(TrainConfig(**{**TINY, "epochs": 1}))
    trainer.fit()
    loss, acc = trainer.evaluate("test")
    model = trainer.trained_model()
    test = trainer.splits["test"]
    from jaxcnn.data import normalize

    logits = model(normalize(test.images, test.mean, test.std))
    assert 100.0 * float(np.mean(np.asarray(logits).argmax(-1) == test.labels)) == pytest.approx(acc)


def test_torch_reference_trainer_runs_and_matches_jax(tmp_path):
    """One epoch of torch_ref.train on a digits slice, same init and batches as the JAX run."""
    pytest.importorskip("torch")
    from torch_ref.train import main

    args = ["--model", "mlp", "--dataset", "digits", "--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.9",
            "--epochs", "1", "--batch-size", "24", "--train-limit", "192", "--eval-limit", "96", "--no-progress",
            "--no-tensorboard", "--out", str(tmp_path / "torch")]  # fmt: skip
    assert main(args) == 0
    torch_results = read_results(tmp_path / "torch")
    assert torch_results["framework"] == "torch"
    assert (tmp_path / "torch" / "model.pt").is_file() and (tmp_path / "torch" / "accuracy.png").is_file()
    _, jax_result = experiment(TrainConfig(**{**TINY, "epochs": 1}))
    tr = torch_results["result"]
    assert set(jax_result) <= set(tr) | {"framework"}
    np.testing.assert_allclose(tr["train_losses"], jax_result["train_losses"], rtol=1e-4)
    np.testing.assert_allclose(tr["val_losses"], jax_result["val_losses"], rtol=1e-4)
    assert abs(tr["test_acc"] - jax_result["test_acc"]) <= 100.0 / 96 + 1e-9  # at most one example
