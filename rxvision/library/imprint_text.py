"""Imprint text as search keys: tokens, the grouping key, one-edit variants and distances.

A pill's imprint is compared as tokens, not as a string, so that separators, case, token
order and the side a token is on do not matter: "Lilly;3229;40;mg", "lilly 3229 40mg" and
"40 MG LILLY-3229" are the same four tokens. Tokens are runs of letters or of digits, so a
letter/digit boundary splits ("40mg" -> "40", "MG"): NLM's own imprint field is not
consistent about it ("EC5" on one pill, "EC;5" on another).

This is the library's own small normaliser; ``rxvision.imprint`` reads imprints from
photos and may later share it.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

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
    return {token[:i] + token[i + 1 :] for i in range(len(token))}


@lru_cache(maxsize=1 << 16)  # search compares the same short tokens again and again
def edit_distance(a: str, b: str) -> int:
    """0 if equal, 1 if one substitution, insertion, deletion or swap of neighbours, else 2."""
    if a == b:
        return 0
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return 2
    if la == lb:
        diff = [i for i in range(la) if a[i] != b[i]]
        if len(diff) == 1:
            return 1
        if (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]]
            and a[diff[1]] == b[diff[0]]
        ):
            return 1
        return 2
    if la > lb:
        a, b = b, a  # a is the shorter one
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return 1 if a[i:] == b[i + 1 :] else 2
