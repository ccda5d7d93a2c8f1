"""Command line: `python -m bnbook --help` lists what it can run."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from . import data as bdata


def _parse_tuple(kind: type):
    def parse(s: str) -> tuple:
        return tuple(kind(v) for v in s.split(",") if v.strip()) if s else ()
    return parse


def _config_args(p: argparse.ArgumentParser) -> None:
    from .train import Config

    for f in dataclasses.fields(Config):
        default = f.default
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif isinstance(default, tuple):
            kind = float if f.name == "landscape" else int
            p.add_argument(flag, type=_parse_tuple(kind), default=default,
                           help=f"comma-separated list (default: {','.join(map(str, default)) or 'none'})")
        else:
            p.add_argument(flag, type=type(default), default=default, help=f"(default: {default})")


def _cmd_train(args: argparse.Namespace) -> int:
    from .results import get_run, run_path
    from .train import Config

    fields = {f.name for f in dataclasses.fields(Config)}
    try:
        cfg = Config(**{k: v for k, v in vars(args).items() if k in fields})
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(cfg.label())
    run = get_run(cfg, retrain=args.retrain)
    print(json.dumps(run.final, indent=2))
    print(f"cached at {run_path(cfg)}")
    return 0 if run.final["status"] == "ok" else 3


def _cmd_data(args: argparse.Namespace) -> int:
    try:
        folder = bdata.ensure_cifar10(download=not args.no_download)
        for split in ("train", "test"):
            x, y = bdata.load_cifar10(split)
            print(f"{split}: {tuple(x.shape)} images, {len(y)} labels")
    except bdata.DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"CIFAR-10 is valid at {folder}")
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from .results import cache_dir

    files = sorted(cache_dir().glob("*.npz"))
    if args.clear:
        for f in files:
            f.unlink()
        print(f"removed {len(files)} cached runs from {cache_dir()}")
    else:
        for f in files:
            print(f"{f.stat().st_size / 1e6:7.1f} MB  {f.name}")
        print(f"{len(files)} cached runs in {cache_dir()}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    return bench.book() if args.book else bench.main(steps=args.steps, width=args.width)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bnbook",
        description="bnbook: train and probe the networks of the batch-normalization book.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train one run (or fetch it from the cache) and print its final numbers")
    _config_args(p)
    p.add_argument("--retrain", action="store_true", help="ignore the cache")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("data", help="check CIFAR-10 (downloading it if missing) and report where it is")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("cache", help="list (or --clear) the cached runs")
    p.add_argument("--clear", action="store_true")
    p.set_defaults(func=_cmd_cache)

    p = sub.add_parser("bench", help="throughput of the training loop vs plain PyTorch, probe overhead, GFLOP/s; "
                       "--book: time every chapter's execution and the HTML build")
    p.add_argument("--book", action="store_true", help="execute the whole book on an empty cache and time it")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--width", type=float, default=0.5)
    p.set_defaults(func=_cmd_bench)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
