"""The typed-facts fields of /v1/identify: what the user read off the pill.

``imprint``, ``color`` and ``shape`` are optional text fields sent with the photo(s); they
are checked here (a 422 names the field) and combined with the photo by the Identifier
(:mod:`rxvision.identify.answers`).
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData

from ..identify.answers import TypedFacts
from ..library.errors import QueryError
from .errors import ApiError

TYPED_FIELDS = ("imprint", "color", "shape")
TYPED_SCHEMA: dict[str, Any] = {
    "imprint": {"type": "string", "description": 'letters and digits on the pill, e.g. "M 411"'},
    "color": {"type": "string", "description": 'its colour(s), e.g. "blue", "white, yellow"'},
    "shape": {"type": "string", "description": "e.g. round, oval, capsule"},
}


def has_typed(form: FormData) -> bool:
    """Whether any typed-fact field was sent (empty values count as not sent)."""
    return any(str(form.get(f) or "").strip() for f in TYPED_FIELDS)


def parse_typed(form: FormData) -> TypedFacts | None:
    """The typed facts of a form, or None when none were typed.

    Raises:
        ApiError: 422 for a field sent twice, a file in a text field, or a value the
            library cannot read (an unknown colour or shape, an imprint without letters or
            digits).
    """
    errors = []
    values: dict[str, str | None] = {}
    for f in TYPED_FIELDS:
        sent = form.getlist(f)
        if len(sent) > 1:
            errors.append({"loc": ["body", f], "msg": "sent more than once; send it once"})
        elif sent and not isinstance(sent[0], str):
            errors.append({"loc": ["body", f], "msg": "must be text, not a file"})
        values[f] = sent[0] if sent and isinstance(sent[0], str) else None
    for f, value in values.items():  # each field alone, so an error names its field
        if value and not any(e["loc"][-1] == f for e in errors):
            try:
                TypedFacts.parse(**{f: value})
            except QueryError as exc:
                errors.append({"loc": ["body", f], "msg": str(exc)})
    if errors:
        raise ApiError(422, "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in errors),
                       errors=errors)
    return TypedFacts.parse(**values)
