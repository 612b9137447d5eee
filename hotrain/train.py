"""``hotrain fit``: train DeepLabv3 on hodata/1 shards, in one process or one process per GPU under torchrun.

Training is organised in optimizer steps; ``steps_per_epoch`` steps make an epoch, and each epoch has its own
deterministic loader (seed, rank, world size, epoch). ``--resume`` reloads ``out/last.pt`` (model, optimizer,
scheduler, scaler, step, every rank's RNG states) and, mid-epoch, re-creates that epoch's loader and skips
the batches already done, so a resumed run ends with the parameters of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from hodata.errors import DataError
from hotrain import checkpoint as ckpt_io
from hotrain.model import MODELS, build_model, cached_weights_path, model_from_checkpoint, set_bn_momentum

# Every option with its default (a GPU-sized run, torchvision's reference recipe for DeepLabv3).
DEFAULTS: dict[str, Any] = {
    "shards": None, "stage": "hand", "init": None, "preset": None, "out": "runs/hotrain",
    "model": "deeplabv3_resnet50", "weights": "auto", "aux": True, "aux_weight": 0.5, "bn_momentum": None,
    "sync_bn": False, "bn_recompute": 0,
    "steps": 20000, "steps_per_epoch": 1000, "batch_size": 8, "accum": 1, "crop_size": 512, "num_workers": 4,
    "seed": 0, "mix": None, "augment": True, "train_split": "train", "val_split": "val",
    "optimizer": "sgd", "lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4, "poly_power": 0.9, "warmup_steps": 0,
    "amp": "auto", "channels_last": "auto", "compile": False,
    "eval_every": 1000, "eval_batch_size": 4, "eval_max_side": None,
    "ckpt_every": 1000, "keep_step_ckpts": False, "log_every": 20, "progress": True, "stop_at": None,
}
# Presets change defaults; options given on the command line still win.
PRESETS: dict[str, dict[str, Any]] = {
    # A quick CPU run on the demo shards (about a minute on 2 cores). BN momentum 0.1: torchvision's MobileNetV3
    # uses 0.01, and after a short run its eval-mode running statistics lag so far behind that it predicts
    # only background (DESIGN.md).
    # bn_recompute: BatchNorm statistics recomputed on 64 whole training frames before each validation: after
    # a short run on small augmented crops the running statistics do not match whole frames (measured on the
    # demo, 150 steps of 8 crops of 96 px: val hand IoU 0.21 without, 0.54 with them recomputed).
    "tiny": {"model": "deeplabv3_mobilenet_v3_large", "weights": "auto", "aux": False, "bn_momentum": 0.1,
             "bn_recompute": 64,
             "steps": 150, "steps_per_epoch": 75, "batch_size": 8, "crop_size": 96, "num_workers": 1,
             "optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "eval_every": 75, "ckpt_every": 75,
             "eval_batch_size": 8, "log_every": 10},
}
# On --resume the saved config is used; only these may change (they do not change what is computed).
RESUME_MAY_CHANGE = ("stop_at", "ckpt_every", "keep_step_ckpts", "log_every", "progress", "eval_every",
                     "eval_batch_size")


class TrainError(RuntimeError):
    """A configuration that cannot run (one line for the user)."""


def resolve_config(user: dict[str, Any]) -> dict[str, Any]:
    """DEFAULTS, then the preset, then the options the user gave (None = not given)."""
    given = {k: v for k, v in user.items() if v is not None}
    unknown = set(given) - set(DEFAULTS)
    if unknown:
        raise TrainError(f"unknown options: {sorted(unknown)}")
    preset = given.get("preset")
    if preset is not None and preset not in PRESETS:
        raise TrainError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    cfg = dict(DEFAULTS) | PRESETS.get(preset, {}) | given
    if cfg["shards"] is None:
        raise TrainError("--shards is required")
    if cfg["model"] not in MODELS:
        raise TrainError(f"unknown model {cfg['model']!r}; choose from {', '.join(MODELS)}")
    if cfg["optimizer"] not in ("sgd", "adamw"):
        raise TrainError(f"unknown optimizer {cfg['optimizer']!r} (sgd or adamw)")
    for k in ("steps", "steps_per_epoch", "batch_size", "accum", "crop_size", "eval_every", "ckpt_every"):
        if int(cfg[k]) < 1:
            raise TrainError(f"--{k.replace('_', '-')} must be >= 1")
    return cfg


# ---------------------------------------------------------------------------------------------- distributed


def init_distributed() -> tuple[int, int, int, torch.device]:
    """(rank, world_size, local_rank, device) from torchrun's env (RANK / WORLD_SIZE / LOCAL_RANK), else 1 process."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, local, device


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def gather_to_rank0(obj: Any) -> list[Any] | None:
    if not is_dist():
        return [obj]
    out = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


