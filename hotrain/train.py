"""``hotrain fit``: train a segmentation model on hodata shards, in one process or one per GPU under torchrun.

Read top to bottom: :func:`fit` sets a run up (:func:`setup`), trains it epoch by epoch
(:func:`train_one_epoch`, one optimizer step at a time in :func:`train_step`), validates
(:func:`validate`) and writes checkpoints (:func:`save_checkpoint`) as it goes, and :func:`finish` reports.

Training is organised in optimizer steps; ``steps_per_epoch`` steps make an epoch, and each epoch has its own
deterministic loader (seed, rank, world size, epoch). ``--resume`` reloads ``out/last.pt`` (model, optimizer,
scheduler, scaler, step, every rank's RNG states) and, mid-epoch, re-creates that epoch's loader and skips
the batches already done, so a resumed run ends with the parameters of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from hodata.errors import DataError
from hotrain import checkpoint as ckpt_io
from hotrain import data, dist, integrity, losses
from hotrain.config import DEFAULTS, FIELDS, PRESETS, RESUME_MAY_CHANGE, TrainConfig, TrainError, resolve_config  # noqa: F401
from hotrain.evaluate import evaluate
from hotrain.model import (build_model, checkpoint_classes, head_rows, model_from_checkpoint, resolve_weights,
                           set_bn_momentum, widen_head)
from hotrain.precise_bn import recompute_bn_stats
from hotrain.gpu_augment import batch_images, is_planned
from hotrain.preprocess import normalize
from hotrain.rng import IsolatedRNG, preserved_rng
from hotrain.runlog import RunLog, make_progress
from hotrain.stages import Stage, get_stage


@dataclass
class Run:
    """One training run: its configuration, where it runs, what it trains, and how far it got."""

    cfg: TrainConfig
    out: Path
    ctx: dist.Context
    stage: Stage
    log: RunLog
    train_shards: list[str]
    val_shards: list[str]
    model: nn.Module  # the plain module: checkpoints, validation
    net: nn.Module  # what training steps call: DDP-wrapped and/or compiled
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp: str  # "bf16" | "fp16" | "none"
    channels_last: bool
    origin: str  # where the initial weights came from (kept across resumes)
    skip: set[str] = dataclasses.field(default_factory=set)  # damaged shards left out of this run
    step: int = 0
    best: float = -1.0
    first_loss: float | None = None
    last_loss: float = float("nan")
    stopped: bool = False

    def autocast(self):
        if self.amp in ("bf16", "fp16"):
            return torch.autocast(self.ctx.device.type, dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16)
        return nullcontext()


def fit(user: dict[str, Any], resume: bool = False) -> dict[str, Any]:
    """Train; ``user`` holds the options given (None = not given). Returns a summary dict (rank 0's view)."""
    cfg = resolve_config(user)
    with dist.distributed() as ctx:
        run = setup(cfg, user, resume, ctx)
        try:
            with make_progress(ctx.is_main and run.cfg.progress) as progress:
                task = progress.add_task(f"fit {run.stage.name}", total=run.cfg.steps, completed=run.step, ips=0.0,
                                         loss=float("nan"))
                while run.step < run.cfg.steps and not run.stopped:
                    train_one_epoch(run, lambda ips: progress.update(task, completed=run.step, ips=ips,
                                                                     loss=run.last_loss))
            return finish(run)
        finally:
            run.log.close()


# ------------------------------------------------------------------------------------------------ setup


def setup(cfg: TrainConfig, user: dict[str, Any], resume: bool, ctx: dist.Context) -> Run:
    """Config (the saved one on --resume), data, model, optimizer; restored from ``out/last.pt`` on --resume."""
    out = Path(cfg.out)
    if ctx.is_main:
        for tmp in ckpt_io.remove_stale_temps(out):
            print(f"[hotrain] removed {tmp}, left by a checkpoint write that was killed", file=sys.stderr)
    state = (ckpt_io.load(out / "last.pt", need=ckpt_io.RESUME_KEYS, why="--resume needs a full checkpoint (last.pt)")
             if resume and (out / "last.pt").is_file() else None)
    ignored: list[str] = []
    if state is not None:
        cfg, ignored = resumed_config(state, user)
    log = RunLog(out, ctx.rank, None if state is None else int(state["step"]))
    if state is not None:
        log.info(f"resuming {out / 'last.pt'} at step {state['step']}/{cfg.steps}")
        if ignored:
            log.info(f"ignoring options that differ from the saved run on --resume: {ignored}")
    elif resume:
        log.info(f"--resume: no {out / 'last.pt'} yet, starting a new run")

    stage = get_stage(cfg.stage)
    train_shards, val_shards = list_data(cfg, ctx)
    log_rank_shards(log, train_shards, ctx)
    skip = verify_shards(cfg, ctx, log, train_shards, val_shards, 0 if state is None else int(state["step"]))
    if val_shards and set(val_shards) <= skip:
        log.info(f"every {cfg.val_split} shard is damaged: no validation in this run")
        val_shards = []

    # Same initial weights on every rank (DDP also broadcasts rank 0's at wrap time); training randomness
    # (dropout) then differs per rank.
    torch.manual_seed(cfg.seed)
    if state is None:
        model, origin, cfg = initial_model(cfg, user, stage)
    else:
        model = model_from_checkpoint(state)
        origin = str(state.get("origin", "?"))
    torch.manual_seed(cfg.seed + 1000 * ctx.rank)
    log.info(f"initial weights: {origin}" + (f" (model state resumed from {out / 'last.pt'})" if state else ""))
    log.info(f"{ctx.world_size} rank(s) on {ctx.device}; {len(train_shards)} train shard(s), {len(val_shards)} "
             f"{cfg.val_split} shard(s); stage {stage.name} ({stage.num_classes} classes: {', '.join(stage.classes)}); "
             f"model {cfg.model}")

    cuda = ctx.device.type == "cuda"
    channels_last = cuda if cfg.channels_last is None else bool(cfg.channels_last)
    amp = ("bf16" if cuda else "none") if cfg.amp == "auto" else cfg.amp
    if cfg.sync_bn and ctx.world_size > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(ctx.device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = make_optimizer(cfg, model)
    sched = make_scheduler(cfg, opt)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=(amp == "fp16"))
    run = Run(cfg=cfg, out=out, ctx=ctx, stage=stage, log=log, train_shards=train_shards, val_shards=val_shards,
              model=model, net=model, opt=opt, sched=sched, scaler=scaler, amp=amp, channels_last=channels_last,
              origin=origin, skip=skip)
    if state is not None:
        restore(run, state)
    if dist.is_dist():
        run.net = nn.parallel.DistributedDataParallel(model, device_ids=[ctx.device.index] if cuda else None)
    if cfg.compile:
        run.net = torch.compile(run.net)
    log.info(f"precision {amp}, channels_last {channels_last}, compile {cfg.compile}, "
             f"{'DDP' if dist.is_dist() else 'single process'}")
    return run


def resumed_config(state: dict[str, Any], user: dict[str, Any]) -> tuple[TrainConfig, list[str]]:
    """The saved run's config, with the options that do not change what is computed taken from ``user``."""
    saved = TrainConfig.from_dict(state["config"])
    ignored = sorted(k for k, v in user.items() if v is not None and k in FIELDS and getattr(saved, k) != v
                     and k not in RESUME_MAY_CHANGE and k != "out")
    may_change = {k: user[k] for k in RESUME_MAY_CHANGE if user.get(k) is not None}
    return dataclasses.replace(saved, **may_change, stop_at=user.get("stop_at")), ignored


def list_data(cfg: TrainConfig, ctx: dist.Context) -> tuple[list[str], list[str]]:
    train = data.list_shards(cfg.shards, split=cfg.train_split)
    if len(train) < ctx.world_size:
        raise TrainError(f"{cfg.shards}: {len(train)} {cfg.train_split} shard(s) for {ctx.world_size} ranks; "
                         f"each rank needs at least one (rebuild with smaller --max-samples or use fewer ranks)")
    try:
        val = data.list_shards(cfg.shards, split=cfg.val_split)
    except (DataError, FileNotFoundError, ValueError):
        val = []
    return train, val


def verify_shards(cfg: TrainConfig, ctx: dist.Context, log: RunLog, train: list[str], val: list[str],
                  step: int) -> set[str]:
    """Once per run, before training: each rank checks size and sha256 of every shard it will read against the
    manifest beside it. Damaged shards (and listed ones that are missing) are skipped, named in the log and
    counted in metrics.jsonl; more than ``--max-bad-shards`` of them over all ranks stop the run."""
    if not cfg.verify:
        log.info("shards not verified against their manifest (--no-verify)")
        return set()
    t0 = time.perf_counter()
    index = integrity.index_shards(train, cfg.train_split)
    index_val = integrity.index_shards(val, cfg.val_split)
    mine = list(dict.fromkeys(data.rank_shards(train, ctx.rank, ctx.world_size)
                              + data.train_shards_of_rank(train, ctx.rank, ctx.world_size, cfg.mix)
                              + data.rank_shards(val, ctx.rank, ctx.world_size)))
    bad: dict[str, str] = {}
    checked = 0
    for url in mine:
        exp = index.expected(url) or index_val.expected(url)
        if exp is not None:
            checked += 1
            if why := integrity.check_file(url, exp):
                bad[url] = why
    if ctx.is_main:  # listed in a manifest, absent from the folder: in no rank's slice, counted once
        for path, manifest in (index.missing | index_val.missing).items():
            bad[path] = f"shard is missing (listed in {manifest})"
    found: dict[str, str] = {}
    for part in dist.all_gather(bad):
        found |= part
    for url, why in found.items():
        log.info(f"skipping damaged shard {url}: {why}")
    unverified = len(index.unverified) + len(index_val.unverified)
    log.info(f"rank {ctx.rank} checked {checked} shard(s) against their manifest in {time.perf_counter() - t0:.2f} s; "
             f"{len(found)} damaged shard(s) skipped over all ranks")
    if line := (index.warning() or index_val.warning()):
        log.info(f"warning: {unverified} " + line.split(" ", 1)[1])
    log.record({"step": step, "shards_verified": checked, "shards_unverified": unverified,
                "skipped_shards": len(found), "skipped_shard_names": sorted(Path(u).name for u in found)})
    if len(found) > cfg.max_bad_shards:
        url, why = next(iter(found.items()))
        raise TrainError(f"{url}: {why}; {len(found)} damaged shard(s), more than --max-bad-shards "
                         f"{cfg.max_bad_shards} (every one is named in {Path(cfg.out) / 'train.log'})")
    return set(found)


def log_rank_shards(log: RunLog, shards: list[str], ctx: dist.Context) -> None:
    """One line per rank naming the training shards it reads (its disjoint slice)."""
    mine = [Path(u).name for u in data.rank_shards(shards, ctx.rank, ctx.world_size)]
    for rank, names in enumerate(dist.gather_to_rank0(mine) or []):
        shown = names if len(names) <= 8 else names[:4] + ["..."] + names[-2:]
        log.info(f"rank {rank} reads {len(names)} train shard(s): {' '.join(shown)}")


def initial_model(cfg: TrainConfig, user: dict[str, Any], stage: Stage) -> tuple[nn.Module, str, TrainConfig]:
    """The model a new run starts from: --init (head widened to the stage's classes) or --weights.

    With --init the model and its aux head follow the checkpoint; the returned config says so."""
    if not cfg.init:
        model, origin = build_model(cfg.model, stage.num_classes, weights=resolve_weights(cfg.weights, cfg.model),
                                    aux=cfg.aux, bn_momentum=cfg.bn_momentum)
        return model, origin, cfg
    init = ckpt_io.load(cfg.init)
    icfg = init["config"]
    if user.get("model") not in (None, icfg["model"]):
        raise TrainError(f"{cfg.init}: --init checkpoint is a {icfg['model']}, not the asked {user['model']}")
    if user.get("aux") and not icfg.get("aux", False):
        raise TrainError(f"{cfg.init}: --init checkpoint has no aux head; train with --no-aux")
    old, new = checkpoint_classes(init), list(stage.classes)
    try:
        if len(new) < len(old):
            raise ValueError("a head is never narrowed")
        plan = head_rows(old, new)
    except ValueError as e:
        raise TrainError(f"{cfg.init}: stage {stage.name} ({', '.join(new)}) cannot start from a checkpoint of "
                         f"{', '.join(old)}: {e}") from None
    model = model_from_checkpoint(init)
    if new != old:
        widen_head(model, icfg["model"], old, new)
    if user.get("aux") is False:
        model.aux_classifier = None
    cfg = dataclasses.replace(cfg, model=icfg["model"], aux=getattr(model, "aux_classifier", None) is not None)
    if cfg.bn_momentum is not None:
        set_bn_momentum(model, cfg.bn_momentum)
    how = ", ".join(f"{c}<-{old[src]}" + (f"{off:+.2f}" if off else "") for c, (src, off) in zip(new, plan))
    return model, (f"--init {cfg.init} (stage {icfg['stage']}, step {init.get('step')}; {len(old)} -> {len(new)} "
                   f"classes: {how}); --weights not used"), cfg


def make_optimizer(cfg: TrainConfig | dict, model: nn.Module) -> torch.optim.Optimizer:
    cfg = _as_config(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(cfg: TrainConfig | dict, opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup, then poly decay ``(1 - t/T) ** power`` (torchvision's segmentation reference)."""
    cfg = _as_config(cfg)
    steps, warm, power = int(cfg.steps), int(cfg.warmup_steps), float(cfg.poly_power)

    def factor(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        return max(0.0, 1 - (s - warm) / max(1, steps - warm)) ** power

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _as_config(cfg: TrainConfig | dict) -> TrainConfig:
    return cfg if isinstance(cfg, TrainConfig) else TrainConfig.from_dict(cfg)


def restore(run: Run, state: dict[str, Any]) -> None:
    """Optimizer, scheduler, scaler, step, best score and this rank's RNG states from a full checkpoint."""
    try:
        run.opt.load_state_dict(state["optimizer"])
        run.sched.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            run.scaler.load_state_dict(state["scaler"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        first = (str(e).splitlines() or [""])[0][:200]
        raise TrainError(f"{getattr(state, 'path', run.out / 'last.pt')}: optimizer / scheduler state does not fit "
                         f"this model ({type(e).__name__}: {first})") from None
    run.step, run.best = int(state["step"]), float(state.get("best_miou", -1.0))
    rngs = state.get("rng") or []
    if len(rngs) == run.ctx.world_size:
        ckpt_io.set_rng_state(rngs[run.ctx.rank])
    else:
        run.log.info(f"checkpoint holds RNG states of {len(rngs)} rank(s), this run has {run.ctx.world_size}: "
                     "not restored")


# ------------------------------------------------------------------------------------------------ training


def epoch_batches(run: Run, epoch: int, epoch_steps: int) -> IsolatedRNG:
    """This rank's batches of one epoch (``accum`` micro-batches per step), with their own RNG states."""
    cfg, ctx = run.cfg, run.ctx
    return IsolatedRNG(lambda: data.make_train_loader(
        run.train_shards, stage=run.stage, batch_size=cfg.batch_size, crop_size=cfg.crop_size,
        num_workers=cfg.num_workers, steps=epoch_steps * cfg.accum, seed=cfg.seed, rank=ctx.rank,
        world_size=ctx.world_size, epoch=epoch, mix=cfg.mix, augment=cfg.augment, focus_crops=cfg.focus_crops,
        skip=run.skip, gpu_augment=cfg.gpu_augment),
        seed=cfg.seed * 1_000_003 + epoch * 1009 + ctx.rank)


def train_one_epoch(run: Run, show_progress) -> None:
    """Train from the current step to the end of its epoch (or to --stop-at); validate and checkpoint on the way."""
    cfg = run.cfg
    epoch = run.step // cfg.steps_per_epoch
    epoch_steps = min(cfg.steps_per_epoch, cfg.steps - epoch * cfg.steps_per_epoch)
    done = run.step - epoch * cfg.steps_per_epoch
    batches = epoch_batches(run, epoch, epoch_steps)
    for _ in range(done * cfg.accum):  # resume mid-epoch: the batches already trained on
        next(batches)
    timer = Throughput(cfg.batch_size * cfg.accum * run.ctx.world_size)
    for _ in range(done, epoch_steps):
        loss = train_step(run, islice(batches, cfg.accum))
        if not math.isfinite(loss):
            raise TrainError(f"loss is {loss} at step {run.step}; lower --lr or check the data")
        run.first_loss = loss if run.first_loss is None else run.first_loss
        run.last_loss = loss
        timer.tick()
        last = run.step == cfg.steps
        if run.step % cfg.log_every == 0 or last:
            run.log.record({"step": run.step, "epoch": epoch, "loss": loss, "lr": run.sched.get_last_lr()[0],
                            "images_per_s": timer.rate()})
        show_progress(timer.last_rate)
        if run.step % cfg.eval_every == 0 or last:
            validate_and_keep_best(run)
            timer.restart()  # keep validation time out of images/s
        if run.step % cfg.ckpt_every == 0 or last or run.step == cfg.stop_at:
            save_checkpoint(run, ["last.pt"] + ([f"step_{run.step:07d}.pt"] if cfg.keep_step_ckpts else []))
        if cfg.stop_at is not None and run.step >= cfg.stop_at and not last:
            run.log.info(f"stopping at step {run.step} (--stop-at); continue with --resume")
            run.stopped = True
            break
    del batches


def train_step(run: Run, micro_batches: Iterable[dict[str, Any]]) -> float:
    """One optimizer step over ``accum`` micro-batches (DDP syncs gradients on the last one); returns the loss."""
    accum = run.cfg.accum
    run.opt.zero_grad(set_to_none=True)
    step_loss = 0.0
    for i, batch in enumerate(micro_batches):
        sync = nullcontext() if (i == accum - 1 or not dist.is_dist()) else run.net.no_sync()
        with sync:
            loss = forward_loss(run, batch)
            run.scaler.scale(loss / accum).backward()
        step_loss += float(loss.detach()) / accum
    run.scaler.step(run.opt)
    run.scaler.update()
    run.sched.step()
    run.step += 1
    return step_loss


def forward_loss(run: Run, batch: dict[str, Any]) -> torch.Tensor:
    """The loss of one batch: normalised on the device (decoded and augmented there first with --gpu-augment),
    forward under autocast, loss in fp32."""
    device = run.ctx.device
    images = batch_images(batch, device) if is_planned(batch) else batch["image"].to(device, non_blocking=True)
    x = normalize(images)
    if run.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with run.autocast():
        outputs = run.net(x)
    outputs = {k: v.float() for k, v in outputs.items()}
    return losses.total_loss(outputs, batch["mask"].to(device, non_blocking=True), batch["has_object"].to(device),
                             run.stage, aux_weight=run.cfg.aux_weight, class_balance=run.cfg.class_balance,
                             ohem=run.cfg.ohem, dice_weight=run.cfg.dice_weight)


class Throughput:
    """Images per second since the last log record (validation time excluded)."""

    def __init__(self, images_per_step: int):
        self.images_per_step, self.steps, self.last_rate = images_per_step, 0, 0.0
        self.t0 = time.perf_counter()

    def tick(self) -> None:
        self.steps += 1

    def rate(self) -> float:
        self.last_rate = self.steps * self.images_per_step / max(time.perf_counter() - self.t0, 1e-9)
        self.restart()
        return self.last_rate

    def restart(self) -> None:
        self.steps, self.t0 = 0, time.perf_counter()


# ------------------------------------------------------------------------------------------------ validation


def validate_and_keep_best(run: Run) -> None:
    """Validate without touching training's RNGs (BatchNorm statistics re-estimated first when asked); a new
    best mean IoU writes best.pt."""
    cfg = run.cfg
    with preserved_rng():
        if cfg.bn_recompute:
            recompute_bn_stats(run.model, run.train_shards, images=cfg.bn_recompute, stage=run.stage,
                               device=run.ctx.device, rank=run.ctx.rank, world=run.ctx.world_size,
                               channels_last=run.channels_last, max_side=cfg.eval_max_side, skip=run.skip)
        run.net.eval()
        result = validate(run)
        run.net.train()
    if result and result["improved"]:
        save_checkpoint(run, ["best.pt"], full=False)


def validate(run: Run) -> dict[str, Any] | None:
    """Confusion matrix over the validation shards (all ranks), one metrics record, val_report.json."""
    if not run.val_shards:
        return None
    import json

    cfg, names = run.cfg, list(run.stage.classes)
    t0 = time.perf_counter()
    cm = evaluate(run.model, run.val_shards, stage=run.stage, device=run.ctx.device,
                  batch_size=cfg.eval_batch_size, num_workers=min(1, cfg.num_workers), max_side=cfg.eval_max_side,
                  rank=run.ctx.rank, world_size=run.ctx.world_size, amp=run.amp, channels_last=run.channels_last,
                  skip=run.skip)
    report = cm.report(names)
    miou = float(cm.mean_iou())
    iou = [float(x) for x in cm.iou()]
    rec = {"step": run.step, "split": cfg.val_split, "miou": miou, "pixel_accuracy": float(cm.pixel_accuracy()),
           **{f"iou_{n}": v for n, v in zip(names, iou)}}
    if "left_right" in report:
        rec |= {k: report["left_right"][k] for k in ("left_as_right", "right_as_left")}
    rec["seconds"] = time.perf_counter() - t0
    run.log.record(rec)
    improved = miou > run.best
    run.log.info(f"step {run.step}: {cfg.val_split} mIoU {miou:.4f} "
                 + " ".join(f"{n} {v:.3f}" for n, v in zip(names, iou)) + (" (best)" if improved else ""))
    if improved:
        run.best = miou
    if run.ctx.is_main:
        (run.out / "val_report.json").write_text(json.dumps(report, indent=1))
    return {"improved": improved, **rec}


# ------------------------------------------------------------------------------------------------ checkpoints


def save_checkpoint(run: Run, names: list[str], full: bool = True) -> None:
    """Collective (gathers every rank's RNG state); rank 0 writes each of ``names`` atomically.

    ``full=False``: model + config only (best.pt: what eval / predict / --init need, a third of the size with
    AdamW). Everything stored loads with ``torch.load(weights_only=True)``.
    """
    rngs = dist.gather_to_rank0(ckpt_io.rng_state()) if full else None
    if not run.ctx.is_main:
        return
    blob = {"format": "hotrain/1", "model": run.model.state_dict(), "step": run.step, "best_miou": run.best,
            "num_classes": run.stage.num_classes, "classes": list(run.stage.classes), "config": run.cfg.to_dict(),
            "origin": run.origin, "world_size": run.ctx.world_size}
    if full:
        blob |= {"optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
                 "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else {}, "rng": rngs}
    for name in names:
        ckpt_io.save_atomic(blob, run.out / name)


def finish(run: Run) -> dict[str, Any]:
    """Check that every rank ends with the same model (DDP replicas must agree), log and return a summary."""
    params = dist.state_digest(dict(run.model.named_parameters()))
    state = dist.state_digest(run.model.state_dict())
    digests = dist.all_gather(state)
    if len(set(digests)) == 1:
        run.log.info(f"model state sha256 {state} (identical on {len(digests)} rank(s))")
    else:
        run.log.info(f"WARNING: model states differ between ranks: {digests}")
    best = f"{run.best:.4f}" if run.best >= 0 else "n/a (no validation shards)"
    run.log.info(f"{'stopped' if run.stopped else 'done'} at step {run.step}: loss {run.first_loss} -> "
                 f"{run.last_loss}; best {run.cfg.val_split} mIoU {best}; checkpoints in {run.out}")
    return {"step": run.step, "stopped": run.stopped, "best_miou": run.best, "skipped_shards": len(run.skip),
            "first_loss": run.first_loss,
            "last_loss": run.last_loss, "param_sha256": params, "state_sha256": state, "out": str(run.out),
            "replicas_agree": len(set(digests)) == 1}
