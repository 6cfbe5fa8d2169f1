"""The backup archive: canonical tree -> chunks -> compress -> encrypt -> signed manifest.

See docs/ARCHIVE_FORMAT.md. The public API:

    make_layered_archive(tree, signer, recipients, *, previous=None, decryptor=None, scope=None,
                         exclude_secrets=False, max_chunk_size=..., policy=...) -> Archive   (format 3)
    make_archive(...) -> Archive      (format 1, CDC chunks: still written on request, always read)
    Archive.to_bytes() / Archive.from_bytes(data)
    verify_archive(archive, trust, decryptor, *, device_id=None, ...) -> VerifiedBackup
"""
from .archive import MAGIC, Archive, parse_manifest
from .build import chain_keys_of, chunker_for, device_id_of, make_archive
from .cdc import ChunkerParams
from .crypto import ChainKeys
from .host_section import HostSection
from .layered import DEFAULT_POLICY, RebasePolicy, make_layered_archive
from .layered_host import LayeredHost
from .verify import VerifiedBackup, verify_archive, verify_integrity, verify_signature

__all__ = [
           "MAGIC",
           "Archive",
           "ChainKeys",
           "ChunkerParams",
           "DEFAULT_POLICY",
           "HostSection",
           "LayeredHost",
           "RebasePolicy",
           "VerifiedBackup",
           "chain_keys_of",
           "chunker_for",
           "device_id_of",
           "make_archive",
           "make_layered_archive",
           "parse_manifest",
           "verify_archive",
           "verify_integrity",
           "verify_signature",
]
