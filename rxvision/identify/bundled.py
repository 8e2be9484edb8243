"""Where the model shipped with the repository lives, and how commands default to it.

Every command that takes ``--model`` (predict, evaluate, enroll, export, benchmark, serve)
uses the bundled model when ``--model`` is left out. Commands register the option with
:func:`add_model_argument` and resolve it with :func:`resolve_model_path`, so the default
and its error message are written once.

Example:
    >>> resolve_model_path(None)   # the bundled model, or ArtifactError naming the fix
    PosixPath('.../models/rxvision-c3pi-4k')
"""

from __future__ import annotations

import argparse
from pathlib import Path

import rxvision

from ..artifact import CARD_NAME, ArtifactError

BUNDLED_MODEL_NAME = "rxvision-c3pi-4k"


def bundled_model_dir() -> Path:
    """Where the bundled model is expected: ``<repo>/models/rxvision-c3pi-4k``."""
    return Path(rxvision.__file__).resolve().parents[1] / "models" / BUNDLED_MODEL_NAME


def default_model_path() -> Path:
    """The bundled model directory; raise :class:`ArtifactError` if it is not there."""
    path = bundled_model_dir()
    if not (path / CARD_NAME).is_file():
        raise ArtifactError(
            f"no --model given and no bundled model found at {path}; pass --model RUN"
        )
    return path


def resolve_model_path(path: str | Path | None) -> Path:
    """``path`` if given, else the bundled model (see :func:`default_model_path`)."""
    return Path(path) if path else default_model_path()


def add_model_argument(parser: argparse.ArgumentParser, help_extra: str = "") -> None:
    """Register the shared ``--model RUN`` option (default: the bundled model)."""
    parser.add_argument(
        "--model", default=None, metavar="RUN",
        help=f"model artifact directory (default: the bundled models/{BUNDLED_MODEL_NAME})"
             + (f"; {help_extra}" if help_extra else ""),
    )
