"""Event-driven acceptors: fast C-STOREs without spinning, no leaked descriptors, cheap contexts."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from pathlib import Path

from pydicom.uid import UID
from pynetdicom import AE

from drimbox.dimse.reactor import AcceptorContexts, EventDrivenAssociation, EventDrivenDUL
from drimbox.dimse.scp import _build_ae
from tests.dimse._support import BOX_AET, BoxNode, status_of

_VERIFICATION = "1.2.840.10008.1.1"
_SUCCESS = 0x0000
_IDLE_SECONDS = 1.0
_MAX_IDLE_CPU_SECONDS = 0.3  # pynetdicom's 0.2 ms DUL poll alone burnt more than this
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_DEADLINE_SECONDS = 10.0


def _thread_cpu_seconds(native_id: int) -> float:
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    user, system = int(fields[11]), int(fields[12])  # utime, stime (proc(5), fields 14-15)
    return (user + system) / _CLOCK_TICKS


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _wait_until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + _DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_accepted_associations_are_event_driven_and_idle_ones_do_not_spin(
    box_node: BoxNode,
) -> None:
    ae = AE(ae_title="IDLE")
    ae.add_requested_context(_VERIFICATION)
    association = ae.associate("127.0.0.1", box_node.port, ae_title=BOX_AET)
    assert association.is_established
    try:
        server = box_node.server._server
        assert server is not None
        (acceptor,) = server.active_associations
        assert isinstance(acceptor, EventDrivenAssociation)
        assert isinstance(acceptor.dul, EventDrivenDUL)
        threads = [acceptor.native_id, acceptor.dul.native_id]
        native_ids = [tid for tid in threads if tid is not None]
        assert len(native_ids) == len(threads)
        before = sum(_thread_cpu_seconds(tid) for tid in native_ids)
        time.sleep(_IDLE_SECONDS)
        used = sum(_thread_cpu_seconds(tid) for tid in native_ids) - before
        assert used < _MAX_IDLE_CPU_SECONDS
        assert status_of(association.send_c_echo()) == _SUCCESS  # still answers at once
    finally:
        association.release()


def test_released_associations_leave_no_open_descriptors(box_node: BoxNode) -> None:
    ae = AE(ae_title="MANY")
    ae.add_requested_context(_VERIFICATION)
    server = box_node.server._server
    assert server is not None

    def one_echo() -> None:
        association = ae.associate("127.0.0.1", box_node.port, ae_title=BOX_AET)
        assert association.is_established
        assert status_of(association.send_c_echo()) == _SUCCESS
        association.release()

    one_echo()  # first-use allocations (imports, logging handlers...)
    assert _wait_until(lambda: not server.active_associations)
    baseline = _open_fds()
    for _ in range(10):
        one_echo()
    assert _wait_until(lambda: not server.active_associations)
    assert _wait_until(lambda: _open_fds() <= baseline)


def test_copied_contexts_equal_a_deep_copy_and_share_no_list() -> None:
    contexts = AcceptorContexts(_build_ae(BOX_AET).supported_contexts)
    copied = copy.deepcopy(contexts)
    reference = copy.deepcopy(list(contexts))
    assert type(copied) is list
    assert [
        (c.abstract_syntax, c.transfer_syntax, c.context_id, c.scu_role, c.scp_role) for c in copied
    ] == [
        (c.abstract_syntax, c.transfer_syntax, c.context_id, c.scu_role, c.scp_role)
        for c in reference
    ]
    copied[0].transfer_syntax.append(UID("1.2.3"))
    copied[0].context_id = 1
    assert "1.2.3" not in contexts[0].transfer_syntax
    assert contexts[0].context_id is None
