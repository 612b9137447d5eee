"""Model input: uint8 images become ImageNet-normalised float32 on the device the model runs on."""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(image_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> float32 ImageNet-normalised, on the tensor's own device."""
    x = image_uint8.float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    return x.sub_(mean).div_(std)
