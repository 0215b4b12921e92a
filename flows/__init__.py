"""Prefect flows (the pipelines) and the ``mocap2to3`` command line."""

from data_catalog.paths import configure_prefect_environment

configure_prefect_environment()
