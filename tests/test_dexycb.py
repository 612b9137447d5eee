"""DexYCB source: layout, splits, MANO (PCA, hand mean, left hands, units) against joint_3d, masks at pixel
level (left hand, occluded object, amodal bits, provided vs rendered), options, bad input, CLI end to end.

Fixtures are the look-alike from hodata.demo.dexycb (640x480, 2 subjects x 2 sequences x 2 serials x 3 frames,
synthetic MANO, box / can / brick).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from hodata import manifests
from hodata.cli import main as hodata_cli
from hodata.demo import dexycb as demo
from hodata.errors import DataError
from hodata.mano import MANO_TO_THUMB_FIRST, TIP_VERTICES, load_mano
from hodata.render import render_labels, render_silhouettes
from hodata.schema import AMODAL_HAND_BIT, AMODAL_OBJECT_BIT, HAND, IGNORE, OBJECT, check_inst, decode_seg
from hodata.shards import BuildConfig, build
from hodata.sources import open_source
from hodata.sources.dexycb import GRASPED_ID, HAND_ID, SERIALS, SUBJECTS, split_of
from test_mano import reference_lbs

FLIP_X = np.array([-1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dexycb")
    demo.write(out, frames=3, seed=2)
    return out


def opts(out: Path, **kw) -> dict:
    return {"mano_dir": str(out / "mano"), **kw}


def source(out: Path, **kw):
    return open_source("dexycb", out / "DexYCB", opts(out, **kw))


def labels(out: Path, ref) -> dict:
    rel, serial, f = ref.info
    with np.load(out / "DexYCB" / rel / serial / f"labels_{f:06d}.npz") as z:
        return {k: z[k] for k in z.files}


def meta(out: Path, ref) -> dict:
    return yaml.safe_load((out / "DexYCB" / ref.info[0] / "meta.yml").read_text())


def betas(out: Path, calib: str) -> np.ndarray:
    return np.array(yaml.safe_load((out / "DexYCB" / "calibration" / f"mano_{calib}" / "mano.yml").read_text())["betas"])


def intrinsics(out: Path, serial: str) -> np.ndarray:
    c = yaml.safe_load((out / "DexYCB" / "calibration" / "intrinsics" / f"{serial}_640x480.yml").read_text())["color"]
    return np.array([[c["fx"], 0, c["ppx"]], [0, c["fy"], c["ppy"]], [0, 0, 1.0]])


def mirrored_left(right):
    """The left hand as the mirror image of the right model (x negated, faces reversed, axis-angle PCA basis and
    mean mirrored), keeping the right hand's shapedirs as the official MANO_LEFT.pkl does (unfixed)."""
    aa = np.tile([1.0, -1.0, -1.0], 15)
    return dataclasses.replace(right, side="left", v_template=right.v_template * FLIP_X, faces=right.faces[:, ::-1],
                               posedirs=right.posedirs * FLIP_X[None, :, None],
                               hands_components=right.hands_components * aa, hands_mean=right.hands_mean * aa)


def independent_hand(model, pose_m: np.ndarray, b: np.ndarray, side: str):
    """Vertices and manopth's 21 keypoints written out step by step: PCA with the hand mean, joint-by-joint
    skinning, translation after skinning, the side's tip vertices, thumb-first order."""
    p = pose_m.astype(np.float64)
    full = np.r_[p[:3], p[3:48] @ model.hands_components + model.hands_mean]
    verts, joints = reference_lbs(model, full, b, p[48:51])
    tips = {"right": [745, 317, 444, 556, 673], "left": [745, 317, 445, 556, 673]}[side]
    order = [0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20]
    return verts, np.concatenate([joints, verts[tips]])[order]


def object_meshes(out: Path, ref, lab: dict) -> dict[int, tuple]:
    """The posed objects of a frame, read with trimesh from the release's models: ycb id -> (v, f, pose)."""
    import trimesh

    out_meshes = {}
    names = manifests.load("dexycb.json")["ycb_classes"]
    for k, ycb_id in enumerate(meta(out, ref)["ycb_ids"]):
        if not lab["pose_y"][k].any():
            continue
        mesh = trimesh.load(out / "DexYCB" / "models" / names[str(ycb_id)] / "textured_simple.obj", force="mesh",
                            process=False)
        out_meshes[ycb_id] = (np.asarray(mesh.vertices), np.asarray(mesh.faces), lab["pose_y"][k].astype(np.float64))
    return out_meshes


