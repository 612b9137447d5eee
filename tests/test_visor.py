"""VISOR source: hands, worn gloves and contacted objects at pixel level, the release's quirks, frames from
zips and unzipped folders, the 1920x1080 check, the manifest record, and the demo end to end."""

from __future__ import annotations

import json
import tarfile
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hodata.cli import main as hodata_cli
from hodata.demo import visor as demo
from hodata.demo.visor import entry, mask, write_video
from hodata.errors import DataError
from hodata.schema import check_inst, decode_inst, decode_seg
from hodata.shards import BuildConfig, TooManySkipped, build
from hodata.sources import open_source
from hodata.sources.visor import VISORSource

H, W = 1080, 1920


@lru_cache(maxsize=None)
def grey_jpeg(w: int = W, h: int = H) -> bytes:
    return demo.encode_jpeg(np.full((h, w, 3), 128, np.uint8))


def box(c0: int, r0: int, c1: int, r1: int) -> list[list[float]]:
    """A rectangle polygon whose pixel-centre fill is exactly columns c0..c1, rows r0..r1."""
    return [[c0 - 0.5, r0 - 0.5], [c1 + 0.5, r0 - 0.5], [c1 + 0.5, r1 + 0.5], [c0 - 0.5, r1 + 0.5]]


def region(c0, r0, c1, r1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[r0:r1 + 1, c0:c1 + 1] = True
    return m


def hand(side: str, id_: str, segments, contact) -> dict:
    return mask(id_, f"{side} hand", 300 if side == "left" else 301, segments, in_contact_object=contact)


def write(root: Path, videos: dict[tuple[str, str], list[dict]], zipped: bool = True) -> Path:
    """Videos {(split, vid): [entry, ...]} with grey 1920x1080 frames; returns the deposit root."""
    for (split, vid), entries in videos.items():
        write_video(root, split, vid, entries, {e["image"]["name"]: grey_jpeg() for e in entries}, zipped=zipped)
    return root


def load_all(src: VISORSource) -> dict[str, object]:
    return {r.frame: src.load(r) for r in src.frames()}


# --------------------------------------------------------------------------------------- pixel level


def test_glove_worn_on_a_hand_and_an_object_of_several_polygons(tmp_path):
    anns = [
        hand("right", "h1", [box(100, 100, 199, 149)], "g1"),  # the hand's contact is the glove it wears ...
        mask("g1", "rubber glove", 60, [box(100, 50, 199, 99)], on_which_hand=["right hand"],
             in_contact_object="o1"),  # ... whose own contact holds
        mask("o1", "pan", 7, [box(300, 50, 349, 99), [], [[1, 1], [5, 5]], box(400, 50, 449, 99)]),
        mask("o2", "tap", 0, [box(600, 600, 650, 650)]),  # active, but nobody touches it: background
        mask("gl", "glove", 60, [box(800, 800, 820, 820)]),  # lacking both keys: not worn, background
    ]
    root = write(tmp_path, {("train", "P01_01"): [entry("P01_01", 7, 1, anns)]})
    src = VISORSource(root)
    (s,) = load_all(src).values()
    assert (s.width, s.height) == (W, H) and s.labels == {"hand": True, "object": True, "sides": True}
    by_name = {i["name"]: i for i in s.instances}
    assert [i["name"] for i in s.instances] == ["right hand", "rubber glove", "pan"]  # hands, gloves, objects
    assert by_name["right hand"]["side"] == "right" and by_name["right hand"]["glove"] is False
    assert by_name["rubber glove"] | {} == {"id": 2, "class": "hand", "side": "right", "name": "rubber glove",
                                            "glove": True, "on_hands": ["right"], "visor_id": "g1", "class_id": 60,
                                            "exhaustive": "y"}
    assert by_name["pan"]["class"] == "object" and by_name["pan"]["held_by"] == "right"
    expected_inst = np.zeros((H, W), np.uint8)
    expected_inst[region(100, 100, 199, 149)] = 1
    expected_inst[region(100, 50, 199, 99)] = 2
    expected_inst[region(300, 50, 349, 99) | region(400, 50, 449, 99)] = 3  # both polygons; the rest skipped
    np.testing.assert_array_equal(s.inst, expected_inst)
    np.testing.assert_array_equal(s.seg, np.array([0, 1, 1, 2], np.uint8)[expected_inst])
    check_inst(s.inst, s.instances, s.seg)
    assert s.objects == [{"name": "pan", "held_by": "right", "visor_id": "o1"}]
    q = src.describe()["quirks"]
    assert q["empty_polygon"]["count"] == 1 and q["short_polygon"]["count"] == 1
    assert q["glove_lacking_both_keys"]["count"] == 1 and q["contact_via_worn_glove"]["count"] == 1


def test_exact_pixels_of_a_small_polygon(tmp_path):
    """Pixel-centre rule: (c, r) is inside when the point (c, r) is; the triangle x - y >= 5.8 (0-based)."""
    tri = [[1006.3, 500.5], [1009.5, 500.5], [1009.5, 503.7]]
    root = write(tmp_path, {("val", "P03_04"): [entry("P03_04", 1, 1, [hand("left", "h", [tri], "hand-not-in-contact")])]})
    (s,) = load_all(VISORSource(root)).values()
    assert np.argwhere(s.seg).tolist() == [[501, 1007], [501, 1008], [501, 1009], [502, 1008], [502, 1009], [503, 1009]]


def test_contact_states_and_partial_object_labels(tmp_path):
    obj = mask("o", "cup", 13, [box(500, 500, 519, 519)])
    frames = [
        entry("P01_01", 1, 1, [hand("left", "h", [box(10, 10, 20, 20)], "o"), obj]),                 # sure, object
        entry("P01_01", 2, 1, [hand("left", "h", [box(10, 10, 20, 20)], "none-of-the-above"), obj]),  # partial
        entry("P01_01", 3, 1, [hand("left", "h", [box(10, 10, 20, 20)], "inconclusive"), obj]),       # partial
        entry("P01_01", 4, 1, [hand("left", "h", [box(10, 10, 20, 20)], "0" * 32), obj]),             # dangling
        entry("P01_01", 5, 1, [hand("left", "h", [box(10, 10, 20, 20)], "hand-not-in-contact"), obj]),  # sure, none
        entry("P01_01", 6, 1, [hand("left", "h", [box(10, 10, 20, 20)], "r"),                        # hand on hand
                               hand("right", "r", [box(30, 10, 40, 20)], "o"), obj]),
    ]
    root = write(tmp_path, {("train", "P01_01"): frames[::-1]})  # entries in any order: sorted by frame number
    src = VISORSource(root)
    refs = src.frames()
    assert [r.frame for r in refs] == [f"frame_{n:010d}" for n in range(1, 7)]
    samples = [src.load(r) for r in refs]
    assert [s.labels["object"] for s in samples] == [True, False, False, False, True, True]
    obj_px = region(500, 500, 519, 519)
    assert (samples[0].seg[obj_px] == 2).all() and (samples[5].seg[obj_px] == 2).all()
    assert samples[5].objects == [{"name": "cup", "held_by": "right", "visor_id": "o"}]
    for s in samples[1:5]:
        assert (s.seg[obj_px] == 0).all() and s.objects == []  # an uncontacted mask is background
    assert samples[3].extra["object_unsure"] == [f"left hand: id {'0' * 32} absent from the frame"]
    d = src.describe()
    assert d["splits"]["train"]["partial_object_frames"] == 3
    q = d["quirks"]
    assert (q["contact_none-of-the-above"]["count"], q["contact_inconclusive"]["count"],
            q["contact_dangling"]["count"], q["contact_with_a_hand"]["count"]) == (1, 1, 1, 1)


def test_rigth_hand_two_entry_gloves_and_gloves_standing_in(tmp_path):
    frames = [
        # an oven glove over both hands, spelt as in the release: left + right, a hand of unknown side
        entry("P04_121", 75601, 1, [
            hand("left", "l", [box(10, 10, 20, 20)], "g"),
            mask("g", "oven glove", 60, [box(10, 30, 60, 40)], on_which_hand=["left hand", "rigth hand"],
                 in_contact_object="o"),
            hand("right", "r", [box(50, 10, 60, 20)], "g"),
            mask("o", "tray", 9, [box(10, 50, 60, 60)])]),
        # a worn glove whose hand is not annotated stands in for it; its contact counts
        entry("P04_121", 75700, 1, [
            mask("g2", "left glove", 303, [box(100, 100, 120, 120)], on_which_hand=["left hand"], in_contact_object="o"),
            mask("o", "tray", 9, [box(130, 100, 140, 120)])]),
        # on_which_hand a string: may or may not be worn -> unknown (255); a hand touching it is unsure
        entry("P04_121", 75800, 1, [
            hand("right", "r", [box(10, 10, 20, 20)], "g3"),
            mask("g3", "glove", 60, [box(30, 10, 40, 20)], on_which_hand="inconclusive", in_contact_object=None)]),
    ]
    root = write(tmp_path, {("train", "P04_121"): frames})
    src = VISORSource(root)
    both, stand_in, unknown = load_all(src).values()
    glove = next(i for i in both.instances if i["visor_id"] == "g")
    assert glove["side"] is None and glove["on_hands"] == ["left", "right"] and glove["glove"]
    assert (both.seg[region(10, 30, 60, 40)] == 1).all() and (both.seg[region(10, 50, 60, 60)] == 2).all()
    assert both.objects[0]["held_by"] == "both"  # both hands reach the tray through the glove
    assert stand_in.instances[0]["side"] == "left" and stand_in.objects[0]["held_by"] == "left"
    assert (stand_in.seg[region(130, 100, 140, 120)] == 2).all()
    assert (unknown.seg[region(30, 10, 40, 20)] == 255).all() and (unknown.inst[region(30, 10, 40, 20)] == 255).all()
    assert unknown.labels["object"] is False
    q = src.describe()["quirks"]
    assert q["on_which_hand_spelling"]["examples"] == [
        "P04_121_frame_0000075601.jpg mask 2 ('oven glove'): ['left hand', 'rigth hand']"]
    assert q["glove_on_both_hands"]["count"] == 1 and q["glove_stands_in_for_hand"]["count"] == 1
    assert q["on_which_hand_string"]["count"] == 1


def test_hands_are_drawn_over_objects_and_polygons_are_united(tmp_path):
    anns = [
        mask("o", "board", 5, [box(0, 0, 99, 99)]),
        hand("right", "h", [box(50, 50, 149, 149), box(60, 60, 70, 70),  # nested in the first
                            box(140, 140, 199, 199)], "o"),  # overlapping the first
    ]
    root = write(tmp_path, {("val", "P03_04"): [entry("P03_04", 9, 1, anns)]})
    src = VISORSource(root)
    (s,) = load_all(src).values()
    hand_px = region(50, 50, 149, 149) | region(140, 140, 199, 199)  # union: the nested box is no hole
    assert (s.inst[hand_px] == 1).all() and (s.inst[region(0, 0, 99, 99) & ~hand_px] == 2).all()
    assert int((s.seg == 1).sum()) == int(hand_px.sum())
    q = src.describe()["quirks"]
    assert q["entity_polygons_overlap"]["count"] == 1 and q["entity_polygons_nest"]["count"] == 1
    assert q["entity_polygons_overlap"]["examples"] == ["P03_04_frame_0000000009.jpg 'right hand'"]


def test_corrections_replace_a_hands_contact(tmp_path):
    name = "P02_03_frame_0000003199.jpg"  # a frame the shipped VISOR-HOS list corrects
    anns = [hand("right", "h", [box(10, 10, 20, 20)], "none-of-the-above"),
            mask("92449332813fe5fae6dd91d273fb41dd", "knife", 4, [box(30, 10, 40, 20)])]
    root = write(tmp_path, {("train", "P02_03"): [entry("P02_03", 3199, 1, anns)]})
    fixed = VISORSource(root)
    (s,) = load_all(fixed).values()
    assert s.labels["object"] and s.objects[0]["name"] == "knife"
    assert fixed.describe()["corrections"]["applied"] == 1 and fixed.describe()["corrections"]["entries"] == 11
    (raw,) = load_all(VISORSource(root, {"visor_corrections": "none"})).values()
    assert not raw.labels["object"] and raw.objects == []
    custom = tmp_path / "fix.json"
    custom.write_text(json.dumps({name: {"right hand": "hand-not-in-contact"}}))
    (other,) = load_all(VISORSource(root, {"visor_corrections": str(custom)})).values()
    assert other.labels["object"] and other.objects == []
    custom.write_text("[1, 2]")
    with pytest.raises(DataError, match="corrections must be"):
        VISORSource(root, {"visor_corrections": str(custom)})
    # the corrections are part of the build's fingerprint: a rerun with others is refused
    out = tmp_path / "out"
    build(VISORSource(root), BuildConfig(out=out, progress=False, command=["t"]))
    with pytest.raises(DataError, match="other options"):
        build(VISORSource(root, {"visor_corrections": "none"}), BuildConfig(out=out, progress=False, command=["t"]))
    r = CliRunner().invoke(hodata_cli, ["build", "--source", "visor", "--help"])
    assert "--visor-corrections" in r.output and "--split-file" not in r.output


# ------------------------------------------------------------------------------------ frames on disk


def test_frames_from_a_zip_and_from_an_unzipped_folder(tmp_path):
    a = [entry("P01_01", 5, 1, [hand("left", "h", [box(10, 10, 20, 20)], "hand-not-in-contact")])]
    b = [entry("P01_102", 8, 1, [hand("right", "h", [box(10, 10, 20, 20)], "hand-not-in-contact")])]
    write(tmp_path, {("train", "P01_01"): a})
    write(tmp_path, {("train", "P01_102"): b}, zipped=False)
    src = VISORSource(tmp_path / demo.SPARSE)  # GroundTruth-SparseAnnotations itself works as the root too
    samples = {r.sequence: src.load(r) for r in src.frames()}
    assert samples["P01_01"].provenance["image"] == "rgb_frames/train/P01/P01_01.zip:P01_01_frame_0000000005.jpg"
    assert samples["P01_102"].provenance["image"] == "rgb_frames/train/P01/P01_102/P01_102_frame_0000000008.jpg"
    assert samples["P01_01"].image == samples["P01_102"].image == grey_jpeg()
    assert samples["P01_01"].provenance["annotations"] == "annotations/train/P01_01.json"
    split = src.describe()["splits"]["train"]
    assert (split["frames_from_zip"], split["frames_from_folder"], split["videos"]) == (1, 1, 2)


def test_a_wrong_frame_size_names_the_file_and_a_systematic_one_stops_the_build(tmp_path):
    es = [entry("P01_01", n, 1, [hand("left", "h", [box(10, 10, 20, 20)], "hand-not-in-contact")]) for n in (1, 2, 3)]
    write_video(tmp_path, "train", "P01_01", es, {e["image"]["name"]: grey_jpeg(1280, 720) for e in es})
    with pytest.raises(TooManySkipped) as e:
        build(VISORSource(tmp_path), BuildConfig(out=tmp_path / "out", progress=False, command=["t"]))
    msg = str(e.value)
    assert "P01_01.zip:P01_01_frame_0000000001.jpg" in msg and "image is 1280x720" in msg and "1920x1080" in msg
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())["builds"]["visor"]
    assert manifest["status"] == "failed" and len(manifest["skipped"]) == 3


