"""Segmentation metrics from a confusion matrix accumulated over a whole split (and per source).

IoU is computed once from the summed matrix, never averaged over batches (a batch-mean overweights small
or empty batches). Under DDP each rank accumulates its own samples and ``reduce_`` sums the matrices in
place, so every rank ends with the split's totals (the pitfall torchvision once had: reducing a copy).

For a source whose ``labels.object`` is false, in a stage with an object class its "background" pixels may be
objects: only hand vs not-hand is known there. When ``update`` is told ``has_object``, such samples count a
predicted object as "not hand" (folded into background), so the overall matrix never charges the model for
finding an object that the source simply did not label; their per-source report says only the hand IoUs are
meaningful.

With left and right hand classes the report adds ``left_right``: how many left-hand pixels were predicted right
and vice versa (a model that ignores sides confuses about half of them).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from hodata.schema import IGNORE

DEFAULT_NAMES = {2: ["background", "hand"], 3: ["background", "hand", "object"],
                 4: ["background", "left_hand", "right_hand", "object"]}
NOT_HAND = ("background", "object")


def _iou(mat: torch.Tensor) -> torch.Tensor:
    m = mat.double()
    tp = m.diagonal()
    union = m.sum(0) + m.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))


def _accuracy(mat: torch.Tensor) -> float:
    total = int(mat.sum())
    return float(mat.diagonal().sum()) / total if total else math.nan


def _num(x: float) -> float | None:
    """JSON-able number: NaN (a class absent from target and prediction) becomes None."""
    return None if x is None or math.isnan(x) else float(x)


class ConfusionMatrix:
    """Pixel counts ``mat[target, pred]`` over the split, plus one matrix per source."""

    def __init__(self, num_classes: int, class_names: list[str] | None = None):
        self.num_classes = num_classes
        self.names = list(class_names or DEFAULT_NAMES.get(num_classes) or map(str, range(num_classes)))
        if len(self.names) != num_classes:
            raise ValueError(f"{len(self.names)} class names for {num_classes} classes")
        self.object_class = self.names.index("object") if "object" in self.names else None
        self.mat = torch.zeros((num_classes, num_classes), dtype=torch.int64)
        self.per_source: dict[str, torch.Tensor] = {}
        self.object_labels: dict[str, bool] = {}  # source -> annotates objects (when the caller told us)

    def update(self, pred: torch.Tensor, target: torch.Tensor, source: list[str] | None = None,
               has_object: torch.Tensor | list[bool] | None = None) -> None:
        """Add a batch: pred and target (B, H, W) class ids; target 255 is ignored. ``source`` names each
        sample's source (for per-source matrices); ``has_object`` its ``labels.object`` (for the report)."""
        c = self.num_classes
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        target = target.to(pred.device)
        if self.mat.device != pred.device:  # accumulate where the predictions live (GPU: no copies)
            self.mat = self.mat.to(pred.device)
            self.per_source = {k: v.to(pred.device) for k, v in self.per_source.items()}
        if pred.dim() == 2:
            pred, target = pred[None], target[None]
        if has_object is not None and self.object_class is not None:
            unlabelled = ~torch.as_tensor([bool(x) for x in has_object], device=pred.device)
            if unlabelled.any():  # objects unannotated here: only hand vs not-hand can be scored
                fold = unlabelled.view(-1, 1, 1) & (pred == self.object_class)
                pred = torch.where(fold, torch.zeros_like(pred), pred)
        names = list(source) if source is not None else None
        if names is not None and len(names) != pred.shape[0]:
            raise ValueError(f"{len(names)} source names for a batch of {pred.shape[0]}")
        groups = sorted(set(names)) if names else [None]
        group_of = torch.tensor([groups.index(n) for n in names] if names else [0] * pred.shape[0],
                                device=pred.device)
        valid = target != IGNORE
        index = (group_of.view(-1, 1, 1) * c + target.long()) * c + pred.long()
        counts = torch.bincount(index[valid], minlength=len(groups) * c * c)
        if counts.numel() != len(groups) * c * c:
            raise ValueError(f"labels outside 0..{c - 1} (and 255) in pred or target")
        counts = counts.view(len(groups), c, c)
        self.mat += counts.sum(0)
        if names:
            for g, name in enumerate(groups):
                self.per_source[name] = self.per_source.get(name, torch.zeros_like(self.mat)) + counts[g]
            if has_object is not None:
                for name, flag in zip(names, [bool(x) for x in has_object]):
                    self.object_labels[name] = self.object_labels.get(name, False) or flag

    def reduce_(self, group=None) -> "ConfusionMatrix":
        """Sum the matrices of all ranks in place (no-op without an initialised process group). Call once."""
        if not (dist.is_available() and dist.is_initialized()):
            return self
        gathered: list[Any] = [None] * dist.get_world_size(group)
        dist.all_gather_object(gathered, (sorted(self.per_source), self.object_labels), group=group)
        names = sorted({n for names, _ in gathered for n in names})
        labels: dict[str, bool] = {}
        for _, flags in gathered:
            for n, f in flags.items():
                labels[n] = labels.get(n, False) or f
        device = (torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl"
                  else torch.device("cpu"))
        zero = torch.zeros_like(self.mat)
        stack = torch.stack([self.mat] + [self.per_source.get(n, zero) for n in names]).to(device)
        dist.all_reduce(stack, op=dist.ReduceOp.SUM, group=group)
        stack = stack.to(self.mat.device)
        self.mat = stack[0].clone()
        self.per_source = {n: stack[i + 1].clone() for i, n in enumerate(names)}
        self.object_labels = labels
        return self

    def iou(self) -> torch.Tensor:
        """(C,) float64 IoU per class; NaN for a class absent from both target and prediction."""
        return _iou(self.mat.cpu())

    def mean_iou(self) -> float:
        iou = self.iou()
        finite = iou[~iou.isnan()]
        return float(finite.mean()) if finite.numel() else math.nan

    def pixel_accuracy(self) -> float:
        return _accuracy(self.mat.cpu())

    def _summary(self, mat: torch.Tensor, names: list[str]) -> dict[str, Any]:
        iou = _iou(mat)
        finite = iou[~iou.isnan()]
        return {
            "iou": {n: _num(float(v)) for n, v in zip(names, iou)},
            "mean_iou": _num(float(finite.mean())) if finite.numel() else None,
            "pixel_accuracy": _num(_accuracy(mat)),
            "pixels": int(mat.sum()),
            "confusion_matrix": mat.tolist(),
        }

    def report(self, class_names: list[str] | None = None) -> dict[str, Any]:
        """JSON-able summary; ``confusion_matrix[target][pred]`` counts pixels."""
        names = list(class_names or self.names)
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names for {self.num_classes} classes")
        out = {"classes": names, **self._summary(self.mat.cpu(), names), "per_source": {}}
        if "left_hand" in names and "right_hand" in names:
            out["left_right"] = left_right_confusion(self.mat.cpu(), names)
        labelled = torch.zeros_like(self.mat.cpu())
        partial_sources = []
        for src, mat in sorted(self.per_source.items()):
            entry = self._summary(mat.cpu(), names)
            obj = self.object_labels.get(src)
            entry["object_labels"] = obj
            if "object" in names and obj is False:
                partial_sources.append(src)
                entry["meaningful"] = [n for n in names if n not in NOT_HAND]
                entry["mean_iou"] = None
                entry["note"] = "source does not annotate objects: only the hand IoU is meaningful"
            else:
                labelled += mat.cpu()
                entry["meaningful"] = names
            out["per_source"][src] = entry
        if partial_sources:
            # the overall matrix counts objects of hand-only sources as background errors; this one does not
            out["object_labelled"] = {"sources": sorted(set(self.per_source) - set(partial_sources)),
                                      **self._summary(labelled, names)}
        return out