# ---------------------------------------------------------------------------------------------- layout


def test_demo_is_the_release_layout(demo_out):
    root = demo_out / "DexYCB"
    m = yaml.safe_load((root / SUBJECTS[1] / demo.SEQUENCES[SUBJECTS[1]][0] / "meta.yml").read_text())
    assert set(m) >= {"serials", "num_frames", "ycb_ids", "ycb_grasp_ind", "mano_sides", "mano_calib", "extrinsics"}
    assert m["mano_sides"] == ["left"] and m["serials"] == list(SERIALS[:2])
    with np.load(root / SUBJECTS[0] / demo.SEQUENCES[SUBJECTS[0]][0] / SERIALS[1] / "labels_000001.npz") as z:
        assert z["seg"].dtype == np.uint8 and z["seg"].shape == (480, 640)
        assert z["pose_y"].dtype == np.float32 and z["pose_y"].shape == (3, 3, 4)
        assert z["pose_m"].dtype == np.float32 and z["pose_m"].shape == (1, 51) and z["pose_m"].any()
        assert z["joint_3d"].shape == (1, 21, 3) and z["joint_2d"].shape == (1, 21, 2)
        assert set(np.unique(z["seg"]).tolist()) <= {0, 2, 4, 21, 255} and (z["seg"] == 255).any()
        uv = z["joint_3d"][0] @ intrinsics(demo_out, SERIALS[1]).T
        np.testing.assert_allclose(z["joint_2d"][0], uv[:, :2] / uv[:, 2:], atol=1e-3)
    with np.load(root / SUBJECTS[0] / demo.SEQUENCES[SUBJECTS[0]][0] / SERIALS[0] / "labels_000000.npz") as z:
        assert not z["pose_m"].any() and (z["joint_3d"] == -1).all() and not (z["seg"] == 255).any()
    with np.load(root / SUBJECTS[0] / demo.SEQUENCES[SUBJECTS[0]][0] / "pose.npz") as z:
        assert z["pose_y"].shape == (3, 3, 7) and z["pose_m"].shape == (3, 1, 51)


def test_frames_follow_meta_and_serials(demo_out):
    src = source(demo_out)
    refs = src.frames()
    assert len(refs) == 2 * 2 * 2 * 3
    # subject, sequence, serial, frame
    want = [(f"{s}/{q}/{c}", f"{f:06d}") for s in SUBJECTS[:2] for q in demo.SEQUENCES[s] for c in SERIALS[:2]
            for f in range(3)]
    assert [(r.sequence, r.frame) for r in refs] == want
    assert {r.split for r in refs} == {"train"}  # s0: sequences 0 and 1 of each subject train
    s = src.load(refs[0])
    assert s.key == f"dexycb/train/{SUBJECTS[0]}-{demo.SEQUENCES[SUBJECTS[0]][0]}-{SERIALS[0]}/000000"
    assert s.provenance["color"] == f"{refs[0].sequence}/color_000000.jpg"
    assert s.provenance["intrinsics"] == f"calibration/intrinsics/{SERIALS[0]}_640x480.yml"
    np.testing.assert_allclose(s.camera["K"], intrinsics(demo_out, SERIALS[0]))
    d = src.describe()
    assert d["setup"] == "s0" and d["split_frames"] == {"train": 24}
    assert d["sides"] == {"right": 2, "left": 2} and d["other_objects"] == "ignore"
    assert d["mano_convention"]["use_pca"] and d["mano_convention"]["ncomps"] == 45
    assert d["mano_convention"]["flat_hand_mean"] is False and d["mano_convention"]["left_shapedirs_fix"] is False
    assert d["mano"]["left"]["left_shapedirs_fix"] is False
    assert all(c["agrees"] for c in d["joint_check"].values()) and set(d["joint_check"]) == {"left", "right"}


