"""``jaxcnn parity``: compare a zoo model, or a user's own torch/jaxcnn pair, module by module.

    jaxcnn parity resnet50 --train --float64 --json out.json
    jaxcnn parity --torch mypkg.nets:TorchNet --jax mypkg.nets:JaxNet --input-size 28 28 1
    jaxcnn parity --zoo --out docs/parity          # the table of every zoo model

Exit status: 0 when parity holds, 1 when it does not, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

USAGE_ERROR, FAILED, PASSED = 2, 1, 0


class UsageError(Exception):
    """Bad arguments (exit status 2)."""


def _load_factory(spec: str):
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"expected pkg.module:factory, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UsageError(f"cannot import {module_name!r}: {error}") from None
    try:
        factory = module
        for part in attribute.split("."):
            factory = getattr(factory, part)
    except AttributeError:
        raise UsageError(f"{module_name!r} has no attribute {attribute!r}") from None
    return factory


def _user_pair(args):
    from flax import nnx

    torch_model = _load_factory(args.torch)()
    factory = _load_factory(args.jax)
    try:
        jax_model = nnx.eval_shape(factory)  # the weights come from torch: skip the random init
    except Exception:  # noqa: BLE001 - a factory that cannot run abstractly is built for real
        jax_model = factory()
    return torch_model, jax_model


def _parity(args: argparse.Namespace) -> int:
    import jax
    import torch

    # Full float32 matmuls on both sides while the command runs (TF32 would break 1e-5 on a GPU).
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with jax.default_matmul_precision("highest"):
            return _compare_command(args, torch)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _compare_command(args, torch) -> int:
    from jaxcnn.parity.compare import compare
    from jaxcnn.parity.zoo import write_zoo_table, zoo_input, zoo_pair

    if args.zoo:
        import jaxcnn.models

        names = args.models or jaxcnn.models.names()
        unknown = sorted(set(names) - set(jaxcnn.models.names()))
        if unknown:
            raise UsageError(f"unknown zoo models: {', '.join(unknown)}")
        results = write_zoo_table(args.out, names)
        print(f"wrote {args.out / 'parity.md'} and {args.out / 'parity.json'}")
        return PASSED if all(row.get("train verdict") == "pass" and "error" not in row for row in results.values()) else FAILED
    if args.model:
        import jaxcnn.models

        if args.model not in jaxcnn.models.names():
            raise UsageError(f"unknown model {args.model!r}; choose from: {', '.join(jaxcnn.models.names())}")
        if args.weights is not None and not Path(args.weights).is_file():
            raise UsageError(f"no weights file at {args.weights}")
        torch_model, jax_model = zoo_pair(args.model, seed=args.seed, weights=args.weights)
        x = zoo_input(args.model, args.batch, seed=args.seed, input_size=args.input_size)
        aux = 1.0 if args.model.startswith("googlenet") else 0.0
    else:
        if args.input_size is None:
            raise UsageError("--torch/--jax pairs need --input-size H W C")
        torch_model, jax_model = _user_pair(args)
        height, width, channels = args.input_size
        x = torch.randn(args.batch, channels, height, width, generator=torch.Generator().manual_seed(args.seed))
        aux = 0.0
    optimizers = (args.optimizer, {"lr": args.lr}) if args.steps else None
    report = compare(
        torch_model, jax_model, x, mode="train" if args.train or args.steps else "eval", rtol=args.rtol,
        reference="float64" if args.float64 else None, steps=args.steps, optimizers=optimizers, aux_loss_weight=aux,
    )  # fmt: skip
    if args.json:
        report.to_json(args.json)
    if args.markdown:
        Path(args.markdown).write_text(report.markdown() + "\n")
    if not args.quiet:
        report.print(failing_only=len(report.modules) + len(report.tensors) > args.max_rows)
    return PASSED if report.passed else FAILED


def _run(args: argparse.Namespace) -> int:
    parser = args._parser
    if args.zoo:
        if args.model or args.torch or args.jax:
            parser.error("--zoo takes no MODEL, --torch or --jax")
    elif bool(args.model) == bool(args.torch or args.jax):
        parser.error("give a zoo MODEL, or --torch and --jax (not both)")
    elif not args.model and not (args.torch and args.jax):
        parser.error("--torch and --jax go together")
    if args.batch < 1 or args.steps < 0:
        parser.error("--batch must be >= 1 and --steps >= 0")
    try:
        return _parity(args)
    except UsageError as error:
        print(f"jaxcnn parity: error: {error}", file=sys.stderr)
        return USAGE_ERROR


def add_parity_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``jaxcnn parity`` on an ``argparse`` subparsers object."""
    parser = subparsers.add_parser(
        "parity",
        help="compare a torch model with its jaxcnn twin module by module (zoo model or your own pair)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", nargs="?", help="a zoo model name (torch_ref vs jaxcnn)")
    parser.add_argument("--torch", metavar="PKG.MOD:FACTORY", help="your torch model: a callable returning the nn.Module")
    parser.add_argument("--jax", metavar="PKG.MOD:FACTORY", help="your jaxcnn twin: a callable returning the nnx.Module")
    parser.add_argument("--weights", type=Path, help="a torch checkpoint (.pth/.safetensors) for the zoo model (default: random, BatchNorm randomised)")
    parser.add_argument("--input-size", type=int, nargs=3, metavar=("H", "W", "C"), help="default: the zoo model's usual input")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--train", action="store_true", help="a training-mode step: outputs, gradients, BatchNorm statistics")
    parser.add_argument("--float64", action="store_true", help="also run in float64: tell float32 rounding from semantic differences")
    parser.add_argument("--steps", type=int, default=0, help="optimizer steps through jaxcnn's train step (implies --train)")
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adam", "adamw", "rmsprop"])
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the report as JSON (schema jaxcnn.parity/1)")
    parser.add_argument("--markdown", type=Path, metavar="OUT", help="write the report as Markdown")
    parser.add_argument("--quiet", action="store_true", help="no terminal table")
    parser.add_argument("--max-rows", type=int, default=80, help="above this many rows only failing rows are printed")
    parser.add_argument("--zoo", action="store_true", help="the table of every zoo model (or MODELS) into --out")
    parser.add_argument("--models", nargs="*", help="with --zoo: these models only")
    parser.add_argument("--out", type=Path, default=Path("docs/parity"), help="with --zoo: the folder for parity.md/parity.json")
    parser.set_defaults(func=_run, _parser=parser)
    return parser
