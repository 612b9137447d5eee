"""Segmentation loss with partial labels.

Cross-entropy (ignore 255) where a pixel's class is known. Where it is known only to be one of several classes
the loss is the marginal ``-log(sum of their probabilities)`` (Shi et al. 2021, arXiv 2007.03868):

- a target that is a label set of the stage (:mod:`hotrain.stages`), e.g. a hand of unknown side in ``sides``:
  ``-log(p_left + p_right)``;
- a background pixel of a sample whose source does not annotate objects (``has_object`` False) in a stage with
  an object class: its 0 means "not hand", background *or* object: ``-log(p_bg + p_obj)``.

Written in log space: ``logsumexp(all logits) - logsumexp(logits of the allowed classes)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hodata.schema import BACKGROUND, IGNORE
from hotrain.stages import Stage, get_stage


def _logsumexp_of(logits: torch.Tensor, classes: tuple[int, ...]) -> torch.Tensor:
    """log(sum over ``classes`` of exp(logit)) per pixel, folded pairwise (for two classes: ``logaddexp``)."""
    out = logits[:, classes[0]]
    for c in classes[1:]:
        out = torch.logaddexp(out, logits[:, c])
    return out


def allowed_targets(mask: torch.Tensor, has_object: torch.Tensor | None, stage: Stage) -> torch.Tensor:
    """The targets the loss scores: ``mask`` with background pixels of samples without object labels turned
    into the stage's "not hand" set (where it has one)."""
    partial = stage.object_unlabelled_id
    if partial is None or has_object is None:
        return mask
    unlabelled = (mask == BACKGROUND) & ~has_object.to(mask.device).view(-1, 1, 1)
    return torch.where(unlabelled, torch.full_like(mask, partial), mask)


def segmentation_loss(logits: torch.Tensor, mask: torch.Tensor, has_object: torch.Tensor | None,
                      stage: str | Stage, *, class_balance: bool = False, ohem: float = 0.0,
                      dice_weight: float = 0.0) -> torch.Tensor:
    """Mean loss over all counted (non-255) pixels of the batch; 0 (with a graph) when none count.

    logits (B, C, H, W) (resized bilinearly to the mask's size if they differ); mask (B, H, W) int64 of the
    stage's targets; has_object (B,) bool: the sample's source annotates objects.

    Class imbalance (all off by default): ``class_balance`` weights each pixel by ``1/sqrt(frequency)`` of its
    class in the batch (a set pixel: of its most frequent class); ``ohem`` in (0, 1) averages only the hardest
    fraction of pixels (online hard example mining); ``dice_weight`` adds that times a soft Dice loss of the
    foreground classes (:func:`soft_dice_loss`).
    """
    st = get_stage(stage)
    c = st.num_classes
    if logits.shape[1] != c:
        raise ValueError(f"stage {st.name} needs {c} classes, logits have {logits.shape[1]}")
    if logits.shape[-2:] != mask.shape[-2:]:
        logits = F.interpolate(logits, size=mask.shape[-2:], mode="bilinear", align_corners=False)
    logits = logits.float()  # log-sum-exp in fp32 under autocast
    target = allowed_targets(mask, has_object, st)
    valid = target != IGNORE
    target = torch.where(valid, target, torch.zeros_like(target))
    log_z = torch.logsumexp(logits, dim=1)  # (B, H, W)
    kept = logits.gather(1, target.clamp(max=c - 1).unsqueeze(1)).squeeze(1)  # logit of the labelled class
    for set_id, members in st.set_members.items():
        kept = torch.where(target == set_id, _logsumexp_of(logits, members), kept)
    per_pixel = (log_z - kept) * valid
    if not (class_balance or ohem or dice_weight):
        return per_pixel.sum() / valid.sum().clamp(min=1)
    weight = valid.float()
    if class_balance:
        weight = weight * balanced_weights(target, valid, st)
    if ohem:
        weight = weight * hardest(per_pixel.detach() * weight, valid, ohem)
    loss = (per_pixel * weight).sum() / weight.sum().clamp(min=1e-6)
    if dice_weight:
        loss = loss + dice_weight * soft_dice_loss(logits, target, valid, st)
    return loss


def balanced_weights(target: torch.Tensor, valid: torch.Tensor, stage: Stage) -> torch.Tensor:
    """Per-pixel weight ``1/sqrt(f)``, f the batch frequency of the pixel's class (set pixels: of the most
    frequent class they may be), normalised to mean 1 over the counted pixels."""
    c = stage.num_classes
    definite = valid & (target < c)
    counts = torch.bincount(target[definite], minlength=c).float()
    freq = counts / counts.sum().clamp(min=1)
    per_class = freq.clamp(min=1e-4).rsqrt()
    lut = torch.empty(len(stage.target_ids), device=target.device)
    lut[:c] = per_class
    for set_id, members in stage.set_members.items():
        lut[set_id] = per_class[list(members)].min()
    w = lut[target.clamp(max=len(lut) - 1)] * valid
    return w / (w.sum() / valid.sum().clamp(min=1)).clamp(min=1e-6)


def hardest(loss: torch.Tensor, valid: torch.Tensor, fraction: float) -> torch.Tensor:
    """1 at the ``fraction`` of counted pixels with the highest loss (at least 1), 0 elsewhere."""
    flat = torch.where(valid, loss, torch.full_like(loss, -1.0)).flatten()
    k = max(1, int(fraction * int(valid.sum())))
    keep = torch.zeros_like(flat)
    keep[flat.topk(min(k, flat.numel())).indices] = 1.0
    return keep.view_as(loss) * valid


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, stage: Stage,
                   eps: float = 1.0) -> torch.Tensor:
    """Mean over the foreground classes of ``1 - 2|P∩Y| / (|P| + |Y|)`` with soft P (softmax), over the batch.

    Partial labels: for class c, a pixel counts only where it is known whether it is c: a definite target, or
    a set that does not contain c (a "not hand" pixel is known not to be a hand, not known not to be an object).
    """
    probs = logits.softmax(1)
    member = torch.as_tensor(stage.membership, device=target.device)[target]  # (B, H, W, C)
    is_set = (target >= stage.num_classes).unsqueeze(-1)
    known = valid.unsqueeze(-1) & ~(is_set & member)
    y = (member & ~is_set).float()
    p = probs.permute(0, 2, 3, 1)
    known = known.float()
    inter = (p * y * known).sum((0, 1, 2))
    denom = (p * known).sum((0, 1, 2)) + (y * known).sum((0, 1, 2))
    dice = 1 - (2 * inter + eps) / (denom + eps)
    return dice[1:].mean()


def total_loss(outputs: dict[str, torch.Tensor], mask: torch.Tensor, has_object: torch.Tensor | None,
               stage: str | Stage, aux_weight: float = 0.5, **options) -> torch.Tensor:
    """``segmentation_loss`` of ``outputs["out"]`` plus ``aux_weight`` times that of ``outputs["aux"]`` if present;
    ``options`` (class_balance, ohem, dice_weight) go to both."""
    loss = segmentation_loss(outputs["out"], mask, has_object, stage, **options)
    aux = outputs.get("aux")
    if aux is not None and aux_weight:
        loss = loss + aux_weight * segmentation_loss(aux, mask, has_object, stage, **options)
    return loss
