"""Checkpoints and models whose predictions are known exactly, for the predict / export tests.

``ColourModel`` maps pixel colours to logits: dark -> background, red -> left hand (or hand), green -> right
hand (or hand), blue -> object; ``PositionModel`` calls a bright pixel a left hand on the left half of the frame
and a right hand on the right half (what a sides model learns about egocentric frames), so a mirrored frame's
prediction is only consistent after swapping the two hand channels.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from hotrain import checkpoint as ckpt_io
from hotrain.export import STAGE_CLASSES
from hotrain.model import build_model
from hotrain.train import DEFAULTS

MOBILE = "deeplabv3_mobilenet_v3_large"
STAGE_OF = {len(v): k for k, v in STAGE_CLASSES.items()}


def save_checkpoint(path: Path, stage: str, *, with_classes: bool = True, seed: int = 0) -> Path:
    """A fresh (untrained) checkpoint shaped like the ones ``hotrain fit`` saves (its model-only best.pt)."""
    classes = STAGE_CLASSES[stage]
    torch.manual_seed(seed)
    model, origin = build_model(MOBILE, len(classes), weights="none", aux=False, bn_momentum=0.1)
    blob = {"format": "hotrain/1", "model": model.state_dict(), "step": 0, "best_miou": 0.0,
            "num_classes": len(classes), "config": dict(DEFAULTS, model=MOBILE, aux=False, bn_momentum=0.1,
                                                        stage=stage), "origin": origin, "world_size": 1}
    if with_classes:
        blob["classes"] = list(classes)
    return ckpt_io.save_atomic(blob, path)


def _denormalise(x: torch.Tensor) -> torch.Tensor:
    """Back to [0, 1] RGB from what predict feeds a model (ImageNet-normalised)."""
    from hotrain.data import IMAGENET_MEAN as mean, IMAGENET_STD as std

    return x * torch.tensor(std, device=x.device).view(1, 3, 1, 1) + torch.tensor(mean, device=x.device).view(1, 3, 1, 1)


class ColourModel(nn.Module):
    def __init__(self, classes: list[str]):
        super().__init__()
        self.classes = classes

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        rgb = _denormalise(x)
        r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
        per_class = {"background": torch.full_like(r, 0.5), "left_hand": r, "right_hand": g,
                     "hand": torch.maximum(r, g), "object": b}
        return {"out": torch.cat([per_class[c] for c in self.classes], 1)}


class PositionModel(nn.Module):
    """Classes background, left_hand, right_hand, object; sides from the position in the frame."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        rgb = _denormalise(x)
        bright = rgb.mean(1, keepdim=True)
        w = x.shape[3]
        xn = ((torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) / w).view(1, 1, 1, w)
        left = 4 * bright * (1 - xn)
        right = 4 * bright * xn
        return {"out": torch.cat([torch.full_like(bright, 1.0), left, right, torch.zeros_like(bright)], 1)}


def use_model(monkeypatch, model_for_ckpt) -> None:
    """Make predict build ``model_for_ckpt(ckpt)`` instead of the checkpoint's network."""
    import hotrain.model

    monkeypatch.setattr(hotrain.model, "model_from_checkpoint", model_for_ckpt)


def colour_frame(h: int, w: int, shift: int = 0) -> np.ndarray:
    """RGB frame: red, green, blue vertical bands over a black bottom strip, rolled ``shift`` columns."""
    img = np.zeros((h, w, 3), np.uint8)
    for c, cols in enumerate(np.array_split(np.arange(w), 3)):
        img[: h * 3 // 4, cols, c] = 255
    return np.roll(img, shift, axis=1)


def write_rgb(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
