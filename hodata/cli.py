"""``hodata`` command line: build shards from a dataset, inspect shards, write demo data."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import click

from hodata import __version__
from hodata.errors import DataError

# demo layout -> module with ``write(out: Path, frames: int, seed: int) -> dict``
DEMO_LAYOUTS = {
    "egohos": "hodata.demo.egohos",
    "egohands": "hodata.demo.egohands",
    "ho3d": "hodata.demo.ho3d",
    "freihand": "hodata.demo.freihand",
}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="hodata")
def main() -> None:
    """Build normalized hand/object segmentation shards (schema hodata/1) from public datasets."""


@main.command()
@click.option("--source", required=True, help="Dataset: egohos, egohands, ho3d, freihand.")
@click.option("--root", required=True, type=click.Path(path_type=Path), help="The dataset's root folder, as shipped.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder for shards + manifest.json.")
@click.option("--max-samples", default=1000, show_default=True, help="Samples per shard at most.")
@click.option("--max-bytes", default="512MB", show_default=True, help="Bytes per shard at most (e.g. 256MB, 1GB).")
@click.option("--max-side", type=int, default=None, help="Resize so the longer side is at most this (masks: nearest).")
@click.option("--workers", default=0, show_default=True, help="Worker processes for decoding and mask derivation.")
@click.option("--overwrite", is_flag=True, help="Replace an existing build of this source made with other options.")
@click.option("--limit", type=int, default=None, help="Build only the first N frames of each split (a preview).")
@click.option("--val-fraction", type=float, default=None,
              help="Fraction of sequences/videos held out as 'val' where a source has no official split.")
@click.option("--split-file", type=click.Path(path_type=Path), default=None,
              help="JSON {split: [sequence, ...]} overriding the source's default split assignment.")
@click.option("--egohos-second-order", type=click.Choice(["ignore", "object", "background"]), default="ignore",
              show_default=True, help="EgoHOS: how to label 2nd-order interacting objects (ids 6, 7, 8).")
@click.option("--mano-dir", type=click.Path(path_type=Path), default=None, envvar="MANO_DIR",
              help="Folder with MANO_RIGHT.pkl / MANO_LEFT.pkl (env MANO_DIR). HO3D, FreiHAND rendered masks.")
@click.option("--ycb-dir", type=click.Path(path_type=Path), default=None, envvar="YCB_DIR",
              help="YCB models folder: <objName>/textured_simple.obj (HO3D).")
@click.option("--masks", type=click.Choice(["rendered", "provided"]), default=None,
              help="HO3D/FreiHAND: render masks from poses, or use the dataset's own masks.")
@click.option("--renderer", type=click.Choice(["zbuffer", "pyrender"]), default="zbuffer", show_default=True,
              help="Mask renderer for HO3D/FreiHAND.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def build(source, root, out, max_samples, max_bytes, max_side, workers, overwrite, limit, quiet, **source_opts):
    """Build WebDataset shards of SOURCE from ROOT into OUT (rerun the same command to resume)."""
    from hodata.shards import BuildConfig
    from hodata.shards import build as run_build
    from hodata.sources import open_source

    try:
        src = open_source(source, root, {k: v for k, v in source_opts.items() if v is not None})
        cfg = BuildConfig(out=out, max_samples=max_samples, max_bytes=parse_bytes(max_bytes), max_side=max_side,
                          workers=workers, overwrite=overwrite, limit=limit, progress=not quiet,
                          command=["hodata"] + sys.argv[1:])
        rec = run_build(src, cfg)
    except DataError as e:
        raise click.ClickException(str(e)) from None
    t = rec["totals"]
    click.echo(f"{source}: {t['samples']} samples in {t['shards']} shard(s), {t['bytes'] / 1e6:.1f} MB, "
               f"{t['skipped']} skipped -> {out / 'manifest.json'}")
    for split, s in rec["splits"].items():
        click.echo(f"  {split}: {s['samples']} samples, {s['shards']} shard(s), {s['skipped']} skipped")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--samples", "n_samples", default=0,
              help="Samples to draw (needs --out or --html; default 16 for --out, 24 for --html).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Contact sheet PNG path.")
@click.option("--html", type=click.Path(path_type=Path), default=None,
              help="Write a self-contained HTML report (counts, provenance, problems, sample gallery) here.")
@click.option("--seed", default=0, help="Which samples go on the contact sheet and in the gallery.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def inspect(paths, n_samples, out, html, seed, as_json):
    """Report on shards (files, globs or folders); exit 1 when problems are found."""
    from hodata.inspect import run_inspect

    try:
        code = run_inspect(list(paths), n_samples=n_samples, sheet=out, seed=seed, as_json=as_json, html=html)
    except DataError as e:
        raise click.ClickException(str(e)) from None
    sys.exit(code)


@main.command()
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Where to write the synthetic dataset.")
@click.option("--layout", type=click.Choice(sorted(DEMO_LAYOUTS)), default="egohos", show_default=True,
              help="Which real dataset's on-disk layout to imitate.")
@click.option("--frames", default=None, type=int, help="Frames to generate (layout default when omitted).")
@click.option("--seed", default=0, show_default=True)
def demo(out, layout, frames, seed):
    """Write a small synthetic dataset in a real dataset's layout (no download needed)."""
    module = importlib.import_module(DEMO_LAYOUTS[layout])
    kwargs = {"seed": seed} | ({"frames": frames} if frames else {})
    info = module.write(out, **kwargs)
    click.echo(f"wrote {layout} demo to {out}")
    if info.get("build_command"):
        click.echo(f"next: {info['build_command']}")


def parse_bytes(text: str | int) -> int:
    s = str(text).strip().upper().replace("IB", "B")
    for suffix, mult in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("B", 1)):
        if s.endswith(suffix):
            return int(float(s[: -len(suffix)]) * mult)
    return int(s)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    main()
