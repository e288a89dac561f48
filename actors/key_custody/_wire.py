"""Key custody over a secure channel: the keys node's connection handler, and the
two askers' sides (an inference node fetching a data key, a model provider
importing one).

The channel
-----------
A keys node serves the ``keys.*`` messages on a :class:`~actors.channel.SecureServer`
(``nodes.tcp.serve_secure``) with :func:`serve_key_custody` as the handler and
:func:`keys_node_channel_attestation` as the exchange: the keys node proves its
attestation on the channel (on the service's bounded client path, since
anyone may connect), and requires nothing of the peer -- an inference node
proves itself *inside* ``keys.data_key_request``, with a fresh document over
the vault's challenge, and a model provider by the key its import is sealed
with. ``verify_peer`` may admit anyone for the same reason.

Every decoded message is handed to the :class:`~actors.key_custody.KeyCustodyActor`
as ``FromPeer(channel.remote_static, message)``: the peer is the static key
the channel's handshake authenticated, never anything the message says.
Replies carry the request's id. Each connection is bounded: a payload larger
than :data:`MAX_KEY_MESSAGE_BYTES`, more than ``max_requests`` requests, or no
request within ``idle_timeout`` ends it, and anything that is not one
``keys.*`` request is answered ``core.error`` (``BAD_REQUEST``) and ends it
with a :class:`KeyChannelError` naming the check. The server logs that by
type and check and keeps serving everyone else.

The askers
----------
Both sides require the keys node's attestation on the channel before they
send anything (:func:`asker_channel_attestation`, with a
:class:`~actors.attestation.PeerAttestationVerifier` over the cluster's
policy), and take the keys node's static key from the channel they verified
-- never from an argument that could name another:

* :func:`fetch_data_key` (an inference node): ``keys.challenge_request`` ->
  ``keys.challenge`` -> ``keys.data_key_request`` (a fresh document over that
  challenge, binding this node's static key) -> ``keys.data_key_grant``, opened
  with :meth:`NodeKeyCustody.accept_grant` against the channel's verified key;
* :func:`import_data_key` (a model provider): ``keys.data_key_import`` sealed
  from the provider's static key to the channel's verified key ->
  ``keys.data_key_imported``.

A refusal is a :class:`KeyExchangeRefused` naming the check (and the vault's
:class:`~protocol.key_custody.Denial`); nothing of the request or the key is
in it.
"""

from __future__ import annotations

import contextlib
import enum
import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import anyio

from actors.key_custody._actor import CustodyReply, FromPeer
from actors.key_custody._node import NodeKeyCustody
from actors.seams.tpm import TPM
from protocol.attestation import MAX_EVIDENCE_BYTES, DocumentKind
from protocol.key_custody import (
    Challenge,
    ChallengeRequest,
    DataKeyGrant,
    DataKeyImport,
    DataKeyImported,
    DataKeyRequest,
    Denial,
    EnvelopeError,
    KeyCustodyError,
    KeyDenied,
    seal_data_key_import,
)
from protocol.messages import (
    Envelope,
    ErrorCode,
    ErrorReply,
    MessageDecodeError,
    decode_envelope,
)
from protocol.noise import Entropy, KeyPair

if TYPE_CHECKING:
    # Types only: actors.channel imports the attestation room, which imports
    # this package (for NodeKeyCustody); the two functions that build a
    # ChannelAttestation import it when called.
    from actors import ActorRef
    from actors.attestation import Attest, VerifyAttestation
    from actors.channel import ChannelAttestation, ConnectionHandler, SecureChannel

