"""Enrollment by weight imprinting: new pills become predictable, old ones do not move."""

from __future__ import annotations

import copy
import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from rxvision.artifact import ArtifactError, load_artifact, read_card, save_artifact, update_card
from rxvision.cli import main
from rxvision.data import DatasetError, load_dataset, load_image
from rxvision.identify.identifier import Identifier
from rxvision.library.embeddings import embed_uint8, mean_embedding, reference_views
from rxvision.library.enroll import enroll_artifact
from rxvision.library.enroll_fit import SCALE_GRID
from rxvision.library.imprinting import imprint
from rxvision.locate import EvalTransform
from rxvision.models import build_model
from rxvision.models.layers import CosineClassifier

CLASSIFIER = ("classifier.classifier.weight", "classifier.classifier.bias")


@pytest.fixture(scope="module")
def split(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sample split in two: a base model over 12 labels, a manifest of 12 new pills."""
    images = load_dataset(sample_dir / "manifest.csv")
    old, new = images.labels[:12], images.labels[12:]
    root = tmp_path_factory.mktemp("enroll")
    with open(sample_dir / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    new_manifest = root / "new.csv"
    with open(new_manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*rows[0].keys(), "name"])
        writer.writeheader()
        for row in rows:
            if row["label"] in new:
                writer.writerow({**row, "image": str(sample_dir / row["image"]),
                                 "name": f"drug {row['label']}"})
    from rxvision.config import config_from_dict

    cfg = config_from_dict({"architecture": {"backbone": {"name": "resnet18", "pretrained": False,
                                                           "freeze_layers": False}},
                            "training": {"input_size": [64, 64], "num_classes": len(old)}})
    torch.manual_seed(0)
    model = build_model(cfg)
    meta = images.label_metadata[:12]
    base = save_artifact(root / "base", model, cfg, old, meta,
                         calibration={"temperature": 1.5},
                         extra={"identification": {"abstain_threshold": 0.4}})
    base16 = save_artifact(root / "base16", model, cfg, old, meta, half=True)
    cos_cfg = copy.deepcopy(cfg)
    cos_cfg.architecture.classifier.type = "cosine"
    torch.manual_seed(0)
    base_cos = save_artifact(root / "base_cos", build_model(cos_cfg), cos_cfg, old, meta)
    return {"base": base, "base16": base16, "base_cos": base_cos, "new": new_manifest,
            "root": root, "sample": sample_dir / "manifest.csv"}


def _logits(run: Path, paths: list[Path]) -> torch.Tensor:
    art = load_artifact(run)
    t = EvalTransform(art.preprocessing)
    with torch.no_grad():
        return art.model(torch.stack([t(load_image(p)) for p in paths]))


@pytest.mark.parametrize(("base", "method"),
                         [("base", "centred"), ("base", "plain"), ("base_cos", "lean")])
def test_enrolled_pills_become_predictable_and_old_logits_do_not_move(
    split: dict[str, Path], tmp_path: Path, base: str, method: str
) -> None:
    out = tmp_path / "run2"
    # The random cosine base has no own-class cosine in its card: no offset (tested below).
    result = enroll_artifact(split[base], split["new"], out, views=0, method=method,
                             offset=0.0 if base == "base_cos" else "auto")
    assert len(result.enrolled) == 12 and result.references == dict.fromkeys(result.enrolled, 1)
    ident = Identifier.load(out, abstain_threshold=0.0)
    assert ident.labels[:12] == load_artifact(split["base"]).labels
    assert ident.labels[12:] == result.enrolled
    new = load_dataset(split["new"])
    answers = ident.identify([s.path for s in new.samples], topk=1)
    hits = sum(a.top.label == s.label for a, s in zip(answers, new.samples, strict=True))
    assert hits >= 10, f"only {hits}/12 enrolled pills recognised on their own reference"
    assert answers[0].top.metadata["name"].startswith("drug ")
    # Old classes: the same logits, exactly, on every photo.
    photos = [s.path for s in load_dataset(split["sample"]).samples]
    before, after = _logits(split[base], photos), _logits(out, photos)
    assert after.shape == (len(photos), 24)
    assert torch.equal(after[:, :12], before)


def test_weights_other_than_new_rows_are_byte_identical(
    split: dict[str, Path], tmp_path: Path
) -> None:
    for base in (split["base"], split["base16"]):
        out = tmp_path / f"{base.name}-plus"
        enroll_artifact(base, split["new"], out, views=2)
        old = load_file(str(base / "model.safetensors"))
        new = load_file(str(out / "model.safetensors"))
        assert set(old) == set(new)
        for key, tensor in old.items():
            assert new[key].dtype == tensor.dtype
            if key in CLASSIFIER:
                assert new[key].shape[0] == 24
                assert new[key][:12].numpy().tobytes() == tensor.numpy().tobytes()
            else:
                assert new[key].numpy().tobytes() == tensor.numpy().tobytes(), key


def test_cosine_classifier_imprints_normalised_prototypes(tiny_config) -> None:
    cfg = copy.deepcopy(tiny_config)
    cfg.architecture.classifier.type = "cosine"
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    head = model.get_classifier()
    assert isinstance(head, CosineClassifier)
    old_rows = head.weight.detach().clone()
    protos = torch.rand(3, old_rows.shape[1])
    imprint(model, protos)  # method "auto" -> plain
    grown = model.get_classifier()
    assert isinstance(grown, CosineClassifier) and grown.out_features == len(old_rows) + 3
    assert torch.equal(grown.weight.detach()[: len(old_rows)], old_rows)
    # New rows lean on the mean embedding as much as trained rows do on average, and keep
    # each prototype's direction orthogonal to it.
    new_rows = F.normalize(grown.weight.detach()[len(old_rows):], dim=1)
    mu = F.normalize(mean_embedding(model), dim=0)
    lean = (F.normalize(old_rows, dim=1) @ mu).mean()
    assert torch.allclose(new_rows @ mu, lean.expand(3), atol=1e-5)
    m = F.normalize(protos, dim=1)
    perp = F.normalize(m - (m @ mu)[:, None] * mu, dim=1)
    got_perp = F.normalize(new_rows - (new_rows @ mu)[:, None] * mu, dim=1)
    assert torch.allclose(got_perp, perp, atol=1e-4)
    with pytest.raises(ValueError, match="cosine"):
        imprint(model, protos, method="centred")
    with pytest.raises(ValueError, match="scale"):
        imprint(model, protos, scale=0.5)


def test_imprinted_rows_follow_the_rules(tiny_model) -> None:
    model = tiny_model
    w, b = model.get_classifier().weight.detach().clone(), model.get_classifier().bias.detach()
    b = b.clone()
    protos = torch.rand(3, w.shape[1])
    plain = copy.deepcopy(model)
    imprint(plain, protos, method="plain", scale=2.0)
    rows = plain.get_classifier().weight.detach()[4:]
    assert torch.allclose(rows.norm(dim=1), 2.0 * w.norm(dim=1).mean().expand(3), rtol=1e-5)
    assert torch.allclose(F.normalize(rows, dim=1), F.normalize(protos, dim=1), atol=1e-6)
    assert torch.allclose(plain.get_classifier().bias.detach()[4:], b.mean().expand(3))
    imprint(model, protos, method="centred", scale=0.5)
    rows, biases = model.get_classifier().weight.detach()[4:], model.get_classifier().bias[4:]
    w_mean, mu = w.mean(0), mean_embedding(model)
    dev = rows - w_mean
    alpha = 0.5 * (w - w_mean).norm(dim=1).mean()
    assert torch.allclose(dev.norm(dim=1), alpha.expand(3), rtol=1e-5)
    assert torch.allclose(F.normalize(dev, dim=1), F.normalize(protos - mu, dim=1), atol=1e-5)
    # At the mean embedding every new logit equals the mean old logit.
    new_at_mu = rows @ mu + biases.detach()
    assert torch.allclose(new_at_mu, (w @ mu + b).mean().expand(3), atol=1e-5)
    # A fresh BatchNorm (beta 0, gamma 1) gives the mean of a rectified standard normal.
    assert torch.allclose(mu, torch.full_like(mu, 1 / math.sqrt(2 * math.pi)))


def test_card_records_enrollment_and_keeps_settings(split: dict[str, Path], tmp_path: Path
                                                     ) -> None:
    out = enroll_artifact(split["base"], split["new"], tmp_path / "r2", views=1).output
    card = read_card(out)
    assert card["calibration"] == {"temperature": 1.5}
    assert card["identification"] == {"abstain_threshold": 0.4}
    assert card["config"]["training"]["num_classes"] == 24
    [record] = card["enrollment"]
    assert len(record["enrolled"]) == 12 and record["views_per_reference"] == 1
    assert record["imprint"] == "centred" and record["scale"] == 1.0
    assert record["base_model"]["num_classes"] == 12
    assert card["metrics"] == {}
    # Enrolling again onto the enrolled model appends a second record.
    more = tmp_path / "more.csv"
    more.write_text(f"image,label\n{load_dataset(split['sample']).samples[0].path},extra-pill\n")
    third = enroll_artifact(out, more, tmp_path / "r3", views=0).output
    assert len(read_card(third)["enrollment"]) == 2
    assert len(read_card(third)["labels"]) == 25


def test_existing_labels_are_refused_or_skipped(split: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"already in the model.*--skip-existing"):
        enroll_artifact(split["base"], split["sample"], tmp_path / "x", views=0)
    assert not (tmp_path / "x").exists()
    result = enroll_artifact(split["base"], split["sample"], tmp_path / "y", views=0,
                             on_existing="skip")
    assert len(result.skipped) == 12 and len(result.enrolled) == 12
    with pytest.raises(ArtifactError, match="must differ"):
        enroll_artifact(split["base"], split["new"], split["base"], views=0)
    with pytest.raises(ArtifactError, match="already holds a model"):
        enroll_artifact(split["base"], split["new"], tmp_path / "y", views=0)


def test_auto_scale_is_measured_on_old_classes(split: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="--scale auto needs --old-data"):
        enroll_artifact(split["base"], split["new"], tmp_path / "a", views=0, scale="auto")
    result = enroll_artifact(split["base"], split["new"], tmp_path / "b", views=0, scale="auto",
                             old_data=split["sample"], max_drop=0.0)
    fit = result.scale_fit
    assert fit["n"] == 12  # only the sample photos of the model's own 12 labels count
    assert [r["scale"] for r in fit["table"]] == list(SCALE_GRID)
    tops = [r["old_top1"] for r in fit["table"]]
    assert tops == sorted(tops, reverse=True)  # longer new rows never help old classes
    ok = [r["scale"] for r in fit["table"] if fit["old_top1_before"] - r["old_top1"] <= 0.0]
    assert result.scale == fit["chosen"] == (max(ok) if ok else min(SCALE_GRID))
    [record] = read_card(tmp_path / "b")["enrollment"]
    assert record["scale_fit"]["chosen"] == result.scale
    # The table is the truth: the saved model loses exactly what it predicted.
    photos = [s for s in load_dataset(split["sample"]).samples
              if s.label in load_artifact(split["base"]).labels]
    labels = load_artifact(tmp_path / "b").labels
    logits = _logits(tmp_path / "b", [s.path for s in photos])
    top1 = (logits.argmax(1) == torch.tensor([labels.index(s.label) for s in photos])).float()
    chosen = next(r for r in fit["table"] if r["scale"] == result.scale)
    assert math.isclose(float(top1.mean()), chosen["old_top1"], abs_tol=1e-4)


def test_reference_views_shape(split: dict[str, Path]) -> None:
    art = load_artifact(split["base"])
    t = EvalTransform(art.preprocessing)
    refs = [load_image(s.path) for s in load_dataset(split["new"]).samples[:2]]
    views = reference_views(refs, t, views=3, seed=0)
    assert views.shape == (2 * 4, 3, 64, 64) and views.dtype == torch.uint8
    assert torch.equal(views, reference_views(refs, t, views=3, seed=0))  # seeded


def test_enroll_cli(split: dict[str, Path], tmp_path: Path, capsys) -> None:
    folder = tmp_path / "folders"
    for s in load_dataset(split["new"]).samples[:3]:
        (folder / s.label).mkdir(parents=True)
        shutil.copy(s.path, folder / s.label / s.path.name)
    out = tmp_path / "cli-run"
    assert main(["enroll", "--model", str(split["base"]), "--data", str(folder),
                 "--out", str(out), "--views", "2", "--json", "--scale", "auto",
                 "--old-data", str(split["sample"])]) == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert len(record["enrolled"]) == 3 and record["output"] == str(out)
    assert record["scale"] == record["scale_fit"]["chosen"]
    assert "old-class top-1 on 12 images" in captured.err
    # The base card's temperature and thresholds predate the new pills: the user is told.
    assert f"rxvision calibrate --model {out}" in captured.err
    assert main(["predict", "--model", str(out), "--json", "--topk", "1",
                 str(next(folder.rglob("*.jpg")))]) == 0
    capsys.readouterr()
    assert main(["enroll", "--model", str(split["base"]), "--data", str(split["sample"]),
                 "--out", str(tmp_path / "z")]) == 2
    assert "--skip-existing" in capsys.readouterr().err


def _embed(run: Path, paths: list[Path]) -> torch.Tensor:
    art = load_artifact(run)
    t = EvalTransform(art.preprocessing)
    return embed_uint8(art.model, t, torch.stack([t.to_uint8(load_image(p)) for p in paths]))


def test_cosine_offset_auto_matches_the_trained_rows_own_cosine(
    split: dict[str, Path], tmp_path: Path, copy_artifact
) -> None:
    base = copy_artifact(split["base_cos"])
    with pytest.raises(ArtifactError, match="rxvision calibrate"):
        enroll_artifact(base, split["new"], tmp_path / "none", views=0)
    assert not (tmp_path / "none").exists()
    # `rxvision calibrate` stores the mean cosine of photos with their own trained row.
    assert main(["calibrate", "--model", str(base), "--data", str(split["sample"]),
                 "--workers", "0", "--no-progress"]) == 0
    stored = read_card(base)["calibration"]["own_class_cosine"]
    old = load_dataset(split["sample"])
    art = load_artifact(base)
    targets = torch.tensor(old.targets(art.labels))
    emb = _embed(base, [s.path for s in old.samples])
    known = targets >= 0
    own = art.model.get_classifier().cosine(emb).detach()[known].gather(1, targets[known][:, None])
    assert stored == pytest.approx(float(own.mean()), abs=1e-5)

    out = tmp_path / "run2"
    result = enroll_artifact(base, split["new"], out, views=0)
    assert result.imprint == "lean" and result.offset_fit is not None
    fit = result.offset_fit
    assert fit["trained_own_cosine"] == stored
    assert result.offset == pytest.approx(fit["new_rows_own_cosine"] - stored)
    # With views=0 each new row's own view is its reference photo: check the mean directly.
    grown = load_artifact(out)
    head = grown.model.get_classifier()
    new = load_dataset(split["new"])
    cos = head.cosine(_embed(out, [s.path for s in new.samples])).detach()
    idx = torch.tensor([grown.labels.index(s.label) for s in new.samples])
    assert fit["new_rows_own_cosine"] == pytest.approx(float(cos.gather(1, idx[:, None]).mean()),
                                                       abs=1e-5)
    assert torch.equal(head.offset[:12], torch.zeros(12))
    assert torch.allclose(head.offset[12:], torch.full((12,), result.offset))
    # Logits are s * (cos - offset); the old ones do not move.
    photos = [s.path for s in old.samples]
    logits = grown.model(torch.stack([EvalTransform(grown.preprocessing)(load_image(p))
                                      for p in photos]))
    scale = head.log_scale.exp()
    torch.testing.assert_close(logits, scale * (head.cosine(_embed(out, photos)) - head.offset))
    assert torch.equal(logits[:, :12], _logits(base, photos))
    # --old-data measures the same statistic on the spot.
    again = enroll_artifact(split["base_cos"], split["new"], tmp_path / "run3", views=0,
                            old_data=split["sample"])
    assert again.offset == pytest.approx(result.offset, abs=1e-5)


def test_enrollment_extends_the_class_centres(
    split: dict[str, Path], two_view_manifest: Path, tmp_path: Path, copy_artifact
) -> None:
    base = copy_artifact(split["base_cos"])
    assert main(["calibrate", "--model", str(base), "--data", str(two_view_manifest),
                 "--workers", "0", "--no-progress"]) == 0
    cal = read_card(base)["calibration"]
    old_centres, fit = cal["own_logit_means"], cal["own_logit_means_fit"]
    assert len(old_centres) == 12
    out = tmp_path / "run2"
    result = enroll_artifact(base, split["new"], out, views=0)
    grown = read_card(out)
    centres = grown["calibration"]["own_logit_means"]
    assert len(centres) == 24 and centres[:12] == old_centres
    assert "own_logit_means" not in grown["enrollment"][-1]  # in the calibration only
    assert result.class_centres_fit["prior_views"] == fit["prior_views"]
    # views=0: a new class's fresh view is its reference photo; its centre is that photo's
    # logit on the new row, shrunk towards the overall mean like the trained centres.
    new = load_dataset(split["new"])
    logits = _logits(out, [s.path for s in new.samples])
    labels = read_card(out)["labels"]
    prior, grand = fit["prior_views"], fit["grand_mean"]
    for i, sample in enumerate(new.samples):
        own = float(logits[i, labels.index(sample.label)])
        assert centres[labels.index(sample.label)] == pytest.approx(
            (own + prior * grand) / (1 + prior), abs=1e-4)
    # The enrolled model scores open-set photos with them.
    ident = Identifier.load(out, ood_method="centred_max_logit")
    assert ident.class_centres is not None and ident.class_centres.shape == (24,)
    assert read_card(out)["enrollment"][0]["offset"] == result.offset


def test_offset_needs_a_cosine_layer(split: dict[str, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="cosine final layer"):
        enroll_artifact(split["base"], split["new"], tmp_path / "x", views=0, offset=0.1)
    assert not (tmp_path / "x").exists()
    # From the command line these are plain errors (exit 2), not tracebacks.
    assert main(["enroll", "--model", str(split["base"]), "--data", str(split["new"]),
                 "--out", str(tmp_path / "x"), "--offset", "0.1"]) == 2
    assert "cosine final layer" in capsys.readouterr().err
    assert main(["enroll", "--model", str(split["base_cos"]), "--data", str(split["new"]),
                 "--out", str(tmp_path / "x"), "--imprint", "centred"]) == 2
    assert "imprinted with --imprint lean or prototype" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_enrollment_keeps_the_base_cards_zoom_setting(
    split: dict[str, Path], tmp_path: Path, copy_artifact
) -> None:
    base = copy_artifact(split["base"])
    card = read_card(base)
    assert card["preprocessing"]["zoom"] == "auto"  # what a new card says
    card["preprocessing"]["zoom"] = "off"
    (base / "card.json").write_text(json.dumps(card))
    out = tmp_path / "run2"
    enroll_artifact(base, split["new"], out, views=0)
    assert read_card(out)["preprocessing"]["zoom"] == "off"  # not reset to the default
    assert Identifier.load(out).transform.zoom == "off"


def test_enrolled_pills_join_the_drug_library_with_their_facts(
    split: dict[str, Path], tmp_path: Path
) -> None:
    from rxvision.library.database import open_library
    from rxvision.library.errors import LibraryError
    from rxvision.library.for_model import build_model_library

    base = tmp_path / "base"
    shutil.copytree(split["base"], base)
    build_model_library(split["sample"], base)  # the base's 12 pills, with facts
    new = load_dataset(split["new"]).labels
    result = enroll_artifact(base, split["new"], tmp_path / "run", views=1)
    out = tmp_path / "run"
    assert result.library["new_references"] == 12 and result.library["enrolled_without_facts"] == []
    with open_library(out) as lib:
        labels = set(lib.labels())
        assert labels == set(load_dataset(split["sample"]).labels)
        facts = lib.references(new[0])[0]
        assert facts.facts.name == f"drug {new[0]}" and facts.image_path.is_file()
        assert lib.lookalikes_fingerprint == read_card(out)["weights"]["sha256"]
        assert lib.lookalikes([new[0]], 3)[new[0]]  # look-alikes over old and new pills
    [answer] = Identifier.load(out).identify(facts.image_path, topk=24)
    assert {c.label for c in answer.candidates if c.facts} == labels
    # Built beside the new weights before publishing, named for where it was published.
    assert result.library["path"] == str(out / "library.sqlite")
    with open_library(out) as lib:
        assert lib.meta["lookalikes_source"] == str(out)
    # A library that fails to build leaves no model without it.
    import rxvision.library.enroll as enroll_module

    def broken(*_: object, **__: object) -> None:
        raise LibraryError("disk full")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(enroll_module, "write_enrolled_library", broken)
        with pytest.raises(LibraryError, match="disk full"):
            enroll_artifact(base, split["new"], tmp_path / "run3", views=1)
    assert not (tmp_path / "run3").exists() and not list(tmp_path.glob(".run3*"))
    # A facts cell that cannot be right stops the enrollment before anything is written.
    bad = tmp_path / "bad.csv"
    bad.write_text(split["new"].read_text().replace(",ROUND,", ",BLOB,", 1))
    with pytest.raises(LibraryError, match="column 'shape'"):
        enroll_artifact(base, bad, tmp_path / "never", views=1)
    assert not (tmp_path / "never").exists()


def test_a_crop_model_enrolls_from_crop_views(artifact_factory, config_factory, sample_dir,
                                              monkeypatch: pytest.MonkeyPatch):
    """Enrolment renders views as the model trained on them: a crop model sees one side
    on the studio grey, with no zoom on top of the crop."""
    import rxvision.library.enroll as enroll_module
    from rxvision.library.enroll import enroll

    seen = {}

    class Stop(Exception):
        pass

    def spy(model, transform, refs, views, seed, params, batch_size):
        seen.update(framing=params.framing, one_side=params.one_side_prob, zoom=transform.zoom)
        raise Stop

    monkeypatch.setattr(enroll_module, "label_embeddings", spy)
    cfg = config_factory(overrides=["augment.framing=crop"])
    art = load_artifact(artifact_factory("crop", config=cfg))
    with pytest.raises(Stop):
        enroll(art, load_dataset(sample_dir / "manifest.csv"))
    assert seen == {"framing": "crop", "one_side": 1.0, "zoom": "off"}


def test_enrolling_a_crop_model_keeps_its_pill_finder(split: dict[str, Path],
                                                      copy_artifact, tmp_path: Path) -> None:
    """A crop model enrolled or re-headed is still a crop model: its segmenter/ comes along,
    so the new model finds pills (without it every photo would be refused)."""
    from conftest import REPO_ROOT

    from rxvision.identify.pipeline import PillPipeline, find_segmenter
    from rxvision.library.prototype_head import prototype_head_artifact
    from rxvision.locate.segmenter import SEGMENTER_DIR, attach_segmenter

    def crop_model(name: str) -> Path:
        path = copy_artifact(split[name])
        config = read_card(path)["config"]
        update_card(path, config={**config, "augment": {**config["augment"], "framing": "crop"}})
        attach_segmenter(path, REPO_ROOT / "models" / "rxvision-segmenter")
        return path

    base = crop_model("base")
    out = Path(enroll_artifact(base, split["new"], tmp_path / "grown", views=0).output)
    assert (out / SEGMENTER_DIR / "card.json").read_bytes() == (
        base / SEGMENTER_DIR / "card.json").read_bytes()
    assert find_segmenter(out) == out / SEGMENTER_DIR
    photo = load_image(load_dataset(split["new"]).samples[0].path)
    answer = PillPipeline.load(out).identify(photo)
    assert answer.retake is None and answer.pills
    base_cos = crop_model("base_cos")
    own = set(read_card(base_cos)["labels"])
    with open(split["sample"], newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["label"] in own]
    refs = tmp_path / "own.csv"
    with open(refs, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "image": str(split["sample"].parent / r["image"])} for r in rows)
    reheaded = tmp_path / "reheaded"
    prototype_head_artifact(base_cos, refs, reheaded, views=0)
    assert (reheaded / SEGMENTER_DIR / "model.safetensors").is_file()
    # A photo-framing model has no finder to carry, and gets none.
    plain = Path(enroll_artifact(split["base"], split["new"], tmp_path / "plain",
                                 views=0).output)
    assert not (plain / SEGMENTER_DIR).exists()


def test_enroll_stores_a_head_precision_that_loading_uses(split: dict[str, Path],
                                                          tmp_path: Path) -> None:
    """`enroll --head-precision fp16` writes the card's identification.head_precision; the
    torch backend then keeps the rows in half precision unless asked otherwise."""
    from rxvision.identify.identifier import IdentifierError

    with pytest.raises(ValueError, match="cosine final layer"):
        enroll_artifact(split["base"], split["new"], tmp_path / "x", views=0,
                        head_precision="fp16")  # its final layer is nn.Linear
    assert not (tmp_path / "x").exists()
    out = tmp_path / "half"
    assert main(["enroll", "--model", str(split["base_cos"]), "--data", str(split["new"]),
                 "--out", str(out), "--views", "0", "--offset", "0",
                 "--head-precision", "fp16"]) == 0
    assert read_card(out)["identification"]["head_precision"] == "fp16"
    ident = Identifier.load(out)
    assert ident.head_precision == "fp16"
    assert ident.model.get_classifier().inference_dtype == torch.float16
    explicit = Identifier.load(out, head_precision="fp32")  # the caller's choice wins
    assert explicit.model.get_classifier().inference_dtype == torch.float32
    plain = Identifier.load(split["base_cos"])  # no card setting: float32 rows
    assert plain.head_precision == "fp32"
    update_card(out, identification={**read_card(out)["identification"],
                                     "head_precision": "int4"})
    with pytest.raises(IdentifierError, match=r"identification\.head_precision must be one of"):
        Identifier.load(out)
