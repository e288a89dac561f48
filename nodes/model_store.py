"""Sealed model files on disk, and their decryption into memory only.

Layout of a model store directory::

    <store>/<model id>/v<key version>.sealed   the weights, sealed (protocol.sealed_model)
    <store>/<model id>/manifest.json           sizes and digests (no secret)

Sealing reads the GGUF a block at a time and writes sealed chunks as they
are produced; resealing (data-key rotation) streams from one sealed file to
another. Plaintext is never written to disk by this module: a node opens a
sealed file into an anonymous in-memory file (``memfd_create``), which
llama.cpp can load through its ``/proc/self/fd`` path, after checking the
plaintext's length and SHA-384 against the release's model artifact.
Files are written to a temporary name and renamed, so a crash never leaves a
half-written sealed file under the real name.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from actors.seams.random import Random
from protocol.sealed_model import (
    DEFAULT_CHUNK_SIZE,
    NONCE_PREFIX_SIZE,
    DataKeyLookup,
    ModelDecryptor,
    SealedModelError,
    SealedModelHeader,
    decode_header,
    seal_stream,
    validate_model_id,
)

READ_BLOCK: Final = 1 << 20
MANIFEST_NAME: Final = "manifest.json"
MANIFEST_VERSION: Final = 1
_MAX_MANIFEST_BYTES: Final = 64 << 10


class ModelStoreError(Exception):
    """A model file or manifest is missing, malformed, or does not match the release."""


@dataclass(frozen=True)
class SealedModelInfo:
    """What sealing produced: enough for a release artifact and for checking."""

    model_id: str
    key_version: int
    plaintext_length: int
    plaintext_sha384: bytes
    sealed_sha384: bytes
    chunk_size: int

    def to_json(self) -> bytes:
        return (
            json.dumps(
                {
                    "version": MANIFEST_VERSION,
                    "model_id": self.model_id,
                    "key_version": self.key_version,
                    "plaintext_length": self.plaintext_length,
                    "plaintext_sha384": self.plaintext_sha384.hex(),
                    "sealed_sha384": self.sealed_sha384.hex(),
                    "chunk_size": self.chunk_size,
                },
                indent=2,
                sort_keys=True,
            ).encode()
            + b"\n"
        )

    @classmethod
    def from_json(cls, data: bytes) -> SealedModelInfo:
        if len(data) > _MAX_MANIFEST_BYTES:
            raise ModelStoreError("model manifest is too large")
        failure = ""
        try:
            body = json.loads(data)
            if not isinstance(body, dict) or body.get("version") != MANIFEST_VERSION:
                raise ModelStoreError("model manifest has an unsupported version")
            expected = {
                "version",
                "model_id",
                "key_version",
                "plaintext_length",
                "plaintext_sha384",
                "sealed_sha384",
                "chunk_size",
            }
            if set(body) != expected:
                raise ModelStoreError("model manifest has missing or unknown fields")
            info = cls(
                model_id=validate_model_id(body["model_id"]),
                key_version=_nonneg(body["key_version"]),
                plaintext_length=_nonneg(body["plaintext_length"]),
                plaintext_sha384=_digest(body["plaintext_sha384"]),
                sealed_sha384=_digest(body["sealed_sha384"]),
                chunk_size=_nonneg(body["chunk_size"]),
            )
        except (ValueError, RecursionError, SealedModelError) as error:
            # RecursionError: deeply nested JSON within the size bound.
            failure = type(error).__name__
        if failure:
            # Raised outside the handler: JSONDecodeError keeps the document and
            # UnicodeDecodeError its bytes, and __context__ would keep them.
            raise ModelStoreError(f"model manifest is malformed ({failure})")
        return info


def _nonneg(value: object) -> int:
    if type(value) is not int or value < 0:
        raise ValueError("expected a non-negative integer")
    return value


def _digest(value: object) -> bytes:
    if not isinstance(value, str) or len(value) != 96:
        raise ValueError("expected 96 hex digits")
    return bytes.fromhex(value)


def model_dir(store: Path, model_id: str) -> Path:
    return store / validate_model_id(model_id)


def sealed_path(store: Path, model_id: str, key_version: int) -> Path:
    return model_dir(store, model_id) / f"v{key_version}.sealed"


def read_blocks(stream: BinaryIO, block: int = READ_BLOCK) -> Iterator[bytes]:
    while piece := stream.read(block):
        yield piece


def _write_atomically(destination: Path, pieces: Iterable[bytes]) -> bytes:
    """Write ``pieces`` to ``destination`` via a temporary file; returns their SHA-384."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    # A fresh, exclusively created name (O_EXCL, mode 0600): a fixed name would
    # let two writers share one temporary file, and would follow a symlink
    # left at that name.
    fd, name = tempfile.mkstemp(
        dir=destination.parent, prefix=destination.name + ".", suffix=".partial"
    )
    temporary = Path(name)
    digest = hashlib.sha384()
    try:
        with os.fdopen(fd, "wb") as out:
            for piece in pieces:
                digest.update(piece)
                out.write(piece)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    return digest.digest()


