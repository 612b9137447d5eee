"""Label maps as PNG (hodata.label_png) and their nearest upsampling (hodata.upsample): what every reader gets."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from hodata.label_png import encode_label_png
from hodata.schema import decode_seg, encode_seg
from hodata.upsample import upsample_nearest


def label_maps():
    rng = np.random.default_rng(5)
    runs = np.zeros((48, 64), np.uint8)
    runs[5:30, 7:40] = 1
    runs[20:44, 30:61] = 2
    runs[:, 63] = 255
    yield "runs", runs
    yield "noise", rng.integers(0, 256, (33, 17), dtype=np.uint8)
    yield "one pixel", np.full((1, 1), 7, np.uint8)
    yield "one row", rng.integers(0, 3, (1, 129), dtype=np.uint8)
    yield "one column", rng.integers(0, 3, (31, 1), dtype=np.uint8)
    yield "strided view", rng.integers(0, 256, (40, 50), dtype=np.uint8)[::2, 1::3]


@pytest.mark.parametrize("name,values", list(label_maps()), ids=[n for n, _ in label_maps()])
def test_every_reader_decodes_the_same_values(name, values):
    data = encode_label_png(np.asarray(values))
    assert np.array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), values)
    assert np.array_equal(decode_seg(data), values)  # what hotrain reads
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG" and im.mode == "L" and im.size == (values.shape[1], values.shape[0])
        im.verify()  # chunk CRCs
    with Image.open(io.BytesIO(data)) as im:
        assert np.array_equal(np.asarray(im), values)
    decoded = wds.autodecode.imagehandler("l8")("seg.png", data)  # webdataset's own PNG decoding
    assert np.array_equal(decoded, values)


def test_encode_seg_is_the_label_png_and_refuses_what_is_not_a_map():
    runs = dict(label_maps())["runs"]
    assert encode_seg(runs) == encode_label_png(runs)
    with pytest.raises(ValueError, match="2-D uint8"):
        encode_label_png(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="2-D uint8"):
        encode_label_png(np.zeros((4, 4), np.uint16))
    with pytest.raises(ValueError, match="empty"):
        encode_label_png(np.zeros((0, 4), np.uint8))


def test_rendered_maps_stay_small():
    seg = np.zeros((480, 640), np.uint8)
    cv2.circle(seg, (300, 200), 90, 1, -1)
    cv2.rectangle(seg, (330, 180), (470, 330), 2, -1)
    assert len(encode_label_png(seg)) < 4000  # runs compress (raw: 307 KB)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_upsampling_is_opencv_nearest_at_integer_factors(factor):
    small = np.random.default_rng(factor).integers(0, 3, (30, 40), dtype=np.uint8)
    size = (40 * factor, 30 * factor)
    up = upsample_nearest(small, size)
    assert np.array_equal(up, cv2.resize(small, size, interpolation=cv2.INTER_NEAREST))
    assert np.array_equal(up, np.repeat(np.repeat(small, factor, 0), factor, 1))


def test_upsampling_any_size_takes_the_floor_source_pixel():
    small = np.arange(12, dtype=np.uint8).reshape(3, 4)
    up = upsample_nearest(small, (10, 7))
    ys, xs = (np.arange(7) * 3) // 7, (np.arange(10) * 4) // 10
    assert np.array_equal(up, small[ys[:, None], xs[None, :]])
    same = upsample_nearest(small, (4, 3))
    assert np.array_equal(same, small) and same is not small
    with pytest.raises(ValueError, match="2-D uint8"):
        upsample_nearest(small.astype(np.int32), (8, 6))
