"""Train/eval steps: compile once, BatchNorm/Dropout state, tuple outputs, mixed precision, torch parity."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxcnn.models
import jaxcnn.optim
from jaxcnn import nn
from jaxcnn.nn import functional as F
from jaxcnn.train import all_finite, create_train_state, make_steps, state_to_model, update_model


class TinyBNDropNet(nnx.Module):
    """conv(1->4, 3x3) -> BatchNorm -> ReLU -> Dropout -> linear; input (N, 8, 8, 1)."""

    def __init__(self, *, rngs: nnx.Rngs, extra_outputs: str | None = None):
        self.conv = nn.Conv2d(1, 4, 3, rngs=rngs)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5, rngs=rngs)
        self.fc = nn.Linear(4 * 6 * 6, 3, rngs=rngs)
        self.extra_outputs = extra_outputs

    def __call__(self, x):
        h = self.drop(F.relu(self.bn(self.conv(x))))
        logits = self.fc(h.reshape(h.shape[0], -1))
        if self.extra_outputs == "aux":
            return logits, logits, h  # (logits, an auxiliary head equal to the main one, features)
        return logits


class LinearNet(nnx.Module):
    """One linear layer; returns (logits, logits) when ``aux`` so the aux loss equals the main one."""

    def __init__(self, *, rngs: nnx.Rngs, aux: bool = False):
        self.fc = nn.Linear(16, 3, rngs=rngs)
        self.aux = aux

    def __call__(self, x):
        logits = self.fc(x.reshape(x.shape[0], -1))
        return (logits, logits, x) if self.aux else logits


def _batch(n=8, size=8, seed=0, classes=3):
    kx, ky = jax.random.split(jax.random.key(seed))
    return jax.random.normal(kx, (n, size, size, 1)), jax.random.randint(ky, (n,), 0, classes)


def test_five_steps_compile_once_and_update_batchnorm_and_rng():
    model = TinyBNDropNet(rngs=nnx.Rngs(0))
    tx = jaxcnn.optim.create("sgd", lr=0.1, momentum=0.9)
    graphdef, eval_graphdef, state = create_train_state(model, tx)
    steps = make_steps(graphdef, eval_graphdef, tx)
    x, y = _batch()
    rng_counts = []
    for _ in range(5):
        state, metrics = steps.train_step(state, x, y)
        rng_counts.append(int(state.rest["drop"]["rngs"]["count"]))
    assert steps.trace_counts["train"] == 1
    assert steps.train_step._cache_size() == 1
    assert int(state.step) == 5
    # the state crosses the jit boundary as arrays: no nnx.Variable nodes to flatten per call
    nodes = jax.tree.leaves(state, is_leaf=lambda node: isinstance(node, nnx.Variable))
    assert nodes and all(isinstance(node, jax.Array) for node in nodes)
    assert int(state.rest["bn"]["num_batches_tracked"]) == 5
    assert not np.allclose(np.asarray(state.rest["bn"]["running_mean"]), 0.0)
    assert rng_counts == sorted(set(rng_counts)) and len(rng_counts) == 5  # a fresh dropout key each step
    assert set(metrics) == {"loss", "correct", "count"} and int(metrics["count"]) == 8
    # eval mode: deterministic (no dropout), running statistics, no state change, compiled once
    m1 = steps.eval_step(state, x, y)
    m2 = steps.eval_step(state, x, y)
    assert float(m1["loss"]) == float(m2["loss"])
    assert steps.trace_counts["eval"] == 1
    assert bool(all_finite(state))


def test_eval_step_matches_state_to_model():
    model = TinyBNDropNet(rngs=nnx.Rngs(1))
    tx = jaxcnn.optim.create("adam", lr=1e-2)
    graphdef, eval_graphdef, state = create_train_state(model, tx)
    steps = make_steps(graphdef, eval_graphdef, tx)
    x, y = _batch(seed=1)
    for _ in range(3):
        state, _ = steps.train_step(state, x, y)
    metrics = steps.eval_step(state, x, y)
    eval_model = state_to_model(eval_graphdef, jax.tree.map(jnp.copy, state))
    logits = eval_model(x)
    expected = F.cross_entropy(logits, y)
    np.testing.assert_allclose(float(metrics["loss"]), float(expected), rtol=1e-6)
    assert int(metrics["correct"]) == int(jnp.sum(jnp.argmax(logits, -1) == y))
    # nnx.update writes the trained state into the original object
    update_model(model, jax.tree.map(jnp.copy, state))
    model.eval()
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(logits), rtol=1e-6)


def test_tuple_output_uses_first_as_logits_and_weights_aux_losses():
    """(logits, aux, features): the metric is the main loss; the aux head adds w * its loss."""
    x, y = _batch(n=6, size=4, seed=2)

    def delta(aux: bool, weight: float):
        model = LinearNet(rngs=nnx.Rngs(0), aux=aux)
        tx = optax.sgd(0.1)
        graphdef, eval_graphdef, state = create_train_state(model, tx)
        before = np.asarray(state.params["fc"]["weight"]).copy()
        steps = make_steps(graphdef, eval_graphdef, tx, aux_loss_weight=weight)
        state, metrics = steps.train_step(state, x, y)
        return np.asarray(state.params["fc"]["weight"]) - before, float(metrics["loss"])

    plain, loss_plain = delta(False, 0.0)
    ignored, loss_ignored = delta(True, 0.0)
    weighted, loss_weighted = delta(True, 0.3)
    assert loss_plain == pytest.approx(loss_ignored) == pytest.approx(loss_weighted)
    np.testing.assert_allclose(ignored, plain, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(weighted, 1.3 * plain, rtol=1e-4, atol=1e-7)  # loss = (1 + 0.3) * CE


def test_label_smoothing_metric_matches_functional():
    model = LinearNet(rngs=nnx.Rngs(3))
    tx = optax.sgd(0.0)
    graphdef, eval_graphdef, state = create_train_state(model, tx)
    steps = make_steps(graphdef, eval_graphdef, tx, label_smoothing=0.1)
    x, y = _batch(n=5, size=4, seed=3)
    logits = model(x)
    state, metrics = steps.train_step(state, x, y)
    np.testing.assert_allclose(float(metrics["loss"]), float(F.cross_entropy(logits, y, label_smoothing=0.1)), rtol=1e-6)


def test_bfloat16_compute_keeps_float32_master_weights():
    model = TinyBNDropNet(rngs=nnx.Rngs(4))
    model_ref = TinyBNDropNet(rngs=nnx.Rngs(4))  # not nnx.clone: that shares (donated) buffers
    tx = jaxcnn.optim.create("sgd", lr=0.05)
    x, y = _batch(seed=4)
    g32, e32, s32 = create_train_state(model_ref, tx)
    g16, e16, s16 = create_train_state(model, tx)
    f32 = make_steps(g32, e32, tx)
    bf16 = make_steps(g16, e16, tx, compute_dtype=jnp.bfloat16)
    s32, m32 = f32.train_step(s32, x, y)
    s16, m16 = bf16.train_step(s16, x, y)
    dtypes = {leaf.dtype for leaf in jax.tree.leaves(s16.params) + jax.tree.leaves(s16.rest) if jnp.issubdtype(leaf.dtype, jnp.floating)}
    assert dtypes == {jnp.dtype(jnp.float32)}
    assert abs(float(m16["loss"]) - float(m32["loss"])) < 0.05
    np.testing.assert_allclose(float(bf16.eval_step(s16, x, y)["loss"]), float(f32.eval_step(s32, x, y)["loss"]), atol=0.1)
    s16, _ = bf16.train_step(s16, x, y)
    assert bf16.trace_counts["train"] == 1


def test_mnist_cnn_sgd_steps_match_torch():
    """Three SGD-momentum steps of the jitted train step equal torch's on the same weights."""
    torch = pytest.importorskip("torch")
    import torch_ref.models
    from jaxcnn.convert import to_torch_state_dict

    model = jaxcnn.models.create("mnist_cnn", num_classes=10, rngs=nnx.Rngs(0))
    torch_model = torch_ref.models.create("mnist_cnn", num_classes=10)
    torch_model.load_state_dict(to_torch_state_dict(model))
    tx = jaxcnn.optim.create("sgd", lr=0.05, momentum=0.9, weight_decay=1e-4)
    opt = torch.optim.SGD(torch_model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    graphdef, eval_graphdef, state = create_train_state(model, tx)
    steps = make_steps(graphdef, eval_graphdef, tx)
    rng = np.random.default_rng(0)
    for i in range(3):
        x = rng.standard_normal((16, 28, 28, 1)).astype(np.float32)
        y = rng.integers(0, 10, 16).astype(np.int32)
        state, metrics = steps.train_step(state, jnp.asarray(x), jnp.asarray(y))
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(torch_model(torch.from_numpy(x).permute(0, 3, 1, 2)), torch.from_numpy(y).long())
        loss.backward()
        opt.step()
        np.testing.assert_allclose(float(metrics["loss"]), loss.item(), rtol=1e-5)
    trained = state_to_model(eval_graphdef, state)
    expected = torch_model.state_dict()
    for key, value in to_torch_state_dict(trained).items():
        np.testing.assert_allclose(value.numpy(), expected[key].numpy(), rtol=1e-4, atol=1e-6, err_msg=key)


# ----------------------------------------------------------------------------------------
# Precision: matmul precision in the compiled steps, float64 that stays float64, autocast rules.
# ----------------------------------------------------------------------------------------


class ConvBNLinear(nnx.Module):
    """conv(1->4, 3x3) -> BatchNorm -> ReLU -> linear; input (N, 8, 8, 1) NHWC."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv = nn.Conv2d(1, 4, 3, bias=False, rngs=rngs)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 3, rngs=rngs)

    def __call__(self, x):
        h = F.relu(self.bn(self.conv(x)))
        return self.fc(h.reshape(h.shape[0], -1))


def _precisions(hlo_text: str, op: str) -> list[str]:
    """The operand precisions of every ``op`` (``dot_general``/``convolution``) in StableHLO text."""
    found = []
    for line in hlo_text.splitlines():
        if f"stablehlo.{op}" in line:
            found += re.findall(r"#stablehlo<precision (\w+)>", line)  # convolution
            found += [p for pair in re.findall(r"precision = \[(\w+), (\w+)\]", line) for p in pair]  # dot_general
    return found


@pytest.mark.parametrize("precision,expected", [("default", "DEFAULT"), ("high", "HIGH"), ("highest", "HIGHEST")])
def test_matmul_precision_reaches_every_conv_and_dot_of_both_steps(precision, expected):
    from jaxcnn.nn import using_conv_backend

    tx = jaxcnn.optim.create("sgd", lr=0.1)
    graphdef, eval_graphdef, state = create_train_state(ConvBNLinear(rngs=nnx.Rngs(0)), tx)
    steps = make_steps(graphdef, eval_graphdef, tx, matmul_precision=precision)
    x, y = _batch(n=2)
    with using_conv_backend("xla"):  # oneDNN's custom call has no precision config (CPU float32 is exact anyway)
        texts = {"train": steps.train_step.lower(state, x, y).as_text(), "eval": steps.eval_step.lower(state, x, y).as_text()}
    for name, text in texts.items():
        for op, minimum in (("dot_general", 1 if name == "eval" else 3), ("convolution", 1 if name == "eval" else 2)):
            found = _precisions(text, op)
            # forward, and in training the input/weight gradients: all carry the setting
            assert len(found) >= 2 * minimum and set(found) == {expected}, (name, op, found)


def test_matmul_precision_is_validated():
    tx = jaxcnn.optim.create("sgd", lr=0.1)
    graphdef, _, _ = create_train_state(LinearNet(rngs=nnx.Rngs(0)), tx)
    with pytest.raises(ValueError, match="matmul_precision"):
        jaxcnn.train.make_train_step(graphdef, tx, matmul_precision="tf32")
    with pytest.raises(ValueError, match="matmul_precision"):
        jaxcnn.train.TrainConfig(matmul_precision="fastest")


def _to_dtype(model: nnx.Module, dtype) -> nnx.Module:
    state = nnx.state(model)
    nnx.update(model, jax.tree.map(lambda v: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, state))
    return model


def test_float64_step_computes_in_float64():
    """A float64 model trains in float64: one plain SGD step equals ``params - lr * grad`` of
    :func:`model_loss` in float64 to float64 rounding (a float32 cast of the logits, as the step
    once did, is ~1e-8 off)."""
    with jax.enable_x64(True):
        model = _to_dtype(ConvBNLinear(rngs=nnx.Rngs(5)), jnp.float64)
        tx = optax.sgd(0.5)
        graphdef, eval_graphdef, state = create_train_state(model, tx)
        x, y = _batch(n=6, seed=5)
        x = x.astype(jnp.float64)
        params, rest = jax.tree.map(jnp.copy, (state.params, state.rest))

        def loss(p):
            return jaxcnn.train.model_loss(nnx.merge(graphdef, p, rest, copy=True), x, y)[0]

        expected_loss, grads = jax.value_and_grad(loss)(params)
        steps = make_steps(graphdef, eval_graphdef, tx)
        state, metrics = steps.train_step(state, x, y)
        assert metrics["loss"].dtype == jnp.float64 and steps.eval_step(state, x, y)["loss"].dtype == jnp.float64
        assert float(metrics["loss"]) == pytest.approx(float(expected_loss), rel=1e-15)
        leaves = jax.tree.leaves(state.params) + [v for v in jax.tree.leaves(state.rest) if jnp.issubdtype(v.dtype, jnp.floating)]
        assert {leaf.dtype for leaf in leaves} == {jnp.dtype(jnp.float64)}
        expected = jax.tree.map(lambda p, g: p - 0.5 * g, params, grads)
        for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected)):
            scale = float(jnp.max(jnp.abs(want)))
            assert float(jnp.max(jnp.abs(got - want))) <= 1e-14 * scale


def test_trainer_float64_needs_x64():
    if jax.config.read("jax_enable_x64"):
        pytest.skip("x64 is already on in this process")
    with pytest.raises(ValueError, match="jax_enable_x64"):
        jaxcnn.train.Trainer(dict(model="mlp", train_limit=32, eval_limit=16, progress=False, compute_dtype="float64"))


def test_bfloat16_batchnorm_statistics_are_float32_of_the_bf16_conv():
    """Autocast's rules: the conv runs in bfloat16, BatchNorm takes its statistics of that
    output in float32 (float32 parameters) and the running statistics stay float32.

    Images (integers in [-3, 3]) and weights (multiples of 1/8) are chosen so that the conv
    output is exact in bfloat16; its float32 statistics then agree with float64 ones to float32
    rounding, where statistics computed in bfloat16 are ~1e-3 off."""
    rng = np.random.default_rng(6)
    model = ConvBNLinear(rngs=nnx.Rngs(6))
    model.conv.weight.set_value(jnp.asarray(rng.integers(-8, 9, (3, 3, 1, 4)) / 8, jnp.float32))
    x = jnp.asarray(rng.integers(-3, 4, (16, 8, 8, 1)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 3, 16), jnp.int32)
    w = np.asarray(model.conv.weight.get_value(), np.float64)
    mean0, var0 = (np.asarray(getattr(model.bn, k).get_value(), np.float64) for k in ("running_mean", "running_var"))
    tx = optax.sgd(0.0)
    graphdef, eval_graphdef, state = create_train_state(model, tx)
    steps = make_steps(graphdef, eval_graphdef, tx, compute_dtype=jnp.bfloat16)
    state, _ = steps.train_step(state, x, y)
    xs = np.asarray(x, np.float64)
    h = np.stack([np.einsum("nhwc,hwcd->nd", xs[:, i : i + 3, j : j + 3], w) for i in range(6) for j in range(6)], 1)
    mean, var = h.mean((0, 1)), h.reshape(-1, 4).var(0, ddof=1)
    assert state.rest["bn"]["running_var"].dtype == jnp.float32
    np.testing.assert_allclose(state.rest["bn"]["running_mean"], 0.9 * mean0 + 0.1 * mean, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(state.rest["bn"]["running_var"], 0.9 * var0 + 0.1 * var, rtol=2e-6)


def test_cli_float64_run_trains_in_float64(tmp_path):
    """``jaxcnn train --compute-dtype float64 --matmul-precision highest``: the program turns on
    x64 (restored here afterwards), the Trainer keeps weights, statistics and optimizer state
    (with a constant learning rate; jaxcnn's schedules are evaluated in float32) in float64,
    and the run completes."""
    import argparse

    from jaxcnn.train.commands import add_train_parser, config_from_args

    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers())
    flags = ["train", "--model", "mlp", "--train-limit", "48", "--eval-limit", "16", "--batch-size", "16",
             "--epochs", "1", "--no-progress", "--no-tensorboard", "--no-plots", "--out", str(tmp_path / "run"),
             "--compute-dtype", "float64", "--matmul-precision", "highest", "--schedule", "constant"]  # fmt: skip
    args = parser.parse_args(flags)
    config = config_from_args(args)
    assert (config.compute_dtype, config.matmul_precision) == ("float64", "highest")
    before = jax.config.read("jax_enable_x64")
    try:
        assert args.func(args) == 0
        trainer = jaxcnn.train.Trainer(config.replace(out=None))
        floating = [x for x in jax.tree.leaves(trainer.state) if jnp.issubdtype(x.dtype, jnp.floating)]
        assert {x.dtype for x in floating} == {jnp.dtype(jnp.float64)}
        trainer.state, metrics = trainer.steps.train_step(trainer.state, *next(iter(trainer.train_loader.iter_epoch(0))))
        assert metrics["loss"].dtype == jnp.float64
    finally:
        jax.config.update("jax_enable_x64", before)
