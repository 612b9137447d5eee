"""Gallery cards of the HTML report: per sample a JPEG thumbnail and its overlay as inline ``data:`` URIs.

The overlay is a separate transparent PNG laid over the photo (flat label colours compress to a few KB and
stay sharp, where JPEG would smear every mask edge), so the page can fade it in and out; amodal outlines
are a third layer of their own.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np

from hodata.contact_sheet import amodal_outline, fit_size, overlay_layers, resized_views
from hodata.schema import HAND_UNKNOWN_SIDE

THUMB_W, THUMB_H = 320, 240
JPEG_QUALITY = 82


@dataclass
class Card:
    key: str
    source: str
    split: str
    width: int  # thumbnail size
    height: int
    image_uri: str
    overlay_uri: str
    outline_uri: str | None  # amodal outlines, where the sample has amodal.png
    hands: list[str]  # side per hand instance (left/right/unknown); ["unknown"] for hand pixels without instances
    objects: list[str | None]  # name per object instance, None where unknown
    error: str | None = None  # why the sample could not be drawn

    @property
    def objects_text(self) -> str:
        """Object names where known, unnamed ones counted: ``003_cracker_box``, ``2 objects``."""
        named = [o for o in self.objects if o]
        unnamed = len(self.objects) - len(named)
        return ", ".join(named + ([f"{unnamed} object" + ("s" if unnamed > 1 else "")] if unnamed else []))

    @property
    def hands_filter(self) -> str:
        """What the gallery's hand filter matches on: ``left``, ``right``, ``both``, ``unknown``, ``none``."""
        sides = set(self.hands)
        tags = [s for s in ("left", "right", "unknown") if s in sides]
        if {"left", "right"} <= sides:
            tags.append("both")
        return " ".join(tags) or "none"


def data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def encode(ext: str, image: np.ndarray, params: list[int]) -> bytes:
    ok, buf = cv2.imencode(ext, image, params)
    if not ok:
        raise ValueError(f"could not encode a {ext} thumbnail")
    return buf.tobytes()


def rgba_png(colour: np.ndarray, opaque: np.ndarray) -> bytes:
    """An RGBA PNG: ``colour`` where ``opaque``, transparent elsewhere."""
    bgra = np.zeros((*colour.shape[:2], 4), np.uint8)
    bgra[..., :3] = colour[..., ::-1]
    bgra[..., 3] = np.where(opaque, 255, 0)
    return encode(".png", bgra, [cv2.IMWRITE_PNG_COMPRESSION, 9])


def make_card(item: Any, max_w: int = THUMB_W, max_h: int = THUMB_H) -> Card:
    """The card of one :class:`hodata.inspect.Candidate`; a sample that cannot be drawn says why."""
    info = item.summary()
    base = dict(key=item.key, source=item.source, split=item.split, hands=info["hands"], objects=info["objects"])
    try:
        h, w = item.seg().shape
        tw, th = fit_size(w, h, max_w, max_h)
        rgb, sides, amodal = resized_views(item, (tw, th))
        jpg = encode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not info["instances"] and (sides == HAND_UNKNOWN_SIDE).any():
            base["hands"] = ["unknown"]  # hodata/1: hand pixels, no instances to tell their side
        colour, alpha = overlay_layers(sides)
        outline = None
        if amodal is not None:
            line, on = amodal_outline(amodal)
            outline = data_uri("image/png", rgba_png(line, on))
    except ValueError as e:
        return Card(width=max_w, height=max_h, image_uri="", overlay_uri="", outline_uri=None, error=str(e), **base)
    return Card(width=tw, height=th, image_uri=data_uri("image/jpeg", jpg),
                overlay_uri=data_uri("image/png", rgba_png(colour, alpha > 0)), outline_uri=outline, **base)


def make_cards(items: Sequence[Any]) -> list[Card]:
    return sorted((make_card(i) for i in items), key=lambda c: (c.source, c.split, c.key))
