"""HO3D source: coordinates, occlusion, v2/v3 layouts, provided masks, bad frames, splits, CLI end to end.

Fixtures are the synthetic HO3D_v3 look-alike from hodata.demo.ho3d (160x120, synthetic MANO, box / can).
"""

from __future__ import annotations

import json
import pickle
import shutil
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from hodata import manifests
from hodata.cli import main as hodata_cli
from hodata.demo import ho3d as demo
from hodata.errors import BadFrame, DataError
from hodata.render import render_labels
from hodata.schema import BACKGROUND, HAND, OBJECT, decode_seg
from hodata.shards import BuildConfig, build
from hodata.sources import open_source
from hodata.sources.rendered import mano_vertices
from hodata.sources.ho3d import opengl_to_opencv, project, provided_labels, read_meta, sequence_group


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ho3d")
    demo.write(out, frames=9, seed=1)
    return out


def opts(out: Path, **kw) -> dict:
    return {"mano_dir": str(out / "mano"), "ycb_dir": str(out / "models"), **kw}


def edit_meta(path: Path, **changes) -> dict:
    with open(path, "rb") as f:
        meta = pickle.load(f, encoding="latin1")
    meta.update(changes)
    with open(path, "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return meta


# ---------------------------------------------------------------------------------------- geometry


def test_known_point_lands_on_known_pixel(tree):
    K = np.array([[100.0, 0, 80], [0, 100.0, 60], [0, 0, 1]])
    p = np.array([[0.1, 0.05, -0.5]])  # OpenGL: right, up, in front
    assert np.allclose(opengl_to_opencv(p), [[0.1, -0.05, 0.5]])
    assert np.allclose(project(p, K), [[100.0, 50.0]])  # up in OpenGL = smaller row in the image

    # the same point as the centre of the (unrotated) demo box, hand moved far out of view
    src = open_source("ho3d", tree / "HO3D_v3", opts(tree))
    meta = read_meta(tree / "HO3D_v3" / "train" / "ABF10" / "meta" / "0000.pkl")
    box_v, _ = src.ycb.get("003_cracker_box")
    meta.update(camMat=K, objRot=np.zeros((3, 1)), objTrans=p[0] - box_v.mean(axis=0), handTrans=np.array([5.0, 0, -0.5]))
    seg = src.render(meta, (160, 120))
    assert not (seg == HAND).any()
    assert seg[50, 100] == OBJECT and seg[50, 20] == BACKGROUND
    rows, cols = np.nonzero(seg == OBJECT)
    assert abs(cols.mean() - 100) < 1.5 and abs(rows.mean() - 50) < 1.5
    # the box is 16 x 21 cm; its near face (z = -0.47) spans 100 * 0.16 / 0.47 = 34 px across
    assert 30 <= cols.max() - cols.min() + 1 <= 36


def place_hand(src, meta: dict, centre) -> np.ndarray:
    """handTrans that puts the hand's vertex mean at ``centre`` (OpenGL frame)."""
    rest = mano_vertices(src.mano, meta["handPose"], meta["handBeta"], np.zeros(3), flat_hand_mean=True)
    return np.asarray(centre, float) - rest.mean(axis=0)


@pytest.mark.parametrize("hand_z, front", [(-0.40, HAND), (-0.90, OBJECT)])
def test_zbuffer_decides_occlusion(tree, hand_z, front):
    """Hand and box on the optical axis: whichever is nearer the camera owns the centre pixel."""
    root = tree / "HO3D_v3"
    src = open_source("ho3d", root, opts(tree))
    meta_path = root / "train" / "ABF10" / "meta" / "0001.pkl"
    meta = read_meta(meta_path)
    box_v, _ = src.ycb.get(str(meta["objName"]))
    edit_meta(meta_path, objRot=np.zeros((3, 1), np.float32),
              objTrans=(np.array([0, 0, -0.6]) - box_v.mean(axis=0)).astype(np.float32),
              handTrans=place_hand(src, meta, [0, 0, hand_z]).astype(np.float32))
    s = src.load(next(r for r in src.frames() if (r.sequence, r.frame) == ("ABF10", "0001")))
    cy, cx = s.height // 2, s.width // 2
    assert s.seg[cy, cx] == front
    # each mesh alone, to find where they overlap: there the nearer one must win, elsewhere each keeps its own
    meta = read_meta(meta_path)
    K = np.asarray(meta["camMat"], float)
    hv, hf = src.hand_vertices(meta)
    ov, of = src.object_vertices(meta)
    hand = render_labels(K, (s.width, s.height), [(opengl_to_opencv(hv), hf, HAND)]) == HAND
    obj = render_labels(K, (s.width, s.height), [(opengl_to_opencv(ov), of, OBJECT)]) == OBJECT
    overlap = hand & obj
    assert overlap.sum() > 100
    assert (s.seg[overlap] == front).all()
    assert (s.seg[hand & ~obj] == HAND).all() and (s.seg[obj & ~hand] == OBJECT).all()


# ---------------------------------------------------------------------------------------- layout


def test_frames_follow_train_txt_and_skip_evaluation(tree):
    root = tree / "HO3D_v3"
    src = open_source("ho3d", root, opts(tree))
    refs = src.frames()
    listed = [ln for ln in (root / "train.txt").read_text().split() if ln]
    assert [f"{r.sequence}/{r.frame}" for r in refs] == listed
    # every train folder holds one more (unlisted, all-None) frame: never built
    assert len(list(root.glob("train/*/meta/*.pkl"))) == len(listed) + 3
    assert not any(r.sequence == "SM1" for r in refs)
    d = src.describe()
    assert d["version"] == "v3" and d["rgb_ext"] == "jpg" and d["seg_ext"] == "png"
    assert d["list_files"]["train.txt"]["lines"] == 9 and d["list_files"]["evaluation.txt"]["lines"] == 2
    assert "skipped 2 evaluation frames" in d["evaluation"]
    s = src.load(refs[0])
    assert s.labels == {"hand": True, "object": True, "sides": True} and s.hands == [{"side": "right"}]
    assert s.objects == [{"name": "003_cracker_box", "ycb_label": 2}]
    assert s.provenance == {"rgb": "train/ABF10/rgb/0000.jpg", "meta": "train/ABF10/meta/0000.pkl",
                            "seg": "train/ABF10/seg/0000.png"}
    assert np.allclose(s.camera["K"], demo.camera_matrix((160, 120)))
    assert s.image_ext == "jpg" and (s.width, s.height) == (160, 120)


def test_sequence_groups_and_splits(tree, tmp_path):
    assert sequence_group("ABF12") == "ABF1" and sequence_group("SMu41") == "SMu4"
    assert sequence_group("MC1") == "MC1" and sequence_group("SM1") == "SM1" and sequence_group("ShSu13") == "ShSu1"
    root = tree / "HO3D_v3"
    refs = open_source("ho3d", root, opts(tree, val_fraction=0.1)).frames()
    split_of = {r.sequence: r.split for r in refs}
    assert split_of["ABF10"] == split_of["ABF11"]  # two cameras of one scene
    assert set(split_of.values()) == {"train", "val"}  # two scenes: one is held out
    d = open_source("ho3d", root, opts(tree)).describe()
    assert d["split_assignment"] == {"ABF1": split_of["ABF10"], "MC1": split_of["MC1"]}

    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"train": ["ABF1"], "val": ["MC1"]}))
    refs = open_source("ho3d", root, opts(tree, split_file=str(split_file))).frames()
    assert {r.sequence: r.split for r in refs} == {"ABF10": "train", "ABF11": "train", "MC1": "val"}
    split_file.write_text(json.dumps({"train": ["ABF10", "MC1"], "val": ["ABF11"]}))
    with pytest.raises(DataError, match="cameras of scene ABF1"):
        open_source("ho3d", root, opts(tree, split_file=str(split_file))).frames()


