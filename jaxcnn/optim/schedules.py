"""Per-step learning-rate schedules equal to ``torch.optim.lr_scheduler``.

Every function here returns a :class:`Schedule`: a callable ``step -> lr`` that
is a valid optax schedule (it can be passed as ``learning_rate`` to any optax
transform, or as ``lr=``/``schedule=`` to :func:`jaxcnn.optim.create`).

Step convention
---------------
``schedule(t)`` is the learning rate that torch's optimizer uses for its
``t``-th ``optimizer.step()`` (counting from 0) when the matching torch
scheduler is built on that optimizer and ``scheduler.step()`` is called once
after every ``optimizer.step()``.  optax evaluates a schedule at the update
count *before* incrementing it, so the first update uses ``schedule(0)``,
exactly as torch uses the initial lr for its first step.

Torch computes most schedules recursively ("chainable form"); these are the
closed forms of the same recurrences (torch's own ``_get_closed_form_lr``),
evaluated in float32.  They agree with torch up to float32 rounding (about
1e-7 relative), including torch's less obvious behaviours:

* ``cosine_annealing`` is *not* clamped at ``t_max``: like torch's
  ``CosineAnnealingLR`` it keeps following the cosine, which rises again
  towards ``lr`` after ``t_max`` (period ``2 * t_max``).  ``optax``'s
  ``cosine_decay_schedule`` instead stays at its end value.
* ``multistep_lr`` counts repeated milestones repeatedly (torch uses a
  ``Counter``), so ``milestones=[5, 5]`` multiplies by ``gamma**2`` at step 5.
* ``sequential`` restarts the count of each later schedule at its milestone,
  like torch's ``SequentialLR``.

Epoch-based configuration
-------------------------
Torch scripts often call ``scheduler.step()`` once per *epoch*.
:func:`epochs_to_steps` and :func:`from_epochs` convert epoch-denominated
parameters to step-denominated ones, and :func:`per_epoch` turns any per-step
schedule into one that only changes at epoch boundaries.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import numbers
from collections.abc import Callable, Sequence

import jax.numpy as jnp
import optax

__all__ = [
    "Schedule",
    "constant",
    "step_lr",
    "multistep_lr",
    "cosine_annealing",
    "linear_warmup",
    "sequential",
    "warmup_cosine",
    "per_epoch",
    "epochs_to_steps",
    "from_epochs",
    "SCHEDULE_KINDS",
]

SCHEDULE_KINDS = ("constant", "step", "multistep", "cosine")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule ``step -> lr`` with torch semantics.

    Instances are plain callables and therefore optax schedules.  ``base_lr``
    is the learning rate the schedule was built from (torch's
    ``initial_lr``/``base_lrs``); :func:`jaxcnn.optim.create` uses it to
    check that an explicit ``lr`` agrees with a ``schedule``.  ``name`` is a
    short human-readable description (for logs).
    """

    fn: Callable[[jnp.ndarray], jnp.ndarray]
    base_lr: float | None
    name: str

    def __call__(self, step):
        """Return the learning rate (float32 array) for update ``step`` (0-based)."""
        return self.fn(jnp.asarray(step))


def _check_lr(lr) -> float:
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(f"lr must be a real number, got {lr!r}")
    if not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate: {lr}")
    return float(lr)


def _check_positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"{what} must be positive, got {value}")
    return int(value)


def _as_f32(step):
    return jnp.asarray(step).astype(jnp.float32)


def constant(lr: float) -> Schedule:
    """Constant schedule ``lr`` (torch: no scheduler at all)."""
    lr = _check_lr(lr)
    return Schedule(lambda step: jnp.full(jnp.shape(step), lr, jnp.float32), lr, f"constant({lr})")


