"""A synthetic dataset in HO3D v3's release layout (see DATASETS.md "HO3D"), for demos and tests.

```
OUT/HO3D_v3/train.txt  evaluation.txt               # "SEQ/FRAME" lines
OUT/HO3D_v3/train/<SEQ>/rgb/<FRAME>.jpg             # painted so the masks match what is visible
OUT/HO3D_v3/train/<SEQ>/meta/<FRAME>.pkl            # handPose/handBeta/handTrans, objRot (3, 1), camMat, ...
OUT/HO3D_v3/train/<SEQ>/seg/<FRAME>.png             # quarter resolution, hand = blue 255, object = green 255
OUT/HO3D_v3/evaluation/<SEQ>/{rgb,meta}/            # evaluation-style meta: no hand pose
OUT/models/<objName>/textured_simple.obj            # YCB-like box / cylinder, metres
OUT/mano/MANO_RIGHT.pkl, MANO_LEFT.pkl              # a synthetic MANO-format model
```
Poses live in HO3D's OpenGL camera frame (scene at negative z). Sequences ABF10 and ABF11 imitate two
cameras of one multi-camera scene (base ABF1), MC1 a single-camera one; each train folder also holds one
frame that train.txt does not list, with every meta field None, as real folders do.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np

from hodata.demo.blobs import add_noise, paint_background, saturated_colour, skin_colour
from hodata.schema import HAND, OBJECT

TRAIN_SEQUENCES = (("ABF10", "003_cracker_box"), ("ABF11", "003_cracker_box"), ("MC1", "005_tomato_soup_can"))
EVAL_SEQUENCE = ("SM1", "005_tomato_soup_can")
YCB_LABELS = {"003_cracker_box": 2, "005_tomato_soup_can": 4}  # YCB-Video class ids
HO3D_TIPS = (744, 333, 444, 555, 672)  # HO3D's fingertip vertices (thumb, index, middle, ring, little)
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0])
SEG_SCALE = 4  # the released segmentations are a quarter of the RGB resolution


# ------------------------------------------------------------------------------------------------ models


def object_mesh(name: str):
    """A YCB-sized stand-in: cracker box 16 x 21 x 6 cm, soup can 6.8 cm wide, 10 cm tall (metres)."""
    import trimesh

    if name == "003_cracker_box":
        return trimesh.creation.box(extents=(0.16, 0.21, 0.06))
    return trimesh.creation.cylinder(radius=0.034, height=0.10, sections=24)


def write_models(models_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``<models_dir>/<objName>/textured_simple.obj`` for each demo object; returns their (verts, faces)."""
    out = {}
    for name in sorted(YCB_LABELS):
        mesh = object_mesh(name)
        d = models_dir / name
        d.mkdir(parents=True, exist_ok=True)
        mesh.export(d / "textured_simple.obj")
        out[name] = (np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64))
    return out


# ------------------------------------------------------------------------------------------------- poses


def camera_matrix(size: tuple[int, int]) -> np.ndarray:
    w, h = size
    f = 0.95 * w
    return np.array([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]])


def rotation(rvec) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(rvec, np.float64).reshape(3))[0]


def random_frame(rng: np.random.Generator, mano, obj_name: str, obj_verts: np.ndarray,
                 hand_in_front: bool) -> dict:
    """Hand and object poses (OpenGL frame) near the image centre, overlapping in about half the frames."""
    from hodata.sources.rendered import mano_vertices

    pose = np.zeros(48)
    pose[:3] = rng.normal(0, 0.35, 3)
    pose[3:] = rng.normal(0, 0.18, 45)
    beta = rng.normal(0, 0.5, 10)
    rest = mano_vertices(mano, pose, beta, np.zeros(3), flat_hand_mean=True)
    z_obj = -rng.uniform(0.55, 0.65)
    z_hand = z_obj + (0.12 if hand_in_front else -0.12)  # nearer to the camera = less negative
    spread = rng.uniform(0.0, 0.2)
    ang = rng.uniform(0, 2 * np.pi)
    hand_centre = np.array([np.cos(ang) * spread, np.sin(ang) * spread, z_hand])
    obj_centre = np.array([-np.cos(ang) * spread * 0.5, -np.sin(ang) * spread * 0.5, z_obj])
    trans = hand_centre - rest.mean(axis=0)
    obj_rot = rng.normal(0, 0.6, 3)
    obj_trans = obj_centre - obj_verts.mean(axis=0) @ rotation(obj_rot).T
    return {"pose": pose, "beta": beta, "trans": trans, "obj_rot": obj_rot, "obj_trans": obj_trans}


