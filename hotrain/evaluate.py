"""``hotrain eval``: IoU per class over a whole split (and per source), confusion matrix, pixel accuracy.

Each rank reads its own shards (every sample exactly once over all ranks) and the confusion matrices are
all-reduced before any number is computed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn


@torch.no_grad()
def evaluate(model: nn.Module, shards: list[str], *, stage: str, num_classes: int, device: torch.device,
             batch_size: int = 4, num_workers: int = 0, max_side: int | None = None, rank: int = 0,
             world_size: int = 1, amp: str = "none", channels_last: bool = False, tta: bool = False):
    """Confusion matrix of ``model`` over ``shards`` (reduced over ranks when torch.distributed is up).

    ``model`` must be the plain module (not DDP-wrapped): ranks may run different numbers of batches here,
    and a DDP forward would wait for the others.
    """
    from hotrain.data import make_eval_loader
    from hotrain.metrics import ConfusionMatrix
    from hotrain.model import predict_logits

    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes)
    loader = make_eval_loader(shards, stage=stage, batch_size=batch_size, num_workers=num_workers, rank=rank,
                              world_size=world_size, max_side=max_side)
    for batch in loader:
        logits = predict_logits(model, batch["image"], device=device, amp=amp, channels_last=channels_last, tta=tta)
        cm.update(logits.argmax(1).cpu(), batch["mask"], batch["source"], has_object=batch["has_object"])
    cm.reduce_()
    model.train(was_training)
    return cm


def run_eval(checkpoint: str | os.PathLike, shards: str, *, split: str = "val", out: str | os.PathLike,
             batch_size: int = 4, num_workers: int = 1, max_side: int | None = None, tta: bool = False,
             device: str | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint on ``split`` of ``shards``; write ``report.json`` and ``report.png`` under ``out``."""
    import torch.distributed as dist

    from hotrain import checkpoint as ckpt_io
    from hotrain.data import list_shards
    from hotrain.metrics import save_plots
    from hotrain.model import model_from_checkpoint
    from hotrain.train import class_names, init_distributed, is_dist

    rank, world, _, dev = init_distributed()
    if device is not None:
        dev = torch.device(device)
    try:
        ckpt = ckpt_io.load(checkpoint)
        stage = ckpt["config"]["stage"]
        num_classes = int(ckpt["num_classes"])
        model = model_from_checkpoint(ckpt).to(dev)
        files = list_shards(shards, split=split)
        amp = "bf16" if dev.type == "cuda" else "none"
        cm = evaluate(model, files, stage=stage, num_classes=num_classes, device=dev, batch_size=batch_size,
                      num_workers=num_workers, max_side=max_side, rank=rank, world_size=world, amp=amp,
                      channels_last=dev.type == "cuda", tta=tta)
        report = cm.report(class_names(num_classes))
        report["checkpoint"] = {"path": str(checkpoint), "step": ckpt.get("step"), "stage": stage,
                                "model": ckpt["config"]["model"]}
        report["data"] = {"shards": str(shards), "split": split, "files": len(files), "tta": tta,
                          "max_side": max_side}
        if rank == 0:
            out = Path(out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "report.json").write_text(json.dumps(report, indent=1))
            save_plots(report, out / "report.png")
        return report
    finally:
        if is_dist():
            dist.destroy_process_group()
