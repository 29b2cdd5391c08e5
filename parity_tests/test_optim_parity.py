"""Trajectory parity of ``jaxcnn.optim`` against ``torch.optim`` / ``lr_scheduler``.

Both frameworks train the same small softmax-regression model (``w``: (5, 4),
``b``: (4,), float32) from the same initial parameters on the same
deterministic sequence of minibatches.  Each framework computes its own
gradients with its own autograd at its *own* current parameters, so any
difference in the update rule feeds back into later gradients and the
trajectories drift apart.  Parameters are compared after every step, and the
learning rate each step used is compared with torch's ``param_groups[0]["lr"]``.

Tolerance: ``|ours - torch| <= ATOL + RTOL * |torch|`` elementwise, RTOL = 1e-5 and
ATOL = 1e-6, after every one of 30 steps.  Parameters are O(0.1-1); ATOL only matters
for entries passing near zero, where a pure relative test is meaningless.  What remains
is float32 rounding (matmul / log-sum-exp gradients, order of the update arithmetic;
torch's AdamW also rounds ``1 - lr * wd`` to float32) accumulated over the trajectory:
the grid cases below use at most ~16% of the tolerance, and the worst of a few hundred
random configurations (centered RMSprop with momentum) about a third of it.  The same
tolerance holds for every case; none needs a looser one.  Stock ``optax.adam`` does
*not* pass it (float32 bias correction, see ``scale_by_torch_adam``).

The "sensitivity" tests at the bottom show that this comparison rejects realistic
semantic mistakes (eps inside the sqrt, coupled vs decoupled decay, SGD without
dampening or dampening the first step, optax's AMSGrad, float32 bias correction, a
1e-4 relative change of the learning rate, an lr schedule shifted by one step or
clamped after ``t_max``), and ``test_cases_exercise_their_feature`` that each variant
(AMSGrad, dampening, Nesterov, centered, weight decay) really changes torch's trajectory
on this problem, so its parity test is not vacuous.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from conftest import fuzz_settings  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch.optim import lr_scheduler as TL  # noqa: E402

from jaxcnn import optim  # noqa: E402
from jaxcnn.optim import schedules as S  # noqa: E402

RTOL = 1e-5
ATOL = 1e-6
LR_RTOL = 1e-6  # float32 schedule vs torch's float64 schedule values
STEPS = 30

# ----------------------------------------------------------------------------------------
# The shared problem: softmax regression, minibatches cycled deterministically.
# ----------------------------------------------------------------------------------------

N, D, C, BATCH = 32, 5, 4, 8
_rng = np.random.default_rng(1234)
X = _rng.normal(size=(N, D)).astype(np.float32)
Y = _rng.integers(0, C, size=N).astype(np.int64)
W0 = (0.5 * _rng.normal(size=(D, C))).astype(np.float32)
B0 = (0.1 * _rng.normal(size=C)).astype(np.float32)


def _batch(k: int):
    idx = (np.arange(BATCH) + k * BATCH) % N
    return X[idx], Y[idx]


@jax.jit
def _jax_grad(params, x, y):
    def loss(p):
        logits = x @ p["w"] + p["b"]
        picked = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
        return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - picked)

    return jax.grad(loss)(params)


def run_jax(tx: optax.GradientTransformation, steps: int = STEPS, with_lr: bool = True):
    """Train with ``tx``; return per-step (w, b) and the lr each step used (via get_lr)."""
    params = {"w": jnp.asarray(W0), "b": jnp.asarray(B0)}
    state = tx.init(params)
    traj, lrs = [], []
    for k in range(steps):
        x, y = _batch(k)
        grads = _jax_grad(params, jnp.asarray(x), jnp.asarray(y))
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        traj.append((np.asarray(params["w"]), np.asarray(params["b"])))
        if with_lr:
            lrs.append(float(optim.get_lr(state)))
    return traj, lrs


def run_torch(make_opt, make_sched=None, steps: int = STEPS):
    """Same training loop in torch: optimizer.step() then scheduler.step() per batch."""
    # One intra-op thread: these tensors are tiny, and on a busy 2-core machine torch's
    # OpenMP spin-waiting makes the default 20-40x slower.  Restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_torch(make_opt, make_sched, steps)
    finally:
        torch.set_num_threads(threads)


def _run_torch(make_opt, make_sched, steps):
    w = torch.tensor(W0, requires_grad=True)
    b = torch.tensor(B0, requires_grad=True)
    opt = make_opt([w, b])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = make_sched(opt) if make_sched is not None else None
    traj, lrs = [], []
    for k in range(steps):
        x, y = _batch(k)
        opt.zero_grad()
        F.cross_entropy(torch.from_numpy(x) @ w + b, torch.from_numpy(y)).backward()
        lrs.append(float(opt.param_groups[0]["lr"]))
        opt.step()
        if sched is not None:
            sched.step()
        traj.append((w.detach().numpy().copy(), b.detach().numpy().copy()))
    return traj, lrs


def max_violation(ours, ref) -> float:
    """max over steps/entries of |ours - ref| / (ATOL + RTOL |ref|); <= 1 means 'close'."""
    worst = 0.0
    for step_ours, step_ref in zip(ours, ref, strict=True):
        for a, r in zip(step_ours, step_ref, strict=True):
            worst = max(worst, float(np.max(np.abs(a - r) / (ATOL + RTOL * np.abs(r)))))
    return worst


def assert_trajectories_close(ours, ref):
    """Fail at the first step whose parameters differ beyond the tolerance."""
    for k, (step_ours, step_ref) in enumerate(zip(ours, ref, strict=True)):
        for name, a, r in zip(("w", "b"), step_ours, step_ref, strict=True):
            np.testing.assert_allclose(
                a, r, rtol=RTOL, atol=ATOL, err_msg=f"parameter {name} after step {k + 1}"
            )


# ----------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------

T = torch.optim

# case -> (jaxcnn.optim name, keyword arguments shared by create() and torch, torch class)
OPTIMIZER_CASES = {
    "sgd": ("sgd", {"lr": 0.1}, T.SGD),
    "sgd_momentum_wd": ("sgd", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.05}, T.SGD),
    "sgd_dampening": ("sgd", {"lr": 0.1, "momentum": 0.9, "dampening": 0.5}, T.SGD),
    "sgd_nesterov": (
        "sgd",
        {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
        T.SGD,
    ),
    "adam": ("adam", {"lr": 0.02}, T.Adam),
    "adam_wd": ("adam", {"lr": 0.02, "weight_decay": 0.1}, T.Adam),
    # beta2 = 0.9 so that the running max of v actually engages within 30 steps
    # (with 0.999 v only grows this early and AMSGrad == Adam); checked below.
    "adam_amsgrad": ("adam", {"lr": 0.02, "betas": (0.9, 0.9), "amsgrad": True}, T.Adam),
    "adamw": ("adamw", {"lr": 0.02, "weight_decay": 0.1}, T.AdamW),
    "adamw_default_wd_amsgrad": (
        "adamw",
        {"lr": 0.02, "betas": (0.8, 0.9), "amsgrad": True},
        T.AdamW,
    ),
    "rmsprop": ("rmsprop", {"lr": 0.01}, T.RMSprop),
    "rmsprop_momentum": ("rmsprop", {"lr": 0.01, "momentum": 0.9, "alpha": 0.9}, T.RMSprop),
    "rmsprop_centered": (
        "rmsprop",
        {"lr": 0.01, "centered": True, "momentum": 0.5},
        T.RMSprop,
    ),
    "rmsprop_wd": ("rmsprop", {"lr": 0.01, "weight_decay": 0.1, "eps": 1e-3}, T.RMSprop),
}

# name -> (ours: lr -> optax schedule, torch: (opt, lr) -> scheduler)
SCHEDULES = {
    "none": (None, None),
    "step": (lambda lr: S.step_lr(lr, 7, gamma=0.5), lambda o, lr: TL.StepLR(o, 7, gamma=0.5)),
    "multistep": (
        lambda lr: S.multistep_lr(lr, [4, 11, 11, 20], gamma=0.5),
        lambda o, lr: TL.MultiStepLR(o, [4, 11, 11, 20], gamma=0.5),
    ),
    # T_max=12 < 30 steps: also checks torch's un-clamped cosine that rises again.
    "cosine": (
        lambda lr: S.cosine_annealing(lr, 12, eta_min=0.1 * lr),
        lambda o, lr: TL.CosineAnnealingLR(o, T_max=12, eta_min=0.1 * lr),
    ),
    "warmup_cosine": (
        lambda lr: S.warmup_cosine(lr, 5, STEPS, start_factor=0.1),
        lambda o, lr: TL.SequentialLR(
            o,
            [TL.LinearLR(o, start_factor=0.1, total_iters=5), TL.CosineAnnealingLR(o, T_max=STEPS - 5)],
            milestones=[5],
        ),
    ),
}


def _run_case(name, ours_kwargs, torch_cls, sched_name, steps=STEPS):
    ours_sched, torch_sched = SCHEDULES[sched_name]
    kwargs = dict(ours_kwargs)
    lr = kwargs["lr"]
    if ours_sched is not None:
        kwargs["lr"] = ours_sched(lr)
    tx = optim.create(name, **kwargs)
    ours = run_jax(tx, steps)
    ref = run_torch(
        lambda ps: torch_cls(ps, **ours_kwargs),
        None if torch_sched is None else (lambda o: torch_sched(o, lr)),
        steps,
    )
    return ours, ref


# ----------------------------------------------------------------------------------------
# Parity
# ----------------------------------------------------------------------------------------


# Every case runs without a schedule and with one schedule; the schedules are assigned so
# that each of them meets every optimizer family (the update rules use lr_t in different
# places: after momentum for SGD/RMSprop, inside the decoupled decay for AdamW).  The
# fuzz tests below also draw random (hyper-parameters, schedule) combinations.
CASE_SCHEDULE = {
    "sgd": "step",
    "sgd_momentum_wd": "multistep",
    "sgd_dampening": "cosine",
    "sgd_nesterov": "warmup_cosine",
    "adam": "cosine",
    "adam_wd": "step",
    "adam_amsgrad": "warmup_cosine",
    "adamw": "warmup_cosine",
    "adamw_default_wd_amsgrad": "multistep",
    "rmsprop": "multistep",
    "rmsprop_momentum": "cosine",
    "rmsprop_centered": "warmup_cosine",
    "rmsprop_wd": "step",
}
GRID = [(c, "none") for c in OPTIMIZER_CASES] + list(CASE_SCHEDULE.items())


@pytest.mark.parametrize(("case", "sched_name"), GRID, ids=[f"{c}-{s}" for c, s in GRID])
def test_trajectory_matches_torch(case, sched_name):
    name, kwargs, torch_cls = OPTIMIZER_CASES[case]
    (ours, ours_lrs), (ref, ref_lrs) = _run_case(name, kwargs, torch_cls, sched_name)
    np.testing.assert_allclose(ours_lrs, ref_lrs, rtol=LR_RTOL, atol=1e-12)
    assert_trajectories_close(ours, ref)
    # The trajectory must actually move (otherwise parity is trivially true).
    assert np.max(np.abs(ref[-1][0] - W0)) > 0.05


def test_cases_exercise_their_feature():
    """Each variant's torch trajectory differs from the plain one, so its parity test is not vacuous."""

    def torch_traj(cls, **kw):
        return run_torch(lambda ps: cls(ps, **kw))[0]

    pairs = [
        (dict(lr=0.02, betas=(0.9, 0.9), amsgrad=True), dict(lr=0.02, betas=(0.9, 0.9)), T.Adam),
        (dict(lr=0.02, betas=(0.8, 0.9), amsgrad=True), dict(lr=0.02, betas=(0.8, 0.9)), T.AdamW),
        (dict(lr=0.1, momentum=0.9, dampening=0.5), dict(lr=0.1, momentum=0.9), T.SGD),
        (dict(lr=0.1, momentum=0.9, nesterov=True), dict(lr=0.1, momentum=0.9), T.SGD),
        (dict(lr=0.01, centered=True), dict(lr=0.01), T.RMSprop),
        (dict(lr=0.01, weight_decay=0.1), dict(lr=0.01), T.RMSprop),
    ]
    for with_feature, without, cls in pairs:
        assert max_violation(torch_traj(cls, **with_feature), torch_traj(cls, **without)) > 10, (
            cls,
            with_feature,
        )


