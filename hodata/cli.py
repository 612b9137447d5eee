"""``hodata`` command line: build shards from a dataset (whole or in parts), merge parts, inspect shards,
write demo data."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import click

from hodata import __version__
from hodata.errors import UserError
from hodata.shards import DEFAULT_MAX_SKIP_FRACTION, MIN_SKIPS_ALLOWED


def _peek_source(args: list[str]) -> str | None:
    """The value of ``--source`` in raw arguments (before click parses them), so its options can be added."""
    for i, arg in enumerate(args):
        if arg == "--source" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--source="):
            return arg.split("=", 1)[1]
    return None


class RegistryChoice(click.Choice):
    """A choice among names read from a registry when the command runs (sources registered later count)."""

    def __init__(self, names) -> None:
        self._names = names
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self._names())

    @choices.setter
    def choices(self, value) -> None:  # click's own __init__ path; the registry stays the truth
        pass


class SourceCommand(click.Command):
    """``hodata build``: the common options plus those the chosen ``--source`` declares (and only those)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["hodata.source"] = _peek_source(args)
        ctx.meta["hodata.args"] = ["hodata", ctx.info_name, *args]  # the command as typed, recorded in the manifest
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as e:
            raise click.UsageError(_not_an_option(e.option_name, ctx.meta["hodata.source"]), ctx) from None

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        from hodata.sources import REGISTRY

        params = super().get_params(ctx)
        name = ctx.meta.get("hodata.source")
        if name in REGISTRY:
            params = params[:-1] + [o.click_option() for o in REGISTRY[name].load_class().OPTIONS] + params[-1:]
        return params

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_help(ctx, formatter)
        if ctx.meta.get("hodata.source") not in _source_names():
            formatter.write_paragraph()
            formatter.write_text("Each source adds its own options: hodata build --source NAME --help")


def _not_an_option(flag: str, source: str | None) -> str:
    """One line for a flag the chosen source does not take, naming the sources that do."""
    from hodata.sources import REGISTRY

    if source not in REGISTRY:
        return f"No such option: {flag} (each source adds its own options: hodata build --source NAME --help)"
    takers = [n for n, e in sorted(REGISTRY.items()) if any(o.flag == flag for o in e.load_class().OPTIONS)]
    own = ", ".join(o.flag for o in REGISTRY[source].load_class().OPTIONS) or "none"
    return (f"No such option: {flag} for --source {source} (its options: {own})"
            + (f"; {flag} belongs to {', '.join(takers)}" if takers else ""))


def _source_names() -> list[str]:
    from hodata.sources import source_names

    return source_names()


def _demo_layouts() -> list[str]:
    from hodata.sources import demo_layouts

    return demo_layouts()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="hodata")
def main() -> None:
    """Build normalized hand/object segmentation shards (schema hodata/2) from public datasets."""


@main.command(cls=SourceCommand)
@click.option("--source", required=True, type=RegistryChoice(_source_names), help="The dataset.")
@click.option("--root", required=True, type=click.Path(path_type=Path), help="The dataset's root folder, as shipped.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder for shards + manifest.json.")
@click.option("--max-samples", default=1000, show_default=True,
              help="Frames per shard (fewer samples where frames are skipped).")
@click.option("--max-bytes", default="512MB", show_default=True, help="Bytes per shard at most (e.g. 256MB, 1GB).")
@click.option("--max-side", type=int, default=None, help="Resize so the longer side is at most this (masks: nearest).")
@click.option("--workers", default=0, show_default=True, help="Worker processes for decoding and mask derivation.")
@click.option("--overwrite", is_flag=True, help="Replace an existing build of this source made with other options "
              "(or laid out otherwise: whole, or in parts of another count).")
@click.option("--limit", type=int, default=None, help="Build only the first N frames of each split (a preview).")
@click.option("--max-skip-fraction", type=click.FloatRange(0.0, 1.0), default=DEFAULT_MAX_SKIP_FRACTION,
              show_default=True, help=f"Stop the build when more than this share of its frames is skipped "
              f"(at least {MIN_SKIPS_ALLOWED} skips are always allowed).")
