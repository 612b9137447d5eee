"""EgoHands source: both raster rules at pixel level, metadata.mat as the ground truth (polygons.mat only
cross-checked), frame alignment, the official split by position and the partner split, errors, shards."""

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
from hodata.sources.egohands import EgoHandsSource, KNOWN_VIDEOS, rasterize_polygon

EMPTY = np.zeros((0, 0))
PARTNERS = {"egohands_split": "partners"}
CENTRE = PARTNERS | {"egohands_raster": "centre"}


def write_video(root: Path, vid: str, frames: dict[int, dict], size=(10, 8)) -> dict:
    """One hand-made video: grey JPEGs and polygons.mat (the same polygons); returns its metadata record."""
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


# 1-based MATLAB square around pixel centres x 3..5, y 3..4 (1-based) = columns 2..4, rows 2..3 (0-based);
# its sides lie exactly on pixel-square sides, so both raster rules give the same 6 pixels
SQUARE = np.array([[2.5, 2.5], [5.5, 2.5], [5.5, 4.5], [2.5, 4.5]])
# 1-based; 0-based (6.3, 0.5), (9.5, 0.5), (9.5, 3.7): a right triangle whose hypotenuse is x - y = 5.8
TRIANGLE = np.array([[7.3, 1.5], [10.5, 1.5], [10.5, 4.7]])


def triangle_pixels(rule: str) -> np.ndarray:
    m = np.zeros((8, 10), np.uint8)
    if rule == "centre":  # centres with c - r >= 5.8, rows 1..3 (row 0's centres lie above y = 0.5)
        m[1, 7:10] = m[2, 8:10] = m[3, 9] = 1
    else:  # squares the triangle covers in any part: the hypotenuse also reaches c - r = 5 and row 4
        m[1, 6:10] = m[2, 7:10] = m[3, 8:10] = m[4, 9] = 1  # row 0 only touches y = 0.5: not covered
    return m


def clipped_area(poly: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> float:
    """Area of a simple polygon inside the box [x0, x1] x [y0, y1] (Sutherland-Hodgman clipping)."""
    pts = [tuple(p) for p in poly]
    for axis, bound, below in ((0, x1, True), (0, x0, False), (1, y1, True), (1, y0, False)):
        out = []
        for a, b in zip(pts, pts[1:] + pts[:1]):
            a_in = a[axis] <= bound if below else a[axis] >= bound
            b_in = b[axis] <= bound if below else b[axis] >= bound
            if a_in:
                out.append(a)
            if a_in != b_in:
                t = (bound - a[axis]) / (b[axis] - a[axis])
                out.append((a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])))
        pts = out
        if not pts:
            return 0.0
    return abs(sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(pts, pts[1:] + pts[:1]))) / 2


# ------------------------------------------------------------------------------------------ rasterizing


def test_rasterize_known_pixels():
    m = rasterize_polygon(SQUARE - 1, 8, 10)
    expected = np.zeros((8, 10), bool)
    expected[2:4, 2:5] = True
    np.testing.assert_array_equal(m, expected)
    np.testing.assert_array_equal(rasterize_polygon(SQUARE - 1, 8, 10, "release"), expected)
    for rule in ("centre", "release"):
        np.testing.assert_array_equal(rasterize_polygon(TRIANGLE - 1, 8, 10, rule), triangle_pixels(rule) == 1)
    # triangle with hypotenuse x + y = 4.7: exactly the centres with column + row <= 4
    tri = np.array([[-0.5, -0.5], [5.2, -0.5], [-0.5, 5.2]])
    rr, cc = np.mgrid[0:7, 0:7]
    np.testing.assert_array_equal(rasterize_polygon(tri, 7, 7), rr + cc <= 4)
    # ... and every square the hypotenuse enters: those with (r - 0.5) + (c - 0.5) < 4.7
    np.testing.assert_array_equal(rasterize_polygon(tri, 7, 7, "release"), rr + cc < 5.7)


