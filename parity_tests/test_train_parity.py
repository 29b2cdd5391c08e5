"""Training-trajectory parity: a plain torch training loop vs jaxcnn's real jitted train step.

Both sides start from the same weights (the torch model's, with randomised BatchNorm
statistics, loaded into the jaxcnn twin), see the same fixed batches in the same order and
use the same optimizer and learning-rate schedule:

* torch: ``model.train()``; per step ``optimizer.zero_grad()``, ``F.cross_entropy``,
  ``loss.backward()``, ``optimizer.step()``, ``scheduler.step()``;
* jaxcnn: ``create_train_state`` + ``make_train_step`` (the project's jitted, donating step)
  with ``jaxcnn.optim.create(..., schedule=...)``.

Each side computes its own gradients at its own parameters, so any semantic difference (in the
model, the loss, BatchNorm's statistics, the optimizer or the schedule) feeds back and the
trajectories separate. Compared: the loss of every step, all parameters and BatchNorm
statistics after a few intermediate steps and after the last one (running mean/var,
``num_batches_tracked`` exactly). Optimizer-level parity on a fixed pytree lives in
``test_optim_parity.py``; this file checks the same rules end to end through a model.

Two models: ``TinyBN`` (Conv-BN-ReLU-pool twice, Linear; defined below on both sides with the
same attribute names, so state-dict keys match; the second BatchNorm uses momentum 0.2) and the
registered ``mnist_cnn`` (no BatchNorm). 24 steps of batch 8 on fixed random data, float32.

Tolerances. Errors are normwise relative per tensor, ``|jax - torch| / max|torch|``
elementwise. Float32 rounding differs between the frameworks from the first forward pass on
(different conv/matmul algorithms and summation orders, ~1e-7 relative), and training carries
those differences forward. Measured over all cases (24 steps):

* loss of every step: <= 1.1e-6 relative -> ``RTOL`` = 1e-5 for every optimizer;
* SGD (momentum, Nesterov, dampening, weight decay, any schedule): parameters <= 1.6e-6,
  running statistics <= 1.9e-6 -> ``RTOL`` = 1e-5 for every element. SGD's update is linear
  in the gradient, so the per-step rounding differences only add up;
* Adam/AdamW/RMSprop: the bulk of the elements agree as well as with SGD (the BatchNorm model:
  every element <= 3.2e-6), but a handful do not. These optimizers divide each gradient
  element by its running RMS (``m / (sqrt(v) + eps)``), so the step of an element is about
  ``lr`` regardless of the gradient's size, and its *relative* rounding error is what reaches
  the parameter. For an element whose gradient is a near-complete cancellation (in
  ``mnist_cnn`` one ``conv2.weight`` entry has ``|g| = 2.8e-7`` at step 1 while the tensor's
  median is 5e-3) the framework-to-framework rounding difference is a few percent of ``g``,
  hence a few percent of ``lr`` in that element's step: measured up to 4.8e-4 (RMSprop) and
  3.6e-5 (Adam) normwise, in at most 7 of ~22k elements (0.03 %). So for these optimizers at
  most ``OUTLIER_FRACTION`` = 0.1 % of the compared elements may exceed ``RTOL`` and none may
  exceed ``OUTLIER_RTOL`` = 2e-3. (A conv bias directly before a BatchNorm is the extreme
  case: its true gradient is exactly 0, the computed one is pure rounding noise, and Adam turns
  that noise into steps of size ``lr`` -- a random walk that no tolerance can compare, measured
  7e-2. ``TinyBN``'s convs therefore have ``bias=False``, as BatchNorm CNNs usually do.)
* Negative controls (bottom): weight decay dropped, Nesterov dropped, coupled instead of
  decoupled decay, non-centered RMSprop, the schedule ignored, a different BatchNorm momentum.
  Each fails the comparison by far: the affected quantity (parameters; for the BatchNorm
  momentum only the running statistics) is off by 5e-2 .. 0.8 normwise, and in all but the
  BatchNorm case 66-99 % of the elements exceed ``RTOL``.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from flax import nnx
from model_harness import randomize_torch_model
from torch.optim import lr_scheduler as TL

import jaxcnn.models
import torch_ref.models
from jaxcnn import nn, optim
from jaxcnn.convert import load_torch_state_dict, to_torch_arrays
from jaxcnn.nn import functional as F
from jaxcnn.optim import schedules as S
from jaxcnn.train.state import create_train_state, split_model, state_to_model
from jaxcnn.train.step import make_steps, make_train_step

STEPS = 24
BATCH = 8
CHECK_STEPS = (1, 8, STEPS)  # compare all parameters/statistics after these steps

RTOL = 1e-5  # losses every step; every SGD parameter/statistic; the bulk under Adam/RMSprop
# Adam/AdamW/RMSprop only (see the module docstring): at most this fraction of all compared
# elements may exceed RTOL, and none may exceed OUTLIER_RTOL.
OUTLIER_FRACTION = 1e-3
OUTLIER_RTOL = 2e-3


# ----------------------------------------------------------------------------------------
# A tiny model with BatchNorm, on both sides with identical attribute names.
# ----------------------------------------------------------------------------------------


class TorchTinyBN(torch.nn.Module):
    """(N, 3, 8, 8) -> conv1/bn1/relu/pool (N, 8, 4, 4) -> conv2/bn2/relu/pool (N, 16, 2, 2) -> fc (N, 10)."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(16, momentum=0.2)
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        x = TF.max_pool2d(TF.relu(self.bn1(self.conv1(x))), 2)
        x = TF.max_pool2d(TF.relu(self.bn2(self.conv2(x))), 2)
        return self.fc(torch.flatten(x, 1))