def test_splits_by_position_as_the_toolkit_defines_them():
    def count(setup):
        out = {}
        for subject in range(10):
            for serial in range(8):
                for seq in range(100):
                    sp = split_of(setup, subject, serial, seq)
                    out[sp] = out.get(sp, 0) + 1
        return out

    assert count("s0") == {"train": 10 * 80 * 8, "val": 2 * 20 * 8, "test": 8 * 20 * 8}
    assert count("s1") == {"train": 7 * 100 * 8, "val": 100 * 8, "test": 2 * 100 * 8}
    assert count("s2") == {"train": 10 * 100 * 6, "val": 10 * 100, "test": 10 * 100}
    assert count("s3") == {"train": 10 * 75 * 8, "val": 10 * 10 * 8, "test": 10 * 15 * 8}
    assert split_of("s0", 1, 3, 9) == "val" and split_of("s0", 2, 3, 9) == "test" and split_of("s1", 9, 0, 0) == "train"
    assert split_of("s3", 0, 0, 19) == "val" and split_of("s3", 0, 0, 35) == "test" and split_of("s3", 0, 0, 20) == "train"


def test_sequence_position_decides_the_split(tree):
    """Five sequences in subject 1: the fifth (index 4, sorted by name) is s0 val; s1 keeps subjects 0-1 in train."""
    subj = tree / "DexYCB" / SUBJECTS[0]
    first = demo.SEQUENCES[SUBJECTS[0]][0]
    for name in ("20200709_150000", "20200709_150100", "20200709_150200"):
        shutil.copytree(subj / first, subj / name)
    refs = source(tree).frames()
    split = {r.sequence.rsplit("/", 1)[0]: r.split for r in refs}
    assert split[f"{SUBJECTS[0]}/20200709_150200"] == "val"
    assert [v for k, v in split.items() if k.startswith(SUBJECTS[0])].count("val") == 1
    assert {r.split for r in source(tree, dexycb_split="s1").frames()} == {"train"}
    d = source(tree).describe()
    assert d["subjects"][SUBJECTS[0]] == {"index": 0, "sequences": 5} and d["sequences_per_subject_note"]


# ---------------------------------------------------------------------------------------------- MANO


def test_joints_from_pose_m_match_joint_3d_by_an_independent_path(demo_out):
    """PCA, hand mean, side, shapedirs and units: our keypoints from pose_m equal the file's joint_3d."""
    src = source(demo_out)
    right = load_mano(demo_out / "mano" / "MANO_RIGHT.pkl", "right")
    models = {"right": right, "left": mirrored_left(right)}
    checked = {"right": 0, "left": 0}
    for ref in src.frames():
        lab, m = labels(demo_out, ref), meta(demo_out, ref)
        if not lab["pose_m"].any():
            continue
        side = m["mano_sides"][0]
        b = betas(demo_out, m["mano_calib"][0])
        _, keypoints = independent_hand(models[side], lab["pose_m"][0], b, side)
        np.testing.assert_allclose(keypoints, lab["joint_3d"][0], atol=1e-4)  # metres, float32 in the file
        q = src._sequence(ref.info[0])
        np.testing.assert_allclose(src.hand(q, lab["pose_m"][0].astype(np.float64))[2], lab["joint_3d"][0], atol=1e-4)
        assert src.load(ref).extra["joint_3d_max_error_m"] < 1e-4
        # a hand in metres: wrist to middle fingertip is hand-sized
        assert 0.08 < np.linalg.norm(keypoints[12] - keypoints[0]) < 0.3
        checked[side] += 1
    assert checked["right"] >= 4 and checked["left"] >= 4


