"""Command line: `python -m bnbook --help` lists what it can run."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
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
    cfg = Config(**{k: v for k, v in vars(args).items() if k in fields})
    print(cfg.label())
    run = get_run(cfg, retrain=args.retrain)
    print(json.dumps(run.final, indent=2))
    print(f"cached at {run_path(cfg)}")
    return 0 if run.final["status"] == "ok" else 3


def _cmd_paper(args: argparse.Namespace) -> int:
    import torch

    from . import experiments, results

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    threads = args.threads or (os.cpu_count() or 1)
    overrides = {k: v for k, v in (("steps", args.steps), ("width", args.width), ("train_size", args.train_size),
                                   ("test_size", args.test_size)) if v is not None}
    if args.seeds < 1:
        raise SystemExit(f"--seeds {args.seeds}: give at least 1")
    # the book's ensembles at the paper's scale: the first --seeds seeds of each configuration (the paper: one)
    configs = list(dict.fromkeys(
        dataclasses.replace(experiments.paper_scale(c), **overrides)
        for ch in args.chapter for c in experiments.chapter_runs(ch) if c.seed in experiments.seeds(c)[: args.seeds]))
    print(f"{len(configs)} paper-scale runs of chapter(s) {', '.join(map(str, args.chapter))} on {device}"
          + (f" ({threads} threads)" if device == "cpu" else "") + f"; results and checkpoints in {results.paper_dir()}")
    if args.cluster and not args.list:
        return _submit_paper_runs(args, configs)
    for i, cfg in enumerate(configs, 1):
        path = results.paper_path(cfg)
        state = "done" if path.exists() else "resumes" if path.with_suffix(".ckpt").exists() else "to do"
        print(f"[{i}/{len(configs)}] {state:7s} {cfg.label()}")
        if args.list or state == "done":
            continue
        try:
            run = results.train_paper_run(cfg, device, threads, checkpoint_every=args.checkpoint_every,
                                          tf32=args.tf32)
        except KeyboardInterrupt:
            ckpt = path.with_suffix(".ckpt")
            saved = f"its last checkpoint is {ckpt}" if ckpt.exists() else "no checkpoint was written yet"
            print(f"\ninterrupted: {saved}; run the same command again to resume", file=sys.stderr)
            return 130
        print(f"          {experiments.outcome(run)}; {run.final['wall_time']:.0f} s")
    return 0


def _submit_paper_runs(args: argparse.Namespace, configs: list) -> int:
    """One submitit job per run not yet done (SLURM, or this machine with `--cluster local`); waits for them."""
    try:
        import submitit
    except ImportError:
        raise ValueError("--cluster needs submitit: pip install submitit==1.5.4") from None
    from . import experiments, results

    todo = [c for c in configs if not results.paper_path(c).exists()]
    folder = results.paper_dir() / "jobs"
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=args.cluster)
    params: dict = {"timeout_min": args.timeout_min, "name": "bnbook-paper"}
    if args.cluster == "slurm":
        params.update(gpus_per_node=args.gpus_per_job, cpus_per_task=args.threads or 8)
        if args.partition:
            params["slurm_partition"] = args.partition
    executor.update_parameters(**params)
    jobs = [executor.submit(results.PaperJob(c, str(results.paper_dir()), args.device, args.threads,
                                             args.checkpoint_every, args.tf32)) for c in todo]
    print(f"submitted {len(jobs)} jobs ({len(configs) - len(todo)} runs already done) to {args.cluster}; "
          f"logs in {folder}")
    for job, cfg in zip(jobs, todo):
        print(f"  job {job.job_id}: {cfg.label()}")
    if args.no_wait:
        print("not waiting: run the same command again to see what is done (finished runs are skipped)")
        return 0
    failed = 0
    for job, cfg in zip(jobs, todo):
        try:
            job.result()
            print(f"  done {job.job_id}: {experiments.outcome(results.find_paper_run(cfg))}")
        except Exception as e:  # a failed job: report it, keep gathering the others
            failed += 1
            print(f"  FAILED {job.job_id}: {type(e).__name__}: {str(e).splitlines()[-1] if str(e) else ''}; "
                  f"log: {folder / str(job.job_id)}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_data(args: argparse.Namespace) -> int:
    folder = bdata.ensure_cifar10(download=not args.no_download)
    for split in ("train", "test"):
        x, y = bdata.load_cifar10(split)
        print(f"{split}: {tuple(x.shape)} images, {len(y)} labels")
    print(f"CIFAR-10 is valid at {folder}")
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from .results import cache_dir

    if (args.chapter or args.model) and not args.fill:
        raise ValueError("--chapter and --model choose the runs of --fill; add --fill")
    if args.fill:
        return _fill_cache(args.chapter, args.model)
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


def _fill_cache(chapters: list[int] | None, models: list[str] | None) -> int:
    """Train the book's runs that the cache lacks (every chapter's, or `chapters`', of `models`), one per core."""
    from . import experiments
    from .results import cache_dir, find_run, get_runs

    configs = experiments.all_runs() if not chapters else list(dict.fromkeys(
        c for ch in chapters for c in experiments.chapter_runs(ch)))
    configs = [c for c in configs if not models or c.model in models]
    missing = [c for c in configs if find_run(c) is None]
    print(f"{len(configs) - len(missing)} of {len(configs)} runs already cached in {cache_dir()}; training {len(missing)}",
          flush=True)
    get_runs(missing)
    print(f"all {len(configs)} runs cached")
    return 0


