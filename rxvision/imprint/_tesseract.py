"""Tesseract (Debian package ``tesseract-ocr``) as an imprint reader, through its command line.

Tesseract reads upright text only, so the crop is read in the four quarter turns and the
turn with the highest summed word confidence is kept.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess

import numpy as np
from PIL import Image

from .reader import ImprintReaderError, LineRead

WHITELIST = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
TIMEOUT_S = 20.0


class TesseractBackend:
    """Runs the ``tesseract`` binary once per orientation (sparse-text mode, letters/digits)."""

    name = "tesseract"

    def __init__(self, binary: str = "tesseract") -> None:
        path = shutil.which(binary)
        if path is None:
            raise ImprintReaderError(
                "the tesseract imprint reader needs the tesseract binary: "
                "apt-get install tesseract-ocr (or choose reader='rapidocr')"
            )
        self.binary = path

    def _words(self, rgb: np.ndarray) -> list[LineRead]:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        cmd = [
            self.binary,
            "stdin",
            "stdout",
            "--psm",
            "11",
            "-l",
            "eng",
            "-c",
            f"tessedit_char_whitelist={WHITELIST}",
            "tsv",
        ]
        proc = subprocess.run(
            cmd, input=buf.getvalue(), capture_output=True, timeout=TIMEOUT_S, check=False
        )
        if proc.returncode != 0:
            detail = proc.stderr.decode(errors="replace")[:200]
            raise ImprintReaderError(f"tesseract failed ({proc.returncode}): {detail}")
        words = []
        rows = csv.DictReader(
            io.StringIO(proc.stdout.decode(errors="replace")),
            delimiter="\t",
            quoting=csv.QUOTE_NONE,
        )
        for row in rows:
            text = (row.get("text") or "").strip()
            conf = float(row.get("conf") or -1)
            if not text or conf < 0:
                continue
            x, y, w, h = (float(row[k]) for k in ("left", "top", "width", "height"))
            words.append(LineRead(text, conf / 100.0, 0, (x, y, x + w, y + h)))
        return words

    def read_lines(self, rgb: np.ndarray, detail: np.ndarray | None = None) -> list[LineRead]:
        """Words in the best of the four quarter turns, boxes mapped back to ``rgb``.

        ``detail`` is not used: Tesseract reads the working copy as it is.
        """
        h, w = rgb.shape[:2]
        best: list[LineRead] = []
        best_score = 0.0
        for k in range(4):  # np.rot90 turns anticlockwise; angle is the clockwise turn
            words = self._words(np.ascontiguousarray(np.rot90(rgb, k)))
            score = sum(word.confidence for word in words)
            if score > best_score:
                angle = (360 - 90 * k) % 360
                best = [_unturn(word, k, w, h, angle) for word in words]
                best_score = score
        return best


def _unturn(word: LineRead, k: int, w: int, h: int, angle: int) -> LineRead:
    """Map a box read on ``np.rot90(img, k)`` back to the (w, h) image."""
    x0, y0, x1, y1 = word.box
    for step in range(k, 0, -1):  # undo the last anticlockwise quarter turn first
        width_in = w if (step - 1) % 2 == 0 else h  # width of the image that turn received
        x0, y0, x1, y1 = width_in - y1, x0, width_in - y0, x1
    return LineRead(word.text, word.confidence, angle, (x0, y0, x1, y1))