def test_left_hand_mask_equals_a_render_of_the_mirrored_model(demo_out):
    src = source(demo_out, amodal=True)
    right = load_mano(demo_out / "mano" / "MANO_RIGHT.pkl", "right")
    left = mirrored_left(right)
    fixed_left = dataclasses.replace(left, shapedirs=left.shapedirs * FLIP_X[None, :, None])
    refs = [r for r in src.frames() if r.sequence.startswith(SUBJECTS[1]) and r.frame == "000001"]
    assert refs
    for ref in refs:
        s = src.load(ref)
        assert [i for i in s.instances if i["class"] == "hand"] == [
            {"id": HAND_ID, "class": "hand", "side": "left", "name": "left hand"}]
        lab = labels(demo_out, ref)
        b = betas(demo_out, meta(demo_out, ref)["mano_calib"][0])
        K = intrinsics(demo_out, ref.info[1])
        verts, _ = independent_hand(left, lab["pose_m"][0], b, "left")
        alone = render_labels(K, (640, 480), [(verts, left.faces, 1)]) == 1
        assert alone.sum() > 2000
        np.testing.assert_array_equal((s.amodal & AMODAL_HAND_BIT) > 0, alone)
        # visible hand: the same scene drawn from the test's own meshes
        scene = [(verts, left.faces, 200)] + [(v, f, 10 + i, pose) for i, (v, f, pose)
                                              in enumerate(object_meshes(demo_out, ref, lab).values())]
        np.testing.assert_array_equal(s.inst == HAND_ID, render_labels(K, (640, 480), scene) == 200)
        # the shapedirs fix would move the hand: DexYCB's left hands need the unfixed model
        fixed_verts, _ = independent_hand(fixed_left, lab["pose_m"][0], b, "left")
        fixed = render_labels(K, (640, 480), [(fixed_verts, left.faces, 1)]) == 1
        assert (fixed != alone).sum() > 50


def test_occluded_object_visible_pixels(demo_out):
    """The object behind the grasped one: its visible pixels are its silhouette minus everything in front."""
    src = source(demo_out, dexycb_other_objects="object")
    partly_hidden = 0
    for ref in src.frames():
        s, lab, m = src.load(ref), labels(demo_out, ref), meta(demo_out, ref)
        K = intrinsics(demo_out, ref.info[1])
        meshes = object_meshes(demo_out, ref, lab)
        behind = dict(zip(map(tuple, [o[0] for o in demo.OBJECT_SETS]), [o[2] for o in demo.OBJECT_SETS]))[
            tuple(m["ycb_ids"])]
        others = [(v, f, 1, pose) for i, (v, f, pose) in meshes.items() if i != behind]
        if lab["pose_m"].any():
            side = m["mano_sides"][0]
            model = load_mano(demo_out / "mano" / f"MANO_{side.upper()}.pkl", side)
            verts, _ = independent_hand(model, lab["pose_m"][0], betas(demo_out, m["mano_calib"][0]), side)
            others.append((verts, model.faces, 1))
        v, f, pose = meshes[behind]
        sil = render_silhouettes(K, (640, 480), [(v, f, 1, pose)] + others)
        z_behind = (v @ pose[:, :3].T + pose[:, 3])[:, 2].min()
        for o, o_sil in zip(others, sil[1:]):  # the premise: whatever overlaps it in the image lies wholly in front
            if (o_sil & sil[0]).any():
                assert z_behind > ((o[0] @ o[3][:, :3].T + o[3][:, 3]) if len(o) == 4 else o[0])[:, 2].max()
        visible = sil[0] & ~sil[1:].any(axis=0)
        iid = next(i["id"] for i in s.instances if i.get("ycb_id") == behind)
        assert iid >= 3 and s.instances[[i["id"] for i in s.instances].index(iid)]["name"] == demo.YCB_NAMES[behind]
        np.testing.assert_array_equal(s.inst == iid, visible)
        assert (s.seg[visible] == OBJECT).all()
        partly_hidden += visible.sum() < 0.8 * sil[0].sum()
    assert partly_hidden >= 4


def test_amodal_bits(demo_out):
    src = source(demo_out, amodal=True)
    refs = src.frames()
    for ref in refs[:6]:
        s, lab, m = src.load(ref), labels(demo_out, ref), meta(demo_out, ref)
        K = intrinsics(demo_out, ref.info[1])
        assert s.amodal.dtype == np.uint8 and set(np.unique(s.amodal).tolist()) <= {0, 1, 2, 3}
        grasped = m["ycb_ids"][m["ycb_grasp_ind"]]
        v, f, pose = object_meshes(demo_out, ref, lab)[grasped]
        sil = render_silhouettes(K, (640, 480), [(v, f, 1, pose)])[0]
        np.testing.assert_array_equal((s.amodal & AMODAL_OBJECT_BIT) > 0, sil)
        assert (sil[s.inst == GRASPED_ID]).all()  # amodal covers the visible part
        if not lab["pose_m"].any():
            assert not (s.amodal & AMODAL_HAND_BIT).any()
        else:
            assert ((s.amodal & AMODAL_HAND_BIT) > 0)[s.inst == HAND_ID].all()
    assert source(demo_out).load(refs[0]).amodal is None


