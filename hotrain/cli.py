"""``hotrain`` command line: fit, eval, predict."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hotrain import __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


def _user_errors():
    """Exceptions that mean bad input or configuration: shown as one line, no traceback."""
    from hodata.errors import DataError
    from hotrain.model import WeightsError
    from hotrain.train import TrainError

    return (DataError, WeightsError, TrainError)


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="hotrain")
def main() -> None:
    """Train DeepLabv3 hand / hand+object segmentation on hodata/1 shards, evaluate it, run it on frames."""


def _mix(ctx, param, value):
    if value is None:
        return None
    from hotrain.data import parse_mix

    try:
        return parse_mix(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@main.command(context_settings=CONTEXT)
@click.option("--shards", required=True, help="Shard folder, glob(s), comma list, brace pattern or URL/pipe: spec.")
@click.option("--stage", type=click.Choice(["hand", "handobj"]), default=None, help="hand: bg/hand; handobj: bg/hand/object. [default: hand]")
@click.option("--init", default=None, type=click.Path(dir_okay=False), help="Start from this checkpoint (handobj from a hand run: head widened).")
@click.option("--preset", type=click.Choice(["tiny"]), default=None, help="tiny: MobileNetV3, 8 crops of 96 px, 150 AdamW steps (about a CPU minute).")
@click.option("--out", default=None, help="Run folder: last.pt, best.pt, metrics.jsonl, tb/. [default: runs/hotrain]")
@click.option("--model", type=click.Choice(["deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3_mobilenet_v3_large"]), default=None,
              help="[default: deeplabv3_resnet50]")
@click.option("--weights", default=None, help="coco | imagenet | none | auto | PATH to a state_dict. auto: COCO if in the torch cache, else ImageNet if cached, else none. [default: auto]")
@click.option("--aux/--no-aux", default=None, help="Auxiliary FCN head and loss. [default: aux]")
@click.option("--aux-weight", type=float, default=None, help="[default: 0.5]")
@click.option("--bn-momentum", type=float, default=None, help="Set every BatchNorm's momentum (tiny preset: 0.1).")
@click.option("--bn-recompute", type=int, default=None, help="Re-estimate BatchNorm statistics on N whole training frames before each validation (tiny preset: 64). [default: 0]")
@click.option("--sync-bn", is_flag=True, default=None, help="SyncBatchNorm across ranks.")
@click.option("--steps", type=int, default=None, help="Optimizer steps. [default: 20000]")
@click.option("--steps-per-epoch", type=int, default=None, help="Steps per loader epoch (resume granularity of the data stream). [default: 1000]")
@click.option("--batch-size", type=int, default=None, help="Per rank, per micro-step. [default: 8]")
@click.option("--accum", type=int, default=None, help="Gradient accumulation micro-steps per optimizer step. [default: 1]")
@click.option("--crop-size", type=int, default=None, help="[default: 512]")
@click.option("--num-workers", type=int, default=None, help="Loader workers per rank. [default: 4]")
@click.option("--seed", type=int, default=None, help="[default: 0]")
@click.option("--mix", callback=_mix, default=None, help="Per-source weights, e.g. ho3d=0.5,egohos=0.3,freihand=0.2.")
@click.option("--augment/--no-augment", default=None, help="[default: augment]")
@click.option("--train-split", default=None, help="[default: train]")
@click.option("--val-split", default=None, help="[default: val]")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default=None, help="[default: sgd]")
@click.option("--lr", type=float, default=None, help="[default: 0.02 (sgd)]")
@click.option("--momentum", type=float, default=None, help="SGD momentum. [default: 0.9]")
@click.option("--weight-decay", type=float, default=None, help="[default: 1e-4]")
@click.option("--poly-power", type=float, default=None, help="Poly LR decay power. [default: 0.9]")
@click.option("--warmup-steps", type=int, default=None, help="Linear LR warmup. [default: 0]")
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "none"]), default=None, help="auto: bf16 on GPU, none on CPU.")
@click.option("--channels-last/--no-channels-last", default=None, help="[default: on GPU]")
@click.option("--compile", is_flag=True, default=None, help="torch.compile the model.")
@click.option("--eval-every", type=int, default=None, help="Validate every N steps (and at the end). [default: 1000]")
@click.option("--eval-batch-size", type=int, default=None)
@click.option("--eval-max-side", type=int, default=None, help="Validate on frames shrunk to this longer side.")
@click.option("--ckpt-every", type=int, default=None, help="Write last.pt every N steps (and at the end). [default: 1000]")
@click.option("--keep-step-ckpts", is_flag=True, default=None, help="Also keep step_NNNNNNN.pt copies.")
@click.option("--log-every", type=int, default=None, help="[default: 20]")
@click.option("--progress/--no-progress", default=None, help="Progress bar on rank 0. [default: on]")
@click.option("--stop-at", type=int, default=None, help="Stop after this step (checkpoint written), as if interrupted.")
@click.option("--resume", is_flag=True, help="Continue OUT/last.pt exactly (new run when there is none).")
def fit(resume, **options):
    """Train (one process, or one per GPU under torchrun --nproc-per-node N -m hotrain fit ...)."""
    from hotrain.train import fit as run_fit

    try:
        summary = run_fit(options, resume=resume)
    except _user_errors() as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps({k: summary[k] for k in ("step", "stopped", "best_miou", "first_loss", "last_loss", "out")}))


@main.command("eval", context_settings=CONTEXT)
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False))
@click.option("--shards", required=True, help="Shard folder / glob / list (the split is picked from the names).")
@click.option("--split", default="val", show_default=True)
@click.option("--out", default=None, help="Report folder. [default: <checkpoint dir>/eval_<split>]")
@click.option("--batch-size", default=4, show_default=True)
@click.option("--num-workers", default=1, show_default=True)
@click.option("--max-side", type=int, default=None, help="Shrink frames so the longer side is at most this.")
@click.option("--tta", type=click.Choice(["none", "flip"]), default="none", show_default=True)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... [default: cuda per rank when available]")
def eval_cmd(checkpoint, shards, split, out, batch_size, num_workers, max_side, tta, device):
    """Per-class IoU (whole split and per source), confusion matrix, pixel accuracy -> report.json + report.png."""
    from hotrain.evaluate import run_eval

    out = out or str(Path(checkpoint).parent / f"eval_{split}")
    try:
        report = run_eval(checkpoint, shards, split=split, out=out, batch_size=batch_size, num_workers=num_workers,
                          max_side=max_side, tta=tta == "flip", device=device)
    except _user_errors() as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps({k: report.get(k) for k in ("miou", "mean_iou", "iou", "pixel_accuracy") if k in report}))
    click.echo(f"report: {Path(out) / 'report.json'}, {Path(out) / 'report.png'}")


@main.command(context_settings=CONTEXT)
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False))
@click.option("--input", "input_spec", required=True,
              help="Image folder or pipeline tree, glob (quote it), image file or video file.")
@click.option("--export", "export", type=click.Choice(["plain", "honnotate", "hold", "hocap", "arctic"]),
              default="plain", show_default=True,
              help="Mask ids and layout: plain <out>/<name>.png with the model's class index (sides: 0 bg, 1 left, "
                   "2 right, 3 object); honnotate <SEQ>/segmentation/<cam>/raw_seg_results/ 0/1 object/2 hand; "
                   "hold build/mask/ 0/50 object/150 right/250 left; hocap <seq>/<serial>/mask_*.png 1 right/2 left/"
                   "3 object; arctic images/mask/ 100 object/200 left/250 right.")
@click.option("--out", default=None,
              help="Output root. Tree formats: default the input tree itself (where the pipeline reads masks); "
                   "else mirrored under OUT. Needed for plain and for frames outside a pipeline tree.")
@click.option("--overlay", is_flag=True, help="Also write colour overlays (honnotate: visualization/; others: overlay/).")
@click.option("--tta", type=click.Choice(["none", "flip"]), default="none", show_default=True,
              help="flip: average with the mirrored frame (left/right hands swapped back).")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--num-workers", default=2, show_default=True, help="Decoding workers per process.")
@click.option("--max-side", type=int, default=None, help="Run the model on frames shrunk to this longer side.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... [default: cuda (LOCAL_RANK) when available]")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar (rank 0).")
def predict(checkpoint, input_spec, export, out, overlay, tta, batch_size, num_workers, max_side, device, progress):
    """Write per-frame masks (full frame size, 8-bit) for images, pipeline trees or a video.

    Resumable (frames whose mask exists are skipped), one process per GPU under torchrun --nproc-per-node N
    -m hotrain predict ...; unreadable frames are skipped and listed in OUT/predict.json (exit status 1).
    """
    from hotrain.predict import REPORT_NAME, run_predict

    if export == "plain" and out is None:
        raise click.UsageError("--out is needed with --export plain")
    try:
        info = run_predict(checkpoint, input_spec, out, export=export, overlay_images=overlay, tta=tta == "flip",
                           batch_size=batch_size, max_side=max_side, device=device, num_workers=num_workers,
                           progress=progress)
    except _user_errors() as e:
        raise click.ClickException(str(e)) from None
    if "counts" not in info:  # ranks > 0 under torchrun: rank 0 reports
        return
    c = info["counts"]
    click.echo(f"{c['written']} mask(s) written, {c['skipped_done']} already done, {c['failed']} failed "
               f"({info['fps']:.1f} frames/s on {info['device']} x {info['world_size']}) -> {info['out']}")
    if c["failed"]:
        for f in info["failed"][:5]:
            click.echo(f"  skipped {f['reason']}", err=True)
        raise click.ClickException(f"{c['failed']} frame(s) could not be read; listed in "
                                   f"{Path(info['out']) / REPORT_NAME}")
