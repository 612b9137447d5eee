"""A synthetic dataset in DexYCB's release layout (see DATASETS.md "DexYCB"), for demos and tests.

```
OUT/DexYCB/<subject>/<sequence>/meta.yml, pose.npz        # 2 subjects x 2 sequences
OUT/DexYCB/<subject>/<sequence>/<serial>/color_%06d.jpg, aligned_depth_to_color_%06d.png, labels_%06d.npz
OUT/DexYCB/calibration/intrinsics/<serial>_640x480.yml   # color: fx, fy, ppx, ppy
OUT/DexYCB/calibration/mano_<calib>/mano.yml              # betas
OUT/DexYCB/calibration/extrinsics_<name>/extrinsics.yml   # camera -> world [R | t] per serial
OUT/DexYCB/models/<ycb name>/textured_simple.obj          # YCB-sized box / can / brick, metres
OUT/mano/MANO_RIGHT.pkl, MANO_LEFT.pkl                    # a synthetic MANO-format model (left: unfixed)
```
Subject 1 grasps with the right hand, subject 2 with the left. Each scene is posed once in the world (= the
first camera's frame) and seen by two cameras; each camera's ``labels_*.npz`` holds the poses in its own
frame, as the release does: ``pose_m`` (3 root + 45 PCA coefficients + translation, manopth's convention:
hand mean added, unfixed left model), ``pose_y`` (``[R | t]`` per object, ``ycb_ids`` order), ``joint_3d``
(manopth's 21 keypoints, the world keypoints moved into the camera frame) and ``joint_2d``, and ``seg``
rendered with :func:`hodata.render.render_labels` (YCB class ids, 255 hand). In every sequence frame 0 has no
hand (``pose_m`` zero, joints -1), one small object sits right behind the grasped one (mostly hidden), and
from frame 2 on the third object is not posed (``pose_y`` zero).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from hodata.demo.blobs import add_noise, paint_background, saturated_colour, skin_colour

SIZE = (640, 480)
SUBJECTS = ("20200709-subject-01", "20200813-subject-02")
SIDES = {"20200709-subject-01": "right", "20200813-subject-02": "left"}
SERIALS = ("836212060125", "839512060362")
SEQUENCES = {"20200709-subject-01": ("20200709_141754", "20200709_141841"),
             "20200813-subject-02": ("20200813_143449", "20200813_143707")}
# Per sequence position: (ycb_ids, ycb_grasp_ind, the other object placed behind the grasped one)
OBJECT_SETS = (((21, 4, 2), 0, 4), ((2, 4, 21), 1, 21))
YCB_NAMES = {2: "003_cracker_box", 4: "005_tomato_soup_can", 21: "061_foam_brick"}
SIDE_OBJECT = 2  # the cracker box stands to the side; it is not posed from frame 2 on
EXTRINSICS = "20200702_151821"
HAND_SEG = 255
HAND_RENDER_LABEL = 254  # render labels stop at 254; seg stores the hand as 255
MANOPTH_TIPS = {"right": (745, 317, 444, 556, 673), "left": (745, 317, 445, 556, 673)}
THUMB_FIRST = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)


# ------------------------------------------------------------------------------------------------ models


def object_mesh(ycb_id: int):
    import trimesh

    if ycb_id == 2:
        return trimesh.creation.box(extents=(0.16, 0.21, 0.06))
    if ycb_id == 4:
        return trimesh.creation.cylinder(radius=0.034, height=0.10, sections=24)
    return trimesh.creation.box(extents=(0.05, 0.075, 0.05))


def write_models(models_dir: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for ycb_id, name in sorted(YCB_NAMES.items()):
        mesh = object_mesh(ycb_id)
        (models_dir / name).mkdir(parents=True, exist_ok=True)
        mesh.export(models_dir / name / "textured_simple.obj")
        out[ycb_id] = (np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64))
    return out


# ------------------------------------------------------------------------------------------------ cameras


def intrinsics(i: int) -> dict[str, float]:
    return {"fx": 612.0 + 5 * i, "fy": 611.5 + 5 * i, "ppx": 318.6 + 2 * i, "ppy": 242.3 - 3 * i}


def camera_matrix(intr: dict) -> np.ndarray:
    return np.array([[intr["fx"], 0.0, intr["ppx"]], [0.0, intr["fy"], intr["ppy"]], [0.0, 0.0, 1.0]])


def rot(rvec) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(rvec, np.float64).reshape(3))[0]


def camera_to_world(i: int) -> np.ndarray:
    """(3, 4) [R | t] of camera i: p_world = R p_cam + t. Camera 0 is the world; camera 1 stands to the right,
    turned towards the scene."""
    if i == 0:
        return np.eye(3, 4)
    centre = np.array([0.14, -0.04, 0.03])
    look = np.array([0.0, 0.0, 0.6]) - centre
    R = rot([0.0, np.arctan2(look[0], look[2]), 0.0]) @ rot([0.05, 0.0, 0.0])
    return np.concatenate([R, centre[:, None]], axis=1)


def to_camera(T_cw: np.ndarray, points: np.ndarray) -> np.ndarray:
    R, t = T_cw[:, :3], T_cw[:, 3]
    return (points - t) @ R


# ------------------------------------------------------------------------------------------------ poses


def mano_in_camera(model, pose: np.ndarray, betas: np.ndarray, T_cw: np.ndarray) -> np.ndarray:
    """The 51-value MANO pose of a world-frame hand as seen from a camera: the root turns with the camera and
    the translation absorbs the turn about the rest wrist joint (MANO rotates the root about it)."""
    R, t = T_cw[:, :3], T_cw[:, 3]
    j0 = model.J_regressor[0] @ (model.v_template + model.shapedirs @ betas)
    root = cv2.Rodrigues(R.T @ rot(pose[:3]))[0].ravel()
    trans = R.T @ (j0 + pose[48:51] - t) - j0
    return np.concatenate([root, pose[3:48], trans])


def posed_hand(model, pose: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and manopth's 21 keypoints (16 skinned joints + tips, thumb first) of a 51-value pose, metres."""
    verts, joints = model.forward(pose[:48], betas, pose[48:51], flat_hand_mean=False, pca_components=45)
    keypoints = np.concatenate([joints, verts[list(MANOPTH_TIPS[model.side])]])[list(THUMB_FIRST)]
    return verts, keypoints


