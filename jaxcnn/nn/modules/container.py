"""``Sequential``: children held as attributes ``'0'``, ``'1'``, ... (or given names).

NNX parameter paths then read ``features.0.weight`` exactly like torch's ``state_dict``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator

from flax import nnx


class Sequential(nnx.Module):
    """``torch.nn.Sequential``: ``Sequential(a, b, c)`` or ``Sequential(OrderedDict(name=module))``.

    Calls its children in order; with no children it is the identity.
    """

    def __init__(self, *layers: Callable):
        if len(layers) == 1 and isinstance(layers[0], OrderedDict):
            named = list(layers[0].items())
        else:
            named = [(str(index), layer) for index, layer in enumerate(layers)]
        for name, layer in named:
            setattr(self, name, layer)
        self.layer_names = tuple(name for name, _ in named)

    def __iter__(self) -> Iterator[Callable]:
        return (getattr(self, name) for name in self.layer_names)

    def __len__(self) -> int:
        return len(self.layer_names)

    def __getitem__(self, index: int) -> Callable:
        return getattr(self, self.layer_names[index])

    def __call__(self, x):
        for layer in self:
            x = layer(x)
        return x
