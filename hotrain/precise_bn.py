""""Precise BN": BatchNorm running statistics re-estimated on whole training frames before validation."""

from __future__ import annotations

import torch
from torch import nn

from hotrain import dist
from hotrain.preprocess import normalize


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, shards: list[str], *, images: int, stage: str, device: torch.device,
                       rank: int, world: int, channels_last: bool, max_side: int | None, skip=()) -> int:
    """Reset every BatchNorm's running statistics and re-estimate them (cumulative average) from up to
    ``images`` whole, un-augmented frames of ``shards`` (this rank's slice), then average them over ranks.

    Parameters are untouched; only what eval-mode BatchNorm uses changes. Batches of 8 (the ASPP pooling branch's
    BatchNorm sees one value per image and needs more than one); frames of other sizes are padded with 0.
    Returns the number of frames used over all ranks.
    """
    from hotrain.data import make_eval_loader

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    per_rank = max(2, images // world)
    if not bns or images <= 0:
        return 0
    momenta = [m.momentum for m in bns]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches below
    was_training = model.training
    model.train()
    seen = 0
    for batch in make_eval_loader(shards, stage=stage, batch_size=8, num_workers=0, rank=rank, world_size=world,
                                  max_side=max_side, skip=skip):
        image = batch["image"][: per_rank - seen]
        if image.shape[0] < 2:
            break
        x = normalize(image.to(device))
        model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
        seen += image.shape[0]
        if seen >= per_rank:
            break
    model.train(was_training)
    total = seen
    if dist.is_dist():  # average over ranks, weighted by the frames each rank saw
        t = torch.tensor([float(seen)], device=device)
        dist.all_reduce_sum_(t)
        total = int(t.item())
    for m, momentum, (mean, var, count) in zip(bns, momenta, saved):
        m.momentum = momentum
        if total == 0:  # nothing to estimate from: keep the old statistics
            m.running_mean.copy_(mean), m.running_var.copy_(var), m.num_batches_tracked.copy_(count)
        elif dist.is_dist():
            for buf in (m.running_mean, m.running_var):
                buf.mul_(seen / total)
                dist.all_reduce_sum_(buf)
            dist.broadcast_(m.num_batches_tracked, src=0)  # the counts differ per rank: take rank 0's
    return total
