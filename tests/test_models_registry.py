"""The jaxcnn model registry mirrors ``torch_ref.models``: the same names, and every model
has exactly torch's ``state_dict`` keys, shapes and parameter count.

Nothing big is allocated: torch models are built on the ``meta`` device and jaxcnn models
with ``jaxcnn.models.create_abstract`` (shapes only, nothing traced), so even VGG-19 is cheap here.
"""

import pytest
import torch
from flax import nnx

import jaxcnn.models
import torch_ref.models
from jaxcnn.convert import torch_shapes

TORCH_NAMES = torch_ref.models.names()
abstract_model = jaxcnn.models.create_abstract  # the model with shapes but no allocated values


def meta_torch_model(name: str, **options):
    with torch.device("meta"):
        return torch_ref.models.create(name, **options)


def jax_parameter_count(model) -> int:
    shapes = torch_shapes(model)
    params = {".".join(map(str, path)) for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    total = 0
    for key in params:
        count = 1
        for size in shapes[key]:
            count *= size
        total += count
    return total


def test_same_names_as_torch_ref():
    # Fails until every family module (jaxcnn/models/<family>.py) has landed.
    ours, theirs = set(jaxcnn.models.names()), set(TORCH_NAMES)
    assert not theirs - ours, f"torch_ref models missing from jaxcnn: {sorted(theirs - ours)}"
    assert not ours - theirs, f"jaxcnn models without a torch_ref twin: {sorted(ours - theirs)}"


def test_unknown_name_raises():
    with pytest.raises(ValueError, match="unknown model 'no_such_net'"):
        jaxcnn.models.create("no_such_net")


@pytest.mark.parametrize("name", ["mlp", "lenet5", "cifar_cnn", "gap_vgg", "cifar_vgg11", "alexnet", "vgg11_bn"])
def test_num_classes_option(name):
    for num_classes in (None, 3):
        model = abstract_model(name, **({} if num_classes is None else {"num_classes": num_classes}))
        reference = meta_torch_model(name, num_classes=num_classes)
        ours, theirs = torch_shapes(model), {k: tuple(v.shape) for k, v in reference.state_dict().items()}
        last = [key for key in theirs if key.endswith("weight")][-1]  # the final Linear
        assert ours[last] == theirs[last]
        if num_classes is not None:
            assert ours[last][0] == num_classes


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_state_dict_shapes_and_parameter_count_match_torch(name):
    if name not in jaxcnn.models.names():
        pytest.skip(f"{name} is not in jaxcnn yet (test_same_names_as_torch_ref reports it)")
    model = abstract_model(name, num_classes=7)
    reference = meta_torch_model(name, num_classes=7)
    theirs = {key: tuple(value.shape) for key, value in reference.state_dict().items()}
    assert torch_shapes(model) == theirs
    assert jax_parameter_count(model) == sum(p.numel() for p in reference.parameters())
