"""Label-map renderer: coverage and projection convention, occlusion, clipping, and the pyrender cross-check."""

from __future__ import annotations

import numpy as np
import pytest

from hodata.mano import axis_angle_to_matrix
from hodata.render import NEAR, pyrender_available, render_labels, render_labels_batch, render_silhouettes

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


# ------------------------------------------------------------------------------ exactness of the fast path

def reference_labels(K, size, meshes):
    """The pixel rules written plainly (no clipping: every vertex in front): snap corners to 1/256, a centre on
    an edge goes to the triangle owning it, 1/z linear in the image, nearest wins, the first mesh on a tie."""
    width, height = size
    xs, ys = np.meshgrid(np.arange(width, dtype=float), np.arange(height, dtype=float))
    labels = np.zeros((height, width), np.uint8)
    depth = np.zeros((height, width))
    for verts, faces, label in meshes:
        verts = np.asarray(verts, float)
        uv = np.round((verts[:, :2] / verts[:, 2:] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]) * 256) / 256
        iz = 1 / verts[:, 2]
        mesh_depth = np.zeros((height, width))
        for f in np.asarray(faces):
            (u0, v0), (u1, v1), (u2, v2) = uv[f]
            z0, z1, z2 = iz[f]
            area = (u1 - u0) * (v2 - v0) - (v1 - v0) * (u2 - u0)
            if area == 0:
                continue
            if area < 0:
                u1, v1, z1, u2, v2, z2, area = u2, v2, z2, u1, v1, z1, -area
            inside = np.ones((height, width), bool)
            weights = []
            for (ua, va), (ub, vb) in (((u1, v1), (u2, v2)), ((u2, v2), (u0, v0)), ((u0, v0), (u1, v1))):
                e = (ub - ua) * (ys - va) - (vb - va) * (xs - ua)  # > 0 inside a positively wound triangle
                owns = (vb - va) < 0 or ((vb - va) == 0 and (ub - ua) > 0)
                inside &= (e > 0) | ((e == 0) & owns)
                weights.append(e)
            z = (weights[0] * z0 + weights[1] * z1 + weights[2] * z2) / area
            mesh_depth = np.where(inside & (z > mesh_depth), z, mesh_depth)
        win = mesh_depth > depth
        labels[win], depth[win] = label, mesh_depth[win]
    return labels


def tube(radius, length, n, z, closed):
    """A tube along the view axis from depth z to z + length, open (or capped) at both ends."""
    t = 2 * np.pi * np.arange(n) / n
    ring = np.c_[radius * np.cos(t), radius * np.sin(t)]
    verts = np.vstack([np.c_[ring, np.full(n, z)], np.c_[ring, np.full(n, z + length)]])
    faces = [f for k in range(n) for f in ((k, (k + 1) % n, n + k), ((k + 1) % n, n + (k + 1) % n, n + k))]
    if closed:
        verts = np.vstack([verts, [[0, 0, z], [0, 0, z + length]]])
        faces += [(2 * n, (k + 1) % n, k) for k in range(n)] + [(2 * n + 1, n + k, n + (k + 1) % n) for k in range(n)]
    return verts, np.array(faces), 1


@pytest.mark.parametrize("closed", [False, True])
def test_far_sides_and_open_insides_follow_the_rules(closed):
    # Seen down its axis, an open tube shows its inside (faces wound away from the camera); a capped one only
    # its front cap. Slightly off-axis so the side walls show too.
    Kt = np.array([[60.0, 0.0, 31.7], [0.0, 60.0, 23.2], [0.0, 0.0, 1.0]])
    verts, faces, _ = tube(0.2, 0.6, 24, 1.0, closed)
    verts = verts + [0.05, -0.03, 0.0]
    meshes = [(verts, faces, 1), (verts + [0.35, 0.1, 0.5], faces, 2)]  # a second tube further back
    out = render_labels(Kt, (64, 48), meshes)
    np.testing.assert_array_equal(out, reference_labels(Kt, (64, 48), meshes))
    assert (out == 1).sum() > 100 and (out == 2).sum() > 100
    assert (out[21, 35] == 1) == closed  # the axis: the front cap, or a look through the open tube


