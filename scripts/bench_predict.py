"""Prediction throughput: ``hotrain predict`` against a plain per-frame loop, same run, same model, same frames.

hotrain: ``run_predict`` (frames decoded in DataLoader workers while the model runs, batches of one size, uint8
sent to the device and normalised there, PNG writes in a thread pool, atomic renames, resume check).
Baseline: for each frame, PIL decode, float normalise on the CPU, one frame per forward, argmax, PIL PNG save.
Both write every mask to a fresh folder each round. Rounds are interleaved (baseline, hotrain, baseline, ...)
and the best of each is kept, so load from other processes on the machine hits both alike.

    python scripts/bench_predict.py                           # CPU: 64 JPEG frames 640x480, MobileNetV3 DeepLabv3
    python scripts/bench_predict.py --model deeplabv3_resnet50 --frames 256 --batch-size 16   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hotrain import checkpoint as ckpt_io
from hotrain.export import STAGE_CLASSES
from hotrain.model import MODELS, build_model, model_from_checkpoint
from hotrain.predict import run_predict
from hotrain.train import DEFAULTS

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def make_frames(folder: Path, n: int, h: int, w: int) -> list[Path]:
    """Textured synthetic frames (smooth gradients + noise + blobs) as JPEG, quality 90."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:h, :w]
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        base = np.stack([(xx + 3 * i) % 256, (yy + 5 * i) % 256, (xx + yy + 7 * i) % 256], -1).astype(np.float32)
        base += rng.normal(0, 12, base.shape)
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        base[(yy - cy) ** 2 + (xx - cx) ** 2 < (h // 6) ** 2] = (220, 170, 140)
        path = folder / f"{i:06d}.jpg"
        Image.fromarray(base.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        files.append(path)
    return files


def save_checkpoint(path: Path, model_name: str) -> Path:
    classes = STAGE_CLASSES["sides"]
    torch.manual_seed(0)
    model, origin = build_model(model_name, len(classes), weights="none", aux=False)
    return ckpt_io.save_atomic({"format": "hotrain/1", "model": model.state_dict(), "step": 0,
                                "num_classes": len(classes), "classes": list(classes), "origin": origin,
                                "config": dict(DEFAULTS, model=model_name, aux=False, stage="sides")}, path)


@torch.no_grad()
def baseline(model: torch.nn.Module, files: list[Path], out: Path, device: torch.device) -> float:
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    for f in files:
        rgb = np.array(Image.open(f).convert("RGB"))
        x = (torch.from_numpy(rgb).permute(2, 0, 1).float() / 255 - MEAN) / STD
        labels = model(x[None].to(device))["out"].argmax(1)[0].to(torch.uint8).cpu().numpy()
        Image.fromarray(labels).save(out / f"{f.stem}.png")
    return time.perf_counter() - t0


def ours(ckpt: Path, folder: Path, out: Path, args) -> float:
    t0 = time.perf_counter()
    info = run_predict(ckpt, str(folder), out, batch_size=args.batch_size, num_workers=args.num_workers,
                       device=args.device)
    assert info["counts"]["written"] == args.frames, info["counts"]
    return time.perf_counter() - t0  # the whole call: model load, sha256, loader start, writes, predict.json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=list(MODELS), default="deeplabv3_mobilenet_v3_large")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default=None, help="[default: cuda when available, else cpu]")
    args = ap.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    work = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    try:
        files = make_frames(work / "frames", args.frames, args.height, args.width)
        ckpt = save_checkpoint(work / "model.pt", args.model)
        model = model_from_checkpoint(ckpt_io.load(ckpt)).to(device).eval()
        with torch.no_grad():  # first-call set-up of the CPU kernels, outside both timings
            model(torch.zeros(1, 3, args.height, args.width, device=device))
        base_s, our_s = [], []
        for r in range(args.rounds):
            base_s.append(baseline(model, files, work / f"base{r}", device))
            our_s.append(ours(ckpt, work / "frames", work / f"ours{r}", args))
            print(f"round {r}: baseline {args.frames / base_s[-1]:.2f} frames/s, "
                  f"hotrain {args.frames / our_s[-1]:.2f} frames/s", flush=True)
        same = np.mean([(np.asarray(Image.open(work / "base0" / f"{f.stem}.png"))
                         == np.asarray(Image.open(work / "ours0" / f"{f.stem}.png"))).mean() for f in files])
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
        result = {"device": f"{device} ({name})", "torch_threads": torch.get_num_threads(), "model": args.model,
                  "frames": args.frames, "size": f"{args.width}x{args.height}", "batch_size": args.batch_size,
                  "num_workers": args.num_workers, "rounds": args.rounds,
                  "baseline_fps": round(args.frames / min(base_s), 2), "hotrain_fps": round(args.frames / min(our_s), 2),
                  "ratio": round(min(base_s) / min(our_s), 2), "pixels_equal": round(float(same), 5)}
        print(json.dumps(result))
        print(f"hotrain predict {result['hotrain_fps']} frames/s vs per-frame loop {result['baseline_fps']} "
              f"frames/s: x{result['ratio']}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
