"""The simvault card emulator through the real stack: BackupCard -> Link ->
PcscTransport -> pcscd -> vpcd -> VpcdBridge -> card.emulator.VirtualCard."""
from __future__ import annotations

import io

import pytest

from apdu_specs import sw as sw_table
from cards import TEST_PIN, build_test_card, make_backup, upload
from host.link import ApduTracer, Link, PcscTransport

pytestmark = pytest.mark.pcsc


def test_backup_upload_through_pcscd_with_a_redacted_trace(vpcd_card, tmp_path) -> None:
    from host.client import BackupCard

    card = build_test_card(tmp_path / "card.img")
    reader = vpcd_card(card)
    trace = io.StringIO()
    with PcscTransport(reader) as transport:
        link = Link(transport, tracer=ApduTracer(trace, sw_namer=sw_table.name))
        link.connect()
        client = BackupCard(link)
        client.select()
        client.verify_pin(TEST_PIN)
        chunks = [bytes([i]) * 3000 for i in range(3)]
        backup = make_backup(1, chunks)
        assert upload(client, backup) is not None
    text = trace.getvalue()
    assert TEST_PIN.encode().hex() not in text.lower() and "redacted" in text
    assert "A4 04 00" in text and " 9000 " in text