class JaxTinyBN(nnx.Module):
    """NHWC twin of :class:`TorchTinyBN`: (N, 8, 8, 3) -> (N, 10)."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False, rngs=rngs)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, bias=False, rngs=rngs)
        self.bn2 = nn.BatchNorm2d(16, momentum=0.2)
        self.fc = nn.Linear(64, 10, rngs=rngs)

    def __call__(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc(F.flatten(x, 1, torch_order=True))


@dataclass(frozen=True)
class ModelSpec:
    make_torch: Callable[[], torch.nn.Module]
    make_jax: Callable[..., nnx.Module]
    input_chw: tuple[int, int, int]


MODELS = {
    "tiny_bn": ModelSpec(TorchTinyBN, lambda: JaxTinyBN(rngs=nnx.Rngs(0)), (3, 8, 8)),
    "mnist_cnn": ModelSpec(
        lambda: torch_ref.models.create("mnist_cnn"),
        lambda: jaxcnn.models.create("mnist_cnn", rngs=nnx.Rngs(0)),
        (1, 28, 28),
    ),
}


def make_batches(input_chw, steps: int = STEPS, seed: int = 0):
    """``steps`` fixed batches: NCHW float32 images (torch), NHWC copies (jax), int labels."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((steps, BATCH, *input_chw)).astype(np.float32)
    labels = rng.integers(0, 10, size=(steps, BATCH))
    return images, images.transpose(0, 1, 3, 4, 2).copy(), labels


# ----------------------------------------------------------------------------------------
# Optimizer + schedule configurations, expressed once for both frameworks.
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Opt:
    name: str  # jaxcnn.optim name
    lr: float
    kwargs: dict = field(default_factory=dict)  # shared keyword arguments (torch names)

    def torch(self, params):
        cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
               "rmsprop": torch.optim.RMSprop}[self.name]  # fmt: skip
        return cls(params, lr=self.lr, **self.kwargs)

    def jax(self, schedule):
        return optim.create(self.name, lr=self.lr, schedule=schedule(self.lr) if schedule else None, **self.kwargs)


@dataclass(frozen=True)
class Sched:
    """A torch scheduler factory and the equal jaxcnn schedule (both from the base lr)."""

    torch: Callable | None
    jax: Callable[[float], Callable] | None


