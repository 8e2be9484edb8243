"""Command-line options that several commands share, so their wording is written once.

Kept free of torch imports: ``rxvision --help`` builds every parser.
"""

from __future__ import annotations

import argparse

TTA_CHOICES = (1, 2, 4)  # the keys of inference.tta.ROTATIONS (tested equal)
ZOOM_CHOICES = ("auto", "off")  # data.transforms.ZOOM_MODES (tested equal)


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
