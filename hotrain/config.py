"""The training configuration: one frozen dataclass whose fields carry the defaults and the help.

``hotrain fit``'s options are generated from :class:`TrainConfig` (``hotrain.cli``), presets change defaults,
options given on the command line win over both. A checkpoint stores the config as a plain dict
(:meth:`TrainConfig.to_dict`) so that ``torch.load(weights_only=True)`` reads it.

The defaults are a GPU-sized run, torchvision's reference recipe for DeepLabv3.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from hodata.errors import DataError
from hotrain.model import MODELS
from hotrain.stages import STAGES


class TrainError(DataError):
    """A configuration that cannot run (one line for the user)."""


def option(default: Any, help: str, *, type: type | None = None, choices: Callable[[], list[str]] | None = None,
           flag: str | None = None, parse: Callable[[str], Any] | None = None, metavar: str | None = None):
    """A config field with what its command-line option needs: help, value type, choices (a function, so that
    registries are read when the CLI is built), ``flag`` ("pair": --x/--no-x; "on": --x only), ``parse`` for
    values given as text (e.g. ``--mix``)."""
    meta = {"help": help, "type": type, "choices": choices, "flag": flag, "parse": parse, "metavar": metavar}
    return field(default=default, metadata=meta)


def _optimizers() -> list[str]:
    return ["sgd", "adamw"]


def _amp_modes() -> list[str]:
    return ["auto", "bf16", "fp16", "none"]


def _parse_mix(text: str) -> dict[str, float]:
    from hotrain.data import parse_mix

    return parse_mix(text)


@dataclass(frozen=True)
class TrainConfig:
    # data and run
    shards: str | None = option(None, "Shard folder, glob(s), comma list, brace pattern or URL/pipe: spec.",
                                type=str)
    stage: str = option("hand", "What the model predicts: " + "; ".join(f"{s.name}: {s.help}" for s in STAGES.values())
                        + ".", choices=lambda: list(STAGES))
    init: str | None = option(None, "Start from this checkpoint (a hand run for handobj or sides: head widened).",
                              type=str, metavar="CHECKPOINT")
    preset: str | None = option(None, "Change the defaults (each option's help shows the preset's value).",
                                type=str, choices=lambda: list(PRESETS))
    out: str = option("runs/hotrain", "Run folder: last.pt, best.pt, metrics.jsonl, train.log, tb/.")
    # model
    model: str = option("deeplabv3_resnet50", "Segmentation model.", choices=lambda: list(MODELS))
    weights: str = option("auto", "coco | imagenet | none | auto | PATH to a state_dict. auto: COCO if in the torch "
                          "cache, else ImageNet if cached, else none.")
    aux: bool = option(True, "Auxiliary FCN head and loss (models without one: off).", flag="pair")
    aux_weight: float = option(0.5, "Weight of the auxiliary loss.")
    bn_momentum: float | None = option(None, "Set every BatchNorm's momentum.", type=float)
    sync_bn: bool = option(False, "SyncBatchNorm across ranks.", flag="on")
    bn_recompute: int = option(0, "Re-estimate BatchNorm statistics on N whole training frames before each "
                               "validation (0: off).")
    # class imbalance (DESIGN.md, "Small objects": what each of these does on a held-out look-alike)
    focus_crops: float = option(0.0, "Share of training crops placed over a labelled pixel (each labelled class "
                                "equally likely): small objects are seen far more often.")
    class_balance: bool = option(False, "Weight pixels by 1/sqrt(class frequency in the batch).", flag="on")
    ohem: float = option(0.0, "Average the loss over only this hardest fraction of pixels (0: all).")
    dice_weight: float = option(1.0, "Add this times a soft Dice loss of the foreground classes (0: off).")
    # optimisation
    steps: int = option(20000, "Optimizer steps.")
    steps_per_epoch: int = option(1000, "Steps per loader epoch (resume granularity of the data stream).")
    batch_size: int = option(8, "Per rank, per micro-step.")
    accum: int = option(1, "Gradient accumulation micro-steps per optimizer step.")
    crop_size: int = option(512, "Training crop side in pixels.")
    num_workers: int = option(4, "Loader workers per rank.")
    seed: int = option(0, "Seed of the data stream, augmentation and initialisation.")
    mix: dict[str, float] | None = option(None, "Per-source weights, e.g. ho3d=0.5,egohos=0.3,freihand=0.2.",
                                          type=str, parse=_parse_mix, metavar="SOURCE=W,...")
    augment: bool = option(True, "Scale jitter, flip and colour jitter.", flag="pair")
    gpu_augment: bool = option(False, "Decode training JPEGs and augment them on the training device (nvJPEG, "
                               "grid_sample): loader workers then only read shards and crop the label maps. For "
                               "nodes with few CPU cores per GPU.", flag="on")
    train_split: str = option("train", "Split of the training shards.")
    val_split: str = option("val", "Split of the validation shards.")
    verify: bool = option(True, "Check every shard a rank reads against the manifest.json beside it (size and "
                          "sha256), once per run, before training.", flag="pair")
    max_bad_shards: int = option(2, "Most damaged shards (other sha256 or size, missing) a run skips, over all "
                                 "ranks, train and validation together; one more stops it.")
    optimizer: str = option("sgd", "Optimizer.", choices=_optimizers)
    lr: float = option(0.02, "Peak learning rate.")
    momentum: float = option(0.9, "SGD momentum.")
    weight_decay: float = option(1e-4, "Weight decay.")
    poly_power: float = option(0.9, "Poly LR decay power.")
    warmup_steps: int = option(0, "Linear LR warmup steps.")
    # speed
    amp: str = option("auto", "Mixed precision; auto: bf16 on GPU, none on CPU.", choices=_amp_modes)
    channels_last: bool | None = option(None, "Channels-last memory format (not given: on GPU only).",
                                        type=bool, flag="pair")
    compile: bool = option(False, "torch.compile the model.", flag="on")
    # validation, checkpoints, logs
    eval_every: int = option(1000, "Validate every N steps (and at the end).")
    eval_batch_size: int = option(4, "Validation batch size.")
    eval_max_side: int | None = option(None, "Validate on frames shrunk to this longer side.", type=int)
    ckpt_every: int = option(1000, "Write last.pt every N steps (and at the end).")
    keep_step_ckpts: bool = option(False, "Also keep step_NNNNNNN.pt copies.", flag="on")
    log_every: int = option(20, "Log the training loss every N steps.")
    progress: bool = option(True, "Progress bar on rank 0.", flag="pair")
    stop_at: int | None = option(None, "Stop after this step (checkpoint written), as if interrupted.", type=int)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (what checkpoints store)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """The config of a checkpoint (fields it lacks take their defaults; unknown keys are dropped)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in names}
        if values.get("channels_last") == "auto":  # written by earlier versions
            values["channels_last"] = None
        return cls(**values)


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}
DEFAULTS: dict[str, Any] = TrainConfig().to_dict()