def test_provided_and_rendered_agree_exactly_on_the_demo(demo_out):
    rendered, provided = source(demo_out), source(demo_out, masks="provided")
    for ref in rendered.frames():
        a, b = rendered.load(ref), provided.load(ref)
        np.testing.assert_array_equal(a.seg, b.seg)
        np.testing.assert_array_equal(a.inst, b.inst)
        assert a.extra["mask_agreement"] == b.extra["mask_agreement"]
        agree = a.extra["mask_agreement"]
        assert agree["min_iou"] == 1.0 and agree["object_iou"] == 1.0
        assert agree["hand_iou"] == (1.0 if labels(demo_out, ref)["pose_m"].any() else None)
        seg = labels(demo_out, ref)["seg"]
        assert ((b.seg == HAND) == (seg == 255)).all()
        check_inst(b.inst, b.instances, b.seg)
    bare = open_source("dexycb", demo_out / "DexYCB", {"masks": "provided"})
    s = bare.load(bare.frames()[1])
    assert "mask_agreement" not in s.extra and bare.describe()["render_note"]


def test_provided_mismatch_is_measured(tree):
    """A provided mask that disagrees with the render shows in the agreement (here: the hand erased)."""
    src = source(tree, masks="provided")
    ref = src.frames()[1]
    path = tree / "DexYCB" / ref.info[0] / ref.info[1] / "labels_000001.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["seg"][arrays["seg"] == 255] = 0
    np.savez_compressed(path, **arrays)
    s = src.load(ref)
    assert s.extra["mask_agreement"]["hand_iou"] == 0.0 and s.extra["mask_agreement"]["min_iou"] == 0.0
    assert not (s.seg == HAND).any()


def test_other_objects_option(demo_out):
    ref = source(demo_out).frames()[1]
    seg = labels(demo_out, ref)["seg"]
    m = meta(demo_out, ref)
    grasped = m["ycb_ids"][m["ycb_grasp_ind"]]
    others = np.isin(seg, [i for i in m["ycb_ids"] if i != grasped])
    assert others.sum() > 500
    ignore = source(demo_out).load(ref)
    assert (ignore.seg[others] == IGNORE).all() and (ignore.inst[others] == 255).all()
    assert [i["name"] for i in ignore.instances if i["class"] == "object"] == [demo.YCB_NAMES[grasped]]
    background = source(demo_out, dexycb_other_objects="background").load(ref)
    assert (background.seg[others] == 0).all() and (background.inst[others] == 0).all()
    as_object = source(demo_out, dexycb_other_objects="object").load(ref)
    assert (as_object.seg[others] == OBJECT).all() and (as_object.inst[others] >= 3).all()
    names = {i["name"] for i in as_object.instances if i["class"] == "object"}
    assert names == {demo.YCB_NAMES[i] for i in m["ycb_ids"]}
    for s in (ignore, background, as_object):
        np.testing.assert_array_equal(s.seg == OBJECT, (s.inst == GRASPED_ID) | ((s.inst >= 3) & (s.inst < 255)))
        assert (s.seg[seg == grasped] == OBJECT).all()
    assert source(demo_out, dexycb_other_objects="background").build_options()["dexycb_other_objects"] == "background"


