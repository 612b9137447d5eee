"""The frames a predict run reads, where each one's mask goes, and their decoding in DataLoader workers.

Inputs: a folder, one image or video file, or a glob. For a tree format (see ``hotrain.export``) a folder is
searched recursively for frames in the consumer's tree (``<SEQ>/rgb/<cam>/``, ``build/image/``,
``<seq>/<serial>/color_*.jpg``, ``images/rgb/``); when it holds none, its own images are read as plain frames.
``plain`` reads the folder's own images (not subfolders). Frames are sorted by path, so every process of a
``torchrun`` run sees the same list and frame i goes to rank i % world size.

A frame that cannot be read (missing, not an image, a truncated JPEG or PNG) is a ``BadFrame``: the run skips it
and lists it. ``cv2.imread`` decodes a JPEG cut short into a partly grey frame with only a warning (what
``cv2.imdecode`` does varies by version), so a JPEG whose end-of-image marker is missing is checked with Pillow,
which refuses a truncated stream.
"""

from __future__ import annotations

import glob
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from hodata.errors import BadFrame, DataError
from hotrain.export import Format

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass(frozen=True)
class Frame:
    """One input frame: an image file, or frame ``index`` of a video; where its mask (and overlay) go."""

    source: Path
    index: int | None
    name: str
    mask: Path
    overlay: Path | None

    def label(self) -> str:
        return str(self.source) if self.index is None else f"{self.source}#{self.index}"


@dataclass
class Plan:
    """What a run reads and writes. ``frames`` lists every image frame (all ranks); a video is read as it comes,
    ``video_frame(i)`` naming frame i's outputs."""

    kind: str  # "images" | "video"
    frames: list[Frame]
    out_root: Path  # predict.json and the lock live here
    layout: str  # "tree" | "flat" | "mixed"
    video: Path | None = None
    video_out: Path | None = None

    def video_frame(self, i: int, fmt: Format, overlay: bool) -> Frame:
        assert self.video is not None and self.video_out is not None
        name = f"{self.video.stem}_{i:06d}"
        rel = fmt.flat(name)
        return Frame(self.video, i, name, self.video_out / rel,
                     self.video_out / fmt.overlay(rel) if overlay else None)


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTS and p.is_file() and not p.name.startswith(".")


def _own_images(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if _is_image(f))


def _tree_images(folder: Path, fmt: Format) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            p = Path(dirpath, name)
            if p.suffix.lower() in IMAGE_EXTS and not name.startswith(".") and fmt.place(p) is not None:
                found.append(p)
    return sorted(found)


def input_files(spec: str, fmt: Format) -> tuple[str, list[Path]]:
    """("video", [file]) or ("images", sorted files) for a folder, a file or a glob."""
    p = Path(spec)
    if p.is_dir():
        files = _tree_images(p, fmt) if fmt.name != "plain" else []
        files = files or _own_images(p)
        if not files:
            what = f"no images ({', '.join(IMAGE_EXTS)})"
            if fmt.name != "plain":
                what = f"no frames in a {fmt.name} tree ({fmt.tree}) and {what} of its own"
            raise DataError(f"folder holds {what}", p)
        return "images", files
    if p.is_file():
        return ("video" if p.suffix.lower() in VIDEO_EXTS else "images"), [p]
    if glob.has_magic(spec):
        files = sorted(Path(f) for f in glob.glob(spec, recursive=True) if Path(f).is_file())
        if not files:
            raise DataError("no file matches this pattern", spec)
        if len(files) == 1 and files[0].suffix.lower() in VIDEO_EXTS:
            return "video", files
        return "images", files
    raise DataError("input not found", spec)