def test_schedule_passed_as_schedule_argument():
    """``create(..., schedule=s)`` and ``create(..., lr=base, schedule=s)`` follow torch too."""
    sched = S.warmup_cosine(0.05, 5, STEPS, start_factor=0.1)
    ref, ref_lrs = run_torch(
        lambda ps: T.SGD(ps, lr=0.05, momentum=0.9),
        lambda o: TL.SequentialLR(
            o,
            [TL.LinearLR(o, start_factor=0.1, total_iters=5), TL.CosineAnnealingLR(o, T_max=STEPS - 5)],
            milestones=[5],
        ),
    )
    for tx in (
        optim.create("sgd", momentum=0.9, schedule=sched),
        optim.create("sgd", lr=0.05, momentum=0.9, schedule=sched),
    ):
        ours, ours_lrs = run_jax(tx)
        np.testing.assert_allclose(ours_lrs, ref_lrs, rtol=LR_RTOL)
        assert_trajectories_close(ours, ref)


@pytest.mark.parametrize(
    ("name", "torch_cls", "kwargs"),
    [("sgd", T.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.05}),
     ("adamw", T.AdamW, {"lr": 0.02, "weight_decay": 0.2})],
)
def test_weight_decay_mask_matches_torch_param_groups(name, torch_cls, kwargs):
    """weight_decay_mask == a torch param group with weight_decay=0 (here: the bias)."""
    ref, _ = run_torch(
        lambda ps: torch_cls([{"params": [ps[0]]}, {"params": [ps[1]], "weight_decay": 0.0}], **kwargs)
    )
    ours, _ = run_jax(optim.create(name, weight_decay_mask={"w": True, "b": False}, **kwargs))
    assert_trajectories_close(ours, ref)
    unmasked, _ = run_jax(optim.create(name, **kwargs))
    assert max_violation(unmasked, ref) > 10