# Presets change defaults; options given on the command line still win.
PRESETS: dict[str, dict[str, Any]] = {
    # A quick CPU run on the demo shards (about a minute on 2 cores). BN momentum 0.1: torchvision's MobileNetV3
    # uses 0.01, and after a short run its eval-mode running statistics lag so far behind that it predicts
    # only background (DESIGN.md).
    # bn_recompute: BatchNorm statistics recomputed on 64 whole training frames before each validation: after
    # a short run on small augmented crops the running statistics do not match whole frames (measured on the
    # demo, 150 steps of 8 crops of 96 px: val hand IoU 0.21 without, 0.54 with them recomputed).
    "tiny": {"help": "MobileNetV3, 8 crops of 96 px, 150 AdamW steps (about a CPU minute)",
             "model": "deeplabv3_mobilenet_v3_large", "weights": "auto", "aux": False, "bn_momentum": 0.1,
             "bn_recompute": 64,
             "steps": 150, "steps_per_epoch": 75, "batch_size": 8, "crop_size": 96, "num_workers": 1,
             "optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "eval_every": 75, "ckpt_every": 75,
             "eval_batch_size": 8, "log_every": 10, "dice_weight": 0.0},
}
# Small objects on a CPU budget: LR-ASPP's stride-8 branch keeps objects of a few pixels that DeepLabv3-MobileNet's
# stride-16 features lose, and a Dice term stops the rare class from being out-voted (DESIGN.md, "Small objects":
# held-out object IoU 0.06-0.08 with tiny, 0.50-0.54 with these, in half tiny's CPU time).
PRESETS["small"] = PRESETS["tiny"] | {
    "help": "LR-ASPP MobileNetV3 with a Dice term, 8 crops of 96 px, 150 AdamW steps (under a CPU minute): "
            "learns small objects", "model": "lraspp_mobilenet_v3_large", "dice_weight": 1.0}
