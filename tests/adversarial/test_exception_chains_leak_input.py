"""Attack: read hostile input (a prompt, a document, a key id) back out of a decoder's error.

A decoder that raises its typed error inside an ``except`` block keeps the
library exception it caught in ``__context__`` (``from None`` only hides it
from tracebacks), and ``from exc`` puts it in ``__cause__``. Those library
exceptions hold their input: msgpack's ``ExtraData`` the whole decoded
envelope (prompt included), ``UnicodeDecodeError`` the bytes it failed on,
``JSONDecodeError`` the document, TUF's ``ValueError`` the field it disliked.
Anything that later renders the error (a log line, a crash report, a reply)
renders the input with it.

Every decoder here is fed canary-bearing hostile input: valid encodings with
the canary in customer-data, text and byte fields, then trailing bytes,
truncation, byte flips and insertions, plus hand-made cases for each library
exception that quotes what it read. Whatever a decoder raises must be the
module's typed error, and walking ``str()``, ``repr()``, ``args``, notes,
``__cause__`` and ``__context__`` recursively must neither find the canary
(as text, bytes or hex) nor any exception from outside Mantle's packages.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import _node_attestation
import cbor2
import msgpack
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]

from actors.attestation import (
    ChallengeMessage,
    EvidenceMessage,
    Reattestation,
    ReattestationFailed,
    encode_control,
)
from actors.channel import NOT_ATTESTED, ChannelAttestation, accept_secure, memory_byte_stream_pair
from actors.counter_guard import CounterBinding
from actors.key_custody import KEYRING_COUNTER, KeyringError
from actors.lowlevel import NodeHello
from nodes.model_store import ModelStoreError, SealedModelInfo, read_sealed_header
from nodes.random import SystemRandom
from nodes.release import KeyFileError, check_log_proof, load_private_key, load_public_key
from nodes.store import SqliteStore
from nodes.tcp_transport import PeerAddress, PeerNotAllowed, TcpNoiseTransport
from nodes.tlog import TlogHttpApp, TransparencyLog, load_log_public_key
from nodes.tpm._nsm import NsmError, decode_nsm_response
from protocol.attestation import (
    AttestationError,
    AttestationVerifier,
    ConfigurationError,
    DocumentKind,
    Expectations,
    NitroAuthenticator,
    PcrPolicy,
    TrustAnchor,
    unverified_payload,
)
from protocol.attestation import tpm2_quote as quote
from protocol.attestation._cbor import decode_strict
from protocol.attestation._cose import parse_cose_sign1
from protocol.customer_data import CustomerData
from protocol.framing import NEED_DATA, SecureSession, SessionError
from protocol.inference import ChatTurn, GenerateChunk, GenerateRequest, Role
from protocol.key_custody import (
    IMPORT_FORMAT_VERSION,
    KEYRING_FILE_FORMAT,
    KEYRING_FORMAT_VERSION,
    DataKeyImport,
    KeyringFile,
)
from protocol.key_custody import Keyring as PersistedKeyring
from protocol.messages import (
    Envelope,
    MessageCheck,
    MessageDecodeError,
    MessageEncodeError,
    MessageRegistry,
    decode_envelope,
    encode_envelope,
)
from protocol.noise import HandshakeState, KeyPair, NoiseProtocol
from protocol.release import (
    RELEASE_ENTRY_TAG,
    ArtifactSpec,
    ReleaseError,
    ReleaseLogProof,
    add_signer,
    decode_release_log_entry,
    encode_release_log_entry,
    metadata_from_bytes,
    metadata_to_bytes,
    new_root,
    new_targets,
    release_log_proof,
    sign_metadata,
    verify_release_in_log,
    verify_release_metadata,
)
from protocol.sealed_model import (
    ModelDecryptor,
    SealedModelError,
    SealedModelHeader,
    decode_header,
)
from protocol.tlog import SignedTreeHead, TlogError, sign_tree_head
from simulations.clock import ManualClock
from simulations.nitrotpm import SimulatedNitroTPM

# Letters and digits only, so it survives wherever an input is allowed to
# carry text: model ids, key ids, base64 and JSON strings, file names.
CANARY = "QXcanaryZ7q4"
CANARY_BYTES = CANARY.encode("ascii")
# Model ids are routing metadata of a fixed alphabet, meant to appear in log
# lines and messages once validated; what must never appear is an id that
# FAILED validation. This canary can only sit in an invalid id ("!" is outside
# the alphabet), so finding it intact means an invalid id was quoted.
ID_CANARY = "QX!idcanary9"
_CANARIES = (CANARY, ID_CANARY)
CANARY_FORMS = tuple(
    form for text in _CANARIES for form in (text, text.lower(), text.encode("ascii").hex())
)
_MANTLE_PACKAGES = frozenset({"protocol", "actors", "nodes", "mantle", "simulations"})
NOW = datetime(2030, 1, 1, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)

# ----------------------------------------------------------------------------- the walk


def _bears_canary(text: str) -> bool:
    lowered = text.lower()
    return any(form.lower() in lowered for form in CANARY_FORMS)


def leaks(error: BaseException) -> list[str]:
    """Every place in ``error``'s rendering and chain that holds the canary,
    and every exception from outside Mantle's packages in the chain."""
    found: list[str] = []
    seen: set[int] = set()

    def value(where: str, item: object, depth: int) -> None:
        if depth > 16 or id(item) in seen:
            return
        if isinstance(item, BaseException):
            exception(where, item, depth + 1)
            return
        seen.add(id(item))
        if isinstance(item, CustomerData):
            return  # renders as the redaction marker wherever it goes
        if isinstance(item, bytes | bytearray | memoryview):
            raw = bytes(item).lower()
            if any(text.lower().encode("ascii") in raw for text in _CANARIES):
                found.append(f"{where} holds the canary bytes")
            return
        if isinstance(item, str):
            if _bears_canary(item):
                found.append(f"{where} holds the canary text")
            return
        if isinstance(item, Mapping):
            for key, member in item.items():
                value(f"{where}[key]", key, depth + 1)
                value(f"{where}[{key!r}]", member, depth + 1)
            return
        if isinstance(item, list | tuple | set | frozenset):
            for index, member in enumerate(item):
                value(f"{where}[{index}]", member, depth + 1)
            return
        if _bears_canary(repr(item)):
            found.append(f"{where} renders the canary")

    def exception(where: str, exc: BaseException, depth: int) -> None:
        if id(exc) in seen:
            return
        seen.add(id(exc))
        name = f"{type(exc).__module__}.{type(exc).__qualname__}"
        if type(exc).__module__.split(".")[0] not in _MANTLE_PACKAGES:
            found.append(f"{where} is a library exception ({name}) kept in the chain")
            # Library exceptions keep their input in attributes as well
            # (UnicodeError.object, JSONDecodeError.doc, ExtraData.unpacked).
            value(f"{where}.__dict__", dict(getattr(exc, "__dict__", {})), depth)
            for attribute in ("object", "doc", "unpacked", "extra"):
                if hasattr(exc, attribute):
                    value(f"{where}.{attribute}", getattr(exc, attribute), depth)
        if _bears_canary(str(exc)):
            found.append(f"{where} ({name}) str() holds the canary")
        if _bears_canary(repr(exc)):
            found.append(f"{where} ({name}) repr() holds the canary")
        value(f"{where}.args", exc.args, depth)
        value(f"{where}.__notes__", getattr(exc, "__notes__", ()), depth)
        if exc.__cause__ is not None:
            exception(f"{where}.__cause__", exc.__cause__, depth + 1)
        if exc.__context__ is not None:
            exception(f"{where}.__context__", exc.__context__, depth + 1)

    exception("error", error, 0)
    return found