SCHEDULES = {
    "constant": Sched(None, None),
    "step": Sched(lambda opt: TL.StepLR(opt, step_size=7, gamma=0.5), lambda lr: S.step_lr(lr, 7, 0.5)),
    "warmup_cosine": Sched(
        lambda opt: TL.SequentialLR(
            opt,
            [TL.LinearLR(opt, start_factor=0.25, total_iters=5), TL.CosineAnnealingLR(opt, T_max=STEPS - 5)],
            milestones=[5],
        ),
        lambda lr: S.warmup_cosine(lr, 5, STEPS, start_factor=0.25),
    ),
}

OPTIMIZERS = {
    "sgd_momentum_wd": Opt("sgd", 0.05, {"momentum": 0.9, "weight_decay": 5e-4}),
    "sgd_nesterov_wd": Opt("sgd", 0.05, {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}),
    "sgd_dampening": Opt("sgd", 0.05, {"momentum": 0.9, "dampening": 0.3}),
    "adam": Opt("adam", 2e-3),
    "adam_l2": Opt("adam", 2e-3, {"weight_decay": 1e-2}),
    "adamw": Opt("adamw", 2e-3, {"weight_decay": 5e-2}),
    "rmsprop": Opt("rmsprop", 1e-3),
    "rmsprop_momentum_centered": Opt("rmsprop", 1e-3, {"momentum": 0.9, "centered": True, "weight_decay": 1e-3}),
}


def is_adaptive(opt: Opt) -> bool:
    """Adam, AdamW and RMSprop normalise each gradient element by its running RMS."""
    return opt.name != "sgd"


