"""HTTP service and web page: ``create_app(ServeSettings(...))``; see :mod:`.app`."""

from .app import create_app
from .settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
