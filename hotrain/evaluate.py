"""``hotrain eval``: IoU per class over a whole split (and per source), confusion matrix, pixel accuracy.

Each rank reads its own shards (every sample exactly once over all ranks) and the confusion matrices are
all-reduced before any number is computed. Pixels whose target is a label set (a hand of unknown side in the
``sides`` stage) have no single class to score: they are left out of the matrix and counted in the report.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hodata.errors import DataError
from hodata.schema import IGNORE
from hotrain import dist
from hotrain.stages import Stage, flip_swap_permutation, get_stage


@torch.no_grad()
def evaluate(model: nn.Module, shards: list[str], *, stage: str | Stage, device: torch.device,
             batch_size: int = 4, num_workers: int = 0, max_side: int | None = None, rank: int = 0,
             world_size: int = 1, amp: str = "none", channels_last: bool = False, tta: bool = False):
    """Confusion matrix of ``model`` over ``shards`` (reduced over ranks when torch.distributed is up).

    ``model`` must be the plain module (not DDP-wrapped): ranks may run different numbers of batches here,
    and a DDP forward would wait for the others. The matrix's ``unscored`` counts label-set pixels.
    """
    from hotrain.data import make_eval_loader
    from hotrain.metrics import ConfusionMatrix
    from hotrain.model import predict_logits

    st = get_stage(stage)
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(st.num_classes, list(st.classes))
    unscored = torch.zeros(1, dtype=torch.int64)
    perm = flip_swap_permutation(st.classes)
    loader = make_eval_loader(shards, stage=st, batch_size=batch_size, num_workers=num_workers, rank=rank,
                              world_size=world_size, max_side=max_side)
    for batch in loader:
        logits = predict_logits(model, batch["image"], device=device, amp=amp, channels_last=channels_last, tta=tta,
                                flip_perm=perm)
        mask = batch["mask"]
        sets = (mask >= st.num_classes) & (mask != IGNORE)
        unscored += sets.sum()
        mask = mask.masked_fill(sets, IGNORE)
        cm.update(logits.argmax(1).cpu(), mask, batch["source"], has_object=batch["has_object"])
    cm.reduce_()
    cm.unscored = int(dist.all_reduce_sum_(unscored.to(dist.collective_device())).item())
    model.train(was_training)
    return cm


def run_eval(checkpoint: str | os.PathLike, shards: str, *, split: str = "val", out: str | os.PathLike,
             batch_size: int = 4, num_workers: int = 1, max_side: int | None = None, tta: bool = False,
             device: str | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint on ``split`` of ``shards``; write ``report.json`` and ``report.png`` under ``out``."""
    from hotrain import checkpoint as ckpt_io
    from hotrain.data import list_shards
    from hotrain.metrics import save_plots
    from hotrain.model import checkpoint_classes, model_from_checkpoint

    with dist.distributed(device) as ctx:
        ckpt = ckpt_io.load(checkpoint)
        stage = get_stage(ckpt["config"]["stage"])
        classes = checkpoint_classes(ckpt)
        if classes != list(stage.classes):
            raise DataError(f"classes {classes} are not those of stage {stage.name}", checkpoint)
        model = model_from_checkpoint(ckpt).to(ctx.device)
        files = list_shards(shards, split=split)
        cuda = ctx.device.type == "cuda"
        cm = evaluate(model, files, stage=stage, device=ctx.device, batch_size=batch_size, num_workers=num_workers,
                      max_side=max_side, rank=ctx.rank, world_size=ctx.world_size, amp="bf16" if cuda else "none",
                      channels_last=cuda, tta=tta)
        report = cm.report(classes)
        if cm.unscored:
            report["unscored_pixels"] = {"count": cm.unscored, "why": "label-set targets (a hand of unknown side)"}
        report["checkpoint"] = {"path": str(checkpoint), "step": ckpt.get("step"), "stage": stage.name,
                                "model": ckpt["config"]["model"]}
        report["data"] = {"shards": str(shards), "split": split, "files": len(files), "tta": tta,
                          "max_side": max_side}
        if ctx.is_main:
            out = Path(out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "report.json").write_text(json.dumps(report, indent=1))
            save_plots(report, out / "report.png")
        return report
