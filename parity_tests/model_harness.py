"""Model-level parity harness: torch_ref model -> convert -> jaxcnn model -> compare.

Used by the ``test_models_*.py`` files. Every comparison is float32 on CPU and relative to
the reference tensor's scale: ``max|jax - torch| <= rtol * max|torch|``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

import jaxcnn.models
import torch_ref.models
from jaxcnn import nn
from jaxcnn.convert import load_torch_state_dict, to_torch_arrays, torch_shapes, torch_variables
from jaxcnn.convert.mapping import torch_layout, torch_permutation
from jaxcnn.intermediates import record_outputs
from jaxcnn.nn import functional as F

RTOL = 1e-5


def to_numpy(value) -> np.ndarray:
    """A torch tensor or JAX array as a numpy array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def nchw(value) -> np.ndarray:
    """A JAX NHWC activation in torch's NCHW layout (other ranks unchanged)."""
    array = to_numpy(value)
    return array.transpose(0, 3, 1, 2) if array.ndim == 4 else array


def max_abs_difference(actual, expected) -> tuple[float, float]:
    """``(max|actual - expected|, max|expected|)`` of two same-shaped arrays."""
    actual, expected = to_numpy(actual), to_numpy(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"shape mismatch: jax {actual.shape} vs torch {expected.shape}")
    if not expected.size:
        return 0.0, 0.0
    if actual.dtype == expected.dtype == np.float32:
        # float32 pairs stay float32 (the rounding of their difference is 6e-8 of the error
        # itself) and go through torch, whose strided kernels handle a transposed
        # 100M-entry VGG gradient several times faster than numpy (and without float64 copies).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only views of JAX arrays; nothing is written
            actual_t, expected_t = torch.from_numpy(actual), torch.from_numpy(expected)
        return float((actual_t - expected_t).abs_().max()), float(expected_t.abs().max())
    actual, expected = actual.astype(np.float64), expected.astype(np.float64)
    return float(np.abs(actual - expected).max()), float(np.abs(expected).max())


def relative_error(actual, expected) -> float:
    """``max|actual - expected| / max|expected|`` (absolute error when ``expected`` is all zeros)."""
    error, scale = max_abs_difference(actual, expected)
    return error / scale if scale > 0 else error


def assert_close(actual, expected, rtol: float = RTOL, what: str = "") -> float:
    """Assert :func:`relative_error` is within ``rtol``; returns the error."""
    error = relative_error(actual, expected)
    assert error <= rtol, f"{what}: relative error {error:.3g} > {rtol:.1g}"
    return error


def outputs_as_list(output) -> list:
    """Model output(s) as a flat list: a tensor, a tuple/namedtuple of tensors."""
    if isinstance(output, (tuple, list)):
        return [item for item in output if item is not None]
    return [output]


