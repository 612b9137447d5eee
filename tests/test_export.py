"""predict --export: every consumer's layout and ids, read back the way the consumer reads them, equal to the
plain prediction remapped; refusals (no sides, a tree format given other frames); overlays; --out mirrors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hotrain.cli import main
from hotrain.export import FORMATS, flip_permutation, model_classes
from hotrain.predict import run_predict
from predict_helpers import ColourModel, colour_frame, save_checkpoint, use_model, write_rgb


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpts")
    return {stage: save_checkpoint(d / f"{stage}.pt", stage) for stage in ("hand", "handobj", "sides")}


@pytest.fixture()
def colour_model(monkeypatch):
    use_model(monkeypatch, lambda ckpt: ColourModel(model_classes(ckpt)))


# Frames of each pipeline's tree (relative to its root) and where the consumer reads each one's mask.
TREES = {
    "honnotate": {"SEQ1/rgb/0/00000.png": "SEQ1/segmentation/0/raw_seg_results/00000.png",
                  "SEQ1/rgb/0/00001.jpg": "SEQ1/segmentation/0/raw_seg_results/00001.png",
                  "SEQ1/rgb/1/00000.png": "SEQ1/segmentation/1/raw_seg_results/00000.png",
                  "SEQ2/rgb/0/00000.png": "SEQ2/segmentation/0/raw_seg_results/00000.png"},
    "hold": {"build/image/0000.png": "build/mask/0000.png", "build/image/0001.png": "build/mask/0001.png"},
    "hocap": {"seqA/000123/color_000000.jpg": "seqA/000123/mask_000000.png",
              "seqA/000123/color_000001.jpg": "seqA/000123/mask_000001.png",
              "seqA/000456/color_000000.jpg": "seqA/000456/mask_000000.png"},
    "arctic": {"images/rgb/0000.png": "images/mask/0000.png", "images/rgb/0001.png": "images/mask/0001.png"},
}
# Files the pipelines keep beside their frames, which are not frames.
DECOYS = {"honnotate": ["SEQ1/meta/0000.png"], "hold": ["build/corres.png"],
          "hocap": ["seqA/000123/depth_000000.png"], "arctic": ["images/depth/0000.png"]}


def hold_load_mask(p: Path) -> np.ndarray:
    """HOLD's ``load_mask``: BGR read, refuses raw binary masks (max 255), converted to gray."""
    mask = cv2.imread(str(p))
    assert mask.max() != 255, "using original mask, not segm mask from aitviewer"
    return cv2.cvtColor(mask, cv2.COLOR_BGR2GRAY)


READ = {
    "honnotate": lambda p: cv2.imread(str(p))[:, :, 0],                 # HOnnotate readSeg / inference code
    "hold": hold_load_mask,
    "hocap": lambda p: cv2.imread(str(p), cv2.IMREAD_GRAYSCALE),       # HO-Cap SequenceLoader._read_mask_image
    "arctic": lambda p: np.asarray(Image.open(p)),
}
# id of each colour band (red = left hand, green = right hand, blue = object) and of the dark strip
EXPECTED = {"honnotate": (2, 2, 1, 0), "hold": (250, 150, 50, 0), "hocap": (2, 1, 3, 0),
            "arctic": (200, 250, 100, 0)}


def build_tree(root: Path, fmt: str) -> dict[Path, np.ndarray]:
    frames = {}
    for k, rel in enumerate(TREES[fmt]):
        h, w = (40, 56) if k == 1 else (48, 66)
        frames[write_rgb(root / rel, colour_frame(h, w, shift=5 * k))] = colour_frame(h, w, shift=5 * k)
    for rel in DECOYS[fmt]:
        write_rgb(root / rel, np.full((8, 8, 3), 255, np.uint8))
    return frames


