"""Atomic, resumable training checkpoints with ``orbax-checkpoint``.

Layout: ``<directory>/<global_step>/`` holds two orbax items,

* ``state`` -- every array of the :class:`~jaxcnn.train.state.TrainState` as flat dicts keyed by
  readable paths: ``params`` (``"conv1.weight"``, ... in the jaxcnn HWIO/(in, out) layouts),
  ``rest`` (BatchNorm statistics, Dropout RNG keys as raw ``uint32`` key data and counters),
  ``opt_state`` and ``step``;
* ``meta`` -- a JSON document written by the trainer: the run's config, the data position
  (epoch and step within the epoch of the next batch), the per-epoch history so far and the
  partial sums of the current epoch.

Atomicity is orbax's: a step is written into a temporary directory and renamed to
``<global_step>`` only when complete, so a process killed at any moment (even ``SIGKILL`` in the
middle of a write) leaves either the previous checkpoints or the new one, never a partial one.
:class:`RunCheckpointer` only ever lists finalised steps and deletes stale temporary directories
when it opens a directory. The last ``keep`` checkpoints are kept.

Saving refuses a state containing NaN or inf (:class:`NonFiniteStateError`), so a diverged run
never overwrites its last good checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxcnn.train.state import TrainState
from jaxcnn.train.step import all_finite

__all__ = [
    "NonFiniteStateError",
    "RunCheckpointer",
    "arrays_to_state",
    "find_checkpoint_dir",
    "state_to_arrays",
]

_GROUPS = ("params", "rest", "opt_state")


class NonFiniteStateError(ValueError):
    """A state with NaN/inf values was about to be checkpointed."""


def _key_name(entry: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _flat_with_names(tree: Any) -> list[tuple[str, Any]]:
    """``[(dotted path, leaf)]`` in tree order; a Variable's trailing ``.value`` is dropped."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = [_key_name(p) for p in path]
        if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and names[-1] == "value":
            names = names[:-1]
        out.append((".".join(names) or "_", leaf))
    if len({name for name, _ in out}) != len(out):  # paths always unique in practice; be safe
        out = [(f"{i:05d}.{name}", leaf) for i, (name, leaf) in enumerate(out)]
    return out


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def state_to_arrays(state: TrainState) -> dict[str, Any]:
    """The state as ``{"params": {path: array}, "rest": ..., "opt_state": ..., "step": array}``.

    Typed PRNG keys become their raw ``uint32`` key data (``jax.random.key_data``); every other
    leaf is kept as is (device arrays, no copy). Empty groups are omitted.
    """
    out: dict[str, Any] = {}
    for group in _GROUPS:
        flat = {
            name: (jax.random.key_data(leaf) if _is_key(leaf) else leaf)
            for name, leaf in _flat_with_names(getattr(state, group))
        }
        if flat:
            out[group] = flat
    out["step"] = state.step
    return out


def arrays_to_state(template: TrainState, arrays: dict[str, Any]) -> TrainState:
    """Inverse of :func:`state_to_arrays`, using ``template`` for the tree structure and key types.

    Raises ``KeyError`` naming the missing entry when ``arrays`` does not match the template
    (e.g. a checkpoint of a different model or optimizer).
    """
    parts = {}
    for group in _GROUPS:
        tree = getattr(template, group)
        stored = arrays.get(group, {})
        leaves = []
        for name, leaf in _flat_with_names(tree):
            if name not in stored:
                raise KeyError(f"checkpoint has no {group} entry {name!r}; was it written by another model/optimizer?")
            value = stored[name]
            if _is_key(leaf):
                value = jax.random.wrap_key_data(jnp.asarray(value), impl=jax.random.key_impl(leaf))
            leaves.append(value)
        parts[group] = jax.tree.unflatten(jax.tree.structure(tree), leaves)
    return TrainState(step=jnp.asarray(arrays["step"], jnp.int32), **parts)


