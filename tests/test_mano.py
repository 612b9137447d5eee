"""MANO layer: reading the official pickle format without chumpy, the forward pass, the left-hand fix."""

from __future__ import annotations

import dataclasses
import pickle
import sys
from collections import Counter

import numpy as np
import pytest
import scipy.sparse
from scipy.sparse.csgraph import connected_components

from fake_chumpy import BOOKKEEPING, fake_chumpy, shapedirs_select, write_chumpy_mano
from hodata.demo.mano_model import synthetic_mano_arrays, synthetic_mano_dir, write_synthetic_mano
from hodata.errors import DataError
from hodata.mano import (MANO_TO_THUMB_FIRST, TIP_VERTICES, axis_angle_to_matrix, find_mano_file,
                         handedness_score, joints21, load_mano, load_mano_checked, load_mano_dir, model_handedness)


@pytest.fixture(scope="module")
def mano_dir(tmp_path_factory):
    return synthetic_mano_dir(tmp_path_factory.mktemp("mano"))


@pytest.fixture(scope="module")
def right(mano_dir):
    return load_mano(mano_dir / "MANO_RIGHT.pkl", "right")


def reference_lbs(m, pose48, betas, trans):
    """Skinning written joint by joint (global rotation and posed joint position along the chain)."""
    rots = [axis_angle_to_matrix(p)[0] for p in pose48.reshape(16, 3)]
    v_shaped = m.v_template + m.shapedirs @ betas
    rest = m.J_regressor @ v_shaped
    v_posed = v_shaped + m.posedirs @ np.concatenate([(r - np.eye(3)).ravel() for r in rots[1:]])
    g_rot, g_pos = [None] * 16, [None] * 16
    for j in range(16):
        p = m.parents[j]
        if p < 0:
            g_rot[j], g_pos[j] = rots[j], rest[j]
        else:
            g_rot[j] = g_rot[p] @ rots[j]
            g_pos[j] = g_pos[p] + g_rot[p] @ (rest[j] - rest[p])
    verts = np.zeros_like(v_posed)
    for j in range(16):
        verts += m.weights[:, j:j + 1] * ((v_posed - rest[j]) @ g_rot[j].T + g_pos[j])
    return verts + trans, np.array(g_pos) + trans


def test_reads_the_chumpy_pickle_format_without_chumpy(mano_dir, right):
    raw = (mano_dir / "MANO_RIGHT.pkl").read_bytes()
    assert raw[:2] == b"\x80\x02"  # protocol 2, as the official files
    assert b"chumpy.reordering\nSelect" in raw and b"chumpy.ch\nCh" in raw and b"scipy.sparse.csc\ncsc_matrix" in raw
    assert "chumpy" not in sys.modules
    want = synthetic_mano_arrays("right")
    np.testing.assert_array_equal(right.shapedirs, want["shapedirs"][:, :, :10])  # the Select's gather
    np.testing.assert_array_equal(right.J_regressor, want["J_regressor"])
    np.testing.assert_array_equal(right.v_template, want["v_template"])
    assert right.faces.dtype == np.int64 and right.faces.shape == want["f"].shape
    assert right.parents.tolist() == [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]
    assert right.describe()["official_v1_2"] is False and len(right.md5) == 32


def test_reads_a_pickle_written_by_a_fake_chumpy(tmp_path, monkeypatch):
    arrays = synthetic_mano_arrays("right", seed=5)
    arrays["J_regressor"] = scipy.sparse.csc_matrix(arrays["J_regressor"])
    path = write_chumpy_mano(tmp_path / "MANO_RIGHT.pkl", arrays)
    assert not [m for m in sys.modules if m == "chumpy" or m.startswith("chumpy.")]  # the fake is gone again
    raw = path.read_bytes()
    assert raw[:2] == b"\x80\x02" and b"chumpy.reordering\nSelect" in raw and b"chumpy.ch\nCh" in raw
    assert b"_parents" not in raw and b"_cache" not in raw  # Ch.__getstate__ drops them, as chumpy's does
    monkeypatch.setitem(sys.modules, "chumpy", None)  # `import chumpy` fails, whatever is installed
    with pytest.raises(ImportError):
        import chumpy  # noqa: F401
    model = load_mano(path)
    assert arrays["shapedirs"].shape == (778, 3, 20)
    np.testing.assert_array_equal(model.shapedirs, arrays["shapedirs"][:, :, :10])  # the Select's gather
    np.testing.assert_array_equal(model.J_regressor, arrays["J_regressor"].toarray())


