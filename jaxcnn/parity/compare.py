"""``compare``: a torch module and its jaxcnn twin run side by side, module by module.

Layouts are the library's business: inputs are given once (NCHW torch tensor or numpy
array, or an NHWC JAX array), torch sees NCHW and jaxcnn NHWC, and every comparison is made
in torch's layout (feature maps NCHW, conv kernels OIHW, Linear weights ``(out, in)``).
torch is imported inside the functions only.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcnn.convert import load_torch_state_dict, to_torch_arrays, torch_variables
from jaxcnn.convert.mapping import torch_layout, torch_permutation
from jaxcnn.intermediates import get_submodule, record_outputs
from jaxcnn.parity.report import ROOT, ModuleRow, ParityReport, TensorRow, verdict
from jaxcnn.parity.rule import RTOL, ShapeMismatch, difference, gradient_errors, relative_error, to_numpy

# XLA options for the one compiled forward/backward per comparison: XLA's CPU optimisations
# cost more compile time than they save for a single run (float semantics are unchanged).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
RTOL64 = 1e-9  # float64 runs of the same computation agree to ~1e-12; above this it is semantics
ZERO_GRADIENT = 1e-6  # gradients below this fraction of the model's largest are zero in theory

KeyMap = Callable[[str], str | None] | Sequence[tuple[str, str]] | None


# ----------------------------------------------------------------------------- layouts


def nchw(array: np.ndarray) -> np.ndarray:
    """A JAX NHWC feature map in torch's NCHW layout (other ranks unchanged)."""
    array = to_numpy(array)
    return array.transpose(0, 3, 1, 2) if array.ndim == 4 else array


def nhwc(array: np.ndarray) -> np.ndarray:
    """A torch NCHW feature map in jaxcnn's NHWC layout (other ranks unchanged)."""
    return array.transpose(0, 2, 3, 1) if array.ndim == 4 else array


def as_list(output) -> list:
    """A module output (a tensor, a tuple/list/namedtuple of tensors) as a flat list, Nones dropped."""
    if isinstance(output, (tuple, list)):
        return [item for item in output if item is not None]
    return [output]


def _input_nchw(inputs, layout: str | None) -> np.ndarray:
    if isinstance(inputs, jax.Array):
        layout = layout or "NHWC"
    array = to_numpy(inputs)
    layout = (layout or "NCHW").upper()
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', not {layout!r}")
    if layout == "NHWC" and array.ndim == 4:
        array = array.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(array)


def map_keys(state_dict: Mapping[str, Any], key_map: KeyMap) -> dict[str, Any]:
    """``state_dict`` with each key mapped: a callable (``None`` drops the key) or ``(regex, replacement)`` pairs applied in order."""
    if key_map is None:
        return dict(state_dict)
    mapped = {}
    for key, value in state_dict.items():
        new = map_name(key, key_map)
        if new is not None:
            mapped[new] = value
    return mapped


def map_name(name: str, key_map: KeyMap) -> str | None:
    """One torch key or module name through ``key_map`` (see :func:`map_keys`)."""
    if key_map is None:
        return name
    if callable(key_map):
        return key_map(name)
    for pattern, replacement in key_map:
        name = re.sub(pattern, replacement, name)
    return name


# ----------------------------------------------------------------------------- modes and state


def set_mode(torch_module, jax_module: nnx.Module | None, *, train: bool) -> None:
    """Train or eval mode on both sides; Dropout stays off so that random masks cannot differ."""
    import torch

    torch_module.train(train)
    for module in torch_module.modules():
        if isinstance(module, torch.nn.Dropout):
            module.eval()
    if jax_module is not None:
        from jaxcnn import nn

        jax_module.train() if train else jax_module.eval()
        for _, module in nnx.iter_graph(jax_module):
            if isinstance(module, nn.Dropout):
                module.deterministic = True


def fill_abstract_rng_streams(jax_module: nnx.Module, seed: int = 0) -> None:
    """Give RNG streams left abstract by ``nnx.eval_shape`` (Dropout's) concrete keys and counts.

    torch's ``state_dict`` has nothing for them; Dropout is kept off in comparisons.
    """
    for _, variable in nnx.to_flat_state(nnx.state(jax_module, nnx.RngState)):
        value = variable.get_value()
        if isinstance(value, jax.ShapeDtypeStruct):
            if isinstance(variable, nnx.RngKey):
                variable.set_value(jax.random.split(jax.random.key(seed), value.shape) if value.shape else jax.random.key(seed))
            else:
                variable.set_value(jnp.zeros(value.shape, value.dtype))


