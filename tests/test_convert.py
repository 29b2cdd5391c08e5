"""The torch <-> jaxcnn converter: strictness, layouts, files, and the CLI."""

from collections import OrderedDict

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxcnn import nn
from jaxcnn.cli import main
from jaxcnn.convert import (
    StateDictError,
    load_torch_checkpoint,
    load_torch_state_dict,
    read_state_dict,
    save_torch_checkpoint,
    to_torch_arrays,
    to_torch_state_dict,
    torch_shapes,
)


def _pair():
    jax_model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, rngs=nnx.Rngs(0)),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 5 * 6, 7, rngs=nnx.Rngs(1)),
    )
    torch_model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(120, 7)
    )
    with torch.no_grad():
        torch_model[1].running_mean.normal_()
        torch_model[1].running_var.uniform_(0.5, 2.0)
        torch_model[1].weight.normal_()
        torch_model[1].num_batches_tracked.fill_(17)
    return jax_model, torch_model


def test_layouts_and_outputs_match_after_loading():
    jax_model, torch_model = _pair()
    load_torch_state_dict(jax_model, torch_model.state_dict())
    assert jax_model[0].weight.get_value().shape == (3, 3, 3, 4)  # HWIO
    assert jax_model[4].weight.get_value().shape == (120, 7)  # (in, out)
    assert int(jax_model[1].num_batches_tracked.get_value()) == 17
    torch_model.eval()
    jax_model.eval()
    x = torch.randn(2, 3, 5, 6)
    expected = torch_model(x).detach().numpy()
    actual = np.asarray(jax_model(jnp.asarray(x.permute(0, 2, 3, 1).numpy())))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_round_trip_is_bit_exact_and_torch_loads_it():
    jax_model, torch_model = _pair()
    original = {key: value.clone() for key, value in torch_model.state_dict().items()}
    load_torch_state_dict(jax_model, original)
    exported = to_torch_state_dict(jax_model)
    assert list(sorted(exported)) == sorted(original)
    for key, value in original.items():
        assert exported[key].dtype == value.dtype, key
        assert torch.equal(exported[key], value), key
    torch_model.load_state_dict(exported, strict=True)


def test_every_problem_is_listed_and_nothing_is_half_loaded():
    jax_model, torch_model = _pair()
    before = to_torch_arrays(jax_model)
    state = OrderedDict(torch_model.state_dict())
    del state["0.bias"]
    state["9.weight"] = torch.zeros(1)
    state["4.weight"] = torch.zeros(7, 121)
    with pytest.raises(StateDictError) as error:
        load_torch_state_dict(jax_model, state)
    message = str(error.value)
    assert "missing keys: 0.bias" in message
    assert "unexpected keys: 9.weight" in message
    assert "4.weight: checkpoint (7, 121), model expects (7, 120)" in message
    after = to_torch_arrays(jax_model)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


def test_missing_num_batches_tracked_is_made():
    jax_model, torch_model = _pair()
    state = {key: value for key, value in torch_model.state_dict().items() if not key.endswith("num_batches_tracked")}
    load_torch_state_dict(jax_model, state)
    assert int(jax_model[1].num_batches_tracked.get_value()) == 0
    assert to_torch_arrays(jax_model)["1.num_batches_tracked"].dtype == np.int64


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_checkpoint_files_round_trip(tmp_path, suffix):
    jax_model, torch_model = _pair()
    load_torch_state_dict(jax_model, torch_model.state_dict())
    path = save_torch_checkpoint(jax_model, tmp_path / f"model{suffix}")
    fresh, _ = _pair()
    load_torch_checkpoint(fresh, path)
    for key, value in to_torch_arrays(jax_model).items():
        np.testing.assert_array_equal(to_torch_arrays(fresh)[key], value)


def test_wrapped_and_prefixed_torch_checkpoints(tmp_path):
    jax_model, torch_model = _pair()
    wrapped = {"epoch": 3, "state_dict": {f"module.{key}": value for key, value in torch_model.state_dict().items()}}
    torch.save(wrapped, tmp_path / "train.pt")
    arrays = read_state_dict(tmp_path / "train.pt", strip_prefix="module.")
    assert sorted(arrays) == sorted(torch_model.state_dict())
    load_torch_checkpoint(jax_model, tmp_path / "train.pt", strip_prefix="module.")


def test_torch_shapes_are_torch_layout():
    jax_model, _ = _pair()
    shapes = torch_shapes(jax_model)
    assert shapes["0.weight"] == (4, 3, 3, 3)
    assert shapes["4.weight"] == (7, 120)
    assert shapes["1.running_var"] == (4,)


def test_convert_cli_loads_a_torch_ref_checkpoint(tmp_path, capsys):
    import torch_ref.models

    torch_model = torch_ref.models.create("mnist_cnn")
    torch.save(torch_model.state_dict(), tmp_path / "mnist_cnn.pth")
    assert main(["convert", "mnist_cnn", str(tmp_path / "mnist_cnn.pth"), str(tmp_path / "mnist_cnn.safetensors")]) == 0
    assert "loaded 8 tensors" in capsys.readouterr().out
    arrays = read_state_dict(tmp_path / "mnist_cnn.safetensors")
    for key, value in torch_model.state_dict().items():
        np.testing.assert_array_equal(arrays[key], value.numpy())
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    # a user's mistake: one line on stderr, status 2 (jaxcnn.cli)
    assert main(["convert", "mnist_cnn", str(tmp_path / "bad.pth"), str(tmp_path / "out.safetensors")]) == 2
    assert "missing keys" in capsys.readouterr().err


def test_loaded_weights_do_not_alias_torch_memory():
    jax_model, torch_model = _pair()
    load_torch_state_dict(jax_model, torch_model.state_dict())
    before = to_torch_arrays(jax_model)
    with torch.no_grad():
        for tensor in torch_model.state_dict().values():
            tensor.add_(1)
    for key, value in to_torch_arrays(jax_model).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
