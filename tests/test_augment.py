"""Training augmentation at pixel level: crop-before-resize geometry, flips that swap sides, padding, reduced JPEG
decoding, colour jitter against torchvision's factors."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from hodata.schema import IGNORE
from hotrain.augment import TrainAugment, Window, colour_matrix, reduction_for
from hotrain.stages import STAGES

COLOURS = {0: (20, 20, 20), 1: (230, 40, 40), 2: (40, 230, 40), 3: (40, 40, 230)}  # RGB per label


def labelled_frame(h: int, w: int, blocks: list[tuple[int, slice, slice]]) -> tuple[np.ndarray, np.ndarray]:
    """A label map of rectangles and the RGB frame painted in each label's colour."""
    mask = np.zeros((h, w), np.uint8)
    for label, ys, xs in blocks:
        mask[ys, xs] = label
    rgb = np.zeros((h, w, 3), np.uint8)
    for label, colour in COLOURS.items():
        rgb[mask == label] = colour
    return rgb, mask


def encode(rgb: np.ndarray, ext: str = ".png") -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    assert ok
    return buf.tobytes()


def labels_of(rgb: np.ndarray) -> np.ndarray:
    """Nearest label colour of each pixel."""
    colours = np.array([COLOURS[k] for k in sorted(COLOURS)], np.int32)
    return np.abs(rgb[..., None, :].astype(np.int32) - colours).sum(-1).argmin(-1).astype(np.uint8)


def test_window_at_scale_one_is_an_exact_crop_and_flip_swaps_left_and_right():
    rgb, mask = labelled_frame(40, 60, [(1, slice(5, 15), slice(2, 12)), (2, slice(20, 30), slice(40, 58))])
    aug = TrainAugment(32, flip_lut=STAGES["sides"].flip_lut)
    img, out = aug.render(encode(rgb), mask, Window(scale=1.0, top=4, left=10, flip=False), None)
    assert np.array_equal(out, mask[4:36, 10:42]) and np.array_equal(img, rgb[4:36, 10:42])
    img, out = aug.render(encode(rgb), mask, Window(scale=1.0, top=4, left=10, flip=True), None)
    want = mask[4:36, 10:42][:, ::-1]
    assert np.array_equal(out == 2, want == 1) and np.array_equal(out == 1, want == 2)  # left hands became right
    assert np.array_equal(img, rgb[4:36, 10:42][:, ::-1])  # the pixels themselves only move
    plain, _ = TrainAugment(32).render(encode(rgb), mask, Window(1.0, 4, 10, True), None)
    _, kept = TrainAugment(32).render(encode(rgb), mask, Window(1.0, 4, 10, True), None)
    assert np.array_equal(kept, want) and np.array_equal(plain, img)  # no lookup: a plain mirror


def test_scaled_crop_keeps_image_and_mask_aligned_and_pads_with_ignore():
    rgb, mask = labelled_frame(48, 64, [(1, slice(4, 30), slice(6, 30)), (3, slice(26, 46), slice(34, 62))])
    aug = TrainAugment(80)
    for win in (Window(scale=1.7, top=10, left=-4, flip=False), Window(scale=0.8, top=-20, left=-3, flip=True)):
        img, out = aug.render(encode(rgb), mask, win, None)
        assert img.shape == (80, 80, 3) and out.shape == (80, 80)
        inside = out != IGNORE
        # away from label edges the image colours name the mask's labels
        interior = cv2.erode((out == cv2.dilate(out, np.ones((5, 5), np.uint8))).astype(np.uint8) * inside, np.ones((5, 5), np.uint8)) > 0
        assert interior.sum() > 0.4 * inside.sum()
        assert (labels_of(img)[interior] == out[interior]).mean() == 1.0
        far = cv2.dilate(inside.astype(np.uint8), np.ones((5, 5), np.uint8)) == 0  # edge pixels blend with it
        assert (img[far] == 0).all() and far.any()  # padding: image 0, mask 255
    # scale 1.7, top 10: resized frame row y holds source row (y + 0.5) / 1.7 - 0.5
    _, out = aug.render(encode(rgb), mask, Window(1.7, 10, 0, False), None)
    src_rows = np.clip(np.floor((np.arange(80) + 10 + 0.5) / 1.7), 0, 47).astype(int)
    assert (out[:, 40] == mask[src_rows, min(63, int((40 + 0.5) / 1.7))])[:int(48 * 1.7) - 10].mean() > 0.97