def left_right_confusion(mat: torch.Tensor, names: list[str]) -> dict[str, Any]:
    """Left/right hand confusion from a confusion matrix (rows target, columns prediction)."""
    m = mat.double()
    left, right = names.index("left_hand"), names.index("right_hand")
    iou = _iou(mat)
    hands = [left, right]
    either = m[hands][:, hands].sum()  # hand pixels predicted as a hand of either side
    union = m[hands].sum() + m[:, hands].sum() - either
    out = {
        "left_pixels": int(m[left].sum()), "right_pixels": int(m[right].sum()),
        "left_as_right": int(m[left, right]), "right_as_left": int(m[right, left]),
        "iou_left": _num(float(iou[left])), "iou_right": _num(float(iou[right])),
        "iou_hand_either_side": _num(float(either / union)) if union > 0 else None,
    }
    hand_hits = m[left, hands].sum() + m[right, hands].sum()
    out["side_error_rate"] = _num(float((m[left, right] + m[right, left]) / hand_hits)) if hand_hits > 0 else None
    return out


# ------------------------------------------------------------------------------------------ plots

_BG, _INK, _GRID = (255, 255, 255), (30, 30, 30), (200, 200, 200)
_CLASS_COLOURS = [(120, 120, 120), (40, 90, 220), (220, 120, 30), (60, 160, 60), (160, 60, 160)]  # BGR


