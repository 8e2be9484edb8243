"""Enrolled pills join the drug library: their facts, from the enrollment manifest's columns.

When the base model carries a library (``library.sqlite``), the enrolled model gets a new
one: the base library's references plus one reference per new pill photograph, read from
the enrollment manifest's facts columns (c3pi-4k's: name, strength, labeler, imprint,
colour, shape, size, ...; every one optional but ``label``), and the look-alikes recomputed
from the new model's class rows. The facts are read and checked *before* the model is
built, so a bad cell stops the enrollment with nothing written; the library is written with
:func:`~rxvision.library.database.write_library` (atomically) after the model is saved.

New pills' photographs keep absolute paths (they live beside the enrollment manifest, not
under the base library's image root).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..artifact import Artifact, read_card
from .appearance import Appearance
from .database import LIBRARY_NAME, open_library, read_manifest_facts, write_library
from .facts import DrugFacts
from .for_model import class_rows


def enrollment_facts(
    model_path: Path, data_path: str | Path, labels: list[str]
) -> list[DrugFacts] | None:
    """The facts of ``labels`` from the enrollment data, or None when the base model has
    no library (then the enrolled model has none either).

    One reference per distinct look of a label: several photographs of one pill with the
    same facts count once. Class-folder data (no manifest) gives no facts.

    Raises:
        LibraryError: a manifest cell that cannot be right (names the row and column).
    """
    if not (model_path / LIBRARY_NAME).is_file():
        return None
    data_path = Path(data_path)
    if not data_path.is_file():  # class folders: labels only, no facts columns
        return []
    wanted = set(labels)
    out: list[DrugFacts] = []
    seen: set[DrugFacts] = set()
    for f in read_manifest_facts(data_path):
        if f.label not in wanted:
            continue
        key = replace(f, image="", source_id="")
        if key in seen:
            continue
        seen.add(key)
        image = Path(f.image)
        if f.image and not image.is_absolute():
            image = (data_path.parent / image).resolve()
        out.append(replace(f, image=str(image) if f.image else ""))
    return out


def write_enrolled_library(
    model_path: Path,
    out: Path,
    art: Artifact,
    labels: list[str],
    new_facts: list[DrugFacts],
    enrolled: list[str],
    published_as: Path | None = None,
) -> dict[str, Any]:
    """Write ``out/library.sqlite``: the base library plus ``new_facts`` of the pills just
    enrolled into ``art.model`` (saved at ``out``, whose classes are ``labels``); returns
    what was written, for the record. ``published_as``: where ``out`` will be published
    when it is a staging folder (see ``save_artifact(parts=...)``); the record names that
    place."""
    final = published_as or out
    with open_library(model_path / LIBRARY_NAME) as base:
        old = [f for f in base.all_facts() if f.label not in set(enrolled)]
        root, source = base.image_root, base.meta.get("source", "")
    new = [f for f in new_facts if f.label in set(enrolled)]
    sha = read_card(out)["weights"]["sha256"]
    path = write_library(
        old + new,
        out / LIBRARY_NAME,
        image_root=root,
        source=f"{source} + enrollment",
        appearance=Appearance(labels, class_rows(art), sha, source=str(final)),
    )
    with_facts = {f.label for f in new}
    return {
        "path": str(final / path.name),
        "references": len(old) + len(new),
        "new_references": len(new),
        "enrolled_without_facts": [lab for lab in enrolled if lab not in with_facts],
    }