def test_a_reduced_jpeg_decode_gives_the_full_decode_s_crop():
    rgb, mask = labelled_frame(480, 640, [(1, slice(40, 300), slice(60, 300)), (3, slice(260, 460), slice(340, 620))])
    data = encode(rgb, ".jpg")
    assert reduction_for(0.3) == 2 and reduction_for(0.2) == 4 and reduction_for(0.75) == 1
    aug = TrainAugment(96)
    win = Window(scale=0.3, top=10, left=20, flip=False)
    img, out = aug.render(data, mask, win, None)
    full = TrainAugment(96)._warp(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), win, 0.3, 0.3,
                                  cv2.INTER_LINEAR, 0)[..., ::-1]
    assert np.abs(img.astype(int) - full.astype(int)).mean() < 3
    ok = out != IGNORE
    assert (labels_of(img)[ok] == out[ok]).mean() > 0.97


def test_draws_are_reproducible_and_cover_the_scale_range():
    rgb, mask = labelled_frame(48, 64, [(1, slice(10, 20), slice(10, 20))])
    aug = TrainAugment(32)
    a = [aug(encode(rgb), mask, seed) for seed in range(3)]
    b = [aug(encode(rgb), mask, seed) for seed in range(3)]
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    scales = [aug.window(np.random.default_rng(s), 48, 64, mask).scale * 48 for s in range(200)]
    assert min(scales) < 25 and max(scales) > 46 and all(24 <= v <= 48 for v in scales)
    focus = TrainAugment(16, focus_crops=1.0, focus=(1,))
    for s in range(20):
        _, out = focus(encode(rgb), mask, s)
        assert (out == 1).any()  # every crop holds the small labelled square


def test_colour_matrix_matches_torchvision_factors():
    from torchvision.transforms.v2 import functional as TF

    x = torch.randint(0, 256, (3, 24, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    flat = x.reshape(3, -1).double().numpy()
    grey = float(flat.mean(1) @ np.array([0.299, 0.587, 0.114]))

    def ours(b=1.0, c=1.0, s=1.0, h=0.0):
        m, off = colour_matrix(b, c, s, h, grey * b)
        return torch.from_numpy(np.clip(np.rint(m @ flat + off[:, None]), 0, 255).reshape(x.shape)).int()

    assert torch.equal(ours(), x.int())
    for out, ref in ((ours(b=1.2), TF.adjust_brightness(x, 1.2)), (ours(c=0.7), TF.adjust_contrast(x, 0.7)),
                     (ours(s=0.6), TF.adjust_saturation(x, 0.6))):
        assert (out - ref.int()).abs().max() <= 1
    g = ours(s=0.0)
    assert (g.amax(0) - g.amin(0)).max() <= 1  # no saturation: grey


def test_a_large_shrink_of_a_png_frame_is_pre_filtered_and_stays_aligned():
    rgb, mask = labelled_frame(483, 641, [(1, slice(40, 300), slice(61, 301)), (3, slice(262, 461), slice(343, 621))])
    img, out = TrainAugment(96).render(encode(rgb), mask, Window(scale=0.2, top=3, left=5, flip=False), None)
    ok = out != IGNORE
    assert ok.mean() > 0.5 and (labels_of(img)[ok] == out[ok]).mean() > 0.99  # sizes not divisible by the factor
