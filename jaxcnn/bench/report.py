"""Plain-text and Markdown tables of benchmark results (the JSON records of :mod:`jaxcnn.bench`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["format_isolated_table", "format_markdown", "format_pairs_table", "format_table", "format_tta"]


def _cell(value: float | None, width: int, digits: int = 1) -> str:
    return f"{value:{width}.{digits}f}" if value else f"{'-':>{width}}"


def _ratio(value: float | None, width: int) -> str:
    return f"{value:{width - 1}.2f}x" if value else f"{'-':>{width}}"


def _cores(record: dict[str, Any], mode: str) -> str:
    value = record.get("train_cores_used", {}).get(mode)
    return f"{value:.1f}" if value is not None else "-"


_CPU_MODES = ("jax", "jax_dp", "torch_eager", "torch_channels_last", "torch_compile")


def _cpu_rows(records: list[dict[str, Any]], peak: dict[str, Any]) -> list[str]:
    rows = [
        "train img/s (4-step windows)    JAX   JAX dp    eager  ch_last  compile | JAX/eager dp/eager best/best | "
        "JAX trace+XLA s torch.compile s | cores JAX/dp/eager",
    ]
    for r in records:
        t = r["train_img_s"]
        best_jax = max(t["jax"], t.get("jax_dp", 0.0))
        best_torch = max(v for k, v in t.items() if k.startswith("torch_"))
        rows.append(
            f"{r['model']:<16} b={r['batch_size']:<4}"
            + "".join(_cell(t.get(k), 9) for k in _CPU_MODES)
            + f" | {_ratio(r['train_ratio_jax_over']['eager'], 9)}{_ratio(r.get('train_ratio_jax_dp_over', {}).get('eager'), 9)}"
            f"{_ratio(best_jax / best_torch, 10)} | {r['jax_trace_s']:>6.2f}+{r['jax_compile_s']:<6.2f}{_cell(r.get('torch_compile_s'), 10)}"
            f"      | {_cores(r, 'jax')}/{_cores(r, 'jax_dp')}/{_cores(r, 'torch_eager')}"
        )
    rows += [
        "",
        "eval img/s                      JAX   JAX dp    eager  ch_last  compile | JAX/eager dp/eager | pipeline img/s | "
        "JAX GFLOP/s (XLA, formula) % of peak",
    ]
    for r in records:
        e = r["eval_img_s"]
        gf, gff = r["jax_gflops_xla"], r.get("jax_gflops_formula")
        pk = peak.get("jax_gflops") or float("nan")
        rows.append(
            f"{r['model']:<16} b={r['batch_size']:<4}"
            + "".join(_cell(e.get(k), 9) for k in _CPU_MODES)
            + f" | {_ratio(r['eval_ratio_jax_over']['eager'], 9)}{_ratio(r.get('eval_ratio_jax_dp_over', {}).get('eager'), 9)} | "
            f"{_cell(r.get('pipeline_img_s'), 14, 0)} | {_cell(gf, 7)}, {_cell(gff, 7)}  {100 * gf / pk:5.1f}%"
        )
    return rows


def _pair_lines(r: dict[str, Any]):
    """``(model, batch, pair, precision, JAX img/s, {torch mode: img/s}, ratio, compile_s)`` per pair."""
    for pair, entry in r.get("pairs", {}).items():
        t = entry["train_img_s"]
        jax_mode = entry["jax"]
        torch_modes = {m: v for m, v in t.items() if m != jax_mode}
        compile_s = {m: r["compile_s"].get(m) for m in t}
        yield pair, entry, t[jax_mode], torch_modes, entry.get("train_ratio_jax_over_best_torch"), compile_s


def format_pairs_table(records: list[dict[str, Any]]) -> str:
    """The accelerator table: per model and precision pair, train img/s of JAX and each torch mode."""
    rows = ["train img/s by precision pair (same device; first steps' seconds in brackets: XLA compile, "
            "torch.compile / cuDNN autotuning)"]  # fmt: skip
    for r in records:
        if "error" in r or "skipped" in r:
            continue
        rows.append(f"{r['model']} b={r['batch_size']} {'x'.join(map(str, r['input_size'][:2]))}")
        for pair, entry, jax_ips, torch_ips, ratio, compile_s in _pair_lines(r):
            torch_text = ", ".join(f"{m} {v:,.0f} ({compile_s[m] or 0:.1f} s)" for m, v in torch_ips.items()) or "no torch mode"
            rows.append(
                f"  {pair:<13} JAX {jax_ips:>10,.0f} ({compile_s[entry['jax']] or 0:.1f} s) | {torch_text} | "
                f"JAX/best torch {_ratio(ratio, 6).strip()}"
            )
            rows.append(f"  {'':<13} precision: {entry['precision']}")
    return "\n".join(rows)


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table of a :func:`jaxcnn.bench.runner.run_benchmark` result (and its extras)."""
    peak = results.get("matmul_peak", {})
    rows = [
        f"load average (1/5/15 min) before {results.get('load_before')} after {results.get('load_after')}; "
        f"matmul peak float32 {peak.get('size', 2048)}^3: JAX {peak.get('jax_gflops', float('nan')):.0f} GFLOP/s, "
        f"torch {peak.get('torch_gflops', float('nan')):.0f} GFLOP/s",
        "",
    ]
    records = [r for r in results["models"] if "error" not in r and "skipped" not in r]
    rows += [f"{r['model']:<16} ERROR {r['error']}" for r in results["models"] if "error" in r]
    rows += [f"{r['model']:<16} skipped: {r['skipped']}" for r in results["models"] if "skipped" in r]
    cpu = [r for r in records if "jax" in r["train_img_s"]]
    if cpu:
        rows += _cpu_rows(cpu, peak)
    accelerator = [r for r in records if "jax" not in r["train_img_s"]]
    if accelerator:
        rows += ["", format_pairs_table(accelerator)]
    if results.get("isolated"):
        rows += ["", format_isolated_table(results["isolated"])]
    if results.get("time_to_accuracy"):
        rows += ["", format_tta(results["time_to_accuracy"])]
    return "\n".join(rows)


