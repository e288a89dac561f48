"""Property tests for Noise: round trips, tamper detection, and hostile input.

Protocol names are drawn from every supported pattern, with and without psk
modifiers, crossed with every DH, cipher and hash function.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.noise import (
    CipherState,
    HandshakeState,
    KeyPair,
    NoiseDecryptError,
    NoiseError,
    NoiseProtocol,
    NoiseProtocolNameError,
    Token,
)
from protocol.noise._patterns import PATTERNS

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _entropy(seed: bytes) -> Callable[[int], bytes]:
    counter = [0]

    def draw(n: int) -> bytes:
        counter[0] += 1
        return hashlib.shake_256(seed + counter[0].to_bytes(4, "big")).digest(n)

    return draw


@st.composite
def protocol_names(draw: st.DrawFn) -> str:
    base = draw(st.sampled_from(sorted(PATTERNS)))
    length = len(PATTERNS[base].messages)
    positions = draw(st.sets(st.integers(0, length), max_size=3))
    modifiers = "+".join(f"psk{p}" for p in sorted(positions))
    dh = draw(st.sampled_from(["25519", "448"]))
    cipher = draw(st.sampled_from(["ChaChaPoly", "AESGCM"]))
    hash_name = draw(st.sampled_from(["SHA256", "SHA512", "BLAKE2s", "BLAKE2b"]))
    return f"Noise_{base}{modifiers}_{dh}_{cipher}_{hash_name}"


def make_pair(name: str, seed: bytes) -> tuple[HandshakeState, HandshakeState]:
    proto = NoiseProtocol.from_name(name)
    init_s = KeyPair.generate(proto.dh, _entropy(seed + b"is"))
    resp_s = KeyPair.generate(proto.dh, _entropy(seed + b"rs"))
    psks = [hashlib.sha256(seed + bytes([i])).digest() for i in range(proto.psk_count)]

    def side(initiator: bool) -> HandshakeState:
        own, peer = (init_s, resp_s) if initiator else (resp_s, init_s)
        return HandshakeState(
            proto,
            initiator=initiator,
            prologue=seed,
            static=own if proto.requires_static(initiator=initiator) else None,
            remote_static=peer.public
            if proto.requires_remote_static(initiator=initiator)
            else None,
            psks=psks,
            entropy=_entropy(seed + (b"ie" if initiator else b"re")),
        )

    return side(True), side(False)


def payload_is_encrypted(proto: NoiseProtocol, index: int) -> bool:
    """Whether handshake message ``index`` ends with an AEAD-protected payload."""
    psk_mode = proto.psk_count > 0
    for message in proto.pattern.messages[: index + 1]:
        for token in message:
            if token not in (Token.E, Token.S) or (token is Token.E and psk_mode):
                return True
    return False


@SETTINGS
@given(
    name=protocol_names(),
    seed=st.binary(min_size=1, max_size=16),
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=8),
)
def test_random_protocols_round_trip(name: str, seed: bytes, payloads: list[bytes]) -> None:
    init, resp = make_pair(name, seed)
    proto = init.protocol
    handshake_len = len(proto.pattern.messages)
    for index in range(handshake_len):
        writer, reader = (init, resp) if index % 2 == 0 else (resp, init)
        payload = payloads[index % len(payloads)]
        assert reader.read_message(writer.write_message(payload)) == payload
    assert init.handshake_hash == resp.handshake_hash
    i_send, i_recv = init.split()
    r_send, r_recv = resp.split()
    for index, payload in enumerate(payloads):
        send: CipherState
        recv: CipherState
        if proto.one_way or index % 2 == 0:
            send, recv = i_send, r_recv
        else:
            send, recv = r_send, i_recv
        ad = payload[:5]
        ciphertext = send.encrypt_with_ad(ad, payload)
        assert len(ciphertext) == len(payload) + 16
        assert recv.decrypt_with_ad(ad, ciphertext) == payload


@SETTINGS
@given(
    name=protocol_names(),
    seed=st.binary(min_size=1, max_size=16),
    payload=st.binary(max_size=200),
    data=st.data(),
)
def test_flipped_byte_always_fails_to_decrypt(
    name: str, seed: bytes, payload: bytes, data: st.DataObject
) -> None:
    init, resp = make_pair(name, seed)
    proto = init.protocol
    handshake_len = len(proto.pattern.messages)
    # Tamper with the first handshake message whose payload is encrypted, if
    # any; a tampered earlier plaintext message is caught by a later one.
    target = next(
        (i for i in range(handshake_len) if payload_is_encrypted(proto, i)), handshake_len
    )
    for index in range(handshake_len):
        writer, reader = (init, resp) if index % 2 == 0 else (resp, init)
        message = writer.write_message(payload)
        if index == target:
            position = data.draw(st.integers(0, len(message) - 1), label="position")
            bit = data.draw(st.integers(0, 7), label="bit")
            forged = bytearray(message)
            forged[position] ^= 1 << bit
            try:
                reader.read_message(bytes(forged))
            except NoiseDecryptError:
                return
            raise AssertionError("tampered handshake message was accepted")
        reader.read_message(message)

    i_send, _ = init.split()
    _, r_recv = resp.split()
    ciphertext = bytearray(i_send.encrypt_with_ad(b"ad", payload))
    position = data.draw(st.integers(0, len(ciphertext) - 1), label="position")
    ciphertext[position] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    try:
        r_recv.decrypt_with_ad(b"ad", bytes(ciphertext))
    except NoiseDecryptError:
        return
    raise AssertionError("tampered transport message was accepted")


@SETTINGS
@given(
    name=protocol_names(),
    seed=st.binary(min_size=1, max_size=16),
    prefix_messages=st.integers(0, 3),
    garbage=st.binary(max_size=400),
)
def test_arbitrary_bytes_raise_only_noise_errors(
    name: str, seed: bytes, prefix_messages: int, garbage: bytes
) -> None:
    init, resp = make_pair(name, seed)
    handshake_len = len(init.protocol.pattern.messages)
    # Run part of the handshake honestly, then feed garbage to whoever reads next.
    steps = min(prefix_messages, handshake_len - 1)
    for index in range(steps):
        writer, reader = (init, resp) if index % 2 == 0 else (resp, init)
        reader.read_message(writer.write_message(b""))
    reader = resp if steps % 2 == 0 else init
    try:
        reader.read_message(garbage)
    except NoiseError:
        return
    # Only a message with no authenticated part can be accepted (e.g. NN's first).
    assert not payload_is_encrypted(init.protocol, steps)


@SETTINGS
@given(garbage=st.binary(max_size=200), nonce=st.integers(0, 2**64 - 2))
def test_arbitrary_transport_bytes_fail_to_decrypt(garbage: bytes, nonce: int) -> None:
    proto = NoiseProtocol.from_name("Noise_NN_25519_AESGCM_SHA256")
    state = CipherState(proto.cipher, b"\x07" * 32, nonce=nonce)
    try:
        state.decrypt_with_ad(b"", garbage)
    except NoiseDecryptError:
        assert state.nonce == nonce
        return
    raise AssertionError("random bytes authenticated")


@SETTINGS
@given(
    cipher=st.sampled_from(["ChaChaPoly", "AESGCM"]),
    key=st.binary(min_size=32, max_size=32),
    nonce=st.integers(0, 2**64 - 2),
    ad=st.binary(max_size=64),
    plaintext=st.binary(max_size=2000),
    flip=st.integers(min_value=0),
)
def test_into_forms_agree_with_bytes_forms(
    cipher: str, key: bytes, nonce: int, ad: bytes, plaintext: bytes, flip: int
) -> None:
    function = NoiseProtocol.from_name(f"Noise_NN_25519_{cipher}_SHA256").cipher
    expected = CipherState(function, key, nonce=nonce).encrypt_with_ad(ad, plaintext)
    sender = CipherState(function, key, nonce=nonce)
    sealed = bytearray(len(plaintext) + 16)
    assert sender.encrypt_into(memoryview(ad), memoryview(plaintext), sealed) == len(sealed)
    assert sealed == expected and sender.nonce == nonce + 1

    receiver = CipherState(function, key, nonce=nonce)
    opened = bytearray(len(plaintext))
    receiver.decrypt_into(ad, sealed, opened)
    assert opened == plaintext and receiver.nonce == nonce + 1

    # Any single flipped bit fails, keeps the nonce and leaves only zeros behind.
    receiver.set_nonce(nonce)
    position = flip % (len(sealed) * 8)
    sealed[position // 8] ^= 1 << (position % 8)
    try:
        receiver.decrypt_into(ad, sealed, opened)
    except NoiseDecryptError:
        assert receiver.nonce == nonce and opened == bytes(len(plaintext))
        return
    raise AssertionError("a modified transport message authenticated")


@settings(max_examples=300, deadline=None)
@given(
    name=st.one_of(
        st.text(max_size=80),
        st.from_regex(r"Noise_[A-Za-z0-9+]{0,14}_[0-9a-z+]{0,6}_[A-Za-z]{0,10}_[A-Za-z0-9]{0,7}"),
        protocol_names(),
    )
)
def test_from_name_accepts_or_raises_typed(name: str) -> None:
    try:
        proto = NoiseProtocol.from_name(name)
    except NoiseProtocolNameError:
        return
    assert proto.name == name
