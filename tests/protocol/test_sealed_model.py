"""The sealed model file format: round trip and every way of breaking it."""

from __future__ import annotations

import hashlib
import itertools
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.sealed_model import (
    DATA_KEY_SIZE,
    TAG_SIZE,
    ModelDecryptor,
    ModelEncryptor,
    SealedModelAuthError,
    SealedModelError,
    SealedModelFormatError,
    SealedModelHeader,
    SealedModelTruncatedError,
    decode_header,
    open_stream,
    seal_stream,
    sealed_size,
)

KEY = bytes(range(DATA_KEY_SIZE))
OTHER_KEY = bytes(range(1, DATA_KEY_SIZE + 1))


def header(
    model_id: str = "smollm2-135m", chunk_size: int = 64, prefix: bytes = b"\x01" * 8
) -> SealedModelHeader:
    return SealedModelHeader(
        model_id=model_id, key_version=1, chunk_size=chunk_size, nonce_prefix=prefix
    )


def seal(plaintext: bytes, hdr: SealedModelHeader, key: bytes = KEY) -> bytes:
    return b"".join(seal_stream([plaintext], hdr, key))


def unseal(sealed: bytes, key: bytes = KEY, piece: int = 1000) -> bytes:
    pieces = [sealed[i : i + piece] for i in range(0, len(sealed), piece)]
    return b"".join(open_stream(pieces, lambda _h: key))


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


plaintexts = st.binary(min_size=0, max_size=700)
chunk_sizes = st.integers(min_value=1, max_value=96)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(plaintexts, chunk_sizes, st.lists(st.integers(0, 10_000), max_size=6), st.integers(1, 97))
def test_round_trip_any_chunking(
    plaintext: bytes, chunk_size: int, cuts: list[int], read_piece: int
) -> None:
    hdr = header(chunk_size=chunk_size)
    sealed = b"".join(seal_stream(split(plaintext, cuts), hdr, KEY))
    assert len(sealed) == sealed_size(len(plaintext), hdr)
    assert unseal(sealed, piece=read_piece) == plaintext


@settings(max_examples=150)
@given(plaintexts, chunk_sizes, st.data())
def test_any_flipped_byte_fails(plaintext: bytes, chunk_size: int, data: st.DataObject) -> None:
    sealed = bytearray(seal(plaintext, header(chunk_size=chunk_size)))
    position = data.draw(st.integers(0, len(sealed) - 1))
    bit = data.draw(st.integers(0, 7))
    sealed[position] ^= 1 << bit
    with pytest.raises(SealedModelError):
        unseal(bytes(sealed))


@settings(max_examples=150)
@given(plaintexts, chunk_sizes, st.data())
def test_any_truncation_fails(plaintext: bytes, chunk_size: int, data: st.DataObject) -> None:
    sealed = seal(plaintext, header(chunk_size=chunk_size))
    cut = data.draw(st.integers(0, len(sealed) - 1))
    with pytest.raises(SealedModelError):
        unseal(sealed[:cut])


@settings(max_examples=100)
@given(plaintexts, chunk_sizes, st.binary(min_size=1, max_size=40))
def test_appended_bytes_fail(plaintext: bytes, chunk_size: int, extra: bytes) -> None:
    sealed = seal(plaintext, header(chunk_size=chunk_size))
    with pytest.raises(SealedModelAuthError):
        unseal(sealed + extra)


def _chunks(sealed: bytes, hdr: SealedModelHeader) -> tuple[bytes, list[bytes]]:
    head = sealed[: hdr.encoded_size]
    body = sealed[hdr.encoded_size :]
    block = hdr.chunk_size + TAG_SIZE
    return head, [body[i : i + block] for i in range(0, len(body), block)]


@settings(max_examples=100)
@given(st.binary(min_size=3 * 16 + 1, max_size=400), st.data())
def test_reordered_or_duplicated_chunks_fail(plaintext: bytes, data: st.DataObject) -> None:
    hdr = header(chunk_size=16)
    head, chunks = _chunks(seal(plaintext, hdr), hdr)
    assert len(chunks) >= 4
    order = data.draw(st.permutations(range(len(chunks))))
    if list(order) == list(range(len(chunks))):
        order = [1, 0, *range(2, len(chunks))]
    with pytest.raises(SealedModelAuthError):
        unseal(head + b"".join(chunks[i] for i in order))
    dup = data.draw(st.integers(0, len(chunks) - 2))
    with pytest.raises(SealedModelAuthError):
        unseal(head + b"".join(chunks[: dup + 1] + chunks[dup:]))
    drop = data.draw(st.integers(0, len(chunks) - 1))
    with pytest.raises(SealedModelError):
        unseal(head + b"".join(chunks[:drop] + chunks[drop + 1 :]))


def test_truncation_at_a_chunk_boundary_fails() -> None:
    hdr = header(chunk_size=16)
    head, chunks = _chunks(seal(bytes(100), hdr), hdr)
    for keep in range(len(chunks)):
        with pytest.raises(SealedModelError):
            unseal(head + b"".join(chunks[:keep]))