def scene_frame(rng, model, betas, ycb, grasp_id, behind_id, f: int) -> dict:
    """World poses of one frame: the grasped object ahead, a small one behind it, the box to the side, the
    hand just in front of the grasped object (none in frame 0)."""
    centre = np.array([rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03), rng.uniform(0.54, 0.58)])
    objects = {}
    for ycb_id, offset in ((grasp_id, (0.0, 0.0, 0.0)), (behind_id, (0.035, 0.02, 0.26)),
                           (SIDE_OBJECT, (-0.21, 0.02, 0.0))):
        R = rot(rng.normal(0, 0.4, 3))
        where = centre + np.asarray(offset)
        objects[ycb_id] = np.concatenate([R, (where - ycb[ycb_id][0].mean(axis=0) @ R.T)[:, None]], axis=1)
    if f == 0:
        return {"objects": objects, "pose_m": None}
    pose = np.zeros(51)
    pose[:3] = rng.normal(0, 0.4, 3)
    pose[3:48] = rng.normal(0, 0.6, 45)
    rest = model.forward(pose[:48], betas, np.zeros(3), flat_hand_mean=False, pca_components=45)[0]
    target = centre + np.array([0.045 if model.side == "right" else -0.045, 0.03, -0.075])
    pose[48:51] = target - rest.mean(axis=0)
    return {"objects": objects, "pose_m": pose}


# ------------------------------------------------------------------------------------------------ writing


def _yaml(path: Path, data) -> None:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=True))


def paint(rng, seg: np.ndarray, colours: dict[int, tuple]) -> np.ndarray:
    img = paint_background(rng, (seg.shape[1], seg.shape[0]))
    for value, colour in colours.items():
        img[seg == value] = colour
    return add_noise(rng, img, 4.0)


def _jpg(path: Path, rgb: np.ndarray) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])


