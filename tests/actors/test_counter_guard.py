"""The counter guard over the simulated NitroTPM: every row of its table, and advancing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.counter_guard import (
    MAX_ADVANCE,
    MAX_BINDING_BYTES,
    CounterBinding,
    CounterCheck,
    CounterRefused,
    advance_counter,
    open_counter,
)
from simulations.clock import ManualClock
from simulations.nitrotpm import SimulatedNitroTPM, TpmOp

COUNTER = 4


@pytest.fixture
def tpm() -> SimulatedNitroTPM:
    return SimulatedNitroTPM.from_seed("counter-guard", clock=ManualClock(1_760_000_000_000))


def refusal(call: object, *args: object) -> CounterRefused:
    with pytest.raises(CounterRefused) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value


def test_first_use_defines_the_counter_and_returns_its_binding(tpm: SimulatedNitroTPM) -> None:
    value, binding = open_counter(tpm, COUNTER, None)
    assert value == 1 == tpm.counter_read(COUNTER)
    assert binding == CounterBinding(COUNTER, tpm.counter_name(COUNTER))
    # With the binding, the same counter opens again, unchanged.
    assert open_counter(tpm, COUNTER, binding) == (1, binding)
    assert tpm.counter_read(COUNTER) == 1


def test_deleted_counter_is_missing_not_zero(tpm: SimulatedNitroTPM) -> None:
    _, binding = open_counter(tpm, COUNTER, None)
    tpm.owner_undefine_counter(COUNTER)
    assert refusal(open_counter, tpm, COUNTER, binding).check is CounterCheck.MISSING
    # Refusing defined nothing.
    assert COUNTER not in tpm.nv.counters


def test_recreated_counter_is_detected_by_its_name(tpm: SimulatedNitroTPM) -> None:
    _, binding = open_counter(tpm, COUNTER, None)
    tpm.owner_undefine_counter(COUNTER)
    tpm.counter_define(COUNTER)
    refused = refusal(open_counter, tpm, COUNTER, binding)
    assert refused.check is CounterCheck.RECREATED
    assert "counter 4" in refused.detail


def test_counter_without_binding_is_refused(tpm: SimulatedNitroTPM) -> None:
    open_counter(tpm, COUNTER, None)
    assert refusal(open_counter, tpm, COUNTER, None).check is CounterCheck.BINDING_MISSING


def test_binding_for_another_counter_is_malformed(tpm: SimulatedNitroTPM) -> None:
    _, binding = open_counter(tpm, COUNTER, None)
    assert refusal(open_counter, tpm, COUNTER + 1, binding).check is (
        CounterCheck.MALFORMED_BINDING
    )


def test_owner_deleting_counter_and_binding_gets_a_counter_above_the_old_value(
    tpm: SimulatedNitroTPM,
) -> None:
    value, binding = open_counter(tpm, COUNTER, None)
    advance_counter(tpm, binding, value, 9)
    tpm.owner_undefine_counter(COUNTER)
    fresh_value, fresh = open_counter(tpm, COUNTER, None)
    assert fresh.nv_name != binding.nv_name
    assert fresh_value == 10


def test_tpm_failures_are_reported_as_tpm(tpm: SimulatedNitroTPM) -> None:
    tpm.inject_failure(TpmOp.COUNTER_NAME)
    assert refusal(open_counter, tpm, COUNTER, None).check is CounterCheck.TPM
    tpm.inject_failure(TpmOp.COUNTER_DEFINE)
    assert refusal(open_counter, tpm, COUNTER, None).check is CounterCheck.TPM
    value, binding = open_counter(tpm, COUNTER, None)
    tpm.inject_failure(TpmOp.COUNTER_INCREMENT)
    assert refusal(advance_counter, tpm, binding, value, 3).check is CounterCheck.TPM
    assert tpm.counter_read(COUNTER) == value


def test_advance_goes_one_step_at_a_time_to_the_target(tpm: SimulatedNitroTPM) -> None:
    value, binding = open_counter(tpm, COUNTER, None)
    assert advance_counter(tpm, binding, value, 6) == 6
    assert tpm.counter_read(COUNTER) == 6
    assert advance_counter(tpm, binding, 6, 6) == 6
    refused = refusal(advance_counter, tpm, binding, 6, 5)
    assert refused.check is CounterCheck.UNEXPECTED_VALUE
    assert tpm.counter_read(COUNTER) == 6


def test_advance_refuses_a_counter_that_moved_since_it_was_verified(
    tpm: SimulatedNitroTPM,
) -> None:
    value, binding = open_counter(tpm, COUNTER, None)
    tpm.counter_increment(COUNTER)
    assert refusal(advance_counter, tpm, binding, value, 5).check is (CounterCheck.UNEXPECTED_VALUE)
    assert tpm.counter_read(COUNTER) == value + 1


def test_advance_refuses_a_counter_swapped_since_it_was_verified(tpm: SimulatedNitroTPM) -> None:
    value, binding = open_counter(tpm, COUNTER, None)
    tpm.owner_undefine_counter(COUNTER)
    assert refusal(advance_counter, tpm, binding, value, 5).check is CounterCheck.MISSING
    tpm.counter_define(COUNTER)
    impostor = tpm.counter_read(COUNTER)
    assert refusal(advance_counter, tpm, binding, value, 5).check is CounterCheck.RECREATED
    assert tpm.counter_read(COUNTER) == impostor


class _SwappedBeforeTheFirstIncrement:
    """A TPM on which the owner replaces the counter right after the guard's check."""

    def __init__(self, tpm: SimulatedNitroTPM) -> None:
        self._tpm = tpm

    def __getattr__(self, name: str) -> object:
        return getattr(self._tpm, name)

    def counter_increment(self, counter: int, *, expected_name: bytes | None = None) -> int:
        self._tpm.owner_undefine_counter(counter)
        self._tpm.counter_define(counter)
        return self._tpm.counter_increment(counter, expected_name=expected_name)


