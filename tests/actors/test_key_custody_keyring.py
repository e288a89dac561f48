"""The persisted keyring: strict decoding, canonical form, wrap binding, and the
authenticated keyring file around it."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.counter_guard import CounterBinding
from actors.key_custody import (
    KEYRING_COUNTER,
    KEYRING_MAC_PCRS,
    KeyringCheck,
    KeyringError,
    KeyringRefused,
    seal_keyring_file,
    verify_keyring_file,
)
from protocol.key_custody import (
    DataKeyState,
    KekState,
    Keyring,
    KeyringFile,
    SealedKek,
    WrappedDataKey,
    unwrap_data_key,
    wrap_data_key,
)
from simulations.clock import ManualClock
from simulations.nitrotpm import SimulatedNitroTPM, TpmOp

KEK = bytes(range(32))
DEK = bytes(range(32, 64))


def wrapped(model_id: str = "m", version: int = 1, kek_id: int = 1) -> WrappedDataKey:
    nonce = bytes(12)
    return WrappedDataKey(
        model_id=model_id,
        version=version,
        state=DataKeyState.ACTIVE,
        kek_id=kek_id,
        nonce=nonce,
        ciphertext=wrap_data_key(
            KEK, model_id=model_id, version=version, kek_id=kek_id, data_key=DEK, nonce=nonce
        ),
    )


def keyring() -> Keyring:
    return Keyring(
        keks=(SealedKek(1, KekState.ACTIVE, b"sealed-blob", (12, 13, 14)),),
        data_keys=(wrapped("b"), wrapped("a")),
    )


def test_round_trip_and_canonical_order() -> None:
    ring = keyring()
    assert Keyring.decode(ring.encode()) == ring
    assert [r.model_id for r in ring.data_keys] == ["a", "b"]


def test_wrap_is_bound_to_model_version_and_kek() -> None:
    record = wrapped()
    assert unwrap_data_key(KEK, record) == DEK
    for relabelled in (
        replace(record, model_id="other"),
        replace(record, version=2),
        replace(record, kek_id=2),
    ):
        with pytest.raises(KeyringError):
            unwrap_data_key(KEK, relabelled)
    with pytest.raises(KeyringError):
        unwrap_data_key(bytes(32), record)


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_give_a_keyring_error_or_a_keyring(data: bytes) -> None:
    with contextlib.suppress(KeyringError):
        Keyring.decode(data)


@settings(max_examples=200)
@given(st.data())
def test_mutated_structures_are_refused_with_keyring_error(data: st.DataObject) -> None:
    top = msgpack.unpackb(keyring().encode(), raw=False)
    leaf = st.one_of(
        st.none(),
        st.integers(-5, 1 << 40),
        st.text(max_size=5),
        st.binary(max_size=50),
        st.lists(st.integers(-5, 100), max_size=3),
    )
    section = data.draw(st.sampled_from([0, 1, 2]))
    if section == 0:
        top[0] = data.draw(leaf)
    else:
        records = top[section]
        index = data.draw(st.integers(0, len(records) - 1))
        field = data.draw(st.integers(0, len(records[index]) - 1))
        records[index][field] = data.draw(leaf)
    encoded = msgpack.packb(top, use_bin_type=True)
    try:
        decoded = Keyring.decode(encoded)
    except KeyringError:
        return
    # The mutation happened to produce a valid value: it must round-trip.
    assert Keyring.decode(decoded.encode()) == decoded


@pytest.mark.parametrize(
    "broken",
    [
        lambda ring: replace(ring, keks=()),
        lambda ring: replace(ring, keks=(*ring.keks, replace(ring.keks[0], kek_id=2))),
        lambda ring: replace(ring, data_keys=(*ring.data_keys, wrapped("a"))),
        lambda ring: replace(ring, data_keys=(wrapped("a", kek_id=9),)),
        lambda ring: replace(ring, data_keys=(wrapped("a"), wrapped("a", version=2))),
    ],
)
def test_invariants_are_enforced(broken: object) -> None:
    with pytest.raises(KeyringError):
        broken(keyring())  # type: ignore[operator]


def test_extension_types_and_oversize_are_refused() -> None:
    with pytest.raises(KeyringError):
        Keyring.decode(msgpack.packb(msgpack.ExtType(1, b"x")))
    with pytest.raises(KeyringError):
        Keyring.decode(b"\x00" * (17 << 20))


# --- the keyring file ----------------------------------------------------------------------

BINDING = CounterBinding(KEYRING_COUNTER, b"\x00\x0b" + bytes(range(32)))
#: The keys node's TPM, in the state the keyring file was written in.
TPM = SimulatedNitroTPM.from_seed("keyring-file", clock=ManualClock(0))


def stored() -> KeyringFile:
    return seal_keyring_file(keyring(), version=7, binding=BINDING, tpm=TPM)


def test_keyring_file_round_trips_and_authenticates() -> None:
    decoded = KeyringFile.decode(stored().encode())
    assert decoded == stored()
    verify_keyring_file(decoded, TPM)
    with pytest.raises(KeyringRefused) as caught:
        verify_keyring_file(
            decoded, SimulatedNitroTPM.from_seed("another TPM", clock=ManualClock(0))
        )
    assert caught.value.check is KeyringCheck.UNAUTHENTIC


@pytest.mark.parametrize("index", KEYRING_MAC_PCRS)
def test_the_mac_needs_the_measured_state_of_every_register(index: int) -> None:
    data = stored().encode()
    moved = SimulatedNitroTPM.from_seed("keyring-file", clock=ManualClock(0))
    verify_keyring_file(KeyringFile.decode(data), moved)
    # A register outside the selection does not matter...
    moved.pcr_extend(16, bytes(48))
    verify_keyring_file(KeyringFile.decode(data), moved)
    # ...each one in it does: the file opens only in the state it was written in.
    moved.pcr_extend(index, bytes(48))
    with pytest.raises(KeyringRefused) as caught:
        verify_keyring_file(KeyringFile.decode(data), moved)
    assert caught.value.check is KeyringCheck.UNAUTHENTIC


def test_a_failed_measured_hmac_is_a_keyring_error() -> None:
    failing = SimulatedNitroTPM.from_seed("keyring-file", clock=ManualClock(0))
    failing.inject_failure(TpmOp.MEASURED_HMAC, times=2)
    with pytest.raises(KeyringError):
        seal_keyring_file(keyring(), version=7, binding=BINDING, tpm=failing)
    with pytest.raises(KeyringError):
        verify_keyring_file(stored(), failing)


@settings(max_examples=200)
@given(st.data())
def test_every_field_of_a_keyring_file_is_authenticated(data: st.DataObject) -> None:
    fields = msgpack.unpackb(stored().encode(), raw=False)
    index = data.draw(st.integers(0, 4))
    fields[index] = data.draw(
        st.one_of(st.none(), st.integers(-5, 1 << 40), st.binary(max_size=80), st.text(max_size=5))
    )
    encoded = msgpack.packb(fields, use_bin_type=True)
    try:
        decoded = KeyringFile.decode(encoded)
    except KeyringError:
        return
    if decoded == stored():
        return  # the draw reproduced the original value
    with pytest.raises(KeyringRefused):
        verify_keyring_file(decoded, TPM)


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_are_no_keyring_file(data: bytes) -> None:
    with contextlib.suppress(KeyringError):
        KeyringFile.decode(data)
