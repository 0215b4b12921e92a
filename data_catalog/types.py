"""Records that readers hand to the preparation pipeline.

A reader turns one source item (a file, or an archive member's bytes) into either a
:class:`Motion3D` (mocap, already mapped onto the project's joint sets, metres, y-up, at the
source frame rate) or a :class:`Tracks2D` (2D keypoints in pixels). Normalisation (resampling,
grounding, splitting at broken frames) happens afterwards, in ``mocap_core.normalize``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


class ReaderError(ValueError):
    """A source item cannot be read. The message names the item and the problem.

    Raised for malformed, truncated or inconsistent input; the preparation flow puts the
    item in its quarantine report with ``str(error)`` as the reason.
    """


@dataclass
class Motion3D:
    """One 3D sequence of one subject, mapped onto one or more target joint sets.

    Attributes:
        joints: target joint-set name -> ``(T, J, 3) float64`` metres, world frame, y-up
            (not yet grounded or resampled).
        measured: target joint-set name -> ``(J,) bool``, True where the joint is measured by
            the source skeleton, False where it is derived (interpolated, a marker).
        fps: source frame rate, frames per second.
        local_rotations: optional ``(T, S, 3, 3)`` source-skeleton local rotations, kept when
            a reader has them (resampled with slerp), else None.
        meta: small JSON-able metadata (subject, labels, source skeleton, units detected).
    """

    joints: dict[str, np.ndarray]
    measured: dict[str, np.ndarray]
    fps: float
    local_rotations: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(next(iter(self.joints.values())).shape[0])


@dataclass
class Tracks2D:
    """2D keypoint tracks of one clip, possibly several people.

    Attributes:
        keypoints: ``(T, J, 3) float32`` pixel u, v and confidence in [0, 1]; confidence 0
            means missing (u, v are then meaningless). One row per (track, frame).
        frame_index: ``(T,) int32`` frame number of each row within the clip.
        track_id: ``(T,) int32`` person/track id of each row.
        joint_set: name of the joint layout of ``keypoints`` (e.g. ``"coco17"``).
        fps: frame rate of the clip.
        width, height: image size in pixels when known, else None.
        K: ``(3, 3)`` intrinsics when known, else None.
        meta: small JSON-able metadata.
    """

    keypoints: np.ndarray
    frame_index: np.ndarray
    track_id: np.ndarray
    joint_set: str
    fps: float
    width: int | None = None
    height: int | None = None
    K: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def tracks(self) -> dict[int, np.ndarray]:
        """Row indices of each track, sorted by frame: ``{track_id: (n,) int}``."""
        out: dict[int, np.ndarray] = {}
        for tid in np.unique(self.track_id):
            rows = np.flatnonzero(self.track_id == tid)
            out[int(tid)] = rows[np.argsort(self.frame_index[rows], kind="stable")]
        return out
