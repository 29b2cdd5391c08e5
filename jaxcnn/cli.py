"""The ``jaxcnn`` command line: train, evaluate, convert, summary, bench."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _summary(args: argparse.Namespace) -> int:
    from jaxcnn import models
    from jaxcnn.summary import summarize

    height, width, channels = args.input_size or models.input_size(args.model)
    options = {} if args.num_classes is None else {"num_classes": args.num_classes}
    model = models.create_abstract(args.model, **options)  # shapes only: no weights are made
    print(summarize(model, (args.batch_size, height, width, channels), name=args.model).table())
    return 0


def _convert(args: argparse.Namespace) -> int:
    from jaxcnn import models
    from jaxcnn.convert import read_state_dict, save_torch_checkpoint, torch_shapes

    options = {} if args.num_classes is None else {"num_classes": args.num_classes}
    model = models.create(args.model, weights=read_state_dict(args.input, strip_prefix=args.strip_prefix), **options)
    written = save_torch_checkpoint(model, args.output)
    print(f"loaded {len(torch_shapes(model))} tensors from {args.input} into jaxcnn {args.model}; wrote {written}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="jaxcnn", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)

    from jaxcnn.train.commands import add_evaluate_parser, add_train_parser

    add_train_parser(subparsers)
    add_evaluate_parser(subparsers)

    summary = subparsers.add_parser("summary", help="per-layer table: output shape, params, multiply-adds, memory")
    summary.add_argument("model")
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
    convert.add_argument("model")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxcnn`` console script."""
    from jaxcnn import configure_platform, keep_freed_host_memory

    configure_platform()  # this program owns its process: CPU JAX quietly where no accelerator exists,
    keep_freed_host_memory()  # and glibc keeps freed memory (before JAX starts any thread)
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