# ----------------------------------------------------------------------------------------
# The two training loops.
# ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def torch_threads(n: int):
    """Run torch with ``n`` intra-op threads (restored afterwards). The models are tiny, and
    on a loaded machine torch's spinning thread pool costs far more than it gains."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.cache
def initial_state(model_name: str) -> dict[str, np.ndarray]:
    """The common starting point: the torch model's default init with randomised BatchNorm
    scales/biases/running statistics/counters, as private numpy copies."""
    torch.manual_seed(0)
    model = randomize_torch_model(MODELS[model_name].make_torch(), seed=1)
    return {key: value.detach().numpy().copy() for key, value in model.state_dict().items()}


@functools.cache
def batches(model_name: str):
    return make_batches(MODELS[model_name].input_chw)


@dataclass
class Trajectory:
    losses: np.ndarray  # (STEPS,) loss of each step
    states: dict[int, dict[str, np.ndarray]]  # step -> state dict (torch layout) after that step
    lrs: list[float]  # learning rate each update used
    traces: dict = field(default_factory=dict)


def torch_trajectory(model_name: str, opt: Opt, sched: Sched, *, bn_momentum: float | None = None) -> Trajectory:
    """The plain torch loop from :func:`initial_state` (``bn_momentum`` overrides every
    BatchNorm's momentum, for a negative control)."""
    model = MODELS[model_name].make_torch()
    model.load_state_dict({key: torch.from_numpy(value.copy()) for key, value in initial_state(model_name).items()})
    if bn_momentum is not None:
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = bn_momentum
    images, _, labels = batches(model_name)
    losses, states, lrs = [], {}, []
    with torch_threads(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SequentialLR: "scheduler.step() before optimizer.step()"
        model.train()
        optimizer = opt.torch(model.parameters())
        scheduler = sched.torch(optimizer) if sched.torch else None
        for step in range(STEPS):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.zero_grad()
            loss = TF.cross_entropy(model(torch.from_numpy(images[step])), torch.from_numpy(labels[step]))
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            losses.append(float(loss.detach()))
            if step + 1 in CHECK_STEPS:
                states[step + 1] = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return Trajectory(np.asarray(losses), states, lrs)


_JAX_CACHE: dict[tuple[str, str, str], Trajectory] = {}


def jax_trajectory(model_name: str, opt_name: str, sched_name: str) -> Trajectory:
    """jaxcnn's real jitted, donating train step from :func:`initial_state` (cached: the
    negative controls reuse the trajectories of the positive cases)."""
    key = (model_name, opt_name, sched_name)
    if key in _JAX_CACHE:
        return _JAX_CACHE[key]
    # Shapes only, then every Param/BatchStat is set from the torch state dict (these models
    # have no RNG streams), which skips the eager random initialisation.
    model = nnx.eval_shape(MODELS[model_name].make_jax)
    load_torch_state_dict(model, initial_state(model_name))
    tx = OPTIMIZERS[opt_name].jax(SCHEDULES[sched_name].jax)
    graphdef, eval_graphdef, state = create_train_state(model, tx)
    fns = make_steps(graphdef, eval_graphdef, tx)
    _, images, labels = batches(model_name)
    losses, states, lrs = [], {}, []
    for step in range(STEPS):
        state, metrics = fns.train_step(state, jnp.asarray(images[step]), jnp.asarray(labels[step], jnp.int32))
        losses.append(float(metrics["loss"]))
        lrs.append(float(optim.get_lr(state.opt_state)))
        if step + 1 in CHECK_STEPS:
            # Copied to host now: the state's buffers are donated to the next step.
            states[step + 1] = dict(to_torch_arrays(state_to_model(graphdef, state)))
    _JAX_CACHE[key] = trajectory = Trajectory(np.asarray(losses), states, lrs, dict(fns.trace_counts))
    return trajectory


def divergence(ours: Trajectory, ref: Trajectory) -> dict[str, float]:
    """How far ``ours`` (jaxcnn) is from ``ref`` (torch).

    Errors are normwise relative per tensor: ``|ours - ref| / max|ref|`` (elementwise, divided
    by the largest magnitude of the torch tensor). Returns the worst per-step loss error, the
    worst parameter and BatchNorm running-statistic errors over :data:`CHECK_STEPS`, the
    fraction of all compared elements whose error exceeds :data:`RTOL`, and how many
    ``num_batches_tracked`` counters differ (they must be equal exactly).
    """
    out = {"loss": float(np.max(np.abs(ours.losses - ref.losses) / np.abs(ref.losses)))}
    params = stats = 0.0
    counters = above = total = 0
    for step, expected in ref.states.items():
        actual = ours.states[step]
        assert sorted(actual) == sorted(expected), f"state keys differ: {sorted(actual)} vs {sorted(expected)}"
        for key, value in expected.items():
            if key.endswith("num_batches_tracked"):
                counters += int(int(actual[key]) != int(value))
                continue
            assert actual[key].shape == value.shape, f"{key}: jax {actual[key].shape} vs torch {value.shape}"
            scale = float(np.abs(value).max()) or 1.0
            error = np.abs(actual[key].astype(np.float64) - value.astype(np.float64)) / scale
            above += int((error > RTOL).sum())
            total += error.size
            if "running" in key:
                stats = max(stats, float(error.max()))
            else:
                params = max(params, float(error.max()))
    out.update(params=params, batch_stats=stats, fraction_above_rtol=above / total, counters_differing=counters)
    return out


def assert_trajectories_match(ours: Trajectory, ref: Trajectory, adaptive: bool) -> dict[str, float]:
    """The jaxcnn trajectory equals torch's: learning rates, losses, counters exactly, and
    parameters/statistics within RTOL (SGD) or within RTOL except for a few ill-conditioned
    elements (Adam/AdamW/RMSprop, see the module docstring)."""
    # The jaxcnn step compiled once (a recompilation would mean a shape/dtype changed).
    assert ours.traces["train"] == 1, ours.traces
    # The learning rate each update used equals torch's param_groups lr before its step()
    # (float32 schedule vs torch's float64 recurrence: measured <= 1.3e-7 relative).
    np.testing.assert_allclose(ours.lrs, ref.lrs, rtol=1e-6, atol=0)
    # The losses must actually move, otherwise agreeing on them would prove little.
    assert np.ptp(ref.losses) > 0.1, ref.losses
    errors = divergence(ours, ref)
    assert errors["counters_differing"] == 0, f"num_batches_tracked differs: {errors}"
    assert errors["loss"] <= RTOL, f"per-step loss diverged: {errors}"
    if adaptive:
        assert errors["fraction_above_rtol"] <= OUTLIER_FRACTION, f"too many elements diverged: {errors}"
        assert errors["params"] <= OUTLIER_RTOL, f"parameters diverged: {errors}"
        assert errors["batch_stats"] <= OUTLIER_RTOL, f"BatchNorm statistics diverged: {errors}"
    else:
        assert errors["params"] <= RTOL, f"parameters diverged: {errors}"
        assert errors["batch_stats"] <= RTOL, f"BatchNorm statistics diverged: {errors}"
    return errors


# ----------------------------------------------------------------------------------------
# Positive cases: every optimizer with and without a schedule on the BatchNorm model; a
# representative subset on mnist_cnn (no BatchNorm).
# ----------------------------------------------------------------------------------------

# Each optimizer without a schedule and with one (StepLR and warm-up + cosine alternate).
BN_CASES = [
    (opt, sched)
    for index, opt in enumerate(OPTIMIZERS)
    for sched in ("constant", "step" if index % 2 == 0 else "warmup_cosine")
]
# mnist_cnn (no BatchNorm): a representative subset; the rest only with --runslow (each case
# costs one XLA compilation, ~2 CPU seconds).
MNIST_CASES = [
    ("sgd_momentum_wd", "step"),
    ("adam", "warmup_cosine"),
    ("rmsprop_momentum_centered", "step"),
    pytest.param("sgd_nesterov_wd", "constant", marks=pytest.mark.slow),
    pytest.param("adamw", "constant", marks=pytest.mark.slow),
    pytest.param("adam_l2", "step", marks=pytest.mark.slow),
    pytest.param("rmsprop", "warmup_cosine", marks=pytest.mark.slow),
]


def check_case(model_name: str, opt_name: str, sched_name: str) -> dict[str, float]:
    opt, sched = OPTIMIZERS[opt_name], SCHEDULES[sched_name]
    ref = torch_trajectory(model_name, opt, sched)
    ours = jax_trajectory(model_name, opt_name, sched_name)
    errors = assert_trajectories_match(ours, ref, is_adaptive(opt))
    print(f"{model_name} {opt_name} {sched_name}: {errors}")
    return errors


@pytest.mark.parametrize("opt_name,sched_name", BN_CASES, ids=[f"{o}-{s}" for o, s in BN_CASES])
def test_tiny_bn_trajectory(opt_name, sched_name):
    check_case("tiny_bn", opt_name, sched_name)


@pytest.mark.parametrize("opt_name,sched_name", MNIST_CASES)
def test_mnist_cnn_trajectory(opt_name, sched_name):
    check_case("mnist_cnn", opt_name, sched_name)


# ----------------------------------------------------------------------------------------
# Negative controls: the comparison must reject realistic mistakes. Each pairs a jaxcnn
# trajectory of a positive case (cached) with a torch run that differs in one setting.
# ----------------------------------------------------------------------------------------


def _variant(opt_name: str, **changes) -> Opt:
    opt = OPTIMIZERS[opt_name]
    kwargs = {key: value for key, value in {**opt.kwargs, **changes}.items() if value is not None}
    return Opt(opt.name, opt.lr, kwargs)


NEGATIVE_CASES = {
    # jaxcnn SGD with weight decay vs torch SGD without it.
    "weight_decay_dropped": ("tiny_bn", "sgd_momentum_wd", "constant", _variant("sgd_momentum_wd", weight_decay=None), "constant", None),
    # jaxcnn Nesterov vs torch's classical momentum.
    "nesterov_dropped": ("tiny_bn", "sgd_nesterov_wd", "constant", _variant("sgd_nesterov_wd", nesterov=None), "constant", None),
    # jaxcnn AdamW (decoupled decay) vs torch Adam with the same weight_decay (coupled L2).
    "coupled_vs_decoupled_decay": ("tiny_bn", "adamw", "constant", Opt("adam", 2e-3, {"weight_decay": 5e-2}), "constant", None),
    # jaxcnn centered RMSprop vs torch's plain RMSprop.
    "rmsprop_not_centered": ("mnist_cnn", "rmsprop_momentum_centered", "step", _variant("rmsprop_momentum_centered", centered=None), "step", None),
    # jaxcnn with StepLR vs torch without a scheduler.
    "schedule_ignored": ("tiny_bn", "sgd_momentum_wd", "step", OPTIMIZERS["sgd_momentum_wd"], "constant", None),
    # Same optimizer, but torch's BatchNorms use momentum 0.1 (bn2 is 0.2 in both models):
    # only the running statistics can tell (they do not influence a training-mode forward).
    "batchnorm_momentum": ("tiny_bn", "sgd_momentum_wd", "constant", OPTIMIZERS["sgd_momentum_wd"], "constant", 0.1),
}


@pytest.mark.parametrize("case", list(NEGATIVE_CASES))
def test_negative_control_is_detected(case):
    model_name, opt_name, sched_name, torch_opt, torch_sched, bn_momentum = NEGATIVE_CASES[case]
    ours = jax_trajectory(model_name, opt_name, sched_name)
    ref = torch_trajectory(model_name, torch_opt, SCHEDULES[torch_sched], bn_momentum=bn_momentum)
    with pytest.raises(AssertionError):
        assert_trajectories_match(ours, ref, is_adaptive(OPTIMIZERS[opt_name]))
    errors = divergence(ours, ref)
    print(f"negative control {case}: {errors}")
    # Not a marginal failure: the affected quantity is off by far more than any tolerance.
    if case == "batchnorm_momentum":
        assert errors["params"] <= RTOL, errors  # the parameters still agree ...
        assert errors["batch_stats"] > 100 * RTOL, errors  # ... the statistics do not
    else:
        assert errors["params"] > 10 * OUTLIER_RTOL, errors
        assert errors["fraction_above_rtol"] > 100 * OUTLIER_FRACTION, errors


# ----------------------------------------------------------------------------------------
# float64 through the product's step: one model of each family, every optimizer, three steps.
# ----------------------------------------------------------------------------------------
#
# Both sides in float64 (``jax.enable_x64``, ``torch_model.double()``), the jaxcnn side through
# ``create_train_state`` + ``make_train_step`` + ``jaxcnn.optim.create`` exactly as a user who
# verifies a port runs it; torch's plain loop with ``F.cross_entropy`` (plus 0.3 times each
# GoogLeNet auxiliary loss, the step's ``aux_loss_weight``). Dropout is off on both sides (its
# masks cannot agree); BatchNorm state is randomised. In float64 the frameworks' different
# summation orders leave ~1e-15 relative differences per op, so a semantic difference cannot hide
# behind rounding: after three steps every parameter and BatchNorm buffer must agree to
# ``F64_RTOL_SGD`` (SGD, linear in the gradient) or ``F64_RTOL_ADAPTIVE`` (Adam/AdamW/RMSprop
# divide by the gradient's running RMS, which magnifies the relative rounding of near-zero
# gradient elements); ``num_batches_tracked`` and the step counter exactly. These are the issue's
# acceptance bounds for resnet18; with the logits cast to float32 before the loss (the step's old
# bug) the resnet18 runs were 3.3e-8 (SGD) and 2.9e-4 (Adam) off.
#
# The other families at their small test sizes are less well conditioned: BatchNorm over the
# 16 values per channel of a 2x2 map at batch 4 (GoogLeNet's inception5 at 64x64, VGG's last
# stage at 32x32) amplifies each step's 1e-15 differences, measured after three steps: GoogLeNet
# SGD 2.0e-10 (2.0e-13 after one step), AdamW 1.0e-7 (aux1.fc1), cifar_vgg11 AdamW 7.7e-9. The
# matrix therefore uses
# ``F64_RTOL_FAMILY`` (SGD) and ``F64_RTOL_FAMILY_ADAPTIVE``, still far below the float32-sized
# errors a float32 op anywhere in the step leaves (>= 3e-8 for SGD, 3e-4 for Adam).

F64_STEPS = 3
F64_RTOL_SGD = 1e-12
F64_RTOL_ADAPTIVE = 1e-8
F64_RTOL_FAMILY = 1e-9
F64_RTOL_FAMILY_ADAPTIVE = 1e-6
F64_STRICT = ("resnet18", "resnet18_64px", "mlp", "mnist_cnn")  # held to the acceptance bounds
F64_OPTIMIZERS = ("sgd_nesterov_wd", "adam_l2", "adamw", "rmsprop_momentum_centered")


@dataclass(frozen=True)
class F64Case:
    name: str  # registry name on both sides
    input_chw: tuple[int, int, int]
    batch: int
    options: dict = field(default_factory=dict)  # constructor options on both sides
    aux_loss_weight: float = 0.0


F64_MODELS = {
    "mlp": F64Case("mlp", (1, 28, 28), 8),
    "mnist_cnn": F64Case("mnist_cnn", (1, 28, 28), 8),
    "cifar_vgg11": F64Case("cifar_vgg11", (3, 32, 32), 4),  # VGG with BatchNorm
    "googlenet": F64Case(
        "googlenet", (3, 64, 64), 4,
        {"num_classes": 10, "aux_logits": True, "init_weights": False, "dropout": 0.0, "dropout_aux": 0.0}, 0.3,
    ),  # fmt: skip
    # 48x48: layer4 works on 2x2 maps, 16 values per BatchNorm channel at batch 4 (at 32x32,
    # 1x1 maps and 4 values per channel amplify rounding to ~6e-13 after three SGD steps).
    "resnet18": F64Case("resnet18", (3, 48, 48), 4, {"num_classes": 10}),  # basic blocks
    # 64x64 for the ImageNet-style nets: their last stage then has 2x2 maps (at 32x32, 1x1 maps
    # leave BatchNorm 4 values per channel; resnet50 measured 2.3e-5 after three SGD steps there).
    "resnet50": F64Case("resnet50", (3, 64, 64), 4, {"num_classes": 10}),  # bottlenecks
    "densenet121": F64Case("densenet121", (3, 64, 64), 4, {"num_classes": 10}),
    "se_resnet18": F64Case("se_resnet18", (3, 64, 64), 4, {"num_classes": 10}),
    # The setting: torchvision's resnet18 at batch 16, 64x64.
    "resnet18_64px": F64Case("resnet18", (3, 64, 64), 16, {"num_classes": 10}),
}


def _no_dropout(model: nnx.Module) -> None:
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nn.Dropout):
            node.deterministic = True


def _float64_twin(case: F64Case, torch_state: dict[str, np.ndarray]) -> nnx.Module:
    """The jaxcnn model in float64 with the torch weights (built under ``nnx.eval_shape``: shapes
    only; RNG streams, which Dropout-free training does not use, get concrete zero keys)."""
    model = nnx.eval_shape(lambda: jaxcnn.models.create(case.name, rngs=nnx.Rngs(0), **case.options))
    as64 = lambda s: jax.ShapeDtypeStruct(s.shape, jnp.float64) if jnp.issubdtype(s.dtype, jnp.floating) else s  # noqa: E731
    nnx.update(model, jax.tree.map(as64, nnx.state(model)))
    load_torch_state_dict(model, torch_state)  # converted in the model's dtype: float64
    for _, variable in nnx.to_flat_state(nnx.state(model, nnx.RngState)):
        value = variable.get_value()
        if isinstance(value, jax.ShapeDtypeStruct):
            is_key = isinstance(variable, nnx.RngKey)
            variable.set_value(jax.random.key(0) if is_key else jnp.zeros(value.shape, value.dtype))
    return model


def _torch_loss(output, labels, aux_loss_weight: float):
    if isinstance(output, tuple):  # GoogLeNet's (logits, aux_logits2, aux_logits1) in training mode
        return TF.cross_entropy(output[0], labels) + sum(aux_loss_weight * TF.cross_entropy(o, labels) for o in output[1:])
    return TF.cross_entropy(output, labels)


def float64_errors(model_key: str, opt_name: str, steps: int = F64_STEPS) -> dict[str, float]:
    """``steps`` float64 training steps on both sides from the same randomised weights; returns
    the worst relative error of the parameters and of the BatchNorm buffers (each tensor against
    its own scale) and asserts the counters equal."""
    case, opt = F64_MODELS[model_key], OPTIMIZERS[opt_name]
    torch.manual_seed(0)
    torch_model = randomize_torch_model(torch_ref.models.create(case.name, **case.options), seed=1).double()
    rng = np.random.default_rng(2)
    images = rng.standard_normal((steps, case.batch, *case.input_chw))
    labels = rng.integers(0, 10, size=(steps, case.batch))
    with jax.enable_x64(True):
        model = _float64_twin(case, {k: v.detach().numpy() for k, v in torch_model.state_dict().items()})
        tx = opt.jax(None)
        _, eval_graphdef, state = create_train_state(model, tx)
        _no_dropout(model)  # create_train_state put the model in training mode, Dropout included
        graphdef = split_model(model)[0]
        train_step = make_train_step(graphdef, tx, aux_loss_weight=case.aux_loss_weight)
        for step in range(steps):
            state, metrics = train_step(state, jnp.asarray(images[step].transpose(0, 2, 3, 1)), jnp.asarray(labels[step], jnp.int32))
        assert metrics["loss"].dtype == jnp.float64
        floating = {x.dtype for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)}
        assert floating == {jnp.dtype(jnp.float64)}, floating
        ours = dict(to_torch_arrays(state_to_model(eval_graphdef, state)))
        step_counter = int(state.step)
    with torch_threads(2):
        torch_model.train()
        for module in torch_model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.eval()
        optimizer = opt.torch(torch_model.parameters())
        for step in range(steps):
            optimizer.zero_grad()
            output = torch_model(torch.from_numpy(images[step]))
            _torch_loss(output, torch.from_numpy(labels[step]), case.aux_loss_weight).backward()
            optimizer.step()
    torch_steps = {int(s["step"]) for s in optimizer.state.values() if "step" in s} or {steps}
    assert {step_counter} == torch_steps == {steps}, (step_counter, torch_steps)
    expected = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    assert sorted(ours) == sorted(expected)
    errors = {"params": 0.0, "batch_stats": 0.0, "worst": ""}
    for key, value in expected.items():
        if key.endswith("num_batches_tracked"):
            assert int(ours[key]) == int(value), key
            continue
        assert ours[key].dtype == np.float64 and value.dtype == np.float64, key
        error = float(np.abs(ours[key] - value).max() / (np.abs(value).max() or 1.0))
        group = "batch_stats" if "running" in key else "params"
        if error > errors[group]:
            errors[group] = error
            if error >= max(errors["params"], errors["batch_stats"]):
                errors["worst"] = key
    return errors


