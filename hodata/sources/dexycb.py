"""DexYCB: left and right MANO hands and YCB objects, rendered from the annotated poses or read from ``seg``.

Layout (DATASETS.md "DexYCB"): ``<subject>/<sequence>/meta.yml`` lists the camera serials, the frame count, the
sequence's YCB objects (``ycb_ids``), which one is grasped (``ycb_grasp_ind``), the hand's side and its shape
calibration; each ``<serial>/labels_%06d.npz`` holds ``seg`` (0 background, YCB class ids, 255 hand),
``pose_y`` (one ``[R | t]`` per object, all zero when not posed), ``pose_m`` (3 root + 45 PCA + 3 translation,
all zero without a hand) and ``joint_3d``. Everything is in the OpenCV camera frame of that serial, metres.

The hand is posed as the toolkit's manopth layer does (PCA 45, hand mean added, side from ``mano_sides``,
betas from ``calibration/mano_<calib>/mano.yml``, translation after skinning) with the *unfixed* MANO_LEFT:
DexYCB was annotated with it. The grasped object is "object"; the other objects of the sequence are ignored
(255), background or objects by ``--dexycb-other-objects``. Instance ids: 1 the hand, 2 the grasped object,
3.. the other objects in ``ycb_ids`` order (when they are labelled as objects).

Splits are the toolkit's setups s0-s3, by position (subject in the fixed subject list, serial in the fixed
serial list, sequence in its subject's folder sorted by name); the tables are in
``hodata/manifests/dexycb.json``. Frames are listed subject, sequence, serial, frame.

Calibration files and every model (MANO of each side in use, YCB meshes of every object in use) are read
when the source opens: a bad or missing one stops the build in one line before any frame. A frame's own
files go through :mod:`hodata.sources.files` (a broken frame is skipped and recorded).
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from hodata import manifests
from hodata.errors import BadFrame, DataError
from hodata.manifest import file_digest
from hodata.mano import ManoConvention
from hodata.schema import IGNORE, Sample, apply_lut, instance, label_histogram, seg_from_instances
from hodata.sources import FrameRef, Option, Source
from hodata.sources.files import read_file, read_image, relative
from hodata.sources.options import MANO_DIR, RENDERER, masks
from hodata.sources.rendered import AMODAL, YCBMeshes, amodal_map, load_mano, mask_agreement

FACTS = manifests.load("dexycb.json")
SUBJECTS: tuple[str, ...] = tuple(FACTS["subjects"])
SERIALS: tuple[str, ...] = tuple(FACTS["serials"])
YCB_CLASSES: dict[int, str] = {int(k): v for k, v in FACTS["ycb_classes"].items()}
SETUPS = ("s0", "s1", "s2", "s3")
OTHER_OBJECTS = ("ignore", "background", "object")
IMAGE_SIZE = tuple(FACTS["layout"]["image_size"])  # the intrinsics files are for 640x480
SEG_HAND = 255  # the hand's value in labels_*.npz seg
HAND_ID, GRASPED_ID, FIRST_OTHER_ID = 1, 2, 3
UNKNOWN = 255
# manopth as the toolkit calls it: ManoLayer(flat_hand_mean=False, ncomps=45, use_pca=True); no left-hand fix.
MANO_CONVENTION = ManoConvention(use_pca=True, ncomps=45, flat_hand_mean=False, fix_left=False, joints="skinned",
                                 tips="manopth", thumb_first=True)
JOINT_TOLERANCE_M = 1e-4  # our joints vs the file's joint_3d: float32 storage is ~1e-7 m
SUBJECT_DIR = re.compile(r"^\d{8}-subject-\d{2}$")
OPTIONS_HELP = {
    "split": "The toolkit's setup: s0 seen subjects/views/grasps, s1 unseen subjects, s2 unseen views, "
             "s3 unseen grasped objects.",
    "other": "The sequence's objects other than the grasped one: ignore (255), background, or object.",
}


def split_of(setup: str, subject: int, serial: int | None, sequence: int) -> str:
    """The toolkit's split of one (subject index, serial index, sequence index) under setup s0-s3."""
    if setup == "s0":
        if sequence % 5 != 4:
            return "train"
        return "val" if subject in (0, 1) else "test"
    if setup == "s1":
        return "val" if subject == 6 else "test" if subject in (7, 8) else "train"
    if setup == "s2":
        return "val" if serial == 6 else "test" if serial == 7 else "train"
    if setup == "s3":
        group = sequence // 5
        return "val" if group in (3, 19) else "test" if group in (7, 11, 15) else "train"
    raise ValueError(f"unknown setup {setup!r}; known: {', '.join(SETUPS)}")


