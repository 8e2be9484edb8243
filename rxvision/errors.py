"""Errors that are the user's to fix; the CLI prints them without a traceback.

Only modules already imported are looked at: an error class whose module was never loaded
cannot have been raised. So the CLI learns about errors without importing every room (the
export's ONNX tooling, the network's timm layers) for a command that needs none of them.
"""

from __future__ import annotations

import sys

# (module, class) of every error that means "the input or the options are wrong".
USER_ERRORS = (
    ("rxvision.artifact", "ArtifactError"),
    ("rxvision.config", "ConfigError"),
    ("rxvision.data.datasets", "DatasetError"),
    ("rxvision.data.decode", "ImageDecodeError"),
    ("rxvision.deploy.benchmark", "BenchmarkError"),
    ("rxvision.deploy.export", "ExportError"),
    ("rxvision.identify.identifier", "IdentifierError"),
    ("rxvision.library.enroll", "EnrollmentError"),
    ("rxvision.library.errors", "LibraryError"),
    ("rxvision.models.pretrained", "PretrainedWeightsError"),
)


def user_errors() -> tuple[type[BaseException], ...]:
    """The user-error classes of the modules loaded so far, and FileNotFoundError."""
    found: list[type[BaseException]] = [FileNotFoundError]
    for module, name in USER_ERRORS:
        loaded = sys.modules.get(module)
        if loaded is not None:
            found.append(getattr(loaded, name))
    return tuple(found)
