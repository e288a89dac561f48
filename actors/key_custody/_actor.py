"""The key-custody actor of a ``keys`` node: a :class:`KeyVault` serving the
``keys.*`` messages under supervision.

Who is asking
-------------
A challenge is bound to the peer that asked, and only that peer may spend it,
so the actor must know who asked -- and that must not be something the asker
says. No message carries it: the actor takes :class:`FromPeer` commands, local
values that never go on the wire, built by whoever received the message on an
authenticated channel (the node-link or secure-channel adapter), which fills
in ``peer`` from the channel itself: the remote static key its Noise XX
handshake authenticated, the one whose attestation the channel exchange
verified (``actors.channel``). A peer can name itself only by holding that key.

What it answers
---------------
* :class:`~protocol.key_custody.ChallengeRequest` -> ``Challenge`` (or
  ``KeyDenied`` while the used-challenge memory is full);
* :class:`~protocol.key_custody.DataKeyRequest` -> ``DataKeyGrant`` or
  ``KeyDenied`` naming the failed check (with the verifier's step for an
  attestation refusal). Never a key in the clear, never the request quoted;
* :class:`~protocol.key_custody.DataKeyImport` -> ``DataKeyImported``,
  ``KeyDenied`` (no provider key, another sender), or
  ``ErrorReply(BAD_REQUEST)`` when an authentic import does not fit the
  keyring (a version the model has or had); nothing is stored then.
  Its authenticity is the envelope's sender, not the channel's peer.

Supervision
-----------
State does not survive a restart: each start opens the vault afresh from the
stored keyring (``open_vault``, run through ``run_blocking`` since it talks to
the TPM), which is also the recovery an interrupted commit needs
(:class:`CommitInterrupted` is raised on, so the supervisor restarts the
actor). A restarted vault draws a new challenge key, so challenges issued
before it are refused and askers ask again. Anything unexpected -- a TPM
command failing in a way the vault does not turn into a denial -- crashes the
actor; the crash report names the exception's type and location only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from actors import Actor, Context
from actors.key_custody._errors import CommitInterrupted, KeyReleaseDenied
from actors.key_custody._vault import KeyVault
from protocol.key_custody import (
    Challenge,
    ChallengeRequest,
    DataKeyGrant,
    DataKeyImport,
    DataKeyImported,
    DataKeyRequest,
    EnvelopeError,
    KeyDenied,
    KeyringError,
)
from protocol.messages import ErrorCode, ErrorReply
from protocol.sealed_model import SealedModelFormatError

if TYPE_CHECKING:
    # Only a type here; importing actors.attestation at run time would be a
    # cycle (its service holds a NodeKeyCustody).
    from actors.attestation import RunBlocking

#: Opens the vault from the stored keyring (blocking: TPM commands).
OpenVault: TypeAlias = Callable[[], KeyVault]
#: What the actor answers a :class:`FromPeer` with.
CustodyReply: TypeAlias = Challenge | DataKeyGrant | DataKeyImported | KeyDenied | ErrorReply
#: The messages a peer may send the key-custody actor.
CustodyRequest: TypeAlias = ChallengeRequest | DataKeyRequest | DataKeyImport


@dataclass(frozen=True, slots=True)
class FromPeer:
    """``message`` as it arrived on an authenticated channel from ``peer``.

    A local command, never on the wire: ``peer`` is the channel's remote
    static key (32 bytes), filled in by the adapter that received ``message``
    -- never read from the message. See the module docstring.
    """

    peer: bytes = field(repr=False)
    message: CustodyRequest = field(repr=False)


class KeyCustodyActor(Actor):
    """A keys node's vault, serving :class:`FromPeer` commands (see the module
    docstring). ``run_blocking`` runs the vault's TPM work in a worker thread
    (``anyio.to_thread.run_sync`` on a node, :func:`actors.attestation.run_inline`
    in the simulator)."""

    def __init__(self, open_vault: OpenVault, run_blocking: RunBlocking) -> None:
        self._open_vault = open_vault
        self._run_blocking = run_blocking
        self._vault: KeyVault | None = None

    async def started(self, ctx: Context) -> None:
        self._vault = await self._run_blocking(self._open_vault)

    async def receive(self, ctx: Context, message: object) -> CustodyReply:
        vault = self._vault
        if vault is None or not isinstance(message, FromPeer):
            return ErrorReply(ErrorCode.BAD_REQUEST, False)
        request, peer = message.message, message.peer
        if isinstance(request, ChallengeRequest):
            return self._challenge(vault, peer)
        if isinstance(request, DataKeyRequest):
            return await self._release(vault, request, peer)
        if isinstance(request, DataKeyImport):
            return await self._import(vault, request)
        return ErrorReply(ErrorCode.BAD_REQUEST, False)

    @staticmethod
    def _challenge(vault: KeyVault, peer: bytes) -> Challenge | KeyDenied:
        # No TPM command: the nonce is the vault's HMAC, computed here.
        try:
            return Challenge(vault.issue_challenge(peer))
        except KeyReleaseDenied as denied:
            return KeyDenied(denied.denial)

    async def _release(
        self, vault: KeyVault, request: DataKeyRequest, peer: bytes
    ) -> DataKeyGrant | KeyDenied:
        try:
            return await self._run_blocking(
                functools.partial(vault.release_data_key, request, peer=peer)
            )
        except KeyReleaseDenied as denied:
            return KeyDenied(denied.denial, denied.attestation_check)

    async def _import(
        self, vault: KeyVault, request: DataKeyImport
    ) -> DataKeyImported | KeyDenied | ErrorReply:
        try:
            version = await self._run_blocking(functools.partial(vault.import_data_key, request))
        except EnvelopeError as refused:
            return KeyDenied(refused.denial)
        except CommitInterrupted:
            # The vault takes no change until reopened: the restart does that.
            raise
        except (KeyringError, SealedModelFormatError):
            return ErrorReply(ErrorCode.BAD_REQUEST, False)
        return DataKeyImported(request.model_id, version)
