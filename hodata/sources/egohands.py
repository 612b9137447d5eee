"""EgoHands (Bambach et al., ICCV 2015): hand polygons in egocentric card/board-game videos, read as released.

Layout (DATASETS.md)::

    ROOT/                               # ROOT may also be the folder holding egohands_data/
      metadata.mat                      # struct array `video` (1 x 48): video_id, ..., labelled_frames (1 x 100)
      _LABELLED_SAMPLES/<VIDEO_ID>/frame_%04d.jpg
      _LABELLED_SAMPLES/<VIDEO_ID>/polygons.mat   # struct array `polygons` (1 x 100): myleft ... yourright

Labels: each of the four hand slots (the wearer's left / right, the partner's left / right) is a polygon of
(x, y) points in MATLAB's 1-based pixel coordinates; we subtract 1 (pixel centres at integers from 0) and a
pixel is hand (1) when its centre lies inside the polygon (even-odd rule; a centre exactly on a left or
top-facing edge counts as inside, one on a right or bottom-facing edge as outside). Slots are united.
Empty slots and polygons of fewer than 3 points draw nothing. Objects are not annotated: labels.object false.

Frames: ``polygons.mat`` entry i belongs to the i-th frame file in sorted order; ``metadata.mat`` gives the
frame numbers explicitly and is cross-checked against the files. Splits are by video (never by frame), from
``hodata/manifests/egohands_split.json`` or the ``split_file`` option.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from hodata.errors import BadFrame, DataError
from hodata.manifest import file_digest
from hodata.schema import Sample, instance, seg_from_instances
from hodata import manifests
from hodata.sources import FrameRef, Source
from hodata.sources.files import read_image
from hodata.sources.options import SPLIT_FILE
from hodata.splits import load_split_file

SLOTS = ("myleft", "myright", "yourleft", "yourright")
SLOT_INFO = {"myleft": ("left", "wearer"), "myright": ("right", "wearer"),
             "yourleft": ("left", "partner"), "yourright": ("right", "partner")}
VIDEO_FIELDS = ("video_id", "partner_video_id", "ego_viewer_id", "partner_id", "location_id", "activity_id",
                "labelled_frames")
DEFAULT_SPLIT_FILE = manifests.path("egohands_split.json")
SAMPLES_DIR = "_LABELLED_SAMPLES"
_FRAME_FILE = re.compile(r"^frame_(\d+)\.jpg$")


# ------------------------------------------------------------------------------------------ rasterizing


def rasterize_polygon(poly: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixels whose centre (x = column, y = row, 0-based) lies inside ``poly`` ((N, 2) float x, y).

    Scanline form of the even-odd rule: for each pixel row, the polygon's edges that cross the row's centre
    line (half-open in y, so a vertex is counted once) give sorted x crossings; columns c with
    x[2k] <= c < x[2k+1] are inside. Polygons with fewer than 3 points give an empty mask.
    """
    mask = np.zeros((height, width), bool)
    if poly.shape[0] < 3:
        return mask
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    r_lo, r_hi = max(0, int(np.ceil(y0.min()))), min(height - 1, int(np.floor(y0.max())))
    if r_lo > r_hi:
        return mask
    rows = np.arange(r_lo, r_hi + 1, dtype=np.float64)[:, None]
    crosses = (y0[None, :] <= rows) != (y1[None, :] <= rows)  # (R, N)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (rows - y0[None, :]) / (y1 - y0)[None, :]
    xs = np.where(crosses, x0[None, :] + t * (x1 - x0)[None, :], np.inf)
    xs.sort(axis=1)
    n_cross = crosses.sum(axis=1)  # always even for a closed polygon
    # +1 at each entering column, -1 at each leaving column; a running sum > 0 marks inside
    edges = np.zeros((rows.shape[0], width + 1), np.int32)
    for k in range(0, int(n_cross.max(initial=0)), 2):
        has = n_cross > k
        r = np.nonzero(has)[0]
        start = np.clip(np.ceil(xs[has, k]), 0, width).astype(np.int64)
        stop = np.clip(np.ceil(xs[has, k + 1]), 0, width).astype(np.int64)
        np.add.at(edges, (r, start), 1)
        np.add.at(edges, (r, stop), -1)
    mask[r_lo:r_hi + 1] = np.cumsum(edges, axis=1)[:, :width] > 0
    return mask


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


def read_metadata(path: Path) -> dict[str, dict[str, Any]]:
    """metadata.mat -> {video_id: {fields..., "frame_nums": [ascending frame numbers]}}; DataError if malformed."""
    mat = _loadmat(path)
    if "video" not in mat:
        raise DataError("has no struct array 'video'", path)
    videos: dict[str, dict[str, Any]] = {}
    for i, v in enumerate(_records(mat["video"])):
        missing = [f for f in VIDEO_FIELDS if not hasattr(v, f)]
        if missing:
            raise DataError(f"video({i + 1}) lacks field(s) {', '.join(missing)}", path)
        vid = _text(v.video_id)
        if not vid:
            raise DataError(f"video({i + 1}) has an empty video_id", path)
        try:
            nums = [_integer(lf.frame_num) for lf in _records(v.labelled_frames)]
        except (AttributeError, ValueError) as e:
            raise DataError(f"video {vid}: labelled_frames.frame_num is malformed ({e})", path) from e
        if nums != sorted(set(nums)):
            raise DataError(f"video {vid}: labelled_frames.frame_num is not strictly ascending", path)
        videos[vid] = {"partner_video_id": _text(v.partner_video_id), "ego_viewer_id": _text(v.ego_viewer_id),
                       "partner_id": _text(v.partner_id), "location_id": _text(v.location_id),
                       "activity_id": _text(v.activity_id), "frame_nums": nums}
    if not videos:
        raise DataError("struct array 'video' is empty", path)
    return videos


