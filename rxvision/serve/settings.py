"""Service settings: one typed object built by `rxvision serve` (or a test) and read by the app.

Every limit the service enforces lives here, so the command line, the app and the docs
agree on one set of numbers.

Example:
    >>> settings = ServeSettings(model="runs/c3pi", backend="onnx", max_batch=16)
    >>> app = create_app(settings)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ..data.decode import DEFAULT_MAX_PIXELS

DEFAULT_API_KEY_ENV = "RXVISION_API_KEY"


class ServeSettings(BaseModel):
    """How the HTTP service loads its model, batches requests and bounds its inputs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: Path | None = Field(None, description="artifact or ONNX export; None = bundled")
    segmenter: Path | None = Field(
        None, description="pill finder for a crop model (None: the model's own segmenter/)")
    max_pills: int = Field(8, ge=1, le=64, description="pills answered per photo by a crop "
                           "model")
    imprint: bool = Field(
        True, description="a crop model with a drug library reads each pill's imprint and "
        "weighs it with the photo")
    backend: Literal["torch", "onnx"] = "torch"
    device: str = "cpu"
    threads: int | None = Field(None, ge=1, description="onnxruntime intra-op threads")
    tta: Literal[1, 2, 4] | None = Field(
        None, description="right-angle rotations averaged per photo (None: the number the "
        "card was calibrated with, calibration.tta, else 1)")
    head_precision: Literal["fp32", "fp16"] | None = Field(
        None, description="a cosine final layer's rows at inference (fp16: torch backend; "
        "for libraries of tens of thousands of pills; None: the card's "
        "identification.head_precision, else fp32)")
    onnx_spinning: bool = Field(
        False, description="let onnxruntime's idle threads spin (off: they would burn the "
        "CPU that decoding and HTTP need between passes)")
    torch_threads: int | None = Field(
        None, ge=1, description="torch intra-op threads for this process (None: unchanged); "
        "1 suits the onnx backend, where torch only normalises images")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_batch: int = Field(16, ge=1, le=512, description="images per forward pass")
    max_wait_ms: float = Field(5.0, ge=0, le=10_000,
                               description="how long a batch waits to fill up")
    queue_size: int = Field(256, ge=1, description="requests waiting for the model; then 503")
    retry_after_s: int = Field(1, ge=1, description="Retry-After sent with a 503")
    preprocess_threads: int = Field(2, ge=1, le=64, description="decode/letterbox threads")
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="request body limit")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="per decoded image")
    max_batch_images: int = Field(32, ge=1, description="files in one /v1/identify/batch")
    default_topk: int = Field(5, ge=1)
    max_topk: int = Field(50, ge=1)
    api_key: SecretStr | None = Field(None, description="required as X-API-Key when set")
    warmup: bool = Field(True, description="one forward pass before /readyz says ready")

    @classmethod
    def with_api_key_from_env(cls, env_var: str = DEFAULT_API_KEY_ENV,
                              **fields: object) -> ServeSettings:
        """Settings whose API key (if any) comes from the environment variable ``env_var``.

        Why an environment variable: a key given on the command line is visible to every
        user of the machine in ``ps``. An unset or empty variable means no key is required.
        """
        key = os.environ.get(env_var, "")
        return cls(api_key=SecretStr(key) if key else None, **fields)
