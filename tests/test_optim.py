"""Unit tests for ``jaxcnn.optim``: argument checks, defaults, lr read-out and schedule values.

Schedule values are compared against ``torch.optim.lr_scheduler`` stepped once per
optimizer step (torch is the reference, never hard-coded numbers), with particular
attention to the boundaries: milestone steps, ``t_max`` and beyond, the end of the
warm-up, and the switch point of ``SequentialLR``.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch")
from torch.optim import lr_scheduler as TL  # noqa: E402

from jaxcnn import optim  # noqa: E402
from jaxcnn.optim import schedules as S  # noqa: E402

LR_RTOL = 1e-6  # float32 schedules vs torch's float64 recurrences


def _dummy_param():
    return [torch.nn.Parameter(torch.zeros(2))]


def torch_lrs(make_sched, steps: int, lr: float = 0.1):
    """lr used by each of ``steps`` optimizer steps with scheduler.step() after each."""
    opt = torch.optim.SGD(_dummy_param(), lr=lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = make_sched(opt)
        out = []
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    return np.asarray(out)


def torch_lrs_per_epoch(make_sched, epochs: int, steps_per_epoch: int, lr: float = 0.1):
    """Same, with scheduler.step() once per epoch of ``steps_per_epoch`` optimizer steps."""
    opt = torch.optim.SGD(_dummy_param(), lr=lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = make_sched(opt)
        out = []
        for _ in range(epochs):
            for _ in range(steps_per_epoch):
                out.append(opt.param_groups[0]["lr"])
                opt.step()
            sched.step()
    return np.asarray(out)


def ours(schedule, steps: int):
    return np.asarray([float(schedule(t)) for t in range(steps)])


# ----------------------------------------------------------------------------------------
# Optimizer argument validation: same inputs rejected by torch and by us
# ----------------------------------------------------------------------------------------

T = torch.optim
INVALID = [
    ("sgd", T.SGD, dict(lr=-0.1)),
    ("sgd", T.SGD, dict(lr=0.1, momentum=-0.5)),
    ("sgd", T.SGD, dict(lr=0.1, weight_decay=-1e-4)),
    ("sgd", T.SGD, dict(lr=0.1, nesterov=True)),  # nesterov without momentum
    ("sgd", T.SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)),
    ("adam", T.Adam, dict(lr=-1e-3)),
    ("adam", T.Adam, dict(lr=1e-3, eps=-1e-8)),
    ("adam", T.Adam, dict(lr=1e-3, betas=(1.0, 0.999))),
    ("adam", T.Adam, dict(lr=1e-3, betas=(-0.1, 0.999))),
    ("adam", T.Adam, dict(lr=1e-3, betas=(0.9, 1.0))),
    ("adam", T.Adam, dict(lr=1e-3, weight_decay=-0.1)),
    ("adamw", T.AdamW, dict(lr=1e-3, betas=(0.9, 1.5))),
    ("adamw", T.AdamW, dict(lr=1e-3, weight_decay=-0.01)),
    ("adamw", T.AdamW, dict(lr=1e-3, eps=-1.0)),
    ("rmsprop", T.RMSprop, dict(lr=-0.01)),
    ("rmsprop", T.RMSprop, dict(lr=0.01, alpha=-0.5)),
    ("rmsprop", T.RMSprop, dict(lr=0.01, eps=-1e-8)),
    ("rmsprop", T.RMSprop, dict(lr=0.01, momentum=-0.9)),
    ("rmsprop", T.RMSprop, dict(lr=0.01, weight_decay=-0.1)),
]

VALID_EDGES = [
    ("sgd", T.SGD, dict(lr=0.0, momentum=0.9, nesterov=True)),
    ("sgd", T.SGD, dict(lr=0.1, momentum=0.0, dampening=0.5)),  # dampening ignored w/o momentum
    ("adam", T.Adam, dict(lr=1e-3, betas=(0.0, 0.0), eps=0.0)),
    ("adamw", T.AdamW, dict(lr=1e-3, weight_decay=0.0, amsgrad=True)),
    ("rmsprop", T.RMSprop, dict(lr=0.01, alpha=0.0, centered=True, momentum=0.0)),
]


@pytest.mark.parametrize(("name", "torch_cls", "kwargs"), INVALID)
def test_invalid_arguments_rejected_like_torch(name, torch_cls, kwargs):
    with pytest.raises(ValueError):
        torch_cls(_dummy_param(), **kwargs)
    with pytest.raises(ValueError):
        optim.create(name, **kwargs)


@pytest.mark.parametrize(("name", "torch_cls", "kwargs"), VALID_EDGES)
def test_edge_arguments_accepted_like_torch(name, torch_cls, kwargs):
    torch_cls(_dummy_param(), **kwargs)
    tx = optim.create(name, **kwargs)
    params = {"p": jnp.ones(3)}
    updates, _ = tx.update({"p": jnp.full(3, 0.5)}, tx.init(params), params)
    assert np.all(np.isfinite(np.asarray(updates["p"])))


def test_unknown_optimizer_and_name_case():
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.create("lamb", lr=0.1)
    with pytest.raises(TypeError):
        optim.create(None, lr=0.1)
    params = {"p": jnp.arange(3.0)}
    g = {"p": jnp.ones(3)}
    a = optim.create("AdamW", lr=0.1)
    b = optim.create("adamw", lr=0.1)
    ua, _ = a.update(g, a.init(params), params)
    ub, _ = b.update(g, b.init(params), params)
    np.testing.assert_array_equal(ua["p"], ub["p"])


def test_lr_and_schedule_resolution():
    sched = S.cosine_annealing(0.1, 10)
    with pytest.raises(ValueError, match="needs lr"):
        optim.create("sgd")
    with pytest.raises(ValueError, match="not both"):
        optim.create("sgd", lr=sched, schedule=sched)
    with pytest.raises(ValueError, match="disagrees"):
        optim.create("sgd", lr=0.2, schedule=sched)
    with pytest.raises(TypeError):
        optim.create("sgd", lr=0.1, schedule=0.1)
    for tx in (
        optim.create("sgd", lr=0.1, schedule=sched),
        optim.create("sgd", schedule=sched),
        optim.create("sgd", lr=sched),
    ):
        params = {"p": jnp.zeros(2)}
        state = tx.init(params)
        for _ in range(3):
            _, state = tx.update({"p": jnp.ones(2)}, state, params)
        np.testing.assert_allclose(float(optim.get_lr(state)), float(sched(2)), rtol=1e-7)


def test_torch_defaults_are_torchs():
    """eps / weight_decay defaults come from torch's own constructors, not from memory."""
    for name, cls in (("sgd", T.SGD), ("adam", T.Adam), ("adamw", T.AdamW), ("rmsprop", T.RMSprop)):
        defaults = cls(_dummy_param(), lr=0.1).defaults
        for key, value in optim.TORCH_DEFAULTS[name].items():
            assert defaults[key] == value, (name, key)
        if "eps" in defaults:
            assert "eps" in optim.TORCH_DEFAULTS[name]


