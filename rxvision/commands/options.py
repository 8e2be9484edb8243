"""Command-line options that several commands share, so their wording is written once.

Kept free of torch imports: ``rxvision --help`` builds every parser.
"""

from __future__ import annotations

import argparse

TTA_CHOICES = (1, 2, 4)  # the keys of inference.tta.ROTATIONS (tested equal)
ZOOM_CHOICES = ("auto", "off")  # data.transforms.ZOOM_MODES (tested equal)
HEAD_PRECISION_CHOICES = ("fp32", "fp16")  # identify.identifier.HEAD_PRECISIONS (tested equal)


def add_tta_argument(parser: argparse.ArgumentParser) -> None:
    """``--tta N``: rotations per photo; the card's ``calibration.tta`` when left out."""
    parser.add_argument(
        "--tta", type=int, choices=TTA_CHOICES, metavar="N",
        help="average over N right-angle rotations of each photo (1, 2 or 4; default: the "
             "number the model was calibrated with, calibration.tta, else 1; N times the "
             "compute)")


def add_zoom_argument(parser: argparse.ArgumentParser) -> None:
    """``--zoom auto|off``: crop around a small pill; the card's setting when left out."""
    parser.add_argument(
        "--zoom", choices=ZOOM_CHOICES,
        help="auto: crop around a pill that is small in the photo before resizing (see "
             "docs/identification.md); default: the card's preprocessing.zoom, else off")


def add_head_precision_argument(parser: argparse.ArgumentParser) -> None:
    """``--head-precision fp32|fp16``: the final layer's rows at inference (torch backend)."""
    parser.add_argument(
        "--head-precision", choices=HEAD_PRECISION_CHOICES, default=None,
        help="fp16 keeps a cosine final layer's rows in half precision (torch backend; "
             "logits within 0.002): for libraries of tens of thousands of pills, where "
             "reading the rows bounds the time (100k pills: 18.7 -> 4.0 ms per answer; "
             "docs/library.md). Default: the card's identification.head_precision "
             "(`rxvision enroll --head-precision` writes it), else fp32")
