"""The ``jaxcnn`` command line: train, evaluate, convert, summary, bench.

A user's mistake (an unknown name, a missing file, a damaged checkpoint, ...) ends a command with
one line on stderr, ``jaxcnn <command>: error: <what> — <how to fix it>``, and exit status 2; a
bug keeps its traceback (status 1). ``--debug`` or ``JAXCNN_DEBUG=1`` prints the traceback of
user errors too. Exit statuses: 0 done, 1 a bug or a diverged training run, 2 a user error,
130/143 ``jaxcnn train`` stopped by SIGINT/SIGTERM after checkpointing (docs/cli.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from jaxcnn.errors import LazyChoices, as_user_error, did_you_mean, one_line


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, ``<prog>: error: <what> — <how>``
    (exit status 2), and whose invalid choices come with close-match suggestions.
    Subparsers inherit the class, so every subcommand gets both."""

    def error(self, message: str):  # noqa: D102 - argparse API
        message = one_line(message)
        if " — " not in message:
            message += f" — see '{self.prog} --help'"
        self.exit(2, f"{self.prog}: error: {message}\n")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            raise argparse.ArgumentError(action, f"invalid choice {value!r} — {did_you_mean(value, action.choices)}")


def _debug_requested(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("JAXCNN_DEBUG", "").strip() not in ("", "0")


def _user_paths(args: argparse.Namespace) -> list[str]:
    """The strings given as options (candidate paths), for telling a user's missing file from a bug's."""
    paths = []
    for value in vars(args).values():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, (str, os.PathLike)) and str(item):
                paths.append(os.fspath(item))
    return paths


def run_command(func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace, prog: str) -> int:
    """Run ``func(args)``; a user error (:func:`jaxcnn.errors.as_user_error`) becomes one line on
    stderr and status 2 (with its traceback first under ``--debug``/``JAXCNN_DEBUG=1``); any
    other exception propagates (a bug: traceback, status 1)."""
    try:
        return int(func(args) or 0)
    except Exception as exc:
        error = as_user_error(exc, _user_paths(args))
        if error is None:
            raise
        if _debug_requested(args):
            traceback.print_exc()
        print(f"{prog}: error: {error.line()}", file=sys.stderr, flush=True)
        return 2


def _summary(args: argparse.Namespace) -> int:
    from jaxcnn import models
    from jaxcnn.models.registry import check_input_size
    from jaxcnn.summary import summarize

    height, width, channels = args.input_size or models.input_size(args.model)
    options = {} if args.num_classes is None else {"num_classes": args.num_classes}
    model = models.create_abstract(args.model, **options)  # shapes only: no weights are made
    shape = (args.batch_size, height, width, channels)
    summary = check_input_size(args.model, shape[1:], lambda: summarize(model, shape, name=args.model))
    print(summary.table())
    return 0


def _model_names() -> list[str]:
    from jaxcnn import models

    return models.names()


def _convert(args: argparse.Namespace) -> int:
    from jaxcnn import models
    from jaxcnn.convert import read_state_dict, save_torch_checkpoint, torch_shapes
    from jaxcnn.convert.files import check_format
    from jaxcnn.errors import MissingFileError

    check_format(args.output)
    check_format(args.input)
    if not os.path.isfile(args.input):
        raise MissingFileError(f"no checkpoint file at {args.input}", "check the path")

    options = {} if args.num_classes is None else {"num_classes": args.num_classes}
    model = models.create(args.model, weights=read_state_dict(args.input, strip_prefix=args.strip_prefix), **options)
    written = save_torch_checkpoint(model, args.output)
    print(f"loaded {len(torch_shapes(model))} tensors from {args.input} into jaxcnn {args.model}; wrote {written}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = Parser(prog="jaxcnn", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors too (or JAXCNN_DEBUG=1)")
    subparsers = parser.add_subparsers(dest="command", required=True)

    from jaxcnn.train.commands import add_evaluate_parser, add_train_parser

    add_train_parser(subparsers)
    add_evaluate_parser(subparsers)

    summary = subparsers.add_parser("summary", help="per-layer table: output shape, params, multiply-adds, memory")
    summary.add_argument("model", metavar="MODEL", choices=LazyChoices(_model_names), help="model name")
    summary.add_argument("--input-size", type=int, nargs=3, metavar=("H", "W", "C"), help="default: the model's usual input")
    summary.add_argument("--batch-size", type=int, default=1)
    summary.add_argument("--num-classes", type=int)
    summary.set_defaults(func=_summary)

    convert = subparsers.add_parser(
        "convert",
        help="load a torch checkpoint (.pth/.pt/.safetensors) into a jaxcnn model, strictly, and write it out",
        description="Checks every key and shape against the jaxcnn model and writes the weights "
        "as .safetensors or .pth (torch keys and layouts), e.g. torchvision's resnet50 .pth -> .safetensors.",
    )
    convert.add_argument("model", metavar="MODEL", choices=LazyChoices(_model_names), help="model name")
    convert.add_argument("input", help="checkpoint to read (.pth, .pt, .bin, .safetensors)")
    convert.add_argument("output", help="file to write (.safetensors or .pth)")
    convert.add_argument("--num-classes", type=int)
    convert.add_argument("--strip-prefix", help="remove this key prefix first, e.g. 'module.'")
    convert.set_defaults(func=_convert)

    from jaxcnn.bench import add_bench_parser

    add_bench_parser(subparsers)
    from jaxcnn.parity.cli import add_parity_parser

    add_parity_parser(subparsers)
    return parser


def _add_debug_flags(parser: argparse.ArgumentParser) -> None:
    """``--debug`` also after the subcommand (``jaxcnn train --debug``), on every subparser."""
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for sub in getattr(action, "choices", {}).values():
            if "--debug" not in sub._option_string_actions:
                sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxcnn`` console script; returns the exit status."""
    from jaxcnn import configure_platform, keep_freed_host_memory

    configure_platform()  # this program owns its process: CPU JAX quietly where no accelerator exists,
    keep_freed_host_memory()  # and glibc keeps freed memory (before JAX starts any thread)
    parser = build_parser()
    _add_debug_flags(parser)
    args = parser.parse_args(argv)
    return run_command(args.func, args, f"{parser.prog} {args.command}")


if __name__ == "__main__":
    sys.exit(main())
