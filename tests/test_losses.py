"""hotrain.losses: cross-entropy with ignore 255 and the partial-label term for sources without objects."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hotrain.losses import segmentation_loss, total_loss


def test_partial_label_term_matches_hand_computed_values():
    # one sample without object labels, 1x3 pixels: labels bg(0), hand(1), ignore(255)
    logits = torch.tensor([[[[1.0, 0.0, 5.0]], [[2.0, 3.0, 5.0]], [[0.5, -1.0, 5.0]]]])  # (1, 3, 1, 3)
    mask = torch.tensor([[[0, 1, 255]]])
    loss = segmentation_loss(logits, mask, torch.tensor([False]), "handobj")
    z0 = math.log(math.exp(1.0) + math.exp(2.0) + math.exp(0.5))
    partial = -(math.log(math.exp(1.0) + math.exp(0.5)) - z0)  # -log(p_bg + p_obj)
    z1 = math.log(math.exp(0.0) + math.exp(3.0) + math.exp(-1.0))
    hand = -(3.0 - z1)  # plain CE for the hand pixel
    assert loss.item() == pytest.approx((partial + hand) / 2, rel=1e-6)
    # the same sample with object labels: the bg pixel is plain CE
    full = segmentation_loss(logits, mask, torch.tensor([True]), "handobj")
    assert full.item() == pytest.approx((-(1.0 - z0) + hand) / 2, rel=1e-6)
    assert loss.item() < full.item()  # p_bg + p_obj > p_bg


def test_cross_entropy_where_it_applies_and_mixed_batch():
    torch.manual_seed(0)
    logits = torch.randn(3, 3, 5, 6)
    mask = torch.randint(0, 3, (3, 5, 6))
    mask[0, :2] = 255
    has_object = torch.tensor([True, True, True])
    ref = F.cross_entropy(logits, mask, ignore_index=255)
    assert segmentation_loss(logits, mask, has_object, "handobj").item() == pytest.approx(ref.item(), rel=1e-6)
    hand_logits, hand_mask = logits[:, :2], mask.clamp(max=1).masked_fill(mask == 255, 255)
    assert segmentation_loss(hand_logits, hand_mask, ~has_object, "hand").item() == pytest.approx(
        F.cross_entropy(hand_logits, hand_mask, ignore_index=255).item(), rel=1e-6)
    # sample 1 lacks object labels: only its 0 pixels change, to the marginal term
    partial = torch.tensor([True, False, True])
    per_pixel = F.cross_entropy(logits, mask, ignore_index=255, reduction="none")
    lse = torch.logsumexp(logits, 1)
    marginal = lse - torch.logaddexp(logits[:, 0], logits[:, 2])
    expect = torch.where((mask == 0) & ~partial.view(-1, 1, 1), marginal, per_pixel)
    expect = expect[mask != 255].mean()
    assert segmentation_loss(logits, mask, partial, "handobj").item() == pytest.approx(expect.item(), rel=1e-6)


def test_ignore_only_batch_is_zero_with_gradient_and_255_has_no_effect():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    mask = torch.full((2, 4, 4), 255)
    loss = segmentation_loss(logits, mask, torch.tensor([True, False]), "handobj")
    loss.backward()
    assert loss.item() == 0.0 and not torch.isnan(loss) and torch.equal(logits.grad, torch.zeros_like(logits))
    # changing logits at ignored pixels changes nothing
    mask[0, 0, 0] = 1
    a = segmentation_loss(logits.detach(), mask, torch.tensor([True, False]), "handobj")
    other = logits.detach().clone()
    other[:, :, 2:] = 100.0
    assert segmentation_loss(other, mask, torch.tensor([True, False]), "handobj").item() == pytest.approx(a.item())


def test_total_loss_aux_weight_resize_and_checks():
    torch.manual_seed(1)
    mask = torch.randint(0, 2, (2, 8, 8))
    out, aux = torch.randn(2, 2, 8, 8), torch.randn(2, 2, 8, 8)
    has = torch.tensor([True, True])
    main = segmentation_loss(out, mask, has, "hand")
    assert total_loss({"out": out}, mask, has, "hand").item() == pytest.approx(main.item())
    both = total_loss({"out": out, "aux": aux}, mask, has, "hand", aux_weight=0.25)
    assert both.item() == pytest.approx(main.item() + 0.25 * segmentation_loss(aux, mask, has, "hand").item())
    small = torch.randn(2, 2, 4, 4)  # logits at a lower resolution are upsampled to the mask
    up = F.interpolate(small, size=(8, 8), mode="bilinear", align_corners=False)
    assert segmentation_loss(small, mask, has, "hand").item() == pytest.approx(F.cross_entropy(up, mask).item(), rel=1e-6)
    with pytest.raises(ValueError, match="needs 3 classes"):
        segmentation_loss(out, mask, has, "handobj")
    with pytest.raises(ValueError, match="unknown stage"):
        segmentation_loss(out, mask, has, "obj")
