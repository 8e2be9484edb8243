"""A pill's drug facts, read and checked from one manifest row.

The manifest columns are those of ``c3pi-4k`` (see its README): names from RxNorm, the
labeler, RxCUI, DEA schedule, imprint tokens separated by ``;``, colour, shape, size and
score. Every fact is optional except ``label``; a present value that cannot be right (a
size of "-3", a colour no one codes, an NDC without dashes) raises an error naming the row
and the column.

Example:
    >>> facts = DrugFacts.from_row(row, where="manifest.csv:3")
    >>> facts.describe()
    'atomoxetine 40 mg oral capsule (Strattera), Eli Lilly and Company, blue capsule, ...'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .errors import LibraryError, QueryError
from .imprint_text import imprint_tokens
from .vocab import coded_colors, coded_shape

DAILYMED_SEARCH = "https://dailymed.nlm.nih.gov/dailymed/search.cfm?labeltype=all&query={ndc}"
_NDC = re.compile(r"^\d{4,5}-\d{3,4}-\d{1,2}$")
_SCHEDULES = {
    "CI": "CI",
    "CII": "CII",
    "CIII": "CIII",
    "CIV": "CIV",
    "CV": "CV",
    "I": "CI",
    "II": "CII",
    "III": "CIII",
    "IV": "CIV",
    "V": "CV",
    "1": "CI",
    "2": "CII",
    "3": "CIII",
    "4": "CIV",
    "5": "CV",
}
_IMPRINT_TYPES = ("PRINTED", "DEBOSSED", "EMBOSSED")
MAX_SIZE_MM = 60.0  # the largest oral dosage forms are ~30 mm; beyond this is a typo
FACT_COLUMNS = (
    "ndc",
    "source_id",
    "part",
    "status",
    "name",
    "generic_name",
    "brand_name",
    "strength",
    "dosage_form",
    "labeler",
    "rxcui",
    "dea_schedule",
    "imprint",
    "imprint_type",
    "imprint_color",
    "color",
    "shape",
    "size_mm",
    "score",
)

# A pill's look as the facts tell it: its colour set and shape (DrugFacts.look).
Look = tuple[frozenset[str], str]


@dataclass(frozen=True)
class DrugFacts:
    """What is known about one reference pill (one photograph of one label).

    ``imprint`` keeps the manifest's tokens as written (case included); search normalises
    them. ``colors`` and ``shape`` are NLM coded values (``WHITE``, ``ROUND``, ...).
    """

    label: str
    image: str = ""
    ndc: str = ""
    source_id: str = ""
    part: int = 1
    status: str = ""
    name: str = ""
    generic_name: str = ""
    brand_name: str = ""
    strength: str = ""
    dosage_form: str = ""
    labeler: str = ""
    rxcui: str = ""
    dea_schedule: str = ""
    imprint: tuple[str, ...] = ()
    imprint_type: str = ""
    imprint_color: str = ""
    colors: tuple[str, ...] = ()
    shape: str = ""
    size_mm: float | None = None
    score: int | None = None

    @property
    def colours_and_shape(self) -> Look:
        """The colour set and shape, the facts a look is compared by."""
        return frozenset(self.colors), self.shape

    @property
    def look(self) -> Look | None:
        """:attr:`colours_and_shape`, or None when the library lacks either."""
        colours, shape = self.colours_and_shape
        return (colours, shape) if colours and shape else None

    @classmethod
    def from_row(cls, row: Mapping[str, str | None], where: str = "row") -> DrugFacts:
        """Read and check one manifest row (a ``csv.DictReader`` dict).

        Args:
            row: column -> cell text; missing columns and empty cells mean "unknown".
            where: how errors name the row, e.g. ``"manifest.csv:12"``.

        Raises:
            LibraryError: a cell holds a value that cannot be right; the message names
                ``where`` and the column.
        """

        def cell(col: str) -> str:
            return (row.get(col) or "").strip()

        def bad(col: str, why: str) -> LibraryError:
            return LibraryError(f"{where}: column {col!r}: {cell(col)!r} {why}")

        label = cell("label")
        if not label:
            raise bad("label", "is empty; every row needs a label")
        ndc = cell("ndc")
        if ndc and not _NDC.match(ndc):
            raise bad("ndc", "is not an NDC with dashes (e.g. 00002-3229-30)")
        rxcui = cell("rxcui")
        rxcui = "" if rxcui == "0" else rxcui  # RxImage writes 0 for "no RxNorm concept"
        if rxcui and not rxcui.isdigit():
            raise bad("rxcui", "is not an RxNorm concept id (digits only)")
        schedule = cell("dea_schedule")
        if schedule:
            key = schedule.upper().replace("-", "").replace(" ", "")
            key = key[1:] if key.startswith("C") and key[1:] in _SCHEDULES else key
            if key not in _SCHEDULES:
                raise bad("dea_schedule", "is not a DEA schedule (CII, CIII, CIV, CV or empty)")
            schedule = _SCHEDULES[key]
        imprint_type = cell("imprint_type").upper()
        if imprint_type and imprint_type not in _IMPRINT_TYPES:
            raise bad("imprint_type", f"is not one of {', '.join(_IMPRINT_TYPES)} or empty")
        try:
            colors = coded_colors(cell("color"))
        except QueryError as exc:
            raise bad("color", f"is not a colour ({exc})") from None
        try:
            ink = ", ".join(coded_colors(cell("imprint_color")))
        except QueryError as exc:
            raise bad("imprint_color", f"is not a colour ({exc})") from None
        try:
            shape = coded_shape(cell("shape"))
        except QueryError as exc:
            raise bad("shape", f"is not a shape ({exc})") from None
        return cls(
            label=label,
            image=cell("image"),
            ndc=ndc,
            source_id=cell("source_id"),
            part=_integer(cell("part"), 1, 99, lambda why: bad("part", why)) or 1,
            status=cell("status"),
            name=cell("name"),
            generic_name=cell("generic_name"),
            brand_name=cell("brand_name"),
            strength=cell("strength"),
            dosage_form=cell("dosage_form"),
            labeler=cell("labeler"),
            rxcui=rxcui,
            dea_schedule=schedule,
            imprint=tuple(t.strip() for t in cell("imprint").split(";") if t.strip()),
            imprint_type=imprint_type,
            imprint_color=ink,
            colors=colors,
            shape=shape,
            size_mm=_size(cell("size_mm"), lambda why: bad("size_mm", why)),
            score=_integer(cell("score"), 1, 8, lambda why: bad("score", why)),
        )

    @property
    def is_controlled(self) -> bool:
        """True for a DEA-scheduled (controlled) substance."""
        return bool(self.dea_schedule)

    @property
    def dailymed_url(self) -> str | None:
        """DailyMed's search for this NDC (its labels and package inserts), or None."""
        return DAILYMED_SEARCH.format(ndc=self.ndc) if self.ndc else None

    @property
    def imprint_text(self) -> str:
        """The imprint as a person would write it: tokens separated by spaces."""
        return " ".join(self.imprint)

    @property
    def imprint_tokens(self) -> tuple[str, ...]:
        """Normalised imprint tokens (upper case, letter and digit runs)."""
        return imprint_tokens(" ".join(self.imprint))

    @property
    def appearance(self) -> str:
        """Colour and shape in words, e.g. ``"blue and white capsule"``."""
        colour = " and ".join(c.lower() for c in dict.fromkeys(self.colors))
        return " ".join(p for p in (colour, self.shape.lower()) if p)

    @property
    def drug(self) -> str:
        """The drug in words: generic, strength and form, e.g. ``"atomoxetine 40 mg oral
        capsule"``; the RxNorm name when it was not parsed; "" when unknown."""
        if not self.generic_name:
            return self.name
        form = "pack" if self.dosage_form.upper() == "KIT" else self.dosage_form.lower()
        return " ".join(p for p in (self.generic_name, self.strength.lower(), form) if p)

    def describe(self) -> str:
        """One readable line: drug (brand), labeler, appearance, imprint, schedule.

        Example: ``"atomoxetine 40 mg oral capsule (Strattera), Eli Lilly and Company,
        blue capsule 16 mm, imprint Lilly 3229 40 mg"``.
        """
        drug = self.drug or (
            f"unnamed pill (NDC {self.ndc})" if self.ndc else f"unnamed pill ({self.label})"
        )
        parts = [f"{drug} ({self.brand_name})" if self.brand_name else drug]
        if self.labeler:
            parts.append(self.labeler)
        look = self.appearance
        if self.size_mm is not None:
            look = f"{look} {self.size_mm:g} mm".strip()
        if look:
            parts.append(look)
        if self.score and self.score > 1:
            parts.append(f"scored in {self.score}")
        parts.append(f"imprint {self.imprint_text}" if self.imprint else "no imprint")
        if self.part > 1:
            parts.append(f"part {self.part} of the pack")
        if self.status:
            parts.append(self.status.lower())
        if self.is_controlled:
            parts.append(f"controlled substance, schedule {self.dea_schedule}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready facts with the derived fields (controlled flag, DailyMed link)."""
        out = asdict(self)
        out["imprint"] = list(self.imprint)
        out["colors"] = list(self.colors)
        out.update(
            imprint_text=self.imprint_text,
            drug=self.drug,
            appearance=self.appearance,
            is_controlled=self.is_controlled,
            dailymed_url=self.dailymed_url,
            description=self.describe(),
        )
        return out


def _size(text: str, bad: Any) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise bad("is not a number of millimetres") from None
    if not 0.0 < value <= MAX_SIZE_MM:
        raise bad(f"is not a pill size (expected 0 < mm <= {MAX_SIZE_MM:g})")
    return value


def _integer(text: str, low: int, high: int, bad: Any) -> int | None:
    if not text:
        return None
    if not text.isdigit() or not low <= int(text) <= high:
        raise bad(f"is not a whole number from {low} to {high}")
    return int(text)
