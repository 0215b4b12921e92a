"""Readers for source motion formats; each returns plain arrays in metres, y-up."""

from data_catalog.readers.bvh import BvhError, BvhMotion, EndSite, read_bvh

__all__ = ["BvhError", "BvhMotion", "EndSite", "read_bvh"]
