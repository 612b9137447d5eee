"""Segmentation loss with partial labels.

Plain cross-entropy (ignore 255) everywhere, except in stage ``handobj`` on samples whose source does not
annotate objects (``has_object`` False): their 0 pixels mean "not hand" (background *or* object), so they
get the marginal term ``-log(p_bg + p_obj)`` (Shi et al. 2021, arXiv 2007.03868) instead of "background".
Written in log space: ``logsumexp(all logits) - logaddexp(logit_bg, logit_obj)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hodata.schema import BACKGROUND, IGNORE, OBJECT
from hotrain.data import STAGES


def segmentation_loss(logits: torch.Tensor, mask: torch.Tensor, has_object: torch.Tensor, stage: str) -> torch.Tensor:
    """Mean loss over all counted (non-255) pixels of the batch; 0 (with a graph) when none count.

    logits (B, C, H, W) (resized bilinearly to the mask's size if they differ); mask (B, H, W) int64 already
    mapped to the stage's classes; has_object (B,) bool.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {sorted(STAGES)}")
    if logits.shape[1] != STAGES[stage]:
        raise ValueError(f"stage {stage} needs {STAGES[stage]} classes, logits have {logits.shape[1]}")
    if logits.shape[-2:] != mask.shape[-2:]:
        logits = F.interpolate(logits, size=mask.shape[-2:], mode="bilinear", align_corners=False)
    logits = logits.float()  # log-sum-exp in fp32 under autocast
    valid = mask != IGNORE
    target = torch.where(valid, mask, torch.zeros_like(mask))
    log_z = torch.logsumexp(logits, dim=1)  # (B, H, W)
    kept = logits.gather(1, target.unsqueeze(1)).squeeze(1)  # logit of the labelled class
    if stage == "handobj":
        partial = valid & (mask == BACKGROUND) & ~has_object.to(mask.device).view(-1, 1, 1)
        kept = torch.where(partial, torch.logaddexp(logits[:, BACKGROUND], logits[:, OBJECT]), kept)
    per_pixel = (log_z - kept) * valid
    return per_pixel.sum() / valid.sum().clamp(min=1)


def total_loss(outputs: dict[str, torch.Tensor], mask: torch.Tensor, has_object: torch.Tensor, stage: str,
               aux_weight: float = 0.5) -> torch.Tensor:
    """``segmentation_loss`` of ``outputs["out"]`` plus ``aux_weight`` times that of ``outputs["aux"]`` if present."""
    loss = segmentation_loss(outputs["out"], mask, has_object, stage)
    aux = outputs.get("aux")
    if aux is not None and aux_weight:
        loss = loss + aux_weight * segmentation_loss(aux, mask, has_object, stage)
    return loss
