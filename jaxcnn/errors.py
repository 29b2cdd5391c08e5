"""Errors a user causes (a mistyped name, a missing file, a damaged checkpoint), as opposed to bugs.

A :class:`UserError` carries two parts: ``what`` went wrong and ``how`` to fix it. The library
raises it (or a subclass that is also the built-in type callers used to catch, e.g.
``ValueError``) at its boundaries: the model and dataset registries, the config loader,
``jaxcnn.convert``'s file reading and checkpoint restoring. ``jaxcnn.cli`` prints it as one line,
``jaxcnn <command>: error: <what> — <how>``, and exits with status 2; anything else is a bug and
keeps its traceback. :func:`as_user_error` also recognises a few user-caused exceptions raised by
code that does not know about this module (``StateDictError``, ``DatasetError``, an ``OSError``
on a path the user gave).
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["BadFileError", "LazyChoices", "MissingFileError", "UserError", "UnknownNameError", "as_user_error", "did_you_mean", "one_line"]


class UserError(Exception):
    """A mistake the user can fix: ``what`` happened and ``how`` to fix it.

    ``str(error)`` is ``detail`` when given (the full multi-line explanation, for library
    users), else ``"<what> — <how>"``.
    """

    def __init__(self, what: str, how: str = "", *, detail: str | None = None):
        self.what = one_line(what)
        self.how = one_line(how)
        self.detail = detail
        super().__init__(detail or self.line())

    def line(self) -> str:
        """``"<what> — <how>"`` on one line."""
        return f"{self.what} — {self.how}" if self.how else self.what

    def __str__(self) -> str:
        return self.detail or self.line()


class UnknownNameError(UserError, ValueError):
    """An unknown model, dataset, optimizer, config key, ... (also a ``ValueError``)."""

    def __init__(self, kind: str, name: object, choices: Iterable[str]):
        choices = [str(c) for c in choices]
        self.kind, self.name, self.choices = kind, name, choices
        super().__init__(f"unknown {kind} {name!r}", did_you_mean(name, choices))


class BadFileError(UserError, ValueError):
    """A file the user named that cannot be read as what it should hold (also a ``ValueError``)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist (also a ``FileNotFoundError``)."""


class LazyChoices:
    """A container of names loaded on first use, for ``argparse`` ``choices=`` (so that parsing
    imports the registry only when the option is given); iterable and sized."""

    def __init__(self, load: Callable[[], Iterable[str]]):
        self._load = load
        self._names: list[str] | None = None

    def _get(self) -> list[str]:
        if self._names is None:
            self._names = list(self._load())
        return self._names

    def __contains__(self, name: object) -> bool:
        return name in self._get()

    def __iter__(self):
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


def did_you_mean(name: object, choices: Iterable[str]) -> str:
    """``"did you mean 'x'? (choose from a, b, c)"`` with :func:`difflib.get_close_matches`
    suggestions (``"choose from ..."`` alone when nothing is close)."""
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(name), choices, n=3, cutoff=0.6)
    listing = f"choose from {', '.join(choices)}"
    if not close:
        return listing
    return f"did you mean {' or '.join(repr(c) for c in close)}? ({listing})"


def one_line(text: object) -> str:
    """``text`` with its lines joined by single spaces."""
    return " ".join(str(text).split())


def _first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), str(text))


def _is_instance(error: BaseException, module: str, name: str) -> bool:
    """``isinstance(error, module.name)`` without importing ``module`` (unloaded: cannot be)."""
    cls = getattr(sys.modules.get(module), name, None)
    return cls is not None and isinstance(error, cls)


def _under(path: str | os.PathLike, roots: Iterable[str | os.PathLike]) -> bool:
    try:
        target = Path(path).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return False
    for root in roots:
        try:
            root = Path(root).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):
            continue
        if target == root or root in target.parents:
            return True
    return False


def as_user_error(error: BaseException, user_paths: Iterable[str | os.PathLike] = ()) -> UserError | None:
    """``error`` as a :class:`UserError` when the user caused it, else ``None`` (a bug).

    User-caused: a :class:`UserError`; ``jaxcnn.convert``'s ``StateDictError`` (a state dict that
    does not fit the model); ``jaxcnn.data``'s ``DatasetError`` (missing or corrupt data files);
    an ``OSError`` naming a file at or under one of ``user_paths`` (the paths given on the
    command line).
    """
    if isinstance(error, UserError):
        return error
    if _is_instance(error, "jaxcnn.convert.mapping", "StateDictError"):
        text = one_line(error)
        return UserError(
            f"the state dict does not fit the model: {text if len(text) <= 300 else text[:297] + '...'}",
            "check that the file holds this model's weights (and --num-classes, --strip-prefix)",
        )
    if _is_instance(error, "jaxcnn.data.arrays", "DatasetError"):
        return UserError(_first_line(str(error)), "put the dataset's files there or pass --data-dir FOLDER")
    if isinstance(error, OSError) and error.filename is not None and _under(error.filename, user_paths):
        reason = error.strerror or type(error).__name__
        return UserError(f"{reason}: {error.filename}", "check the path and its permissions")
    return None
