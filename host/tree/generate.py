"""Deterministic generator of realistic phone DM trees, for tests and benchmarks.

Trees are built from the management objects a real handset carries (DevInfo,
DevDetail, DMAcc 1.2, connectivity NAP/PX, FUMO, SCOMO inventory, vendor
settings) with values of realistic entropy: words, URLs, versions, numbers,
dates, and a minority of base64 blobs. Everything comes from random.Random(seed).

    phone_tree(seed=0)                 the sample handset (tests/data/phone_tree.tnds.xml)
    generate_tree(target_bytes, seed)  grow a phone tree until write_tnds() is ~target_bytes
    mutate_leaves(tree, fraction, seed) change ~fraction of the leaves in place
"""
from __future__ import annotations

import base64
import random

from host.tree.model import DMNode, DMTree
from host.tree.tnds import ALL_PROPS, _write_node, write_tnds

__all__ = ["DDF", "generate_tree", "mutate_leaves", "phone_tree"]

DDF = {
    "DevInfo": "urn:oma:mo:oma-dm-devinfo:1.0", "DevDetail": "urn:oma:mo:oma-dm-devdetail:1.0",
    "DMAcc": "urn:oma:mo:oma-dm-dmacc:1.0", "FUMO": "urn:oma:mo:oma-fumo:1.0",
    "SCOMO": "urn:oma:mo:oma-scomo:1.0", "Con": "urn:oma:mo:oma-dm-conn:1.0",
}
_VENDORS = [("Nordhavn Mobile", "NH"), ("Kestrel Devices", "KD"), ("Sakura Telecom", "ST")]
_OPERATORS = ["telco-one", "bluewave", "northnet", "skylink", "metrocell", "unitel"]
_APPS = ["Maps", "Mail", "Calendar", "Camera", "Weather", "Notes", "Music", "Wallet",
         "Translate", "Fitness", "Podcasts", "Radio", "Browser", "Gallery", "Clock", "Files"]
_WORDS = ["network", "profile", "roaming", "display", "battery", "sync", "backup", "update",
          "privacy", "location", "audio", "volume", "keyboard", "security", "storage", "power",
          "bluetooth", "wifi", "cellular", "notification", "theme", "language", "accessibility"]
_TEXT = "text/plain"


def _leaf(name: str, value: str | bytes, fmt: str = "chr", mime: str | None = _TEXT,
          acl: str | None = None) -> DMNode:
    return DMNode(name, value=value, format=fmt, type=mime, acl=acl)


def _interior(name: str, children: list[DMNode], ddf: str | None = None,
              acl: str | None = None) -> DMNode:
    node = DMNode(name, interior=True, format="node", type=ddf, type_is_ddf=ddf is not None,
                  acl=acl)
    node.children = {c.name: c for c in children}
    return node


def _ver(rng: random.Random) -> str:
    return f"{rng.randint(1, 14)}.{rng.randint(0, 9)}.{rng.randint(0, 40)}"


def _b64(rng: random.Random, n: int) -> str:
    return base64.b64encode(rng.randbytes(n)).decode("ascii")


def _tstamp(rng: random.Random) -> str:
    return (f"20{rng.randint(20, 26)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
            f"T{rng.randint(0, 23):02d}{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}Z")


def _imei(rng: random.Random) -> str:
    return "35" + "".join(str(rng.randint(0, 9)) for _ in range(13))


def devinfo(rng: random.Random, man: str, model: str) -> DMNode:
    return _interior("DevInfo", [
        _leaf("DevId", "IMEI:" + _imei(rng), acl="Get=*"),
        _leaf("Man", man), _leaf("Mod", model),
        _leaf("DmV", "1.2"), _leaf("Lang", rng.choice(["en-US", "fr-FR", "de-DE", "ja-JP"])),
        _interior("Ext", [_leaf("Bearer", "GSM")]),
    ], DDF["DevInfo"], acl="Get=*")


def devdetail(rng: random.Random, man: str) -> DMNode:
    return _interior("DevDetail", [
        _interior("URI", [_leaf("MaxDepth", "15", "int"), _leaf("MaxTotLen", "1024", "int"),
                          _leaf("MaxSegLen", "64", "int")]),
        _leaf("DevTyp", "smartphone"), _leaf("OEM", man),
        _leaf("FwV", f"FW-{_ver(rng)}-{rng.randint(1000, 9999)}"),
        _leaf("SwV", f"Android {rng.randint(9, 15)}; build {rng.choice('ABCDEFGHJK')}"
                     f"{rng.randint(10, 99)}.{rng.randint(100, 999)}"),
        _leaf("HwV", f"rev{rng.choice('ABCD')}{rng.randint(1, 9)}"),
        _leaf("LrgObj", "true", "bool"),
    ], DDF["DevDetail"], acl="Get=*")


