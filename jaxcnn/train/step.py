"""Jitted, pure train and eval steps over a :class:`~jaxcnn.train.state.TrainState`.

The NNX model is split once at setup (:func:`jaxcnn.train.state.create_train_state`); each step
function closes over the static graphdef and calls ``nnx.merge`` *inside* ``jax.jit``, so the
graph bookkeeping runs only while tracing. Per step the host does one dispatch of a compiled
function: no ``nnx.jit``, no split/merge, no Python work proportional to the model.

Loss: ``jaxcnn.nn.functional.cross_entropy`` (torch's ``CrossEntropyLoss``, optional
``label_smoothing``), averaged over the batch. Models returning a tuple (``gap_vgg`` returns
``(logits, features)``, GoogLeNet in training mode ``(logits, aux2, aux1)``) are scored on the
first element. With ``aux_loss_weight > 0`` every further element that has the logits' shape is
an auxiliary classifier output and adds ``aux_loss_weight * cross_entropy(aux)`` to the optimised
loss (the GoogLeNet paper's recipe weights each auxiliary loss by 0.3, which is the trainer's
default for ``googlenet*`` models); other elements (features) are ignored.

Precision. The loss is computed in ``promote_types(logits dtype, float32)``: float32 for
bfloat16/float16 logits, float64 for a float64 model (``compute_dtype=float64`` verifies a port
against torch in float64; it needs ``jax_enable_x64``, see ``docs/precision.md``). Mixed precision
(``compute_dtype=bfloat16``/``float16``) follows torch autocast's rules: convolutions and matmuls
run in the compute dtype, every module marked ``keep_float32`` (BatchNorm) keeps float32
parameters and computes in float32, the loss is float32, and the master weights, optimizer state
and BatchNorm running statistics stay float32. ``matmul_precision`` (``"default"``, ``"high"``,
``"highest"``) is applied inside the jitted steps with ``jax.default_matmul_precision``, so it
reaches every dot and convolution of the forward and backward pass (on a GPU JAX's default rounds
float32 products to TF32-class precision; ``"highest"`` computes them in full float32).

Metrics returned per step (device scalars; fetching them is the caller's choice):
``loss`` (float32, or float64 for a float64 model: mean cross entropy of the main logits; the
auxiliary terms are optimised but not included), ``correct`` (int32, argmax hits) and
``count`` (int32, batch size).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxcnn.nn.functional import cross_entropy
from jaxcnn.train.state import TrainState, split_model

__all__ = [
    "StepFunctions",
    "all_finite",
    "make_eval_step",
    "make_steps",
    "make_train_step",
    "model_loss",
    "split_outputs",
]

Metrics = dict[str, jax.Array]

MATMUL_PRECISIONS = ("default", "high", "highest")


def split_outputs(outputs: Any) -> tuple[jax.Array, tuple[Any, ...]]:
    """``(logits, extras)`` from a model output: an array, or a tuple/list whose first item is the logits."""
    if isinstance(outputs, (tuple, list)):
        if not outputs:
            raise ValueError("the model returned an empty tuple")
        return outputs[0], tuple(outputs[1:])
    return outputs, ()


def _autocast(model: nnx.Module, dtype: Any) -> None:
    """Cast the floating ``nnx.Param`` values of ``model`` to ``dtype`` in place (inside a trace),
    except those of modules marked ``keep_float32`` (BatchNorm), as torch autocast leaves them."""
    nodes = list(nnx.iter_graph(model))
    kept = [path for path, node in nodes if isinstance(node, nnx.Module) and getattr(node, "keep_float32", False)]
    for path, node in nodes:
        if isinstance(node, nnx.Param) and not any(path[: len(k)] == k for k in kept):
            if jnp.issubdtype(node.get_value().dtype, jnp.floating):
                node.set_value(node.get_value().astype(dtype))


def _precision_context(matmul_precision: str | None):
    """``jax.default_matmul_precision`` for the traced body; ``None``/``"default"``: no change."""
    if matmul_precision not in (None, *MATMUL_PRECISIONS):
        raise ValueError(f"matmul_precision must be one of {MATMUL_PRECISIONS}, got {matmul_precision!r}")
    if matmul_precision in (None, "default"):
        return contextlib.nullcontext()
    return jax.default_matmul_precision(matmul_precision)


def _merge(graphdef: nnx.GraphDef, params: Any, rest: Any, images: jax.Array, compute_dtype: Any):
    """The model merged inside the trace and the images, both in the compute dtype (if any)."""
    model = nnx.merge(graphdef, params, rest, copy=True)
    if compute_dtype is not None:
        _autocast(model, compute_dtype)
        images = images.astype(compute_dtype)
    return model, images


def _match_dtypes(tree: Any, like: Any) -> Any:
    return jax.tree.map(lambda x, ref: x.astype(ref.dtype) if x.dtype != ref.dtype else x, tree, like)


def _metrics(logits: jax.Array, labels: jax.Array, per_example: jax.Array) -> Metrics:
    return {
        "loss": jnp.mean(per_example),
        "correct": jnp.sum(jnp.argmax(logits, axis=-1) == labels).astype(jnp.int32),
        "count": jnp.asarray(labels.shape[0], jnp.int32),
    }


def model_loss(
    model: nnx.Module,
    images: jax.Array,
    labels: jax.Array,
    *,
    label_smoothing: float = 0.0,
    aux_loss_weight: float = 0.0,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """The training loss of ``model`` on one batch: ``(loss, (logits, per_example))``.

    The one definition of the loss, used by :func:`make_train_step`, :func:`make_eval_step` and
    by anything that needs the step's gradients (``jaxcnn.parity``). ``images`` (B, H, W, C)
    NHWC, ``labels`` int (B,). ``loss`` is the mean cross entropy of the first output plus
    ``aux_loss_weight`` times that of every further output of the logits' shape (see the module
    docstring); ``logits`` are the first output cast to ``promote_types(dtype, float32)``
    (float32 for bfloat16/float16, float64 stays float64), ``per_example`` (B,) their cross
    entropies.
    """
    logits, extras = split_outputs(model(images))
    loss_dtype = jnp.promote_types(logits.dtype, jnp.float32)
    logits = logits.astype(loss_dtype)
    per_example = cross_entropy(logits, labels, reduction="none", label_smoothing=label_smoothing)
    loss = jnp.mean(per_example)
    if aux_loss_weight:
        for extra in extras:
            if hasattr(extra, "shape") and extra.shape == logits.shape:
                loss = loss + aux_loss_weight * cross_entropy(
                    extra.astype(loss_dtype), labels, label_smoothing=label_smoothing
                )
    return loss, (logits, per_example)


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    *,
    label_smoothing: float = 0.0,
    aux_loss_weight: float = 0.0,
    compute_dtype: Any = None,
    matmul_precision: str | None = None,
    donate: bool = True,
    trace_counts: dict[str, int] | None = None,
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, Metrics]]:
    """Build ``train_step(state, images, labels) -> (state, metrics)``, jitted once.

    Args:
      graphdef: the training-mode graphdef from :func:`~jaxcnn.train.state.create_train_state`.
      tx: the optax optimizer that created ``state.opt_state``.
      label_smoothing: torch's ``CrossEntropyLoss(label_smoothing=...)``.
      aux_loss_weight: weight of each auxiliary logits output (see the module docstring).
      compute_dtype: e.g. ``jnp.bfloat16`` for mixed precision with autocast's rules: the
        images and the floating parameters of every module not marked ``keep_float32`` are cast
        to it inside the step (BatchNorm keeps float32 parameters and normalises in float32),
        the loss is computed in float32, and the float32 master weights, optimizer state and
        BatchNorm statistics keep their dtypes. ``None``: compute in the parameters' dtype
        (float64 parameters: float64 throughout).
      matmul_precision: ``"default"``/``None`` (the backend's default; TF32-class on GPUs),
        ``"high"`` or ``"highest"`` (full float32): ``jax.default_matmul_precision`` around the
        traced step, so every dot and convolution, forward and backward, carries it.
      donate: donate the input state's buffers (``donate_argnums=0``), so the update is in place
        on accelerators; the state passed in must not be used again.
      trace_counts: optional dict; ``trace_counts["train"]`` is incremented each time the step
        is traced (a Python side effect that runs only on (re)compilation).

    The step takes ``images`` float32 (B, H, W, C) NHWC (normalised) and ``labels`` int32 (B,),
    merges the model inside ``jit``, computes the loss and gradients, applies the optax update,
    stores the model's new non-parameter state (BatchNorm statistics, advanced Dropout RNG
    counters) and increments ``state.step``. Returns the new state and the metrics dict
    ``{"loss", "correct", "count"}`` (device scalars).
    """
    cdt = None if compute_dtype is None else jnp.dtype(compute_dtype)
    _precision_context(matmul_precision)  # validate now, not at the first call

    def loss_fn(params, rest, images, labels):
        model, images = _merge(graphdef, params, rest, images, cdt)
        loss, (logits, per_example) = model_loss(
            model, images, labels, label_smoothing=label_smoothing, aux_loss_weight=aux_loss_weight
        )
        _, _, new_rest = split_model(model)
        return loss, (logits, per_example, new_rest)

    def train_step(state: TrainState, images: jax.Array, labels: jax.Array):
        if trace_counts is not None:
            trace_counts["train"] = trace_counts.get("train", 0) + 1
        with _precision_context(matmul_precision):
            grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
            (_, (logits, per_example, new_rest)), grads = grad_fn(state.params, state.rest, images, labels)
            new_rest = _match_dtypes(new_rest, state.rest)
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            params = _match_dtypes(params, state.params)
        new_state = state.replace(params=params, rest=new_rest, opt_state=opt_state, step=state.step + 1)
        return new_state, _metrics(logits, labels, per_example)

    return jax.jit(train_step, donate_argnums=(0,) if donate else ())


def make_eval_step(
    eval_graphdef: nnx.GraphDef,
    *,
    label_smoothing: float = 0.0,
    compute_dtype: Any = None,
    matmul_precision: str | None = None,
    trace_counts: dict[str, int] | None = None,
) -> Callable[[TrainState, jax.Array, jax.Array], Metrics]:
    """Build ``eval_step(state, images, labels) -> metrics``, jitted, in evaluation mode.

    Args:
      eval_graphdef: the evaluation-mode graphdef from
        :func:`~jaxcnn.train.state.create_train_state` (BatchNorm uses running statistics,
        Dropout is the identity).
      label_smoothing: the loss is the same criterion as in training (as torch scripts do).
      compute_dtype, matmul_precision: as in :func:`make_train_step`.
      trace_counts: optional dict; ``trace_counts["eval"]`` counts traces.

    Takes float32 (B, H, W, C) NHWC images and int32 (B,) labels; returns
    ``{"loss", "correct", "count"}`` with ``loss`` the batch mean of :func:`model_loss`'s
    per-example cross entropies (auxiliary outputs, which evaluation-mode models do not return,
    are not scored). The state is not modified (no donation).
    """
    cdt = None if compute_dtype is None else jnp.dtype(compute_dtype)
    _precision_context(matmul_precision)

    def eval_step(state: TrainState, images: jax.Array, labels: jax.Array) -> Metrics:
        if trace_counts is not None:
            trace_counts["eval"] = trace_counts.get("eval", 0) + 1
        with _precision_context(matmul_precision):
            model, images = _merge(eval_graphdef, state.params, state.rest, images, cdt)
            _, (logits, per_example) = model_loss(model, images, labels, label_smoothing=label_smoothing)
        return _metrics(logits, labels, per_example)

    return jax.jit(eval_step)


@jax.jit
def all_finite(tree: Any) -> jax.Array:
    """Bool scalar: every floating leaf of ``tree`` is finite (no NaN/inf). Runs on device."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


