"""Start-up: the zoo by name, fast and reproducible random initialisation, and loading without it.

Random initial values are drawn on the host (``jaxcnn.nn.init.draw``); a model loaded from a
checkpoint is built with shapes only (``jaxcnn.models.create_abstract``) and runs none of them.
"""

import hashlib
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
from flax import nnx

import jaxcnn.models
import torch_ref.models
from jaxcnn.cli import main
from jaxcnn.convert import read_state_dict, to_torch_arrays, torch_shapes, write_state_dict
from jaxcnn.models import registry
from jaxcnn.nn import init

_WEIGHTS_HASH = (
    "import hashlib, sys, numpy as np, jaxcnn.models; from jaxcnn.convert import to_torch_arrays\n"
    "arrays = to_torch_arrays(jaxcnn.models.create(sys.argv[1], seed=int(sys.argv[2])))\n"
    "print(hashlib.sha256(b''.join(k.encode() + np.ascontiguousarray(v).tobytes() for k, v in arrays.items())).hexdigest())"
)


def _weights_hash(model) -> str:
    arrays = to_torch_arrays(model)
    return hashlib.sha256(b"".join(k.encode() + np.ascontiguousarray(v).tobytes() for k, v in arrays.items())).hexdigest()


def test_every_model_is_importable_by_name():
    from jaxcnn.models import ResNet, resnet50, resnext50_32x4d, wide_resnet50_2  # noqa: F401

    for name in jaxcnn.models.names():
        assert name in jaxcnn.models.__all__
        assert getattr(jaxcnn.models, name) is registry._CONSTRUCTORS[name], name
    assert set(jaxcnn.models.__all__) <= set(dir(jaxcnn.models))


def test_a_seed_gives_the_same_weights_every_run():
    ours = _weights_hash(jaxcnn.models.create("resnet18", seed=3))
    assert _weights_hash(jaxcnn.models.create("resnet18", rngs=nnx.Rngs(3))) == ours
    assert _weights_hash(jaxcnn.models.create("resnet18", seed=4)) != ours
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    run = subprocess.run([sys.executable, "-c", _WEIGHTS_HASH, "resnet18", "3"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[-1] == ours  # another process, the same weights


def test_a_jitted_constructor_gives_the_eager_weights():
    eager = jaxcnn.models.create("lenet5", seed=1)
    jitted = nnx.jit(lambda: jaxcnn.models.create("lenet5", seed=1))()  # host draws run as callbacks
    assert _weights_hash(jitted) == _weights_hash(eager)


def test_trunc_normal_stays_inside_its_bounds():
    variable = nnx.Param(np.zeros((200, 100), np.float32))
    init.trunc_normal_(variable, mean=0.5, std=1.0, a=0.0, b=1.5, rngs=nnx.Rngs(0))
    values = np.asarray(variable.get_value())
    assert values.min() >= 0.0 and values.max() <= 1.5
    # N(0.5, 1) truncated to [0, 1.5] (scipy.stats.truncnorm(-0.5, 1, loc=0.5)): mean 0.7066, std 0.4157
    assert values.mean() == pytest.approx(0.7066, abs=0.01)
    assert values.std() == pytest.approx(0.4157, rel=0.03)


@pytest.fixture
def host_draws(monkeypatch):
    """Counts the random initial values drawn on the host (every random initialiser goes there)."""
    calls = []
    original = init._sample_on_host

    def counting(*args, **kwargs):
        calls.append(args[1])
        return original(*args, **kwargs)

    monkeypatch.setattr(init, "_sample_on_host", counting)
    return calls


def test_create_abstract_has_shapes_only(host_draws):
    abstract = jaxcnn.models.create_abstract("alexnet", num_classes=7)
    assert not host_draws
    flat = nnx.to_flat_state(nnx.state(abstract))
    for path, variable in flat:
        value = variable.get_value()
        if isinstance(variable, (nnx.Param, nnx.BatchStat)):
            assert isinstance(value, jax.ShapeDtypeStruct), path
        else:  # Dropout's RNG streams are concrete, ready to train
            assert isinstance(value, jax.Array), path
    with torch.device("meta"):
        reference = torch_ref.models.create("alexnet", num_classes=7)
    assert torch_shapes(abstract) == {key: tuple(value.shape) for key, value in reference.state_dict().items()}


def test_loading_weights_runs_no_random_initialiser(host_draws):
    torch.manual_seed(0)
    state_dict = torch_ref.models.create("resnet18", num_classes=5).state_dict()
    model = jaxcnn.models.create("resnet18", num_classes=5, weights=state_dict)
    assert host_draws == []
    loaded = to_torch_arrays(model)
    for key, tensor in state_dict.items():
        np.testing.assert_array_equal(loaded[key], tensor.numpy(), err_msg=key)
    jaxcnn.models.create("resnet18", num_classes=5)  # the counter does see a random initialisation
    assert len(host_draws) > 20


def test_convert_and_summary_commands_run_no_random_initialiser(host_draws, tmp_path, capsys):
    torch.manual_seed(0)
    source = write_state_dict(to_torch_arrays(jaxcnn.models.create("lenet5")), tmp_path / "lenet5.safetensors")
    host_draws.clear()
    assert main(["convert", "lenet5", str(source), str(tmp_path / "out.pth")]) == 0
    assert main(["summary", "lenet5"]) == 0
    assert host_draws == []
    written, original = read_state_dict(tmp_path / "out.pth"), read_state_dict(source)
    assert sorted(written) == sorted(original)
    for key in original:
        np.testing.assert_array_equal(written[key], original[key], err_msg=key)
    assert "total parameters:" in capsys.readouterr().out