def plan(spec: str, fmt: Format, out: str | os.PathLike | None, *, overlay: bool = False) -> Plan:
    """Every frame's outputs; refuses (one line) layouts that would clash or overwrite an input."""
    out = Path(out) if out is not None else None
    kind, files = input_files(spec, fmt)
    if kind == "video":
        if fmt.flat("x") is None:
            raise DataError(f"--export {fmt.name} reads frames from a {fmt.name} tree ({fmt.tree}), not a video",
                            files[0])
        if out is None:
            raise DataError("--out is needed for the masks of a video", files[0])
        return Plan("video", [], out, "flat", video=files[0], video_out=out)
    frames, roots, layouts = [], set(), set()
    input_dirs = {os.path.abspath(f.parent) for f in files}
    for f in files:
        placed = fmt.place(f)
        if placed is not None:
            root, rel = placed
            roots.add(root)
            layouts.add("tree")
            base = out if out is not None else root
        else:
            rel = fmt.flat(f.stem)
            if rel is None:
                raise DataError(f"--export {fmt.name} reads frames from a {fmt.name} tree ({fmt.tree}); this frame "
                                f"is not in one (use --export plain for other frames)", f)
            if out is None:
                raise DataError(f"not in a {fmt.name} tree ({fmt.tree}): give --out for the masks of such frames", f)
            layouts.add("flat")
            base = out
            if os.path.abspath((out / rel).parent) in input_dirs:  # plain --out == --input, and the like
                raise DataError("the masks would go into the folder of the input frames, mixed with (and read "
                                "back as) frames, or over them: choose another --out", (out / rel).parent)
        frames.append(Frame(f, None, f.stem, base / rel, base / fmt.overlay(rel) if overlay else None))
    out_root = out if out is not None else Path(os.path.commonpath([str(r) for r in roots]))
    layout = layouts.pop() if len(layouts) == 1 else "mixed"
    _check_outputs(frames)
    return Plan("images", frames, out_root, layout)


def _check_outputs(frames: list[Frame]) -> None:
    """No two frames write one file, and no output is an input."""
    inputs = {os.path.abspath(f.source): f for f in frames}
    seen: dict[str, Frame] = {}
    for f in frames:
        for target in (f.mask, f.overlay):
            if target is None:
                continue
            t = os.path.abspath(target)
            if t in inputs:
                raise DataError(f"its mask would overwrite the input frame {inputs[t].source}; give another --out",
                                target)
            if t in seen:
                raise DataError(f"{seen[t].source} and {f.source} would write the same file; predict one "
                                f"folder (or tree) at a time", target)
            seen[t] = f


# ------------------------------------------------------------------------------------------------ decoding


def decode_image(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3) of an image file; ``BadFrame`` naming it when it is missing, corrupt or truncated."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadFrame(f"cannot read ({e.strerror or type(e).__name__})", path) from None
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-64:]:
        from PIL import Image

        try:  # no end-of-image marker near the end: either trailing bytes after it, or a cut stream
            with Image.open(io.BytesIO(data)) as im:
                im.load()
        except Exception as e:
            raise BadFrame(f"truncated or corrupt JPEG ({str(e).splitlines()[0][:120]})", path) from None
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise BadFrame("cannot decode image (unsupported, corrupt or truncated)", path)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def is_done(frame: Frame) -> bool:
    """Its mask exists and decodes (and its overlay exists when one is wanted): a rerun skips the frame."""
    if not frame.mask.is_file() or cv2.imread(str(frame.mask), cv2.IMREAD_UNCHANGED) is None:
        return False
    return frame.overlay is None or frame.overlay.is_file()


# An item the loader yields: (status, frame, payload). status "ok": payload is the frame as a uint8 (H, W, 3)
# tensor; "done": outputs already there, payload None; "failed": payload is the reason.
Item = tuple[str, Frame, "torch.Tensor | str | None"]


class ImageFrames(Dataset):
    """This rank's image frames, decoded in loader workers (the resume check happens there too)."""

    def __init__(self, frames: list[Frame]):
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> Item:
        f = self.frames[i]
        if is_done(f):
            return "done", f, None
        try:
            return "ok", f, torch.from_numpy(decode_image(f.source))
        except DataError as e:
            return "failed", f, str(e)


class VideoFrames(IterableDataset):
    """Frames i % world == rank of a video, read in order (one worker: a video decodes sequentially)."""

    def __init__(self, plan: Plan, fmt: Format, overlay: bool, rank: int, world: int):
        self.plan, self.fmt, self.overlay, self.rank, self.world = plan, fmt, overlay, rank, world

    def __iter__(self) -> Iterator[Item]:
        cap = cv2.VideoCapture(str(self.plan.video))
        try:
            i = 0
            while True:
                mine = i % self.world == self.rank
                f = self.plan.video_frame(i, self.fmt, self.overlay) if mine else None
                if f is None or is_done(f):
                    if not cap.grab():
                        return
                    if f is not None:
                        yield "done", f, None
                else:
                    ok, bgr = cap.read()
                    if not ok:
                        return
                    yield "ok", f, torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                i += 1
        finally:
            cap.release()


def open_video(path: Path) -> int:
    """Frame count the container reports (an estimate for progress); a DataError when it cannot be opened or
    its first frame cannot be read."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise DataError("cannot open video (unsupported or corrupt)", path)
        if not cap.read()[0]:
            raise DataError("video has no readable frame", path)
        return max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
    finally:
        cap.release()
