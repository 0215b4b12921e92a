"""The training Dataset over prepared stores, its step sampler and DataLoader workers."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import random_sequences, write_tiny_store
from torch.utils.data import DataLoader

from data_catalog.convert import CONTACT_HEIGHT_M
from data_catalog.store import PreparedSequence, SplitRule, open_store
from data_catalog.training_dataset import (
    StepBatchSampler,
    TrainingWindows,
    dataset_fingerprints,
    validation_batches,
)
from data_catalog.windows import window_starts
from mocap_core.joint_sets import get_joint_set
from mocap_core.normalize import ground
from mocap_core.procedural import procedural_walk
from mocap_core.skeleton_mapping import apply_mapping, get_skeleton_mapping
from mocap_core.training_data import SAMPLE_KEYS, SceneConfig

# Sequence lengths of the 3D store: a long one, two medium, one shorter than the window and
# one too short to give any window (below min_frames = 30).
LENGTHS_3D = (200, 130, 95, 45, 20)
WINDOW = 64
CONFIG = SceneConfig(pointmap_size=16)
ALL_TRAIN = SplitRule(test_fraction=0.0, val_fraction=0.0)


def walk_sequence(index: int, num_frames: int, joint_sets: tuple[str, ...]) -> PreparedSequence:
    """A procedural walk mapped to the store joint sets, grounded like the preparation does."""
    motion = procedural_walk(num_frames, seed=index, turn_deg_per_s=15.0 * index)
    joints, valid = {}, {}
    offset = None
    for name in joint_sets:
        mapped, _ = apply_mapping(
            get_skeleton_mapping("bandai_namco", name),
            motion.joint_names,
            motion.positions,
            motion.global_rotations,
        )
        if offset is None:
            _, offset = ground(
                mapped, get_joint_set(name).foot_joints, foot_height=CONTACT_HEIGHT_M[name]
            )
        mapped[..., 1] += offset
        joints[name] = mapped.astype(np.float32)
        # Measured and derived joints alike are valid (data_catalog.convert).
        valid[name] = np.isfinite(mapped).all(axis=-1)
    key = f"walk{index:02d}.bvh"
    return PreparedSequence(
        source_key=key,
        source_sha256=hashlib.sha256(key.encode()).hexdigest(),
        joints=joints,
        valid=valid,
        original_fps=30.0,
    )


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stores")
    both = ("smpl22", "coco17")
    walks = [walk_sequence(i, n, both) for i, n in enumerate(LENGTHS_3D)]
    # The left hip of the second walk is lost for its first 60 frames.
    walks[1].valid["coco17"][:60, 11] = False
    # The nose of the third walk is never known.
    walks[2].valid["coco17"][:, 0] = False
    write_tiny_store(root / "walks", walks, joint_sets=both, split_rule=ALL_TRAIN)
    smpl_only = [walk_sequence(i, 80, ("smpl22",)) for i in range(2)]
    write_tiny_store(root / "smpl_only", smpl_only, split_rule=ALL_TRAIN)
    tracks = random_sequences(3, [90, 70], joint_sets=("coco17",), kind="2d")
    write_tiny_store(
        root / "tracks", tracks, kind="2d", joint_sets=("coco17",), split_rule=ALL_TRAIN
    )
    return {"walks": root / "walks", "smpl_only": root / "smpl_only", "tracks": root / "tracks"}


def expected_windows(lengths: tuple[int, ...], window: int, slack: int, stride: int) -> int:
    return sum(
        len(window_starts(n, window + slack, stride, min(CONFIG.min_frames, window)))
        for n in lengths
    )


def test_index_over_stores_and_sample_contract(stores: dict[str, Path]) -> None:
    dataset = TrainingWindows([stores["walks"]], "smpl22", CONFIG, WINDOW, num_views=4)
    assert dataset.slack == WINDOW // 4
    assert dataset.num_windows == len(dataset) == expected_windows(LENGTHS_3D, WINDOW, 16, WINDOW)
    sample = dataset[0]
    assert tuple(sample) == SAMPLE_KEYS
    assert sample["local"].shape == (4, WINDOW, 46) and sample["pointmap"].shape == (4, 16, 16, 3)
    assert sample["camera_known"] and 30 <= sample["length"] <= WINDOW
    # A window never crosses a sequence boundary: every sample's motion is a single walk.
    steps = np.linalg.norm(np.diff(sample["joints"][: sample["length"], 0], axis=0), axis=-1)
    assert steps.max() < 0.2


def test_samples_are_functions_of_seed_and_index(stores: dict[str, Path]) -> None:
    dataset = TrainingWindows([stores["walks"]], "smpl22", CONFIG, WINDOW, num_views=1, seed=3)
    again = TrainingWindows([stores["walks"]], "smpl22", CONFIG, WINDOW, num_views=1, seed=3)
    other_seed = TrainingWindows([stores["walks"]], "smpl22", CONFIG, WINDOW, num_views=1, seed=4)
    n = dataset.num_windows
    first, same = dataset[2], again[2]
    for key in SAMPLE_KEYS:
        np.testing.assert_array_equal(first[key], same[key])
    # The same window in a later epoch, and another seed: another scene.
    assert dataset.locate(2) == dataset.locate(2 + 5 * n)
    later = dataset[2 + 5 * n]
    assert not np.allclose(first["R"], later["R"])
    assert not np.allclose(first["R"], other_seed[2]["R"])
    with pytest.raises(IndexError):
        dataset[-1]


def test_coco17_pelvis_from_a_coco17_store(stores: dict[str, Path]) -> None:
    dataset = TrainingWindows([stores["walks"]], "coco17_pelvis", CONFIG, 150, num_views=1, slack=0)
    for index in range(dataset.num_windows):
        sample = dataset[index]
        assert sample["local"].shape == (1, 150, 38)
        n = int(sample["length"])
        joints = sample["joints"][:n]
        np.testing.assert_allclose(joints[:, 0], joints[:, 12:14].mean(axis=1), atol=1e-5)
        # The nose (slot 1, after the pelvis) is supervised exactly where it is known.
        nose_known = dataset.window_info(index)["sequence_row"] != 2
        nose = sample["feature_mask"][0, :n, 2:4]
        assert nose.all() if nose_known else not nose.any()
        assert sample["feature_mask"][0, :n, 4:].all()
    # Walk 1 (130 frames) lost its left hip for 60 frames, so its pelvis too: those frames
    # cannot be encoded and are cut, leaving at most 70.
    hipless = [i for i in range(dataset.num_windows) if dataset.window_info(i)["sequence_row"] == 1]
    assert len(hipless) == 1 and dataset.window_info(hipless[0])["frames"] == 130
    assert 30 <= dataset[hipless[0]]["length"] <= 70


def test_bad_configurations_fail_with_the_store_named(stores: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=r"smpl_only.*coco17"):
        TrainingWindows([stores["walks"], stores["smpl_only"]], "coco17_pelvis", CONFIG, 64, 1)
    with pytest.raises(ValueError, match=r"tracks.*2D-track.*stage 1"):
        TrainingWindows([stores["walks"], stores["tracks"]], "coco17_pelvis", CONFIG, 64, 4)
    with pytest.raises(ValueError, match="joint_set"):
        TrainingWindows([stores["walks"]], "blazepose33", CONFIG, 64, 1)
    with pytest.raises(ValueError, match="num_views"):
        TrainingWindows([stores["walks"]], "smpl22", CONFIG, 64, 3)
    with pytest.raises(ValueError, match="no training windows"):
        TrainingWindows([stores["walks"]], "smpl22", CONFIG, 64, 1, split="val")


def test_track_store_feeds_stage_one(stores: dict[str, Path]) -> None:
    dataset = TrainingWindows(
        [stores["walks"], stores["tracks"]], "coco17_pelvis", CONFIG, WINDOW, num_views=1
    )
    tracks_first = int(dataset.offsets[1])
    assert dataset.num_windows - tracks_first == expected_windows((90, 70), WINDOW, 16, WINDOW)
    sample = dataset[tracks_first]
    assert not sample["camera_known"]
    assert not sample["rt"].any() and not sample["k"].any() and not sample["pointmap"].any()
    np.testing.assert_array_equal(sample["sizes"], [[640, 480]])
    assert sample["local"].shape == (1, WINDOW, 38)
    # Mixed 3D and 2D samples collate into one batch.
    batch = torch.utils.data.default_collate([dataset[0], sample])
    assert batch["camera_known"].tolist() == [True, False]
    assert batch["local"].shape == (2, 1, WINDOW, 38)


def test_step_batch_sampler_resumes_the_same_stream() -> None:
    n, batch_size, seed = 7, 3, 5
    full = list(StepBatchSampler(n, batch_size, seed, num_steps=20))
    resumed = list(StepBatchSampler(n, batch_size, seed, start_step=9, num_steps=11))
    assert full[9:] == resumed
    flat = np.array(full).reshape(-1)
    for epoch in range(len(flat) // n):
        chunk = flat[epoch * n : (epoch + 1) * n]
        assert sorted(chunk % n) == list(range(n)) and np.all(chunk // n == epoch)
    # The stated formula, for one batch that straddles two epochs (positions 6..8).
    sampler = StepBatchSampler(n, batch_size, seed)
    perm0, perm1 = sampler.permutation(0), sampler.permutation(1)
    assert full[2] == [int(perm0[6]), n + int(perm1[0]), n + int(perm1[1])]
    assert len(StepBatchSampler(n, batch_size, seed, num_steps=4)) == 4
    with pytest.raises(TypeError):
        len(StepBatchSampler(n, batch_size, seed))


def test_validation_batches_are_fixed(stores: dict[str, Path]) -> None:
    dataset = TrainingWindows([stores["walks"]], "smpl22", CONFIG, WINDOW, num_views=1)
    first = validation_batches(dataset, 3, 4, seed=11)
    assert first == validation_batches(dataset, 3, 4, seed=11)
    assert len(first) == 3 and all(len(b) == 4 and min(b) >= 0 for b in first)
    assert first != validation_batches(dataset, 3, 4, seed=12)


def test_dataloader_with_two_workers_matches_the_main_process(stores: dict[str, Path]) -> None:
    dataset = TrainingWindows([stores["walks"]], "smpl22", CONFIG, WINDOW, num_views=4, seed=1)
    dataset[0]  # open the store handles in the parent: workers must not reuse them
    restored = pickle.loads(pickle.dumps(dataset))
    np.testing.assert_array_equal(restored[5]["local"], dataset[5]["local"])
    sampler = StepBatchSampler(dataset.num_windows, 3, seed=2, start_step=4, num_steps=3)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=2)
    batches = list(loader)
    assert len(batches) == 3
    for batch, indices in zip(
        batches, StepBatchSampler(dataset.num_windows, 3, 2, 4, 3), strict=True
    ):
        expected = torch.utils.data.default_collate([dataset[i] for i in indices])
        for key in SAMPLE_KEYS:
            assert torch.equal(batch[key], expected[key]), key


def test_dataset_fingerprints(stores: dict[str, Path]) -> None:
    names = [stores["walks"], stores["tracks"]]
    fingerprints = dataset_fingerprints(names)
    assert fingerprints == {str(p): open_store(p).manifest_fingerprint for p in names}
