"""A contact sheet: a grid of samples with their label maps blended over the images.

Hand pixels are tinted green, object pixels magenta, ignore (255) pixels greyed and hatched; background is
left as is. Each tile is letterboxed into a common size (image: area filter, labels: nearest) and carries
a caption (the sample key: source/split/sequence/frame). A legend strip sits on top. The PNG is written
to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from hodata.errors import DataError
from hodata.schema import HAND, IGNORE, OBJECT, decode_image

HAND_RGB = (0, 255, 0)
OBJECT_RGB = (255, 0, 255)
IGNORE_RGB = (128, 128, 128)
HATCH_RGB = (40, 40, 40)
ALPHA = 0.5  # overlay opacity
HATCH_PERIOD = 6  # pixels between hatch lines; each line is 2 pixels wide
BACKDROP_RGB = (24, 24, 24)
TEXT_RGB = (235, 235, 235)
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.4


@dataclass(frozen=True)
class SheetLayout:
    """Where everything goes; ``size`` and ``tile_box`` let callers (and tests) find a tile's pixels."""

    n: int
    tile_w: int = 256
    tile_h: int = 192
    caption_h: int = 16
    pad: int = 4
    legend_h: int = 20
    cols: int = 0  # 0: about square

    @property
    def ncols(self) -> int:
        return self.cols or max(1, math.ceil(math.sqrt(self.n)))

    @property
    def nrows(self) -> int:
        return max(1, math.ceil(self.n / self.ncols))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the sheet."""
        w = self.ncols * (self.tile_w + self.pad) + self.pad
        h = self.legend_h + self.nrows * (self.tile_h + self.caption_h + self.pad) + self.pad
        return w, h

    def tile_box(self, i: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of tile ``i``'s image area (caption below it)."""
        r, c = divmod(i, self.ncols)
        x0 = self.pad + c * (self.tile_w + self.pad)
        y0 = self.legend_h + self.pad + r * (self.tile_h + self.caption_h + self.pad)
        return x0, y0, x0 + self.tile_w, y0 + self.tile_h


def letterbox_box(width: int, height: int, tile_w: int, tile_h: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) inside a tile where an image of this size goes, keeping its aspect ratio."""
    scale = min(tile_w / width, tile_h / height)
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    return (tile_w - w) // 2, (tile_h - h) // 2, w, h


def overlay(rgb: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Blend the label colours over an RGB image of the same size (returns a new uint8 image)."""
    out = rgb.astype(np.float32)
    for label, colour in ((HAND, HAND_RGB), (OBJECT, OBJECT_RGB), (IGNORE, IGNORE_RGB)):
        m = seg == label
        out[m] = (1 - ALPHA) * out[m] + ALPHA * np.asarray(colour, np.float32)
    ignore = seg == IGNORE
    if ignore.any():
        yy, xx = np.indices(seg.shape)
        hatch = ignore & (((xx + yy) % HATCH_PERIOD) < 2)
        out[hatch] = HATCH_RGB
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def render_tile(image: bytes, seg: np.ndarray, layout: SheetLayout) -> np.ndarray:
    """One tile (tile_h x tile_w x 3): the letterboxed image with its overlay."""
    rgb = decode_image(image)
    h, w = seg.shape
    if rgb.shape[:2] != (h, w):
        raise ValueError(f"image is {rgb.shape[1]}x{rgb.shape[0]}, seg.png is {w}x{h}")
    x, y, tw, th = letterbox_box(w, h, layout.tile_w, layout.tile_h)
    small = cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA if tw < w else cv2.INTER_LINEAR)
    small_seg = cv2.resize(seg, (tw, th), interpolation=cv2.INTER_NEAREST)
    tile = np.empty((layout.tile_h, layout.tile_w, 3), np.uint8)
    tile[:] = BACKDROP_RGB
    tile[y:y + th, x:x + tw] = overlay(small, small_seg)
    return tile


def caption_text(key: str, width: int) -> str:
    """The sample key if it fits, else ``source/split/frame``, else that cut from the left."""
    if cv2.getTextSize(key, FONT, FONT_SCALE, 1)[0][0] <= width:
        return key
    parts = key.split("/")
    short = "/".join(parts[:2] + parts[-1:]) if len(parts) > 3 else key
    return fit_text(short, width)


def fit_text(text: str, width: int) -> str:
    """Cut ``text`` from the left (keeping the frame end) until it fits ``width`` pixels."""
    if cv2.getTextSize(text, FONT, FONT_SCALE, 1)[0][0] <= width:
        return text
    while len(text) > 1 and cv2.getTextSize("..." + text, FONT, FONT_SCALE, 1)[0][0] > width:
        text = text[1:]
    return "..." + text


def draw_legend(sheet: np.ndarray, layout: SheetLayout) -> None:
    x = layout.pad
    y_mid = layout.legend_h // 2 + 2
    for name, colour in (("hand", HAND_RGB), ("object", OBJECT_RGB), ("ignore", IGNORE_RGB)):
        cv2.rectangle(sheet, (x, y_mid - 6), (x + 12, y_mid + 4), colour, -1)
        cv2.putText(sheet, name, (x + 16, y_mid + 3), FONT, FONT_SCALE, TEXT_RGB, 1, cv2.LINE_AA)
        x += 24 + cv2.getTextSize(name, FONT, FONT_SCALE, 1)[0][0]


def render_sheet(items: Sequence, layout: SheetLayout | None = None) -> np.ndarray:
    """The sheet as an RGB array; ``items`` have ``image`` (bytes), ``seg`` (HxW uint8), ``caption``."""
    if not items:
        raise ValueError("no samples to draw")
    layout = layout or SheetLayout(len(items))
    w, h = layout.size
    sheet = np.empty((h, w, 3), np.uint8)
    sheet[:] = BACKDROP_RGB
    draw_legend(sheet, layout)
    for i, item in enumerate(items):
        x0, y0, x1, y1 = layout.tile_box(i)
        try:
            sheet[y0:y1, x0:x1] = render_tile(item.image, item.seg, layout)
        except ValueError as e:  # an image PIL could size but OpenCV cannot decode: say so in its tile
            cv2.putText(sheet, fit_text(f"cannot draw: {e}", layout.tile_w - 4), (x0 + 2, y0 + layout.tile_h // 2),
                        FONT, FONT_SCALE, TEXT_RGB, 1, cv2.LINE_AA)
        caption = caption_text(item.caption, layout.tile_w - 4)
        cv2.putText(sheet, caption, (x0 + 2, y1 + layout.caption_h - 4), FONT, FONT_SCALE, TEXT_RGB, 1, cv2.LINE_AA)
    return sheet


def write_png_atomic(rgb: np.ndarray, path: Path) -> None:
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise DataError("could not encode the contact sheet", path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(buf.tobytes())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write the contact sheet ({e.strerror or e})", path) from None


def write_contact_sheet(items: Sequence, path: Path, layout: SheetLayout | None = None) -> tuple[int, int]:
    """Draw ``items`` into a PNG at ``path`` (atomically); return its (width, height)."""
    sheet = render_sheet(items, layout)
    write_png_atomic(sheet, path)
    return sheet.shape[1], sheet.shape[0]
