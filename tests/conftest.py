"""Shared pytest configuration: hypothesis profiles (a derandomised, deadline-free CI profile) and the session's one
EZKL cache."""
import os
import shutil

import pytest

from hypothesis import HealthCheck, settings

settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="session")
def ezkl_cache(tmp_path_factory):
    """One EZKL cache (SRS files, circuits, keys) for every EZKL test of the session, so that a key made by one module's
    tests is reused by the next; removed at the end."""
    root = tmp_path_factory.getbasetemp() / "zkref-ezkl-cache"
    root.mkdir(exist_ok=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)