def test_bad_entries_zips_and_layout(tmp_path):
    good = entry("P01_01", 1, 1, [hand("left", "h", [box(10, 10, 20, 20)], "hand-not-in-contact")])
    bad = entry("P01_01", 2, 1, [mask("x", "cup", 13, [[[1, 2], ["a", 3], [4, 5]]])])
    write_video(tmp_path, "train", "P01_01", [good, bad, {"image": {}}], {good["image"]["name"]: grey_jpeg()})
    record = build(VISORSource(tmp_path), BuildConfig(out=tmp_path / "out", progress=False, command=["t"]))
    assert record["totals"]["samples"] == 1
    reasons = {s["frame"]: s for s in record["skipped"]}
    assert "not a list of [x, y] numbers" in reasons["frame_0000000002"]["reason"]
    assert reasons["frame_0000000002"]["file"].endswith("annotations/train/P01_01.json")
    assert "malformed entry" in reasons["entry_000003"]["reason"]

    zpath = tmp_path / demo.SPARSE / "rgb_frames/train/P01/P01_01.zip"
    zpath.write_bytes(b"not a zip")
    src = VISORSource(tmp_path)
    ref = next(r for r in src.frames() if r.frame == "frame_0000000001")
    with pytest.raises(DataError, match="frames zip does not open") as e:
        src.load(ref)
    assert str(zpath) in str(e.value)
    zpath.unlink()
    with pytest.raises(DataError, match="frames of P01_01 are missing") as e:
        VISORSource(tmp_path).frames()
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="not a VISOR root"):
        open_source("visor", tmp_path / demo.SPARSE / "rgb_frames")