def randomize_torch_model(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm random scale, bias, running mean/variance and batch count.

    Weights keep their (torch default) random init; BatchNorm scales are never zero, so
    ``zero_init_residual``-style zero scales cannot hide a branch.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                if module.affine:
                    module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
                if module.track_running_stats:
                    module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
                    module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
                    module.num_batches_tracked.fill_(int(torch.randint(1, 100, (1,), generator=generator)))
    return model


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


def _fill_abstract_rng_streams(jax_model: nnx.Module, seed: int) -> None:
    """Give RNG streams left abstract by ``nnx.eval_shape`` (e.g. Dropout's) concrete keys and counts.

    torch has no counterpart to them, so the state dict never fills them; the harness keeps
    Dropout off, so their values do not matter for the comparisons.
    """
    for _, variable in nnx.to_flat_state(nnx.state(jax_model, nnx.RngState)):
        value = variable.get_value()
        if isinstance(value, jax.ShapeDtypeStruct):
            if isinstance(variable, nnx.RngKey):
                variable.set_value(jax.random.split(jax.random.key(seed), value.shape) if value.shape else jax.random.key(seed))
            else:
                variable.set_value(jnp.zeros(value.shape, value.dtype))


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
        _fill_abstract_rng_streams(jax_model, seed)
        abstract = [path for path, leaf in nnx.to_flat_state(nnx.state(jax_model)) if isinstance(leaf.get_value(), jax.ShapeDtypeStruct)]
        assert not abstract, f"abstract_init left state the torch state dict does not fill: {abstract}"
    return torch_model, jax_model


def set_torch_mode(torch_model: torch.nn.Module, *, train: bool) -> None:
    """Train or eval mode for a torch model, with Dropout kept off."""
    torch_model.train(train)
    for module in torch_model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.eval()


def set_mode(torch_model: torch.nn.Module, jax_model: nnx.Module, *, train: bool) -> None:
    """Train or eval mode on both sides; Dropout stays off so random masks cannot differ."""
    set_torch_mode(torch_model, train=train)
    jax_model.train() if train else jax_model.eval()
    for _, module in nnx.iter_graph(jax_model):
        if isinstance(module, nn.Dropout):
            module.deterministic = True


@contextlib.contextmanager
def record_features(torch_model: torch.nn.Module, jax_model: nnx.Module, names: Iterable[str]):
    """Record the outputs of the named submodules (e.g. ``layer1``) on both sides.

    Yields ``(torch_records, jax_records)`` dicts filled by forwards run inside the block.
    The JAX side must run eagerly (not under ``jit``).
    """
    torch_records = {}
    handles = [
        torch_model.get_submodule(name).register_forward_hook(
            lambda module, inputs, output, name=name: torch_records.__setitem__(name, output)
        )
        for name in names
    ]
    try:
        with record_outputs(jax_model, names) as jax_records:
            yield torch_records, jax_records
    finally:
        for handle in handles:
            handle.remove()


def torch_input(shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """A standard-normal NCHW float32 input."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def jax_input(x: torch.Tensor) -> jax.Array:
    """The NHWC JAX twin of an NCHW torch input."""
    return jnp.asarray(x.permute(0, 2, 3, 1).numpy())


def logits_of(output):
    """The first output (logits) of a model that returns a tuple."""
    return outputs_as_list(output)[0]


# XLA options for ``jit=True`` checks: a model is compiled once per check, and for deep
# models XLA's CPU backend optimisations cost more than they save (they do not change the
# float semantics; fast-math stays off).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _jit_forward_with_features(jax_model: nnx.Module, x: jax.Array, features: Sequence[str]):
    """``(output, {feature name: output})`` of one jitted forward (the model state is not updated)."""
    graphdef, state = nnx.split(jax_model)

    def run(state, x):
        model = nnx.merge(graphdef, state, copy=True)
        with record_outputs(model, features) as records:
            output = model(x)
        return output, dict(records)

    return jax.jit(run, compiler_options=FAST_COMPILE)(state, x)


def check_eval(
    torch_model, jax_model, x: torch.Tensor, *, features: Sequence[str] = (), rtol: float = RTOL, jit: bool = False
) -> dict[str, float]:
    """Eval-mode outputs and the named intermediate features agree; returns the errors.

    ``jit=True`` runs the jaxcnn forward (features included) as one compiled function
    instead of op by op: much faster for deep models, whose many distinct op shapes
    each cost an eager compilation.
    """
    set_mode(torch_model, jax_model, train=False)
    errors = {}
    with record_features(torch_model, jax_model, features) as (torch_records, jax_records), torch.no_grad():
        torch_out = outputs_as_list(torch_model(x))
        if not jit:
            jax_out = outputs_as_list(jax_model(jax_input(x)))
    if jit:
        jax_output, jax_records = _jit_forward_with_features(jax_model, jax_input(x), features)
        jax_out = outputs_as_list(jax_output)
    assert len(torch_out) == len(jax_out), f"{len(jax_out)} jax outputs vs {len(torch_out)} torch outputs"
    for index, (expected, actual) in enumerate(zip(torch_out, jax_out)):
        errors[f"eval output {index}"] = assert_close(nchw(actual), expected, rtol, f"eval output {index}")
    for name in features:
        for index, (expected, actual) in enumerate(zip(outputs_as_list(torch_records[name]), outputs_as_list(jax_records[name]))):
            errors[f"feature {name}[{index}]"] = assert_close(nchw(actual), expected, rtol, f"feature {name}")
    return errors


def cross_entropy_torch(output, labels, logits_outputs: int | None = None):
    """Sum of the cross-entropies of a torch model's outputs (the first ``logits_outputs``); ``labels`` (N,)."""
    return sum(torch.nn.functional.cross_entropy(o, labels) for o in outputs_as_list(output)[:logits_outputs])


def cross_entropy_jax(output, labels, logits_outputs: int | None = None):
    """:func:`cross_entropy_torch` for a jaxcnn model's outputs."""
    return sum(F.cross_entropy(o, labels) for o in outputs_as_list(output)[:logits_outputs])


def gradient_errors(
    actual: dict, expected: dict, *, zero_grads: Iterable[str] = (), zero_grad_threshold: float | None = None
) -> tuple[dict[str, tuple[float, bool]], float]:
    """Compare two ``{state_dict key: gradient}`` dicts (torch layout; ``expected`` is the reference).

    Returns ``({key: (error, zero_in_theory)}, model_scale_error)``. A parameter's error is
    ``max|difference| / max|expected|`` on its own scale, except for those named in
    ``zero_grads`` or, with ``zero_grad_threshold=t``, whose expected gradient is at most
    ``t`` times the largest gradient of any parameter: their exact gradient is zero, both
    sides hold rounding noise, and their error is measured against that largest gradient.
    ``model_scale_error`` is the largest difference of any parameter over the largest gradient.
    """
    differences = {key: max_abs_difference(actual[key], value) for key, value in expected.items()}
    grad_scale = max(scale for _, scale in differences.values())
    zero_grads = set(zero_grads)
    if zero_grad_threshold is not None:
        zero_grads |= {key for key, (_, scale) in differences.items() if scale <= zero_grad_threshold * grad_scale}
    per_parameter = {}
    for key, (difference, own_scale) in differences.items():
        zero_in_theory = key in zero_grads
        scale = grad_scale if zero_in_theory else own_scale
        per_parameter[key] = (difference / scale if scale > 0 else difference, zero_in_theory)
    model_scale_error = max(difference for difference, _ in differences.values()) / grad_scale if grad_scale > 0 else 0.0
    return per_parameter, model_scale_error


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
    reference_gradients: dict | None = None,
    jit: bool = False,
) -> dict[str, float]:
    """One training-mode forward/backward: outputs, cross-entropy gradients of every
    parameter, and BatchNorm running statistics after the step agree.

    The loss is the sum of the cross-entropies of the outputs; ``logits_outputs=k`` uses
    only the first ``k`` (e.g. 1 for ``gap_vgg``'s ``(logits, features)``); all outputs
    are still compared.

    ``zero_grads`` names parameters whose exact gradient is zero, e.g. the bias of a conv
    followed by a training-mode BatchNorm (the batch-mean subtraction cancels it): both
    frameworks return rounding noise there, so their error is measured against the
    largest gradient of any parameter instead of their own. ``zero_grad_threshold=t`` adds
    every parameter whose torch gradient is at most ``t`` times that largest gradient (for
    reports over many models, where nobody lists them by hand).

    Besides the worst per-parameter error (``"gradients (worst parameter)"``) the result
    holds ``"gradients (model scale)"``: the largest gradient difference of any parameter
    over the largest gradient of any parameter. ``reference_gradients`` (``{state_dict key:
    gradient}``, e.g. a float64 torch run of the same step) adds ``"gradients vs reference
    (worst parameter)"``, jaxcnn's distance from them by the same rule; it is not asserted.

    ``jit=True`` compiles the jaxcnn forward/backward as one function (see :func:`check_eval`)."""
    set_mode(torch_model, jax_model, train=True)
    torch_model.zero_grad()
    torch_output = torch_model(x)
    torch_loss = cross_entropy_torch(torch_output, labels, logits_outputs)
    torch_loss.backward()

    graphdef, params, rest = nnx.split(jax_model, nnx.Param, ...)
    jax_labels = jnp.asarray(labels.numpy())

    def loss_fn(params):
        model = nnx.merge(graphdef, params, rest, copy=True)  # fresh Variables: BatchNorm mutates its stats under the grad trace
        output = model(jax_input(x))
        return cross_entropy_jax(output, jax_labels, logits_outputs), (output, nnx.state(model, nnx.BatchStat))

    value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
    if jit:
        value_and_grad = jax.jit(value_and_grad, compiler_options=FAST_COMPILE)
    (jax_loss, (jax_output, batch_stats)), grads = value_and_grad(params)
    nnx.update(jax_model, batch_stats)

    errors = {"loss": assert_close(jax_loss, torch_loss.detach(), rtol, "train loss")}
    for index, (expected, actual) in enumerate(zip(outputs_as_list(torch_output), outputs_as_list(jax_output))):
        errors[f"train output {index}"] = assert_close(nchw(actual), expected, rtol, f"train output {index}")
    jax_grads = {".".join(map(str, path)): value for path, value in nnx.to_flat_state(grads)}
    variables = torch_variables(jax_model)
    actual = {key: torch_layout(np.asarray(jax_grads[key].get_value()), torch_permutation(variables[key])) for key in jax_grads}
    expected = {key: parameter.grad for key, parameter in torch_model.named_parameters()}
    per_parameter, model_scale_error = gradient_errors(actual, expected, zero_grads=zero_grads, zero_grad_threshold=zero_grad_threshold)
    limit = grad_rtol or rtol
    for key, (error, zero_in_theory) in per_parameter.items():
        what = "(exactly zero in theory): error {:.3g} of the largest gradient" if zero_in_theory else ": relative error {:.3g}"
        assert error <= limit, f"gradient of {key} " + what.format(error) + f" > {limit:.1g}"
    errors["gradients (worst parameter)"] = max(error for error, _ in per_parameter.values())
    errors["gradients (model scale)"] = model_scale_error
    if reference_gradients is not None:
        per_parameter, _ = gradient_errors(actual, reference_gradients, zero_grads=zero_grads, zero_grad_threshold=zero_grad_threshold)
        errors["gradients vs reference (worst parameter)"] = max(error for error, _ in per_parameter.values())
    torch_state = torch_model.state_dict()
    worst = 0.0
    for key, variable in torch_variables(jax_model).items():
        if isinstance(variable, nnx.BatchStat):  # running_mean / running_var / num_batches_tracked
            value = np.asarray(variable.get_value())
            worst = max(worst, assert_close(value, torch_state[key], rtol, f"batch statistic {key}"))
    errors["batch statistics (worst)"] = worst
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
