"""Training-step throughput: hotrain's step against a plain fp32 torchvision-reference-style step, same run.

hotrain's step: uint8 images and int64 masks go to the device as they come from the loader, are normalised
there (hotrain.data.normalize), the model runs channels_last under bf16 autocast (on a GPU; fp32 on a CPU,
where bf16 is slower) and the loss is hotrain.losses.total_loss (partial-label cross-entropy plus the recipe's
Dice term).
Baseline (torchvision references/segmentation style): float32 images normalised beforehand on the CPU (as its
loader workers do; that CPU time is NOT counted, which favours the baseline), copied to the device, fp32
model in the default memory format, cross-entropy with ignore_index 255.
Both use SGD (lr 0.02, momentum 0.9, wd 1e-4) and the same synthetic batches; the script prints the device
(the GPU's name on CUDA), images/s of each and the ratio.

    python scripts/bench_train.py                                   # CPU default: mobilenet, 128 px, few steps
    python scripts/bench_train.py --model deeplabv3_resnet50 --crop 512 --batch 8 --steps 30   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import torch.nn.functional as F

from hotrain.config import DEFAULTS
from hotrain.data import normalize
from hotrain.losses import total_loss
from hotrain.model import MODELS, build_model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batches(n: int, batch: int, crop: int, classes: int, pin: bool):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        img = torch.randint(0, 256, (batch, 3, crop, crop), dtype=torch.uint8, generator=g)
        mask = torch.randint(0, classes, (batch, crop, crop), dtype=torch.int64, generator=g)
        out.append((img.pin_memory() if pin else img, mask.pin_memory() if pin else mask))
    return out


def timed(step, batches, warmup: int, device: torch.device) -> float:
    for b in batches[:warmup]:
        step(*b)
    sync(device)
    t0 = time.perf_counter()
    for b in batches[warmup:]:
        step(*b)
    sync(device)
    return time.perf_counter() - t0


def project(args, device, batches) -> float:
    torch.manual_seed(0)
    model, _ = build_model(args.model, args.classes, aux=args.aux)
    model.to(device)
    cuda = device.type == "cuda"
    if cuda:
        model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if args.compile else model
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    has_object = torch.ones(args.batch, dtype=torch.bool, device=device)
    stage = "handobj" if args.classes == 3 else "hand"

    def step(img, mask):
        x = normalize(img.to(device, non_blocking=True))
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            out = net(x)
        loss = total_loss({k: v.float() for k, v in out.items()}, mask.to(device, non_blocking=True), has_object,
                          stage, dice_weight=args.dice_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return timed(step, batches, args.warmup, device)


def baseline(args, device, batches) -> float:
    torch.manual_seed(0)
    model, _ = build_model(args.model, args.classes, aux=args.aux)
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    prepared = [(normalize(img).contiguous(), mask) for img, mask in batches]  # CPU, untimed
    if device.type == "cuda":
        prepared = [(x.pin_memory(), m) for x, m in prepared]

    def step(x, mask):
        x, mask = x.to(device, non_blocking=True), mask.to(device, non_blocking=True)
        out = model(x)
        loss = F.cross_entropy(out["out"], mask, ignore_index=255)
        if "aux" in out:
            loss = loss + 0.5 * F.cross_entropy(out["aux"], mask, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return timed(step, prepared, args.warmup, device)


def main() -> None:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=list(MODELS), default="deeplabv3_resnet50" if cuda else "deeplabv3_mobilenet_v3_large")
    p.add_argument("--crop", type=int, default=512 if cuda else 128)
    p.add_argument("--batch", type=int, default=8 if cuda else 2)
    p.add_argument("--steps", type=int, default=30 if cuda else 6, help="timed steps")
    p.add_argument("--warmup", type=int, default=5 if cuda else 2)
    p.add_argument("--classes", type=int, default=3, choices=[2, 3])
    p.add_argument("--aux", action="store_true", help="with the auxiliary head (both sides)")
    p.add_argument("--compile", action="store_true", help="torch.compile hotrain's model")
    p.add_argument("--dice-weight", type=float, default=DEFAULTS["dice_weight"],
                   help="hotrain's Dice term, as in the default recipe (the baseline has none)")
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    batches = make_batches(args.warmup + args.steps, args.batch, args.crop, args.classes, pin=device.type == "cuda")
    n_images = args.steps * args.batch
    t_base = baseline(args, device, batches)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    t_proj = project(args, device, batches)
    result = {"device": name, "model": args.model, "crop": args.crop, "batch": args.batch, "steps": args.steps,
              "baseline_images_per_s": round(n_images / t_base, 2), "hotrain_images_per_s": round(n_images / t_proj, 2),
              "ratio": round(t_base / t_proj, 3)}
    print(f"device: {name}")
    print(f"{args.model} crop {args.crop} batch {args.batch}: baseline fp32 {result['baseline_images_per_s']} img/s, "
          f"hotrain {result['hotrain_images_per_s']} img/s -> ratio {result['ratio']}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
