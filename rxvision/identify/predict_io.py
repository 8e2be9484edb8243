"""Inputs and outputs of ``rxvision predict``: expanding folders/manifests, rows, files.

Kept out of the command module so the command only parses arguments, and so the same
row format serves the CLI's ``--json``, CSV and JSONL outputs.

Row format (one per image, or per front/back pair): ``image``, optional ``true_label``
(manifest input), ``abstain``, ``unknown``, ``message``, ``retake`` (why the photo must be
retaken, e.g. "no pill found in the photo", then ``topk`` is empty; else null),
``confidence``, ``ood_score``,
``topk`` (list of ``rank, label, probability, metadata, abstain, unknown``),
``zoomed_to`` (per photo, the crop the model saw when it zoomed to a small pill, or null),
``zoom_notes`` (per photo, why it was or was not zoomed; null with zoom off; CSV has a
``zoomed`` flag and a ``zoom_note`` column instead of both), ``timings_ms``; with the
model's drug library, ``facts_source`` ("library" or "card"), and per candidate ``facts``,
``lookalikes``, ``same_pill``, ``same_pill_note`` (and ``typed_match`` with typed facts;
the row then has ``typed`` and, when they contradict the photo, ``library_hits``); or
``image`` and ``error`` for an input that could not be read.

A model trained on pill crops (``augment.framing: crop``) finds the pills first
(:class:`.pipeline.PillPipeline`) and gives one row per pill found, each with ``pill``
(1-based, best first), ``pills`` (how many the photo shows), ``box`` ([x0, y0, x1, y1] in
photo pixels) and ``finder_score`` (and ``same_photo``, ``{"with_box",
"same_pill_probability"}``, when the answer was weighed with the photo's other sure pill;
CSV: ``same_pill_probability``); a photo with no usable pill gives one row with ``retake``
and no candidates.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import load_dataset
from ..data.datasets import IMAGE_SUFFIXES
from ..io_utils import atomic_write_text
from .identifier import Identification, IdentifierError, retake_request
from .pipeline import PhotoAnswer, PillAnswer

METADATA_COLUMNS = ("ndc", "name", "strength")  # per-candidate columns in CSV output
FACTS_COLUMNS = ("drug", "labeler", "dea_schedule")  # and these, from the drug library
OUTPUT_SUFFIXES = (".csv", ".jsonl")


@dataclass
class PredictInput:
    """One image to identify, with its true label when a manifest gives one."""

    path: Path
    true_label: str | None = None


def expand_inputs(args: list[str]) -> tuple[list[PredictInput], bool]:
    """Image files, folders (recursive) and manifest CSVs -> inputs, and whether any
    argument was a folder or manifest (batch mode)."""
    items: list[PredictInput] = []
    batch = False
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            batch = True
            files = sorted(p for p in path.rglob("*")
                           if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            items += [PredictInput(p) for p in files]
        elif path.suffix.lower() == ".csv" and path.is_file():
            batch = True
            items += [PredictInput(s.path, s.label) for s in load_dataset(path).samples]
        else:
            items.append(PredictInput(path))  # a bad path is reported when it is decoded
    return items, batch


def result_row(image: str, result: Identification | Exception,
               true_label: str | None = None) -> dict[str, Any]:
    """One output row (see module docstring)."""
    row: dict[str, Any] = {"image": image}
    if true_label is not None:
        row["true_label"] = true_label
    if isinstance(result, Exception):
        row["error"] = str(result)
        return row
    d = result.to_dict()
    row.update({k: d[k] for k in ("abstain", "unknown", "message", "retake", "confidence",
                                  "ood_score")})
    row["topk"] = d["candidates"]
    row["zoomed_to"] = d["zoomed_to"]
    row["zoom_notes"] = d["zoom_notes"]
    row["timings_ms"] = d["timings_ms"]
    row["facts_source"] = d["facts_source"]
    if d["imprint"] is not None:
        row["imprint"] = d["imprint"]
    if d["same_photo"] is not None:
        row["same_photo"] = d["same_photo"]
    if d["typed"] is not None:
        row["typed"] = d["typed"]
        row["library_hits"] = d["library_hits"]
    return row


def pill_rows(image: str, answer: PhotoAnswer | PillAnswer | Exception,
              true_label: str | None = None) -> list[dict[str, Any]]:
    """Rows of one photo (or front/back pair) run through the pill finder: one per pill."""
    if isinstance(answer, Exception):
        return [result_row(image, answer, true_label)]
    if isinstance(answer, PillAnswer):
        answer = PhotoAnswer([answer], None, answer.identification.timings_ms)
    if not answer.pills:
        nothing = retake_request(answer.retake)
        nothing.timings_ms = answer.timings_ms
        return [{**result_row(image, nothing, true_label), "pills": 0}]
    rows = []
    for number, pill in enumerate(answer.pills, start=1):
        row = result_row(image, pill.identification, true_label)
        row.update(pill=number, pills=len(answer.pills), box=pill.box,
                   finder_score=pill.finder_score)
        rows.append(row)
    return rows


def _where(row: dict[str, Any]) -> str:
    """"photo.jpg", or "photo.jpg, pill 2 of 3 at (10, 20)-(90, 70)"."""
    if "box" not in row:
        return row["image"]
    x0, y0, x1, y1 = row["box"]
    return f"{row['image']}, pill {row['pill']} of {row['pills']} at ({x0}, {y0})-({x1}, {y1})"


def format_text(row: dict[str, Any]) -> str:
    """Human-readable lines for one row: with drug facts, one line per candidate
    ("1. atomoxetine 40 mg oral capsule (Strattera), Eli Lilly and Company — 87% — NDC
    00002-3229-30 — CONTROLLED CII"), its look and DailyMed link, and for the first the
    look-alikes and identical pills."""
    where = _where(row)
    if "error" in row:
        return f"{where}: error: {row['error']}"
    if row.get("retake"):  # the photo check found no pill (or an unusable photo): no guess
        return f"{where}: {row['message']}: {row['retake']}"
    if row["abstain"]:
        head = f"{where}: {row['message']} (top probability {row['confidence']:.3f})"
    else:
        top = row["topk"][0]
        name = _name(top["facts"]) if top.get("facts") else top["label"]
        head = f"{where}: {name} (p={row['confidence']:.3f})"
    crops = [c for c in row.get("zoomed_to") or [] if c]
    if crops:
        head += "; zoomed to the pill at " + ", ".join(
            f"({c[0]}, {c[1]})-({c[2]}, {c[3]})" for c in crops)
    lines = [head]
    if row.get("imprint"):
        lines.append("  " + imprint_note(row["imprint"]))
    if row.get("same_photo"):
        lines.append("  " + same_photo_note(row["same_photo"]))
    typed = row.get("typed")
    if typed:
        lines.append(f"  typed: {typed['note']}")
        lines += [f"    library: {h['rank']}. {_name(h['facts'])} — NDC {h['facts']['ndc']} — "
                  f"match {h['score']:.2f}" for h in row.get("library_hits") or []]
    for c in row["topk"]:
        if c.get("facts"):
            lines += _facts_lines(c, first=c["rank"] == 1)
            continue
        meta = ", ".join(f"{k}={v}" for k, v in c["metadata"].items() if k != "label")
        lines.append(f"  {c['rank']}. {c['label']:<24} p={c['probability']:.3f}"
                     + (f"  {meta}" if meta else ""))
    return "\n".join(lines)


def same_photo_note(same: dict[str, Any]) -> str:
    """"weighed with the pill at (10, 20)-(90, 70): the same pill with p = 0.97"."""
    x0, y0, x1, y1 = same["with_box"]
    return (f"weighed with the pill at ({x0}, {y0})-({x1}, {y1}): the same pill with "
            f"p = {same['same_pill_probability']:.2f}")


def imprint_note(imprint: dict[str, Any]) -> str:
    """"read: M 411 (the imprint decided)" / "read: nothing legible (appearance only)";
    "...; the read also fits 00093-7677-56 (TV 7677): check the whole imprint"."""
    if not imprint["read"]:
        return "read: nothing legible (the appearance alone decided)"
    who = ("the imprint changed the answer" if imprint["changed"] else
           f"the {imprint['decided_by']} decided")
    note = f"read: {imprint['read']} ({who})"
    if imprint.get("also_fits"):
        note += "; the read also fits " + ", ".join(
            f"{other['label']} ({other['imprint'].replace(';', ' ')})"
            for other in imprint["also_fits"]) + ": check the whole imprint"
    return note


def _name(facts: dict[str, Any]) -> str:
    """"atomoxetine 40 mg oral capsule (Strattera), Eli Lilly and Company"."""
    drug = facts.get("drug") or f"unnamed pill ({facts.get('ndc') or facts['label']})"
    brand = f" ({facts['brand_name']})" if facts.get("brand_name") else ""
    labeler = f", {facts['labeler']}" if facts.get("labeler") else ""
    return f"{drug}{brand}{labeler}"


def _percent(p: float) -> str:
    return "<1%" if p < 0.005 else f"{100 * p:.0f}%"


def _facts_lines(c: dict[str, Any], first: bool) -> list[str]:
    f = c["facts"]
    parts = [f"  {c['rank']}. {_name(f)}", _percent(c["probability"]),
             f"NDC {f['ndc']}" if f.get("ndc") else c["label"]]
    if f.get("is_controlled"):
        parts.append(f"CONTROLLED {f['dea_schedule']}")
    lines = [" — ".join(parts)]
    look = " ".join(p for p in (f.get("appearance", ""),
                                f"{f['size_mm']:g} mm" if f.get("size_mm") else "") if p)
    details = [look, f"imprint {f['imprint_text']}" if f.get("imprint_text") else "no imprint"]
    if f.get("rxcui"):
        details.append(f"RxCUI {f['rxcui']}")
    if f.get("dailymed_url"):
        details.append(f"DailyMed {f['dailymed_url']}")
    lines.append("     " + ", ".join(d for d in details if d))
    match = c.get("typed_match")
    if match:
        lines.append(f"     typed facts: likelihood {match['likelihood']:.2f} (photo alone "
                     f"{_percent(match['photo_probability'])}): "
                     + "; ".join(match["explanation"]))
    if first:
        if c.get("same_pill_note"):
            lines.append(f"     {c['same_pill_note']}")
        lines += [f"     {a['note']}" for a in c.get("lookalikes", [])]
    return lines


def csv_text(rows: list[dict[str, Any]], topk: int) -> str:
    """Flat CSV: one line per row, ``label_r, probability_r, ndc_r, ...`` per rank r
    (``drug_r``, ``labeler_r``, ``dea_schedule_r`` from the drug library, empty without)."""
    has_truth = any("true_label" in r for r in rows)
    has_pills = any("pills" in r for r in rows)
    fields = ["image", *(["true_label"] if has_truth else []),
              *(["pill", "pills", "box", "finder_score", "imprint_read", "decided_by",
                 "same_pill_probability"] if has_pills else []), "error",
              "abstain", "unknown", "message", "retake", "confidence", "ood_score", "zoomed",
              "zoom_note"]
    for r in range(1, topk + 1):
        fields += [f"label_{r}", f"probability_{r}",
                   *(f"{m}_{r}" for m in (*METADATA_COLUMNS, *FACTS_COLUMNS))]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        flat = {k: v for k, v in row.items()
                if k not in ("topk", "timings_ms", "zoomed_to", "zoom_notes", "imprint",
                             "same_photo")}
        if row.get("imprint"):
            flat["imprint_read"] = row["imprint"]["read"]
            flat["decided_by"] = row["imprint"]["decided_by"]
        if row.get("same_photo"):
            flat["same_pill_probability"] = row["same_photo"]["same_pill_probability"]
        if row.get("box"):
            flat["box"] = " ".join(str(v) for v in row["box"])
        flat["zoomed"] = any(row.get("zoomed_to") or [])
        flat["zoom_note"] = " + ".join(n or "" for n in row.get("zoom_notes") or [])
        for c in row.get("topk", []):
            r = c["rank"]
            flat[f"label_{r}"], flat[f"probability_{r}"] = c["label"], f"{c['probability']:.6f}"
            facts = c.get("facts") or {}
            for m in METADATA_COLUMNS:
                flat[f"{m}_{r}"] = c["metadata"].get(m, "") or facts.get(m, "")
            for m in FACTS_COLUMNS:
                flat[f"{m}_{r}"] = facts.get(m, "")
        writer.writerow(flat)
    return buf.getvalue()


def write_rows(path: str | Path, rows: list[dict[str, Any]], topk: int) -> Path:
    """Write rows atomically as CSV or JSONL, chosen by the file's suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return atomic_write_text(path, csv_text(rows, topk))
    if suffix == ".jsonl":
        return atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    raise IdentifierError(f"--out must end in {' or '.join(OUTPUT_SUFFIXES)}, got {path.name}")
