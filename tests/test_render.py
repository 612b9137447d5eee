"""Label-map renderer: coverage and projection convention, occlusion, clipping, and the pyrender cross-check."""

from __future__ import annotations

import numpy as np
import pytest

from hodata.render import NEAR, pyrender_available, render_labels, render_labels_batch

K = np.array([[100.0, 0.0, 16.0], [0.0, 100.0, 12.0], [0.0, 0.0, 1.0]])
SIZE = (32, 24)  # width, height


def at_pixels(uv, z):
    """Camera-frame points at depth z that project onto image points uv (through K above)."""
    uv = np.asarray(uv, float)
    z = np.broadcast_to(np.asarray(z, float), (len(uv),))
    return np.c_[(uv[:, 0] - K[0, 2]) / K[0, 0] * z, (uv[:, 1] - K[1, 2]) / K[1, 1] * z, z]


def square(u0, v0, u1, v1, z, label, flip=False):
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    return at_pixels([(u0, v0), (u1, v0), (u1, v1), (u0, v1)], z), faces[:, ::-1] if flip else faces, label


def test_pixel_centres_are_integer_image_points():
    # A square from image point (4.5, 2.5) to (9.5, 7.5) covers pixel columns 5..9 and rows 3..7 exactly.
    out = render_labels(K, SIZE, [square(4.5, 2.5, 9.5, 7.5, 1.0, 1)])
    want = np.zeros((24, 32), np.uint8)
    want[3:8, 5:10] = 1
    np.testing.assert_array_equal(out, want)
    # Either winding is drawn (MANO is open at the wrist: its inside shows).
    flipped = render_labels(K, SIZE, [square(4.5, 2.5, 9.5, 7.5, 1.0, 1, flip=True)])
    np.testing.assert_array_equal(flipped, want)


def test_shared_edges_through_pixel_centres_are_covered_once():
    # Corners on pixel centres: the two triangles share a diagonal through centres; each centre goes to one.
    v, f, _ = square(2, 2, 10, 8, 1.0, 1)
    a = render_labels(K, SIZE, [(v, f[:1], 1)])
    b = render_labels(K, SIZE, [(v, f[1:], 2)])
    both = render_labels(K, SIZE, [(v, f[:1], 1), (v, f[1:], 2)])
    assert not np.any((a > 0) & (b > 0))
    assert np.count_nonzero(both) == 8 * 6  # a w x h lattice square holds w*h centres under the tie rule
    np.testing.assert_array_equal(both, np.maximum(a, b))


def test_nearest_surface_wins_whatever_the_order():
    near = square(2.5, 2.5, 12.5, 12.5, 0.5, 2)
    far = square(7.5, 7.5, 20.5, 20.5, 1.0, 1)
    for meshes in ([near, far], [far, near]):
        out = render_labels(K, SIZE, meshes)
        assert np.all(out[3:13, 3:13] == 2)  # the near square is whole
        assert np.all(out[13:21, 13:21] == 1) and np.count_nonzero(out == 1) == 13 * 13 - 5 * 5


def test_interpenetrating_planes_split_at_the_intersection():
    # A plane tilted in depth (z from 0.8 at the left to 1.2 at the right) cuts a flat one at z = 1.
    flat = square(0.5, 0.5, 30.5, 20.5, 1.0, 1)
    uv = [(0.5, 0.5), (30.5, 0.5), (30.5, 20.5), (0.5, 20.5)]
    tilted = (at_pixels(uv, [0.8, 1.2, 1.2, 0.8]), np.array([[0, 1, 2], [0, 2, 3]]), 2)
    out = render_labels(K, SIZE, [flat, tilted])
    # Depth along a row is 1/z-linear in u: z = 1 where u = 0.5 + 30 * w with 1/1 = (1-w)/0.8 + w/1.2.
    w = (1 / 0.8 - 1) / (1 / 0.8 - 1 / 1.2)
    cross = 0.5 + 30 * w
    cols = np.arange(1, 31)
    assert np.all(out[5, cols[cols < cross - 0.01]] == 2) and np.all(out[5, cols[cols > cross + 0.01]] == 1)


