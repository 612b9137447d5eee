"""DeepLabv3 models (torchvision), where their initial weights come from, and the hand -> hand+object head surgery.

Initial weights (``--weights``):

- ``coco``: torchvision's COCO-with-VOC-labels segmentation weights (whole model but the last classifier convs,
  which are re-initialised for our classes);
- ``imagenet``: torchvision's ImageNet classification weights for the backbone only;
- ``none``: random initialisation;
- a path: a local ``state_dict`` file (or one of our checkpoints); tensors whose shapes match are loaded, the
  last classifier convs may differ (other classes).

Pretrained files are read from the torch hub cache (``torch.hub.get_dir()/checkpoints``) and never downloaded
here: when the file is absent the error names it and says how to fetch it.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights, ResNet101_Weights
from torchvision.models import segmentation as seg

MODELS = {
    "deeplabv3_resnet50": (seg.deeplabv3_resnet50, seg.DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1,
                           ResNet50_Weights.IMAGENET1K_V1),
    "deeplabv3_resnet101": (seg.deeplabv3_resnet101, seg.DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1,
                            ResNet101_Weights.IMAGENET1K_V1),
    "deeplabv3_mobilenet_v3_large": (seg.deeplabv3_mobilenet_v3_large,
                                     seg.DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1,
                                     MobileNet_V3_Large_Weights.IMAGENET1K_V1),
}
# The last 1x1 convs that map features to class logits (index 4 in both DeepLabHead and FCNHead).
CLASS_CONVS = ("classifier.4", "aux_classifier.4")


class WeightsError(RuntimeError):
    """Initial weights cannot be had (file missing from the cache, or a file that does not fit the model)."""


def cached_weights_path(weights_enum) -> Path:
    """Where torchvision's loader keeps (and looks for) the file of a weights enum."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights_enum.url)


def read_cached_weights(weights_enum) -> dict[str, torch.Tensor]:
    path = cached_weights_path(weights_enum)
    if not path.is_file():
        name = f"{type(weights_enum).__name__}.{weights_enum.name}"
        raise WeightsError(
            f"{path}: pretrained weights {name} are not in the torch hub cache and are never downloaded here; "
            f"fetch them once with `python -c \"import torchvision.models as m; m.{name}.get_state_dict()\"` "
            f"(or copy {weights_enum.url} to that path), or use --weights none / --weights FILE")
    return torch.load(path, map_location="cpu", weights_only=True)


def read_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A local state_dict, or the model part of one of our checkpoints."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: weights file not found")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise WeightsError(f"{p}: not a loadable state_dict ({type(e).__name__}: {e})") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{p}: expected a dict of tensors (a state_dict)")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in obj.items()}


def load_matching(module: nn.Module, state: dict[str, torch.Tensor], *, may_skip: tuple[str, ...],
                  origin: str) -> dict[str, Any]:
    """Load ``state`` into ``module``; only keys under ``may_skip`` prefixes may be missing or mis-shaped.

    Returns counts for the log. Anything else that does not fit is an error naming ``origin``.
    """
    own = module.state_dict()
    loadable, skipped = {}, []
    for k, v in state.items():
        if k in own and own[k].shape == v.shape:
            loadable[k] = v
        elif k.startswith(may_skip):
            skipped.append(k)
    missing = [k for k in own if k not in loadable and not k.startswith(may_skip)]
    if missing:
        raise WeightsError(f"{origin}: does not fit this model: {len(missing)} tensors missing or mis-shaped "
                           f"(first: {missing[:3]})")
    module.load_state_dict(loadable, strict=False)
    return {"loaded": len(loadable), "skipped": len(skipped), "total": len(own)}


def set_bn_momentum(model: nn.Module, momentum: float) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