def test_test_split_is_counted_not_built_and_the_manifest_records_what_was_read(tmp_path):
    anns = [hand("left", "h", [box(10, 10, 20, 20)], "hand-not-in-contact")]
    write(tmp_path, {("train", "P01_01"): [entry("P01_01", 1, 1, anns)], ("val", "P03_04"): [entry("P03_04", 1, 1, anns)]})
    write_video(tmp_path, "test", "P04_101", None, {demo.frame_name("P04_101", 1): grey_jpeg()})
    out = tmp_path / "out"
    record = build(VISORSource(tmp_path), BuildConfig(out=out, progress=False, command=["t"]))
    assert set(record["splits"]) == {"train", "val"}
    src = json.loads((out / "manifest.json").read_text())["builds"]["visor"]["source"]
    assert src["licence"] == "CC BY-NC 4.0"
    assert src["splits"]["test"] == {"videos": 1, "built": False, "labels": "none shipped: the test split releases "
                                                                            "images only"}
    assert set(src["annotation_files"]) == {f"{demo.SPARSE}/annotations/train/P01_01.json",
                                            f"{demo.SPARSE}/annotations/val/P03_04.json"}
    assert all(len(d["sha256"]) == 64 for d in src["annotation_files"].values())
    assert src["splits"]["train"]["frames"] == 1 and src["splits"]["train"]["masks"] == 1
    assert src["release"]["train"] == {"videos": 115, "frames": 32857, "masks": 174426}


