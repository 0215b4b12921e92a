"""The demo flow end to end (procedural walk: runs without ../shared/data)."""

from __future__ import annotations

import json

import numpy as np

from flows.demo import geometry_demo


def test_geometry_demo_writes_picture_and_recovers_motion(tmp_path):
    result = geometry_demo(output_dir=str(tmp_path), seed=3, force_procedural=True)
    png = tmp_path / "geometry_demo.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    errors = result["errors"]
    assert errors["clean_mm"] < 1e-6  # exact projections triangulate back exactly
    assert 0.5 < errors["noisy_mm"] < 30.0  # 2 px noise costs millimetres, not centimetres
    assert errors["outlier_robust_mm"] < errors["outlier_dlt_mm"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["motion"]["source"].startswith("procedural walk")
    scene = np.load(tmp_path / "scene.npz")
    assert scene["pointmaps"].shape == (4, 224, 224, 3)
    # Ground pointmaps hold points on the ground plane only.
    hits = scene["pointmaps"].reshape(-1, 3)
    assert np.all(hits[:, 1] == 0.0)
    assert "triangulation error" in result["report"]
