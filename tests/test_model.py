"""Model contract: shapes, gradients, freezing, feature_info, determinism, attention.

Random weights, CPU, inputs of 64-96 px; the spec's resnet50 runs once at 224 for describe().
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rxvision.models import (
    ClassificationHead,
    FeaturePyramidNetwork,
    MultiHeadSelfAttention,
    PretrainedWeightsError,
    RxVisionModel,
    build_model,
)

NUM_CLASSES = 5


@pytest.fixture(scope="module", params=["resnet18", "efficientnet_lite0"])
def backbone_model(request: pytest.FixtureRequest) -> RxVisionModel:
    torch.manual_seed(0)
    return RxVisionModel(NUM_CLASSES, backbone=request.param, pretrained=False).eval()


def _x(size: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=g)


def _frozen_prefixes(model: RxVisionModel) -> set[str]:
    """Top-level backbone blocks that hold frozen parameters, e.g. {'conv1', 'bn1', 'layer1'}."""
    out = set()
    for name in model.frozen_parameters:
        parts = name.split(".")[1:]  # drop "backbone."
        out.add(".".join(parts[:2]) if parts[0] in ("blocks",) else parts[0])
    return out


def _randomize_norm_weights(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
                m.weight.uniform_(0.5, 1.5)


# --- shapes -------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [64, 96])
def test_output_shapes(backbone_model: RxVisionModel, size: int) -> None:
    with torch.no_grad():
        maps, attn = backbone_model.forward_features(_x(size), return_attention=True)
        logits = backbone_model.forward_head(maps)
        emb = backbone_model.forward_head(maps, pre_logits=True)
    assert logits.shape == (2, NUM_CLASSES)
    assert emb.shape == (2, 512)
    assert [tuple(m.shape) for m in maps] == [(2, 256, size // r, size // r) for r in (8, 16, 32)]
    n = (size // 32) ** 2
    assert attn.shape == (2, 8, n, n)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("name", "out_indices"),
    [
        ("test_resnet", [2, 3, 4]),
        ("mobilenetv3_small_050", [2, 3, 4]),
        ("convnext_atto", [1, 2, 3]),  # four stages: P3..P5 are indices 1..3
        ("resnet18.a1_in1k", [2, 3, 4]),  # a pretrained tag is a valid timm name
        ("resnet18", [3, 4]),  # two pyramid levels
    ],
)
def test_any_timm_backbone_builds(name: str, out_indices: list[int]) -> None:
    torch.manual_seed(0)
    model = RxVisionModel(
        3, backbone=name, pretrained=False, out_indices=out_indices, freeze_layers=True
    ).eval()
    with torch.no_grad():
        logits, attn = model(_x(64), return_attention=True)
    assert logits.shape == (2, 3)
    assert attn.shape == (2, 8, 4, 4)
    assert len(model.feature_dims) == len(out_indices)
    assert torch.isfinite(logits).all()


def test_unknown_backbone_and_bad_indices_raise() -> None:
    with pytest.raises(PretrainedWeightsError, match=r"architecture\.backbone\.name"):
        RxVisionModel(3, backbone="resnet_does_not_exist", pretrained=False)
    with pytest.raises(PretrainedWeightsError, match=r"architecture\.backbone\.output_indices"):
        RxVisionModel(3, backbone="convnext_atto", pretrained=False, out_indices=[2, 3, 4])


def test_resnet50_describe_matches_spec(config_factory: Callable) -> None:
    cfg = config_factory("resnet50", 224, num_classes=1000, freeze_layers=True)
    torch.manual_seed(0)
    model = build_model(cfg)
    info = model.describe((224, 224))
    assert info["feature_channels"] == [512, 1024, 2048]
    assert info["feature_strides"] == [8, 16, 32]
    assert info["feature_shapes"] == [[1, 512, 28, 28], [1, 1024, 14, 14], [1, 2048, 7, 7]]
    assert info["output_shape"] == [1, 1000]
    assert info["attention_shape"] == [1, 8, 49, 49]
    assert info["num_tokens"] == 49
    assert info["embedding_dim"] == 512
    # Stated in docs/architecture.md; a change here means the doc needs updating too.
    assert info["num_params"] == 27_107_368
    assert info["trainable_params"] == 26_882_024
    assert abs(info["num_params"] - 27e6) / 27e6 < 0.10
    assert _frozen_prefixes(model) == {"conv1", "bn1", "layer1"}
    assert model.training  # describe() restores the mode it found


# --- gradients and freezing --------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0"])
def test_every_trainable_parameter_gets_a_gradient(name: str) -> None:
    torch.manual_seed(0)
    model = RxVisionModel(NUM_CLASSES, backbone=name, pretrained=False).train()
    # timm zero-initialises the last BN gamma of each residual block (zero_init_last), which
    # makes every weight inside that branch gradient-free at step 0. Use non-zero gammas,
    # as after pretraining, so the check is about wiring rather than that init choice.
    _randomize_norm_weights(model)
    assert all(p.requires_grad for p in model.parameters())
    loss = F.cross_entropy(model(_x(64)), torch.tensor([1, 3]))
    loss.backward()
    no_grad = [
        n for n, p in model.named_parameters() if p.grad is None or not torch.count_nonzero(p.grad)
    ]
    assert no_grad == []


def test_frozen_parameters_get_no_gradient_and_stay_unchanged() -> None:
    torch.manual_seed(0)
    model = RxVisionModel(
        NUM_CLASSES, backbone="resnet18", pretrained=False, freeze_layers=True
    ).train()
    _randomize_norm_weights(model)
    assert _frozen_prefixes(model) == {"conv1", "bn1", "layer1"}
    params = dict(model.named_parameters())
    frozen = set(model.frozen_parameters)
    assert frozen and all(not params[n].requires_grad for n in frozen)
    assert all(p.requires_grad for n, p in params.items() if n not in frozen)
    counts = model.parameter_counts()
    assert counts["trainable_params"] == counts["num_params"] - sum(
        params[n].numel() for n in frozen
    )

    before = {n: p.detach().clone() for n, p in params.items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    F.cross_entropy(model(_x(64)), torch.tensor([0, 4])).backward()
    opt.step()
    for n, p in params.items():
        if n in frozen:
            assert p.grad is None, n
            assert torch.equal(p, before[n]), n
        else:
            assert p.grad is not None, n
    assert not torch.equal(
        params["backbone.layer2.0.conv1.weight"], before["backbone.layer2.0.conv1.weight"]
    )


def test_frozen_batchnorm_keeps_running_stats_in_train_mode() -> None:
    torch.manual_seed(0)
    # No explicit .train() call: a freshly built model must already protect frozen BN.
    model = RxVisionModel(NUM_CLASSES, backbone="resnet18", pretrained=False, freeze_layers=True)
    assert model.training
    frozen_bn = model.backbone.layer1[0].bn1
    live_bn = model.backbone.layer2[0].bn1
    for _ in range(2):
        assert not frozen_bn.training and not model.backbone.bn1.training
        assert live_bn.training
        stats = (
            frozen_bn.running_mean.clone(),
            frozen_bn.running_var.clone(),
            model.backbone.bn1.running_mean.clone(),
        )
        live_before = live_bn.running_mean.clone()
        with torch.no_grad():
            model(_x(64))
        assert torch.equal(frozen_bn.running_mean, stats[0])
        assert torch.equal(frozen_bn.running_var, stats[1])
        assert torch.equal(model.backbone.bn1.running_mean, stats[2])
        assert not torch.equal(live_bn.running_mean, live_before)
        model.eval().train()  # a round trip through eval keeps frozen BN in eval mode


def test_efficientnet_freeze_stops_at_stride_8() -> None:
    model = RxVisionModel(3, backbone="efficientnet_lite0", pretrained=False, freeze_layers=True)
    assert _frozen_prefixes(model) == {"conv_stem", "bn1", "blocks.0", "blocks.1"}
    assert all(p.requires_grad for p in model.backbone.blocks[2].parameters())


def test_convnext_freeze_matches_flattened_stage_names() -> None:
    # timm's FeatureListNet renames "stages.1" to "stages_1"; only stem + stages_0 are frozen.
    model = RxVisionModel(
        3, backbone="convnext_atto", pretrained=False, out_indices=[1, 2, 3], freeze_layers=True
    )
    assert {n.split(".")[1] for n in model.frozen_parameters} == {"stem_0", "stem_1", "stages_0"}
    for stage in ("stages_1", "stages_2", "stages_3"):
        assert all(p.requires_grad for p in getattr(model.backbone, stage).parameters())


# --- feature_info, determinism, attention -------------------------------------------------
@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0", "test_resnet"])
def test_feature_info_matches_feature_maps(name: str) -> None:
    model = RxVisionModel(3, backbone=name, pretrained=False).eval()
    with torch.no_grad():
        feats = model.backbone(_x(96))
    info = model.feature_info
    assert [f.shape[1] for f in feats] == info.channels() == model.feature_dims
    assert [(f.shape[2], f.shape[3]) for f in feats] == [
        (96 // r, 96 // r) for r in info.reduction()
    ]


def test_eval_is_deterministic(tiny_model: RxVisionModel) -> None:
    x = _x(64)
    with torch.no_grad():
        a, b = tiny_model(x), tiny_model(x.clone())
    assert torch.equal(a, b)


def test_attention_rows_sum_to_one(tiny_model: RxVisionModel) -> None:
    with torch.no_grad():
        _, attn = tiny_model(_x(96), return_attention=True)
    assert attn.shape == (2, 8, 9, 9)
    assert (attn >= 0).all()
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 8, 9))


def test_fused_and_unfused_attention_agree(tiny_model: RxVisionModel) -> None:
    x = _x(96)
    with torch.no_grad():
        tiny_model.set_fused_attention(True)
        fused = tiny_model(x)
        with_map, _ = tiny_model(x, return_attention=True)  # explicit path computes the map
        tiny_model.set_fused_attention(False)
        unfused = tiny_model(x)
    torch.testing.assert_close(fused, unfused, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fused, with_map, rtol=1e-4, atol=1e-5)


def test_forward_head_and_classifier_vocabulary(tiny_model: RxVisionModel) -> None:
    x = _x(64)
    with torch.no_grad():
        maps = tiny_model.forward_features(x)
        emb = tiny_model.forward_head(maps, pre_logits=True)
        logits = tiny_model.forward_head(maps)
        torch.testing.assert_close(logits, tiny_model(x))
        torch.testing.assert_close(logits, tiny_model.get_classifier()(emb))
    assert emb.shape == (2, 512) and tiny_model.num_features == 512
    assert tiny_model.num_classes == 4
    tiny_model.reset_classifier(7)
    assert tiny_model.num_classes == 7
    assert isinstance(tiny_model.get_classifier(), nn.Linear)
    with torch.no_grad():
        assert tiny_model(x).shape == (2, 7)


def test_train_mode_forward_is_finite(tiny_model: RxVisionModel) -> None:
    tiny_model.train()
    logits, attn = tiny_model(_x(64), return_attention=True)
    assert torch.isfinite(logits).all() and torch.isfinite(attn).all()


def test_config_switches(config_factory: Callable) -> None:
    cfg = config_factory(
        fpn={"out_channels": 64, "use_batch_norm": False},
        attention={"num_heads": 4},
        classifier={"global_pool": "max", "hidden_dim": 128},
    )
    model = build_model(cfg).eval()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.fpn.modules())
    assert isinstance(model.classifier.global_pool, nn.AdaptiveMaxPool2d)
    with torch.no_grad():
        _, attn = model(_x(64), return_attention=True)
        emb = model.forward_head(model.forward_features(_x(64)), pre_logits=True)
    assert attn.shape == (2, 4, 4, 4)
    assert emb.shape == (2, 128)


def test_data_config_comes_from_timm(tiny_model: RxVisionModel) -> None:
    import timm

    ref = timm.data.resolve_data_config(model=tiny_model.backbone)
    cfg = tiny_model.data_config([80, 96])
    assert cfg["input_size"] == [80, 96]
    assert cfg["mean"] == pytest.approx(list(ref["mean"]))
    assert cfg["std"] == pytest.approx(list(ref["std"]))
    assert cfg["interpolation"] == ref["interpolation"]


# --- layers -------------------------------------------------------------------------------
def test_fpn_is_top_down() -> None:
    torch.manual_seed(0)
    fpn = FeaturePyramidNetwork([8, 16, 32], 12).eval()
    feats = [torch.randn(1, 8, 16, 16), torch.randn(1, 16, 8, 8), torch.randn(1, 32, 4, 4)]
    with torch.no_grad():
        out = fpn(feats)
        changed = fpn([feats[0], feats[1], feats[2] + 1.0])
    assert [tuple(o.shape) for o in out] == [(1, 12, 16, 16), (1, 12, 8, 8), (1, 12, 4, 4)]
    # The coarsest input reaches the finest output through the top-down pathway.
    assert not torch.equal(out[0], changed[0])


def test_attention_rejects_indivisible_heads() -> None:
    with pytest.raises(ValueError, match="heads"):
        MultiHeadSelfAttention(256, num_heads=7)


def test_head_averages_pooled_maps() -> None:
    head = ClassificationHead(6, 3, global_pool="avg")
    a, b = torch.randn(2, 6, 4, 4), torch.randn(2, 6, 2, 2)
    expected = (a.mean((2, 3)) + b.mean((2, 3))) / 2
    torch.testing.assert_close(head.pool([a, b]), expected)
    with pytest.raises(ValueError, match="global_pool"):
        ClassificationHead(6, 3, global_pool="median")


def test_cosine_head_reuses_its_folded_rows_only_while_they_are_unchanged() -> None:
    """Inference keeps s·ŵ between calls (renormalising 100k rows per photo is slow); any
    change to the rows, scale or offsets is seen at once, and training never uses it."""
    from rxvision.models.layers import CosineClassifier

    torch.manual_seed(0)
    head = CosineClassifier(8, 5).eval()
    x = torch.randn(3, 8)

    def reference() -> torch.Tensor:
        s = head.log_scale.exp()
        return s * (F.normalize(x, dim=1) @ F.normalize(head.weight, dim=1).T - head.offset)

    with torch.no_grad():
        torch.testing.assert_close(head(x), reference())
        head.weight[2] = torch.randn(8)  # enrollment writes rows in place
        head.offset[1] = 0.3
        torch.testing.assert_close(head(x), reference())
        head.log_scale.fill_(1.0)
        torch.testing.assert_close(head(x), reference())
    with torch.inference_mode():
        torch.testing.assert_close(head(x), reference())
    out = head.train()(x)  # with gradients: computed afresh, and gradients reach the rows
    out.sum().backward()
    assert head.weight.grad is not None and head.log_scale.grad is not None


def test_cosine_head_made_under_inference_mode_still_runs() -> None:
    from rxvision.models.layers import CosineClassifier

    with torch.inference_mode():  # its rows are inference tensors: nothing is cached
        head = CosineClassifier(8, 5).eval()
        first = head(torch.ones(1, 8))
        head.weight.mul_(-1)
        torch.testing.assert_close(head(torch.ones(1, 8)), -first)