def test_release_rule_is_any_overlap_with_the_pixel_square():
    """On random star-shaped (simple) polygons, 'release' marks exactly the pixels whose square the polygon
    covers with positive area, computed independently by clipping the polygon to each square."""
    rng = np.random.default_rng(3)
    for _ in range(40):
        n = int(rng.integers(3, 12))
        angle, radius = np.sort(rng.uniform(0, 2 * np.pi, n)), rng.uniform(0.3, 7, n)
        centre = rng.uniform(-2, 14, 2)
        poly = np.stack([centre[0] + radius * np.cos(angle), centre[1] + radius * np.sin(angle)], 1)
        brute = np.array([[clipped_area(poly, c - 0.5, r - 0.5, c + 0.5, r + 0.5) > 1e-12 for c in range(15)]
                          for r in range(13)])
        got = rasterize_polygon(poly, 13, 15, "release")
        np.testing.assert_array_equal(got, brute)
        assert (got >= rasterize_polygon(poly, 13, 15, "centre")).all()  # a superset of the centre rule
    # a sliver inside one pixel square: no centre inside, yet the square is covered
    sliver = np.array([[2.1, 2.1], [2.3, 2.1], [2.2, 2.4]])
    assert not rasterize_polygon(sliver, 5, 5).any()
    assert np.argwhere(rasterize_polygon(sliver, 5, 5, "release")).tolist() == [[2, 2]]


def test_rasterize_matches_point_in_polygon_and_handles_edges():
    def inside(px, py, poly):  # plain crossing-number test, one point at a time
        c = False
        for (x0, y0), (x1, y1) in zip(poly, np.roll(poly, -1, axis=0)):
            if (y0 <= py) != (y1 <= py) and px >= x0 + (py - y0) * (x1 - x0) / (y1 - y0):
                c = not c
        return c

    rng = np.random.default_rng(1)
    for k in range(40):
        poly = rng.uniform(-4, 20, (int(rng.integers(3, 10)), 2))
        if k % 2:
            poly = np.round(poly * 2) / 2  # vertices and edges on pixel centres and square sides: the tie rule
        brute = np.array([[inside(c, r, poly) for c in range(16)] for r in range(14)])
        np.testing.assert_array_equal(rasterize_polygon(poly, 14, 16), brute)
    for rule in ("centre", "release"):
        assert not rasterize_polygon(np.array([[1.0, 1.0], [5.0, 5.0]]), 8, 8, rule).any()  # < 3 points
        assert not rasterize_polygon(np.array([[20.0, 20], [30, 20], [30, 30]]), 8, 8, rule).any()  # off the image
        assert rasterize_polygon(np.array([[-5.0, -5], [50, -5], [50, 50], [-5, 50]]), 8, 8, rule).all()


# ------------------------------------------------------------------------------------------------ frames


@pytest.mark.parametrize("rule", ["release", "centre"])
def test_known_polygons_land_on_known_pixels(tmp_path, rule):
    root = tmp_path / "egohands_data"
    rec = write_video(root, "CARDS_COURTYARD_B_T", {
        120: {"myleft": SQUARE, "yourright": np.array([[1.0, 1.0], [3.0, 3.0]])},  # 2 points: ignored
        5: {"myright": TRIANGLE},
    })
    write_metadata(root, [rec])
    src = EgoHandsSource(tmp_path, PARTNERS | {"egohands_raster": rule})  # the folder above egohands_data/ works too
    refs = src.frames()
    assert [(r.split, r.sequence, r.frame) for r in refs] == [("test", "CARDS_COURTYARD_B_T", "frame_0005"),
                                                             ("test", "CARDS_COURTYARD_B_T", "frame_0120")]
    first, second = src.load(refs[0]), src.load(refs[1])
    expected = np.zeros((8, 10), np.uint8)
    expected[2:4, 2:5] = 1
    np.testing.assert_array_equal(second.seg, expected)
    assert second.hands == [{"side": "left", "slot": "myleft", "owner": "wearer"}]
    np.testing.assert_array_equal(first.seg, triangle_pixels(rule))
    np.testing.assert_array_equal(first.inst, triangle_pixels(rule) * 2)  # myright is instance 2
    assert first.hands == [{"side": "right", "slot": "myright", "owner": "wearer"}]
    assert first.labels == {"hand": True, "object": False, "sides": True}
    assert first.provenance["image"] == "_LABELLED_SAMPLES/CARDS_COURTYARD_B_T/frame_0005.jpg"
    assert first.provenance["labelled_frame"] == 1 and first.provenance["metadata"] == "metadata.mat"
    assert src.describe()["raster"]["rule"] == rule


