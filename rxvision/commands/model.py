"""`rxvision model summary`: shapes and parameter counts of the configured model."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="inspect the model architecture")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION")
    msub.required = True
    s = msub.add_parser("summary", help="parameter counts and tensor shapes for one input")
    s.add_argument("--config", required=True, help="YAML config, e.g. configs/model.yaml")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. training.num_classes=20 (repeatable)")
    s.add_argument("--pretrained", action="store_true",
                   help="load the config's pretrained weights (default: random init)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=summary)


def summary(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..models import build_model

    overrides = list(args.overrides)
    if not args.pretrained:
        overrides.insert(0, "architecture.backbone.pretrained=false")
    cfg = load_config(args.config, overrides)
    model = build_model(cfg)
    info = {"backbone": cfg.architecture.backbone.name,
            "input_size": cfg.training.input_size,
            **model.describe(tuple(cfg.training.input_size))}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:>20}: {value}")
    return 0
