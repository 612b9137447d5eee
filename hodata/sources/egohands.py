"""EgoHands (Bambach et al., ICCV 2015): hand polygons in egocentric card/board-game videos, as the release
defines them (DATASETS.md "EgoHands").

Layout::

    ROOT/                               # ROOT may also be the folder holding egohands_data/
      metadata.mat                      # struct array `video` (1 x 48): video_id, ..., labelled_frames (1 x 100)
      _LABELLED_SAMPLES/<VIDEO_ID>/frame_%04d.jpg
      _LABELLED_SAMPLES/<VIDEO_ID>/polygons.mat   # struct array `polygons` (1 x 100): myleft ... yourright

**Ground truth** is ``metadata.mat``: the release's README says all ground truth is stored there, and every
official helper (``getSegmentationMask.m``, ``getBoundingBoxes.m``) reads
``video(i).labelled_frames(j).<slot>``, tied to ``frame_num`` (which names ``frame_%04d.jpg``). Each of the
four slots (the wearer's left / right, the partner's left / right) is a polygon of (x, y) points in MATLAB's
1-based pixel coordinates (we subtract 1: pixel centres at integers from 0), empty when the hand is not
visible. The per-video ``polygons.mat`` is a copy that only third-party loaders read (entry i = the i-th
frame); it is compared with ``metadata.mat`` and every disagreement is recorded in the manifest
(``source.polygons_mat``), never fatal.

**Rasterising** (``egohands_raster``), pixel (r, c) being the square (c - 0.5, c + 0.5) x (r - 0.5, r + 0.5):

- ``release`` (default): the rule of the release's ``getSegmentationMask.m``, which fills each slot with
  MATLAB ``insertShape(..., 'FilledPolygon', 'Opacity', 1)`` on a zero image and takes ``logical(...)``.
  ``insertShape`` smooths edges by default, so every pixel the antialiased edge reaches is non-zero and
  becomes hand: a pixel is hand when the polygon covers any part of its square (an edge lying exactly on a
  square's side, or touching only its corner, covers none of it). Modelled exactly in geometry; MATLAB's
  own antialiasing may round a sliver of a few thousandths of a pixel down to 0.
- ``centre``: a pixel is hand when its centre lies inside the polygon (even-odd rule; a centre exactly on a
  left or top-facing edge counts as inside, one on a right or bottom-facing edge as outside): the common
  convention of pycocotools-style fills, about one boundary band smaller than ``release``.

Slots are drawn in slot order (a later slot keeps the pixels two slots share; ``getSegmentationMask.m``
unites them). Empty slots, polygons of fewer than 3 points and polygons marking no pixel draw nothing.
Objects are not annotated: ``labels.object`` false.

**Splits** are by video, never by frame. ``egohands_split``:

- ``official`` (default): the ICCV 2015 "Main Split" of ``getMetaBy.m``, a fixed index over the 48 entries of
  ``video`` in ``metadata.mat`` order: TEST = 1, 11, 13, 20, 31, 34, 38, 44; VALID = 7, 14, 28, 47; TRAIN =
  the other 36 (1-based positions, ``hodata/manifests/egohands_official_split.json``). It goes by position, so
  a video name the release does not have is only a recorded warning; a file without exactly 48 entries
  cannot take it (a clear error).
- ``partners``: ours (``hodata/manifests/egohands_split.json``): a video and its partner video (the same game
  seen by the other player) always share a split. Names must all be in it.

``--split-file`` replaces either (names must all be in it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import numpy as np
import scipy.io

from hodata import manifests
from hodata.errors import BadFrame, DataError
from hodata.manifest import file_digest
from hodata.schema import Sample, instance, seg_from_instances
from hodata.sources import FrameRef, Option, Source
from hodata.sources.files import read_image
from hodata.sources.options import SPLIT_FILE
from hodata.splits import load_split_file

SLOTS = ("myleft", "myright", "yourleft", "yourright")
SLOT_INFO = {"myleft": ("left", "wearer"), "myright": ("right", "wearer"),
             "yourleft": ("left", "partner"), "yourright": ("right", "partner")}
VIDEO_FIELDS = ("video_id", "partner_video_id", "ego_viewer_id", "partner_id", "location_id", "activity_id",
                "labelled_frames")
PARTNER_SPLIT_FILE = manifests.path("egohands_split.json")
OFFICIAL_SPLIT_FILE = manifests.path("egohands_official_split.json")
KNOWN_VIDEOS = frozenset(manifests.load("egohands_split.json")["_ids"])  # the release's 48 video ids
SPLIT_RULES = ("official", "partners")
SAMPLES_DIR = "_LABELLED_SAMPLES"
_FRAME_FILE = re.compile(r"^frame_(\d+)\.jpg$")


# ------------------------------------------------------------------------------------------ rasterizing

RASTER_RULES = ("release", "centre")
RASTER_ABOUT = {
    "release": "a pixel is hand when the polygon covers any part of its square: the release's "
               "getSegmentationMask.m (MATLAB insertShape FilledPolygon, edges smoothed, then logical)",
    "centre": "a pixel is hand when its centre lies inside the polygon (even-odd rule)",
}


def _window(lo: float, hi: float, size: int, rule: str) -> tuple[int, int]:
    """First and last pixel index (clipped to 0..size-1) that a span [lo, hi] can mark under ``rule``."""
    if rule == "centre":  # a centre c with lo <= c <= hi
        first, last = int(np.ceil(lo)), int(np.floor(hi))
    else:  # a cell (c - 0.5, c + 0.5) meeting [lo, hi]
        first, last = int(np.floor(lo - 0.5)) + 1, int(np.ceil(hi + 0.5)) - 1
    return max(0, first), min(size - 1, last)


def _centre_fill(x0, y0, x1, y1, r0: int, c0: int, rows: int, cols: int) -> np.ndarray:
    """Even-odd fill at pixel centres over the window rows r0.., columns c0.. (see :func:`polygon_window`).

    Each edge crosses the centre lines of the rows r with ceil(y_low) <= r < y_high (half-open, so a vertex
    is counted once); a row's crossings sorted by x pair up into spans, and the columns c with
    x[2k] <= c < x[2k+1] are inside.
    """
    ylo, yhi = np.minimum(y0, y1), np.maximum(y0, y1)
    first = np.maximum(np.ceil(ylo).astype(np.int64), r0)
    stop = np.minimum(np.ceil(yhi).astype(np.int64), r0 + rows)  # exclusive
    count = np.maximum(stop - first, 0)
    sub = np.zeros((rows, cols), bool)
    if not count.any():
        return sub
    e = np.repeat(np.arange(x0.size), count)  # one item per (edge, row whose centre line it crosses)
    r = first[e] + (np.arange(e.size) - np.repeat(np.cumsum(count) - count, count))
    x = x0[e] + (r - y0[e]) * (x1 - x0)[e] / (y1 - y0)[e]
    order = np.lexsort((x, r))
    r, x = r[order], x[order]  # a row's crossings are consecutive and even in number
    start = np.clip(np.ceil(x[0::2]) - c0, 0, cols).astype(np.int64)
    end = np.clip(np.ceil(x[1::2]) - c0, 0, cols).astype(np.int64)
    keep = start < end  # without empty spans, a row's starts (and ends) are distinct: plain += adds exactly
    flat = (r[0::2][keep] - r0) * (cols + 1)
    diff = np.zeros(rows * (cols + 1), np.int8)
    diff[flat + start[keep]] += 1
    diff[flat + end[keep]] -= 1
    return np.cumsum(diff.reshape(rows, cols + 1), axis=1, dtype=np.int8)[:, :cols] > 0


def _edge_cells(x0, y0, x1, y1, r0: int, c0: int, sub: np.ndarray) -> None:
    """Mark in ``sub`` (the window at row r0, column c0) every pixel whose open square
    (c - 0.5, c + 0.5) x (r - 0.5, r + 0.5) an edge of the polygon passes through."""
    rows, cols = sub.shape
    ylo, yhi = np.minimum(y0, y1), np.maximum(y0, y1)
    first = np.maximum(np.floor(ylo - 0.5).astype(np.int64) + 1, r0)
    last = np.minimum(np.ceil(yhi + 0.5).astype(np.int64) - 1, r0 + rows - 1)
    count = np.maximum(last - first + 1, 0)
    if not count.any():
        return
    e = np.repeat(np.arange(x0.size), count)  # one item per (edge, row band it enters)
    r = first[e] + (np.arange(e.size) - np.repeat(np.cumsum(count) - count, count))
    ex0, ey0, dx, dy = x0[e], y0[e], (x1 - x0)[e], (y1 - y0)[e]
    flat = dy == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        ta, tb = (r - 0.5 - ey0) / dy, (r + 0.5 - ey0) / dy
    t_lo = np.where(flat, 0.0, np.clip(np.minimum(ta, tb), 0.0, 1.0))
    t_hi = np.where(flat, 1.0, np.clip(np.maximum(ta, tb), 0.0, 1.0))
    xa, xb = ex0 + t_lo * dx, ex0 + t_hi * dx
    lo, hi = np.minimum(xa, xb), np.maximum(xa, xb)
    c_first = np.clip(np.floor(lo - 0.5).astype(np.int64) + 1 - c0, 0, cols)
    c_stop = np.clip(np.ceil(hi + 0.5).astype(np.int64) - c0, 0, cols)  # exclusive
    n = np.maximum(c_stop - c_first, 0)  # the boundary band is thin: set its pixels one by one
    item = np.repeat(np.arange(n.size), n)
    col = c_first[item] + (np.arange(item.size) - np.repeat(np.cumsum(n) - n, n))
    sub[r[item] - r0, col] = True


def polygon_window(poly: np.ndarray, height: int, width: int, rule: str = "centre"):
    """The pixels one polygon marks, as ``(r0, c0, sub)``: ``sub`` a bool array placed at row r0, column c0
    (None when it marks nothing). ``poly`` is (N, 2) float (x, y) with pixel centres at integers from 0.

    ``centre``: pixels whose centre lies inside (even-odd rule; a centre exactly on a left or top-facing edge
    counts as inside, one on a right or bottom-facing edge as outside). ``release``: pixels whose square
    (c - 0.5, c + 0.5) x (r - 0.5, r + 0.5) the polygon covers in any part: the centre pixels plus every
    pixel whose open square an edge passes through (an edge lying exactly along a square's side, or
    touching only its corner, does not mark it). Fewer than 3 points mark nothing.
    """
    if rule not in RASTER_RULES:
        raise ValueError(f"raster rule must be one of {RASTER_RULES}, got {rule!r}")
    poly = np.asarray(poly, dtype=np.float64)
    if poly.ndim != 2 or poly.shape[0] < 3:
        return None
    x0, y0 = poly[:, 0], poly[:, 1]
    r0, r1 = _window(y0.min(), y0.max(), height, rule)
    c0, c1 = _window(x0.min(), x0.max(), width, rule)
    if r0 > r1 or c0 > c1:
        return None
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    rows, cols = r1 - r0 + 1, c1 - c0 + 1
    sub = _centre_fill(x0, y0, x1, y1, r0, c0, rows, cols)
    if rule == "release":
        _edge_cells(x0, y0, x1, y1, r0, c0, sub)
    return r0, c0, sub


def rasterize_polygon(poly: np.ndarray, height: int, width: int, rule: str = "centre") -> np.ndarray:
    """The (height, width) bool mask of one polygon under ``rule`` (see :func:`polygon_window`)."""
    mask = np.zeros((height, width), bool)
    win = polygon_window(poly, height, width, rule)
    if win is not None:
        r0, c0, sub = win
        mask[r0:r0 + sub.shape[0], c0:c0 + sub.shape[1]] = sub
    return mask


def paint_polygon(target: np.ndarray, value: int, poly: np.ndarray, rule: str = "centre") -> bool:
    """Set ``target``'s pixels that ``poly`` marks under ``rule`` to ``value``; False when it marks none."""
    win = polygon_window(poly, target.shape[0], target.shape[1], rule)
    if win is None or not win[2].any():
        return False
    r0, c0, sub = win
    target[r0:r0 + sub.shape[0], c0:c0 + sub.shape[1]][sub] = value
    return True


