"""A request only the client's chosen nodes can read: request key, envelopes, sealed body.

The client draws a 32-byte *request key* per request and wraps it to each
candidate inference node in a one-way Noise ``N`` message
(``Noise_N_25519_ChaChaPoly_BLAKE2s``: ``<- s; ... -> e, es``) whose ``rs`` is
the static key that node's verified attestation document binds. Only the
holder of that static private key -- born in the node's memory at boot,
never written -- can open it. ``N`` authenticates no sender, and needs none:
the request key is the client's secret, and whoever makes up a request of
their own only ever reads the answer to it.

The envelope's prologue binds ``"mantle/e2e-request/v1\\0" || request_id ||
model || node`` (msgpack after the domain), so an envelope moved to another
request, model or node fails to open. The body (turns, sampling, stop) is
sealed with ChaCha20-Poly1305 under a key derived from the request key
(HKDF-SHA256, salt = request id, a label of its own per direction; an
answer's key also takes a salt the serving node draws, see ``_response``); the
associated data is the canonical encoding of every other field of the sealed
request (request id, model, max tokens, every envelope), so nothing a relay
sees can be changed without the node noticing. Ingress and scheduler see the
model, the size limit, the node bindings and the ciphertext's length; never
the request key.

Sans-IO: the caller passes the entropy (the Random seam's ``token_bytes``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
from collections.abc import Sequence
from typing import Annotated, Final

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocol.attestation.binding import noise_key_binding
from protocol.customer_data import CustomerData
from protocol.e2e._errors import E2ECheck, E2EError
from protocol.inference import (
    MAX_STOP_LEN,
    MAX_STOP_SEQUENCES,
    MAX_TOKENS_LIMIT,
    ChatTurn,
    GenerateRequest,
    check_sampling,
    check_stop,
)
from protocol.messages import (
    U32,
    Envelope,
    IntRange,
    MaxLen,
    MessageError,
    decode_envelope,
    encode_envelope,
    message,
)
from protocol.noise import Entropy, HandshakeState, KeyPair, NoiseError, NoiseProtocol

#: The Noise protocol of a request envelope.
REQUEST_ENVELOPE_PROTOCOL: Final = NoiseProtocol.from_name("Noise_N_25519_ChaChaPoly_BLAKE2s")
#: The domain that starts every envelope's prologue.
REQUEST_PROLOGUE_DOMAIN: Final = b"mantle/e2e-request/v1\x00"
#: The domain of the request ciphertext's associated data.
REQUEST_AAD_DOMAIN: Final = b"mantle/e2e-request-aad/v1\x00"
#: The domain of :func:`request_digest`.
REQUEST_DIGEST_DOMAIN: Final = b"mantle/e2e-request-digest/v1\x00"
#: HKDF labels: one key per direction, both from the one request key.
REQUEST_KEY_LABEL: Final = b"mantle/e2e/v1 request client-to-node"
RESPONSE_KEY_LABEL: Final = b"mantle/e2e/v1 response node-to-client"

REQUEST_ID_SIZE: Final = 16
REQUEST_KEY_SIZE: Final = 32
#: A node's key binding (:func:`protocol.attestation.noise_key_binding`).
NODE_BINDING_SIZE: Final = 32
STATIC_KEY_SIZE: Final = 32
#: ``e`` (32 bytes) then the request key sealed with its tag (32 + 16).
ENVELOPE_MESSAGE_SIZE: Final = 32 + REQUEST_KEY_SIZE + 16
MAX_CANDIDATES: Final = 16
MAX_MODEL_LEN: Final = 128
#: The request body's plaintext (turns, sampling, stop) is at most this long.
MAX_REQUEST_PLAINTEXT: Final = 1024 * 1024
TAG_SIZE: Final = 16
MAX_REQUEST_CIPHERTEXT: Final = MAX_REQUEST_PLAINTEXT + TAG_SIZE
#: An encoded ``e2e.request`` is at most this long (what a relay may bound its body by).
MAX_SEALED_REQUEST_BYTES: Final = MAX_REQUEST_CIPHERTEXT + 4096

_ZERO_NONCE: Final = bytes(12)


class RequestKey:
    """The 32-byte secret of one request; both directions' keys derive from it.

    Held by the client and the serving node only. Kept out of ``repr``, not
    comparable with ``==`` (use :meth:`matches`, constant time), and not
    picklable, so it does not end up in a log, a metric or a file by accident.
    """

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if type(secret) is not bytes or len(secret) != REQUEST_KEY_SIZE:
            raise ValueError(f"a request key is {REQUEST_KEY_SIZE} bytes")
        self._secret = secret

    def reveal(self) -> bytes:
        """The key's bytes (for deriving keys; never for logging)."""
        return self._secret

    def matches(self, other: RequestKey) -> bool:
        """Whether ``other`` holds the same key, compared in constant time."""
        return hmac.compare_digest(self._secret, other._secret)

    def derive(self, label: bytes, salt: bytes) -> bytes:
        """The 32-byte key for ``label`` (one per direction):
        ``HKDF-SHA256(ikm=request key, salt, info=label)``. The request's
        salt is its id; an answer's is the id and the serving node's fresh
        salt, so no two answers share a key."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=label)
        return hkdf.derive(self._secret)

    def __repr__(self) -> str:
        return "RequestKey(<secret>)"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a request key is not serialisable")


def _check_id(request_id: bytes) -> None:
    if len(request_id) != REQUEST_ID_SIZE:
        raise ValueError(f"a request id is {REQUEST_ID_SIZE} bytes")


@dataclasses.dataclass(frozen=True, slots=True)
class RequestEnvelope:
    """The request key for one candidate node: ``node`` is that node's key
    binding (what the scheduler places by), ``message`` the Noise ``N``
    message to its attested static key."""

    node: Annotated[bytes, MaxLen(NODE_BINDING_SIZE)]
    message: Annotated[bytes, MaxLen(ENVELOPE_MESSAGE_SIZE)]

    def __post_init__(self) -> None:
        if len(self.node) != NODE_BINDING_SIZE:
            raise ValueError(f"a node binding is {NODE_BINDING_SIZE} bytes")
        if len(self.message) != ENVELOPE_MESSAGE_SIZE:
            raise ValueError(f"an envelope message is {ENVELOPE_MESSAGE_SIZE} bytes")


@message("e2e.request_body")
@dataclasses.dataclass(frozen=True, slots=True)
class RequestBody:
    """What is sealed: a generation request without what routing needs (the
    model and max tokens travel beside the ciphertext, authenticated with it).

    Checked with the limits of :mod:`protocol.inference`; all of it is
    customer data as far as relays are concerned.
    """

    turns: Annotated[tuple[ChatTurn, ...], MaxLen(256)]
    temperature: float
    top_p: float
    seed: U32
    stop: Annotated[
        tuple[Annotated[CustomerData, MaxLen(MAX_STOP_LEN)], ...], MaxLen(MAX_STOP_SEQUENCES)
    ] = ()

    def __post_init__(self) -> None:
        if not self.turns:
            raise ValueError("a request needs at least one turn")
        check_sampling(1, self.temperature, self.top_p)
        check_stop(self.stop)

    @classmethod
    def of(cls, request: GenerateRequest) -> RequestBody:
        """The body of ``request`` (its model and max tokens go beside it)."""
        return cls(request.turns, request.temperature, request.top_p, request.seed, request.stop)

    def to_request(self, *, model: str, max_tokens: int) -> GenerateRequest:
        """The generation request this body makes for ``model`` and ``max_tokens``
        (:class:`ValueError` if they are out of range)."""
        return GenerateRequest(
            model=model,
            turns=self.turns,
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=self.stop,
        )


@message("e2e.request")
@dataclasses.dataclass(frozen=True, slots=True)
class SealedRequest:
    """A request as ingress and scheduler see it: routing fields, one envelope
    per candidate node, and the sealed :class:`RequestBody`.

    The body of ``POST /v1/mantle/chat`` is :meth:`encode`'s output.
    """

    request_id: Annotated[bytes, MaxLen(REQUEST_ID_SIZE)]
    model: Annotated[str, MaxLen(MAX_MODEL_LEN)]
    max_tokens: Annotated[int, IntRange(1, MAX_TOKENS_LIMIT)]
    envelopes: Annotated[tuple[RequestEnvelope, ...], MaxLen(MAX_CANDIDATES)]
    ciphertext: Annotated[bytes, MaxLen(MAX_REQUEST_CIPHERTEXT)]

    def __post_init__(self) -> None:
        _check_id(self.request_id)
        if not self.model:
            raise ValueError("a request names a model")
        if not 1 <= len(self.envelopes) <= MAX_CANDIDATES:
            raise ValueError(f"a request has 1 to {MAX_CANDIDATES} envelopes")
        if len({envelope.node for envelope in self.envelopes}) != len(self.envelopes):
            raise ValueError("a request has one envelope per node")
        if len(self.ciphertext) < TAG_SIZE:
            raise ValueError("the ciphertext is shorter than its tag")

    @property
    def nodes(self) -> frozenset[bytes]:
        """The key bindings of the nodes this request may be placed on."""
        return frozenset(envelope.node for envelope in self.envelopes)

    def addressed_to(self, node_binding: bytes) -> bool:
        """Whether an envelope names ``node_binding`` (the scheduler's placement check)."""
        found = False
        for envelope in self.envelopes:
            found |= hmac.compare_digest(envelope.node, node_binding)
        return found

    def associated_data(self) -> bytes:
        """The ciphertext's AAD: the domain, then msgpack of
        ``[request_id, model, max_tokens, [[node, message], ...]]``."""
        return request_associated_data(self.request_id, self.model, self.max_tokens, self.envelopes)

    def encode(self) -> bytes:
        """The canonical wire form (an ``e2e.request`` message envelope)."""
        return encode_envelope(Envelope.wrap(self), max_size=MAX_SEALED_REQUEST_BYTES)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> SealedRequest:
        """Parse untrusted bytes; :class:`E2EError` (``request.malformed``) if
        they are not exactly the canonical encoding of an ``e2e.request``."""
        body: object = None
        with contextlib.suppress(MessageError):
            body = decode_envelope(data, max_size=MAX_SEALED_REQUEST_BYTES).body
        if not isinstance(body, SealedRequest):
            raise E2EError(E2ECheck.REQUEST_MALFORMED, "not an e2e.request message")
        return body


def request_prologue(request_id: bytes, model: str, node: bytes) -> bytes:
    """An envelope's prologue: ``"mantle/e2e-request/v1\\0"`` then msgpack of
    ``[request_id, model, node]`` (``node`` = the recipient's key binding)."""
    packed: bytes = msgpack.packb([request_id, model, node], use_bin_type=True)
    return REQUEST_PROLOGUE_DOMAIN + packed


def request_associated_data(
    request_id: bytes, model: str, max_tokens: int, envelopes: Sequence[RequestEnvelope]
) -> bytes:
    """The request ciphertext's AAD (see :meth:`SealedRequest.associated_data`)."""
    packed: bytes = msgpack.packb(
        [request_id, model, max_tokens, [[e.node, e.message] for e in envelopes]],
        use_bin_type=True,
    )
    return REQUEST_AAD_DOMAIN + packed


def request_digest(request_id: bytes, request: GenerateRequest) -> bytes:
    """What a receipt's ``request_sha256`` is: ``SHA-256(domain || request_id ||
    the canonical encoding of the inference.generate message)``.

    The node computes it from what :func:`open_request` gave it, the client
    from ``body.to_request(model=..., max_tokens=...)``; both encode the same
    fields canonically, so both get the same bytes.
    """
    _check_id(request_id)
    encoded = encode_envelope(Envelope.wrap(request))
    return hashlib.sha256(REQUEST_DIGEST_DOMAIN + request_id + encoded).digest()


def seal_request(
    body: RequestBody,
    *,
    model: str,
    max_tokens: int,
    candidates: Sequence[bytes],
    entropy: Entropy,
) -> tuple[SealedRequest, RequestKey]:
    """Seal ``body`` so that only the owners of ``candidates`` (the attested
    Noise static public keys of the nodes the client verified) can open it.

    Draws the request id (16 bytes), the request key (32) and one ephemeral
    key per envelope from ``entropy``. Raises :class:`E2EError`
    (``request.candidates``, ``request.parameters``) before drawing anything
    if the arguments are out of range.
    """
    if (
        isinstance(candidates, bytes | bytearray | str)
        or not 1 <= len(candidates) <= MAX_CANDIDATES
    ):
        raise E2EError(E2ECheck.CANDIDATES, f"1 to {MAX_CANDIDATES} candidate static keys")
    statics = tuple(candidates)
    if not all(type(key) is bytes and len(key) == STATIC_KEY_SIZE for key in statics):
        raise E2EError(E2ECheck.CANDIDATES, "a candidate static key is 32 bytes")
    if len(set(statics)) != len(statics):
        raise E2EError(E2ECheck.CANDIDATES, "a candidate is named twice")
    if not isinstance(body, RequestBody):
        raise E2EError(E2ECheck.REQUEST_PARAMETERS, "the body is a RequestBody")
    if type(model) is not str or not 0 < len(model) <= MAX_MODEL_LEN:
        raise E2EError(
            E2ECheck.REQUEST_PARAMETERS, f"a model name is 1 to {MAX_MODEL_LEN} characters"
        )
    if type(max_tokens) is not int or not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise E2EError(E2ECheck.REQUEST_PARAMETERS, f"max_tokens is in [1, {MAX_TOKENS_LIMIT}]")
    plaintext: bytes | None = None
    with contextlib.suppress(MessageError):
        plaintext = encode_envelope(Envelope.wrap(body), max_size=MAX_REQUEST_PLAINTEXT)
    if plaintext is None:
        raise E2EError(
            E2ECheck.REQUEST_PARAMETERS,
            f"the body encodes to at most {MAX_REQUEST_PLAINTEXT} bytes",
        )
    request_id = entropy(REQUEST_ID_SIZE)
    key = RequestKey(entropy(REQUEST_KEY_SIZE))
    envelopes: list[RequestEnvelope] = []
    failed = False
    for static in statics:
        node = noise_key_binding(static)
        try:
            handshake = HandshakeState(
                REQUEST_ENVELOPE_PROTOCOL,
                initiator=True,
                prologue=request_prologue(request_id, model, node),
                remote_static=static,
                entropy=entropy,
            )
            envelopes.append(RequestEnvelope(node, handshake.write_message(key.reveal())))
        except NoiseError:
            failed = True
            break
    # Raised outside the handler: the Noise error's context holds the inputs.
    if failed:
        raise E2EError(E2ECheck.CANDIDATES, "a candidate static key is not an X25519 public key")
    aad = request_associated_data(request_id, model, max_tokens, envelopes)
    cipher = ChaCha20Poly1305(key.derive(REQUEST_KEY_LABEL, request_id))
    ciphertext = cipher.encrypt(_ZERO_NONCE, plaintext, aad)
    sealed = SealedRequest(request_id, model, max_tokens, tuple(envelopes), ciphertext)
    return sealed, key


def open_request(sealed: SealedRequest, *, static: KeyPair) -> tuple[GenerateRequest, RequestKey]:
    """The request ``sealed`` carries for the node holding ``static``, and its
    request key (for :class:`~protocol.e2e.ResponseSealer`).

    Raises :class:`E2EError`: ``request.no_envelope`` (no envelope names this
    node), ``request.bad_envelope``, ``request.bad_ciphertext`` or
    ``request.body_invalid``; never quoting the request.
    """
    if not isinstance(sealed, SealedRequest):
        raise E2EError(E2ECheck.REQUEST_MALFORMED, "not a SealedRequest")
    binding = noise_key_binding(static.public)
    mine: RequestEnvelope | None = None
    for envelope in sealed.envelopes:  # every one compared: no early exit
        if hmac.compare_digest(envelope.node, binding):
            mine = envelope
    if mine is None:
        raise E2EError(E2ECheck.NO_ENVELOPE, "no envelope names this node")
    secret: bytes | None = None
    try:
        handshake = HandshakeState(
            REQUEST_ENVELOPE_PROTOCOL,
            initiator=False,
            prologue=request_prologue(sealed.request_id, sealed.model, binding),
            static=static,
        )
        secret = handshake.read_message(mine.message)
    except NoiseError:
        pass
    if secret is None or len(secret) != REQUEST_KEY_SIZE:
        raise E2EError(E2ECheck.BAD_ENVELOPE, "the envelope does not open in this context")
    key = RequestKey(secret)
    cipher = ChaCha20Poly1305(key.derive(REQUEST_KEY_LABEL, sealed.request_id))
    plaintext: bytes | None = None
    with contextlib.suppress(InvalidTag):
        plaintext = cipher.decrypt(_ZERO_NONCE, sealed.ciphertext, sealed.associated_data())
    if plaintext is None:
        raise E2EError(E2ECheck.BAD_CIPHERTEXT, "the ciphertext does not authenticate")
    body: object = None
    with contextlib.suppress(MessageError):
        body = decode_envelope(plaintext, max_size=MAX_REQUEST_PLAINTEXT).body
    if not isinstance(body, RequestBody):
        raise E2EError(E2ECheck.BODY_INVALID, "the plaintext is not a request body")
    request: GenerateRequest | None = None
    with contextlib.suppress(ValueError):
        request = body.to_request(model=sealed.model, max_tokens=sealed.max_tokens)
    if request is None:
        raise E2EError(E2ECheck.BODY_INVALID, "the body does not make a valid request")
    return request, key