def refused_cleanly(
    call: Callable[[], object],
    typed: type[BaseException] | tuple[type[BaseException], ...],
    *,
    must_refuse: bool = False,
) -> None:
    """Run ``call`` on hostile input: it may accept it (a mutation can be
    valid) but any refusal must be ``typed`` and hold nothing of the input."""
    try:
        call()
    except typed as error:
        problems = leaks(error)
        assert not problems, f"{type(error).__name__}: " + "; ".join(problems)
        return
    except Exception as error:
        pytest.fail(f"untyped {type(error).__module__}.{type(error).__qualname__} escaped")
    assert not must_refuse, "hostile input was accepted"


def test_the_walk_finds_what_a_chain_keeps() -> None:
    # The walk itself must see a prompt in each place the finding names.
    def chained() -> None:
        try:
            msgpack.unpackb(msgpack.packb(["prompt " + CANARY]) + b"\x00")
        except Exception:
            raise MessageDecodeError(MessageCheck.MSGPACK_SYNTAX) from None

    with pytest.raises(MessageDecodeError) as caught:
        chained()
    assert any("__context__" in leak for leak in leaks(caught.value))
    assert leaks(ValueError(b"x" + CANARY_BYTES))
    assert leaks(MessageDecodeError(MessageCheck.MSGPACK_SYNTAX, detail=CANARY_BYTES.hex()))
    assert not leaks(MessageDecodeError(MessageCheck.MSGPACK_SYNTAX))
    assert not leaks(ValueError(CustomerData(CANARY)))[1:]  # only "library exception"


def _numbered(cases: tuple[object, ...]) -> list[str]:
    return [f"case{index}" for index in range(len(cases))]


# ----------------------------------------------------------------------------- mutations


@dataclass(frozen=True)
class Mutation:
    kind: str
    position: int
    data: bytes

    def apply(self, encoded: bytes) -> bytes:
        if self.kind == "trail":
            return encoded + self.data
        at = self.position % (len(encoded) + 1)
        if self.kind == "truncate":
            return encoded[:at]
        if self.kind == "insert":
            return encoded[:at] + self.data + encoded[at:]
        if at == len(encoded):
            return encoded + self.data
        flipped = encoded[at] ^ (self.data[0] or 1)
        return encoded[:at] + bytes([flipped]) + encoded[at + 1 :]


mutations = st.builds(
    Mutation,
    st.sampled_from(("trail", "truncate", "insert", "flip")),
    st.integers(0, 1 << 16),
    st.binary(min_size=1, max_size=8),
)
TRAILING_BYTE = Mutation("trail", 0, b"\x00")

# Some text around the canary, so it is not always at a field boundary.
padding = st.text(alphabet="abc xyz\n\u00e9\u4e2d", max_size=12)
canary_text = st.builds(lambda a, b: f"{a}{CANARY}{b}", padding, padding)
canary_bytes = st.builds(
    lambda a, b: a + CANARY_BYTES + b, st.binary(max_size=12), st.binary(max_size=12)
)


def _hostile_utf8(prefix: bytes = b"") -> bytes:
    """Bytes whose UTF-8 decoding fails right after the canary."""
    return prefix + CANARY_BYTES + b"\xff\xfe"


# ----------------------------------------------------------------------------- message envelopes


def _generate_request(prompt: str, model: str) -> bytes:
    return encode_envelope(
        Envelope.wrap(
            GenerateRequest(
                model=model,
                turns=(ChatTurn(Role.USER, CustomerData(prompt)),),
                max_tokens=16,
                temperature=0.5,
                top_p=0.9,
                seed=7,
            ),
            request_id=3,
        )
    )


@given(prompt=canary_text, model=st.sampled_from(("m", f"model-{CANARY}")), mutation=mutations)
@example(prompt=f"my secret {CANARY}", model="m", mutation=TRAILING_BYTE)
@settings(max_examples=300)
def test_generate_request_envelopes(prompt: str, model: str, mutation: Mutation) -> None:
    hostile = mutation.apply(_generate_request(prompt, model))
    refused_cleanly(lambda: decode_envelope(hostile), MessageDecodeError)


@given(text=canary_bytes, mutation=mutations)
@example(text=CANARY_BYTES, mutation=TRAILING_BYTE)
@settings(max_examples=150)
def test_generate_chunk_and_node_hello_envelopes(text: bytes, mutation: Mutation) -> None:
    chunk = encode_envelope(Envelope.wrap(GenerateChunk(CustomerData(text), 1)))
    hello = encode_envelope(Envelope.wrap(NodeHello(f"node-{CANARY}")))
    evidence = encode_envelope(
        Envelope.wrap(EvidenceMessage(DocumentKind.NITRO, b"document " + text))
    )
    for encoded in (chunk, hello, evidence):
        hostile = mutation.apply(encoded)
        refused_cleanly(lambda hostile=hostile: decode_envelope(hostile), MessageDecodeError)