def check_float64(model_key: str, opt_name: str) -> dict[str, float]:
    errors = float64_errors(model_key, opt_name)
    print(f"float64 {model_key} {opt_name}: {errors}")
    adaptive = is_adaptive(OPTIMIZERS[opt_name])
    if model_key in F64_STRICT:
        limit = F64_RTOL_ADAPTIVE if adaptive else F64_RTOL_SGD
    else:
        limit = F64_RTOL_FAMILY_ADAPTIVE if adaptive else F64_RTOL_FAMILY
    assert errors["params"] <= limit and errors["batch_stats"] <= limit, errors
    return errors


# Default run: the basic-block ResNet with SGD at a small input and every other optimizer on
# mnist_cnn (cheap to compile); the family x optimizer matrix and the resnet18 setting
# only with --runslow (a float64 ResNet train step compiles in ~30 s on 2 loaded cores, and torch
# needs ~20 s for its three float64 steps).
F64_DEFAULT = [("resnet18", "sgd_nesterov_wd"), ("mnist_cnn", "adam_l2"), ("mnist_cnn", "adamw"),
               ("mnist_cnn", "rmsprop_momentum_centered")]  # fmt: skip
F64_SLOW = [
    ("resnet18_64px", "sgd_momentum_wd"),
    ("resnet18_64px", "adam_l2"),
    *[(model, opt) for model in F64_MODELS if model != "resnet18_64px" for opt in F64_OPTIMIZERS],
]
F64_SLOW = [case for case in F64_SLOW if case not in F64_DEFAULT]
F64_CASES = [*F64_DEFAULT, *[pytest.param(*case, marks=pytest.mark.slow) for case in F64_SLOW]]


@pytest.mark.parametrize("model_key,opt_name", F64_CASES)
def test_float64_train_step_matches_torch(model_key, opt_name):
    check_float64(model_key, opt_name)