def test_adamw_default_decay_matches_torch_on_zero_gradient():
    """With a zero gradient Adam's step is 0, leaving only AdamW's default decoupled decay."""
    p0 = np.linspace(-1.0, 1.0, 6, dtype=np.float32)
    tp = torch.nn.Parameter(torch.tensor(p0))
    topt = T.AdamW([tp], lr=0.5)
    tx = optim.create("adamw", lr=0.5)
    params = {"p": jnp.asarray(p0)}
    state = tx.init(params)
    for _ in range(3):
        tp.grad = torch.zeros_like(tp)
        topt.step()
        updates, state = tx.update({"p": jnp.zeros(6)}, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(np.asarray(params["p"]), tp.detach().numpy(), rtol=1e-6)
    assert not np.allclose(np.asarray(params["p"]), p0)  # the decay did happen
    plain = optim.create("adam", lr=0.5)
    u, _ = plain.update({"p": jnp.zeros(6)}, plain.init({"p": jnp.asarray(p0)}), {"p": jnp.asarray(p0)})
    np.testing.assert_array_equal(np.asarray(u["p"]), 0.0)  # Adam has no default decay


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_low_precision_params_keep_their_dtype(name):
    """bfloat16 parameters get bfloat16 updates close to the float32 ones (no silent upcast)."""
    p32 = {"w": jnp.linspace(-1.0, 1.0, 8)}
    g32 = {"w": jnp.linspace(0.5, -0.3, 8)}
    p16, g16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), (p32, g32))
    kwargs = dict(lr=0.1, weight_decay=0.01, momentum=0.5) if name in ("sgd", "rmsprop") else dict(lr=0.1)
    tx = optim.create(name, **kwargs)
    s16, s32 = tx.init(p16), tx.init(p32)
    for _ in range(3):
        u16, s16 = tx.update(g16, s16, p16)
        u32, s32 = tx.update(g32, s32, p32)
    assert u16["w"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(u16["w"], np.float32), np.asarray(u32["w"]), rtol=3e-2, atol=1e-3)


