"""Errors that are the user's to fix; the CLI prints them without a traceback."""

from .artifact import ArtifactError
from .config import ConfigError
from .data.datasets import DatasetError
from .data.decode import ImageDecodeError
from .deploy.benchmark import BenchmarkError
from .deploy.export import ExportError
from .identify.identifier import IdentifierError
from .library.enroll import EnrollmentError
from .library.errors import LibraryError
from .models.pretrained import PretrainedWeightsError

UserError = (ArtifactError, ConfigError, DatasetError, ImageDecodeError, PretrainedWeightsError,
             FileNotFoundError, IdentifierError, ExportError, BenchmarkError, EnrollmentError,
             LibraryError)