def test_every_msgpack_failure_of_an_envelope_is_clean() -> None:
    body = _generate_request(f"prompt {CANARY}", "m")
    hostile = [
        body + b"\x00",  # ExtraData: holds the whole decoded envelope
        body[:-1],  # truncated
        msgpack.packb((1, "inference.generate", 0, (_hostile_utf8().decode("latin-1"),)))[:-2]
        + b"\xff\xfe",
        b"\x94\x01\xb2inference.generate\x00\x91\xac" + CANARY_BYTES[:-1] + b"\xc1",
        b"\x91" * 2000 + CANARY_BYTES,  # nesting
    ]
    for data in hostile:
        refused_cleanly(
            lambda data=data: decode_envelope(data), MessageDecodeError, must_refuse=True
        )


def test_a_record_invariant_that_quotes_its_value_does_not_reach_the_error() -> None:
    registry = MessageRegistry()

    @registry.message("test.quoting")
    @dataclass(frozen=True, slots=True)
    class Quoting:
        name: str

        def __post_init__(self) -> None:
            raise ValueError(f"refusing {self.name}")

    data = msgpack.packb((1, "test.quoting", 0, (f"secret {CANARY}",)), use_bin_type=True)
    refused_cleanly(lambda: registry.decode(data), MessageDecodeError, must_refuse=True)


def test_a_prompt_that_cannot_be_encoded_does_not_reach_the_error() -> None:
    # A lone surrogate has no UTF-8 form: msgpack's UnicodeEncodeError holds the prompt.
    def encode() -> bytes:
        return _generate_request(f"secret {CANARY} \ud800", "m")

    refused_cleanly(encode, MessageEncodeError, must_refuse=True)


# ----------------------------------------------------------------------------- CBOR evidence

cbor_values = st.recursive(
    st.none() | st.integers(-(2**64), 2**64 - 1) | canary_bytes | canary_text,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(canary_text | st.integers(0, 9), children, max_size=3)
    ),
    max_leaves=8,
)

_CBOR_TEXT_WITH_BAD_UTF8 = bytes([0x60 + len(_hostile_utf8())]) + _hostile_utf8()
HAND_MADE_CBOR = (
    b"\x82" + _CBOR_TEXT_WITH_BAD_UTF8 + b"\x01",  # UnicodeDecodeError holds the text
    b"\xa1" + _CBOR_TEXT_WITH_BAD_UTF8 + b"\x01",  # ... as a map key
    cbor2.dumps(cbor2.CBORTag(1, f"{CANARY}")),  # a tag
    cbor2.dumps(cbor2.CBORTag(60000, [CANARY])),  # an unknown tag
    cbor2.dumps({CANARY: 1})[:-1] + b"\x62" + CANARY_BYTES[:2],  # duplicate-ish / truncated
    cbor2.dumps([CANARY_BYTES, 1.5]),  # a float
    b"\x81" * 50 + cbor2.dumps(CANARY),  # nesting
    cbor2.dumps([CANARY]) + CANARY_BYTES,  # trailing bytes
)


def _cbor_decoders() -> Iterator[tuple[str, Callable[[bytes], object], type[Exception]]]:
    tpm = SimulatedNitroTPM.from_seed("leak", clock=ManualClock(NOW_MS))
    verifier = AttestationVerifier([NitroAuthenticator(TrustAnchor(tpm.pki.root_der))])
    yield "decode_strict", lambda data: decode_strict(data, what="document"), AttestationError
    yield "parse_cose_sign1", parse_cose_sign1, AttestationError
    yield "unverified_payload", unverified_payload, AttestationError
    yield (
        "verify nitro",
        lambda data: verifier.verify(
            data, kind=DocumentKind.NITRO, expectations=Expectations(None), now_ms=NOW_MS
        ),
        AttestationError,
    )
    yield "decode_quote_document", quote.decode_quote_document, AttestationError
    yield "parse_attest", quote.parse_attest, AttestationError
    yield "parse_signature", quote.parse_signature, AttestationError
    yield "decode_nsm_response", decode_nsm_response, NsmError


CBOR_DECODERS = tuple(_cbor_decoders())


@pytest.mark.parametrize("data", HAND_MADE_CBOR, ids=_numbered(HAND_MADE_CBOR))
@pytest.mark.parametrize(
    ("name", "decoder", "typed"), CBOR_DECODERS, ids=[d[0] for d in CBOR_DECODERS]
)
def test_hand_made_cbor(
    name: str, decoder: Callable[[bytes], object], typed: type[Exception], data: bytes
) -> None:
    refused_cleanly(lambda: decoder(data), typed)


@given(value=cbor_values, mutation=mutations)
@settings(max_examples=200)
def test_cbor_decoders_on_mutated_canary_values(value: object, mutation: Mutation) -> None:
    hostile = mutation.apply(cbor2.dumps(value))
    for _, decoder, typed in CBOR_DECODERS:
        refused_cleanly(lambda decoder=decoder: decoder(hostile), typed)


# ------------------------------------------------------------------------ attestation documents

_TPM = SimulatedNitroTPM.from_seed("leak-documents", clock=ManualClock(NOW_MS))
_VERIFIER = AttestationVerifier([NitroAuthenticator(TrustAnchor(_TPM.pki.root_der))])
_DOCUMENT = _TPM.attest(
    nonce=CANARY_BYTES * 2, public_key=CANARY_BYTES + bytes(20), user_data=b"user " + CANARY_BYTES
)


@given(mutation=mutations)
@example(mutation=TRAILING_BYTE)
@example(mutation=Mutation("truncate", len(_DOCUMENT) - 1, b"\x00"))
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_nitro_documents(mutation: Mutation) -> None:
    hostile = mutation.apply(_DOCUMENT)
    expectations = Expectations(None, expected_nonce=bytes(24))
    refused_cleanly(
        lambda: _VERIFIER.verify(
            hostile, kind=DocumentKind.NITRO, expectations=expectations, now_ms=NOW_MS
        ),
        AttestationError,
    )
    refused_cleanly(lambda: unverified_payload(hostile), AttestationError)


