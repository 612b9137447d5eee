"""Options several sources share, declared once (each source lists the ones it takes in ``OPTIONS``)."""

from __future__ import annotations

from pathlib import Path

import click

from hodata.sources import Option

MASK_MODES = ("rendered", "provided")
RENDER_BACKENDS = ("zbuffer", "pyrender")  # hodata.render.BACKENDS, named here without importing numba

MANO_DIR = Option("mano_dir", click.Path(path_type=Path), None, envvar="MANO_DIR", record=False,
                  help="Folder with MANO_RIGHT.pkl / MANO_LEFT.pkl (MANO v1.2 from mano.is.tue.mpg.de).")
YCB_DIR = Option("ycb_dir", click.Path(path_type=Path), None, envvar="YCB_DIR", record=False,
                 help="YCB models folder holding <name>/textured_simple.obj.")
RENDERER = Option("renderer", click.Choice(RENDER_BACKENDS), "zbuffer",
                  help="Mask renderer: the z-buffer, or pyrender (EGL) as a cross-check.")
SPLIT_FILE = Option("split_file", click.Path(path_type=Path, dir_okay=False), None,
                    help="JSON {split: [group, ...]} (or a manifest's {group: split}) replacing the default split.")


def masks(default: str) -> Option:
    return Option("masks", click.Choice(MASK_MODES), default,
                  help="Derive masks by rendering the annotated poses, or use the dataset's own mask files.")


def val_fraction(default: float) -> Option:
    return Option("val_fraction", click.FloatRange(0.0, 1.0, max_open=True), default,
                  help="Share of groups (sequences, scenes) held out as 'val'.")