#: The largest message either side of a key-custody channel sends: a data key
#: request is an attestation document plus some 200 bytes. Pass it as the
#: server's and the askers' ``max_payload``, so the session refuses a larger
#: payload before reassembling it.
MAX_KEY_MESSAGE_BYTES: Final = MAX_EVIDENCE_BYTES + 1024
#: Requests one connection may make: a fetch takes two, an import one.
DEFAULT_MAX_REQUESTS: Final = 8
#: How long a connection may stay without sending its next request.
DEFAULT_IDLE_TIMEOUT_S: Final = 10.0
#: How long the vault may take to answer one request (TPM work included).
DEFAULT_CUSTODY_TIMEOUT_S: Final = 30.0
#: How long an asker waits for each answer.
DEFAULT_ANSWER_TIMEOUT_S: Final = 30.0

#: Hands a request to the key-custody actor and returns its answer.
AskCustody = Callable[[FromPeer], Awaitable[object]]


class KeyChannelCheck(enum.StrEnum):
    """What a key-custody channel refused (:attr:`KeyChannelError.check`)."""

    #: The payload is not a valid envelope (or is larger than the bound).
    MALFORMED = "keys_channel.malformed"
    #: A valid message, but not a ``keys.*`` request.
    UNEXPECTED = "keys_channel.unexpected_message"
    #: The connection made its maximum of requests.
    TOO_MANY_REQUESTS = "keys_channel.too_many_requests"
    #: No request arrived within the idle deadline.
    IDLE = "keys_channel.idle"
    #: The key-custody actor did not answer.
    CUSTODY_FAILED = "keys_channel.custody_failed"


class KeyChannelError(KeyCustodyError):
    """A key-custody connection ended on bad input; ``check`` names why."""

    def __init__(self, check: KeyChannelCheck) -> None:
        super().__init__(check.value)
        self.check = check


class KeyExchangeCheck(enum.StrEnum):
    """Why a fetch or an import failed (:attr:`KeyExchangeRefused.check`)."""

    #: The channel did not verify the keys node's attestation.
    UNATTESTED_KEYS_NODE = "keys_exchange.unattested_keys_node"
    #: The keys node answered ``keys.denied`` (see ``denial``).
    DENIED = "keys_exchange.denied"
    #: The keys node answered ``core.error``.
    ERROR = "keys_exchange.error"
    #: The keys node answered with something else, or a reply to another request.
    UNEXPECTED = "keys_exchange.unexpected_answer"
    #: The grant did not open (not sealed by the keys node's attested key, or
    #: not for this request).
    BAD_GRANT = "keys_exchange.bad_grant"
    #: The keys node closed the channel without answering.
    NO_ANSWER = "keys_exchange.no_answer"


class KeyExchangeRefused(KeyCustodyError):
    """A data key fetch or import did not succeed. ``check`` names the step;
    ``denial`` (and ``attestation_check``) the vault's reason, for ``DENIED``."""

    def __init__(
        self,
        check: KeyExchangeCheck,
        *,
        denial: Denial | None = None,
        attestation_check: str | None = None,
    ) -> None:
        detail = check.value if denial is None else f"{check.value}: {denial.value}"
        super().__init__(detail)
        self.check = check
        self.denial = denial
        self.attestation_check = attestation_check


# -- the keys node ----------------------------------------------------------------------


def keys_node_channel_attestation(prove: Attest) -> ChannelAttestation:
    """The keys node's side of the exchange: it proves (``prove`` should be
    ``AttestationService.attest_client_channel``: anyone may connect), and
    requires nothing on the channel (askers prove themselves in the messages)."""
    from actors.channel import NOT_ATTESTED, ChannelAttestation

    return ChannelAttestation(prove=prove, require=NOT_ATTESTED)


def custody_actor(ref: ActorRef, *, timeout: float = DEFAULT_CUSTODY_TIMEOUT_S) -> AskCustody:
    """Asks the :class:`~actors.key_custody.KeyCustodyActor` at ``ref``."""

    async def ask(command: FromPeer) -> object:
        return await ref.ask(command, timeout)

    return ask


