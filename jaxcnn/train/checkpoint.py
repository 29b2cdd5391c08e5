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

Damage after the fact (a disk error, a file overwritten, truncated or deleted) is found by
:meth:`RunCheckpointer.verify` before orbax reads a step: every JSON file of the step is parsed
and every entry of its TensorStore (OCDBT) database is read, synchronously. Orbax restores the
arrays concurrently on an event loop it closes as soon as one read fails; the reads still in
flight then complete into the closed loop, and each prints a ``RuntimeError: Event loop is
closed`` traceback from TensorStore's threads. Verifying first keeps a damaged step from ever
reaching that path. :meth:`RunCheckpointer.restore_newest` restores the newest step that reads,
reporting each damaged one and leaving it on disk.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxcnn.errors import MissingFileError, UserError, one_line
from jaxcnn.train.state import TrainState
from jaxcnn.train.step import all_finite

__all__ = [
    "CheckpointDamagedError",
    "CheckpointMismatchError",
    "NonFiniteStateError",
    "RunCheckpointer",
    "arrays_to_state",
    "find_checkpoint_dir",
    "state_to_arrays",
]

_GROUPS = ("params", "rest", "opt_state")


class NonFiniteStateError(ValueError):
    """A state with NaN/inf values was about to be checkpointed."""


class CheckpointDamagedError(UserError, ValueError):
    """A checkpoint step whose files cannot be read; ``step`` and ``cause`` (a short reason)."""

    def __init__(self, step: int, cause: str, how: str = "restore another step, or start again with --overwrite"):
        self.step, self.cause = int(step), one_line(cause)
        super().__init__(f"checkpoint step {self.step} cannot be read ({self.cause})", how)


class CheckpointMismatchError(UserError, KeyError):
    """A checkpoint that does not fit the model/optimizer it is restored into (also a ``KeyError``)."""