# ------------------------------------------------------------------------------------------------- logging


class RunLog:
    """Rank 0 writes: messages (stderr + out/train.log), metrics (out/metrics.jsonl), TensorBoard (out/tb)."""

    def __init__(self, out: Path, rank: int, resume_step: int | None):
        self.rank, self.out = rank, out
        self.tb = None
        if rank != 0:
            return
        out.mkdir(parents=True, exist_ok=True)
        metrics = out / "metrics.jsonl"
        if resume_step is not None and metrics.exists():  # drop records newer than the checkpoint we resume
            keep = [ln for ln in metrics.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= resume_step]
            metrics.write_text("".join(ln + "\n" for ln in keep))
        elif resume_step is None:
            metrics.write_text("")
        self.metrics = open(metrics, "a")
        self.text = open(out / "train.log", "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"), purge_step=resume_step)
        except ImportError:  # tensorboard is a dependency, but a missing one must not stop training
            self.info("tensorboard is not installed: no out/tb logs")

    def info(self, msg: str) -> None:
        if self.rank != 0:
            return
        print(f"[hotrain] {msg}", file=sys.stderr, flush=True)
        self.text.write(msg + "\n")
        self.text.flush()

    def record(self, rec: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        self.metrics.write(json.dumps(rec) + "\n")
        self.metrics.flush()
        if self.tb is not None:
            prefix = rec.get("split", "train")
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(f"{prefix}/{k}", v, rec["step"])

    def close(self) -> None:
        if self.rank == 0:
            self.metrics.close()
            self.text.close()
            if self.tb is not None:
                self.tb.close()


def make_progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[ips]:.1f} img/s  loss {task.fields[loss]:.4f}"), TimeRemainingColumn(),
                    disable=not enabled, transient=False)


# --------------------------------------------------------------------------------------------- components


def resolve_weights(weights: str, model_name: str) -> str:
    """``auto``: COCO when the file is in the torch cache, else ImageNet when cached, else none."""
    if weights != "auto":
        return weights
    _, coco, imagenet = MODELS[model_name]
    if cached_weights_path(coco).is_file():
        return "coco"
    if cached_weights_path(imagenet).is_file():
        return "imagenet"
    return "none"


def make_model(cfg: dict[str, Any], user: dict[str, Any], num_classes: int) -> tuple[nn.Module, str]:
    """The model for this run: from --init (head widened when the stage has more classes) or from --weights."""
    if not cfg["init"]:
        return build_model(cfg["model"], num_classes, weights=resolve_weights(cfg["weights"], cfg["model"]),
                           aux=cfg["aux"], bn_momentum=cfg["bn_momentum"])
    init = ckpt_io.load(cfg["init"])
    icfg = init["config"]
    if user.get("model") not in (None, icfg["model"]):
        raise TrainError(f"{cfg['init']}: --init checkpoint is a {icfg['model']}, not the asked {user['model']}")
    if user.get("aux") and not icfg["aux"]:
        raise TrainError(f"{cfg['init']}: --init checkpoint has no aux head; train with --no-aux")
    old = int(init.get("num_classes", 2))
    if num_classes < old:
        raise TrainError(f"{cfg['init']}: has {old} classes, stage {cfg['stage']} has {num_classes}")
    model = model_from_checkpoint(init, num_classes)
    if user.get("aux") is False:
        model.aux_classifier = None
    cfg["model"], cfg["aux"] = icfg["model"], model.aux_classifier is not None
    if cfg["bn_momentum"] is not None:
        set_bn_momentum(model, cfg["bn_momentum"])
    how = "classifier widened (bg/hand rows copied, object row from bg)" if num_classes > old else "same classes"
    return model, (f"--init {cfg['init']} (stage {icfg['stage']}, step {init.get('step')}; {old} -> {num_classes} "
                   f"classes: {how}); --weights not used")


