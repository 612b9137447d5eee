"""hotrain predict: label PNGs of the input's size from folders, globs and videos; flip TTA (sides swapped);
resume; bad frames skipped and listed; no input overwritten; one run per output folder; torchrun split."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hotrain import checkpoint as ckpt_io
from hotrain.cli import main
from hotrain.export import model_classes
from hotrain.model import model_from_checkpoint, predict_logits
from hotrain.predict import LOCK_NAME, predict_labels, run_predict
from predict_helpers import ColourModel, PositionModel, colour_frame, save_checkpoint, use_model, write_rgb


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A fresh (untrained) handobj checkpoint of the older shape: no ``classes`` entry."""
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", "handobj", with_classes=False)


@pytest.fixture(scope="module")
def sides_ckpt(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "sides.pt", "sides")


@pytest.fixture()
def colour_model(monkeypatch):
    use_model(monkeypatch, lambda ckpt: ColourModel(model_classes(ckpt)))


def rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def frames_folder(path, n, h=48, w=64, ext="png"):
    for i in range(n):
        write_rgb(path / f"f{i:03d}.{ext}", colour_frame(h, w, 3 * i))
    return path


def test_folder_of_mixed_sizes_gives_label_pngs_of_each_input_size(ckpt, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    sizes = {"a": (40, 56), "b": (48, 64), "c": (40, 56)}
    for i, (name, (h, w)) in enumerate(sizes.items()):
        cv2.imwrite(str(frames / f"{name}.{'png' if i % 2 else 'jpg'}"), rgb(h, w, i))
    (frames / "notes.txt").write_text("not an image")
    info = run_predict(ckpt, str(frames), tmp_path / "masks", overlay_images=True, batch_size=2)
    assert info["counts"]["written"] == 3 and info["classes"] == ["background", "hand", "object"]
    net = model_from_checkpoint(ckpt_io.load(ckpt)).eval()
    for name, (h, w) in sizes.items():
        mask = cv2.imread(str(tmp_path / "masks" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (h, w) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1, 2}
        # the file holds exactly the model's argmax on that frame
        src = next(frames.glob(f"{name}.*"))
        img = cv2.cvtColor(cv2.imread(str(src)), cv2.COLOR_BGR2RGB)
        x = torch.from_numpy(img).permute(2, 0, 1)[None]
        expected = predict_logits(net, x, device=torch.device("cpu")).argmax(1)[0].numpy()
        assert (mask == expected).mean() > 0.999  # batch vs single-frame float noise at most
        over = cv2.imread(str(tmp_path / "masks" / "overlay" / f"{name}.jpg"))
        assert over.shape == (h, w, 3)


def test_glob_and_max_side_keep_the_input_size(ckpt, tmp_path):
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), rgb(90, 120, i))
    run_predict(ckpt, str(tmp_path / "f*.png"), tmp_path / "out", max_side=48)
    for i in range(2):
        assert cv2.imread(str(tmp_path / "out" / f"f{i}.png"), cv2.IMREAD_UNCHANGED).shape == (90, 120)


def test_video_gives_one_mask_per_frame_and_resumes(ckpt, colour_model, tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened()
    for i in range(5):
        writer.write(rgb(48, 64, i))
    writer.release()
    info = run_predict(ckpt, str(path), tmp_path / "masks", batch_size=2)
    names = sorted(p.name for p in (tmp_path / "masks").glob("*.png"))
    assert info["kind"] == "video" and names == [f"clip_{i:06d}.png" for i in range(5)]
    assert cv2.imread(str(tmp_path / "masks" / names[0]), cv2.IMREAD_UNCHANGED).shape == (48, 64)
    (tmp_path / "masks" / names[3]).unlink()
    info = run_predict(ckpt, str(path), tmp_path / "masks", batch_size=2)
    assert info["counts"] == {"frames": 5, "written": 1, "skipped_done": 4, "failed": 0}


def test_flip_tta_is_mirror_equivariant(ckpt):
    net = model_from_checkpoint(ckpt_io.load(ckpt)).eval()
    img = rgb(48, 64, 7)
    a = predict_labels(net, [img], device=torch.device("cpu"), tta=True)[0]
    b = predict_labels(net, [img[:, ::-1].copy()], device=torch.device("cpu"), tta=True)[0]
    assert (a == b[:, ::-1]).mean() > 0.999  # TTA of the mirror image = mirror of the TTA output


def test_flip_tta_swaps_left_and_right_hands(sides_ckpt, monkeypatch, tmp_path):
    """A model that tells sides by position: the mirrored frame's left hand is the frame's right hand."""
    img = np.zeros((32, 48, 3), np.uint8)
    img[8:24, 4:44] = 255  # one bright bar across both halves
    net, cpu = PositionModel(), torch.device("cpu")
    plain = predict_labels(net, [img], device=cpu)[0]
    assert set(np.unique(plain[8:24, 4:44])) == {1, 2}  # left half left hand, right half right hand
    swapped = predict_labels(net, [img], device=cpu, tta=True, flip_perm=[0, 2, 1, 3])[0]
    np.testing.assert_array_equal(swapped, plain)
    unswapped = predict_labels(net, [img], device=cpu, tta=True)[0]
    assert (unswapped != plain).any()  # averaging a mirror without the swap blurs the sides
    # the run picks the swap from the checkpoint's class names
    use_model(monkeypatch, lambda ckpt: PositionModel())
    write_rgb(tmp_path / "in" / "bar.png", img)
    run_predict(sides_ckpt, str(tmp_path / "in"), tmp_path / "out", tta=True)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "out" / "bar.png"), cv2.IMREAD_UNCHANGED), plain)


