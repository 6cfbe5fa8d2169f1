"""SyncML authentication (basic, md5, x-syncml-hmac) and Package 0."""
from __future__ import annotations

import base64
import hashlib

import pytest

from host.errors import AuthError, SyncMLError
from host.syncml import auth, codec
from host.syncml import model as m
from host.syncml.package0 import (
    Initiator,
    Notification,
    UIMode,
    build_package0,
    package0_digest,
    parse_package0,
    verify_package0,
)

USERS = {"Bruce2": "OhBehave", "dev\"ice": "p:w"}


def b64md5(raw: bytes) -> bytes:
    return base64.b64encode(hashlib.md5(raw).digest())


def test_md5_matches_the_spec_example() -> None:
    # OMA DM 1.2 Security / Protocol worked example: Bruce2 / OhBehave / nonce "Nonce"
    assert auth.md5_digest("Bruce2", "OhBehave", b"Nonce") == "Zz6EivR3yeaaENcRN6lpAQ=="


def test_md5_formula_computed_independently() -> None:
    nonce = bytes(range(16))
    want = b64md5(b64md5(b"alice:s3cret") + b":" + nonce).decode()
    assert auth.md5_digest("alice", "s3cret", nonce) == want
    cred = auth.md5_credential("alice", "s3cret", nonce)
    assert cred.meta.type == "syncml:auth-md5" and cred.meta.format == "b64" and cred.data == want


def test_secret_variants_agree() -> None:
    secret = auth.auth_secret("Bruce2", "OhBehave")
    assert secret == b64md5(b"Bruce2:OhBehave")
    assert auth.md5_digest_from_secret(secret, b"Nonce") == "Zz6EivR3yeaaENcRN6lpAQ=="
    assert auth.hmac_mac_from_secret(secret, b"n", b"body") == auth.hmac_mac("Bruce2", "OhBehave", b"n", b"body")


def test_hmac_formula_and_header_round_trip() -> None:
    nonce, body = b"\x01" * 16, b"<SyncML>...</SyncML>"
    want = b64md5(b64md5(b"Robert Jordan:pw") + b":" + nonce + b":" + b64md5(body)).decode()
    assert auth.hmac_mac("Robert Jordan", "pw", nonce, body) == want
    value = auth.hmac_header("Robert Jordan", "pw", nonce, body)
    assert value == f'algorithm=MD5, username="Robert Jordan", mac={want}'
    assert auth.parse_hmac_header(value) == auth.HmacHeader("Robert Jordan", want)


def test_parse_hmac_header_spec_example_and_variants() -> None:
    spec = 'algorithm=MD5, username="Robert Jordan", mac=NTI2OTJhMDAwNjYxODkwYmQ3NWUxN2RhN2ZmYmJlMzk'
    hdr = auth.parse_hmac_header(spec)
    assert hdr == auth.HmacHeader("Robert Jordan", "NTI2OTJhMDAwNjYxODkwYmQ3NWUxN2RhN2ZmYmJlMzk")
    assert auth.parse_hmac_header('username="a\\"b",mac=QUJD').username == 'a"b'  # algorithm omitted
    assert auth.parse_hmac_header(auth.HmacHeader('x"y', "QQ==").format()).username == 'x"y'
    for bad in ('algorithm=SHA1, username="a", mac=QQ==', 'username="a"', "mac=QQ==", "garbage",
                'username="a", username="b", mac=QQ==', ""):
        with pytest.raises(AuthError):
            auth.parse_hmac_header(bad)


def verifier(kind: str) -> auth.CredentialVerifier:
    return auth.CredentialVerifier(USERS.get, kind)


def test_md5_verifier_statuses_and_fresh_nonces() -> None:
    v, nonce = verifier(auth.AUTH_MD5), auth.new_nonce()
    missing = v.verify(None, "Bruce2", nonce)
    assert missing.status == 407 and missing.chal is not None and missing.chal.meta.type == auth.AUTH_MD5
    assert auth.nonce_from_chal(missing.chal) == missing.next_nonce and len(missing.next_nonce or b"") == 16
    ok = v.verify(auth.md5_credential("Bruce2", "OhBehave", nonce), "Bruce2", nonce)
    assert ok.status == 212 and ok.accepted and ok.username == "Bruce2"
    assert ok.next_nonce != missing.next_nonce  # a fresh nonce every time
    assert v.verify(auth.md5_credential("Bruce2", "wrong", nonce), "Bruce2", nonce).status == 401
    assert v.verify(auth.md5_credential("Bruce2", "OhBehave", b"old"), "Bruce2", nonce).status == 401
    assert v.verify(auth.md5_credential("nobody", "", nonce), "nobody", nonce).status == 401
    assert v.verify(auth.basic_credential("Bruce2", "OhBehave"), "Bruce2", nonce).status == 401  # wrong scheme
    assert v.verify(auth.md5_credential("Bruce2", "OhBehave", nonce), None, nonce).status == 401


