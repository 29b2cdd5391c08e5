"""``compare``: a torch module and its jaxcnn twin run side by side, module by module.

Layouts are the library's business: inputs are given once (NCHW torch tensor or numpy
array, or an NHWC JAX array), torch sees NCHW and jaxcnn NHWC, and every comparison is made
in torch's layout (feature maps NCHW, conv kernels OIHW, Linear weights ``(out, in)``).
torch is imported inside the functions only. The runs themselves are in
:mod:`jaxcnn.parity.runs`; this module turns them into a :class:`ParityReport`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcnn.convert import load_torch_state_dict, to_torch_arrays
from jaxcnn.intermediates import get_submodule
from jaxcnn.parity.report import ROOT, ModuleRow, ParityReport, TensorRow, verdict
from jaxcnn.parity.rule import RTOL, ShapeMismatch, difference, gradient_errors, relative_error
from jaxcnn.parity.runs import (
    KeyMap,
    _cast,
    _error,
    _input_nchw,
    _Run,
    _side_by_side,
    _torch_arrays,
    fill_abstract_rng_streams,
    map_keys,
    map_name,
)

RTOL64 = 1e-9  # float64 runs of the same computation agree to ~1e-12; above this it is semantics
ZERO_GRADIENT = 1e-6  # gradients below this fraction of the model's largest are zero in theory


# ----------------------------------------------------------------------------- the entry point


def compare(
    torch_module,
    jax_module: nnx.Module,
    inputs,
    *,
    labels=None,
    mode: str = "eval",
    rtol: float = RTOL,
    key_map: KeyMap = None,
    weights: str = "copy",
    reference: str | None = None,
    steps: int = 0,
    optimizers=None,
    layout: str | None = None,
    aux_loss_weight: float = 0.0,
    zero_grads: Iterable[str] = (),
    zero_grad_threshold: float | None = ZERO_GRADIENT,
    rtol64: float = RTOL64,
    modules: Iterable[str] | None = None,
    isolate: bool = True,
    jit: bool = True,
) -> ParityReport:
    """Compare a torch module with its jaxcnn twin, module by module; returns a :class:`ParityReport`.

    Args:
      torch_module: the reference ``torch.nn.Module`` (not modified: a copy is run).
      jax_module: the twin, an ``nnx.Module`` whose parameter paths are torch's ``state_dict``
        keys (every model built from ``jaxcnn.nn``), possibly built abstractly with
        ``nnx.eval_shape`` when ``weights="copy"``. With ``"copy"`` it receives torch's weights
        (strict, through :func:`jaxcnn.convert.load_torch_state_dict`); otherwise not modified.
      inputs: one batch, NCHW (a torch tensor or numpy array) or NHWC (a JAX array, or any
        array with ``layout="NHWC"``). Inputs of other ranks are passed as they are. Floating
        inputs are compared in float32; float64 inputs run the whole comparison in float64
        (both models cast, ``jax.enable_x64`` inside the call).
      labels: int class labels ``(N,)`` for ``mode="train"`` (default ``arange(N) % classes``).
      mode: ``"eval"`` or ``"train"`` (training-mode outputs, the loss
        :func:`jaxcnn.train.step.model_loss` and its torch twin, every parameter's gradient,
        BatchNorm running statistics after the step). Dropout is kept off on both sides.
      rtol: the tolerance: ``max|jax - torch| <= rtol * max|torch|`` (see :mod:`jaxcnn.parity.rule`).
      key_map: torch ``state_dict`` keys (and module names) -> jaxcnn paths: a callable (``None``
        drops a key) or ``(regex, replacement)`` pairs applied in order.
      weights: ``"copy"`` (torch -> jaxcnn), ``"check"`` (the twin is loaded already: every
        tensor is compared and reported as a ``weight`` row) or ``"keep"`` (loaded, not checked).
      reference: ``"float64"``: also run everything with both sides in float64 and classify each
        float32 disagreement as ``"float32 rounding"`` (the float64 runs agree within ``rtol64``)
        or ``"semantic difference"`` (they do not).
      steps: with ``optimizers``, run that many optimizer steps on the batch (jaxcnn's
        ``make_train_step`` against ``torch.optim``) and compare every parameter and buffer.
      optimizers: ``(optax transformation, torch optimizer or factory params -> optimizer)``, or
        ``(name, options)`` for both ``jaxcnn.optim.create(name, **options)`` and torch's class.
      aux_loss_weight: as in ``model_loss`` (auxiliary logits outputs, GoogLeNet).
      zero_grads, zero_grad_threshold: parameters whose exact gradient is zero (named, or below
        this fraction of the model's largest gradient) are judged on the model's gradient scale.
      modules: the torch submodule names to record (default: every named submodule).
      isolate: also run each recorded jaxcnn submodule on torch's input to it (``isolated``
        errors and ``first_divergence`` need it; without it only ``accumulated`` is measured).
      jit: compile the jaxcnn end-to-end run (isolated module calls always run eagerly).
    """
    x = _input_nchw(inputs, layout)
    if x.dtype == np.float64:
        with jax.enable_x64(True):
            return _compare(torch_module, jax_module, x, np.float64, **{k: v for k, v in locals().items() if k not in ("torch_module", "jax_module", "inputs", "layout", "x")})
    return _compare(torch_module, jax_module, x, np.float32, **{k: v for k, v in locals().items() if k not in ("torch_module", "jax_module", "inputs", "layout", "x")})


def _compare(torch_module, jax_module, x, dtype, *, labels, mode, rtol, key_map, weights, reference, steps, optimizers,
             aux_loss_weight, zero_grads, zero_grad_threshold, rtol64, modules, isolate, jit) -> ParityReport:  # fmt: skip
    import torch

    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', not {mode!r}")
    if weights not in ("copy", "check", "keep"):
        raise ValueError(f"weights must be 'copy', 'check' or 'keep', not {weights!r}")
    if reference not in (None, "float64"):
        raise ValueError(f"reference must be None or 'float64', not {reference!r}")
    if steps and mode != "train":
        mode = "train"
    train = mode == "train"
    if reference == "float64" and dtype == np.float64:
        raise ValueError("reference='float64' compares a float32 run with a float64 one: give float32 inputs")
    if np.issubdtype(x.dtype, np.floating):
        x = x.astype(dtype)
    torch_module = copy.deepcopy(torch_module)
    torch_module.to(dtype=torch.float64 if dtype == np.float64 else torch.float32)
    state_dict = map_keys(_torch_arrays(torch_module), key_map) if weights != "keep" else {}

    report = ParityReport(
        torch_model=type(torch_module).__name__,
        jax_model=type(jax_module).__name__,
        mode=mode,
        steps=int(steps),
        rtol=float(rtol),
        reference=reference,
        input_shape=list(x.shape),
    )
    if weights == "copy":
        load_torch_state_dict(jax_module, state_dict)
        fill_abstract_rng_streams(jax_module)
    elif weights == "check":
        exported = to_torch_arrays(jax_module)
        for key in sorted(set(state_dict) | set(exported)):
            if key not in exported or key not in state_dict:
                report.tensors.append(TensorRow("weight", key, [], float("inf"), note="only in " + ("torch" if key not in exported else "jaxcnn")))
                continue
            try:
                error = relative_error(exported[key], state_dict[key])
                note = ""
            except ShapeMismatch as mismatch:
                error, note = float("inf"), str(mismatch)
            report.tensors.append(TensorRow("weight", key, list(state_dict[key].shape), error, note=note))
    if reference or dtype == np.float64:
        jax_module = nnx.clone(jax_module)  # cast below: the caller's model stays as it is
        _cast(jax_module, jnp.float64 if dtype == np.float64 else jnp.float32)
    wanted = None if modules is None else set(modules)

    names_on_jax: dict[str, str | None] = {}
    for name, _ in torch_module.named_modules():
        if not name or (wanted is not None and name not in wanted):
            continue
        jax_name = map_name(name, key_map) or None  # mapped to "" or None: no counterpart of its own
        try:
            if jax_name is not None:
                get_submodule(jax_module, jax_name)
        except AttributeError:
            jax_name = None
        names_on_jax[name] = jax_name
    types = {name: type(module).__name__ for name, module in torch_module.named_modules()}

    run32, labels = _side_by_side(
        copy.deepcopy(torch_module) if reference else torch_module, nnx.clone(jax_module) if reference else jax_module, x, labels,
        train=train, names_on_jax=names_on_jax, aux_loss_weight=aux_loss_weight, jit=jit, key_map=key_map, steps=steps, optimizers=optimizers,
        isolated=isolate,
    )  # fmt: skip
    run64 = None
    if reference == "float64":
        with jax.enable_x64(True):
            torch64 = torch_module.double()
            _cast(jax_module, jnp.float64)
            run64, _ = _side_by_side(
                torch64, jax_module, x.astype(np.float64) if np.issubdtype(x.dtype, np.floating) else x, labels,
                train=train, names_on_jax=names_on_jax, aux_loss_weight=aux_loss_weight, jit=jit, key_map=key_map, steps=steps, optimizers=optimizers,
                isolated=isolate,
            )  # fmt: skip
    report.labels = [int(v) for v in np.asarray(labels).reshape(-1)] if train else None
    report.error = run32.jax_error
    if run32.steps_error:
        report.notes.append(f"steps: {run32.steps_error}")
    _fill_modules(report, run32, run64, types, rtol64)
    _fill_tensors(report, run32, run64, train, zero_grads, zero_grad_threshold, rtol64)
    return report


def _per_call(calls) -> dict[tuple[str, int], Any]:
    counts: dict[str, int] = {}
    out = {}
    for name, *rest in calls:
        index = counts[name] = counts.get(name, -1) + 1
        out[(name, index)] = rest[-1]
    return out


def _safe_error(actual, expected) -> float | None:
    if actual is None or expected is None:
        return None
    error, _ = _error(actual, expected)
    return error


def _fill_modules(report: ParityReport, run32: _Run, run64: _Run | None, types: Mapping[str, str], rtol64: float) -> None:
    jax32, torch32 = _per_call(run32.jax_calls), _per_call(run32.torch_calls)
    jax64 = _per_call(run64.jax_calls) if run64 else {}
    torch64 = _per_call(run64.torch_calls) if run64 else {}
    rows = []
    for (name, index), expected in torch32.items():
        isolated, note = run32.isolated.get((name, index), (None, ""))
        accumulated = None
        if (name, index) in jax32:
            accumulated, accumulated_note = _error(jax32[(name, index)], expected)
            note = note or accumulated_note
        elif not note:
            note = "not called on the jax side" if run32.jax_error is None else "not reached: the jax model raised"
        row = ModuleRow(name, types.get(name, ""), index, list(np.shape(expected[0])) if expected else [], accumulated, isolated, note)
        if run64 is not None:
            isolated64 = run64.isolated.get((name, index), (None, ""))[0]
            row.float64 = {
                "isolated": isolated64,
                "torch_vs_float64": _safe_error(expected, torch64.get((name, index))),
                "jax_vs_float64": _safe_error(jax32.get((name, index)), torch64.get((name, index))),
                "accumulated": _safe_error(jax64.get((name, index)), torch64.get((name, index))),
            }
            row.verdict = verdict(isolated, isolated64, report.rtol, rtol64)
        rows.append(row)
    # the whole model: its input is the user's, so accumulated and isolated are one number
    root_error, root_note = _error(run32.jax_outputs, run32.torch_outputs) if run32.jax_error is None else (float("inf"), run32.jax_error)
    root = ModuleRow(ROOT, report.torch_model, 0, list(np.shape(run32.torch_outputs[0])), root_error, root_error, root_note)
    if run64 is not None:
        root64 = _error(run64.jax_outputs, run64.torch_outputs)[0] if run64.jax_error is None else float("inf")
        root.float64 = {
            "isolated": root64,
            "torch_vs_float64": _safe_error(run32.torch_outputs, run64.torch_outputs),
            "jax_vs_float64": _safe_error(run32.jax_outputs, run64.torch_outputs) if run32.jax_error is None else None,
            "accumulated": root64,
        }
        root.verdict = verdict(root_error, root64, report.rtol, rtol64)
    rows.append(root)
    report.modules = rows


def _tensor_rows(kind, actual: Mapping, expected: Mapping) -> list[TensorRow]:
    rows = []
    for key in expected:
        if key not in actual:
            rows.append(TensorRow(kind, key, list(np.shape(expected[key])), float("inf"), note="missing on the jax side"))
            continue
        try:
            d = difference(actual[key], expected[key])
            error = d.error / d.scale if d.scale > 0 else d.error
            note = ""
        except ShapeMismatch as mismatch:
            error, note = float("inf"), str(mismatch)
        if not np.issubdtype(np.asarray(expected[key]).dtype, np.floating):
            error = 0.0 if np.array_equal(np.asarray(actual[key]), np.asarray(expected[key])) else float("inf")
        rows.append(TensorRow(kind, key, list(np.shape(expected[key])), error, note=note))
    return rows


def _fill_tensors(report, run32: _Run, run64: _Run | None, train, zero_grads, zero_grad_threshold, rtol64) -> None:
    rows: list[TensorRow] = []
    if run32.jax_error is None:
        for index, expected in enumerate(run32.torch_outputs):
            rows += _tensor_rows("output", {f"output {index}": run32.jax_outputs[index]} if index < len(run32.jax_outputs) else {}, {f"output {index}": expected})
        if train:
            rows += _tensor_rows("loss", {"loss": run32.jax_loss}, {"loss": run32.torch_loss})
            grads = gradient_errors(run32.jax_grads, run32.torch_grads, zero_grads=zero_grads, zero_grad_threshold=zero_grad_threshold) if set(run32.torch_grads) <= set(run32.jax_grads) else None
            for key, value in run32.torch_grads.items():
                if grads is None or key not in grads.judged:
                    rows.append(TensorRow("gradient", key, list(value.shape), float("inf"), note="missing on the jax side"))
                    continue
                rows.append(
                    TensorRow("gradient", key, list(value.shape), grads.judged[key], own_scale=grads.own_scale[key],
                              model_scale=grads.model_scale[key], note="zero in theory: judged on the model's gradient scale" if key in grads.zero_in_theory else "")
                )  # fmt: skip
            rows += _tensor_rows("statistic", run32.jax_stats, run32.torch_stats)
    if run32.torch_after:
        rows += _tensor_rows(f"after {report.steps} steps", run32.jax_after, run32.torch_after)
    if run64 is not None:
        grads64 = {}
        if train and run64.jax_error is None and run64.torch_grads:
            reference = run64.torch_grads
            options = {"zero_grads": zero_grads, "zero_grad_threshold": zero_grad_threshold}
            for name, actual in (("error", run64.jax_grads), ("torch_vs_float64", run32.torch_grads), ("jax_vs_float64", run32.jax_grads)):
                if set(reference) <= set(actual):
                    grads64[name] = gradient_errors(actual, reference, **options)
        for row in rows:
            row.float64 = _tensor_float64(row, run32, run64, grads64)
            row.verdict = verdict(row.error, row.float64.get("error") if row.float64 else None, report.rtol, rtol64)
    report.tensors = [row for row in report.tensors if row.kind == "weight"] + rows


def _tensor_float64(row: TensorRow, run32: _Run, run64: _Run, grads64: dict) -> dict | None:
    """``{"error": jax64 vs torch64, "torch_vs_float64": torch32 vs torch64, "jax_vs_float64": jax32 vs torch64}``."""
    if row.kind == "gradient":  # by the gradient rule (own scale, or the model's for zero-in-theory gradients)
        return {name: errors.judged.get(row.name) for name, errors in grads64.items()} if grads64 else None

    def pick(run, side):
        if row.kind == "output":
            values = run.jax_outputs if side == "jax" else run.torch_outputs
            index = int(row.name.split()[-1])
            return values[index] if index < len(values) else None
        if row.kind == "loss":
            return run.jax_loss if side == "jax" else run.torch_loss
        table = {"statistic": (run.jax_stats, run.torch_stats)}.get(row.kind, (run.jax_after, run.torch_after))
        return table[0 if side == "jax" else 1].get(row.name)

    jax64, torch64, torch32, jax32 = pick(run64, "jax"), pick(run64, "torch"), pick(run32, "torch"), pick(run32, "jax")
    if torch64 is None:
        return None
    return {
        "error": _safe_error([jax64], [torch64]) if jax64 is not None else None,
        "torch_vs_float64": _safe_error([torch32], [torch64]),
        "jax_vs_float64": _safe_error([jax32], [torch64]) if jax32 is not None else None,
    }


def assert_parity(torch_module, jax_module: nnx.Module, inputs, **options) -> ParityReport:
    """:func:`compare` for tests: returns the report, raises ``AssertionError`` naming the first divergent module and its error."""
    report = compare(torch_module, jax_module, inputs, **options)
    if not report.passed:
        raise AssertionError(report.failure_message())
    return report
