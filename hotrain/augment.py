"""Training augmentation of one decoded sample, cropped before it is resized: scale jitter, crop (with padding, or
placed over a labelled pixel), horizontal flip with left/right relabelling, colour jitter.

Why not a chain of transforms: resizing the whole frame and then cropping pays for every pixel the crop throws
away, and colour jitter on float tensors costs more than decoding. Here one affine map takes each output pixel
straight from the source frame (:func:`cv2.warpAffine`: scale, crop offset, padding and flip in one pass over
the output pixels only), a JPEG whose scale allows it is decoded at 1/2, 1/4 or 1/8 size by libjpeg's DCT
scaling (``cv2.IMREAD_REDUCED_COLOR_k``), and colour jitter is one 3x4 matrix applied to the cropped uint8
pixels (:func:`cv2.transform`), which also turns OpenCV's BGR into RGB.

The draws of one sample come from its own seed (a :class:`numpy.random.Generator`), so a stream is reproducible
in any process. What is drawn, as torchvision's ``RandomResize`` + ``RandomCrop(pad_if_needed)`` +
``RandomHorizontalFlip`` + ``ColorJitter`` would: the shorter side of the resized frame (an integer in
``crop * SCALE_RANGE``), the crop window (uniform; where the frame is smaller than the crop, its place in the
padded crop is uniform), the flip (p = 0.5), brightness, contrast, saturation and hue factors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from hodata.schema import IGNORE, apply_lut

SCALE_RANGE = (0.75, 1.5)  # scale jitter: shorter side = crop_size * U(SCALE_RANGE)
JITTER = {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.03}
GRAY = np.array([0.299, 0.587, 0.114])  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_INV = np.linalg.inv(_YIQ)
BGR_TO_RGB = np.eye(3)[::-1]  # x_rgb = BGR_TO_RGB @ x_bgr


def colour_matrix(brightness: float, contrast: float, saturation: float, hue: float, grey_mean: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(3x3 matrix, offset) of colour jitter on RGB values: ``out = M @ rgb + offset``.

    Brightness, contrast and saturation are linear in RGB and match torchvision's ``adjust_*`` to +-1 level;
    hue is a rotation of the chroma plane in YIQ space (as NVIDIA DALI does), a close relative of torchvision's
    HSV shift. Contrast blends towards ``grey_mean`` (the mean grey level of the brightened image).
    """
    sat = saturation * np.eye(3) + (1 - saturation) * np.ones((3, 1)) * GRAY
    theta = -2 * math.pi * hue  # a fraction of a full turn, in the direction of torchvision's HSV shift
    cos, sin = math.cos(theta), math.sin(theta)
    rot = np.array([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]])
    matrix = (_YIQ_INV @ rot @ _YIQ @ sat) * (contrast * brightness)
    return matrix, np.full(3, (1 - contrast) * grey_mean)


def reduction_for(scale: float) -> int:
    """The largest JPEG DCT reduction (1, 2, 4 or 8) that still decodes at least the resolution ``scale`` needs."""
    return next(k for k in (8, 4, 2, 1) if scale * k <= 1.0 or k == 1)


_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                  8: cv2.IMREAD_REDUCED_COLOR_8}