def posed_meshes(mano, p: dict, obj_verts: np.ndarray, obj_faces: np.ndarray):
    """(hand verts, object verts) in the OpenGL frame, and the render list in the OpenCV frame."""
    from hodata.sources.rendered import mano_vertices

    hv = mano_vertices(mano, p["pose"], p["beta"], p["trans"], flat_hand_mean=True)
    ov = obj_verts @ rotation(p["obj_rot"]).T + p["obj_trans"]
    meshes = [(hv @ OPENGL_TO_OPENCV, np.asarray(mano.faces, np.int64), HAND), (ov @ OPENGL_TO_OPENCV, obj_faces, OBJECT)]
    return hv, ov, meshes


def quarter_camera(K: np.ndarray) -> np.ndarray:
    """K for an image a quarter the size (pixel centres at integers: x' = (x + 0.5) / 4 - 0.5)."""
    Kq = K.copy()
    Kq[:2, :2] /= SEG_SCALE
    Kq[:2, 2] = (K[:2, 2] + 0.5) / SEG_SCALE - 0.5
    return Kq


# ---------------------------------------------------------------------------------------------- painting


def paint(rng: np.random.Generator, labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB image whose visible hand is skin-toned and visible object a saturated colour, on clutter."""
    img = paint_background(rng, size)
    h, w = labels.shape
    shade = cv2.resize(rng.normal(1.0, 0.08, (max(2, h // 10), max(2, w // 10))).astype(np.float32), (w, h))
    for label, colour in ((HAND, skin_colour(rng)), (OBJECT, saturated_colour(rng, (108, 120, 60)))):
        m = labels == label
        fill = np.clip(np.array(colour, np.float32)[None, None] * shade[..., None], 0, 255).astype(np.uint8)
        img[m] = fill[m]
    return add_noise(rng, img, 4.0)


def seg_image(labels_q: np.ndarray) -> np.ndarray:
    """BGR image of a quarter-size label map in the v3 colours: hand blue 255, object green 255."""
    bgr = np.zeros(labels_q.shape + (3,), np.uint8)
    bgr[labels_q == HAND, 0] = 255
    bgr[labels_q == OBJECT, 1] = 255
    return bgr


# ------------------------------------------------------------------------------------------------- write


def _contact(hand_verts: np.ndarray, obj_mesh_verts: np.ndarray):
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(obj_mesh_verts).query(hand_verts)
    return dist, obj_mesh_verts[idx]


def train_meta(mano, p: dict, hv: np.ndarray, ov: np.ndarray, obj_name: str, obj_rest: np.ndarray, K) -> dict:
    """A v3 training meta dict (float32 arrays, objRot (3, 1)), as the release pickles hold."""
    _, joints = mano.forward(p["pose"], p["beta"], p["trans"], flat_hand_mean=True)
    joints = np.asarray(joints, np.float64).reshape(-1, 3)[:16]
    joints21 = np.concatenate([joints, hv[list(HO3D_TIPS)]])
    corners_rest = _box_corners(obj_rest)
    corners = corners_rest @ rotation(p["obj_rot"]).T + p["obj_trans"]
    dist, proj = _contact(hv, ov)
    f32 = np.float32
    return {
        "handPose": p["pose"].astype(f32), "handBeta": p["beta"].astype(f32), "handTrans": p["trans"].astype(f32),
        "handJoints3D": joints21.astype(f32), "camMat": K.astype(f32),
        "objRot": p["obj_rot"].reshape(3, 1).astype(f32), "objTrans": p["obj_trans"].astype(f32),
        "objName": obj_name, "objLabel": YCB_LABELS[obj_name],
        "objCorners3D": corners.astype(f32), "objCorners3DRest": corners_rest.astype(f32),
        "handVertContact": dist < 0.004, "handVertDist": dist.astype(f32),
        "handVertIntersec": np.zeros(len(hv), bool), "handVertObjSurfProj": proj.astype(f32),
    }


def eval_meta(p: dict, hv: np.ndarray, obj_name: str, obj_rest: np.ndarray, K, size) -> dict:
    """Evaluation-style meta: object pose, root joint and hand box only (no hand pose)."""
    corners_rest = _box_corners(obj_rest)
    uv = (hv @ OPENGL_TO_OPENCV) @ K.T
    uv = uv[:, :2] / uv[:, 2:]
    w, h = size
    box = [max(0.0, uv[:, 0].min()), max(0.0, uv[:, 1].min()), min(w - 1.0, uv[:, 0].max()), min(h - 1.0, uv[:, 1].max())]
    f32 = np.float32
    return {
        "camMat": K.astype(f32), "objRot": p["obj_rot"].reshape(3, 1).astype(f32),
        "objTrans": p["obj_trans"].astype(f32), "objName": obj_name, "objLabel": YCB_LABELS[obj_name],
        "objCorners3D": (corners_rest @ rotation(p["obj_rot"]).T + p["obj_trans"]).astype(f32),
        "objCorners3DRest": corners_rest.astype(f32), "handJoints3D": hv.mean(axis=0).astype(f32),
        "handBoundingBox": np.array(box, f32),
    }


def _box_corners(v: np.ndarray) -> np.ndarray:
    lo, hi = v.min(axis=0), v.max(axis=0)
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _write_jpg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])


def write(out, frames: int = 24, seed: int = 0, size: tuple[int, int] = (160, 120)) -> dict:
    """Write the demo tree under ``out``; returns its paths and the command that builds it."""
    from hodata.demo.mano_model import synthetic_mano_dir
    from hodata.mano import load_mano
    from hodata.render import render_labels

    if frames < len(TRAIN_SEQUENCES):
        raise ValueError(f"need at least {len(TRAIN_SEQUENCES)} frames (one per sequence), got {frames}")
    out = Path(out)
    root = out / "HO3D_v3"
    rng = np.random.default_rng(seed)
    mano_dir = Path(synthetic_mano_dir(out / "mano"))
    mano = load_mano(mano_dir / "MANO_RIGHT.pkl", "right")
    models = write_models(out / "models")
    K = camera_matrix(size)
    Kq = quarter_camera(K)
    size_q = (size[0] // SEG_SCALE, size[1] // SEG_SCALE)

    counts = [frames // len(TRAIN_SEQUENCES) + (i < frames % len(TRAIN_SEQUENCES)) for i in range(len(TRAIN_SEQUENCES))]
    train_lines = []
    for (seq, obj_name), n in zip(TRAIN_SEQUENCES, counts):
        ov_rest, of = models[obj_name]
        for i in range(n):
            frame = f"{i:04d}"
            p = random_frame(rng, mano, obj_name, ov_rest, hand_in_front=bool(i % 2 == 0))
            hv, ov, meshes = posed_meshes(mano, p, ov_rest, of)
            labels = render_labels(K, size, meshes)
            d = root / "train" / seq
            _write_jpg(d / "rgb" / f"{frame}.jpg", paint(rng, labels, size))
            _dump(d / "meta" / f"{frame}.pkl", train_meta(mano, p, hv, ov, obj_name, ov_rest, K))
            (d / "seg").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / "seg" / f"{frame}.png"), seg_image(render_labels(Kq, size_q, meshes)))
            train_lines.append(f"{seq}/{frame}")
        # an unlisted frame with an empty annotation, as the release folders hold
        unlisted = f"{n:04d}"
        _write_jpg(root / "train" / seq / "rgb" / f"{unlisted}.jpg", paint_background(rng, size))
        _dump(root / "train" / seq / "meta" / f"{unlisted}.pkl",
              {k: None for k in ("handPose", "handBeta", "handTrans", "handJoints3D", "camMat", "objRot",
                                 "objTrans", "objName", "objLabel", "objCorners3D", "objCorners3DRest")})

    eval_lines = []
    seq, obj_name = EVAL_SEQUENCE
    ov_rest, of = models[obj_name]
    for i in range(2):
        frame = f"{i:04d}"
        p = random_frame(rng, mano, obj_name, ov_rest, hand_in_front=True)
        hv, ov, meshes = posed_meshes(mano, p, ov_rest, of)
        d = root / "evaluation" / seq
        _write_jpg(d / "rgb" / f"{frame}.jpg", paint(rng, render_labels(K, size, meshes), size))
        _dump(d / "meta" / f"{frame}.pkl", eval_meta(p, hv, obj_name, ov_rest, K, size))
        eval_lines.append(f"{seq}/{frame}")

    (root / "train.txt").write_text("\n".join(train_lines) + "\n")
    (root / "evaluation.txt").write_text("\n".join(eval_lines) + "\n")
    return {
        "root": str(root), "mano_dir": str(mano_dir), "ycb_dir": str(out / "models"),
        "train_frames": len(train_lines), "evaluation_frames": len(eval_lines),
        "build_command": f"hodata build --source ho3d --root {root} --mano-dir {mano_dir} "
                         f"--ycb-dir {out / 'models'} --out SHARDS",
    }
