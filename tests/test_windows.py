"""MotionWindows: windows within sequences, padding, splits, pickling, DataLoader workers."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import random_sequences, write_tiny_store
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from data_catalog.store import SplitRule, open_store
from data_catalog.windows import MotionWindows, window_starts

LENGTHS = [23, 8, 3, 40, 16]


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    sequences = random_sequences(0, LENGTHS, joint_sets=("smpl22", "coco17"))
    # style = i % 3; hold style 1 out for test so the split filter has something to do.
    rule = SplitRule(test_fraction=0, val_fraction=0, test={"labels": {"style": [1]}})
    write_tiny_store(
        tmp_path / "ds",
        sequences,
        joint_sets=("smpl22", "coco17"),
        chunk_frames=16,
        split_rule=rule,
    )
    return tmp_path / "ds"


def test_window_starts_hand_cases() -> None:
    assert window_starts(10, 4, 4, 1).tolist() == [0, 4, 6]  # tail window ends at frame 10
    assert window_starts(8, 4, 4, 1).tolist() == [0, 4]
    assert window_starts(10, 4, 2, 1).tolist() == [0, 2, 4, 6]
    assert window_starts(4, 4, 1, 1).tolist() == [0]
    assert window_starts(3, 4, 1, 1).tolist() == [0]  # padded
    assert window_starts(3, 4, 1, 4).tolist() == []  # below min_length
    assert window_starts(0, 4, 1, 1).tolist() == []
    with pytest.raises(ValueError):
        window_starts(10, 0, 1, 1)


@given(
    frames=st.integers(0, 200),
    window=st.integers(1, 50),
    stride=st.integers(1, 60),
    min_length=st.integers(1, 60),
)
def test_window_starts_properties(frames: int, window: int, stride: int, min_length: int) -> None:
    starts = window_starts(frames, window, stride, min_length)
    if frames < min_length or frames == 0:
        assert starts.size == 0
        return
    assert np.all(np.diff(starts) > 0) and starts[0] == 0
    if frames >= window:
        assert np.all(starts + window <= frames)  # never past the sequence end
        assert starts[-1] + window == frames  # the tail is always covered
        if stride <= window:
            covered = np.zeros(frames, bool)
            for s in starts:
                covered[s : s + window] = True
            assert covered.all()
    else:
        assert starts.tolist() == [0]


def test_windows_never_cross_sequence_boundaries(store_dir: Path) -> None:
    store = open_store(store_dir)
    windows = MotionWindows(store_dir, "coco17", window=10, stride=5)
    assert len(windows) > 0
    table = store.sequences.set_index("sequence_id")
    per_sequence = {
        sid: (store.joints("coco17", sid), store.valid("coco17", sid)) for sid in table.index
    }
    for i in range(len(windows)):
        item = windows[i]
        joints, valid = per_sequence[item["sequence_id"]]
        start, length = int(item["start"]), int(item["length"])
        assert start + length <= len(joints)
        assert item["joints"].shape == (10, 17, 3) and item["joints"].dtype == np.float32
        assert item["valid"].shape == (10, 17) and item["valid"].dtype == np.bool_
        np.testing.assert_array_equal(item["joints"][:length], joints[start : start + length])
        np.testing.assert_array_equal(item["valid"][:length], valid[start : start + length])
        # Padding (short sequences only) is zeros and never valid.
        assert not item["valid"][length:].any() and not item["joints"][length:].any()
    # 23 frames -> starts 0, 5, 10, 13; 8 and 3 -> one padded window each; 40 -> 0..30 by 5;
    # 16 -> 0, 5, 6.
    expected = 4 + 1 + 1 + 7 + 3
    assert len(windows) == expected


def test_min_length_and_split_filter(store_dir: Path) -> None:
    padded = len(MotionWindows(store_dir, "smpl22", window=10, min_length=1))
    # The 8-frame sequence is kept (padded) at min_length 8 and dropped at 9; the 3-frame
    # one only at min_length <= 3.
    assert len(MotionWindows(store_dir, "smpl22", window=10, min_length=8)) == padded - 1
    assert len(MotionWindows(store_dir, "smpl22", window=10, min_length=9)) == padded - 2
    full_only = MotionWindows(store_dir, "smpl22", window=10, stride=10, min_length=10)
    assert all(int(full_only[i]["length"]) == 10 for i in range(len(full_only)))
    test_windows = MotionWindows(store_dir, "smpl22", window=5, split="test")
    ids = {test_windows[i]["sequence_id"] for i in range(len(test_windows))}
    assert ids == {"item001.bvh#0", "item004.bvh#0"}  # style 1: items 1 and 4
    train_windows = MotionWindows(store_dir, "smpl22", window=5, split="train")
    assert len(train_windows) + len(test_windows) == len(MotionWindows(store_dir, "smpl22", 5))


def test_pickling_drops_handles_and_reads_the_same(store_dir: Path) -> None:
    windows = MotionWindows(store_dir, "smpl22", window=6, stride=3)
    first = windows[7]
    assert windows._arrays is not None
    clone = pickle.loads(pickle.dumps(windows))
    assert clone._arrays is None and clone._store._group is None
    again = clone[7]
    for key in ("joints", "valid", "length", "start", "sequence_id"):
        np.testing.assert_array_equal(again[key], first[key])
    # A Dataset never read pickles too.
    fresh = pickle.loads(pickle.dumps(MotionWindows(store_dir, "smpl22", window=6)))
    assert fresh[0]["joints"].shape == (6, 22, 3)


def test_dataloader_with_two_workers_matches_single_process(store_dir: Path) -> None:
    windows = MotionWindows(store_dir, "smpl22", window=8, stride=4)
    windows[0]  # opened in the parent first: workers must not reuse its handles
    single = [windows[i] for i in range(len(windows))]
    loader = DataLoader(windows, batch_size=3, num_workers=2, shuffle=False)
    batches = list(loader)
    joints = torch.cat([b["joints"] for b in batches])
    assert joints.shape == (len(windows), 8, 22, 3)
    np.testing.assert_array_equal(joints.numpy(), np.stack([s["joints"] for s in single]))
    ids = [sid for b in batches for sid in b["sequence_id"]]
    assert ids == [s["sequence_id"] for s in single]
    lengths = torch.cat([b["length"] for b in batches])
    assert lengths.tolist() == [int(s["length"]) for s in single]


def test_2d_store_gives_keypoints(tmp_path: Path) -> None:
    sequences = random_sequences(1, [12, 4], joint_sets=("coco17",), kind="2d")
    write_tiny_store(tmp_path / "ds", sequences, kind="2d", joint_sets=("coco17",))
    windows = MotionWindows(tmp_path / "ds", "coco17", window=6)
    item = windows[0]
    assert "keypoints" in item and "joints" not in item
    np.testing.assert_array_equal(
        item["keypoints"], open_store(tmp_path / "ds").joints("coco17", 0)[:6]
    )


def test_bad_arguments(store_dir: Path) -> None:
    with pytest.raises(ValueError, match="window"):
        MotionWindows(store_dir, "smpl22", window=0)
    with pytest.raises(ValueError, match="stride"):
        MotionWindows(store_dir, "smpl22", window=4, stride=0)
    with pytest.raises(KeyError, match="blazepose33"):
        MotionWindows(store_dir, "blazepose33", window=4)
    with pytest.raises(ValueError, match="split"):
        MotionWindows(store_dir, "smpl22", window=4, split="validation")
    windows = MotionWindows(store_dir, "smpl22", window=4)
    with pytest.raises(IndexError):
        windows[len(windows)]