def build_model(name: str, num_classes: int, *, weights: str = "none", aux: bool = True,
                bn_momentum: float | None = None) -> tuple[nn.Module, str]:
    """Build ``name`` with ``num_classes`` outputs; return the model and a sentence saying where weights came from."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    builder, coco, imagenet = MODELS[name]
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux)
    if weights == "none":
        origin = "random initialisation (--weights none)"
    elif weights == "coco":
        counts = load_matching(model, read_cached_weights(coco), may_skip=CLASS_CONVS + ("aux_classifier",),
                               origin=str(cached_weights_path(coco)))
        origin = (f"COCO weights {type(coco).__name__}.{coco.name} from {cached_weights_path(coco)} "
                  f"({counts['loaded']}/{counts['total']} tensors; class convs re-initialised)")
    elif weights == "imagenet":
        state = read_cached_weights(imagenet)
        if "mobilenet" in name:  # the segmentation backbone is mobilenet_v3_large(...).features
            state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        else:  # resnet: IntermediateLayerGetter keeps everything up to layer4 (no avgpool/fc)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        counts = load_matching(model.backbone, state, may_skip=(), origin=str(cached_weights_path(imagenet)))
        origin = (f"ImageNet backbone weights {type(imagenet).__name__}.{imagenet.name} from "
                  f"{cached_weights_path(imagenet)} ({counts['loaded']} backbone tensors; heads random)")
    else:
        counts = load_matching(model, read_state_file(weights), may_skip=CLASS_CONVS + ("aux_classifier",),
                               origin=str(weights))
        origin = f"local weights {weights} ({counts['loaded']}/{counts['total']} tensors)"
    if bn_momentum is not None:
        set_bn_momentum(model, bn_momentum)
        origin += f"; BatchNorm momentum {bn_momentum}"
    return model, origin


def num_outputs(model: nn.Module) -> int:
    return model.classifier[4].out_channels


# Object row bias offset: the new object logit starts at the background logit minus this, so p_obj starts at
# about exp(-4) ~ 2 % of p_bg and the hand-stage predictions (argmax, and bg + obj mass) are kept at the start.
OBJECT_BIAS_OFFSET = 4.0


def _expand_conv(conv: nn.Conv2d, new_classes: int) -> nn.Conv2d:
    """A copy of ``conv`` with rows 0..C-1 kept and rows C.. copied from the background row (bias lowered).

    Why the background row: in the hand stage object pixels were trained as "not hand" (background), so the
    background row already responds to them; starting the object row there, slightly below, gives it a useful
    feature direction while bg/hand logits stay exactly what they were.
    """
    old = conv.out_channels
    new = nn.Conv2d(conv.in_channels, new_classes, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, bias=conv.bias is not None).to(conv.weight.device, conv.weight.dtype)
    with torch.no_grad():
        new.weight[:old] = conv.weight
        new.weight[old:] = conv.weight[0]
        if conv.bias is not None:
            new.bias[:old] = conv.bias
            new.bias[old:] = conv.bias[0] - OBJECT_BIAS_OFFSET
    return new


def expand_classes(model: nn.Module, new_classes: int) -> nn.Module:
    """Head surgery (hand -> handobj): widen the last classifier conv (and the aux one) to ``new_classes``."""
    old = num_outputs(model)
    if new_classes < old:
        raise ValueError(f"cannot shrink the head from {old} to {new_classes} classes")
    if new_classes == old:
        return model
    model.classifier[4] = _expand_conv(model.classifier[4], new_classes)
    if getattr(model, "aux_classifier", None) is not None:
        model.aux_classifier[4] = _expand_conv(model.aux_classifier[4], new_classes)
    return model


def model_from_checkpoint(ckpt: dict[str, Any], num_classes: int | None = None) -> nn.Module:
    """Rebuild the model a checkpoint was saved from (config inside it), optionally widened to ``num_classes``."""
    cfg = ckpt["config"]
    model, _ = build_model(cfg["model"], int(ckpt.get("num_classes", cfg.get("num_classes", 2))),
                           weights="none", aux=bool(cfg["aux"]), bn_momentum=cfg.get("bn_momentum"))
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    if not cfg["aux"]:
        state = {k: v for k, v in state.items() if not k.startswith("aux_classifier")}
    model.load_state_dict(state)
    if num_classes is not None:
        expand_classes(model, num_classes)
    return model


@torch.no_grad()
def predict_logits(model: nn.Module, image: torch.Tensor, *, device: torch.device, amp: str = "none",
                   channels_last: bool = False, tta: bool = False) -> torch.Tensor:
    """Class scores (B, C, H, W) float32 for a uint8 batch (B, 3, H, W); normalisation happens on ``device``.

    With ``tta`` the softmax of the image and of its horizontal flip (flipped back) are averaged, and their
    log is returned (argmax and softmax work on it as on logits).
    """
    from hotrain.data import normalize

    x = normalize(image.to(device, non_blocking=True))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ctx = (torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
           if amp in ("bf16", "fp16") else nullcontext())
    with ctx:
        logits = model(x)["out"].float()
        if not tta:
            return logits
        flipped = model(torch.flip(x, dims=[3]))["out"].float()
    probs = (logits.softmax(1) + torch.flip(flipped, dims=[3]).softmax(1)) / 2
    return probs.clamp_min(1e-12).log()
