"""A contact sheet: a grid of samples with their label maps blended over the images.

Hands are tinted by side where the sample knows it (``hodata/2`` ``inst.png`` + ``instances``): left
orange, right blue; a hand of unknown side (every ``hodata/1`` hand) green. Objects are magenta, ignore
(255) pixels greyed and hatched; background is left as is. Where a sample has ``amodal.png``, the full
silhouettes are outlined (hand white, object yellow), occluded parts included. Each tile is letterboxed
into a common size (image: area filter, labels: nearest) and carries a caption (the sample key:
source/split/sequence/frame). A legend strip on top names the colours in use. The PNG is written to a
temporary name and renamed, so a reader never sees half a file.

The same drawing serves the HTML report (:mod:`hodata.inspect_html`): :func:`overlay_layers` gives the
colours as a transparent layer, so the page can fade the overlay over the plain image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from hodata.atomic import write_bytes_atomic
from hodata.errors import DataError
from hodata.schema import (AMODAL_HAND_BIT, AMODAL_OBJECT_BIT, HAND_UNKNOWN_SIDE, IGNORE, LEFT_HAND, RIGHT_HAND,
                           SIDE_OBJECT, decode_image)

HAND_RGB = (0, 255, 0)  # a hand of unknown side (hodata/1, or a source without sides)
LEFT_HAND_RGB = (255, 140, 0)
RIGHT_HAND_RGB = (0, 140, 255)
OBJECT_RGB = (255, 0, 255)
IGNORE_RGB = (128, 128, 128)
HATCH_RGB = (40, 40, 40)
AMODAL_HAND_RGB = (255, 255, 255)
AMODAL_OBJECT_RGB = (255, 255, 0)
# side map value (hodata.schema.side_label_map) -> overlay colour; background is not painted
PAINT = {HAND_UNKNOWN_SIDE: HAND_RGB, LEFT_HAND: LEFT_HAND_RGB, RIGHT_HAND: RIGHT_HAND_RGB, SIDE_OBJECT: OBJECT_RGB,
         IGNORE: IGNORE_RGB}
LEGEND = {HAND_UNKNOWN_SIDE: "hand", LEFT_HAND: "left hand", RIGHT_HAND: "right hand", SIDE_OBJECT: "object",
          IGNORE: "ignore"}
AMODAL_LEGEND = (("hand amodal", AMODAL_HAND_RGB), ("object amodal", AMODAL_OBJECT_RGB))
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


def overlay_layers(sides: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The overlay of a side map: (HxWx3 RGB colours, HxW opacity), the opacity :data:`ALPHA` on a class
    colour, 1 on the hatch lines over ignore pixels, 0 on background."""
    colour = np.zeros((*sides.shape, 3), np.uint8)
    alpha = np.zeros(sides.shape, np.float32)
    for value, rgb in PAINT.items():
        m = sides == value
        colour[m] = rgb
        alpha[m] = ALPHA
    ignore = sides == IGNORE
    if ignore.any():
        yy, xx = np.indices(sides.shape)
        hatch = ignore & (((xx + yy) % HATCH_PERIOD) < 2)
        colour[hatch] = HATCH_RGB
        alpha[hatch] = 1.0
    return colour, alpha


def amodal_outline(amodal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Outlines of the amodal silhouettes: (RGB, mask), the hand's in white, the object's in yellow."""
    colour = np.zeros((*amodal.shape, 3), np.uint8)
    for bit, rgb in ((AMODAL_OBJECT_BIT, AMODAL_OBJECT_RGB), (AMODAL_HAND_BIT, AMODAL_HAND_RGB)):
        m = ((amodal & bit) > 0).astype(np.uint8)
        if m.any():
            contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(colour, contours, -1, rgb, 1)
    return colour, colour.any(axis=2)


def overlay(rgb: np.ndarray, sides: np.ndarray, amodal: np.ndarray | None = None) -> np.ndarray:
    """Blend the label colours over an RGB image of the same size (returns a new uint8 image).

    ``sides`` is a side map (:func:`hodata.schema.side_label_map`): hands coloured by side, unknown side
    green. Amodal outlines, where given, are drawn opaque on top.
    """
    colour, alpha = overlay_layers(sides)
    a = alpha[..., None]
    out = (1 - a) * rgb.astype(np.float32) + a * colour.astype(np.float32)
    if amodal is not None:
        line, on = amodal_outline(amodal)
        out[on] = line[on]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def fit_size(width: int, height: int, max_w: int, max_h: int) -> tuple[int, int]:
    """(w, h) of an image scaled to fit ``max_w`` x ``max_h``, aspect ratio kept."""
    _, _, w, h = letterbox_box(width, height, max_w, max_h)
    return w, h


def resized_views(item, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """An item's image (area filter), side map and amodal bits (nearest) at ``size`` = (w, h)."""
    rgb, sides, amodal = decode_image(item.image), item.sides(), item.amodal()
    h, w = sides.shape
    if rgb.shape[:2] != (h, w):
        raise ValueError(f"image is {rgb.shape[1]}x{rgb.shape[0]}, seg.png is {w}x{h}")
    tw, th = size
    small = cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA if tw < w else cv2.INTER_LINEAR)
    small_sides = cv2.resize(sides, (tw, th), interpolation=cv2.INTER_NEAREST)
    small_amodal = None if amodal is None else cv2.resize(amodal, (tw, th), interpolation=cv2.INTER_NEAREST)
    return small, small_sides, small_amodal


