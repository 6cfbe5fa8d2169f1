"""The shared APDU vectors (apdu_specs/vectors/*.json) on the Python emulator.

The same files are replayed on the Java Card applet in jCardSim by
javacard/src/test/java/org/simvault/card/VectorsTest.java (``mvn test``), so both
cards answer every command of apdu_specs/README.md alike, error paths included.
scp03.json (the secure channel's published vectors) has its own test.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "apdu_specs" / "vectors"
spec = importlib.util.spec_from_file_location("make_vectors", VECTORS / "make_vectors.py")
assert spec is not None and spec.loader is not None
make_vectors = importlib.util.module_from_spec(spec)
sys.modules["make_vectors"] = make_vectors      # dataclasses look their module up
spec.loader.exec_module(make_vectors)

FILES = sorted(p for p in VECTORS.glob("*.json") if p.name != "scp03.json")


def test_every_scenario_has_its_file() -> None:
    assert [p.stem for p in FILES] == sorted(make().name for make in make_vectors.SCENARIOS)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_emulator_answers_the_vectors(path: Path) -> None:
    doc = json.loads(path.read_text())
    assert len(doc["steps"]) >= 5
    assert make_vectors.replay_on_emulator(doc) == []


@pytest.mark.parametrize("make", make_vectors.SCENARIOS, ids=lambda m: m.__name__)
def test_files_are_what_the_generator_writes(make) -> None:
    """Edit make_vectors.py and rerun it, never the JSON by hand."""
    doc = make_vectors.document(make())
    assert (VECTORS / f"{doc['name']}.json").read_text() == make_vectors.render(doc), \
        "stale: run .venv/bin/python apdu_specs/vectors/make_vectors.py"


def test_every_readme_command_is_exercised() -> None:
    """Each INS of apdu_specs/constants.Ins appears in some vector's command."""
    from apdu_specs.constants import Ins
    seen = {bytes.fromhex(step["command"])[1] for p in FILES
            for step in json.loads(p.read_text())["steps"] if "command" in step}
    missing = [ins.name for ins in Ins if ins not in seen]
    assert not missing or set(missing) <= {"INITIALIZE_UPDATE"}, missing   # INITIALIZE UPDATE: scp03.json


def test_a_wrong_answer_is_caught() -> None:
    """The matcher fails on a wrong SW, a wrong length and a wrong unmasked byte, not on a masked one."""
    step = {"response": "0102", "sw": "9000", "mask": "FF00"}
    assert make_vectors.matches(step, bytes.fromhex("01FF9000")) is None
    assert "SW" in make_vectors.matches(step, bytes.fromhex("01026A80"))
    assert "data bytes" in make_vectors.matches(step, bytes.fromhex("0102039000"))
    assert "differs at byte 0" in make_vectors.matches(step, bytes.fromhex("02029000"))
    doc = json.loads((VECTORS / "pin.json").read_text())
    doc["steps"][2]["sw"] = "63C1"          # VERIFY 9999 really answers 63C2
    assert len(make_vectors.replay_on_emulator(doc)) == 1
