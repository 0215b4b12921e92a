"""The training-data pipeline over prepared stores: a torch Dataset of scenes and its sampler.

:class:`TrainingWindows` indexes fixed-length windows over the sequences of one or more
prepared motion stores (DESIGN 4.1) and turns each into a training sample
(:mod:`mocap_core.training_data`; contract in docs/TRAINING.md):

- a **3D store** gives a scene (:func:`~mocap_core.training_data.make_scene_sample`): bone
  augmentation, random yaw and ground placement, the input camera and, in stage 2, a rig,
  projection, trimming, encodings, camera embeddings and pointmaps;
- a **2D-track store** (stage 1 only, ``num_views == 1``) gives a track sample
  (:func:`~mocap_core.training_data.make_track_sample`) with ``camera_known`` False.

Joint sets: the model's ``smpl22`` reads a store's ``smpl22``; the model's ``coco17_pelvis``
reads a store's ``coco17`` and prepends the pelvis, the mid-point of the hips (3D: valid only
where both hips are valid; 2D: confidence the smaller of the hips').

**Raw windows.** Windows are read ``window + slack`` frames long (``slack`` defaults to a
quarter of ``window``) and start every ``stride`` frames (default ``window``), with
:func:`data_catalog.windows.window_starts`' rules through
:class:`~data_catalog.windows.MotionWindows`: windows never cross a sequence boundary, a
sequence shorter than the raw window gives one shorter window, and sequences shorter than
``min(scene_config.min_frames, window)`` give none (they could never make an accepted
sample). The slack is useful: the sample's ``window`` frames are cropped at a random offset
inside the longest clean run of the raw window, so a scene where the subject leaves an image
near one end of the window still yields a full-length sample, and the crop offset is itself
an augmentation.

**Indexing, for bit-for-bit resumable training.** ``len(dataset)`` is :attr:`num_windows`,
but ``dataset[index]`` accepts any non-negative integer: the window is
``index % num_windows`` and the scene's generator is ``np.random.default_rng([seed,
index])``, so a sample is a pure function of ``(seed, index)`` and the same window seen in
another epoch (``index + e * num_windows``) gets another augmentation.
:class:`StepBatchSampler` turns a training step into its batch of indices.

**Workers.** Stores are opened once when the Dataset is built (to index them and to fail
early on a bad configuration); the Zarr handles are not pickled and are reopened lazily in
each ``DataLoader`` worker (:class:`~data_catalog.windows.MotionWindows` and
:class:`~data_catalog.store.MotionStore` do this, under fork and spawn alike). Workers need
only numpy: no global random state is used anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from data_catalog.store import MotionStore, open_store
from data_catalog.windows import MotionWindows
from mocap_core.joint_sets import add_pelvis, add_pelvis_confidence, get_joint_set
from mocap_core.training_data import SceneConfig, make_scene_sample, make_track_sample

#: Model joint set -> the store joint set it is read from.
STORE_JOINT_SET: dict[str, str] = {"smpl22": "smpl22", "coco17_pelvis": "coco17"}

# COCO-17 hip indices, for the validity of the prepended pelvis.
_COCO_HIPS = (11, 12)


def _store_name(store: str | os.PathLike[str]) -> str:
    return os.fspath(store)


def _open_checked(
    store: str | os.PathLike[str],
    model_joint_set: str,
    num_views: int,
    storage_options: Mapping[str, Any] | None,
) -> MotionStore:
    """Open a store and check it can feed this model and stage; ValueError names both."""
    name = _store_name(store)
    opened = open_store(store, storage_options=storage_options)
    needed = STORE_JOINT_SET[model_joint_set]
    if needed not in opened.joint_sets:
        raise ValueError(
            f"store {name}: has no {needed!r} joint set, which the {model_joint_set!r} model "
            f"reads; it has {sorted(opened.joint_sets)}"
        )
    if opened.kind == "2d" and num_views != 1:
        raise ValueError(
            f"store {name}: a 2D-track store has no 3D to project into {num_views} views; "
            "2D-track stores feed stage 1 (num_views = 1) only"
        )
    if opened.kind not in ("3d", "2d"):
        raise ValueError(f"store {name}: unknown store kind {opened.kind!r}")
    return opened


def _optional_int(value: Any) -> int | None:
    """An Int32 table cell (pandas ``NA`` when unknown) as an int or None."""
    return None if value is None or pd.isna(value) else int(value)


class TrainingWindows(Dataset):
    """Training samples over the windows of prepared stores (module docstring for the rules).

    Args:
        stores: dataset folders (local paths or fsspec URLs) of prepared stores; each is read
            at its current version.
        joint_set: the model's joint set, ``"smpl22"`` or ``"coco17_pelvis"``.
        scene_config: the scene distribution (its ``rig.num_views`` is stage 2's view count).
        window: frames per sample ``L``.
        num_views: 1 for stage 1, ``scene_config.rig.num_views`` for stage 2.
        split: the sequences of this split (``"train"``, ``"val"``, ``"test"``) or None for all.
        seed: the data seed; a sample is a function of ``(seed, index)``.
        stride: frames between raw-window starts; default ``window``.
        slack: extra frames read beyond ``window`` for the trimming to choose from; default
            ``window // 4``.
        storage_options: fsspec options for URLs.

    Raises:
        ValueError: unknown joint set, a store without the needed joint set, a 2D-track store
            with ``num_views > 1``, bad ``num_views``/``window``/``stride``, or no window at
            all; the message names the store and the problem.
        data_catalog.store.StoreNotFound: a folder holds no prepared store.
    """

    def __init__(
        self,
        stores: Sequence[str | os.PathLike[str]],
        joint_set: str,
        scene_config: SceneConfig,
        window: int,
        num_views: int,
        split: str | None = "train",
        seed: int = 0,
        stride: int | None = None,
        *,
        slack: int | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(stores, str | os.PathLike):
            raise TypeError("stores: expected a sequence of dataset folders, got a single path")
        if not stores:
            raise ValueError("stores: need at least one prepared store")
        if joint_set not in STORE_JOINT_SET:
            raise ValueError(
                f"joint_set: the model reads {sorted(STORE_JOINT_SET)}, got {joint_set!r}"
            )
        if not isinstance(scene_config, SceneConfig):
            raise TypeError(
                f"scene_config: expected a SceneConfig, got {type(scene_config).__name__}"
            )
        if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
            raise ValueError(f"window: expected a positive integer, got {window!r}")
        if num_views not in (1, scene_config.rig.num_views):
            raise ValueError(
                f"num_views: expected 1 (stage 1) or the rig's {scene_config.rig.num_views} "
                f"(stage 2), got {num_views}"
            )
        stride = window if stride is None else stride
        if isinstance(stride, bool) or not isinstance(stride, int | np.integer) or stride < 1:
            raise ValueError(f"stride: expected a positive integer, got {stride!r}")
        slack = window // 4 if slack is None else slack
        if isinstance(slack, bool) or not isinstance(slack, int | np.integer) or slack < 0:
            raise ValueError(f"slack: expected a non-negative integer, got {slack!r}")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")

        self.joint_set = joint_set
        self.store_joint_set = STORE_JOINT_SET[joint_set]
        self.scene_config = scene_config
        self.window = int(window)
        self.num_views = int(num_views)
        self.split = split
        self.seed = int(seed)
        self.stride = int(stride)
        self.slack = int(slack)
        self.store_names = [_store_name(s) for s in stores]
        self._joint_set = get_joint_set(joint_set)

        min_length = min(scene_config.min_frames, self.window)
        self._windows: list[MotionWindows] = []
        self._kinds: list[str] = []
        # Image size per sequence row of each 2D store: (width, height), None when unknown.
        self._track_sizes: list[list[tuple[int, int] | None]] = []
        self._sequence_ids: list[list[str]] = []
        for store in stores:
            opened = _open_checked(store, joint_set, self.num_views, storage_options)
            self._windows.append(
                MotionWindows(
                    opened,
                    self.store_joint_set,
                    window=self.window + self.slack,
                    stride=self.stride,
                    split=split,
                    min_length=min_length,
                )
            )
            self._kinds.append(opened.kind)
            self._sequence_ids.append(opened.sequences["sequence_id"].astype(str).to_list())
            sizes: list[tuple[int, int] | None] = []
            if opened.kind == "2d":
                for width, height in zip(
                    opened.sequences["width"], opened.sequences["height"], strict=True
                ):
                    w, h = _optional_int(width), _optional_int(height)
                    sizes.append(None if w is None or h is None else (w, h))
            self._track_sizes.append(sizes)
        counts = np.array([len(w) for w in self._windows], dtype=np.int64)
        #: ``(S + 1,)`` first global window of each store, then the total.
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        if self.num_windows == 0:
            raise ValueError(
                f"no training windows: split {split!r} of stores {self.store_names} has no "
                f"sequence of at least {min_length} frames"
            )

    @property
    def num_windows(self) -> int:
        """Windows over all stores (one epoch)."""
        return int(self.offsets[-1])

    def __len__(self) -> int:
        return self.num_windows

    def locate(self, index: int) -> tuple[int, int]:
        """``(store position, window within that store)`` of a dataset index (any ``>= 0``)."""
        window = self._check_index(index) % self.num_windows
        store = int(np.searchsorted(self.offsets, window, side="right")) - 1
        return store, window - int(self.offsets[store])

    def window_info(self, index: int) -> dict[str, Any]:
        """Where a dataset index reads from: ``store`` (folder as given), ``sequence_row``
        (row in that store's sequence table), ``sequence_id``, ``start`` (first frame within
        the sequence) and ``frames`` (raw frames read, up to ``window + slack``)."""
        store, local = self.locate(index)
        windows = self._windows[store]
        row, start, frames = (int(v) for v in windows.index[local])
        return {
            "store": self.store_names[store],
            "sequence_row": row,
            "sequence_id": self._sequence_ids[store][row],
            "start": start,
            "frames": frames,
        }

    def _check_index(self, index: Any) -> int:
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise TypeError(f"index: expected an integer, got {type(index).__name__}")
        if index < 0:
            raise IndexError(f"index: expected a non-negative integer, got {index}")
        return int(index)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """The sample of ``index`` (a numpy dict, docs/TRAINING.md); see the module docstring."""
        store, local = self.locate(index)
        rng = np.random.default_rng([self.seed, int(index)])
        windows = self._windows[store]
        item = windows[local]
        length = int(item["length"])
        valid = item["valid"][:length]
        if self._kinds[store] == "3d":
            joints = item["joints"][:length]
            if self.joint_set == "coco17_pelvis":
                joints = add_pelvis(joints)
                pelvis_valid = valid[:, _COCO_HIPS[0]] & valid[:, _COCO_HIPS[1]]
                valid = np.concatenate([pelvis_valid[:, None], valid], axis=1)
            sample = make_scene_sample(
                joints,
                valid,
                self._joint_set,
                self.window,
                self.num_views,
                self.scene_config,
                rng,
            )
        else:
            keypoints = item["keypoints"][:length].copy()
            # The store's valid flag has the last word on a keypoint being there.
            keypoints[..., 2] = np.where(valid, keypoints[..., 2], 0.0)
            if self.joint_set == "coco17_pelvis":
                keypoints = add_pelvis_confidence(keypoints)
            row = int(windows.index[local, 0])
            size = self._track_sizes[store][row]
            sample = make_track_sample(
                keypoints,
                None if size is None else size[0],
                None if size is None else size[1],
                self.window,
                rng,
                pointmap_size=self.scene_config.pointmap_size,
            )
        return sample.as_dict()


class StepBatchSampler:
    """Batches of dataset indices per training step, resumable at any step.

    For step ``s`` the batch is ``[e * n + perm_e[p % n] for p in range(s * B, (s + 1) * B)]``
    with ``e = p // n`` the epoch of position ``p`` and ``perm_e`` a permutation of the ``n``
    windows drawn from ``np.random.default_rng([seed, e, 1])`` (the trailing 1 keeps this
    stream apart from the samples' ``default_rng([seed, index])``). An epoch's windows are all
    seen once, epochs follow each other without a gap, and a batch may straddle two epochs.
    Starting at ``start_step`` yields exactly the batches an uninterrupted run yields from
    that step on. Usable as ``DataLoader(dataset, batch_sampler=...)``.

    Args:
        num_windows: ``n``, the dataset's :attr:`TrainingWindows.num_windows`.
        batch_size: ``B``.
        seed: the data seed.
        start_step: first step yielded.
        num_steps: steps yielded, or None for an endless stream.
    """

    def __init__(
        self,
        num_windows: int,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        num_steps: int | None = None,
    ) -> None:
        for name, value, low in (
            ("num_windows", num_windows, 1),
            ("batch_size", batch_size, 1),
            ("seed", seed, 0),
            ("start_step", start_step, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
        if num_steps is not None and (
            isinstance(num_steps, bool)
            or not isinstance(num_steps, int | np.integer)
            or num_steps < 0
        ):
            raise ValueError(
                f"num_steps: expected a non-negative integer or None, got {num_steps!r}"
            )
        self.num_windows = int(num_windows)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.start_step = int(start_step)
        self.num_steps = None if num_steps is None else int(num_steps)
        # One epoch's permutation at a time: consecutive steps nearly always share it.
        self._cached_epoch = -1
        self._cached_permutation = np.zeros(0, dtype=np.int64)

    def permutation(self, epoch: int) -> np.ndarray:
        """``(n,) int64`` order of the windows in ``epoch``."""
        if epoch != self._cached_epoch:
            self._cached_epoch = int(epoch)
            self._cached_permutation = np.random.default_rng(
                [self.seed, int(epoch), 1]
            ).permutation(self.num_windows)
        return self._cached_permutation

    def batch(self, step: int) -> list[int]:
        """The dataset indices of step ``step``'s batch (any step >= 0)."""
        n = self.num_windows
        positions = np.arange(step * self.batch_size, (step + 1) * self.batch_size, dtype=np.int64)
        epochs = positions // n
        out = np.empty_like(positions)
        for epoch in np.unique(epochs).tolist():
            here = epochs == epoch
            out[here] = epoch * n + self.permutation(epoch)[positions[here] % n]
        return out.tolist()

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while self.num_steps is None or step < self.start_step + self.num_steps:
            yield self.batch(step)
            step += 1

    def __len__(self) -> int:
        if self.num_steps is None:
            raise TypeError("StepBatchSampler: an endless stream (num_steps=None) has no length")
        return self.num_steps


def validation_batches(
    dataset: TrainingWindows, num_batches: int, batch_size: int, seed: int
) -> list[list[int]]:
    """Fixed dataset indices for a deterministic validation loss.

    The first ``num_batches`` steps of a :class:`StepBatchSampler` over the dataset's windows
    with this ``seed``: every window once before any repeats, the repeats (in later epochs)
    with other scenes. Equal arguments give equal indices, hence, with the dataset's own
    seed, equal samples every time the validation loss is computed.

    Returns:
        ``num_batches`` lists of ``batch_size`` non-negative ints.
    """
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f"num_batches: expected a positive integer, got {num_batches!r}")
    sampler = StepBatchSampler(dataset.num_windows, batch_size, seed, 0, num_batches)
    return list(sampler)


def dataset_fingerprints(
    stores: Sequence[str | os.PathLike[str]],
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """``{store folder as given: manifest fingerprint of its current version}``, for the
    checkpoint's ``data`` entry (which data a model was trained on)."""
    if isinstance(stores, str | os.PathLike):
        raise TypeError("stores: expected a sequence of dataset folders, got a single path")
    return {
        _store_name(store): open_store(store, storage_options=storage_options).manifest_fingerprint
        for store in stores
    }
