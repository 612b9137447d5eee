"""FreiHAND source: image -> annotation mapping, splits by annotation, masks (provided vs rendered), the
evaluation split, errors, CLI end to end. Fixtures: the synthetic look-alike from hodata.demo.freihand."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from hodata import manifests
from hodata.cli import main as hodata_cli
from hodata.demo import freihand as demo
from hodata.errors import DataError
from hodata.schema import HAND, decode_seg
from hodata.shards import BuildConfig, build
from hodata.sources import open_source
from hodata.sources.rendered import mask_iou
from hodata.sources.freihand import VERSIONS, image_index, threshold_mask

N = 5  # annotations in the fixture: 20 training images


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("freihand")
    demo.write(out, samples=N, seed=2, size=(128, 128))
    return out


def root_of(out: Path) -> Path:
    return out / "FreiHAND_pub_v2"


def test_image_index_mapping(demo_out):
    assert image_index(0, 32560) == (0, "gs") and image_index(32560, 32560) == (0, "hom")
    assert image_index(130239, 32560) == (32559, "auto") and image_index(7 + 2 * 32560, 32560) == (7, "sample")
    with pytest.raises(ValueError):
        image_index(4 * 32560, 32560)
    root = root_of(demo_out)
    assert len(list((root / "training" / "rgb").glob("*.jpg"))) == 4 * N  # N comes from training_K.json
    assert len(list((root / "training" / "mask").glob("*.jpg"))) == N
    src = open_source("freihand", root, {"mano_dir": str(demo_out / "mano")})
    K = json.loads((root / "training_K.json").read_text())
    train = [r for r in src.frames() if r.split != "test"]
    assert len(train) == 4 * N
    for r in train:
        i = int(r.frame)
        s = src.load(r)
        assert r.sequence == VERSIONS[i // N] == s.extra["version"]
        assert s.extra["annotation_index"] == i % N
        assert np.allclose(s.camera["K"], K[i % N])
        assert s.provenance["rgb"] == f"training/rgb/{i:08d}.jpg"
        assert s.provenance["mask"] == f"training/mask/{i % N:08d}.jpg"
        assert s.labels == {"hand": True, "object": False, "sides": True} and s.objects == []
        assert s.key == f"freihand/{r.split}/{VERSIONS[i // N]}/{i:08d}"


def test_all_versions_of_an_annotation_share_a_split(demo_out, tmp_path):
    src = open_source("freihand", root_of(demo_out), {"val_fraction": 0.4})
    by_index: dict[int, set] = {}
    for r in src.frames():
        if r.split != "test":
            by_index.setdefault(int(r.frame) % N, set()).add(r.split)
    assert len(by_index) == N and all(len(v) == 1 for v in by_index.values())
    assert {next(iter(v)) for v in by_index.values()} == {"train", "val"}
    assert src.describe()["split_counts"] == {"train": sum(v == {"train"} for v in by_index.values()),
                                              "val": sum(v == {"val"} for v in by_index.values())}
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"train": ["0", "1", "2"], "val": ["3", "4"]}))
    refs = open_source("freihand", root_of(demo_out), {"split_file": str(split_file)}).frames()
    assert {int(r.frame) % N: r.split for r in refs if r.split != "test"} == {0: "train", 1: "train", 2: "train",
                                                                            3: "val", 4: "val"}


def test_mask_threshold_and_agreement(demo_out):
    root = root_of(demo_out)
    provided = open_source("freihand", root, {"mano_dir": str(demo_out / "mano")})
    rendered = open_source("freihand", root, {"mano_dir": str(demo_out / "mano"), "masks": "rendered"})
    for r in provided.frames()[:N]:
        a, b = provided.load(r), rendered.load(r)
        assert a.extra["mask_source"] == "provided" and b.extra["mask_source"] == "rendered"
        assert a.extra["mask_agreement"] == b.extra["mask_agreement"]
        iou = a.extra["mask_agreement"]["hand_iou"]
        assert iou > 0.97  # the demo mask is a JPEG of the same render
        inter = ((a.seg == HAND) & (b.seg == HAND)).sum()
        assert iou == pytest.approx(inter / ((a.seg == HAND) | (b.seg == HAND)).sum(), abs=1e-4)
        # the midpoint threshold of the luminance recovers the mask the JPEG was made from
        jpg = root / "training" / "mask" / f"{int(r.frame):08d}.jpg"
        gray = cv2.imread(str(jpg), cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(threshold_mask(jpg.read_bytes(), jpg), gray > 127)
        assert abs(int((gray > 127).sum()) - int((b.seg == HAND).sum())) <= 5
    # without MANO: provided masks still build, no agreement; rendered masks refuse to start
    bare = open_source("freihand", root, {})
    assert "mask_agreement" not in bare.load(bare.frames()[0]).extra


def test_rendered_without_mano_says_where_to_get_it(demo_out, monkeypatch):
    monkeypatch.delenv("MANO_DIR", raising=False)
    with pytest.raises(DataError, match=r"mano\.is\.tue\.mpg\.de"):
        open_source("freihand", root_of(demo_out), {"masks": "rendered"})
    with pytest.raises(DataError, match="training_K.json missing.*try --root"):
        open_source("freihand", demo_out, {})


def test_evaluation_split_built_when_ground_truth_exists(tree, tmp_path):
    root = root_of(tree)
    src = open_source("freihand", root, {"mano_dir": str(tree / "mano")})
    test = [r for r in src.frames() if r.split == "test"]
    assert [(r.sequence, r.frame) for r in test] == [("evaluation", "00000000"), ("evaluation", "00000001")]
    s = src.load(test[0])
    assert s.provenance["mask"] == "evaluation/segmap/00000000.png" and s.extra["mask_agreement"]["hand_iou"] > 0.99
    assert "built as split 'test'" in src.describe()["evaluation"]
    # only vertices left: rendered from them
    shutil.rmtree(root / "evaluation" / "segmap")
    src = open_source("freihand", root, {"mano_dir": str(tree / "mano")})
    s = src.load([r for r in src.frames() if r.split == "test"][0])
    assert s.extra["mask_source"] == "rendered" and (s.seg == HAND).any()
    # no ground truth at all: skipped, and said so
    (root / "evaluation_verts.json").unlink()
    src = open_source("freihand", root, {"mano_dir": str(tree / "mano")})
    assert not any(r.split == "test" for r in src.frames())
    assert src.describe()["evaluation"].startswith("skipped: no ground truth")


def test_missing_files_are_skipped_and_recorded(tree, tmp_path):
    root = root_of(tree)
    (root / "training" / "mask" / "00000001.jpg").unlink()  # annotation 1: all four versions lose their mask
    rgb = root / "training" / "rgb" / f"{2 * N + 3:08d}.jpg"
    rgb.write_bytes(rgb.read_bytes()[:150])
    rec = build(open_source("freihand", root, {}), BuildConfig(out=tmp_path / "s", progress=False))
    skipped = {int(s["frame"]): s for s in rec["skipped"]}
    assert set(skipped) == {1, N + 1, 2 * N + 1, 3 * N + 1, 2 * N + 3}
    assert "mask missing" in skipped[N + 1]["reason"] and skipped[N + 1]["file"].endswith("mask/00000001.jpg")
    assert "does not decode" in skipped[2 * N + 3]["reason"]
    assert rec["totals"]["samples"] == 4 * N + 2 - 5


def test_cli_demo_then_build(tmp_path):
    runner = CliRunner()
    res = runner.invoke(hodata_cli, ["demo", "--layout", "freihand", "--out", str(tmp_path / "d"), "--frames", "3"])
    assert res.exit_code == 0, res.output
    d = tmp_path / "d"
    assert len(list((d / "FreiHAND_pub_v2" / "training" / "rgb").glob("*.jpg"))) == 12
    res = runner.invoke(hodata_cli, ["build", "--source", "freihand", "--root", str(d / "FreiHAND_pub_v2"),
                                     "--mano-dir", str(d / "mano"), "--out", str(tmp_path / "s"), "--quiet"])
    assert res.exit_code == 0, res.output
    n = 0
    for tar in sorted((tmp_path / "s").glob("freihand-*.tar")):
        with tarfile.open(tar) as tf:
            members = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
        for name, data in members.items():
            if name.endswith(".seg.png"):
                n += 1
                seg = decode_seg(data)
                assert seg.shape == (224, 224) and set(np.unique(seg).tolist()) == {0, 1}
                meta = json.loads(members[name[: -len("seg.png")] + "json"])
                assert meta["labels"] == {"hand": True, "object": False, "sides": True}
                assert meta["extra"]["mask_agreement"]["hand_iou"] > 0.95
    assert n == 12 + 2


def test_manifest_facts_match_the_code():
    from hodata.sources import freihand

    facts = manifests.load("freihand.json")
    assert tuple(facts["versions"]) == freihand.VERSIONS
    assert facts["mask"]["threshold"] == freihand.MASK_THRESHOLD


def test_vertices_parse_like_json(demo_out, tmp_path):
    from hodata.sources.freihand import load_vertices

    path = root_of(demo_out) / "training_verts.json"
    want = np.asarray(json.loads(path.read_text()), np.float32)
    assert np.array_equal(load_vertices(path, N), want)
    with pytest.raises(DataError, match=f"expected {N + 1} x 778 x 3"):
        load_vertices(path, N + 1)
    bad = tmp_path / "v.json"
    bad.write_text('[[[1, 2, "x"]]]')
    with pytest.raises(DataError, match="parsed"):
        load_vertices(bad, 1)


def test_imports_no_other_source():
    """A source module knows one dataset: what FreiHAND shares with other sources lives in named shared modules."""
    code = ("import json, sys, hodata.sources.freihand; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('hodata.sources.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == ["hodata.sources.files", "hodata.sources.freihand", "hodata.sources.options",
                               "hodata.sources.rendered"]


def test_mask_iou():
    a = np.zeros((4, 4), bool)
    assert mask_iou(a, a) is None  # both empty: undefined, not 0 or 1
    b = a.copy()
    a[:2] = True
    b[1:3] = True
    assert mask_iou(a, b) == round(4 / 12, 4)



def test_pixel_convention_is_measured_and_chosen(tree):
    """Masks made under a pixel-corner convention (principal point half a pixel off ours) are detected on the
    first annotations; renders and the recorded K then follow it."""
    from hodata.render import render_labels
    from hodata.mano import load_mano

    root = root_of(tree)
    opts = {"mano_dir": str(tree / "mano"), "masks": "rendered"}
    src = open_source("freihand", root, opts)
    src.frames()
    conv = src.describe()["pixel_convention"]
    assert conv["chosen"] == "centres" and conv["measured"] and conv["frames"] == N
    assert conv["hand_iou"]["centres"] > conv["hand_iou"]["corners"]
    K_all = np.asarray(json.loads((root / "training_K.json").read_text()))
    verts = np.asarray(json.loads((root / "training_verts.json").read_text()))
    faces = load_mano(tree / "mano" / "MANO_RIGHT.pkl").faces
    for i in range(N):  # redo the masks as a renderer sampling pixel corners would have drawn them
        K = K_all[i].copy()
        K[:2, 2] -= 0.5
        hand = render_labels(K, (128, 128), [(verts[i], faces, 1)]) == 1
        cv2.imwrite(str(root / "training" / "mask" / f"{i:08d}.jpg"), np.repeat((hand * 255).astype(np.uint8)[..., None], 3, 2))
    src = open_source("freihand", root, opts)
    refs = src.frames()
    conv = src.describe()["pixel_convention"]
    assert conv["chosen"] == "corners" and conv["cx_cy_shift"] == -0.5
    assert conv["hand_iou"]["corners"] > conv["hand_iou"]["centres"]
    s = src.load(refs[0])
    np.testing.assert_allclose(np.asarray(s.camera["K"])[:2, 2], K_all[0][:2, 2] - 0.5)
    want = cv2.imread(str(root / "training" / "mask" / "00000000.jpg"), cv2.IMREAD_GRAYSCALE) > 127
    assert mask_iou(s.seg == HAND, want) > 0.99
    assert s.extra["mask_agreement"]["min_iou"] == s.extra["mask_agreement"]["hand_iou"]


def test_training_xyz_are_regressed_from_the_posed_mesh(demo_out):
    """FreiHAND's keypoints: J_regressor on the posed vertices (not the skinned joints), tips 744 320 443 555 672."""
    from hodata.mano import load_mano

    root = root_of(demo_out)
    model = load_mano(demo_out / "mano" / "MANO_RIGHT.pkl")
    xyz = np.asarray(json.loads((root / "training_xyz.json").read_text()))
    verts = np.asarray(json.loads((root / "training_verts.json").read_text()))
    mano = np.asarray(json.loads((root / "training_mano.json").read_text()))[:, 0]  # (N, 61)
    # the toolkit's own mapping: MANO joint -> FreiHAND keypoint, and keypoint -> tip vertex
    to_kp = {0: 0, 1: 5, 2: 6, 3: 7, 4: 9, 5: 10, 6: 11, 7: 17, 8: 18, 9: 19, 10: 13, 11: 14, 12: 15,
             13: 1, 14: 2, 15: 3}
    tips = {4: 744, 8: 320, 12: 443, 16: 555, 20: 672}
    for i in range(N):
        want = np.zeros((21, 3))
        for j, kp in to_kp.items():
            want[kp] = sum(model.J_regressor[j, v] * verts[i, v] for v in np.flatnonzero(model.J_regressor[j]))
        for kp, v in tips.items():
            want[kp] = verts[i, v]
        np.testing.assert_allclose(xyz[i], want, atol=1e-9)
        # not the skinned joints: those sit elsewhere on a posed hand
        rest_verts, skinned = model.forward(mano[i, :48], mano[i, 48:58], flat_hand_mean=False)
        skinned = skinned + verts[i].mean(axis=0) - rest_verts.mean(axis=0)
        assert max(np.abs(skinned[j] - want[kp]).max() for j, kp in to_kp.items()) > 1e-4
    d = open_source("freihand", root, {"mano_dir": str(demo_out / "mano")}).describe()
    assert d["mano_convention"]["joints"] == "regressed" and d["mano_convention"]["tips"] == "freihand"