def test_basic_verifier() -> None:
    v = verifier(auth.AUTH_BASIC)
    cred = auth.basic_credential("dev\"ice", "p:w")
    assert base64.b64decode(cred.data) == b'dev"ice:p:w'
    assert v.verify(cred).status == 212
    assert v.verify(auth.basic_credential("dev\"ice", "p:x")).status == 401
    assert v.verify(m.Cred("!!notb64", m.Meta(type=auth.AUTH_BASIC, format="b64"))).status == 401
    assert v.verify(None).status == 407


def test_hmac_verifier_over_an_encoded_message() -> None:
    v, nonce = verifier(auth.AUTH_MAC), auth.new_nonce()
    hdr = m.SyncHdr("1", 1, m.Target("https://dm/"), m.Source("IMEI:1", "Bruce2"))
    body = codec.encode(m.SyncMLMessage(hdr, [m.Alert(cmd_id=1, data=1201)]))
    header = auth.hmac_header("Bruce2", "OhBehave", nonce, body)
    assert v.verify_hmac(header, body, nonce).status == 212
    assert v.verify_hmac(header, body + b" ", nonce).status == 401  # body tampered
    assert v.verify_hmac(header, body, auth.new_nonce()).status == 401  # replay with another nonce
    assert v.verify_hmac(None, body, nonce).status == 407
    assert v.verify_hmac("nonsense", body, nonce).status == 401
    assert v.verify_hmac(header, body, nonce).chal.meta.type == auth.AUTH_MAC  # type: ignore[union-attr]


def test_hmac_verifier_takes_the_spec_header_shape() -> None:
    """DM Security 5.1.4.3: folded header, quoted username, mac as a base64-string (padding optional)."""
    v, nonce, body = verifier(auth.AUTH_MAC), b"\x07" * 16, b"<SyncML/>"
    mac = auth.hmac_mac("Bruce2", "OhBehave", nonce, body)
    assert mac.endswith("==")  # 16-byte digest: the padding a peer may leave out
    for value in (f'algorithm=MD5, username="Bruce2",\r\n mac={mac}', f'username="Bruce2", mac={mac.rstrip("=")}',
                  f'Algorithm=md5,Username="Bruce2",MAC={mac}'):
        assert v.verify_hmac(value, body, nonce).status == 212, value
    assert v.verify_hmac(f'username="Bruce2", mac={mac[:-3]}', body, nonce).status == 401


def test_challenge_travels_in_a_status() -> None:
    nonce = auth.new_nonce()
    st = m.Status(cmd_id=1, msg_ref=1, cmd_ref=0, cmd="SyncHdr", data=401, chal=auth.challenge(auth.AUTH_MD5, nonce))
    hdr = m.SyncHdr("1", 1, m.Target("IMEI:1"), m.Source("https://dm/"))
    back = codec.decode(codec.encode(m.SyncMLMessage(hdr, [st])))
    assert auth.nonce_from_chal(back.commands[0].chal) == nonce  # type: ignore[attr-defined]
    with pytest.raises(AuthError):
        auth.challenge("syncml:auth-x509")
    with pytest.raises(AuthError):
        auth.nonce_from_chal(m.Chal(m.Meta(next_nonce="***")))


# ---------------------------------------------------------------- Package 0
NOTE = Notification(server_id="simvault-dm", session_id=0xBEEF, ui_mode=UIMode.INFORMATIVE,
                    initiator=Initiator.SERVER, vendor_specific=b"\x01\x02")


def test_package0_layout_bit_by_bit() -> None:
    pkg = build_package0(NOTE, "srvpw", b"srvnonce")
    trigger = pkg[16:]
    bits = int.from_bytes(trigger[:5], "big")
    assert bits >> 30 == 12  # version 1.2, 10 bits
    assert (bits >> 28) & 0b11 == 2 and (bits >> 27) & 1 == 1 and bits & ((1 << 27) - 1) == 0
    assert trigger[5:7] == b"\xbe\xef" and trigger[7] == len("simvault-dm")
    assert trigger[8:19] == b"simvault-dm" and trigger[19:] == b"\x01\x02"
    # digest = H(B64(H(server-identifier:password)):nonce:B64(H(trigger))), computed independently
    want = hashlib.md5(b64md5(b"simvault-dm:srvpw") + b":srvnonce:" + b64md5(trigger)).digest()
    assert pkg[:16] == want == package0_digest("simvault-dm", "srvpw", b"srvnonce", trigger)


