"""Segmentation models (torchvision), where their initial weights come from, and head surgery between stages.

Each model is one :class:`ModelEntry` in :data:`MODELS`: the torchvision builder, its COCO and ImageNet weights,
the convs that map features to class logits (what head surgery widens), the auxiliary head if it has one, and
how an ImageNet classifier's state maps onto its backbone. Adding a torchvision segmentation model is one entry.

Initial weights (``--weights``):

- ``coco``: torchvision's COCO-with-VOC-labels segmentation weights (whole model but the class convs and the
  auxiliary head's, which are re-initialised for our classes);
- ``imagenet``: torchvision's ImageNet classification weights for the backbone only;
- ``none``: random initialisation;
- a path: a local ``state_dict`` file (or one of our checkpoints); tensors whose shapes match are loaded, the
  class convs may differ (other classes).

Pretrained files are read from the torch hub cache (``torch.hub.get_dir()/checkpoints``) and never downloaded
here: when the file is absent the error names it and says how to fetch it.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights, ResNet101_Weights
from torchvision.models import segmentation as seg

from hodata.errors import DataError
from hotrain.preprocess import normalize
from hotrain.stages import OBJECT_BIAS_OFFSET, default_classes, head_rows  # noqa: F401 (re-exported)


def _resnet_backbone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ResNet classifier -> segmentation backbone (IntermediateLayerGetter keeps everything up to layer4)."""
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def _mobilenet_backbone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MobileNetV3 classifier -> segmentation backbone (the classifier's ``features``)."""
    return {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}


@dataclass(frozen=True)
class ModelEntry:
    """What the trainer needs to know about one torchvision segmentation model."""

    name: str
    builder: Callable[..., nn.Module]  # torchvision builder: (weights, weights_backbone, num_classes, aux_loss)
    coco: Any  # segmentation weights enum (whole model)
    imagenet: Any  # classification weights enum (backbone)
    imagenet_to_backbone: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
    # One tuple per head (main first, then aux): the convs whose outputs sum to that head's class logits.
    class_convs: tuple[tuple[str, ...], ...] = (("classifier.4",), ("aux_classifier.4",))
    aux_head: str | None = "aux_classifier"  # the auxiliary head's module (None: the model has none)

    def build(self, num_classes: int, aux: bool) -> nn.Module:
        if aux and self.aux_head is None:
            raise ValueError(f"{self.name} has no auxiliary head")
        return self.builder(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux)

    def heads(self, model: nn.Module) -> list[tuple[str, ...]]:
        """The class-conv groups this model instance has (the aux group only when its head exists)."""
        return [g for g in self.class_convs
                if not (self.aux_head and g[0].startswith(self.aux_head + ".")
                        and getattr(model, self.aux_head, None) is None)]

    @property
    def reinitialised(self) -> tuple[str, ...]:
        """State-dict prefixes that other weights (COCO's 21 classes, another run's head) may not fill."""
        return tuple(c for g in self.class_convs for c in g) + ((self.aux_head,) if self.aux_head else ())


MODELS: dict[str, ModelEntry] = {
    e.name: e
    for e in (
        ModelEntry("deeplabv3_resnet50", seg.deeplabv3_resnet50, seg.DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1,
                   ResNet50_Weights.IMAGENET1K_V1, _resnet_backbone),
        ModelEntry("deeplabv3_resnet101", seg.deeplabv3_resnet101,
                   seg.DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1, ResNet101_Weights.IMAGENET1K_V1,
                   _resnet_backbone),
        ModelEntry("deeplabv3_mobilenet_v3_large", seg.deeplabv3_mobilenet_v3_large,
                   seg.DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1,
                   MobileNet_V3_Large_Weights.IMAGENET1K_V1, _mobilenet_backbone),
        ModelEntry("fcn_resnet50", seg.fcn_resnet50, seg.FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1,
                   ResNet50_Weights.IMAGENET1K_V1, _resnet_backbone),
        ModelEntry("lraspp_mobilenet_v3_large", seg.lraspp_mobilenet_v3_large,
                   seg.LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1,
                   MobileNet_V3_Large_Weights.IMAGENET1K_V1, _mobilenet_backbone,
                   class_convs=(("classifier.low_classifier", "classifier.high_classifier"),), aux_head=None),
    )
}


class WeightsError(DataError):
    """Initial weights cannot be had (file missing from the cache, or a file that does not fit the model)."""


def model_entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise WeightsError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return MODELS[name]


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


def resolve_weights(weights: str, model_name: str) -> str:
    """``auto``: COCO when the file is in the torch cache, else ImageNet when cached, else none."""
    if weights != "auto":
        return weights
    entry = model_entry(model_name)
    if cached_weights_path(entry.coco).is_file():
        return "coco"
    if cached_weights_path(entry.imagenet).is_file():
        return "imagenet"
    return "none"


def strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """State-dict keys without DDP's ``module.`` and torch.compile's ``_orig_mod.`` prefixes."""
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}


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
    from hotrain.checkpoint import non_finite_tensor

    bad = non_finite_tensor(obj)
    if bad:
        raise WeightsError(f"{p}: tensor {bad} holds NaN or infinite values: the weights are unusable")
    return strip_wrappers(obj)


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
    entry = model_entry(name)
    model = entry.build(num_classes, aux)
    if weights == "none":
        origin = "random initialisation (--weights none)"
    elif weights == "coco":
        coco = entry.coco
        counts = load_matching(model, read_cached_weights(coco), may_skip=entry.reinitialised,
                               origin=str(cached_weights_path(coco)))
        origin = (f"COCO weights {type(coco).__name__}.{coco.name} from {cached_weights_path(coco)} "
                  f"({counts['loaded']}/{counts['total']} tensors; class convs re-initialised)")
    elif weights == "imagenet":
        imagenet = entry.imagenet
        state = entry.imagenet_to_backbone(read_cached_weights(imagenet))
        counts = load_matching(model.backbone, state, may_skip=(), origin=str(cached_weights_path(imagenet)))
        origin = (f"ImageNet backbone weights {type(imagenet).__name__}.{imagenet.name} from "
                  f"{cached_weights_path(imagenet)} ({counts['loaded']} backbone tensors; heads random)")
    else:
        counts = load_matching(model, read_state_file(weights), may_skip=entry.reinitialised, origin=str(weights))
        origin = f"local weights {weights} ({counts['loaded']}/{counts['total']} tensors)"
    if bn_momentum is not None:
        set_bn_momentum(model, bn_momentum)
        origin += f"; BatchNorm momentum {bn_momentum}"
    return model, origin


