"""Training contracts: a run is an artifact, resume after SIGKILL is exact, DDP ranks agree."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from rxvision.artifact import load_artifact
from rxvision.config import ConfigError, load_config
from rxvision.engine.train import CHECKPOINT, _load_init, train
from rxvision.models import build_model

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
NUM_CLASSES = 6


def _tiny_data(tmp_path: Path) -> Path:
    """A manifest of the first NUM_CLASSES sample pills (paths relative to it)."""
    with open(SAMPLE / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:NUM_CLASSES]
    out = tmp_path / "data.csv"
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "image": str(SAMPLE / row["image"])})
    return out


def _tiny_config(tmp_path: Path, epochs: int = 3, **training: object) -> Path:
    cfg = {
        "architecture": {"backbone": {"name": "resnet18", "pretrained": False,
                                      "freeze_layers": True},
                         "fpn": {"out_channels": 32}, "attention": {"num_heads": 4},
                         "classifier": {"hidden_dim": 32}},
        "training": {"input_size": [64, 64], "num_classes": NUM_CLASSES, "epochs": epochs,
                     "batch_size": 6, "steps_per_epoch": 2, "lr": 1e-3, "warmup_epochs": 0.5,
                     "t_0": 2, "eta_min": 1e-6, "precision": "fp32", **training},
        "augment": {"val_views_per_image": 2},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def test_train_writes_a_usable_artifact(tmp_path: Path) -> None:
    data, config = _tiny_data(tmp_path), _tiny_config(tmp_path, epochs=2)
    result = train(load_config(config), data, tmp_path / "run")
    run = result.run_dir
    assert {p.name for p in run.iterdir()} >= {"model.safetensors", "card.json", "config.yaml",
                                               "log.jsonl", "tb", "checkpoints"}
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for key in ("train_loss", "train_acc", "val_top1", "val_top5", "val_top1_both",
                "val_top1_one", "images_per_s", "lr"):
        assert all(key in r for r in records), key
    art = load_artifact(run)
    assert len(art.labels) == NUM_CLASSES
    assert art.card["metrics"]["validation"]["val_top1"] == max(r["val_top1"] for r in records)
    assert art.card["calibration"]["temperature"] > 0
    assert art.card["label_metadata"][0]["ndc"]
    logits = art.model(torch.zeros(1, 3, 64, 64))
    assert logits.shape == (1, NUM_CLASSES) and torch.isfinite(logits).all()


def test_training_reduces_loss(tmp_path: Path) -> None:
    data, config = _tiny_data(tmp_path), _tiny_config(tmp_path, epochs=4)
    result = train(load_config(config, ["training.steps_per_epoch=4"]), data, tmp_path / "run")
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]


def test_num_classes_mismatch_names_the_key(tmp_path: Path) -> None:
    cfg = load_config(_tiny_config(tmp_path), ["training.num_classes=5"])
    with pytest.raises(ConfigError, match=r"training\.num_classes"):
        train(cfg, _tiny_data(tmp_path), tmp_path / "run")


def test_refuses_to_overwrite_a_run_without_resume(tmp_path: Path) -> None:
    data, config = _tiny_data(tmp_path), _tiny_config(tmp_path, epochs=1)
    train(load_config(config), data, tmp_path / "run")
    with pytest.raises(ConfigError, match="--resume"):
        train(load_config(config), data, tmp_path / "run")


def test_init_starts_from_another_runs_weights(tmp_path: Path) -> None:
    data, config = _tiny_data(tmp_path), _tiny_config(tmp_path, epochs=1)
    first = train(load_config(config), data, tmp_path / "first").run_dir
    init = load_artifact(first)
    cfg = load_config(config)
    model = build_model(cfg, NUM_CLASSES)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    _load_init(model, first, init.labels)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in init.model.state_dict().items())
    assert not all(torch.equal(loaded[k], v) for k, v in fresh.items())
    # A run started from it trains on and records where it started.
    second = train(cfg, data, tmp_path / "second", init=first, max_steps=1).run_dir
    assert load_artifact(second).card["training"]["init"] == str(first)
    # Other labels or another architecture are refused before anything is written.
    five = tmp_path / "five.csv"
    five.write_text("".join(data.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(ConfigError, match="labels"):
        train(load_config(config, ["training.num_classes=5"]), five, tmp_path / "x",
              init=first)
    with pytest.raises(ConfigError, match="architecture differs"):
        train(load_config(config, ["architecture.fpn.out_channels=16"]), data, tmp_path / "y",
              init=first)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    # The same labels in another order (an enrolled model lists new pills last): each class
    # keeps its own classifier row.
    shuffled = list(reversed(init.labels))
    model = build_model(cfg, NUM_CLASSES)
    _load_init(model, first, shuffled)
    head = "classifier.classifier.weight"
    rows = model.state_dict()[head]
    trained = init.model.state_dict()[head]
    for i, label in enumerate(shuffled):
        assert torch.equal(rows[i], trained[init.labels.index(label)])


def _run_cli(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rxvision", *args], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)


def _final_state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / CHECKPOINT, map_location="cpu", weights_only=True)["model"]


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path: Path) -> None:
    data, config = _tiny_data(tmp_path), _tiny_config(tmp_path, epochs=4)
    common = ["train", "--config", str(config), "--data", str(data)]
    reference = _run_cli([*common, "--out", str(tmp_path / "ref")])
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()

    killed_run = tmp_path / "killed"
    proc = _run_cli([*common, "--out", str(killed_run)])
    log = killed_run / "log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(log.read_text().splitlines())
    assert done < 4, "the killed run must stop before its last epoch"

    resumed = _run_cli([*common, "--out", str(killed_run), "--resume"])
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    ref_state, res_state = _final_state(tmp_path / "ref"), _final_state(killed_run)
    assert ref_state.keys() == res_state.keys()
    for key in ref_state:
        assert torch.equal(ref_state[key], res_state[key]), key
    ref_log = (tmp_path / "ref" / "log.jsonl").read_text().splitlines()
    res_log = log.read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in res_log] == [1, 2, 3, 4]
    assert [json.loads(x)["val_top1"] for x in res_log] == [json.loads(x)["val_top1"]
                                                             for x in ref_log]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_cpu_processes_keep_identical_weights(tmp_path: Path) -> None:
    data, config = _tiny_data(tmp_path), _tiny_config(tmp_path, epochs=2, batch_size=4)
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "rxvision", "train", "--config", str(config), "--data", str(data),
           "--out", str(run), "--device", "cpu"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    checksums = [x["ddp_weight_checksums"] for x in lines if "ddp_weight_checksums" in x]
    assert len(checksums) == 1 and len(checksums[0]) == 2
    assert checksums[0][0] == checksums[0][1]
    epochs = [x for x in lines if "epoch" in x]
    assert len(epochs) == 2  # rank 0 alone logs
    assert load_artifact(run).model is not None


def test_worker_rendering_matches_inline_rendering() -> None:
    """Rendering in a DataLoader worker yields exactly the inline stream (exact resume)."""
    from PIL import Image

    from rxvision.data.synth import PhoneViewSynthesizer
    from rxvision.engine.train import epoch_batches

    refs = [Image.open(p) for p in sorted((SAMPLE / "images").glob("*.jpg"))[:4]]
    synth = PhoneViewSynthesizer.from_images(refs, (48, 48))
    plan = torch.arange(12).remainder(4).view(3, 4)
    inline = list(epoch_batches(synth, plan, seed=5, num_workers=0))
    worker = list(epoch_batches(synth, plan, seed=5, num_workers=1))
    assert len(inline) == len(worker) == 3
    for (idx_a, views_a), (idx_b, views_b) in zip(inline, worker, strict=True):
        assert torch.equal(idx_a, idx_b) and torch.equal(views_a, views_b)


def test_stronger_training_blur_and_noise_leave_validation_views_unchanged(
        tmp_path: Path) -> None:
    from rxvision.data import load_dataset
    from rxvision.engine.train import build_synthesizer, validation_views

    images = load_dataset(_tiny_data(tmp_path))
    base = load_config(_tiny_config(tmp_path))
    strong = load_config(_tiny_config(tmp_path), ["augment.blur_sigma=4.0",
                                                  "augment.noise_std=0.1"])
    mean = [0.5, 0.5, 0.5]
    (synth_a, targets), (synth_b, _) = (build_synthesizer(images, c, mean) for c in (base, strong))
    assert synth_b.params.blur_sigma == 4.0 and synth_b.params.noise_std == 0.1
    val_a = validation_views(synth_a, targets, 2, seed=3)
    val_b = validation_views(synth_b, targets, 2, seed=3)
    assert torch.equal(val_a.images, val_b.images)
    assert synth_b.params.blur_sigma == 4.0  # the training synthesizer keeps its own ranges
    classes = torch.arange(NUM_CLASSES).repeat(4)
    train_a, _ = synth_a.render(classes, torch.Generator().manual_seed(1))
    train_b, _ = synth_b.render(classes, torch.Generator().manual_seed(1))
    assert not torch.equal(train_a, train_b)


@pytest.mark.parametrize("key", ["augment.blur_sigma=0", "augment.noise_std=-0.1",
                                 "augment.noise_std=0.5"])
def test_bad_degradation_ranges_name_the_key(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError, match=key.split("=")[0]):
        load_config(_tiny_config(tmp_path), [key])


def test_a_crop_run_gets_its_finder_and_its_independent_figures(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--segmenter makes a crop run whole; --independent-val measures it on photos the
    independent renderer made and stores them beside the validation figures."""
    from rxvision.cli import main
    from rxvision.identify.pipeline import SEGMENTER_DIR

    data, config = _tiny_data(tmp_path), _tiny_config(tmp_path, epochs=1)
    views = tmp_path / "indep"
    assert main(["data", "render-independent", str(data), "--out", str(views), "--views", "1",
                 "--size", "256", "--seed", "3"]) == 0
    run = tmp_path / "run"
    args = ["train", "--config", str(config), "--data", str(data), "--out", str(run),
            "--set", "augment.framing=crop", "--segmenter",
            str(REPO / "models" / "rxvision-segmenter"),
            "--independent-val", str(views / "manifest.csv")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "independent photos (" in out and "training renderer's validation top-1" in out
    assert (run / SEGMENTER_DIR / "model.safetensors").is_file()
    card = json.loads((run / "card.json").read_text())
    check = card["metrics"]["independent"]
    assert check["n"] == NUM_CLASSES and check["framing"] == "crop"
    assert 0.0 <= check["top1"] <= 1.0 and check["own_val_top1"] is not None
    assert 0.0 < check["ece_if_calibrated"] < 1.0 and "(a calibrated model: " in out
    assert check["gap_points"] == round(100 * (check["own_val_top1"] - check["top1"]), 1)
    assert "validation" in card["metrics"]  # kept beside it
    # A finder for a whole-photo model is refused before anything trains.
    code = main(["train", "--config", str(config), "--data", str(data), "--out",
                 str(tmp_path / "photo"), "--segmenter",
                 str(REPO / "models" / "rxvision-segmenter")])
    assert code != 0 and "pill crops" in capsys.readouterr().err
    assert not (tmp_path / "photo").exists()