def decode_bgr(data: bytes, reduction: int = 1) -> np.ndarray:
    """Image bytes -> uint8 (H, W, 3) BGR, a JPEG at 1/``reduction`` size (other formats at full size)."""
    buf = np.frombuffer(data, np.uint8)
    is_jpeg = data[:2] == b"\xff\xd8"
    image = cv2.imdecode(buf, _REDUCED_FLAGS[reduction] if is_jpeg else cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("image does not decode")
    return image


@dataclass(frozen=True)
class Window:
    """Where the output crop lies in the resized frame: ``top``/``left`` (negative or beyond the frame: padding),
    the scale from source to resized frame, and whether the crop is mirrored."""

    scale: float
    top: int
    left: int
    flip: bool


@dataclass(frozen=True)
class TrainAugment:
    """The training augmentation of :mod:`hotrain.data` (module docstring). ``flip_lut``: what each target value
    becomes in a mirrored image (left <-> right hand) or None; ``focus_crops``: the share of crops placed over
    a pixel whose target value is in ``focus`` (each present value equally likely, then one of its pixels)."""

    crop: int
    augment: bool = True
    flip_lut: np.ndarray | None = None
    focus_crops: float = 0.0
    focus: tuple[int, ...] = ()

    def __call__(self, image_data: bytes, mask: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Encoded image + uint8 target map (full size) -> uint8 (crop, crop, 3) RGB image and (crop, crop) map."""
        rng = np.random.default_rng(seed)
        window = self.window(rng, *mask.shape, mask)
        return self.render(image_data, mask, window, rng)

    def render(self, image_data: bytes, mask: np.ndarray, window: Window, rng: np.random.Generator | None
               ) -> tuple[np.ndarray, np.ndarray]:
        """The crop ``window`` of the sample; colour jitter drawn from ``rng`` (None: no jitter)."""
        h, w = mask.shape
        k = reduction_for(window.scale)
        image = decode_bgr(image_data, k)
        ih, iw = image.shape[:2]
        if (ih, iw) not in {(h, w), (-(-h // k), -(-w // k))}:  # at 1/k a JPEG is ceil(size / k) (libjpeg may
            # decode a small or odd JPEG at full size anyway: the warp takes the size it gets)
            raise ValueError(f"seg.png is {(h, w)}, image is {(ih, iw)}" + (f" at 1/{k} size" if k > 1 else ""))
        # the decoded image's own scale (a reduced JPEG is ceil(size / k) pixels)
        out_img = self._warp(image, window, window.scale * w / iw, window.scale * h / ih, cv2.INTER_LINEAR, 0)
        out_mask = self.crop_targets(mask, window)
        if self.augment and rng is not None:
            out_img = self._jitter(rng, out_img)
        else:
            out_img = cv2.cvtColor(out_img, cv2.COLOR_BGR2RGB)
        return out_img, out_mask

    def plan(self, mask: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, float] | None]:
        """The loader's share when the image is augmented elsewhere (:mod:`hotrain.gpu_augment`): the same draws
        as :meth:`__call__` from the same seed; the target map cropped here exactly as there; for the image,
        its (2, 3) output-to-source map at full size and the colour jitter factors (None: no jitter)."""
        rng = np.random.default_rng(seed)
        window = self.window(rng, *mask.shape, mask)
        jitter = self.draw_jitter(rng) if self.augment else None
        return self.crop_targets(mask, window), self.affine(window, window.scale, window.scale), jitter

    def crop_targets(self, mask: np.ndarray, window: Window) -> np.ndarray:
        """The target map's crop ``window`` (nearest, padding 255), relabelled left <-> right when mirrored."""
        out = self._warp(mask, window, window.scale, window.scale, cv2.INTER_NEAREST, IGNORE)
        return apply_lut(out, self.flip_lut) if window.flip and self.flip_lut is not None else out

    # --------------------------------------------------------------------------------------------- draws
    def window(self, rng: np.random.Generator, h: int, w: int, mask: np.ndarray) -> Window:
        c = self.crop
        if self.augment:
            lo, hi = (max(1, round(c * s)) for s in SCALE_RANGE)
            scale = int(rng.integers(lo, hi + 1)) / min(h, w)
        else:
            scale = 1.0
        hs, ws = max(1, round(h * scale)), max(1, round(w * scale))
        top, left = self._start(rng, hs), self._start(rng, ws)
        if self.focus_crops > 0 and self.focus and rng.random() < self.focus_crops:
            at = self._focus_pixel(rng, mask)
            if at is not None:
                y, x = min(hs - 1, int(at[0] * scale)), min(ws - 1, int(at[1] * scale))
                top, left = self._start_around(rng, y, hs), self._start_around(rng, x, ws)
        flip = bool(self.augment and rng.random() < 0.5)
        return Window(scale, top, left, flip)

    def _start(self, rng: np.random.Generator, size: int) -> int:
        """A uniform window start: inside the frame when it is larger than the crop, else a uniform padding."""
        lo, hi = min(0, size - self.crop), max(0, size - self.crop)
        return int(rng.integers(lo, hi + 1))

    def _start_around(self, rng: np.random.Generator, at: int, size: int) -> int:
        """A uniform window start among those whose window holds ``at`` and stays as far inside as ``_start``."""
        lo, hi = min(0, size - self.crop), max(0, size - self.crop)
        lo, hi = max(lo, at - self.crop + 1), min(hi, at)
        return int(rng.integers(lo, hi + 1))

    def _focus_pixel(self, rng: np.random.Generator, mask: np.ndarray) -> tuple[int, int] | None:
        counts = np.bincount(mask.ravel(), minlength=256)
        present = [v for v in self.focus if counts[v]]
        if not present:
            return None
        value = present[int(rng.integers(len(present)))]
        ys, xs = np.nonzero(mask == value)
        i = int(rng.integers(len(ys)))
        return int(ys[i]), int(xs[i])

    # --------------------------------------------------------------------------------------------- pixels
    def affine(self, win: Window, sx: float, sy: float) -> np.ndarray:
        """The (2, 3) map from output pixel (x, y) to source point ((x + left + 0.5) / sx - 0.5, ...): pixel
        centres map to pixel centres; mirrored, x runs from the window's right edge."""
        c = self.crop
        if win.flip:
            ax, bx = -1.0 / sx, (c - 1 + win.left + 0.5) / sx - 0.5
        else:
            ax, bx = 1.0 / sx, (win.left + 0.5) / sx - 0.5
        return np.array([[ax, 0.0, bx], [0.0, 1.0 / sy, (win.top + 0.5) / sy - 0.5]])

    def _warp(self, src: np.ndarray, win: Window, sx: float, sy: float, interpolation: int, fill: int) -> np.ndarray:
        """The crop of ``src`` through :meth:`affine` (a large shrink of an image pre-filtered first)."""
        c = self.crop
        m = self.affine(win, sx, sy)
        shrink = min(sx, sy)
        if shrink < 0.5 and interpolation == cv2.INTER_LINEAR:  # pre-filter a large shrink (no aliasing)
            f = int(1 / shrink)
            h, w = src.shape[:2]
            small = (max(1, w // f), max(1, h // f))
            src = cv2.resize(src, small, interpolation=cv2.INTER_AREA)
            m = rescale_affine(m, w / small[0], h / small[1])  # the exact factors (sizes need not divide by f)
        border = (fill,) * (3 if src.ndim == 3 else 1)
        return cv2.warpAffine(src, m, (c, c), flags=interpolation | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=border)

    @staticmethod
    def draw_jitter(rng: np.random.Generator) -> dict[str, float]:
        """Brightness, contrast, saturation and hue factors, drawn in that order."""
        return {name: float(rng.uniform(max(0.0, 1 - v), 1 + v)) if name != "hue" else float(rng.uniform(-v, v))
                for name, v in JITTER.items()}

    def _jitter(self, rng: np.random.Generator, bgr: np.ndarray) -> np.ndarray:
        """Colour jitter of a BGR crop; returns RGB."""
        f = self.draw_jitter(rng)
        mean_rgb = np.asarray(cv2.mean(bgr)[:3])[::-1]
        matrix, offset = colour_matrix(**f, grey_mean=float(mean_rgb @ GRAY) * f["brightness"])
        m = np.concatenate([matrix @ BGR_TO_RGB, offset[:, None]], axis=1).astype(np.float32)
        return cv2.transform(bgr, m)  # saturates to 0..255 and rounds


def rescale_affine(m: np.ndarray, fx: float, fy: float) -> np.ndarray:
    """An output-to-source map ``m`` (2, 3) re-aimed at the source shrunk by ``fx`` x ``fy`` (pixel centres kept)."""
    return np.array([[m[0, 0] / fx, 0.0, (m[0, 2] + 0.5) / fx - 0.5], [0.0, m[1, 1] / fy, (m[1, 2] + 0.5) / fy - 0.5]])