def test_metadata_is_the_ground_truth_and_polygons_mat_is_cross_checked(tmp_path):
    root = tmp_path / "egohands_data"
    rec = write_video(root, "CARDS_COURTYARD_B_T", {5: {"myleft": SQUARE}, 9: {"myright": SQUARE}})
    rec2 = write_video(root, "JENGA_OFFICE_H_T", {3: {"myleft": SQUARE}})
    write_metadata(root, [rec, rec2])
    # the copy disagrees: another polygon for frame 9, and JENGA's copy is gone
    scipy.io.savemat(root / "_LABELLED_SAMPLES/CARDS_COURTYARD_B_T/polygons.mat", {"polygons": demo._struct_array(
        [{"myleft": SQUARE, "myright": EMPTY, "yourleft": EMPTY, "yourright": EMPTY},
         {"myleft": EMPTY, "myright": TRIANGLE, "yourleft": EMPTY, "yourright": EMPTY}], demo.SLOTS)})
    (root / "_LABELLED_SAMPLES/JENGA_OFFICE_H_T/polygons.mat").unlink()
    src = EgoHandsSource(root, CENTRE)
    refs = src.frames()
    found = src.describe()["polygons_mat"]
    assert found["frames_compared"] == 2 and found["frames_differing"] == 1 and not found["agrees"]
    assert found["examples"] == ["CARDS_COURTYARD_B_T frame_0009: polygons(2) myright differ from metadata.mat"]
    assert found["videos_without_file"] == ["JENGA_OFFICE_H_T"]
    frame9 = next(r for r in refs if r.frame == "frame_0009")
    expected = np.zeros((8, 10), np.uint8)
    expected[2:4, 2:5] = 1  # metadata.mat's square, not the copy's triangle
    np.testing.assert_array_equal(src.load(frame9).seg, expected)


def test_files_must_match_metadata(tmp_path):
    rec = write_video(tmp_path, "CARDS_COURTYARD_B_T", {3: {}, 9: {}})
    write_metadata(tmp_path, [rec])
    (tmp_path / "_LABELLED_SAMPLES/CARDS_COURTYARD_B_T/frame_0003.jpg").rename(
        tmp_path / "_LABELLED_SAMPLES/CARDS_COURTYARD_B_T/frame_0004.jpg")
    with pytest.raises(DataError) as e:
        EgoHandsSource(tmp_path, PARTNERS).frames()
    assert "CARDS_COURTYARD_B_T" in str(e.value) and "[4]" in str(e.value) and "[3]" in str(e.value)


# ------------------------------------------------------------------------------------------------ splits


OFFICIAL = {"test": [1, 11, 13, 20, 31, 34, 38, 44], "val": [7, 14, 28, 47]}


def write_release(root: Path, names: list[str]) -> None:
    """One 1-frame video per name, in this order in metadata.mat."""
    write_metadata(root, [write_video(root, v, {1 + i: {"myleft": SQUARE}}) for i, v in enumerate(names)])