def test_certificates_and_roots() -> None:
    pem_garbage = (
        b"-----BEGIN CERTIFICATE-----\n"
        + base64.encodebytes(b"\x30\x82\x01\x00" + CANARY_BYTES * 4)
        + b"-----END CERTIFICATE-----\n"
    )
    for call in (
        lambda: TrustAnchor.from_pem(pem_garbage),
        lambda: TrustAnchor.from_pem(CANARY_BYTES),
        lambda: TrustAnchor.from_der(b"\x30\x82\x01\x00" + CANARY_BYTES * 4),
        lambda: TrustAnchor.from_der(_TPM.pki.root_der + CANARY_BYTES),
    ):
        refused_cleanly(call, ConfigurationError, must_refuse=True)
    # A chain whose certificate is the canary.
    payload = dict(unverified_payload(_DOCUMENT))
    for field in ("certificate", "cabundle"):
        doctored = dict(payload)
        doctored[field] = b"\x30\x03" + CANARY_BYTES if field == "certificate" else [CANARY_BYTES]
        document = cbor2.dumps([b"\xa1\x01\x38\x22", {}, cbor2.dumps(doctored), bytes(96)])
        refused_cleanly(
            lambda document=document: _VERIFIER.verify(
                document, kind=DocumentKind.NITRO, expectations=Expectations(None), now_ms=NOW_MS
            ),
            AttestationError,
            must_refuse=True,
        )


def test_tpm2_quote_attestation_keys() -> None:
    def document(ak_public: bytes) -> bytes:
        return quote.encode_quote_document(
            quote.QuoteDocument(
                attest=CANARY_BYTES,
                signature=CANARY_BYTES,
                ak_public=ak_public,
                pcrs={0: bytes(48)},
                nonce=CANARY_BYTES,
                public_key=None,
                user_data=None,
            )
        )

    trust = quote.QuoteTrust.from_ak_public_keys([b"\x30\x03" + CANARY_BYTES])
    for ak in (b"\x30\x03" + CANARY_BYTES, CANARY_BYTES):
        trust = quote.QuoteTrust.from_ak_public_keys([ak])
        refused_cleanly(
            lambda ak=ak, trust=trust: quote.verify_tpm2_quote(
                document(ak), trust, expected_nonce=None
            ),
            AttestationError,
            must_refuse=True,
        )


# ----------------------------------------------------------------------------- PCR policy files


def _policy(**top: object) -> dict[str, object]:
    document: dict[str, object] = {
        "version": 1,
        "allow_debug": False,
        "releases": [{"name": "r", "pcrs": {"4": "ab" * 48}}],
    }
    document.update(top)
    return document


POLICY_FILES = (
    json.dumps(_policy(**{CANARY: 1})).encode(),
    json.dumps(_policy(releases=[{"name": CANARY, "pcrs": {"4": CANARY}}])).encode(),
    json.dumps(_policy(releases=[{"name": CANARY, "pcrs": {CANARY: "ab" * 48}}])).encode(),
    json.dumps(_policy(releases=[{"name": CANARY, "pcrs": []}])).encode(),
    json.dumps(_policy(releases=[{"name": CANARY, "pcrs": {}}])).encode(),
    json.dumps(_policy(releases=[{"name": CANARY, "pcrs": {"0": "00" * 48}}])).encode(),
    json.dumps(_policy(releases=[{"name": CANARY, "pcrs": {"4": "ab" * 48}}] * 2)).encode(),
    json.dumps(_policy(releases=[{"name": CANARY, CANARY: 1}])).encode(),
    json.dumps(_policy(version=CANARY)).encode(),
    b'{"version": 1, "' + CANARY_BYTES + b'": 1, "' + CANARY_BYTES + b'": 2}',
    b'{"version": ' + CANARY_BYTES + b"}",
    _hostile_utf8(b'{"version": "'),
    b"[" * 100_000 + CANARY_BYTES,
)


@pytest.mark.parametrize("data", POLICY_FILES, ids=_numbered(POLICY_FILES))
def test_pcr_policy_files(data: bytes) -> None:
    refused_cleanly(lambda: PcrPolicy.from_json(data), ConfigurationError, must_refuse=True)
    refused_cleanly(
        lambda: PcrPolicy.from_json(data.decode("utf-8", "replace")),
        ConfigurationError,
        must_refuse=True,
    )


# ----------------------------------------------------------------------------- sealed models


def _header(model_id: bytes) -> bytes:
    encoded = SealedModelHeader("m", 1, 1024, bytes(8)).encode()
    return encoded[:-2] + bytes([len(model_id)]) + model_id


SEALED_HEADERS = (
    _header(_hostile_utf8(b"org/")),  # not ASCII: UnicodeDecodeError holds the id
    _header(b"../" + CANARY_BYTES),  # not a model id
    _header(CANARY_BYTES + b"\x00"),
    b"MNTLSEAL" + CANARY_BYTES * 3,  # wrong version / fields
    CANARY_BYTES * 4,  # wrong magic
)


@pytest.mark.parametrize("data", SEALED_HEADERS, ids=_numbered(SEALED_HEADERS))
def test_sealed_model_headers(data: bytes, tmp_path: Path) -> None:
    refused_cleanly(lambda: decode_header(data), SealedModelError, must_refuse=True)

    def stream() -> None:
        decryptor = ModelDecryptor(lambda header: bytes(32))
        decryptor.feed(data + bytes(64))
        decryptor.finish()

    refused_cleanly(stream, SealedModelError, must_refuse=True)
    sealed = tmp_path / "model.sealed"
    sealed.write_bytes(data)
    refused_cleanly(lambda: read_sealed_header(sealed), ModelStoreError, must_refuse=True)


@given(
    header_id=st.builds(lambda b: b"m/" + CANARY_BYTES + b, st.binary(max_size=6)),
    mutation=mutations,
)
@settings(max_examples=150)
def test_sealed_model_headers_mutated(header_id: bytes, mutation: Mutation) -> None:
    hostile = mutation.apply(_header(header_id) + bytes(40))
    refused_cleanly(lambda: decode_header(hostile), SealedModelError)


MODEL_MANIFESTS = (
    json.dumps({"version": 1, "model_id": f"../{CANARY}"}).encode(),
    json.dumps(
        {
            "version": 1,
            "model_id": f"../{CANARY}",
            "key_version": 1,
            "plaintext_length": 1,
            "plaintext_sha384": CANARY,
            "sealed_sha384": CANARY,
            "chunk_size": CANARY,
        }
    ).encode(),
    _hostile_utf8(b'{"version": 1, "model_id": "'),
    b'{"version": ' + CANARY_BYTES,
    b"[" * 50_000,
)


@pytest.mark.parametrize("data", MODEL_MANIFESTS, ids=_numbered(MODEL_MANIFESTS))
def test_sealed_model_manifests(data: bytes) -> None:
    refused_cleanly(lambda: SealedModelInfo.from_json(data), ModelStoreError, must_refuse=True)


