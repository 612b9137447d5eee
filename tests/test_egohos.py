"""EgoHOS source: layout, id mapping, bad frames, errors, shards end to end (demo data, tiny images)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hodata import manifests
from hodata.cli import main as hodata_cli
from hodata.demo import egohos as demo
from hodata.errors import DataError
from hodata.schema import decode_seg
from hodata.shards import BuildConfig, build
from hodata.sources import open_source
from hodata.sources.egohos import EgoHOSSource, sequence_of

ALL_IDS = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]], np.uint8).repeat(4, 0).repeat(4, 1)  # 12x12


def write_frame(root: Path, split: str, name: str, ids: np.ndarray, image: bytes | None = None) -> None:
    """One hand-made EgoHOS frame: a grey JPEG of the label's size and the label as a grey PNG."""
    for d in ("image", "label", "contact"):
        (root / split / d).mkdir(parents=True, exist_ok=True)
    if image is None:
        ok, buf = cv2.imencode(".jpg", np.full(ids.shape[:2] + (3,), 128, np.uint8))
        image = buf.tobytes()
    (root / split / "image" / f"{name}.jpg").write_bytes(image)
    cv2.imwrite(str(root / split / "label" / f"{name}.png"), ids)


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("egohos") / "egohos"
    demo.write(root, frames=16, seed=3)
    return root


def test_demo_layout_and_labels(demo_root, tmp_path):
    counts = {s: len(list((demo_root / s / "image").glob("*.jpg"))) for s in demo.SPLITS}
    assert counts == demo.split_counts(16)
    assert all(c >= 2 for c in counts.values()) and sum(counts.values()) == 16
    seen = set()
    for label in demo_root.glob("*/label/*.png"):
        ids = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
        assert ids.dtype == np.uint8 and ids.shape == (120, 160)
        assert ids.max() <= 8
        seen |= set(np.unique(ids).tolist())
        contact = cv2.imread(str(label.parent.parent / "contact" / label.name), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(contact).tolist()) <= {0, 1}
        assert not (contact.astype(bool) & ~np.isin(ids, [1, 2])).any()  # contact lies on hands
        assert (label.parent.parent / "image" / (label.stem + ".jpg")).is_file()
    assert {0, 1, 2} <= seen and seen & {3, 4, 5}
    # deterministic given the seed
    again = tmp_path / "again"
    demo.write(again, frames=16, seed=3)
    for label in demo_root.glob("*/label/*.png"):
        assert label.read_bytes() == (again / label.relative_to(demo_root)).read_bytes()


@pytest.mark.parametrize("mode,second", [("ignore", 255), ("object", 2), ("background", 0)])
def test_id_mapping_all_second_order_modes(tmp_path, mode, second):
    write_frame(tmp_path, "train", "clipA_0001", ALL_IDS)
    src = EgoHOSSource(tmp_path, {"egohos_second_order": mode})
    (ref,) = src.frames()
    s = src.load(ref)
    expected = np.array([[0, 1, 1], [2, 2, 2], [second] * 3], np.uint8).repeat(4, 0).repeat(4, 1)
    np.testing.assert_array_equal(s.seg, expected)
    assert s.labels == {"hand": True, "object": True, "sides": True}
    assert s.hands == [{"side": "left"}, {"side": "right"}]
    # instance ids are the EgoHOS ids; second-order ids follow the mode (255 ignored, kept, or 0)
    inst_second = {"ignore": 255, "object": None, "background": 0}[mode]
    expected_inst = ALL_IDS.copy()
    if inst_second is not None:
        expected_inst[ALL_IDS >= 6] = inst_second
    np.testing.assert_array_equal(s.inst, expected_inst)
    by_id = {i["id"]: i for i in s.instances}
    assert by_id[1]["class"] == "hand" and by_id[1]["side"] == "left"
    assert by_id[2]["class"] == "hand" and by_id[2]["side"] == "right"
    assert [by_id[k]["held_by"] for k in (3, 4, 5)] == ["left", "right", "both"]
    assert all(by_id[k]["class"] == "object" and by_id[k]["side"] is None for k in (3, 4, 5))
    assert (6 in by_id) == (mode == "object")
    assert s.provenance == {"image": "train/image/clipA_0001.jpg", "label": "train/label/clipA_0001.png"}
    assert src.build_options() == {"egohos_second_order": mode}


