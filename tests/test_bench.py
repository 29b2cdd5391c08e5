"""Smoke test of the benchmark: runs end to end on a tiny config and writes JSON (no timing asserts)."""

import json

import pytest

pytest.importorskip("torch")


def test_bench_runs_and_writes_json(tmp_path):
    from jaxcnn.cli import build_parser

    out = tmp_path / "bench.json"
    args = build_parser().parse_args(
        ["bench", "--models", "mlp", "--steps", "3", "--batch-size", "8", "--max-seconds", "0.5",
         "--no-compile", "--no-peak", "--out", str(out)]
    )
    assert args.func(args) == 0
    data = json.loads(out.read_text())
    assert {"load_before", "load_after", "machine", "config", "models"} <= set(data)
    (record,) = data["models"]
    assert record["model"] == "mlp" and record["batch_size"] == 8
    for key in ("train_img_s", "eval_img_s", "train_ratio_jax_over", "jax_trace_s", "jax_compile_s",
                "jax_flops_per_step_xla", "jax_gflops_xla", "pipeline_img_s"):
        assert key in record, key
    assert {"jax", "torch_eager", "torch_channels_last"} <= set(record["train_img_s"])
    assert all(v > 0 for v in record["train_img_s"].values())
