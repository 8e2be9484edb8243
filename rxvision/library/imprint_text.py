"""Imprint text as search keys: tokens, the grouping key, one-edit variants and distances.

A pill's imprint is compared as tokens, not as a string, so that separators, case, token
order and the side a token is on do not matter: "Lilly;3229;40;mg", "lilly 3229 40mg" and
"40 MG LILLY-3229" are the same four tokens. Tokens are runs of letters or of digits, so a
letter/digit boundary splits ("40mg" -> "40", "MG"): NLM's own imprint field is not
consistent about it ("EC5" on one pill, "EC;5" on another).

Search takes what a user typed as typed; the imprint matcher (``rxvision.imprint.match``)
also folds OCR confusions (O/0, I/1, S/5...), so the two keep their own tokens. What counts
as one misread character is shared: :mod:`rxvision.imprint.edits`.
"""

from __future__ import annotations

import re
import unicodedata

from ..imprint.edits import deletions

_RUN = re.compile(r"[A-Z]+|[0-9]+")


def imprint_tokens(text: str) -> tuple[str, ...]:
    """Letter runs and digit runs of ``text``, upper-cased, in reading order.

    Example:
        >>> imprint_tokens("Lilly;3229;40mg")
        ('LILLY', '3229', '40', 'MG')
    """
    return tuple(_RUN.findall(unicodedata.normalize("NFKC", text).upper()))


def imprint_key(tokens: tuple[str, ...] | list[str]) -> str:
    """Distinct tokens, sorted, space-joined: equal for the same marks in any order.

    Distinct because a pill printed "MYLAN 6440" on both sides is the same pill as one
    whose record lists the side once.
    """
    return " ".join(sorted(set(tokens)))


def edit_keys(token: str) -> set[str]:
    """Keys that ``token`` shares with every token one edit away (not ``token`` itself).

    For 3+ characters, the token with one character removed: a substitution leaves a common
    variant, a missing or extra character makes one token a variant of the other. For two
    characters, each character with the other as a wildcard (``"9_"``, ``"_7"``): a
    one-character variant would match most of a large library. One character: none.

    Example:
        >>> sorted(edit_keys("411"))
        ['11', '41']
    """
    if len(token) == 2:
        return {token[0] + "_", "_" + token[1]}
    if len(token) < 3:
        return set()
    return deletions(token)

