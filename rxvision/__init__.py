"""RxVision: identify prescription medications from photographs.

The public entry point is the :class:`Identifier`, as ``timm.create_model`` is timm's::

    from rxvision import Identifier
    result = Identifier.load().identify("photo.jpg")[0]

Names are resolved on first use, so ``import rxvision`` itself loads neither torch nor
onnxruntime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .identify import Candidate, Identification, Identifier, IdentifierError

__all__ = ["Candidate", "Identification", "Identifier", "IdentifierError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import identify

        return getattr(identify, name)
    raise AttributeError(f"module 'rxvision' has no attribute {name!r}")
