"""hotrain fit / eval on demo shards (CPU): learning, exact resume, checkpoints, hand -> handobj, evaluation."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hodata.schema import decode_seg
from hotrain.cli import main

pytestmark = pytest.mark.slow


def run(args: list[str]) -> str:
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def shards(egohos_demo_shards) -> Path:
    return egohos_demo_shards


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_same_run_state(a: Path, b: Path) -> None:
    """last.pt of two runs: the same step, and model and optimizer tensors equal bit for bit."""
    ca, cb = (torch.load(d / "last.pt", weights_only=True) for d in (a, b))
    assert ca["step"] == cb["step"]
    assert ca["model"].keys() == cb["model"].keys()
    for k, v in ca["model"].items():
        assert torch.equal(v, cb["model"][k]), k
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
        for k, v in sa.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(sb[k])), k
    # the log's closing line says the same (b's log also holds the line of its interrupted first part)
    final = [[ln for ln in (d / "train.log").read_text().splitlines() if "model state sha256" in ln][-1]
             for d in (a, b)]
    assert final[0] == final[1]


# The tiny preset, a little shortened (tests), on a fixed seed.
TINY = ["--preset", "tiny", "--weights", "none", "--no-progress", "--seed", "0"]


@pytest.fixture(scope="module")
def hand_run(shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "hand"
    run(["fit", "--shards", str(shards), "--stage", "hand", "--out", str(out), *TINY])
    return out


def test_fit_learns_the_synthetic_task(hand_run):
    recs = records(hand_run)
    train = [r["loss"] for r in recs if "loss" in r]
    val = [r for r in recs if r.get("split") == "val"]
    assert np.mean(train[-3:]) < 0.85 * np.mean(train[:2]), train  # loss falls
    best = max(r["iou_hand"] for r in val)
    assert best > 0.35, val  # the hand is found on held-out sequences (a constant "background" scores 0)
    log = (hand_run / "train.log").read_text()
    assert "initial weights: random initialisation" in log
    assert (hand_run / "tb").is_dir() and any((hand_run / "tb").iterdir())


def test_checkpoints_load_with_weights_only_and_hold_everything(hand_run):
    last = torch.load(hand_run / "last.pt", weights_only=True)
    for key in ("model", "optimizer", "scheduler", "scaler", "step", "rng", "config", "num_classes", "best_miou"):
        assert key in last, key
    assert type(last["config"]) is dict and last["config"]["stage"] == "hand" and last["step"] == 150
    assert last["config"]["model"] == "deeplabv3_mobilenet_v3_large" and last["num_classes"] == 2
    best = torch.load(hand_run / "best.pt", weights_only=True)
    val = [r for r in records(hand_run) if r.get("split") == "val"]
    assert best["best_miou"] == pytest.approx(max(r["miou"] for r in val))
    assert "optimizer" not in best  # model + config only
    assert not list(hand_run.glob(".*tmp*"))  # no temp files left behind


SHORT = ["--preset", "tiny", "--weights", "none", "--no-progress", "--steps", "6", "--steps-per-epoch", "4",
         "--crop-size", "64", "--batch-size", "2", "--bn-recompute", "8"]
SMALL = [*SHORT, "--aux", "--eval-every", "3", "--ckpt-every", "100"]  # aux head: dropout RNG matters on resume


def test_resume_after_a_stop_gives_the_parameters_of_an_uninterrupted_run(shards, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run(["fit", "--shards", str(shards), "--out", str(a), *SMALL])
    out = run(["fit", "--shards", str(shards), "--out", str(b), *SMALL, "--stop-at", "3"])  # mid-epoch 0
    assert '"stopped": true' in out and torch.load(b / "last.pt", weights_only=True)["step"] == 3
    run(["fit", "--shards", str(shards), "--out", str(b), *SMALL, "--resume"])
    # bit for bit, parameters and buffers (dropout RNG, data stream, BN statistics restored)
    assert_same_run_state(a, b)
    assert torch.load(a / "last.pt", weights_only=True)["step"] == 6
    assert not (a / "ranks").exists()  # run folders hold what users need, nothing written for tests
    loss = lambda d: [(r["step"], r["loss"]) for r in records(d) if "loss" in r]  # noqa: E731
    assert loss(a) == loss(b)  # the metrics log was cut at the checkpoint and continued


def test_resume_is_exact_with_accumulation_sgd_warmup_and_mix(shards, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    opts = [*SHORT, "--steps", "4", "--accum", "2", "--optimizer", "sgd", "--lr", "0.01", "--warmup-steps", "2",
            "--mix", "egohos=1", "--eval-every", "100", "--ckpt-every", "100"]
    run(["fit", "--shards", str(shards), "--out", str(a), *opts])
    run(["fit", "--shards", str(shards), "--out", str(b), *opts, "--stop-at", "1"])
    run(["fit", "--shards", str(shards), "--out", str(b), *opts, "--resume"])
    assert_same_run_state(a, b)
    assert torch.load(a / "last.pt", weights_only=True)["step"] == 4
    loss = lambda d: [(r["step"], r["loss"]) for r in records(d) if "loss" in r]  # noqa: E731
    assert loss(a) == loss(b) and len(loss(a)) >= 1


def test_handobj_from_a_hand_checkpoint(shards, hand_run, tmp_path):
    out = tmp_path / "handobj"
    run(["fit", "--shards", str(shards), "--stage", "handobj", "--init", str(hand_run / "last.pt"), "--out", str(out),
         *SHORT])
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["num_classes"] == 3 and ck["classes"] == ["background", "hand", "object"]
    assert ck["config"]["aux"] is False  # follows the init checkpoint (the tiny preset has no aux head)
    assert "--init" in (out / "train.log").read_text() and "2 -> 3 classes" in (out / "train.log").read_text()


def val_pixels(shards: Path) -> int:
    n = 0
    for shard in shards.glob("*-val-*.tar"):
        with tarfile.open(shard) as tf:
            for m in tf.getmembers():
                if m.name.endswith(".seg.png"):
                    n += int((decode_seg(tf.extractfile(m).read()) != 255).sum())
    return n


def test_eval_reports_every_val_pixel_once(shards, hand_run, tmp_path):
    run(["eval", "--checkpoint", str(hand_run / "best.pt"), "--shards", str(shards), "--out", str(tmp_path / "ev")])
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["pixels"] == val_pixels(shards)
    mat = np.array(report["confusion_matrix"])
    assert mat.shape == (2, 2) and mat.sum() == report["pixels"]
    assert report["iou"]["hand"] == pytest.approx(mat[1, 1] / (mat[1].sum() + mat[:, 1].sum() - mat[1, 1]))
    assert "egohos" in report["per_source"] and report["checkpoint"]["stage"] == "hand"
    png = (tmp_path / "ev" / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_options_are_one_line_errors(shards, tmp_path, monkeypatch):
    res = CliRunner().invoke(main, ["fit", "--shards", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "nothing" in res.output and "Traceback" not in res.output
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))  # COCO weights not cached
    res = CliRunner().invoke(main, ["fit", "--shards", str(shards), "--weights", "coco", "--out", str(tmp_path / "o"),
                                    "--preset", "tiny"])
    assert res.exit_code == 1 and "get_state_dict" in res.output and "empty_hub" in res.output


def test_sides_from_a_hand_checkpoint_trains_and_evaluates_left_and_right(shards, hand_run, tmp_path):
    out = tmp_path / "sides"
    run(["fit", "--shards", str(shards), "--stage", "sides", "--init", str(hand_run / "last.pt"), "--out", str(out),
         *SHORT])
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["classes"] == ["background", "left_hand", "right_hand", "object"] and ck["num_classes"] == 4
    assert ck["config"]["stage"] == "sides"
    log = (out / "train.log").read_text()
    assert "2 -> 4 classes: background<-background, left_hand<-hand-0.69, right_hand<-hand-0.69" in log
    val = [r for r in records(out) if r.get("split") == "val"]
    assert val and {"iou_left_hand", "iou_right_hand", "left_as_right", "right_as_left"} <= set(val[-1])
    run(["eval", "--checkpoint", str(out / "last.pt"), "--shards", str(shards), "--out", str(tmp_path / "ev"),
         "--tta", "flip"])
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    lr = report["left_right"]
    assert lr["left_pixels"] > 0 and lr["right_pixels"] > 0  # the demo's hodata/2 shards know every hand's side
    mat = np.array(report["confusion_matrix"])
    assert lr["left_as_right"] == mat[1, 2] and lr["right_as_left"] == mat[2, 1]
    assert report["pixels"] == val_pixels(shards)  # every hand has a side here: no pixel left unscored


def test_bf16_autocast_and_channels_last_on_cpu(shards, tmp_path):
    """The GPU recipe's precision and memory format, run where torch allows it: on the CPU."""
    out = tmp_path / "bf16"
    run(["fit", "--shards", str(shards), "--out", str(out), *SHORT, "--steps", "3", "--amp", "bf16",
         "--channels-last", "--eval-every", "3", "--bn-recompute", "0"])
    assert "precision bf16, channels_last True" in (out / "train.log").read_text()
    losses = [r["loss"] for r in records(out) if "loss" in r]
    assert losses and all(np.isfinite(losses))
    ck = torch.load(out / "last.pt", weights_only=True)
    assert all(v.dtype in (torch.float32, torch.int64) for v in ck["model"].values())  # weights stay fp32
    assert ck["config"]["amp"] == "bf16" and ck["config"]["channels_last"] is True