# ---------------------------------------------------------------------------------------- provided masks


def test_provided_colours_v3_png_and_v2_jpg():
    q = np.zeros((30, 40), np.uint8)
    q[5:15, 5:20] = HAND
    q[18:28, 22:38] = OBJECT
    v3 = demo.seg_image(q)  # hand = blue 255, object = green 255 (BGR image)
    png = cv2.imencode(".png", v3)[1].tobytes()
    up = provided_labels(png, "png", (160, 120), Path("x.png"))
    assert np.array_equal(up, cv2.resize(q, (160, 120), interpolation=cv2.INTER_NEAREST))
    v2 = np.zeros(q.shape + (3,), np.uint8)
    v2[q == HAND, 2] = 255  # red
    v2[q == OBJECT, 0] = 255  # blue
    jpg = cv2.imencode(".jpg", cv2.resize(v2, (160, 120), interpolation=cv2.INTER_NEAREST))[1].tobytes()
    lab = provided_labels(jpg, "jpg", (160, 120), Path("x.jpg"))
    want = cv2.resize(q, (160, 120), interpolation=cv2.INTER_NEAREST)
    assert (lab == want).mean() > 0.99  # JPEG blurs only the edges


def test_provided_mode_and_agreement(tree):
    root = tree / "HO3D_v3"
    rendered = open_source("ho3d", root, opts(tree))
    provided = open_source("ho3d", root, opts(tree, masks="provided"))
    ref = rendered.frames()[0]
    a, b = rendered.load(ref), provided.load(ref)
    q = cv2.imread(str(root / "train" / ref.sequence / "seg" / f"{ref.frame}.png"))
    assert q.shape[:2] == (30, 40)  # a quarter of 160x120
    assert set(np.unique(b.seg).tolist()) <= {0, 1, 2}
    assert np.array_equal(b.seg, provided_labels((root / "train" / ref.sequence / "seg" / f"{ref.frame}.png")
                                                 .read_bytes(), "png", (160, 120), Path("x")))
    assert a.extra["mask_agreement"] == b.extra["mask_agreement"]
    agree = a.extra["mask_agreement"]
    # recompute: IoU of the two maps per class
    for cls, key in ((HAND, "hand_iou"), (OBJECT, "object_iou")):
        inter = ((a.seg == cls) & (b.seg == cls)).sum()
        union = ((a.seg == cls) | (b.seg == cls)).sum()
        assert agree[key] == pytest.approx(inter / union, abs=1e-4)
        assert agree[key] > 0.3  # the same poses, only rendered at a quarter of the size
    assert a.extra["mask_source"] == "rendered" and b.extra["mask_source"] == "provided"
    # provided mode works without MANO / YCB: no agreement then
    bare = open_source("ho3d", root, {"masks": "provided"})
    assert "mask_agreement" not in bare.load(ref).extra and bare.describe()["render_note"]