def test_inapplicable_options_are_ignored():
    params = {"p": jnp.arange(4.0)}
    g = {"p": jnp.asarray([0.1, -0.2, 0.3, -0.4])}
    plain = optim.create("sgd", lr=0.1)
    extra = optim.create("sgd", lr=0.1, betas=(0.5, 0.5), eps=1.0, alpha=0.1, amsgrad=True, centered=True)
    u1, _ = plain.update(g, plain.init(params), params)
    u2, _ = extra.update(g, extra.init(params), params)
    np.testing.assert_array_equal(u1["p"], u2["p"])


# ----------------------------------------------------------------------------------------
# get_lr and the custom transforms
# ----------------------------------------------------------------------------------------


def test_get_lr_tracks_schedule_and_works_under_jit():
    sched = S.step_lr(0.3, 2, gamma=0.5)
    tx = optim.create("rmsprop", lr=sched, momentum=0.5)
    params = {"w": jnp.ones((2, 2))}
    state = tx.init(params)
    assert float(optim.get_lr(state)) == pytest.approx(float(sched(0)))

    @jax.jit
    def step(state):
        _, state = tx.update({"w": jnp.ones((2, 2))}, state, params)
        return state, optim.get_lr(state)

    seen = []
    for _ in range(6):
        state, lr = step(state)
        seen.append(float(lr))
    np.testing.assert_allclose(seen, ours(sched, 6), rtol=1e-7)
    # Also found when the optimizer is wrapped in another combinator.
    wrapped = optax.chain(optax.clip_by_global_norm(1.0), tx)
    assert float(optim.get_lr(wrapped.init(params))) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        optim.get_lr(optax.sgd(0.1).init(params))


def test_trace_with_dampening_first_step_is_undampened():
    tx = optim.trace_with_dampening(momentum=0.9, dampening=0.5)
    params = {"p": jnp.zeros(3)}
    state = tx.init(params)
    g1, g2 = jnp.asarray([1.0, -2.0, 3.0]), jnp.asarray([0.5, 0.5, -1.0])
    u1, state = tx.update({"p": g1}, state)
    u2, state = tx.update({"p": g2}, state)
    np.testing.assert_allclose(u1["p"], g1)
    np.testing.assert_allclose(u2["p"], 0.9 * g1 + 0.5 * g2, rtol=1e-7)
    nest = optim.trace_with_dampening(momentum=0.9, dampening=0.5, nesterov=True)
    s = nest.init(params)
    u, _ = nest.update({"p": g1}, s)
    np.testing.assert_allclose(u["p"], g1 + 0.9 * g1, rtol=1e-7)


