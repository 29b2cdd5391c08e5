"""Write the model-level parity table: the largest relative error per model and check.

For every model in both zoos: a torch_ref model with randomised BatchNorm state is
converted into jaxcnn; then eval logits, a training step (outputs, the worst parameter
gradient, BatchNorm running statistics) and the torch -> jaxcnn -> torch round trip are
compared in float32 on the CPU. Errors are ``max|jax - torch| / max|torch|``.

Gradients are reported twice: against the model's largest gradient (one scale per model),
and per parameter against that parameter's own largest gradient. Parameters whose exact
gradient is zero (a conv bias feeding a training-mode BatchNorm: the batch mean cancels it)
hold only rounding noise in both frameworks; those whose torch gradient is below
``ZERO_GRADIENT`` of the model's largest are measured against the model scale instead.
Beside them stands the noise floor: each framework's float32 gradients against a float64
torch run of the same step, with the same rule. Deep stacks without normalisation (``gap_vgg``)
shrink the early layers' gradients to 1e-6 of the head's, and training-mode BatchNorm over
a few values per channel is ill-conditioned; there float32 itself is off by more than
1e-5, and jaxcnn can only be as close to torch as torch is to the exact result. And a
ReLU pre-activation or max-pool runner-up within rounding of the decision can go the other
way in either framework: a jump in a few gradients while every forward quantity agrees
(the "vs float64" columns show which framework flipped). So the
same training step is also compared with both models in float64, where rounding cannot
hide a difference in semantics: the worst of its outputs, gradients and statistics.

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

import copy  # noqa: E402

import torch  # noqa: E402

import jaxcnn.models  # noqa: E402

jaxcnn.configure_platform()  # quiet CPU JAX where no accelerator exists
from model_harness import (  # noqa: E402
    RTOL,
    check_eval,
    check_round_trip,
    check_train_step,
    cross_entropy_torch,
    float64,
    gradient_errors,
    make_pair,
    set_torch_mode,
    torch_input,
)

SMALL_SIDE = 64  # ImageNet-sized models are compared at 64x64 to keep the report quick on a CPU
ZERO_GRADIENT = 1e-6


def report_input_shape(name: str, batch_size: int) -> tuple[int, int, int, int]:
    """NCHW input used for ``name``: its usual size, ImageNet-sized ones shrunk to 64x64."""
    height, width, channels = jaxcnn.models.input_size(name)
    return (batch_size, channels, min(height, SMALL_SIDE), min(width, SMALL_SIDE))


def torch_gradients(torch_model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, logits_outputs: int | None) -> dict:
    """Training-mode (Dropout off) cross-entropy gradients of a copy of ``torch_model`` (``x`` NCHW), as float64."""
    model = copy.deepcopy(torch_model)
    set_torch_mode(model, train=True)
    model.zero_grad()
    cross_entropy_torch(model(x), labels, logits_outputs).backward()
    return {key: parameter.grad.double() for key, parameter in model.named_parameters()}


def measure(name: str, batch_size: int = 2) -> dict:
    """All parity errors of one model (no assertion: tolerances are applied when reading the table)."""
    started = time.perf_counter()
    torch_model, jax_model = make_pair(name, abstract_init=True)
    check_round_trip(torch_model, jax_model)
    shape = report_input_shape(name, batch_size)
    x = torch_input(shape)
    labels = torch.arange(batch_size) % 10
    errors = {"input (NCHW)": "x".join(map(str, shape))}
    errors.update({"eval logits": check_eval(torch_model, jax_model, x, rtol=math.inf, jit=True)["eval output 0"]})
    logits_outputs = 1 if name == "gap_vgg" else None  # (logits, features): the loss is on the logits
    # float64 torch gradients of the same step (taken before the step moves the running statistics)
    exact = torch_gradients(copy.deepcopy(torch_model).double(), x.double(), labels, logits_outputs)
    torch_float32 = torch_gradients(torch_model, x, labels, logits_outputs)
    torch_noise, _ = gradient_errors(torch_float32, exact, zero_grad_threshold=ZERO_GRADIENT)
    train = check_train_step(
        torch_model,
        jax_model,
        x,
        labels,
        rtol=math.inf,
        logits_outputs=logits_outputs,
        zero_grad_threshold=ZERO_GRADIENT,
        reference_gradients=exact,
        jit=True,
    )
    errors["train logits"] = train["train output 0"]
    errors["gradients (model scale)"] = train["gradients (model scale)"]
    errors["gradients (worst parameter)"] = train["gradients (worst parameter)"]
    errors["gradients vs float64: jaxcnn"] = train["gradients vs reference (worst parameter)"]
    errors["gradients vs float64: torch"] = max(error for error, _ in torch_noise.values())
    errors["batch statistics (worst)"] = train["batch statistics (worst)"]
    torch_model, jax_model = make_pair(name, abstract_init=True)  # fresh: the float32 step moved the running statistics
    with float64(torch_model, jax_model):
        float64_errors = check_train_step(
            torch_model, jax_model, x.double(), labels, rtol=math.inf, logits_outputs=logits_outputs, zero_grad_threshold=ZERO_GRADIENT, jit=True
        )
    errors["float64 train step (worst)"] = max(value for key, value in float64_errors.items() if key != "gradients (model scale)")
    errors["round trip"] = "bit-exact"
    errors["seconds"] = round(time.perf_counter() - started, 1)
    return errors


def markdown(results: dict[str, dict]) -> str:
    """The results as a Markdown table."""
    columns = [
        "input (NCHW)",
        "eval logits",
        "train logits",
        "gradients (model scale)",
        "gradients (worst parameter)",
        "gradients vs float64: jaxcnn",
        "gradients vs float64: torch",
        "batch statistics (worst)",
        "float64 train step (worst)",
        "round trip",
        "seconds",
    ]
    lines = ["| model | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for name, errors in results.items():
        cells = []
        for column in columns:
            value = errors.get(column, errors.get("error", ""))
            cells.append(f"{value:.1e}" if isinstance(value, float) and column != "seconds" else str(value))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Relative errors `max|jax - torch| / max|torch|`, float32, CPU, batch 2; the parity tests assert <= {RTOL:g} "
        "unless a test says why. Gradients: the largest difference over the model's largest gradient, and the worst "
        f"parameter on its own scale (parameters whose torch gradient is below {ZERO_GRADIENT:g} of the model's largest, "
        "zero in theory, on the model scale). The two `vs float64` columns measure each framework's float32 gradients "
        "against a float64 torch run of the same step, by the same rule: how far float32 itself is from exact there. "
        "`float64 train step` is the same step run in float64 on both sides (worst of outputs, gradients, statistics). "
        "`seconds` is the whole check, compilation included."
    )
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
