"""Data-parallel training over a device mesh, on one process or several.

The project's jitted train step (:func:`jaxcnn.train.step.make_train_step`) is written for one
logical batch. Data parallelism needs no second step function: place the inputs on a
:class:`jax.sharding.Mesh` with one axis, ``"batch"``, and let XLA's SPMD partitioner (GSPMD)
split the computation:

* the image/label batch is *sharded* along its leading axis, ``NamedSharding(mesh, P("batch"))``:
  a global ``(B, H, W, C)`` batch puts ``B / n`` examples on each of the ``n`` devices;
* the :class:`~jaxcnn.train.state.TrainState` (parameters, BatchNorm statistics, optimizer
  state, step) is *replicated*, ``NamedSharding(mesh, P())``.

The step's program is still the single-batch program: the loss is the mean over the full logical
batch, so the partitioner computes per-device partial sums and inserts the all-reduce of the
gradients (and of the loss) itself. BatchNorm's batch mean and variance are reductions over the
(sharded) batch axis of the logical array, so they become all-reduced *global* batch statistics
as well -- the same numbers as on one device with the whole batch (what torch calls SyncBatchNorm),
not per-device statistics. ``tests/test_multi_device.py`` checks both against a one-device run;
only the order of the floating-point summation differs (~1e-7 relative per step).

Multi-process (multi-host) runs use JAX's own runtime: :func:`initialize_distributed` wraps
:func:`jax.distributed.initialize` (CPU processes exchange collectives over gloo/TCP). Every
process then runs the same program on a mesh over *all* processes' devices
(``jax.devices()``); each process loads only its rows of the global batch
(:func:`process_batch_slice`) and assembles the global batch array with
:func:`jax.make_array_from_process_local_data` (:func:`shard_local_batch`).

Typical use (any number of processes, including one)::

    mesh = make_mesh()                                    # all devices, axis "batch"
    graphdef, eval_graphdef, state = create_train_state(model, tx)
    state = replicate(state, mesh)
    train_step = data_parallel(make_train_step(graphdef, tx), mesh)
    rows = process_batch_slice(mesh, global_batch)        # this process's rows
    for images, labels in batches:                        # images[rows], labels[rows]
        x, y = shard_local_batch(mesh, images[rows], labels[rows])
        state, metrics = train_step(state, x, y)
    params = fetch(state.params)                          # host numpy (replicated)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "BATCH_AXIS",
    "batch_sharding",
    "data_parallel",
    "fetch",
    "initialize_distributed",
    "make_mesh",
    "process_batch_slice",
    "replicate",
    "replicated_sharding",
    "shard_batch",
    "shard_local_batch",
    "shutdown_distributed",
]

BATCH_AXIS = "batch"


# --------------------------------------------------------------------------------------
# Multi-process runtime
# --------------------------------------------------------------------------------------


def initialize_distributed(
    coordinator_address: str,
    num_processes: int,
    process_id: int,
    *,
    local_device_ids: int | Sequence[int] | None = None,
    cpu_devices_per_process: int | None = None,
    cpu_collectives: str | None = "gloo",
    initialization_timeout: int = 300,
    heartbeat_timeout_seconds: int = 100,
    shutdown_timeout_seconds: int = 300,
) -> None:
    """Join a multi-process JAX job: :func:`jax.distributed.initialize` plus CPU settings.

    Must run in every process before anything initialises a JAX backend (no JAX computation,
    no ``jax.devices()`` before it). Afterwards ``jax.devices()`` lists the devices of all
    processes and ``jax.local_devices()`` this process's own.

    Args:
      coordinator_address: ``"host:port"`` of process 0, which runs the coordination service
        (e.g. ``"127.0.0.1:12345"`` for processes on one machine).
      num_processes: the number of processes in the job.
      process_id: this process's index, ``0 <= process_id < num_processes``.
      local_device_ids: restrict this process to these local accelerator ids (GPU jobs that
        run one process per GPU); ``None``: all local devices.
      cpu_devices_per_process: if given, the number of CPU devices each process exposes
        (``jax_num_cpu_devices``; the CPU counterpart of several local GPUs).
      cpu_collectives: ``jax_cpu_collectives_implementation`` for cross-process collectives
        on CPU: ``"gloo"`` (TCP, no extra dependency; JAX's default), ``"mpi"``, or ``None`` to
        leave the setting alone. Irrelevant on GPU/TPU, which use NCCL/ICI.
      initialization_timeout: seconds to wait for all processes to connect before raising.
      heartbeat_timeout_seconds: a process missing heartbeats for this long is declared dead
        and the job fails (instead of hanging in a collective).
      shutdown_timeout_seconds: how long :func:`shutdown_distributed` waits for the others.
    """
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id {process_id} outside [0, {num_processes})")
    if cpu_devices_per_process is not None:
        jax.config.update("jax_num_cpu_devices", int(cpu_devices_per_process))
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=initialization_timeout,
        heartbeat_timeout_seconds=heartbeat_timeout_seconds,
        shutdown_timeout_seconds=shutdown_timeout_seconds,
    )


def shutdown_distributed() -> None:
    """Leave the multi-process job (:func:`jax.distributed.shutdown`); waits for the others."""
    jax.distributed.shutdown()


# --------------------------------------------------------------------------------------
# Mesh and shardings
# --------------------------------------------------------------------------------------


def make_mesh(devices: Sequence[jax.Device] | None = None, axis_name: str = BATCH_AXIS) -> Mesh:
    """A 1-D mesh ``{axis_name: len(devices)}`` for data parallelism.

    Args:
      devices: the devices to use, in batch order (shard ``i`` of the batch goes to
        ``devices[i]``); default ``jax.devices()``, i.e. every device of every process (after
        :func:`initialize_distributed`), ordered by process.
      axis_name: the mesh axis the batch is split along.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("make_mesh needs at least one device")
    return Mesh(np.asarray(devices, dtype=object), (axis_name,))


def batch_sharding(mesh: Mesh, axis_name: str | None = None) -> NamedSharding:
    """``NamedSharding(mesh, P(axis))``: leading (batch) axis split over the mesh axis.

    For images ``(B, H, W, C)`` each device holds ``(B / n, H, W, C)``; for labels ``(B,)``
    each holds ``(B / n,)``. ``axis_name`` defaults to the mesh's only axis.
    """
    return NamedSharding(mesh, P(axis_name or _the_axis(mesh)))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """``NamedSharding(mesh, P())``: a full copy of the array on every device of ``mesh``."""
    return NamedSharding(mesh, P())


def _the_axis(mesh: Mesh) -> str:
    if len(mesh.axis_names) != 1:
        raise ValueError(f"pass axis_name for a mesh with axes {mesh.axis_names}")
    return mesh.axis_names[0]


def _num_shards(mesh: Mesh, axis_name: str | None) -> int:
    return int(mesh.shape[axis_name or _the_axis(mesh)])


# --------------------------------------------------------------------------------------
# Placing data
# --------------------------------------------------------------------------------------


def _is_key_array(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _host_value(x: Any) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if not x.is_fully_replicated:
            raise ValueError("replicate() got a global array that is neither local nor replicated")
        return np.asarray(x.addressable_data(0))
    return np.asarray(x)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Copy every array leaf of ``tree`` (e.g. a whole ``TrainState``) to all devices of ``mesh``.

    Returns the same pytree with each leaf a global ``jax.Array`` with
    ``replicated_sharding(mesh)`` (shape and dtype unchanged; PRNG key arrays stay key arrays).
    In a multi-process job every process must pass the same values (e.g. built from the same
    seed or checkpoint): each process supplies the copies for its own devices.
    """
    sharding = replicated_sharding(mesh)
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def one(x):
        if _is_key_array(x):
            data = one(jax.random.key_data(x))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        if not isinstance(x, (jax.Array, np.ndarray, np.generic)):
            return x
        host = _host_value(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree)


def _check_divisible(size: int, shards: int, what: str) -> None:
    if size % shards:
        raise ValueError(f"{what} of {size} examples does not split evenly over {shards} devices")


def shard_batch(mesh: Mesh, *arrays: Any, axis_name: str | None = None) -> tuple[jax.Array, ...]:
    """Place a *global* batch (the same full arrays in every process) split along its axis 0.

    Args:
      mesh: the data-parallel mesh.
      *arrays: e.g. images ``(B, H, W, C)`` and labels ``(B,)``; ``B`` divisible by the mesh
        size. numpy or JAX arrays.
      axis_name: the mesh axis to split over (default: the mesh's only axis).

    Returns:
      The arrays as global ``jax.Array``s of the same shapes with :func:`batch_sharding`.
      Multi-process: each process only transfers its own devices' rows.
    """
    sharding = batch_sharding(mesh, axis_name)
    shards = _num_shards(mesh, axis_name)
    out = []
    for array in arrays:
        _check_divisible(np.shape(array)[0], shards, "the global batch")
        if sharding.is_fully_addressable:
            out.append(jax.device_put(array, sharding))
        else:
            host = _host_value(array)
            out.append(jax.make_array_from_callback(host.shape, sharding, lambda index, host=host: host[index]))
    return tuple(out)


def process_batch_slice(mesh: Mesh, global_batch_size: int, axis_name: str | None = None) -> slice:
    """The rows ``[start, stop)`` of a global batch that this process's devices hold.

    With the mesh over all devices ordered by process, process ``p`` of ``k`` holds rows
    ``[p * B / k, (p + 1) * B / k)``; computed from the sharding itself, so any mesh whose
    local devices are contiguous along the batch axis works. Load exactly these rows and
    pass them to :func:`shard_local_batch`.
    """
    sharding = batch_sharding(mesh, axis_name)
    _check_divisible(global_batch_size, _num_shards(mesh, axis_name), "the global batch")
    rows = set()
    for index in sharding.addressable_devices_indices_map((global_batch_size,)).values():
        rows.update(range(global_batch_size)[index[0]])
    if not rows:
        raise ValueError("this process has no device in the mesh")
    start, stop = min(rows), max(rows) + 1
    if len(rows) != stop - start:
        raise ValueError("this process's devices are not contiguous along the batch axis")
    return slice(start, stop)


def shard_local_batch(mesh: Mesh, *local_arrays: Any, axis_name: str | None = None) -> tuple[jax.Array, ...]:
    """Assemble global batch arrays from each process's own rows.

    Args:
      mesh: the data-parallel mesh over the devices of all processes.
      *local_arrays: this process's rows :func:`process_batch_slice` of each array, e.g. images
        ``(B / k, H, W, C)`` and labels ``(B / k,)`` for ``k`` processes with equal device
        counts.

    Returns:
      Global ``jax.Array``s of shape ``(B, ...)`` with :func:`batch_sharding`, built with
      :func:`jax.make_array_from_process_local_data` (no data moves between processes).
      Single-process this is :func:`shard_batch`.
    """
    sharding = batch_sharding(mesh, axis_name)
    # global_shape=None: JAX infers (B, ...) from the sharding, each process contributing the
    # rows of its own devices.
    return tuple(jax.make_array_from_process_local_data(sharding, np.asarray(array)) for array in local_arrays)


def fetch(tree: Any) -> Any:
    """Host numpy copies of a pytree of (possibly global) arrays, on every process.

    Replicated arrays are read from a local copy; arrays sharded across processes are
    gathered (:func:`jax.experimental.multihost_utils.process_allgather`, a collective: every
    process must call it).
    """
    from jax.experimental import multihost_utils

    def one(x):
        if not isinstance(x, jax.Array):
            return x
        if _is_key_array(x):
            x = jax.random.key_data(x)
        if x.is_fully_addressable:
            return np.asarray(x)
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(one, tree)


# --------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------


def data_parallel(
    train_step: Callable, mesh: Mesh, *, axis_name: str | None = None, donate: bool = True
) -> Callable:
    """Run ``train_step(state, images, labels) -> (state, metrics)`` data-parallel on ``mesh``.

    ``train_step`` is the project's jitted step (:func:`jaxcnn.train.step.make_train_step`),
    unchanged. The returned function is ``jax.jit`` of it with explicit shardings: the state is
    replicated (``P()``) in and out, images ``(B, H, W, C)`` and labels ``(B,)`` are split
    along the batch axis (``P("batch")``), and the metrics come back replicated. Inputs that
    are placed differently are resharded on the way in; inputs already placed with
    :func:`replicate`/:func:`shard_batch` cost nothing extra. The inner jit is inlined, so
    the mesh-wide program is one XLA computation in which the partitioner inserts the
    all-reduces (gradients, loss, BatchNorm batch statistics).

    Args:
      train_step: ``(state, images, labels) -> (state, metrics)``.
      mesh: the data-parallel mesh.
      axis_name: the batch mesh axis (default: the mesh's only axis).
      donate: donate the input state's buffers (as the single-device step does).
    """
    replicated = replicated_sharding(mesh)
    batch = batch_sharding(mesh, axis_name)
    return jax.jit(
        train_step,
        in_shardings=(replicated, batch, batch),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,) if donate else (),
    )