def write(out, frames: int = 3, seed: int = 0) -> dict:
    """Write the demo tree under ``out`` (``frames`` per sequence and camera); returns its paths and the
    command that builds it."""
    from scipy.spatial.transform import Rotation

    from hodata.demo.mano_model import synthetic_mano_dir
    from hodata.mano import load_mano
    from hodata.render import render_labels

    if frames < 1:
        raise ValueError(f"need at least one frame per sequence, got {frames}")
    out = Path(out)
    root = out / "DexYCB"
    rng = np.random.default_rng(seed)
    mano_dir = Path(synthetic_mano_dir(out / "mano"))
    models = {side: load_mano(mano_dir / f"MANO_{side.upper()}.pkl", side) for side in ("right", "left")}
    ycb = write_models(root / "models")
    cams = [camera_to_world(i) for i in range(len(SERIALS))]
    Ks = {}
    for i, serial in enumerate(SERIALS):
        intr = intrinsics(i)
        depth_intr = {k: v * 0.98 for k, v in intr.items()}
        _yaml(root / "calibration" / "intrinsics" / f"{serial}_{SIZE[0]}x{SIZE[1]}.yml",
              {"color": intr, "depth": depth_intr})
        Ks[serial] = camera_matrix(intr)
    _yaml(root / "calibration" / f"extrinsics_{EXTRINSICS}" / "extrinsics.yml",
          {"extrinsics": {**{s: [round(float(x), 9) for x in T.ravel()] for s, T in zip(SERIALS, cams)},
                          "apriltag": [float(x) for x in np.eye(3, 4).ravel()]}, "master": SERIALS[0]})
    colours = {ycb_id: saturated_colour(rng, (100, 20, 200)) for ycb_id in YCB_NAMES}

    written = 0
    for subject in SUBJECTS:
        side = SIDES[subject]
        model = models[side]
        calib = f"{subject}_{side}"
        betas = rng.normal(0, 0.8, 10)
        _yaml(root / "calibration" / f"mano_{calib}" / "mano.yml", {"betas": [float(b) for b in betas]})
        skin = skin_colour(rng)
        for seq, (ycb_ids, grasp_ind, behind) in zip(SEQUENCES[subject], OBJECT_SETS):
            seq_dir = root / subject / seq
            _yaml(seq_dir / "meta.yml", {"serials": list(SERIALS), "num_frames": frames, "ycb_ids": list(ycb_ids),
                                         "ycb_grasp_ind": grasp_ind, "mano_sides": [side], "mano_calib": [calib],
                                         "extrinsics": EXTRINSICS})
            world = [scene_frame(rng, model, betas, ycb, ycb_ids[grasp_ind], behind, f) for f in range(frames)]
            for w in world[2:]:
                del w["objects"][SIDE_OBJECT]
            pose_y_world = np.zeros((frames, len(ycb_ids), 7), np.float32)
            pose_m_world = np.zeros((frames, 1, 51), np.float32)
            for f, w in enumerate(world):
                for k, ycb_id in enumerate(ycb_ids):
                    if ycb_id in w["objects"]:
                        T = w["objects"][ycb_id]
                        pose_y_world[f, k] = np.r_[Rotation.from_matrix(T[:, :3]).as_quat(), T[:, 3]]
                if w["pose_m"] is not None:
                    pose_m_world[f, 0] = w["pose_m"]
            np.savez_compressed(seq_dir / "pose.npz", pose_y=pose_y_world, pose_m=pose_m_world)
            for serial, T_cw in zip(SERIALS, cams):
                cam_dir = seq_dir / serial
                cam_dir.mkdir(parents=True, exist_ok=True)
                K = Ks[serial]
                for f, w in enumerate(world):
                    meshes, pose_y = [], np.zeros((len(ycb_ids), 3, 4), np.float32)
                    for k, ycb_id in enumerate(ycb_ids):
                        if ycb_id not in w["objects"]:
                            continue
                        T = w["objects"][ycb_id]
                        R_c = T_cw[:, :3].T @ T[:, :3]
                        t_c = to_camera(T_cw, T[:, 3][None])[0]
                        pose_y[k] = np.concatenate([R_c, t_c[:, None]], axis=1)
                        meshes.append((ycb[ycb_id][0], ycb[ycb_id][1], ycb_id, pose_y[k].astype(np.float64)))
                    pose_m = np.zeros((1, 51), np.float32)
                    joint_3d = np.full((1, 21, 3), -1.0, np.float32)
                    joint_2d = np.full((1, 21, 2), -1.0, np.float32)
                    if w["pose_m"] is not None:
                        verts_w, keypoints_w = posed_hand(model, w["pose_m"], betas)
                        pose_m[0] = mano_in_camera(model, w["pose_m"], betas, T_cw)
                        verts = to_camera(T_cw, verts_w)
                        keypoints = to_camera(T_cw, keypoints_w)
                        joint_3d[0] = keypoints
                        uv = keypoints @ K.T
                        joint_2d[0] = uv[:, :2] / uv[:, 2:]
                        meshes.append((verts, np.asarray(model.faces, np.int64), HAND_RENDER_LABEL))
                    seg = render_labels(K, SIZE, meshes)
                    seg[seg == HAND_RENDER_LABEL] = HAND_SEG
                    np.savez_compressed(cam_dir / f"labels_{f:06d}.npz", seg=seg, pose_y=pose_y, pose_m=pose_m,
                                        joint_3d=joint_3d, joint_2d=joint_2d)
                    _jpg(cam_dir / f"color_{f:06d}.jpg", paint(rng, seg, {**colours, HAND_SEG: skin}))
                    depth = np.where(seg > 0, 560, 900).astype(np.uint16)
                    cv2.imwrite(str(cam_dir / f"aligned_depth_to_color_{f:06d}.png"), depth)
                    written += 1
    return {
        "root": str(root), "mano_dir": str(mano_dir), "frames": written,
        "build_command": f"hodata build --source dexycb --root {root} --mano-dir {mano_dir} --out SHARDS",
    }