def _short(error: BaseException, limit: int = 200) -> str:
    """A one-line cause: the exception type and the first ``limit`` characters of its message."""
    text = one_line(error)
    for marker in (" [tensorstore_spec", " [source locations"):  # TensorStore appends long specs
        text = text.split(marker)[0]
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


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
                raise CheckpointMismatchError(
                    f"checkpoint has no {group} entry {name!r}",
                    "was it written by another model or optimizer? restore it with that run's config",
                )
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
            raise MissingFileError(f"no checkpoint in {self.directory} (no such directory)", "check the path")
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
            force=True,  # also below a newer, damaged step left on disk (orbax skips those otherwise)
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state_to_arrays(state)),
                meta=ocp.args.JsonSave(meta),
            ),
        )

    def read_meta(self, step: int | None = None) -> dict[str, Any]:
        """The JSON metadata of ``step`` (default: the latest); :class:`CheckpointDamagedError`
        when it cannot be read."""
        step = self._resolve(step)
        path = self.directory / str(step) / "meta" / "metadata"
        try:
            meta = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise CheckpointDamagedError(step, f"meta: {_short(error)}") from error
        if not isinstance(meta, dict):
            raise CheckpointDamagedError(step, "meta: not a JSON object")
        return meta

    def verify(self, step: int) -> None:
        """Read every file of ``step`` without keeping anything; raises
        :class:`CheckpointDamagedError` naming the first unreadable part.

        Parses the JSON files (orbax's metadata and ``meta``) and reads every entry of the
        ``state`` item's TensorStore OCDBT database synchronously (no reads left in flight when
        one fails). Costs about one extra read of the step's bytes.
        """
        import tensorstore as ts

        step = self._resolve(step)
        root = self.directory / str(step)
        self.read_meta(step)
        state_dir = root / "state"
        for required in (state_dir / "_METADATA", state_dir / "manifest.ocdbt"):
            if not required.is_file():
                raise CheckpointDamagedError(step, f"{required.relative_to(root)} is missing")
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if path.name in ("_CHECKPOINT_METADATA", "_METADATA", "_sharding") or path.parent.name == "array_metadatas":
                try:
                    json.loads(path.read_text())
                except (OSError, UnicodeDecodeError, ValueError) as error:
                    raise CheckpointDamagedError(step, f"{path.relative_to(root)}: {_short(error)}") from error
        database = {"driver": "ocdbt", "base": f"file://{state_dir}/"}
        try:
            kvstore = ts.KvStore.open(database).result()
            keys = [k.decode() for k in kvstore.list().result()]
            if not keys:
                raise ValueError("the array database is empty")
            for key in keys:
                if kvstore.read(key).result().state != "value":
                    raise ValueError(f"{key} is missing")
            for key in keys:  # decode every array (a missing data file can read as an empty chunk)
                for marker, driver in (("/.zarray", "zarr"), ("/zarr.json", "zarr3")):
                    if key.endswith(marker):
                        path = key[: -len(marker)]
                        ts.open({"driver": driver, "kvstore": {**database, "path": path + "/"}}).result().read().result()
        except Exception as error:  # TensorStore reports damage as ValueError/OSError with a status code
            raise CheckpointDamagedError(step, f"state: {_short(error)}") from error

    def restore(
        self, template: TrainState, step: int | None = None, *, check_meta: Callable[[dict[str, Any]], None] | None = None
    ) -> tuple[TrainState, dict[str, Any]]:
        """Restore ``(state, meta)`` of ``step`` (default: latest) into ``template``'s structure,
        dtypes and shardings (bitwise the saved values).

        Raises :class:`CheckpointDamagedError` when the step's files cannot be read (checked with
        :meth:`verify` first) and :class:`CheckpointMismatchError` when it holds another model's
        or optimizer's arrays. ``check_meta(meta)`` runs before any array is read (e.g. to
        refuse a checkpoint of another config).
        """
        step = self._resolve(step)
        meta = self.read_meta(step)
        if check_meta is not None:
            check_meta(meta)
        self.verify(step)
        arrays = state_to_arrays(template)
        wanted = {f"{g}.{n}" for g, group in arrays.items() if isinstance(group, dict) for n in group}
        wanted |= {g for g, group in arrays.items() if not isinstance(group, dict)}
        saved = self._saved_names(step)
        if saved is not None and saved != wanted:
            missing, extra = sorted(wanted - saved), sorted(saved - wanted)
            raise CheckpointMismatchError(
                f"checkpoint step {step} does not fit this model/optimizer ({len(missing)} arrays missing, "
                f"e.g. {missing[:2]}; {len(extra)} unexpected, e.g. {extra[:2]})",
                "restore it with the config of the run that wrote it",
            )
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(arrays)))
            )
        except Exception as error:  # orbax wraps TensorStore's read errors in a plain Exception
            raise CheckpointDamagedError(step, f"state: {_short(error)}") from error
        return arrays_to_state(template, restored.state), meta

    def restore_newest(
        self,
        template: TrainState,
        *,
        on_damaged: Callable[[CheckpointDamagedError], None] | None = None,
        check_meta: Callable[[dict[str, Any]], None] | None = None,
    ) -> tuple[int, TrainState, dict[str, Any]]:
        """``(step, state, meta)`` of the newest step that restores (see :meth:`restore`).

        Each damaged step is passed to ``on_damaged`` (e.g. to print a warning), left on disk
        untouched, and the next newest is tried. Raises :class:`CheckpointDamagedError` when
        no step restores and ``FileNotFoundError`` when there is none.
        """
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            raise MissingFileError(f"no checkpoint in {self.directory}", "train first, or check the path")
        damaged = []
        for step in steps:
            try:
                state, meta = self.restore(template, step, check_meta=check_meta)
            except CheckpointDamagedError as error:
                damaged.append(error)
                if on_damaged is not None:
                    on_damaged(error)
                continue
            return step, state, meta
        raise CheckpointDamagedError(
            damaged[0].step,
            f"and no older step restores either: {', '.join(str(e.step) for e in damaged)} are all damaged",
            "start the run again with --overwrite (or another --out)",
        )

    def _saved_names(self, step: int) -> set[str] | None:
        """The dotted names of the arrays saved in ``step`` (from orbax's ``_METADATA``), or None."""
        try:
            tree = json.loads((self.directory / str(step) / "state" / "_METADATA").read_text())["tree_metadata"]
            return {".".join(str(k["key"]) for k in entry["key_metadata"]) for entry in tree.values()}
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def restore_arrays(self, step: int | None = None) -> dict[str, Any]:
        """The saved arrays of ``step`` as numpy (no template needed; :func:`state_to_arrays` layout)."""
        step = self._resolve(step)
        self.verify(step)
        restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
        return jax.tree.map(np.asarray, restored.state)

    def _resolve(self, step: int | None) -> int:
        if step is None:
            step = self.latest_step()
            if step is None:
                raise MissingFileError(f"no checkpoint in {self.directory}", "train first, or check the path")
        elif int(step) not in self._manager.all_steps():
            raise MissingFileError(
                f"no checkpoint of step {step} in {self.directory}",
                f"choose one of the steps it has: {', '.join(map(str, self.all_steps())) or 'none'}",
            )
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
