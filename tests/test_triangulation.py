"""Tests for mocap_core.triangulation: DLT accuracy, weights, missing views, torch, robustness."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mocap_core.triangulation import (
    Triangulation,
    reprojection_error,
    triangulate,
    triangulate_robust,
)

CLOUD_CENTRE = np.array([0.0, 1.0, 0.0])


def _look_at_proj(
    centre: np.ndarray, target: np.ndarray, f: float, cx: float, cy: float
) -> np.ndarray:
    """``K [R | t]`` (3, 4) of an OpenCV camera (x right, y down, z forward) at ``centre``
    looking at ``target`` in a y-up world; written here so the test does not depend on
    mocap_core.cameras."""
    forward = target - centre
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    k = np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
    return k @ np.hstack([rotation, (-rotation @ centre)[:, None]])


def _random_rig(rng: np.random.Generator, n_views: int) -> np.ndarray:
    """``(V, 3, 4)`` cameras 3-5 m from the cloud centre, spread in azimuth, f 800-1500 px."""
    azimuths = rng.uniform(0, 2 * np.pi) + np.arange(n_views) * 2 * np.pi / n_views
    azimuths += rng.uniform(-0.3, 0.3, n_views)
    projs = []
    for azimuth in azimuths:
        distance = rng.uniform(3.0, 5.0)
        elevation = rng.uniform(-0.1, 0.6)
        centre = CLOUD_CENTRE + distance * np.array(
            [
                np.cos(elevation) * np.cos(azimuth),
                np.sin(elevation),
                np.cos(elevation) * np.sin(azimuth),
            ]
        )
        f = rng.uniform(800, 1500)
        projs.append(
            _look_at_proj(centre, CLOUD_CENTRE, f, rng.uniform(900, 1020), rng.uniform(500, 580))
        )
    return np.stack(projs)


def _cloud(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return CLOUD_CENTRE + rng.uniform(-1.0, 1.0, (*shape, 3))


def _project(proj: np.ndarray, points3d: np.ndarray) -> np.ndarray:
    """``(V, ..., 2)`` pixels of ``points3d (..., 3)``."""
    h = np.einsum("vij,...j->v...i", proj[:, :, :3], points3d)
    h = h + proj[:, :, 3].reshape(len(proj), *([1] * (points3d.ndim - 1)), 3)
    return h[..., :2] / h[..., 2:]


# ------------------------------------------------------------------------------------------
# accuracy and methods
# ------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_views=st.integers(2, 8))
def test_clean_data_is_recovered_to_1e9_m(seed: int, n_views: int) -> None:
    rng = np.random.default_rng(seed)
    proj = _random_rig(rng, n_views)
    truth = _cloud(rng, (200,))
    points = _project(proj, truth)
    for method in ("normal", "svd"):
        result = triangulate(points, proj, method=method)
        assert result.shape == (200, 3) and result.dtype == np.float64
        assert np.abs(result - truth).max() < 1e-9, method


def test_svd_and_normal_methods_agree_on_noisy_data() -> None:
    rng = np.random.default_rng(1)
    proj = _random_rig(rng, 4)
    truth = _cloud(rng, (500,))
    points = _project(proj, truth) + rng.normal(0, 1.0, (4, 500, 2))
    normal = triangulate(points, proj)
    svd = triangulate(points, proj, method="svd")
    noise_effect = np.linalg.norm(normal - truth, axis=-1)
    assert 1e-4 < noise_effect.mean() < 1e-2  # the noise does move the points
    # both minimise the same rows; they differ only by the homogeneous constraint,
    # a second-order effect far below the noise-induced error
    assert np.abs(normal - svd).max() < 0.05 * noise_effect.mean()


def test_projection_matrix_scale_and_sign_do_not_matter() -> None:
    rng = np.random.default_rng(2)
    proj = _random_rig(rng, 3)
    truth = _cloud(rng, (100,))
    points = _project(proj, truth) + rng.normal(0, 2.0, (3, 100, 2))
    weights = rng.uniform(0.1, 1.0, (3, 100))
    scaled = proj * np.array([-3.0, 0.01, 250.0])[:, None, None]
    for method in ("normal", "svd"):
        a = triangulate(points, proj, weights, method=method)
        b = triangulate(points, scaled, weights, method=method)
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_float32_accuracy_bound() -> None:
    rng = np.random.default_rng(3)
    worst = 0.0
    for n_views in (2, 4, 8):
        proj = _random_rig(rng, n_views)
        truth = _cloud(rng, (2000,))
        points = _project(proj, truth).astype(np.float32)
        result = triangulate(points, proj.astype(np.float32))
        assert result.dtype == np.float32
        worst = max(worst, float(np.abs(result - truth).max()))
    # documented in the module: float32 pixels carry ~1e-4 px of rounding, i.e. ~1e-6 m
    assert worst < 2e-5


# ------------------------------------------------------------------------------------------
# weights
# ------------------------------------------------------------------------------------------


def test_zero_weight_view_is_ignored_even_with_garbage_or_nan_pixels() -> None:
    rng = np.random.default_rng(4)
    proj = _random_rig(rng, 5)
    truth = _cloud(rng, (300,))
    points = _project(proj, truth) + rng.normal(0, 0.5, (5, 300, 2))
    weights = rng.uniform(0.2, 1.0, (5, 300))
    weights[2] = 0.0
    corrupted = points.copy()
    corrupted[2] = rng.uniform(-1e4, 1e4, (300, 2))
    corrupted[2, :50] = np.nan
    for fn, kwargs in [
        (triangulate, {}),
        (triangulate, {"method": "svd"}),
        (triangulate_robust, {}),
    ]:
        reference = fn(points, proj, weights, **kwargs)
        np.testing.assert_allclose(fn(corrupted, proj, weights, **kwargs), reference, atol=1e-12)
    # the normal equations are translation-equivariant, so this also equals dropping the view
    # (the SVD solution depends slightly on the conditioning centre, which moves with the rig)
    dropped = triangulate(np.delete(points, 2, 0), np.delete(proj, 2, 0), np.delete(weights, 2, 0))
    np.testing.assert_allclose(triangulate(corrupted, proj, weights), dropped, atol=1e-12)


def _orthogonal_two_view_rig(d: float, f: float) -> np.ndarray:
    """Camera A at (0, 0, -d) looking along +z, camera B at (-d, 0, 0) looking along +x."""
    k = np.array([[f, 0.0, 960.0], [0.0, f, 540.0], [0.0, 0.0, 1.0]])
    rot_a = np.eye(3)
    rot_b = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    t = np.array([0.0, 0.0, d])  # -R C is (0, 0, d) for both cameras
    return np.stack([k @ np.hstack([rot_a, t[:, None]]), k @ np.hstack([rot_b, t[:, None]])])


def test_fractional_weights_shift_towards_the_heavier_view_as_hand_derived() -> None:
    d, f = 4.0, 1000.0
    proj = _orthogonal_two_view_rig(d, f)
    # Both views see x = 0 (point at the origin in X and Z) but disagree on the height:
    # view A says y_n = a, view B says y_n = b (normalised image coordinates).
    a, b = 0.004, -0.002
    points = np.array([[960.0, 540.0 + f * a], [960.0, 540.0 + f * b]])
    heights = []
    for alpha, beta in [(0.2, 1.0), (0.5, 1.0), (1.0, 1.0), (1.0, 0.5), (1.0, 0.2)]:
        result = triangulate(points, proj, np.array([alpha, beta]))
        # Hand-derived normal equations of the rows alpha*(a (Z + d) - Y), alpha*(-X),
        # beta*(b (X + d) - Y), beta*(Z) in the unknowns (X, Z, Y).
        a2, b2 = alpha**2, beta**2
        lhs = np.array(
            [
                [a2 + b2 * b * b, 0.0, -b2 * b],
                [0.0, a2 * a * a + b2, -a2 * a],
                [-b2 * b, -a2 * a, a2 + b2],
            ]
        )
        rhs = np.array([-b2 * b * b * d, -a2 * a * a * d, a2 * a * d + b2 * b * d])
        x_, z_, y_ = np.linalg.solve(lhs, rhs)
        np.testing.assert_allclose(result, [x_, y_, z_], atol=1e-12)
        # to first order the height is the w^2-weighted mean of the two views' heights
        assert result[1] == pytest.approx((a2 * a * d + b2 * b * d) / (a2 + b2), abs=1e-4)
        heights.append(result[1])
    # more weight on A (which says "higher") moves the point up, monotonically
    assert all(h1 < h2 for h1, h2 in zip(heights, heights[1:], strict=False))


def test_weights_broadcast_over_size_one_axes() -> None:
    rng = np.random.default_rng(5)
    proj = _random_rig(rng, 3)
    truth = _cloud(rng, (4, 6))
    points = _project(proj, truth) + rng.normal(0, 1.0, (3, 4, 6, 2))
    per_joint = rng.uniform(0.1, 1.0, (3, 1, 6))
    expected = triangulate(points, proj, np.broadcast_to(per_joint, (3, 4, 6)).copy())
    np.testing.assert_allclose(triangulate(points, proj, per_joint), expected, atol=1e-14)


# ------------------------------------------------------------------------------------------
# missing views
# ------------------------------------------------------------------------------------------


def _partially_seen_case() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(6)
    proj = _random_rig(rng, 3)
    truth = _cloud(rng, (4, 5))
    points = _project(proj, truth)
    weights = np.ones((3, 4, 5))
    weights[:2, 1, 2] = 0.0  # seen by one view
    weights[:, 3, 0] = 0.0  # seen by none
    weights[0, 2, 4] = 0.0  # seen by two: still fine
    points[1, 0, 1] = np.nan
    points[2, 0, 1] = np.inf  # NaN/inf pixels count as unseen: one view left
    return points, proj, weights, truth


def test_insufficient_views_raise_naming_count_and_indices() -> None:
    points, proj, weights, _ = _partially_seen_case()
    with pytest.raises(ValueError, match=r"3 point\(s\).*3 seen by fewer than two views") as err:
        triangulate(points, proj, weights)
    assert "(0, 1), (1, 2), (3, 0)" in str(err.value)
    with pytest.raises(ValueError, match="fewer than two views"):
        triangulate_robust(points, proj, weights)
    with pytest.raises(ValueError, match="fewer than two views"):
        triangulate(points[:1], proj[:1])


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("method", ["normal", "svd", "robust"])
def test_insufficient_views_give_nan_and_mask(backend: str, method: str) -> None:
    points, proj, weights, truth = _partially_seen_case()
    if backend == "torch":
        points, weights = torch.from_numpy(points), torch.from_numpy(weights)
    if method == "robust":
        result = triangulate_robust(points, proj, weights, on_insufficient="nan", return_mask=True)
    else:
        result = triangulate(
            points, proj, weights, method=method, on_insufficient="nan", return_mask=True
        )
    assert isinstance(result, Triangulation)
    points3d, valid = (np.asarray(a) for a in result)
    expected_valid = np.ones((4, 5), bool)
    expected_valid[[0, 1, 3], [1, 2, 0]] = False
    np.testing.assert_array_equal(valid, expected_valid)
    assert np.isnan(points3d[~expected_valid]).all()
    assert np.abs(points3d[expected_valid] - truth[expected_valid]).max() < 1e-9


def test_all_points_valid_mask_and_nan_option_without_problems() -> None:
    rng = np.random.default_rng(7)
    proj = _random_rig(rng, 2)
    truth = _cloud(rng, (10,))
    result = triangulate(_project(proj, truth), proj, on_insufficient="nan", return_mask=True)
    assert result.valid.shape == (10,) and result.valid.all()
    assert np.abs(result.points3d - truth).max() < 1e-9


def test_nan_pixels_without_weights_drop_that_view_only() -> None:
    rng = np.random.default_rng(22)
    proj = _random_rig(rng, 4)
    truth = _cloud(rng, (30,))
    points = _project(proj, truth) + rng.normal(0, 1.0, (4, 30, 2))
    with_nan = points.copy()
    with_nan[1, 5] = np.nan
    with_nan[3, 7, 0] = np.inf
    expected = triangulate(points, proj)
    expected[5] = triangulate(points[[0, 2, 3], 5], proj[[0, 2, 3]])
    expected[7] = triangulate(points[:3, 7], proj[:3])
    np.testing.assert_allclose(triangulate(with_nan, proj), expected, atol=1e-12)
    got = triangulate(torch.from_numpy(with_nan), torch.from_numpy(proj))
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("method", ["normal", "svd"])
def test_point_on_the_baseline_is_degenerate(method: str) -> None:
    """Two cameras facing each other: a point on the line joining them has collinear rays."""
    k = np.array([[1000.0, 0.0, 960.0], [0.0, 1000.0, 540.0], [0.0, 0.0, 1.0]])
    facing_back = np.diag([-1.0, 1.0, -1.0])  # at (0, 0, 4) looking along -z
    proj = np.stack(
        [
            k @ np.hstack([np.eye(3), [[0.0], [0.0], [4.0]]]),
            k @ np.hstack([facing_back, [[0.0], [0.0], [4.0]]]),
        ]
    )
    truth = np.array([[0.0, 0.0, 0.5], [0.3, 0.2, 0.1]])
    points = _project(proj, truth)
    result = triangulate(points, proj, method=method, on_insufficient="nan", return_mask=True)
    np.testing.assert_array_equal(result.valid, [False, True])
    assert np.isnan(result.points3d[0]).all()
    np.testing.assert_allclose(result.points3d[1], truth[1], atol=1e-9)
    with pytest.raises(ValueError, match="0 seen by fewer than two views.*1 with degenerate"):
        triangulate(points, proj, method=method)


# ------------------------------------------------------------------------------------------
# shapes
# ------------------------------------------------------------------------------------------


def test_arbitrary_leading_dims_match_the_flat_result() -> None:
    rng = np.random.default_rng(8)
    proj = _random_rig(rng, 4)
    truth = _cloud(rng, (7, 22))
    points = _project(proj, truth) + rng.normal(0, 1.0, (4, 7, 22, 2))
    weights = rng.uniform(0.1, 1.0, (4, 7, 22))
    result = triangulate(points, proj, weights)
    flat = triangulate(points.reshape(4, -1, 2), proj, weights.reshape(4, -1))
    assert result.shape == (7, 22, 3)
    np.testing.assert_array_equal(result.reshape(-1, 3), flat)
    robust = triangulate_robust(points, proj, weights, return_mask=True)
    assert robust.points3d.shape == (7, 22, 3) and robust.valid.shape == (7, 22)
    errors = reprojection_error(result, points, proj)
    assert errors.shape == (4, 7, 22)
    np.testing.assert_allclose(errors[:, 3], reprojection_error(result[3], points[:, 3], proj))


def test_single_point_and_empty_batch() -> None:
    rng = np.random.default_rng(9)
    proj = _random_rig(rng, 3)
    truth = _cloud(rng, ())
    single = triangulate(_project(proj, truth), proj, return_mask=True)
    assert single.points3d.shape == (3,) and single.valid.shape == () and bool(single.valid)
    assert np.abs(single.points3d - truth).max() < 1e-9
    empty = triangulate(np.zeros((3, 0, 17, 2)), proj)
    assert empty.shape == (0, 17, 3)
    assert triangulate_robust(np.zeros((3, 0, 2)), proj).shape == (0, 3)
    assert triangulate(torch.zeros(3, 0, 2, dtype=torch.float64), proj).shape == (0, 3)


def test_integer_pixels_are_accepted_as_float64() -> None:
    rng = np.random.default_rng(10)
    proj = _random_rig(rng, 3)
    points = np.rint(_project(proj, _cloud(rng, (5,)))).astype(np.int32)
    result = triangulate(points, proj)
    assert result.dtype == np.float64
    np.testing.assert_allclose(result, triangulate(points.astype(np.float64), proj), atol=0)


def test_bad_inputs_raise_clear_errors() -> None:
    rng = np.random.default_rng(11)
    proj = _random_rig(rng, 3)
    points = _project(proj, _cloud(rng, (5,)))
    with pytest.raises(ValueError, match=r"points must have shape \(V, \.\.\., 2\)"):
        triangulate(np.zeros((3, 5, 3)), proj)
    with pytest.raises(ValueError, match=r"points must have shape"):
        triangulate(np.zeros(2), proj)
    with pytest.raises(ValueError, match=r"proj must have shape \(V, 3, 4\) = \(3, 3, 4\)"):
        triangulate(points, proj[:2])
    with pytest.raises(ValueError, match=r"proj must have shape"):
        triangulate(points, proj[:, :, :3])
    with pytest.raises(ValueError, match=r"weights must have shape \(V, \.\.\.\) = \(3, 5\)"):
        triangulate(points, proj, np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"weights must have shape"):
        triangulate(points, proj, np.ones(3))
    with pytest.raises(ValueError, match=r"weights must lie in \[0, 1\]"):
        triangulate(points, proj, np.full((3, 5), 1.5))
    with pytest.raises(ValueError, match=r"weights must lie in \[0, 1\]"):
        triangulate(points, proj, np.full((3, 5), np.nan))
    singular = proj.copy()
    singular[1, :, :3] = np.outer(singular[1, :, 0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"proj\[\[1\]\] is not a finite projective camera"):
        triangulate(points, singular)
    with pytest.raises(ValueError, match=r"proj\[\[2\]\]"):
        triangulate(points, np.where(np.arange(3)[:, None, None] == 2, np.nan, proj))
    with pytest.raises(ValueError, match="method must be one of"):
        triangulate(points, proj, method="qr")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_insufficient must be one of"):
        triangulate(points, proj, on_insufficient="skip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="loss must be one of"):
        triangulate_robust(points, proj, loss="l1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scale_px must be a positive"):
        triangulate_robust(points, proj, scale_px=0.0)
    with pytest.raises(TypeError, match="points must hold real numbers"):
        triangulate(points.astype(complex), proj)
    with pytest.raises(TypeError, match="pass points as a torch tensor"):
        triangulate(points, torch.from_numpy(proj))
    with pytest.raises(TypeError, match="floating tensor"):
        triangulate(torch.from_numpy(points).long(), proj)
    with pytest.raises(ValueError, match=r"weights must lie in \[0, 1\]"):
        triangulate(torch.from_numpy(points), proj, torch.full((3, 5), -0.5))
    with pytest.raises(ValueError, match=r"proj\[\[1\]\]"):
        triangulate(torch.from_numpy(points), torch.from_numpy(singular))


# ------------------------------------------------------------------------------------------
# torch
# ------------------------------------------------------------------------------------------


def test_torch_matches_numpy_and_keeps_dtype() -> None:
    rng = np.random.default_rng(12)
    proj = _random_rig(rng, 4)
    truth = _cloud(rng, (6, 22))
    points = _project(proj, truth) + rng.normal(0, 1.0, (4, 6, 22, 2))
    points[0, 2, :5] += 100.0  # an outlier view for the robust path
    weights = rng.uniform(0.1, 1.0, (4, 6, 22))
    cases = [
        (triangulate, {}),
        (triangulate, {"method": "svd"}),
        (triangulate_robust, {}),
        (triangulate_robust, {"loss": "huber", "scale_px": 2.0}),
    ]
    for fn, kwargs in cases:
        expected = fn(points, proj, weights, **kwargs)
        got = fn(
            torch.from_numpy(points), torch.from_numpy(proj), torch.from_numpy(weights), **kwargs
        )
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-9, err_msg=str(kwargs))
    got32 = triangulate(torch.from_numpy(points).float(), proj, torch.from_numpy(weights).float())
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), triangulate(points, proj, weights), atol=1e-4)


def test_torch_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(13)
    proj = torch.from_numpy(_random_rig(rng, 3)).requires_grad_()
    truth = _cloud(rng, (4,))
    points = torch.from_numpy(
        _project(proj.detach().numpy(), truth) + rng.normal(0, 1.0, (3, 4, 2))
    )
    points.requires_grad_()
    weights = torch.from_numpy(rng.uniform(0.3, 0.9, (3, 4))).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda p, P, w: triangulate(p, P, w), (points, proj, weights), atol=1e-6
    )


def test_torch_masked_points_do_not_poison_gradients() -> None:
    points_np, proj, weights_np, truth = _partially_seen_case()
    points = torch.from_numpy(points_np).requires_grad_()
    weights = torch.from_numpy(weights_np).requires_grad_()
    proj_t = torch.from_numpy(proj).requires_grad_()
    for fn in (triangulate, triangulate_robust):
        result = fn(points, proj_t, weights, on_insufficient="nan", return_mask=True)
        loss = (
            (result.points3d[result.valid] - torch.from_numpy(truth)[result.valid]).square().sum()
        )
        loss = loss + result.points3d[result.valid].sum()
        points.grad = weights.grad = proj_t.grad = None
        loss.backward()
        assert torch.isfinite(proj_t.grad).all()
        assert torch.isfinite(weights.grad).all()
        seen = torch.isfinite(points).all(-1) & (weights > 0)
        assert torch.isfinite(points.grad[seen]).all()


# ------------------------------------------------------------------------------------------
# robust variant
# ------------------------------------------------------------------------------------------


def _outlier_case(n_views: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """0.5 px noise everywhere; 30% of the points have one random view off by 100 px."""
    rng = np.random.default_rng(14 + n_views)
    proj = _random_rig(rng, n_views)
    truth = _cloud(rng, (400,))
    points = _project(proj, truth) + rng.normal(0, 0.5, (n_views, 400, 2))
    corrupted = rng.random(400) < 0.3
    bad_view = rng.integers(0, n_views, 400)
    direction = rng.normal(size=(400, 2))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    points[bad_view[corrupted], np.flatnonzero(corrupted)] += 100.0 * direction[corrupted]
    return points, proj, truth, corrupted


@pytest.mark.parametrize("n_views", [4, 6, 8])
def test_robust_survives_a_100px_outlier_view(n_views: int) -> None:
    points, proj, truth, corrupted = _outlier_case(n_views)
    plain_error = np.linalg.norm(triangulate(points, proj) - truth, axis=-1)
    robust_error = np.linalg.norm(triangulate_robust(points, proj) - truth, axis=-1)
    assert np.median(plain_error[corrupted]) > 0.05  # plain DLT is dragged several cm away
    assert robust_error.max() < 0.01
    # inliers keep DLT-level accuracy (0.5 px noise at ~4 m is ~1-2 mm)
    assert np.median(robust_error[~corrupted]) < 1.1 * np.median(plain_error[~corrupted])


def test_robust_with_three_views_fixes_most_outliers() -> None:
    """With three views a 100 px error can sometimes be explained equally well by blaming
    another view (a smaller error along an epipolar line), so a few points stay wrong."""
    points, proj, truth, corrupted = _outlier_case(3)
    robust_error = np.linalg.norm(triangulate_robust(points, proj) - truth, axis=-1)
    assert (robust_error[corrupted] < 0.01).mean() > 0.9
    assert (robust_error[~corrupted] < 0.01).all()


def test_robust_huber_bounds_but_does_not_remove_outlier_pull() -> None:
    points, proj, truth, corrupted = _outlier_case(6)
    plain_error = np.linalg.norm(triangulate(points, proj) - truth, axis=-1)
    huber = triangulate_robust(points, proj, loss="huber", scale_px=2.0)
    cauchy = triangulate_robust(points, proj, loss="cauchy", scale_px=2.0)
    huber_error = np.linalg.norm(huber - truth, axis=-1)
    cauchy_error = np.linalg.norm(cauchy - truth, axis=-1)
    assert np.median(huber_error[corrupted]) < 0.2 * np.median(plain_error[corrupted])
    assert np.median(cauchy_error[corrupted]) <= np.median(huber_error[corrupted])


def test_robust_is_exact_on_clean_data_and_honours_zero_weights() -> None:
    rng = np.random.default_rng(20)
    proj = _random_rig(rng, 4)
    truth = _cloud(rng, (50,))
    points = _project(proj, truth)
    assert np.abs(triangulate_robust(points, proj) - truth).max() < 1e-9
    weights = np.ones((4, 50))
    weights[1] = 0.0
    points[1] = 1e6
    assert np.abs(triangulate_robust(points, proj, weights) - truth).max() < 1e-9
    assert np.abs(triangulate_robust(points[[0, 2]], proj[[0, 2]]) - truth).max() < 1e-9


def test_robust_two_views_minimises_pixel_error() -> None:
    """With two views there is nothing to reject: IRLS turns the algebraic DLT into a pixel
    reprojection fit, so its summed squared pixel error is no larger than plain DLT's."""
    rng = np.random.default_rng(21)
    proj = _random_rig(rng, 2)
    truth = _cloud(rng, (200,))
    points = _project(proj, truth) + rng.normal(0, 2.0, (2, 200, 2))
    plain = triangulate(points, proj)
    robust = triangulate_robust(points, proj, scale_px=1e6)  # scale >> errors: plain L2
    plain_cost = (reprojection_error(plain, points, proj) ** 2).sum(0)
    robust_cost = (reprojection_error(robust, points, proj) ** 2).sum(0)
    assert (robust_cost <= plain_cost + 1e-9).all()
    assert robust_cost.sum() < plain_cost.sum()


# ------------------------------------------------------------------------------------------
# reprojection error
# ------------------------------------------------------------------------------------------


def test_reprojection_error_hand_computed_numpy_and_torch() -> None:
    proj = _orthogonal_two_view_rig(4.0, 1000.0)
    point = np.array([[0.0, 0.0, 0.0], [0.4, -0.2, 0.0]])
    # camera A projects (0.4, -0.2, 0) to (960 + 1000 * 0.1, 540 - 1000 * 0.05)
    observed = np.array(
        [[[963.0, 544.0], [1060.0, 490.0]], [[960.0, 540.0], [960.0, 540.0 - 1000 * 0.2 / 4.4]]]
    )
    expected = np.array([[5.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(reprojection_error(point, observed, proj), expected, atol=1e-9)
    got = reprojection_error(torch.from_numpy(point), torch.from_numpy(observed), proj)
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-9)
    with pytest.raises(ValueError, match=r"points must have shape \(V, \*points3d.shape"):
        reprojection_error(point, observed[:, :1], proj)