def test_torch_adam_bias_correction_is_float64_accurate():
    """The first Adam step is exactly lr * g / (|g| + eps * sqrt(1 - b2)) in float64."""
    g = np.asarray([1e-3, -0.7, 2.5], np.float32)
    for b1, b2 in ((0.9, 0.999), (0.9, 0.9999), (0.5, 0.0), (0.0, 0.5)):
        tx = optim.scale_by_torch_adam(b1, b2, eps=1e-8)
        u, _ = tx.update({"p": jnp.asarray(g)}, tx.init({"p": jnp.zeros(3)}))
        g64 = g.astype(np.float64)
        m_hat = (1 - b1) * g64 / (1 - b1)
        denom = np.sqrt((1 - b2) * g64**2) / math.sqrt(1 - b2) + 1e-8
        np.testing.assert_allclose(np.asarray(u["p"]), m_hat / denom, rtol=3e-7)


# ----------------------------------------------------------------------------------------
# Schedules vs torch.optim.lr_scheduler
# ----------------------------------------------------------------------------------------

SCHEDULE_PAIRS = {
    "step_1": (S.step_lr(0.1, 1, gamma=0.5), lambda o: TL.StepLR(o, 1, gamma=0.5), 12),
    "step_3": (S.step_lr(0.1, 3), lambda o: TL.StepLR(o, 3), 13),
    "step_gamma0": (S.step_lr(0.1, 4, gamma=0.0), lambda o: TL.StepLR(o, 4, gamma=0.0), 9),
    "multistep": (
        S.multistep_lr(0.1, [9, 3, 6, 6], gamma=0.3),
        lambda o: TL.MultiStepLR(o, [9, 3, 6, 6], gamma=0.3),
        14,
    ),
    "multistep_at_0": (
        S.multistep_lr(0.1, [0, 2], gamma=0.5),
        lambda o: TL.MultiStepLR(o, [0, 2], gamma=0.5),
        5,
    ),
    "cosine": (S.cosine_annealing(0.1, 5), lambda o: TL.CosineAnnealingLR(o, 5), 23),
    "cosine_eta_min": (
        S.cosine_annealing(0.1, 7, eta_min=0.02),
        lambda o: TL.CosineAnnealingLR(o, 7, eta_min=0.02),
        30,
    ),
    "cosine_tmax1": (S.cosine_annealing(0.1, 1), lambda o: TL.CosineAnnealingLR(o, 1), 6),
    "linear_default": (S.linear_warmup(0.1, 5), lambda o: TL.LinearLR(o), 9),
    "linear": (
        S.linear_warmup(0.1, 4, start_factor=0.01, end_factor=0.5),
        lambda o: TL.LinearLR(o, start_factor=0.01, end_factor=0.5, total_iters=4),
        8,
    ),
    "linear_1": (
        S.linear_warmup(0.1, 1, start_factor=0.25),
        lambda o: TL.LinearLR(o, start_factor=0.25, total_iters=1),
        4,
    ),
    "warmup_cosine": (
        S.warmup_cosine(0.1, 4, 14, start_factor=0.1, eta_min=1e-3),
        lambda o: TL.SequentialLR(
            o,
            [TL.LinearLR(o, 0.1, total_iters=4), TL.CosineAnnealingLR(o, 10, eta_min=1e-3)],
            milestones=[4],
        ),
        30,
    ),
    "warmup_cosine_no_warmup": (
        S.warmup_cosine(0.1, 0, 8),
        lambda o: TL.CosineAnnealingLR(o, 8),
        10,
    ),
    # Warm-up shorter than its milestone, so the LinearLR plateau is visible.
    "sequential_linear_step": (
        S.sequential([S.linear_warmup(0.1, 2, start_factor=0.5), S.step_lr(0.1, 3, 0.5)], [4]),
        lambda o: TL.SequentialLR(
            o, [TL.LinearLR(o, 0.5, total_iters=2), TL.StepLR(o, 3, 0.5)], milestones=[4]
        ),
        14,
    ),
    "sequential_three": (
        S.sequential(
            [S.linear_warmup(0.1, 3, 0.2), S.cosine_annealing(0.1, 4), S.multistep_lr(0.1, [1, 3])],
            [3, 7],
        ),
        lambda o: TL.SequentialLR(
            o,
            [TL.LinearLR(o, 0.2, total_iters=3), TL.CosineAnnealingLR(o, 4), TL.MultiStepLR(o, [1, 3])],
            milestones=[3, 7],
        ),
        13,
    ),
}


