"""Mask formats ``hotrain predict --export`` writes: the ids and the file layout each consumer reads.

Every format writes 8-bit single-channel (grayscale ``L``) PNGs at the full frame size, one per frame, holding
the model's per-pixel argmax mapped to the consumer's ids. An argmax map has one class per pixel, so hands and
object never overlap in it: the overlap rules below say what the consumer expects, and they hold trivially.

``plain`` (ours), ``<out>/<frame name>.png``, the model's own class index:
    hand checkpoint      0 background, 1 hand
    handobj checkpoint   0 background, 1 hand, 2 object
    sides checkpoint     0 background, 1 left hand, 2 right hand, 3 object

``honnotate`` (HOnnotate, the pipeline that annotated HO-3D), read as ``cv2.imread(p)[:, :, 0]``:
    frames  <root>/<SEQ>/rgb/<camID>/<frameID>.png|jpg
    masks   <root>/<SEQ>/segmentation/<camID>/raw_seg_results/<frameID>.png
    ids     0 background, 1 object, 2 hand (left and right merged; 255 never written)
    overlap hands merged into one class; hand vs object decided per pixel by the argmax
    --overlay writes <root>/<SEQ>/segmentation/<camID>/visualization/<frameID>_prediction.png

``hold`` (HOLD, CVPR 2024; its loader reads ``cv2.imread`` -> BGR2GRAY and rejects a mask whose max is 255):
    frames  <case>/build/image/<name>.png
    masks   <case>/build/mask/<name>.png (the frame's own name: HOLD pairs images and masks by sorted name)
    ids     0 background, 50 object, 150 right hand, 250 left hand; needs a sides checkpoint
    overlap the object wins where it meets a hand (HOLD's rule; an argmax map never has both on one pixel)
    other inputs (plain folder, glob, video) need --out, which plays <case>: <out>/build/mask/<name>.png,
    named after the input frames (nothing is renumbered, so no corres.txt); put the frames in
    <out>/build/image/ under the same names.

``hocap`` (HO-Cap), uint8 label map beside each colour frame:
    frames  <seq>/<camera serial>/color_<frame>.jpg
    masks   <seq>/<camera serial>/mask_<frame>.png (same digits as the frame, %06d in HO-Cap)
    ids     0 background, 1 right hand, 2 left hand, 3 object (our one object class is HO-Cap's first object)
    overlap one label per pixel from the argmax; needs a sides checkpoint

``arctic`` (ARCTIC-style renders, ``images/rgb/{fidx:04d}.png`` beside ``images/mask/{fidx:04d}.png``):
    frames  <dir>/images/rgb/<name>.png|jpg
    masks   <dir>/images/mask/<name>.png
    ids     0 background, 100 object, 200 left hand, 250 right hand (ARCTIC's 150 body is never written)
    overlap one label per pixel from the argmax; needs a sides checkpoint
    other inputs need --out, which plays <dir>: <out>/images/mask/<name>.png, named after the input frames.

HOnnotate and HO-Cap key their masks by sequence and camera, so those formats read only their own trees.
Masks go into the input tree itself (where the pipeline reads them) unless ``--out`` names another root, under
which the same layout is mirrored. Overlays (``--overlay``), read by no consumer, go to
``<root>/overlay/<mask path>.jpg`` (plain: ``<out>/overlay/<name>.jpg``) except HOnnotate's own visualization/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hodata.errors import DataError
from hotrain.stages import STAGES, flip_swap_permutation

# Class names a checkpoint may carry in ``ckpt["classes"]``.
KNOWN_CLASSES = ("background", "hand", "left_hand", "right_hand", "object")
# What a checkpoint without ``classes`` holds, by its stage (older checkpoints store only the config).
STAGE_CLASSES = {name: list(stage.classes) for name, stage in STAGES.items()}
_CLASSES_BY_COUNT = {len(v): v for v in STAGE_CLASSES.values()}


def model_classes(ckpt: dict[str, Any], path: object = None) -> list[str]:
    """The class name of each model output, from ``ckpt["classes"]`` (else from its stage / class count)."""
    classes = ckpt.get("classes")
    if not classes:
        stage = (ckpt.get("config") or {}).get("stage")
        n = int(ckpt.get("num_classes") or 0)
        classes = STAGE_CLASSES.get(stage) if stage in STAGE_CLASSES and len(STAGE_CLASSES[stage]) == n else None
        classes = classes or _CLASSES_BY_COUNT.get(n)
        if not classes:
            raise DataError(f"checkpoint names no classes and its {n} outputs match no stage", path)
    classes = [str(c) for c in classes]
    unknown = [c for c in classes if c not in KNOWN_CLASSES]
    if unknown or classes[0] != "background":
        raise DataError(f"checkpoint classes {classes} are not background + {'/'.join(KNOWN_CLASSES[1:])}", path)
    return classes


def has_sides(classes: list[str]) -> bool:
    return "left_hand" in classes and "right_hand" in classes


# Output channel order of a mirrored frame's prediction seen unmirrored (left_hand <-> right_hand).
flip_permutation = flip_swap_permutation


Placer = Callable[[Path], "tuple[Path, Path] | None"]


@dataclass(frozen=True)
class Format:
    """One consumer's ids and layout. ``place(frame)`` -> (tree root, mask path relative to it) for a frame in the
    consumer's own tree, else None; ``flat(name)`` -> mask path relative to ``--out`` for other inputs (None: the
    format reads only its own tree)."""

    name: str
    ids: dict[str, int]
    needs_sides: bool
    tree: str
    place: Placer = field(repr=False)
    flat: Callable[[str], "Path | None"] = field(repr=False)
    overlay: Callable[[Path], Path] = field(repr=False)

    def lut(self, classes: list[str]) -> np.ndarray:
        """uint8 table: model output index -> the id this format writes."""
        if self.name == "plain":
            return np.arange(len(classes), dtype=np.uint8)
        return np.array([self.ids[c] for c in classes], dtype=np.uint8)

    def check_classes(self, classes: list[str], checkpoint: object) -> None:
        if self.needs_sides and not has_sides(classes):
            raise DataError(f"--export {self.name} needs left and right hands but this checkpoint has classes "
                            f"{', '.join(classes)}; train them with `hotrain fit --stage sides --init {checkpoint}`",
                            checkpoint)


def _overlay_beside(rel: Path) -> Path:
    return Path("overlay") / rel.with_suffix(".jpg")


def _honnotate_place(p: Path) -> tuple[Path, Path] | None:
    if len(p.parents) < 4 or p.parent.parent.name != "rgb":
        return None
    cam, seq = p.parent.name, p.parents[2].name
    return p.parents[3], Path(seq, "segmentation", cam, "raw_seg_results", p.stem + ".png")


def _honnotate_overlay(rel: Path) -> Path:  # SEQ/segmentation/cam/raw_seg_results/x.png -> .../visualization/
    return rel.parent.parent / "visualization" / f"{rel.stem}_prediction.png"


def _hold_place(p: Path) -> tuple[Path, Path] | None:
    if p.suffix.lower() != ".png" or p.parent.name != "image" or p.parent.parent.name != "build":
        return None  # HOLD reads build/image/*.png only
    return p.parents[2], Path("build", "mask", p.stem + ".png")


_HOCAP_COLOR = re.compile(r"color_(\d+)\.jpg")


def _hocap_place(p: Path) -> tuple[Path, Path] | None:
    m = _HOCAP_COLOR.fullmatch(p.name)
    if m is None or len(p.parents) < 3:
        return None
    return p.parents[2], Path(p.parents[1].name, p.parent.name, f"mask_{m.group(1)}.png")


def _arctic_place(p: Path) -> tuple[Path, Path] | None:
    if p.parent.name != "rgb" or p.parent.parent.name != "images":
        return None
    return p.parents[2], Path("images", "mask", p.stem + ".png")


FORMATS: dict[str, Format] = {
    "plain": Format("plain", {}, False, "any image folder, glob or video",
                    place=lambda p: None, flat=lambda name: Path(name + ".png"),
                    overlay=_overlay_beside),
    "honnotate": Format("honnotate", {"background": 0, "object": 1, "hand": 2, "left_hand": 2, "right_hand": 2},
                        False, "<root>/<SEQ>/rgb/<camID>/<frameID>.png|jpg",
                        place=_honnotate_place, flat=lambda name: None, overlay=_honnotate_overlay),
    "hold": Format("hold", {"background": 0, "object": 50, "right_hand": 150, "left_hand": 250}, True,
                   "<case>/build/image/<name>.png",
                   place=_hold_place, flat=lambda name: Path("build", "mask", name + ".png"), overlay=_overlay_beside),
    "hocap": Format("hocap", {"background": 0, "right_hand": 1, "left_hand": 2, "object": 3}, True,
                    "<seq>/<camera serial>/color_<frame>.jpg",
                    place=_hocap_place, flat=lambda name: None, overlay=_overlay_beside),
    "arctic": Format("arctic", {"background": 0, "object": 100, "left_hand": 200, "right_hand": 250}, True,
                     "<dir>/images/rgb/<name>.png|jpg",
                     place=_arctic_place, flat=lambda name: Path("images", "mask", name + ".png"),
                     overlay=_overlay_beside),
}


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise DataError(f"unknown export format {name!r}; choose from {', '.join(FORMATS)}")
    return FORMATS[name]
