"""Write the model-level parity table: the largest relative error per model and check.

For every model in both zoos: a torch_ref model with randomised BatchNorm state is
converted into jaxcnn; then eval logits, a training step (outputs, the worst parameter
gradient, BatchNorm running statistics) and the torch -> jaxcnn -> torch round trip are
compared in float32 on the CPU. Errors are ``max|jax - torch| / max|torch|``.

    python scripts/parity_report.py --out docs/parity   # writes parity.md and parity.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "parity_tests"))

import torch  # noqa: E402

import jaxcnn.models  # noqa: E402
from model_harness import RTOL, check_eval, check_round_trip, check_train_step, make_pair, torch_input  # noqa: E402

SMALL_SIDE = 64  # ImageNet-sized models are compared at 64x64 to keep the report quick on a CPU


def report_input_shape(name: str, batch_size: int) -> tuple[int, int, int, int]:
    """NCHW input used for ``name``: its usual size, ImageNet-sized ones shrunk to 64x64."""
    height, width, channels = jaxcnn.models.input_size(name)
    return (batch_size, channels, min(height, SMALL_SIDE), min(width, SMALL_SIDE))


def measure(name: str, batch_size: int = 2) -> dict:
    """All parity errors of one model (no assertion: tolerances are applied when reading the table)."""
    started = time.perf_counter()
    torch_model, jax_model = make_pair(name)
    check_round_trip(torch_model, jax_model)
    shape = report_input_shape(name, batch_size)
    x = torch_input(shape)
    labels = torch.arange(batch_size) % 10
    errors = {"input (NCHW)": "x".join(map(str, shape))}
    errors.update({"eval logits": check_eval(torch_model, jax_model, x, rtol=math.inf)["eval output 0"]})
    train = check_train_step(torch_model, jax_model, x, labels, rtol=math.inf)
    errors["train logits"] = train["train output 0"]
    errors["gradients (worst parameter)"] = train["gradients (worst parameter)"]
    errors["batch statistics (worst)"] = train["batch statistics (worst)"]
    errors["round trip"] = "bit-exact"
    errors["seconds"] = round(time.perf_counter() - started, 1)
    return errors


def markdown(results: dict[str, dict]) -> str:
    """The results as a Markdown table."""
    columns = ["input (NCHW)", "eval logits", "train logits", "gradients (worst parameter)", "batch statistics (worst)", "round trip"]
    lines = ["| model | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for name, errors in results.items():
        cells = []
        for column in columns:
            value = errors.get(column, errors.get("error", ""))
            cells.append(f"{value:.1e}" if isinstance(value, float) else str(value))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Relative errors `max|jax - torch| / max|torch|`, float32, CPU; the parity tests assert <= {RTOL:g} unless a test says why.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "parity")
    parser.add_argument("--models", nargs="*", help="default: every model")
    args = parser.parse_args(argv)
    names = args.models or jaxcnn.models.names()
    results = {}
    for name in names:
        try:
            results[name] = measure(name)
        except Exception as error:  # a report lists failures instead of stopping at the first
            results[name] = {"error": f"{type(error).__name__}: {error}".splitlines()[0]}
        print(name, results[name], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "parity.json").write_text(json.dumps(results, indent=2))
    (args.out / "parity.md").write_text(markdown(results) + "\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
