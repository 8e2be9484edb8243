"""Errors that are the user's to fix; the CLI prints them without a traceback."""

from .artifact import ArtifactError
from .config import ConfigError
from .data.datasets import DatasetError
from .data.decode import ImageDecodeError
from .identify.identifier import IdentifierError
from .inference.benchmark import BenchmarkError
from .inference.export import ExportError
from .library.enroll import EnrollmentError
from .models.pretrained import PretrainedWeightsError

UserError = (ArtifactError, ConfigError, DatasetError, ImageDecodeError, PretrainedWeightsError,
             FileNotFoundError, IdentifierError, ExportError, BenchmarkError, EnrollmentError)