def test_jitted_update_matches_torch():
    """The transform works under jit (traced count/lr) with the same numbers."""
    tx = optim.create("adamw", lr=S.cosine_annealing(0.02, 10), amsgrad=True, betas=(0.9, 0.9))

    @jax.jit
    def step(params, state, x, y):
        g = _jax_grad(params, x, y)
        u, state = tx.update(g, state, params)
        return optax.apply_updates(params, u), state, optim.get_lr(state)

    params = {"w": jnp.asarray(W0), "b": jnp.asarray(B0)}
    state = tx.init(params)
    ours, lrs = [], []
    for k in range(STEPS):
        x, y = _batch(k)
        params, state, lr = step(params, state, jnp.asarray(x), jnp.asarray(y))
        ours.append((np.asarray(params["w"]), np.asarray(params["b"])))
        lrs.append(float(lr))
    ref, ref_lrs = run_torch(
        lambda ps: T.AdamW(ps, lr=0.02, amsgrad=True, betas=(0.9, 0.9)),
        lambda o: TL.CosineAnnealingLR(o, T_max=10),
    )
    np.testing.assert_allclose(lrs, ref_lrs, rtol=LR_RTOL, atol=1e-12)
    assert_trajectories_close(ours, ref)


# ----------------------------------------------------------------------------------------
# Fuzzed hyper-parameters
# ----------------------------------------------------------------------------------------