def matlab_polygon(value: Any, path: Path, what: str) -> np.ndarray:
    """A polygon field as an (N, 2) float array of 0-based (x, y); (0, 2) when empty. BadFrame if malformed."""
    arr = np.asarray(value)
    if arr.size == 0:
        return np.zeros((0, 2))
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise BadFrame(f"{what} is not a numeric polygon (dtype {arr.dtype})", path)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise BadFrame(f"{what} must be an N x 2 array of (x, y), got shape {arr.shape}", path)
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise BadFrame(f"{what} has non-finite coordinates", path)
    return arr - 1.0  # MATLAB pixel centres are 1, 2, ...; ours 0, 1, ...


# --------------------------------------------------------------------------------------- reading .mat


def _records(value: Any) -> list:
    """A MATLAB struct array (loaded with struct_as_record=False) as a flat list of its elements."""
    return list(np.asarray(value, dtype=object).ravel())


def _text(value: Any) -> str:
    arr = np.asarray(value).ravel()
    return str(arr[0]) if arr.size else ""


def _integer(value: Any) -> int:
    arr = np.asarray(value).ravel()
    if arr.size != 1 or not np.issubdtype(arr.dtype, np.number) or float(arr[0]) != int(arr[0]):
        raise ValueError(f"expected one integer, got {arr!r}")
    return int(arr[0])


