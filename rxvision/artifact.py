"""Model artifacts: one directory holding ``model.safetensors`` and ``card.json``.

The card is the single source of truth for everything but the weights: resolved config,
labels with per-label metadata (NDC, name, strength), preprocessing, calibration, metrics,
software versions and the SHA-256 of the weights file. :func:`load_artifact` rebuilds the
exact model and preprocessing from the card alone and refuses corrupt, truncated,
hash-mismatched or pickled weight files.

Example:
    >>> save_artifact("runs/x", model, cfg, labels=["a", "b"])
    >>> art = load_artifact("runs/x")
    >>> art.model(torch.randn(1, 3, *art.preprocessing["input_size"]))
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from .config import Config, ConfigError, config_from_dict
from .data.transforms import ZOOM_FOR_NEW_MODELS, ZOOM_MODES
from .io_utils import atomic_directory, atomic_files, atomic_write_json, foreign_entries

if TYPE_CHECKING:  # torch and the network (timm, torchvision) load only when weights are
    from collections.abc import Callable

    import torch  # read or a model is built: reading cards (ONNX serving) needs neither

    from .models import RxVisionModel

WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "card.json"
CARD_FORMAT = "rxvision-card/1"
ARTIFACT_FILES = frozenset({WEIGHTS_NAME, CARD_NAME})  # what a saved artifact folder holds
# State keys added after artifacts were first published; older files load without them and
# keep the freshly built module's value (a cosine layer's offsets: zero, i.e. trained rows).
_ADDED_LATER = {"classifier.classifier.offset"}
# Card keys save_artifact writes itself; tools that re-save an artifact (enroll, bundle,
# prototypes) carry every other key over.
SAVED_CARD_KEYS = frozenset({"format", "config", "labels", "label_metadata", "preprocessing",
                             "calibration", "metrics", "parameters", "versions", "weights"})


# The final layer's row precisions a card's identification.head_precision may name (the
# torch backend keeps a cosine layer's rows so): name -> torch dtype.
HEAD_PRECISIONS = {"fp32": "float32", "fp16": "float16"}


def head_precision_problem(model: RxVisionModel | None, precision: str) -> str | None:
    """Why ``model`` cannot keep its final layer's rows at ``precision``; None when it can.

    ``model`` None stands for an exported backend, which keeps the float32 rows it was
    exported with. fp16 needs a cosine final layer (its rows are what is halved).
    """
    if precision not in HEAD_PRECISIONS:
        return f"head precision must be one of {tuple(HEAD_PRECISIONS)}, got {precision!r}"
    if precision == "fp32":
        return None
    from .models.layers import CosineClassifier

    if model is None:
        return (f"head precision {precision} needs the torch backend: an exported model "
                "keeps the float32 final layer it was exported with")
    if not isinstance(model.get_classifier(), CosineClassifier):
        return (f"head precision {precision} needs a cosine final layer "
                "(classifier.type: cosine); this model's is not")
    return None


class ArtifactError(RuntimeError):
    """A model artifact is missing, corrupt, tampered with or inconsistent."""


@dataclass
class Artifact:
    """A loaded model with everything needed to use it."""

    model: RxVisionModel
    config: Config
    labels: list[str]
    label_metadata: list[dict[str, str]]
    preprocessing: dict[str, Any]
    card: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def temperature(self) -> float:
        return float(self.card.get("calibration", {}).get("temperature", 1.0))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def software_versions() -> dict[str, str]:
    import timm
    import torch
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
    }


def save_file(state: dict[str, torch.Tensor], filename: str,
              metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file``, imported when weights are written (it loads torch)."""
    from safetensors.torch import save_file as write_safetensors

    write_safetensors(state, filename, metadata=metadata)


def unwrap(model: torch.nn.Module) -> RxVisionModel:
    """Strip DDP / torch.compile wrappers so saved names carry no prefixes."""
    while True:
        if hasattr(model, "module"):  # DistributedDataParallel
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        else:
            return model


