"""Identical pills: labels whose reference pills look the same by their facts.

Repackagers and relabelers sell one tablet under many NDCs, and some generics of different
drugs look alike. Two reference pills are *the same pill* when their imprints have the same
tokens (any order, case, separators; a side listed twice counts once), their colours are the
same set, their shapes are equal and their sizes differ by at most ``SIZE_TOLERANCE_MM``;
a group is a connected set of such references holding at least two labels. Pills without
an imprint are never grouped: their facts are too thin to call two of them identical.

Grouping uses the facts only; where facts disagree about one physical pill (a size measured
1.5 mm apart, a colour coded differently) the photographs would have to decide, which this
module does not do.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .facts import DrugFacts
from .imprint_text import imprint_key

if TYPE_CHECKING:
    from .database import Library

SIZE_TOLERANCE_MM = 1.0


def look_key(facts: DrugFacts) -> tuple[str, frozenset[str], str] | None:
    """(imprint key, colour set, shape), or None for a pill without an imprint."""
    key = imprint_key(facts.imprint_tokens)
    if not key:
        return None
    return key, *facts.colours_and_shape


def find_groups(facts: Sequence[DrugFacts]) -> list[int | None]:
    """Group id (0, 1, ...) of each reference in ``facts``, None for a pill with no twin.

    Example:
        >>> find_groups([a, a_relabelled, b])
        [0, 0, None]
    """
    buckets: dict[tuple[str, frozenset[str], str], list[int]] = defaultdict(list)
    for i, f in enumerate(facts):
        key = look_key(f)
        if key is not None:
            buckets[key].append(i)
    out: list[int | None] = [None] * len(facts)
    next_id = 0
    for members in buckets.values():
        for component in _size_components(members, facts):
            if len({facts[i].label for i in component}) < 2:
                continue
            for i in component:
                out[i] = next_id
            next_id += 1
    return _renumber(out)


def _size_components(members: list[int], facts: Sequence[DrugFacts]) -> list[list[int]]:
    """Split one look bucket where sizes jump by more than the tolerance (single link).

    A reference of unknown size joins the first component.
    """
    known = sorted(
        (i for i in members if facts[i].size_mm is not None), key=lambda i: facts[i].size_mm or 0.0
    )
    unknown = [i for i in members if facts[i].size_mm is None]
    comps: list[list[int]] = []
    for i in known:
        if (
            comps
            and (facts[i].size_mm or 0.0) - (facts[comps[-1][-1]].size_mm or 0.0)
            <= SIZE_TOLERANCE_MM
        ):
            comps[-1].append(i)
        else:
            comps.append([i])
    if unknown:
        if comps:
            comps[0].extend(unknown)
        else:
            comps.append(unknown)
    return comps


def _renumber(ids: list[int | None]) -> list[int | None]:
    """Number groups in order of first appearance, so ids follow the manifest's order."""
    mapping: dict[int, int] = {}
    return [None if g is None else mapping.setdefault(g, len(mapping)) for g in ids]


@dataclass(frozen=True)
class GroupSummary:
    """How many look groups a library holds and how many labels they cover."""

    groups: int
    labels: int
    references: int


def summarize(facts: Sequence[DrugFacts], group_ids: Sequence[int | None]) -> GroupSummary:
    """Counts over :func:`find_groups`'s answer."""
    grouped = [f for f, g in zip(facts, group_ids, strict=True) if g is not None]
    return GroupSummary(
        groups=len({g for g in group_ids if g is not None}),
        labels=len({f.label for f in grouped}),
        references=len(grouped),
    )


def same_pill(library: Library, label: str) -> list[DrugFacts]:
    """Other labels' reference pills that look the same as any of ``label``'s references.

    Returns an empty list for a pill with no twin; raises LibraryError for an unknown label.

    Example:
        >>> [f.ndc for f in same_pill(lib, "00093-0900-01")]
    """
    refs = library.references(label)
    group_ids = sorted({r.group_id for r in refs if r.group_id is not None})
    members = library.group_members(group_ids)
    return [r.facts for r in members if r.facts.label != label]


def twin_labels(library: Library) -> dict[str, frozenset[str]]:
    """Every grouped label -> the other labels it shares an identical-pill group with.

    Labels in no group are absent. One query over the grouped references (for
    ``evaluate``'s same-pill figures: a hit on any twin of the true label counts).
    """
    rows = library.query("SELECT group_id, label FROM refs WHERE group_id IS NOT NULL")
    by_group: dict[int, set[str]] = defaultdict(set)
    for group_id, label in rows:
        by_group[group_id].add(label)
    out: dict[str, set[str]] = defaultdict(set)
    for labels in by_group.values():
        for label in labels:
            out[label] |= labels - {label}
    return {label: frozenset(others) for label, others in out.items() if others}