def dmacc(rng: random.Random, index: int) -> DMNode:
    op = rng.choice(_OPERATORS)
    node = _dmacc(rng, index, op)
    node.title = f"{op} DM account {index}"
    return node


def _dmacc(rng: random.Random, index: int, op: str) -> DMNode:
    srv = f"{op}-dm{index}"
    acl = f"Get={srv}&Replace={srv}&Delete={srv}"
    host = f"dm{rng.randint(1, 9)}.{op}.example.com"
    return _interior(f"{op}{index}", [
        _leaf("AppID", "w7"), _leaf("ServerID", srv),
        _leaf("Name", f"{op.capitalize()} device management"),
        _leaf("PrefConRef", f"./Con/{op}-internet"),
        _interior("AppAddr", [_interior("SrvAddr", [
            _leaf("Addr", f"https://{host}:{rng.choice([443, 8443])}/oma/dm/{rng.randint(1, 99)}"),
            _leaf("AddrType", "URI"),
            _interior("Port", [_interior("Port1", [_leaf("PortNbr", "443", "int")])]),
        ])]),
        _leaf("AAuthPref", rng.choice(["DIGEST", "HMAC"])),
        _interior("AppAuth", [
            _interior("ClientSide", [
                _leaf("AAuthLevel", "CLCRED"), _leaf("AAuthType", "DIGEST"),
                _leaf("AAuthName", f"dev{_imei(rng)[-8:]}"),
                _leaf("AAuthSecret", f"{rng.choice(_WORDS)}-{rng.randint(10**7, 10**8)}"),
                _leaf("AAuthData", _b64(rng, 16), "b64", "application/octet-stream"),
            ]),
            _interior("ServerSide", [
                _leaf("AAuthLevel", "SRVCRED"), _leaf("AAuthType", "DIGEST"),
                _leaf("AAuthName", srv),
                _leaf("AAuthSecret", f"{rng.choice(_WORDS)}{rng.randint(1000, 9999)}!"),
                _leaf("AAuthData", _b64(rng, 16), "b64", "application/octet-stream"),
            ]),
        ]),
        _interior("Ext", [_leaf("LastSession", _tstamp(rng), "date")]),
    ], DDF["DMAcc"], acl=acl)