def save_artifact(
    directory: str | Path,
    model: torch.nn.Module,
    config: Config,
    labels: list[str],
    label_metadata: list[dict[str, str]] | None = None,
    metrics: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    half: bool = False,
    zoom: str = ZOOM_FOR_NEW_MODELS,
    parts: Callable[[Path], None] | None = None,
) -> Path:
    """Write weights and card into ``directory`` as one unit; return the directory.

    The artifact is written into a temporary sibling folder and renamed into place (an
    existing artifact there is swapped out atomically), so ``directory`` never holds a
    half-written model, even after ``kill -9``. A folder holding other files too (a
    training run) gets the two files renamed in, the card last.

    Args:
        half: store floating-point weights as fp16 (halves the size; loads back as fp32).
        zoom: ``preprocessing.zoom``; tools that re-save a model pass its card's setting.
        parts: ``parts(folder)`` adds what else the model is made of (its pill finder,
            its drug library) to the staging folder, where weights and card already lie
            and load; it is published with them, or, if it raises, nothing is.
    """
    if zoom not in ZOOM_MODES:
        raise ArtifactError(f"zoom must be one of {ZOOM_MODES}, got {zoom!r}")
    model = unwrap(model)
    if len(labels) != model.num_classes:
        raise ArtifactError(f"{len(labels)} labels for a model with {model.num_classes} classes")
    state = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    cfg = config.to_dict()
    cfg["training"]["num_classes"] = model.num_classes

    def write(folder: Path) -> None:
        weights = folder / WEIGHTS_NAME
        save_file(state, str(weights), metadata={"format": "pt"})
        card = {
            "format": CARD_FORMAT,
            "config": cfg,
            "labels": list(labels),
            "label_metadata": label_metadata or [{} for _ in labels],
            "preprocessing": {**model.data_config(config.training.input_size),
                              "zoom": zoom},
            "calibration": calibration or {"temperature": 1.0},
            "metrics": metrics or {},
            "parameters": model.parameter_counts(),
            "versions": software_versions(),
            "weights": {"file": WEIGHTS_NAME, "sha256": sha256_file(weights),
                        "dtype": "float16" if half else "float32"},
            **(extra or {}),
        }
        (folder / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
        if parts is not None:
            parts(folder)

    directory = Path(directory)
    if directory.is_dir() and foreign_entries(directory, ARTIFACT_FILES):
        # A training run: config, log and checkpoint live beside the artifact. The parts
        # go in first; the card, renamed last, commits; until then its hash refuses the
        # new weights.
        atomic_files(directory, write, order=[WEIGHTS_NAME, CARD_NAME], others_first=True)
        return directory
    try:
        with atomic_directory(directory, replaceable=ARTIFACT_FILES) as staging:
            write(staging)
    except FileExistsError as exc:
        raise ArtifactError(str(exc)) from exc
    return directory


def require_new_output(model_dir: str | Path, out: str | Path) -> None:
    """Refuse to write a derived model over its source or over another model.

    Raises:
        ArtifactError: ``out`` is ``model_dir``, or already holds a card.
    """
    if Path(out).resolve() == Path(model_dir).resolve():
        raise ArtifactError("--out must differ from --model: the model given is kept as is")
    if (Path(out) / CARD_NAME).exists():
        raise ArtifactError(f"{out} already holds a model; choose another --out or remove it")


def read_card(directory: str | Path) -> dict[str, Any]:
    card_path, card = read_card_json(directory, "model artifact", "an RxVision model")
    if card.get("format") != CARD_FORMAT:
        raise ArtifactError(f"{card_path}: unknown card format {card.get('format')!r}")
    return card


def read_card_json(directory: str | Path, what: str, kind: str
                   ) -> tuple[Path, dict[str, Any]]:
    """``directory/card.json`` parsed, or an ArtifactError naming ``what`` is missing
    ("model artifact not found: ...") or asking whether it is ``kind``'s directory; the
    caller checks the card's format."""
    directory = Path(directory)
    card_path = directory / CARD_NAME
    if not directory.is_dir():
        raise ArtifactError(f"{what} not found: {directory} is not a directory")
    if not card_path.is_file():
        raise ArtifactError(f"{directory} has no {CARD_NAME}; is it {kind} directory?")
    try:
        return card_path, json.loads(card_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{card_path} is not valid JSON: {exc}") from exc


def update_card(directory: str | Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into an artifact's card (atomically)."""
    card = read_card(directory)
    card.update(fields)
    atomic_write_json(Path(directory) / CARD_NAME, card)
    return card


def load_state_dict_safely(path: Path, expected_sha256: str | None) -> dict[str, torch.Tensor]:
    """Load safetensors weights; refuse pickles, truncation and hash mismatches."""
    if not path.is_file():
        raise ArtifactError(f"weights file missing: {path}")
    with open(path, "rb") as fh:
        head = fh.read(9)
    # A safetensors file starts with its JSON header length (u64 LE) and then "{". Check that
    # first: the length's low byte is legitimately 0x80 (a pickle PROTO opcode) for 1 in 32
    # files, so sniffing the first byte alone would refuse valid weights.
    header_len = int.from_bytes(head[:8], "little")
    is_safetensors = head[8:9] == b"{" and 8 + header_len <= path.stat().st_size
    if not is_safetensors and (head[:1] == b"\x80" or head[:2] == b"PK"):
        raise ArtifactError(
            f"{path} is a pickle/torch.save file; RxVision never unpickles weights. "
            "Convert it to safetensors."
        )
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise ArtifactError(
            f"{path}: SHA-256 does not match the card; the file is corrupt or was replaced"
        )
    from safetensors.torch import load_file  # imports torch: only where weights are read

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is not a valid safetensors file ({exc})") from exc


def load_artifact(directory: str | Path, device: str | torch.device = "cpu") -> Artifact:
    """Rebuild the model and preprocessing from an artifact directory (model in eval mode)."""
    directory = Path(directory)
    card = read_card(directory)
    try:
        cfg = config_from_dict(card["config"])
    except (ConfigError, KeyError) as exc:
        raise ArtifactError(f"{directory}: card config is invalid: {exc}") from exc
    # Architecture only: never download pretrained weights to rebuild a trained model.
    cfg.architecture.backbone.pretrained = False
    labels = card.get("labels") or []
    if len(labels) != cfg.training.num_classes:
        raise ArtifactError(
            f"{directory}: card lists {len(labels)} labels but num_classes is "
            f"{cfg.training.num_classes}"
        )
    weights = card.get("weights", {})
    state = load_state_dict_safely(directory / weights.get("file", WEIGHTS_NAME),
                                   weights.get("sha256"))
    from .models import build_model

    model = build_model(cfg, num_classes=len(labels))
    own = model.state_dict()
    for key in set(own) - set(state):
        if key in _ADDED_LATER:  # written before the key existed: its documented default
            state[key] = own[key]
    if set(state) != set(own):
        missing, extra = set(own) - set(state), set(state) - set(own)
        raise ArtifactError(
            f"{directory}: weights do not match the card's architecture "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]})"
        )
    state = {k: v.to(own[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    cfg.architecture.backbone.pretrained = card["config"]["architecture"]["backbone"]["pretrained"]
    return Artifact(
        model=model,
        config=cfg,
        labels=labels,
        label_metadata=card.get("label_metadata") or [{} for _ in labels],
        preprocessing=card["preprocessing"],
        card=card,
        path=directory,
    )
