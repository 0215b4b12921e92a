"""Thin, typed Prefect tasks around ``mocap_core`` and ``data_catalog`` calls."""

from data_catalog.paths import configure_prefect_environment

configure_prefect_environment()