def make_optimizer(cfg: dict[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def make_scheduler(cfg: dict[str, Any], opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup, then poly decay ``(1 - t/T) ** power`` (torchvision's segmentation reference)."""
    steps, warm, power = int(cfg["steps"]), int(cfg["warmup_steps"]), float(cfg["poly_power"])

    def factor(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        return max(0.0, 1 - (s - warm) / max(1, steps - warm)) ** power

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


@contextmanager
def preserved_rng():
    """Run a block without touching the global RNGs (python, numpy, torch CPU) that training uses."""
    saved = ckpt_io.rng_state()
    try:
        yield
    finally:
        ckpt_io.set_rng_state(saved)


class IsolatedRNG:
    """Iterate ``make()``'s iterable with its own global-RNG states, seeded from ``seed``.

    Whatever randomness the data pipeline draws from the global generators (transforms v2 use torch's,
    DataLoader draws its worker base seed from it) then depends only on the seed and on how many batches were
    drawn, never on training (dropout) or on when the loader was made: a resumed run that re-creates an
    epoch's loader and skips the done batches sees exactly the batches of an uninterrupted run.
    """

    def __init__(self, make, seed: int):
        with preserved_rng():
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
            self._it = iter(make())
            self._state = ckpt_io.rng_state()

    def __iter__(self):
        return self

    def __next__(self):
        outer = ckpt_io.rng_state()
        ckpt_io.set_rng_state(self._state)
        try:
            return next(self._it)
        finally:
            self._state = ckpt_io.rng_state()
            ckpt_io.set_rng_state(outer)


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, shards: list[str], *, images: int, stage: str, device: torch.device,
                       rank: int, world: int, channels_last: bool, max_side: int | None) -> int:
    """"Precise BN": reset every BatchNorm's running statistics and re-estimate them (cumulative average) from
    up to ``images`` whole, un-augmented frames of ``shards`` (this rank's slice), then average them over ranks.

    Parameters are untouched; only what eval-mode BatchNorm uses changes. Batches of 8 (the ASPP pooling branch's
    BatchNorm sees one value per image and needs more than one); frames of other sizes are padded with 0.
    """
    from hotrain.data import make_eval_loader, normalize

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
                                  max_side=max_side):
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
    if is_dist():  # average over ranks, weighted by the frames each rank saw
        t = torch.tensor([float(seen)], device=device)
        dist.all_reduce(t)
        total = int(t.item())
    for m, momentum, (mean, var, count) in zip(bns, momenta, saved):
        m.momentum = momentum
        if total == 0:  # nothing to estimate from: keep the old statistics
            m.running_mean.copy_(mean), m.running_var.copy_(var), m.num_batches_tracked.copy_(count)
        elif is_dist():
            for buf in (m.running_mean, m.running_var):
                buf.mul_(seen / total)
                dist.all_reduce(buf)
            dist.broadcast(m.num_batches_tracked, src=0)  # the counts differ per rank: take rank 0's
    return total


def digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over named tensors (name order): equal digests = equal values, bit for bit."""
    h = hashlib.sha256()
    for name, t in sorted(tensors.items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def class_names(num_classes: int) -> list[str]:
    from hodata.schema import CLASS_NAMES

    return [CLASS_NAMES[i] for i in range(num_classes)]


# ------------------------------------------------------------------------------------------------ the loop


def fit(user: dict[str, Any], resume: bool = False) -> dict[str, Any]:
    """Train; ``user`` holds the options given (None = not given). Returns a summary dict (rank 0's view)."""
    from hotrain import data, losses

    cfg = resolve_config(user)
    out = Path(cfg["out"])
    rank, world, local, device = init_distributed()
    try:
        return _fit(cfg, user, out, resume, rank, world, device, data, losses)
    finally:
        if is_dist():
            dist.destroy_process_group()


def _fit(cfg, user, out, resume, rank, world, device, data, losses) -> dict[str, Any]:
    state = None
    if resume and (out / "last.pt").is_file():
        state = ckpt_io.load(out / "last.pt")
        saved = dict(state["config"])
        changed = {k: v for k, v in user.items() if v is not None and k in DEFAULTS and saved.get(k) != v
                   and k not in RESUME_MAY_CHANGE and k != "out"}
        saved.update({k: user[k] for k in RESUME_MAY_CHANGE if user.get(k) is not None})
        cfg = saved | {"stop_at": user.get("stop_at")}
    log = RunLog(out, rank, None if state is None else int(state["step"]))
    if state is not None:
        log.info(f"resuming {out / 'last.pt'} at step {state['step']}/{cfg['steps']}")
        if changed:
            log.info(f"ignoring options that differ from the saved run on --resume: {sorted(changed)}")
    elif resume:
        log.info(f"--resume: no {out / 'last.pt'} yet, starting a new run")

    stage = cfg["stage"]
    if stage not in data.STAGES:
        raise TrainError(f"unknown stage {stage!r}; choose from {', '.join(data.STAGES)}")
    num_classes = data.STAGES[stage]
    train_shards = data.list_shards(cfg["shards"], split=cfg["train_split"])
    if len(train_shards) < world:
        raise TrainError(f"{cfg['shards']}: {len(train_shards)} {cfg['train_split']} shard(s) for {world} ranks; "
                         f"each rank needs at least one (rebuild with smaller --max-samples or use fewer ranks)")
    try:
        val_shards = data.list_shards(cfg["shards"], split=cfg["val_split"])
    except (DataError, FileNotFoundError, ValueError):
        val_shards = []
    my_shards = train_shards[rank::world]

    # Same initial weights on every rank (DDP also broadcasts rank 0's at wrap time); training randomness
    # (dropout) then differs per rank.
    torch.manual_seed(int(cfg["seed"]))
    if state is None:
        model, origin = make_model(cfg, user, num_classes)
    else:
        model = model_from_checkpoint(state)
        origin = str(state.get("origin", "?"))  # where the run's initial weights came from, kept across resumes
    torch.manual_seed(int(cfg["seed"]) + 1000 * rank)
    log.info(f"initial weights: {origin}" + (f" (model state resumed from {out / 'last.pt'})" if state else ""))
    log.info(f"{world} rank(s) on {device}; {len(train_shards)} train shard(s), {len(val_shards)} "
             f"{cfg['val_split']} shard(s); stage {stage} ({num_classes} classes); model {cfg['model']}")

    use_cuda = device.type == "cuda"
    channels_last = use_cuda if cfg["channels_last"] == "auto" else bool(cfg["channels_last"])
    amp = ("bf16" if use_cuda else "none") if cfg["amp"] == "auto" else cfg["amp"]
    if cfg["sync_bn"] and world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = make_optimizer(cfg, model)
    sched = make_scheduler(cfg, opt)
    scaler = torch.amp.GradScaler(device.type, enabled=(amp == "fp16"))
    step, best = 0, -1.0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step, best = int(state["step"]), float(state.get("best_miou", -1.0))
        rngs = state.get("rng") or []
        if len(rngs) == world:
            ckpt_io.set_rng_state(rngs[rank])
        else:
            log.info(f"checkpoint holds RNG states of {len(rngs)} rank(s), this run has {world}: not restored")

    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if use_cuda else None)
    if cfg["compile"]:
        net = torch.compile(net)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
                if amp in ("bf16", "fp16") else nullcontext())

    def save(path_names: list[str], full: bool = True) -> None:
        """Collective (gathers every rank's RNG state); rank 0 writes. ``full=False``: model + config only
        (best.pt: what eval / predict / --init need, a third of the size with AdamW)."""
        rngs = gather_to_rank0(ckpt_io.rng_state()) if full else None
        if rank != 0:
            return
        blob = {"format": "hotrain/1", "model": model.state_dict(), "step": step, "best_miou": best,
                "num_classes": num_classes, "classes": class_names(num_classes),
                "config": {k: cfg[k] for k in DEFAULTS}, "origin": origin, "world_size": world}
        if full:
            blob |= {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "scaler": scaler.state_dict() if scaler.is_enabled() else {}, "rng": rngs}
        for name in path_names:
            ckpt_io.save_atomic(blob, out / name)

    def validate() -> dict[str, Any] | None:
        nonlocal best
        if not val_shards:
            return None
        from hotrain.evaluate import evaluate

        t0 = time.perf_counter()
        cm = evaluate(model, val_shards, stage=stage, num_classes=num_classes, device=device,
                      batch_size=cfg["eval_batch_size"], num_workers=min(1, cfg["num_workers"]),
                      max_side=cfg["eval_max_side"], rank=rank, world_size=world, amp=amp,
                      channels_last=channels_last)
        report = cm.report(class_names(num_classes))
        miou = float(cm.mean_iou())
        iou = [float(x) for x in cm.iou()]
        rec = {"step": step, "split": cfg["val_split"], "miou": miou, "pixel_accuracy": float(cm.pixel_accuracy()),
               **{f"iou_{n}": v for n, v in zip(class_names(num_classes), iou)},
               "seconds": time.perf_counter() - t0}
        log.record(rec)
        improved = miou > best
        log.info(f"step {step}: {cfg['val_split']} mIoU {miou:.4f} "
                 + " ".join(f"{n} {v:.3f}" for n, v in zip(class_names(num_classes), iou))
                 + (" (best)" if improved else ""))
        if improved:
            best = miou
        if rank == 0:
            (out / "val_report.json").write_text(json.dumps(report, indent=1))
        return {"improved": improved, **rec}

    steps, spe, accum = int(cfg["steps"]), int(cfg["steps_per_epoch"]), int(cfg["accum"])
    seen_keys: set[str] = set()
    ips, loss_val, first_loss, t_log, n_log = 0.0, float("nan"), None, time.perf_counter(), 0
    stopped = False
    net.train()
    with make_progress(rank == 0 and cfg["progress"]) as progress:
        task = progress.add_task(f"fit {stage}", total=steps, completed=step, ips=0.0, loss=float("nan"))
        while step < steps and not stopped:
            epoch = step // spe
            epoch_steps = min(spe, steps - epoch * spe)
            done = step - epoch * spe
            batches = IsolatedRNG(lambda: data.make_train_loader(
                train_shards, stage=stage, batch_size=cfg["batch_size"], crop_size=cfg["crop_size"],
                num_workers=cfg["num_workers"], steps=epoch_steps * accum, seed=cfg["seed"], rank=rank,
                world_size=world, epoch=epoch, mix=cfg["mix"], augment=cfg["augment"]),
                seed=int(cfg["seed"]) * 1_000_003 + epoch * 1009 + rank)
            for _ in range(done * accum):  # resume mid-epoch: the batches already trained on
                next(batches)
            for _ in range(done, epoch_steps):
                opt.zero_grad(set_to_none=True)
                step_loss = 0.0
                for micro in range(accum):
                    batch = next(batches)
                    if len(seen_keys) < 100_000:
                        seen_keys.update(batch["key"])
                    sync = nullcontext() if (micro == accum - 1 or world == 1) else net.no_sync()
                    with sync:
                        x = data.normalize(batch["image"].to(device, non_blocking=True))
                        if channels_last:
                            x = x.contiguous(memory_format=torch.channels_last)
                        with autocast:
                            outputs = net(x)
                        outputs = {k: v.float() for k, v in outputs.items()}
                        loss = losses.total_loss(outputs, batch["mask"].to(device, non_blocking=True),
                                                 batch["has_object"].to(device), stage, aux_weight=cfg["aux_weight"])
                        scaler.scale(loss / accum).backward()
                    step_loss += float(loss.detach()) / accum
                scaler.step(opt)
                scaler.update()
                sched.step()
                step += 1
                n_log += 1
                if not math.isfinite(step_loss):
                    raise TrainError(f"loss is {step_loss} at step {step}; lower --lr or check the data")
                first_loss = step_loss if first_loss is None else first_loss
                loss_val = step_loss
                if step % cfg["log_every"] == 0 or step == steps:
                    dt = time.perf_counter() - t_log
                    ips = n_log * cfg["batch_size"] * accum * world / max(dt, 1e-9)
                    log.record({"step": step, "epoch": epoch, "loss": loss_val, "lr": sched.get_last_lr()[0],
                                "images_per_s": ips})
                    t_log, n_log = time.perf_counter(), 0
                progress.update(task, completed=step, ips=ips, loss=loss_val)
                last = step == steps
                if step % cfg["eval_every"] == 0 or last:
                    with preserved_rng():
                        if cfg["bn_recompute"]:
                            recompute_bn_stats(model, train_shards, images=int(cfg["bn_recompute"]), stage=stage,
                                               device=device, rank=rank, world=world, channels_last=channels_last,
                                               max_side=cfg["eval_max_side"])
                        net.eval()
                        v = validate()
                        net.train()
                    if v and v["improved"]:
                        save(["best.pt"], full=False)
                    t_log = time.perf_counter()  # keep eval time out of images/s
                if step % cfg["ckpt_every"] == 0 or last or step == cfg["stop_at"]:
                    save(["last.pt"] + ([f"step_{step:07d}.pt"] if cfg["keep_step_ckpts"] else []))
                if cfg["stop_at"] is not None and step >= int(cfg["stop_at"]) and not last:
                    log.info(f"stopping at step {step} (--stop-at); continue with --resume")
                    stopped = True
                    break
            del batches

    params, state = digest(dict(model.named_parameters())), digest(model.state_dict())
    (out / "ranks").mkdir(parents=True, exist_ok=True)
    rank_info = {"rank": rank, "world_size": world, "shards": my_shards, "keys_seen": sorted(seen_keys),
                 "param_sha256": params, "state_sha256": state, "step": step}
    (out / "ranks" / f"rank{rank}.json").write_text(json.dumps(rank_info, indent=1))
    summary = {"step": step, "stopped": stopped, "best_miou": best, "first_loss": first_loss, "last_loss": loss_val,
               "param_sha256": params, "state_sha256": state, "out": str(out)}
    log.info(f"{'stopped' if stopped else 'done'} at step {step}: loss {first_loss} -> {loss_val}; "
             f"best {cfg['val_split']} mIoU {best:.4f}; checkpoints in {out}")
    log.close()
    return summary
