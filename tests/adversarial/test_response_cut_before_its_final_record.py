"""Attack: a relay passes the first records of an answer and then closes the
stream, so the client takes a partial answer for a whole one (a refusal cut
to an agreement, say), or drops one chunk from the middle."""

from __future__ import annotations

import pytest
from _e2e_kit import CANARY, answer, node_key, seal

from protocol.e2e import E2ECheck, E2EError, ResponseOpener

NODE = node_key("attested")


def test_every_cut_before_the_final_record_is_refused() -> None:
    sealed, key, digest = seal([NODE])
    records = answer(sealed, NODE, pieces=("I will not", " do that", ".")).records
    for kept in range(len(records)):
        opener = ResponseOpener(key, sealed.request_id, request_sha256=digest)
        for record in records[:kept]:
            opener.open(record)
        with pytest.raises(E2EError) as refused:
            opener.finish()
        assert refused.value.check is E2ECheck.MISSING_FINAL
        assert CANARY not in str(refused.value)


def test_a_chunk_dropped_from_the_middle_is_refused() -> None:
    sealed, key, digest = seal([NODE])
    records = answer(sealed, NODE, pieces=("I will", " not", " do that")).records
    opener = ResponseOpener(key, sealed.request_id, request_sha256=digest)
    opener.open(records[0])
    with pytest.raises(E2EError) as refused:
        opener.open(records[2])
    assert refused.value.check is E2ECheck.RECORD_OUT_OF_ORDER
