"""PostgreSQL index shared by several processes."""

from __future__ import annotations

import pytest

from drimbox.index import open_index
from tests.contract.test_index import add_from_processes

pytestmark = pytest.mark.integration


def test_two_processes_adding_the_same_instances_store_each_once(postgres_url: str) -> None:
    open_index(postgres_url).close()
    count = 40
    assert add_from_processes(postgres_url, count).count("stored") == count
    index = open_index(postgres_url)
    statistics = index.statistics()
    index.close()
    assert (statistics.instances, statistics.series, statistics.patients) == (count, 1, 1)