def test_v2_layout_detected(tree):
    """v2: rgb .png, seg .jpg with hand red / object blue."""
    root = tree / "HO3D_v3"
    v3 = open_source("ho3d", root, opts(tree, masks="provided"))
    want = {(r.sequence, r.frame): v3.load(r).seg for r in v3.frames()}
    for jpg in list(root.glob("train/*/rgb/*.jpg")):
        cv2.imwrite(str(jpg.with_suffix(".png")), cv2.imread(str(jpg)))
        jpg.unlink()
    for png in list(root.glob("train/*/seg/*.png")):
        bgr = cv2.imread(str(png))
        v2 = np.zeros_like(bgr)
        v2[bgr[..., 0] > 127, 2] = 255  # hand: blue -> red
        v2[bgr[..., 1] > 127, 0] = 255  # object: green -> blue
        cv2.imwrite(str(png.with_suffix(".jpg")), v2)
        png.unlink()
    src = open_source("ho3d", root, opts(tree, masks="provided"))
    d = src.describe()
    assert (d["version"], d["rgb_ext"], d["seg_ext"]) == ("v2", "png", "jpg")
    s = src.load(src.frames()[0])
    assert s.image_ext == "png" and s.provenance["rgb"].endswith(".png") and s.provenance["seg"].endswith(".jpg")
    for r in src.frames():
        assert (src.load(r).seg == want[(r.sequence, r.frame)]).mean() > 0.98


