"""Label maps as PNG (hodata.label_png: written, and read back as Pillow reads them) and their nearest
upsampling (hodata.upsample)."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from hodata.label_png import PNGError, decode_label_png, encode_label_png
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


def filtered_png(values: np.ndarray, filters: list[int], colour: int, depth: int = 8, interlace: int = 0) -> bytes:
    """A PNG whose row y is stored with filter ``filters[y % len(filters)]``, encoded here from the spec's
    definitions (section 9), not by the decoder under test."""
    height = values.shape[0]
    bpp = 1 if values.ndim == 2 else values.shape[2]
    cur = values.reshape(height, -1).astype(np.int32)
    rows = []
    for y in range(height):
        f = filters[y % len(filters)]
        x = cur[y]
        up = cur[y - 1] if y else np.zeros_like(x)
        left = np.concatenate([np.zeros(bpp, np.int32), x[:-bpp]])
        up_left = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
        if f == 4:  # (a filter byte above 4 stores the row as it is: for a file that must be refused)
            p = left + up - up_left
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
        else:
            pred = [np.zeros_like(x), left, up, (left + up) // 2][f] if f < 4 else np.zeros_like(x)
        rows.append(bytes([f]) + ((x - pred) % 256).astype(np.uint8).tobytes())
    width = values.shape[1]

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    plte = chunk(b"PLTE", bytes(range(256)) * 3) if colour == 3 else b""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + plte + chunk(b"IDAT", zlib.compress(b"".join(rows)))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("colour,channels", [(0, 1), (3, 1), (4, 2), (2, 3), (6, 4)])
def test_every_filter_of_every_8_bit_kind_reads_as_pillow_reads_it(colour, channels):
    rng = np.random.default_rng(colour)
    shape = (23, 19) if channels == 1 else (23, 19, channels)
    values = rng.integers(0, 256, shape, dtype=np.uint8)
    values[5:15, 3:12] = values[5, 3]  # runs as in a label map, beside noise
    data = filtered_png(values, [0, 1, 2, 3, 4, 4, 3, 2, 1], colour)
    got = decode_label_png(data)
    with Image.open(io.BytesIO(data)) as im:  # palette: Pillow's "P" array holds the indices too
        assert np.array_equal(got, np.asarray(im)) and np.array_equal(got, values)
    one_row = filtered_png(values[:1], [4], colour)  # Up, Average and Paeth on a first row
    assert np.array_equal(decode_label_png(one_row), values[:1])


def test_what_the_reader_leaves_or_refuses():
    values = np.random.default_rng(3).integers(0, 16, (9, 12), dtype=np.uint8)
    with Image.fromarray(values, "P") as im:  # 16 colours: Pillow writes 4 bits per pixel
        im.putpalette(list(range(48)))
        bio = io.BytesIO()
        im.save(bio, "PNG")
    assert decode_label_png(bio.getvalue()) is None  # another depth: for a general decoder
    assert decode_label_png(filtered_png(values, [0], 0, interlace=1)) is None
    good = encode_label_png(values)
    assert np.array_equal(decode_label_png(good), values)
    damaged = bytearray(good)
    damaged[45] ^= 0x10  # inside the IDAT data
    for data, why in [(bytes(damaged), "checksum"), (good[:-20], "cut short"), (good[:40], "cut short"),
                      (b"GIF89a" + good[6:], "not a PNG"), (filtered_png(values, [5], 0), "filter type")]:
        with pytest.raises(PNGError, match=why):
            decode_label_png(data)
        with pytest.raises(ValueError, match="seg.png does not decode"):
            decode_seg(data)


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