# -------------------------------------------------------------------------------------- demo end to end


def test_demo_build_and_read_back(tmp_path):
    import webdataset as wds

    d, s = tmp_path / "D", tmp_path / "S"
    r = CliRunner().invoke(hodata_cli, ["demo", "--layout", "visor", "--out", str(d)])
    assert r.exit_code == 0, r.output
    zips = sorted((d / "VISOR" / demo.SPARSE / "rgb_frames").glob("*/*/*.zip"))
    assert len(zips) == 4 and all(zipfile.is_zipfile(z) for z in zips)
    assert sum(z.stat().st_size for z in zips) < 1_500_000  # 11 frames of 1920x1080, flat: small
    r = CliRunner().invoke(hodata_cli, ["build", "--source", "visor", "--root", str(d / "VISOR"), "--out", str(s),
                                        "--quiet", "--workers", "2"])
    assert r.exit_code == 0, r.output
    manifest = json.loads((s / "manifest.json").read_text())["builds"]["visor"]
    assert manifest["totals"]["samples"] == 9 and manifest["skipped"] == []
    quirks = manifest["source"]["quirks"]
    for q in ("contact_dangling", "contact_none-of-the-above", "contact_via_worn_glove", "empty_polygon",
              "glove_lacking_both_keys", "on_which_hand_spelling", "entity_with_several_polygons"):
        assert quirks[q]["count"] >= 1, q
    seen = {"glove": 0, "object": 0, "partial": 0}
    for sample in wds.WebDataset([str(t) for t in sorted(s.glob("visor-*.tar"))], shardshuffle=False):
        meta = json.loads(sample["json"])
        seg, inst = decode_seg(sample["seg.png"]), decode_inst(sample["inst.png"])
        assert seg.shape == (H, W) and (meta["width"], meta["height"]) == (W, H)
        check_inst(inst, meta["instances"], seg)
        for i in meta["instances"]:
            assert (inst == i["id"]).any()
            assert i["class"] == "object" or i["side"] in ("left", "right") or i.get("on_hands") == ["left", "right"]
        seen["glove"] += any(i.get("glove") for i in meta["instances"])
        seen["object"] += bool(meta["objects"])
        seen["partial"] += not meta["labels"]["object"]
        assert meta["labels"]["object"] == ("object_unsure" not in meta["extra"])
        where, member = meta["provenance"]["image"].split(":")
        with zipfile.ZipFile(d / "VISOR" / where) as zf:
            assert sample["jpg"] == zf.read(member)  # the shipped bytes, passed through
    assert seen["glove"] >= 2 and seen["object"] >= 4 and seen["partial"] >= 2
    with tarfile.open(sorted(s.glob("visor-*.tar"))[0]) as tf:
        assert {n.split(".", 1)[1] for n in tf.getnames()} == {"jpg", "seg.png", "inst.png", "json"}