def test_a_frame_stored_in_the_other_image_format_is_read_as_the_toolkit_does(tree):
    """The toolkit tries .png, then .jpg: one frame of a v3 tree stored as PNG still loads; a damaged JPG with a
    PNG beside it is a bad frame, not a silent switch."""
    root = tree / "HO3D_v3"
    src = open_source("ho3d", root, opts(tree))
    first, second = src.frames()[:2]
    jpg = root / "train" / first.sequence / "rgb" / f"{first.frame}.jpg"
    want = src.load(first).seg
    cv2.imwrite(str(jpg.with_suffix(".png")), cv2.imread(str(jpg)))
    jpg.unlink()
    s = src.load(first)
    assert s.image_ext == "png" and s.provenance["rgb"] == f"train/{first.sequence}/rgb/{first.frame}.png"
    assert np.array_equal(s.seg, want)
    damaged = root / "train" / second.sequence / "rgb" / f"{second.frame}.jpg"
    cv2.imwrite(str(damaged.with_suffix(".png")), cv2.imread(str(damaged)))
    damaged.write_bytes(damaged.read_bytes()[:200])
    with pytest.raises(BadFrame) as e:
        src.load(second)
    assert e.value.path == str(damaged)


# ---------------------------------------------------------------------------------------- bad input


def test_bad_frames_are_skipped_and_recorded(tree, tmp_path):
    root = tree / "HO3D_v3"
    edit_meta(root / "train" / "ABF10" / "meta" / "0001.pkl", objRot=None)
    (root / "train" / "ABF10" / "meta" / "0002.pkl").unlink()
    rgb = root / "train" / "ABF11" / "rgb" / "0000.jpg"
    rgb.write_bytes(rgb.read_bytes()[:200])  # truncated JPEG
    (root / "train" / "MC1" / "meta" / "0000.pkl").write_bytes(b"not a pickle")
    shutil.rmtree(tree / "models" / "005_tomato_soup_can")  # MC1's object model
    rec = build(open_source("ho3d", root, opts(tree)), BuildConfig(out=tmp_path / "shards", progress=False))
    skipped = {(s["sequence"], s["frame"]): s for s in rec["skipped"]}
    assert set(skipped) == {("ABF10", "0001"), ("ABF10", "0002"), ("ABF11", "0000"),
                            ("MC1", "0000"), ("MC1", "0001"), ("MC1", "0002")}
    assert "no value for objRot" in skipped[("ABF10", "0001")]["reason"]
    assert skipped[("ABF10", "0002")]["file"].endswith("ABF10/meta/0002.pkl")
    assert "annotation file missing" in skipped[("ABF10", "0002")]["reason"]
    assert "does not decode" in skipped[("ABF11", "0000")]["reason"]
    assert "does not unpickle" in skipped[("MC1", "0000")]["reason"]
    assert "YCB model 005_tomato_soup_can is missing" in skipped[("MC1", "0001")]["reason"]
    assert rec["totals"]["samples"] == 3 and rec["totals"]["skipped"] == 6
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert len(manifest["builds"]["ho3d"]["skipped"]) == 6
    # provided masks do not need the object model: those frames build, without the agreement
    src = open_source("ho3d", root, opts(tree, masks="provided"))
    s = src.load(next(r for r in src.frames() if (r.sequence, r.frame) == ("MC1", "0001")))
    assert "YCB model" in s.extra["render_error"] and "mask_agreement" not in s.extra