def test_fake_chumpy_pickles_the_state_chumpy_pickles(tmp_path):
    arrays = synthetic_mano_arrays("right")
    path = write_chumpy_mano(tmp_path / "m.pkl", arrays)
    with fake_chumpy():  # read back through the look-alike classes: the stored state is chumpy's
        select = pickle.loads(path.read_bytes())["shapedirs"]
        assert (type(select).__module__, type(select).__qualname__) == ("chumpy.reordering", "Select")
        assert set(vars(select)) == {"a", "idxs", "preferred_shape", *BOOKKEEPING}
        assert set(vars(select.a)) == {"x", *BOOKKEEPING} and type(select.a).__module__ == "chumpy.ch"
        assert select.preferred_shape == (778, 3, 10) and select.idxs.size == 23_340
        gathered = select.a.x.ravel()[select.idxs].reshape(select.preferred_shape)
        np.testing.assert_array_equal(gathered, arrays["shapedirs"][:, :, :10])
    assert "chumpy" not in sys.modules


def test_synthetic_mesh_is_one_surface_open_at_the_wrist(right):
    faces = right.faces
    assert right.v_template.shape == (778, 3) and faces.shape == (1538, 3)  # MANO's counts
    assert len(np.unique(faces)) == 778 and not (faces[:, [0, 1, 2]] == faces[:, [1, 2, 0]]).any()
    directed = Counter((int(a), int(b)) for f in faces for a, b in zip(f, np.roll(f, -1)))
    assert max(directed.values()) == 1  # consistently wound: a shared edge runs both ways once
    undirected = Counter(frozenset(e) for e in directed)
    assert set(undirected.values()) == {1, 2}
    boundary = [e for e, n in undirected.items() if n == 1]
    assert len(boundary) == 16 and set().union(*boundary) == set(range(16))  # only the wrist ring is open
    n_parts, _ = connected_components(scipy.sparse.coo_matrix(
        (np.ones(len(directed)), np.array(list(directed)).T), shape=(778, 778)))
    assert n_parts == 1 and 778 - len(undirected) + 1538 == 1  # one surface with one hole: a disk, like MANO
    v = right.v_template - right.v_template[:16].mean(axis=0)  # close the wrist at its centre
    assert np.einsum("ij,ij->i", v[faces[:, 0]], np.cross(v[faces[:, 1]], v[faces[:, 2]])).sum() > 0  # outward


def test_zero_pose_gives_the_template(right):
    verts, joints = right.forward(np.zeros(48), np.zeros(10))
    np.testing.assert_allclose(verts, right.v_template, atol=1e-12)
    np.testing.assert_allclose(joints, right.J_regressor @ right.v_template, atol=1e-12)


@pytest.mark.parametrize("flat", [True, False])
def test_forward_matches_a_joint_by_joint_reference(right, flat):
    rng = np.random.default_rng(3)
    pose, betas, trans = rng.normal(0, 0.4, 48), rng.normal(0, 1, 10), np.array([0.1, -0.2, 0.6])
    verts, joints = right.forward(pose, betas, trans, flat_hand_mean=flat)
    full = right.full_pose(pose, flat_hand_mean=flat)
    if not flat:
        np.testing.assert_allclose(full[3:], pose[3:] + right.hands_mean)
    ref_v, ref_j = reference_lbs(right, full, betas, trans)
    np.testing.assert_allclose(verts, ref_v, atol=1e-10)
    np.testing.assert_allclose(joints, ref_j, atol=1e-10)


