"""The sealed model file: model weights encrypted at rest (invariant I5).

A GGUF file is stored only in this form. It is opened by a node that received
the model's data key (DEK) from the ``keys`` role, and it is decrypted into
that node's memory, never back to disk. The format is a chunked AEAD stream in
the spirit of the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár,
"Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance"):

    header  = magic "MNTLSEAL" | u16 format version | u8 aead id | u8 flags (0)
              | u32 chunk size | u32 key version | 8-byte nonce prefix
              | u8 model-id length | model id (ASCII)
    chunk i = ChaCha20-Poly1305(DEK, nonce = prefix || u32 i,
                                plaintext_i, aad = header || u64 i || u8 final)

All integers are big-endian. Every chunk holds ``chunk_size`` plaintext bytes
except the final one, which holds 0..``chunk_size`` bytes; the final chunk
alone carries ``final = 1``. Consequences, each checked by the tests:

* the header is authenticated by every chunk (it is part of every AAD), so a
  changed model id, chunk size, key version or nonce prefix fails at chunk 0;
* the chunk index is in both nonce and AAD, so reordered, dropped or
  duplicated chunks fail;
* the final flag is authenticated, so cutting the file at a chunk boundary
  (the last remaining chunk was encrypted with ``final = 0``) fails, and
  appending anything after the final chunk fails too (the final chunk is then
  read as non-final);
* the nonce prefix is drawn per file, so chunks spliced from another file
  sealed under the same DEK fail.

Decryption is online: a chunk's plaintext is released only after its tag
verified, but a truncation is only known at the end of the stream. A consumer
therefore treats the plaintext as unusable until :meth:`ModelDecryptor.finish`
returned (the model loader discards its buffer on any error).

The module is pure: it transforms bytes. Randomness (DEK, nonce prefix) comes
from the caller; file reading and writing live in ``nodes/model_store.py``.
"""

from __future__ import annotations

import contextlib
import re
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

MAGIC: Final = b"MNTLSEAL"
FORMAT_VERSION: Final = 1
AEAD_CHACHA20_POLY1305: Final = 1
DATA_KEY_SIZE: Final = 32
NONCE_PREFIX_SIZE: Final = 8
TAG_SIZE: Final = 16
DEFAULT_CHUNK_SIZE: Final = 1 << 20
# A chunk is held in memory whole; 16 MiB bounds what a hostile header can ask for.
MAX_CHUNK_SIZE: Final = 16 << 20
MAX_MODEL_ID_LENGTH: Final = 128
# u32 counter in the nonce: 2**32 chunks of at most 16 MiB is far beyond any model.
MAX_CHUNKS: Final = 1 << 32

# Model ids appear in file names, release artifact names, log lines and wire
# messages: a conservative ASCII alphabet that also fits Hugging Face style
# "org/name" ids. Every "/"-separated segment starts with a letter or digit,
# so no segment is "." or ".." and an id never escapes a directory.
MODEL_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*")

_FIXED = struct.Struct(">8sHBBII8sB")
_CHUNK_AAD_SUFFIX = struct.Struct(">QB")
_NONCE_COUNTER = struct.Struct(">I")


class SealedModelError(Exception):
    """A sealed model file could not be produced or opened."""


class SealedModelFormatError(SealedModelError):
    """The header is malformed or names something this reader does not support."""


class SealedModelAuthError(SealedModelError):
    """A chunk failed authentication: tampered, reordered, spliced or wrong key."""


class SealedModelTruncatedError(SealedModelError):
    """The stream ended before its final chunk."""


def validate_model_id(model_id: str) -> str:
    """``model_id`` if it is a well-formed model id, else :class:`SealedModelFormatError`."""
    if (
        not isinstance(model_id, str)
        or len(model_id) > MAX_MODEL_ID_LENGTH
        or MODEL_ID_PATTERN.fullmatch(model_id) is None
    ):
        raise SealedModelFormatError(
            "model id is not 1-128 characters of [A-Za-z0-9._-] in '/'-separated segments"
        )
    return model_id