# ----------------------------------------------------------------------------- release metadata


class ReleaseSigners:
    def __init__(self) -> None:
        self.signers = [CryptoSigner.generate_ed25519() for _ in range(2)]
        root = new_root(expires=NOW + timedelta(days=365), targets_threshold=2)
        for signer in self.signers:
            add_signer(root, signer.public_key, "root")
            add_signer(root, signer.public_key, "targets")
        for signer in self.signers:
            sign_metadata(root, signer)
        self.root = metadata_to_bytes(root)
        self.targets = self.sign_targets(lambda md: None)

    def sign_targets(self, mutate: Callable[[Any], None]) -> bytes:
        targets = new_targets(
            version=3,
            expires=NOW + timedelta(days=30),
            artifacts={"code/app.tar": ArtifactSpec(4, {"sha384": bytes(48)})},
            min_version=0,
        )
        mutate(targets)
        for signer in self.signers:
            sign_metadata(targets, signer)
        return metadata_to_bytes(targets)


_SIGNERS = ReleaseSigners()


def _edit(document: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    parsed = json.loads(document)
    edit(parsed)
    return json.dumps(parsed).encode()


def _set(path: tuple[str, ...], value: object) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        target = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _signed_artifact(name: str, hashes: dict[str, str]) -> bytes:
    def mutate(targets: Any) -> None:
        from tuf.api.metadata import TargetFile  # type: ignore[attr-defined]

        targets.signed.targets[name] = TargetFile(4, hashes, name)

    return _SIGNERS.sign_targets(mutate)


def _hostile_signature(document: dict[str, Any]) -> None:
    # Every signature under a keyid of the attacker's choosing, so that no
    # threshold is met: the refusal must not repeat the keyids.
    for index, signature in enumerate(document["signatures"]):
        signature["keyid"] = f"{CANARY}{index}"


def _root_key(keyid: str, key: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        document["signed"]["keys"][keyid] = key
        document["signed"]["roles"]["root"]["keyids"].append(keyid)

    return edit


def _release_cases() -> Iterator[tuple[str, bytes, bytes]]:
    root, targets = _SIGNERS.root, _SIGNERS.targets
    yield "targets type", root, _edit(targets, _set(("signed", "_type"), CANARY))
    yield "root type", _edit(root, _set(("signed", "_type"), CANARY)), targets
    yield "expires", root, _edit(targets, _set(("signed", "expires"), CANARY))
    yield "version", root, _edit(targets, _set(("signed", "version"), CANARY))
    yield "spec version", root, _edit(targets, _set(("signed", "spec_version"), CANARY))
    yield (
        "length",
        root,
        _edit(targets, _set(("signed", "targets", "code/app.tar", "length"), CANARY)),
    )
    yield (
        "hashes",
        root,
        _edit(targets, _set(("signed", "targets", "code/app.tar", "hashes"), CANARY)),
    )
    yield "signature keyid", root, _edit(targets, _hostile_signature)
    yield (
        "signature value",
        root,
        _edit(
            targets,
            lambda d: d["signatures"].__setitem__(
                0, {"keyid": d["signatures"][0]["keyid"], "sig": CANARY}
            ),
        ),
    )
    yield "root signature keyid", _edit(root, _hostile_signature), targets
    yield (
        "root key type",
        _edit(
            root,
            _root_key(CANARY, {"keytype": CANARY, "scheme": CANARY, "keyval": {"public": CANARY}}),
        ),
        targets,
    )
    yield (
        "root key value",
        _edit(
            root,
            _root_key(
                CANARY, {"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": CANARY}}
            ),
        ),
        targets,
    )
    yield (
        "root key pem",
        _edit(
            root,
            _root_key(
                CANARY,
                {
                    "keytype": "ecdsa",
                    "scheme": "ecdsa-sha2-nistp256",
                    "keyval": {
                        "public": f"-----BEGIN PUBLIC KEY-----\n{CANARY}\n-----END PUBLIC KEY-----"
                    },
                },
            ),
        ),
        targets,
    )
    yield (
        "role lists an absent key",
        _edit(root, lambda d: d["signed"]["roles"]["targets"]["keyids"].append(CANARY)),
        targets,
    )
    yield "unsafe artifact name", root, _signed_artifact(f"../{CANARY}", {"sha384": "00" * 48})
    yield "unsupported hash", root, _signed_artifact("code/x", {CANARY: "00" * 48})
    yield "hash not hex", root, _signed_artifact("code/x", {"sha384": CANARY})
    yield "hash size", root, _signed_artifact("code/x", {"sha384": CANARY_BYTES.hex()})
    yield "not JSON", root, b'{"signed": ' + CANARY_BYTES
    yield "not UTF-8", root, _hostile_utf8(b'{"signed": "')
    yield "deep JSON", root, b"[" * 100_000 + CANARY_BYTES
    yield (
        "extra field",
        root,
        _edit(targets, _set(("signed", "targets", "code/app.tar", "custom"), [CANARY])),
    )


RELEASE_CASES = tuple(_release_cases())


@pytest.mark.parametrize(
    ("name", "root", "targets"), RELEASE_CASES, ids=[c[0] for c in RELEASE_CASES]
)
def test_release_metadata(name: str, root: bytes, targets: bytes) -> None:
    def verify() -> object:
        return verify_release_metadata(
            root, targets, trusted_root=_SIGNERS.root, now=NOW, min_version=0
        )

    # "extra field": TUF keeps unrecognised fields; the release then verifies.
    refused_cleanly(verify, ReleaseError, must_refuse=name != "extra field")
    refused_cleanly(lambda: metadata_from_bytes(targets, "targets"), ReleaseError)
    refused_cleanly(lambda: metadata_from_bytes(root, "root"), ReleaseError)
    # The same bytes offered as the pin.
    refused_cleanly(
        lambda: verify_release_metadata(
            _SIGNERS.root, _SIGNERS.targets, trusted_root=root, now=NOW, min_version=0
        ),
        ReleaseError,
    )


@given(mutation=mutations, which=st.sampled_from(("root", "targets")))
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
def test_release_metadata_mutated(mutation: Mutation, which: str) -> None:
    root = _edit(_SIGNERS.root, _hostile_signature)
    targets = _edit(_SIGNERS.targets, _hostile_signature)
    if which == "root":
        root = mutation.apply(root)
    else:
        targets = mutation.apply(targets)
    refused_cleanly(
        lambda: verify_release_metadata(
            root, targets, trusted_root=_SIGNERS.root, now=NOW, min_version=0
        ),
        ReleaseError,
    )


# ------------------------------------------------------------------------ log proofs, tlog data

_LOG_KEY = Ed25519PrivateKey.generate()
_LOG_PUBLIC = _LOG_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
_STH = sign_tree_head(_LOG_KEY, 1, NOW_MS, hashlib.sha256(b"leaf").digest())
_GOOD_PROOF = json.loads(release_log_proof(_STH, 0, (), _LOG_PUBLIC).to_json_bytes())
_NOT_ASCII = f"{CANARY}\u00e9"


def _proof(**changes: object) -> bytes:
    return json.dumps({**_GOOD_PROOF, **changes}).encode()


def _sth(**changes: object) -> dict[str, object]:
    return {**_GOOD_PROOF["sth"], **changes}


LOG_PROOFS = (
    _proof(log_id=_NOT_ASCII),
    _proof(log_id=CANARY),
    _proof(audit_path=[_NOT_ASCII]),
    _proof(audit_path=[CANARY]),
    _proof(leaf_index=CANARY),
    _proof(audit_path=CANARY),
    _proof(sth=CANARY),
    _proof(**{CANARY: 1}),
    _proof(sth=_sth(sha256_root_hash=_NOT_ASCII)),
    _proof(sth=_sth(tree_head_signature=_NOT_ASCII)),
    _proof(sth=_sth(tree_head_signature=base64.b64encode(CANARY_BYTES).decode())),
    _proof(sth=_sth(tree_size=CANARY)),
    _proof(sth={CANARY: 1}),
    b'{"log_id": ' + CANARY_BYTES,
    _hostile_utf8(b'{"log_id": "'),
    b"[" * 60_000,
)


@pytest.mark.parametrize("data", LOG_PROOFS, ids=_numbered(LOG_PROOFS))
def test_log_proofs(data: bytes, tmp_path: Path) -> None:
    # Some of these parse (well-formed base64 that is the wrong log or path);
    # checking them against the release and the pinned log key refuses all.
    refused_cleanly(lambda: ReleaseLogProof.from_json_bytes(data), ReleaseError)
    path = tmp_path / "log-proof.json"
    path.write_bytes(data)
    verified = verify_release_metadata(
        _SIGNERS.root, _SIGNERS.targets, trusted_root=_SIGNERS.root, now=NOW, min_version=0
    )
    refused_cleanly(
        lambda: check_log_proof(verified, path, _LOG_PUBLIC), ReleaseError, must_refuse=True
    )


def test_log_proof_that_does_not_verify() -> None:
    verified = verify_release_metadata(
        _SIGNERS.root, _SIGNERS.targets, trusted_root=_SIGNERS.root, now=NOW, min_version=0
    )
    proof = ReleaseLogProof.from_json_bytes(
        _proof(audit_path=[base64.b64encode(CANARY_BYTES * 3)[:44].decode()])
    )
    for key in (_LOG_PUBLIC, bytes(32), CANARY_BYTES):
        refused_cleanly(
            lambda key=key: verify_release_in_log(verified, proof, key),
            ReleaseError,
            must_refuse=True,
        )


@given(mutation=mutations)
@example(mutation=TRAILING_BYTE)
@settings(max_examples=100)
def test_release_log_entries(mutation: Mutation) -> None:
    entry = encode_release_log_entry(7, hashlib.sha384(CANARY_BYTES).digest())
    hostile = mutation.apply(RELEASE_ENTRY_TAG[:-6] + CANARY_BYTES[:6] + entry[18:])
    refused_cleanly(lambda: decode_release_log_entry(mutation.apply(entry)), ReleaseError)
    refused_cleanly(lambda: decode_release_log_entry(hostile), ReleaseError, must_refuse=True)


@pytest.mark.parametrize("body", [json.loads(p)["sth"] for p in LOG_PROOFS[8:13]] + [{CANARY: 1}])
def test_signed_tree_heads(body: object) -> None:
    assert isinstance(body, dict)
    refused_cleanly(lambda: SignedTreeHead.from_json_dict(body), TlogError, must_refuse=True)


TLOG_QUERIES = (
    ("get-proof-by-hash", _hostile_utf8(b"hash=")),
    ("get-proof-by-hash", b"hash=" + CANARY_BYTES + b"%FF%FE&tree_size=1"),
    ("get-proof-by-hash", b"hash=" + _NOT_ASCII.encode() + b"&tree_size=1"),
    ("get-proof-by-hash", b"hash=" + CANARY_BYTES + b"&tree_size=1"),
    ("get-proof-by-hash", b"hash=" + CANARY_BYTES + b"&tree_size=" + CANARY_BYTES),
    ("get-proof-by-hash", b"hash=AA&tree_size=1&" + CANARY_BYTES + b"=1"),
    ("get-proof-by-hash", b"hash=AA&hash=" + CANARY_BYTES),
    ("get-entries", b"start=" + CANARY_BYTES + b"&end=1"),
    ("get-sth-consistency", b"first=1&second=" + CANARY_BYTES),
    ("get-sth", CANARY_BYTES),
)


@pytest.mark.parametrize(("route", "query"), TLOG_QUERIES, ids=_numbered(TLOG_QUERIES))
def test_tlog_http_replies_hold_no_query_text(route: str, query: bytes) -> None:
    # The log's HTTP view turns refusals into JSON replies: those travel back
    # to whoever sent the query, and must not echo it.
    log = TransparencyLog(SqliteStore.in_memory(), clock=ManualClock(NOW_MS), signing_key=_LOG_KEY)
    log.append(b"entry")
    app = TlogHttpApp(log)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("a GET has no body to receive")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": f"/ct/v1/{route}", "query_string": query}
    trio.run(app, scope, receive, send)
    assert sent[0]["status"] == 400
    assert not _bears_canary(sent[1]["body"].decode("utf-8"))


# ----------------------------------------------------------------------------- key custody files


def _keyring_bytes(model_id: str) -> bytes:
    # The canary in every byte field (the nonce is exactly its 12 bytes).
    data: bytes = msgpack.packb(
        [
            1,
            [[1, "active", b"blob " + CANARY_BYTES, [12]]],
            [[model_id, 1, "active", 1, CANARY_BYTES, CANARY_BYTES * 4]],
        ],
        use_bin_type=True,
    )
    return data


KEYRINGS = (
    _keyring_bytes("m") + CANARY_BYTES,  # ExtraData: holds the whole keyring
    _keyring_bytes(f"m/{ID_CANARY}"),
    _keyring_bytes(f"m/{ID_CANARY}")[:-3],
    msgpack.packb([1, [], [[f"m/{ID_CANARY}", 1]]], use_bin_type=True),
    msgpack.packb([CANARY, [], []], use_bin_type=True),
    msgpack.packb([1, [[CANARY, CANARY, CANARY, [CANARY]]], []], use_bin_type=True),
    msgpack.packb([1, [], [msgpack.ExtType(5, CANARY_BYTES)]], use_bin_type=True),
    b"\x93\x01\x90\x91\x96\xac" + CANARY_BYTES[:-1] + b"\xc1",
)


@pytest.mark.parametrize("data", KEYRINGS, ids=_numbered(KEYRINGS))
def test_keyring_files(data: bytes) -> None:
    refused_cleanly(lambda: PersistedKeyring.decode(data), KeyringError, must_refuse=True)


@given(
    model_id=st.just("m") | st.builds(lambda s: f"m/{s}{ID_CANARY}", st.text("abc", max_size=4)),
    mutation=mutations,
)
@settings(max_examples=150)
def test_keyring_files_mutated(model_id: str, mutation: Mutation) -> None:
    hostile = mutation.apply(_keyring_bytes(model_id))
    refused_cleanly(lambda: PersistedKeyring.decode(hostile), KeyringError)


def _import_bytes(model_id: str, envelope: bytes) -> bytes:
    data: bytes = msgpack.packb([1, model_id, 1, envelope], use_bin_type=True)
    return data


@given(
    model_id=st.sampled_from((f"m/{ID_CANARY}", f"../{ID_CANARY}", "m")),
    envelope=canary_bytes,
    mutation=mutations,
)
@example(model_id="m", envelope=CANARY_BYTES, mutation=TRAILING_BYTE)
@settings(max_examples=150)
def test_data_key_imports(model_id: str, envelope: bytes, mutation: Mutation) -> None:
    hostile = mutation.apply(_import_bytes(model_id, envelope))
    refused_cleanly(lambda: DataKeyImport.decode(hostile), KeyringError)


# The formats as they are written now: the decoders parse these deeper.
def _current_keyring_bytes(model_id: str) -> bytes:
    data: bytes = msgpack.packb(
        [
            KEYRING_FORMAT_VERSION,
            [[1, "active", b"blob " + CANARY_BYTES, [12]]],
            [[model_id, 1, "active", 1, CANARY_BYTES, CANARY_BYTES * 4]],
            [[model_id, 1]],
        ],
        use_bin_type=True,
    )
    return data


def _keyring_file_bytes(body: bytes) -> bytes:
    binding = CounterBinding(KEYRING_COUNTER, b"\x00\x0b" + CANARY_BYTES * 2 + bytes(8))
    data: bytes = msgpack.packb(
        [KEYRING_FILE_FORMAT, 5, binding.encode(), body, CANARY_BYTES * 2 + bytes(8)],
        use_bin_type=True,
    )
    return data


CURRENT_KEYRINGS = (
    _current_keyring_bytes("m") + CANARY_BYTES,  # ExtraData: holds the whole keyring
    _current_keyring_bytes(f"m/{ID_CANARY}"),
    _current_keyring_bytes(f"m/{ID_CANARY}")[:-3],
    msgpack.packb([KEYRING_FORMAT_VERSION, [], [], [[f"m/{ID_CANARY}", 1]]], use_bin_type=True),
    msgpack.packb(
        [KEYRING_FORMAT_VERSION, [[CANARY, CANARY, CANARY, [CANARY]]], [], []], use_bin_type=True
    ),
    msgpack.packb(
        [KEYRING_FORMAT_VERSION, [], [msgpack.ExtType(5, CANARY_BYTES)], []], use_bin_type=True
    ),
)


@pytest.mark.parametrize("data", CURRENT_KEYRINGS, ids=_numbered(CURRENT_KEYRINGS))
def test_current_keyrings_and_keyring_files(data: bytes) -> None:
    refused_cleanly(lambda: PersistedKeyring.decode(data), KeyringError, must_refuse=True)
    refused_cleanly(
        lambda: KeyringFile.decode(_keyring_file_bytes(data)), KeyringError, must_refuse=True
    )


@given(
    model_id=st.just("m") | st.builds(lambda s: f"m/{s}{ID_CANARY}", st.text("abc", max_size=4)),
    mutation=mutations,
    where=st.sampled_from(("body", "file")),
)
@settings(max_examples=150)
def test_current_keyrings_and_keyring_files_mutated(
    model_id: str, mutation: Mutation, where: str
) -> None:
    if where == "body":
        hostile = mutation.apply(_current_keyring_bytes(model_id))
        refused_cleanly(lambda: PersistedKeyring.decode(hostile), KeyringError)
    else:
        hostile = mutation.apply(_keyring_file_bytes(_current_keyring_bytes(model_id)))
        refused_cleanly(lambda: KeyringFile.decode(hostile), KeyringError)


@given(
    model_id=st.sampled_from((f"m/{ID_CANARY}", f"../{ID_CANARY}", "m")),
    envelope=canary_bytes,
    mutation=mutations,
)
@example(model_id="m", envelope=CANARY_BYTES, mutation=TRAILING_BYTE)
@settings(max_examples=150)
def test_current_data_key_imports(model_id: str, envelope: bytes, mutation: Mutation) -> None:
    item = [IMPORT_FORMAT_VERSION, model_id, 1, envelope]
    hostile = mutation.apply(msgpack.packb(item, use_bin_type=True))
    refused_cleanly(lambda: DataKeyImport.decode(hostile), KeyringError)


NOT_BYTES: tuple[object, ...] = (
    None,
    12,
    CANARY,
    [CANARY],
    bytearray(_current_keyring_bytes("m")),
    memoryview(_current_keyring_bytes("m")),
)


@pytest.mark.parametrize("data", NOT_BYTES, ids=_numbered(NOT_BYTES))
@pytest.mark.parametrize(
    "decode",
    [PersistedKeyring.decode, KeyringFile.decode, DataKeyImport.decode],
    ids=["keyring", "keyring file", "data key import"],
)
def test_custody_decoders_take_bytes_only(decode: Callable[[object], object], data: object) -> None:
    # Every failure is the module's typed error, whatever the caller hands in.
    refused_cleanly(lambda: decode(data), KeyringError, must_refuse=True)


# ----------------------------------------------------------------------------- key files


KEY_FILES = (
    b"-----BEGIN PRIVATE KEY-----\n"
    + base64.encodebytes(CANARY_BYTES * 4)
    + b"-----END PRIVATE KEY-----\n",
    b"-----BEGIN PUBLIC KEY-----\n"
    + base64.encodebytes(CANARY_BYTES * 4)
    + b"-----END PUBLIC KEY-----\n",
    b"-----BEGIN PUBLIC KEY-----\n" + CANARY_BYTES + b"\n-----END PUBLIC KEY-----\n",
    CANARY_BYTES,
    _hostile_utf8(),
)


@pytest.mark.parametrize("data", KEY_FILES, ids=_numbered(KEY_FILES))
def test_key_files(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(data)
    for load in (load_private_key, load_public_key, load_log_public_key):
        refused_cleanly(lambda load=load: load(path), KeyFileError, must_refuse=True)


# ----------------------------------------------------------------------------- secure sessions


def _initiator() -> SecureSession:
    protocol = NoiseProtocol.from_name("Noise_XX_25519_ChaChaPoly_BLAKE2s")
    entropy = random.Random(7).randbytes
    session = SecureSession(
        HandshakeState(
            protocol,
            initiator=True,
            prologue=b"leak",
            static=KeyPair.generate(protocol.dh, entropy),
            entropy=entropy,
        )
    )
    session.write_handshake()
    return session


@given(hostile=canary_bytes, mutation=mutations)
@example(hostile=bytes(32) + CANARY_BYTES * 6, mutation=TRAILING_BYTE)
@settings(max_examples=100)
def test_secure_session_handshake_input(hostile: bytes, mutation: Mutation) -> None:
    # The responder's reply, as a hostile network would write it: an
    # ephemeral key, then "encrypted" static key and payload.
    session = _initiator()
    frame = len(hostile).to_bytes(2, "big") + hostile

    def feed() -> None:
        session.receive_data(mutation.apply(frame))
        session.receive_eof()
        while session.next_event() is not NEED_DATA:
            pass

    refused_cleanly(feed, SessionError)


# ----------------------------------------------------------------------------- node links


_LINK_CLOUD = _node_attestation.Cloud("leak-links")
_LINK_NODE = _LINK_CLOUD.node("a")


def _link_transport() -> TcpNoiseTransport:
    return TcpNoiseTransport(
        "a",
        static=_LINK_NODE.static,
        random=SystemRandom(),
        peers={f"node-{CANARY}": PeerAddress("127.0.0.1", 1, bytes(32))},
        attest=_LINK_NODE.service.attest,
        verify_attestation=_LINK_NODE.verifier,
    )


class _Channel:
    handshake_hash = bytes(32)
    remote_static = bytes(32)
    is_initiator = True


async def _send_nowhere(message: bytes) -> None:
    raise AssertionError("nothing is sent")


def _control_messages(text: bytes) -> tuple[bytes, ...]:
    return (
        encode_control(EvidenceMessage(DocumentKind.NITRO, b"document " + text)),
        encode_control(ChallengeMessage((text * 32)[:32])),
        encode_envelope(Envelope.wrap(NodeHello(f"node-{CANARY}"))),
    )


@given(text=canary_bytes, mutation=mutations)
@example(text=CANARY_BYTES, mutation=TRAILING_BYTE)
@settings(max_examples=150)
def test_node_hellos_and_control_messages(text: bytes, mutation: Mutation) -> None:
    # The handshake payload a node link checks, and the control messages of
    # re-attestation; the hello names a configured node whose key differs.
    transport = _link_transport()
    for encoded in _control_messages(text):
        hostile = mutation.apply(encoded)
        refused_cleanly(
            lambda hostile=hostile: transport._verify(None, bytes(32), hostile), PeerNotAllowed
        )
        reattestation = Reattestation(
            _Channel(),
            prove=_LINK_NODE.service.attest,
            verify=_LINK_NODE.verifier,
            send=_send_nowhere,
            clock=_LINK_CLOUD.clock,
            random=SystemRandom(),
        )
        refused_cleanly(
            lambda hostile=hostile, r=reattestation: r.control_received(hostile),
            ReattestationFailed,
        )


_FIRST_PAYLOADS = (
    *_control_messages(CANARY_BYTES),
    encode_control(EvidenceMessage(DocumentKind.NITRO, CANARY_BYTES * 10)) + b"\x00",
    encode_control(EvidenceMessage(DocumentKind.NITRO, cbor2.dumps([CANARY_BYTES] * 4))),
    encode_control(EvidenceMessage(DocumentKind.TPM2_QUOTE, cbor2.dumps({"a": CANARY}))),
    msgpack.packb((1, CANARY, 0, ())),
)


@pytest.mark.parametrize("payload", _FIRST_PAYLOADS, ids=_numbered(_FIRST_PAYLOADS))
@pytest.mark.parametrize("peer_attests", [True, False], ids=["node-link", "customer"])
def test_a_channels_first_payload(payload: bytes, peer_attests: bool) -> None:
    """What the attestation exchange raises at the side that receives it."""
    require = _LINK_NODE.verifier if peer_attests else NOT_ATTESTED
    served = ChannelAttestation(prove=_LINK_NODE.service.attest, require=require)

    async def exchange() -> None:
        client, server = memory_byte_stream_pair()

        async def hostile_peer() -> None:
            session = await _node_attestation.raw_handshake(
                client, _node_attestation.new_key(), b""
            )
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await client.send(session.send(payload))

        failure: SessionError | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hostile_peer)
            try:
                channel = await accept_secure(
                    server,
                    static=_LINK_NODE.static,
                    entropy=SystemRandom().token_bytes,
                    verify_peer=lambda static, hello: None,
                    attestation=served,
                    handshake_timeout=5.0,
                )
            except SessionError as error:
                failure = error  # raised below, as accept_secure raised it
            else:
                await channel.aclose()
        if failure is not None:
            raise failure

    refused_cleanly(lambda: trio.run(exchange), SessionError)
