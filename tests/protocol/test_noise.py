"""Noise: the shared vector files, the vectors runner, and the API's checks and failures."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from protocol.noise import (
    MAX_MESSAGE_LEN,
    MAX_TRANSPORT_PAYLOAD_LEN,
    CipherState,
    HandshakePattern,
    HandshakeState,
    KeyPair,
    NoiseConfigError,
    NoiseDecryptError,
    NoiseError,
    NoiseHandshakeError,
    NoiseInvalidPublicKey,
    NoiseMessageTooLarge,
    NoiseNonceExhausted,
    NoiseProtocol,
    NoiseProtocolNameError,
    NoiseStateError,
    PatternValidityError,
    Token,
)
from protocol.noise import vectors as runner
from protocol.noise._patterns import PATTERNS, check_validity
from protocol.noise._primitives import HASH_FUNCTIONS

MAX_NONCE = 2**64 - 1

FUNDAMENTAL = [
    "N",
    "K",
    "X",
    "NN",
    "NK",
    "NX",
    "KN",
    "KK",
    "KX",
    "XN",
    "XK",
    "XX",
    "IN",
    "IK",
    "IX",
]
DEFERRED = [
    "NK1", "NX1", "X1N", "X1K", "XK1", "X1K1", "X1X", "XX1", "X1X1", "K1N", "K1K", "KK1",
    "K1K1", "K1X", "KX1", "K1X1", "I1N", "I1K", "IK1", "I1K1", "I1X", "IX1", "I1X1",
]  # fmt: skip


class Counter:
    """Deterministic entropy: SHA-512 of a label and a counter (tests only)."""

    def __init__(self, label: bytes) -> None:
        self.label = label
        self.calls = 0

    def __call__(self, n: int) -> bytes:
        self.calls += 1
        out = b""
        block = 0
        while len(out) < n:
            out += hashlib.sha512(self.label + bytes([self.calls, block])).digest()
            block += 1
        return out[:n]


def make_pair(
    name: str,
    *,
    prologue: bytes = b"test prologue",
    psks: list[bytes] | None = None,
    resp_psks: list[bytes] | None = None,
    init_remote_static: bytes | None = None,
    resp_remote_static: bytes | None = None,
    label: bytes = b"k",
) -> tuple[HandshakeState, HandshakeState, KeyPair, KeyPair]:
    proto = NoiseProtocol.from_name(name)
    init_s = KeyPair.generate(proto.dh, Counter(label + b"is"))
    resp_s = KeyPair.generate(proto.dh, Counter(label + b"rs"))
    psks = psks if psks is not None else [bytes([i]) * 32 for i in range(proto.psk_count)]
    resp_psks = resp_psks if resp_psks is not None else psks
    init = HandshakeState(
        proto,
        initiator=True,
        prologue=prologue,
        static=init_s if proto.requires_static(initiator=True) else None,
        remote_static=(init_remote_static or resp_s.public)
        if proto.requires_remote_static(initiator=True)
        else None,
        psks=psks,
        entropy=Counter(label + b"ie"),
    )
    resp = HandshakeState(
        proto,
        initiator=False,
        prologue=prologue,
        static=resp_s if proto.requires_static(initiator=False) else None,
        remote_static=(resp_remote_static or init_s.public)
        if proto.requires_remote_static(initiator=False)
        else None,
        psks=resp_psks,
        entropy=Counter(label + b"re"),
    )
    return init, resp, init_s, resp_s


def run_handshake(init: HandshakeState, resp: HandshakeState) -> list[bytes]:
    wire = []
    while not (init.is_complete and resp.is_complete):
        writer, reader = (init, resp) if init.is_our_turn else (resp, init)
        payload = f"hello {writer.message_index}".encode()
        message = writer.write_message(payload)
        assert reader.read_message(message) == payload
        wire.append(message)
    return wire


# --- vectors -------------------------------------------------------------------------------


@pytest.mark.parametrize(("filename", "count"), [("cacophony.txt", 944), ("snow.txt", 408)])
def test_shared_vector_files_pass_completely(test_data: Path, filename: str, count: int) -> None:
    results = runner.run_file(test_data / "noise" / filename)
    failures = [r for r in results if not r.passed]
    assert failures == []
    assert len(results) == count


def test_vector_files_cover_every_pattern(test_data: Path) -> None:
    names = set()
    for filename in ("cacophony.txt", "snow.txt"):
        for vector in runner.load_vectors(test_data / "noise" / filename):
            assert isinstance(vector, dict)
            names.add(NoiseProtocol.from_name(vector["protocol_name"]).pattern.name)
    bases = {re.match(r"[A-Z0-9]+", name).group(0) for name in names}  # type: ignore[union-attr]
    assert bases == set(FUNDAMENTAL + DEFERRED)
    assert {"XXpsk0+psk1+psk2+psk3", "NNpsk0+psk2", "XKpsk3"} <= names


def test_runner_main_prints_summary(test_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = runner.main([str(test_data / "noise" / "snow.txt")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "408 passed, 0 failed"
    assert rc == 0


def test_runner_counts_unsupported_malformed_and_wrong_vectors_as_failed(
    test_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = runner.load_vectors(test_data / "noise" / "snow.txt")[30]
    assert isinstance(good, dict)
    tampered = json.loads(json.dumps(good))
    last = tampered["messages"][-1]
    last["ciphertext"] = ("00" if last["ciphertext"][:2] != "00" else "01") + last["ciphertext"][2:]
    wrong_hash = json.loads(json.dumps(good))
    wrong_hash["handshake_hash"] = "00" * 32
    vectors = [
        good,
        dict(good, protocol_name="Noise_XXfallback_25519_ChaChaPoly_BLAKE2s"),
        dict(good, protocol_name="Noise_XX_25519_ChaChaPoly_SHA3"),
        dict(good, init_prologue="zz"),
        {k: v for k, v in good.items() if k != "messages"},
        "not an object",
        tampered,
        wrong_hash,
    ]
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"vectors": vectors}))
    rc = runner.main([str(path)])
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "1 passed, 7 failed"
    assert rc == 1
    results = runner.run_file(path)
    assert [r.passed for r in results] == [True] + [False] * 7
    assert "unsupported" in results[1].reason
    assert "malformed" in results[3].reason
    assert "mismatch" in results[6].reason or "NoiseDecryptError" in results[6].reason
    assert results[7].reason == "mismatch: handshake hash"


def test_runner_unreadable_file_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    missing = tmp_path / "missing.json"
    assert runner.main([str(bad), str(missing)]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "0 passed, 2 failed"


# --- names and patterns ---------------------------------------------------------------------


def test_pattern_table_holds_all_fundamental_and_deferred_patterns() -> None:
    assert set(PATTERNS) == set(FUNDAMENTAL) | set(DEFERRED)
    assert [p for p in PATTERNS if PATTERNS[p].one_way] == ["N", "K", "X"]
    for pattern in PATTERNS.values():
        check_validity(pattern)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Noise",
        "Noise_XX_25519_ChaChaPoly",
        "Noise_XX_25519_ChaChaPoly_BLAKE2s_extra",
        "noise_XX_25519_ChaChaPoly_BLAKE2s",
        "Noise_QQ_25519_ChaChaPoly_BLAKE2s",
        "Noise_xx_25519_ChaChaPoly_BLAKE2s",
        "Noise_XX_25518_ChaChaPoly_BLAKE2s",
        "Noise_XX_25519_ChaCha_BLAKE2s",
        "Noise_XX_25519_ChaChaPoly_SHA3",
        "Noise_XX_25519_ChaChaPoly_blake2s",
        "Noise_XXfallback_25519_ChaChaPoly_BLAKE2s",
        "Noise_XXhfs_25519+Kyber1024_ChaChaPoly_BLAKE2s",
        "Noise_NNpsk3_25519_ChaChaPoly_BLAKE2s",
        "Noise_XXpsk2+psk0_25519_ChaChaPoly_BLAKE2s",
        "Noise_XXpsk0+psk0_25519_ChaChaPoly_BLAKE2s",
        "Noise_XXpsk01_25519_ChaChaPoly_BLAKE2s",
        "Noise_XXpsk_25519_ChaChaPoly_BLAKE2s",
        "Noise_XXpsk0+_25519_ChaChaPoly_BLAKE2s",
        "Noise_XX_25519_ChaChaPoly_BLAKE2s\x00",
        "Noise_XX_25519_ChaChaPöly_BLAKE2s",
        "Noise_" + "X" * 300 + "_25519_ChaChaPoly_BLAKE2s",
    ],
)
def test_bad_protocol_names_raise_typed_error(name: str) -> None:
    with pytest.raises(NoiseProtocolNameError):
        NoiseProtocol.from_name(name)


def test_non_string_name_is_a_typed_error() -> None:
    with pytest.raises(NoiseError):
        NoiseProtocol.from_name(b"Noise_XX_25519_ChaChaPoly_BLAKE2s")  # type: ignore[arg-type]


def test_psk_modifiers_place_tokens_per_spec() -> None:
    proto = NoiseProtocol.from_name("Noise_XXpsk0+psk1+psk3_25519_AESGCM_SHA256")
    assert proto.pattern.messages == (
        (Token.PSK, Token.E, Token.PSK),
        (Token.E, Token.EE, Token.S, Token.ES),
        (Token.S, Token.SE, Token.PSK),
    )
    assert proto.psk_count == 3


E, S, EE, ES, SE, SS, PSK = Token.E, Token.S, Token.EE, Token.ES, Token.SE, Token.SS, Token.PSK


@pytest.mark.parametrize(
    ("pre_i", "pre_r", "messages", "rule"),
    [
        ((), (), ((E, ES),), "rule 1"),  # responder has no static key to DH with
        ((), (), ((E, E),), "rule 2"),
        ((S,), (), ((S, E),), "rule 2"),  # static both pre-message and sent
        ((), (), ((E,), (E, EE, EE)), "rule 3"),
        ((S,), (), ((E,), (E, SE)), "rule 4"),  # initiator transport after se without ee
        ((), (S,), ((E,), (E, EE)), "ok"),
        ((), (S,), ((PSK,), (E, EE)), "9.3"),  # initiator payload after psk without e
        ((), (E,), ((E, EE),), "pre-message"),
    ],
)
def test_validity_rules_reject_bad_patterns(
    pre_i: tuple[Token, ...],
    pre_r: tuple[Token, ...],
    messages: tuple[tuple[Token, ...], ...],
    rule: str,
) -> None:
    pattern = HandshakePattern("T", pre_i, pre_r, messages)
    if rule == "ok":
        check_validity(pattern)
        return
    with pytest.raises(PatternValidityError, match=rule):
        check_validity(pattern)


def test_hash_block_lengths_match_implementation() -> None:
    for function in HASH_FUNCTIONS.values():
        assert hashlib.new(function.hashlib_name).block_size == function.blocklen
        assert hashlib.new(function.hashlib_name).digest_size == function.hashlen


# --- handshakes -------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", FUNDAMENTAL + DEFERRED)
def test_every_pattern_handshakes_and_transports(pattern: str) -> None:
    init, resp, init_s, resp_s = make_pair(f"Noise_{pattern}_25519_ChaChaPoly_BLAKE2s")
    run_handshake(init, resp)
    assert init.handshake_hash == resp.handshake_hash
    assert len(init.handshake_hash) == 32
    if init.protocol.requires_static(initiator=True):
        assert resp.remote_static == init_s.public
    if init.protocol.requires_static(initiator=False):
        assert init.remote_static == resp_s.public
    i_send, i_recv = init.split()
    r_send, r_recv = resp.split()
    assert r_recv.decrypt_with_ad(b"ad", i_send.encrypt_with_ad(b"ad", b"ping")) == b"ping"
    if init.protocol.one_way:
        with pytest.raises(NoiseStateError):
            r_send.encrypt_with_ad(b"", b"x")
        with pytest.raises(NoiseStateError):
            i_recv.decrypt_with_ad(b"", b"x" * 16)
    else:
        assert i_recv.decrypt_with_ad(b"", r_send.encrypt_with_ad(b"", b"pong")) == b"pong"


def test_same_entropy_gives_same_handshake() -> None:
    a = run_handshake(*make_pair("Noise_XX_448_AESGCM_SHA512")[:2])
    b = run_handshake(*make_pair("Noise_XX_448_AESGCM_SHA512")[:2])
    c = run_handshake(*make_pair("Noise_XX_448_AESGCM_SHA512", label=b"other")[:2])
    assert a == b
    assert a != c


def test_turn_order_and_completion_are_enforced() -> None:
    init, resp, *_ = make_pair("Noise_NN_25519_ChaChaPoly_SHA256")
    with pytest.raises(NoiseStateError):
        resp.write_message(b"")
    with pytest.raises(NoiseStateError):
        init.read_message(b"")
    with pytest.raises(NoiseStateError):
        _ = init.handshake_hash
    with pytest.raises(NoiseStateError):
        init.split()
    run_handshake(init, resp)
    with pytest.raises(NoiseStateError):
        init.write_message(b"")
    init.split()
    with pytest.raises(NoiseStateError):
        init.split()


def test_wrong_remote_static_fails_handshake() -> None:
    proto = NoiseProtocol.from_name("Noise_IK_25519_ChaChaPoly_BLAKE2s")
    imposter = KeyPair.generate(proto.dh, Counter(b"imposter"))
    init, resp, *_ = make_pair(proto.name, init_remote_static=imposter.public)
    with pytest.raises(NoiseDecryptError):
        resp.read_message(init.write_message(b"secret"))
    with pytest.raises(NoiseHandshakeError):  # a failed handshake stays failed
        resp.write_message(b"")


def test_wrong_pinned_initiator_static_fails_kk() -> None:
    proto = NoiseProtocol.from_name("Noise_KK_25519_AESGCM_BLAKE2b")
    other = KeyPair.generate(proto.dh, Counter(b"other"))
    init, resp, *_ = make_pair(proto.name, resp_remote_static=other.public)
    with pytest.raises(NoiseDecryptError):
        resp.read_message(init.write_message(b""))


def test_wrong_psk_fails() -> None:
    init, resp, *_ = make_pair(
        "Noise_NNpsk0_25519_ChaChaPoly_SHA256", psks=[b"a" * 32], resp_psks=[b"b" * 32]
    )
    with pytest.raises(NoiseDecryptError):
        resp.read_message(init.write_message(b"payload"))


def test_wrong_second_psk_fails_late() -> None:
    init, resp, *_ = make_pair(
        "Noise_XXpsk0+psk3_25519_ChaChaPoly_SHA256",
        psks=[b"a" * 32, b"b" * 32],
        resp_psks=[b"a" * 32, b"c" * 32],
    )
    resp.read_message(init.write_message(b""))
    init.read_message(resp.write_message(b""))
    with pytest.raises(NoiseDecryptError):
        resp.read_message(init.write_message(b""))


def test_prologue_mismatch_fails() -> None:
    proto = NoiseProtocol.from_name("Noise_NN_25519_ChaChaPoly_BLAKE2s")
    init = HandshakeState(proto, initiator=True, prologue=b"v1", entropy=Counter(b"i"))
    resp = HandshakeState(proto, initiator=False, prologue=b"v2", entropy=Counter(b"r"))
    resp.read_message(init.write_message(b""))
    with pytest.raises(NoiseDecryptError):
        init.read_message(resp.write_message(b""))


X25519_LOW_ORDER = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    (2**255 - 19 - 1).to_bytes(32, "little"),
    (2**255 - 19).to_bytes(32, "little"),
]


@pytest.mark.parametrize("point", X25519_LOW_ORDER)
def test_low_order_ephemeral_is_rejected(point: bytes) -> None:
    init, resp, *_ = make_pair("Noise_NK_25519_ChaChaPoly_BLAKE2s")
    message = init.write_message(b"")
    forged = point + message[32:]
    with pytest.raises(NoiseInvalidPublicKey):
        resp.read_message(forged)
    with pytest.raises(NoiseHandshakeError):
        resp.read_message(message)


def test_low_order_remote_static_is_rejected_448() -> None:
    with pytest.raises(NoiseInvalidPublicKey):
        init, _, _, _ = make_pair("Noise_NK_448_ChaChaPoly_BLAKE2s", init_remote_static=bytes(56))
        init.write_message(b"")


def test_truncated_handshake_message_is_typed() -> None:
    init, resp, *_ = make_pair("Noise_XX_25519_ChaChaPoly_BLAKE2s")
    resp.read_message(init.write_message(b""))
    message = resp.write_message(b"")
    with pytest.raises(NoiseHandshakeError):
        init.read_message(message[:40])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"static": None}, "needs a local static"),
        ({"remote_static": None}, "needs the peer's static"),
        ({"remote_static": b"short"}, "wrong length"),
        ({"psks": []}, "number of psks"),
        ({"psks": [b"x" * 31]}, "32 bytes"),
        ({"psks": b"p" * 32}, "sequence of 32-byte keys"),
        ({"entropy": None}, "entropy"),
    ],
)
def test_configuration_errors(kwargs: dict[str, object], match: str) -> None:
    proto = NoiseProtocol.from_name("Noise_KKpsk2_25519_ChaChaPoly_BLAKE2s")
    s = KeyPair.generate(proto.dh, Counter(b"s"))
    arguments: dict[str, object] = {
        "initiator": True,
        "static": s,
        "remote_static": s.public,
        "psks": [b"p" * 32],
        "entropy": Counter(b"e"),
    }
    arguments.update(kwargs)
    with pytest.raises(NoiseConfigError, match=match):
        HandshakeState(proto, **arguments)  # type: ignore[arg-type]


def test_unused_keys_are_refused() -> None:
    proto = NoiseProtocol.from_name("Noise_NN_25519_ChaChaPoly_BLAKE2s")
    s = KeyPair.generate(proto.dh, Counter(b"s"))
    with pytest.raises(NoiseConfigError):
        HandshakeState(proto, initiator=True, static=s, entropy=Counter(b"e"))
    with pytest.raises(NoiseConfigError):
        HandshakeState(proto, initiator=True, remote_static=s.public, entropy=Counter(b"e"))
    n = NoiseProtocol.from_name("Noise_N_25519_ChaChaPoly_BLAKE2s")
    with pytest.raises(NoiseConfigError):  # the N responder sends no ephemeral
        HandshakeState(n, initiator=False, static=s, ephemeral=s)


def test_key_pair_checks_and_hides_private_key() -> None:
    proto = NoiseProtocol.from_name("Noise_XX_25519_ChaChaPoly_BLAKE2s")
    kp = KeyPair.from_private(proto.dh, b"\x42" * 32)
    assert kp.private.hex() not in repr(kp)
    with pytest.raises(NoiseConfigError):
        KeyPair.from_private(proto.dh, b"\x42" * 31)
    with pytest.raises(NoiseConfigError):
        KeyPair.generate(proto.dh, lambda n: b"\x00" * (n - 1))
    mismatched = KeyPair(public=bytes(32), private=kp.private)
    with pytest.raises(NoiseConfigError, match="does not match"):
        HandshakeState(proto, initiator=True, static=mismatched, entropy=Counter(b"e"))


# --- transport: nonces, rekey, sizes ----------------------------------------------------------


def transport(name: str = "Noise_NN_25519_ChaChaPoly_BLAKE2s") -> tuple[CipherState, ...]:
    init, resp, *_ = make_pair(name)
    run_handshake(init, resp)
    return (*init.split(), *resp.split())


def test_nonce_encodings_match_spec() -> None:
    key = bytes(range(32))
    chacha = NoiseProtocol.from_name("Noise_NN_25519_ChaChaPoly_SHA256").cipher
    aes = NoiseProtocol.from_name("Noise_NN_25519_AESGCM_SHA256").cipher
    n = 0x0102030405060708
    assert CipherState(chacha, key, nonce=n).encrypt_with_ad(b"a", b"p") == ChaCha20Poly1305(
        key
    ).encrypt(b"\x00" * 4 + n.to_bytes(8, "little"), b"p", b"a")
    assert CipherState(aes, key, nonce=n).encrypt_with_ad(b"a", b"p") == AESGCM(key).encrypt(
        b"\x00" * 4 + n.to_bytes(8, "big"), b"p", b"a"
    )


@pytest.mark.parametrize("cipher", ["ChaChaPoly", "AESGCM"])
def test_rekey_matches_spec_and_keeps_nonce(cipher: str) -> None:
    function = NoiseProtocol.from_name(f"Noise_NN_25519_{cipher}_SHA256").cipher
    key = bytes(range(32))
    aead = ChaCha20Poly1305 if cipher == "ChaChaPoly" else AESGCM
    order: Literal["little", "big"] = "little" if cipher == "ChaChaPoly" else "big"
    state = CipherState(function, key, nonce=7)
    state.rekey()
    assert state.nonce == 7
    new_key = aead(key).encrypt(b"\x00" * 4 + MAX_NONCE.to_bytes(8, order), bytes(32), b"")[:32]
    expected = aead(new_key).encrypt(b"\x00" * 4 + (7).to_bytes(8, order), b"m", b"")
    assert state.encrypt_with_ad(b"", b"m") == expected


def test_rekey_both_sides_continues_one_side_breaks() -> None:
    i_send, i_recv, r_send, r_recv = transport()
    i_send.rekey()
    r_recv.rekey()
    assert r_recv.decrypt_with_ad(b"", i_send.encrypt_with_ad(b"", b"after")) == b"after"
    r_send.rekey()
    with pytest.raises(NoiseDecryptError):
        i_recv.decrypt_with_ad(b"", r_send.encrypt_with_ad(b"", b"x"))


def test_nonce_exhaustion() -> None:
    i_send, _, _, r_recv = transport()
    i_send.set_nonce(MAX_NONCE - 1)
    r_recv.set_nonce(MAX_NONCE - 1)
    last = i_send.encrypt_with_ad(b"", b"last")
    assert i_send.nonce == MAX_NONCE
    assert r_recv.decrypt_with_ad(b"", last) == b"last"
    assert r_recv.nonce == MAX_NONCE
    with pytest.raises(NoiseNonceExhausted):
        i_send.encrypt_with_ad(b"", b"more")
    with pytest.raises(NoiseNonceExhausted):
        r_recv.decrypt_with_ad(b"", last)
    with pytest.raises(NoiseConfigError):
        i_send.set_nonce(MAX_NONCE + 1)
    with pytest.raises(NoiseConfigError):
        i_send.set_nonce(-1)


def test_decrypt_failure_keeps_nonce() -> None:
    i_send, _, _, r_recv = transport()
    good = i_send.encrypt_with_ad(b"", b"hello")
    with pytest.raises(NoiseDecryptError):
        r_recv.decrypt_with_ad(b"", good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(NoiseDecryptError):
        r_recv.decrypt_with_ad(b"other ad", good)
    with pytest.raises(NoiseDecryptError):
        r_recv.decrypt_with_ad(b"", b"short")
    assert r_recv.nonce == 0
    assert r_recv.decrypt_with_ad(b"", good) == b"hello"


def test_transport_message_size_limit() -> None:
    i_send, _, _, r_recv = transport()
    largest = i_send.encrypt_with_ad(b"", b"\x01" * MAX_TRANSPORT_PAYLOAD_LEN)
    assert len(largest) == MAX_MESSAGE_LEN == 65535
    assert r_recv.decrypt_with_ad(b"", largest) == b"\x01" * MAX_TRANSPORT_PAYLOAD_LEN
    with pytest.raises(NoiseMessageTooLarge):
        i_send.encrypt_with_ad(b"", b"\x01" * (MAX_TRANSPORT_PAYLOAD_LEN + 1))
    with pytest.raises(NoiseMessageTooLarge):
        r_recv.decrypt_with_ad(b"", b"\x01" * (MAX_MESSAGE_LEN + 1))
    assert i_send.nonce == 1
    assert r_recv.nonce == 1


def test_handshake_message_size_limit() -> None:
    init, resp, *_ = make_pair("Noise_XX_25519_ChaChaPoly_BLAKE2s")
    # First XX message: 32-byte e, plaintext payload.
    with pytest.raises(NoiseMessageTooLarge):
        init.write_message(b"\x00" * (MAX_MESSAGE_LEN - 31))
    assert init.message_index == 0  # refused before any state changed
    message = init.write_message(b"\x00" * (MAX_MESSAGE_LEN - 32))
    assert len(message) == MAX_MESSAGE_LEN
    with pytest.raises(NoiseMessageTooLarge):
        resp.read_message(message + b"\x00")
    resp.read_message(message)
    # Second XX message: e, encrypted s (48), encrypted payload (+16).
    limit = MAX_MESSAGE_LEN - 32 - 48 - 16
    with pytest.raises(NoiseMessageTooLarge):
        resp.write_message(b"\x00" * (limit + 1))
    assert len(resp.write_message(b"\x00" * limit)) == MAX_MESSAGE_LEN


# --- transport into caller buffers, and any bytes-like input ----------------------------------


@pytest.mark.parametrize("cipher", ["ChaChaPoly", "AESGCM"])
@pytest.mark.parametrize("ad", [b"", b"associated"])
def test_buffer_inputs_and_into_forms_match_spec(cipher: str, ad: bytes) -> None:
    function = NoiseProtocol.from_name(f"Noise_NN_25519_{cipher}_SHA256").cipher
    key = bytes(range(32))
    aead = ChaCha20Poly1305 if cipher == "ChaChaPoly" else AESGCM
    order: Literal["little", "big"] = "little" if cipher == "ChaChaPoly" else "big"
    plaintext = bytes(range(200))
    expected = aead(key).encrypt(b"\x00" * 4 + (5).to_bytes(8, order), plaintext, ad)
    framed = bytearray(b"hdr" + plaintext + b"trailer")
    for source, associated in (
        (plaintext, ad),
        (bytearray(plaintext), bytearray(ad)),
        (memoryview(framed)[3:-7], memoryview(ad)),
    ):
        assert CipherState(function, key, nonce=5).encrypt_with_ad(associated, source) == expected
        sender = CipherState(function, key, nonce=5)
        out = bytearray(2 + len(expected))
        assert sender.encrypt_into(associated, source, memoryview(out)[2:]) == len(expected)
        assert bytes(out[2:]) == expected and out[:2] == b"\x00\x00"
        assert sender.nonce == 6
        receiver = CipherState(function, key, nonce=5)
        wire = memoryview(b"xx" + expected)[2:]
        assert receiver.decrypt_with_ad(associated, wire) == plaintext
        receiver.set_nonce(5)
        opened = bytearray(len(plaintext))
        assert receiver.decrypt_into(associated, wire, opened) == len(plaintext)
        assert opened == plaintext and receiver.nonce == 6


def test_decrypt_into_failure_keeps_nonce_and_leaves_no_plaintext() -> None:
    i_send, _, _, r_recv = transport()
    message = b"secret prompt text" * 4
    good = i_send.encrypt_with_ad(b"", message)
    tampered = good[:-1] + bytes([good[-1] ^ 1])  # only the tag differs
    out = bytearray(b"\xaa" * len(message))
    with pytest.raises(NoiseDecryptError):
        r_recv.decrypt_into(b"", tampered, out)
    # The AEAD wrote the plaintext before checking the tag; it must be gone.
    assert out == bytes(len(message))
    view = memoryview(bytearray(len(message) + 4))[2:-2]
    with pytest.raises(NoiseDecryptError):
        r_recv.decrypt_into(b"other ad", good, view)
    assert view.tobytes() == bytes(len(message))
    with pytest.raises(NoiseDecryptError):
        r_recv.decrypt_into(b"", b"short", bytearray())
    assert r_recv.nonce == 0
    assert r_recv.decrypt_into(b"", good, out) == len(message) and out == message


def test_into_forms_refuse_wrong_buffer_lengths_without_using_a_nonce() -> None:
    i_send, _, _, r_recv = transport()
    with pytest.raises(NoiseConfigError):
        i_send.encrypt_into(b"", b"abc", bytearray(3 + 15))
    with pytest.raises(NoiseConfigError):
        i_send.encrypt_into(b"", b"abc", bytearray(3 + 17))
    assert i_send.nonce == 0
    sealed = bytearray(19)
    i_send.encrypt_into(b"", b"abc", sealed)
    with pytest.raises(NoiseConfigError):
        r_recv.decrypt_into(b"", sealed, bytearray(2))
    with pytest.raises(NoiseConfigError):
        r_recv.decrypt_into(b"", sealed, bytearray(4))
    assert r_recv.nonce == 0
    out = bytearray(3)
    r_recv.decrypt_into(b"", sealed, out)
    assert out == b"abc"


def test_into_forms_enforce_size_and_nonce_limits() -> None:
    i_send, _, _, r_recv = transport()
    with pytest.raises(NoiseMessageTooLarge):
        i_send.encrypt_into(
            b"", bytes(MAX_TRANSPORT_PAYLOAD_LEN + 1), bytearray(MAX_MESSAGE_LEN + 1)
        )
    with pytest.raises(NoiseMessageTooLarge):
        r_recv.decrypt_into(b"", bytes(MAX_MESSAGE_LEN + 1), bytearray(MAX_MESSAGE_LEN - 15))
    largest = bytearray(MAX_MESSAGE_LEN)
    i_send.encrypt_into(b"", b"\x01" * MAX_TRANSPORT_PAYLOAD_LEN, largest)
    opened = bytearray(MAX_TRANSPORT_PAYLOAD_LEN)
    r_recv.decrypt_into(b"", largest, opened)
    assert opened == b"\x01" * MAX_TRANSPORT_PAYLOAD_LEN
    i_send.set_nonce(MAX_NONCE)
    r_recv.set_nonce(MAX_NONCE)
    with pytest.raises(NoiseNonceExhausted):
        i_send.encrypt_into(b"", b"x", bytearray(17))
    with pytest.raises(NoiseNonceExhausted):
        r_recv.decrypt_into(b"", bytes(17), bytearray(1))


def test_one_way_unused_direction_refuses_into_forms() -> None:
    init, resp, *_ = make_pair("Noise_N_25519_ChaChaPoly_BLAKE2s")
    run_handshake(init, resp)
    _, unused_recv = init.split()
    unused_send, _ = resp.split()
    with pytest.raises(NoiseStateError):
        unused_send.encrypt_into(b"", b"x", bytearray(17))
    with pytest.raises(NoiseStateError):
        unused_recv.decrypt_into(b"", bytes(17), bytearray(1))
