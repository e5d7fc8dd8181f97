"""Fixtures of the source-workflow tests: a site (Orthanc as PACS + a box) and registries."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.box import free_port
from tests.fixtures.orthanc import OrthancFactory
from tests.source._network import StandaloneRegistry
from tests.source._support import (
    BOX_AET,
    ORG_ROOT,
    PACS_AET,
    Site,
)
from tests.unit.test_kos import dciodvfy

SiteFactory = Callable[..., Site]


@pytest.fixture
def site_factory(
    box_factory: Callable[..., Any], orthanc_factory: OrthancFactory, tmp_path: Path
) -> Iterator[SiteFactory]:
    """Build a site: Orthanc knows the box as a C-MOVE destination, the box knows the PACS.

    Keyword arguments override the box settings (e.g. ``registry_url=...``). At teardown, every
    KOS manifest a box queued for the registry must pass dciodvfy.
    """
    sites: list[Site] = []

    def make(**overrides: Any) -> Site:
        dimse_port = free_port()
        pacs = orthanc_factory(
            aet=PACS_AET, modalities={"drimbox": (BOX_AET, "127.0.0.1", dimse_port)}
        )
        settings: dict[str, Any] = {
            "aet": BOX_AET,
            "dimse_port": dimse_port,
            "peers": [{"aet": PACS_AET, "host": "127.0.0.1", "port": pacs.dicom_port}],
            "pacs_aet": PACS_AET,
            "stability_seconds": 1.0,
            "organization_uid_root": ORG_ROOT,
            "publish_base_delay": 0.2,
            "publish_max_delay": 1.0,
        }
        settings.update(overrides)
        box = box_factory(**settings)
        registry_url = settings.get("registry_url") or (
            f"http://127.0.0.1:{box.http_port}/registry"
        )
        site = Site(pacs=pacs, box=box, registry_url=registry_url)
        sites.append(site)
        return site

    yield make
    for site in sites:
        for job in site.box.publications.jobs():
            if job.kos_blob_key is not None:
                dciodvfy(b"".join(site.box.blobs.stream(job.kos_blob_key)), tmp_path)


@pytest.fixture
def standalone_registry(tmp_path: Path) -> Iterator[StandaloneRegistry]:
    """A started ``drimbox registry serve`` process (stopped at teardown)."""
    registry = StandaloneRegistry(tmp_path / "registry")
    registry.start()
    yield registry
    registry.stop()