def _abstract(tree: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def find_checkpoint_dir(path: str | os.PathLike) -> Path:
    """The checkpoint directory for ``path``: a run's output folder (its ``checkpoints/``
    sub-folder), the checkpoint directory itself, or one step folder inside it (its parent)."""
    path = Path(path).expanduser().resolve()
    if (path / "checkpoints").is_dir():
        return path / "checkpoints"
    if path.name.isdigit() and (path / "meta").exists():
        return path.parent
    return path


class RunCheckpointer:
    """A run's checkpoint directory: save, list and restore :class:`TrainState` + JSON metadata.

    Args:
      directory: where the step folders live (created on the first save).
      keep: how many of the most recent checkpoints to keep (older ones are deleted).
      async_save: write in a background thread (orbax's async checkpointing): :meth:`save`
        returns once the arrays are copied to host memory, so training continues during the
        disk write. :meth:`wait` / :meth:`close` block until pending writes are finalised.
      read_only: open for restoring only (``jaxcnn evaluate``).
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, async_save: bool = True, read_only: bool = False):
        self.directory = Path(directory).expanduser().resolve()
        self.read_only = bool(read_only)
        if read_only and not self.directory.is_dir():
            raise FileNotFoundError(f"no checkpoint in {self.directory} (no such directory)")
        if not read_only:
            self.directory.mkdir(parents=True, exist_ok=True)
        # read_only mode is enforced here (save() refuses), not by orbax's read_only option,
        # which only logs a warning per manager.
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max(1, int(keep)),
            create=not read_only,
            cleanup_tmp_directories=not read_only,
            enable_async_checkpointing=bool(async_save) and not read_only,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    # ------------------------------------------------------------------------------------
    def all_steps(self) -> list[int]:
        """Global steps of the finalised checkpoints, ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """Global step of the newest finalised checkpoint, or ``None``."""
        return self._manager.latest_step()

    def save(self, step: int, state: TrainState, meta: dict[str, Any], *, check_finite: bool = True) -> None:
        """Checkpoint ``state`` and the JSON-serialisable ``meta`` as global step ``step``.

        With ``check_finite`` the state is first checked on device (:func:`all_finite`, one
        scalar fetched) and :class:`NonFiniteStateError` is raised instead of saving NaN/inf.
        A step that already exists is not written again. ``meta`` is copied at call time, so the
        caller may keep mutating its dicts while an async save is in flight.
        """
        step = int(step)
        if self.read_only:
            raise PermissionError(f"{self.directory} was opened read-only")
        if check_finite and not bool(all_finite(state)):
            raise NonFiniteStateError(f"refusing to checkpoint step {step}: the training state contains NaN or inf")
        if step in self._manager.all_steps():
            return
        meta = json.loads(json.dumps(meta))  # a snapshot: async saves serialise it later
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state_to_arrays(state)),
                meta=ocp.args.JsonSave(meta),
            ),
        )

    def read_meta(self, step: int | None = None) -> dict[str, Any]:
        """The JSON metadata of ``step`` (default: the latest)."""
        step = self._resolve(step)
        return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

    def restore(self, template: TrainState, step: int | None = None) -> tuple[TrainState, dict[str, Any]]:
        """Restore ``(state, meta)`` of ``step`` (default: latest) into ``template``'s structure,
        dtypes and shardings (bitwise the saved values)."""
        step = self._resolve(step)
        target = _abstract(state_to_arrays(template))
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()),
        )
        return arrays_to_state(template, restored.state), restored.meta

    def restore_arrays(self, step: int | None = None) -> dict[str, Any]:
        """The saved arrays of ``step`` as numpy (no template needed; :func:`state_to_arrays` layout)."""
        step = self._resolve(step)
        restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
        return jax.tree.map(np.asarray, restored.state)

    def _resolve(self, step: int | None) -> int:
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"no checkpoint in {self.directory}")
        elif int(step) not in self._manager.all_steps():
            raise FileNotFoundError(f"no checkpoint of step {step} in {self.directory} (have {self.all_steps()})")
        return int(step)

    def wait(self) -> None:
        """Block until every pending (async) save is finalised on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release orbax's resources."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> RunCheckpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