# ------------------------------------------------------------------------------------------------ files


def _yaml_loader():
    import yaml

    return yaml, getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path, what: str) -> Any:
    """A calibration / meta YAML file; DataError naming it when missing, unreadable or not YAML."""
    yaml, loader = _yaml_loader()
    try:
        text = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{what} is missing", path) from None
    except OSError as e:
        raise DataError(f"{what} is unreadable ({e.strerror or e})", path) from None
    try:
        return yaml.load(text, Loader=loader)
    except yaml.YAMLError as e:
        raise DataError(f"{what} is not valid YAML ({' '.join(str(e).split())[:160]})", path) from None


def _numbers(value: Any, n: int | None, what: str, path: Path) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise DataError(f"{what} is not a list of numbers", path) from None
    if (n is not None and arr.size != n) or not np.isfinite(arr).all():
        raise DataError(f"{what} must be {n} finite numbers, got {arr.size}", path)
    return arr


def read_intrinsics(path: Path) -> np.ndarray:
    """``calibration/intrinsics/<serial>_640x480.yml`` -> K (3, 3) from its ``color`` fx, fy, ppx, ppy."""
    raw = read_yaml(path, "intrinsics")
    color = raw.get("color") if isinstance(raw, dict) else None
    if not isinstance(color, dict) or any(k not in color for k in ("fx", "fy", "ppx", "ppy")):
        raise DataError("intrinsics lack color: fx, fy, ppx, ppy", path)
    fx, fy, cx, cy = _numbers([color[k] for k in ("fx", "fy", "ppx", "ppy")], 4, "color intrinsics", path)
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def read_betas(path: Path) -> np.ndarray:
    """``calibration/mano_<calib>/mano.yml`` -> the subject's 10 MANO betas."""
    raw = read_yaml(path, "MANO calibration")
    if not isinstance(raw, dict) or "betas" not in raw:
        raise DataError("MANO calibration has no betas", path)
    return _numbers(raw["betas"], 10, "betas", path)


@dataclass(frozen=True)
class SequenceInfo:
    """What one sequence's meta.yml says, checked (cheap and picklable: every frame of it refers to this)."""

    rel: str  # "<subject>/<sequence>", relative to the root
    subject: int  # index in SUBJECTS
    index: int  # position in its subject's folder, sorted by name
    serials: tuple[str, ...]
    num_frames: int
    ycb_ids: tuple[int, ...]
    grasp_ind: int
    side: str
    calib: str

    @property
    def grasped_id(self) -> int:
        return self.ycb_ids[self.grasp_ind]

    def instance_of(self, k: int) -> int:
        """Instance id of the k-th object of ``ycb_ids``: 2 the grasped one, 3.. the others in order."""
        if k == self.grasp_ind:
            return GRASPED_ID
        return FIRST_OTHER_ID + k - (k > self.grasp_ind)


def read_meta(path: Path, rel: str, subject: int, index: int) -> SequenceInfo:
    raw = read_yaml(path, "sequence meta")
    if not isinstance(raw, dict):
        raise DataError("sequence meta is not a mapping", path)
    missing = [k for k in ("serials", "num_frames", "ycb_ids", "ycb_grasp_ind", "mano_sides", "mano_calib")
               if k not in raw]
    if missing:
        raise DataError(f"sequence meta lacks {', '.join(missing)}", path)
    serials, ycb, sides, calib = raw["serials"], raw["ycb_ids"], raw["mano_sides"], raw["mano_calib"]
    if not isinstance(serials, list) or not serials:
        raise DataError("serials must be a non-empty list", path)
    if not isinstance(raw["num_frames"], int) or raw["num_frames"] < 1:
        raise DataError(f"num_frames must be a positive integer, got {raw['num_frames']!r}", path)
    if not isinstance(ycb, list) or not ycb or any(not isinstance(i, int) or i not in YCB_CLASSES for i in ycb):
        raise DataError(f"ycb_ids must list YCB class ids 1..{max(YCB_CLASSES)}, got {ycb!r}", path)
    grasp = raw["ycb_grasp_ind"]
    if not isinstance(grasp, int) or not 0 <= grasp < len(ycb):
        raise DataError(f"ycb_grasp_ind {grasp!r} is not an index into ycb_ids ({len(ycb)} objects)", path)
    if not isinstance(sides, list) or len(sides) != 1 or sides[0] not in ("right", "left"):
        raise DataError(f"mano_sides must be ['right'] or ['left'] (one hand per sequence), got {sides!r}", path)
    if not isinstance(calib, list) or len(calib) != 1 or not isinstance(calib[0], str):
        raise DataError(f"mano_calib must be a list of one calibration name, got {calib!r}", path)
    return SequenceInfo(rel, subject, index, tuple(str(s) for s in serials), raw["num_frames"], tuple(ycb), grasp,
                        sides[0], calib[0])


