"""Weight conversion between PyTorch ``state_dict``s and jaxcnn (Flax NNX) models.

One general mapping driven by parameter paths (see :mod:`jaxcnn.convert.mapping`):
conv kernels OIHW <-> HWIO, Linear weights transposed, BatchNorm weight/bias/running
statistics as they are, ``num_batches_tracked`` kept or made.
"""

from jaxcnn.convert.files import load_torch_checkpoint, read_state_dict, save_torch_checkpoint, write_state_dict
from jaxcnn.convert.mapping import (
    StateDictError,
    load_torch_state_dict,
    to_torch_arrays,
    to_torch_state_dict,
    torch_shapes,
    torch_variables,
)

__all__ = [
    "StateDictError",
    "load_torch_checkpoint",
    "load_torch_state_dict",
    "read_state_dict",
    "save_torch_checkpoint",
    "to_torch_arrays",
    "to_torch_state_dict",
    "torch_shapes",
    "torch_variables",
    "write_state_dict",
]
