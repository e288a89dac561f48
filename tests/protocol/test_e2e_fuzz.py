"""Property tests of every ``protocol.e2e`` decoder against hostile bytes:
sealed requests, response records, receipts and receipt files, random or
valid with bytes flipped or cut. Each is decoded (and a request opened) or
refused with an :class:`E2EError` naming the check, never with another
exception, never quoting its input (a canary rides in each), and never with
the caught exception kept in ``__context__``."""

from __future__ import annotations

from collections.abc import Callable

import msgpack
from _e2e_kit import CANARY, answer, node_key, seal
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.attestation import DocumentKind
from protocol.e2e import (
    E2ECheck,
    E2EError,
    Receipt,
    ResponseOpener,
    SavedReceipt,
    SealedRequest,
    open_request,
    response_digest,
)

NODE = node_key("fuzz")
SEALED, KEY, DIGEST = seal([NODE, node_key("fuzz-2")])
SENT = answer(SEALED, NODE)
WIRE = SEALED.encode()
SAVED = SavedReceipt(
    SENT.receipt,
    DIGEST,
    response_digest(SENT.text, SENT.done, salt=SENT.salt),
    DocumentKind.NITRO,
    CANARY.encode() * 4,
).encode()
FRAMES = [WIRE, SENT.receipt.encode(), SAVED, *SENT.records]


def _typed_or_nothing(action: Callable[[], object]) -> object | None:
    refusal: E2EError | None = None
    result: object | None = None
    try:
        result = action()
    except E2EError as exc:
        refusal = exc
    if refusal is not None:
        assert isinstance(refusal.check, E2ECheck)
        assert CANARY not in str(refusal) and CANARY not in repr(refusal.args)
        assert refusal.__context__ is None and refusal.__cause__ is None
        return None
    return result


def _every_decoder(data: bytes) -> None:
    sealed = _typed_or_nothing(lambda: SealedRequest.decode(data))
    if sealed is not None:
        assert isinstance(sealed, SealedRequest)
        assert 1 <= len(sealed.envelopes) <= 16 and len(sealed.request_id) == 16
        _typed_or_nothing(lambda: open_request(sealed, static=NODE))
    receipt = _typed_or_nothing(lambda: Receipt.decode(data))
    assert receipt is None or isinstance(receipt, Receipt)
    saved = _typed_or_nothing(lambda: SavedReceipt.decode(data))
    if saved is not None:
        assert isinstance(saved, SavedReceipt)
        _typed_or_nothing(saved.verify_receipt)
    opener = ResponseOpener(KEY, SEALED.request_id, request_sha256=DIGEST)
    _typed_or_nothing(lambda: opener.open(data))
    _typed_or_nothing(opener.finish)


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_random_bytes_are_refused_with_a_typed_error(data: bytes) -> None:
    _every_decoder(data + CANARY.encode())


@settings(max_examples=400)
@given(
    st.sampled_from(FRAMES),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=4),
    st.integers(min_value=0),
)
def test_flipped_or_cut_frames_are_decoded_within_the_rules_or_refused(
    frame: bytes, flips: list[tuple[int, int]], cut: int
) -> None:
    mutated = bytearray(frame)
    for at, value in flips:
        mutated[at % len(mutated)] = value
    _every_decoder(bytes(mutated[: len(mutated) - cut % 12]))


_msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.just(CANARY)
    | st.binary(max_size=80),
    lambda inner: st.lists(inner, max_size=6),
    max_leaves=24,
)


@settings(max_examples=400)
@given(
    st.sampled_from(["e2e.request", "e2e.receipt", "e2e.saved_receipt", "e2e.final"]),
    st.lists(_msgpack_values, max_size=10),
)
def test_bodies_of_any_shape_under_every_tag_are_refused_or_valid(
    tag: str, body: list[object]
) -> None:
    _every_decoder(msgpack.packb([1, tag, 0, body], use_bin_type=True))


def test_the_untouched_frames_decode() -> None:
    """The fuzzed frames are valid to begin with (else the tests above prove little)."""
    assert SealedRequest.decode(WIRE) == SEALED
    assert open_request(SealedRequest.decode(WIRE), static=NODE)[0].model == SEALED.model
    assert Receipt.decode(SENT.receipt.encode()) == SENT.receipt
    SavedReceipt.decode(SAVED).verify_receipt()
    opener = ResponseOpener(KEY, SEALED.request_id, request_sha256=DIGEST)
    for record in SENT.records:
        opener.open(record)
    assert opener.finish().receipt == SENT.receipt


@settings(max_examples=300)
@given(
    st.integers(min_value=0, max_value=len(SENT.records) - 1),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=3),
    st.integers(min_value=0),
)
def test_a_record_flipped_in_place_is_refused_and_ends_the_stream(
    index: int, flips: list[tuple[int, int]], cut: int
) -> None:
    """The opener has read every record before the mutated one, so the
    mutation meets the authentication and content checks, not only the counter."""
    mutated = bytearray(SENT.records[index])
    for at, value in flips:
        mutated[at % len(mutated)] = value
    mutated = mutated[: len(mutated) - cut % 3]
    opener = ResponseOpener(KEY, SEALED.request_id, request_sha256=DIGEST)
    for record in SENT.records[:index]:
        opener.open(record)
    if bytes(mutated) == SENT.records[index]:
        return  # the flips wrote the bytes that were there
    assert _typed_or_nothing(lambda: opener.open(bytes(mutated))) is None
    for record in SENT.records[index:]:
        assert _typed_or_nothing(lambda record=record: opener.open(record)) is None
    assert _typed_or_nothing(opener.finish) is None