def read_labels(path: Path, n_objects: int) -> dict[str, np.ndarray]:
    """One ``labels_%06d.npz``: seg, pose_y, pose_m (and joint_3d when present), shapes checked; BadFrame otherwise."""
    data = read_file(path, "labels")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            missing = [k for k in ("seg", "pose_y", "pose_m") if k not in z.files]
            if missing:
                raise BadFrame(f"labels lack {', '.join(missing)}", path)
            out = {k: z[k] for k in ("seg", "pose_y", "pose_m", "joint_3d") if k in z.files}
    except BadFrame:
        raise
    except Exception as e:  # noqa: BLE001 - a truncated or foreign zip raises several types
        raise BadFrame(f"labels do not load ({type(e).__name__}: {' '.join(str(e).split())[:120]})", path) from None
    seg, pose_y, pose_m = out["seg"], out["pose_y"], out["pose_m"]
    if seg.ndim != 2 or seg.dtype != np.uint8:
        raise BadFrame(f"seg must be a 2-D uint8 map, got {seg.dtype} {seg.shape}", path)
    if pose_y.shape != (n_objects, 3, 4) or not np.isfinite(pose_y).all():
        raise BadFrame(f"pose_y must be ({n_objects}, 3, 4) finite (one per ycb_ids entry), got {pose_y.shape}", path)
    if pose_m.shape != (1, 51) or not np.isfinite(pose_m).all():
        raise BadFrame(f"pose_m must be (1, 51) finite, got {pose_m.shape}", path)
    if "joint_3d" in out and out["joint_3d"].shape != (1, 21, 3):
        raise BadFrame(f"joint_3d must be (1, 21, 3), got {out['joint_3d'].shape}", path)
    return out


# ------------------------------------------------------------------------------------------------ source