def test_official_split_goes_by_position_in_metadata(tmp_path):
    names = sorted(KNOWN_VIDEOS)
    write_release(tmp_path / "a", names)
    src = EgoHandsSource(tmp_path / "a")  # the default: official
    split = {r.sequence: r.split for r in src.frames()}
    expected = {v: next((s for s, pos in OFFICIAL.items() if i in pos), "train") for i, v in enumerate(names, 1)}
    assert split == expected
    assert sum(s == "train" for s in split.values()) == 36
    d = src.describe()
    assert d["positions_per_split"]["test"] == OFFICIAL["test"] and d["positions_per_split"]["val"] == OFFICIAL["val"]
    assert d["warnings"] == [] and src.build_options()["egohands_split"] == "official"
    assert d["frames_per_split"] == {"train": 36, "val": 4, "test": 8}
    assert d["slots"] == {"polygons": 48, "empty": 48 * 3, "under_3_points": 0}
    assert len(d["annotation_files"]) == 49  # metadata.mat and every polygons.mat, with checksums

    # the same videos in another order: the split follows the positions, not the names
    shuffled = names[::-1]
    shuffled[0] = "CARDS_GARDEN_B_T"  # a name the release does not have: a warning, the split still holds
    write_release(tmp_path / "b", shuffled)
    src = EgoHandsSource(tmp_path / "b")
    split = {r.sequence: r.split for r in src.frames()}
    assert split["CARDS_GARDEN_B_T"] == "test" and split[names[-7]] == "val"  # positions 1 and 7
    assert "CARDS_GARDEN_B_T" in src.describe()["warnings"][0]

    # an unknown name breaks the partner split: a clear error naming the split file and the video
    with pytest.raises(DataError) as e:
        EgoHandsSource(tmp_path / "b", PARTNERS).frames()
    assert "CARDS_GARDEN_B_T" in str(e.value) and "egohands_split.json" in str(e.value)


def test_official_split_needs_the_release_48_videos(tmp_path):
    write_release(tmp_path, ["CARDS_COURTYARD_B_T", "JENGA_OFFICE_H_T"])
    with pytest.raises(DataError) as e:
        EgoHandsSource(tmp_path).frames()
    msg = str(e.value)
    assert "metadata.mat" in msg and "48" in msg and "holds 2" in msg and "--egohands-split partners" in msg
    assert "\n" not in msg


def test_split_file_option_and_unknown_videos(tmp_path):
    root = tmp_path / "data"
    recs = [write_video(root, v, {1: {"myleft": SQUARE}}) for v in ("CARDS_COURTYARD_B_T", "JENGA_OFFICE_H_T")]
    write_metadata(root, recs)
    default = {r.sequence: r.split for r in EgoHandsSource(root, PARTNERS).frames()}
    assert default == {"CARDS_COURTYARD_B_T": "test", "JENGA_OFFICE_H_T": "train"}

    custom = tmp_path / "split.json"
    custom.write_text(json.dumps({"_note": "x", "train": ["CARDS_COURTYARD_B_T"], "val": ["JENGA_OFFICE_H_T"]}))
    src = EgoHandsSource(root, {"split_file": str(custom)})  # overrides the official split too
    assert {r.sequence: r.split for r in src.frames()} == {"CARDS_COURTYARD_B_T": "train", "JENGA_OFFICE_H_T": "val"}
    assert src.build_options()["split_file"] == str(custom) and src.build_options()["egohands_split"] == "file"

    custom.write_text(json.dumps({"train": ["CARDS_COURTYARD_B_T"]}))
    with pytest.raises(DataError) as e:
        EgoHandsSource(root, {"split_file": str(custom)}).frames()
    assert "JENGA_OFFICE_H_T" in str(e.value) and str(custom) in str(e.value)