FUZZ_STEPS = 25
# The shared parity profile: derandomized (the same examples every run), no deadline.
_fuzz = fuzz_settings(max_examples=25)
_sched = st.sampled_from(list(SCHEDULES))
_wd = st.one_of(st.just(0.0), st.floats(1e-4, 0.1))
_eps = st.one_of(st.just(1e-8), st.floats(1e-8, 1e-2).map(lambda e: float(f"{e:.3g}")))


def _check_fuzz(name, kwargs, torch_cls, sched_name):
    (ours, ours_lrs), (ref, ref_lrs) = _run_case(name, kwargs, torch_cls, sched_name, FUZZ_STEPS)
    np.testing.assert_allclose(ours_lrs, ref_lrs, rtol=LR_RTOL, atol=1e-12)
    assert_trajectories_close(ours, ref)


@_fuzz
@given(
    lr=st.floats(1e-3, 0.3),
    momentum=st.one_of(st.just(0.0), st.floats(0.0, 0.95)),
    dampening=st.one_of(st.just(0.0), st.floats(0.0, 0.9)),
    nesterov=st.booleans(),
    weight_decay=_wd,
    sched_name=_sched,
)
def test_fuzz_sgd(lr, momentum, dampening, nesterov, weight_decay, sched_name):
    if nesterov and (momentum <= 0 or dampening != 0):
        dampening, momentum = 0.0, max(momentum, 0.5)
    kwargs = dict(
        lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay
    )
    _check_fuzz("sgd", kwargs, T.SGD, sched_name)


