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

Metrics returned per step (device scalars; fetching them is the caller's choice):
``loss`` (float32, mean cross entropy of the main logits; the auxiliary terms are optimised but
not included), ``correct`` (int32, argmax hits) and ``count`` (int32, batch size).
"""

from __future__ import annotations

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


def split_outputs(outputs: Any) -> tuple[jax.Array, tuple[Any, ...]]:
    """``(logits, extras)`` from a model output: an array, or a tuple/list whose first item is the logits."""
    if isinstance(outputs, (tuple, list)):
        if not outputs:
            raise ValueError("the model returned an empty tuple")
        return outputs[0], tuple(outputs[1:])
    return outputs, ()


def _cast_floating(tree: Any, dtype: Any) -> Any:
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


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

    The one definition of the loss, used by :func:`make_train_step` and by anything that needs
    the step's gradients (``jaxcnn.parity``). ``images`` (B, H, W, C) NHWC, ``labels`` int (B,).
    ``loss`` is the mean cross entropy of the first output plus ``aux_loss_weight`` times that
    of every further output of the logits' shape (see the module docstring); ``logits`` are the
    first output cast to float32, ``per_example`` (B,) their cross entropies.
    """
    logits, extras = split_outputs(model(images))
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    per_example = cross_entropy(logits, labels, reduction="none", label_smoothing=label_smoothing)
    loss = jnp.mean(per_example)
    if aux_loss_weight:
        for extra in extras:
            if hasattr(extra, "shape") and extra.shape == logits.shape:
                loss = loss + aux_loss_weight * cross_entropy(
                    extra.astype(jnp.float32), labels, label_smoothing=label_smoothing
                )
    return loss, (logits, per_example)


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    *,
    label_smoothing: float = 0.0,
    aux_loss_weight: float = 0.0,
    compute_dtype: Any = None,
    donate: bool = True,
    trace_counts: dict[str, int] | None = None,
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, Metrics]]:
    """Build ``train_step(state, images, labels) -> (state, metrics)``, jitted once.

    Args:
      graphdef: the training-mode graphdef from :func:`~jaxcnn.train.state.create_train_state`.
      tx: the optax optimizer that created ``state.opt_state``.
      label_smoothing: torch's ``CrossEntropyLoss(label_smoothing=...)``.
      aux_loss_weight: weight of each auxiliary logits output (see the module docstring).
      compute_dtype: e.g. ``jnp.bfloat16`` for mixed precision: floating parameters and the
        images are cast to it inside the step, the loss is computed in float32 and the float32
        master weights, optimizer state and BatchNorm statistics keep their dtypes. ``None``:
        compute in the parameters' dtype.
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

    def loss_fn(params, rest, images, labels):
        if cdt is not None:
            params = _cast_floating(params, cdt)
            images = images.astype(cdt)
        model = nnx.merge(graphdef, params, rest, copy=True)
        loss, (logits, per_example) = model_loss(
            model, images, labels, label_smoothing=label_smoothing, aux_loss_weight=aux_loss_weight
        )
        _, _, new_rest = split_model(model)
        return loss, (logits, per_example, new_rest)

    def train_step(state: TrainState, images: jax.Array, labels: jax.Array):
        if trace_counts is not None:
            trace_counts["train"] = trace_counts.get("train", 0) + 1
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
    trace_counts: dict[str, int] | None = None,
) -> Callable[[TrainState, jax.Array, jax.Array], Metrics]:
    """Build ``eval_step(state, images, labels) -> metrics``, jitted, in evaluation mode.

    Args:
      eval_graphdef: the evaluation-mode graphdef from
        :func:`~jaxcnn.train.state.create_train_state` (BatchNorm uses running statistics,
        Dropout is the identity).
      label_smoothing: the loss is the same criterion as in training (as torch scripts do).
      compute_dtype: as in :func:`make_train_step`.
      trace_counts: optional dict; ``trace_counts["eval"]`` counts traces.

    Takes float32 (B, H, W, C) NHWC images and int32 (B,) labels; returns
    ``{"loss", "correct", "count"}`` with ``loss`` the batch mean (float32 device scalars).
    The state is not modified (no donation).
    """
    cdt = None if compute_dtype is None else jnp.dtype(compute_dtype)

    def eval_step(state: TrainState, images: jax.Array, labels: jax.Array) -> Metrics:
        if trace_counts is not None:
            trace_counts["eval"] = trace_counts.get("eval", 0) + 1
        params = state.params
        if cdt is not None:
            params = _cast_floating(params, cdt)
            images = images.astype(cdt)
        model = nnx.merge(eval_graphdef, params, state.rest)
        logits, _ = split_outputs(model(images))
        logits = logits.astype(jnp.float32)
        per_example = cross_entropy(logits, labels, reduction="none", label_smoothing=label_smoothing)
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
    donate: bool = True,
) -> StepFunctions:
    """Both steps for one run (see :func:`make_train_step` and :func:`make_eval_step`)."""
    counts: dict[str, int] = {"train": 0, "eval": 0}
    return StepFunctions(
        train_step=make_train_step(
            graphdef, tx, label_smoothing=label_smoothing, aux_loss_weight=aux_loss_weight,
            compute_dtype=compute_dtype, donate=donate, trace_counts=counts,
        ),  # fmt: skip
        eval_step=make_eval_step(
            eval_graphdef, label_smoothing=label_smoothing, compute_dtype=compute_dtype,
            trace_counts=counts,
        ),  # fmt: skip
        trace_counts=counts,
    )