def format_isolated_table(isolated: dict[str, Any]) -> str:
    """A plain-text table of an :func:`jaxcnn.bench.isolated.isolated_benchmark` result."""
    rows = [
        f"one framework per process (best of {isolated['rounds']} alternating rounds), img/s",
        "                        train: JAX    eager  ch_last | JAX/eager JAX/best |  eval: JAX    eager  ch_last | JAX/eager",
    ]
    for name, r in isolated["models"].items():
        t, e = r["train_img_s"], r["eval_img_s"]
        modes = ("jax", "torch_eager", "torch_channels_last")
        rows.append(
            f"{name:<16}        "
            + "".join(_cell(t.get(k), 9) for k in modes)
            + f" | {_ratio(r['train_ratio_jax_over']['eager'], 9)}{_ratio(t['jax'] / max(t['torch_eager'], t['torch_channels_last']), 9)} |       "
            + "".join(_cell(e.get(k), 9) for k in modes)
            + f" | {_ratio(r['eval_ratio_jax_over']['eager'], 9)}"
        )
    return "\n".join(rows)


def format_tta(tta: dict[str, Any]) -> str:
    """One line per framework of a :func:`jaxcnn.bench.tta.time_to_accuracy` result."""
    if tta.get("skipped"):
        return f"time to accuracy: skipped ({tta['skipped']})"
    head = f"time to {100 * tta['target']:.0f}% validation accuracy, {tta['model']} on {tta['dataset']}: "
    return head + ", ".join(
        f"{k}: {v['seconds']:.1f} s ({v['epochs']} epochs; {v['seconds_per_epoch']:.2f} s/epoch; test {v['test_acc']:.2f}%)"
        if v.get("reached") else f"{k}: not reached in {v['epochs']} epochs ({v['seconds']:.1f} s, {v['seconds_per_epoch']:.2f} s/epoch)"
        for k, v in tta["runs"].items()
    )  # fmt: skip


def format_markdown(results: dict[str, Any], *, title: str, date: str, notes: Sequence[str] = ()) -> str:
    """A Markdown page of a run: the machine, one row per model and precision pair, then ``notes``
    (one paragraph each, e.g. the parity and training results of ``scripts/gpu_check.sh``)."""
    m = results["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
    lines = [
        f"# {title}",
        "",
        f"Measured {date} on {m.get('gpu_name') or m.get('jax_device_kind')} "
        f"(driver {m.get('driver', '?')}, CUDA {m.get('torch_cuda', '?')}, cuDNN {m.get('cudnn', '?')}; "
        f"JAX backend {m.get('jax_backend')}, torch on {m.get('torch_device')}); {versions}.",
        "Train-step img/s, synthetic data, SGD with momentum; torch's best mode per pair is the fastest of its modes. "
        "Compile: JAX trace+XLA compile, torch first step (torch.compile / cuDNN autotuning).",
        "",
        "| model (batch, input) | precision pair | jaxcnn img/s | torch modes img/s | jaxcnn / best torch | compile s (JAX; torch) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["models"]:
        if "error" in r or "skipped" in r:
            lines.append(f"| {r['model']} | {'error' if 'error' in r else 'skipped'} | {r.get('error') or r.get('skipped')} | | | |")
            continue
        size = "x".join(map(str, r["input_size"][:2]))
        for pair, entry, jax_ips, torch_ips, ratio, compile_s in _pair_lines(r):
            torch_text = "<br>".join(f"{mode}: {v:,.0f}" for mode, v in torch_ips.items()) or "-"
            torch_compile = ", ".join(f"{compile_s[mode] or 0:.1f}" for mode in torch_ips) or "-"
            lines.append(
                f"| {r['model']} ({r['batch_size']}, {size}) | {pair}: {entry['precision']} | {jax_ips:,.0f} | "
                f"{torch_text} | {_ratio(ratio, 6).strip()} | {compile_s[entry['jax']] or 0:.1f}; {torch_compile} |"
            )
    for note in notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jaxcnn.bench.report RESULTS.json [--markdown OUT.md] [--title T] [--note TEXT ...]``."""
    import argparse
    import datetime
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m jaxcnn.bench.report")
    parser.add_argument("results", help="a `jaxcnn bench --out` JSON file")
    parser.add_argument("--markdown", metavar="OUT", help="write the Markdown page here (default: print the text table)")
    parser.add_argument("--title", default="jaxcnn against torch on one device: train-step throughput")
    parser.add_argument("--note", action="append", default=[], help="a paragraph appended to the page (repeatable)")
    args = parser.parse_args(argv)
    results = json.loads(Path(args.results).read_text())
    if not args.markdown:
        print(format_table(results))
        return 0
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    Path(args.markdown).write_text(format_markdown(results, title=args.title, date=date, notes=args.note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