def band_centres(h: int, w: int, shift: int) -> list[tuple[int, int]]:
    cols = [int(np.mean(c)) for c in np.array_split(np.arange(w), 3)]
    return [(h // 3, (c + shift) % w) for c in cols] + [(h - 2, w // 2)]


@pytest.mark.parametrize("fmt", list(TREES))
def test_tree_export_is_what_the_consumer_reads_and_equals_plain_remapped(fmt, ckpts, colour_model, tmp_path):
    root = tmp_path / "tree"
    frames = build_tree(root, fmt)
    info = run_predict(ckpts["sides"], str(root), export=fmt, batch_size=2)
    assert info["counts"] == {"frames": len(frames), "written": len(frames), "skipped_done": 0, "failed": 0}
    assert Path(info["out"]) == root and (root / "predict.json").is_file()
    lut = FORMATS[fmt].lut(model_classes({"classes": ["background", "left_hand", "right_hand", "object"]}))
    written = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png") if p not in frames)
    assert written == sorted(list(TREES[fmt].values()) + DECOYS[fmt])  # exactly the consumer's paths, nothing else
    for k, (frame, rgb) in enumerate(frames.items()):
        mask_path = root / TREES[fmt][frame.relative_to(root).as_posix()]
        with Image.open(mask_path) as im:
            assert im.mode == "L" and im.size == (rgb.shape[1], rgb.shape[0])  # 8-bit gray, full frame size
        mask = READ[fmt](mask_path)
        assert mask.shape == rgb.shape[:2] and mask.dtype == np.uint8
        for (y, x), expected in zip(band_centres(*rgb.shape[:2], 5 * k), EXPECTED[fmt]):
            assert mask[y, x] == expected, (frame, y, x)
        # the same frame predicted with --export plain, remapped by the format's table
        plain_out = tmp_path / "plain" / str(k)
        run_predict(ckpts["sides"], str(frame), plain_out)
        plain = cv2.imread(str(plain_out / f"{frame.stem}.png"), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(plain)) <= {0, 1, 2, 3}
        np.testing.assert_array_equal(mask, lut[plain])
    record = json.loads((root / "predict.json").read_text())
    assert record["export"] == fmt and record["layout"] == "tree"
    assert record["ids"] == dict(zip(["background", "left_hand", "right_hand", "object"], map(int, lut)))


def test_plain_ids_per_checkpoint_stage(ckpts, colour_model, tmp_path):
    rgb = colour_frame(48, 66)
    write_rgb(tmp_path / "in" / "f.png", rgb)
    centres = band_centres(48, 66, 0)  # red, green, blue, dark
    expected = {"sides": (1, 2, 3, 0), "handobj": (1, 1, 2, 0), "hand": (1, 1, 0, 0)}
    for stage, ids in expected.items():
        run_predict(ckpts[stage], str(tmp_path / "in"), tmp_path / stage)
        mask = cv2.imread(str(tmp_path / stage / "f.png"), cv2.IMREAD_UNCHANGED)
        assert [mask[y, x] for y, x in centres] == list(ids), stage


def test_honnotate_from_a_handobj_checkpoint_and_a_hand_checkpoint(ckpts, colour_model, tmp_path):
    build_tree(tmp_path / "t", "honnotate")
    mask_path = tmp_path / "t" / "SEQ1/segmentation/0/raw_seg_results/00000.png"
    for stage, ids in (("handobj", (2, 2, 1, 0)), ("hand", (2, 2, 0, 0))):
        run_predict(ckpts[stage], str(tmp_path / "t"), tmp_path / stage, export="honnotate")
        mask = READ["honnotate"](tmp_path / stage / mask_path.relative_to(tmp_path / "t"))
        assert [mask[y, x] for y, x in band_centres(48, 66, 0)] == list(ids)
        assert mask.max() < 255


@pytest.mark.parametrize("fmt", ["hold", "hocap", "arctic"])
def test_side_formats_refuse_a_checkpoint_without_sides_in_one_line(fmt, ckpts, tmp_path):
    build_tree(tmp_path / "t", fmt)
    res = CliRunner().invoke(main, ["predict", "--checkpoint", str(ckpts["handobj"]), "--input", str(tmp_path / "t"),
                                    "--export", fmt])
    assert res.exit_code == 1 and "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and f"hotrain fit --stage sides --init {ckpts['handobj']}" in lines[0], res.output
    assert not list((tmp_path / "t").rglob("mask*")) and not (tmp_path / "t" / "predict.json").exists()


def test_out_mirrors_the_tree_and_leaves_the_input_untouched(ckpts, colour_model, tmp_path):
    build_tree(tmp_path / "t", "honnotate")
    before = sorted(p.relative_to(tmp_path / "t") for p in (tmp_path / "t").rglob("*"))
    res = CliRunner().invoke(main, ["predict", "--checkpoint", str(ckpts["sides"]), "--input",
                                    str(tmp_path / "t" / "SEQ1"), "--export", "honnotate", "--out",
                                    str(tmp_path / "o"), "--overlay", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert sorted(p.relative_to(tmp_path / "t") for p in (tmp_path / "t").rglob("*")) == before
    got = sorted(p.relative_to(tmp_path / "o").as_posix() for p in (tmp_path / "o").rglob("*.png"))
    assert got == ["SEQ1/segmentation/0/raw_seg_results/00000.png", "SEQ1/segmentation/0/raw_seg_results/00001.png",
                   "SEQ1/segmentation/0/visualization/00000_prediction.png",
                   "SEQ1/segmentation/0/visualization/00001_prediction.png",
                   "SEQ1/segmentation/1/raw_seg_results/00000.png",
                   "SEQ1/segmentation/1/visualization/00000_prediction.png"]
    vis = cv2.imread(str(tmp_path / "o" / "SEQ1/segmentation/0/visualization/00000_prediction.png"))
    assert vis.shape == (48, 66, 3)


def test_tree_formats_given_other_frames(ckpts, colour_model, tmp_path):
    for i in range(2):
        write_rgb(tmp_path / "frames" / f"img{i}.png", colour_frame(48, 66, i))
    runner = CliRunner()
    args = ["predict", "--checkpoint", str(ckpts["sides"]), "--input", str(tmp_path / "frames"), "--no-progress"]
    for fmt in ("honnotate", "hocap"):  # keyed by sequence and camera: their own trees only
        res = runner.invoke(main, args + ["--export", fmt, "--out", str(tmp_path / fmt)])
        assert res.exit_code == 1 and "not in one" in res.output and "Traceback" not in res.output
    res = runner.invoke(main, args + ["--export", "hold"])
    assert res.exit_code == 1 and "give --out" in res.output
    # HOLD and ARCTIC: --out plays the case / render folder; masks are named after the frames
    for fmt, sub in (("hold", "build/mask"), ("arctic", "images/mask")):
        res = runner.invoke(main, args + ["--export", fmt, "--out", str(tmp_path / fmt)])
        assert res.exit_code == 0, res.output
        assert sorted(p.name for p in (tmp_path / fmt / sub).iterdir()) == ["img0.png", "img1.png"]
        assert json.loads((tmp_path / fmt / "predict.json").read_text())["layout"] == "flat"


def test_video_to_arctic_layout(ckpts, colour_model, tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(3):
        writer.write(cv2.cvtColor(colour_frame(48, 64, i), cv2.COLOR_RGB2BGR))
    writer.release()
    info = run_predict(ckpts["sides"], str(path), tmp_path / "o", export="arctic")
    assert info["counts"]["written"] == 3
    names = sorted(p.name for p in (tmp_path / "o" / "images" / "mask").iterdir())
    assert names == [f"clip_{i:06d}.png" for i in range(3)]
    mask = READ["arctic"](tmp_path / "o" / "images" / "mask" / names[0])
    assert [mask[y, x] for y, x in band_centres(48, 64, 0)] == [200, 250, 100, 0]


def test_flip_permutation_swaps_left_and_right_only():
    assert flip_permutation(["background", "left_hand", "right_hand", "object"]) == [0, 2, 1, 3]
    assert flip_permutation(["background", "hand", "object"]) == [0, 1, 2]


def test_classes_of_checkpoints_without_a_classes_entry(tmp_path):
    for stage, n in (("hand", 2), ("handobj", 3), ("sides", 4)):
        ckpt = {"num_classes": n, "config": {"stage": stage}}
        assert len(model_classes(ckpt)) == n
    assert model_classes({"num_classes": 4, "config": {}})[1:3] == ["left_hand", "right_hand"]
