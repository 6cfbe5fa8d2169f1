"""DS credentials sealed to the device: the password of a BackupViaDS / RestoreViaDS Exec.

The DM server seals the DS password to the device's registered encryption key
with HPKE (P-256, HKDF-SHA256, AES-256-GCM: the suite that wraps an archive's
chain keys, host.backup.keys) and sends ``sealed=<base64>`` in the Exec Data
instead of ``password=``. Only the device's private key opens it, so the
password is in no DM message, proxy or log in a form anyone else can read.

The HPKE info binds the blob to the device, the job (the Exec's Correlator) and
where the password is to be used (DS URL, user): a sealed blob copied into
another job, or an Exec whose url= was changed on the way, does not open (the
password never reaches a server it was not meant for).
"""
from __future__ import annotations

import base64
import binascii

from host.backup.keys import Decryptor, Recipient
from host.errors import IntegrityError

INFO_LABEL = b"simvault ds-credentials v1"
MAX_SEALED_B64 = 4096  # a password of a few hundred bytes seals to ~120 + len bytes


def _info(device_id: str, correlator: str, url: str, user: str) -> bytes:
    return b"\0".join([INFO_LABEL, *(part.encode("utf-8") for part in (device_id, correlator, url, user))])


def seal(enc_point: bytes, password: str, *, device_id: str, correlator: str, url: str, user: str) -> str:
    """base64 of HPKE(password) to the device key ``enc_point``, bound to device, job and DS account."""
    blob = Recipient(enc_point).wrap(password.encode("utf-8"), _info(device_id, correlator, url, user))
    return base64.b64encode(blob).decode("ascii")


def open_sealed(decryptor: Decryptor, sealed: str, *, device_id: str, correlator: str, url: str, user: str) -> str:
    """The password in ``sealed``; IntegrityError when it was not sealed to this device for
    this job and DS account, or was altered."""
    try:
        if len(sealed) > MAX_SEALED_B64:
            raise ValueError("too long")
        blob = base64.b64decode(sealed, validate=True)
        return decryptor.unwrap(blob, _info(device_id, correlator, url, user)).decode("utf-8")
    except (IntegrityError, ValueError, binascii.Error, UnicodeDecodeError):
        raise IntegrityError("the sealed DS credentials do not open with this device's encryption key for "
                             "this job and DS account (sealed for another device or job, or altered)") from None
