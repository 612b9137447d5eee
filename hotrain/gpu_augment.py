"""Training images decoded and augmented on the GPU (``hotrain fit --gpu-augment``), for nodes with few CPU
cores per GPU.

The loader workers keep what is cheap: they read the tar, decode and map the label map, draw the augmentation
(the same draws as :mod:`hotrain.augment`, from the same per-sample seed), crop the target map exactly as the
CPU path does (nearest neighbour), and pass on the image's encoded bytes with its output-to-source map and
colour jitter (:func:`planned_sample`, :func:`collate_planned`). The training process then decodes the
batch's JPEGs in one call (``torchvision.io.decode_jpeg(..., device="cuda")``: nvJPEG) and resamples each image
straight into its crop (``grid_sample``: scale, crop offset, padding and flip in one pass over the output pixels),
pre-shrunk by area averaging where the crop shrinks a frame by more than half (the CPU path lets libjpeg decode
at reduced size there), and applies the colour jitter as one 3x3 matrix and offset per sample
(:func:`batch_images`).

Targets are identical to the CPU path's; images agree to within interpolation rounding (float bilinear here,
OpenCV's fixed point there). Frames stored as PNG are decoded by the worker and sent as pixels. On a machine
without a GPU the same code runs on the CPU (what the tests check).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hodata.errors import DataError
from hotrain.augment import GRAY, TrainAugment, colour_matrix, rescale_affine

COLOUR_FIELDS = 11  # per sample: the 3x3 jitter matrix (row-major), brightness, contrast
IDENTITY_COLOUR = np.r_[np.eye(3).ravel(), 1.0, 1.0].astype(np.float32)


def image_plan(image_data: bytes, affine: np.ndarray, jitter: dict[str, float] | None) -> dict[str, Any]:
    """What the GPU needs for one image: its JPEG bytes (or, for another format, its pixels decoded here as
    uint8 (3, H, W)), the (2, 3) output-to-source map and the colour jitter packed as :data:`COLOUR_FIELDS`."""
    if jitter is None:
        colour = IDENTITY_COLOUR
    else:
        matrix, _ = colour_matrix(**jitter, grey_mean=0.0)  # the offset needs the crop's mean: made on the GPU
        colour = np.r_[matrix.ravel(), jitter["brightness"], jitter["contrast"]].astype(np.float32)
    encoded = torch.frombuffer(bytearray(image_data), dtype=torch.uint8)
    is_jpeg = image_data[:2] == b"\xff\xd8"
    return {"jpeg": encoded if is_jpeg else None, "pixels": None if is_jpeg else _decode_cpu(encoded),
            "affine": torch.from_numpy(np.asarray(affine, np.float64)), "colour": torch.from_numpy(colour)}


def planned_sample(image_data: bytes, mask: np.ndarray, augment: TrainAugment, seed: int) -> dict[str, Any]:
    """The loader worker's part of one training sample: the target map cropped and the image's plan."""
    out_mask, affine, jitter = augment.plan(mask, seed)
    return {"mask": torch.from_numpy(out_mask), "frame": tuple(mask.shape)} | image_plan(image_data, affine, jitter)


def collate_planned(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch of planned samples: images still encoded (lists), maps and masks stacked."""
    return {
        "jpeg": [s["jpeg"] for s in samples],
        "pixels": [s["pixels"] for s in samples],
        "frame": [s["frame"] for s in samples],
        "affine": torch.stack([s["affine"] for s in samples]),
        "colour": torch.stack([s["colour"] for s in samples]),
        "mask": torch.stack([s["mask"] for s in samples]).long(),
        "has_object": torch.tensor([s["has_object"] for s in samples], dtype=torch.bool),
        "source": [s["source"] for s in samples],
        "key": [s["key"] for s in samples],
    }


def is_planned(batch: dict[str, Any]) -> bool:
    return "jpeg" in batch


def batch_images(batch: dict[str, Any], device: torch.device | str) -> torch.Tensor:
    """The batch's augmented images, uint8 (B, 3, crop, crop) on ``device`` (the crop size is the masks')."""
    device = torch.device(device)
    crop = batch["mask"].shape[-1]
    jpegs = [(i, t) for i, t in enumerate(batch["jpeg"]) if t is not None]
    decoded: dict[int, torch.Tensor] = {}
    if jpegs:
        with warnings.catch_warnings():  # torchvision 0.29 marks its codecs deprecated (see hotrain.data)
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import ImageReadMode, decode_jpeg

            images = decode_jpeg([t for _, t in jpegs], mode=ImageReadMode.RGB, device=device)
        decoded = {i: img for (i, _), img in zip(jpegs, images)}
    out = torch.empty((len(batch["jpeg"]), 3, crop, crop), dtype=torch.float32, device=device)
    for i, pixels in enumerate(batch["pixels"]):
        image = decoded[i] if pixels is None else pixels.to(device, non_blocking=True)
        if tuple(image.shape[1:]) != tuple(batch["frame"][i]):
            raise DataError(f"sample {batch['key'][i]}: seg.png is {tuple(batch['frame'][i])}, image is "
                            f"{tuple(image.shape[1:])}")
        out[i] = _resample(image, batch["affine"][i].numpy(), crop)
    return _colour(out, batch["colour"].to(device, non_blocking=True))


def _resample(image: torch.Tensor, affine: np.ndarray, crop: int) -> torch.Tensor:
    """uint8 (3, H, W) -> float32 (3, crop, crop): output pixel (x, y) takes the bilinear sample at
    ``affine @ (x, y, 1)`` (source pixel centres at integers), zero outside the frame."""
    image = image.unsqueeze(0).float()
    h, w = image.shape[-2:]
    shrink = 1.0 / max(abs(affine[0, 0]), abs(affine[1, 1]))
    if shrink < 0.5:  # pre-filter a large shrink (no aliasing), as the CPU path does
        f = int(1 / shrink)
        small = (max(1, h // f), max(1, w // f))
        image = F.interpolate(image, size=small, mode="area")
        affine = rescale_affine(affine, w / small[1], h / small[0])
        h, w = small
    # grid_sample reads normalised coordinates (align_corners=False): -1 and 1 are the frame's outer edges
    xs = torch.arange(crop, dtype=torch.float64)
    gx = (affine[0, 0] * xs + affine[0, 2] + 0.5) * (2.0 / w) - 1.0
    gy = (affine[1, 1] * xs + affine[1, 2] + 0.5) * (2.0 / h) - 1.0
    grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), dim=-1).float().to(image.device)
    return F.grid_sample(image, grid[None], mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def _colour(images: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """Colour jitter of float RGB crops (B, 3, c, c): ``M @ rgb + (1 - contrast) * grey``, grey = the brightened
    crop's mean grey level; rounded and saturated to uint8."""
    matrix = colour[:, :9].reshape(-1, 3, 3)
    brightness, contrast = colour[:, 9], colour[:, 10]
    gray = torch.as_tensor(GRAY, dtype=images.dtype, device=images.device)
    grey = (images.mean(dim=(2, 3)) @ gray) * brightness
    out = torch.einsum("bij,bjhw->bihw", matrix, images) + ((1.0 - contrast) * grey)[:, None, None, None]
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _decode_cpu(encoded: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_image

        return decode_image(encoded, mode=ImageReadMode.RGB)
