"""Attack: a relay answers a client's request with records of another answer
-- one the same node gave the same client earlier, or one it obtained by
sending a request of its own -- or replays, reorders or repeats the records
of this answer, to make the client accept text the node did not send it."""

from __future__ import annotations

import pytest
from _e2e_kit import CANARY, answer, node_key, seal

from protocol.e2e import E2ECheck, E2EError, ResponseOpener

NODE = node_key("attested")


def _opener(seed: str) -> tuple[ResponseOpener, tuple[bytes, ...]]:
    sealed, key, digest = seal([NODE], seed=seed)
    return ResponseOpener(key, sealed.request_id, request_sha256=digest), answer(
        sealed, NODE
    ).records


def _refused(opener: ResponseOpener, record: bytes, check: E2ECheck) -> None:
    with pytest.raises(E2EError) as refused:
        opener.open(record)
    assert refused.value.check is check
    assert CANARY not in str(refused.value)


def test_another_requests_records_are_refused_at_every_position() -> None:
    _, earlier = _opener("earlier")
    for position in range(len(earlier)):
        opener, records = _opener("now")
        for record in records[:position]:
            opener.open(record)
        _refused(opener, earlier[position], E2ECheck.RECORD_FORGED)


def test_a_repeated_record_is_refused() -> None:
    opener, records = _opener("now")
    opener.open(records[0])
    opener.open(records[1])
    _refused(opener, records[1], E2ECheck.RECORD_REPLAYED)


def test_swapped_records_are_refused() -> None:
    opener, records = _opener("now")
    _refused(opener, records[1], E2ECheck.RECORD_OUT_OF_ORDER)
    _refused(opener, records[0], E2ECheck.STREAM_FAILED)


def test_the_final_record_early_is_refused() -> None:
    opener, records = _opener("now")
    opener.open(records[0])
    _refused(opener, records[-1], E2ECheck.RECORD_OUT_OF_ORDER)
