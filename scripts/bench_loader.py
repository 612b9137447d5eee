#!/usr/bin/env python
"""Benchmark the hotrain training loader against a plain folder + PIL + float loader, per worker.

Data: a synthetic EgoHOS-layout dataset (``hodata.demo.egohos``, 640x480 by default) built into shards with
``hodata build``; both loaders read the same train frames (the baseline from the folder, hotrain from the
shards). Each loader runs in this process (``num_workers=0``, one torch and one OpenCV thread), i.e. the rate of
one DataLoader worker.

- project: ``hotrain.data.make_train_loader`` - tar shards, raw 8-bit label decode, ``hotrain.augment`` (scale
  jitter, crop with padding, flip and colour jitter on uint8, the crop taken before the resize, JPEGs decoded at
  reduced size when the scale allows), collate; images stay uint8 (normalisation happens later on the model's
  device);
- baseline: the way simple training scripts do it - PIL open + ``convert("RGB")``, the label through PIL,
  convert to float32 and normalise on the CPU, scale jitter with ``F.interpolate`` (bilinear; mask nearest),
  random crop with padding, flip, default collate. No colour jitter (less work than the project does).

With ``--gpu-augment`` the script also times what a worker still does (read, label map, draws) and, on a CUDA
machine, the device's share (decode, resample, colour jitter) per second.

  .venv/bin/python scripts/bench_loader.py                  # ~1 minute on 2 cores
  .venv/bin/python scripts/bench_loader.py --crop 320 --batches 20 --data /tmp/bench_loader
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from hotrain.data import IMAGENET_MEAN, IMAGENET_STD, SCALE_RANGE, list_shards, make_train_loader


def make_data(root: Path, frames: int, size: tuple[int, int]) -> tuple[Path, Path]:
    """EgoHOS-layout folder and its shards under ``root`` (reused when already there)."""
    from hodata.demo.egohos import write

    folder, shards = root / "egohos", root / "shards"
    stamp = root / ".bench_loader.json"
    want = {"frames": frames, "size": list(size)}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        print(f"reusing data in {root}")
        return folder, shards
    t0 = time.time()
    write(folder, frames=frames, size=size)
    subprocess.run([sys.executable, "-m", "hodata.cli", "build", "--source", "egohos", "--root", str(folder),
                    "--out", str(shards), "--max-samples", "32", "--overwrite"], check=True,
                   stdout=subprocess.DEVNULL)
    stamp.write_text(json.dumps(want))
    print(f"generated {frames} frames at {size[0]}x{size[1]} and built shards in {time.time() - t0:.0f} s")
    return folder, shards


class FolderDataset(Dataset):
    """The baseline: plain files, PIL, float tensors, CPU normalisation."""

    def __init__(self, folder: Path, crop: int):
        self.images = sorted((folder / "train" / "image").glob("*.jpg"))
        self.crop = crop
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        path = self.images[i]
        img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        mask = np.asarray(Image.open(path.parent.parent / "label" / f"{path.stem}.png"), dtype=np.int64)
        x = torch.from_numpy(img).permute(2, 0, 1)
        y = torch.from_numpy(mask)
        short = round(self.crop * random.uniform(*SCALE_RANGE))
        h, w = y.shape
        size = (short, round(w * short / h)) if h <= w else (round(h * short / w), short)
        x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
        y = F.interpolate(y[None, None].float(), size=size, mode="nearest")[0, 0].long()
        ph, pw = max(0, self.crop - size[0]), max(0, self.crop - size[1])
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), value=0.0)
            y = F.pad(y, (0, pw, 0, ph), value=255)
        top = random.randint(0, x.shape[1] - self.crop)
        left = random.randint(0, x.shape[2] - self.crop)
        x = x[:, top:top + self.crop, left:left + self.crop]
        y = y[top:top + self.crop, left:left + self.crop]
        if random.random() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        return (x - self.mean) / self.std, y


def rate(batches, batch_size: int, count: int) -> float:
    """Samples/s over ``count`` batches after the first (which pays for start-up)."""
    it = iter(batches)
    next(it)
    t0 = time.perf_counter()
    for _ in range(count):
        next(it)
    return count * batch_size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=None, help="where to generate / reuse the data")
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--crop", type=int, default=480)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=10, help="timed batches per run")
    ap.add_argument("--repeats", type=int, default=2, help="alternate runs; the best of each is reported")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    root = args.data or Path(tempfile.mkdtemp(prefix="bench_loader_"))
    folder, shard_dir = make_data(root, args.frames, size)
    shards = list_shards(str(shard_dir), split="train")

    torch.set_num_threads(1)  # what one DataLoader worker gets
    cv2.setNumThreads(1)
    ours, base, planned, device_rates = [], [], [], []
    for r in range(args.repeats):
        loader = make_train_loader(shards, stage="handobj", batch_size=args.batch, crop_size=args.crop,
                                   num_workers=0, steps=args.batches + 1, seed=r)
        ours.append(rate(loader, args.batch, args.batches))
        dataset = FolderDataset(folder, args.crop)
        baseline = DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=0,
                              drop_last=True)
        base.append(rate(_cycle(baseline), args.batch, args.batches))
        # --gpu-augment: what is left for a loader worker (the image work moves to the training device)
        def planned_loader():
            return make_train_loader(shards, stage="handobj", batch_size=args.batch, crop_size=args.crop,
                                     num_workers=0, steps=args.batches + 1, seed=r, gpu_augment=True)

        planned.append(rate(planned_loader(), args.batch, args.batches))
        if torch.cuda.is_available():
            device_rates.append(device_rate(list(planned_loader()), args.batch))
    print(f"data: {len(shards)} train shards, {len(FolderDataset(folder, args.crop))} train frames at "
          f"{size[0]}x{size[1]}, crop {args.crop}, batch {args.batch}, one worker (1 thread)")
    print(f"baseline  folder+PIL+float : {max(base):7.1f} samples/s")
    print(f"project   hotrain shards   : {max(ours):7.1f} samples/s")
    print(f"ratio project/baseline     : {max(ours) / max(base):7.2f}x")
    print(f"--gpu-augment, worker share: {max(planned):7.1f} samples/s per worker ({max(planned) / max(base):.2f}x "
          "the baseline); the images are decoded and augmented on the training device")
    if device_rates:
        print(f"--gpu-augment, device share: {max(device_rates):7.1f} samples/s on {torch.cuda.get_device_name()} "
              "(nvJPEG decode + resample + colour jitter)")


def device_rate(batches: list, batch_size: int) -> float:
    """Samples/s of the device's share of --gpu-augment (decode, resample, jitter) over the given batches."""
    from hotrain.gpu_augment import batch_images

    batch_images(batches[0], "cuda")
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for b in batches:
        batch_images(b, "cuda")
    torch.cuda.synchronize()
    return len(batches) * batch_size / (time.perf_counter() - t0)


def _cycle(loader):
    while True:
        yield from loader


if __name__ == "__main__":
    main()