def test_package0_header_read_with_libdmclient_masks() -> None:
    """libdmclient package0.c reads the 8-byte header as one big-endian 64-bit word with these masks."""
    trigger = build_package0(NOTE, "srvpw", b"n")[16:]
    word = int.from_bytes(trigger[:8], "big")
    assert (word & 0xFFC0000000000000) >> 54 == 12  # version
    assert (word & 0x0030000000000000) >> 52 == UIMode.INFORMATIVE
    assert (word & 0x0008000000000000) >> 51 == Initiator.SERVER
    assert (word & 0x0000000000FFFF00) >> 8 == 0xBEEF  # session id
    assert word & 0xFF == len("simvault-dm")  # server identifier length


def test_package0_accepts_dm_1_1_version_field() -> None:
    """Same layout since DM 1.1.2; libdmclient only accepts 11 there, so servers send it."""
    note11 = Notification(server_id="srv", session_id=9, version=11)
    pkg = build_package0(note11, "pw", b"n")
    assert verify_package0(pkg, {"srv": "pw"}.get, b"n") == note11
    with pytest.raises(SyncMLError, match="not supported"):
        parse_package0(build_package0(Notification(server_id="srv", session_id=9, version=13), "pw", b"n"))


def test_package0_round_trip_and_verify() -> None:
    pkg = build_package0(NOTE, "srvpw", b"n")
    assert parse_package0(pkg) == (NOTE, pkg[:16])
    assert verify_package0(pkg, {"simvault-dm": "srvpw"}.get, b"n") == NOTE


@pytest.mark.parametrize("where", [0, 15, 16, 22, 30, -1])
def test_package0_tampered_is_refused(where: int) -> None:
    pkg = bytearray(build_package0(NOTE, "srvpw", b"n"))
    pkg[where] ^= 0x01
    with pytest.raises(SyncMLError):  # AuthError for a bad digest, SyncMLError for a broken header
        verify_package0(bytes(pkg), {"simvault-dm": "srvpw"}.get, b"n")


def test_package0_wrong_secret_or_nonce_or_unknown_server() -> None:
    pkg = build_package0(NOTE, "srvpw", b"n")
    for lookup, nonce in (({"simvault-dm": "other"}.get, b"n"), ({"simvault-dm": "srvpw"}.get, b"m"),
                          ({}.get, b"n")):
        with pytest.raises(AuthError):
            verify_package0(pkg, lookup, nonce)


def test_package0_malformed() -> None:
    for bad in (b"", b"\x00" * 20, build_package0(NOTE, "p", b"n")[:20]):
        with pytest.raises(SyncMLError):
            parse_package0(bad)
    with pytest.raises(SyncMLError):
        Notification(server_id="x" * 256, session_id=1).trigger()
    with pytest.raises(SyncMLError):
        Notification(server_id="x", session_id=70000).trigger()


def test_status_and_alert_tables_cover_the_protocol_codes() -> None:
    from host.syncml.status import (
        ALERT_NAMES,
        STATUS_NAMES,
        AlertCode,
        StatusCode,
        alert_name,
        status_name,
    )

    for code in (200, 201, 202, 212, 213, 214, 215, 216, 400, 401, 403, 404, 405, 406, 407, 408, 412,
                 413, 415, 416, 418, 420, 424, 425, 500, 503, 506, 507, 508, 510, 516):
        assert code in STATUS_NAMES and StatusCode(code).value == code
    # DS 1.2 session alerts 221..225; DM 1.2 1224 client event, 1225 no end of data (as in the
    # Samsung FUMO client's AlertTypes); 1226 generic alert (hostap OMA DM client)
    for code in (1100, 1101, 1102, 1103, 1104, 1200, 1201, 1222, 1223, 1224, 1225, 1226,
                 *range(200, 211), *range(221, 226)):
        assert code in ALERT_NAMES and AlertCode(code).value == code
    assert status_name(212) == "Authentication accepted" and status_name(299).startswith("success")
    assert alert_name(1226) == "Generic alert" and "unknown" in alert_name(4242)
