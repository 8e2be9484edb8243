"""What tells two pills apart, in words, from their facts alone.

An answer names the nearest other library pills by appearance; for each, the user needs
the one thing to check: "also looks like X: check the imprint: X reads 'M 412' (this one
reads 'M 411')". Facts are compared in the order a person can trust them: the imprint
first, then size and score line, shape, colour (named differently by different people and
shifted by light), and how the imprint is made (printed ink or cut into the pill).

Pure functions over :class:`~rxvision.library.facts.DrugFacts`; which pills count as
look-alikes (by the model's embedding or by facts) is the caller's choice.

Example:
    >>> differences(answer, other)
    ["check the imprint: it reads 'M 412' (this one reads 'M 411')"]
    >>> lookalike_note(answer, other)
    "also looks like verapamil 240 mg ... (NDC 00378-1412-01): check the imprint: ..."
"""

from __future__ import annotations

from .facts import DrugFacts
from .imprint_text import imprint_key

MIN_SIZE_GAP_MM = 1.0  # NLM sizes are whole millimetres; a gap under this is noise


def differences(answer: DrugFacts, other: DrugFacts) -> list[str]:
    """The checks that tell ``other`` from ``answer``, most reliable first.

    Returns an empty list when the facts do not tell them apart (the same pill, or facts
    too thin to say).
    """
    out = []
    a_key, o_key = imprint_key(answer.imprint_tokens), imprint_key(other.imprint_tokens)
    if a_key != o_key:
        if not o_key:
            out.append(f"check the imprint: it has none (this one reads '{answer.imprint_text}')")
        elif not a_key:
            out.append(f"check the imprint: it reads '{other.imprint_text}' (this one has none)")
        else:
            out.append(
                f"check the imprint: it reads '{other.imprint_text}' (this one reads "
                f"'{answer.imprint_text}')"
            )
    if (
        answer.size_mm is not None
        and other.size_mm is not None
        and abs(answer.size_mm - other.size_mm) >= MIN_SIZE_GAP_MM
    ):
        bigger = "longer" if other.size_mm > answer.size_mm else "shorter"
        out.append(
            f"size: it is {other.size_mm:g} mm long, {bigger} than this one's {answer.size_mm:g} mm"
        )
    if answer.score and other.score and answer.score != other.score:
        out.append(f"score line: it is {_scored(other.score)}, this one {_scored(answer.score)}")
    if answer.shape and other.shape and answer.shape != other.shape:
        out.append(f"shape: it is {other.shape.lower()}, this one {answer.shape.lower()}")
    if answer.colors and other.colors and set(answer.colors) != set(other.colors):
        out.append(f"colour: it is {_colours(other)}, this one {_colours(answer)}")
    if (
        a_key
        and o_key
        and answer.imprint_type
        and other.imprint_type
        and answer.imprint_type != other.imprint_type
    ):
        out.append(f"imprint: it is {_made(other)}, this one {_made(answer)}")
    return out


def lookalike_note(answer: DrugFacts, other: DrugFacts) -> str:
    """One line for an answer: what ``other`` is and how to tell it from ``answer``.

    Example: ``"also looks like verapamil 240 mg extended release oral tablet (NDC
    00378-1412-01): check the imprint: it reads 'M 412' (this one reads 'M 411')"``.
    """
    checks = differences(answer, other)
    who = f"{other.drug or 'an unnamed pill'} ({_code(other)})"
    if not checks:
        return (
            f"looks the same as {who}: its recorded imprint, colour, shape, size and "
            "score match this one's; only the package or label tells them apart"
        )
    return f"also looks like {who}: " + "; ".join(checks)


def same_pill_note(answer: DrugFacts, members: list[DrugFacts]) -> str:
    """One line naming the other labels of an identical-pill group ("" when none).

    Example: ``"the same pill is sold as: verapamil 240 mg ... (NDC 00378-1411-01), ..."``
    """
    others = [m for m in members if m.label != answer.label]
    if not others:
        return ""
    names = [
        f"{m.drug or 'unnamed'} ({_code(m)}{', ' + m.labeler if m.labeler else ''})" for m in others
    ]
    return "the same pill is sold as: " + "; ".join(names)


def _code(f: DrugFacts) -> str:
    return f"NDC {f.ndc}" if f.ndc else f.label


def _scored(score: int) -> str:
    return "unscored" if score == 1 else f"scored into {score} parts"


def _colours(f: DrugFacts) -> str:
    return " and ".join(c.lower() for c in dict.fromkeys(f.colors))


_MADE = {
    "DEBOSSED": "debossed (pressed into the surface)",
    "EMBOSSED": "embossed (raised from the surface)",
}


def _made(f: DrugFacts) -> str:
    if f.imprint_type == "PRINTED":
        return f"printed in {f.imprint_color.lower()} ink" if f.imprint_color else "printed"
    return _MADE.get(f.imprint_type, f.imprint_type.lower())