def serve_key_custody(
    custody: AskCustody,
    *,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S,
    max_message_bytes: int = MAX_KEY_MESSAGE_BYTES,
) -> ConnectionHandler:
    """A :class:`~actors.channel.SecureServer` handler serving ``keys.*``
    requests to ``custody`` (:func:`custody_actor`); see the module docstring."""
    if max_requests < 1 or not idle_timeout > 0 or max_message_bytes < 1:
        raise ValueError("a key-custody channel needs positive bounds")

    async def handle(channel: SecureChannel) -> None:
        for _ in range(max_requests):
            payload: bytes | None = None
            with anyio.move_on_after(idle_timeout):
                try:
                    payload = await channel.receive()
                except anyio.EndOfStream:
                    return  # the asker is done
            if payload is None:
                raise KeyChannelError(KeyChannelCheck.IDLE)
            request, request_id = _decode_request(payload, max_message_bytes)
            if request is None:
                await channel.send_message(
                    Envelope.wrap(
                        ErrorReply(ErrorCode.BAD_REQUEST, False), request_id=request_id or 0
                    )
                )
                raise KeyChannelError(
                    KeyChannelCheck.MALFORMED if request_id is None else KeyChannelCheck.UNEXPECTED
                )
            reply = await _answer(custody, FromPeer(channel.remote_static, request))
            await channel.send_message(Envelope.wrap(reply, request_id=request_id or 0))
            if isinstance(reply, ErrorReply) and reply.code is ErrorCode.INTERNAL:
                raise KeyChannelError(KeyChannelCheck.CUSTODY_FAILED)
        raise KeyChannelError(KeyChannelCheck.TOO_MANY_REQUESTS)

    return handle


_REQUESTS: Final = (ChallengeRequest, DataKeyRequest, DataKeyImport)
_REPLIES: Final = (Challenge, DataKeyGrant, DataKeyImported, KeyDenied, ErrorReply)


def _decode_request(
    payload: bytes, max_message_bytes: int
) -> tuple[ChallengeRequest | DataKeyRequest | DataKeyImport | None, int | None]:
    """The request and its id; ``(None, None)`` if the payload is no envelope,
    ``(None, id)`` if it is a message but no key-custody request."""
    if len(payload) > max_message_bytes:
        return None, None
    envelope: Envelope | None = None
    # The caller's check is all that is needed; nothing of the input rides along.
    with contextlib.suppress(MessageDecodeError):
        envelope = decode_envelope(payload, max_size=max_message_bytes)
    if envelope is None:
        return None, None
    body = envelope.body
    if not isinstance(body, _REQUESTS):
        return None, envelope.request_id
    return body, envelope.request_id


async def _answer(custody: AskCustody, command: FromPeer) -> CustodyReply:
    failed = False
    reply: object = None
    try:
        reply = await custody(command)
    except Exception:
        # The actor crashed or did not answer in time: its supervisor reports
        # it; the asker is told to retry.
        failed = True
    if failed or not isinstance(reply, _REPLIES):
        return ErrorReply(ErrorCode.INTERNAL, True)
    return reply


# -- the askers ---------------------------------------------------------------------------


def asker_channel_attestation(
    verify_keys_node: VerifyAttestation, prove: Attest | None = None
) -> ChannelAttestation:
    """An asker's side of the exchange: the keys node must prove itself
    (``verify_keys_node``: a :class:`~actors.attestation.PeerAttestationVerifier`
    over the cluster's policy); the asker proves nothing on the channel (an
    inference node proves itself in its data key request) unless ``prove``."""
    from actors.channel import NOT_ATTESTED, ChannelAttestation

    return ChannelAttestation(
        prove=prove if prove is not None else NOT_ATTESTED, require=verify_keys_node
    )


def _verified_keys_node(channel: SecureChannel) -> bytes:
    """The keys node's static key, if the channel verified its attestation."""
    if channel.peer_evidence is None:
        raise KeyExchangeRefused(KeyExchangeCheck.UNATTESTED_KEYS_NODE)
    return channel.remote_static


