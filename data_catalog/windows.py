"""A PyTorch Dataset of fixed-length windows over a motion store.

Windows never cross sequence boundaries. For a sequence of ``T`` frames and a window of
``L`` frames with stride ``S``:

- ``T >= L``: windows start at ``0, S, 2S, ...`` while they fit, plus one window ending at
  the last frame when the stride leaves a tail uncovered (so with ``S <= L`` every frame is
  in some window);
- ``min_length <= T < L``: one window from frame 0, padded with zeros to ``L`` frames; its
  ``length`` is ``T`` and the padded frames are not ``valid``;
- ``T < min_length``: no window.

Each item is a dict of numpy arrays (the default ``DataLoader`` collate turns them into
tensors): ``joints`` (3D store; ``keypoints`` for a 2D store) ``(L, J, 3) float32``,
``valid (L, J) bool``, ``length`` int64, ``start`` int64 (first frame within the sequence),
``sequence_id`` str.

The store is resolved once (``CURRENT`` -> version) when the Dataset is built and opened
lazily, on the first item read in each process: the Dataset pickles without any open handle,
so it works with ``DataLoader(num_workers > 0)`` under fork and spawn alike.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from data_catalog.store import MotionStore, open_store


def window_starts(num_frames: int, window: int, stride: int, min_length: int) -> np.ndarray:
    """Start frames of the windows of one sequence (rules in the module docstring).

    Args:
        num_frames: frames in the sequence, T.
        window: window length L >= 1.
        stride: step between starts S >= 1.
        min_length: shortest sequence kept (padded) when shorter than the window.

    Returns:
        ``(n,) int64`` start frames, ascending; empty when the sequence gives no window.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got {window}, {stride}")
    if num_frames < max(min_length, 1):
        return np.zeros(0, dtype=np.int64)
    if num_frames <= window:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, num_frames - window + 1, stride, dtype=np.int64)
    if starts[-1] != num_frames - window:
        starts = np.append(starts, num_frames - window)
    return starts


class MotionWindows(Dataset):
    """Windows of ``window`` frames over one joint set of a motion store.

    Args:
        store: a dataset folder (local path or fsspec URL; its current version is used) or
            an open :class:`~data_catalog.store.MotionStore`.
        joint_set: which joint set to read (a store subgroup).
        window: window length L in frames.
        stride: frames between window starts; default ``window`` (no overlap).
        split: keep only sequences of this split (``train``/``val``/``test``); None for all.
        min_length: sequences shorter than this give no window; shorter than ``window`` but
            at least this give one padded window. Default 1.
        storage_options: fsspec options for a URL.

    Attributes:
        index: ``(n, 3) int64`` rows of (sequence row in the store's table, start frame in
            the sequence, window length without padding).
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | MotionStore,
        joint_set: str,
        window: int,
        stride: int | None = None,
        split: str | None = None,
        min_length: int = 1,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        stride = window if stride is None else stride
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if min_length < 1:
            raise ValueError(f"min_length must be >= 1, got {min_length}")
        opened = (
            store
            if isinstance(store, MotionStore)
            else open_store(store, storage_options=storage_options)
        )
        if joint_set not in opened.joint_sets:
            raise KeyError(
                f"joint set {joint_set!r} not in store; it has {sorted(opened.joint_sets)}"
            )
        if split is not None and split not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val, test or None, got {split!r}")
        self.joint_set = joint_set
        self.window = int(window)
        self.stride = int(stride)
        self.split = split
        self.min_length = int(min_length)
        self.array_key = "joints" if opened.kind == "3d" else "keypoints"
        self.num_joints = len(opened.joint_sets[joint_set])
        table = opened.sequences
        rows = np.arange(len(table)) if split is None else np.flatnonzero(table["split"] == split)
        starts_col = table["start"].to_numpy(np.int64)
        stops_col = table["stop"].to_numpy(np.int64)
        self._seq_start = starts_col
        self._sequence_ids = table["sequence_id"].astype(str).to_list()
        index = []
        for row in rows:
            length = int(stops_col[row] - starts_col[row])
            for start in window_starts(length, window, stride, min_length):
                index.append((row, start, min(window, length - start)))
        self.index = np.asarray(index, dtype=np.int64).reshape(-1, 3)
        self._store = opened
        self._arrays: tuple[Any, Any] | None = None
        self._arrays_pid: int | None = None

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def __getstate__(self) -> dict[str, Any]:
        # Zarr array handles stay in the process that opened them; the MotionStore itself
        # pickles without its handle and reopens on first use.
        state = self.__dict__.copy()
        state["_arrays"] = None
        state["_arrays_pid"] = None
        return state

    def _open_arrays(self) -> tuple[Any, Any]:
        # Reopened after fork as well: handles inherited from the parent are not reused.
        if self._arrays is None or self._arrays_pid != os.getpid():
            self._arrays = (
                self._store.array(self.joint_set),
                self._store.valid_array(self.joint_set),
            )
            self._arrays_pid = os.getpid()
        return self._arrays

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range ({len(self)} windows)")
        row, start, length = (int(v) for v in self.index[i])
        data_array, valid_array = self._open_arrays()
        first = int(self._seq_start[row]) + start
        frames = slice(first, first + length)
        data = np.asarray(data_array[frames], dtype=np.float32)
        valid = np.asarray(valid_array[frames], dtype=np.bool_)
        if length < self.window:
            pad = self.window - length
            data = np.concatenate([data, np.zeros((pad, self.num_joints, 3), np.float32)])
            valid = np.concatenate([valid, np.zeros((pad, self.num_joints), np.bool_)])
        return {
            self.array_key: data,
            "valid": valid,
            "length": np.int64(length),
            "start": np.int64(start),
            "sequence_id": self._sequence_ids[row],
        }