def test_a_posed_hand_and_object_match_the_plain_rules(hand_scene):
    Kh, size, meshes = hand_scene
    scale = 0.125  # 80 x 60 keeps the plain reference quick
    Ks = np.diag([scale, scale, 1.0]) @ Kh
    small = (80, 60)
    out = render_labels(Ks, small, meshes)
    np.testing.assert_array_equal(out, reference_labels(Ks, small, meshes))
    assert (out == 1).sum() > 100 and (out == 2).sum() > 20


def test_exact_depth_ties_go_to_the_mesh_listed_first():
    a = square(2.5, 2.5, 12.5, 9.5, 1.0, 1)
    b = square(2.5, 2.5, 12.5, 9.5, 1.0, 2, flip=True)  # the same square, other winding
    assert set(np.unique(render_labels(K, SIZE, [a, b]))) == {0, 1}
    assert set(np.unique(render_labels(K, SIZE, [b, a]))) == {0, 2}


def test_reused_buffers_give_what_a_fresh_render_gives():
    # Each thread keeps its buffers between calls and clears only what the last frame touched: a sequence of
    # scenes and sizes renders exactly as each scene would on a thread that never rendered anything before.
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(5)
    calls = []
    for _ in range(12):
        size = [(32, 24), (17, 40), (64, 48)][rng.integers(3)]
        meshes = [square(*np.sort(rng.uniform(-4, size[0] + 4, 2)), *np.sort(rng.uniform(-4, size[1] + 4, 2)),
                         rng.uniform(0.5, 2.0), int(rng.integers(1, 5)))[:3] for _ in range(int(rng.integers(0, 4)))]
        calls.append((size, [(v, f, lab) for v, f, lab in meshes]))
    reused = [render_labels(K, size, meshes) for size, meshes in calls]
    for (size, meshes), got in zip(calls, reused):
        with ThreadPoolExecutor(1) as fresh_thread:
            want = fresh_thread.submit(render_labels, K, size, meshes).result()
        np.testing.assert_array_equal(got, want)


def test_batch_equals_frame_by_frame_on_any_number_of_threads(hand_scene):
    Kh, size, (hand, obj) = hand_scene
    rng = np.random.default_rng(9)
    frames, Ks = [], []
    for b in range(7):
        shift = [*rng.normal(0, 0.01, 2), 0.0]
        frames.append([(hand[0] + shift, hand[1], 1), (obj[0] - shift, obj[1], 2)][: 1 + b % 2])
        Ks.append(Kh * [[1 + 0.05 * b], [1], [1]] if b % 3 else Kh)
    want = np.stack([render_labels(Ks[b], size, frames[b]) for b in range(7)])
    for threads in (1, 2, 5):
        np.testing.assert_array_equal(render_labels_batch(Ks, size, frames, threads=threads), want)
    buffer = np.full((7, 480, 640), 77, np.uint8)
    assert render_labels_batch(Ks, size, frames, out=buffer) is buffer
    np.testing.assert_array_equal(buffer, want)
    assert render_labels_batch(K, SIZE, []).shape == (0, 24, 32)
    bad = [frames[0], [(np.zeros((3, 3)), [[0, 1, 5]], 1)]]
    with pytest.raises(ValueError, match=r"frame 1: mesh 0: faces index vertices outside 0\.\.2"):
        render_labels_batch(Kh, size, bad)