async def _exchange(
    channel: SecureChannel, request: object, request_id: int, timeout: float
) -> object:
    await channel.send_message(Envelope.wrap(request, request_id=request_id))
    envelope: Envelope | None = None
    with anyio.fail_after(timeout):
        with contextlib.suppress(anyio.EndOfStream):
            envelope = await channel.receive_message()
    if envelope is None:
        raise KeyExchangeRefused(KeyExchangeCheck.NO_ANSWER)
    if envelope.request_id != request_id:
        raise KeyExchangeRefused(KeyExchangeCheck.UNEXPECTED)
    body = envelope.body
    if isinstance(body, KeyDenied):
        raise KeyExchangeRefused(
            KeyExchangeCheck.DENIED, denial=body.denial, attestation_check=body.attestation_check
        )
    if isinstance(body, ErrorReply):
        raise KeyExchangeRefused(KeyExchangeCheck.ERROR)
    return body


async def fetch_data_key(
    channel: SecureChannel,
    custody: NodeKeyCustody,
    tpm: TPM,
    model_id: str,
    *,
    key_version: int | None = None,
    evidence_kind: DocumentKind = DocumentKind.NITRO,
    run_blocking: Callable[[Callable[[], DataKeyRequest]], Awaitable[DataKeyRequest]] | None = None,
    timeout: float = DEFAULT_ANSWER_TIMEOUT_S,
) -> int:
    """Fetch ``model_id``'s data key from the keys node at the other end of
    ``channel`` into ``custody``; returns the key version (see the module
    docstring). ``channel`` must have verified the keys node's attestation
    (:func:`asker_channel_attestation`), or nothing is sent. ``run_blocking``
    runs the TPM's attestation (a worker thread on a node; inline if None)."""
    keys_node_static = _verified_keys_node(channel)
    challenge = await _exchange(channel, ChallengeRequest(), 1, timeout)
    if not isinstance(challenge, Challenge):
        raise KeyExchangeRefused(KeyExchangeCheck.UNEXPECTED)
    make_request = functools.partial(
        custody.data_key_request,
        tpm,
        challenge=challenge.nonce,
        model_id=model_id,
        key_version=key_version,
        evidence_kind=evidence_kind,
    )
    request = make_request() if run_blocking is None else await run_blocking(make_request)
    grant = await _exchange(channel, request, 2, timeout)
    if not isinstance(grant, DataKeyGrant):
        raise KeyExchangeRefused(KeyExchangeCheck.UNEXPECTED)
    version: int | None = None
    # Named by the check below; the envelope error holds nothing more useful.
    with contextlib.suppress(EnvelopeError):
        version = custody.accept_grant(request, grant, keys_node_static=keys_node_static)
    if version is None:
        raise KeyExchangeRefused(KeyExchangeCheck.BAD_GRANT)
    return version


async def import_data_key(
    channel: SecureChannel,
    provider: KeyPair,
    model_id: str,
    data_key: bytes,
    *,
    key_version: int,
    entropy: Entropy,
    timeout: float = DEFAULT_ANSWER_TIMEOUT_S,
) -> int:
    """Import ``data_key`` as ``key_version`` of ``model_id`` into the keys
    node at the other end of ``channel``, sealed from ``provider`` (the static
    key the release names for the model) to the key the channel verified;
    returns the stored version. ``entropy`` is the Random seam's ``token_bytes``."""
    keys_node_static = _verified_keys_node(channel)
    sealed = seal_data_key_import(
        model_id, data_key, keys_node_static, entropy, provider=provider, key_version=key_version
    )
    imported = await _exchange(channel, sealed, 1, timeout)
    if not isinstance(imported, DataKeyImported) or (
        imported.model_id != model_id or imported.key_version != key_version
    ):
        raise KeyExchangeRefused(KeyExchangeCheck.UNEXPECTED)
    return imported.key_version
