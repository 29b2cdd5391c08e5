"""Data-parallel training with several JAX processes on this machine (a multi-host rehearsal).

    python scripts/distributed_demo.py                      # 2 processes x 2 CPU devices
    python scripts/distributed_demo.py --processes 4 --devices-per-process 1 --steps 50

Without ``--process-id`` the script is the *launcher*: it picks a free loopback port and starts
``--processes`` copies of itself, each with its own ``--process-id``, waits for them (killing all
after ``--timeout`` seconds) and prints their output. Each copy joins the job through
:func:`jaxcnn.train.distributed.initialize_distributed` (``jax.distributed.initialize``, the
coordinator being process 0 on 127.0.0.1), loads the offline ``digits`` training split, reads
only *its* rows of every global batch, and trains ``--model`` with the project's jitted train
step on a mesh over the devices of all processes (:func:`~jaxcnn.train.distributed.data_parallel`).
Process 0 prints the loss and accuracy of each logged step; at the end every process prints a
checksum of its parameters, which must be identical (the replicas stay in sync).

On real hosts run the worker form on every host instead, with the coordinator's address:
``python scripts/distributed_demo.py --process-id I --processes N --coordinator HOST:PORT``
(and no ``--devices-per-process`` on GPU machines).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--devices-per-process", type=int, default=2, help="CPU devices per process (0: leave as is)")
    parser.add_argument("--model", default="mnist_cnn")
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch (all processes together)")
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=300.0, help="launcher: kill everything after this many seconds")
    parser.add_argument("--process-id", type=int, default=None, help="worker mode (set by the launcher)")
    parser.add_argument("--coordinator", default=None, help="worker mode: HOST:PORT of process 0")
    return parser.parse_args(argv)


def launch(args: argparse.Namespace) -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    passthrough = [arg for arg in sys.argv[1:]]
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, *passthrough, "--process-id", str(i), "--coordinator", f"127.0.0.1:{port}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        for i in range(args.processes)
    ]
    deadline = time.monotonic() + args.timeout
    outputs, codes = [], []
    try:
        for proc in procs:
            try:
                out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            outputs.append(out)
            codes.append(proc.returncode)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for i, (out, code) in enumerate(zip(outputs, codes)):
        lines = [line for line in out.splitlines() if not line.startswith(("W0000", "I0000", "[Gloo]"))]
        print(f"--- process {i} (exit {code}) ---")
        print("\n".join(lines))
    return 0 if all(code == 0 for code in codes) else 1


def work(args: argparse.Namespace) -> None:
    from jaxcnn.train import distributed as dist

    dist.initialize_distributed(
        args.coordinator,
        args.processes,
        args.process_id,
        cpu_devices_per_process=args.devices_per_process or None,
        initialization_timeout=120,
        heartbeat_timeout_seconds=60,
    )
    import jax
    import numpy as np
    from flax import nnx

    import jaxcnn.models
    from jaxcnn import optim
    from jaxcnn.data import load_dataset
    from jaxcnn.train.state import create_train_state
    from jaxcnn.train.step import make_train_step

    lead = jax.process_index() == 0
    mesh = dist.make_mesh()
    if lead:
        print(f"{jax.process_count()} processes, {jax.device_count()} devices: mesh {dict(mesh.shape)}")
    train = load_dataset("digits")["train"]
    images = ((train.images.astype(np.float32) / 255.0 - np.float32(train.mean)) / np.float32(train.std)).astype(np.float32)
    labels = train.labels.astype(np.int32)

    # Every process builds the same initial model (same seed) and the same batch order.
    model = jaxcnn.models.create(args.model, rngs=nnx.Rngs(0))
    tx = optim.create(args.optimizer, lr=args.lr, **({"momentum": 0.9} if args.optimizer == "sgd" else {}))
    graphdef, _, state = create_train_state(model, tx)
    state = dist.replicate(state, mesh)
    step = dist.data_parallel(make_train_step(graphdef, tx), mesh)
    rows = dist.process_batch_slice(mesh, args.batch_size)
    order = np.random.default_rng(0).permutation(len(labels))
    per_epoch = len(labels) // args.batch_size
    start = time.perf_counter()
    for i in range(args.steps):
        batch = order[(i % per_epoch) * args.batch_size : (i % per_epoch + 1) * args.batch_size][rows]
        x, y = dist.shard_local_batch(mesh, images[batch], labels[batch])
        state, metrics = step(state, x, y)
        if (i + 1) % args.log_every == 0 or i + 1 == args.steps:
            m = dist.fetch(metrics)
            if lead:
                print(f"step {i + 1:4d}  loss {float(m['loss']):.4f}  acc {int(m['correct']) / int(m['count']):.3f}")
    params = dist.fetch(state.params)
    checksum = sum(float(np.abs(leaf).sum()) for leaf in jax.tree.leaves(params))
    print(f"process {jax.process_index()}: rows {rows.start}:{rows.stop} of each batch, "
          f"{time.perf_counter() - start:.1f}s, parameter checksum {checksum:.6f}")  # fmt: skip
    dist.shutdown_distributed()


def main(argv=None) -> int:
    import jaxcnn

    jaxcnn.configure_platform()  # this script owns its process: quiet CPU JAX,
    jaxcnn.keep_freed_host_memory()  # and glibc keeps freed memory, as `jaxcnn train` does
    args = parse_args(argv)
    if args.process_id is None:
        return launch(args)
    if args.coordinator is None:
        raise SystemExit("--process-id needs --coordinator HOST:PORT")
    work(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