@dataclass(frozen=True)
class SealedModelHeader:
    """The authenticated header of a sealed model file."""

    model_id: str
    key_version: int
    chunk_size: int
    nonce_prefix: bytes

    def __post_init__(self) -> None:
        validate_model_id(self.model_id)
        if not 0 <= self.key_version < 1 << 32:
            raise SealedModelFormatError("key version out of range")
        if not 1 <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise SealedModelFormatError("chunk size out of range")
        if len(self.nonce_prefix) != NONCE_PREFIX_SIZE:
            raise SealedModelFormatError("nonce prefix must be 8 bytes")

    def encode(self) -> bytes:
        model_id = self.model_id.encode("ascii")
        return (
            _FIXED.pack(
                MAGIC,
                FORMAT_VERSION,
                AEAD_CHACHA20_POLY1305,
                0,
                self.chunk_size,
                self.key_version,
                self.nonce_prefix,
                len(model_id),
            )
            + model_id
        )

    @property
    def encoded_size(self) -> int:
        return _FIXED.size + len(self.model_id)


def decode_header(data: bytes | bytearray) -> SealedModelHeader | None:
    """The header at the start of ``data``; ``None`` if more bytes are needed."""
    if len(data) < _FIXED.size:
        if not MAGIC.startswith(bytes(data[: len(MAGIC)])):
            raise SealedModelFormatError("not a sealed model file (bad magic)")
        return None
    magic, version, aead, flags, chunk_size, key_version, prefix, id_length = _FIXED.unpack_from(
        data
    )
    if magic != MAGIC:
        raise SealedModelFormatError("not a sealed model file (bad magic)")
    if version != FORMAT_VERSION:
        raise SealedModelFormatError(f"unsupported sealed model format version {version}")
    if aead != AEAD_CHACHA20_POLY1305:
        raise SealedModelFormatError(f"unsupported AEAD id {aead}")
    if flags != 0:
        raise SealedModelFormatError("reserved header flags are set")
    if not 1 <= id_length <= MAX_MODEL_ID_LENGTH:
        raise SealedModelFormatError("model id length out of range")
    if len(data) < _FIXED.size + id_length:
        return None
    raw_id = bytes(data[_FIXED.size : _FIXED.size + id_length])
    if not raw_id.isascii():
        # Checked, not caught: a UnicodeDecodeError would hold the id bytes.
        raise SealedModelFormatError("model id is not ASCII")
    model_id = raw_id.decode("ascii")
    return SealedModelHeader(
        model_id=model_id, key_version=key_version, chunk_size=chunk_size, nonce_prefix=prefix
    )


def _check_key(data_key: bytes) -> ChaCha20Poly1305:
    if len(data_key) != DATA_KEY_SIZE:
        raise SealedModelError("a data key is 32 bytes")
    return ChaCha20Poly1305(bytes(data_key))


def _nonce(header: SealedModelHeader, index: int) -> bytes:
    return header.nonce_prefix + _NONCE_COUNTER.pack(index)


def _aad(header_bytes: bytes, index: int, final: bool) -> bytes:
    return header_bytes + _CHUNK_AAD_SUFFIX.pack(index, 1 if final else 0)