def test_silhouettes_are_amodal():
    near = square(2.5, 2.5, 12.5, 12.5, 0.5, 2)
    far = square(7.5, 7.5, 20.5, 20.5, 1.0, 1)  # partly hidden behind the near square
    masks = render_silhouettes(K, SIZE, [near, far])
    assert masks.shape == (2, 24, 32) and masks.dtype == bool
    np.testing.assert_array_equal(masks[0], render_labels(K, SIZE, [near]) > 0)
    np.testing.assert_array_equal(masks[1], render_labels(K, SIZE, [far]) > 0)
    labels = render_labels(K, SIZE, [near, far])
    assert (masks[1] & (labels == 2)).sum() == 5 * 5  # the hidden corner is in the far square's silhouette
    np.testing.assert_array_equal(labels > 0, masks.any(axis=0))
    with pytest.raises(ValueError, match="NaN"):
        render_silhouettes(K, SIZE, [near, (np.full((3, 3), np.inf), [[0, 1, 2]], 1)])


def test_a_mesh_pose_moves_it_as_moving_its_vertices_does(hand_scene):
    Kh, size, (hand, obj) = hand_scene
    R = axis_angle_to_matrix([0.3, -1.1, 0.7])[0]
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = R, [0.01, -0.02, 0.03]
    centred = obj[0] - obj[0].mean(axis=0)
    moved = centred @ R.T + pose[:3, 3] + obj[0].mean(axis=0)
    pose[:3, 3] += obj[0].mean(axis=0)
    want = render_labels(Kh, size, [hand, (moved, obj[1], 2)])
    np.testing.assert_array_equal(render_labels(Kh, size, [hand, (centred, obj[1], 2, pose)]), want)
    np.testing.assert_array_equal(render_labels(Kh, size, [hand, (centred, obj[1], 2, pose[:3])]), want)
    np.testing.assert_array_equal(render_labels_batch(Kh, size, [[hand, (centred, obj[1], 2, pose)]] * 2)[1], want)
    np.testing.assert_array_equal(render_silhouettes(Kh, size, [(centred, obj[1], 2, pose)])[0],
                                  render_silhouettes(Kh, size, [(moved, obj[1], 2)])[0])
    # Clipping happens after the pose: a floor the pose carries half behind the camera.
    floor = np.array([[-0.3, 0.1, 3.0], [0.3, 0.1, 3.0], [0.0, 0.1, -2.0]])
    shift = np.eye(4)
    shift[2, 3] = 1.0
    np.testing.assert_array_equal(render_labels(K, SIZE, [(floor - [0, 0, 1.0], [[0, 1, 2]], 1, shift)]),
                                  render_labels(K, SIZE, [(floor, [[0, 1, 2]], 1)]))
    with pytest.raises(ValueError, match="mesh 0: pose must be a finite"):
        render_labels(K, SIZE, [(floor, [[0, 1, 2]], 1, np.eye(3))])


def test_wide_triangles_cover_exactly_the_pixels_the_rules_give():
    # triangles wider than two 8-pixel steps are drawn over each row's span, not their box: slivers, long
    # horizontal and vertical edges, corners on pixel centres and shared edges must come out as the rules say
    K = np.array([[80.0, 0.0, 47.5], [0.0, 80.0, 35.5], [0.0, 0.0, 1.0]])
    rng = np.random.default_rng(7)
    for trial in range(12):
        z = rng.uniform(1.0, 2.0, (9, 1))
        xy = rng.uniform(-0.7, 0.7, (9, 2)) * z
        if trial % 3 == 0:  # a sliver: two corners close together, one far away
            xy[1] = xy[0] + rng.normal(0, 0.01, 2) * z[1]
        random_tris = (np.c_[xy, z], np.arange(9).reshape(3, 3), 1)
        # an axis-aligned quad with corners on pixel centres (two triangles sharing a diagonal)
        u0, v0, u1, v1 = 10 + trial, 8 + trial, 80 - trial, 60 - trial
        quad = np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]], float)
        zq = 1.5 + 0.1 * trial
        quad_verts = np.c_[(quad - [47.5, 35.5]) / 80.0 * zq, np.full(4, zq)]
        meshes = [random_tris, (quad_verts, np.array([[0, 1, 2], [0, 2, 3]]), 2)]
        out = render_labels(K, (96, 72), meshes)
        np.testing.assert_array_equal(out, reference_labels(K, (96, 72), meshes))
        assert (out == 2).any()
