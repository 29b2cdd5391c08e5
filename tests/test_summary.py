"""``jaxcnn summary``: per-layer quantities as the course defines them."""

import torch

import torch_ref.models
from jaxcnn import models
from jaxcnn.cli import main
from jaxcnn.summary import summarize


def test_mnist_cnn_rows_follow_the_course_formulas():
    summary = summarize(models.create("mnist_cnn"), (1, 28, 28, 1))
    conv1, conv2, fc1, fc2 = summary.rows
    assert conv1.output_shape == (1, 24, 24, 10)
    assert conv1.params == 1 * 10 * 5 * 5 + 10
    assert conv1.mult_adds == 10 * 24 * 24 * 1 * 5 * 5
    assert conv1.activations == 24 * 24 * 10
    assert conv2.mult_adds == 20 * 8 * 8 * 10 * 5 * 5
    assert fc1.mult_adds == 320 * 50 and fc2.mult_adds == 50 * 10
    assert summary.total_params == sum(p.numel() for p in torch_ref.models.create("mnist_cnn").parameters())
    assert summary.total_mult_adds == sum(row.mult_adds for row in summary.rows)


def test_summary_cli_prints_table(capsys):
    assert main(["summary", "mnist_cnn"]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "total parameters:        21,840" in out
