"""Compression of each plaintext chunk (see docs/ARCHIVE_FORMAT.md for the measurements).

Chunks are cut from the canonical plaintext first and each is compressed on
its own, so an edit changes only the chunks it touches (compressing the whole
stream first would change every byte after the edit). The payload that gets
encrypted is one codec byte then the body: 0 stored, 1 zstd, 2 deflate, 3 lzma,
4 zstd with the chain's dictionary. A chunk that does not shrink is stored.

Small chunks compress worse on their own (zstd has no history to match); a
zstd dictionary trained on the first full backup of a chain, stored once as
an encrypted chunk of its own, gives every chunk that history back (measured
in docs/ARCHIVE_FORMAT.md: -39% on a 10 MB tree at 2 KiB chunks). Decompression is bounded by the
chunker's max size: a forged payload cannot blow up memory.
"""
from __future__ import annotations

import lzma
import threading
import zlib

import zstandard

from host.errors import ArchiveError, IntegrityError

CODECS = {"none": 0, "zstd": 1, "deflate": 2, "lzma": 3}
DEFAULT_CODEC = "zstd"
ZSTD_LEVEL = 19
DEFLATE_LEVEL = 9
LZMA_PRESET = 6

# A ZstdCompressor must not be shared between threads (python-zstandard): one per thread.
_local = threading.local()


def _default_compressor() -> zstandard.ZstdCompressor:
    zc = getattr(_local, "zc", None)
    if zc is None:
        zc = _local.zc = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True, write_checksum=False)
    return zc


ZSTD_DICT_TAG = 4
DICT_SIZE = 16384
DICT_MIN_PLAINTEXT = 64 * 1024  # below this, training has too few samples (and gains little)


def train_dictionary(samples: list[bytes]) -> bytes | None:
    """A zstd dictionary for these chunks, or None when there is too little to learn from."""
    if sum(map(len, samples)) < DICT_MIN_PLAINTEXT or len(samples) < 8:
        return None
    try:
        return zstandard.train_dictionary(DICT_SIZE, samples, level=ZSTD_LEVEL).as_bytes()
    except zstandard.ZstdError:
        return None


class ChunkCodec:
    """Compresses/decompresses chunks of one archive (codec name + optional dictionary)."""

    def __init__(self, codec: str, zdict: bytes | None = None) -> None:
        if codec not in CODECS:
            raise ArchiveError(f"unknown codec {codec!r}; use one of {', '.join(CODECS)}")
        self.codec = codec
        self.zdict = zstandard.ZstdCompressionDict(zdict) if zdict else None
        self._local = threading.local()  # one dictionary compressor per thread (they are not thread-safe)

    def _dict_compressor(self) -> zstandard.ZstdCompressor:
        zc = getattr(self._local, "zc", None)
        if zc is None:
            zc = self._local.zc = zstandard.ZstdCompressor(level=ZSTD_LEVEL, dict_data=self.zdict,
                                                           write_content_size=True, write_checksum=False,
                                                           write_dict_id=False)
        return zc

    def compress(self, data: bytes) -> bytes:
        if self.codec == "zstd" and self.zdict is not None:
            body = self._dict_compressor().compress(data)
            return bytes([ZSTD_DICT_TAG]) + body if len(body) < len(data) else b"\x00" + data
        return compress_chunk(self.codec, data)

    def decompress(self, payload: bytes, max_size: int) -> bytes:
        if payload[:1] == bytes([ZSTD_DICT_TAG]):
            if self.zdict is None:
                raise IntegrityError("chunk needs the archive's dictionary, which it lacks: damaged backup")
            try:
                out = _zstd_bounded(payload[1:], max_size, self.zdict)
            except (zstandard.ZstdError, ValueError) as exc:
                raise IntegrityError(f"chunk does not decompress ({exc}): damaged backup") from None
            if len(out) > max_size:
                raise IntegrityError("chunk decompresses beyond the chunker's max size: damaged backup")
            return out
        return decompress_chunk(payload, max_size)


def compress_chunk(codec: str, data: bytes) -> bytes:
    if codec not in CODECS:
        raise ArchiveError(f"unknown codec {codec!r}; use one of {', '.join(CODECS)}")
    body = data
    if codec == "zstd":
        body = _default_compressor().compress(data)
    elif codec == "deflate":
        body = zlib.compress(data, DEFLATE_LEVEL)
    elif codec == "lzma":
        body = lzma.compress(data, preset=LZMA_PRESET)
    if codec == "none" or len(body) >= len(data):
        return b"\x00" + data
    return bytes([CODECS[codec]]) + body


def decompress_chunk(payload: bytes, max_size: int) -> bytes:
    """The chunk plaintext; IntegrityError when malformed or larger than max_size."""
    if not payload:
        raise IntegrityError("empty chunk payload: damaged backup")
    tag, body = payload[0], payload[1:]
    try:
        if tag == 0:
            out = body
        elif tag == 1:
            out = _zstd_bounded(body, max_size)
        elif tag == 2:
            d2 = zlib.decompressobj()
            out = d2.decompress(body, max_size + 1)
            if not d2.eof or d2.unused_data:
                raise ValueError("truncated or trailing deflate data")
        elif tag == 3:
            d3 = lzma.LZMADecompressor()
            out = d3.decompress(body, max_size + 1)
            if not d3.eof or d3.unused_data:
                raise ValueError("truncated or trailing lzma data")
        else:
            raise ValueError(f"unknown codec byte {tag}")
    except (zstandard.ZstdError, zlib.error, lzma.LZMAError, ValueError) as exc:
        raise IntegrityError(f"chunk does not decompress ({exc}): damaged backup") from None
    if len(out) > max_size:
        raise IntegrityError("chunk decompresses beyond the chunker's max size: damaged backup")
    return out


def read_bounded(decompressor: zstandard.ZstdDecompressor, body: bytes, max_size: int) -> bytes:
    """One frame's output, at most max_size + 1 bytes read out (a zip bomb stops there: the
    caller refuses anything longer than max_size)."""
    parts: list[bytes] = []
    total = 0
    with decompressor.stream_reader(body, read_across_frames=False) as reader:
        while total <= max_size:
            block = reader.read(max_size + 1 - total)
            if not block:
                break
            parts.append(block)
            total += len(block)
    return b"".join(parts)


def _zstd_bounded(body: bytes, max_size: int, zdict: zstandard.ZstdCompressionDict | None = None) -> bytes:
    """Decompress one zstd frame, reading at most max_size + 1 bytes of output."""
    params = zstandard.get_frame_parameters(body)
    if params.content_size > max_size and params.content_size != zstandard.CONTENTSIZE_UNKNOWN:
        raise ValueError("frame declares more than the signed sizes allow")
    decompressor = zstandard.ZstdDecompressor(dict_data=zdict) if zdict is not None else zstandard.ZstdDecompressor()
    out = read_bounded(decompressor, body, max_size)
    if params.content_size != zstandard.CONTENTSIZE_UNKNOWN and len(out) != params.content_size:
        raise ValueError("truncated zstd frame")
    return out


def zstd_bounded(body: bytes, max_size: int, zdict: zstandard.ZstdCompressionDict | None = None) -> bytes:
    """One zstd frame decompressed, at most max_size bytes (IntegrityError beyond or if malformed)."""
    try:
        out = _zstd_bounded(body, max_size, zdict)
    except (zstandard.ZstdError, ValueError) as exc:
        raise IntegrityError(f"segment does not decompress ({exc}): damaged backup") from None
    if len(out) > max_size:
        raise IntegrityError("segment decompresses beyond its signed size: damaged backup")
    return out
