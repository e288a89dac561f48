"""The trust state file is read back on every run: whatever its bytes, it
decodes or is refused with :class:`TrustStateError`, never quoting itself;
and a compare-and-swap against a state that changed stores nothing."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mantle.trust_state import TrustState, TrustStateError, TrustStateFile

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)


@given(st.binary(max_size=600), st.binary(max_size=600))
def test_any_bytes_decode_or_are_refused_without_quoting_them(before: bytes, after: bytes) -> None:
    data = before + b"CANARY-q7z" + after
    refusal: TrustStateError | None = None
    try:
        TrustState.decode(data)
    except TrustStateError as error:
        refusal = error
    assert refusal is not None  # a canary inside no valid file's values
    assert "CANARY" not in str(refusal)


@given(
    st.dictionaries(
        st.sampled_from(["release_floor", "tree_head", "version", "other"]), _json, max_size=4
    )
)
def test_any_json_shape_decodes_or_is_refused(body: dict[str, object]) -> None:
    try:
        state = TrustState.decode(json.dumps(body).encode())
    except TrustStateError:
        return
    assert TrustState.decode(state.encode()) == state


def test_a_swap_against_a_changed_state_stores_nothing(tmp_path: Path) -> None:
    file = TrustStateFile(tmp_path / "state.json")
    seen = file.load()
    file.advance(3)  # another run
    assert file.advance_if(seen, 2) is None
    assert file.load().release_floor == 3
    assert file.advance_if(file.load(), 5) == TrustState(5)