def connectivity(rng: random.Random, name: str) -> DMNode:
    apn = f"{rng.choice(['internet', 'wap', 'mms', 'ims'])}.{rng.choice(_OPERATORS)}.example"
    return _interior(name, [
        _leaf("Name", name.replace("-", " ").title()),
        _interior("NAP", [
            _leaf("Bearer", rng.choice(["GSM-GPRS", "LTE", "NR"])),
            _leaf("AddrType", "APN"), _leaf("Addr", apn),
            _interior("AuthInfo", [_leaf("AuthType", rng.choice(["PAP", "CHAP"])),
                                   _leaf("AuthName", rng.choice(_WORDS)),
                                   _leaf("AuthSecret", rng.choice(_WORDS) + str(rng.randint(1, 999)))]),
        ]),
        _interior("PX", [_interior("Proxy1", [
            _leaf("Addr", f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"),
            _leaf("AddrType", "IPV4"), _leaf("PortNbr", str(rng.choice([8080, 3128, 9201])), "int"),
            _interior("AuthInfo", [_leaf("AuthName", "proxy"),
                                   _leaf("AuthSecret", _b64(rng, 9))]),
        ])]),
        _leaf("MTU", str(rng.choice([1280, 1400, 1500])), "int"),
    ])


def fumo(rng: random.Random, name: str, man: str) -> DMNode:
    node = _fumo(rng, name, man)
    node.verno = str(rng.randint(1, 40))
    node.children["Update"].children["PkgData"].size = "0"
    return node


def _fumo(rng: random.Random, name: str, man: str) -> DMNode:
    ver = _ver(rng)
    url = f"https://fota.{man.split()[0].lower()}.example.com/pkg/{ver}/{_b64(rng, 6)}.bin"
    return _interior(name, [
        _leaf("PkgName", f"{man.split()[0]} system update {ver}"), _leaf("PkgVersion", ver),
        _interior("Download", [_leaf("PkgURL", url)]),
        _interior("Update", [_leaf("PkgData", b"", "bin", "application/octet-stream")]),
        _interior("DownloadAndUpdate", [_leaf("PkgURL", url)]),
        _leaf("State", str(rng.choice([10, 20, 30, 40, 50, 60, 100])), "int"),
        _interior("Ext", [_leaf("Severity", rng.choice(["mandatory", "optional"]))]),
    ], DDF["FUMO"], acl="Get=*&Replace=*&Exec=*")


def scomo_package(rng: random.Random, index: int) -> DMNode:
    app = rng.choice(_APPS)
    return _interior(f"Pkg{index}", [
        _leaf("ID", f"com.{rng.choice(_OPERATORS)}.{app.lower()}"), _leaf("Name", app),
        _leaf("Version", _ver(rng)),
        _leaf("Description", f"{app} for {rng.choice(_WORDS)} and {rng.choice(_WORDS)}"),
        _leaf("State", str(rng.choice([10, 20])), "int"),
        _leaf("Size", str(rng.randint(10_000, 90_000_000)), "int"),
        _interior("Operations", [DMNode("Activate", format="null"),
                                 DMNode("Deactivate", format="null"),
                                 DMNode("Remove", format="null")]),
        _interior("Ext", [_leaf("InstallTime", _tstamp(rng), "date"),
                          _leaf("Icon", _b64(rng, rng.randint(24, 96)), "b64", "image/png")]),
    ])


def vendor_group(rng: random.Random, name: str) -> DMNode:
    children = []
    for i in range(rng.randint(3, 8)):
        kind = rng.random()
        key = f"{rng.choice(_WORDS).capitalize()}{i}"
        if kind < 0.35:
            children.append(_leaf(key, str(rng.randint(0, 5000)), "int"))
        elif kind < 0.55:
            children.append(_leaf(key, rng.choice(["true", "false"]), "bool"))
        elif kind < 0.85:
            children.append(_leaf(key, " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))))
        elif kind < 0.95:
            children.append(_leaf(key, f"https://cfg.example.com/{rng.choice(_WORDS)}/{rng.randint(1, 999)}"))
        else:
            children.append(_leaf(key, _b64(rng, rng.randint(12, 48)), "b64", "application/octet-stream"))
    node = _interior(name, children)
    node.tstamp = _tstamp(rng)
    return node


def _base(rng: random.Random, man: str, code: str, *, full: bool) -> DMTree:
    """DevInfo and DevDetail (and with full, one of every other MO); Vendor/<code>."""
    model = f"{code}-{rng.randint(100, 990)}"
    mod = code
    tree = DMTree(man=man, mod=model)
    tree.root.acl = "Add=*&Get=*"
    r = tree.root.children
    r["DevInfo"] = devinfo(rng, man, model)
    r["DevDetail"] = devdetail(rng, man)
    if full:
        r["DMAcc"] = _interior("DMAcc", [dmacc(rng, 1)], acl="Get=*")
        r["Con"] = _interior("Con", [connectivity(rng, f"{rng.choice(_OPERATORS)}-internet"),
                                     connectivity(rng, "mms-profile")], DDF["Con"])
        r["FUMO"] = _interior("FUMO", [fumo(rng, "FwUpdate", man)])
        r["SCOMO"] = _interior("SCOMO", [_interior("Inventory", [_interior(
            "Deployed", [scomo_package(rng, i) for i in range(1, 4)])])], DDF["SCOMO"],
            acl="Get=*&Replace=*&Exec=*")
        r["Vendor"] = _interior("Vendor", [_interior(mod, [_interior("Settings", [
            vendor_group(rng, "Display"), vendor_group(rng, "Radio")])])])
    return tree


def phone_tree(seed: int = 0) -> DMTree:
    """The realistic sample handset tree (every MO once, a few instances each)."""
    rng = random.Random(seed)
    man, mod = _VENDORS[seed % len(_VENDORS)]
    return _base(rng, man, mod, full=True)


def _size(node: DMNode, depth: int) -> int:
    out: list[str] = []
    _write_node(node, out, depth, "  ", True, frozenset(ALL_PROPS), None)
    return len("".join(out).encode("utf-8"))


def generate_tree(target_bytes: int, seed: int = 0) -> DMTree:
    """A phone tree whose write_tnds() size is within a few % of target_bytes (>= ~6 KB)."""
    rng = random.Random(seed)
    man, mod = _VENDORS[seed % len(_VENDORS)]
    tree = _base(rng, man, mod, full=False)  # mod: the vendor code, ./Vendor/<code>
    size = len(write_tnds(tree))
    r = tree.root.children
    counters = {"acc": 0, "pkg": 0, "con": 0, "fumo": 0, "grp": 0}

    def container(name: str, make) -> DMNode:
        nonlocal size
        if name not in r:
            r[name] = make()
            size += _size(r[name], 1)
        return r[name]

    fine = False  # once a big unit would overshoot, only small leaves are added
    while size < target_bytes:
        room = target_bytes - size
        choice = rng.random() if counters["acc"] else 0.0  # every phone has a DMAcc
        if fine or room < 1500:  # fine-tune with small vendor settings
            settings = container("Vendor", lambda: _interior("Vendor", [_interior(mod, [
                _interior("Settings", [])])])).children[mod].children["Settings"]
            depth, parent = 4, settings
            counters["grp"] += 1
            unit = _leaf(f"Tune{counters['grp']}", " ".join(rng.choice(_WORDS) for _ in range(3)))
            if _size(unit, depth) > room * 2:
                break
        elif choice < 0.15:
            counters["acc"] += 1
            parent, depth = container("DMAcc", lambda: _interior("DMAcc", [], acl="Get=*")), 2
            unit = dmacc(rng, counters["acc"])
        elif choice < 0.55:
            scomo = container("SCOMO", lambda: _interior("SCOMO", [_interior("Inventory", [
                _interior("Deployed", [])])], DDF["SCOMO"], acl="Get=*&Replace=*&Exec=*"))
            parent, depth = scomo.children["Inventory"].children["Deployed"], 4
            counters["pkg"] += 1
            unit = scomo_package(rng, counters["pkg"])
        elif choice < 0.70:
            parent, depth = container("Con", lambda: _interior("Con", [], DDF["Con"])), 2
            counters["con"] += 1
            unit = connectivity(rng, f"{rng.choice(_OPERATORS)}-{rng.choice(_WORDS)}-{counters['con']}")
        elif choice < 0.75:
            parent, depth = container("FUMO", lambda: _interior("FUMO", [], DDF["FUMO"])), 2
            counters["fumo"] += 1
            unit = fumo(rng, f"Fw{counters['fumo']}", man)
        else:
            vendor = container("Vendor", lambda: _interior("Vendor", [_interior(mod, [
                _interior("Settings", [])])]))
            parent, depth = vendor.children[mod].children["Settings"], 4
            counters["grp"] += 1
            unit = vendor_group(rng, f"{rng.choice(_WORDS).capitalize()}{counters['grp']}")
        usize = _size(unit, depth)
        if usize > room + 200 and not fine and room >= 1500:
            fine = True
            continue
        parent.children[unit.name] = unit
        size += usize
    return tree


def _mutated(rng: random.Random, node: DMNode) -> str | bytes:
    v = node.value
    if isinstance(v, bytes):
        return rng.randbytes(max(1, len(v)))
    if node.format == "int":
        return str(rng.randint(0, 100_000))
    if node.format == "bool":
        return "false" if v == "true" else "true"
    if node.format == "b64":
        return _b64(rng, max(3, len(base64.b64decode(v or "")) if v else 12))
    if node.format == "date":
        return _tstamp(rng)
    if node.format == "null":
        return ""
    if v and all(p.isdigit() for p in v.split(".")):  # a version: bump one part
        parts = v.split(".")
        i = rng.randrange(len(parts))
        parts[i] = str(int(parts[i]) + rng.randint(1, 9))
        return ".".join(parts)
    words = (v or "").split(" ")
    words[rng.randrange(len(words))] = rng.choice(_WORDS) + str(rng.randint(0, 99))
    return " ".join(words)


def mutate_leaves(tree: DMTree, fraction: float, seed: int = 0) -> list[str]:
    """Change the value of round(fraction * leaves) leaves, in place; returns their URIs.

    Deterministic for a given tree and seed. Values stay valid for their Format.
    """
    rng = random.Random(seed)
    leaves = [(uri, n) for uri, n in tree.walk() if not n.interior and n.format != "null"]
    k = min(len(leaves), round(fraction * len(leaves)))
    picked = sorted(rng.sample(range(len(leaves)), k))
    for i in picked:
        node = leaves[i][1]
        new = _mutated(rng, node)
        node.value = new if new != node.value else _mutated(rng, node)
    return [leaves[i][0] for i in picked]
