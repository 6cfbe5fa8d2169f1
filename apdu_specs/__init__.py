"""The simvault card interface, once: identifiers, status words and codecs.

The card (card/) and the host (host/) both import these; nothing else builds or
parses card bytes. The readable spec is apdu_specs/README.md.
"""
from . import commands, constants, fci, manifest, scp, sw, tlv  # noqa: F401  (registers every codec)
from .codec import CODECS, Codec, CodecError  # noqa: F401
from .constants import AID, Ins  # noqa: F401
from .sw import SW, describe  # noqa: F401
