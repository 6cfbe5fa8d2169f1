"""Firmware update (OMA FUMO 1.0) on the device: Exec ./FUMO/<x>/Update and DownloadAndUpdate.

The result goes back per FUMO: Generic Alert 1226 with the Exec's Correlator, Meta
Type per operation, Format int, Data the result code. With the Backup MO's
Policy/BeforeFirmwareUpdate the agent backs up first (host.dm.agent.bar.run_backup).
"""
from __future__ import annotations

import re

from host.dm.agent.api import AlertReport, ExecOutcome, ExecRequest
from host.dm.agent.bar import run_backup
from host.dm.agent.tree import BAR
from host.syncml.status import StatusCode

FUMO_RE = re.compile(r"^\./FUMO/[^/]+/(Update|DownloadAndUpdate)$")
FUMO_TYPES = {"Update": "org.openmobilealliance.dm.firmwareupdate.update",
              "DownloadAndUpdate": "org.openmobilealliance.dm.firmwareupdate.downloadandupdate"}
FUMO_OK, FUMO_UPDATE_FAILED = 200, 410  # OMA FUMO 1.0 result codes (Successful, Firmware Update Failed)
FIRMWARE_POLICY_CORRELATOR = "device:firmware"  # the server records the policy backup with this origin


def fumo_report(operation: str, code: int) -> AlertReport:
    """The FUMO Generic Alert 1226 payload: Meta Type per operation, Format int, Data the result code."""
    return AlertReport(code=code, data=str(code), type=FUMO_TYPES[operation], format="int",
                       mark=None if 200 <= code < 300 else "critical")


def exec_fumo_update(req: ExecRequest) -> ExecOutcome:
    """./FUMO/<x>/Update: with Policy/BeforeFirmwareUpdate, back up first (to the card
    when the agent has one, else to the server) and report that backup as the device's
    own (Correlator device:firmware), then 'install' and move the FUMO State
    (60 update progressing -> 100 successful, or 80 failed); the FUMO result goes
    back with the Exec's Correlator."""
    match = FUMO_RE.match(req.uri)
    if not match:
        return ExecOutcome(StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED)
    agent = req.agent
    fumo, operation = req.uri.rsplit("/", 1)[0], match.group(1)

    def work() -> AlertReport:
        before = (agent.tree.value(f"{BAR}/Policy/BeforeFirmwareUpdate", "false") or "false").lower() == "true"
        if before:
            destination = "card" if agent.card is not None else "server"
            report = run_backup(agent, destination, None, False)
            agent.queue_report(f"{BAR}/Operations/Backup", FIRMWARE_POLICY_CORRELATOR, report)
            if report.code != 200:
                agent.tree.set_leaf(f"{fumo}/State", "80", "int")
                agent.tree.save()
                return fumo_report(operation, FUMO_UPDATE_FAILED)
        agent.tree.set_leaf(f"{fumo}/State", "60", "int")
        agent.firmware_updates += 1
        agent.tree.set_leaf(f"{fumo}/State", "100", "int")
        agent.tree.save()
        return fumo_report(operation, FUMO_OK)

    return ExecOutcome(StatusCode.ACCEPTED_FOR_PROCESSING, work)
