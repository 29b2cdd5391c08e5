"""Model-level parity harness: torch_ref model -> convert -> jaxcnn model -> compare.

Used by the ``test_models_*.py`` files. Every comparison is float32 on CPU and relative to
the reference tensor's scale: ``max|jax - torch| <= rtol * max|torch|``.
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
from jaxcnn import nn
from jaxcnn.convert import load_torch_state_dict, to_torch_arrays, torch_variables
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


def relative_error(actual, expected) -> float:
    """``max|actual - expected| / max|expected|`` (absolute error when ``expected`` is all zeros)."""
    actual, expected = to_numpy(actual).astype(np.float64), to_numpy(expected).astype(np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"shape mismatch: jax {actual.shape} vs torch {expected.shape}")
    scale = np.abs(expected).max() if expected.size else 0.0
    error = np.abs(actual - expected).max() if expected.size else 0.0
    return float(error / scale) if scale > 0 else float(error)


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


def make_pair(name: str, *, seed: int = 0, **options):
    """A torch_ref model with randomised BatchNorm state and its jaxcnn twin loaded from it."""
    torch.manual_seed(seed)
    torch_model = randomize_torch_model(torch_ref.models.create(name, **options), seed)
    jax_model = jaxcnn.models.create(name, rngs=nnx.Rngs(seed), **options)
    load_torch_state_dict(jax_model, torch_model.state_dict())
    return torch_model, jax_model


def set_mode(torch_model: torch.nn.Module, jax_model: nnx.Module, *, train: bool) -> None:
    """Train or eval mode on both sides; Dropout stays off so random masks cannot differ."""
    torch_model.train(train)
    jax_model.train() if train else jax_model.eval()
    for module in torch_model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.eval()
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


def check_eval(torch_model, jax_model, x: torch.Tensor, *, features: Sequence[str] = (), rtol: float = RTOL) -> dict[str, float]:
    """Eval-mode outputs and the named intermediate features agree; returns the errors."""
    set_mode(torch_model, jax_model, train=False)
    errors = {}
    with record_features(torch_model, jax_model, features) as (torch_records, jax_records), torch.no_grad():
        torch_out = outputs_as_list(torch_model(x))
        jax_out = outputs_as_list(jax_model(jax_input(x)))
    assert len(torch_out) == len(jax_out), f"{len(jax_out)} jax outputs vs {len(torch_out)} torch outputs"
    for index, (expected, actual) in enumerate(zip(torch_out, jax_out)):
        errors[f"eval output {index}"] = assert_close(nchw(actual), expected, rtol, f"eval output {index}")
    for name in features:
        for index, (expected, actual) in enumerate(zip(outputs_as_list(torch_records[name]), outputs_as_list(jax_records[name]))):
            errors[f"feature {name}[{index}]"] = assert_close(nchw(actual), expected, rtol, f"feature {name}")
    return errors


def _cross_entropy_torch(output, labels):
    return sum(torch.nn.functional.cross_entropy(o, labels) for o in outputs_as_list(output))


def _cross_entropy_jax(output, labels):
    return sum(F.cross_entropy(o, labels) for o in outputs_as_list(output))


def check_train_step(
    torch_model, jax_model, x: torch.Tensor, labels: torch.Tensor, *, rtol: float = RTOL, grad_rtol: float | None = None
) -> dict[str, float]:
    """One training-mode forward/backward: outputs, cross-entropy gradients of every
    parameter, and BatchNorm running statistics after the step agree."""
    set_mode(torch_model, jax_model, train=True)
    torch_model.zero_grad()
    torch_output = torch_model(x)
    torch_loss = _cross_entropy_torch(torch_output, labels)
    torch_loss.backward()

    graphdef, params, rest = nnx.split(jax_model, nnx.Param, ...)
    jax_labels = jnp.asarray(labels.numpy())

    def loss_fn(params):
        model = nnx.merge(graphdef, params, rest)
        output = model(jax_input(x))
        return _cross_entropy_jax(output, jax_labels), (output, nnx.state(model, nnx.BatchStat))

    (jax_loss, (jax_output, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    nnx.update(jax_model, batch_stats)

    errors = {"loss": assert_close(jax_loss, torch_loss.detach(), rtol, "train loss")}
    for index, (expected, actual) in enumerate(zip(outputs_as_list(torch_output), outputs_as_list(jax_output))):
        errors[f"train output {index}"] = assert_close(nchw(actual), expected, rtol, f"train output {index}")
    jax_grads = {".".join(map(str, path)): value for path, value in nnx.to_flat_state(grads)}
    variables = torch_variables(jax_model)
    worst = 0.0
    for key, parameter in torch_model.named_parameters():
        grad = np.asarray(jax_grads[key].get_value())
        actual = torch_layout(grad, torch_permutation(variables[key]))
        error = assert_close(actual, parameter.grad, grad_rtol or rtol, f"gradient of {key}")
        worst = max(worst, error)
    errors["gradients (worst parameter)"] = worst
    torch_state = torch_model.state_dict()
    worst = 0.0
    for key, value in to_torch_arrays(jax_model).items():
        if "running" in key or key.endswith("num_batches_tracked"):
            worst = max(worst, assert_close(value, torch_state[key], rtol, f"batch statistic {key}"))
    errors["batch statistics (worst)"] = worst
    return errors


def check_round_trip(torch_model, jax_model) -> None:
    """torch -> jaxcnn -> torch reproduces the state dict bit for bit."""
    exported = to_torch_arrays(jax_model)
    original = torch_model.state_dict()
    assert sorted(exported) == sorted(original), "state dict keys differ after the round trip"
    for key, value in original.items():
        np.testing.assert_array_equal(exported[key], value.numpy(), err_msg=key)
