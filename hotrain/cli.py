"""``hotrain`` command line: fit, eval, predict."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hotrain import __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


def _user_errors():
    """Exceptions that mean bad input or configuration: shown as one line, no traceback."""
    from hodata.errors import UserError

    return (UserError,)


INTERRUPTED = {"fit": "interrupted: rerun with --resume to continue from the last checkpoint",
               "predict": "interrupted: rerun the same command; masks already written are kept"}


class Commands(click.Group):
    """Ctrl-C ends any command with one line (what a rerun keeps) and exit status 130, no traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo(INTERRUPTED.get(ctx.invoked_subcommand, "interrupted"), err=True)
            ctx.exit(130)


@click.group(cls=Commands, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="hotrain")
def main() -> None:
    """Train hand / hand+object / left+right hand segmentation on hodata shards, evaluate it, run it on frames."""


def _parsed(parse):
    def callback(ctx, param, value):
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None

    return callback


def config_options(command):
    """Add one option per :class:`hotrain.config.TrainConfig` field (default None: "not given", so that presets
    and the saved config on --resume can tell what the user typed)."""
    import dataclasses

    from hotrain.config import TrainConfig, option_help

    for f in reversed(dataclasses.fields(TrainConfig)):
        meta, flag = f.metadata, f.metadata.get("flag")
        name = "--" + f.name.replace("_", "-")
        kw = {"default": None, "help": option_help(f.name)}
        if flag == "pair":
            decls = [f"{name}/--no-{name[2:]}"]
        elif flag == "on":
            decls, kw["is_flag"] = [name], True
        else:
            decls = [name]
            kind = meta.get("type") or type(f.default)
            kw["type"] = click.Choice(meta["choices"]()) if meta.get("choices") else kind
            if meta.get("parse"):
                kw["callback"] = _parsed(meta["parse"])
            if meta.get("metavar"):
                kw["metavar"] = meta["metavar"]
        if f.name == "shards":
            kw["required"] = True
        command = click.option(*decls, f.name, **kw)(command)
    return command


@main.command(context_settings=CONTEXT)
@config_options
@click.option("--resume", is_flag=True, help="Continue OUT/last.pt exactly (new run when there is none).")
def fit(resume, **options):
    """Train (one process, or one per GPU under torchrun --nproc-per-node N -m hotrain fit ...)."""
    from hotrain.train import fit as run_fit

    try:
        summary = run_fit(options, resume=resume)
    except _user_errors() as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps({k: summary[k] for k in ("step", "stopped", "best_miou", "skipped_shards", "first_loss", "last_loss",
                                                "out")}))


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
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Check every shard against the manifest.json beside it (size, then sha256 while reading); "
                   "a damaged shard refuses the evaluation.")
def eval_cmd(checkpoint, shards, split, out, batch_size, num_workers, max_side, tta, device, verify):
    """Per-class IoU (whole split and per source), confusion matrix, pixel accuracy -> report.json + report.png."""
    from hotrain.evaluate import run_eval

    out = out or str(Path(checkpoint).parent / f"eval_{split}")
    try:
        report = run_eval(checkpoint, shards, split=split, out=out, batch_size=batch_size, num_workers=num_workers,
                          max_side=max_side, tta=tta == "flip", device=device, verify=verify)
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