def read_polygons(path: Path) -> list[dict[str, Any]]:
    """polygons.mat -> one {slot: raw field} per labelled frame (per-frame checks happen in ``load``)."""
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


# ---------------------------------------------------------------------------------------------- source


class EgoHandsSource(Source):
    name = "egohands"
    OPTIONS = (SPLIT_FILE,)

    def __init__(self, root, options: dict[str, Any] | None = None):
        super().__init__(root, options)
        if not (self.root / "metadata.mat").exists() and (self.root / "egohands_data" / "metadata.mat").exists():
            self.root = self.root / "egohands_data"  # the folder the zip unpacks into, one level up
        self.split_file = Path(self.options["split_file"] or DEFAULT_SPLIT_FILE)
        self._polygon_cache: tuple[str, list] | None = None  # (video, polygons) of the last video loaded
        self._describe: dict[str, Any] = {}

    def frames(self) -> list[FrameRef]:
        meta_path = self.root / "metadata.mat"
        samples = self.root / SAMPLES_DIR
        if not meta_path.is_file() or not samples.is_dir():
            raise DataError(f"not an EgoHands root: expected metadata.mat and {SAMPLES_DIR}/ (from "
                            "egohands_data.zip)", self.root)
        videos = read_metadata(meta_path)
        split_of = load_split_file(self.split_file)
        unknown = sorted(set(videos) - set(split_of))
        if unknown:
            raise DataError(f"video(s) not in the split file: {', '.join(unknown)}", self.split_file)

        refs: list[FrameRef] = []
        per_split: dict[str, list[str]] = {}
        rank = {"train": 0, "val": 1, "test": 2}
        for vid in sorted(videos, key=lambda v: (rank.get(split_of[v], 3), split_of[v], v)):
            vdir = samples / vid
            if not vdir.is_dir():
                raise DataError(f"video folder of {vid} (listed in metadata.mat) is missing", vdir)
            files = sorted(p.name for p in vdir.iterdir() if _FRAME_FILE.match(p.name))
            file_nums = [int(_FRAME_FILE.match(n).group(1)) for n in files]
            nums = videos[vid]["frame_nums"]
            if sorted(file_nums) != nums:
                extra = sorted(set(file_nums) - set(nums))[:5]
                lacking = sorted(set(nums) - set(file_nums))[:5]
                raise DataError(f"frame files disagree with metadata.mat (files not listed: {extra}, listed "
                                f"frames without a file: {lacking})", vdir)
            per_split.setdefault(split_of[vid], []).append(vid)
            for i, n in enumerate(nums):  # polygons.mat entry i <-> i-th sorted file <-> i-th frame_num
                refs.append(FrameRef(split_of[vid], vid, f"frame_{n:04d}", (f"{SAMPLES_DIR}/{vid}", i, n)))
        self._describe = {
            "annotation_files": {"metadata.mat": file_digest(meta_path)},
            "videos": len(videos),
            "frames": len(refs),
            "split_file": str(self.split_file),
            "split_file_digest": file_digest(self.split_file),
            "videos_per_split": {k: sorted(v) for k, v in per_split.items()},
        }
        return refs

    def _polygons(self, rel_dir: str) -> list[dict[str, Any]]:
        if self._polygon_cache is None or self._polygon_cache[0] != rel_dir:
            self._polygon_cache = (rel_dir, read_polygons(self.root / rel_dir / "polygons.mat"))
        return self._polygon_cache[1]

    def load(self, ref: FrameRef) -> Sample:
        rel_dir, index, num = ref.info
        img_rel = f"{rel_dir}/frame_{num:04d}.jpg"
        img_path = self.root / img_rel
        poly_path = self.root / rel_dir / "polygons.mat"
        image, (width, height) = read_image(img_path)
        try:
            entries = self._polygons(rel_dir)
        except DataError as e:  # a broken polygons.mat loses this video's frames, not the whole build
            raise BadFrame(str(e).split(": ", 1)[-1], poly_path) from e
        if index >= len(entries):
            raise BadFrame(f"has {len(entries)} entries, frame {num} is labelled frame {index + 1}", poly_path)
        # one instance per hand slot (ids 1..4 in slot order); where two slots overlap the later one is drawn
        inst = np.zeros((height, width), np.uint8)
        instances = []
        for k, slot in enumerate(SLOTS, 1):
            poly = matlab_polygon(entries[index][slot], poly_path, f"polygons({index + 1}).{slot}")
            if poly.shape[0] < 3:
                continue
            inst[rasterize_polygon(poly, height, width)] = k
            side, owner = SLOT_INFO[slot]
            instances.append(instance(k, "hand", side, None, slot=slot, owner=owner))
        seg = seg_from_instances(inst, instances)
        return Sample(
            source=self.name, split=ref.split, sequence=ref.sequence, frame=ref.frame,
            image=image, image_ext="jpg", seg=seg, width=width, height=height,
            labels={"hand": True, "object": False, "sides": True}, objects=[],
            inst=inst, instances=instances,
            provenance={"image": img_rel, "polygons": f"{rel_dir}/polygons.mat", "polygons_index": index,
                        "metadata": "metadata.mat"},
        )

    def build_options(self) -> dict[str, Any]:
        digest = file_digest(self.split_file)["sha256"] if self.split_file.is_file() else None
        return {"split_file": str(self.split_file), "split_file_sha256": digest}

    def describe(self) -> dict[str, Any]:
        return dict(self._describe)
