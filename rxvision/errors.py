"""Errors that are the user's to fix; the CLI prints them without a traceback."""

from .artifact import ArtifactError
from .config import ConfigError
from .data.datasets import DatasetError
from .data.decode import ImageDecodeError
from .identify.identifier import IdentifierError
from .inference.benchmark import BenchmarkError
from .inference.enroll import EnrollmentError
from .inference.export import ExportError
from .models.pretrained import PretrainedWeightsError

UserError = (ArtifactError, ConfigError, DatasetError, ImageDecodeError, PretrainedWeightsError,
             FileNotFoundError, IdentifierError, ExportError, BenchmarkError, EnrollmentError)