def _cast(jax_module: nnx.Module, dtype) -> None:
    state = nnx.state(jax_module)
    nnx.update(jax_module, jax.tree.map(lambda v: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, state))


def _torch_arrays(module) -> dict[str, np.ndarray]:
    return {key: value.detach().cpu().numpy().copy() for key, value in module.state_dict().items()}


# ----------------------------------------------------------------------------- one run


class _Run:
    """Everything one side-by-side run produced, in torch's layout."""

    def __init__(self):
        self.torch_calls: list[tuple[str, tuple, dict, list]] = []  # (name, args, kwargs, outputs) in completion order
        self.jax_calls: list[tuple[str, list]] = []
        self.torch_outputs: list = []
        self.jax_outputs: list = []
        self.jax_error: str | None = None
        self.torch_loss = self.jax_loss = None
        self.torch_grads: dict[str, np.ndarray] = {}
        self.jax_grads: dict[str, np.ndarray] = {}
        self.torch_stats: dict[str, np.ndarray] = {}
        self.jax_stats: dict[str, np.ndarray] = {}
        self.isolated: dict[tuple[str, int], tuple[float | None, str]] = {}
        self.torch_after: dict[str, np.ndarray] = {}
        self.jax_after: dict[str, np.ndarray] = {}
        self.steps_error: str | None = None


