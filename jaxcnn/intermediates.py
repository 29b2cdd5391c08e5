"""Record the outputs of named submodules during a forward pass (like torch forward hooks).

NNX modules have no hooks; this swaps each named submodule for a recording stand-in for
the duration of a ``with`` block. Run the forward eagerly or under ``jax.eval_shape``
inside the block; the model is restored on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from flax import nnx


class _Recorder:
    """Calls the wrapped module and stores its output under ``name``."""

    def __init__(self, module, name: str, records: dict, calls: list | None):
        self.module, self.name, self.records, self.calls = module, name, records, calls

    def __getattr__(self, attribute):
        # Anything else (a forward that reads ``self.fc.weight``, ``train()`` flags) is the module's.
        if attribute == "module":  # not yet set (copy/pickle): no recursion
            raise AttributeError(attribute)
        return getattr(self.module, attribute)

    def __call__(self, *args, **kwargs):
        output = self.module(*args, **kwargs)
        self.records[self.name] = output
        if self.calls is not None:
            self.calls.append((self.name, args, output))
        return output


def get_submodule(root: nnx.Module, dotted: str):
    """The submodule at a dotted torch-style path, e.g. ``'layer1.0.conv1'``."""
    parent, leaf = _parent_and_attribute(root, dotted)
    return getattr(parent, leaf)


def _parent_and_attribute(root: nnx.Module, dotted: str):
    *parents, leaf = dotted.split(".")
    parent = root
    for part in parents:
        parent = getattr(parent, part)
    if not hasattr(parent, leaf):
        raise AttributeError(f"{type(root).__name__} has no submodule {dotted!r}")
    return parent, leaf


@contextlib.contextmanager
def record_outputs(model: nnx.Module, names: Iterable[str], calls: list | None = None) -> Iterator[dict]:
    """Yield a dict that forwards run inside the block fill with ``name -> output``.

    ``names`` are dotted submodule paths as in torch (``'layer1'``, ``'features.3'``).
    Outputs keep the model's layout (NHWC for feature maps). A module called several
    times keeps its last output in the dict; pass a list as ``calls`` to also get every
    call, in order, as ``(name, inputs, output)``.
    """
    records: dict = {}
    swapped = []
    try:
        for name in names:
            parent, leaf = _parent_and_attribute(model, name)
            original = getattr(parent, leaf)
            swapped.append((parent, leaf, original))
            object.__setattr__(parent, leaf, _Recorder(original, name, records, calls))
        yield records
    finally:
        for parent, leaf, original in reversed(swapped):
            object.__setattr__(parent, leaf, original)
