"""Tests of the per-view motion representation and its z-score statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mocap_core.representation import (
    MIN_BOX_FRACTION,
    FeatureStats,
    FeatureStatsAccumulator,
    decode_global,
    decode_local,
    encode_global,
    encode_local,
    feature_dim,
    normalized_to_pixels,
    pixels_to_normalized,
    to_channels_first,
    to_channels_last,
)

# Three joints on a landscape 200 x 100 image (S = 200, v' = v + 50): the root maps to the
# padded centre, joint 1 lies 10 px right, joint 2 20 px up. w = 20, h = 40, s = 1.2 * 40 = 48.
HAND_PIXELS = np.array([[[100.0, 50.0], [110.0, 50.0], [100.0, 30.0]]])
HAND_SIZE = (200, 100)
HAND_LOCAL = np.array([[0.0, 0.0, 20 / 48, 0.0, 0.0, -40 / 48, 2 * 48 / 200 - 1, 2 * 48 / 200 - 1]])
HAND_GLOBAL = np.array([[0.0, 0.0, 0.1, 0.0, 0.0, -0.2, 2 * 48 / 200 - 1, 2 * 48 / 200 - 1]])


def test_feature_dim() -> None:
    assert feature_dim(22) == 46
    assert feature_dim(18) == 38
    with pytest.raises(ValueError, match="num_joints"):
        feature_dim(1)
    with pytest.raises(TypeError, match="num_joints"):
        feature_dim(2.0)  # type: ignore[arg-type]


def test_encode_local_hand_computed() -> None:
    np.testing.assert_allclose(encode_local(HAND_PIXELS, HAND_SIZE), HAND_LOCAL, atol=1e-12)
    np.testing.assert_allclose(decode_local(HAND_LOCAL, HAND_SIZE), HAND_PIXELS, atol=1e-12)


def test_portrait_image_pads_left_and_right() -> None:
    # The same pose transposed on a 100 x 200 image: S = 200 and u' = u + 50.
    pixels = HAND_PIXELS[..., ::-1].copy()
    features = encode_local(pixels, (100, 200))
    np.testing.assert_allclose(features[0, :2], [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(features[0, 2:6], [0.0, 20 / 48, -40 / 48, 0.0], atol=1e-12)
    np.testing.assert_allclose(features[0, 6:], [2 * 48 / 200 - 1] * 2, atol=1e-12)


def test_encode_global_hand_computed() -> None:
    np.testing.assert_allclose(encode_global(HAND_PIXELS, HAND_SIZE), HAND_GLOBAL, atol=1e-12)
    np.testing.assert_allclose(decode_global(HAND_GLOBAL, HAND_SIZE), HAND_PIXELS, atol=1e-12)


def _pose(seed: int, frames: int, joints: int, width: int, height: int) -> np.ndarray:
    """A random pose around a random root, joints within a body-sized spread, some outside
    the image."""
    rng = np.random.default_rng(seed)
    root = rng.uniform([-0.1 * width, -0.1 * height], [1.1 * width, 1.1 * height], (frames, 1, 2))
    spread = rng.uniform(1.0, 0.5 * max(width, height))
    return root + rng.normal(0.0, spread, (frames, joints, 2)) * rng.uniform(0, 1, (frames, 1, 1))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    frames=st.integers(1, 6),
    joints=st.integers(2, 25),
    short_side=st.integers(16, 3000),
    extra=st.integers(0, 2000),
    orientation=st.sampled_from(["landscape", "portrait", "square"]),
)
def test_decode_inverts_encode(
    seed: int, frames: int, joints: int, short_side: int, extra: int, orientation: str
) -> None:
    width, height = {
        "landscape": (short_side + extra + 1, short_side),
        "portrait": (short_side, short_side + extra + 1),
        "square": (short_side, short_side),
    }[orientation]
    pixels = _pose(seed, frames, joints, width, height)
    local = encode_local(pixels, (width, height))
    assert local.shape == (frames, feature_dim(joints))
    np.testing.assert_allclose(decode_local(local, (width, height)), pixels, rtol=0, atol=1e-9)
    glob = encode_global(pixels, (width, height))
    np.testing.assert_allclose(decode_global(glob, (width, height)), pixels, rtol=0, atol=1e-9)
    # Local coordinates stay inside the box, i.e. within 1 / 1.2 of the root.
    assert np.all(np.abs(local[:, 2 : 2 * joints]) <= 1 / 1.2 + 1e-12)
    # Both encodings carry the same scale slot.
    np.testing.assert_allclose(local[:, -2:], glob[:, -2:], atol=1e-12)


def test_batched_image_sizes_broadcast() -> None:
    sizes = np.array([[640, 480], [480, 640], [500, 500]])
    pixels = np.stack([_pose(i, 4, 22, *sizes[i]) for i in range(3)])  # (V, T, J, 2)
    batched = encode_local(pixels, sizes)
    for v in range(3):
        np.testing.assert_allclose(batched[v], encode_local(pixels[v], sizes[v]), atol=1e-12)
    np.testing.assert_allclose(decode_local(batched, sizes), pixels, atol=1e-9)


def test_missing_joints_do_not_widen_the_box() -> None:
    pixels = _pose(3, 5, 6, 640, 480)
    visible = np.ones((5, 6), bool)
    visible[:, 4] = False
    far_away = pixels.copy()
    far_away[:, 4] = [1e5, -1e5]
    with_nan = pixels.copy()
    with_nan[:, 4] = np.nan
    reference = encode_local(np.delete(pixels, 4, axis=1), (640, 480))
    for variant in (pixels, far_away, with_nan):
        features = encode_local(variant, (640, 480), visible)
        np.testing.assert_array_equal(features[:, 8:10], 0.0)
        np.testing.assert_allclose(np.delete(features, [8, 9], axis=1), reference, atol=1e-12)
        glob = encode_global(variant, (640, 480), visible)
        assert np.all(np.isfinite(glob))
        np.testing.assert_allclose(glob[:, 8:10], glob[:, 0:2], atol=1e-12)  # on the root


def test_nan_at_missing_joints_keeps_gradients_finite() -> None:
    pixels = torch.tensor(_pose(4, 3, 5, 640, 480))
    pixels[:, 2] = torch.nan
    pixels.requires_grad_(True)
    visible = torch.ones(3, 5, dtype=torch.bool)
    visible[:, 2] = False
    encode_local(pixels, (640, 480), visible).sum().backward()
    assert pixels.grad is not None
    assert torch.isfinite(pixels.grad).all()
    assert torch.all(pixels.grad[:, 2] == 0)


def test_degenerate_box_is_floored() -> None:
    pixels = np.full((2, 4, 2), 321.0)  # every joint on the root
    features = encode_local(pixels, (640, 480))
    assert np.all(np.isfinite(features))
    np.testing.assert_array_equal(features[:, 2:8], 0.0)
    np.testing.assert_allclose(features[:, 8:], 2 * MIN_BOX_FRACTION - 1, atol=1e-15)
    np.testing.assert_allclose(decode_local(features, (640, 480)), pixels, atol=1e-9)
    # No visible joint besides the root: the same floor.
    only_root = np.zeros((2, 4), bool)
    only_root[:, 0] = True
    features = encode_local(_pose(5, 2, 4, 640, 480), (640, 480), only_root)
    np.testing.assert_allclose(features[:, 8:], 2 * MIN_BOX_FRACTION - 1, atol=1e-15)


def test_torch_matches_numpy_and_keeps_dtype() -> None:
    pixels = _pose(6, 7, 18, 1920, 1080)
    expected = encode_local(pixels, (1920, 1080))
    as_double = encode_local(torch.tensor(pixels), torch.tensor([1920, 1080]))
    assert isinstance(as_double, torch.Tensor) and as_double.dtype == torch.float64
    np.testing.assert_allclose(as_double.numpy(), expected, atol=1e-12)
    as_float = encode_local(torch.tensor(pixels, dtype=torch.float32), (1920, 1080))
    assert as_float.dtype == torch.float32
    np.testing.assert_allclose(as_float.numpy(), expected, atol=1e-5)
    decoded = decode_local(as_float, (1920, 1080))
    assert decoded.dtype == torch.float32
    np.testing.assert_allclose(decoded.numpy(), pixels, atol=2e-3)
    assert encode_local(pixels.astype(np.float32), (1920, 1080)).dtype == np.float32


def test_decode_reads_scale_channels_separately() -> None:
    features = HAND_LOCAL.copy()
    features[0, 7] = 2 * 96 / 200 - 1  # y box doubled: only y offsets double
    decoded = decode_local(features, HAND_SIZE)
    np.testing.assert_allclose(decoded[0, 1], [110.0, 50.0], atol=1e-12)
    np.testing.assert_allclose(decoded[0, 2], [100.0, 10.0], atol=1e-12)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="pixels"):
        encode_local(np.zeros((4, 3)), (640, 480))
    with pytest.raises(ValueError, match="root and at least one"):
        encode_local(np.zeros((4, 1, 2)), (640, 480))
    with pytest.raises(ValueError, match="image_size"):
        encode_local(np.zeros((4, 3, 2)), (640, 0))
    with pytest.raises(ValueError, match="image_size"):
        encode_local(np.zeros((4, 3, 2)), (640, 480, 3))
    with pytest.raises(TypeError, match="visible"):
        encode_local(np.zeros((4, 3, 2)), (640, 480), np.ones((4, 3)))
    with pytest.raises(ValueError, match="visible"):
        encode_local(np.zeros((4, 3, 2)), (640, 480), np.ones((4, 2), bool))
    with pytest.raises(ValueError, match="channels"):
        decode_local(np.zeros((4, 7)), (640, 480))


def test_pixels_to_normalized() -> None:
    K = np.array([[1000.0, 0.0, 640.0], [0.0, 900.0, 360.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(pixels_to_normalized([1640.0, 270.0], K), [1.0, -0.1])
    np.testing.assert_allclose(normalized_to_pixels([1.0, -0.1], K), [1640.0, 270.0])
    # Padding shifts pixels and principal point alike (1280 x 720 -> 1280 x 1280).
    padded_K = K.copy()
    padded_K[1, 2] += (1280 - 720) / 2
    pixels = _pose(7, 3, 5, 1280, 720)
    padded = pixels + [0.0, (1280 - 720) / 2]
    np.testing.assert_allclose(
        pixels_to_normalized(pixels, K), pixels_to_normalized(padded, padded_K), atol=1e-12
    )
    # Skew is honoured, per-view K broadcasts with inserted axes, torch follows.
    Ks = np.stack([K, K * [[1.1, 0.0, 1.0], [1.0, 0.9, 1.0], [1.0, 1.0, 1.0]], K])
    Ks[1, 0, 1] = 5.0
    views = np.stack([pixels] * 3)  # (V, T, J, 2)
    normalized = pixels_to_normalized(torch.tensor(views), torch.tensor(Ks)[:, None, None])
    assert isinstance(normalized, torch.Tensor)
    np.testing.assert_allclose(
        normalized_to_pixels(normalized, torch.tensor(Ks)[:, None, None]).numpy(), views, atol=1e-9
    )
    x, y = normalized[1].numpy()[..., 0], normalized[1].numpy()[..., 1]
    np.testing.assert_allclose(views[1, ..., 0], Ks[1, 0, 0] * x + 5.0 * y + Ks[1, 0, 2])
    with pytest.raises(ValueError, match="K"):
        pixels_to_normalized(pixels, np.eye(2))


def test_channel_layout_helpers() -> None:
    features = np.arange(2 * 3 * 5 * 46.0).reshape(2, 3, 5, 46)
    first = to_channels_first(features)
    assert first.shape == (2, 3, 46, 5)
    assert first[1, 2, 7, 4] == features[1, 2, 4, 7]
    np.testing.assert_array_equal(to_channels_last(first), features)
    assert to_channels_first(torch.tensor(features)).shape == (2, 3, 46, 5)
    with pytest.raises(ValueError):
        to_channels_first(np.zeros(3))


def test_feature_stats_fit_matches_numpy() -> None:
    rng = np.random.default_rng(8)
    data = rng.normal([1.0, -2.0, 0.5], [0.1, 3.0, 1.0], (1000, 3))
    stats = FeatureStats.fit(data)
    np.testing.assert_allclose(stats.mean, data.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(stats.std, data.std(axis=0), atol=1e-12)


def test_feature_stats_streaming_weights_and_merge() -> None:
    rng = np.random.default_rng(9)
    data = rng.normal(1e3, 2.0, (600, 4))  # a large offset would expose E[x^2] - E[x]^2
    weights = rng.integers(0, 4, 600).astype(float)
    repeated = np.repeat(data, weights.astype(int), axis=0)
    expected = FeatureStats.fit(repeated)

    streamed = FeatureStatsAccumulator()
    for chunk in range(0, 600, 70):
        streamed.update(data[chunk : chunk + 70], weights[chunk : chunk + 70])
    first, second = FeatureStatsAccumulator(), FeatureStatsAccumulator()
    first.update(torch.tensor(data[:250]), torch.tensor(weights[:250]))
    second.update(data[250:], weights[250:])
    for stats in (streamed.finalize(), first.merge(second).finalize()):
        np.testing.assert_allclose(stats.mean, expected.mean, rtol=1e-13)
        np.testing.assert_allclose(stats.std, expected.std, rtol=1e-9)


def test_feature_stats_zero_weight_rows_are_ignored() -> None:
    data = np.array([[1.0, 2.0], [3.0, 4.0], [np.nan, np.nan]])
    stats = FeatureStats.fit(data, weights=np.array([1.0, 1.0, 0.0]))
    np.testing.assert_allclose(stats.mean, [2.0, 3.0])
    np.testing.assert_allclose(stats.std, [1.0, 1.0])
    with pytest.raises(ValueError, match="non-finite"):
        FeatureStats.fit(data)
    with pytest.raises(ValueError, match="no data"):
        FeatureStats.fit(data, weights=np.zeros(3))
    with pytest.raises(ValueError, match="weights"):
        FeatureStats.fit(data[:2], weights=np.array([1.0, -1.0]))


def test_feature_stats_floor_and_normalize_round_trip() -> None:
    rng = np.random.default_rng(10)
    features = rng.normal(0.0, 0.3, (200, 46))
    features[:, 5] = 0.25  # a constant channel
    stats = FeatureStats.fit(features)
    assert stats.std[5] == pytest.approx(1e-3)
    normalized = stats.normalize(features)
    np.testing.assert_allclose(normalized.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.delete(normalized.std(axis=0), 5), 1.0, atol=1e-12)

    layout = torch.tensor(to_channels_first(features.reshape(2, 2, 50, 46)), dtype=torch.float32)
    z = stats.normalize(layout, channel_axis=-2)
    assert z.dtype == torch.float32 and z.shape == layout.shape
    np.testing.assert_allclose(to_channels_last(z.numpy()).reshape(200, 46), normalized, atol=1e-4)
    torch.testing.assert_close(stats.denormalize(z, channel_axis=-2), layout)
    with pytest.raises(ValueError, match="channels"):
        stats.normalize(layout)


def test_feature_stats_dict_round_trip() -> None:
    stats = FeatureStats(mean=np.array([0.5, -1.0]), std=np.array([2.0, 0.25]))
    restored = FeatureStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    np.testing.assert_array_equal(restored.mean, stats.mean)
    np.testing.assert_array_equal(restored.std, stats.std)
    with pytest.raises(ValueError, match="std"):
        FeatureStats(mean=np.zeros(2), std=np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="missing"):
        FeatureStats.from_dict({"mean": [0.0]})