def test_missing_models_say_where_to_get_them(tree, monkeypatch):
    monkeypatch.delenv("MANO_DIR", raising=False)
    root = tree / "HO3D_v3"
    with pytest.raises(DataError, match=r"mano\.is\.tue\.mpg\.de.*--mano-dir"):
        open_source("ho3d", root, {"ycb_dir": str(tree / "models")})
    with pytest.raises(DataError, match="MANO_RIGHT.pkl not found"):
        open_source("ho3d", root, opts(tree, mano_dir=str(tree)))
    with pytest.raises(DataError, match="--ycb-dir"):
        open_source("ho3d", root, {"mano_dir": str(tree / "mano")})
    with pytest.raises(DataError, match="train.txt missing.*try --root"):
        open_source("ho3d", tree, opts(tree))
    (root / "train.txt").write_text("ABF10-0000\n")
    with pytest.raises(DataError, match="line 1"):
        open_source("ho3d", root, opts(tree)).frames()


# ---------------------------------------------------------------------------------------- end to end


def test_cli_demo_then_build(tmp_path):
    runner = CliRunner()
    res = runner.invoke(hodata_cli, ["demo", "--layout", "ho3d", "--out", str(tmp_path / "d"), "--frames", "6"])
    assert res.exit_code == 0, res.output
    assert "hodata build --source ho3d" in res.output
    d = tmp_path / "d"
    res = runner.invoke(hodata_cli, ["build", "--source", "ho3d", "--root", str(d / "HO3D_v3"), "--mano-dir",
                                     str(d / "mano"), "--ycb-dir", str(d / "models"), "--out", str(tmp_path / "s"),
                                     "--quiet"])
    assert res.exit_code == 0, res.output
    both = 0
    n = 0
    for tar in sorted((tmp_path / "s").glob("ho3d-*.tar")):
        with tarfile.open(tar) as tf:
            members = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
        for name, data in members.items():
            if not name.endswith(".seg.png"):
                continue
            n += 1
            seg = decode_seg(data)
            meta = json.loads(members[name[: -len("seg.png")] + "json"])
            assert meta["source"] == "ho3d" and meta["labels"] == {"hand": True, "object": True, "sides": True}
            assert seg.shape == (120, 160) and set(np.unique(seg).tolist()) <= {0, 1, 2}
            both += bool((seg == HAND).any() and (seg == OBJECT).any())
            assert "mask_agreement" in meta["extra"]
    assert n == 6 and both >= 4


def test_manifest_facts_match_the_code():
    from hodata.sources import ho3d

    facts = manifests.load("ho3d.json")
    assert tuple(facts["split"]["multi_camera_bases"]) == ho3d.MULTI_CAMERA_BASES
    assert np.array_equal(np.array(facts["coordinates"]["to_opencv"]), ho3d.OPENGL_TO_OPENCV)
    assert set(ho3d.REQUIRED_META) <= set(facts["meta_fields_used"])


def test_pyrender_backend_agrees(demo_out):
    from hodata.render import pyrender_available

    if not pyrender_available():
        pytest.skip("pyrender has no EGL context here")
    root = demo_out / "HO3D_v3"
    z = open_source("ho3d", root, opts(demo_out))
    p = open_source("ho3d", root, opts(demo_out, renderer="pyrender"))
    assert p.build_options()["renderer"] == "pyrender"
    for r in z.frames()[:4]:
        a, b = z.load(r).seg, p.load(r).seg
        for cls in (HAND, OBJECT):
            union = ((a == cls) | (b == cls)).sum()
            assert union == 0 or ((a == cls) & (b == cls)).sum() / union >= 0.99


# ---------------------------------------------------------------------------------------- amodal masks