def step_lr(lr: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """torch ``StepLR``: ``lr * gamma ** (t // step_size)``.

    Args:
      lr: initial learning rate (the optimizer's lr in torch).
      step_size: period of the decay, in steps.
      gamma: multiplicative factor applied every ``step_size`` steps.
    """
    lr = _check_lr(lr)
    step_size = _check_positive_int(step_size, "step_size")
    gamma = float(gamma)

    def fn(step):
        k = jnp.floor_divide(jnp.asarray(step).astype(jnp.int32), step_size)
        return jnp.float32(lr) * jnp.power(jnp.float32(gamma), k.astype(jnp.float32))

    return Schedule(fn, lr, f"step_lr({lr}, step_size={step_size}, gamma={gamma})")


def multistep_lr(lr: float, milestones: Sequence[int], gamma: float = 0.1) -> Schedule:
    """torch ``MultiStepLR``: ``lr * gamma ** #{m in milestones : m <= t}``.

    Milestones need not be sorted; repeated milestones count once per
    occurrence, as in torch (which stores them in a ``Counter``).
    """
    lr = _check_lr(lr)
    ms = []
    for m in milestones:
        if isinstance(m, bool) or not isinstance(m, numbers.Integral):
            raise TypeError(f"milestones must be integers, got {m!r}")
        if m < 0:
            raise ValueError(f"milestones must be non-negative, got {m}")
        ms.append(int(m))
    ms_sorted = tuple(sorted(ms))
    gamma = float(gamma)
    counts = collections.Counter(ms_sorted)
    # optax's piecewise-constant schedule multiplies by ``scale`` for count >= boundary,
    # which is torch's ``bisect_right`` rule; repeated milestones become gamma**count.
    inner = optax.piecewise_constant_schedule(
        init_value=lr, boundaries_and_scales={m: gamma**c for m, c in counts.items()}
    )

    def fn(step):
        return jnp.asarray(inner(jnp.asarray(step)), jnp.float32)

    return Schedule(fn, lr, f"multistep_lr({lr}, milestones={list(ms_sorted)}, gamma={gamma})")


def cosine_annealing(lr: float, t_max: int, eta_min: float = 0.0) -> Schedule:
    """torch ``CosineAnnealingLR``: ``eta_min + (lr - eta_min) * (1 + cos(pi t / t_max)) / 2``.

    Not clamped: after ``t_max`` steps the learning rate rises again, exactly
    as torch's scheduler does when stepped past ``T_max``.
    """
    lr = _check_lr(lr)
    t_max = _check_positive_int(t_max, "t_max")
    eta_min = float(eta_min)

    def fn(step):
        # (1 + cos(pi t / T)) / 2 == sin(pi (T - t) / (2T))**2.  Reducing t modulo the
        # period 2T and taking d = T - t in integers keeps the float32 argument exact-ish
        # and avoids the cancellation of 1 + cos(.) near the minimum (t ~ T), where the
        # naive float32 form loses ~1e-5 relative accuracy.
        t = jnp.remainder(jnp.asarray(step).astype(jnp.int32), 2 * t_max)
        d = _as_f32(t_max - t)
        factor = jnp.square(jnp.sin(jnp.float32(math.pi / (2 * t_max)) * d))
        return jnp.float32(eta_min) + jnp.float32(lr - eta_min) * factor

    return Schedule(fn, lr, f"cosine_annealing({lr}, t_max={t_max}, eta_min={eta_min})")


def linear_warmup(
    lr: float,
    warmup_steps: int,
    start_factor: float = 1.0 / 3,
    end_factor: float = 1.0,
) -> Schedule:
    """torch ``LinearLR``: factor goes linearly from ``start_factor`` to ``end_factor``.

    ``lr * (start_factor + (end_factor - start_factor) * min(t, warmup_steps) / warmup_steps)``;
    constant at ``lr * end_factor`` from step ``warmup_steps`` on.  The defaults
    are torch's (``start_factor=1/3``, ``end_factor=1``); ``warmup_steps`` is
    torch's ``total_iters``.  torch's argument checks apply:
    ``0 < start_factor <= 1`` and ``0 <= end_factor <= 1``.
    """
    lr = _check_lr(lr)
    warmup_steps = _check_positive_int(warmup_steps, "warmup_steps")
    if start_factor > 1.0 or start_factor <= 0:
        raise ValueError(
            "Starting multiplicative factor expected to be greater than 0 and less or equal to 1."
        )
    if end_factor > 1.0 or end_factor < 0:
        raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
    sf, ef = float(start_factor), float(end_factor)

    def fn(step):
        t = jnp.minimum(jnp.asarray(step).astype(jnp.int32), warmup_steps)
        frac = _as_f32(t) / jnp.float32(warmup_steps)
        return jnp.float32(lr) * (jnp.float32(sf) + jnp.float32(ef - sf) * frac)

    return Schedule(
        fn, lr, f"linear_warmup({lr}, warmup_steps={warmup_steps}, start_factor={sf}, end_factor={ef})"
    )


def sequential(schedules: Sequence[Callable], milestones: Sequence[int]) -> Schedule:
    """torch ``SequentialLR``: use ``schedules[i]`` between consecutive milestones.

    At milestone ``milestones[i-1]`` schedule ``i`` starts from its own step 0
    (torch resets the incoming scheduler with ``_update_lr(0)``), i.e.
    ``lr(t) = schedules[i](t - milestones[i-1])``.  Implemented with
    ``optax.join_schedules``.  Milestones must be strictly increasing and
    there must be exactly ``len(schedules) - 1`` of them (torch's check).
    """
    schedules = list(schedules)
    milestones = [int(m) for m in milestones]
    if len(schedules) < 1:
        raise ValueError("sequential expects at least one schedule")
    if len(milestones) != len(schedules) - 1:
        raise ValueError(
            "Sequential Schedulers expects number of schedulers provided to be one more than the "
            f"number of milestone points, but got number of schedulers {len(schedules)} and the "
            f"number of milestones to be equal to {len(milestones)}"
        )
    if any(b <= a for a, b in zip(milestones, milestones[1:])) or any(m < 0 for m in milestones):
        raise ValueError(f"milestones must be non-negative and strictly increasing, got {milestones}")
    joined = optax.join_schedules(schedules, milestones)

    def fn(step):
        return jnp.asarray(joined(jnp.asarray(step).astype(jnp.int32)), jnp.float32)

    base = getattr(schedules[0], "base_lr", None)
    names = ", ".join(getattr(s, "name", repr(s)) for s in schedules)
    return Schedule(fn, base, f"sequential([{names}], milestones={milestones})")


def warmup_cosine(
    lr: float,
    warmup_steps: int,
    total_steps: int,
    start_factor: float = 1.0 / 3,
    eta_min: float = 0.0,
) -> Schedule:
    """Linear warm-up then cosine annealing, as torch's usual recipe.

    Equal to ``SequentialLR(opt, [LinearLR(opt, start_factor, total_iters=warmup_steps),
    CosineAnnealingLR(opt, T_max=total_steps - warmup_steps, eta_min)],
    milestones=[warmup_steps])``.  ``warmup_steps=0`` gives plain cosine
    annealing over ``total_steps``.
    """
    lr = _check_lr(lr)
    total_steps = _check_positive_int(total_steps, "total_steps")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, numbers.Integral) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a non-negative integer, got {warmup_steps!r}")
    if warmup_steps >= total_steps:
        raise ValueError(f"warmup_steps ({warmup_steps}) must be smaller than total_steps ({total_steps})")
    cos = cosine_annealing(lr, total_steps - warmup_steps, eta_min)
    if warmup_steps == 0:
        return cos
    warm = linear_warmup(lr, warmup_steps, start_factor=start_factor)
    return sequential([warm, cos], [warmup_steps])


