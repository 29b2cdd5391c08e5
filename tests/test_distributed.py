"""Two JAX processes on localhost train like one process with the whole batch.

The test launches this file twice as a script. Each process joins the job through
:func:`jaxcnn.train.distributed.initialize_distributed` (``jax.distributed.initialize``; the
coordinator is process 0 on ``127.0.0.1`` at a free port; cross-process collectives on CPU go
over gloo/TCP on loopback) with 2 CPU devices of its own, so the mesh has 4 devices in 2
processes. Each process builds the same tiny BatchNorm model, loads *only its half* of every
global batch (:func:`~jaxcnn.train.distributed.process_batch_slice`), assembles the global batch
with ``jax.make_array_from_process_local_data`` and runs the project's jitted train step through
:func:`~jaxcnn.train.distributed.data_parallel`. The final parameters and BatchNorm statistics
must equal a single-process, single-device run on the full batches (computed in this pytest
process), and the two processes must hold identical replicas.

Tolerance ``RTOL = 1e-5`` normwise: as in ``test_multi_device.py`` the only difference is the
order in which the batch reductions are summed (per device, then across devices and
processes), ~1e-7 relative per step; measured 3.1e-7 (``bn1.bias``) after 5 steps. The control -- one process's
half of each batch trained alone -- differs by far more, so the check would notice a missing
cross-process all-reduce (of gradients or of BatchNorm statistics).

Robustness: every subprocess gets a hard deadline (``TIMEOUT_S``) and is killed if it runs over,
so a hung collective fails the test instead of blocking CI; ``jax.distributed`` itself is given
bounded initialisation/heartbeat timeouts. Only loopback addresses are used.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_multi_device import (  # noqa: E402  (shared tiny model, data and training loop)
    GLOBAL_BATCH,
    RTOL,
    _relative_errors,
    flat_state,
    make_data,
    make_tx,
    tiny_bn_model,
    train,
)

NUM_PROCESSES = 2
DEVICES_PER_PROCESS = 2
TIMEOUT_S = 240  # whole launch, both processes; JAX start + compile on a loaded 2-core machine


# ----------------------------------------------------------------------------------------
# Worker side
# ----------------------------------------------------------------------------------------


def worker(process_id: int, port: int, out_dir: str) -> None:
    from jaxcnn.train import distributed as dist

    dist.initialize_distributed(
        f"127.0.0.1:{port}",
        NUM_PROCESSES,
        process_id,
        cpu_devices_per_process=DEVICES_PER_PROCESS,
        initialization_timeout=120,
        heartbeat_timeout_seconds=30,
        shutdown_timeout_seconds=60,
    )
    import jax

    from jaxcnn.train.state import create_train_state
    from jaxcnn.train.step import make_train_step

    assert jax.process_count() == NUM_PROCESSES and jax.process_index() == process_id
    assert jax.device_count() == NUM_PROCESSES * DEVICES_PER_PROCESS
    assert jax.local_device_count() == DEVICES_PER_PROCESS

    images, labels = make_data()
    mesh = dist.make_mesh()  # all 4 devices of both processes
    rows = dist.process_batch_slice(mesh, GLOBAL_BATCH)
    tx = make_tx()
    graphdef, _, state = create_train_state(tiny_bn_model(), tx)
    state = dist.replicate(state, mesh)
    step = dist.data_parallel(make_train_step(graphdef, tx), mesh)
    losses = []
    for i in range(images.shape[0]):
        # Only this process's rows are ever read: the other half lives in the other process.
        x, y = dist.shard_local_batch(mesh, images[i, rows], labels[i, rows])
        assert x.shape == images[i].shape and not x.is_fully_addressable
        state, metrics = step(state, x, y)
        losses.append(float(dist.fetch(metrics["loss"])))
    np.savez(Path(out_dir) / f"process{process_id}.npz", **flat_state(state))
    meta = {"rows": [rows.start, rows.stop], "losses": losses, "count": int(dist.fetch(metrics["count"]))}
    (Path(out_dir) / f"process{process_id}.json").write_text(json.dumps(meta))
    dist.shutdown_distributed()


# ----------------------------------------------------------------------------------------
# Test side
# ----------------------------------------------------------------------------------------


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(out_dir: Path) -> list[tuple[int, str]]:
    """Run both processes to completion (or kill them at the deadline); (returncode, log) each."""
    port = _free_loopback_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    procs, logs = [], []
    try:
        for process_id in range(NUM_PROCESSES):
            log = open(out_dir / f"log{process_id}.txt", "w+")
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, str(process_id), str(port), str(out_dir)],
                    env=env, stdout=log, stderr=subprocess.STDOUT,
                )  # fmt: skip
            )
        deadline = time.monotonic() + TIMEOUT_S
        for proc in procs:
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    finally:
        for proc in procs:  # only the processes started here, by handle
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    results = []
    for proc, log in zip(procs, logs):
        log.seek(0)
        text = log.read()
        log.close()
        results.append((proc.returncode, text))
    return results


def test_two_processes_match_one_process(tmp_path):
    results = _launch(tmp_path)
    if any(code != 0 and "address already in use" in log.lower() for code, log in results):
        results = _launch(tmp_path)  # the free port was taken in between; try once more
    for process_id, (code, log) in enumerate(results):
        tail = "\n".join(line for line in log.splitlines() if not line.startswith(("W0000", "I0000")))[-4000:]
        assert code == 0, f"process {process_id} exited with {code} (killed at the {TIMEOUT_S}s deadline if negative):\n{tail}"

    metas = [json.loads((tmp_path / f"process{p}.json").read_text()) for p in range(NUM_PROCESSES)]
    states = [dict(np.load(tmp_path / f"process{p}.npz")) for p in range(NUM_PROCESSES)]
    half = GLOBAL_BATCH // NUM_PROCESSES
    # Each process supplied a different half of every batch; the step saw the global batch.
    assert [m["rows"] for m in metas] == [[0, half], [half, GLOBAL_BATCH]]
    assert all(m["count"] == GLOBAL_BATCH for m in metas)
    # Both processes hold bit-identical replicas and report the same losses.
    assert metas[0]["losses"] == metas[1]["losses"]
    for key in states[0]:
        np.testing.assert_array_equal(states[0][key], states[1][key], err_msg=key)

    # Reference: one process, one device, the whole batch (this pytest process's JAX).
    import jax

    images, labels = make_data()
    reference, ref_losses, _ = train(jax.devices()[:1], images, labels)
    np.testing.assert_allclose(metas[0]["losses"], ref_losses, rtol=RTOL)
    errors = _relative_errors(states[0], reference)
    worst = max(errors, key=errors.get)
    print(f"2 processes x {DEVICES_PER_PROCESS} devices vs 1 device: worst {worst} {errors[worst]:.2e}")
    assert errors[worst] <= RTOL, f"{worst} differs by {errors[worst]:.3g} (normwise)"

    # Control: process 0's half trained alone is far off, so the match above needed the
    # cross-process all-reduces.
    alone, _, _ = train(jax.devices()[:1], images[:, :half], labels[:, :half])
    control = _relative_errors(alone, reference)
    assert max(v for k, v in control.items() if "running" in k) > 1000 * RTOL, control
    assert max(v for k, v in control.items() if k.startswith("params.")) > 1000 * RTOL, control


if __name__ == "__main__":
    worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])


def test_argument_checks_need_no_cluster():
    import jax
    import pytest

    from jaxcnn.train import distributed as dist

    with pytest.raises(ValueError, match="process_id"):
        dist.initialize_distributed("127.0.0.1:1", 2, 2)
    mesh = dist.make_mesh(jax.devices()[:1])
    assert dict(mesh.shape) == {dist.BATCH_AXIS: 1}
    assert dist.process_batch_slice(mesh, 8) == slice(0, 8)
    key = dist.replicate(jax.random.key(0), mesh)  # PRNG key arrays stay key arrays
    assert jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
