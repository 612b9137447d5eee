"""HO3D v2 / v3: hand (MANO right) and object (YCB) masks rendered from the annotated poses.

Layout (DATASETS.md "HO3D"): ``train.txt`` lists ``SEQ/FRAME``; per frame ``train/SEQ/rgb/FRAME.{jpg,png}``,
``train/SEQ/meta/FRAME.pkl`` (pose annotations, a Python-2 pickle) and, from a separate zip,
``train/SEQ/seg/FRAME.{png,jpg}`` (masks rendered by the authors at a quarter of the resolution).

Everything annotated lives in HO3D's OpenGL camera frame (y up, scene at negative z); we flip it with
``diag(1, -1, -1)`` into the OpenCV frame that :func:`hodata.render.render_labels` takes, then let the
z-buffer decide who occludes whom (hand = 1, object = 2).

Evaluation frames (``evaluation.txt``) carry no hand pose: an object-only render would paint object where
the (unknown) hand covers it, so they are skipped and the choice is recorded in :meth:`describe`.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numba import njit

from hodata.errors import BadFrame, DataError
from hodata.label_png import PNGError, decode_label_png
from hodata.manifest import file_digest
from hodata.mano import ManoConvention, axis_angle_to_matrix
from hodata.schema import BACKGROUND, HAND, OBJECT, Sample, instance
from hodata.sources import FrameRef, Source
from hodata.sources.files import decode_array, read_file, read_image
from hodata.sources.options import MANO_DIR, RENDERER, SPLIT_FILE, YCB_DIR, masks, val_fraction
from hodata.sources.rendered import AMODAL, YCB_MESH_NAME, YCBMeshes, amodal_map, label_agreement, load_mano
from hodata.splits import assign_groups, load_split_file
from hodata.upsample import upsample_nearest

# Sequences recorded by several cameras are a base name plus a camera digit (ABF10..ABF14 -> ABF1); the
# cameras of one base show the same scene, so they must land in the same split.
MULTI_CAMERA_BASES = ("ABF1", "BB1", "GPMF1", "GSF1", "MDF1", "SB1", "ShSu1", "SiBF1", "SMu4", "MPM1", "AP1")
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0])
REQUIRED_META = ("handPose", "handBeta", "handTrans", "camMat", "objRot", "objTrans", "objName")
NUMERIC_META = {"handPose": 48, "handBeta": 10, "handTrans": 3, "camMat": 9, "objRot": 3, "objTrans": 3}
DEFAULT_VAL_FRACTION = 0.1
# The toolkit loads MANO_RIGHT with flat_hand_mean=True and overwrites the full 48-D pose (no PCA); its 21
# joints are the skinned ones plus tips 744, 333, 444, 555, 672 (patched lbs.py). Right hands only.
MANO_CONVENTION = ManoConvention(use_pca=False, ncomps=45, flat_hand_mean=True, fix_left=False, joints="skinned",
                                 tips="ho3d", thumb_first=False)


# --------------------------------------------------------------------------------------------- geometry


def sequence_group(seq: str) -> str:
    """The scene a sequence belongs to: its multi-camera base (``ABF12`` -> ``ABF1``), else itself."""
    if len(seq) > 1 and seq[-1].isdigit() and seq[:-1] in MULTI_CAMERA_BASES:
        return seq[:-1]
    return seq


def opengl_to_opencv(points: np.ndarray) -> np.ndarray:
    """HO3D's OpenGL camera frame (y up, looking down -z) -> OpenCV (y down, looking down +z)."""
    return np.asarray(points, dtype=np.float64) @ OPENGL_TO_OPENCV  # diagonal: same as applying it per point