def test_split_manifests_have_the_48_release_videos():
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
    official = manifests.load("egohands_official_split.json")
    assert official["test"] == OFFICIAL["test"] and official["val"] == OFFICIAL["val"]
    assert sorted(official["train"] + official["val"] + official["test"]) == list(range(1, 49))


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
    record = build(EgoHandsSource(root, PARTNERS), BuildConfig(out=out, progress=False))
    assert record["totals"]["samples"] == 1
    skipped = {s["frame"]: s for s in json.loads((out / "manifest.json").read_text())["builds"]["egohands"]["skipped"]}
    assert set(skipped) == {"frame_0020", "frame_0030", "frame_0040"}
    assert skipped["frame_0020"]["file"].endswith("CHESS_OFFICE_B_S/frame_0020.jpg")
    # polygons are read from metadata.mat: the reason names its struct path
    assert skipped["frame_0030"]["file"].endswith("egohands_data/metadata.mat")
    assert "video(1).labelled_frames(3).myright" in skipped["frame_0030"]["reason"]
    assert "non-finite" in skipped["frame_0040"]["reason"]


# -------------------------------------------------------------------------------------- demo end to end


def test_demo_build_and_read_back(tmp_path):
    import webdataset as wds

    d, s = tmp_path / "D", tmp_path / "S"
    r = CliRunner().invoke(hodata_cli, ["demo", "--layout", "egohands", "--out", str(d)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(hodata_cli, ["build", "--source", "egohands", "--root", str(d / "egohands_data"),
                                        "--out", str(s), "--quiet"])
    assert r.exit_code == 0, r.output
    manifest = json.loads((s / "manifest.json").read_text())["builds"]["egohands"]
    # the demo writes all 48 release videos (one labelled frame each): the official split applies by default
    assert manifest["totals"]["samples"] == 48 and manifest["skipped"] == []
    assert {k: v["samples"] for k, v in manifest["splits"].items()} == {"train": 36, "val": 4, "test": 8}
    src = manifest["source"]
    assert src["annotation_files"]["metadata.mat"]["sha256"] and src["polygons_mat"]["agrees"]
    assert src["polygons_mat"]["frames_compared"] == 48 and src["raster"]["rule"] == "release"
    assert manifest["options"]["egohands_split"] == "official"

    tars = sorted(s.glob("egohands-*.tar"))
    with tarfile.open(tars[0]) as tf:
        exts = {n.rsplit("/", 1)[-1].split(".", 1)[1] for n in tf.getnames()}
    assert exts == {"jpg", "seg.png", "inst.png", "json"}
    names = sorted(KNOWN_VIDEOS)
    seen_hand = 0
    for sample in wds.WebDataset([str(t) for t in tars], shardshuffle=False):
        meta = json.loads(sample["json"])
        seg = decode_seg(sample["seg.png"])
        assert seg.shape == (90, 160) and set(np.unique(seg).tolist()) <= {0, 1}
        assert meta["labels"] == {"hand": True, "object": False, "sides": True} and meta["source"] == "egohands"
        position = names.index(meta["sequence"]) + 1  # the demo writes the videos in name order
        assert meta["provenance"]["video_position"] == position
        assert meta["split"] == next((s for s, pos in OFFICIAL.items() if position in pos), "train")
        assert sample["jpg"] == (d / "egohands_data" / meta["provenance"]["image"]).read_bytes()
        assert len(meta["hands"]) == 0 or seg.any()
        seen_hand += int(seg.any())
    assert seen_hand >= 40


def test_release_rule_adds_one_boundary_band_on_the_demo(tmp_path):
    """The release rule marks a superset of the centre rule, larger by about the hand outlines' length."""
    root = Path(demo.write(tmp_path, videos=4, frames_per_video=2, seed=5)["root"])
    release, centre = EgoHandsSource(root, PARTNERS), EgoHandsSource(root, CENTRE)
    refs = release.frames()
    centre.frames()
    grown = []
    for ref in refs:
        a, b = release.load(ref).seg, centre.load(ref).seg
        assert (a >= b).all()
        if b.any():
            grown.append(a.sum() / b.sum())
    assert grown and 1.02 < np.mean(grown) < 1.4