def _torch_value(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy()
    if isinstance(value, (tuple, list)):
        return type(value)(_torch_value(item) for item in value) if not hasattr(value, "_fields") else type(value)(*map(_torch_value, value))
    return value


def _jax_value(value):
    if isinstance(value, np.ndarray):
        return jnp.asarray(nhwc(value))
    if isinstance(value, (tuple, list)) and not hasattr(value, "_fields"):
        return type(value)(_jax_value(item) for item in value)
    return value


def _torch_loss(output, labels, aux_loss_weight: float):
    """torch's twin of :func:`jaxcnn.train.step.model_loss`: cross entropy of the first output plus weighted auxiliary logits."""
    import torch.nn.functional as F

    outputs = as_list(output)
    logits = outputs[0]
    loss = F.cross_entropy(logits, labels)
    if aux_loss_weight:
        for extra in outputs[1:]:
            if hasattr(extra, "shape") and extra.shape == logits.shape:
                loss = loss + aux_loss_weight * F.cross_entropy(extra, labels)
    return loss


def _run_torch(run: _Run, torch_module, x: np.ndarray, labels, names: Sequence[str], train: bool, aux_loss_weight: float):
    import torch

    pending: dict[str, list] = {}
    handles = []
    for name in names:
        module = torch_module.get_submodule(name)

        def pre(module, args, kwargs, name=name):
            pending.setdefault(name, []).append((_torch_value(args), _torch_value(kwargs)))

        def post(module, args, kwargs, output, name=name):
            call_args, call_kwargs = pending[name].pop()
            run.torch_calls.append((name, call_args, call_kwargs, [_torch_value(o) for o in as_list(output)]))

        handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(module.register_forward_hook(post, with_kwargs=True))
    try:
        torch_module.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(train):
            output = torch_module(torch.from_numpy(x))
            run.torch_outputs = [_torch_value(o) for o in as_list(output)]
            if labels is None:
                labels = np.arange(x.shape[0]) % run.torch_outputs[0].shape[-1]
            if train:
                loss = _torch_loss(output, torch.as_tensor(labels, dtype=torch.long), aux_loss_weight)
                loss.backward()
                run.torch_loss = loss.detach().cpu().numpy()
                run.torch_grads = {k: p.grad.detach().cpu().numpy().copy() for k, p in torch_module.named_parameters() if p.grad is not None}
    finally:
        for handle in handles:
            handle.remove()
    parameters = {key for key, _ in torch_module.named_parameters()}
    run.torch_stats = {key: value for key, value in _torch_arrays(torch_module).items() if key not in parameters}
    return np.asarray(labels)


def _deepest_first(names: Iterable[str]) -> list[str]:
    return sorted(names, key=lambda name: -name.count("."))


def _run_jax(run: _Run, jax_module: nnx.Module, x: np.ndarray, labels: np.ndarray, names: Sequence[str], train: bool, aux_loss_weight: float, jit: bool):
    from jaxcnn.train.step import model_loss

    graphdef, params, rest = nnx.split(jax_module, nnx.Param, ...)
    call_names: list[str] = []
    ordered = _deepest_first(names)

    def forward(params, rest, images, labels):
        model = nnx.merge(graphdef, params, rest, copy=True)  # fresh Variables: BatchNorm mutates its statistics
        calls, root = [], []

        def recorded(images):
            root.append(model(images))
            return root[-1]

        with record_outputs(model, ordered, calls=calls):
            if train:
                loss, _ = model_loss(recorded, images, labels, aux_loss_weight=aux_loss_weight)
            else:
                recorded(images)
                loss = jnp.zeros(())
        call_names[:] = [name for name, _, _ in calls]
        return loss, (root[0], [output for _, _, output in calls], nnx.state(model, nnx.BatchStat))

    function = jax.value_and_grad(forward, has_aux=True) if train else forward
    if jit:
        function = jax.jit(function, compiler_options=FAST_COMPILE)
    images = jnp.asarray(nhwc(x))
    try:
        result = function(params, rest, images, jnp.asarray(labels, jnp.int32))
    except Exception as error:  # noqa: BLE001 - a twin that cannot run end to end is a finding, not a crash
        run.jax_error = f"{type(error).__name__}: {error}".strip().splitlines()[0][:500]
        return
    if train:
        (loss, (output, outputs, stats)), grads = result
        variables = torch_variables(jax_module)
        run.jax_grads = {
            key: torch_layout(np.asarray(value.get_value() if hasattr(value, "get_value") else value), torch_permutation(variables[key]))
            for key, value in ((".".join(map(str, path)), value) for path, value in nnx.to_flat_state(grads))
        }
        run.jax_loss = np.asarray(loss)
        stats_flat = {".".join(map(str, path)): value for path, value in nnx.to_flat_state(stats)}
        run.jax_stats = {key: np.asarray(value.get_value() if hasattr(value, "get_value") else value) for key, value in stats_flat.items()}
    else:
        _, (output, outputs, _) = result
        run.jax_stats = {key: np.asarray(v.get_value()) for key, v in torch_variables(jax_module).items() if isinstance(v, nnx.BatchStat)}
    run.jax_outputs = [nchw(o) for o in as_list(output)]
    run.jax_calls = [(name, [nchw(o) for o in as_list(out)]) for name, out in zip(call_names, outputs)]


def _error(actual_list, expected_list) -> tuple[float, str]:
    """The worst relative error over a module's outputs, and a note (shape or arity mismatch)."""
    if len(actual_list) != len(expected_list):
        return float("inf"), f"{len(actual_list)} jax outputs vs {len(expected_list)} torch outputs"
    worst = 0.0
    for actual, expected in zip(actual_list, expected_list):
        try:
            worst = max(worst, relative_error(actual, expected))
        except ShapeMismatch as mismatch:
            return float("inf"), str(mismatch)
    return worst, ""


def _run_isolated(run: _Run, pristine: nnx.Module, names_on_jax: Mapping[str, str], train: bool, key_map: KeyMap):
    """Each jaxcnn submodule fed torch's recorded input to it (converted to NHWC)."""
    values = {key: variable.get_value() for key, variable in torch_variables(pristine).items()}
    variables = torch_variables(pristine)
    call_counts: dict[str, int] = {}
    for name, _, _, _ in run.torch_calls:
        call_counts[name] = call_counts.get(name, 0) + 1
    seen: dict[str, int] = {}
    for name, args, kwargs, expected in run.torch_calls:
        index = seen[name] = seen.get(name, -1) + 1
        jax_name = names_on_jax.get(name)
        if jax_name is None:
            run.isolated[(name, index)] = (None, "no jaxcnn counterpart")
            continue
        prefix = jax_name + "."
        own = [key for key in variables if key.startswith(prefix)]
        for key in own:  # every call starts from the state before the step
            variables[key].set_value(values[key])
        submodule = get_submodule(pristine, jax_name)
        try:
            output = submodule(*_jax_value(tuple(args)), **{k: _jax_value(v) for k, v in kwargs.items()})
        except Exception as error:  # noqa: BLE001
            run.isolated[(name, index)] = (float("inf"), f"raised {type(error).__name__}: {str(error).splitlines()[0][:200]}")
            continue
        error, note = _error([nchw(o) for o in as_list(output)], expected)
        if train and call_counts[name] == 1 and not note:
            for key in own:
                if isinstance(variables[key], nnx.BatchStat):
                    torch_key = _torch_key(key, run.torch_stats, key_map)
                    if torch_key is not None:
                        stat_error = relative_error(np.asarray(variables[key].get_value()), run.torch_stats[torch_key])
                        if stat_error > error:
                            error, note = stat_error, f"running statistics after the call: {key.removeprefix(prefix)}"
        run.isolated[(name, index)] = (error, note)
    for key, variable in variables.items():
        variable.set_value(values[key])


def _torch_key(jax_key: str, torch_keys: Iterable[str], key_map: KeyMap) -> str | None:
    if key_map is None:
        return jax_key if jax_key in torch_keys else None
    for key in torch_keys:
        if map_name(key, key_map) == jax_key:
            return key
    return None


def _run_steps(run: _Run, torch_module, jax_module: nnx.Module, x: np.ndarray, labels: np.ndarray, steps: int, optimizers, aux_loss_weight: float, key_map: KeyMap):
    """``steps`` optimizer steps on both sides on the same batch, through jaxcnn's own train step."""
    import torch

    from jaxcnn.train.state import create_train_state, state_to_model
    from jaxcnn.train.step import make_train_step

    tx, torch_optimizer = _optimizer_pair(optimizers, torch_module)
    graphdef, _, state = create_train_state(jax_module, tx)
    set_mode(torch_module, jax_module, train=True)
    graphdef = nnx.graphdef(jax_module)  # Dropout kept off (set_mode after the split re-marks it)
    step = make_train_step(graphdef, tx, aux_loss_weight=aux_loss_weight, donate=False)
    images, jax_labels = jnp.asarray(nhwc(x)), jnp.asarray(labels, jnp.int32)
    torch_x, torch_labels = torch.from_numpy(x), torch.as_tensor(labels, dtype=torch.long)
    for _ in range(steps):
        state, _ = step(state, images, jax_labels)
        torch_optimizer.zero_grad(set_to_none=True)
        _torch_loss(torch_module(torch_x), torch_labels, aux_loss_weight).backward()
        torch_optimizer.step()
    trained = state_to_model(graphdef, state)
    run.jax_after = {key: np.asarray(value) for key, value in to_torch_arrays(trained).items()}
    run.torch_after = map_keys(_torch_arrays(torch_module), key_map)


def _optimizer_pair(optimizers, torch_module):
    """``(optax transformation, torch optimizer)`` from ``(tx, torch optimizer or factory)`` or ``(name, options)``."""
    import torch

    if optimizers is None:
        raise ValueError("steps > 0 needs optimizers=(jaxcnn.optim transformation, torch optimizer or factory) or (name, options)")
    first, second = optimizers
    if isinstance(first, str):
        from jaxcnn import optim

        options = dict(second or {})
        tx = optim.create(first, **options)
        torch_class = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop}[first.lower()]
        return tx, torch_class(torch_module.parameters(), **options)
    if isinstance(second, torch.optim.Optimizer):
        # bound to the caller's module: rebind its settings to the copy compared here
        return first, type(second)(torch_module.parameters(), **second.defaults)
    return first, second(torch_module.parameters())


