"""``hotrain predict``: run a checkpoint over frames (folder, tree, glob, image or video), write masks.

Masks are 8-bit single-channel PNGs of each frame's full size, in the ids and layout of ``--export`` (ids and
layouts of every format: ``hotrain.export``; which frames are read: ``hotrain.predict_inputs``).

At annotation scale:

- frames are decoded in DataLoader workers while the model runs; consecutive frames of one size are batched,
  sent to the device as uint8 and normalised there;
- under ``torchrun`` frame i (in path order) goes to rank i % world size: disjoint, every frame once;
- a rerun skips every frame whose mask exists and decodes; masks are written to a hidden temporary name in
  their own folder and renamed, so a killed run leaves no half-written mask;
- a frame that cannot be read is skipped and listed, never the end of the run;
- ``<out root>/.predict.lock`` (``fcntl.flock``) keeps a second run from writing into the same place at once;
- ``<out root>/predict.json`` (written atomically at the end) records the checkpoint and its sha256, the
  options, and the counts: written, already done, failed (with reasons), frames/s, device, world size;
- ``--tta flip`` averages the softmax of the frame and of its mirror image; with a sides model the mirror
  image's left and right hand channels are swapped back first (a mirrored left hand looks like a right hand).
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader

from hodata.atomic import write_bytes_atomic
from hodata.errors import DataError
from hotrain.export import Format, flip_permutation, get_format, has_sides, model_classes
from hotrain.model import predict_logits
from hotrain.predict_inputs import Frame, ImageFrames, Plan, VideoFrames, open_video, plan

LOCK_NAME = ".predict.lock"
REPORT_NAME = "predict.json"
# Overlay colours (RGB) per class name; background untouched.
COLOURS = {"hand": (230, 40, 40), "right_hand": (230, 40, 40), "left_hand": (250, 190, 30), "object": (40, 110, 240)}


# ------------------------------------------------------------------------------------------------- the model


@torch.no_grad()
def predict_labels(model: torch.nn.Module, images: list[np.ndarray] | torch.Tensor, *, device: torch.device,
                   amp: str = "none", channels_last: bool = False, tta: bool = False,
                   flip_perm: list[int] | None = None, max_side: int | None = None) -> torch.Tensor | np.ndarray:
    """Class indices (B, H, W) uint8 for RGB frames of one size (a list of HxWx3 arrays, or a (B, H, W, 3) uint8
    tensor: then the result is a tensor on ``device``). With ``max_side`` the model sees a smaller copy and its
    scores are resized back (bilinear) to the frame size before the argmax."""
    as_numpy = not isinstance(images, torch.Tensor)
    x = torch.from_numpy(np.stack(images)) if as_numpy else images
    x = x.to(device, non_blocking=True).permute(0, 3, 1, 2)
    h, w = x.shape[2:]
    if max_side is not None and max(h, w) > max_side:
        s = max_side / max(h, w)
        x = F.interpolate(x.float(), size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear",
                          antialias=True, align_corners=False).round().clamp(0, 255).to(torch.uint8)
    scores = predict_logits(model, x, device=device, amp=amp, channels_last=channels_last, tta=tta,
                            flip_perm=flip_perm)
    if scores.shape[2:] != (h, w):
        scores = F.interpolate(scores, size=(h, w), mode="bilinear", align_corners=False)
    labels = scores.argmax(1).to(torch.uint8)
    return labels.cpu().numpy() if as_numpy else labels


def overlay(rgb: np.ndarray, labels: np.ndarray, classes: list[str], alpha: float = 0.5) -> np.ndarray:
    out = rgb.astype(np.float32)
    for index, name in enumerate(classes):
        if name in COLOURS:
            m = labels == index
            out[m] = (1 - alpha) * out[m] + alpha * np.array(COLOURS[name], np.float32)
    return out.round().astype(np.uint8)


# ------------------------------------------------------------------------------------------------- writing


def write_atomic(path: Path, image: np.ndarray) -> None:
    """Encode by suffix, write to a hidden temporary name in the same folder, rename over ``path``."""
    ok, buf = cv2.imencode(path.suffix, image)
    if not ok:
        raise DataError("cannot encode", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, buf.tobytes())


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, json.dumps(obj, indent=1).encode(), fsync=True)


def sha256_of(path: str | os.PathLike) -> str:
    from hodata.manifest import file_digest

    return file_digest(Path(path))["sha256"]


# --------------------------------------------------------------------------------------------- run support


def world_from_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment, else one process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


@contextmanager
def output_lock(root: Path, rank: int, world: int) -> Iterator[None]:
    """Rank 0 holds an exclusive ``flock`` on ``root/.predict.lock`` for the run; every rank learns whether it got
    it. A second run into the same place refuses in one line."""
    handle, ok = None, True
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        handle = open(root / LOCK_NAME, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            ok = False
    if world > 1:
        flag = [ok]
        dist.broadcast_object_list(flag, src=0)
        ok = bool(flag[0])
    try:
        if not ok:
            raise DataError("another hotrain predict is writing here (its lock is held); wait for it to finish",
                            root / LOCK_NAME)
        yield
    finally:
        if handle is not None:
            handle.close()  # releases the lock


class Progress:
    """A rich progress bar (frames/s, ETA) on a terminal; periodic plain lines otherwise; nothing when off."""

    def __init__(self, total: int | None, enabled: bool, label: str):
        self.enabled, self.total, self.done, self.t0, self.last = enabled, total, 0, time.time(), 0.0
        self.bar = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

            self.bar = Bar(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[rate]} frames/s"), TimeRemainingColumn(),
                           console=Console(stderr=True))
            self.bar.start()
            self.task = self.bar.add_task(label, total=total, rate="-")

    def advance(self, n: int, computed: int) -> None:
        """``n`` frames more handled; ``computed``: frames run through the model so far (the rate counts those)."""
        self.done += n
        rate = computed / max(time.time() - self.t0, 1e-9)
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, rate=f"{rate:.1f}")
        elif self.enabled and time.time() - self.last > 5:
            self.last = time.time()
            left = (self.total - self.done) if self.total else float("nan")
            eta = f"{left / rate:.0f} s" if rate > 0 and left == left else "?"
            print(f"  {self.done}/{self.total or '?'} frames, {rate:.1f} frames/s, ETA {eta}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _batches(items: Iterator, batch_size: int, counts: dict[str, Any]) -> Iterator[list[tuple[Frame, torch.Tensor]]]:
    """Group consecutive decoded frames of one size; count the done / failed ones as they pass."""
    batch: list[tuple[Frame, torch.Tensor]] = []
    for status, frame, payload in items:
        if status == "done":
            counts["skipped_done"] += 1
            counts["pending_progress"] += 1
            continue
        if status == "failed":
            counts["failed"].append({"frame": frame.label(), "reason": payload})
            counts["pending_progress"] += 1
            continue
        if batch and (len(batch) == batch_size or batch[0][1].shape != payload.shape):
            yield batch
            batch = []
        batch.append((frame, payload))
    if batch:
        yield batch


# ------------------------------------------------------------------------------------------------- the run


def run_predict(checkpoint: str | os.PathLike, input_spec: str, out: str | os.PathLike | None = None, *,
                export: str = "plain", overlay_images: bool = False, tta: bool = False, batch_size: int = 8,
                max_side: int | None = None, device: str | None = None, num_workers: int = 2,
                progress: bool = False) -> dict[str, Any]:
    """Predict every frame of ``input_spec`` not yet done; returns the run record (rank 0: all ranks' counts)."""
    from hotrain import checkpoint as ckpt_io
    from hotrain import model as model_lib

    t_start = time.time()
    fmt: Format = get_format(export)
    ckpt = ckpt_io.load(checkpoint)
    classes = model_classes(ckpt, checkpoint)
    fmt.check_classes(classes, checkpoint)
    the_plan: Plan = plan(input_spec, fmt, out, overlay=overlay_images)
    estimate = open_video(the_plan.video) if the_plan.kind == "video" else len(the_plan.frames)

    rank, world, local = world_from_env()
    if device:
        dev = torch.device(device)
    else:
        dev = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    own_group = world > 1 and not dist.is_initialized()
    if own_group:  # control messages only (lock, counts): gloo on every device
        dist.init_process_group("gloo")
    try:
        with output_lock(the_plan.out_root, rank, world):
            record = _predict_rank(ckpt, classes, fmt, the_plan, estimate, model_lib, dev, rank, world,
                                   overlay_images=overlay_images, tta=tta, batch_size=batch_size,
                                   max_side=max_side, num_workers=num_workers, progress=progress and rank == 0)
            records = [record]
            if world > 1:
                gathered = [None] * world if rank == 0 else None
                dist.gather_object(record, gathered, dst=0)
                records = gathered if rank == 0 else [record]
            summary = record  # ranks > 0 return their own counts; rank 0 the run's
            if rank == 0:
                options = {"export": fmt.name, "overlay": overlay_images, "tta": "flip" if tta else "none",
                           "batch_size": batch_size, "max_side": max_side, "num_workers": num_workers,
                           "device": device}
                summary = _summary(records, checkpoint, ckpt, classes, fmt, the_plan, input_spec, dev, world,
                                   t_start, options)
                write_json_atomic(the_plan.out_root / REPORT_NAME, summary)
            if world > 1:
                dist.barrier()
    finally:
        if own_group:
            dist.destroy_process_group()
    return summary


def _predict_rank(ckpt, classes, fmt, the_plan, estimate, model_lib, dev, rank, world, *, overlay_images, tta,
                  batch_size, max_side, num_workers, progress) -> dict[str, Any]:
    cuda = dev.type == "cuda"
    model = model_lib.model_from_checkpoint(ckpt).to(dev).eval()
    if cuda:
        model.to(memory_format=torch.channels_last)
    lut = torch.from_numpy(fmt.lut(classes)).to(dev)
    flip_perm = flip_permutation(classes) if tta and has_sides(classes) else None

    if the_plan.kind == "video":
        dataset = VideoFrames(the_plan, fmt, overlay_images, rank, world)
        workers, total = min(1, num_workers), -(-estimate // world) if estimate else None
    else:
        mine = the_plan.frames[rank::world]
        dataset = ImageFrames(mine)
        workers, total = min(num_workers, len(mine)), len(mine)
    from hotrain.data import quiet_worker

    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers, pin_memory=cuda,
                        worker_init_fn=quiet_worker if workers else None,
                        prefetch_factor=max(2, batch_size) if workers else None, persistent_workers=False)
    counts: dict[str, Any] = {"written": 0, "skipped_done": 0, "failed": [], "pending_progress": 0}
    bar = Progress(total, progress, f"predict {fmt.name}" + (f" (rank 0 of {world})" if world > 1 else ""))
    pool = ThreadPoolExecutor(max_workers=2)  # PNG encoding and writing overlap the next batch
    pending: list[tuple[Frame, Future]] = []

    def write(frame: Frame, labels: np.ndarray, ids: np.ndarray, rgb: np.ndarray | None) -> None:
        write_atomic(frame.mask, ids)
        if frame.overlay is not None and rgb is not None:
            img = overlay(rgb, labels, classes)
            write_atomic(frame.overlay, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))

    def settle(keep: int) -> None:
        while len(pending) > keep:
            frame, fut = pending.pop(0)
            try:
                fut.result()
                counts["written"] += 1
            except (OSError, DataError) as e:
                counts["failed"].append({"frame": frame.label(), "reason": f"cannot write {frame.mask}: {e}"})
            bar.advance(1, counts["written"] + len(pending))

    t0 = time.perf_counter()
    try:
        for batch in _batches(iter(loader), batch_size, counts):
            x = torch.stack([t for _, t in batch])
            labels = predict_labels(model, x, device=dev, amp="bf16" if cuda else "none", channels_last=cuda,
                                    tta=tta, flip_perm=flip_perm, max_side=max_side)
            ids = lut[labels.long()].cpu().numpy()
            labels_np = labels.cpu().numpy() if overlay_images else None
            for k, (frame, rgb) in enumerate(batch):
                pending.append((frame, pool.submit(write, frame, None if labels_np is None else labels_np[k], ids[k],
                                                   rgb.numpy() if overlay_images else None)))
            if counts["pending_progress"]:
                bar.advance(counts["pending_progress"], counts["written"])
                counts["pending_progress"] = 0
            settle(keep=4 * batch_size)
        settle(keep=0)
        if counts["pending_progress"]:
            bar.advance(counts["pending_progress"], counts["written"])
    finally:
        pool.shutdown(wait=True)
        bar.close()
    seconds = time.perf_counter() - t0
    counts.pop("pending_progress")
    return {"rank": rank, **counts, "seconds": seconds}


