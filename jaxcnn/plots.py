"""Loss and accuracy curves of a training run, drawn as the course draws them.

``plot_loss(result)``: train vs validation loss per epoch. ``plot_accuracy(result)``: train vs
validation accuracy per epoch with the test accuracy in a yellow box in the top-left corner.
``result`` is the dict returned by :func:`jaxcnn.train.experiment` (or the ``"result"`` entry of
a ``results.json``; a whole ``results.json`` dict works too). Uses matplotlib's object API
(no pyplot, no display needed).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

__all__ = ["plot_accuracy", "plot_loss", "save_plots"]


def _result(result: Mapping[str, Any]) -> Mapping[str, Any]:
    return result["result"] if "result" in result and isinstance(result["result"], Mapping) else result


def _curve(ax, values, label: str, color: str) -> None:
    xs = [i for i, v in enumerate(values) if v is not None]
    ax.plot(xs, [values[i] for i in xs], marker=".", label=label, color=color)


def plot_loss(result: Mapping[str, Any], path: str | os.PathLike | None = None, *, title: str = "Train loss vs Val loss") -> Figure:
    """Train and validation loss per epoch (x: epoch from 0). Saves a PNG to ``path`` if given."""
    r = _result(result)
    fig = Figure(figsize=(6, 4.2), dpi=100)
    ax = fig.add_subplot()
    _curve(ax, r.get("train_losses", []), "train", "tab:blue")
    _curve(ax, r.get("val_losses", []), "val", "tab:orange")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


def plot_accuracy(
    result: Mapping[str, Any], path: str | os.PathLike | None = None, *, title: str = "Train Accuracy vs Val Accuracy"
) -> Figure:
    """Train and validation accuracy (percent) per epoch, with ``Test Acc: x.xxx`` written on the
    axes when ``result['test_acc']`` is known. Saves a PNG to ``path`` if given."""
    r = _result(result)
    fig = Figure(figsize=(6, 4.2), dpi=100)
    ax = fig.add_subplot()
    _curve(ax, r.get("train_accs", []), "train", "tab:blue")
    _curve(ax, r.get("val_accs", []), "val", "tab:orange")
    test_acc = r.get("test_acc")
    if test_acc is not None:
        ax.text(
            0.05, 0.95, f"Test Acc: {test_acc:1.3f}", transform=ax.transAxes, ha="left", va="center",
            bbox=dict(facecolor="yellow", alpha=0.5, boxstyle="round,pad=0.1"),
        )  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


def save_plots(result: Mapping[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """Write ``loss.png`` and ``accuracy.png`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "loss.png", out / "accuracy.png"]
    plot_loss(result, paths[0])
    plot_accuracy(result, paths[1])
    return paths
