"""Table lookups on label maps, and the builder's one-pass checks of a sample's maps."""

import numpy as np
import pytest

from hodata.frame_encode import checked_histogram
from hodata.label_lookup import lookup, lookup2_counts
from hodata.schema import Sample, apply_lut, instance, label_histogram


def _maps():
    """Runs (mapped a word at a time), words that cross a boundary, a tail shorter than a word, strided views."""
    rng = np.random.default_rng(1)
    runs = np.repeat(rng.choice(np.arange(9, dtype=np.uint8), 600), rng.integers(20, 40, 600))[:12_005]
    noise = rng.integers(0, 256, 1_001).astype(np.uint8)
    return [runs, runs[3:], runs[:12_005 // 7 * 7].reshape(-1, 7)[:, 2:], noise, noise.reshape(7, 143)[:, ::2],
            np.zeros(5, np.uint8), np.zeros((0, 4), np.uint8)]


def test_lookup_equals_numpy_indexing():
    rng = np.random.default_rng(2)
    lut = rng.integers(0, 256, 256).astype(np.uint8)
    for m in _maps():
        got = lookup(m, lut)
        assert got.shape == m.shape and got.dtype == np.uint8
        assert np.array_equal(got, lut[m])
        assert np.array_equal(apply_lut(m, lut), lut[m])


def test_lookup2_counts_maps_through_both_tables_and_counts_the_source():
    rng = np.random.default_rng(3)
    lut1, lut2 = rng.integers(0, 256, (2, 256)).astype(np.uint8)
    for m in _maps():
        a, b, hist = lookup2_counts(m, lut1, lut2)
        assert np.array_equal(a, lut1[m]) and np.array_equal(b, lut2[m])
        assert np.array_equal(hist, np.bincount(m.ravel(), minlength=256))
    with pytest.raises(ValueError, match="256 entries"):
        lookup(np.zeros(4, np.uint8), np.zeros(10, np.uint8))


def _sample(seg, inst, instances):
    h, w = seg.shape
    return Sample(source="t", split="train", sequence="s", frame="0", image=b"", image_ext="jpg", seg=seg,
                  width=w, height=h, labels={"hand": True, "object": True}, inst=inst, instances=instances)


def test_checked_histogram_takes_the_label_counts_from_the_joint_pass():
    rng = np.random.default_rng(4)
    ids = np.repeat(rng.choice(np.array([0, 1, 2, 3], np.uint8), 300), rng.integers(1, 30, 300))[:48 * 64]
    ids = ids.reshape(48, 64)
    instances = [instance(1, "hand", "left"), instance(2, "hand", "right"), instance(3, "object")]
    seg = apply_lut(ids, np.array([0, 1, 1, 2] + [255] * 252, np.uint8))
    s = _sample(seg, ids.copy(), instances)
    assert np.array_equal(checked_histogram(s), label_histogram(seg))
    assert s.inst is not s.seg
    members = s.members()
    assert members["inst.png"] != members["seg.png"]
    # an instance map equal to the label map pixel for pixel is stored once
    same = _sample(seg, seg.copy(), [instance(1, "hand", "left"), instance(2, "object")])
    assert np.array_equal(checked_histogram(same), label_histogram(seg))
    assert same.inst is same.seg
    # a value that is no label is named, as the full histogram names it
    bad = seg.copy()
    bad[5, 5] = 7
    with pytest.raises(ValueError, match=r"outside 0/1/2/255: \[7\]"):
        checked_histogram(_sample(bad, np.where(bad == 7, 0, ids).astype(np.uint8), instances))
    wrong_size = _sample(seg, ids, instances)
    wrong_size.width = 10
    with pytest.raises(ValueError, match="label map is 64x48, image is 10x48"):
        checked_histogram(wrong_size)