def test_frame_without_hand_and_unposed_object(demo_out):
    src = source(demo_out, dexycb_other_objects="object")
    refs = src.frames()
    s0 = src.load(refs[0])  # frame 0: no hand
    assert not s0.extra["hand_posed"] and not (s0.seg == HAND).any() and s0.hands == []
    assert "joint_3d_max_error_m" not in s0.extra
    s2 = src.load(refs[2])  # frame 2: the box is not posed
    box = next(o for o in s2.objects if o["ycb_id"] == demo.SIDE_OBJECT)
    assert box["posed"] is False and box["name"] == "003_cracker_box"
    assert box["instance"] not in np.unique(s2.inst).tolist()
    assert not (labels(demo_out, refs[2])["seg"] == demo.SIDE_OBJECT).any()


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_frames_are_skipped_and_recorded(tree, tmp_path):
    src = source(tree)
    refs = src.frames()
    d0 = tree / "DexYCB" / refs[0].info[0] / refs[0].info[1]
    color = d0 / "color_000001.jpg"
    color.write_bytes(color.read_bytes()[:300])
    (d0 / "labels_000002.npz").write_bytes(b"PK\x03\x04 not a zip")
    d1 = tree / "DexYCB" / refs[3].info[0] / refs[3].info[1]
    with np.load(d1 / "labels_000000.npz") as z:
        np.savez(d1 / "labels_000000.npz", seg=z["seg"], pose_m=z["pose_m"])  # pose_y missing
    (d1 / "labels_000001.npz").unlink()
    rec = build(source(tree), BuildConfig(out=tmp_path / "shards", progress=False))
    skipped = {(s["sequence"], s["frame"]): s for s in rec["skipped"]}
    assert set(skipped) == {(refs[0].sequence, "000001"), (refs[0].sequence, "000002"),
                            (refs[3].sequence, "000000"), (refs[3].sequence, "000001")}
    assert "does not decode" in skipped[(refs[0].sequence, "000001")]["reason"]
    assert "labels do not load" in skipped[(refs[0].sequence, "000002")]["reason"]
    assert "labels lack pose_y" in skipped[(refs[3].sequence, "000000")]["reason"]
    assert skipped[(refs[3].sequence, "000001")]["file"].endswith("labels_000001.npz")
    assert rec["totals"]["samples"] == 20


def test_bad_calibration_or_model_stops_at_open_in_one_line(tree, monkeypatch):
    root = tree / "DexYCB"
    intr = root / "calibration" / "intrinsics" / f"{SERIALS[1]}_640x480.yml"
    saved = intr.read_bytes()
    intr.unlink()
    with pytest.raises(DataError, match=rf"{SERIALS[1]}_640x480.yml: intrinsics is missing"):
        source(tree)
    intr.write_text("color: {fx: 600, fy: 600}\n")
    with pytest.raises(DataError, match="intrinsics lack color"):
        source(tree)
    intr.write_bytes(saved)
    calib = next((root / "calibration").glob("mano_*/mano.yml"))
    calib.write_text("betas: [1, 2, 3]\n")
    with pytest.raises(DataError, match="betas must be 10 finite numbers"):
        source(tree)
    calib.write_text(yaml.safe_dump({"betas": [0.0] * 10}))
    obj = root / "models" / "061_foam_brick" / "textured_simple.obj"
    obj.write_text("not an obj\n")
    with pytest.raises(DataError, match="061_foam_brick") as e:
        source(tree)
    assert "\n" not in str(e.value) and type(e.value) is DataError
    with pytest.raises(DataError, match="--amodal renders"):
        open_source("dexycb", root, {"masks": "provided", "amodal": True})
    monkeypatch.delenv("MANO_DIR", raising=False)
    with pytest.raises(DataError, match=r"mano\.is\.tue\.mpg\.de"):
        open_source("dexycb", root, {})
    meta_file = root / SUBJECTS[0] / demo.SEQUENCES[SUBJECTS[0]][0] / "meta.yml"
    meta_file.write_text("serials: [a\n")
    with pytest.raises(DataError, match="meta.yml: sequence meta is not valid YAML"):
        source(tree)
    meta_file.write_text(yaml.safe_dump({"serials": ["1"], "num_frames": 3, "ycb_ids": [2, 99], "ycb_grasp_ind": 0,
                                         "mano_sides": ["right"], "mano_calib": ["x"]}))
    with pytest.raises(DataError, match="ycb_ids must list YCB class ids"):
        source(tree)
    with pytest.raises(DataError, match="not a DexYCB root"):
        open_source("dexycb", root / "models", opts(tree))
    with pytest.raises(DataError, match="--dexycb-split"):
        source(tree, dexycb_split="s9")


# ---------------------------------------------------------------------------------------------- end to end


