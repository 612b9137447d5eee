"""``hodata inspect``: counts on clean shards, every problem kind named, and the contact sheet's pixels."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import webdataset as wds
from click.testing import CliRunner

from hodata.cli import main as cli_main
from hodata.contact_sheet import HAND_RGB, OBJECT_RGB, SheetLayout
from hodata.inspect import inspect_paths, run_inspect
from hodata.inspect_samples import Reservoir
from hodata.schema import Sample, dumps_meta, encode_seg, make_key
from hodata.shards import BuildConfig, BuildInterrupted, build
from hodata.sources import FrameRef, Source

W, H = 32, 24
GREY = 128


def tiny_seg() -> np.ndarray:
    """Left half hand (rows 0..11), right quarter object, one ignore pixel: 8 x 24 object, 16 x 12 hand."""
    seg = np.zeros((H, W), np.uint8)
    seg[: H // 2, : W // 2] = 1
    seg[:, 3 * W // 4 :] = 2
    seg[H - 1, 0] = 255
    return seg


HAND_PX, OBJECT_PX, IGNORE_PX = 16 * 12, 8 * 24, 1


def grey_png(w: int = W, h: int = H) -> bytes:
    return cv2.imencode(".png", np.full((h, w, 3), GREY, np.uint8))[1].tobytes()


class TinySource(Source):
    """Same picture in every frame (uniform grey, :func:`tiny_seg` labels); train: 2 sequences, val: 1."""

    name = "tiny"

    def __init__(self, root, n_train=6, n_val=3):
        super().__init__(root)
        self.n_train, self.n_val = n_train, n_val

    def frames(self):
        refs = [FrameRef("train", f"s{i % 2}", f"{i:04d}") for i in range(self.n_train)]
        return refs + [FrameRef("val", "s9", f"{i:04d}") for i in range(self.n_val)]

    def load(self, ref):
        return Sample("tiny", ref.split, ref.sequence, ref.frame, grey_png(), "png", tiny_seg(), W, H,
                      {"hand": True, "object": ref.split == "train"})


def build_tiny(out: Path, **kw) -> dict:
    root = out.parent / "tiny_root"
    root.mkdir(exist_ok=True)
    stop_after = kw.pop("stop_after", None)
    cfg = BuildConfig(out=out, max_samples=kw.pop("max_samples", 4), progress=False,
                      command=["hodata", "build", "--source", "tiny"])
    return build(TinySource(root, **kw), cfg, stop_after=stop_after)


def raw_sample(frame: str, seg: np.ndarray | None = None, image: bytes | None = None, **meta_over) -> dict:
    """A hodata/1 sample as tar members; pass a member as None to leave it out."""
    seg = tiny_seg() if seg is None else seg
    key = make_key("raw", "train", "q", frame)
    meta = {"schema": "hodata/1", "source": "raw", "split": "train", "sequence": "q", "frame": frame,
            "width": W, "height": H, "labels": {"hand": True, "object": False}} | meta_over
    return {"__key__": key, "png": grey_png() if image is None else image, "seg.png": encode_seg(seg),
            "json": dumps_meta(meta)}


def write_tar(path: Path, samples: list[dict]) -> Path:
    with wds.TarWriter(str(path), encoder=False) as w:
        for s in samples:
            w.write({k: v for k, v in s.items() if v is not None})
    return path


def report_of(paths, **kw):
    report, _ = inspect_paths([Path(p) for p in paths], **kw)
    return report


def kinds(report) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for p in report["problems"]:
        out.setdefault(p["kind"], []).append(p)
    return out


# ------------------------------------------------------------------------------------------- clean data


def test_clean_build_counts_balance_labels_provenance(tmp_path, capsys):
    out = tmp_path / "shards"
    build_tiny(out)
    assert run_inspect([out], as_json=True) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["problem_count"] == 0 and report["warning_count"] == 0
    assert report["totals"]["samples"] == 9 and report["totals"]["shards"] == 3  # train 4+2, val 3
    splits = {(r["source"], r["split"]): (r["shards"], r["samples"]) for r in report["splits"]}
    assert splits == {("tiny", "train"): (2, 6), ("tiny", "val"): (1, 3)}
    px = report["class_balance"]["tiny"]["pixels"]
    assert px == {"hand": 9 * HAND_PX, "object": 9 * OBJECT_PX, "ignore": 9 * IGNORE_PX,
                  "background": 9 * (W * H - HAND_PX - OBJECT_PX - IGNORE_PX)}
    assert report["class_balance"]["tiny"]["fractions"]["hand"] == pytest.approx(HAND_PX / (W * H))
    assert report["labels"]["tiny"] == {"samples": 9, "hand": 9, "object": 6, "sides": 0}
    assert report["image_sizes"] == {"tiny": {f"{W}x{H}": 9}}
    (prov,) = report["provenance"]
    assert prov["command"] == "hodata build --source tiny" and prov["status"] == "complete"
    assert prov["root"].endswith("tiny_root") and prov["skipped"] == 0 and prov["finished"]


def test_plain_text_report_and_cli(tmp_path):
    out = tmp_path / "shards"
    build_tiny(out)
    res = CliRunner().invoke(cli_main, ["inspect", str(out)])
    assert res.exit_code == 0, res.output
    for title in ("Samples per source/split", "Class pixel balance", "Label availability", "Image sizes",
                  "Provenance", "no problems found"):
        assert title in res.output
    res = CliRunner().invoke(cli_main, ["inspect", str(tmp_path / "nowhere")])
    assert res.exit_code == 1 and "nowhere: no such file or folder" in res.output
    res = CliRunner().invoke(cli_main, ["inspect", str(out), "--samples", "4"])
    assert res.exit_code == 1 and "--samples needs --out" in res.output
    res = CliRunner().invoke(cli_main, ["inspect", str(out / "*.tar"), "--json"])  # a quoted glob
    assert res.exit_code == 0 and json.loads(res.output)["totals"]["samples"] == 9


# ----------------------------------------------------------------------------------------------- problems


def test_corrupt_byte_is_a_sha256_mismatch(tmp_path):
    out = tmp_path / "shards"
    build_tiny(out)
    shard = out / "tiny-train-000000.tar"
    with tarfile.open(shard) as tf:
        offset = next(m for m in tf if m.name.endswith(".png") and not m.name.endswith("seg.png")).offset_data
    data = bytearray(shard.read_bytes())
    data[offset + 40] ^= 0xFF  # inside the first image's compressed pixels: the tar still reads
    shard.write_bytes(bytes(data))
    report = report_of([out])
    (p,) = kinds(report)["sha256_mismatch"]
    assert p["where"] == str(shard)
    assert run_inspect([out]) == 1


def test_bad_label_value_and_wrong_mask_size_name_the_key(tmp_path):
    bad = tiny_seg()
    bad[5, 5] = 7
    shard = write_tar(tmp_path / "raw-train-000000.tar",
                      [raw_sample("0000"), raw_sample("0001", seg=bad),
                       raw_sample("0002", seg=np.zeros((H // 2, W // 2), np.uint8))])
    report = report_of([shard])
    k = kinds(report)
    (labels,) = k["bad_labels"]
    assert labels["key"] == "raw/train/q/0001" and "[7]" in labels["message"] and labels["where"] == str(shard)
    (size,) = k["size_mismatch"]
    assert size["key"] == "raw/train/q/0002" and f"16x12, image is {W}x{H}" in size["message"]
    assert report["class_balance"]["raw"]["pixels"]["other"] == 1
    assert run_inspect([shard]) == 1


def test_missing_member_bad_json_and_duplicate_key(tmp_path):
    a = write_tar(tmp_path / "raw-train-000000.tar",
                  [raw_sample("0000") | {"seg.png": None}, raw_sample("0001") | {"json": b"{not json"},
                   raw_sample("0002", schema="hodata/0"), raw_sample("0003") | {"png": None}])
    b = write_tar(tmp_path / "raw-train-000001.tar", [raw_sample("0001")])
    k = kinds(report_of([tmp_path]))
    missing = {p["key"]: p["message"] for p in k["missing_member"]}
    assert "missing seg.png" in missing["raw/train/q/0000"] and "missing jpg/png" in missing["raw/train/q/0003"]
    assert k["bad_json"][0]["key"] == "raw/train/q/0001"
    assert k["bad_schema"][0]["key"] == "raw/train/q/0002"
    (dup,) = k["duplicate_key"]
    assert dup["key"] == "raw/train/q/0001" and dup["where"] == str(b) and str(a) in dup["message"]


def test_truncated_tar_is_named(tmp_path):
    out = tmp_path / "shards"
    build_tiny(out)
    shard = out / "tiny-train-000000.tar"
    shard.write_bytes(shard.read_bytes()[:3000])  # cut inside a member
    report = report_of([out])
    k = kinds(report)
    assert k["unreadable_tar"][0]["where"] == str(shard)
    assert {p["where"] for p in k["sha256_mismatch"]} == {str(shard)}
    assert {p["where"] for p in k["sample_count_mismatch"]} == {str(shard)}
    # without a manifest, a tar cut exactly between members is still caught: its end marker is gone
    cut = write_tar(tmp_path / "alone.tar", [raw_sample("0000"), raw_sample("0001")])
    with tarfile.open(cut) as tf:
        boundary = [m for m in tf][3].offset  # start of the second sample's first member
    cut.write_bytes(cut.read_bytes()[:boundary])
    k = kinds(report_of([cut]))
    assert "end-of-archive" in k["unreadable_tar"][0]["message"] and k["unreadable_tar"][0]["where"] == str(cut)


def test_shard_missing_from_folder_and_shard_missing_from_manifest(tmp_path):
    out = tmp_path / "shards"
    build_tiny(out)
    (out / "tiny-val-000000.tar").unlink()
    write_tar(out / "stray-train-000000.tar", [raw_sample("0000")])
    report = report_of([out])
    (p,) = kinds(report)["shard_missing"]
    assert p["where"] == str(out / "tiny-val-000000.tar")
    assert [w["kind"] for w in report["warnings"]] == ["not_in_manifest"]


def test_leftover_tmp_of_a_killed_build_is_a_warning_unless_unaccounted(tmp_path):
    out = tmp_path / "shards"
    with pytest.raises(BuildInterrupted):
        build_tiny(out, stop_after=6)  # one shard finished, the second half-written
    report = report_of([out])
    assert report["problem_count"] == 0
    assert {w["kind"] for w in report["warnings"]} == {"build_incomplete", "partial_shard"}
    assert report["totals"]["samples"] == 4
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "tiny-train-000000.tar.tmp").write_bytes(b"\0" * 512)
    (p,) = kinds(report_of([lone]))["partial_shard"]
    assert p["where"] == str(lone / "tiny-train-000000.tar.tmp")


# ----------------------------------------------------------------------------------------- contact sheet


def test_contact_sheet_size_and_overlay_colours(tmp_path, capsys):
    out = tmp_path / "shards"
    build_tiny(out)
    sheet = tmp_path / "sheet.png"
    assert run_inspect([out], n_samples=4, sheet=sheet, seed=3) == 0
    assert str(sheet) in capsys.readouterr().out
    img = cv2.cvtColor(cv2.imread(str(sheet)), cv2.COLOR_BGR2RGB).astype(int)
    layout = SheetLayout(4)
    assert (img.shape[1], img.shape[0]) == layout.size
    scale = layout.tile_w // W  # 32x24 into 256x192: exact x8, no letterbox
    for i in range(4):
        x0, y0, x1, y1 = layout.tile_box(i)
        tile = img[y0:y1, x0:x1]
        hand = tile[: 12 * scale, : 16 * scale]
        obj = tile[:, 24 * scale :]
        bg = tile[2 * scale : 10 * scale, 17 * scale : 23 * scale]
        expect_hand = (np.array(HAND_RGB) + GREY) / 2
        expect_obj = (np.array(OBJECT_RGB) + GREY) / 2
        assert np.abs(hand - expect_hand).max() <= 2
        assert np.abs(obj - expect_obj).max() <= 2
        assert np.abs(bg - GREY).max() <= 2
        ignore = tile[23 * scale :, : scale]  # the one ignore pixel: grey blend plus dark hatch lines
        assert (ignore.max(axis=2) < 60).any() and not (np.abs(ignore - expect_hand).max(axis=2) <= 2).any()
    assert not list(tmp_path.glob(".sheet.png*"))  # no temp file left behind


def test_sheet_draw_is_reproducible_per_seed(tmp_path):
    out = tmp_path / "shards"
    build_tiny(out, n_train=40, n_val=0, max_samples=10)
    pick = lambda seed: [c.caption for c in inspect_paths([out], n_samples=5, seed=seed)[1]]  # noqa: E731
    assert pick(1) == pick(1) and len(pick(1)) == 5
    assert pick(1) != pick(2)
    r = Reservoir(3, 0)
    for i in range(2):
        r.put(r.slot(), i)
    assert r.items == [0, 1]  # fewer items than k: all of them


# ------------------------------------------------------------------------------------------------ hodata/2

LEFT_ID, RIGHT_ID, OBJ_ID = 1, 2, 3
TWO_HANDS = [{"id": LEFT_ID, "class": "hand", "side": "left", "name": None},
             {"id": RIGHT_ID, "class": "hand", "side": "right", "name": None},
             {"id": OBJ_ID, "class": "object", "side": None, "name": "003_cracker_box"}]


def two_hand_inst() -> np.ndarray:
    """The instance map of :func:`tiny_seg`: its hand split into a left (cols 0..7) and a right (8..15) hand."""
    inst = np.zeros((H, W), np.uint8)
    inst[: H // 2, : W // 4] = LEFT_ID
    inst[: H // 2, W // 4 : W // 2] = RIGHT_ID
    inst[:, 3 * W // 4 :] = OBJ_ID
    return inst


def raw2_sample(frame: str, inst=None, instances=TWO_HANDS, amodal=None, seg=None, **meta_over) -> dict:
    """A hodata/2 sample: raw_sample plus inst.png (two hands and an object by default) and instances."""
    s = raw_sample(frame, seg=seg, schema="hodata/2", instances=instances,
                   labels={"hand": True, "object": True, "sides": True}, **meta_over)
    s["inst.png"] = encode_seg(two_hand_inst() if inst is None else inst) if not isinstance(inst, bytes) else inst
    if amodal is not None:
        s["amodal.png"] = encode_seg(amodal) if not isinstance(amodal, bytes) else amodal
    return s


def without_instances(frame: str) -> dict:
    s = raw2_sample(frame)
    meta = json.loads(s["json"])
    del meta["instances"]
    return s | {"json": dumps_meta(meta)}


def test_hodata2_counts_sides_instances_and_amodal(tmp_path):
    right_only = two_hand_inst()
    right_only[right_only == LEFT_ID] = RIGHT_ID
    amodal = np.zeros((H, W), np.uint8)
    amodal[: H // 2 + 2, : W // 2] |= 1
    amodal[:, W // 2 + 4 :] |= 2
    shard = write_tar(tmp_path / "raw-train-000000.tar", [
        raw2_sample("0000"),
        raw2_sample("0001", inst=right_only, instances=TWO_HANDS[1:]),
        raw2_sample("0002", amodal=amodal),
        raw_sample("0003"),  # hodata/1: no inst.png, no instances
        raw2_sample("0004", inst=np.where(two_hand_inst() == OBJ_ID, 0, two_hand_inst()).astype(np.uint8),
                    instances=[{"id": 1, "class": "hand", "side": None, "name": None},
                               {"id": 2, "class": "hand", "side": None, "name": None}]),
    ])
    report = report_of([shard])
    assert report["problem_count"] == 0, report["problems"]
    assert report["instances"]["raw"] == {
        "samples": 5, "with_inst_png": 4, "with_amodal_png": 1,
        "instances": {"hand": 7, "object": 3},
        "hand_sides": {"left": 2, "right": 3, "unknown": 2},
        "frames_with_hand": {"left": 2, "right": 3, "both": 2},
    }
    assert report["labels"]["raw"]["sides"] == 4
    res = CliRunner().invoke(cli_main, ["inspect", str(shard)])
    assert "Hand sides" in res.output and "Instances" in res.output


def test_hodata2_problems_are_named(tmp_path):
    wrong_id = two_hand_inst()
    wrong_id[0, 0] = 9  # listed nowhere
    disagree = two_hand_inst()
    disagree[0, W - 1] = LEFT_ID  # a hand instance where seg.png says object
    rgb_inst = cv2.imencode(".png", np.zeros((H, W, 3), np.uint8))[1].tobytes()
    bad_amodal = np.zeros((H, W), np.uint8)
    bad_amodal[3, 3] = 4
    shard = write_tar(tmp_path / "raw-train-000000.tar", [
        raw2_sample("0000", inst=rgb_inst),
        raw2_sample("0001", inst=np.zeros((H // 2, W // 2), np.uint8)),
        raw2_sample("0002", inst=wrong_id),
        raw2_sample("0003", inst=disagree),
        raw2_sample("0004", instances="two hands"),
        raw2_sample("0005", instances=[TWO_HANDS[0] | {"side": "up"}] + TWO_HANDS[1:]),
        raw2_sample("0006", instances=TWO_HANDS + [TWO_HANDS[0]]),
        raw2_sample("0007", amodal=bad_amodal),
        raw2_sample("0008", amodal=np.zeros((H, W // 2), np.uint8)),
        without_instances("0009"),  # json instances missing, inst.png with ids
    ])
    k = {kind: {p["key"]: p["message"] for p in ps} for kind, ps in kinds(report_of([shard])).items()}
    assert "inst.png must be 8-bit single channel" in k["bad_inst"]["raw/train/q/0000"]
    assert f"inst.png is {W // 2}x{H // 2}, image is {W}x{H}" in k["size_mismatch"]["raw/train/q/0001"]
    assert "ids [9]" in k["inst_mismatch"]["raw/train/q/0002"]
    assert "disagree" in k["inst_mismatch"]["raw/train/q/0003"]
    assert "not a list" in k["bad_instances"]["raw/train/q/0004"]
    assert "side must be left, right or null" in k["bad_instances"]["raw/train/q/0005"]
    assert "repeat" in k["bad_instances"]["raw/train/q/0006"]
    assert "outside bits 0-1" in k["bad_amodal"]["raw/train/q/0007"] and "[4]" in k["bad_amodal"]["raw/train/q/0007"]
    assert f"amodal.png is {W // 2}x{H}" in k["size_mismatch"]["raw/train/q/0008"]
    assert "that instances does not list" in k["inst_mismatch"]["raw/train/q/0009"]
    # a malformed instances list is named once, not again as an inst.png disagreement
    assert not {"raw/train/q/0004", "raw/train/q/0005", "raw/train/q/0006"} & set(k["inst_mismatch"])
    assert run_inspect([shard]) == 1


def test_contact_sheet_colours_sides_and_outlines_amodal(tmp_path):
    from hodata.contact_sheet import (AMODAL_HAND_RGB, AMODAL_OBJECT_RGB, LEFT_HAND_RGB, RIGHT_HAND_RGB,
                                      legend_entries)

    amodal = np.zeros((H, W), np.uint8)
    amodal[: H // 2 + 4, : W // 2] |= 1  # the hand's full silhouette reaches 4 rows below the visible hand
    amodal[:, W // 2 + 4 :] |= 2  # the object's starts 4 columns left of its visible part
    shard = write_tar(tmp_path / "raw-train-000000.tar",
                      [raw2_sample("0000"), raw_sample("0001"), raw2_sample("0002", amodal=amodal)])
    sheet = tmp_path / "sheet.png"
    assert run_inspect([shard], n_samples=3, sheet=sheet) == 0
    img = cv2.cvtColor(cv2.imread(str(sheet)), cv2.COLOR_BGR2RGB).astype(int)
    layout = SheetLayout(3)
    s = layout.tile_w // W
    blend = lambda rgb: (np.array(rgb) + GREY) / 2  # noqa: E731
    tiles = [img[y0:y1, x0:x1] for x0, y0, x1, y1 in (layout.tile_box(i) for i in range(3))]
    two_hands, plain, with_amodal = tiles
    for t in (two_hands, with_amodal):
        assert np.abs(t[2 * s : 10 * s, 1 * s : 7 * s] - blend(LEFT_HAND_RGB)).max() <= 2
        assert np.abs(t[2 * s : 10 * s, 9 * s : 15 * s] - blend(RIGHT_HAND_RGB)).max() <= 2
        assert np.abs(t[2 * s : 22 * s, 25 * s : 31 * s] - blend(OBJECT_RGB)).max() <= 2
    assert np.abs(plain[: 12 * s, : 16 * s] - blend(HAND_RGB)).max() <= 2  # hodata/1: one hand colour
    # amodal outlines: the hand's bottom edge (row 15, below the visible hand), the object's left edge (col 20)
    assert (with_amodal[16 * s - 1, 2 * s : 14 * s] == AMODAL_HAND_RGB).all()
    assert (with_amodal[2 * s : 22 * s, 20 * s] == AMODAL_OBJECT_RGB).all()
    assert not (two_hands == AMODAL_OBJECT_RGB).all(axis=2).any()  # no outline without amodal.png
    _, candidates = inspect_paths([shard], n_samples=3)
    assert [n for n, _ in legend_entries(candidates)] == ["hand", "left hand", "right hand", "object", "ignore",
                                                          "hand amodal", "object amodal"]
    assert [n for n, _ in legend_entries(candidates[1:2])] == ["hand", "object", "ignore"]


def test_shards_without_manifest_warn(tmp_path):
    write_tar(tmp_path / "raw-train-000000.tar", [raw_sample("0000")])
    report = report_of([tmp_path])
    assert report["problem_count"] == 0
    (w,) = report["warnings"]
    assert w["kind"] == "no_manifest" and w["where"] == str(tmp_path) and "not checked" in w["message"]
    res = CliRunner().invoke(cli_main, ["inspect", str(tmp_path)])
    assert res.exit_code == 0 and "no_manifest" in res.output and "no problems found" not in res.output
    assert "0 problem(s), 1 warning(s)" in res.output


def test_provenance_shows_licence_checksums_and_mask_agreement(tmp_path):
    out = tmp_path / "shards"
    build_tiny(out)
    manifest = out / "manifest.json"
    data = json.loads(manifest.read_text())
    rec = data["builds"]["tiny"]
    rec["source"] |= {"licence": "CC BY-NC 4.0", "annotations": {"labels.json": {"sha256": "ab" * 32, "bytes": 10}},
                      "mano_file": "/m/MANO_RIGHT.pkl", "mano_sha256": "cd" * 32}
    worst = [{"frame": "tiny/train/s0/0001", "value": 0.41}, {"frame": "tiny/val/s9/0002", "value": 0.52}]
    rec["totals"]["quality"] = {"hand_iou": {"mean": 0.9, "p01": 0.5, "min": 0.41, "frames": 9, "worst": worst}}
    manifest.write_text(json.dumps(data))
    report = report_of([out])
    (prov,) = report["provenance"]
    assert prov["licence"] == "CC BY-NC 4.0"
    assert {(c["file"], c["sha256"]) for c in prov["checksums"]} == {("annotations/labels.json", "ab" * 32),
                                                                      ("/m/MANO_RIGHT.pkl", "cd" * 32)}
    assert prov["mask_agreement"]["hand_iou"]["worst"] == worst
    assert [s["verified"] for s in prov["shards"]] == [True, True, True]
    res = CliRunner().invoke(cli_main, ["inspect", str(out)])
    assert "CC BY-NC 4.0" in res.output
    assert "mean 0.900, p01 0.500, min 0.410 over 9 frames; worst tiny/train/s0/0001" in res.output


def test_outputs_never_overwrite_inputs(tmp_path):
    out = tmp_path / "shards"
    build_tiny(out)
    for flag, target in (("--html", out / "manifest.json"), ("--out", out / "tiny-val-000000.tar")):
        before = target.read_bytes()
        res = CliRunner().invoke(cli_main, ["inspect", str(out), flag, str(target)])
        assert res.exit_code == 1 and "is an input of this inspection" in res.output
        assert target.read_bytes() == before


def test_samples_are_drawn_from_every_source_and_split(tmp_path):
    from hodata.inspect_samples import GroupedReservoir

    r = GroupedReservoir(6, seed=0)
    for source, split, n in (("big", "train", 100), ("big", "val", 10), ("small", "train", 2)):
        for i in range(n):
            slot = r.slot((source, split))
            if slot is not None:
                r.put((source, split), slot, (source, split, i))
    picked = r.pick()
    assert len(picked) == 6
    assert [p[:2] for p in picked[:4]] == [("big", "train"), ("small", "train"), ("big", "val"), ("small", "train")]
    assert sum(p[0] == "small" for p in picked) == 2  # all it has