def test_amodal_bits_are_each_mesh_alone(tree, tmp_path):
    root = tree / "HO3D_v3"
    src = open_source("ho3d", root, opts(tree, amodal=True))
    assert src.describe()["amodal"] is True and src.describe()["mano_convention"]["flat_hand_mean"] is True
    hidden = 0
    for ref in src.frames()[:6]:
        s = src.load(ref)
        meta = read_meta(root / "train" / ref.sequence / "meta" / f"{ref.frame}.pkl")
        K = np.asarray(meta["camMat"], float)
        hv, hf = src.hand_vertices(meta)
        ov, of = src.object_vertices(meta)
        hand = render_labels(K, (s.width, s.height), [(opengl_to_opencv(hv), hf, HAND)]) == HAND
        obj = render_labels(K, (s.width, s.height), [(opengl_to_opencv(ov), of, OBJECT)]) == OBJECT
        assert s.amodal.dtype == np.uint8 and set(np.unique(s.amodal).tolist()) <= {0, 1, 2, 3}
        assert np.array_equal(s.amodal & 1 > 0, hand) and np.array_equal(s.amodal & 2 > 0, obj)
        assert (s.amodal[s.seg == HAND] & 1).all() and (s.amodal[s.seg == OBJECT] & 2).all()
        hidden += int(((s.amodal & 2 > 0) & (s.seg == HAND)).sum() > 0)  # object behind the hand
    assert hidden >= 1
    assert open_source("ho3d", root, opts(tree)).load(src.frames()[0]).amodal is None
    with pytest.raises(DataError, match="--amodal renders"):
        open_source("ho3d", root, {"masks": "provided", "amodal": True})
    rec = build(src, BuildConfig(out=tmp_path / "s", progress=False))
    with tarfile.open(tmp_path / "s" / rec["shards"][0]["name"]) as tf:
        names = tf.getnames()
    assert sum(n.endswith(".amodal.png") for n in names) == rec["shards"][0]["samples"]
    quality = rec["totals"]["quality"]
    assert quality["min_iou"]["ranked_frames"] == rec["totals"]["samples"]
    worst = quality["min_iou"]["worst"]
    assert [w["value"] for w in worst] == sorted(w["value"] for w in worst)
    assert worst[0]["value"] == quality["min_iou"]["min"] and worst[0]["frame"].startswith("ho3d/")


def test_worst_frames_skip_past_skipped_frames(tree, tmp_path):
    """Names come from the frames a shard really holds: a skipped frame shifts nothing."""
    root = tree / "HO3D_v3"
    (root / "train" / "ABF10" / "meta" / "0001.pkl").unlink()
    seg = root / "train" / "ABF10" / "seg" / "0002.png"
    q = cv2.imread(str(seg))
    cv2.imwrite(str(seg), np.zeros_like(q))  # provided mask emptied: this frame agrees worst
    rec = build(open_source("ho3d", root, opts(tree)), BuildConfig(out=tmp_path / "s", progress=False))
    assert rec["totals"]["skipped"] == 1
    worst = rec["totals"]["quality"]["min_iou"]["worst"]
    assert worst[0]["value"] == 0.0
    assert worst[0]["frame"].endswith("/ABF10/0002")


def test_a_left_model_in_place_of_the_right_stops_the_source(tree):
    (tree / "mano" / "MANO_RIGHT.pkl").write_bytes((tree / "mano" / "MANO_LEFT.pkl").read_bytes())
    with pytest.raises(DataError, match=r"MANO_RIGHT\.pkl: this is a left-hand model"):
        open_source("ho3d", tree / "HO3D_v3", opts(tree))


def test_annotation_fields_that_are_not_finite_or_misshapen_are_named(tmp_path):
    from hodata.errors import BadFrame

    meta = {"handPose": np.zeros(48, np.float32), "handBeta": np.zeros(10), "handTrans": [0.0, 0.0, -0.5],
            "camMat": np.eye(3), "objRot": np.zeros((3, 1)), "objTrans": np.zeros(3), "objName": "x"}
    path = tmp_path / "0000.pkl"
    for change, words in (({}, None), ({"objTrans": np.array([0.0, np.inf, 0.0])}, "objTrans has 3 values, not all"),
                          ({"handBeta": np.array([np.nan] * 10)}, "handBeta has 10 values, not all finite"),
                          ({"camMat": np.eye(4)}, "camMat has 16 values"), ({"handTrans": "abc"}, "handTrans is not")):
        path.write_bytes(pickle.dumps(meta | change, protocol=2))
        if words is None:
            assert read_meta(path)["objName"] == "x"
            continue
        with pytest.raises(BadFrame, match=words):
            read_meta(path)
