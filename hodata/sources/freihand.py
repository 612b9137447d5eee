"""FreiHAND v2: hand masks (provided JPEG masks, or MANO vertices rendered) for all four image versions.

Layout (DATASETS.md "FreiHAND"): ``training/rgb/%08d.jpg`` holds 4 x N images, N = ``len(training_K.json)``;
image ``i`` is version ``i // N`` (gs, hom, sample, auto) of annotation ``i % N``, whose mask is
``training/mask/%08d.jpg`` and whose K / vertices are entry ``i % N`` of ``training_K.json`` /
``training_verts.json`` (metres, OpenCV camera frame: project with K, no axis flip).

Keys are ``freihand/<split>/<version>/<image id>``: the "sequence" is the image version, because FreiHAND
has no video sequences. Held-out validation goes by annotation index, so the four versions of one
annotation always share a split. Objects are not annotated (``labels.object`` false).

Masks ship as JPEG: we threshold the luminance once at its midpoint (> 127). JPEG keeps luminance at full
resolution (chroma is subsampled), and a blurred 0/255 step crosses 127 where the original edge was; a
high threshold such as 240 (HandMesh) shrinks every mask by about a pixel.

The evaluation split is built as "test" when its ground truth is present (``evaluation/segmap`` masks or
``evaluation_verts.json``, from FreiHAND_pub_v2_eval.zip), else skipped and noted in :meth:`describe`.

Pixel convention: FreiHAND's K has cx = cy = 112.0 on 224 px images, the centre under a pixel-*corner*
convention (ours puts pixel centres at integers, where the centre is 111.5). When the provided masks and the
vertices are both there, the source renders the first 64 training annotations both ways (K as given, and K
with cx, cy - 0.5), keeps the convention whose renders agree better with the provided masks, records both
figures in :meth:`describe` and uses it for every render; samples then carry K in hodata's pixel-centre
convention. Keypoints: FreiHAND's toolkit regresses its joints from the posed mesh
(:func:`hodata.mano.regressed_joints`, :data:`MANO_CONVENTION`).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hodata.errors import BadFrame, DataError
from hodata.manifest import file_digest
from hodata.schema import BACKGROUND, HAND, Sample, instance
from hodata.sources import FrameRef, Source
from hodata.sources.files import decode_array, read_file, read_image, relative
from hodata.sources.options import MANO_DIR, RENDERER, SPLIT_FILE, masks, val_fraction
from hodata.mano import ManoConvention
from hodata.sources.rendered import AMODAL, amodal_map, load_mano, mask_agreement, mask_iou
from hodata.splits import assign_groups, load_split_file

VERSIONS = ("gs", "hom", "sample", "auto")  # toolkit sample_version order: image i is VERSIONS[i // N]
MASK_THRESHOLD = 127
DEFAULT_VAL_FRACTION = 0.1
TEST_SEQUENCE = "evaluation"
# The toolkit: MANO_RIGHT, use_pca=False, flat_hand_mean=False; joints = J_regressor on the posed mesh + tips.
MANO_CONVENTION = ManoConvention(use_pca=False, ncomps=45, flat_hand_mean=False, fix_left=False, joints="regressed",
                                 tips="freihand", thumb_first=True)
CONVENTION_FRAMES = 64  # training annotations the pixel convention is measured on
PIXEL_CONVENTIONS = {"centres": 0.0, "corners": -0.5}  # shift of cx, cy into hodata's pixel-centre convention


def image_index(i: int, n: int) -> tuple[int, str]:
    """Training image id -> (annotation index, version name)."""
    if not 0 <= i < len(VERSIONS) * n:
        raise ValueError(f"image id {i} outside 0..{len(VERSIONS) * n - 1}")
    return i % n, VERSIONS[i // n]


def threshold_mask(data: bytes, path: Path) -> np.ndarray:
    """A shipped JPEG mask -> boolean hand mask (luminance > 127)."""
    return decode_array(data, path, "mask", cv2.IMREAD_GRAYSCALE) > MASK_THRESHOLD


def _load_json(path: Path) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read annotation file ({e})", path) from e


def load_vertices(path: Path, n: int) -> np.ndarray:
    """``*_verts.json`` (a list of N 778x3 lists) -> (N, 778, 3) float32.

    A real training_verts.json is ~700 MB of text. json.load would build ~56M Python floats (several GB,
    ~50 s); dropping the brackets and parsing the numbers with NumPy takes about 2x the file size in memory
    and under half the time. The value count must then be exactly N x 778 x 3.
    """
    try:
        text = path.read_bytes().translate(None, b"[]").decode("ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read vertices ({e})", path) from e
    try:
        with warnings.catch_warnings():  # older NumPy warns and stops early on bad data: caught by the count
            warnings.simplefilter("ignore", DeprecationWarning)
            flat = np.fromstring(text, dtype=np.float64, sep=",")
    except ValueError as e:  # NumPy >= 2.3 raises on unparsable text
        raise DataError(f"vertices are not a nested list of numbers: parsed nothing usable ({e})", path) from e
    if flat.size != n * 778 * 3:
        raise DataError(f"expected {n} x 778 x 3 numbers, parsed {flat.size}", path)
    return flat.reshape(n, 778, 3).astype(np.float32)


class FreiHANDSource(Source):
    """FreiHAND_pub_v2 training images (4 versions) and, when its ground truth is there, the evaluation set.

    Rendering needs MANO_RIGHT.pkl only for its faces (the dataset ships posed vertices); the model is loaded
    and checked when the source opens.
    """

    name = "freihand"
    OPTIONS = (MANO_DIR, masks("provided"), RENDERER, val_fraction(DEFAULT_VAL_FRACTION), SPLIT_FILE, AMODAL)

    def __init__(self, root, options=None):
        super().__init__(root, options)
        self.masks, self.renderer = self.options["masks"], self.options["renderer"]
        self.val_fraction = self.options["val_fraction"]
        k_file = self.root / "training_K.json"
        if not k_file.is_file():
            hint = [p.name for p in self.root.glob("FreiHAND*") if (p / "training_K.json").is_file()]
            raise DataError("not a FreiHAND root: training_K.json missing"
                            + (f" (try --root {self.root / hint[0]})" if hint else ""), k_file)
        mano_given = self.options["mano_dir"] or os.environ.get("MANO_DIR")
        self.amodal = bool(self.options["amodal"])
        if self.amodal and not (mano_given and (self.root / "training_verts.json").is_file()):
            raise DataError("--amodal renders the hand: pass --mano-dir and keep training_verts.json", self.root)
        self.mano = load_mano(self.options["mano_dir"], "right", fix_left=MANO_CONVENTION.fix_left) \
            if (mano_given or self.masks == "rendered") else None
        self._convention: dict[str, Any] | None = None
        self._K: dict[str, np.ndarray] = {}
        self._verts: dict[str, np.ndarray | None] = {}  # per process, on first use
        self._split_of: dict[int, str] | None = None
        self._has_eval: bool | None = None

    # ---------------------------------------------------------------------------------- index
    def _camera(self, subset: str) -> np.ndarray:
        if subset not in self._K:
            path = self.root / f"{subset}_K.json"
            try:
                K = np.asarray(_load_json(path), dtype=np.float64)
            except (TypeError, ValueError) as e:  # ragged rows, strings, nulls
                raise DataError(f"expected a list of 3x3 number matrices ({str(e).splitlines()[0][:120]})", path) from None
            if K.ndim != 3 or K.shape[1:] != (3, 3):
                raise DataError(f"expected a list of 3x3 matrices, got shape {K.shape}", path)
            self._K[subset] = K
        return self._K[subset]

    def _assign_splits(self, n: int) -> dict[int, str]:
        split_file = self.options["split_file"]
        if split_file:
            listed = load_split_file(split_file)
            missing = [i for i in range(n) if str(i) not in listed]
            if missing:
                raise DataError(f"split file does not list annotation index {missing[0]} "
                                f"({len(missing)} of {n} unlisted)", split_file)
            return {i: listed[str(i)] for i in range(n)}
        groups = assign_groups((str(i) for i in range(n)), self.val_fraction, seed="freihand")
        return {i: groups[str(i)] for i in range(n)}

    def _eval_ground_truth(self) -> bool:
        if self._has_eval is None:
            rgb = self.root / "evaluation" / "rgb"
            gt = (self.root / "evaluation" / "segmap").is_dir() or (self.root / "evaluation_verts.json").is_file()
            self._has_eval = rgb.is_dir() and (self.root / "evaluation_K.json").is_file() and gt
        return self._has_eval

    def frames(self) -> list[FrameRef]:
        n = len(self._camera("training"))
        if n == 0:
            raise DataError("training_K.json holds no annotations", self.root / "training_K.json")
        if self._split_of is None:
            self._split_of = self._assign_splits(n)
        refs = []
        for i in range(len(VERSIONS) * n):
            idx, version = image_index(i, n)
            refs.append(FrameRef(self._split_of[idx], version, f"{i:08d}", ("training", i)))
        if self._eval_ground_truth():
            for i in range(len(self._camera("evaluation"))):
                refs.append(FrameRef("test", TEST_SEQUENCE, f"{i:08d}", ("evaluation", i)))
        # Parse the (large) vertex files here, in the builder's main process, before worker processes are
        # forked: the workers then share one copy instead of each parsing ~700 MB of JSON on its first frame.
        for subset in {ref.info[0] for ref in refs}:
            if self._can_render(subset):
                self.vertices(subset)
        self.pixel_convention()
        return refs

    def build_options(self) -> dict[str, Any]:
        return super().build_options() | {"mask_threshold": MASK_THRESHOLD}

    def describe(self) -> dict[str, Any]:
        n = len(self._camera("training"))
        rgb_dir = self.root / "training" / "rgb"
        found = sum(1 for e in os.scandir(rgb_dir) if e.name.endswith(".jpg")) if rgb_dir.is_dir() else 0
        annotations = {p.name: file_digest(p) for p in sorted(self.root.glob("*.json")) if p.is_file()}
        if self._eval_ground_truth():
            evaluation = f"built as split 'test' ({len(self._camera('evaluation'))} frames)"
        elif (self.root / "evaluation" / "rgb").is_dir():
            evaluation = ("skipped: no ground truth (evaluation/segmap or evaluation_verts.json, from "
                          "FreiHAND_pub_v2_eval.zip)")
        else:
            evaluation = "skipped: evaluation/rgb not present"
        split = self._split_of or self._assign_splits(n)
        val = sorted(i for i, s in split.items() if s != "train")
        return {
            "annotations": n,
            "versions": list(VERSIONS),
            "training_images_expected": len(VERSIONS) * n,
            "training_images_found": found,
            "annotation_files": annotations,
            "masks": self.masks,
            "mask_rule": f"luminance > {MASK_THRESHOLD} of training/mask/%08d.jpg (index % N)",
            "renderer": self.renderer if self.mano else None,
            "mano": self.mano.describe() if self.mano else None,
            "mano_convention": MANO_CONVENTION.describe(),
            "pixel_convention": self.pixel_convention(),
            "amodal": self.amodal,
            "mano_file": self.mano.path if self.mano else None,
            "render_note": None if self.mano else "no --mano-dir: provided masks not compared with renders",
            "evaluation": evaluation,
            "sequence": "image version (gs, hom, sample, auto); 'evaluation' for the test split",
            "split_by": "annotation index: the 4 versions of one annotation share a split",
            "val_fraction": None if self.options["split_file"] else self.val_fraction,
            "split_counts": {s: sum(1 for v in split.values() if v == s) for s in sorted(set(split.values()))},
            "held_out_indices": val if len(val) <= 5000 else f"{len(val)} indices (seed 'freihand', assign_groups)",
        }

    # ---------------------------------------------------------------------------------- frames
    def load(self, ref: FrameRef) -> Sample:
        subset, i = ref.info
        K_all = self._camera(subset)
        n = len(K_all)
        idx = i % n
        rgb_path = self.root / subset / "rgb" / f"{i:08d}.jpg"
        image, (width, height) = read_image(rgb_path)
        K = self._shifted(K_all[idx])

        provided, mask_path = self._provided(subset, idx, (width, height))
        rendered = self._render(subset, idx, K, (width, height)) if self._can_render(subset) else None
        use_provided = provided is not None and (self.masks == "provided" or rendered is None)
        if subset == "training" and self.masks == "provided" and provided is None:
            raise BadFrame("mask missing", mask_path)
        if rendered is None and not use_provided:
            raise BadFrame(f"no {subset}_verts.json (and --mano-dir) to render", self.root / f"{subset}_verts.json")
        # evaluation frames fall back to whichever ground truth exists (segmap or vertices)
        hand = provided if use_provided else rendered
        seg = np.where(hand, HAND, BACKGROUND).astype(np.uint8)

        extra: dict[str, Any] = {"mask_source": "provided" if use_provided else "rendered", "annotation_index": idx}
        if subset == "training":
            extra["version"] = VERSIONS[i // n]
        if provided is not None and rendered is not None:
            extra["mask_agreement"] = mask_agreement({"hand_iou": (provided, rendered)})
        amodal = None
        if self.amodal:
            if rendered is None:
                extra["amodal"] = f"not available: no {subset}_verts.json to render"
            else:  # one mesh: its silhouette is the rendered mask
                amodal = amodal_map((height, width), rendered, None)
        provenance = {"rgb": self._rel(rgb_path), "K": f"{subset}_K.json[{idx}]"}
        if provided is not None:
            provenance["mask"] = self._rel(mask_path)
        if rendered is not None:
            provenance["verts"] = f"{subset}_verts.json[{idx}]"
        return Sample(
            source=self.name, split=ref.split, sequence=ref.sequence, frame=ref.frame,
            image=image, image_ext="jpg", seg=seg, width=width, height=height,
            labels={"hand": True, "object": False, "sides": True}, objects=[],
            inst=seg, instances=[instance(1, "hand", "right")],
            camera={"K": K.tolist()}, provenance=provenance, extra=extra, amodal=amodal,
        )

    def _provided(self, subset: str, idx: int, size: tuple[int, int]) -> tuple[np.ndarray | None, Path]:
        if subset == "training":
            path = self.root / "training" / "mask" / f"{idx:08d}.jpg"
            if not path.is_file():
                return None, path
            mask = threshold_mask(read_file(path, "mask"), path)
        else:  # evaluation ground truth: segmap, hand where > 0
            path = self.root / "evaluation" / "segmap" / f"{idx:08d}.png"
            if not path.is_file():
                return None, path
            raw = decode_array(read_file(path, "segmap"), path, "segmap")
            mask = (raw > 0) if raw.ndim == 2 else (raw > 0).any(axis=2)
        if mask.shape != (size[1], size[0]):
            raise BadFrame(f"mask is {mask.shape[1]}x{mask.shape[0]}, image is {size[0]}x{size[1]}", path)
        return mask, path

    # ---------------------------------------------------------------------------------- rendering
    def _can_render(self, subset: str) -> bool:
        return self.mano is not None and (self.root / f"{subset}_verts.json").is_file()

    def vertices(self, subset: str) -> np.ndarray:
        """All (N, 778, 3) vertices of a subset (float32), loaded once per process."""
        if self._verts.get(subset) is None:
            self._verts[subset] = load_vertices(self.root / f"{subset}_verts.json", len(self._camera(subset)))
        return self._verts[subset]

    def _render(self, subset: str, idx: int, K: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        from hodata.render import render_labels

        verts = self.vertices(subset)[idx].astype(np.float64)
        faces = np.asarray(self.mano.faces, dtype=np.int64)
        return render_labels(K, size, [(verts, faces, HAND)], backend=self.renderer) == HAND

    def pixel_convention(self) -> dict[str, Any]:
        """Which principal-point convention the provided masks were made with, measured once (see the module
        docstring): ``{"chosen", "cx_cy_shift", "measured", "hand_iou": {convention: mean}, "frames"}``."""
        if self._convention is None:
            self._convention = {"chosen": "centres", "cx_cy_shift": 0.0, "measured": False}
            if not self._can_render("training"):
                self._convention["note"] = "not measured: rendering needs --mano-dir and training_verts.json"
                return self._convention
            K_all = self._camera("training")
            ious: dict[str, list[float]] = {name: [] for name in PIXEL_CONVENTIONS}
            for idx in range(min(CONVENTION_FRAMES, len(K_all))):
                path = self.root / "training" / "mask" / f"{idx:08d}.jpg"
                try:
                    mask = threshold_mask(read_file(path, "mask"), path)
                except BadFrame:
                    continue
                for name, shift in PIXEL_CONVENTIONS.items():
                    K = K_all[idx].copy()
                    K[:2, 2] += shift
                    iou = mask_iou(mask, self._render("training", idx, K, (mask.shape[1], mask.shape[0])))
                    if iou is not None:
                        ious[name].append(iou)
            if not ious["centres"]:
                self._convention["note"] = "not measured: no training masks among the first annotations"
                return self._convention
            means = {name: round(float(np.mean(v)), 4) for name, v in ious.items()}
            chosen = max(means, key=lambda name: (means[name], name == "centres"))  # a tie keeps K as given
            self._convention = {"chosen": chosen, "cx_cy_shift": PIXEL_CONVENTIONS[chosen], "measured": True,
                                "hand_iou": means, "frames": len(ious["centres"]),
                                "rule": "mean hand IoU of provided masks vs renders with K as given ('centres') "
                                        "and with cx, cy - 0.5 ('corners'); samples carry the chosen K"}
        return self._convention

    def _shifted(self, K: np.ndarray) -> np.ndarray:
        """K in hodata's pixel-centre convention (the measured shift applied to cx, cy)."""
        shift = self.pixel_convention()["cx_cy_shift"]
        if not shift:
            return K
        K = K.copy()
        K[:2, 2] += shift
        return K

    def _rel(self, path: Path) -> str:
        return relative(self.root, path)