@_fuzz
@given(
    lr=st.floats(1e-4, 0.03),
    b1=st.floats(0.0, 0.95),
    b2=st.sampled_from([0.9, 0.99, 0.999, 0.9999]) | st.floats(0.5, 0.9999),
    eps=_eps,
    weight_decay=_wd,
    amsgrad=st.booleans(),
    decoupled=st.booleans(),
    sched_name=_sched,
)
def test_fuzz_adam(lr, b1, b2, eps, weight_decay, amsgrad, decoupled, sched_name):
    kwargs = dict(lr=lr, betas=(b1, b2), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
    if decoupled:
        _check_fuzz("adamw", kwargs, T.AdamW, sched_name)
    else:
        _check_fuzz("adam", kwargs, T.Adam, sched_name)


@_fuzz
@given(
    lr=st.floats(1e-4, 0.03),
    alpha=st.floats(0.5, 0.999),
    eps=_eps,
    momentum=st.one_of(st.just(0.0), st.floats(0.0, 0.9)),
    centered=st.booleans(),
    weight_decay=_wd,
    sched_name=_sched,
)
def test_fuzz_rmsprop(lr, alpha, eps, momentum, centered, weight_decay, sched_name):
    kwargs = dict(
        lr=lr, alpha=alpha, eps=eps, momentum=momentum, centered=centered, weight_decay=weight_decay
    )
    _check_fuzz("rmsprop", kwargs, T.RMSprop, sched_name)


# ----------------------------------------------------------------------------------------
# Sensitivity: the comparison rejects plausible but wrong implementations
# ----------------------------------------------------------------------------------------


def _jax_plain(tx):
    return run_jax(tx, with_lr=False)[0]


def test_sensitivity_optax_default_rmsprop_eps_inside_sqrt():
    ref = run_torch(lambda ps: T.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-3))[0]
    ours = _jax_plain(optim.create("rmsprop", lr=0.01, alpha=0.9, eps=1e-3))
    wrong = _jax_plain(optax.rmsprop(0.01, decay=0.9, eps=1e-3))  # eps_in_sqrt=True
    assert max_violation(ours, ref) <= 1
    assert max_violation(wrong, ref) > 10