# ------------------------------------------------------------------------------------------ head surgery


def _replan_conv(conv: nn.Conv2d, plan: list[tuple[int, float]], with_offsets: bool) -> nn.Conv2d:
    """A conv with one output row per plan entry: row ``src`` of ``conv``, bias plus the offset (if asked)."""
    new = nn.Conv2d(conv.in_channels, len(plan), conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, bias=conv.bias is not None).to(conv.weight.device, conv.weight.dtype)
    with torch.no_grad():
        for row, (src, offset) in enumerate(plan):
            new.weight[row] = conv.weight[src]
            if conv.bias is not None:
                new.bias[row] = conv.bias[src] + offset if with_offsets and offset else conv.bias[src]
    return new


def widen_head(model: nn.Module, model_name: str, old_classes: list[str], new_classes: list[str]) -> nn.Module:
    """Head surgery: re-plan every class conv from ``old_classes`` to ``new_classes`` (:func:`stages.head_rows`).

    In a head whose logits are a sum of convs (LR-ASPP), the bias offsets go into the first conv only.
    """
    plan = head_rows(old_classes, new_classes)
    for group in model_entry(model_name).heads(model):
        for i, path in enumerate(group):
            parent, _, leaf = path.rpartition(".")
            owner = model.get_submodule(parent)
            setattr(owner, leaf, _replan_conv(owner.get_submodule(leaf), plan, with_offsets=i == 0))
    return model


def checkpoint_classes(ckpt: dict[str, Any]) -> list[str]:
    """Class names a checkpoint predicts (older ones record only their count)."""
    return list(ckpt.get("classes") or default_classes(int(ckpt.get("num_classes", 2))))


def state_mismatch(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str | None:
    """One phrase on how ``state`` differs from a model's state dict (missing, unexpected, mis-shaped keys)."""
    def few(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    parts = ([f"{len(missing)} missing tensor(s) ({few(missing)})"] if missing else []) + \
            ([f"{len(unexpected)} unexpected tensor(s) ({few(unexpected)})"] if unexpected else []) + \
            ([f"{len(shapes)} of another shape ({few([f'{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}' for k in shapes])})"]
             if shapes else [])
    return "; ".join(parts) or None


def model_from_checkpoint(ckpt: dict[str, Any], classes: int | list[str] | None = None) -> nn.Module:
    """Rebuild the model a checkpoint was saved from (config inside it), optionally widened to ``classes``
    (names, or a class count for the stage with that many classes)."""
    cfg = ckpt["config"]
    old = checkpoint_classes(ckpt)
    model, _ = build_model(cfg["model"], len(old), weights="none", aux=bool(cfg.get("aux", False)),
                           bn_momentum=cfg.get("bn_momentum"))
    state = strip_wrappers(ckpt["model"])
    aux_head = model_entry(cfg["model"]).aux_head
    if not cfg.get("aux", False) and aux_head:
        state = {k: v for k, v in state.items() if not k.startswith(aux_head + ".")}
    problem = state_mismatch(model.state_dict(), state)
    if problem:
        where = getattr(ckpt, "path", None)
        raise WeightsError(f"{str(where) + ': ' if where else ''}checkpoint does not fit a {cfg['model']} with "
                           f"{len(old)} classes: {problem}")
    model.load_state_dict(state)
    if classes is not None:
        new = default_classes(classes) if isinstance(classes, int) else list(classes)
        if new != old:
            widen_head(model, cfg["model"], old, new)
    return model


# ------------------------------------------------------------------------------------------ inference


@torch.no_grad()
def predict_logits(model: nn.Module, image: torch.Tensor, *, device: torch.device, amp: str = "none",
                   channels_last: bool = False, tta: bool = False, flip_perm: list[int] | None = None) -> torch.Tensor:
    """Class scores (B, C, H, W) float32 for a uint8 batch (B, 3, H, W); normalisation happens on ``device``.

    With ``tta`` the softmax of the image and of its horizontal flip (flipped back) are averaged, and their
    log is returned (argmax and softmax work on it as on logits). ``flip_perm``
    (:func:`hotrain.stages.flip_swap_permutation` of the model's classes) swaps the scores of classes that
    mirror into each other (left and right hand) in the flipped pass.
    """
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
    back = torch.flip(flipped, dims=[3])
    if flip_perm is not None and list(flip_perm) != list(range(back.shape[1])):
        back = back[:, list(flip_perm)]
    probs = (logits.softmax(1) + back.softmax(1)) / 2
    return probs.clamp_min(1e-12).log()
