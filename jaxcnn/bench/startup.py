"""Start-up times (``jaxcnn bench --startup``): import, create and convert, jaxcnn beside torch.

Each figure is taken in a fresh process (``python -m jaxcnn.bench.startup probe KIND MODEL
CHECKPOINT``, one JSON line out), alternating frameworks, the best of ``rounds`` kept:

* ``torch-create``: ``import torch, torchvision`` (import), then torchvision's constructor
  (create; torch_ref's twin where torchvision is absent); it also saves the state dict that the
  other probes read (untimed);
* ``torch-load``: a fresh torchvision model filled from that file: ``torch.load`` +
  ``load_state_dict`` (load; its construction is reported beside it);
* ``jax-create``: ``import jax, jaxcnn.models, jaxcnn.convert`` and JAX's backend start
  (import), then ``jaxcnn.models.create(name)`` until its arrays exist (create);
* ``jax-convert``: the ``jaxcnn convert MODEL CHECKPOINT OUT.safetensors`` command, run in
  process after the imports (convert: build the model, load the file strictly, write it out).

Each probe also reports its whole process's wall time (``process_s``). The torch probes run
with glibc's default allocator settings (``JAXCNN_KEEP_HOST_MEMORY=0``), as a torch script
does. This module imports neither JAX nor torch at import time, so a probe's import figure
holds the whole import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["PROBES", "STARTUP_MODELS", "format_startup_table", "main", "probe", "startup_benchmark"]

STARTUP_MODELS = ("resnet50", "densenet121")
PROBES = ("torch-create", "torch-load", "jax-create", "jax-convert")
TORCH_ENV = {"JAXCNN_KEEP_HOST_MEMORY": "0"}


def _torch_model(name: str):
    try:
        import torchvision.models

        return getattr(torchvision.models, name)(), "torchvision"
    except (ImportError, AttributeError):
        import torch_ref.models

        return torch_ref.models.create(name), "torch_ref"


def probe(kind: str, name: str, checkpoint: str | os.PathLike) -> dict[str, Any]:
    """Run one probe in this (fresh) process; returns its seconds (see the module docstring)."""
    t0 = time.perf_counter()
    if kind.startswith("torch"):
        import torch

        try:
            import torchvision  # noqa: F401
        except ImportError:
            pass
        t1 = time.perf_counter()
        model, source = _torch_model(name)
        t2 = time.perf_counter()
        result = {"import_s": t1 - t0, "create_s": t2 - t1, "source": source}
        if kind == "torch-create":
            torch.save(model.state_dict(), checkpoint)
        else:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
            result["load_s"] = time.perf_counter() - t2
        return result
    import jax

    import jaxcnn.convert  # noqa: F401
    import jaxcnn.models

    jax.devices()
    t1 = time.perf_counter()
    if kind == "jax-create":
        from flax import nnx

        model = jaxcnn.models.create(name)
        jax.block_until_ready(nnx.state(model))
        return {"import_s": t1 - t0, "create_s": time.perf_counter() - t1}
    from jaxcnn.cli import main as jaxcnn_main

    with tempfile.TemporaryDirectory() as tmp:
        code = jaxcnn_main(["convert", name, str(checkpoint), str(Path(tmp) / f"{name}.safetensors")])
        if code:
            raise RuntimeError(f"jaxcnn convert exited with {code}")
        return {"import_s": t1 - t0, "convert_s": time.perf_counter() - t1}


def _run_probe(kind: str, name: str, checkpoint: Path) -> dict[str, Any]:
    env = {**os.environ, **(TORCH_ENV if kind.startswith("torch") else {})}
    command = [sys.executable, "-m", "jaxcnn.bench.startup", "probe", kind, name, str(checkpoint)]
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"start-up probe {kind} {name} failed:\n{done.stderr[-2000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "process_s": wall}


def startup_benchmark(
    models: Sequence[str] = STARTUP_MODELS, *, rounds: int = 1, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Every probe of every model in fresh processes, ``rounds`` alternating rounds, best kept.

    Returns ``{"rounds", "models": {name: {probe: {figure: seconds}}, "per_round": [...]}}``
    where each probe's figures are the minimum over the rounds.
    """
    result: dict[str, Any] = {"rounds": rounds, "torch_env": TORCH_ENV, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            checkpoint = Path(tmp) / f"{name}.pth"
            per_round = []
            for round_index in range(rounds):
                measured = {}
                for kind in PROBES:
                    log(f"[startup {name}] round {round_index + 1}/{rounds}: {kind} in a fresh process ...")
                    measured[kind] = _run_probe(kind, name, checkpoint)
                per_round.append(measured)
            best = {
                kind: {k: (min(r[kind][k] for r in per_round) if isinstance(v, float) else v) for k, v in per_round[0][kind].items()}
                for kind in PROBES
            }
            result["models"][name] = {**best, "per_round": per_round}
    return result


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}x" if a and b else "-"


def format_startup_table(startup: dict[str, Any]) -> str:
    """Seconds per model: import, create and convert/load, jaxcnn beside torch, with ratios."""
    rows = [
        f"start-up, seconds (each in a fresh process, best of {startup['rounds']} rounds); "
        "torch load = torch.load + load_state_dict into a built model; jaxcnn convert = the `jaxcnn convert` command",
        f"{'model':<13}{'import jaxcnn':>14}{'torch':>7} | {'create jaxcnn':>14}{'torch':>7}{'ratio':>7} | "
        f"{'convert jaxcnn':>15}{'load torch':>11}{'(+build)':>9}{'ratio':>7}",
    ]
    for name, r in startup["models"].items():
        jc, jv, tc, tl = r["jax-create"], r["jax-convert"], r["torch-create"], r["torch-load"]
        load_and_build = tl["load_s"] + tl["create_s"]
        rows.append(
            f"{name:<13}{jc['import_s']:>14.2f}{tc['import_s']:>7.2f} | {jc['create_s']:>14.2f}{tc['create_s']:>7.2f}"
            f"{_ratio(jc['create_s'], tc['create_s']):>7} | {jv['convert_s']:>15.2f}{tl['load_s']:>11.2f}"
            f"{load_and_build:>9.2f}{_ratio(jv['convert_s'], load_and_build):>7}"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jaxcnn.bench.startup probe KIND MODEL CHECKPOINT`` (one JSON line), or
    ``python -m jaxcnn.bench.startup [MODEL ...] [--rounds R]`` (the table)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["probe"]:
        if len(args) != 4 or args[1] not in PROBES:
            print(f"usage: python -m jaxcnn.bench.startup probe {{{','.join(PROBES)}}} MODEL CHECKPOINT", file=sys.stderr)
            return 2
        print(json.dumps(probe(args[1], args[2], args[3])))
        return 0
    import argparse

    parser = argparse.ArgumentParser(prog="python -m jaxcnn.bench.startup")
    parser.add_argument("models", nargs="*", default=list(STARTUP_MODELS))
    parser.add_argument("--rounds", type=int, default=1)
    ns = parser.parse_args(args)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    print(format_startup_table(startup_benchmark(ns.models, rounds=ns.rounds, log=log)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