def _loadmat(path: Path, error=DataError) -> dict:
    if not path.is_file():
        raise error("file is missing", path)
    try:
        return scipy.io.loadmat(str(path), struct_as_record=False, squeeze_me=False)
    except Exception as e:  # noqa: BLE001 - scipy raises many types for a broken file
        raise error(f"not a readable MATLAB file ({type(e).__name__}: {e})", path) from e


def read_metadata(path: Path) -> list[dict[str, Any]]:
    """metadata.mat -> one record per entry of ``video``, in file order (the official split goes by it):
    ``video_id`` and the other text fields, ``frame_nums`` (ascending) and ``slots`` (per labelled frame,
    the raw polygon field of each hand slot). DataError when the struct is malformed."""
    mat = _loadmat(path)
    if "video" not in mat:
        raise DataError("has no struct array 'video'", path)
    videos: list[dict[str, Any]] = []
    for i, v in enumerate(_records(mat["video"])):
        missing = [f for f in VIDEO_FIELDS if not hasattr(v, f)]
        if missing:
            raise DataError(f"video({i + 1}) lacks field(s) {', '.join(missing)}", path)
        vid = _text(v.video_id)
        if not vid:
            raise DataError(f"video({i + 1}) has an empty video_id", path)
        frames = _records(v.labelled_frames)
        try:
            nums = [_integer(lf.frame_num) for lf in frames]
        except (AttributeError, ValueError) as e:
            raise DataError(f"video {vid}: labelled_frames.frame_num is malformed ({e})", path) from e
        if nums != sorted(set(nums)):
            raise DataError(f"video {vid}: labelled_frames.frame_num is not strictly ascending", path)
        lacking = [s for s in SLOTS if frames and not hasattr(frames[0], s)]
        if lacking:
            raise DataError(f"video({i + 1}).labelled_frames lacks field(s) {', '.join(lacking)}", path)
        videos.append({"video_id": vid, "partner_video_id": _text(v.partner_video_id),
                       "ego_viewer_id": _text(v.ego_viewer_id), "partner_id": _text(v.partner_id),
                       "location_id": _text(v.location_id), "activity_id": _text(v.activity_id),
                       "frame_nums": nums, "slots": [{s: getattr(lf, s) for s in SLOTS} for lf in frames]})
    if not videos:
        raise DataError("struct array 'video' is empty", path)
    dup = sorted({v["video_id"] for v in videos if [w["video_id"] for w in videos].count(v["video_id"]) > 1})
    if dup:
        raise DataError(f"video_id repeats: {', '.join(dup)}", path)
    return videos