# On --resume the saved config is used; only these may change (they do not change what is computed).
RESUME_MAY_CHANGE = ("stop_at", "ckpt_every", "keep_step_ckpts", "log_every", "progress", "eval_every",
                     "eval_batch_size", "verify", "max_bad_shards")


def preset_values(name: str | None) -> dict[str, Any]:
    return {k: v for k, v in PRESETS.get(name, {}).items() if k != "help"}


def resolve_config(user: dict[str, Any]) -> TrainConfig:
    """The defaults, then the preset, then the options the user gave (None = not given)."""
    given = {k: v for k, v in user.items() if v is not None}
    unknown = set(given) - set(FIELDS)
    if unknown:
        raise TrainError(f"unknown options: {sorted(unknown)}")
    preset = given.get("preset")
    if preset is not None and preset not in PRESETS:
        raise TrainError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    values = DEFAULTS | preset_values(preset) | given
    model = MODELS.get(values["model"])
    if model is not None and model.aux_head is None:
        if given.get("aux"):
            raise TrainError(f"--model {model.name} has no auxiliary head: drop --aux")
        values["aux"] = False
    cfg = TrainConfig(**values)
    check(cfg)
    return cfg


def check(cfg: TrainConfig) -> None:
    """One-line errors for values no run can use."""
    if cfg.shards is None:
        raise TrainError("--shards is required")
    for name in ("stage", "model", "optimizer", "amp"):
        choices = FIELDS[name].metadata["choices"]()
        if getattr(cfg, name) not in choices:
            raise TrainError(f"unknown {name} {getattr(cfg, name)!r}; choose from {', '.join(choices)}")
    for k in ("steps", "steps_per_epoch", "batch_size", "accum", "crop_size", "eval_every", "ckpt_every"):
        if int(getattr(cfg, k)) < 1:
            raise TrainError(f"--{k.replace('_', '-')} must be >= 1")
    if int(cfg.max_bad_shards) < 0:
        raise TrainError("--max-bad-shards must be >= 0")
    for k in ("focus_crops", "ohem"):
        if not 0 <= float(getattr(cfg, k)) < 1 + (k == "focus_crops"):
            raise TrainError(f"--{k.replace('_', '-')} must be in [0, 1{']' if k == 'focus_crops' else ')'}")


def option_help(name: str) -> str:
    """An option's help with its default and the presets' values: ``... [default: 20000; tiny: 150]``."""
    f = FIELDS[name]
    if name == "preset":
        return f.metadata["help"] + " " + "; ".join(f"{p}: {v['help']}." for p, v in PRESETS.items())
    shown = [f"default: {_show(f.default)}"] if f.default is not None else []
    shown += [f"{p}: {_show(v[name])}" for p, v in PRESETS.items() if name in v and v[name] != f.default]
    return f.metadata["help"] + (f" [{'; '.join(shown)}]" if shown else "")


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    return str(v)