def _summary(records, checkpoint, ckpt, classes, fmt, the_plan, input_spec, dev, world, t_start,
             options) -> dict[str, Any]:
    written = sum(r["written"] for r in records)
    done = sum(r["skipped_done"] for r in records)
    failed = [f for r in records for f in r["failed"]]
    seconds = max(r["seconds"] for r in records)
    frames = written + done + len(failed)
    return {
        "format": "hotrain-predict/1",
        "checkpoint": {"path": str(Path(checkpoint).resolve()), "sha256": sha256_of(checkpoint),
                       "step": ckpt.get("step"), "stage": (ckpt.get("config") or {}).get("stage")},
        "classes": classes,
        "export": fmt.name,
        "ids": {c: int(v) for c, v in zip(classes, fmt.lut(classes))},
        "input": str(input_spec),
        "kind": the_plan.kind,
        "layout": the_plan.layout,
        "out": str(the_plan.out_root),
        "options": options,
        "counts": {"frames": frames, "written": written, "skipped_done": done, "failed": len(failed)},
        "failed": failed,
        "seconds": seconds,
        "fps": written / max(seconds, 1e-9),
        "device": str(dev),
        "world_size": world,
        "ranks": [{k: r[k] for k in ("rank", "written", "skipped_done", "seconds")} | {"failed": len(r["failed"])}
                  for r in records],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t_start)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