def test_sides_follow_the_label(tmp_path):
    ids = np.zeros((8, 8), np.uint8)
    ids[2:4, 2:4] = 2
    write_frame(tmp_path, "val", "x", ids)
    src = EgoHOSSource(tmp_path)
    s = src.load(src.frames()[0])
    assert s.hands == [{"side": "right"}]
    assert s.seg[2, 2] == 1 and s.seg[0, 0] == 0


def test_palette_label_reads_indices(tmp_path):
    write_frame(tmp_path, "train", "p_1", ALL_IDS)
    pal = Image.fromarray(ALL_IDS, mode="L").convert("P")  # identity mapping L -> P indices
    pal.putpalette([(i * 37) % 256 for i in range(768)])
    pal.save(tmp_path / "train" / "label" / "p_1.png")
    assert Image.open(tmp_path / "train" / "label" / "p_1.png").mode == "P"
    src = EgoHOSSource(tmp_path, {"egohos_second_order": "object"})
    s = src.load(src.frames()[0])
    assert s.seg[0, 4] == 1 and s.seg[4, 0] == 2 and s.seg[8, 8] == 2 and s.seg[0, 0] == 0


def test_sequence_rule():
    assert sequence_of("ego4d_abc_def_000123", "train") == "ego4d_abc_def"
    assert sequence_of("demo00v001_000045", "val") == "demo00v001"
    assert sequence_of("frame", "test_indomain") == "test_indomain"
    assert sequence_of("123", "val") == "val"


def test_frames_sorted_and_only_present_splits(tmp_path):
    for name in ("b_2", "a_10", "a_9"):
        write_frame(tmp_path, "test_outdomain", name, np.zeros((4, 4), np.uint8))
    refs = EgoHOSSource(tmp_path).frames()
    assert [r.frame for r in refs] == ["a_10", "a_9", "b_2"]
    assert {r.split for r in refs} == {"test_outdomain"}
    assert [r.sequence for r in refs] == ["a", "a", "b"]