def test_fit_with_gpu_augment_runs_where_there_is_no_gpu(shards, tmp_path):
    """--gpu-augment decodes and augments on the training device: here the CPU; it trains and is recorded."""
    out = tmp_path / "gpuaug"
    run(["fit", "--shards", str(shards), "--out", str(out), *SHORT, "--steps", "6", "--gpu-augment",
         "--eval-every", "6", "--bn-recompute", "0"])
    losses = [r["loss"] for r in records(out) if "loss" in r]
    assert losses and all(np.isfinite(losses))
    assert torch.load(out / "last.pt", weights_only=True)["config"]["gpu_augment"] is True


# ------------------------------------------------------------------------------------------ GPU (skipped without)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@cuda
def test_gpu_fit_in_bf16_and_eval_agrees_with_the_cpu(shards, tmp_path):
    out = tmp_path / "gpu"
    run(["fit", "--shards", str(shards), "--out", str(out), *SHORT, "--eval-every", "6"])
    log = (out / "train.log").read_text()
    assert "on cuda" in log and "precision bf16, channels_last True" in log  # the GPU defaults
    assert all(np.isfinite([r["loss"] for r in records(out) if "loss" in r]))
    for device in ("cuda", "cpu"):
        run(["eval", "--checkpoint", str(out / "last.pt"), "--shards", str(shards), "--out", str(tmp_path / device),
             "--device", device])
    g, c = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("cuda", "cpu"))
    assert g["pixels"] == c["pixels"] == val_pixels(shards)
    diff = np.abs(np.array(g["confusion_matrix"]) - np.array(c["confusion_matrix"])).sum()
    assert diff <= 0.02 * g["pixels"]  # bf16 + channels_last vs fp32: a few boundary pixels


@pytest.mark.gpu
@cuda
def test_gpu_nccl_group_reduces_a_confusion_matrix(tmp_path):
    import torch.distributed as tdist

    from hotrain.metrics import ConfusionMatrix

    tdist.init_process_group("nccl", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        cm = ConfusionMatrix(3)
        cm.update(torch.tensor([[0, 1, 2, 2]]).cuda(), torch.tensor([[0, 1, 2, 0]]).cuda(), ["a"], [True])
        before = cm.mat.clone()
        cm.reduce_()
        assert cm.mat.is_cuda and torch.equal(cm.mat, before) and cm.per_source["a"].sum() == 4
    finally:
        tdist.destroy_process_group()