def render_tile(item, layout: SheetLayout) -> np.ndarray:
    """One tile (tile_h x tile_w x 3): the letterboxed image with its overlay."""
    h, w = item.seg().shape
    x, y, tw, th = letterbox_box(w, h, layout.tile_w, layout.tile_h)
    small, sides, amodal = resized_views(item, (tw, th))
    tile = np.empty((layout.tile_h, layout.tile_w, 3), np.uint8)
    tile[:] = BACKDROP_RGB
    tile[y:y + th, x:x + tw] = overlay(small, sides, amodal)
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


def legend_entries(items: Sequence) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, colour) for what the items show: the hand colours in use, object, ignore, amodal outlines."""
    used: set[int] = set()
    amodal = False
    for item in items:
        try:
            used |= set(np.unique(item.sides()).tolist())
            amodal = amodal or item.amodal_png is not None
        except ValueError:
            continue
    hands = [v for v in (HAND_UNKNOWN_SIDE, LEFT_HAND, RIGHT_HAND) if v in used] or [HAND_UNKNOWN_SIDE]
    entries = [(LEGEND[v], PAINT[v]) for v in (*hands, SIDE_OBJECT, IGNORE)]
    return entries + (list(AMODAL_LEGEND) if amodal else [])


def draw_legend(sheet: np.ndarray, layout: SheetLayout, entries: Sequence[tuple[str, tuple[int, int, int]]]) -> None:
    x = layout.pad
    y_mid = layout.legend_h // 2 + 2
    for name, colour in entries:
        w = 24 + cv2.getTextSize(name, FONT, FONT_SCALE, 1)[0][0]
        if x + w > sheet.shape[1]:
            break  # a one-tile sheet: what fits
        cv2.rectangle(sheet, (x, y_mid - 6), (x + 12, y_mid + 4), colour, -1)
        cv2.putText(sheet, name, (x + 16, y_mid + 3), FONT, FONT_SCALE, TEXT_RGB, 1, cv2.LINE_AA)
        x += w


def render_sheet(items: Sequence, layout: SheetLayout | None = None) -> np.ndarray:
    """The sheet as an RGB array; ``items`` are :class:`hodata.inspect.Candidate`-like (image, sides(),
    amodal(), seg(), caption)."""
    if not items:
        raise ValueError("no samples to draw")
    layout = layout or SheetLayout(len(items))
    w, h = layout.size
    sheet = np.empty((h, w, 3), np.uint8)
    sheet[:] = BACKDROP_RGB
    draw_legend(sheet, layout, legend_entries(items))
    for i, item in enumerate(items):
        x0, y0, x1, y1 = layout.tile_box(i)
        try:
            sheet[y0:y1, x0:x1] = render_tile(item, layout)
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
    try:
        write_bytes_atomic(path, buf.tobytes())
    except OSError as e:
        raise DataError(f"cannot write the contact sheet ({e.strerror or e})", path) from None


def write_contact_sheet(items: Sequence, path: Path, layout: SheetLayout | None = None) -> tuple[int, int]:
    """Draw ``items`` into a PNG at ``path`` (atomically); return its (width, height)."""
    sheet = render_sheet(items, layout)
    write_png_atomic(sheet, path)
    return sheet.shape[1], sheet.shape[0]