@pytest.mark.parametrize("key", list(SCHEDULE_PAIRS))
def test_schedule_matches_torch_scheduler(key):
    sched, make_torch, steps = SCHEDULE_PAIRS[key]
    ref = torch_lrs(make_torch, steps)
    np.testing.assert_allclose(ours(sched, steps), ref, rtol=LR_RTOL, atol=1e-12)
    # vectorised and jitted evaluation give the same values
    np.testing.assert_allclose(np.asarray(jax.jit(sched)(jnp.arange(steps))), ref, rtol=LR_RTOL, atol=1e-12)


def test_schedule_comparison_is_sensitive():
    """optax's stock cosine (clamped) and an off-by-one StepLR do not pass the same check."""
    ref = torch_lrs(lambda o: TL.CosineAnnealingLR(o, 5), 12)
    assert not np.allclose(ours(optax.cosine_decay_schedule(0.1, 5), 12), ref, rtol=LR_RTOL, atol=1e-12)
    ref = torch_lrs(lambda o: TL.StepLR(o, 3), 10)
    shifted = S.step_lr(0.1, 3)
    assert not np.allclose([float(shifted(t + 1)) for t in range(10)], ref, rtol=LR_RTOL, atol=1e-12)


def test_cosine_stays_accurate_far_into_training():
    """Closed form in float64 (torch's _get_closed_form_lr) at huge step counts and near the minimum."""
    lr, t_max, eta_min = 0.1, 1000, 1e-4
    sched = S.cosine_annealing(lr, t_max, eta_min)
    ts = np.concatenate([np.arange(995, 1006), 10_000_000 + np.arange(-3, 4), [2 * t_max - 1]])
    got = np.asarray(sched(jnp.asarray(ts, jnp.int32)), np.float64)
    want = eta_min + (lr - eta_min) * (1 + np.cos(np.pi * ts / t_max)) / 2
    np.testing.assert_allclose(got, want, rtol=LR_RTOL)


def test_schedule_argument_checks():
    for bad in (
        lambda: S.step_lr(0.1, 0),
        lambda: S.step_lr(-0.1, 3),
        lambda: S.cosine_annealing(0.1, 0),
        lambda: S.multistep_lr(0.1, [3, -1]),
        lambda: S.linear_warmup(0.1, 0),
        lambda: S.warmup_cosine(0.1, 10, 10),
        lambda: S.sequential([S.constant(0.1), S.constant(0.2)], [5, 6]),
        lambda: S.sequential([S.constant(0.1), S.constant(0.2), S.constant(0.3)], [6, 5]),
        lambda: S.epochs_to_steps(-1, 10),
        lambda: S.epochs_to_steps(1, 0),
    ):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(TypeError):
        S.step_lr(0.1, 2.5)
    # LinearLR's factor checks are torch's own: both reject the same values.
    for sf, ef in ((0.0, 1.0), (1.5, 1.0), (0.5, 1.2), (0.5, -0.1)):
        with pytest.raises(ValueError):
            TL.LinearLR(torch.optim.SGD(_dummy_param(), lr=0.1), start_factor=sf, end_factor=ef)
        with pytest.raises(ValueError):
            S.linear_warmup(0.1, 3, start_factor=sf, end_factor=ef)
    # SequentialLR's milestone-count check, likewise.
    opt = torch.optim.SGD(_dummy_param(), lr=0.1)
    with pytest.raises(ValueError):
        TL.SequentialLR(opt, [TL.StepLR(opt, 2), TL.StepLR(opt, 3)], milestones=[1, 2])
    with pytest.raises(ValueError):
        S.sequential([S.step_lr(0.1, 2), S.step_lr(0.1, 3)], [1, 2])


