"""Synthetic scene painter and demo dataset writers: determinism, mask consistency, release-like structure."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.io

from hodata.demo import egohands as egohands_demo
from hodata.demo import egohos as egohos_demo
from hodata.demo.blobs import compose_scene, paint_scene


def hsv(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32)


def test_scene_is_deterministic_and_seed_dependent():
    a = compose_scene(np.random.default_rng(7))
    b = compose_scene(np.random.default_rng(7))
    c = compose_scene(np.random.default_rng(8))
    np.testing.assert_array_equal(a.rgb, b.rgb)
    assert [h.side for h in a.hands] == [h.side for h in b.hands]
    assert not np.array_equal(a.rgb, c.rgb)


def test_paint_scene_short_form():
    rgb, hands, objects = paint_scene(np.random.default_rng(0), (96, 64), n_hands=2, n_objects=2)
    assert rgb.shape == (64, 96, 3) and rgb.dtype == np.uint8
    assert len(hands) == 2 and len(objects) >= 2
    assert all(m.shape == (64, 96) and m.dtype == bool for m in hands + objects)


@pytest.mark.parametrize("seed", range(6))
def test_scene_masks_are_consistent(seed):
    s = compose_scene(np.random.default_rng(seed), (160, 120), n_hands=2, n_objects=2, second_order=1.0)
    visible = [h.mask for h in s.hands] + [o.mask for o in s.objects]
    total = np.sum(visible, axis=0)
    assert total.max() <= 1  # visible masks never overlap
    for h in s.hands:
        assert h.mask.sum() > 200 and (h.mask <= h.full).all()
    for o in s.objects:
        assert (o.mask <= o.full).all()
        assert not (o.mask & np.logical_or.reduce([h.full for h in s.hands])).any()  # hands cover objects
        if o.order == 1:
            assert o.touches and set(o.touches) <= {"left", "right"}
    assert [o.order for o in s.objects].count(2) == 1


def test_classes_are_told_apart_by_colour():
    """The learnable part: hands are skin hues, objects saturated, the background muted."""
    hand_s, obj_s, bg_s, hand_h = [], [], [], []
    for seed in range(10):
        s = compose_scene(np.random.default_rng(seed), n_objects=2)
        px = hsv(s.rgb)
        hands = np.logical_or.reduce([h.mask for h in s.hands])
        objects = np.logical_or.reduce([o.mask for o in s.objects]) if s.objects else np.zeros_like(hands)
        hand_s.append(px[..., 1][hands].mean())
        hand_h.append(np.median(px[..., 0][hands]))
        if objects.any():
            obj_s.append(px[..., 1][objects].mean())
        bg_s.append(px[..., 1][~hands & ~objects].mean())
    assert min(obj_s) > 150 > max(hand_s)
    assert max(bg_s) < min(hand_s)
    assert all(3 <= h <= 22 for h in hand_h)


def test_egohos_demo_ids_follow_the_scene(tmp_path):
    info = egohos_demo.write(tmp_path / "eh", frames=8, seed=1, size=(80, 60))
    assert info["root"] == str(tmp_path / "eh") and "--source egohos" in info["build_command"]
    assert egohos_demo.split_counts(8) == {"train": 2, "val": 2, "test_indomain": 2, "test_outdomain": 2}
    assert egohos_demo.split_counts(48) == {"train": 34, "val": 7, "test_indomain": 5, "test_outdomain": 2}
    with pytest.raises(ValueError):
        egohos_demo.split_counts(7)
    assert [egohos_demo.object_id(1, t) for t in (("left",), ("right",), ("left", "right"))] == [3, 4, 5]
    assert [egohos_demo.object_id(2, t) for t in (("left",), ("right",), ("right", "left"))] == [6, 7, 8]
    images = sorted((tmp_path / "eh").glob("*/image/*.jpg"))
    assert len(images) == 8
    for img_path in images:
        label = cv2.imread(str(img_path.parent.parent / "label" / (img_path.stem + ".png")), cv2.IMREAD_UNCHANGED)
        img = cv2.cvtColor(cv2.imread(str(img_path)), cv2.COLOR_BGR2RGB)
        assert label.shape == img.shape[:2] == (60, 80)
        hand = np.isin(label, [1, 2])
        if hand.sum() > 50:  # hand pixels in the JPEG really are skin-coloured
            assert hsv(img)[..., 1][hand].mean() < 150


def test_egohos_label_map_from_scene():
    s = compose_scene(np.random.default_rng(3), n_hands=2, n_objects=2, second_order=1.0)
    label = egohos_demo.egohos_label(s)
    for h in s.hands:
        assert (label[h.mask] == egohos_demo.HAND_IDS[h.side]).all()
    for o in s.objects:
        assert (label[o.mask] == egohos_demo.object_id(o.order, o.touches)).all()
    contact = egohos_demo.contact_map(s)
    assert contact.any() and np.isin(label[contact == 1], [1, 2]).all()


def test_egohands_demo_release_structure(tmp_path):
    info = egohands_demo.write(tmp_path, frames_per_video=3, videos=3, seed=2)
    root = tmp_path / "egohands_data"
    assert info["root"] == str(root)
    meta = scipy.io.loadmat(root / "metadata.mat")  # plain loadmat defaults, as users of the release call it
    video = meta["video"]
    assert video.shape == (1, 3)
    assert video.dtype.names == egohands_demo.VIDEO_FIELDS
    for v in video[0]:
        vid = str(v["video_id"][0])
        activity, location, viewer, partner = vid.split("_")
        assert str(v["partner_video_id"][0]) == f"{activity}_{location}_{partner}_{viewer}"
        lf = v["labelled_frames"]
        assert lf.shape == (1, 3) and lf.dtype.names == ("frame_num",) + egohands_demo.SLOTS
        nums = [int(f["frame_num"][0, 0]) for f in lf[0]]
        assert nums == sorted(nums)
        files = sorted(p.name for p in (root / "_LABELLED_SAMPLES" / vid).glob("frame_*.jpg"))
        assert files == [f"frame_{n:04d}.jpg" for n in nums]
        polys = scipy.io.loadmat(root / "_LABELLED_SAMPLES" / vid / "polygons.mat")["polygons"]
        assert polys.shape == (1, 3) and polys.dtype.names == egohands_demo.SLOTS
        for i, p in enumerate(polys[0]):
            for slot in egohands_demo.SLOTS:
                np.testing.assert_array_equal(p[slot], lf[0, i][slot])
                if p[slot].size:
                    assert p[slot].ndim == 2 and p[slot].shape[1] == 2 and p[slot].dtype == np.float64
                    assert p[slot].min() >= 0.5  # 1-based coordinates
    assert len({str(v["video_id"][0]) for v in video[0]}) == 3


def test_egohands_polygons_cover_the_painted_hands():
    rng = np.random.default_rng(4)
    from hodata.sources.egohands import rasterize_polygon

    for _ in range(4):
        img, polys = egohands_demo.frame_annotation(rng, (160, 90))
        union = np.zeros((90, 160), bool)
        for p in polys.values():
            if p.size:
                union |= rasterize_polygon(p - 1, 90, 160)
        if union.any():
            skin = hsv(img)[..., 1][union].mean()
            assert skin < 150  # the polygons enclose skin, not saturated objects
