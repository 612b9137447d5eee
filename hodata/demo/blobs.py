"""Synthetic hand/object scenes for the demo datasets and the tests.

A scene is a noisy, textured background in muted colours, one or two skin-toned "hands" (a palm ellipse,
four fingers and a thumb as thick strokes, a forearm running out of the bottom edge) and up to two
saturated "objects" touching a hand (first order), sometimes with a second-order object of another colour
family touching a first-order one. Colour and shape both tell the classes apart, so a tiny segmentation
net learns the task in about a minute on a CPU.

Everything is drawn with OpenCV from a ``numpy.random.Generator``: the same seed gives the same scene.
Drawing order is background, second-order objects, first-order objects, hands (left then right), so hands
cover the objects they hold. Masks come in two flavours: ``full`` (the whole shape) and ``mask`` (the
pixels left visible once later shapes are drawn over it); labels are built from the visible ones.

Sizes are ``(width, height)`` like OpenCV; arrays are ``(height, width)``; images are RGB uint8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

SIDES = ("left", "right")
# OpenCV hue (0..179) families: first-order objects blue / green, second-order magenta / cyan-purple.
FIRST_ORDER_HUES = (108, 120, 60, 70)
SECOND_ORDER_HUES = (150, 162, 140)


@dataclass
class Hand:
    side: str  # "left" | "right" (the camera wearer's)
    full: np.ndarray  # bool HxW: the whole hand shape
    mask: np.ndarray  # bool HxW: its visible pixels
    tips: list[tuple[float, float]]  # fingertip points (x, y), thumb last
    palm: tuple[float, float]  # palm centre (x, y)

    def outline(self, epsilon: float = 0.8) -> np.ndarray:
        """The visible region's outer boundary as an (N, 2) float (x, y) polygon of 0-based pixel centres,
        simplified like a hand-drawn annotation (empty (0, 2) when nothing is visible)."""
        return mask_outline(self.mask, epsilon)


@dataclass
class Obj:
    order: int  # 1: touched by a hand; 2: touched by a first-order object only
    touches: tuple[str, ...]  # order 1: the hand sides it touches; order 2: those of its first-order object
    full: np.ndarray
    mask: np.ndarray
    colour: tuple[int, int, int]


@dataclass
class Scene:
    rgb: np.ndarray  # HxWx3 uint8
    hands: list[Hand] = field(default_factory=list)
    objects: list[Obj] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ colour


def hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    px = np.array([[[h, s, v]]], dtype=np.uint8)
    r, g, b = cv2.cvtColor(px, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def skin_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return hsv_to_rgb(rng.uniform(6, 17), rng.uniform(75, 140), rng.uniform(150, 230))


def saturated_colour(rng: np.random.Generator, hues: tuple[int, ...]) -> tuple[int, int, int]:
    h = rng.choice(hues) + rng.uniform(-4, 4)
    return hsv_to_rgb(h % 180, rng.uniform(200, 255), rng.uniform(150, 240))


# ------------------------------------------------------------------------------------------- background


def paint_background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A muted, low-saturation texture: smooth colour field, a few distractor strokes, pixel noise."""
    w, h = size
    hue = rng.uniform(0, 180)
    base = np.array(hsv_to_rgb(hue, rng.uniform(10, 45), rng.uniform(90, 190)), dtype=np.float32)
    coarse = rng.normal(0, 1, (max(2, h // 12), max(2, w // 12), 3)).astype(np.float32)
    field_ = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    img = base + 18.0 * field_.mean(axis=2, keepdims=True) + 6.0 * field_
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(3, 8))):  # table edges, clutter: muted, never skin- or object-coloured
        colour = hsv_to_rgb(rng.uniform(0, 180), rng.uniform(0, 40), rng.uniform(50, 210))
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if rng.random() < 0.5:
            cv2.line(img, p0, p1, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
        else:
            cv2.rectangle(img, p0, p1, colour, -1)
    return img


def add_noise(rng: np.random.Generator, img: np.ndarray, sigma: float = 5.0) -> np.ndarray:
    noisy = img.astype(np.float32) + rng.normal(0, sigma, img.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ shapes


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x)), int(round(y))


def hand_shape(rng: np.random.Generator, size: tuple[int, int], side: str) -> tuple[np.ndarray, list, tuple]:
    """Draw one hand's full mask: palm ellipse, forearm to the bottom edge, four fingers and a thumb.

    Returns (mask uint8 0/255, fingertips [(x, y)], palm centre). The left hand sits in the left half and
    leans right, the right hand mirrors it, as a camera wearer's hands do.
    """
    w, h = size
    sign = -1.0 if side == "left" else 1.0
    scale = min(w, h) * rng.uniform(0.7, 1.0)
    cx = w / 2 + sign * w * rng.uniform(0.12, 0.30)
    cy = h * rng.uniform(0.48, 0.72)
    tilt = math.radians(rng.uniform(5, 35)) * -sign  # lean towards the middle
    up = np.array([math.sin(tilt), -math.cos(tilt)])  # palm -> fingers direction
    right = np.array([-up[1], up[0]])
    a, b = scale * 0.13, scale * 0.16  # palm half-width, half-length
    mask = np.zeros((h, w), np.uint8)
    angle = math.degrees(math.atan2(up[1], up[0])) + 90
    cv2.ellipse(mask, (_pt(cx, cy), (2 * a, 2 * b), angle), 255, -1)
    far = np.array([cx, cy]) - up * (h + w)  # forearm leaves through the bottom / side
    cv2.line(mask, _pt(cx, cy), _pt(*far), 255, max(2, int(1.5 * a)))
    tips = []
    finger_w = max(2, int(a * rng.uniform(0.38, 0.48)))
    for k, frac in enumerate((-0.75, -0.25, 0.25, 0.75)):
        base = np.array([cx, cy]) + right * (frac * a) + up * (b * 0.7)
        spread = math.radians(frac * rng.uniform(8, 20))
        d = up * math.cos(spread) + right * math.sin(spread)
        length = b * rng.uniform(0.7, 1.15) * (0.85 if k in (0, 3) else 1.0)
        tip = base + d * length
        cv2.line(mask, _pt(*base), _pt(*tip), 255, finger_w)
        tips.append((float(tip[0]), float(tip[1])))
    # thumb on the side towards the middle of the image (back of the hand seen from above)
    thumb_side = -sign
    base = np.array([cx, cy]) + right * (thumb_side * a * 0.8)
    d = right * thumb_side * 0.8 + up * 0.6
    d /= np.linalg.norm(d)
    tip = base + d * b * rng.uniform(0.8, 1.1)
    cv2.line(mask, _pt(*base), _pt(*tip), 255, max(2, int(finger_w * 1.15)))
    tips.append((float(tip[0]), float(tip[1])))
    return mask, tips, (float(cx), float(cy))


def blob_shape(size: tuple[int, int], centre, half: tuple[float, float], angle: float, rect: bool) -> np.ndarray:
    """A filled rotated rectangle or ellipse as a uint8 0/255 mask."""
    w, h = size
    mask = np.zeros((h, w), np.uint8)
    box = ((float(centre[0]), float(centre[1])), (2 * half[0], 2 * half[1]), float(angle))
    if rect:
        cv2.fillPoly(mask, [np.round(cv2.boxPoints(box)).astype(np.int32)], 255)
    else:
        cv2.ellipse(mask, box, 255, -1)
    return mask


def mask_outline(mask: np.ndarray, epsilon: float = 0.8) -> np.ndarray:
    """Largest outer contour of a mask as (N, 2) float (x, y), 0-based pixel centres."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return np.zeros((0, 2), np.float64)
    c = max(contours, key=cv2.contourArea)
    if epsilon > 0:
        c = cv2.approxPolyDP(c, epsilon, True)
    return c.reshape(-1, 2).astype(np.float64)


# ------------------------------------------------------------------------------------------------- scene


def _shade(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, colour, strength: float) -> None:
    """Fill ``mask`` with ``colour`` under a soft directional light and a little texture."""
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, 2 * math.pi)
    grad = (math.cos(ang) * xx + math.sin(ang) * yy) / max(w, h)
    light = 1.0 + strength * (grad - grad[mask].mean() if mask.any() else grad)
    tex = rng.normal(0, 0.04, (max(2, h // 6), max(2, w // 6))).astype(np.float32)
    light = light + cv2.resize(tex, (w, h), interpolation=cv2.INTER_LINEAR)
    fill = np.clip(np.array(colour, np.float32)[None, None, :] * light[..., None], 0, 255).astype(np.uint8)
    img[mask] = fill[mask]


def _touching(a: np.ndarray, b: np.ndarray, px: int = 2) -> bool:
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return bool((cv2.dilate(a.astype(np.uint8), k) > 0)[b > 0].any())


def compose_scene(rng: np.random.Generator, size: tuple[int, int] = (160, 120), n_hands: int | None = None,
                  n_objects: int | None = None, second_order: float = 0.35, noise: float = 5.0) -> Scene:
    """Draw one scene. ``n_hands`` (1-2) and ``n_objects`` (0-2) are drawn at random when None;
    ``second_order`` is the chance of a second-order object when there is a first-order one."""
    w, h = size
    n_hands = int(rng.integers(1, 3)) if n_hands is None else n_hands
    n_objects = int(rng.integers(0, 3)) if n_objects is None else n_objects
    sides = list(SIDES) if n_hands >= 2 else [str(rng.choice(SIDES))]
    shapes = {s: hand_shape(rng, size, s) for s in sides}

    objects: list[dict] = []
    both = n_hands == 2 and n_objects >= 1 and rng.random() < 0.3
    for i in range(n_objects):
        if both and i == 0:  # one object held between the two hands: spans from tip to tip
            t0 = np.array(shapes["left"][1][3])
            t1 = np.array(shapes["right"][1][0])
            centre = (t0 + t1) / 2 + np.array([0, -0.04 * h])
            span = np.linalg.norm(t1 - t0)
            half = (span / 2 + 0.04 * w, rng.uniform(0.05, 0.09) * min(w, h))
            angle = math.degrees(math.atan2(*(t1 - t0)[::-1]))
            side = None
        else:
            side = sides[i % len(sides)]
            tips, palm = shapes[side][1], np.array(shapes[side][2])
            tip = np.array(tips[int(rng.integers(0, len(tips)))])
            out = (tip - palm) / (np.linalg.norm(tip - palm) + 1e-6)
            half = tuple(float(v) for v in rng.uniform(0.07, 0.15, 2) * min(w, h))
            centre = tip + out * min(half) * 0.8
            angle = rng.uniform(0, 180)
        full = blob_shape(size, centre, half, angle, rect=bool(rng.random() < 0.5))
        touches = tuple(s for s in sides if _touching(shapes[s][0], full)) or ((side,) if side else tuple(sides))
        objects.append({"order": 1, "touches": touches, "full": full, "centre": np.array(centre),
                        "half": half, "colour": saturated_colour(rng, FIRST_ORDER_HUES)})
    if objects and rng.random() < second_order:  # something the held object touches, beyond the hand
        parent = objects[int(rng.integers(0, len(objects)))]
        hand_c = np.mean([shapes[s][2] for s in parent["touches"]], axis=0)
        away = parent["centre"] - hand_c
        away = away / (np.linalg.norm(away) + 1e-6)
        half = tuple(float(v) for v in rng.uniform(0.07, 0.14, 2) * min(w, h))
        centre = parent["centre"] + away * (max(parent["half"]) * 0.8 + min(half) * 0.9)
        full = blob_shape(size, centre, half, rng.uniform(0, 180), rect=bool(rng.random() < 0.5))
        objects.insert(0, {"order": 2, "touches": parent["touches"], "full": full, "centre": centre,
                           "half": half, "colour": saturated_colour(rng, SECOND_ORDER_HUES)})

    img = paint_background(rng, size)
    layers: list[tuple[np.ndarray, object]] = []
    for o in objects:  # second order first (inserted at 0), then first order
        m = o["full"] > 0
        _shade(rng, img, m, o["colour"], 0.5)
        layers.append((m, o))
    for s in sides:
        m = shapes[s][0] > 0
        _shade(rng, img, m, skin_colour(rng), 0.35)
        layers.append((m, s))
    img = add_noise(rng, img, noise)

    visible = []
    covered = np.zeros((h, w), bool)
    for m, what in reversed(layers):
        visible.append((m & ~covered, m, what))
        covered |= m
    visible.reverse()
    scene = Scene(rgb=img)
    for vis, full, what in visible:
        if isinstance(what, str):
            _, tips, palm = shapes[what]
            scene.hands.append(Hand(side=what, full=full, mask=vis, tips=tips, palm=palm))
        else:
            scene.objects.append(Obj(order=what["order"], touches=what["touches"], full=full, mask=vis,
                                     colour=what["colour"]))
    return scene


def paint_scene(rng: np.random.Generator, size: tuple[int, int] = (160, 120), **kw):
    """Short form: ``(rgb, [hand visible masks], [object visible masks])``; see :func:`compose_scene`."""
    scene = compose_scene(rng, size, **kw)
    return scene.rgb, [hd.mask for hd in scene.hands], [o.mask for o in scene.objects]