def test_rerun_skips_done_frames_and_redoes_missing_or_broken_masks(ckpt, colour_model, tmp_path):
    frames = frames_folder(tmp_path / "in", 6)
    out = tmp_path / "out"
    first = run_predict(ckpt, str(frames), out, batch_size=4)
    assert first["counts"] == {"frames": 6, "written": 6, "skipped_done": 0, "failed": 0}
    reference = {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in out.glob("*.png")}
    stamp = os.stat(out / "f000.png").st_mtime_ns
    (out / "f002.png").unlink()
    (out / "f004.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")  # a mask left broken by something else
    second = run_predict(ckpt, str(frames), out, batch_size=4)
    assert second["counts"] == {"frames": 6, "written": 2, "skipped_done": 4, "failed": 0}
    assert os.stat(out / "f000.png").st_mtime_ns == stamp  # not rewritten
    for name, ref in reference.items():
        np.testing.assert_array_equal(cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED), ref)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # no temporary left behind
    record = json.loads((out / "predict.json").read_text())
    assert record["counts"]["skipped_done"] == 4 and record["world_size"] == 1 and record["device"] == "cpu"
    assert record["checkpoint"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert record["options"]["batch_size"] == 4 and record["export"] == "plain"


def test_truncated_and_corrupt_frames_are_skipped_and_listed(ckpt, colour_model, tmp_path):
    frames = frames_folder(tmp_path / "in", 3, h=240, w=320, ext="jpg")
    whole = (frames / "f001.jpg").read_bytes()
    (frames / "f001.jpg").write_bytes(whole[: len(whole) // 2])  # cv2 alone would decode half a grey frame
    (frames / "f003.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    res = CliRunner().invoke(main, ["predict", "--checkpoint", str(ckpt), "--input", str(frames), "--out",
                                    str(tmp_path / "out"), "--no-progress"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "2 mask(s) written, 0 already done, 2 failed" in res.output
    assert "2 frame(s) could not be read" in res.output and "f001.jpg" in res.output
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["f000.png", "f002.png"]
    record = json.loads((tmp_path / "out" / "predict.json").read_text())
    failed = {os.path.basename(f["frame"]): f["reason"] for f in record["failed"]}
    assert set(failed) == {"f001.jpg", "f003.png"} and "truncated" in failed["f001.jpg"]
    assert record["counts"]["failed"] == 2


def test_errors_that_stop_a_run_are_one_line(ckpt, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["predict", "--checkpoint", str(tmp_path / "nope.pt"), "--input", str(tmp_path),
                               "--out", str(tmp_path / "out")])
    assert res.exit_code == 1 and "nope.pt" in res.output and "Traceback" not in res.output
    res = runner.invoke(main, ["predict", "--checkpoint", str(ckpt), "--input", str(tmp_path / "missing"),
                               "--out", str(tmp_path / "out")])
    assert res.exit_code == 1 and "input not found" in res.output


def test_out_equal_to_input_is_refused_and_the_frames_stay(ckpt, colour_model, tmp_path):
    frames = frames_folder(tmp_path / "in", 2)
    before = {p.name: p.read_bytes() for p in frames.iterdir()}
    res = CliRunner().invoke(main, ["predict", "--checkpoint", str(ckpt), "--input", str(frames), "--out",
                                    str(frames)])
    assert res.exit_code == 1 and "choose another --out" in res.output and "Traceback" not in res.output
    assert {p.name: p.read_bytes() for p in frames.iterdir()} == before
    # a glob over the folder is refused too; a subfolder of the input is fine
    res = CliRunner().invoke(main, ["predict", "--checkpoint", str(ckpt), "--input", str(frames / "*.png"),
                                    "--out", str(frames)])
    assert res.exit_code == 1 and {p.name: p.read_bytes() for p in frames.iterdir()} == before
    info = run_predict(ckpt, str(frames), frames / "masks")
    assert info["counts"]["written"] == 2


def test_a_second_run_into_the_same_folder_refuses(ckpt, colour_model, tmp_path):
    frames = frames_folder(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    with open(out / LOCK_NAME, "a+") as held:  # what a running predict holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        res = CliRunner().invoke(main, ["predict", "--checkpoint", str(ckpt), "--input", str(frames), "--out",
                                        str(out)])
    assert res.exit_code == 1 and "another hotrain predict is writing here" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not list(out.glob("*.png"))
    assert run_predict(ckpt, str(frames), out)["counts"]["written"] == 1  # released: runs


@pytest.mark.slow
def test_torchrun_splits_frames_over_ranks_disjoint_and_complete(ckpt, tmp_path):
    frames = tmp_path / "in"
    for i in range(5):
        write_rgb(frames / f"f{i}.png", rgb(40, 48, i))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "hotrain",
           "predict", "--checkpoint", str(ckpt), "--input", str(frames), "--out", str(tmp_path / "ddp"),
           "--batch-size", "2", "--num-workers", "1", "--device", "cpu", "--no-progress"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    record = json.loads((tmp_path / "ddp" / "predict.json").read_text())
    assert record["world_size"] == 2 and record["counts"]["written"] == 5
    assert [r["written"] for r in record["ranks"]] == [3, 2]  # frames 0, 2, 4 and 1, 3
    single = run_predict(ckpt, str(frames), tmp_path / "one", batch_size=2)
    assert single["counts"]["written"] == 5
    for i in range(5):
        a = cv2.imread(str(tmp_path / "ddp" / f"f{i}.png"), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(tmp_path / "one" / f"f{i}.png"), cv2.IMREAD_UNCHANGED)
        assert (a == b).mean() > 0.999