class DexYCBSource(Source):
    """DexYCB frames (every sequence x serial x frame) with rendered (default) or provided masks."""

    name = "dexycb"
    LICENCE = FACTS["licence"]
    OPTIONS = (
        MANO_DIR, masks("rendered"), RENDERER,
        Option("dexycb_split", click.Choice(SETUPS), "s0", OPTIONS_HELP["split"]),
        Option("dexycb_other_objects", click.Choice(OTHER_OBJECTS), "ignore", OPTIONS_HELP["other"]),
        AMODAL,
    )

    def __init__(self, root, options=None):
        super().__init__(root, options)
        self.masks, self.renderer = self.options["masks"], self.options["renderer"]
        self.setup, self.others = self.options["dexycb_split"], self.options["dexycb_other_objects"]
        self.amodal = bool(self.options["amodal"])
        self.sequences, self.ignored_dirs, self.per_subject = self._index()
        self.K = {s: read_intrinsics(self._intrinsics_path(s)) for s in self._serials_used()}
        self.betas = {c: read_betas(self._calib_path(c)) for c in sorted({q.calib for q in self.sequences})}
        self.mano, self.ycb, self.render_note = self._open_models()
        self._joint_check: dict | None = None

    # ---------------------------------------------------------------------------------- setup
    def _index(self) -> tuple[list[SequenceInfo], list[str], dict[str, int]]:
        present = [s for s in SUBJECTS if (self.root / s).is_dir()]
        if not present:
            raise DataError(f"not a DexYCB root: none of the subject folders ({SUBJECTS[0]} ... {SUBJECTS[-1]}) "
                            "is here", self.root)
        ignored = sorted(p.name for p in self.root.iterdir()
                         if p.is_dir() and SUBJECT_DIR.match(p.name) and p.name not in SUBJECTS)
        sequences, per_subject = [], {}
        for subject in present:
            names = sorted(p.name for p in (self.root / subject).iterdir() if p.is_dir())
            per_subject[subject] = len(names)
            for index, name in enumerate(names):
                rel = f"{subject}/{name}"
                info = read_meta(self.root / rel / "meta.yml", rel, SUBJECTS.index(subject), index)
                if self.setup == "s2":
                    unknown = [s for s in info.serials if s not in SERIALS]
                    if unknown:
                        raise DataError(f"serial {unknown[0]} is not one of DexYCB's 8 cameras, so setup s2 (views "
                                        "held out by position) cannot place it", self.root / rel / "meta.yml")
                sequences.append(info)
        return sequences, ignored, per_subject

    def _serials_used(self) -> list[str]:
        return sorted({s for q in self.sequences for s in q.serials})

    def _intrinsics_path(self, serial: str) -> Path:
        w, h = IMAGE_SIZE
        return self.root / "calibration" / "intrinsics" / f"{serial}_{w}x{h}.yml"

    def _calib_path(self, calib: str) -> Path:
        return self.root / "calibration" / f"mano_{calib}" / "mano.yml"

    def _open_models(self):
        """MANO of each side in use and the YCB meshes of every object in use, loaded and checked now. They are
        needed to render; with provided masks they are used when given, to measure the agreement."""
        mano_given = self.options["mano_dir"] or os.environ.get("MANO_DIR")
        models_dir = self.root / "models"
        if self.masks == "provided" and not (mano_given and models_dir.is_dir()):
            if self.amodal:
                raise DataError("--amodal renders the annotated poses: pass --mano-dir DIR holding MANO_RIGHT.pkl "
                                "and MANO_LEFT.pkl (and keep the release's models/ folder)", self.root)
            return None, None, "no rendering: pass --mano-dir to compare the provided masks with renders"
        if not models_dir.is_dir():
            raise DataError("the release's YCB models folder is missing (models/<name>/textured_simple.obj)",
                            models_dir)
        sides = sorted({q.side for q in self.sequences})
        mano = {side: load_mano(self.options["mano_dir"], side, fix_left=MANO_CONVENTION.fix_left) for side in sides}
        ycb = YCBMeshes(models_dir)
        for ycb_id in sorted({i for q in self.sequences for i in q.ycb_ids}):
            try:
                ycb.get(YCB_CLASSES[ycb_id])
            except BadFrame as e:  # at open a broken model is the build's problem, not one frame's
                raise DataError(e.message, e.path) from None
        return mano, ycb, ""

    # ---------------------------------------------------------------------------------- API
    def frames(self) -> list[FrameRef]:
        refs = []
        for q in self.sequences:
            for serial in q.serials:
                cam = SERIALS.index(serial) if serial in SERIALS else None
                split = split_of(self.setup, q.subject, cam, q.index)
                refs.extend(FrameRef(split, f"{q.rel}/{serial}", f"{f:06d}", (q.rel, serial, f))
                            for f in range(q.num_frames))
        return refs

    def build_options(self) -> dict[str, Any]:
        return super().build_options() | {"mano_convention": MANO_CONVENTION.describe()}

    def describe(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for q in self.sequences:
            for serial in q.serials:
                split = split_of(self.setup, q.subject, SERIALS.index(serial) if serial in SERIALS else None, q.index)
                counts[split] = counts.get(split, 0) + q.num_frames
        ycb_used = sorted({i for q in self.sequences for i in q.ycb_ids})
        models = {}
        if self.ycb is not None:
            models = {YCB_CLASSES[i]: file_digest(self.ycb.path(YCB_CLASSES[i]))["sha256"] for i in ycb_used}
        return {
            "setup": self.setup,
            "split_rule": FACTS["splits"][self.setup],
            "split_by": FACTS["splits"]["by"],
            "split_frames": dict(sorted(counts.items())),
            "subjects": {s: {"index": SUBJECTS.index(s), "sequences": n} for s, n in self.per_subject.items()},
            "subjects_not_in_the_release_list": self.ignored_dirs,
            "sequences_per_subject_note": None if all(n == 100 for n in self.per_subject.values()) else
            "a subject without its 100 sequences shifts the positions that s0 and s3 split by",
            "sequences": len(self.sequences),
            "serials": self._serials_used(),
            "sides": {side: sum(1 for q in self.sequences if q.side == side) for side in ("right", "left")},
            "masks": self.masks,
            "other_objects": self.others,
            "amodal": self.amodal,
            "renderer": self.renderer if self.mano else None,
            "render_note": self.render_note or None,
            "mano": {side: m.describe() for side, m in self.mano.items()} if self.mano else None,
            "mano_convention": MANO_CONVENTION.describe(),
            "joint_check": self.joint_check(),
            "ycb_objects": {str(i): YCB_CLASSES[i] for i in ycb_used},
            "ycb_models_sha256": models,
            "intrinsics": {s: relative(self.root, self._intrinsics_path(s)) for s in self._serials_used()},
            "instance_ids": {"hand": HAND_ID, "grasped_object": GRASPED_ID,
                             "other_objects": f"{FIRST_OTHER_ID}.. in ycb_ids order (when labelled as objects)"},
        }

    def load(self, ref: FrameRef) -> Sample:
        rel, serial, f = ref.info
        q = self._sequence(rel)
        d = self.root / rel / serial
        color_path, label_path = d / f"color_{f:06d}.jpg", d / f"labels_{f:06d}.npz"
        image, (width, height) = read_image(color_path)
        if (width, height) != IMAGE_SIZE:
            raise BadFrame(f"image is {width}x{height}; the intrinsics are for {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}",
                           color_path)
        labels = read_labels(label_path, len(q.ycb_ids))
        if labels["seg"].shape != (height, width):
            raise BadFrame(f"seg is {labels['seg'].shape[1]}x{labels['seg'].shape[0]}, image is {width}x{height}",
                           label_path)
        K = self.K[serial]
        pose_m = labels["pose_m"][0].astype(np.float64)
        hand_posed = bool(np.any(pose_m != 0))
        posed = [bool(np.any(labels["pose_y"][k] != 0)) for k in range(len(q.ycb_ids))]

        extra: dict[str, Any] = {"mask_source": self.masks, "dexycb_setup": self.setup,
                                 "other_objects": self.others, "hand_posed": hand_posed}
        rendered = amodal = None
        if self.mano is not None:
            meshes, hand_mesh, grasped_mesh, keypoints = self._scene(q, labels, pose_m, hand_posed, posed)
            from hodata.render import render_labels, render_silhouettes

            rendered = render_labels(K, (width, height), meshes, backend=self.renderer)
            if self.amodal:
                alone = [m for m in (hand_mesh, grasped_mesh) if m is not None]
                sil = iter(render_silhouettes(K, (width, height), alone))
                amodal = amodal_map((height, width), next(sil) if hand_mesh else None,
                                    next(sil) if grasped_mesh else None)
            if keypoints is not None and "joint_3d" in labels and np.all(labels["joint_3d"] != -1):
                extra["joint_3d_max_error_m"] = float(np.abs(keypoints - labels["joint_3d"][0]).max())
        provided, unknown = self._provided(q, labels["seg"])
        if unknown:
            extra["unknown_seg_values"] = unknown
        codes = rendered if self.masks == "rendered" else provided
        if rendered is not None:
            extra["mask_agreement"] = mask_agreement({
                "hand_iou": (provided == HAND_ID, rendered == HAND_ID),
                "object_iou": (provided == GRASPED_ID, rendered == GRASPED_ID),
                "other_objects_iou": ((provided >= FIRST_OTHER_ID) & (provided != UNKNOWN),
                                      rendered >= FIRST_OTHER_ID)})

        inst = self._apply_option(codes)
        present = set(np.flatnonzero(label_histogram(inst)).tolist())
        instances, objects = [], []
        if hand_posed or HAND_ID in present:
            instances.append(instance(HAND_ID, "hand", q.side, f"{q.side} hand"))
        for k, ycb_id in enumerate(q.ycb_ids):
            iid = q.instance_of(k)
            labelled = iid == GRASPED_ID or self.others == "object"
            if labelled and (posed[k] or iid in present):
                instances.append(instance(iid, "object", None, YCB_CLASSES[ycb_id], ycb_id=ycb_id,
                                          grasped=iid == GRASPED_ID))
            objects.append({"name": YCB_CLASSES[ycb_id], "ycb_id": ycb_id, "grasped": k == q.grasp_ind,
                            "posed": posed[k], "instance": iid if labelled else None})
        seg = seg_from_instances(inst, instances)
        provenance = {"color": relative(self.root, color_path), "labels": relative(self.root, label_path),
                      "meta": f"{rel}/meta.yml", "intrinsics": relative(self.root, self._intrinsics_path(serial)),
                      "mano_calib": relative(self.root, self._calib_path(q.calib))}
        return Sample(
            source=self.name, split=ref.split, sequence=ref.sequence, frame=ref.frame,
            image=image, image_ext="jpg", seg=seg, width=width, height=height,
            labels={"hand": True, "object": True, "sides": True}, objects=objects,
            camera={"K": K.tolist(), "serial": serial}, provenance=provenance, extra=extra,
            inst=inst, instances=instances, amodal=amodal,
        )

    # ---------------------------------------------------------------------------------- labels
    def _sequence(self, rel: str) -> SequenceInfo:
        if not hasattr(self, "_by_rel"):
            self._by_rel = {q.rel: q for q in self.sequences}
        return self._by_rel[rel]

    def hand(self, q: SequenceInfo, pose_m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vertices (778, 3) metres, faces, the 21 keypoints in DexYCB's joint_3d convention) of a posed hand."""
        model = self.mano[q.side]
        verts, joints = MANO_CONVENTION.forward(model, pose_m[:48], self.betas[q.calib], pose_m[48:51])
        return verts, np.asarray(model.faces, np.int64), MANO_CONVENTION.keypoints(model, verts, joints)

    def _scene(self, q: SequenceInfo, labels, pose_m, hand_posed: bool, posed: list[bool]):
        """Meshes to render, labelled with instance ids (objects keep their model vertices; ``pose_y`` goes to
        the renderer as each one's pose); also the hand's and the grasped object's meshes and the keypoints."""
        meshes, hand_mesh, grasped_mesh, keypoints = [], None, None, None
        if hand_posed:
            verts, faces, keypoints = self.hand(q, pose_m)
            hand_mesh = (verts, faces, HAND_ID)
            meshes.append(hand_mesh)
        for k, ycb_id in enumerate(q.ycb_ids):
            if not posed[k]:
                continue
            v, f = self.ycb.get(YCB_CLASSES[ycb_id])
            mesh = (v, f, q.instance_of(k), labels["pose_y"][k].astype(np.float64))
            meshes.append(mesh)
            if k == q.grasp_ind:
                grasped_mesh = mesh
        return meshes, hand_mesh, grasped_mesh, keypoints

    def _provided(self, q: SequenceInfo, seg: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """The shipped seg as instance codes (255 hand -> 1, grasped id -> 2, other ids -> 3..); values that are
        neither 0, 255 nor one of the sequence's ids -> 255, and listed."""
        lut = np.full(256, UNKNOWN, np.uint8)
        lut[0], lut[SEG_HAND] = 0, HAND_ID
        for k, ycb_id in enumerate(q.ycb_ids):
            lut[ycb_id] = q.instance_of(k)
        present = np.flatnonzero(label_histogram(seg))
        unknown = [int(v) for v in present if lut[v] == UNKNOWN]
        return apply_lut(seg, lut), unknown

    def _apply_option(self, codes: np.ndarray) -> np.ndarray:
        """Instance map: hand and grasped object as they are, the other objects per --dexycb-other-objects."""
        if self.others == "object":
            return codes
        lut = np.arange(256, dtype=np.uint8)
        lut[FIRST_OTHER_ID:UNKNOWN] = 0 if self.others == "background" else IGNORE
        return apply_lut(codes, lut)

    # ---------------------------------------------------------------------------------- checks
    def joint_check(self) -> dict | None:
        """Our keypoints from ``pose_m`` against the file's ``joint_3d`` on one frame per side (the middle of the
        side's first sequence, first serial, or the nearest frame with a hand): proves PCA, hand mean, side,
        shapedirs and units on the real data. Every built frame also records its own error in
        ``extra.joint_3d_max_error_m``."""
        if self.mano is None:
            return None
        if self._joint_check is None:
            out = {}
            for side in sorted({q.side for q in self.sequences}):
                q = next(s for s in self.sequences if s.side == side)
                mid = q.num_frames // 2
                for f in sorted(range(q.num_frames), key=lambda i: abs(i - mid))[:64]:
                    path = self.root / q.rel / q.serials[0] / f"labels_{f:06d}.npz"
                    try:
                        labels = read_labels(path, len(q.ycb_ids))
                    except BadFrame:
                        continue
                    pose_m = labels["pose_m"][0].astype(np.float64)
                    if not np.any(pose_m != 0) or "joint_3d" not in labels or np.any(labels["joint_3d"] == -1):
                        continue
                    err = float(np.abs(self.hand(q, pose_m)[2] - labels["joint_3d"][0]).max())
                    out[side] = {"labels": relative(self.root, path), "max_error_m": err,
                                 "agrees": err <= JOINT_TOLERANCE_M, "tolerance_m": JOINT_TOLERANCE_M}
                    break
                else:
                    out[side] = {"labels": None, "note": "no frame with a hand and joint_3d near the middle"}
            self._joint_check = out
        return self._joint_check