def per_epoch(schedule: Callable, steps_per_epoch: int) -> Schedule:
    """Hold ``schedule`` constant within each epoch: ``lr(t) = schedule(t // steps_per_epoch)``.

    This is what torch does when ``scheduler.step()`` is called once per epoch
    while the optimizer steps once per batch: the returned per-step schedule
    equals that torch setup for every optimizer step.
    """
    steps_per_epoch = _check_positive_int(steps_per_epoch, "steps_per_epoch")

    def fn(step):
        epoch = jnp.floor_divide(jnp.asarray(step).astype(jnp.int32), steps_per_epoch)
        return jnp.asarray(schedule(epoch), jnp.float32)

    name = getattr(schedule, "name", repr(schedule))
    return Schedule(fn, getattr(schedule, "base_lr", None), f"per_epoch({name}, {steps_per_epoch})")


def epochs_to_steps(epochs, steps_per_epoch: int):
    """Convert an epoch count (int) or a sequence of them to optimizer steps.

    ``epochs_to_steps(3, 100) == 300``; ``epochs_to_steps([30, 60], 100) == [3000, 6000]``.
    Non-negative integers only.
    """
    steps_per_epoch = _check_positive_int(steps_per_epoch, "steps_per_epoch")

    def one(e):
        if isinstance(e, bool) or not isinstance(e, numbers.Integral):
            raise TypeError(f"epoch counts must be integers, got {e!r}")
        if e < 0:
            raise ValueError(f"epoch counts must be non-negative, got {e}")
        return int(e) * steps_per_epoch

    if isinstance(epochs, Sequence) and not isinstance(epochs, str):
        return [one(e) for e in epochs]
    return one(epochs)


