"""``python -m reuse``: small command-line tools.

  python -m reuse info                 versions, devices and which op backend is active
  python -m reuse cache PATH [--data DIR]  describe a logit cache (and check it matches DIR's data)
  python -m reuse scores PATH [--data DIR]  describe a score table (and check it matches DIR's data)
  python -m reuse check-config FILE    validate a workflow config (as the workflow does)
  python -m reuse report [--results DIR] [--config FILE]  summary table and offline report pages
  python -m reuse tables TABLE [--results DIR] [...]  a markdown table from a results folder;
                                       --update FILE / --check FILE: the tables a doc quotes
  python -m reuse train-run SPEC.json  train one run (train_run's keyword arguments); under
                                       torchrun --nproc-per-node N: data-parallel in N processes
"""

from __future__ import annotations

import argparse
import json
import platform
import sys


def _info(args: argparse.Namespace) -> int:
    import torch

    import reuse
    from reuse import ops

    b = ops.backend_info()
    print(f"reuse {reuse.__version__}  (python {platform.python_version()}, torch {torch.__version__}, "
          f"CUDA build {torch.version.cuda or 'none'})")
    print(f"op backend: {b['backend']}" + (f"  ({b.get('extension')})" if b.get("extension") else ""))
    print(f"  CPU kernels: {'yes' if b.get('cpu_kernels') else 'no'}; "
          f"CUDA kernels: {'yes' if b.get('cuda_kernels') else 'no'}")
    if b.get("load_error"):
        print(f"  compiled extension not in use: {b['load_error']}")
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    print(f"devices: cpu ({torch.get_num_threads()} threads)" + "".join(f", cuda:{i} {n}" for i, n in enumerate(gpus)))
    if args.json:
        print(json.dumps(b, default=str))
    return 0


def _train_fingerprint(data_dir: str | None) -> dict | None:
    """The training split's fingerprint of a prepared dataset folder (None without one)."""
    if not data_dir:
        return None
    from reuse.io import read_json

    return read_json(f"{data_dir}/dataset.json")["fingerprint"]["train"]


def _cache(args: argparse.Namespace) -> int:
    from reuse.cache import LogitCache

    fingerprint = _train_fingerprint(args.data)
    c = LogitCache.open(args.path, fingerprint=fingerprint)
    m = c.meta
    print(f"{args.path}: {m['n']} examples x {m['num_views']} views x {m['num_classes']} classes, {m['dtype']}, "
          f"dense={m['dense']}, topk={m['topk']}")
    print(f"  from {m['source']['path']} (epoch {m['source']['epoch']}, seed {m['source']['seed']})")
    print(f"  data: {m['fingerprint']['name']} {m['fingerprint']['split']} split, digest {m['fingerprint']['digest']}")
    for i, v in enumerate(m["views"]):
        print(f"  view {i}: {json.dumps(v)}")
    if fingerprint is not None:
        print(f"  matches the training split prepared in {args.data}")
    return 0


def _scores(args: argparse.Namespace) -> int:
    from reuse.scores import ScoreTable

    fingerprint = _train_fingerprint(args.data)
    t = ScoreTable.open(args.path, fingerprint=fingerprint)
    m = t.meta
    print(f"{args.path}: {m['n']} examples, scores {', '.join(m['scores'])} at epochs {m['epochs']}, "
          f"averaged over {len(m['runs'])} past runs")
    print(f"  data: {m['fingerprint']['name']} {m['fingerprint']['split']} split, digest {m['fingerprint']['digest']}")
    print(f"  scoring cost: {m['cost']['time_s']:.1f} s, {m['cost']['flops']:.3g} FLOPs")
    q = t.df.groupby(["score", "epoch"], observed=True)["value"].describe(percentiles=[0.1, 0.5, 0.9])
    print(q[["mean", "10%", "50%", "90%"]].to_string(float_format=lambda v: f"{v:.4g}"))
    if fingerprint is not None:
        print(f"  matches the training split prepared in {args.data}")
    return 0


def _check_config(args: argparse.Namespace) -> int:
    import yaml

    from reuse.config import validate_config

    with open(args.file) as f:
        cfg = yaml.safe_load(f)
    validate_config(cfg, source=args.file)
    print(f"{args.file}: valid")
    return 0


