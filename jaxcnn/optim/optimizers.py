"""optax optimizers with exactly ``torch.optim``'s update rules.

``create(name, ...)`` mirrors ``torch.optim.SGD``, ``Adam``, ``AdamW`` and
``RMSprop`` (single parameter group, ``maximize=False``, non-fused).  Each
optimizer is an ``optax.chain`` of stock optax transforms, except for two
rules written here as custom transforms:

* :func:`trace_with_dampening` -- SGD momentum with ``dampening != 0``.  torch
  initialises the momentum buffer to the *undampened* first gradient and
  dampens only later steps (``buf = momentum * buf + (1 - dampening) * g``);
  ``optax.trace`` has no dampening, and scaling its input by ``1 - dampening``
  would also scale the first step.  (With ``dampening == 0`` torch's rule is
  exactly ``optax.trace``, which is then used.)
* :func:`scale_by_torch_adam` -- Adam/AdamW scaling.  (a) torch's AMSGrad keeps
  the running maximum of the *raw* second moment and bias-corrects it with the
  current step's factor, ``max_s(v_s) / (1 - b2**t)``, whereas
  ``optax.scale_by_amsgrad`` takes the maximum of the already bias-corrected
  moments ``max_s(v_s / (1 - b2**s))`` (or never corrects); since eps is added
  after the square root neither can be rescaled into torch's rule.  (b) torch
  computes ``1 - beta**t`` in float64, ``optax.scale_by_adam`` in float32 after
  rounding beta to float32, which for ``beta2 = 0.999`` shifts every early
  step by ~6e-6 relative (25x the rest of the float32 noise in the parity
  test); the custom transform evaluates it as ``-expm1(t * log(beta))``.

Everything else is stock optax:

* coupled L2 weight decay (SGD, Adam, RMSprop): ``optax.add_decayed_weights``
  first in the chain, i.e. ``g += wd * p`` before any moment is updated;
* AdamW's decoupled decay ``p *= 1 - lr_t * wd`` followed by the Adam step
  equals ``p - lr_t * (adam_update + wd * p)``: the Adam scaling, then
  ``add_decayed_weights``, then the learning rate;
* RMSprop: ``optax.scale_by_rms`` / ``scale_by_stddev`` (centered) with
  ``eps_in_sqrt=False`` and zero initial second moment (torch's placement;
  ``optax.rmsprop`` defaults to eps inside the square root), then
  ``optax.trace`` for momentum (torch's RMSprop buffer starts at zero);
* SGD momentum / Nesterov without dampening: ``optax.trace``;
* learning rate (float or schedule): ``optax.scale_by_learning_rate``, wrapped
  in ``optax.inject_hyperparams`` so the value used by the latest update can
  be read with :func:`get_lr`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "OPTIMIZERS",
    "TORCH_DEFAULTS",
    "create",
    "sgd",
    "adam",
    "adamw",
    "rmsprop",
    "trace_with_dampening",
    "scale_by_torch_adam",
    "TraceWithDampeningState",
    "TorchAdamState",
    "get_lr",
]

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")

# torch.optim defaults that differ between optimizers (eps and weight_decay).
TORCH_DEFAULTS: dict[str, dict[str, float]] = {
    "sgd": {"weight_decay": 0.0},
    "adam": {"eps": 1e-8, "weight_decay": 0.0},
    "adamw": {"eps": 1e-8, "weight_decay": 1e-2},
    "rmsprop": {"eps": 1e-8, "weight_decay": 0.0},
}

ScalarOrSchedule = float | Callable[[Any], Any]


# --------------------------------------------------------------------------------------
# Custom transforms (only where optax cannot express torch's rule)
# --------------------------------------------------------------------------------------


class TraceWithDampeningState(NamedTuple):
    """State of :func:`trace_with_dampening`: step count and momentum buffers."""

    count: jax.Array  # int32 scalar: number of updates applied so far
    trace: optax.Updates


def trace_with_dampening(
    momentum: float, dampening: float = 0.0, nesterov: bool = False
) -> optax.GradientTransformation:
    """torch SGD momentum buffer, including ``dampening``.

    ``buf_1 = g_1``; ``buf_t = momentum * buf_{t-1} + (1 - dampening) * g_t``;
    the output is ``buf_t``, or ``g_t + momentum * buf_t`` with ``nesterov``.
    The first step is not dampened -- the reason this cannot be ``optax.trace``.
    """
    momentum = float(momentum)
    damp = 1.0 - float(dampening)

    def init_fn(params):
        return TraceWithDampeningState(
            count=jnp.zeros([], jnp.int32), trace=optax.tree.zeros_like(params)
        )

    def update_fn(updates, state, params=None):
        del params
        first = state.count == 0
        new_trace = jax.tree.map(
            lambda g, t: jnp.where(first, g, momentum * t + damp * g).astype(t.dtype),
            updates,
            state.trace,
        )
        if nesterov:
            out = jax.tree.map(lambda g, t: g + momentum * t, updates, new_trace)
        else:
            out = new_trace
        return out, TraceWithDampeningState(
            count=optax.safe_increment(state.count), trace=new_trace
        )

    return optax.GradientTransformation(init_fn, update_fn)


class TorchAdamState(NamedTuple):
    """State of :func:`scale_by_torch_adam` (torch: ``step``, ``exp_avg``,
    ``exp_avg_sq`` and, with AMSGrad, ``max_exp_avg_sq``; ``nu_max`` is
    ``None`` without AMSGrad)."""

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    nu_max: optax.Updates | None


def _one_minus_pow(beta: float, count: jax.Array, dtype=jnp.float32) -> jax.Array:
    """``1 - beta**count`` in ``dtype`` (float32: to about 1e-7 relative), like torch's float64.

    The naive float32 ``1 - beta**count`` (what ``optax.scale_by_adam`` does)
    first rounds ``beta`` to float32; for ``beta = 0.999`` that changes
    ``1 - beta`` by 1.3e-5 relative, so every Adam step in the first
    thousands is off by ~6e-6 relative compared with torch, which computes
    the bias corrections in float64.  ``-expm1(t * log(beta))`` with
    ``log(beta)`` taken in float64 avoids the cancellation.
    """
    log_beta = math.log(beta) if beta > 0 else -math.inf
    return -jnp.expm1(count.astype(dtype) * jnp.asarray(log_beta, dtype))


def scale_by_torch_adam(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, amsgrad: bool = False
) -> optax.GradientTransformation:
    """Adam's scaling with torch's rule and torch's bias-correction precision.

    ``m_t = b1 m + (1-b1) g``, ``v_t = b2 v + (1-b2) g^2`` (from zero) and the
    update ``(m_t / (1 - b1^t)) / (sqrt(v') / sqrt(1 - b2^t) + eps)`` with
    ``v' = v_t``, or with ``amsgrad`` ``v' = max(v'_{t-1}, v_t)`` -- the running
    maximum of the *raw* second moment, bias-corrected afterwards with the
    current step's factor, as torch does.

    Differences from stock optax, the reason this transform exists:
    ``optax.scale_by_amsgrad`` keeps the maximum of the *bias-corrected*
    moments, ``max_s(v_s / (1 - b2^s))`` (or never corrects), which is a
    different algorithm; and ``optax.scale_by_adam`` evaluates
    ``1 - b2**t`` in float32 (see :func:`_one_minus_pow`), a systematic
    ~6e-6 relative deviation from torch per step for the default betas.
    """
    b1, b2, eps = float(b1), float(b2), float(eps)

    def init_fn(params):
        return TorchAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params),
            nu=optax.tree.zeros_like(params),
            nu_max=optax.tree.zeros_like(params) if amsgrad else None,
        )

    def update_fn(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu) if amsgrad else None
        count = optax.safe_increment(state.count)

        def scale(m, v):
            # Compute in at least float32 (torch's CPU kernels use float "opmath" for
            # half/bfloat16 tensors) and return the moment's dtype.
            dt = jnp.promote_types(m.dtype, jnp.float32)
            bc1 = _one_minus_pow(b1, count, dt)
            bc2_sqrt = jnp.sqrt(_one_minus_pow(b2, count, dt))
            u = (m.astype(dt) / bc1) / (jnp.sqrt(v.astype(dt)) / bc2_sqrt + eps)
            return u.astype(m.dtype)

        out = jax.tree.map(scale, mu, nu_max if amsgrad else nu)
        return out, TorchAdamState(count=count, mu=mu, nu=nu, nu_max=nu_max)

    return optax.GradientTransformation(init_fn, update_fn)


# --------------------------------------------------------------------------------------
# Argument checks (torch's, raising ValueError with torch's messages)
# --------------------------------------------------------------------------------------


def _check_lr(lr) -> None:
    if isinstance(lr, numbers.Real) and not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate: {lr}")


def _check_nonneg(value, what: str) -> None:
    if not 0.0 <= value:
        raise ValueError(f"Invalid {what}: {value}")


def _check_betas(betas) -> tuple[float, float]:
    b1, b2 = betas
    if not 0.0 <= b1 < 1.0:
        raise ValueError(f"Invalid beta parameter at index 0: {b1}")
    if not 0.0 <= b2 < 1.0:
        raise ValueError(f"Invalid beta parameter at index 1: {b2}")
    return float(b1), float(b2)


def _decay(weight_decay: float, mask) -> optax.GradientTransformation:
    if weight_decay == 0.0:
        return optax.identity()
    return optax.add_decayed_weights(weight_decay, mask)


# --------------------------------------------------------------------------------------
# Plain (non-injected) optimizers
# --------------------------------------------------------------------------------------


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    weight_decay_mask=None,
) -> optax.GradientTransformation:
    """``torch.optim.SGD`` as an optax chain (see :func:`create` for the semantics)."""
    _check_lr(learning_rate)
    _check_nonneg(momentum, "momentum value")
    _check_nonneg(weight_decay, "weight_decay value")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    parts = [_decay(weight_decay, weight_decay_mask)]
    if momentum != 0:
        if dampening == 0:
            # torch's buffer starts as the first gradient == trace starting from zero.
            parts.append(optax.trace(decay=momentum, nesterov=nesterov))
        else:
            parts.append(trace_with_dampening(momentum, dampening, nesterov))
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*parts)


def adam(
    learning_rate: ScalarOrSchedule,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    weight_decay_mask=None,
) -> optax.GradientTransformation:
    """``torch.optim.Adam`` (coupled L2 decay ``g += wd * p``) as an optax chain."""
    _check_lr(learning_rate)
    _check_nonneg(eps, "epsilon value")
    b1, b2 = _check_betas(betas)
    _check_nonneg(weight_decay, "weight_decay value")
    scale = scale_by_torch_adam(b1, b2, eps, amsgrad)
    return optax.chain(
        _decay(weight_decay, weight_decay_mask),
        scale,
        optax.scale_by_learning_rate(learning_rate),
    )


def adamw(
    learning_rate: ScalarOrSchedule,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    weight_decay_mask=None,
) -> optax.GradientTransformation:
    """``torch.optim.AdamW`` (decoupled decay ``p *= 1 - lr_t * wd``) as an optax chain."""
    _check_lr(learning_rate)
    _check_nonneg(eps, "epsilon value")
    b1, b2 = _check_betas(betas)
    _check_nonneg(weight_decay, "weight_decay value")
    scale = scale_by_torch_adam(b1, b2, eps, amsgrad)
    # p*(1 - lr*wd) - lr*u  ==  p - lr*(u + wd*p): decay added after the Adam scaling.
    return optax.chain(
        scale,
        _decay(weight_decay, weight_decay_mask),
        optax.scale_by_learning_rate(learning_rate),
    )


def rmsprop(
    learning_rate: ScalarOrSchedule,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    weight_decay_mask=None,
) -> optax.GradientTransformation:
    """``torch.optim.RMSprop`` (eps outside the sqrt, v starts at 0) as an optax chain."""
    _check_lr(learning_rate)
    _check_nonneg(eps, "epsilon value")
    _check_nonneg(momentum, "momentum value")
    _check_nonneg(weight_decay, "weight_decay value")
    _check_nonneg(alpha, "alpha value")
    if centered:
        scale = optax.scale_by_stddev(decay=alpha, eps=eps, initial_scale=0.0, eps_in_sqrt=False)
    else:
        scale = optax.scale_by_rms(decay=alpha, eps=eps, initial_scale=0.0, eps_in_sqrt=False)
    parts = [_decay(weight_decay, weight_decay_mask), scale]
    if momentum > 0:
        parts.append(optax.trace(decay=momentum))
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*parts)


# --------------------------------------------------------------------------------------
# Public factory
# --------------------------------------------------------------------------------------


def _resolve_lr(lr, schedule):
    if schedule is None:
        if lr is None:
            raise ValueError("create() needs lr (a float or a schedule) or schedule")
        return lr
    if not callable(schedule):
        raise TypeError(f"schedule must be callable (step -> lr), got {schedule!r}")
    if lr is None:
        return schedule
    if callable(lr):
        raise ValueError("pass the schedule either as lr or as schedule, not both")
    base = getattr(schedule, "base_lr", None)
    if base is not None and abs(float(lr) - base) > 1e-12 * max(1.0, abs(base)):
        raise ValueError(
            f"lr={lr} disagrees with the schedule's base lr {base}; build the schedule from the same lr"
        )
    return schedule


def create(
    name: str,
    *,
    lr: ScalarOrSchedule | None = None,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float | None = None,
    alpha: float = 0.99,
    centered: bool = False,
    amsgrad: bool = False,
    schedule: Callable | None = None,
    weight_decay_mask=None,
) -> optax.GradientTransformation:
    """Create a torch-equivalent optimizer as an optax ``GradientTransformation``.

    Args:
      name: ``"sgd"``, ``"adam"``, ``"adamw"`` or ``"rmsprop"`` (case-insensitive).
      lr: learning rate, a float or an optax schedule ``step -> lr`` (for
        example one from :mod:`jaxcnn.optim.schedules`).
      momentum: SGD / RMSprop momentum.
      dampening: SGD dampening (the first step is never dampened, as in torch).
      nesterov: SGD Nesterov momentum (``g + momentum * buf``).
      weight_decay: ``None`` means torch's default for the optimizer (0, or
        0.01 for AdamW).  Coupled L2 (``g += wd * p``) for SGD/Adam/RMSprop,
        decoupled (``p *= 1 - lr_t * wd``) for AdamW.
      betas: Adam/AdamW ``(beta1, beta2)``.
      eps: ``None`` means torch's default (1e-8 for Adam/AdamW/RMSprop).
      alpha: RMSprop smoothing constant.
      centered: centered RMSprop.
      amsgrad: Adam/AdamW AMSGrad variant (torch's rule).
      schedule: alternative to passing a schedule as ``lr``.  If ``lr`` is
        also given it must be a float, equal to the schedule's ``base_lr``
        when the schedule has one (those of :mod:`jaxcnn.optim.schedules`
        do, like torch where a scheduler starts from the optimizer's lr);
        the schedule then sets the learning rate.
      weight_decay_mask: optional pytree of bools (or callable params -> such
        a pytree) selecting the parameters that are decayed; equivalent to a
        torch param group with ``weight_decay=0`` for the others.  ``None``
        decays every parameter, as torch does with a single group.

    Options that the chosen optimizer does not have (e.g. ``betas`` for SGD)
    are ignored.  torch's argument checks raise ``ValueError`` (negative
    lr/momentum/weight decay/eps/alpha, betas outside ``[0, 1)``, Nesterov
    without momentum or with dampening).

    Returns:
      An ``optax.GradientTransformation`` built with
      ``optax.inject_hyperparams``: pass ``params`` to ``update`` (needed for
      weight decay and for the hyper-parameter dtype), and read the learning
      rate of the latest update with :func:`get_lr`.  Apply updates with
      ``optax.apply_updates`` after each ``update``; each ``update`` is one
      ``torch`` ``optimizer.step()`` followed by ``scheduler.step()``.
    """
    if not isinstance(name, str):
        raise TypeError(f"optimizer name must be a string, got {name!r}")
    key = name.lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")
    learning_rate = _resolve_lr(lr, schedule)
    defaults = TORCH_DEFAULTS[key]
    wd = defaults["weight_decay"] if weight_decay is None else float(weight_decay)
    eps_v = defaults.get("eps", 0.0) if eps is None else float(eps)

    if key == "sgd":

        def factory(learning_rate):
            return sgd(learning_rate, momentum, dampening, nesterov, wd, weight_decay_mask)

    elif key == "adam":

        def factory(learning_rate):
            return adam(learning_rate, betas, eps_v, wd, amsgrad, weight_decay_mask)

    elif key == "adamw":

        def factory(learning_rate):
            return adamw(learning_rate, betas, eps_v, wd, amsgrad, weight_decay_mask)

    else:

        def factory(learning_rate):
            return rmsprop(learning_rate, alpha, eps_v, wd, momentum, centered, weight_decay_mask)

    # Build once eagerly so that torch's argument checks fire here, not at init/update.
    factory(learning_rate if not callable(learning_rate) else 0.0)
    return optax.inject_hyperparams(factory)(learning_rate=learning_rate)


def get_lr(opt_state) -> jax.Array:
    """Learning rate used by the latest update of an optimizer made by :func:`create`.

    Before the first update it is the learning rate the first update will use.
    (torch's ``param_groups[0]["lr"]`` after ``scheduler.step()`` is one step
    ahead of this: it is the lr of the *next* update.)  Works on the state of
    :func:`create`'s transform also when wrapped in other optax combinators,
    provided it holds exactly one injected ``learning_rate``.
    """
    # ``hyperparams_states`` also has a "learning_rate" entry (the schedule's own state,
    # a NamedTuple); keep only the value itself.
    lr = optax.tree.get(
        opt_state, "learning_rate", filtering=lambda _path, v: isinstance(v, jax.Array)
    )
    if lr is None:
        raise ValueError("no injected learning_rate in this optimizer state (was it made by create()?)")
    return lr
