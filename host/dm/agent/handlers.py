"""The agent's Exec handlers, registered in one place: the Backup MO (bar), FUMO (fumo)
and backup through Data Sync (mo_ds). DMAgent calls :func:`register_defaults` once.

Another feature adds its own with host.dm.agent.api.register_exec_handler (the last
registration of a suffix wins)."""
from __future__ import annotations

import logging

from host.dm.agent import bar, fumo
from host.dm.agent.api import register_exec_handler

log = logging.getLogger(__name__)
_registered = False


def register_defaults() -> None:
    global _registered
    if _registered:
        return
    register_exec_handler("BaR/Operations/Backup", bar.exec_backup)
    register_exec_handler("BaR/Operations/Restore", bar.exec_restore)
    register_exec_handler("BaR/Operations/Delete", bar.exec_delete)
    register_exec_handler("/Update", fumo.exec_fumo_update)
    register_exec_handler("/DownloadAndUpdate", fumo.exec_fumo_update)
    try:
        from host.dm.agent import mo_ds
    except ImportError as exc:  # the DS feature is optional for the agent
        log.info("BackupViaDS unavailable: %s", exc)
    else:
        register_exec_handler("BaR/Operations/BackupViaDS", mo_ds.exec_backup_via_ds)
        register_exec_handler("BaR/Operations/RestoreViaDS", mo_ds.exec_restore_via_ds)
    _registered = True