class ModelEncryptor:
    """Incremental sealing: ``feed`` plaintext in any pieces, then ``finish``.

    Output begins with the header. A chunk is emitted only once the encryptor
    knows whether it is the final one, so one chunk of plaintext is held back.
    """

    def __init__(self, header: SealedModelHeader, data_key: bytes) -> None:
        self._aead = _check_key(data_key)
        self._header = header
        self._header_bytes = header.encode()
        self._buffer = bytearray()
        self._index = 0
        self._started = False
        self._finished = False

    @property
    def header(self) -> SealedModelHeader:
        return self._header

    def _seal(self, plaintext: bytes, final: bool) -> bytes:
        if self._index >= MAX_CHUNKS:
            raise SealedModelError("too many chunks for one sealed file")
        sealed = self._aead.encrypt(
            _nonce(self._header, self._index),
            plaintext,
            _aad(self._header_bytes, self._index, final),
        )
        self._index += 1
        return sealed

    def _start(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        return [self._header_bytes]

    def feed(self, plaintext: bytes) -> bytes:
        """Ciphertext for every chunk now known to be non-final."""
        if self._finished:
            raise SealedModelError("encryptor already finished")
        out = self._start()
        self._buffer += plaintext
        size = self._header.chunk_size
        # Strictly more than one chunk buffered: the first one is not the last.
        while len(self._buffer) > size:
            out.append(self._seal(bytes(self._buffer[:size]), final=False))
            del self._buffer[:size]
        return b"".join(out)

    def finish(self) -> bytes:
        """The final chunk (and the header, if nothing was fed)."""
        if self._finished:
            raise SealedModelError("encryptor already finished")
        out = self._start()
        out.append(self._seal(bytes(self._buffer), final=True))
        self._buffer.clear()
        self._finished = True
        return b"".join(out)


DataKeyLookup = Callable[[SealedModelHeader], bytes]


class ModelDecryptor:
    """Incremental opening: ``feed`` ciphertext in any pieces, then ``finish``.

    ``data_key_for`` is called once, when the header is complete, and returns
    the DEK for that header's model id and key version (or raises). If
    ``expected_model_id`` is given, a file sealed for another model is refused
    before any chunk is decrypted.
    """

    def __init__(
        self, data_key_for: DataKeyLookup, *, expected_model_id: str | None = None
    ) -> None:
        self._data_key_for = data_key_for
        self._expected_model_id = expected_model_id
        self._buffer = bytearray()
        self._header: SealedModelHeader | None = None
        self._header_bytes = b""
        self._aead: ChaCha20Poly1305 | None = None
        self._index = 0
        self._finished = False
        self._failed = False

    @property
    def header(self) -> SealedModelHeader | None:
        """The header, once it has been read."""
        return self._header

    def _open(self, block: bytes, final: bool) -> bytes:
        assert self._header is not None and self._aead is not None
        if self._index >= MAX_CHUNKS:
            raise SealedModelFormatError("too many chunks")
        plaintext: bytes | None = None
        with contextlib.suppress(InvalidTag):
            plaintext = self._aead.decrypt(
                _nonce(self._header, self._index),
                block,
                _aad(self._header_bytes, self._index, final),
            )
        if plaintext is None:
            raise SealedModelAuthError(
                f"chunk {self._index} failed authentication"
                " (tampered, reordered, truncated, spliced or wrong key)"
            )
        self._index += 1
        return plaintext

    def _read_header(self) -> bool:
        header = decode_header(self._buffer)
        if header is None:
            return False
        if self._expected_model_id is not None and header.model_id != self._expected_model_id:
            raise SealedModelFormatError("sealed file belongs to a different model")
        self._aead = _check_key(self._data_key_for(header))
        self._header = header
        self._header_bytes = bytes(self._buffer[: header.encoded_size])
        del self._buffer[: header.encoded_size]
        return True

    def _guard(self) -> None:
        if self._failed:
            raise SealedModelError("decryptor failed earlier; the stream is unusable")
        if self._finished:
            raise SealedModelError("decryptor already finished")

    def feed(self, ciphertext: bytes) -> bytes:
        """Authenticated plaintext of every chunk now known to be non-final."""
        self._guard()
        try:
            self._buffer += ciphertext
            if self._header is None and not self._read_header():
                return b""
            assert self._header is not None
            block = self._header.chunk_size + TAG_SIZE
            out: list[bytes] = []
            while len(self._buffer) > block:
                out.append(self._open(bytes(self._buffer[:block]), final=False))
                del self._buffer[:block]
            return b"".join(out)
        except BaseException:
            self._failed = True
            raise

    def finish(self) -> bytes:
        """The final chunk's plaintext; raises if the stream ended early."""
        self._guard()
        try:
            if self._header is None and not self._read_header():
                raise SealedModelTruncatedError("stream ended inside the header")
            if len(self._buffer) < TAG_SIZE:
                raise SealedModelTruncatedError("stream ended before the final chunk")
            plaintext = self._open(bytes(self._buffer), final=True)
            self._buffer.clear()
            self._finished = True
            return plaintext
        except BaseException:
            self._failed = True
            raise


def seal_stream(
    plaintext: Iterable[bytes], header: SealedModelHeader, data_key: bytes
) -> Iterator[bytes]:
    """Sealed file bytes for a plaintext stream, produced piece by piece."""
    encryptor = ModelEncryptor(header, data_key)
    for piece in plaintext:
        out = encryptor.feed(piece)
        if out:
            yield out
    yield encryptor.finish()


def open_stream(
    sealed: Iterable[bytes],
    data_key_for: DataKeyLookup,
    *,
    expected_model_id: str | None = None,
) -> Iterator[bytes]:
    """Authenticated plaintext pieces of a sealed stream.

    The iterator raises :class:`SealedModelError` at the point of failure; a
    consumer keeps nothing it received unless iteration completed.
    """
    decryptor = ModelDecryptor(data_key_for, expected_model_id=expected_model_id)
    for piece in sealed:
        out = decryptor.feed(piece)
        if out:
            yield out
    yield decryptor.finish()


def sealed_size(plaintext_size: int, header: SealedModelHeader) -> int:
    """The size of the sealed file for ``plaintext_size`` bytes of plaintext."""
    chunks = max(1, -(-plaintext_size // header.chunk_size))
    return header.encoded_size + plaintext_size + chunks * TAG_SIZE
