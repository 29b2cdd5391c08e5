"""The side-by-side runs behind :func:`jaxcnn.parity.compare`: torch with forward hooks, jaxcnn
with :mod:`jaxcnn.intermediates`, each jaxcnn submodule on torch's input, optimizer steps.

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

from jaxcnn.convert import to_torch_arrays, torch_variables
from jaxcnn.convert.mapping import torch_layout, torch_permutation
from jaxcnn.intermediates import get_submodule, record_outputs
from jaxcnn.parity.rule import ShapeMismatch, relative_error, to_numpy

# XLA options for the one compiled forward/backward per comparison: XLA's CPU optimisations
# cost more compile time than they save for a single run (float semantics are unchanged).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}

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
