"""``hotrain predict``: run a checkpoint on image files (folder, glob, one file) or a video, write label PNGs.

Each output is ``<out>/<name>.png``: 8-bit single channel, the input's size, 0 background, 1 hand, 2 object
(a hand-stage model writes 0/1). ``--overlay`` adds ``<out>/overlay/<name>.jpg`` colour overlays; ``--tta flip``
averages the softmax of each frame and of its mirror image. Frames are batched (consecutive frames of one size).
"""

from __future__ import annotations

import glob
import os
import time
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from hodata.errors import DataError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
# Overlay colours (RGB) per label: hand red, object blue (background untouched).
COLOURS = {1: (230, 40, 40), 2: (40, 110, 240)}


def resolve_inputs(spec: str) -> tuple[str, list[Path]]:
    """("video", [file]) or ("images", files) from a folder, an image or video file, or a glob."""
    p = Path(spec)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS and f.is_file())
        if not files:
            raise DataError(f"folder holds no images ({', '.join(IMAGE_EXTS)})", p)
        return "images", files
    if p.is_file():
        if p.suffix.lower() in VIDEO_EXTS:
            return "video", [p]
        return "images", [p]
    if glob.has_magic(spec):
        files = sorted(Path(f) for f in glob.glob(spec, recursive=True) if Path(f).is_file())
        if not files:
            raise DataError("no file matches this pattern", spec)
        if len(files) == 1 and files[0].suffix.lower() in VIDEO_EXTS:
            return "video", files
        return "images", files
    raise DataError("input not found", spec)


def read_frames(kind: str, files: list[Path]) -> Iterator[tuple[str, np.ndarray]]:
    """(output name, RGB uint8 HxWx3) per frame; an unreadable file is a DataError naming it."""
    if kind == "video":
        cap = cv2.VideoCapture(str(files[0]))
        if not cap.isOpened():
            raise DataError("cannot open video (unsupported or corrupt)", files[0])
        i = 0
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                yield f"{files[0].stem}_{i:06d}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                i += 1
        finally:
            cap.release()
        if i == 0:
            raise DataError("video has no readable frame", files[0])
        return
    names = [f.stem for f in files]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"two inputs would write the same mask name {dup}.png; predict one folder at a time",
                        next(f for f in files if f.stem == dup))
    for f in files:
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DataError("cannot read image (unsupported or corrupt)", f)
        yield f.stem, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def batches_of_one_size(frames: Iterator[tuple[str, np.ndarray]], batch_size: int):
    """Group consecutive frames of equal size into lists of at most ``batch_size``."""
    batch: list[tuple[str, np.ndarray]] = []
    for name, rgb in frames:
        if batch and (len(batch) == batch_size or batch[0][1].shape != rgb.shape):
            yield batch
            batch = []
        batch.append((name, rgb))
    if batch:
        yield batch


def overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    out = rgb.astype(np.float32)
    for label, colour in COLOURS.items():
        m = labels == label
        out[m] = (1 - alpha) * out[m] + alpha * np.array(colour, np.float32)
    return out.round().astype(np.uint8)


@torch.no_grad()
def predict_labels(model: torch.nn.Module, images: list[np.ndarray], *, device: torch.device, amp: str = "none",
                   channels_last: bool = False, tta: bool = False, max_side: int | None = None) -> np.ndarray:
    """Labels (B, H, W) uint8 for RGB frames of one size; with ``max_side`` the model sees a smaller copy and its
    scores are resized back (bilinear) to the frame size before the argmax."""
    from hotrain.model import predict_logits

    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    h, w = x.shape[2:]
    if max_side is not None and max(h, w) > max_side:
        s = max_side / max(h, w)
        x = F.interpolate(x.float(), size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear",
                          antialias=True, align_corners=False).round().clamp(0, 255).to(torch.uint8)
    scores = predict_logits(model, x, device=device, amp=amp, channels_last=channels_last, tta=tta)
    if scores.shape[2:] != (h, w):
        scores = F.interpolate(scores, size=(h, w), mode="bilinear", align_corners=False)
    return scores.argmax(1).to(torch.uint8).cpu().numpy()


def run_predict(checkpoint: str | os.PathLike, input_spec: str, out: str | os.PathLike, *, overlay_images: bool = False,
                tta: bool = False, batch_size: int = 8, max_side: int | None = None,
                device: str | None = None) -> dict[str, Any]:
    from hotrain import checkpoint as ckpt_io
    from hotrain.model import model_from_checkpoint

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ckpt = ckpt_io.load(checkpoint)
    model = model_from_checkpoint(ckpt).to(dev).eval()
    cuda = dev.type == "cuda"
    if cuda:
        model.to(memory_format=torch.channels_last)
    kind, files = resolve_inputs(input_spec)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if overlay_images:
        (out / "overlay").mkdir(exist_ok=True)
    n, t0 = 0, time.perf_counter()
    for batch in batches_of_one_size(read_frames(kind, files), batch_size):
        labels = predict_labels(model, [rgb for _, rgb in batch], device=dev, amp="bf16" if cuda else "none",
                                channels_last=cuda, tta=tta, max_side=max_side)
        for (name, rgb), lab in zip(batch, labels):
            if not cv2.imwrite(str(out / f"{name}.png"), lab):
                raise DataError("cannot write mask", out / f"{name}.png")
            if overlay_images:
                cv2.imwrite(str(out / "overlay" / f"{name}.jpg"), cv2.cvtColor(overlay(rgb, lab), cv2.COLOR_RGB2BGR))
        n += len(batch)
    dt = time.perf_counter() - t0
    return {"frames": n, "seconds": dt, "fps": n / max(dt, 1e-9), "out": str(out), "kind": kind,
            "classes": ckpt.get("classes"), "device": str(dev)}
