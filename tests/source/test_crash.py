"""``kill -9`` of ``drimbox serve`` while a publication is in flight: exactly once after restart."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from drimbox.hl7.mllp import send_message
from drimbox.index.publications import open_publication_store
from drimbox.model import Exam, ExamState
from registry.client import RegistryClient
from registry.models import EntryStatus
from tests.dicomweb.conftest import multipart_body, stow_headers
from tests.fixtures.box import ServedBox
from tests.source._network import HoldingProxy, StandaloneRegistry
from tests.source._support import (
    ORG_ROOT,
    ack_code,
    ans_message,
    ans_study,
    cli_json,
    exam_datasets,
    part10,
    registry_entries,
    wait_for,
)
from tests.unit.test_kos import dciodvfy

EXAM_C = ans_study(103)


@pytest.fixture
def proxy(standalone_registry: StandaloneRegistry) -> Iterator[HoldingProxy]:
    relay = HoldingProxy(standalone_registry.port)
    yield relay
    relay.close()


def served(factory: Callable[..., ServedBox], registry_url: str) -> ServedBox:
    return factory(
        extra_args=["--registry-url", registry_url],
        DRIMBOX_STABILITY_SECONDS="1",
        DRIMBOX_ORGANIZATION_UID_ROOT=ORG_ROOT,
        DRIMBOX_PUBLISH_BASE_DELAY="0.2",
        DRIMBOX_PUBLISH_MAX_DELAY="1",
    )


def publication(box: ServedBox) -> dict[str, Any]:
    """The exam's row of ``drimbox publications --json``."""
    (row,) = cli_json(box.data_dir, "publications")
    assert isinstance(row, dict)
    return row


def exam_state(box: ServedBox) -> Exam | None:
    """The exam as the box's publication store holds it (a cheap poll, no CLI start-up)."""
    store = open_publication_store(f"sqlite:///{box.data_dir / 'index.sqlite3'}")
    try:
        return store.get_exam(EXAM_C)
    finally:
        store.close()


def wait_published(box: ServedBox) -> dict[str, Any]:
    """Wait for the exam to be published; return its ``drimbox publications`` row."""
    wait_for(
        lambda: (exam := exam_state(box)) is not None and exam.state is ExamState.PUBLISHED,
        30,
        "the publication",
    )
    return publication(box)


@pytest.mark.integration
def test_kill_9_after_the_registry_committed_but_before_the_box_knew_publishes_once(
    served_box_factory: Callable[..., ServedBox],
    standalone_registry: StandaloneRegistry,
    proxy: HoldingProxy,
    tmp_path: Path,
) -> None:
    box = served(served_box_factory, proxy.url())
    box.start()
    images = [part10(ds) for ds in exam_datasets(EXAM_C, "ACN103")]
    stored = httpx.post(
        f"{box.dicomweb_url}/studies", content=multipart_body(images), headers=stow_headers()
    )
    assert stored.status_code == httpx.codes.OK, stored.text
    proxy.hold.set()

    assert ack_code(send_message("127.0.0.1", box.hl7_port, ans_message("CR_C-ORU"))) == "AA"
    assert proxy.answered.wait(30), box.log_text()
    box.kill()

    (entry,) = registry_entries(standalone_registry.url)
    assert entry.status is EntryStatus.CURRENT
    row = publication(box)
    assert (row["state"], row["pending_jobs"], row["registry_entry_id"]) == ("queued", 1, None)

    proxy.hold.clear()
    box.start()

    done = wait_published(box)
    assert done["pending_jobs"] == 0
    assert done["registry_entry_id"] == entry.entry_id
    assert [(e.entry_id, e.status) for e in registry_entries(standalone_registry.url)] == [
        (entry.entry_id, EntryStatus.CURRENT)
    ]
    with RegistryClient(standalone_registry.url) as client:
        dciodvfy(client.retrieve(entry.entry_id), tmp_path)