def _report(args: argparse.Namespace) -> int:
    import logging

    import yaml

    from reuse.config import validate_config
    from reuse.workflow import report

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = None
    if args.config:
        with open(args.config) as f:
            config = yaml.safe_load(f)
        validate_config(config, source=args.config)
    out = report(results=args.results, config=config, out_dir=args.out)
    runs = out["runs"]
    n_bad = int((runs["status"] != "ok").sum())
    print(f"{len(runs) - n_bad} of {len(runs)} runs finished" + (f"; {n_bad} shown as missing" if n_bad else ""))
    print(f"summary: {args.results}/summary.parquet, {args.results}/summary.csv")
    print(f"report: {args.out or args.results + '/report'}/index.html")
    return 0


def _tables(argv: list[str]) -> int:
    """``tables TABLE [options]`` prints one table; ``tables --update FILE...`` rewrites the blocks of each
    file from their own commands; ``tables --check FILE...`` fails where a block was edited by hand."""
    from pathlib import Path

    from reuse.report import markdown as md

    if argv and argv[0] in ("--update", "--check"):
        files = [Path(f) for f in argv[1:]]
        if not files:
            print(f"error: {argv[0]} needs the markdown files", file=sys.stderr)
            return 2
        if argv[0] == "--update":
            for f in files:
                print(f"{f}: {md.update(f)} tables written")
            return 0
        problems = [p for f in files for p in md.check(f)]
        for p in problems:
            print(p, file=sys.stderr)
        return 1 if problems else 0
    if not argv or argv[0] in ("-h", "--help"):
        print(md.__doc__)
        return 0
    print(md.render(argv))
    return 0


def _train_run(args: argparse.Namespace) -> int:
    import logging

    from reuse.io import read_json
    from reuse.train.distributed import from_env
    from reuse.workflow import train_run

    env = from_env()
    tag = f" [rank {env.rank}/{env.world_size}]" if env.world_size > 1 else ""
    logging.basicConfig(level=logging.INFO if env.rank == 0 else logging.WARNING, datefmt="%H:%M:%S",
                        format=f"%(asctime)s{tag} %(levelname)s %(message)s")
    spec = read_json(args.spec)
    ckpts = spec["outputs"].get("ckpts", {})  # JSON keys are strings: epochs back to integers
    spec["outputs"]["ckpts"] = {int(k) if str(k).isdigit() else k: v for k, v in ckpts.items()}
    train_run(**spec)
    return 0


def main(argv: list[str] | None = None) -> int:
    from reuse.errors import ReuseError

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["tables"]:  # its own argument grammar (reuse.report.markdown.parser)
        try:
            return _tables(argv[1:])
        except ReuseError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1

    p = argparse.ArgumentParser(prog="python -m reuse", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("info", help="versions, devices and the active op backend")
    s.add_argument("--json", action="store_true", help="also print the backend details as JSON")
    s.set_defaults(fn=_info)
    s = sub.add_parser("cache", help="describe a logit cache folder")
    s.add_argument("path")
    s.add_argument("--data", help="a prepared dataset folder (results/<dataset>/data) the cache must match")
    s.set_defaults(fn=_cache)
    s = sub.add_parser("scores", help="describe a score table (results/<dataset>/scores.parquet)")
    s.add_argument("path")
    s.add_argument("--data", help="a prepared dataset folder (results/<dataset>/data) the table must match")
    s.set_defaults(fn=_scores)
    s = sub.add_parser("check-config", help="validate a workflow config file")
    s.add_argument("file")
    s.set_defaults(fn=_check_config)
    s = sub.add_parser("report", help="summary table and offline report pages from whatever runs exist")
    s.add_argument("--results", default="results", help="the results folder (default: results)")
    s.add_argument("--config", help="the workflow config: its runs that did not finish are shown as missing, and "
                                    "its report block is used")
    s.add_argument("--out", help="folder of the pages (default: RESULTS/report)")
    s.set_defaults(fn=_report)
    s = sub.add_parser("train-run", help="train one run from a JSON file of train_run's keyword arguments "
                                         "(data-parallel under torchrun)")
    s.add_argument("spec", help="JSON: data_dir, model_name, model_cfg, recipe, seed, device, outputs, progress")
    s.set_defaults(fn=_train_run)
    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except ReuseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
