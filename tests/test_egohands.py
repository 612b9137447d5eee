"""EgoHands source: polygon rasterizing convention, .mat reading, frame alignment, splits, errors, shards."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner

from hodata import manifests
from hodata.cli import main as hodata_cli
from hodata.demo import egohands as demo
from hodata.errors import DataError
from hodata.schema import decode_seg
from hodata.shards import BuildConfig, build
from hodata.sources import open_source
from hodata.sources.egohands import EgoHandsSource, rasterize_polygon

EMPTY = np.zeros((0, 0))


def write_video(root: Path, vid: str, frames: dict[int, dict], size=(10, 8)) -> dict:
    """One hand-made video: grey JPEGs and polygons.mat; returns its metadata record."""
    vdir = root / "_LABELLED_SAMPLES" / vid
    vdir.mkdir(parents=True, exist_ok=True)
    labelled = []
    for num in sorted(frames):
        ok, buf = cv2.imencode(".jpg", np.full((size[1], size[0], 3), 120, np.uint8))
        (vdir / f"frame_{num:04d}.jpg").write_bytes(buf.tobytes())
        labelled.append({"frame_num": np.array([[float(num)]])} | {s: frames[num].get(s, EMPTY) for s in demo.SLOTS})
    scipy.io.savemat(vdir / "polygons.mat", {"polygons": demo._struct_array(labelled, demo.SLOTS)})
    a, loc, v, p = vid.split("_")
    return {"video_id": vid, "partner_video_id": f"{a}_{loc}_{p}_{v}", "ego_viewer_id": v, "partner_id": p,
            "location_id": loc, "activity_id": a,
            "labelled_frames": demo._struct_array(labelled, ("frame_num",) + demo.SLOTS)}


def write_metadata(root: Path, records: list[dict]) -> None:
    scipy.io.savemat(root / "metadata.mat", {"video": demo._struct_array(records, demo.VIDEO_FIELDS)})


# 1-based MATLAB square around pixel centres x 3..5, y 3..4 (1-based) = columns 2..4, rows 2..3 (0-based)
SQUARE = np.array([[2.5, 2.5], [5.5, 2.5], [5.5, 4.5], [2.5, 4.5]])


# ------------------------------------------------------------------------------------------ rasterizing


def test_rasterize_known_pixels():
    m = rasterize_polygon(SQUARE - 1, 8, 10)
    expected = np.zeros((8, 10), bool)
    expected[2:4, 2:5] = True
    np.testing.assert_array_equal(m, expected)
    # triangle with hypotenuse x + y = 4.7: exactly the centres with column + row <= 4
    tri = np.array([[-0.5, -0.5], [5.2, -0.5], [-0.5, 5.2]])
    rr, cc = np.mgrid[0:7, 0:7]
    np.testing.assert_array_equal(rasterize_polygon(tri, 7, 7), rr + cc <= 4)


def test_rasterize_matches_point_in_polygon_and_handles_edges():
    def inside(px, py, poly):  # plain crossing-number test, one point at a time
        c = False
        for (x0, y0), (x1, y1) in zip(poly, np.roll(poly, -1, axis=0)):
            if (y0 <= py) != (y1 <= py) and px >= x0 + (py - y0) * (x1 - x0) / (y1 - y0):
                c = not c
        return c

    rng = np.random.default_rng(1)
    for _ in range(20):
        poly = rng.uniform(-4, 20, (int(rng.integers(3, 10)), 2))
        brute = np.array([[inside(c, r, poly) for c in range(16)] for r in range(14)])
        np.testing.assert_array_equal(rasterize_polygon(poly, 14, 16), brute)
    assert not rasterize_polygon(np.array([[1.0, 1.0], [5.0, 5.0]]), 8, 8).any()  # < 3 points
    assert not rasterize_polygon(np.array([[20.0, 20], [30, 20], [30, 30]]), 8, 8).any()  # off the image
    full = rasterize_polygon(np.array([[-5.0, -5], [50, -5], [50, 50], [-5, 50]]), 8, 8)
    assert full.all()


# ------------------------------------------------------------------------------------------------ frames


def test_known_polygons_land_on_known_pixels(tmp_path):
    root = tmp_path / "egohands_data"
    # 1-based; 0-based (6.3, 0.5), (9.5, 0.5), (9.5, 3.7): inside = rows 1..3, columns <= 9, c - r >= 6
    tri = np.array([[7.3, 1.5], [10.5, 1.5], [10.5, 4.7]])
    rec = write_video(root, "CARDS_COURTYARD_B_T", {
        120: {"myleft": SQUARE, "yourright": np.array([[1.0, 1.0], [3.0, 3.0]])},  # 2 points: ignored
        5: {"myright": tri},
    })
    write_metadata(root, [rec])
    src = EgoHandsSource(tmp_path)  # the folder above egohands_data/ works too
    refs = src.frames()
    assert [(r.split, r.sequence, r.frame) for r in refs] == [("test", "CARDS_COURTYARD_B_T", "frame_0005"),
                                                             ("test", "CARDS_COURTYARD_B_T", "frame_0120")]
    first, second = src.load(refs[0]), src.load(refs[1])
    # polygons.mat entry 1 belongs to the first sorted file (frame 5), entry 2 to frame 120
    expected = np.zeros((8, 10), np.uint8)
    expected[2:4, 2:5] = 1
    np.testing.assert_array_equal(second.seg, expected)
    assert second.hands == [{"side": "left", "slot": "myleft", "owner": "wearer"}]
    expected_tri = np.zeros((8, 10), np.uint8)
    expected_tri[1, 7:10] = expected_tri[2, 8:10] = expected_tri[3, 9] = 1
    np.testing.assert_array_equal(first.seg, expected_tri)
    assert first.hands == [{"side": "right", "slot": "myright", "owner": "wearer"}]
    assert first.labels == {"hand": True, "object": False, "sides": True}
    assert first.provenance["image"] == "_LABELLED_SAMPLES/CARDS_COURTYARD_B_T/frame_0005.jpg"
    assert first.provenance["polygons_index"] == 0


def test_files_must_match_metadata(tmp_path):
    rec = write_video(tmp_path, "CARDS_COURTYARD_B_T", {3: {}, 9: {}})
    write_metadata(tmp_path, [rec])
    (tmp_path / "_LABELLED_SAMPLES/CARDS_COURTYARD_B_T/frame_0003.jpg").rename(
        tmp_path / "_LABELLED_SAMPLES/CARDS_COURTYARD_B_T/frame_0004.jpg")
    with pytest.raises(DataError) as e:
        EgoHandsSource(tmp_path).frames()
    assert "CARDS_COURTYARD_B_T" in str(e.value) and "[4]" in str(e.value) and "[3]" in str(e.value)


# ------------------------------------------------------------------------------------------------ splits


def test_split_file_option_and_unknown_videos(tmp_path):
    root = tmp_path / "data"
    recs = [write_video(root, v, {1: {"myleft": SQUARE}}) for v in ("CARDS_COURTYARD_B_T", "JENGA_OFFICE_H_T")]
    write_metadata(root, recs)
    default = {r.sequence: r.split for r in EgoHandsSource(root).frames()}
    assert default == {"CARDS_COURTYARD_B_T": "test", "JENGA_OFFICE_H_T": "train"}

    custom = tmp_path / "split.json"
    custom.write_text(json.dumps({"_note": "x", "train": ["CARDS_COURTYARD_B_T"], "val": ["JENGA_OFFICE_H_T"]}))
    src = EgoHandsSource(root, {"split_file": str(custom)})
    assert {r.sequence: r.split for r in src.frames()} == {"CARDS_COURTYARD_B_T": "train", "JENGA_OFFICE_H_T": "val"}
    assert src.build_options()["split_file"] == str(custom)

    custom.write_text(json.dumps({"train": ["CARDS_COURTYARD_B_T"]}))
    with pytest.raises(DataError) as e:
        EgoHandsSource(root, {"split_file": str(custom)}).frames()
    assert "JENGA_OFFICE_H_T" in str(e.value) and str(custom) in str(e.value)


def test_split_manifest_has_the_48_release_videos():
    split = manifests.load("egohands_split.json")
    ids = split["_ids"]
    assert len(ids) == 48 == len(set(ids))
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(ids)
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (36, 4, 8)
    for v in ids:
        activity, location, viewer, partner = v.split("_")
        assert activity in {"CARDS", "CHESS", "JENGA", "PUZZLE"}
        assert location in {"COURTYARD", "OFFICE", "LIVINGROOM"} and {viewer, partner} <= set("BHST")
        partner_video = f"{activity}_{location}_{partner}_{viewer}"
        assert [s for s in ("train", "val", "test") if partner_video in split[s]] == \
               [s for s in ("train", "val", "test") if v in split[s]]  # a game's two views share a split


# ------------------------------------------------------------------------------------------------ errors


def test_missing_root_wrong_layout_and_bad_metadata(tmp_path):
    with pytest.raises(DataError) as e:
        open_source("egohands", tmp_path / "absent")
    assert str(tmp_path / "absent") in str(e.value) and "\n" not in str(e.value)

    (tmp_path / "wrong").mkdir()
    with pytest.raises(DataError) as e:
        EgoHandsSource(tmp_path / "wrong").frames()
    assert str(tmp_path / "wrong") in str(e.value) and "\n" not in str(e.value)

    bad = tmp_path / "bad"
    (bad / "_LABELLED_SAMPLES").mkdir(parents=True)
    (bad / "metadata.mat").write_bytes(b"MATLAB 5.0 MAT-file, but then garbage" + bytes(50))
    with pytest.raises(DataError) as e:
        EgoHandsSource(bad).frames()
    assert str(bad / "metadata.mat") in str(e.value) and "\n" not in str(e.value)

    scipy.io.savemat(bad / "metadata.mat", {"videos": np.zeros((1, 1))})
    with pytest.raises(DataError, match="no struct array 'video'"):
        EgoHandsSource(bad).frames()

    scipy.io.savemat(bad / "metadata.mat", {"video": demo._struct_array([{"video_id": "X"}], ("video_id",))})
    with pytest.raises(DataError, match="lacks field"):
        EgoHandsSource(bad).frames()


def test_bad_frames_are_skipped_and_recorded(tmp_path):
    root = tmp_path / "egohands_data"
    rec = write_video(root, "CHESS_OFFICE_B_S", {
        10: {"myleft": SQUARE},
        20: {"myleft": SQUARE},
        30: {"myright": np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])},  # N x 3: malformed
        40: {"yourleft": np.array([[1.0, np.nan], [4.0, 5.0], [7.0, 8.0]])},
    })
    write_metadata(root, [rec])
    (root / "_LABELLED_SAMPLES/CHESS_OFFICE_B_S/frame_0020.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "shards"
    record = build(EgoHandsSource(root), BuildConfig(out=out, progress=False))
    assert record["totals"]["samples"] == 1
    skipped = {s["frame"]: s for s in json.loads((out / "manifest.json").read_text())["builds"]["egohands"]["skipped"]}
    assert set(skipped) == {"frame_0020", "frame_0030", "frame_0040"}
    assert skipped["frame_0020"]["file"].endswith("CHESS_OFFICE_B_S/frame_0020.jpg")
    assert skipped["frame_0030"]["file"].endswith("CHESS_OFFICE_B_S/polygons.mat")
    assert "polygons(3).myright" in skipped["frame_0030"]["reason"]
    assert "non-finite" in skipped["frame_0040"]["reason"]


# -------------------------------------------------------------------------------------- demo end to end


def test_demo_build_and_read_back(tmp_path):
    import webdataset as wds

    d, s = tmp_path / "D", tmp_path / "S"
    r = CliRunner().invoke(hodata_cli, ["demo", "--layout", "egohands", "--out", str(d), "--frames", "12"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(hodata_cli, ["build", "--source", "egohands", "--root", str(d / "egohands_data"),
                                        "--out", str(s), "--quiet"])
    assert r.exit_code == 0, r.output
    manifest = json.loads((s / "manifest.json").read_text())["builds"]["egohands"]
    assert manifest["totals"]["samples"] == 12 and manifest["skipped"] == []
    assert set(manifest["splits"]) == {"train", "val", "test"}
    assert manifest["source"]["annotation_files"]["metadata.mat"]["sha256"]

    tars = sorted(s.glob("egohands-*.tar"))
    with tarfile.open(tars[0]) as tf:
        exts = {n.rsplit("/", 1)[-1].split(".", 1)[1] for n in tf.getnames()}
    assert exts == {"jpg", "seg.png", "inst.png", "json"}
    seen_hand = 0
    for sample in wds.WebDataset([str(t) for t in tars], shardshuffle=False):
        meta = json.loads(sample["json"])
        seg = decode_seg(sample["seg.png"])
        assert seg.shape == (90, 160) and set(np.unique(seg).tolist()) <= {0, 1}
        assert meta["labels"] == {"hand": True, "object": False, "sides": True} and meta["source"] == "egohands"
        assert meta["sequence"] in json.loads(demo.SPLIT_FILE.read_text())[meta["split"]]
        assert sample["jpg"] == (d / "egohands_data" / meta["provenance"]["image"]).read_bytes()
        assert len(meta["hands"]) == 0 or seg.any()
        seen_hand += int(seg.any())
    assert seen_hand >= 10
