"""`rxvision benchmark`: CPU latency, throughput, memory and size across runtimes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def _csv(kind: type) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list: {exc}") from exc

    return parse


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..deploy.benchmark import BACKENDS, DEFAULT_BACKENDS

    p = sub.add_parser("benchmark", help="measure inference speed, memory and size on this CPU")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", metavar="RUN",
                     help="trained artifact (default: the bundled model unless --config)")
    src.add_argument("--config", metavar="YAML",
                     help="build a randomly initialised model of this architecture instead")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override with --config (repeatable)")
    p.add_argument("--backend", type=_csv(str), default=list(DEFAULT_BACKENDS),
                   help=f"comma-separated from {', '.join(BACKENDS)} "
                        f"(default: {','.join(DEFAULT_BACKENDS)})")
    p.add_argument("--batch-sizes", type=_csv(int), default=[1, 8, 32], metavar="B,B,...",
                   help="default: 1,8,32")
    p.add_argument("--iters", type=int, default=30, help="timed iterations per point (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first (default 3)")
    p.add_argument("--max-seconds", type=float, default=10.0, metavar="S",
                   help="stop a point after S seconds of timing (at least 3 iterations)")
    p.add_argument("--rounds", type=int, default=1, metavar="R",
                   help="run the whole set of backends R times, interleaved, and pool the "
                        "calls; the summary adds each ratio per round (steadier on a shared "
                        "machine; default 1)")
    p.add_argument("--threads", type=int, help="intra-op threads (default: torch's default)")
    p.add_argument("--plain", metavar="TIMM_NAME",
                   help="plain timm model to compare with (default: the backbone's name; "
                        "'none' skips it)")
    p.add_argument("--calibration", metavar="DATASET",
                   help="images for int8 calibration (default: random inputs, speed only)")
    p.add_argument("--in-process", action="store_true",
                   help="run every backend in this process (faster; peak RSS is cumulative)")
    p.add_argument("--json", metavar="OUT", help="write the full report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..deploy.benchmark import format_table, model_specs, run_benchmark
    from ..io_utils import atomic_write_json

    models = model_specs(args.model, args.config, args.overrides, args.plain)
    report = run_benchmark(
        models, args.backend, args.batch_sizes, iters=args.iters, warmup=args.warmup,
        max_seconds=args.max_seconds, threads=args.threads, isolate=not args.in_process,
        calibration=args.calibration, rounds=args.rounds, log=lambda s: print(s, file=sys.stderr),
    )
    print(format_table(report))
    if args.json:
        atomic_write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0
