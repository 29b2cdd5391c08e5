"""Data-parallel training on 4 (virtual CPU) devices equals training on 1 device.

JAX fixes its device count when its backend starts, and this test process's JAX has already
started with one CPU device, so the training runs in a fresh subprocess (this file, run as a
script) with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` and ``JAX_PLATFORMS=cpu``.

The subprocess trains a tiny Conv-BN-ReLU-pool-Linear model (two BatchNorms) with SGD
(momentum, weight decay) for ``STEPS`` steps on the same global batches of 16:

* ``dp4``: the project's jitted train step wrapped by :func:`jaxcnn.train.distributed.data_parallel`
  on a 4-device mesh (4 examples per device, state replicated);
* ``placed4``: the *unwrapped* jitted step fed with inputs placed by ``replicate``/``shard_batch``
  (GSPMD follows the input shardings);
* ``dp1``: the same wrapper on a 1-device mesh: the whole batch on one device;
* ``quarter1``: control, 1 device trained on only the first 4 examples of each batch -- what a
  device would compute if gradients and BatchNorm statistics were *not* combined across devices.

Tolerance: the 4-device program splits every batch reduction (the loss mean, the gradient sums,
BatchNorm's batch mean/variance) into 4 partial sums plus an all-reduce, so float32 values are
summed in a different order than on 1 device: ~1e-7 relative per reduction, carried through the
steps. ``RTOL = 1e-5`` (normwise relative per tensor, as in the parity suite); the measured worst
divergence is 2.6e-7 (``bn2.running_mean``) after 5 steps. The ``quarter1`` control must differ by far more,
which shows the comparison would notice per-device BatchNorm statistics or a missing gradient
all-reduce.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

STEPS = 5
GLOBAL_BATCH = 16
DEVICES = 4
RTOL = 1e-5
TIMEOUT_S = 240  # generous: JAX start + 4 small compilations on a loaded 2-core CI machine


# ----------------------------------------------------------------------------------------
# Worker side (runs in the subprocess; imports JAX only there)
# ----------------------------------------------------------------------------------------


def tiny_bn_model():
    """(N, 8, 8, 3) -> (N, 10): conv-BN-ReLU-pool twice, flatten (torch order), linear.

    Built abstractly and filled from a fixed numpy seed (torch layout, through the converter),
    so every process and every run starts from the same weights without eager initialisers.
    """
    from flax import nnx

    from jaxcnn import nn
    from jaxcnn.convert import load_torch_state_dict, torch_shapes
    from jaxcnn.nn import functional as F

    class TinyBN(nnx.Module):
        def __init__(self, rngs):
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False, rngs=rngs)
            self.bn1 = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, 16, 3, padding=1, bias=False, rngs=rngs)
            self.bn2 = nn.BatchNorm2d(16, momentum=0.2)
            self.fc = nn.Linear(64, 10, rngs=rngs)

        def __call__(self, x):
            x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
            x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
            return self.fc(F.flatten(x, 1, torch_order=True))

    model = nnx.eval_shape(lambda: TinyBN(nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    state = {}
    for key, shape in torch_shapes(model).items():
        if key.endswith("num_batches_tracked"):
            state[key] = np.asarray(3, np.int64)
        elif key.endswith("running_var") or (key.startswith("bn") and key.endswith("weight")):
            state[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            state[key] = (0.3 * rng.standard_normal(shape)).astype(np.float32)
    load_torch_state_dict(model, state)
    return model


def make_data(steps: int = STEPS, batch: int = GLOBAL_BATCH):
    """Fixed global batches: float32 images (steps, B, 8, 8, 3) NHWC, int32 labels (steps, B)."""
    rng = np.random.default_rng(1)
    images = rng.standard_normal((steps, batch, 8, 8, 3)).astype(np.float32)
    # Per-example offsets make the 4 quarters of a batch statistically different, so
    # per-device BatchNorm statistics would be visibly wrong.
    images += rng.standard_normal((steps, batch, 1, 1, 3)).astype(np.float32)
    labels = rng.integers(0, 10, (steps, batch)).astype(np.int32)
    return images, labels


def make_tx():
    from jaxcnn import optim

    return optim.create("sgd", lr=0.1, momentum=0.9, weight_decay=1e-3)


def flat_state(state) -> dict[str, np.ndarray]:
    """``{"params.conv1.weight": ..., "rest.bn1.running_mean": ...}`` as host numpy."""
    from flax import nnx

    from jaxcnn.train.distributed import fetch

    out = {}
    for group in ("params", "rest"):
        for path, leaf in nnx.to_flat_state(getattr(state, group)):
            out[group + "." + ".".join(map(str, path))] = fetch(leaf)
    return out


def train(devices, images, labels, *, wrapped: bool = True):
    """Train STEPS steps data-parallel over ``devices``; returns (flat final state, losses, info)."""
    import jax

    from jaxcnn.train import distributed as dist
    from jaxcnn.train.state import create_train_state
    from jaxcnn.train.step import make_train_step

    mesh = dist.make_mesh(devices)
    tx = make_tx()
    graphdef, _, state = create_train_state(tiny_bn_model(), tx)
    state = dist.replicate(state, mesh)
    trace_counts: dict[str, int] = {}
    step = make_train_step(graphdef, tx, trace_counts=trace_counts)
    if wrapped:
        step = dist.data_parallel(step, mesh)
    losses, info = [], {}
    for i in range(images.shape[0]):
        x, y = dist.shard_batch(mesh, images[i], labels[i])
        if i == 0:
            info["shard_shapes"] = sorted({tuple(s.data.shape) for s in x.addressable_shards})
            info["num_shards"] = len(x.addressable_shards)
            if wrapped:
                hlo = step.lower(state, x, y).compile().as_text()
                info["all_reduce_in_hlo"] = "all-reduce" in hlo
        state, metrics = step(state, x, y)
        losses.append(float(metrics["loss"]))
        info["count"] = int(metrics["count"])
    leaves = jax.tree.leaves(state)
    info["state_replicated"] = all(leaf.sharding.is_fully_replicated for leaf in leaves)
    info["state_devices"] = min(len(leaf.sharding.device_set) for leaf in leaves)
    info["traces"] = trace_counts.get("train", 0)
    return flat_state(state), losses, info


def worker(out_dir: str) -> None:
    import jax

    out = Path(out_dir)
    devices = jax.devices()
    assert len(devices) == DEVICES, f"expected {DEVICES} CPU devices, got {devices}"
    images, labels = make_data()
    quarter = GLOBAL_BATCH // DEVICES
    runs = {
        "dp4": train(devices, images, labels),
        "placed4": train(devices, images, labels, wrapped=False),
        "dp1": train(devices[:1], images, labels),
        "quarter1": train(devices[:1], images[:, :quarter], labels[:, :quarter]),
    }
    from jaxcnn.train import distributed as dist

    mesh = dist.make_mesh(devices)
    checks = {"rows": [dist.process_batch_slice(mesh, GLOBAL_BATCH).start, dist.process_batch_slice(mesh, GLOBAL_BATCH).stop]}
    try:
        dist.shard_batch(mesh, images[0, :6])  # 6 examples do not split over 4 devices
        checks["indivisible_rejected"] = False
    except ValueError:
        checks["indivisible_rejected"] = True
    meta = {"checks": checks}
    for name, (state, losses, info) in runs.items():
        np.savez(out / f"{name}.npz", **state)
        meta[name] = {"losses": losses, **info}
    (out / "meta.json").write_text(json.dumps(meta, default=list))


# ----------------------------------------------------------------------------------------
# Test side
# ----------------------------------------------------------------------------------------


def _relative_errors(actual: dict, expected: dict) -> dict[str, float]:
    assert sorted(actual) == sorted(expected)
    errors = {}
    for key, ref in expected.items():
        if key.endswith("num_batches_tracked"):
            assert int(actual[key]) == int(ref), f"{key}: {actual[key]} != {ref}"
            continue
        scale = float(np.abs(ref).max()) or 1.0
        errors[key] = float(np.abs(actual[key].astype(np.float64) - ref).max() / scale)
    return errors


def test_four_devices_match_one_device(tmp_path):
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={DEVICES}").strip()
    result = subprocess.run(
        [sys.executable, __file__, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert result.returncode == 0, f"worker failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    meta = json.loads((tmp_path / "meta.json").read_text())
    checks = meta.pop("checks")
    assert checks == {"rows": [0, GLOBAL_BATCH], "indivisible_rejected": True}, checks
    states = {name: dict(np.load(tmp_path / f"{name}.npz")) for name in meta}

    dp4, dp1 = meta["dp4"], meta["dp1"]
    # The batch really was split: 4 shards of 4 examples, one per device ...
    assert dp4["num_shards"] == DEVICES and dp4["shard_shapes"] == [[GLOBAL_BATCH // DEVICES, 8, 8, 3]]
    assert dp1["num_shards"] == 1 and dp1["shard_shapes"] == [[GLOBAL_BATCH, 8, 8, 3]]
    # ... the compiled 4-device step combines them with an all-reduce, and the metrics count
    # the global batch.
    assert dp4["all_reduce_in_hlo"] and dp4["count"] == GLOBAL_BATCH
    # The state (params, BatchNorm statistics, optimizer state, step) stays replicated on all
    # 4 devices, and the step compiled once.
    for name in ("dp4", "placed4"):
        assert meta[name]["state_replicated"] and meta[name]["state_devices"] == DEVICES, meta[name]
        assert meta[name]["traces"] == 1, meta[name]

    for name in ("dp4", "placed4"):
        np.testing.assert_allclose(meta[name]["losses"], dp1["losses"], rtol=RTOL, err_msg=name)
        errors = _relative_errors(states[name], states["dp1"])
        worst = max(errors, key=errors.get)
        print(f"{name} vs 1 device: worst {worst} {errors[worst]:.2e}")
        # Parameters and BatchNorm running statistics: the latter prove the batch statistics
        # were global (all-reduced) batch statistics, not per-device ones.
        assert errors[worst] <= RTOL, f"{name}: {worst} differs by {errors[worst]:.3g} (normwise)"
        assert any("running_mean" in k for k in errors) and any("running_var" in k for k in errors)

    # Sensitivity: one device's quarter of the batch gives clearly different statistics and
    # parameters, so the comparison above would catch non-synchronised devices.
    control = _relative_errors(states["quarter1"], states["dp1"])
    stats = max(v for k, v in control.items() if "running" in k)
    params = max(v for k, v in control.items() if k.startswith("params."))
    print(f"control (a quarter of each batch on 1 device): statistics {stats:.2e}, params {params:.2e}")
    assert stats > 1000 * RTOL and params > 1000 * RTOL, control


if __name__ == "__main__":
    worker(sys.argv[1])