def project(points_gl: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixel coordinates (u, v) of HO3D points, as the toolkit's ``project_3D_points`` computes them."""
    p = opengl_to_opencv(points_gl) @ np.asarray(K, dtype=np.float64).T
    return p[:, :2] / p[:, 2:3]


def axis_angle_matrix(rvec: Any) -> np.ndarray:
    """Rotation matrix of an axis-angle vector stored as (3,) or (3, 1)."""
    return axis_angle_to_matrix(np.asarray(rvec, dtype=np.float64).reshape(1, 3))[0]


def pose_object(verts: np.ndarray, obj_rot: Any, obj_trans: Any) -> np.ndarray:
    """YCB model vertices -> HO3D camera frame: ``R(objRot) @ v + objTrans``."""
    return verts @ axis_angle_matrix(obj_rot).T + np.asarray(obj_trans, dtype=np.float64).reshape(1, 3)


# ---------------------------------------------------------------------------------------- provided masks


def provided_labels(data: bytes, ext: str, size: tuple[int, int], path: Path) -> np.ndarray:
    """Decode a shipped ``seg`` file into a label map of the RGB size (nearest upsampling).

    v3 ``.png``: hand = blue channel 255, object = green channel 255. v2 ``.jpg``: hand red, object blue,
    blurred by JPEG, so a channel counts when it is above half and dominates the other colour.
    """
    bgr = _png_as_bgr(data, path) if ext == "png" else None
    if bgr is None:
        bgr = decode_array(data, path, "provided mask", cv2.IMREAD_COLOR)
    if bgr.ndim != 3:
        raise BadFrame(f"provided mask must be a colour image, got shape {bgr.shape}", path)
    labels = np.empty(bgr.shape[:2], np.uint8)
    _mask_colours(bgr, ext == "png", labels)
    w, h = size
    sh, sw = labels.shape
    if abs(sw * h - sh * w) > max(sw, sh):  # aspect ratio differs: not a downscaled copy of this frame
        raise BadFrame(f"provided mask is {sw}x{sh}, image is {w}x{h}", path)
    return upsample_nearest(labels, size)


def _png_as_bgr(data: bytes, path: Path) -> np.ndarray | None:
    """An 8-bit PNG mask through :func:`decode_label_png` (~0.1 ms at 160x120 against ~0.27 with OpenCV), as
    a BGR view; None for other PNGs (OpenCV reads them)."""
    try:
        values = decode_label_png(data)
    except PNGError as e:
        raise BadFrame(f"provided mask does not decode ({e})", path) from None
    if values is None or values.ndim == 2 or values.shape[2] < 3:  # grey, palette: OpenCV expands the colours
        return None
    return values[..., 2::-1]


@njit(cache=True, nogil=True)
def _mask_colours(bgr, v3_png, out):
    """The label of each pixel of a shipped mask (BGR), by the rules of :func:`provided_labels`; hand wins."""
    for y in range(bgr.shape[0]):
        for x in range(bgr.shape[1]):
            b, g, r = bgr[y, x, 0], bgr[y, x, 1], bgr[y, x, 2]
            if v3_png:
                hand, obj = b > 127, g > 127
            else:
                hand, obj = r > 127 and r >= b, b > 127 and b > r
            out[y, x] = HAND if hand else (OBJECT if obj else BACKGROUND)


# ---------------------------------------------------------------------------------------------- helpers


def read_meta(path: Path | str) -> dict[str, Any]:
    """Load one ``meta/*.pkl`` (Python-2 pickle: latin1) and check the fields a render needs."""
    try:
        # release pickles name numpy.core (numpy 2 keeps a warning alias for it)
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            meta = pickle.loads(f.read(), encoding="latin1")  # one read: faster than unpickling from the file
    except FileNotFoundError:
        raise BadFrame("annotation file missing", path) from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad frame, never the end of a build
        raise BadFrame(f"annotation does not unpickle ({type(e).__name__}: {e})", path) from e
    if not isinstance(meta, dict):
        raise BadFrame(f"annotation is a {type(meta).__name__}, expected a dict", path)
    missing = [k for k in REQUIRED_META if meta.get(k) is None]
    if missing:
        raise BadFrame(f"annotation has no value for {', '.join(missing)}", path)
    arrays = []
    for k, n in NUMERIC_META.items():
        try:
            arr = np.asarray(meta[k], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise BadFrame(f"annotation field {k} is not numeric", path) from e
        if arr.size != n:
            raise BadFrame(f"annotation field {k} has {arr.size} values (expected {n} finite)", path)
        arrays.append(arr.ravel())
    if not np.isfinite(np.concatenate(arrays)).all():  # one test for all fields; the message names the first
        k = next(k for k, a in zip(NUMERIC_META, arrays) if not np.isfinite(a).all())
        raise BadFrame(f"annotation field {k} has {NUMERIC_META[k]} values, not all finite", path)
    return meta


# ------------------------------------------------------------------------------------------------ source


class HO3DSource(Source):
    """HO3D v2/v3 training frames with rendered (default) or provided hand/object masks.

    The hand is MANO's right hand, full 48-D pose without the hand mean; the object is the frame's YCB model.
    Both models are loaded and checked when the source opens, so a bad model stops the build at once.
    """

    name = "ho3d"
    OPTIONS = (MANO_DIR, YCB_DIR, masks("rendered"), RENDERER, val_fraction(DEFAULT_VAL_FRACTION), SPLIT_FILE,
               AMODAL)

    def __init__(self, root, options=None):
        super().__init__(root, options)
        self.masks, self.renderer = self.options["masks"], self.options["renderer"]
        self.val_fraction = self.options["val_fraction"]
        self.amodal = bool(self.options["amodal"])
        self._root_prefix = os.path.join(str(self.root), "")  # the root with a trailing separator
        self.train_list = self.root / "train.txt"
        if not self.train_list.is_file():
            hint = [p.name for p in self.root.glob("HO3D_v*") if (p / "train.txt").is_file()]
            raise DataError("not an HO3D root: train.txt missing"
                            + (f" (try --root {self.root / hint[0]})" if hint else ""), self.train_list)
        self.mano, self.ycb, self.render_note = self._open_models()
        self._entries: list[tuple[str, str]] | None = None
        self._version: dict[str, str] | None = None
        self._split_of: dict[str, str] | None = None

    # ---------------------------------------------------------------------------------- setup
    def _open_models(self):
        """MANO right hand and YCB meshes: required to render; with provided masks, used (when given) only to
        measure how well the provided masks agree with our render."""
        mano_given = self.options["mano_dir"] or os.environ.get("MANO_DIR")
        ycb_given = self.options["ycb_dir"]
        if self.masks == "rendered" and not ycb_given:
            raise DataError("HO3D rendered masks need the YCB object models: pass --ycb-dir DIR holding "
                            f"<objName>/{YCB_MESH_NAME} (the YCB-Video models download)", self.root)
        if self.masks == "provided" and not (mano_given and ycb_given):
            if self.amodal:
                raise DataError("--amodal renders the annotated poses: pass --mano-dir and --ycb-dir", self.root)
            return None, None, "no rendering: pass --mano-dir and --ycb-dir to compare provided masks with renders"
        return load_mano(self.options["mano_dir"], "right", fix_left=MANO_CONVENTION.fix_left), YCBMeshes(ycb_given), ""

    def _read_list(self, path: Path) -> list[tuple[str, str]]:
        entries = []
        try:
            text = path.read_bytes().decode("utf-8")
        except OSError as e:
            raise DataError(f"list file is unreadable ({e.strerror or e})", path) from None
        except UnicodeDecodeError as e:
            raise DataError(f"list file is not text (byte {e.start} is not UTF-8); expected SEQ/FRAME lines", path) from None
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split("/")
            if len(parts) != 2 or not all(parts):
                raise DataError(f"line {n} is {line!r}, expected SEQ/FRAME", path)
            entries.append((parts[0], parts[1]))
        return entries

    def _detect_version(self, entries: list[tuple[str, str]]) -> dict[str, str]:
        """v3 ships rgb .jpg and seg .png; v2 rgb .png and seg .jpg. Decided on the first frames present."""
        rgb_ext = seg_ext = None
        for seq, frame in entries[:200]:
            d = self.root / "train" / seq
            if rgb_ext is None:
                rgb_ext = next((e for e in ("jpg", "png") if (d / "rgb" / f"{frame}.{e}").is_file()), None)
            if seg_ext is None:
                seg_ext = next((e for e in ("png", "jpg") if (d / "seg" / f"{frame}.{e}").is_file()), None)
            if rgb_ext and seg_ext:
                break
        if rgb_ext is None:
            first = self.root / "train" / entries[0][0] / "rgb" / f"{entries[0][1]}.jpg"
            raise DataError("no RGB image found for the first listed frames (is this HO3D_v2/v3?)", first)
        version = "v3" if rgb_ext == "jpg" else "v2"
        return {"version": version, "rgb_ext": rgb_ext,
                "seg_ext": seg_ext or ("png" if version == "v3" else "jpg"), "seg_present": seg_ext is not None}

    def _assign_splits(self, seqs: list[str]) -> dict[str, str]:
        """sequence -> split, by scene (multi-camera base) so that no scene is in two splits."""
        split_file = self.options["split_file"]
        if split_file:
            listed = load_split_file(split_file)
            out, unlisted = {}, []
            for s in seqs:
                split = listed.get(s) or listed.get(sequence_group(s))
                if split is None:
                    unlisted.append(s)
                out[s] = split
            if unlisted:
                raise DataError(f"split file lists neither sequence nor base of {', '.join(sorted(unlisted)[:5])}"
                                + (" ..." if len(unlisted) > 5 else ""), split_file)
            for base in {sequence_group(s) for s in seqs}:
                members = {out[s] for s in seqs if sequence_group(s) == base}
                if len(members) > 1:
                    raise DataError(f"cameras of scene {base} are split over {sorted(members)}", split_file)
            return out
        groups = assign_groups((sequence_group(s) for s in seqs), self.val_fraction, seed="ho3d")
        return {s: groups[sequence_group(s)] for s in seqs}

    def _index(self) -> list[tuple[str, str]]:
        if self._entries is None:
            entries = self._read_list(self.train_list)
            if not entries:
                raise DataError("train.txt lists no frames", self.train_list)
            self._version = self._detect_version(entries)
            self._split_of = self._assign_splits(sorted({s for s, _ in entries}))
            self._entries = entries
        return self._entries

    # ---------------------------------------------------------------------------------- API
    def frames(self) -> list[FrameRef]:
        entries = self._index()
        return [FrameRef(self._split_of[seq], seq, frame) for seq, frame in entries]

    def build_options(self) -> dict[str, Any]:
        return super().build_options() | {"evaluation": "skipped"}

    def describe(self) -> dict[str, Any]:
        entries = self._index()
        per_seq: dict[str, int] = {}
        for seq, _ in entries:
            per_seq[seq] = per_seq.get(seq, 0) + 1
        eval_list = self.root / "evaluation.txt"
        lists = {"train.txt": file_digest(self.train_list) | {"lines": len(entries)}}
        eval_note = "evaluation.txt not found"
        if eval_list.is_file():
            n_eval = len(self._read_list(eval_list))
            lists["evaluation.txt"] = file_digest(eval_list) | {"lines": n_eval}
            eval_note = (f"skipped {n_eval} evaluation frames: they carry no hand pose, and an object-only "
                         "render would label as object the pixels where the unknown hand covers it")
        out = {
            **(self._version or {}),
            "list_files": lists,
            "masks": self.masks,
            "renderer": self.renderer if self.mano else None,
            "render_note": self.render_note or None,
            "mano": self.mano.describe() if self.mano else None,
            "mano_convention": MANO_CONVENTION.describe(),
            "amodal": self.amodal,
            "mano_file": self.mano.path if self.mano else None,
            "mano_sha256": file_digest(Path(self.mano.path))["sha256"] if self.mano else None,
            "ycb_dir": str(self.ycb.dir) if self.ycb else None,
            "evaluation": eval_note,
            "split_by": "scene: multi-camera sequences grouped by base name (" + " ".join(MULTI_CAMERA_BASES) + ")",
            "val_fraction": None if self.options["split_file"] else self.val_fraction,
            "sequences": {s: {"frames": n, "scene": sequence_group(s), "split": self._split_of[s]}
                          for s, n in sorted(per_seq.items())},
            "split_assignment": {g: sp for g, sp in sorted({(sequence_group(s), self._split_of[s])
                                                            for s in per_seq})},
        }
        return out

    def load(self, ref: FrameRef) -> Sample:
        self._index()
        v = self._version
        # paths relative to the root, as provenance records them (the files are read without a stat first)
        seq = f"train/{ref.sequence}"
        rel_rgb, rel_meta = f"{seq}/rgb/{ref.frame}.{v['rgb_ext']}", f"{seq}/meta/{ref.frame}.pkl"
        rel_seg = f"{seq}/seg/{ref.frame}.{v['seg_ext']}"
        root = self._root_prefix  # paths joined as strings: a Path join parses its parts again every frame
        seg_path = root + rel_seg

        meta = read_meta(root + rel_meta)
        try:
            image, (width, height) = read_image(root + rel_rgb)
        except BadFrame:
            other = f"{rel_rgb[:-3]}{'png' if v['rgb_ext'] == 'jpg' else 'jpg'}"  # the toolkit tries both
            if os.path.exists(root + rel_rgb) or not os.path.exists(root + other):
                raise
            rel_rgb = other
            image, (width, height) = read_image(root + rel_rgb)
        K = np.asarray(meta["camMat"], dtype=np.float64).reshape(3, 3)

        extra: dict[str, Any] = {"mask_source": self.masks, "version": v["version"]}
        rendered = amodal = None
        if self.mano is not None:
            try:
                meshes = self.meshes(meta)
                rendered = self.render(meta, (width, height), meshes)
                if self.amodal:
                    amodal = self.render_amodal(meta, (width, height), meshes)
            except BadFrame as e:
                if self.masks == "rendered" or self.amodal:
                    raise
                extra["render_error"] = str(e)  # provided masks do not need the render: only the agreement is lost
        provided = None
        try:  # rendered masks do without the download: a missing file only means no agreement figure
            data = read_file(seg_path, "provided mask", missing_ok=self.masks != "provided")
            if data is not None:
                provided = provided_labels(data, v["seg_ext"], (width, height), seg_path)
        except BadFrame as e:
            if self.masks == "provided":
                raise
            extra["provided_mask_error"] = str(e)  # rendered masks do not need it: only the agreement is lost
        seg = rendered if self.masks == "rendered" else provided

        if rendered is not None and provided is not None:
            extra["mask_agreement"] = label_agreement(provided, rendered, {"hand_iou": HAND, "object_iou": OBJECT})
        provenance = {"rgb": rel_rgb, "meta": rel_meta}
        if provided is not None:
            provenance["seg"] = rel_seg
        return Sample(
            source=self.name, split=ref.split, sequence=ref.sequence, frame=ref.frame,
            image=image, image_ext=rel_rgb.rsplit(".", 1)[1].lower(), seg=seg, width=width, height=height,
            labels={"hand": True, "object": True, "sides": True},
            objects=[{"name": str(meta["objName"]), "ycb_label": _plain(meta.get("objLabel"))}],
            # hand and object are drawn with labels 1 and 2, which are also their instance ids
            inst=seg,
            instances=[instance(HAND, "hand", "right", "right hand"),
                       instance(OBJECT, "object", None, str(meta["objName"]), ycb_label=_plain(meta.get("objLabel")))],
            camera={"K": K.tolist()},
            provenance=provenance,
            extra=extra,
            amodal=amodal,
        )

    # ---------------------------------------------------------------------------------- rendering
    def hand_vertices(self, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """MANO right hand in HO3D's OpenGL frame: full 48-D pose, no hand mean, handTrans after skinning."""
        verts, _ = MANO_CONVENTION.forward(self.mano, np.asarray(meta["handPose"], np.float64).reshape(48),
                                           np.asarray(meta["handBeta"], np.float64).reshape(10),
                                           np.asarray(meta["handTrans"], np.float64).reshape(3))
        return verts, np.asarray(self.mano.faces, dtype=np.int64)

    def object_vertices(self, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """The frame's YCB model posed in HO3D's OpenGL frame."""
        verts, faces = self.ycb.get(str(meta["objName"]))
        return pose_object(verts, meta["objRot"], meta["objTrans"]), faces

    def meshes(self, meta: dict[str, Any]) -> list[tuple[np.ndarray, np.ndarray, int]]:
        """Hand (label 1) and object (label 2) in the OpenCV camera frame the renderer takes."""
        hv, hf = self.hand_vertices(meta)
        ov, of = self.object_vertices(meta)
        return [(opengl_to_opencv(hv), hf, HAND), (opengl_to_opencv(ov), of, OBJECT)]

    def render(self, meta: dict[str, Any], size: tuple[int, int], meshes=None) -> np.ndarray:
        """The label map (z-buffer: the nearer of hand and object owns each pixel)."""
        from hodata.render import render_labels

        K = np.asarray(meta["camMat"], dtype=np.float64).reshape(3, 3)
        return render_labels(K, size, meshes or self.meshes(meta), backend=self.renderer)

    def render_amodal(self, meta: dict[str, Any], size: tuple[int, int], meshes=None) -> np.ndarray:
        """``amodal.png``: bit 0 the hand's full silhouette, bit 1 the object's, each drawn alone."""
        from hodata.render import render_silhouettes

        K = np.asarray(meta["camMat"], dtype=np.float64).reshape(3, 3)
        hand, obj = render_silhouettes(K, size, meshes or self.meshes(meta))
        return amodal_map((size[1], size[0]), hand, obj)


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a small pickled value (numpy scalar / array / bytes)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("latin1")
    arr = np.asarray(value)
    return arr.item() if arr.ndim == 0 else arr.tolist()
