"""Model-level parity harness: torch_ref model -> convert -> jaxcnn model -> compare.

Used by the ``test_models_*.py`` files; built on :mod:`jaxcnn.parity` (its comparison rule,
its side-by-side runs, its loss): ``check_eval`` and ``check_train_step`` are
:func:`jaxcnn.parity.compare` with the tolerances of each test asserted on its report. Every
comparison is float32 on CPU (float64 inside :func:`float64`) and relative to the reference
tensor's scale: ``max|jax - torch| <= rtol * max|torch|``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

import jaxcnn.models
import torch_ref.models
from jaxcnn import parity
from jaxcnn.convert import load_torch_state_dict, to_torch_arrays, torch_shapes, torch_variables
from jaxcnn.parity import RTOL, as_list, nchw, set_mode  # noqa: F401  (nchw, set_mode: used by the tests)
from jaxcnn.parity.zoo import randomize_batchnorm

outputs_as_list = as_list
randomize_torch_model = randomize_batchnorm


def assert_close(actual, expected, rtol: float = RTOL, what: str = "") -> float:
    """:func:`jaxcnn.parity.assert_close` (the one rule); returns the relative error."""
    return parity.assert_close(actual, expected, rtol, name=what)


@contextlib.contextmanager
def cheap_tracer_origin_messages():
    """Make tracing deep models (``abstract_init``, ``jit=True``) linear instead of quadratic in their size.

    Under tracing, flax's ``Variable.set_value`` (every ``rngs.params()`` counter increment,
    every initialiser, every training-mode BatchNorm update) probes ``getattr(value,
    'sharding', None)`` on a tracer; JAX answers with an AttributeError whose message walks
    the whole program traced so far (``DynamicJaxprTracer._origin_msg``). The message is
    discarded, but building it costs tens of seconds for a DenseNet. Only that message
    text is stubbed out, inside the block (the same trick as tests/test_models_registry.py).
    """
    try:
        from jax._src.interpreters.partial_eval import DynamicJaxprTracer
    except ImportError:  # JAX internals moved: run at the normal speed
        yield
        return
    original = DynamicJaxprTracer.__dict__.get("_origin_msg")
    if original is None:
        yield
        return
    DynamicJaxprTracer._origin_msg = lambda self: ""
    try:
        yield
    finally:
        DynamicJaxprTracer._origin_msg = original


def make_pair(name: str, *, seed: int = 0, abstract_init: bool = False, **options):
    """A torch_ref model with randomised BatchNorm state and its jaxcnn twin loaded from it.

    ``abstract_init=True`` builds the jaxcnn twin under ``nnx.eval_shape`` (shapes only, no
    random initialisation): every Param/BatchStat is overwritten by the state dict anyway,
    and eager initialisers compile once per distinct weight shape, which costs tens of CPU
    seconds for deep models. RNG streams (e.g. Dropout's, which the harness keeps off) get
    fresh concrete keys; test the initialisation separately.
    """
    torch.manual_seed(seed)
    torch_model = randomize_torch_model(torch_ref.models.create(name, **options), seed)
    if abstract_init:
        jax_model = nnx.eval_shape(lambda: jaxcnn.models.create(name, rngs=nnx.Rngs(seed), **options))
    else:
        jax_model = jaxcnn.models.create(name, rngs=nnx.Rngs(seed), **options)
    load_torch_state_dict(jax_model, torch_model.state_dict())  # the converter copies: no aliasing of torch buffers
    if abstract_init:
        parity.fill_abstract_rng_streams(jax_model, seed)
        abstract = [path for path, leaf in nnx.to_flat_state(nnx.state(jax_model)) if isinstance(leaf.get_value(), jax.ShapeDtypeStruct)]
        assert not abstract, f"abstract_init left state the torch state dict does not fill: {abstract}"
    return torch_model, jax_model


def torch_input(shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """A standard-normal NCHW float32 input."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def jax_input(x: torch.Tensor) -> jax.Array:
    """The NHWC JAX twin of an NCHW torch input."""
    return jnp.asarray(x.permute(0, 2, 3, 1).numpy())


def logits_of(output):
    """The first output (logits) of a model that returns a tuple."""
    return outputs_as_list(output)[0]


def check_eval(
    torch_model, jax_model, x: torch.Tensor, *, features: Sequence[str] = (), rtol: float = RTOL, jit: bool = False
) -> dict[str, float]:
    """Eval-mode outputs and the named intermediate features agree (accumulated: both models end
    to end); returns the errors. ``jit=True`` compiles the jaxcnn forward as one function."""
    report = parity.compare(torch_model, jax_model, x, weights="keep", modules=features, isolate=False, jit=jit)
    assert report.error is None, report.error
    errors = {}
    for row in report.tensors:
        if row.kind == "output":
            index = int(row.name.split()[-1])
            assert row.error <= rtol, f"eval output {index}: relative error {row.error:.3g} > {rtol:.1g} {row.note}"
            errors[f"eval output {index}"] = row.error
    for name in features:
        row = report.row(name)
        assert row.accumulated is not None and row.accumulated <= rtol, f"feature {name}: relative error {row.accumulated} > {rtol:.1g} {row.note}"
        errors[f"feature {name}"] = row.accumulated
    return errors


def check_train_step(
    torch_model,
    jax_model,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    rtol: float = RTOL,
    grad_rtol: float | None = None,
    logits_outputs: int | None = None,
    zero_grads: Iterable[str] = (),
    zero_grad_threshold: float | None = None,
    jit: bool = False,
) -> dict[str, float]:
    """One training-mode forward/backward: outputs, the loss, every parameter's gradient, and
    the BatchNorm running statistics after the step agree (``jaxcnn.parity.compare``, train mode).

    The loss is ``jaxcnn.train.step.model_loss`` (torch: its ``F.cross_entropy`` twin) of the
    first output plus, with ``logits_outputs=None``, every further output of the logits' shape
    (GoogLeNet's aux heads) at weight 1; ``logits_outputs=1`` scores the logits only (e.g.
    ``gap_vgg``'s ``(logits, features)``); all outputs are still compared.

    Gradients are judged by :func:`jaxcnn.parity.gradient_errors` at ``grad_rtol`` (default
    ``rtol``): ``zero_grads`` names parameters whose exact gradient is zero (a conv bias before a
    training-mode BatchNorm), judged on the model's largest gradient, as is every parameter whose
    torch gradient is at most ``zero_grad_threshold`` times that. Float64 inputs (inside
    :func:`float64`) run the whole step in float64. Neither model is changed.
    """
    aux_loss_weight = 1.0 if logits_outputs is None else 0.0
    if logits_outputs not in (None, 1):
        raise ValueError("logits_outputs: None (every logits-shaped output) or 1 (the first)")
    report = parity.compare(
        torch_model, jax_model, x, labels=labels, mode="train", weights="keep", modules=(), isolate=False, jit=jit,
        aux_loss_weight=aux_loss_weight, zero_grads=zero_grads, zero_grad_threshold=zero_grad_threshold,
    )  # fmt: skip
    assert report.error is None, report.error
    limit = grad_rtol or rtol
    errors, gradients, statistics = {}, [], [0.0]
    for row in report.tensors:
        if row.kind == "gradient":
            zero = "zero in theory" in row.note
            what = "(exactly zero in theory): error {:.3g} of the largest gradient" if zero else ": relative error {:.3g}"
            assert row.error <= limit, f"gradient of {row.name} " + what.format(row.error) + f" > {limit:.1g}"
            gradients.append(row)
            continue
        name = {"output": f"train {row.name}", "loss": "train loss", "statistic": f"batch statistic {row.name}"}[row.kind]
        assert row.error <= rtol, f"{name}: relative error {row.error:.3g} > {rtol:.1g} {row.note}"
        if row.kind == "statistic":
            statistics.append(row.error)
        else:
            errors["loss" if row.kind == "loss" else f"train output {row.name.split()[-1]}"] = row.error
    errors["gradients (worst parameter)"] = max(row.error for row in gradients)
    errors["gradients (model scale)"] = max(row.model_scale for row in gradients)
    errors["batch statistics (worst)"] = max(statistics)
    return errors


def check_round_trip(torch_model, jax_model) -> None:
    """torch -> jaxcnn -> torch reproduces the state dict bit for bit."""
    exported = to_torch_arrays(jax_model)
    original = torch_model.state_dict()
    assert sorted(exported) == sorted(original), "state dict keys differ after the round trip"
    for key, value in original.items():
        expected = value.numpy()
        if exported[key].shape != expected.shape or not np.array_equal(exported[key], expected):  # fast path for big weights
            np.testing.assert_array_equal(exported[key], expected, err_msg=key)


# XLA options for building a model's initial state under ``jit``: optimisation level 1
# compiles an init program much faster than the default and, unlike level 0, still
# vectorises the random-number generation that dominates its run time.
_INIT_COMPILE = {"xla_backend_optimization_level": 1}


def check_init_statistics(
    name: str, *, min_size: int = 1000, std_rtol: float = 0.1, seed: int = 0, jit: bool = True, **options
) -> dict[str, float]:
    """A freshly made jaxcnn model is initialised like a freshly made torch_ref model.

    For every ``state_dict`` key: where torch fills the tensor with one constant (zero
    biases, unit BatchNorm scales, running statistics) the jaxcnn tensor must be exactly
    that constant; a random tensor with at least ``min_size`` entries must have a standard
    deviation within ``std_rtol`` of torch's and a mean within 0.2 of torch's standard
    deviation (smaller tensors are too noisy to compare; tensors over a million entries
    are compared on an evenly strided sample of about a million). Returns
    ``{key: std ratio}``.

    ``jit=True`` builds the jaxcnn model's state inside ``jax.jit``: the same initialisers,
    traced into one program instead of compiled op by op (and XLA drops random draws that
    a later init overwrites), which is several times cheaper for big models.
    """
    torch.manual_seed(seed)
    torch_model = torch_ref.models.create(name, **options)
    build = lambda: jaxcnn.models.create(name, rngs=nnx.Rngs(seed), **options)  # noqa: E731
    if jit:
        graphdef = nnx.graphdef(nnx.eval_shape(build))
        jax_model = nnx.merge(graphdef, jax.jit(lambda: nnx.state(build()), compiler_options=_INIT_COMPILE)())
    else:
        jax_model = build()
    shapes, variables = torch_shapes(jax_model), torch_variables(jax_model)
    ratios = {}
    for key, tensor in torch_model.state_dict().items():
        # Statistics do not depend on the layout, so each side stays in its own (no transposes).
        expected, actual = tensor.detach().numpy().reshape(-1), np.asarray(variables[key].get_value()).reshape(-1)
        assert shapes[key] == tuple(tensor.shape), f"{key}: jax {shapes[key]} vs torch {tuple(tensor.shape)}"
        if expected.size and np.all(expected == expected[0]):
            assert np.all(actual == expected[0]), f"{key}: torch initialises it to the constant {expected[0]}"
        elif expected.size >= min_size:
            step = max(1, expected.size // 1_000_000)
            expected, actual = expected[::step].astype(np.float64), actual[::step].astype(np.float64)
            ratio = actual.std() / expected.std()
            assert abs(ratio - 1) <= std_rtol, f"{key}: init std {actual.std():.4g} vs torch {expected.std():.4g}"
            assert abs(actual.mean() - expected.mean()) <= 0.2 * expected.std(), f"{key}: init mean {actual.mean():.4g} vs torch {expected.mean():.4g}"
            ratios[key] = float(ratio)
    return ratios


def _cast_jax_model(jax_model: nnx.Module, dtype) -> None:
    state = nnx.state(jax_model)
    nnx.update(jax_model, jax.tree.map(lambda v: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, state))


@contextlib.contextmanager
def float64(torch_model: torch.nn.Module, jax_model: nnx.Module):
    """Run the block with both models in float64 (``jax.enable_x64``); back to float32 after.

    For train-step checks of deep models in training mode: with batch 2 and tiny late-stage
    maps, each BatchNorm normalises a handful of values per channel, which amplifies float32
    rounding (torch float32 itself can be 1e-4 off a float64 run in the outputs and far more in
    gradients), and a pre-activation within rounding of 0 can take different ReLU branches in
    the two frameworks. In float64 the same comparison holds to ~1e-12, so a semantic
    difference cannot hide behind rounding. Pass ``x.double()`` inside the block.
    """
    with jax.enable_x64(True):
        torch_model.double()
        _cast_jax_model(jax_model, jnp.float64)
        try:
            yield
        finally:
            torch_model.float()
            _cast_jax_model(jax_model, jnp.float32)
