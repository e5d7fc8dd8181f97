"""C-ECHO, C-STORE from dcmtk and pynetdicom, AE policy and socket options of the DIMSE server."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from pynetdicom import AE

from drimbox.config import Peer
from drimbox.dicom.synthetic import SyntheticStudy, write_study
from drimbox.dimse.status import AssociateRejectReason
from tests.dimse._support import (
    BOX_AET,
    ECHOSCU,
    BoxNode,
    data_set_bytes,
    dcmtk_env,
    pynetdicom_store,
    status_of,
    stored_data_set_bytes,
    storescu,
)
from tests.dimse.conftest import BoxNodeFactory

_REJECTED_PERMANENT = 0x01
_SOURCE_SERVICE_USER = 0x01


def _echoscu(port: int, *, calling: str = "ECHOSCU", called: str = BOX_AET) -> str:
    result = subprocess.run(
        [ECHOSCU, "-v", "-aet", calling, "-aec", called, "127.0.0.1", str(port)],
        env=dcmtk_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return f"rc={result.returncode}\n{result.stdout}{result.stderr}"


def _associate(port: int, calling: str, called: str = BOX_AET) -> tuple[bool, tuple[int, ...]]:
    ae = AE(ae_title=calling)
    ae.add_requested_context("1.2.840.10008.1.1")
    association = ae.associate("127.0.0.1", port, ae_title=called)
    if association.is_established:
        association.release()
        return True, ()
    assert association.is_rejected
    primitive = association.acceptor.primitive
    assert primitive is not None
    return False, (
        int(primitive.result or 0),
        int(primitive.result_source or 0),
        int(primitive.diagnostic or 0),
    )


@pytest.mark.integration
def test_echoscu_gets_a_c_echo_success(box_node: BoxNode) -> None:
    output = _echoscu(box_node.port)
    assert output.startswith("rc=0"), output
    assert "Received Echo Response (Success)" in output


@pytest.mark.integration
def test_storescu_study_is_stored_and_indexed_byte_identical(
    box_node: BoxNode, tmp_path: Path
) -> None:
    study = SyntheticStudy(seed="dcmtk", series_count=2, instances_per_series=5)
    files = write_study(study, tmp_path / "study")

    result = storescu(box_node.port, files)

    assert result.returncode == 0, result.stderr
    statistics = box_node.index.statistics()
    assert (statistics.patients, statistics.studies, statistics.series) == (1, 1, 2)
    assert statistics.instances == 10
    for series in range(2):
        for instance in range(5):
            location = box_node.index.get_instance(study.sop_instance_uid(series, instance))
            assert location is not None
            sent = data_set_bytes(files[series * 5 + instance])
            assert stored_data_set_bytes(box_node.blobs, location.blob.key) == sent


@pytest.mark.integration
def test_pynetdicom_client_stores_a_study(box_node: BoxNode, tmp_path: Path) -> None:
    files = write_study(SyntheticStudy(seed="pynetdicom", instances_per_series=4), tmp_path)

    responses = pynetdicom_store(box_node.port, files)

    assert [status_of(r) for r in responses] == [0x0000] * 4
    assert box_node.index.statistics().instances == 4


@pytest.mark.integration
def test_wrong_called_ae_title_is_rejected_as_not_recognised(box_node: BoxNode) -> None:
    accepted, reason = _associate(box_node.port, "ANY", called="NOTTHEBOX")

    assert not accepted
    assert reason == (
        _REJECTED_PERMANENT,
        _SOURCE_SERVICE_USER,
        AssociateRejectReason.CALLED_AE_TITLE_NOT_RECOGNIZED,
    )
    assert box_node.audit.events[-1]["event"] == "dicom.association.rejected"


@pytest.mark.integration
def test_allow_list_accepts_only_known_calling_ae_titles_from_their_host(
    box_node_factory: BoxNodeFactory,
) -> None:
    node = box_node_factory(
        peers=(Peer(aet="MODALITY", host="127.0.0.1"), Peer(aet="FARAWAY", host="192.0.2.7"))
    )
    not_recognised = (
        _REJECTED_PERMANENT,
        _SOURCE_SERVICE_USER,
        AssociateRejectReason.CALLING_AE_TITLE_NOT_RECOGNIZED,
    )

    assert _associate(node.port, "MODALITY") == (True, ())
    assert _associate(node.port, "INTRUDER") == (False, not_recognised)
    assert _associate(node.port, "FARAWAY") == (False, not_recognised)
    output = _echoscu(node.port, calling="INTRUDER")
    assert "Calling AE Title Not Recognized" in output, output
    rejected = [e for e in node.audit.events if e["event"] == "dicom.association.rejected"]
    assert [e["calling_aet"] for e in rejected] == ["INTRUDER", "FARAWAY", "INTRUDER"]


@pytest.mark.integration
def test_accepted_sockets_have_tcp_nodelay(box_node: BoxNode) -> None:
    ae = AE(ae_title="PROBE")
    ae.add_requested_context("1.2.840.10008.1.1")
    association = ae.associate("127.0.0.1", box_node.port, ae_title=BOX_AET)
    try:
        [sock] = box_node.server.active_sockets()
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        association.release()


@pytest.mark.integration
def test_servers_sharing_a_listener_take_associations_in_turn(
    box_node_factory: BoxNodeFactory,
) -> None:
    from drimbox.dimse.scp import DimseServer, bind_listener

    first = box_node_factory()
    listener = bind_listener("127.0.0.1", 0)
    servers = [
        DimseServer(
            ae_title=BOX_AET,
            host="127.0.0.1",
            port=0,
            peers=(),
            loopback_only=True,
            ingest=first.ingest,
            audit=first.audit,
            listener=listener,
        )
        for _ in range(2)
    ]
    ports = {server.start() for server in servers}
    try:
        assert ports == {listener.getsockname()[1]}
        assert _echoscu(ports.pop()).startswith("rc=0")
        spreads = []
        for _attempt in range(3):  # the idle server wins the race unless the machine stalls
            associations = []
            for _ in range(2):
                ae = AE(ae_title="PROBE")
                ae.add_requested_context("1.2.840.10008.1.1")
                association = ae.associate("127.0.0.1", servers[0].port or 0, ae_title=BOX_AET)
                assert association.is_established
                associations.append(association)
            spreads.append(sorted(len(server.active_sockets()) for server in servers))
            for association in associations:
                association.release()
            if spreads[-1] == [1, 1]:
                break
        assert spreads[-1] == [1, 1], spreads
    finally:
        for server in servers:
            server.stop()