def test_triangles_crossing_the_camera_plane_are_clipped_not_wrapped():
    # A floor (y = 0.1) running from in front of the camera to behind it: its visible part lies below the
    # horizon (row 12); without clipping, the corner behind the camera would project above it (v = 7).
    floor = np.array([[-0.3, 0.1, 3.0], [0.3, 0.1, 3.0], [0.0, 0.1, -2.0]])
    out = render_labels(K, SIZE, [(floor, [[0, 1, 2]], 1)])
    assert np.all(out[16:, 16] == 1) and not out[:15].any()  # the far edge is at v = 12 + 100 * 0.1 / 3
    # Same picture as the clipped quad built by hand.
    s = (3.0 - NEAR) / 5.0
    quad = np.array([floor[0], floor[1], floor[1] + s * (floor[2] - floor[1]), floor[0] + s * (floor[2] - floor[0])])
    by_hand = render_labels(K, SIZE, [(quad, [[0, 1, 2], [0, 2, 3]], 1)])
    np.testing.assert_array_equal(out, by_hand)
    # Wholly behind the camera: nothing.
    behind = floor * [1, 1, -1] - [0, 0, 5]
    assert not render_labels(K, SIZE, [(behind, [[0, 1, 2]], 1)]).any()


def test_batch_and_bad_input():
    frames = [[square(2.5, 2.5, 6.5, 6.5, 1.0, 1)], [], [square(10.5, 3.5, 20.5, 9.5, 2.0, 2)]]
    batch = render_labels_batch(K, SIZE, frames)
    assert batch.shape == (3, 24, 32) and batch.dtype == np.uint8
    for b, meshes in enumerate(frames):
        np.testing.assert_array_equal(batch[b], render_labels(K, SIZE, meshes))
    assert not batch[1].any()
    with pytest.raises(ValueError, match="label must be 1..254"):
        render_labels(K, SIZE, [square(1, 1, 5, 5, 1.0, 255)])
    with pytest.raises(ValueError, match="faces index vertices outside"):
        render_labels(K, SIZE, [(np.zeros((3, 3)), [[0, 1, 3]], 1)])
    with pytest.raises(ValueError, match="NaN"):
        render_labels(K, SIZE, [(np.full((3, 3), np.nan), [[0, 1, 2]], 1)])
    with pytest.raises(ValueError, match="unknown render backend"):
        render_labels(K, SIZE, [], backend="raytrace")


@pytest.fixture(scope="module")
def hand_scene(tmp_path_factory):
    """A posed synthetic MANO hand with a sphere in front of its fingers, 640x480 (the HO3D image size)."""
    import trimesh

    from hodata.demo.mano_model import synthetic_mano_dir
    from hodata.mano import load_mano_dir

    mano = load_mano_dir(synthetic_mano_dir(tmp_path_factory.mktemp("mano")), "right")
    rng = np.random.default_rng(7)
    pose = np.r_[[2.8, 0.3, 0.2], rng.normal(0, 0.3, 45)]
    verts, joints = mano.forward(pose, rng.normal(0, 1, 10), trans=[0.0, 0.0, 0.45])
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.03)
    centre = joints[[4, 5, 6]].mean(axis=0) + [0.0, 0.0, -0.02]
    Kh = np.array([[617.0, 0.0, 318.3], [0.0, 617.0, 242.1], [0.0, 0.0, 1.0]])
    return Kh, (640, 480), [(verts, mano.faces, 1), (sphere.vertices + centre, sphere.faces, 2)]


@pytest.mark.skipif(not pyrender_available(), reason="no offscreen OpenGL (EGL) context here")
def test_zbuffer_agrees_with_pyrender(hand_scene):
    Kh, size, meshes = hand_scene
    ours = render_labels(Kh, size, meshes)
    ref = render_labels(Kh, size, meshes, backend="pyrender")
    for label in (1, 2):
        a, b = ours == label, ref == label
        assert a.sum() > 500 and b.sum() > 500
        assert (a & b).sum() / (a | b).sum() > 0.995
    assert np.count_nonzero(ours != ref) < 0.002 * np.count_nonzero(ours | ref)