def _text(img: np.ndarray, s: str, org: tuple[int, int], scale: float = 0.45, colour=_INK, centre=False) -> None:
    import cv2

    if centre:
        (w, h), _ = cv2.getTextSize(s, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        org = (org[0] - w // 2, org[1] + h // 2)
    cv2.putText(img, s, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def _draw_confusion(img: np.ndarray, report: dict, x0: int, y0: int, size: int) -> None:
    """Row-normalised confusion matrix (rows: target, columns: prediction) with percentages."""
    import cv2

    mat = np.asarray(report["confusion_matrix"], dtype=np.float64)
    rows = mat / np.maximum(mat.sum(1, keepdims=True), 1)
    n, cell = len(mat), size // len(mat)
    names = report["classes"]
    _text(img, "confusion (row = target, %)", (x0, y0 - 30), 0.5)
    for i in range(n):
        _text(img, names[i][:10], (x0 - 80, y0 + i * cell + cell // 2 + 4))
        _text(img, names[i][:10], (x0 + i * cell + cell // 2, y0 + n * cell + 14), centre=True)
        for j in range(n):
            shade = int(255 - 200 * rows[i, j])
            p0, p1 = (x0 + j * cell, y0 + i * cell), (x0 + (j + 1) * cell, y0 + (i + 1) * cell)
            cv2.rectangle(img, p0, p1, (255, shade, shade), -1)
            cv2.rectangle(img, p0, p1, _GRID, 1)
            ink = (255, 255, 255) if rows[i, j] > 0.6 else _INK
            _text(img, f"{100 * rows[i, j]:.1f}", (p0[0] + cell // 2, p0[1] + cell // 2), 0.5, ink, centre=True)


def _draw_bars(img: np.ndarray, report: dict, x0: int, y0: int, w: int, h: int) -> None:
    """IoU per class for the whole split and each source; classes a source does not annotate are hollow."""
    import cv2

    groups = [("all", report, report["classes"])] + [
        (src, e, e.get("meaningful", report["classes"])) for src, e in report["per_source"].items()]
    names = report["classes"]
    _text(img, "IoU per class", (x0, y0 - 30), 0.5)
    cv2.line(img, (x0, y0 + h), (x0 + w, y0 + h), _INK, 1)
    for k in range(0, 11, 2):
        y = y0 + h - int(h * k / 10)
        cv2.line(img, (x0 - 4, y), (x0 + w, y), _GRID if k else _INK, 1)
        _text(img, f"{k / 10:.1f}", (x0 - 32, y + 4), 0.4)
    slot = w // max(1, len(groups))
    bar = max(4, (slot - 12) // len(names))
    for g, (label, entry, meaningful) in enumerate(groups):
        gx = x0 + g * slot + 6
        for c, name in enumerate(names):
            v = entry["iou"].get(name)
            if v is None:
                continue
            top = y0 + h - int(h * v)
            colour = _CLASS_COLOURS[c % len(_CLASS_COLOURS)]
            cv2.rectangle(img, (gx + c * bar, top), (gx + (c + 1) * bar - 2, y0 + h), colour,
                          -1 if name in meaningful else 1)
        _text(img, label[:14], (gx + len(names) * bar // 2, y0 + h + 14), 0.4, centre=True)
    for c, name in enumerate(names):  # legend
        lx = x0 + w - 110
        cv2.rectangle(img, (lx, y0 - 20 + 14 * c), (lx + 10, y0 - 10 + 14 * c), _CLASS_COLOURS[c % len(_CLASS_COLOURS)], -1)
        _text(img, name, (lx + 14, y0 - 11 + 14 * c), 0.4)


def save_plots(report: dict, path_png: str | Path) -> Path:
    """Write one PNG: the confusion matrix and per-source IoU bars (drawn with OpenCV; no matplotlib needed)."""
    import cv2

    n_groups = 1 + len(report["per_source"])
    bars_w = max(320, 70 * n_groups * max(1, len(report["classes"])) // 2)
    img = np.full((420, 110 + 280 + 90 + bars_w + 40, 3), _BG, np.uint8)
    _draw_confusion(img, report, 110, 70, 280)
    _draw_bars(img, report, 110 + 280 + 90, 70, bars_w, 280)
    miou = report.get("mean_iou")
    _text(img, f"mIoU {miou:.3f}" if miou is not None else "mIoU n/a", (10, 22), 0.6)
    path = Path(path_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"{path}: could not write PNG")
    return path