def seal_model_file(
    source: Path,
    destination: Path,
    *,
    model_id: str,
    key_version: int,
    data_key: bytes,
    random: Random,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> SealedModelInfo:
    """Seal the GGUF at ``source`` into ``destination``, streamed."""
    header = SealedModelHeader(
        model_id=model_id,
        key_version=key_version,
        chunk_size=chunk_size,
        nonce_prefix=random.token_bytes(NONCE_PREFIX_SIZE),
    )
    plain_digest = hashlib.sha384()
    length = 0

    def plaintext(stream: BinaryIO) -> Iterator[bytes]:
        nonlocal length
        for piece in read_blocks(stream):
            plain_digest.update(piece)
            length += len(piece)
            yield piece

    with source.open("rb") as stream:
        sealed_digest = _write_atomically(
            destination, seal_stream(plaintext(stream), header, data_key)
        )
    return SealedModelInfo(
        model_id=model_id,
        key_version=key_version,
        plaintext_length=length,
        plaintext_sha384=plain_digest.digest(),
        sealed_sha384=sealed_digest,
        chunk_size=chunk_size,
    )


def write_sealed_stream(destination: Path, sealed: Iterable[bytes]) -> bytes:
    """Write an already-sealed stream (a reseal) atomically; returns its SHA-384."""
    return _write_atomically(destination, sealed)


def read_sealed_header(path: Path) -> SealedModelHeader:
    """The header of the sealed file at ``path`` (not yet authenticated)."""
    with path.open("rb") as stream:
        data = stream.read(512)
    refusal: SealedModelError | None = None
    try:
        header = decode_header(data)
    except SealedModelError as error:
        refusal = error
    if refusal is not None:
        raise ModelStoreError(f"{path.name}: {refusal}")
    if header is None:
        raise ModelStoreError(f"{path.name}: file ends inside the header")
    return header


class InMemoryModel:
    """Decrypted weights in an anonymous memory file; ``path`` is for the loader.

    The file lives only in RAM (it can reach swap like any process memory;
    nodes run without swap). Close it as soon as the engine has loaded it.
    """

    def __init__(self, fd: int, length: int, sha384: bytes) -> None:
        self._fd = fd
        self.length = length
        self.sha384 = sha384

    @property
    def path(self) -> str:
        return f"/proc/self/fd/{self._fd}"

    def read_prefix(self, n: int) -> bytes:
        return os.pread(self._fd, n, 0)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> InMemoryModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_sealed_model(
    path: Path,
    data_key_for: DataKeyLookup,
    *,
    model_id: str,
    expected_length: int,
    expected_sha384: bytes,
) -> InMemoryModel:
    """Decrypt ``path`` into memory and check it is the model the release names.

    Raises :class:`~protocol.sealed_model.SealedModelError` if the file is
    tampered with, truncated or sealed for another model, and
    :class:`ModelStoreError` if the plaintext is not the release's model.
    """
    fd = os.memfd_create(f"mantle-model-{model_id.replace('/', '_')}", os.MFD_CLOEXEC)
    try:
        decryptor = ModelDecryptor(data_key_for, expected_model_id=model_id)
        digest = hashlib.sha384()
        length = 0

        def put(plaintext: bytes) -> None:
            nonlocal length
            if length + len(plaintext) > expected_length:
                raise ModelStoreError("decrypted model is longer than the release says")
            digest.update(plaintext)
            view = memoryview(plaintext)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            length += len(plaintext)

        with path.open("rb") as stream:
            for piece in read_blocks(stream):
                put(decryptor.feed(piece))
        put(decryptor.finish())
        if length != expected_length or not hmac.compare_digest(digest.digest(), expected_sha384):
            raise ModelStoreError("decrypted model differs from the release's model artifact")
        return InMemoryModel(fd, length, digest.digest())
    except BaseException:
        os.close(fd)
        raise
