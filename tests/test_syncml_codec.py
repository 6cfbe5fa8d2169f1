"""SyncML 1.2 XML codec: every command round-trips; hostile input -> SyncMLError."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from host.errors import SyncMLError
from host.syncml import codec
from host.syncml import model as m
from host.syncml.devinf import (
    DEVINF_TYPE,
    DEVINF_URI,
    ContentType,
    DataStore,
    DevInf,
    decode_devinf,
    devinf_from_element,
    devinf_to_element,
    encode_devinf,
)


def header(proto: str = m.PROTO_DM) -> m.SyncHdr:
    return m.SyncHdr(
        session_id="1A", msg_id=3, target=m.Target("IMEI:490154203237518", "dev"),
        source=m.Source("https://dm.example/manage", "server"), ver_proto=proto,
        resp_uri="https://dm.example/manage?s=1A", cred=m.Cred("dXNlcjpwdw==", m.Meta(type="syncml:auth-basic", format="b64")),
        meta=m.Meta(max_msg_size=10000, max_obj_size=1_000_000))


def devinf() -> DevInf:
    return DevInf(dev_id="IMEI:490154203237518", dev_typ="phone", man="simvault", mod="SV1",
                  sw_v="0.1", support_large_objs=True, support_number_of_changes=True,
                  data_stores=[DataStore(source_ref="./backups", display_name="Backups", max_guid_size=32,
                                         rx_pref=ContentType("application/vnd.simvault.backup", "1.0"),
                                         tx_pref=ContentType("application/vnd.simvault.backup", "1.0"),
                                         sync_types=[1, 2, 3, 4, 5, 6, 7])])


def tnds() -> ET.Element:
    root = ET.Element("{syncml:dmddf1.2}MgmtTree")
    ET.SubElement(root, "{syncml:dmddf1.2}VerDTD").text = "1.2"
    node = ET.SubElement(root, "{syncml:dmddf1.2}Node")
    ET.SubElement(node, "{syncml:dmddf1.2}NodeName").text = "Mod"
    ET.SubElement(node, "{syncml:dmddf1.2}Value").text = "a < b & c"
    return root


def every_command() -> list[m.Command]:
    item = m.Item(target=m.Target("./Vendor/simvault/BaR/Config/Scope"), data="full")
    return [
        m.Status(cmd_id=1, msg_ref=2, cmd_ref=0, cmd="SyncHdr", data=407, target_refs=["IMEI:1"],
                 source_refs=["https://dm.example/"],
                 chal=m.Chal(m.Meta(type="syncml:auth-md5", format="b64", next_nonce="AAECAw=="))),
        m.Status(cmd_id=2, msg_ref=2, cmd_ref=4, cmd="Get", data=200,
                 items=[m.Item(source=m.Source("./DevInfo/Mod"))]),
        m.Alert(cmd_id=3, data=1226, correlator="job-7",
                items=[m.Item(source=m.Source("./Vendor/simvault/BaR/Operations/Backup"),
                              meta=m.Meta(type="urn:simvault:bar:result", format="chr"), data="0")]),
        m.Alert(cmd_id=4, data=1201),
        m.Get(cmd_id=5, items=[m.Item(target=m.Target("./Vendor/simvault?list=TNDS"))]),
        m.Put(cmd_id=6, meta=m.Meta(type=DEVINF_TYPE),
              items=[m.Item(source=m.Source(DEVINF_URI), data=devinf_to_element(devinf()))]),
        m.Replace(cmd_id=7, items=[item, m.Item(target=m.Target("./a"), meta=m.Meta(format="int"), data="5")]),
        m.Add(cmd_id=8, meta=m.Meta(format="xml", type="application/vnd.syncml.dmtnds+xml"),
              items=[m.Item(target=m.Target("./Vendor"), data=tnds())]),
        m.Add(cmd_id=9, items=[m.Item(target=m.Target("./bin"), meta=m.Meta(format="b64", size=3),
                                      data=b"\x00\xff\x10")]),
        m.Delete(cmd_id=10, no_resp=True, archive=True, sft_del=True, items=[m.Item(target=m.Target("./x"))]),
        m.Copy(cmd_id=11, items=[m.Item(target=m.Target("./to"), source=m.Source("./from"))]),
        m.Exec(cmd_id=12, correlator="c-1", item=m.Item(target=m.Target("./Vendor/simvault/BaR/Operations/Backup"),
                                                        data="dest=card")),
        m.Atomic(cmd_id=13, commands=[m.Add(cmd_id=14, items=[m.Item(target=m.Target("./n"), data="1")]),
                                      m.Sequence(cmd_id=15, commands=[
                                          m.Replace(cmd_id=16, items=[m.Item(target=m.Target("./n"), data="2")])])]),
        m.Results(cmd_id=17, msg_ref=2, cmd_ref=5, meta=m.Meta(format="chr"), target_refs=["./x"],
                  items=[m.Item(source=m.Source("./DevInfo/Mod"), data="SV1", more_data=True)]),
        m.Sync(cmd_id=18, target=m.Target("./backups"), source=m.Source("./bk"), number_of_changes=2,
               meta=m.Meta(max_obj_size=4096),
               commands=[m.Add(cmd_id=19, meta=m.Meta(type="application/octet-stream", format="b64"),
                               items=[m.Item(source=m.Source("luid-1"), data=b"backup bytes")]),
                         m.Delete(cmd_id=20, items=[m.Item(source=m.Source("luid-2"))])]),
        m.Map(cmd_id=21, target=m.Target("./backups"), source=m.Source("./bk"),
              map_items=[m.MapItem(m.Target("guid-1"), m.Source("luid-1"))]),
        m.Move(cmd_id=22, items=[m.Item(target=m.Target("./to"), source=m.Source("./from"))]),
        m.Alert(cmd_id=23, data=201, items=[m.Item(target=m.Target("./backups"), source=m.Source("./bk"),
                                                   meta=m.Meta(anchor=m.Anchor(next="20261124T071500Z", last="1")))]),
    ]


def canon(msg: m.SyncMLMessage) -> bytes:
    """Messages with nested Elements compare by their encoding (Elements have no ==)."""
    return codec.encode(msg)


@pytest.mark.parametrize("cmd", every_command(), ids=lambda c: f"{c.name}{c.cmd_id}")
def test_each_command_round_trips(cmd: m.Command) -> None:
    msg = m.SyncMLMessage(header(), [cmd], final=True)
    wire = codec.encode(msg)
    back = codec.decode(wire)
    assert canon(back) == wire
    if not isinstance(cmd, (m.Put, m.Add)) or not any(isinstance(i.data, ET.Element) for i in cmd.items):
        assert back == msg


def test_whole_message_round_trip_ds_and_devinf() -> None:
    msg = m.SyncMLMessage(header(m.PROTO_DS), every_command(), final=False)
    back = codec.decode(codec.encode(msg, doctype=True))
    assert back.header == msg.header and back.final is False
    assert [c.name for c in back.commands] == [c.name for c in msg.commands]
    put = back.commands[5]
    assert isinstance(put, m.Put)
    assert devinf_from_element(put.items[0].data) == devinf()  # type: ignore[arg-type]
    add = back.commands[7]
    assert isinstance(add, m.Add) and isinstance(add.items[0].data, ET.Element)
    assert add.items[0].data.find("{syncml:dmddf1.2}Node/{syncml:dmddf1.2}Value").text == "a < b & c"


def test_element_order_follows_dtd() -> None:
    text = codec.encode(m.SyncMLMessage(header(), every_command())).decode()
    hdr = text[text.index("<SyncHdr>"):text.index("</SyncHdr>")]
    order = [hdr.index(t) for t in ("<VerDTD>", "<VerProto>", "<SessionID>", "<MsgID>", "<Target>",
                                    "<Source>", "<RespURI>", "<Cred>", "<Meta>")]
    assert order == sorted(order)
    status = text[text.index("<Status>"):text.index("</Status>")]
    order = [status.index(t) for t in ("<CmdID>", "<MsgRef>", "<CmdRef>", "<Cmd>", "<TargetRef>",
                                       "<SourceRef>", "<Chal>", "<Data>")]
    assert order == sorted(order)
    assert '<MaxMsgSize xmlns="syncml:metinf">10000</MaxMsgSize>' in text


def test_devinf_standalone_round_trip_and_errors() -> None:
    assert decode_devinf(encode_devinf(devinf())) == devinf()
    with pytest.raises(SyncMLError):
        decode_devinf(b'<DevInf xmlns="syncml:devinf"><VerDTD>1.2</VerDTD><DevID>x</DevID></DevInf>')
    with pytest.raises(SyncMLError):
        decode_devinf(encode_devinf(devinf()).replace(b"<SyncType>7</SyncType>", b"<SyncType>x</SyncType>"))


def test_text_with_markup_and_cr_survives() -> None:
    data = "<a>&amp;\r\n]]> \u00e9\U0001F600"
    msg = m.SyncMLMessage(header(), [m.Replace(cmd_id=1, items=[m.Item(target=m.Target("./t"), data=data)])])
    assert codec.decode(codec.encode(msg)) == msg


def test_encoder_refuses_what_xml_cannot_carry() -> None:
    bad = [m.Replace(cmd_id=1, items=[m.Item(target=m.Target("./t"), data="nul\x00")]),
           m.Replace(cmd_id=1, items=[m.Item(target=m.Target("./t"), data=b"raw")]),  # bytes without b64
           m.Replace(cmd_id=1, items=[]),
           m.Sync(cmd_id=1, commands=[m.Get(cmd_id=2, items=[m.Item(target=m.Target("x"))])])]
    for cmd in bad:
        with pytest.raises(SyncMLError):
            codec.encode(m.SyncMLMessage(header(), [cmd]))
    with pytest.raises(SyncMLError, match="unique"):
        codec.encode(m.SyncMLMessage(header(), [m.Alert(cmd_id=1, data=1201), m.Alert(cmd_id=1, data=1201)]))


GOOD = codec.encode(m.SyncMLMessage(header(), [m.Alert(cmd_id=1, data=1201)]))


def mutate(old: bytes, new: bytes) -> bytes:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


HOSTILE = {
    "entity": b'<?xml version="1.0"?><!DOCTYPE SyncML [<!ENTITY a "aaaa">]><SyncML xmlns="SYNCML:SYNCML1.2">&a;</SyncML>',
    "billion_laughs": (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY l0 "ha"><!ENTITY l1 "&l0;&l0;&l0;">]>'
                       b'<SyncML xmlns="SYNCML:SYNCML1.2">&l1;</SyncML>'),
    "xxe": (b'<?xml version="1.0"?><!DOCTYPE SyncML [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b'<SyncML xmlns="SYNCML:SYNCML1.2">&x;</SyncML>'),
    "external_dtd_not_fetched": (b'<?xml version="1.0"?><!DOCTYPE SyncML SYSTEM "file:///etc/passwd">'
                                 b'<SyncML xmlns="SYNCML:SYNCML1.2"/>'),
    "deep": b'<SyncML xmlns="SYNCML:SYNCML1.2">' + b"<a>" * 200 + b"</a>" * 200 + b"</SyncML>",
    "huge": b'<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr>' + b"x" * (5 * 1024 * 1024) + b"</SyncHdr></SyncML>",
    "not_xml": b"\x00\x01 hello",
    "empty": b"",
    "wrong_root": b'<SyncML xmlns="SYNCML:SYNCML1.1"><SyncHdr/></SyncML>',
    "missing_synchdr": mutate(GOOD[GOOD.index(b"<SyncHdr>"):GOOD.index(b"<SyncBody>")], b""),
    "bad_cmdid": mutate(b"<CmdID>1</CmdID>", b"<CmdID>one</CmdID>"),
    "zero_cmdid": mutate(b"<CmdID>1</CmdID>", b"<CmdID>0</CmdID>"),
    "negative_cmdid": mutate(b"<CmdID>1</CmdID>", b"<CmdID>-1</CmdID>"),
    "missing_cmdid": mutate(b"<CmdID>1</CmdID>", b""),
    "alert_code_text": mutate(b"<Data>1201</Data>", b"<Data>12x1</Data>"),
    "msgid_text": mutate(b"<MsgID>3</MsgID>", b"<MsgID>three</MsgID>"),
    "huge_number": mutate(b"<MsgID>3</MsgID>", b"<MsgID>99999999999999999999</MsgID>"),
    "unicode_digits": mutate(b"<MsgID>3</MsgID>", "<MsgID>\u0663</MsgID>".encode()),
    "wrong_verdtd": mutate(b"<VerDTD>1.2</VerDTD>", b"<VerDTD>1.1</VerDTD>"),
    "wrong_verproto": mutate(b"<VerProto>DM/1.2</VerProto>", b"<VerProto>HTTP/1.1</VerProto>"),
    "unknown_command": mutate(b"<Final/>", b"<Frobnicate><CmdID>9</CmdID></Frobnicate><Final/>"),
    "unknown_in_hdr": mutate(b"<RespURI>", b"<Bogus/><RespURI>"),
    "order_swapped": mutate(b"<VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto>",
                            b"<VerProto>DM/1.2</VerProto><VerDTD>1.2</VerDTD>"),
    "empty_body": mutate(b"<Alert><CmdID>1</CmdID><Data>1201</Data></Alert><Final/>", b""),
    "status_without_data": (b'<SyncML xmlns="SYNCML:SYNCML1.2">' + GOOD[GOOD.index(b"<SyncHdr>"):GOOD.index(b"<SyncBody>")]
                            + b"<SyncBody><Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef>"
                            b"<Cmd>SyncHdr</Cmd></Status></SyncBody></SyncML>"),
    "flag_with_text": mutate(b"<Final/>", b"<Final>yes</Final>"),
    "bad_b64": mutate(b"<Final/>", b'<Add><CmdID>2</CmdID><Item><Meta><Format xmlns="syncml:metinf">b64</Format>'
                                   b"</Meta><Data>!!!</Data></Item></Add><Final/>"),
    "meta_unknown": mutate(b"<MaxObjSize", b"<Frob>1</Frob><MaxObjSize"),
    "foreign_namespace": mutate(b"<Final/>", b'<Alert xmlns="urn:evil"><CmdID>2</CmdID></Alert><Final/>'),
    "get_in_sync": mutate(b"<Final/>", b"<Sync><CmdID>2</CmdID><Get><CmdID>3</CmdID><Item><Target><LocURI>x"
                                       b"</LocURI></Target></Item></Get></Sync><Final/>"),
    "duplicate_cmdid": mutate(b"<Final/>", b"<Alert><CmdID>1</CmdID><Data>1201</Data></Alert><Final/>"),
    "text_in_structure": mutate(b"<SyncBody>", b"<SyncBody>junk"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_input_raises_syncml_error(name: str) -> None:
    with pytest.raises(SyncMLError) as info:
        codec.decode(HOSTILE[name])
    assert "\n" not in str(info.value) and str(info.value)


def test_good_baseline_decodes() -> None:
    assert codec.decode(GOOD).commands[0] == m.Alert(cmd_id=1, data=1201)


def test_decode_accepts_doctype_and_whitespace() -> None:
    text = codec.encode(m.SyncMLMessage(header(), every_command()[:4]), doctype=True).decode()
    pretty = text.replace("><", ">\n  <")
    assert codec.decode(pretty.encode()) == codec.decode(text.encode())


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(SyncMLError):
        codec.decode("<SyncML/>")  # type: ignore[arg-type]


def test_reply_helpers_build_statuses_that_encode() -> None:
    from host.syncml.reply import header_status, reply_header, status_for

    received = m.SyncMLMessage(header(), every_command()[2:8])
    hdr = reply_header(received.header, msg_id=4, meta=m.Meta(max_msg_size=8000))
    assert hdr.target == m.Target("https://dm.example/manage", "server")
    assert hdr.source == m.Source("IMEI:490154203237518") and hdr.session_id == "1A"
    statuses = [header_status(received.header, cmd_id=1, code=212)]
    statuses += [status_for(c, msg_ref=3, cmd_id=i, code=200) for i, c in enumerate(received.commands, start=2)]
    assert statuses[0].cmd_ref == 0 and statuses[0].cmd == "SyncHdr" and statuses[0].msg_ref == 3
    get = statuses[3]
    assert (get.cmd, get.cmd_ref, get.target_refs) == ("Get", 5, ["./Vendor/simvault?list=TNDS"])
    back = codec.decode(codec.encode(m.SyncMLMessage(hdr, statuses)))
    assert back.commands == statuses
