"""A JPEG's size from its frame header (hodata.jpeg_header): what Pillow says, or None for Pillow to decide."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from hodata.errors import BadFrame
from hodata.jpeg_header import jpeg_frame_size
from hodata.schema import checked_image_size


def jpegs():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)
    yield "opencv", cv2.imencode(".jpg", img)[1].tobytes()
    for name, kwargs in (("progressive", {"progressive": True}), ("optimized", {"optimize": True}),
                         ("grey", {}), ("exif", {"exif": Image.Exif()}), ("4:4:4", {"subsampling": 0})):
        bio = io.BytesIO()
        pil = Image.fromarray(img[..., 0] if name == "grey" else img)
        if name == "exif":
            kwargs["exif"][0x010F] = "camera"
        pil.save(bio, format="JPEG", quality=90, **kwargs)
        yield name, bio.getvalue()
    plain = cv2.imencode(".jpg", img)[1].tobytes()
    yield "fill bytes", plain[:2] + b"\xff\xff" + plain[2:]  # a marker may be preceded by fill bytes
    yield "big", cv2.imencode(".jpg", np.zeros((1080, 1920, 3), np.uint8))[1].tobytes()


@pytest.mark.parametrize("name,data", list(jpegs()), ids=[n for n, _ in jpegs()])
def test_size_is_pillows(name, data):
    with Image.open(io.BytesIO(data)) as im:
        assert jpeg_frame_size(data) == im.size
    assert checked_image_size(data, "x.jpg") == im.size


def test_what_is_not_a_plain_jpeg_is_left_to_pillow():
    data = dict(jpegs())["opencv"]
    png = cv2.imencode(".png", np.zeros((4, 6), np.uint8))[1].tobytes()
    assert jpeg_frame_size(png) is None and checked_image_size(png, "x.png") == (6, 4)
    assert jpeg_frame_size(b"\xff\xd8\xff\xd9") is None
    assert jpeg_frame_size(data[:2] + b"\x00" + data[3:]) is None  # not a marker where one must be


def test_a_cut_anywhere_in_the_headers_is_never_a_size():
    data = dict(jpegs())["optimized"]
    scan = data.index(b"\xff\xda")
    for cut in range(2, scan + 12):
        assert jpeg_frame_size(data[:cut]) is None, cut
        # even where the cut happens to end in FF D9 (the end marker), the headers are not all there
        assert jpeg_frame_size(data[:cut] + b"\xff\xd9") is None, cut
        with pytest.raises(BadFrame):
            checked_image_size(data[:cut], "cut.jpg")
