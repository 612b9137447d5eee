"""``hotrain eval``: IoU per class over a whole split (and per source), confusion matrix, pixel accuracy.

Each rank reads its own shards (every sample exactly once over all ranks) and the confusion matrices are
all-reduced before any number is computed. Pixels whose target is a label set (a hand of unknown side in the
``sides`` stage) have no single class to score: they are left out of the matrix and counted in the report.

Shards are verified against the ``manifest.json`` beside them (:mod:`hotrain.integrity`): sizes before any
frame is read, sha256 while each shard is read. A damaged shard refuses the whole evaluation in one line
naming it (a score over fewer frames than the split holds would be a different number under the same name);
``--no-verify`` skips the check.
"""

from __future__ import annotations

import json
import os
import sys
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
             world_size: int = 1, amp: str = "none", channels_last: bool = False, tta: bool = False,
             verify=None, skip=()):
    """Confusion matrix of ``model`` over ``shards`` (reduced over ranks when torch.distributed is up).

    ``model`` must be the plain module (not DDP-wrapped): ranks may run different numbers of batches here,
    and a DDP forward would wait for the others. The matrix's ``unscored`` counts label-set pixels.
    ``verify`` (a :class:`hotrain.integrity.ShardIndex`): check shards while reading them; ``skip``: shards
    left out. A rank that meets a damaged shard still joins the collectives, then every rank raises.
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
                              world_size=world_size, max_side=max_side, verify=verify, skip=skip)
    failure: DataError | None = None
    try:
        for batch in loader:
            logits = predict_logits(model, batch["image"], device=device, amp=amp, channels_last=channels_last,
                                    tta=tta, flip_perm=perm)
            mask = batch["mask"]
            sets = (mask >= st.num_classes) & (mask != IGNORE)
            unscored += sets.sum()
            mask = mask.masked_fill(sets, IGNORE)
            cm.update(logits.argmax(1).cpu(), mask, batch["source"], has_object=batch["has_object"])
    except DataError as e:
        failure = e
    failed = int(dist.all_reduce_sum_(torch.tensor([int(failure is not None)]).to(dist.collective_device())).item())
    if failure is not None:
        raise failure
    if failed:
        raise DataError(f"{failed} other rank(s) met a damaged shard (their message names it)")
    cm.reduce_()
    cm.unscored = int(dist.all_reduce_sum_(unscored.to(dist.collective_device())).item())
    model.train(was_training)
    return cm


def run_eval(checkpoint: str | os.PathLike, shards: str, *, split: str = "val", out: str | os.PathLike,
             batch_size: int = 4, num_workers: int = 1, max_side: int | None = None, tta: bool = False,
             device: str | None = None, verify: bool = True) -> dict[str, Any]:
    """Evaluate a checkpoint on ``split`` of ``shards``; write ``report.json`` and ``report.png`` under ``out``.
    ``verify``: refuse when a shard differs from its manifest (see the module docstring)."""
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
        try:
            files = list_shards(shards, split=split)
        except DataError:
            if verify:
                refuse_missing(shards, split)
            raise
        index = shards_to_verify(files, split, warn=ctx.is_main) if verify else None
        cuda = ctx.device.type == "cuda"
        cm = evaluate(model, files, stage=stage, device=ctx.device, batch_size=batch_size, num_workers=num_workers,
                      max_side=max_side, rank=ctx.rank, world_size=ctx.world_size, amp="bf16" if cuda else "none",
                      channels_last=cuda, tta=tta, verify=index)
        report = cm.report(classes)
        if cm.unscored:
            report["unscored_pixels"] = {"count": cm.unscored, "why": "label-set targets (a hand of unknown side)"}
        report["checkpoint"] = {"path": str(checkpoint), "step": ckpt.get("step"), "stage": stage.name,
                                "model": ckpt["config"]["model"]}
        report["data"] = {"shards": str(shards), "split": split, "files": len(files), "tta": tta,
                          "max_side": max_side,
                          "verified_files": len(index.known) if index else 0,
                          "unverified_files": len(index.unverified) if index else len(files)}
        if ctx.is_main:
            out = Path(out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "report.json").write_text(json.dumps(report, indent=1))
            save_plots(report, out / "report.png")
        return report


def shards_to_verify(files: list[str], split: str, *, warn: bool):
    """The manifest index of ``files``; a shard the manifest lists for ``split`` that is missing, empty or of
    another size refuses the evaluation here, before any frame is read (sha256 is checked while reading)."""
    from hotrain.integrity import index_shards, quick_problem

    index = index_shards(files, split)
    problems = _missing_problems(index.missing)
    problems += [(u, p) for u in files if (e := index.expected(u)) and (p := quick_problem(u, e))]
    if problems:
        more = f"; {len(problems) - 1} more damaged shard(s)" if len(problems) > 1 else ""
        raise DataError(f"{problems[0][1]}{more}; refusing to score a different set of frames "
                        "(rebuild the shards, or pass --no-verify)", problems[0][0])
    if warn and (line := index.warning()):
        print(f"[hotrain] warning: {line}", file=sys.stderr, flush=True)
    return index


def _missing_problems(missing: dict[str, str]) -> list[tuple[str, str]]:
    return [(path, f"shard is missing (listed in {m})") for path, m in missing.items()]


def refuse_missing(spec: str, split: str) -> None:
    """When ``spec`` is a shard folder whose manifest lists shards of ``split`` it lacks: one line naming one."""
    from hotrain.integrity import missing_in_folder

    missing = missing_in_folder(str(spec), split)
    if missing:
        path, msg = _missing_problems(missing)[0]
        more = f"; {len(missing) - 1} more missing" if len(missing) > 1 else ""
        raise DataError(f"{msg}{more}; refusing to score a different set of frames", path)
