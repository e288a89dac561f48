"""The model provider's part, done by the dev cluster: seal the weights, import their key.

1. A fresh data key; the GGUF sealed under it into ``models/<id>.sealed``
   (streamed, AEAD chunks), key version 1 (every start makes a new keys node
   with an empty keyring).
2. A secure channel to the keys node's key-custody port. The dev cluster
   proves nothing (``NOT_ATTESTED``: it is the model provider, no node); the
   keys node must prove its attestation on this very channel: a document
   chaining to the pinned (simulated) root, over the handshake's nonce,
   binding the handshake's static key, showing the PCRs of a node of the
   verified release (:func:`~protocol.measurement.cluster_policy`, platform
   and application registers together). Nothing is sent before that passed.
3. The data key in a Noise ``K`` envelope from the provider's static key --
   the key the release names for this model, so the keys node accepts it and
   nobody else's -- to the keys node's attested static key
   (``keys.data_key_import``), answered by ``keys.data_key_imported`` with
   the stored version, or a refusal, which is an error naming the check.

The data key lives only in this process's memory, and only until it is sent.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Final

import anyio
import anyio.to_thread

from actors.attestation import PeerAttestationVerifier
from actors.channel import NODE_LINK_PROTOCOL, SecureChannel, connect_secure
from actors.key_custody import (
    MAX_KEY_MESSAGE_BYTES,
    KeyExchangeRefused,
    asker_channel_attestation,
    import_data_key,
)
from nodes.clock import TrioClock
from nodes.devcluster._errors import DevClusterCheck, DevClusterError
from nodes.model_store import SealedModelInfo, seal_model_file
from nodes.random import SystemRandom
from protocol.attestation import (
    AttestationError,
    AttestationVerifier,
    NitroAuthenticator,
    TrustAnchor,
)
from protocol.framing import PeerRejected, SessionError
from protocol.measurement import cluster_policy
from protocol.noise import KeyPair, NoiseProtocol
from protocol.release import VerifiedRelease
from protocol.sealed_model import DATA_KEY_SIZE

_NOISE: Final = NoiseProtocol.from_name(NODE_LINK_PROTOCOL)
#: The dev cluster's first data key version for its one model.
KEY_VERSION: Final = 1
#: How long the key import may take once the keys node is ready.
IMPORT_TIMEOUT_S: Final = 60.0


async def _key_bound_by_attestation(remote_static: bytes, payload: bytes) -> None:
    """The keys node's key is born at its boot: its attestation, checked right
    after the handshake, is what binds it (never a key known in advance)."""


async def connect_to_keys_node(
    host: str,
    port: int,
    *,
    release: VerifiedRelease,
    attestation_root: TrustAnchor,
    random: SystemRandom,
) -> SecureChannel:
    """A channel to the keys node at ``host:port``, open only once its attestation passed."""
    check = PeerAttestationVerifier(
        verifier=AttestationVerifier([NitroAuthenticator(attestation_root)]),
        policy=cluster_policy([release]),
        clock=TrioClock(),
    )
    stream = await anyio.connect_tcp(host, port)
    return await connect_secure(
        stream,
        # This channel's own key, for this one channel: the import is
        # authenticated by the provider's key inside it, not by the channel.
        static=KeyPair.generate(_NOISE.dh, random.token_bytes),
        entropy=random.token_bytes,
        verify_peer=_key_bound_by_attestation,
        attestation=asker_channel_attestation(verify_keys_node=check),
        max_payload=MAX_KEY_MESSAGE_BYTES,
    )


async def provision_model(
    *,
    model: Path,
    sealed: Path,
    model_id: str,
    provider: KeyPair,
    keys_host: str,
    keys_port: int,
    release: VerifiedRelease,
    attestation_root: TrustAnchor,
    random: SystemRandom,
) -> SealedModelInfo:
    """Seal ``model`` into ``sealed`` and import its data key into the keys node
    (module docstring); the sealed file's manifest."""
    data_key = random.token_bytes(DATA_KEY_SIZE)
    sealed.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    seal = functools.partial(
        seal_model_file,
        model,
        sealed,
        model_id=model_id,
        key_version=KEY_VERSION,
        data_key=data_key,
        random=random,
    )
    info = await anyio.to_thread.run_sync(seal)
    del seal
    with anyio.fail_after(IMPORT_TIMEOUT_S):
        refusal: str | None = None
        try:
            channel = await connect_to_keys_node(
                keys_host,
                keys_port,
                release=release,
                attestation_root=attestation_root,
                random=random,
            )
        except PeerRejected as rejected:
            cause = rejected.__cause__
            refusal = (
                f"its attestation was refused ({cause.check.value})"
                if isinstance(cause, AttestationError)
                else f"it was refused ({type(cause).__name__})"
            )
        except (SessionError, OSError) as failed:
            refusal = f"no channel to it ({type(failed).__name__})"
        if refusal is not None:
            # Outside the handler: nothing of the exchange rides along.
            raise DevClusterError(
                DevClusterCheck.KEY_IMPORT,
                f"the model's data key was not sent to the keys node: {refusal}",
            )
        denied: str | None = None
        async with channel:
            try:
                stored = await import_data_key(
                    channel,
                    provider,
                    model_id,
                    data_key,
                    key_version=KEY_VERSION,
                    entropy=random.token_bytes,
                )
            except KeyExchangeRefused as refused:
                denied = str(refused) + (
                    f" ({refused.attestation_check})" if refused.attestation_check else ""
                )
        if denied is not None:
            raise DevClusterError(
                DevClusterCheck.KEY_IMPORT, f"the keys node refused the model's data key: {denied}"
            )
    del data_key
    if stored != KEY_VERSION:
        raise DevClusterError(
            DevClusterCheck.KEY_IMPORT,
            f"the keys node stored key version {stored}, not {KEY_VERSION}",
        )
    return info