def test_amodal_is_the_rendered_hand(demo_out):
    root = root_of(demo_out)
    src = open_source("freihand", root, {"mano_dir": str(demo_out / "mano"), "amodal": True})
    rendered = open_source("freihand", root, {"mano_dir": str(demo_out / "mano"), "masks": "rendered"})
    ref = src.frames()[0]
    s = src.load(ref)
    assert s.extra["mask_source"] == "provided"
    np.testing.assert_array_equal(s.amodal, (rendered.load(ref).seg == HAND).astype(np.uint8))
    with pytest.raises(DataError, match="--amodal renders the hand"):
        open_source("freihand", root, {"amodal": True})


def test_a_left_model_in_place_of_the_right_stops_the_source(tree):
    (tree / "mano" / "MANO_RIGHT.pkl").write_bytes((tree / "mano" / "MANO_LEFT.pkl").read_bytes())
    with pytest.raises(DataError, match=r"MANO_RIGHT\.pkl: this is a left-hand model"):
        open_source("freihand", root_of(tree), {"mano_dir": str(tree / "mano")})


def test_manifest_summarises_the_agreement_and_names_the_worst_frames(tree, tmp_path):
    """One mask spoilt: the build's totals rank it first, by name, with the mean and 1st percentile beside it."""
    root = root_of(tree)
    bad = root / "training" / "mask" / "00000003.jpg"
    m = cv2.imread(str(bad), cv2.IMREAD_GRAYSCALE)
    m[: m.shape[0] // 2] = 0  # half the hand gone: this annotation's four images agree worst
    cv2.imwrite(str(bad), m)
    rec = build(open_source("freihand", root, {"mano_dir": str(tree / "mano")}),
                BuildConfig(out=tmp_path / "s", progress=False))
    q = rec["totals"]["quality"]["hand_iou"]
    assert q["frames"] == rec["totals"]["samples"] == q["ranked_frames"]
    worst = q["worst"]
    assert len(worst) == min(20, q["frames"]) and [w["value"] for w in worst] == sorted(w["value"] for w in worst)
    assert {w["frame"].rsplit("/", 1)[1] for w in worst[:4]} == {f"{3 + k * N:08d}" for k in range(4)}
    assert worst[0]["value"] < 0.8 < q["mean"] and q["p01"] <= q["mean"] and worst[0]["value"] == q["min"]
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["builds"]["freihand"]["totals"]["quality"]["hand_iou"]["worst"] == worst


def test_label_agreement_equals_the_mask_by_mask_figures():
    from hodata.sources.rendered import label_agreement, mask_agreement

    rng = np.random.default_rng(4)
    provided = rng.choice(np.array([0, 1, 2], np.uint8), (33, 50), p=[0.6, 0.3, 0.1])
    rendered = np.where(rng.random((33, 50)) < 0.8, provided, rng.choice(np.array([0, 1, 2, 7], np.uint8), (33, 50)))
    want = mask_agreement({"hand_iou": (provided == 1, rendered == 1), "object_iou": (provided == 2, rendered == 2)})
    assert label_agreement(provided, rendered, {"hand_iou": 1, "object_iou": 2}) == want
    empty = label_agreement(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), {"hand_iou": 1})
    assert empty == {"hand_iou": None, "min_iou": 1.0}
