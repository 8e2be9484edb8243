"""`rxvision train`: train a model on studio references; single process or torchrun/DDP."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train on reference photos (works under torchrun for multi-GPU/multi-machine)",
        description="Train RxVision on reference photos with phone-style synthesised views. "
        "Multi-GPU: torchrun --nproc_per_node N -m rxvision train ...",
    )
    p.add_argument("--config", required=True, help="YAML config, e.g. configs/c3pi-1k.yaml")
    p.add_argument("--data", required=True, help="manifest CSV or class-per-folder directory")
    p.add_argument("--out", required=True, help="run directory (becomes a model artifact)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")
    p.add_argument("--init", metavar="RUN",
                   help="start from this model's weights (same architecture and labels): "
                        "fine-tune with a fresh optimiser and schedule")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. training.epochs=5 (repeatable)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many optimiser steps (smoke tests)")
    p.add_argument("--segmenter", metavar="DIR",
                   help="with augment.framing=crop: copy this pill finder into the run as "
                        "its segmenter/, so the run predicts and serves whole photos")
    p.add_argument("--independent-val", metavar="MANIFEST",
                   help="after training, evaluate the run on photos from the independent "
                        "renderer (rxvision data render-independent) and store them beside "
                        "the validation figures in the card (metrics.independent)")
    p.add_argument("--independent-limit", type=int, default=None, metavar="N",
                   help="evaluate a fixed random N of those photos (default: all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..config import ConfigError, load_config
    from ..engine.train import train

    if args.init and args.resume:
        raise ConfigError("--init starts a new run and --resume continues one: use one")
    overrides = list(args.overrides)
    config_path = args.config
    if args.resume and (Path(args.out) / "config.yaml").is_file():
        config_path = str(Path(args.out) / "config.yaml")  # the run's own resolved config
    cfg = load_config(config_path, overrides)
    if args.segmenter and cfg.augment.framing != "crop":
        raise ConfigError("--segmenter is for a model trained on pill crops "
                          "(--set augment.framing=crop)")
    if args.independent_val and not Path(args.independent_val).is_file():
        raise ConfigError(f"--independent-val {args.independent_val}: no such manifest")
    result = train(cfg, args.data, args.out, resume=args.resume, device=args.device,
                   max_steps=args.max_steps, init=args.init)
    import torch.distributed as dist

    if dist.is_initialized():
        rank = dist.get_rank()
        dist.destroy_process_group()
        if rank != 0:
            return 0
    print(f"best val top-1 {result.best_top1:.4f} after {result.epochs_run} epoch(s); "
          f"model artifact: {result.run_dir}")
    if args.segmenter:
        from ..locate.segmenter import attach_segmenter

        print(f"pill finder: {attach_segmenter(result.run_dir, args.segmenter)}")
    if args.independent_val:
        from ..engine.independent_check import independent_check

        check = independent_check(result.run_dir, args.independent_val,
                                  args.independent_limit)
        gap = "" if check["gap_points"] is None else f"; gap {check['gap_points']:+.1f} points"
        floor = check["ece_if_calibrated"]
        floor_text = "n/a" if floor is None else f"{floor:.4f}"
        print(f"independent photos ({check['n']}): top-1 {check['top1']:.4f}, top-5 "
              f"{check['top5']:.4f}, ECE {check['ece']:.4f} (a calibrated model: "
              f"{floor_text} at this N) | training renderer's "
              f"validation top-1 {result.best_top1:.4f}{gap}")
    return 0
