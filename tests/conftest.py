"""Shared pytest configuration.

Real components (PostgreSQL, SeaweedFS, Orthanc, dcmtk) are started by the fixture modules below;
a missing component is a test failure, never a skip.
"""

from __future__ import annotations

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.seaweedfs",
    "tests.fixtures.orthanc",
    "tests.fixtures.box",
]