def from_epochs(
    kind: str,
    lr: float,
    *,
    steps_per_epoch: int,
    epochs: int | None = None,
    step_size: int | None = None,
    milestones: Sequence[int] | None = None,
    gamma: float = 0.1,
    eta_min: float = 0.0,
    warmup_epochs: int = 0,
    warmup_start_factor: float = 1.0 / 3,
) -> Schedule:
    """Build a per-step schedule from epoch-denominated parameters (for the trainer).

    Args:
      kind: ``"constant"``, ``"step"`` (needs ``step_size``), ``"multistep"``
        (needs ``milestones``) or ``"cosine"`` (needs ``epochs``).
      lr: base learning rate.
      steps_per_epoch: optimizer steps per epoch; every epoch quantity is
        multiplied by it (:func:`epochs_to_steps`).
      epochs: total training epochs; the cosine period is
        ``epochs - warmup_epochs`` epochs.
      step_size, milestones, gamma: ``StepLR``/``MultiStepLR`` parameters, in
        epochs.
      eta_min: cosine floor.
      warmup_epochs: if positive, a ``LinearLR`` warm-up of that many epochs
        (from ``warmup_start_factor * lr`` to ``lr``) comes first, and the main
        schedule's count starts at the end of the warm-up (torch
        ``SequentialLR``), so ``step_size``/``milestones`` are then counted
        from the end of the warm-up.

    For ``step`` and ``multistep`` (without warm-up) the result is *identical*
    at every step to torch stepping ``StepLR``/``MultiStepLR`` once per epoch.
    For ``cosine`` and warm-ups the result is the smooth per-step version,
    equal to torch's per-epoch values at epoch boundaries; wrap the
    epoch-based schedule with :func:`per_epoch` instead if you want torch's
    staircase.
    """
    kind = kind.lower()
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"unknown schedule kind {kind!r}; expected one of {SCHEDULE_KINDS}")
    spe = _check_positive_int(steps_per_epoch, "steps_per_epoch")
    warm_steps = epochs_to_steps(warmup_epochs, spe)
    if kind == "constant":
        main = constant(lr)
    elif kind == "step":
        if step_size is None:
            raise ValueError("kind='step' needs step_size (epochs)")
        main = step_lr(lr, epochs_to_steps(step_size, spe), gamma)
    elif kind == "multistep":
        if milestones is None:
            raise ValueError("kind='multistep' needs milestones (epochs)")
        main = multistep_lr(lr, epochs_to_steps(list(milestones), spe), gamma)
    else:  # cosine
        if epochs is None:
            raise ValueError("kind='cosine' needs epochs")
        total = epochs_to_steps(epochs, spe)
        if warm_steps >= total:
            raise ValueError(f"warmup_epochs ({warmup_epochs}) must be smaller than epochs ({epochs})")
        main = cosine_annealing(lr, total - warm_steps, eta_min)
    if warm_steps == 0:
        return main
    warm = linear_warmup(lr, warm_steps, start_factor=warmup_start_factor)
    return sequential([warm, main], [warm_steps])
