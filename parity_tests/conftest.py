"""Shared helpers for the cross-framework parity tests (jaxcnn vs PyTorch).

Import them in any parity test module with ``from conftest import ...`` (pytest puts this
directory on ``sys.path``; ``parity_tests`` has no ``__init__.py``) or use the fixtures.

Layout conventions
------------------
* jaxcnn images are NHWC, torch images NCHW. ``to_nhwc`` / ``to_nchw`` move the channel
  axis between position 1 (torch, channels first) and the last position (jaxcnn, channels
  last). They work for any rank >= 2, so they also map torch's ``(N, C, L)`` to jaxcnn's
  ``(N, L, C)`` and leave ``(N, C)`` unchanged.
* Parameters: each jaxcnn weight stores a ``torch_perm`` metadata entry, the axis
  permutation that turns its JAX layout into torch's (conv HWIO -> OIHW is ``(3, 2, 0, 1)``,
  Linear ``(in, out) -> (out, in)`` is ``(1, 0)``). Variables without it (biases,
  BatchNorm statistics) have the same layout in both frameworks.
* NNX state paths joined with ``.`` are torch ``state_dict`` keys, so ``jaxcnn.convert``
  (``load_torch_state_dict``, ``to_torch_state_dict``, ``torch_variables``) moves whole models
  across; these helpers use it and do not re-implement it.

Comparison rule (``assert_close``: :func:`jaxcnn.parity.assert_close`, the project's one rule)
----------------------------------------------------------------------------------------------
``max|actual - expected| <= rtol * max(max|expected|, min_scale)``, i.e. the largest
absolute error must be within ``rtol`` of the *largest magnitude of the reference tensor*
(the torch value). ``min_scale`` (default ``1e-6``) only matters when the reference is
(almost) all zeros. This is a normwise relative test: float32 rounding errors of sums
scale with the magnitude of the values summed, not with each individual element, so
per-element relative tolerances would be meaningless for entries near zero, while a fixed
absolute floor of 1 (``max(1, max|b|)``) would let errors of 1e-5 pass in gradients whose
entries are all ~1e-4. Shapes must match exactly; NaNs must occur at the same places;
infinities must match exactly. The assertion message reports the relative and max abs
error, the reference scale and the worst element.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from hypothesis import HealthCheck, settings

from jaxcnn import parity
from jaxcnn.convert import load_torch_state_dict, torch_variables
from jaxcnn.convert.mapping import torch_layout, torch_permutation

DEFAULT_RTOL = 1e-5


@pytest.fixture(autouse=True)
def _full_float32_precision():
    """Parity is defined in full float32 (the suite runs with ``JAX_PLATFORMS=cpu``).

    On CPU this changes nothing; on a GPU, TF32 matmuls/convolutions (JAX's default
    precision, torch's cuDNN default) would break a 1e-5 tolerance. Scoped to each parity
    test and restored afterwards, so other tests in the same session are unaffected.
    """
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with jax.default_matmul_precision("highest"):
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved

# Hypothesis settings shared by the fuzzing tests (registered, not loaded: other test
# suites keep their own defaults). Fuzz tests draw their random data from a drawn
# integer seed, not from a fixture, so every example is reproducible from its blob.
settings.register_profile(
    "parity",
    max_examples=30,
    deadline=None,  # JAX compiles per shape: the first call of a config is slow
    derandomize=True,  # the same examples on every run, so CI is reproducible
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def fuzz_settings(max_examples: int = 30):
    """Hypothesis ``settings`` decorator for parity fuzz tests (derandomized, no deadline)."""
    return settings(settings.get_profile("parity"), max_examples=max_examples)


# --------------------------------------------------------------------------------------
# Seeding
# --------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed numpy's and torch's global generators (JAX has no global state)."""
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_from_name(name: str) -> int:
    """A stable 31-bit seed derived from a string (e.g. a pytest node id)."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


@pytest.fixture(autouse=True)
def _seed_each_test(request):
    """Every test starts from global seeds derived from its own node id."""
    seed_everything(seed_from_name(request.node.nodeid))


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A numpy ``Generator`` seeded from the test's node id: reproducible, distinct per test."""
    return np.random.default_rng(seed_from_name(request.node.nodeid))


def randn(rng: np.random.Generator, *shape: int, scale: float = 1.0, dtype=np.float32) -> np.ndarray:
    """Standard-normal float32 numpy array of ``shape`` (times ``scale``)."""
    return (scale * rng.standard_normal(shape)).astype(dtype)


# --------------------------------------------------------------------------------------
# Layout and array conversion
# --------------------------------------------------------------------------------------


def _move_axis(x, source: int, destination: int):
    if isinstance(x, torch.Tensor):
        return torch.movedim(x, source, destination)
    if isinstance(x, jax.Array):
        return jnp.moveaxis(x, source, destination)
    return np.moveaxis(np.asarray(x), source, destination)


def to_nhwc(x):
    """Channels-first -> channels-last: NCHW -> NHWC, (N, C, L) -> (N, L, C), (N, C) unchanged.

    Accepts numpy arrays, torch tensors and jax arrays and returns the same kind (numpy/jax
    results may be views; call ``np.array(x, order="C")`` if you need a copy).
    """
    if x.ndim < 2:
        raise ValueError(f"to_nhwc needs a batched array (rank >= 2), got shape {tuple(x.shape)}")
    return _move_axis(x, 1, -1)


def to_nchw(x):
    """Channels-last -> channels-first: NHWC -> NCHW, (N, L, C) -> (N, C, L), (N, C) unchanged."""
    if x.ndim < 2:
        raise ValueError(f"to_nchw needs a batched array (rank >= 2), got shape {tuple(x.shape)}")
    return _move_axis(x, -1, 1)


def to_numpy(x) -> np.ndarray:
    """Any of torch tensor / jax array / numpy array / scalar -> numpy array (a copy for torch)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy().copy()
    return np.asarray(x)


def as_jax(x) -> jax.Array:
    """numpy / torch / jax value -> jax array without compiling anything (``device_put``)."""
    if isinstance(x, jax.Array):
        return x
    return jax.device_put(np.array(to_numpy(x), order="C"))


# --------------------------------------------------------------------------------------
# Whole-model state transfer
# --------------------------------------------------------------------------------------


def abstract_module(factory: Callable[[], nnx.Module]) -> nnx.Module:
    """Build ``factory()`` without running its initialisers (``nnx.eval_shape``).

    Every variable then holds a ``jax.ShapeDtypeStruct`` until
    ``jaxcnn.convert.load_torch_state_dict`` fills it with torch's values. Use it whenever the weights come from torch anyway:
    jaxcnn's random init compiles a JAX program per parameter shape, which costs seconds
    of CPU per layer. Don't use it for models with ``Dropout(rngs=...)`` that must run in
    training mode (their RNG state would stay abstract: torch has nothing to copy there).
    """
    return nnx.eval_shape(factory)


# --------------------------------------------------------------------------------------
# Forward + backward on both sides
# --------------------------------------------------------------------------------------


def torch_forward_backward(fn: Callable, inputs, cotangent=None, module: torch.nn.Module | None = None):
    """Run ``fn(*inputs)`` in torch and backpropagate ``cotangent`` (or the output's sum).

    ``inputs`` are torch tensors or numpy arrays; floating ones get ``requires_grad``.
    Returns ``(output, input_grads, param_grads)`` as numpy arrays, where ``param_grads`` is
    ``{name: grad}`` over ``module.named_parameters()`` (empty without ``module``).
    Gradients of the loss ``sum(output * cotangent)`` equal the VJP with ``cotangent``.
    """
    if not isinstance(inputs, (tuple, list)):
        inputs = (inputs,)
    leaves = []
    for x in inputs:
        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, order="C"))
        t = t.detach().clone()
        if t.is_floating_point():
            t.requires_grad_(True)
        leaves.append(t)
    if module is not None:
        module.zero_grad(set_to_none=True)
    output = fn(*leaves)
    if cotangent is None:
        cotangent = torch.ones_like(output)
    elif not isinstance(cotangent, torch.Tensor):
        cotangent = torch.from_numpy(np.array(cotangent, order="C"))
    if output.requires_grad:
        output.backward(cotangent)
    input_grads = [None if t.grad is None else to_numpy(t.grad) for t in leaves]
    param_grads = {}
    if module is not None:
        for name, p in module.named_parameters():
            param_grads[name] = None if p.grad is None else to_numpy(p.grad)
    return to_numpy(output), input_grads, param_grads


def jax_forward_backward(fn: Callable, inputs, cotangent=None, *, jit: bool = True):
    """``jax.vjp`` of ``fn(*inputs)`` with ``cotangent`` (or ones); returns ``(output, input_grads)``.

    Integer inputs get no gradient (``None``). With ``jit`` (the default) forward and
    backward run as one compiled XLA program: one compilation per shape instead of one
    per primitive, which keeps the suite fast. ``fn`` is traced, so its shape checks run
    at trace time and raise as usual.
    """
    if not isinstance(inputs, (tuple, list)):
        inputs = (inputs,)
    inputs = [as_jax(x) for x in inputs]
    diff = [i for i, x in enumerate(inputs) if jnp.issubdtype(x.dtype, jnp.floating)]
    fixed = {i: x for i, x in enumerate(inputs) if i not in diff}

    def wrapped(*float_args):
        args = list(inputs)
        for i, a in zip(diff, float_args):
            args[i] = a
        for i, a in fixed.items():
            args[i] = a
        return fn(*args)

    float_inputs = [inputs[i] for i in diff]
    out_struct = jax.eval_shape(wrapped, *float_inputs)
    if cotangent is not None and tuple(np.shape(cotangent)) != tuple(out_struct.shape):
        raise AssertionError(
            f"output shape mismatch: jaxcnn {tuple(out_struct.shape)} vs cotangent (reference) {tuple(np.shape(cotangent))}"
        )
    ct = as_jax(np.ones(out_struct.shape, out_struct.dtype) if cotangent is None else np.asarray(cotangent, out_struct.dtype))

    def run(float_args, ct):
        output, vjp = jax.vjp(wrapped, *float_args)
        return output, vjp(ct)

    output, grads = (jax.jit(run) if jit else run)(float_inputs, ct)
    input_grads = [None] * len(inputs)
    for i, g in zip(diff, grads):
        input_grads[i] = np.asarray(g)
    return np.asarray(output), input_grads


def _nnx_weighted_sum(model, x, ct):
    out = model(x)
    if ct is not None and ct.shape != out.shape:
        raise AssertionError(f"output shape mismatch: jaxcnn {out.shape} vs cotangent (reference) {ct.shape}")
    weights = jnp.ones_like(out) if ct is None else ct.astype(out.dtype)
    return jnp.sum(out * weights), out


def _nnx_value_and_grads(model, x, ct):
    return nnx.value_and_grad(_nnx_weighted_sum, argnums=(0, 1), has_aux=True)(model, x, ct)


# One module-level jitted function, so repeated calls with the same model structure and
# shapes (e.g. several BatchNorm training steps) reuse the compiled program.
_nnx_value_and_grads_jit = nnx.jit(_nnx_value_and_grads)


def nnx_forward_backward(model: nnx.Module, x, cotangent=None, *, train: bool | None = None, jit: bool = True):
    """Run an NNX ``model`` on ``x`` and take the gradients of ``sum(model(x) * cotangent)``.

    Returns ``(output, input_grad, param_grads)``; ``param_grads`` maps torch-style keys to
    numpy gradients **in torch's layout** (transposed by each parameter's ``torch_perm``), so
    they compare directly with ``torch_forward_backward``'s ``param_grads``. State updates
    made by the forward pass (BatchNorm running statistics, counters, RNG counters) are
    kept in ``model``, exactly as one torch forward call updates its buffers. ``train``
    calls ``model.train()`` / ``model.eval()`` first when given. ``jit`` runs the step
    through one module-level ``nnx.jit``: compiled once per model structure and shapes and
    reused afterwards. Tests that monkeypatch jaxcnn functions must pass ``jit=False``,
    otherwise a program compiled by an earlier identical call runs and the patch is unseen.
    """
    if train is not None:
        model.train() if train else model.eval()
    x = as_jax(x)
    ct = None if cotangent is None else as_jax(cotangent)
    step = _nnx_value_and_grads_jit if jit else _nnx_value_and_grads
    (_, output), (param_state, input_grad) = step(model, x, ct)
    param_grads = {}
    for path, variable in nnx.to_flat_state(param_state):
        param_grads[".".join(str(p) for p in path)] = torch_layout(np.asarray(variable.get_value()), torch_permutation(variable))
    return np.asarray(output), np.asarray(input_grad), param_grads


# --------------------------------------------------------------------------------------
# Comparisons
# --------------------------------------------------------------------------------------


def assert_close(actual, expected, rtol: float = DEFAULT_RTOL, *, min_scale: float = 1e-6, name: str = "value") -> float:
    """Assert ``max|actual - expected| <= rtol * max(max|expected|, min_scale)``: :func:`jaxcnn.parity.assert_close`.

    ``actual`` is the jaxcnn value, ``expected`` the torch reference (both in the *same*
    layout: transpose first with ``to_nhwc`` / ``to_nchw``). Returns the relative error.
    """
    return parity.assert_close(actual, expected, rtol, min_scale=min_scale, name=name)


def assert_equal(actual, expected, name: str = "value") -> None:
    """Exact equality of shapes and values (for integer results such as pooling indices)."""
    a, b = to_numpy(actual), to_numpy(expected)
    if a.shape != b.shape:
        raise AssertionError(f"{name}: shape mismatch, jaxcnn {a.shape} vs torch {b.shape}")
    if not np.array_equal(a, b):
        wrong = np.argwhere(a != b)
        first = tuple(int(i) for i in wrong[0])
        raise AssertionError(
            f"{name}: {len(wrong)}/{a.size} elements differ; first at {first}: jaxcnn {a[first]!r} vs torch {b[first]!r}"
        )


def assert_grads_close(
    jax_grads: Mapping[str, np.ndarray],
    torch_grads: Mapping[str, np.ndarray],
    rtol: float = DEFAULT_RTOL,
    prefix: str = "",
    min_scale: float | Mapping[str, float] | None = None,
) -> None:
    """Compare parameter gradient dicts keyed like ``state_dict`` (both in torch layout).

    ``min_scale``: see ``check_module_parity``'s ``grad_min_scale`` (None: the default).
    """
    assert set(jax_grads) == set(torch_grads), f"{prefix}gradient keys differ: jaxcnn {sorted(jax_grads)} vs torch {sorted(torch_grads)}"
    for key in sorted(torch_grads):
        assert torch_grads[key] is not None, f"{prefix}{key}: torch produced no gradient"
        floor = min_scale.get(key) if isinstance(min_scale, Mapping) else min_scale
        kwargs = {} if floor is None else {"min_scale": floor}
        assert_close(jax_grads[key], torch_grads[key], rtol, name=f"{prefix}grad[{key}]", **kwargs)


def check_function_parity(
    torch_fn: Callable,
    jax_fn: Callable,
    torch_inputs,
    jax_inputs,
    rng: np.random.Generator,
    *,
    grads_to_torch=None,
    channels_last_output: bool = True,
    rtol: float = DEFAULT_RTOL,
    check_grads: bool = True,
    name: str = "",
    jit: bool = True,
):
    """Compare a torch function and its jaxcnn counterpart: outputs and all input gradients.

    ``torch_inputs`` (numpy arrays / tensors, torch layouts) and ``jax_inputs`` (the same
    data in jaxcnn layouts) are passed positionally. A random cotangent (torch layout,
    drawn from ``rng``) is backpropagated on both sides: the gradients are those of
    ``sum(output * cotangent)``. ``grads_to_torch[i]`` maps the jax gradient of input ``i``
    back to torch's layout (default: ``to_nchw`` for the first input when
    ``channels_last_output``, identity otherwise; pass e.g. ``lambda g: g.transpose(3, 2, 0, 1)``
    for an HWIO conv weight). ``channels_last_output`` says the jax output is the
    channels-last version of torch's (``to_nhwc``); otherwise both have the same layout.
    ``jit=False`` runs jaxcnn eagerly (op by op) instead of as one compiled program.
    Returns ``(torch_output, jax_output_in_torch_layout)``.
    """
    if not isinstance(torch_inputs, (tuple, list)):
        torch_inputs, jax_inputs = (torch_inputs,), (jax_inputs,)
    as_tensors = [x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x, order="C")) for x in torch_inputs]
    with torch.no_grad():
        out_shape = tuple(torch_fn(*as_tensors).shape)
    cotangent = randn(rng, *out_shape)
    out_to_torch = to_nchw if channels_last_output and len(out_shape) >= 2 else (lambda v: v)
    out_to_jax = to_nhwc if channels_last_output and len(out_shape) >= 2 else (lambda v: v)
    t_out, t_grads, _ = torch_forward_backward(torch_fn, as_tensors, cotangent)
    j_out, j_grads = jax_forward_backward(jax_fn, jax_inputs, out_to_jax(cotangent), jit=jit)
    prefix = f"{name}: " if name else ""
    j_out_t = out_to_torch(j_out)
    assert_close(j_out_t, t_out, rtol, name=f"{prefix}output")
    if check_grads:
        if grads_to_torch is None:
            grads_to_torch = [out_to_torch] + [lambda v: v] * (len(jax_inputs) - 1)
        for i, (t_g, j_g) in enumerate(zip(t_grads, j_grads)):
            if t_g is None:
                continue
            assert j_g is not None, f"{prefix}input {i}: jaxcnn produced no gradient"
            convert = grads_to_torch[i] if i < len(grads_to_torch) and grads_to_torch[i] is not None else (lambda v: v)
            assert_close(convert(j_g), t_g, rtol, name=f"{prefix}grad of input {i}")
    return t_out, j_out_t


def check_module_parity(
    jax_model: nnx.Module,
    torch_model: torch.nn.Module,
    x_torch_layout: np.ndarray,
    rng: np.random.Generator,
    *,
    rtol: float = DEFAULT_RTOL,
    copy_weights: bool = True,
    compare_state: bool = True,
    transpose: bool = True,
    grad_min_scale: float | Mapping[str, float] | None = None,
    jit: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """One forward+backward of both models on the same input; compare everything.

    ``x_torch_layout`` is the channels-first input (NCHW, (N, C, L) or (N, C)); the jaxcnn
    model gets ``to_nhwc`` of it. Weights are first copied torch -> jaxcnn (``copy_weights``).
    A random cotangent drawn from ``rng`` makes the gradients non-trivial. Compares the
    output, the input gradient, every parameter gradient and (``compare_state``) every
    state entry afterwards (BatchNorm running statistics and counters). Returns the torch
    output and the jaxcnn output converted to torch layout. ``transpose=False`` is for
    modules whose input and output layouts are the same in both frameworks (Linear on
    ``(..., features)``): nothing is moved between channels-first and channels-last.
    ``grad_min_scale`` (a float, or ``{state_dict_key: float}``) overrides ``assert_close``'s
    ``min_scale`` for parameter gradients; only for gradients that are *exactly zero in
    exact arithmetic* (e.g. the bias of a conv followed by a training-mode BatchNorm), whose
    float32 values on both sides are pure rounding noise. Say why at the call site.
    ``jit``: see ``nnx_forward_backward`` (pass False in tests that monkeypatch jaxcnn).
    """
    fwd = to_nhwc if transpose else (lambda v: v)
    back = to_nchw if transpose else (lambda v: v)
    if copy_weights:
        load_torch_state_dict(jax_model, torch_model.state_dict())
    out_shape = torch_model_output_shape(torch_model, x_torch_layout)
    cotangent = randn(rng, *out_shape)
    t_out, (t_gx,), t_grads = torch_forward_backward(torch_model, (x_torch_layout,), cotangent, module=torch_model)
    ct_jax = fwd(cotangent) if cotangent.ndim >= 2 else cotangent
    j_out, j_gx, j_grads = nnx_forward_backward(jax_model, fwd(x_torch_layout), ct_jax, jit=jit)
    j_out_t = back(j_out) if j_out.ndim >= 2 else j_out
    assert_close(j_out_t, t_out, rtol, name="output")
    assert_close(back(j_gx), t_gx, rtol, name="input grad")
    assert_grads_close(j_grads, t_grads, rtol, min_scale=grad_min_scale)
    if compare_state:
        assert_state_close(jax_model, torch_model, rtol)
    return t_out, j_out_t


def torch_model_output_shape(torch_model: torch.nn.Module, x: np.ndarray) -> tuple[int, ...]:
    """Output shape of ``torch_model`` on ``x`` without touching its buffers.

    Runs a deep copy so BatchNorm statistics of the real model are not updated.
    """
    import copy

    clone = copy.deepcopy(torch_model)
    with torch.no_grad():
        return tuple(clone(torch.from_numpy(np.array(x, order="C"))).shape)


def assert_state_close(jax_model: nnx.Module, torch_model: torch.nn.Module, rtol: float = DEFAULT_RTOL) -> None:
    """Every ``state_dict`` entry of torch equals the jaxcnn variable of the same key.

    Integer entries (``num_batches_tracked``) must be exactly equal.
    """
    state_dict = torch_model.state_dict()
    variables = torch_variables(jax_model)
    assert set(state_dict) == set(variables), f"state keys differ: torch {sorted(state_dict)} vs jaxcnn {sorted(variables)}"
    for key, tensor in state_dict.items():
        ours = torch_layout(np.asarray(variables[key].get_value()), torch_permutation(variables[key]))
        if not tensor.is_floating_point():
            assert_equal(ours, tensor, name=f"state[{key}]")
        else:
            assert_close(ours, tensor, rtol, name=f"state[{key}]")


def uniformity_pvalue(values: np.ndarray, bound: float) -> float:
    """Kolmogorov-Smirnov p-value of ``values`` against ``U(-bound, bound)``."""
    from scipy import stats

    return float(stats.kstest(np.ravel(values), "uniform", args=(-bound, 2 * bound)).pvalue)


def default_init_bound(fan_in: int) -> float:
    """torch's default Conv/Linear init bound ``1/sqrt(fan_in)``."""
    return 1.0 / math.sqrt(fan_in)