def test_bad_frames_are_skipped_and_recorded(tmp_path):
    root = tmp_path / "egohos"
    good = np.zeros((12, 12), np.uint8)
    good[3:6, 3:6] = 1
    write_frame(root, "train", "ok_1", good)
    write_frame(root, "train", "corrupt_1", good, image=b"not a jpeg at all" * 10)
    ok, buf = cv2.imencode(".jpg", np.full((12, 12, 3), 99, np.uint8))
    write_frame(root, "train", "truncated_1", good, image=buf.tobytes()[: len(buf) // 2])
    write_frame(root, "train", "wrongsize_1", good)
    cv2.imwrite(str(root / "train/label/wrongsize_1.png"), np.zeros((10, 12), np.uint8))
    write_frame(root, "train", "rgb_1", good)
    cv2.imwrite(str(root / "train/label/rgb_1.png"), np.zeros((12, 12, 3), np.uint8))
    write_frame(root, "train", "deep_1", good)
    cv2.imwrite(str(root / "train/label/deep_1.png"), np.zeros((12, 12), np.uint16))
    write_frame(root, "train", "highid_1", np.full((12, 12), 9, np.uint8))
    write_frame(root, "train", "nolabel_1", good)
    (root / "train/label/nolabel_1.png").unlink()

    rec = build(EgoHOSSource(root), BuildConfig(out=tmp_path / "shards", progress=False))
    assert rec["totals"]["samples"] == 1
    skipped = {s["frame"]: s for s in rec["skipped"]}
    expect_file = {"corrupt_1": "image/corrupt_1.jpg", "truncated_1": "image/truncated_1.jpg",
                   "wrongsize_1": "label/wrongsize_1.png", "rgb_1": "label/rgb_1.png",
                   "deep_1": "label/deep_1.png", "highid_1": "label/highid_1.png",
                   "nolabel_1": "label/nolabel_1.png"}
    assert set(skipped) == set(expect_file)
    for frame, rel in expect_file.items():
        assert skipped[frame]["file"].endswith(rel), skipped[frame]
        assert skipped[frame]["error"] == "BadFrame"
    assert "10x12" not in skipped["wrongsize_1"]["reason"] and "12x10" in skipped["wrongsize_1"]["reason"]
    assert "id 9" in skipped["highid_1"]["reason"]
    on_disk = json.loads((tmp_path / "shards" / "manifest.json").read_text())["builds"]["egohos"]
    assert len(on_disk["skipped"]) == 7


def test_missing_root_and_wrong_layout(tmp_path):
    with pytest.raises(DataError) as e:
        open_source("egohos", tmp_path / "nope")
    assert str(tmp_path / "nope") in str(e.value) and "\n" not in str(e.value)

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        EgoHOSSource(tmp_path / "empty").frames()
    assert str(tmp_path / "empty") in str(e.value) and "\n" not in str(e.value)

    (tmp_path / "half" / "train" / "image").mkdir(parents=True)
    with pytest.raises(DataError) as e:
        EgoHOSSource(tmp_path / "half").frames()
    assert str(tmp_path / "half" / "train" / "label") in str(e.value)

    with pytest.raises(DataError, match="egohos-second-order"):
        EgoHOSSource(tmp_path / "half", {"egohos_second_order": "maybe"})


def test_cli_demo_build_and_read_back(tmp_path):
    import webdataset as wds

    runner = CliRunner()
    d, s = tmp_path / "D", tmp_path / "S"
    r = runner.invoke(hodata_cli, ["demo", "--out", str(d), "--frames", "12"])
    assert r.exit_code == 0, r.output
    assert "hodata build --source egohos" in r.output
    r = runner.invoke(hodata_cli, ["build", "--source", "egohos", "--root", str(d), "--out", str(s), "--quiet"])
    assert r.exit_code == 0, r.output
    tars = sorted(s.glob("egohos-*.tar"))
    assert {t.name.split("-")[1] for t in tars} == set(demo.SPLITS)

    train = s / "egohos-train-000000.tar"
    with tarfile.open(train) as tf:
        names = tf.getnames()
    assert names and {n.rsplit("/", 1)[-1].split(".", 1)[1] for n in names} == {"jpg", "seg.png", "inst.png", "json"}

    n = 0
    for sample in wds.WebDataset(str(train), shardshuffle=False):
        assert set(k for k in sample if not k.startswith("__")) == {"jpg", "seg.png", "inst.png", "json"}
        meta = json.loads(sample["json"])
        assert meta["source"] == "egohos" and meta["split"] == "train"
        rel = meta["provenance"]["label"]
        ids = cv2.imread(str(d / rel), cv2.IMREAD_UNCHANGED)
        seg = decode_seg(sample["seg.png"])
        lut = np.full(256, 255, np.uint8)
        lut[:9] = [0, 1, 1, 2, 2, 2, 255, 255, 255]
        np.testing.assert_array_equal(seg, lut[ids])
        assert sample["jpg"] == (d / meta["provenance"]["image"]).read_bytes()  # passed through untouched
        assert (meta["width"], meta["height"]) == (160, 120)
        assert Image.open(io.BytesIO(sample["jpg"])).size == (160, 120)
        n += 1
    assert n == demo.split_counts(12)["train"]


def test_manifest_mapping_file_matches_code():
    facts = manifests.load("egohos.json")
    from hodata.sources.egohos import id_lut

    for mode, table in facts["to_hodata"].items():
        if mode.startswith("_"):
            continue
        lut = id_lut(mode)
        assert [int(lut[i]) for i in range(9)] == table, mode