def read_shards(out: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for tar in sorted(out.glob("dexycb-*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                key, ext = m.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return samples


def test_cli_builds_both_mask_modes_with_agreement_in_the_manifest(tmp_path):
    runner = CliRunner()
    res = runner.invoke(hodata_cli, ["demo", "--layout", "dexycb", "--out", str(tmp_path / "d"), "--frames", "2"])
    assert res.exit_code == 0, res.output
    assert "hodata build --source dexycb" in res.output
    root, mano = tmp_path / "d" / "DexYCB", tmp_path / "d" / "mano"
    built = {}
    for mode in ("rendered", "provided"):
        out = tmp_path / mode
        res = runner.invoke(hodata_cli, ["build", "--source", "dexycb", "--root", str(root), "--mano-dir", str(mano),
                                         "--out", str(out), "--masks", mode, "--amodal", "--dexycb-split", "s1",
                                         "--quiet"])
        assert res.exit_code == 0, res.output
        rec = json.loads((out / "manifest.json").read_text())["builds"]["dexycb"]
        assert rec["options"]["dexycb_split"] == "s1" and rec["options"]["masks"] == mode
        assert rec["options"]["amodal"] is True and rec["options"]["dexycb_other_objects"] == "ignore"
        assert rec["source"]["setup"] == "s1" and "CC BY-NC" in rec["source"]["licence"]
        quality = rec["totals"]["quality"]
        assert quality["min_iou"]["mean"] == 1.0 and quality["min_iou"]["frames"] == 16
        assert len(quality["min_iou"]["worst"]) == 16  # every frame named, fewer than 20
        assert quality["min_iou"]["worst"][0]["frame"].startswith("dexycb/train/")
        built[mode] = read_shards(out)
    assert built["rendered"].keys() == built["provided"].keys() and len(built["rendered"]) == 16
    for key, members in built["rendered"].items():
        other = built["provided"][key]
        assert decode_seg(members["seg.png"]).tobytes() == decode_seg(other["seg.png"]).tobytes()
        assert decode_seg(members["inst.png"]).tobytes() == decode_seg(other["inst.png"]).tobytes()
        assert members["amodal.png"] == other["amodal.png"]
        j = json.loads(members["json"])
        assert j["labels"] == {"hand": True, "object": True, "sides": True}
        assert {i["side"] for i in j["instances"] if i["class"] == "hand"} <= {"left", "right"}
    res = runner.invoke(hodata_cli, ["build", "--source", "dexycb", "--help"])
    assert "--dexycb-other-objects" in res.output and "--amodal" in res.output and "--ycb-dir" not in res.output


def test_manifest_facts_match_the_code():
    facts = manifests.load("dexycb.json")
    assert tuple(facts["mano"]["tips_right"]) == TIP_VERTICES["manopth"]
    assert tuple(facts["mano"]["tips_left"]) == TIP_VERTICES["manopth_left"]
    assert tuple(facts["mano"]["reorder"]) == MANO_TO_THUMB_FIRST
    assert len(facts["ycb_classes"]) == 21 and facts["ycb_classes"]["21"] == "061_foam_brick"
    assert len(facts["subjects"]) == 10 and len(facts["serials"]) == 8
    assert set(facts["splits"]) >= {"s0", "s1", "s2", "s3"}
    assert demo.MANOPTH_TIPS == {"right": TIP_VERTICES["manopth"], "left": TIP_VERTICES["manopth_left"]}


def test_swapped_mano_files_stop_the_source_at_open(tree):
    """Models go through hodata.mano.load_mano_checked: a right model where the left belongs is one clear line."""
    mano = tree / "mano"
    right, left = (mano / "MANO_RIGHT.pkl").read_bytes(), (mano / "MANO_LEFT.pkl").read_bytes()
    (mano / "MANO_RIGHT.pkl").write_bytes(left)
    (mano / "MANO_LEFT.pkl").write_bytes(right)
    with pytest.raises(DataError, match=r"MANO_LEFT\.pkl: this is a right-hand model"):
        source(tree)
    (mano / "MANO_LEFT.pkl").write_bytes(b"\x80\x02cos\nsystem\nq\x00.")  # a pickle naming os.system
    with pytest.raises(DataError, match=r"MANO_LEFT\.pkl"):
        source(tree, masks="provided")