def test_batched_forward_equals_one_hand_at_a_time(right):
    rng = np.random.default_rng(11)
    pose, betas, trans = rng.normal(0, 0.4, (5, 48)), rng.normal(0, 1, (5, 10)), rng.normal(0, 0.1, (5, 3))
    for flat in (True, False):
        verts, joints = right.forward(pose, betas, trans, flat_hand_mean=flat)
        assert verts.shape == (5, 778, 3) and joints.shape == (5, 16, 3)
        for i in range(5):
            one_v, one_j = right.forward(pose[i], betas[i], trans[i], flat_hand_mean=flat)
            assert one_v.shape == (778, 3) and one_j.shape == (16, 3)
            np.testing.assert_allclose(verts[i], one_v, rtol=0, atol=1e-12)
            np.testing.assert_allclose(joints[i], one_j, rtol=0, atol=1e-12)
            ref_v, ref_j = reference_lbs(right, right.full_pose(pose[i], flat_hand_mean=flat), betas[i], trans[i])
            np.testing.assert_allclose(verts[i], ref_v, atol=1e-10)
            np.testing.assert_allclose(joints[i], ref_j, atol=1e-10)


def test_batched_forward_broadcasts_and_takes_pca(right):
    rng = np.random.default_rng(12)
    coeffs = rng.normal(0, 1, (4, 3 + 6))
    verts, _ = right.forward(coeffs, np.ones(10), [0.0, 0.0, 0.5], pca_components=6)  # shared shape and trans
    assert verts.shape == (4, 778, 3)
    for i in range(4):
        np.testing.assert_allclose(verts[i], right.forward(coeffs[i], np.ones(10), [0.0, 0.0, 0.5],
                                                           pca_components=6)[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(right.full_pose(coeffs, pca_components=6)[:, 3:],
                               coeffs[:, 3:] @ right.hands_components[:6])
    betas = rng.normal(0, 1, (3, 10))
    verts, joints = right.forward(np.zeros(48), betas)  # one pose, a batch of shapes
    assert verts.shape == (3, 778, 3) and joints.shape == (3, 16, 3)
    np.testing.assert_allclose(verts[2], right.forward(np.zeros(48), betas[2])[0], rtol=0, atol=1e-12)
    verts, _ = right.forward(np.zeros((2, 48)))  # betas and trans default for every hand
    np.testing.assert_allclose(verts, np.broadcast_to(right.v_template, (2, 778, 3)), atol=1e-12)
    with pytest.raises(ValueError, match="batch sizes differ"):
        right.forward(np.zeros((2, 48)), np.zeros((3, 10)))
    with pytest.raises(ValueError, match="48 pose values"):
        right.forward(np.zeros(47))
    with pytest.raises(ValueError, match="9 pose values with 6 PCA"):
        right.forward(np.zeros((2, 48)), pca_components=6)


def test_pca_pose_uses_the_first_components(right):
    rng = np.random.default_rng(4)
    coeffs = rng.normal(0, 1, 6)
    pose = right.full_pose(np.r_[0.1, 0.2, 0.3, coeffs], pca_components=6)
    np.testing.assert_allclose(pose[3:], coeffs @ right.hands_components[:6])
    np.testing.assert_allclose(pose[:3], [0.1, 0.2, 0.3])


def test_root_rotation_turns_the_hand_about_the_wrist(right):
    rot = np.array([0.0, 0.0, np.pi / 2])
    verts, joints = right.forward(np.r_[rot, np.zeros(45)], trans=[0.0, 0.0, 0.5])
    wrist = right.J_regressor[0] @ right.v_template
    R = axis_angle_to_matrix(rot)[0]
    np.testing.assert_allclose(verts, (right.v_template - wrist) @ R.T + wrist + [0, 0, 0.5], atol=1e-12)
    np.testing.assert_allclose(joints[0], wrist + [0, 0, 0.5], atol=1e-12)


def test_bending_one_joint_moves_only_its_finger(right):
    pose = np.zeros(48)
    pose[3 * 2:3 * 2 + 3] = [0.0, 0.0, 1.2]  # index PIP (joint 2)
    rigid = dataclasses.replace(right, posedirs=np.zeros_like(right.posedirs))  # pose blend shapes move all
    verts, joints = rigid.forward(pose)
    moved = np.linalg.norm(verts - right.v_template, axis=1) > 1e-9
    driven = right.weights[:, 2:4].sum(axis=1) > 0  # PIP and DIP segments follow joint 2
    assert not moved[~driven].any()
    assert moved[driven].mean() > 0.95  # all but the ring points on the rotation axis
    np.testing.assert_allclose(joints[[0, 1, 2, 4, 13]], (right.J_regressor @ right.v_template)[[0, 1, 2, 4, 13]])


def test_joints21_orders(right):
    verts, joints = right.forward(np.zeros(48))
    j21 = joints21(verts, joints, tips="freihand")
    np.testing.assert_array_equal(j21[16:], verts[list(TIP_VERTICES["freihand"])])
    thumb_first = joints21(verts, joints, tips="freihand", thumb_first=True)
    np.testing.assert_array_equal(thumb_first[4], verts[744])  # thumb tip closes the thumb chain
    np.testing.assert_array_equal(thumb_first[1:4], joints[13:16])
    assert sorted(MANO_TO_THUMB_FIRST) == list(range(21))


def test_left_hand_fix(mano_dir, tmp_path):
    fixed = load_mano_dir(mano_dir, "left")
    mirrored = synthetic_mano_arrays("left")["shapedirs"][:, :, :10]
    assert fixed.left_fix_applied
    np.testing.assert_allclose(fixed.shapedirs, mirrored)  # the fix recovers the mirrored shape space
    raw = load_mano_dir(mano_dir, "left", fix_left=False)  # DexYCB used the unfixed file
    np.testing.assert_allclose(raw.shapedirs, synthetic_mano_arrays("right")["shapedirs"][:, :, :10])
    # A corrected left file is left alone.
    write_synthetic_mano(tmp_path / "MANO_RIGHT.pkl", "right")
    write_synthetic_mano(tmp_path / "MANO_LEFT.pkl", "left", left_bug=False)
    good = load_mano_dir(tmp_path, "left")
    assert not good.left_fix_applied
    np.testing.assert_allclose(good.shapedirs, mirrored)


def test_find_mano_file(mano_dir, tmp_path, monkeypatch):
    want = mano_dir / "MANO_RIGHT.pkl"
    assert find_mano_file(mano_dir, "right") == want
    assert find_mano_file(want, "right") == want
    (tmp_path / "mano_v1_2" / "models").mkdir(parents=True)
    (tmp_path / "mano_v1_2" / "models" / "MANO_LEFT.pkl").write_bytes(want.read_bytes())
    assert find_mano_file(tmp_path / "mano_v1_2", "left").parent.name == "models"
    monkeypatch.setenv("MANO_DIR", str(mano_dir))
    assert find_mano_file(None, "right") == want
    monkeypatch.delenv("MANO_DIR")
    with pytest.raises(DataError, match="mano.is.tue.mpg.de"):
        find_mano_file(None, "right")
    with pytest.raises(DataError, match=str(tmp_path / "empty")):
        find_mano_file(tmp_path / "empty", "right")


def test_bad_files_name_the_file(mano_dir, tmp_path):
    cut = tmp_path / "MANO_RIGHT.pkl"
    cut.write_bytes((mano_dir / "MANO_RIGHT.pkl").read_bytes()[:5000])
    with pytest.raises(DataError, match=r"MANO_RIGHT\.pkl: not a readable MANO pickle"):
        load_mano(cut)
    lacking = tmp_path / "lacking.pkl"
    arrays = synthetic_mano_arrays("right")
    del arrays["posedirs"]
    lacking.write_bytes(pickle.dumps(arrays, protocol=2))
    with pytest.raises(DataError, match=r"lacking\.pkl: MANO pickle lacks posedirs"):
        load_mano(lacking)
    shaped = tmp_path / "shaped.pkl"
    arrays = synthetic_mano_arrays("right")
    arrays["weights"] = arrays["weights"][:, :15]
    shaped.write_bytes(pickle.dumps(arrays, protocol=2))
    with pytest.raises(DataError, match=r"weights has shape \(778, 15\)"):
        load_mano(shaped)
    listed = tmp_path / "list.pkl"
    listed.write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(DataError, match="holds a list"):
        load_mano(listed)


# ------------------------------------------------------------------------------------- hostile and junk files

class _Runs:
    """Pickles as a call of ``func(*args)``: what a crafted model file does to run code while it is read."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _hostile_calls(marker):
    import builtins
    import os
    import subprocess

    touch = f"open({str(marker)!r}, 'w').close()"
    return {"os.system": (os.system, f"touch {marker}"), "builtins.eval": (builtins.eval, touch),
            "builtins.exec": (builtins.exec, touch), "subprocess.Popen": (subprocess.Popen, ["touch", str(marker)])}


@pytest.mark.parametrize("protocol", [0, 2, 5])
@pytest.mark.parametrize("call", ["os.system", "builtins.eval", "builtins.exec", "subprocess.Popen"])
def test_a_pickle_that_would_run_code_is_refused_before_anything_runs(tmp_path, call, protocol):
    marker = tmp_path / "ran"
    func, arg = _hostile_calls(marker)[call]
    arrays = synthetic_mano_arrays("right")
    arrays["hands_mean"] = _Runs(func, arg)  # hidden among the real keys
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps(arrays, protocol=protocol))
    name = call.replace(".", r"\.").replace("os", "(posix|nt|os)")  # os.system is posix.system here
    refused = rf"MANO_RIGHT\.pkl: refused: the pickle calls ([^ ]+ \()?{name}\)?, which a MANO model file never"
    with pytest.raises(DataError, match=refused) as e:
        load_mano(path)
    assert "\n" not in str(e.value)
    assert not marker.exists()
    with pytest.raises(DataError, match="refused"):
        load_mano_checked(tmp_path, "right")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_every_pickle_protocol_of_the_model_format_loads(tmp_path, protocol):
    arrays = synthetic_mano_arrays("right", seed=2)
    arrays["J_regressor"] = scipy.sparse.csc_matrix(arrays["J_regressor"])
    arrays["scale"] = np.float64(1.0)  # a numpy scalar, as re-saved files may hold
    with fake_chumpy() as chumpy:
        payload = {**arrays, "shapedirs": shapedirs_select(chumpy, arrays["shapedirs"])}
        raw = pickle.dumps(payload, protocol=protocol)
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(raw)
    model = load_mano(path)
    np.testing.assert_array_equal(model.shapedirs, arrays["shapedirs"][:, :, :10])
    np.testing.assert_array_equal(model.J_regressor, arrays["J_regressor"].toarray())
    np.testing.assert_array_equal(model.v_template, arrays["v_template"])


def _junk_files(tmp_path, mano_dir):
    """name -> (bytes, the message expected)."""
    good = synthetic_mano_arrays("right")

    def changed(**kw):
        arrays = {**good, **kw}
        return pickle.dumps({k: v for k, v in arrays.items() if v is not None}, protocol=2)

    return {
        "random.pkl": (np.random.default_rng(0).bytes(4096), "not a readable MANO pickle|refused"),
        "empty.pkl": (b"", "not a readable MANO pickle"),
        "text.pkl": (b"MANO_RIGHT.pkl\nis not here\n", "not a readable MANO pickle"),
        "cut.pkl": ((mano_dir / "MANO_RIGHT.pkl").read_bytes()[:20000], "not a readable MANO pickle"),
        "list.pkl": (pickle.dumps([1, 2], protocol=2), "holds a list, expected a dict"),
        "array.pkl": (pickle.dumps(np.zeros(3), protocol=2), "holds a ndarray, expected a dict"),
        "lacking.pkl": (changed(weights=None), "lacks weights"),
        "shape.pkl": (changed(v_template=good["v_template"][:700]), r"v_template has shape \(700, 3\)"),
        "text_values.pkl": (changed(posedirs="zeros"), "posedirs is not numeric"),
        "nan.pkl": (changed(v_template=np.where(np.eye(778, 3) > 0, np.nan, good["v_template"])), "NaN or inf"),
        "faces.pkl": (changed(f=good["f"].astype(np.int64) + 5), "faces are empty or index vertices outside"),
        "millimetres.pkl": (changed(v_template=good["v_template"] * 1000), "not a MANO model in metres"),
        "flat.pkl": (changed(v_template=good["v_template"] * [1.0, 1.0, 0.0]), "cannot tell which hand"),
    }


def test_junk_and_foreign_files_are_refused_in_one_line_naming_the_file(tmp_path, mano_dir):
    for name, (raw, message) in _junk_files(tmp_path, mano_dir).items():
        path = tmp_path / name
        path.write_bytes(raw)
        with pytest.raises(DataError, match=message) as e:
            load_mano(path, "right")
        assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value), name


def test_handedness_is_read_from_the_model(mano_dir, tmp_path):
    right = load_mano(mano_dir / "MANO_RIGHT.pkl", "right")
    left = load_mano(mano_dir / "MANO_LEFT.pkl", "left")
    assert handedness_score(right) > 0.1 and model_handedness(right) == "right"
    assert handedness_score(left) == pytest.approx(-handedness_score(right)) and model_handedness(left) == "left"
    # A turned, moved and scaled hand keeps its side; a mirrored one changes it.
    R = axis_angle_to_matrix([0.4, -1.9, 2.2])[0]
    moved = dataclasses.replace(right, v_template=right.v_template @ R.T * 1.3 + [0.2, -0.1, 0.7])
    assert handedness_score(moved) == pytest.approx(handedness_score(right))
    mirrored = dataclasses.replace(right, v_template=right.v_template * [1.0, -1.0, 1.0])
    assert model_handedness(mirrored) == "left"
    # A left model given as the right one, in either call, is refused in one line.
    with pytest.raises(DataError, match=r"MANO_LEFT\.pkl: this is a left-hand model .* given as the right one"):
        load_mano(mano_dir / "MANO_LEFT.pkl", "right")
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    (swapped / "MANO_RIGHT.pkl").write_bytes((mano_dir / "MANO_LEFT.pkl").read_bytes())
    (swapped / "MANO_LEFT.pkl").write_bytes((mano_dir / "MANO_RIGHT.pkl").read_bytes())
    with pytest.raises(DataError, match=r"swapped/MANO_RIGHT\.pkl: this is a left-hand model"):
        load_mano_checked(swapped, "right")
    with pytest.raises(DataError, match=r"swapped/MANO_LEFT\.pkl: this is a right-hand model"):
        load_mano_checked(swapped, "left", fix_left=False)


def test_handedness_of_the_official_right_template():
    # MANO_RIGHT.pkl's template joints (J_regressor @ v_template, millimetres, MANO joint order): the wrist, the
    # index MCP, the little MCP and the three thumb joints are what the test reads.
    joints = np.array([[96, 6, 6], [8, 1, 27], [-25, 5, 29], [-47, 4, 29], [1, 5, 3], [-30, 7, -3], [-53, 6, -7],
                       [27, -4, -37], [10, -3, -50], [-6, -4, -60], [14, 2, -20], [-14, 4, -26], [-38, 3, -33],
                       [72, -9, 32], [52, -8, 56], [30, -14, 70]]) / 1000.0
    arrays = synthetic_mano_arrays("right")
    model = dataclasses.replace(load_mano_from(arrays), v_template=np.r_[joints, np.zeros((778 - 16, 3))],
                                J_regressor=np.eye(16, 778))
    assert model_handedness(model) == "right" and 0.1 < handedness_score(model) < 0.3
    assert model_handedness(dataclasses.replace(model, v_template=model.v_template * [-1, 1, 1])) == "left"


def load_mano_from(arrays):
    """A ManoModel of plain arrays (no file)."""
    import hodata.mano as mano

    return mano.ManoModel(side="right", v_template=arrays["v_template"], faces=arrays["f"].astype(np.int64),
                          shapedirs=arrays["shapedirs"][:, :, :10], posedirs=arrays["posedirs"],
                          J_regressor=arrays["J_regressor"], weights=arrays["weights"],
                          parents=np.zeros(16, np.int64), hands_components=arrays["hands_components"],
                          hands_mean=arrays["hands_mean"])


def test_load_mano_checked_finds_checks_and_caches(mano_dir, tmp_path):
    model = load_mano_checked(mano_dir, "right")
    assert model is load_mano_checked(mano_dir / "MANO_RIGHT.pkl", "right")  # one load per process
    assert model_handedness(model) == "right" and not model.left_fix_applied
    assert load_mano_checked(mano_dir, "left").left_fix_applied
    with pytest.raises(DataError, match=r"MANO_RIGHT\.pkl not found"):
        load_mano_checked(tmp_path, "right")
    (tmp_path / "MANO_RIGHT.pkl").write_bytes(b"\x80\x02junk")
    with pytest.raises(DataError, match=r"MANO_RIGHT\.pkl: not a readable MANO pickle"):
        load_mano_checked(tmp_path, "right")


def test_damaged_copies_of_a_good_file_never_end_in_a_traceback(mano_dir, tmp_path):
    good = (mano_dir / "MANO_RIGHT.pkl").read_bytes()
    rng = np.random.default_rng(1)
    path = tmp_path / "MANO_RIGHT.pkl"
    outcomes = Counter()
    for _ in range(40):
        damaged = bytearray(good)
        for _ in range(int(rng.integers(1, 4))):  # mostly in the opcodes and small members at the start
            damaged[int(rng.integers(0, 3000 if rng.random() < 0.8 else len(good)))] = int(rng.integers(0, 256))
        path.write_bytes(bytes(damaged))
        try:
            load_mano(path)
            outcomes["loaded"] += 1
        except DataError as e:
            assert "\n" not in str(e) and str(e).startswith(str(path))
            outcomes["refused"] += 1
    assert outcomes["refused"] > 25


def test_regressed_joints_are_the_regressor_on_the_posed_mesh(right):
    from hodata.mano import regressed_joints

    verts, joints = right.forward(np.zeros(48), trans=[0.0, 0.0, 0.5])
    np.testing.assert_allclose(regressed_joints(right, verts, thumb_first=False)[:16], joints, atol=1e-12)  # at rest
    rng = np.random.default_rng(5)
    pose = rng.normal(0, 0.5, (3, 48))
    verts, joints = right.forward(pose, trans=[0.0, 0.0, 0.5])
    out = regressed_joints(right, verts)
    assert out.shape == (3, 21, 3)
    for b in range(3):
        mano_order = np.array([right.J_regressor[j] @ verts[b] for j in range(16)])
        np.testing.assert_allclose(regressed_joints(right, verts[b], thumb_first=False)[:16], mano_order, atol=1e-12)
        np.testing.assert_allclose(out[b][[4, 8, 12, 16, 20]], verts[b][list(TIP_VERTICES["freihand"])])
        assert np.abs(mano_order - joints[b]).max() > 1e-4  # posed: regressed != skinned


def test_mano_conventions_state_every_choice(mano_dir):
    from hodata.mano import ManoConvention, tip_set

    left = load_mano_dir(mano_dir, "left", fix_left=False)
    dexycb = ManoConvention(use_pca=True, ncomps=45, flat_hand_mean=False, fix_left=False, joints="skinned",
                            tips="manopth", thumb_first=True)
    assert tip_set("manopth", "left") == "manopth_left" and tip_set("freihand", "left") == "freihand"
    rng = np.random.default_rng(6)
    pose = rng.normal(0, 0.5, 51)
    verts, joints = dexycb.forward(left, pose[:48], np.ones(10), pose[48:])
    ref_v, ref_j = reference_lbs(left, np.r_[pose[:3], pose[3:48] @ left.hands_components + left.hands_mean],
                                 np.ones(10), pose[48:])
    np.testing.assert_allclose(verts, ref_v, atol=1e-10)
    kp = dexycb.keypoints(left, verts, joints)
    np.testing.assert_allclose(kp[12], verts[445])  # manopth's left middle tip
    np.testing.assert_allclose(kp[1:4], ref_j[13:16], atol=1e-10)
    d = dexycb.describe()
    assert d["tip_vertices"] == {"right": [745, 317, 444, 556, 673], "left": [745, 317, 445, 556, 673]}
    assert d["use_pca"] and d["ncomps"] == 45 and not d["flat_hand_mean"] and not d["left_shapedirs_fix"]
    with pytest.raises(ValueError, match="joints must be"):
        ManoConvention(use_pca=False, ncomps=45, flat_hand_mean=True, fix_left=False, joints="x", tips="ho3d",
                       thumb_first=False)


def test_axis_angle_to_matrix_is_rodrigues():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(3)
    vecs = np.r_[rng.normal(0, 1.5, (50, 3)), np.zeros((1, 3)), [[1e-14, 0.0, 0.0], [np.pi, 0.0, 0.0]]]
    np.testing.assert_allclose(axis_angle_to_matrix(vecs), Rotation.from_rotvec(vecs).as_matrix(), atol=1e-12)
    np.testing.assert_array_equal(axis_angle_to_matrix(np.zeros(3))[0], np.eye(3))  # exact identity at angle 0


def test_hand_shapes_are_reused_only_for_the_same_betas(right):
    rng = np.random.default_rng(21)
    pose = rng.normal(0, 0.4, 48)
    a, b = rng.normal(0, 1, 10), rng.normal(0, 1, 10)
    for betas in (a, a, b, a, np.stack([a, b]), b):  # repeats hit the kept shape, changes must not
        verts, joints = right.forward(pose if betas.ndim == 1 else np.stack([pose, pose]), betas)
        for i, one in enumerate(betas if betas.ndim == 2 else [betas]):
            ref_v, ref_j = reference_lbs(right, pose, one, np.zeros(3))
            np.testing.assert_allclose(verts if betas.ndim == 1 else verts[i], ref_v, atol=1e-10)
            np.testing.assert_allclose(joints if betas.ndim == 1 else joints[i], ref_j, atol=1e-10)


def test_float32_pose_blend_stays_within_a_tenth_of_a_micron(right):
    # MANO's own pose blend shapes reach ~0.02 m; the kernel reads them as float32 (half the memory traffic)
    rng = np.random.default_rng(22)
    big = dataclasses.replace(right, posedirs=rng.normal(0, 0.01, right.posedirs.shape))
    pose, betas = rng.normal(0, 1.0, 48), rng.normal(0, 2, 10)
    verts, joints = big.forward(pose, betas)
    ref_v, ref_j = reference_lbs(big, pose, betas, np.zeros(3))
    assert np.abs(verts - ref_v).max() < 1e-7
    np.testing.assert_allclose(joints, ref_j, atol=1e-12)  # joints never see the pose blend