def test_chunks_spliced_from_another_file_under_the_same_key_fail() -> None:
    first = header(chunk_size=16, prefix=b"\x01" * 8)
    second = header(chunk_size=16, prefix=b"\x02" * 8)
    head, chunks = _chunks(seal(bytes(80), first), first)
    _, foreign = _chunks(seal(bytes(80), second), second)
    with pytest.raises(SealedModelAuthError):
        unseal(head + chunks[0] + foreign[1] + b"".join(chunks[2:]))


def test_header_fields_are_authenticated() -> None:
    hdr = header(model_id="model-a", chunk_size=16)
    sealed = seal(b"weights" * 10, hdr)
    body = sealed[hdr.encoded_size :]
    for changed in (
        header(model_id="model-b", chunk_size=16),
        SealedModelHeader(
            model_id="model-a", key_version=2, chunk_size=16, nonce_prefix=b"\x01" * 8
        ),
        header(model_id="model-a", chunk_size=16, prefix=b"\x09" * 8),
    ):
        with pytest.raises(SealedModelAuthError, match="chunk 0 "):
            unseal(changed.encode() + body)


def test_wrong_key_fails() -> None:
    sealed = seal(b"weights", header())
    with pytest.raises(SealedModelAuthError):
        unseal(sealed, key=OTHER_KEY)


def test_expected_model_id_is_checked_before_any_key_lookup() -> None:
    sealed = seal(b"weights", header(model_id="model-a"))
    looked_up: list[str] = []

    def lookup(h: SealedModelHeader) -> bytes:
        looked_up.append(h.model_id)
        return KEY

    decryptor = ModelDecryptor(lookup, expected_model_id="model-b")
    with pytest.raises(SealedModelFormatError, match="different model"):
        decryptor.feed(sealed)
    assert looked_up == []


def test_failed_decryptor_refuses_further_use() -> None:
    sealed = bytearray(seal(bytes(200), header(chunk_size=16)))
    sealed[-1] ^= 1
    decryptor = ModelDecryptor(lambda _h: KEY)
    decryptor.feed(bytes(sealed))
    with pytest.raises(SealedModelAuthError):
        decryptor.finish()
    with pytest.raises(SealedModelError, match="failed earlier"):
        decryptor.finish()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"XXXXXXXX" + b[8:], "magic"),
        (lambda b: b[:8] + b"\x00\x02" + b[10:], "format version"),
        (lambda b: b[:10] + b"\x07" + b[11:], "AEAD"),
        (lambda b: b[:11] + b"\x01" + b[12:], "flags"),
        (lambda b: b[:12] + b"\x00\x00\x00\x00" + b[16:], "chunk size"),
        (lambda b: b[:12] + b"\x01\x00\x00\x01" + b[16:], "chunk size"),
        (lambda b: b[:28] + b"\x00" + b[29:], "model id length"),
        (lambda b: b[:29] + b"\xff" + b[30:], "model id"),
        (lambda b: b[:29] + b" " + b[30:], "model id"),
    ],
)
def test_malformed_headers_name_the_problem(mutate: object, message: str) -> None:
    sealed = seal(b"x" * 50, header(chunk_size=16))
    broken = mutate(sealed)  # type: ignore[operator]
    with pytest.raises(SealedModelFormatError, match=message):
        unseal(broken)


@pytest.mark.parametrize("length", [0, 3, 8, 20, 29])
def test_stream_ending_inside_header_is_truncation(length: int) -> None:
    sealed = seal(b"x", header())
    with pytest.raises(SealedModelTruncatedError):
        unseal(sealed[:length])


def test_header_decoder_waits_for_more_bytes() -> None:
    encoded = header().encode()
    for cut in range(len(encoded)):
        assert decode_header(encoded[:cut]) is None
    assert decode_header(encoded) == header()


@pytest.mark.parametrize(
    "bad",
    [
        {"model_id": ""},
        {"model_id": "a" * 129},
        {"model_id": "über"},
        {"chunk_size": 0},
        {"chunk_size": (16 << 20) + 1},
        {"nonce_prefix": b"short"},
        {"key_version": -1},
    ],
)
def test_header_values_are_validated(bad: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "model_id": "m",
        "key_version": 0,
        "chunk_size": 16,
        "nonce_prefix": bytes(8),
    }
    fields.update(bad)
    with pytest.raises(SealedModelFormatError):
        SealedModelHeader(**fields)  # type: ignore[arg-type]


def test_encryptor_rejects_wrong_key_size_and_reuse() -> None:
    with pytest.raises(SealedModelError):
        ModelEncryptor(header(), b"short")
    encryptor = ModelEncryptor(header(), KEY)
    encryptor.finish()
    with pytest.raises(SealedModelError):
        encryptor.feed(b"more")


def test_large_random_stream_matches_sha256() -> None:
    plaintext = os.urandom(3 * (1 << 20) + 12345)
    hdr = header(chunk_size=1 << 20)
    sealed = seal(plaintext, hdr)
    assert (
        hashlib.sha256(unseal(sealed, piece=1 << 16)).digest() == hashlib.sha256(plaintext).digest()
    )