def _side_by_side(torch_module, jax_module, x, labels, *, train, names_on_jax, aux_loss_weight, jit, key_map, steps, optimizers, isolated=True):
    """One complete comparison run at the models' current precision (the models are copies; they are changed)."""
    run = _Run()
    set_mode(torch_module, jax_module, train=train)
    pristine = nnx.clone(jax_module) if isolated else None
    stepping = (copy.deepcopy(torch_module), nnx.clone(jax_module)) if steps else None
    labels = _run_torch(run, torch_module, x, labels, list(names_on_jax), train, aux_loss_weight)
    run.torch_grads = map_keys(run.torch_grads, key_map)
    run.torch_stats = map_keys(run.torch_stats, key_map)
    _run_jax(run, jax_module, x, labels, [n for n in names_on_jax.values() if n is not None], train, aux_loss_weight, jit)
    # jax call names -> torch names
    back = {jax_name: name for name, jax_name in names_on_jax.items() if jax_name is not None}
    run.jax_calls = [(back.get(name, name), outputs) for name, outputs in run.jax_calls]
    if isolated:
        set_mode(torch_module, pristine, train=train)
        _run_isolated(run, pristine, names_on_jax, train, key_map)
    if steps:
        try:
            _run_steps(run, *stepping, x, labels, steps, optimizers, aux_loss_weight, key_map)
        except Exception as error:  # noqa: BLE001
            run.steps_error = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
    return run, labels


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