def test_sensitivity_coupled_vs_decoupled_weight_decay():
    adam_ref = run_torch(lambda ps: T.Adam(ps, lr=0.02, weight_decay=0.1))[0]
    adamw_ref = run_torch(lambda ps: T.AdamW(ps, lr=0.02, weight_decay=0.1))[0]
    coupled = _jax_plain(optim.create("adam", lr=0.02, weight_decay=0.1))
    decoupled = _jax_plain(optim.create("adamw", lr=0.02, weight_decay=0.1))
    assert max_violation(coupled, adam_ref) <= 1
    assert max_violation(decoupled, adamw_ref) <= 1
    assert max_violation(decoupled, adam_ref) > 10
    assert max_violation(coupled, adamw_ref) > 10
    # optax's own adamw is decoupled too, hence not torch's Adam(weight_decay=...).
    assert max_violation(_jax_plain(optax.adamw(0.02, weight_decay=0.1)), adam_ref) > 10


def test_sensitivity_sgd_dampening_first_step():
    ref = run_torch(lambda ps: T.SGD(ps, lr=0.1, momentum=0.9, dampening=0.5))[0]
    no_dampening = _jax_plain(optax.sgd(0.1, momentum=0.9))
    # Dampening applied from the first step on (buffer starting at zero): wrong too.
    damped_first = _jax_plain(
        optax.chain(optax.scale(0.5), optax.trace(0.9), optax.scale_by_learning_rate(0.1))
    )
    assert max_violation(no_dampening, ref) > 10
    assert max_violation(damped_first, ref) > 10


def test_sensitivity_optax_amsgrad_and_float32_bias_correction():
    ams_ref = run_torch(lambda ps: T.Adam(ps, lr=0.02, betas=(0.9, 0.9), amsgrad=True))[0]
    optax_ams = _jax_plain(
        optax.chain(optax.scale_by_amsgrad(0.9, 0.9), optax.scale_by_learning_rate(0.02))
    )
    assert max_violation(optax_ams, ams_ref) > 10
    # optax.scale_by_adam computes 1 - beta2**t in float32 from float32(beta2), which moves
    # 1 - beta2 by 1.3e-5 (beta2=0.999) / 1.7e-4 (0.9999) relative; torch uses float64.
    # That alone breaks the tolerance (~2x / ~24x over here); ours uses ~7% of it.
    for b2, factor in ((0.999, 1), (0.9999, 10)):
        ref = run_torch(lambda ps: T.Adam(ps, lr=0.02, betas=(0.9, b2)))[0]
        ours = _jax_plain(optim.create("adam", lr=0.02, betas=(0.9, b2)))
        stock = _jax_plain(optax.adam(0.02, b1=0.9, b2=b2))
        assert max_violation(ours, ref) <= 0.5
        assert max_violation(stock, ref) > factor


@pytest.mark.parametrize("case", ["sgd_momentum_wd", "adam", "rmsprop_centered"])
def test_sensitivity_tiny_lr_change_is_detected(case):
    name, kwargs, torch_cls = OPTIMIZER_CASES[case]
    ref = run_torch(lambda ps: torch_cls(ps, **kwargs))[0]
    perturbed = dict(kwargs, lr=kwargs["lr"] * (1 + 1e-4))
    assert max_violation(_jax_plain(optim.create(name, **perturbed)), ref) > 1


def test_sensitivity_schedule_off_by_one_is_detected():
    sched = S.cosine_annealing(0.1, 12)
    ref = run_torch(lambda ps: T.SGD(ps, lr=0.1), lambda o: TL.CosineAnnealingLR(o, T_max=12))[0]
    shifted = _jax_plain(optim.create("sgd", lr=lambda t: sched(t + 1)))
    clamped = _jax_plain(optim.create("sgd", lr=optax.cosine_decay_schedule(0.1, 12)))
    assert max_violation(_jax_plain(optim.create("sgd", lr=sched)), ref) <= 1
    assert max_violation(shifted, ref) > 10
    assert max_violation(clamped, ref) > 10  # optax clamps after t_max, torch does not
