"""Restore onto a live tree file: scope, dry run, secrets, device id, atomic replace."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from host.backup import ops
from host.errors import IntegrityError, TreeError
from host.backup.keys import generate_identity
from host.tree.secrets import secret_uris
from host.tree.tnds import read_tnds, write_tnds

SAMPLE = Path(__file__).parent / "data" / "phone_tree.tnds.xml"


@pytest.fixture
def ident(tmp_path):
    return generate_identity(tmp_path / "keys")


@pytest.fixture
def live(tmp_path):
    path = tmp_path / "live.xml"
    path.write_bytes(SAMPLE.read_bytes())
    os.chmod(path, 0o640)
    return path


def _edit(path: Path, uri: str, value: str) -> None:
    tree = read_tnds(path.read_bytes())
    tree.replace(uri, value)
    path.write_bytes(write_tnds(tree))


def _first_leaf(tree, under: str) -> str:
    return next(u for u, n in tree.walk(under) if not n.interior and n.format in (None, "chr")
                and u not in secret_uris(tree))


def test_scoped_backup_restores_only_its_subtree(ident, live):
    tree = read_tnds(live.read_bytes())
    archive = ops.backup_tree(tree, ident, scope=["./DMAcc"])
    assert archive.host.scope == ("./DMAcc",)
    in_scope, out_scope = _first_leaf(tree, "./DMAcc"), _first_leaf(tree, "./DevDetail")
    _edit(live, in_scope, "changed-in-scope")
    _edit(live, out_scope, "changed-out-of-scope")
    report = ops.restore_tree_file(live, archive, ident, dry_run=True)
    assert [c.uri for c in report.changes] == [in_scope] and not report.applied
    assert read_tnds(live.read_bytes()).get(in_scope).value == "changed-in-scope"
    ops.restore_tree_file(live, archive, ident)
    after = read_tnds(live.read_bytes())
    assert after.get(in_scope).value == tree.get(in_scope).value
    assert after.get(out_scope).value == "changed-out-of-scope"
    assert live.stat().st_mode & 0o777 == 0o640


def test_keep_secrets_keeps_live_credentials(ident, live):
    tree = read_tnds(live.read_bytes())
    archive = ops.backup_tree(tree, ident)
    secret = secret_uris(tree)[0]
    _edit(live, secret, "rotated-since-backup")
    report = ops.restore_tree_file(live, archive, ident, keep_secrets=True)
    assert report.changes == []
    assert read_tnds(live.read_bytes()).get(secret).value == "rotated-since-backup"
    ops.restore_tree_file(live, archive, ident)            # without: the backup's secret returns
    assert read_tnds(live.read_bytes()).get(secret).value == tree.get(secret).value


def test_secret_values_never_appear_in_the_diff(ident, live):
    tree = read_tnds(live.read_bytes())
    archive = ops.backup_tree(tree, ident)
    secret = secret_uris(tree)[0]
    _edit(live, secret, "new-secret-value")
    report = ops.restore_tree_file(live, archive, ident, dry_run=True)
    assert [c.uri for c in report.changes] == [secret] and report.changes[0].secret
    text = report.render()
    assert "new-secret-value" not in text and str(tree.get(secret).value) not in text


def test_other_device_refused_before_touching_the_file(ident, live):
    tree = read_tnds(live.read_bytes())
    tree.replace("./DevInfo/DevId", "IMEI:000000000000000")
    archive = ops.backup_tree(tree, ident)
    before = live.read_bytes()
    with pytest.raises(IntegrityError, match="force-device"):
        ops.restore_tree_file(live, archive, ident)
    assert live.read_bytes() == before
    report = ops.restore_tree_file(live, archive, ident, force_device=True)
    # the other device's settings arrive, but this device stays itself
    assert read_tnds(live.read_bytes()).get("./DevInfo/DevId").value == read_tnds(before).get("./DevInfo/DevId").value
    assert report.kept_live == ["./DevInfo", "./DevDetail"]


def test_scope_missing_from_live_is_created_and_bad_live_refused(ident, live, tmp_path):
    tree = read_tnds(live.read_bytes())
    archive = ops.backup_tree(tree, ident, scope=["./Vendor"])
    shrunk = read_tnds(live.read_bytes())
    shrunk.delete("./Vendor")
    live.write_bytes(write_tnds(shrunk))
    ops.restore_tree_file(live, archive, ident)
    assert read_tnds(live.read_bytes()) == tree
    broken = tmp_path / "broken.xml"
    broken.write_bytes(b"<MgmtTree><Node>")
    with pytest.raises(TreeError):
        ops.restore_tree_file(broken, archive, ident)
    assert broken.read_bytes() == b"<MgmtTree><Node>"