def read_polygons(path: Path) -> list[dict[str, Any]]:
    """polygons.mat -> one {slot: raw field} per entry (the release's per-video copy of the polygons)."""
    mat = _loadmat(path)
    if "polygons" not in mat:
        raise DataError("has no struct array 'polygons'", path)
    out = []
    for i, p in enumerate(_records(mat["polygons"])):
        missing = [s for s in SLOTS if not hasattr(p, s)]
        if missing:
            raise DataError(f"polygons({i + 1}) lacks field(s) {', '.join(missing)}", path)
        out.append({s: getattr(p, s) for s in SLOTS})
    return out


def _same_polygon(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.size == 0 or b.size == 0:
        return a.size == b.size
    try:
        return a.shape == b.shape and np.allclose(a.astype(np.float64), b.astype(np.float64), rtol=0, atol=1e-9,
                                                  equal_nan=True)
    except (TypeError, ValueError):  # a malformed field: compared by its text
        return repr(a) == repr(b)


def cross_check_polygons(root: Path, videos: list[dict[str, Any]], examples: int = 5) -> dict[str, Any]:
    """Compare every video's polygons.mat with metadata.mat (entry i <-> the i-th labelled frame, which is
    how third-party loaders pair them). Disagreements are findings, never errors: metadata.mat is the truth."""
    found: dict[str, Any] = {"videos_checked": 0, "videos_without_file": [], "unreadable": [],
                             "entry_count_differs": [], "frames_compared": 0, "frames_differing": 0,
                             "slots_differing": 0, "examples": []}
    for v in videos:
        vid = v["video_id"]
        path = root / SAMPLES_DIR / vid / "polygons.mat"
        if not path.is_file():
            found["videos_without_file"].append(vid)
            continue
        try:
            entries = read_polygons(path)
        except DataError as e:
            found["unreadable"].append(f"{vid}: {e.message}")
            continue
        found["videos_checked"] += 1
        if len(entries) != len(v["slots"]):
            found["entry_count_differs"].append(f"{vid}: {len(entries)} entries, {len(v['slots'])} labelled frames")
        for j, (meta, copy) in enumerate(zip(v["slots"], entries)):
            found["frames_compared"] += 1
            differ = [s for s in SLOTS if not _same_polygon(meta[s], copy[s])]
            if differ:
                found["frames_differing"] += 1
                found["slots_differing"] += len(differ)
                if len(found["examples"]) < examples:
                    found["examples"].append(f"{vid} frame_{v['frame_nums'][j]:04d}: polygons({j + 1}) "
                                             f"{', '.join(differ)} differ from metadata.mat")
    found["agrees"] = not (found["unreadable"] or found["entry_count_differs"] or found["frames_differing"])
    return found


def slot_counts(videos: list[dict[str, Any]]) -> dict[str, int]:
    """How many hand slots hold a polygon, are empty, or hold fewer than 3 points (drawn as nothing)."""
    counts = {"polygons": 0, "empty": 0, "under_3_points": 0}
    for v in videos:
        for frame in v["slots"]:
            for value in frame.values():
                arr = np.asarray(value)
                key = "empty" if arr.size == 0 else "under_3_points" if arr.ndim == 2 and arr.shape[0] < 3 else "polygons"
                counts[key] += 1
    return counts


# ---------------------------------------------------------------------------------------------- splits


def official_split(videos: list[dict[str, Any]], meta_path: Path) -> dict[str, str]:
    """video_id -> split by 1-based position in metadata.mat (getMetaBy.m ``MainSplit``); DataError unless
    there are exactly the release's 48 entries, the only list those positions are defined over."""
    spec = manifests.load(OFFICIAL_SPLIT_FILE.name)
    positions = {int(p): split for split in ("train", "val", "test") for p in spec[split]}
    if len(videos) != len(positions):
        raise DataError(f"the official EgoHands split is defined by position over the release's {len(positions)} "
                        f"videos, this file holds {len(videos)}; use --egohands-split partners or --split-file "
                        "for another set of videos", meta_path)
    return {v["video_id"]: positions[i] for i, v in enumerate(videos, 1)}


# ---------------------------------------------------------------------------------------------- source


class EgoHandsSource(Source):
    name = "egohands"
    OPTIONS = (
        Option("egohands_split", click.Choice(SPLIT_RULES), "official",
               help="official: the release's 36/4/8 video split by position in metadata.mat (getMetaBy.m "
                    "MainSplit); partners: a video and its partner video always share a split. --split-file "
                    "overrides both."),
        Option("egohands_raster", click.Choice(RASTER_RULES), "release",
               help="release: every pixel the polygon covers in any part (the release's antialiased "
                    "insertShape fill); centre: pixels whose centre lies inside."),
        SPLIT_FILE,
    )

    def __init__(self, root, options: dict[str, Any] | None = None):
        super().__init__(root, options)
        if not (self.root / "metadata.mat").exists() and (self.root / "egohands_data" / "metadata.mat").exists():
            self.root = self.root / "egohands_data"  # the folder the zip unpacks into, one level up
        self.split_rule = "file" if self.options["split_file"] else self.options["egohands_split"]
        self.split_file = Path(self.options["split_file"]) if self.options["split_file"] else \
            (OFFICIAL_SPLIT_FILE if self.split_rule == "official" else PARTNER_SPLIT_FILE)
        self.raster = self.options["egohands_raster"]
        self._videos: dict[str, dict[str, Any]] | None = None  # video_id -> metadata record, on first use
        self._describe: dict[str, Any] = {}

    def _metadata(self) -> dict[str, dict[str, Any]]:
        if self._videos is None:
            records = read_metadata(self.root / "metadata.mat")
            self._videos = {v["video_id"]: v | {"position": i} for i, v in enumerate(records, 1)}
        return self._videos

    def _split_of(self, records: list[dict[str, Any]]) -> tuple[dict[str, str], list[str]]:
        """video_id -> split, and warnings (video names the release does not have, where they break nothing)."""
        names = [v["video_id"] for v in records]
        unknown = [n for n in names if n not in KNOWN_VIDEOS]
        if self.split_rule == "official":
            split_of = official_split(records, self.root / "metadata.mat")
            return split_of, [f"video(s) not among the release's 48: {', '.join(unknown)} (the official split goes "
                              "by position, so they keep theirs)"] if unknown else []
        split_of = load_split_file(self.split_file)
        missing = [n for n in names if n not in split_of]
        if missing:
            raise DataError(f"video(s) not in the split file: {', '.join(missing)}", self.split_file)
        return split_of, []

    def frames(self) -> list[FrameRef]:
        meta_path = self.root / "metadata.mat"
        samples = self.root / SAMPLES_DIR
        if not meta_path.is_file() or not samples.is_dir():
            raise DataError(f"not an EgoHands root: expected metadata.mat and {SAMPLES_DIR}/ (from "
                            "egohands_data.zip)", self.root)
        videos = self._metadata()
        records = sorted(videos.values(), key=lambda v: v["position"])
        split_of, warnings = self._split_of(records)

        refs: list[FrameRef] = []
        per_split: dict[str, list[str]] = {}
        rank = {"train": 0, "val": 1, "test": 2}
        for v in sorted(records, key=lambda v: (rank.get(split_of[v["video_id"]], 3), split_of[v["video_id"]],
                                                v["video_id"])):
            vid = v["video_id"]
            vdir = samples / vid
            if not vdir.is_dir():
                raise DataError(f"video folder of {vid} (listed in metadata.mat) is missing", vdir)
            file_nums = sorted(int(m.group(1)) for p in vdir.iterdir() if (m := _FRAME_FILE.match(p.name)))
            nums = v["frame_nums"]
            if file_nums != nums:
                extra = sorted(set(file_nums) - set(nums))[:5]
                lacking = sorted(set(nums) - set(file_nums))[:5]
                raise DataError(f"frame files disagree with metadata.mat (files not listed: {extra}, listed "
                                f"frames without a file: {lacking})", vdir)
            per_split.setdefault(split_of[vid], []).append(vid)
            for j, n in enumerate(nums):  # labelled_frames(j + 1) names frame_%04d.jpg by its frame_num
                refs.append(FrameRef(split_of[vid], vid, f"frame_{n:04d}", (f"{SAMPLES_DIR}/{vid}", j, n)))
        split_rule = {"official": "official: getMetaBy.m MainSplit, by 1-based position in metadata.mat",
                      "partners": "partners: a video and its partner video share a split (ours)",
                      "file": "split file given with --split-file"}[self.split_rule]
        copies = {f"{SAMPLES_DIR}/{v['video_id']}/polygons.mat": file_digest(p) for v in records
                  if (p := samples / v["video_id"] / "polygons.mat").is_file()}
        self._describe = {
            "annotation_files": {"metadata.mat": file_digest(meta_path)} | copies,
            "ground_truth": "metadata.mat video(i).labelled_frames(j).{myleft,myright,yourleft,yourright}",
            "raster": {"rule": self.raster, "about": RASTER_ABOUT[self.raster]},
            "videos": len(records),
            "frames": len(refs),
            "frames_per_split": {k: sum(len(videos[x]["frame_nums"]) for x in v) for k, v in per_split.items()},
            "slots": slot_counts(records),
            "split_rule": split_rule,
            "split_file": str(self.split_file),
            "split_file_digest": file_digest(self.split_file),
            "videos_per_split": {k: sorted(v) for k, v in per_split.items()},
            "positions_per_split": {k: sorted(videos[x]["position"] for x in v) for k, v in per_split.items()},
            "polygons_mat": cross_check_polygons(self.root, records),
            "warnings": warnings,
        }
        return refs

    def load(self, ref: FrameRef) -> Sample:
        rel_dir, j, num = ref.info
        img_rel = f"{rel_dir}/frame_{num:04d}.jpg"
        meta_path = self.root / "metadata.mat"
        image, (width, height) = read_image(self.root / img_rel)
        video = self._metadata()[ref.sequence]
        slots = video["slots"][j]
        where = f"video({video['position']}).labelled_frames({j + 1})"
        # one instance per hand slot (ids 1..4 in slot order); where two slots overlap the later one is drawn
        inst = np.zeros((height, width), np.uint8)
        instances = []
        for k, slot in enumerate(SLOTS, 1):
            poly = matlab_polygon(slots[slot], meta_path, f"{where}.{slot}")
            if not paint_polygon(inst, k, poly, self.raster):
                continue
            side, owner = SLOT_INFO[slot]
            instances.append(instance(k, "hand", side, None, slot=slot, owner=owner))
        seg = seg_from_instances(inst, instances)
        return Sample(
            source=self.name, split=ref.split, sequence=ref.sequence, frame=ref.frame,
            image=image, image_ext="jpg", seg=seg, width=width, height=height,
            labels={"hand": True, "object": False, "sides": True}, objects=[],
            inst=inst, instances=instances,
            provenance={"image": img_rel, "metadata": "metadata.mat", "video_position": video["position"],
                        "labelled_frame": j + 1},
        )

    def build_options(self) -> dict[str, Any]:
        digest = file_digest(self.split_file)["sha256"] if self.split_file.is_file() else None
        return {"egohands_split": self.split_rule, "egohands_raster": self.raster,
                "split_file": str(self.split_file), "split_file_sha256": digest}

    def describe(self) -> dict[str, Any]:
        return dict(self._describe)
