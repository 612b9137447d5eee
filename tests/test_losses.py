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


# ------------------------------------------------------------------------------------------ sides stage


def test_sides_unknown_side_and_unlabelled_objects_are_marginals():
    from hotrain.stages import STAGES

    sides = STAGES["sides"]
    # pixels: left hand, hand of unknown side (target 4), background, object
    logits = torch.tensor([[[[0.5, 1.0, 2.0, -1.0]], [[2.0, 0.3, -0.5, 0.0]], [[1.0, 1.5, 0.0, 0.2]],
                            [[-0.3, 0.0, 1.0, 3.0]]]])  # (1, 4, 1, 4): bg, left, right, object rows
    mask = torch.tensor([[[1, 4, 0, 3]]])
    lz = torch.logsumexp(logits[0, :, 0], 0)  # per pixel
    lg = logits[0, :, 0]

    def loss(has_object):
        return segmentation_loss(logits, mask, torch.tensor([has_object]), sides).item()

    left = -(lg[1, 0] - lz[0])
    unknown = -(torch.logaddexp(lg[1, 1], lg[2, 1]) - lz[1])  # -log(p_left + p_right)
    obj = -(lg[3, 3] - lz[3])
    bg_full = -(lg[0, 2] - lz[2])
    bg_partial = -(torch.logaddexp(lg[0, 2], lg[3, 2]) - lz[2])  # -log(p_bg + p_obj)
    assert loss(True) == pytest.approx(float(left + unknown + bg_full + obj) / 4, rel=1e-6)
    assert loss(False) == pytest.approx(float(left + unknown + bg_partial + obj) / 4, rel=1e-6)
    # the unknown-side term does not care how the hand mass splits between left and right
    swapped = logits.clone()
    swapped[0, 1, 0, 1], swapped[0, 2, 0, 1] = logits[0, 2, 0, 1], logits[0, 1, 0, 1]
    assert segmentation_loss(swapped, mask, torch.tensor([True]), sides).item() == pytest.approx(loss(True), rel=1e-6)


# ------------------------------------------------------------------------------------------ imbalance options


def test_imbalance_options_off_is_plain_ce_and_on_keep_the_partial_label_meaning():
    torch.manual_seed(2)
    logits = torch.randn(2, 3, 6, 6)
    mask = torch.randint(0, 3, (2, 6, 6))
    mask[1, 0] = 255
    has = torch.tensor([True, False])
    plain = segmentation_loss(logits, mask, has, "handobj")
    same = segmentation_loss(logits, mask, has, "handobj", class_balance=False, ohem=0.0, dice_weight=0.0)
    assert plain.item() == same.item()
    # OHEM with the whole batch kept is the plain loss; with a fraction it averages the hardest pixels only
    assert segmentation_loss(logits, mask, has, "handobj", ohem=0.999).item() == pytest.approx(plain.item(), rel=2e-2)
    per_pixel = F.cross_entropy(logits, mask, ignore_index=255, reduction="none")
    marginal = torch.logsumexp(logits, 1) - torch.logaddexp(logits[:, 0], logits[:, 2])
    per_pixel = torch.where((mask == 0) & ~has.view(-1, 1, 1), marginal, per_pixel)[mask != 255]
    k = int(0.25 * per_pixel.numel())
    assert segmentation_loss(logits, mask, has, "handobj", ohem=0.25).item() == pytest.approx(
        per_pixel.topk(k).values.mean().item(), rel=1e-5)
    # class balance: a weighted mean, rare classes weigh more
    bal = segmentation_loss(logits, mask, has, "handobj", class_balance=True)
    assert torch.isfinite(bal) and bal.item() != pytest.approx(plain.item())


def test_dice_term_ignores_what_partial_labels_do_not_say():
    from hotrain.losses import soft_dice_loss
    from hotrain.losses import allowed_targets
    from hotrain.stages import STAGES

    st = STAGES["handobj"]
    torch.manual_seed(3)
    logits = torch.randn(1, 3, 4, 4)
    mask = torch.zeros(1, 4, 4, dtype=torch.long)
    mask[0, :2] = 1  # hand on top, "not hand" below in a source without object labels
    target = allowed_targets(mask, torch.tensor([False]), st)
    valid = target != 255
    base = soft_dice_loss(logits, target, valid, st)
    # raising the object logit where the source says only "not hand" leaves the object Dice term as it was
    # (no object pixel is known there); it changes the hand term only through p_hand
    other = logits.clone()
    other[0, 2, 2:] += 5.0
    p_hand = torch.softmax(logits, 1)[0, 1, 2:]  # keep p_hand: solve its logit against the new bg/object logits
    other[0, 1, 2:] = torch.log(p_hand / (1 - p_hand)) + torch.logaddexp(other[0, 0, 2:], other[0, 2, 2:])
    assert soft_dice_loss(other, target, valid, st).item() == pytest.approx(base.item(), abs=1e-5)
    # with object labels the same change is an object false positive and costs
    full = allowed_targets(mask, torch.tensor([True]), st)
    assert soft_dice_loss(other, full, valid, st) > soft_dice_loss(logits, full, valid, st)
