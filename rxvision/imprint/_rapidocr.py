"""PP-OCRv4 text detection and recognition: the ONNX models shipped in rapidocr-onnxruntime.

The models and the detector's box post-processing come from the package; the sessions,
the line cutting and the decoding are ours, so that:

* sessions are built once with this project's settings (:data:`THREADS` intra-op
  threads), and other model files may be passed (``det_model``/``rec_model``; a static
  int8 copy cut CPU time by a quarter but lost a third of the debossed reads, so the
  default stays fp32);
* the recogniser decodes letters and digits only (imprints are ASCII; the model's 6,600
  Chinese characters are masked out before the arg-max, so none is ever emitted);
* every line is read both ways up in one batch and the more confident reading is kept
  (``both_ways``; the package's 0/180 classifier guesses on short digit strings, and
  "900" turned over is a fine "006").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .reader import ImprintReaderError, LineRead

ALTERNATIVE_MARGIN = 0.1  # keep the other-way-up reading when within this confidence
REC_HEIGHT = 48  # the recogniser's input height (PP-OCRv4)
REC_WIDTH = 160  # its minimum input width: lines are padded up to it (320 in the package)
DET_THRESH, BOX_THRESH, UNCLIP = 0.3, 0.5, 1.6  # the package's detector settings
# One thread: on the shared 2-core machine two threads doubled the wall time per crop
# (docs/identification.md, "Reading the imprint"); the service runs the classifier beside it.
THREADS = 1
ALLOWED = set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _session(path: Path, threads: int):  # -> ort.InferenceSession
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class RapidOcrBackend:
    """Detector + recogniser sessions, created once (see :func:`reader.get_reader`).

    Args:
        det_model, rec_model: ONNX files (default: the PP-OCRv4 models in the package).
        rec_width: the recogniser's minimum input width; short imprint lines need little.
        both_ways: read every line turned a half turn too and keep the better reading.
        threads: intra-op threads per session (default :data:`THREADS`).
    """

    name = "rapidocr"

    def __init__(
        self,
        det_model: Path | None = None,
        rec_model: Path | None = None,
        rec_width: int = REC_WIDTH,
        both_ways: bool = True,
        threads: int | None = None,
    ) -> None:
        try:
            import rapidocr_onnxruntime
            from rapidocr_onnxruntime.ch_ppocr_det.utils import DBPostProcess
        except ImportError as exc:
            raise ImprintReaderError(
                "the rapidocr imprint reader needs rapidocr-onnxruntime: "
                "pip install 'rapidocr-onnxruntime>=1.4,<1.5'"
            ) from exc
        models = Path(rapidocr_onnxruntime.__file__).parent / "models"
        det_model = Path(det_model or models / "ch_PP-OCRv4_det_infer.onnx")
        rec_model = Path(rec_model or models / "ch_PP-OCRv4_rec_infer.onnx")
        for path in (det_model, rec_model):
            if not path.is_file():
                raise ImprintReaderError(
                    f"OCR model {path} is missing; reinstall "
                    "rapidocr-onnxruntime or pass an existing file"
                )
        threads = threads or THREADS
        self.det = _session(det_model, threads)
        self.rec = _session(rec_model, threads)
        meta = self.rec.get_modelmeta().custom_metadata_map
        if "character" not in meta:
            raise ImprintReaderError(
                f"{rec_model} carries no character list (metadata "
                "'character'); use a PP-OCR recogniser exported with it"
            )
        # CTC classes: 0 is the blank, then the model's characters, then a space.
        self.charset = ["", *meta["character"].splitlines(), " "]
        allowed = np.array([c in ALLOWED for c in self.charset])
        allowed[0] = True
        self._blocked = ~allowed
        self.post = DBPostProcess(DET_THRESH, BOX_THRESH, 50, UNCLIP, "fast", True)
        self.rec_width = rec_width
        self.both_ways = both_ways

    def detect(self, bgr: np.ndarray) -> np.ndarray:
        """Text quadrilaterals (K, 4, 2) in ``bgr``'s pixels (sides a multiple of 32 inside)."""
        import cv2

        h, w = bgr.shape[:2]
        rh, rw = max(32, round(h / 32) * 32), max(32, round(w / 32) * 32)
        x = cv2.resize(bgr, (rw, rh)).astype(np.float32) / 127.5 - 1.0  # (rh, rw, 3)
        pred = self.det.run(None, {self.det.get_inputs()[0].name: x.transpose(2, 0, 1)[None]})
        boxes, _ = self.post(pred[0], (h, w))  # pred (1, 1, rh, rw)
        return np.asarray([b for b in boxes if _side_lengths(b).min() > 3], dtype=np.float32)

    def recognise(self, lines: list[np.ndarray]) -> list[tuple[str, float]]:
        """(text, mean character confidence) of each upright BGR line, in one batch."""
        import cv2

        if not lines:
            return []
        ratios = [ln.shape[1] / ln.shape[0] for ln in lines]
        width = max(self.rec_width, int(np.ceil(REC_HEIGHT * max(ratios))))
        batch = np.zeros((len(lines), 3, REC_HEIGHT, width), dtype=np.float32)  # (B, 3, 48, W)
        for i, (ln, r) in enumerate(zip(lines, ratios, strict=True)):
            w = min(width, int(np.ceil(REC_HEIGHT * r)))
            img = cv2.resize(ln, (w, REC_HEIGHT)).astype(np.float32) / 127.5 - 1.0
            batch[i, :, :, :w] = img.transpose(2, 0, 1)
        probs = self.rec.run(None, {self.rec.get_inputs()[0].name: batch})[0]  # (B, T, C)
        probs[..., self._blocked] = 0.0
        idx, conf = probs.argmax(axis=2), probs.max(axis=2)
        out = []
        for seq, cs in zip(idx, conf, strict=True):
            keep = np.ones(len(seq), dtype=bool)
            keep[1:] = seq[1:] != seq[:-1]  # CTC: collapse repeats, then drop blanks
            keep &= seq != 0
            text = "".join(self.charset[k] for k in seq[keep])
            out.append((text, float(cs[keep].mean()) if keep.any() else 0.0))
        return out

    def read_lines(self, rgb: np.ndarray, detail: np.ndarray | None = None) -> list[LineRead]:
        """Detect text lines in ``rgb`` (H, W, 3) uint8 and read each (both ways up).

        Lines are cut from ``detail`` (the same picture, larger) when given.
        """
        bgr = np.ascontiguousarray(rgb[..., ::-1])  # the models were trained on BGR input
        quads = self.detect(bgr)
        if len(quads) == 0:
            return []
        source, factor = bgr, 1.0
        if detail is not None:
            source = np.ascontiguousarray(detail[..., ::-1])
            factor = detail.shape[1] / rgb.shape[1]
        ways = 2 if self.both_ways else 1
        crops, angles = [], []
        for quad in quads:
            crop, angle = _upright(source, quad * factor)
            crops.append(crop)
            if self.both_ways:
                crops.append(np.ascontiguousarray(crop[::-1, ::-1]))
            angles.append(angle)
        reads = self.recognise(crops)
        lines = []
        for i, quad in enumerate(quads):
            best, other = reads[ways * i], (reads[ways * i + 1] if self.both_ways else ("", 0.0))
            flip = other[1] > best[1]
            if flip:
                best, other = other, best
            close = bool(other[0]) and best[1] - other[1] <= ALTERNATIVE_MARGIN
            lines.append(
                LineRead(
                    text=best[0],
                    confidence=best[1],
                    angle=(angles[i] + (180 if flip else 0)) % 360,
                    box=(*quad.min(axis=0).tolist(), *quad.max(axis=0).tolist()),
                    alternative=other if close else None,
                )
            )
        return lines


def _side_lengths(quad: np.ndarray) -> np.ndarray:
    return np.linalg.norm(quad - np.roll(quad, -1, axis=0), axis=1)


def _upright(img: np.ndarray, quad: np.ndarray) -> tuple[np.ndarray, int]:
    """The quadrilateral ``quad`` (4, 2) cut out straight; a tall line is turned a quarter.

    Returns the line and the clockwise turn (0 or 270) that made it wider than tall.
    """
    import cv2

    sides = _side_lengths(quad)  # top, right, bottom, left
    width, height = max(int(max(sides[0], sides[2])), 1), max(int(max(sides[1], sides[3])), 1)
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    warp = cv2.getPerspectiveTransform(quad.astype(np.float32), target)
    crop = cv2.warpPerspective(
        img, warp, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC
    )
    if height >= 1.5 * width:
        return np.ascontiguousarray(np.rot90(crop)), 270  # rot90 turns anticlockwise
    return crop, 0