class StepFunctions(NamedTuple):
    """The compiled step functions of one run plus their trace counters.

    ``train_step(state, images, labels) -> (state, metrics)`` (donates ``state``);
    ``eval_step(state, images, labels) -> metrics``; ``trace_counts`` maps ``"train"``/``"eval"``
    to how often each was traced (1 per distinct input shape when nothing recompiles).
    """

    train_step: Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, Metrics]]
    eval_step: Callable[[TrainState, jax.Array, jax.Array], Metrics]
    trace_counts: dict[str, int]


def make_steps(
    graphdef: nnx.GraphDef,
    eval_graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    *,
    label_smoothing: float = 0.0,
    aux_loss_weight: float = 0.0,
    compute_dtype: Any = None,
    matmul_precision: str | None = None,
    donate: bool = True,
) -> StepFunctions:
    """Both steps for one run (see :func:`make_train_step` and :func:`make_eval_step`)."""
    counts: dict[str, int] = {"train": 0, "eval": 0}
    return StepFunctions(
        train_step=make_train_step(
            graphdef, tx, label_smoothing=label_smoothing, aux_loss_weight=aux_loss_weight,
            compute_dtype=compute_dtype, matmul_precision=matmul_precision, donate=donate,
            trace_counts=counts,
        ),  # fmt: skip
        eval_step=make_eval_step(
            eval_graphdef, label_smoothing=label_smoothing, compute_dtype=compute_dtype,
            matmul_precision=matmul_precision, trace_counts=counts,
        ),  # fmt: skip
        trace_counts=counts,
    )
