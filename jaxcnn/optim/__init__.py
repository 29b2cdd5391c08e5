"""PyTorch-equivalent optimizers and learning-rate schedules built from optax.

``create(name, lr=..., ...)`` returns an ``optax.GradientTransformation`` whose
updates equal ``torch.optim.{SGD, Adam, AdamW, RMSprop}`` step for step, and
:mod:`jaxcnn.optim.schedules` holds per-step schedules equal to
``torch.optim.lr_scheduler`` (StepLR, MultiStepLR, CosineAnnealingLR,
LinearLR, SequentialLR).  ``parity_tests/test_optim_parity.py`` checks both
against torch.
"""

from jaxcnn.optim import schedules
from jaxcnn.optim.optimizers import (
    OPTIMIZERS,
    TORCH_DEFAULTS,
    TorchAdamState,
    TraceWithDampeningState,
    adam,
    adamw,
    create,
    get_lr,
    rmsprop,
    scale_by_torch_adam,
    sgd,
    trace_with_dampening,
)
from jaxcnn.optim.schedules import Schedule

__all__ = [
    "OPTIMIZERS",
    "TORCH_DEFAULTS",
    "Schedule",
    "TorchAdamState",
    "TraceWithDampeningState",
    "adam",
    "adamw",
    "create",
    "get_lr",
    "rmsprop",
    "scale_by_torch_adam",
    "schedules",
    "sgd",
    "trace_with_dampening",
]