def test_a_counter_swapped_after_the_check_is_not_advanced(tpm: SimulatedNitroTPM) -> None:
    value, binding = open_counter(tpm, COUNTER, None)
    refused = refusal(advance_counter, _SwappedBeforeTheFirstIncrement(tpm), binding, value, 5)
    assert refused.check is CounterCheck.RECREATED
    assert "not advanced" in refused.detail
    # The replacement holds what the TPM initialised it to, untouched.
    assert tpm.counter_read(COUNTER) == value + 1


class _SkippingIncrements:
    """A TPM on which something else increments the counter between our steps."""

    def __init__(self, tpm: SimulatedNitroTPM) -> None:
        self._tpm = tpm

    def __getattr__(self, name: str) -> object:
        return getattr(self._tpm, name)

    def counter_increment(self, counter: int, *, expected_name: bytes | None = None) -> int:
        self._tpm.counter_increment(counter)
        return self._tpm.counter_increment(counter, expected_name=expected_name)


def test_every_step_must_add_exactly_one(tpm: SimulatedNitroTPM) -> None:
    value, binding = open_counter(tpm, COUNTER, None)
    skipping = _SkippingIncrements(tpm)
    refused = refusal(advance_counter, skipping, binding, value, 5)
    assert refused.check is CounterCheck.UNEXPECTED_VALUE
    assert "in one increment" in refused.detail
    # It stopped at the first bad step.
    assert tpm.counter_read(COUNTER) == value + 2


def test_advance_is_bounded(tpm: SimulatedNitroTPM) -> None:
    value, binding = open_counter(tpm, COUNTER, None)
    refused = refusal(advance_counter, tpm, binding, value, value + MAX_ADVANCE + 1)
    assert refused.check is CounterCheck.UNEXPECTED_VALUE
    assert tpm.counter_read(COUNTER) == value


def test_binding_round_trips_and_decodes_strictly(tpm: SimulatedNitroTPM) -> None:
    _, binding = open_counter(tpm, COUNTER, None)
    encoded = binding.encode()
    assert len(encoded) <= MAX_BINDING_BYTES
    assert CounterBinding.decode(encoded) == binding
    for broken in (
        b"",
        encoded[:-1],
        encoded + b"\x00",
        b"X" + encoded[1:],
        encoded[:12] + bytes([33]) + encoded[13:],  # length byte disagrees
        encoded[:13] + b"\x00\x99" + encoded[15:],  # unknown name algorithm
    ):
        assert refusal(CounterBinding.decode, broken).check is CounterCheck.MALFORMED_BINDING
    for counter, name in ((-1, binding.nv_name), (1 << 32, binding.nv_name), (1, b"\x00\x0b")):
        assert refusal(CounterBinding, counter, name).check is CounterCheck.MALFORMED_BINDING


@given(st.binary(max_size=MAX_BINDING_BYTES + 2))
def test_decode_accepts_only_what_encode_writes(data: bytes) -> None:
    try:
        decoded = CounterBinding.decode(data)
    except CounterRefused as error:
        assert error.check is CounterCheck.MALFORMED_BINDING
        assert error.__context__ is None
    else:
        assert decoded.encode() == data
