"""``jaxcnn parity``: exit status 0 pass / 1 fail / 2 usage error; the JSON it writes follows the schema."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
jsonschema = pytest.importorskip("jsonschema")

from jaxcnn import parity  # noqa: E402
from jaxcnn.cli import main  # noqa: E402


def jax_twin():
    """The twin of ``tests/test_parity_api.py``'s torch network (a user's own pair)."""
    from tests.test_parity_api import Net

    return Net()


def jax_twin_with_relu():
    from tests.test_parity_api import Net

    return Net("relu")


def test_zoo_model_train_float64_json_and_markdown(tmp_path):
    out, markdown = tmp_path / "out.json", tmp_path / "out.md"
    assert main(["parity", "mnist_cnn", "--train", "--float64", "--json", str(out), "--markdown", str(markdown), "--quiet"]) == 0
    document = json.loads(out.read_text())
    jsonschema.validate(document, parity.SCHEMA)
    assert document["passed"] and document["mode"] == "train" and document["reference"] == "float64"
    assert {row["name"] for row in document["modules"]} == {"conv1", "conv2", "fc1", "fc2", parity.ROOT}
    assert len([row for row in document["tensors"] if row["kind"] == "gradient"]) == 8
    assert markdown.read_text().startswith("PASS: torch MnistCNN vs jaxcnn MnistCNN, train mode")


def test_user_pair_passes_and_a_planted_difference_fails(capsys):
    pair = ["parity", "--torch", "tests.test_parity_api:torch_net", "--input-size", "11", "11", "3", "--max-rows", "0"]
    assert main(pair + ["--jax", "tests.test_parity_cli:jax_twin"]) == 0
    assert main(pair + ["--jax", "tests.test_parity_cli:jax_twin_with_relu"]) == 1
    assert "first divergence: features.2 (LeakyReLU)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["parity"],  # neither a model nor a pair
        ["parity", "mnist_cnn", "--torch", "tests.test_parity_api:torch_net"],
        ["parity", "--torch", "tests.test_parity_api:torch_net", "--jax", "tests.test_parity_cli:jax_twin"],  # no --input-size
        ["parity", "no_such_model"],
        ["parity", "--torch", "tests.no_such_module:f", "--jax", "tests.test_parity_cli:jax_twin", "--input-size", "1", "1", "1"],
        ["parity", "mnist_cnn", "--weights", "/nonexistent.pth"],
    ],
)
def test_usage_errors_exit_2(argv):
    try:
        status = main(argv)
    except SystemExit as exit:  # argparse's own errors
        status = exit.code
    assert status == 2


@pytest.mark.slow
def test_resnet50_train_float64_json(tmp_path):
    out = tmp_path / "out.json"
    status = main(["parity", "resnet50", "--train", "--float64", "--json", str(out), "--input-size", "64", "64", "3", "--quiet"])
    document = json.loads(out.read_text())
    jsonschema.validate(document, parity.SCHEMA)
    assert status == (0 if document["passed"] else 1)
    assert len([row for row in document["tensors"] if row["kind"] == "gradient"]) == 161
    assert any(row["name"] == "layer4.2.conv3" for row in document["modules"])