@click.option("--part", "part", default=None, metavar="I/N",
              help="Build part I of N (whole sequences per part; parts count from 1), into OUT beside the other "
              "parts; join them with `hodata merge OUT`.")
@click.option("--wait", is_flag=True, help="When another run is writing this source into OUT, wait for it instead "
              "of stopping.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def build(source, root, out, max_samples, max_bytes, max_side, workers, overwrite, limit, max_skip_fraction, part,
          wait, quiet, **source_opts):
    """Build WebDataset shards of SOURCE from ROOT into OUT (rerun the same command to resume)."""
    from hodata.interrupt import RESUME_HINT, exit_code
    from hodata.parts import parse_part, part_manifest_name
    from hodata.shards import BuildConfig
    from hodata.shards import build as run_build
    from hodata.sources import open_source

    try:
        part = parse_part(part) if part else None
        src = open_source(source, root, source_opts)
        cfg = BuildConfig(out=out, max_samples=max_samples, max_bytes=parse_bytes(max_bytes), max_side=max_side,
                          workers=workers, overwrite=overwrite, limit=limit, progress=not quiet,
                          max_skip_fraction=max_skip_fraction, part=part, wait=wait,
                          command=click.get_current_context().meta["hodata.args"])
        rec = run_build(src, cfg)
    except UserError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the finished shards are kept, the half one removed
        click.echo(RESUME_HINT, err=True)
        sys.exit(exit_code(e))
    t = rec["totals"]
    manifest = out / (part_manifest_name(part) if part else "manifest.json")
    label = f"{source} part {part[0]}/{part[1]}" if part else source
    click.echo(f"{label}: {t['samples']} samples in {t['shards']} shard(s), {t['bytes'] / 1e6:.1f} MB, "
               f"{t['skipped']} skipped -> {manifest}")
    for split, s in rec["splits"].items():
        click.echo(f"  {split}: {s['samples']} samples, {s['shards']} shard(s), {s['skipped']} skipped")


@main.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--source", "sources", multiple=True, help="Merge only this source (repeatable; default: every "
              "source with parts in OUT).")
@click.option("--wait", is_flag=True, help="When a part is still being written into OUT, wait for it instead of "
              "stopping.")
def merge(out, sources, wait):
    """Join the parts built with --part i/N in OUT into OUT/manifest.json (every shard's sha256 verified)."""
    from hodata.interrupt import RESUME_HINT, exit_code
    from hodata.merge import merge as run_merge

    try:
        command = ["hodata", "merge", str(out), *(f"--source={s}" for s in sources), *(["--wait"] if wait else [])]
        merged = run_merge(out, list(sources) or None, wait=wait, command=command)
    except UserError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt as e:
        click.echo(RESUME_HINT, err=True)
        sys.exit(exit_code(e))
    for source, rec in merged.items():
        t = rec["totals"]
        click.echo(f"{source}: {len(rec['parts'])} parts merged, {t['samples']} samples in {t['shards']} shard(s), "
                   f"{t['bytes'] / 1e6:.1f} MB, {t['skipped']} skipped; every shard's sha256 verified "
                   f"-> {out / 'manifest.json'}")


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
    except UserError as e:
        raise click.ClickException(str(e)) from None
    sys.exit(code)


@main.command()
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Where to write the synthetic dataset.")
@click.option("--layout", type=RegistryChoice(_demo_layouts), default="egohos", show_default=True,
              help="Which real dataset's on-disk layout to imitate.")
@click.option("--frames", default=None, type=int, help="Frames to generate (layout default when omitted).")
@click.option("--seed", default=0, show_default=True)
def demo(out, layout, frames, seed):
    """Write a small synthetic dataset in a real dataset's layout (no download needed)."""
    from hodata.sources import REGISTRY

    module = importlib.import_module(REGISTRY[layout].demo)
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
