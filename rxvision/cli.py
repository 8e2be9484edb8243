"""Command-line interface: parses arguments and calls library functions, nothing more.

Each command lives in ``rxvision/commands/<name>.py`` with ``add_parser(subparsers)`` that
registers it and sets ``func``; this module only assembles them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules under rxvision.commands, in the order `rxvision --help` lists them.
COMMANDS = ["model", "data", "train", "evaluate", "calibrate", "predict", "enroll",
            "prototypes", "library", "segmenter", "export", "benchmark", "serve"]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``rxvision`` parser with every command, or with ``only`` that one.

    Each command module imports what its options need (enroll's defaults import the
    network's layers: timm, torchvision), so ``main`` registers only the command asked
    for: ``rxvision serve --backend onnx`` then loads no other command's libraries.
    """
    parser = argparse.ArgumentParser(
        prog="rxvision",
        description="Identify prescription medications from photographs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS if only is None else [only]:
        try:
            module = importlib.import_module(f"rxvision.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"rxvision.commands.{name}":
                raise
            continue  # command not implemented in this version
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .errors import user_errors

    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        if not isinstance(exc, user_errors()):  # a bug: the traceback is for us
            raise
        print(f"rxvision {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
