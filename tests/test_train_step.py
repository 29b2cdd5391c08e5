"""Train/eval steps: compile once, BatchNorm/Dropout state, tuple outputs, mixed precision, torch parity."""

from __future__ import annotations

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
