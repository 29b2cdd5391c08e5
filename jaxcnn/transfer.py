"""Transfer learning: a pretrained backbone, a new head, and a frozen backbone.

The course's recipe, in PyTorch terms::

    model = torchvision.models.resnet50(weights=...)
    for p in model.parameters():
        p.requires_grad = False
    model.fc = nn.Sequential(nn.Linear(2048, 500), nn.BatchNorm1d(500), nn.ReLU(), nn.Linear(500, num_classes))
    optimizer = torch.optim.SGD(model.fc.parameters(), lr=...)

and here::

    model = from_torch_checkpoint("resnet50", "resnet50-0676ba61.pth")   # torchvision weights
    replace_head(model, num_classes, rngs=nnx.Rngs(0))                   # model.fc = course_head(2048, num_classes)
    mask = freeze_backbone_mask(model)                                   # True for fc.*, False elsewhere
    tx = make_transfer_optimizer(optax.sgd(0.01, momentum=0.9), mask)
    set_transfer_mode(model, train=True)                                 # backbone BatchNorm keeps its running stats

Freezing is an optax mask over the full parameter tree (``nnx.state(model, nnx.Param)``), not
a copy of the model: frozen parameters get ``optax.set_to_zero()`` updates (so neither the
gradient nor weight decay nor momentum moves them, and the base optimizer keeps no state for
them), trainable ones get ``base_tx``. ``optax.masked`` alone would *not* do: it passes the raw
gradient through for masked-out leaves.

A frozen backbone should also keep its BatchNorm running statistics (torch: ``model.eval()``
on the backbone's BatchNorm modules, or the whole backbone, after ``model.train()``):
:func:`set_transfer_mode` puts every BatchNorm outside the trainable parts into eval mode
(normalise with, and do not update, the running statistics) while the head trains normally.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import optax
from flax import nnx

from jaxcnn import nn
from jaxcnn.convert import load_torch_checkpoint

__all__ = [
    "course_head",
    "freeze_backbone_mask",
    "from_torch_checkpoint",
    "is_trainable",
    "make_transfer_optimizer",
    "replace_head",
    "set_transfer_mode",
]

HEAD_ATTRIBUTES = ("fc", "linear", "classifier")
TRAINABLE_LABEL, FROZEN_LABEL = "trainable", "frozen"


def from_torch_checkpoint(name: str, path: str | Path, *, strip_prefix: str | None = None, **options) -> nnx.Module:
    """The zoo model ``name`` with every weight from a torch checkpoint (e.g. torchvision's).

    The model is built under ``nnx.eval_shape`` (shapes only, no random initialisation, which
    would be overwritten anyway) and then loaded strictly with
    :func:`jaxcnn.convert.load_torch_checkpoint`. ``options`` go to the model (e.g.
    ``num_classes=1000`` must match the checkpoint's ``fc``).
    """
    import jaxcnn.models

    model = nnx.eval_shape(lambda: jaxcnn.models.create(name, rngs=nnx.Rngs(0), **options))
    return load_torch_checkpoint(model, path, strip_prefix=strip_prefix)


def course_head(in_features: int, num_classes: int, *, hidden: int = 500, rngs: nnx.Rngs) -> nn.Sequential:
    """The course's head: ``Sequential(Linear(in, 500), BatchNorm1d(500), ReLU(), Linear(500, num_classes))``.

    (N, in_features) -> (N, num_classes); torch's default initialisation.
    """
    return nn.Sequential(
        nn.Linear(in_features, hidden, rngs=rngs),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes, rngs=rngs),
    )


def _head_attribute(model: nnx.Module, attribute: str | None) -> str:
    if attribute is not None:
        if not hasattr(model, attribute):
            raise AttributeError(f"{type(model).__name__} has no attribute {attribute!r}")
        return attribute
    for name in HEAD_ATTRIBUTES:
        if isinstance(getattr(model, name, None), nn.Linear):
            return name
    raise ValueError(f"{type(model).__name__} has no Linear head among {HEAD_ATTRIBUTES}; pass attribute=")


def replace_head(
    model: nnx.Module,
    head: int | nnx.Module | Callable[..., nnx.Module],
    *,
    attribute: str | None = None,
    rngs: nnx.Rngs | None = None,
) -> nnx.Module:
    """Replace the model's classifier head in place (torch: ``model.fc = new_head``); returns ``model``.

    Args:
      model: e.g. a ResNet (head ``fc``) or a CIFAR ResNet (head ``linear``).
      head: ``num_classes`` (an int) for :func:`course_head`; a module to install as is; or a
        factory ``head(in_features, rngs=rngs) -> module`` called with the old head's
        ``in_features`` (e.g. ``lambda n, rngs: nn.Linear(n, 10, rngs=rngs)``).
      attribute: the head's attribute name; default: the first of ``fc``, ``linear``,
        ``classifier`` that is a Linear.
      rngs: initialises the new head (needed for an int or a factory).
    """
    name = _head_attribute(model, attribute)
    if isinstance(head, nnx.Module):
        new_head = head
    else:
        if rngs is None:
            raise ValueError("replace_head needs rngs= to initialise the new head")
        in_features = getattr(model, name).in_features
        if isinstance(head, int):
            new_head = course_head(in_features, head, rngs=rngs)
        else:
            new_head = head(in_features, rngs=rngs)
    setattr(model, name, new_head)
    return model


def _path_names(path) -> tuple[str, ...]:
    """A pytree / NNX path as its names (``('layer1', '0', 'conv1', 'weight')``)."""
    names = []
    for entry in path:
        for attribute in ("key", "name", "idx"):
            if hasattr(entry, attribute):
                entry = getattr(entry, attribute)
                break
        names.append(str(entry))
    return tuple(names)


def is_trainable(path, trainable: Sequence[str] = ("fc",)) -> bool:
    """Whether the parameter at ``path`` lies under one of the dotted ``trainable`` prefixes.

    Prefixes are whole path components: ``'fc'`` covers ``fc.0.weight`` but not
    ``layer1.0.se.fc1.weight``; ``'layer4.2'`` covers the last block of a ResNet-50.
    """
    names = path if isinstance(path, str) else ".".join(_path_names(path))
    return any(names == prefix or names.startswith(prefix + ".") for prefix in trainable)


def freeze_backbone_mask(model: nnx.Module, trainable: Sequence[str] = ("fc",)):
    """``True`` (train) / ``False`` (frozen) for every parameter, shaped as ``nnx.state(model, nnx.Param)``.

    Use it with :func:`make_transfer_optimizer` on the ``params`` of
    ``nnx.split(model, nnx.Param, ...)``. Raises if no parameter matches ``trainable``.
    """
    params = nnx.state(model, nnx.Param)
    mask = jax.tree_util.tree_map_with_path(lambda path, _: is_trainable(path, trainable), params)
    if not any(jax.tree_util.tree_leaves(mask)):
        raise ValueError(f"no parameter of {type(model).__name__} lies under {tuple(trainable)}")
    return mask


def make_transfer_optimizer(base_tx: optax.GradientTransformation, mask) -> optax.GradientTransformation:
    """``base_tx`` on the parameters where ``mask`` is True, zero updates (and no state) elsewhere.

    ``optax.multi_transform({'trainable': base_tx, 'frozen': optax.set_to_zero()}, labels)``.
    """
    labels = jax.tree_util.tree_map(lambda train: TRAINABLE_LABEL if train else FROZEN_LABEL, mask)
    return optax.multi_transform({TRAINABLE_LABEL: base_tx, FROZEN_LABEL: optax.set_to_zero()}, labels)


def set_transfer_mode(
    model: nnx.Module, *, train: bool, trainable: Sequence[str] = ("fc",), freeze_backbone_batchnorm: bool = True
) -> nnx.Module:
    """``model.train()`` / ``model.eval()``, then (training, ``freeze_backbone_batchnorm``) every
    BatchNorm outside ``trainable`` back to eval mode so the frozen backbone normalises with,
    and never updates, its running statistics. Call it instead of ``model.train()`` (which
    resets every BatchNorm to training mode). Returns ``model``.
    """
    if not train:
        model.eval()
        return model
    model.train()
    if freeze_backbone_batchnorm:
        for path, module in nnx.iter_graph(model):
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and not is_trainable(".".join(map(str, path)), trainable):
                module.use_running_average = True
    return model
