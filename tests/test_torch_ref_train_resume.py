"""``python -m torch_ref.train --resume``: an interrupted torch run continues to the same weights."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from jaxcnn.train.config import TrainConfig  # noqa: E402
from torch_ref.train import CHECKPOINT_NAME, main, train  # noqa: E402

_TIMINGS = ("epoch_seconds", "run_seconds", "resumed_from")


def _config(out, **changes) -> TrainConfig:
    base = dict(model="mlp", dataset="digits", epochs=2, batch_size=16, train_limit=80, eval_limit=32, lr=0.05,
                optimizer="sgd", momentum=0.9, schedule="cosine", progress=False, tensorboard=False, plots=False,
                out=str(out))  # fmt: skip
    return TrainConfig(**{**base, **changes})


@pytest.mark.parametrize("batch_order", [pytest.param("jax", marks=pytest.mark.slow), "torch"])
def test_resumed_torch_run_reaches_the_uninterrupted_weights(tmp_path, batch_order):
    extra = {"augment": True} if batch_order == "torch" else {}
    reference = train(_config(tmp_path / "ref", **extra), batch_order=batch_order, device="cpu")
    stopped = train(_config(tmp_path / "run", max_steps=7, **extra), batch_order=batch_order, device="cpu")
    assert not stopped["complete"] and stopped["steps"] == 7  # mid-epoch 2 (5 steps per epoch)
    resumed = train(_config(tmp_path / "run", **extra), batch_order=batch_order, device="cpu", resume=True)
    assert resumed["resumed_from"] == 7 and resumed["complete"]
    assert {k: v for k, v in resumed.items() if k not in _TIMINGS} == {
        k: v for k, v in reference.items() if k not in _TIMINGS
    }
    final = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    expected = torch.load(tmp_path / "ref" / "model.pt", weights_only=True)
    assert final.keys() == expected.keys()
    for key in expected:
        assert torch.equal(final[key], expected[key]), key


def test_resume_without_checkpoint_is_one_line_error(tmp_path, capsys):
    argv = ["train", "--model", "mlp", "--out", str(tmp_path / "none"), "--resume", "--no-progress"]
    assert main(argv[1:]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and CHECKPOINT_NAME in err[0] and " — " in err[0]