# ----------------------------------------------------------------------------------------
# Epoch-based configuration
# ----------------------------------------------------------------------------------------


def test_epochs_to_steps():
    assert S.epochs_to_steps(3, 7) == 21
    assert S.epochs_to_steps([0, 2, 5], 4) == [0, 8, 20]
    with pytest.raises(TypeError):
        S.epochs_to_steps(1.5, 4)


@pytest.mark.parametrize(
    ("kind", "kwargs", "make_torch"),
    [
        ("step", dict(step_size=2, gamma=0.5), lambda o: TL.StepLR(o, 2, 0.5)),
        ("multistep", dict(milestones=[1, 4], gamma=0.2), lambda o: TL.MultiStepLR(o, [1, 4], 0.2)),
        ("constant", {}, lambda o: TL.StepLR(o, 10_000)),
    ],
)
def test_from_epochs_step_kinds_equal_torch_stepped_per_epoch(kind, kwargs, make_torch):
    """StepLR/MultiStepLR stepped once per epoch == our per-step schedule at *every* step."""
    spe, epochs = 5, 7
    sched = S.from_epochs(kind, 0.1, steps_per_epoch=spe, **kwargs)
    ref = torch_lrs_per_epoch(make_torch, epochs, spe)
    np.testing.assert_allclose(ours(sched, spe * epochs), ref, rtol=LR_RTOL, atol=1e-12)


def test_from_epochs_cosine_is_smooth_per_step_version():
    spe, epochs = 4, 6
    sched = S.from_epochs("cosine", 0.1, steps_per_epoch=spe, epochs=epochs, eta_min=1e-3)
    per_step = torch_lrs(lambda o: TL.CosineAnnealingLR(o, epochs * spe, eta_min=1e-3), epochs * spe)
    np.testing.assert_allclose(ours(sched, epochs * spe), per_step, rtol=LR_RTOL)
    per_epoch = torch_lrs_per_epoch(lambda o: TL.CosineAnnealingLR(o, epochs, eta_min=1e-3), epochs, spe)
    boundaries = np.arange(epochs) * spe
    np.testing.assert_allclose(ours(sched, epochs * spe)[boundaries], per_epoch[boundaries], rtol=LR_RTOL)
    # ... and the per_epoch() wrapper reproduces torch's per-epoch staircase at every step.
    stair = S.per_epoch(S.cosine_annealing(0.1, epochs, eta_min=1e-3), spe)
    np.testing.assert_allclose(ours(stair, epochs * spe), per_epoch, rtol=LR_RTOL)


def test_from_epochs_with_warmup():
    spe, epochs, warm = 3, 6, 2
    sched = S.from_epochs("cosine", 0.1, steps_per_epoch=spe, epochs=epochs, warmup_epochs=warm,
                          warmup_start_factor=0.1)
    ref = torch_lrs(
        lambda o: TL.SequentialLR(
            o,
            [TL.LinearLR(o, 0.1, total_iters=warm * spe), TL.CosineAnnealingLR(o, (epochs - warm) * spe)],
            milestones=[warm * spe],
        ),
        epochs * spe,
    )
    np.testing.assert_allclose(ours(sched, epochs * spe), ref, rtol=LR_RTOL, atol=1e-12)
    for bad in (
        lambda: S.from_epochs("cosine", 0.1, steps_per_epoch=3),
        lambda: S.from_epochs("step", 0.1, steps_per_epoch=3),
        lambda: S.from_epochs("multistep", 0.1, steps_per_epoch=3),
        lambda: S.from_epochs("onecycle", 0.1, steps_per_epoch=3),
        lambda: S.from_epochs("cosine", 0.1, steps_per_epoch=3, epochs=2, warmup_epochs=2),
    ):
        with pytest.raises(ValueError):
            bad()
