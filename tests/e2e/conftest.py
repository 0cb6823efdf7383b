"""Fixtures of the end-to-end suite: one world (two real WordPress sites and a relay) per session.

Where WordPress cannot run here (not root, packages missing), the suite is skipped and says why;
under CI (``CI`` set) that is a failure instead, since CI installs the packages.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.e2e.lab_packages import ensure_packages
from tests.e2e.world import World, build_world


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    reason = ensure_packages()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the WordPress suite, but: {reason}")
        pytest.skip(f"real WordPress cannot run here: {reason}")
    with build_world(tmp_path_factory.mktemp("world")) as world:
        yield world