def _cmd_grid(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import experiments

    if args.seeds < 1 or (args.steps is not None and args.steps < 10):
        raise ValueError("--seeds must be >= 1 and --steps >= 10")
    grid = experiments.GRIDS[args.name]
    cells = grid.cells(args.steps, seeds=tuple(range(args.seeds)))
    path = Path(args.out) if args.out else experiments.grid_path(args.name)
    n = sum(len(c) for c in cells.values())
    print(f"{grid.section}'s grid {args.name!r}: {len(cells)} cells, {n} runs (cached ones are reused)", flush=True)
    command = experiments.grid_command(args.name) + "".join(
        f" --{k} {v}" for k, v in (("steps", args.steps), ("seeds", args.seeds))
        if v is not None and not (k == "seeds" and v == 3))
    doc = experiments.write_grid(args.name, path, cells, command)
    print(f"wrote {path} ({doc['provenance']['wall_time_s']:.0f} s, {doc['provenance']['train_core_s']:.0f} s of training)")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    if args.book:
        return bench.book()
    if args.ensemble:
        return bench.ensemble(seeds=args.seeds, steps=args.steps or 30)
    return bench.main(steps=args.steps or 40, width=args.width, rounds=args.rounds)


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

    p = sub.add_parser("paper", help="rerun chapters' experiments at the papers' scale (15k steps, full width, "
                       "GPU if present), resumable; the chapters show the results beside their own")
    p.add_argument("--chapter", type=int, action="append", required=True, help="chapter number (repeatable)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, help="CPU threads per run (default: all cores)")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints (default: 500)")
    p.add_argument("--list", action="store_true", help="list the runs and their state, train nothing")
    p.add_argument("--seeds", type=int, default=1, help="seeds per configuration, of the book's ensemble "
                   "(default 1, as in the paper; the book's claims use 5 or 3)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matrix products on a GPU (off by default: "
                   "it changes the gradients the chapters measure)")
    p.add_argument("--cluster", choices=("slurm", "local", "debug"), help="submit one job per run with submitit "
                   "(slurm; local: subprocesses on this machine; debug: in this process) and gather the results")
    p.add_argument("--partition", help="--cluster slurm: the SLURM partition")
    p.add_argument("--gpus-per-job", type=int, default=1, help="--cluster slurm: GPUs per job (default 1)")
    p.add_argument("--timeout-min", type=int, default=240, help="--cluster: minutes per job before it is "
                   "checkpointed and requeued (default 240)")
    p.add_argument("--no-wait", action="store_true", help="--cluster: submit and return")
    for name in ("steps", "width", "train-size", "test-size"):
        p.add_argument(f"--{name}", type=float if name == "width" else int,
                       help="override the paper's value (to try the command at a tiny scale)")
    p.set_defaults(func=_cmd_paper)

    p = sub.add_parser("data", help="check CIFAR-10 (downloading it if missing) and report where it is")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("cache", help="list (or --clear) the cached runs; --fill trains the book's missing runs")
    p.add_argument("--clear", action="store_true")
    p.add_argument("--fill", action="store_true", help="train every run of the book (or of --chapter) that the cache "
                   "lacks, one per core, so that the chapters then open without training")
    p.add_argument("--chapter", type=int, action="append", help="--fill: only this chapter's runs (repeatable)")
    p.add_argument("--model", choices=("vgg", "mlp", "dln"), action="append", help="--fill: only this model's runs "
                   "(repeatable)")
    p.set_defaults(func=_cmd_cache)

    from .experiments import GRIDS  # the sets of runs too long for CI, with what they cost

    p = sub.add_parser("grid", help="train a set of runs too long for CI and write its summary artifact, which the "
                       "book reads (cached runs are reused): " + "; ".join(
                           f"{name} ({g.section}, about {g.core_minutes} core-minutes)" for name, g in GRIDS.items()))
    p.add_argument("name", nargs="?", default="dln", choices=tuple(GRIDS), help="which (default dln)")
    p.add_argument("--steps", type=int, help="override the runs' length (to try the command at a tiny scale)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per cell (default 3, as the chapter's)")
    p.add_argument("--out", help="where to write it (default data/artifacts/, the grid's file)")
    p.set_defaults(func=_cmd_grid)

    p = sub.add_parser("bench", help="book-scale steps vs plain PyTorch anchors (VGG with nn.BatchNorm2d and "
                       "channels_last; the DLN as plain tensor ops), probe overhead, GFLOP/s; --ensemble: pooled vs "
                       "batched seeds; --book: time every chapter's execution and the HTML build")
    p.add_argument("--book", action="store_true", help="execute the whole book on an empty cache and time it")
    p.add_argument("--ensemble", action="store_true", help="seeds trained by the process pool vs batched in one model")
    p.add_argument("--steps", type=int, default=None, help="VGG steps per timed run (default 40; --ensemble: 30)")
    p.add_argument("--width", type=float, default=0.125, help="VGG width multiplier (default: the book's 0.125)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per comparison (default 5)")
    p.add_argument("--seeds", type=int, default=2, help="--ensemble: seeds per configuration (default 2)")
    p.set_defaults(func=_cmd_bench)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (bdata.DataError, ValueError) as e:  # bad input (data, configuration): the message says the fix
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
