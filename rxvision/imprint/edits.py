"""One-character edits between imprint tokens: the shared measure of "one misread".

Both sides of the project compare tokens within one edit: the imprint matcher (what OCR
read against the library) and the library search (what a user typed). They normalise text
differently (OCR confusions fold for the matcher; a user's typing is taken as typed), but
one edit means the same thing to both: one character substituted, dropped or added, or two
neighbours swapped.
"""

from __future__ import annotations

from functools import lru_cache


def deletions(token: str) -> set[str]:
    """``token`` with one character removed, every way.

    Two tokens one substitution, insertion, deletion or neighbour swap apart share one of
    these (or one is the other): the indexes find near tokens this way, comparing few.

    Example:
        >>> sorted(deletions("411"))
        ['11', '41']
    """
    return {token[:i] + token[i + 1 :] for i in range(len(token))}


@lru_cache(maxsize=1 << 16)  # search and matching compare the same short tokens again and again
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
