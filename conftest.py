"""Project-wide pytest setup: quiet CPU JAX, the ``slow`` marker, reproducible hypothesis."""

import os

import pytest
from hypothesis import settings

from jaxcnn import configure_platform

configure_platform()  # JAX's CPU platform, quietly, on machines without an accelerator (the allocator is left alone)

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
