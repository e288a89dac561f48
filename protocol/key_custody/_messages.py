"""The key-custody messages (registered in protocol.messages), and the
``.import`` file a model provider hands a keys node.

A node asking a keys node for a model's data key:

1. :class:`ChallengeRequest` -> :class:`Challenge`: a single-use nonce bound
   to the asking peer. Who asks is never a field: it is the authenticated
   channel's remote static key, which whoever received the message (a link
   adapter) hands the key-custody actor beside it;
2. :class:`DataKeyRequest` (a fresh attestation document over that nonce,
   binding the requester's key) -> :class:`DataKeyGrant` (the data key in a
   Noise ``K`` envelope only the requester's attested key opens) or
   :class:`KeyDenied` naming the failed check.

A model provider's :class:`DataKeyImport` -> :class:`DataKeyImported` or
:class:`KeyDenied`. No reply carries a key in the clear or quotes a request.

Field bounds are the wire's; the vault checks exact sizes itself (a wrong
size is :attr:`Denial.MALFORMED`), so a request built in process is held to
the same rules as one decoded from the wire.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Annotated, Final

import msgpack

from protocol.attestation import MAX_EVIDENCE_BYTES, DocumentKind
from protocol.attestation.binding import noise_key_binding
from protocol.key_custody._envelope import import_prologue, seal_envelope
from protocol.key_custody._errors import Denial, KeyringError
from protocol.messages import IntRange, MaxLen, message
from protocol.noise import Entropy, KeyPair
from protocol.sealed_model import (
    DATA_KEY_SIZE,
    MAX_MODEL_ID_LENGTH,
    SealedModelFormatError,
    validate_model_id,
)

#: A key-release challenge: issue time || random || tag (see actors.key_custody).
CHALLENGE_SIZE: Final = 32
#: A Noise static public key (X25519).
STATIC_KEY_SIZE: Final = 32
#: A sealed data key: the ``K`` message (ephemeral key, then the 32-byte key
#: and its tag) is 80 bytes; the bound leaves room, never for a document.
MAX_ENVELOPE_BYTES: Final = 1024
#: The ``.import`` file's format (2: the envelope is a Noise ``K`` message from
#: the model provider's key; 1 was an anonymous ``N`` message nothing accepts).
IMPORT_FORMAT_VERSION: Final = 2
_MAX_IMPORT_FILE_BYTES: Final = 4096

ModelId = Annotated[str, MaxLen(MAX_MODEL_ID_LENGTH)]
#: Data key versions are 1 .. 2**32 - 1 (0 is never a key).
KeyVersion = Annotated[int, IntRange(1, 0xFFFF_FFFF)]
#: A nonce field: the bound, not the exact size (which the vault checks).
Nonce = Annotated[bytes, MaxLen(CHALLENGE_SIZE)]
StaticKey = Annotated[bytes, MaxLen(STATIC_KEY_SIZE)]
Envelope = Annotated[bytes, MaxLen(MAX_ENVELOPE_BYTES)]


@message("keys.challenge_request")
@dataclasses.dataclass(frozen=True, slots=True)
class ChallengeRequest:
    """Ask the keys node for a nonce to attest over, for the peer asking."""


@message("keys.challenge")
@dataclasses.dataclass(frozen=True, slots=True)
class Challenge:
    """A single-use nonce bound to the peer that asked (valid only from it)."""

    nonce: Nonce


@message("keys.data_key_request")
@dataclasses.dataclass(frozen=True, slots=True)
class DataKeyRequest:
    """A peer asks for a model's data key, proving who it is.

    ``key_version`` ``None`` asks for the active version. ``evidence`` was
    produced for ``nonce`` (a :class:`Challenge`) and binds
    ``noise_key_binding(static_public)``.
    """

    model_id: ModelId
    key_version: KeyVersion | None
    nonce: Nonce
    evidence: Annotated[bytes, MaxLen(MAX_EVIDENCE_BYTES)]
    static_public: StaticKey
    evidence_kind: DocumentKind = DocumentKind.NITRO


@message("keys.data_key_grant")
@dataclasses.dataclass(frozen=True, slots=True)
class DataKeyGrant:
    """A data key in an envelope only the requester's attested key opens."""

    model_id: ModelId
    key_version: KeyVersion
    envelope: Envelope


@message("keys.data_key_import")
@dataclasses.dataclass(frozen=True, slots=True)
class DataKeyImport:
    """A model provider's new data key, in an envelope from the provider's static
    key to the keys node's attested key.

    ``key_version`` is the version the provider sealed the model file under.

    Besides its message form, an import has a file form (:meth:`encode`,
    :meth:`decode`: ``[2, model id, key version, envelope]``), which
    ``mantle-node model add`` writes and providers hand over out of band; it
    stays as it was, so files already written keep importing.
    """

    model_id: ModelId
    key_version: KeyVersion
    envelope: Envelope

    def encode(self) -> bytes:
        """The ``.import`` file."""
        encoded: bytes = msgpack.packb(
            [IMPORT_FORMAT_VERSION, self.model_id, self.key_version, self.envelope],
            use_bin_type=True,
        )
        return encoded

    @classmethod
    def decode(cls, data: bytes) -> DataKeyImport:
        """Strictly parse an ``.import`` file; :class:`KeyringError` names what is wrong."""
        if type(data) is not bytes:
            raise KeyringError("a data key import is bytes")
        if len(data) > _MAX_IMPORT_FILE_BYTES:
            raise KeyringError("data key import is too large")
        failure: str | None = None
        try:
            item = msgpack.unpackb(
                data, raw=False, strict_map_key=True, max_bin_len=_MAX_IMPORT_FILE_BYTES
            )
        except Exception as error:  # msgpack raises several unrelated types
            failure = type(error).__name__
        if failure is not None:
            # Outside the handler: msgpack's ExtraData holds the decoded import.
            raise KeyringError(f"data key import is not msgpack ({failure})")
        if not isinstance(item, list) or len(item) != 4 or item[0] != IMPORT_FORMAT_VERSION:
            raise KeyringError("data key import has the wrong shape or version")
        _, model_id, key_version, envelope = item
        if not isinstance(model_id, str) or type(envelope) is not bytes:
            raise KeyringError("data key import fields have the wrong types")
        if type(key_version) is not int or not 1 <= key_version < 1 << 32:
            raise KeyringError("data key import version out of range")
        # A malformed id must fail as this module's error, not the sealed-model one.
        with contextlib.suppress(SealedModelFormatError):
            return cls(validate_model_id(model_id), key_version, envelope)
        raise KeyringError("data key import names a malformed model id")


@message("keys.data_key_imported")
@dataclasses.dataclass(frozen=True, slots=True)
class DataKeyImported:
    """The import is stored as ``key_version`` of ``model_id``."""

    model_id: ModelId
    key_version: KeyVersion


@message("keys.denied")
@dataclasses.dataclass(frozen=True, slots=True)
class KeyDenied:
    """Key custody refused a request; ``denial`` names the failed check and
    ``attestation_check`` the verifier's failed step for :attr:`Denial.ATTESTATION`."""

    denial: Denial
    attestation_check: Annotated[str, MaxLen(64)] | None = None


def seal_data_key_import(
    model_id: str,
    data_key: bytes,
    keys_node_static_public: bytes,
    entropy: Entropy,
    *,
    provider: KeyPair,
    key_version: int = 1,
) -> DataKeyImport:
    """The model provider's import envelope, from ``provider`` (the static key the
    release names for ``model_id``) to a keys node whose attested key is given.

    The caller must have verified the keys node's attestation document, with
    ``noise_key_binding(keys_node_static_public)`` as its bound key.
    ``entropy`` is the Random seam's ``token_bytes`` (the envelope's ephemeral key).
    """
    validate_model_id(model_id)
    if len(data_key) != DATA_KEY_SIZE:
        raise KeyringError("a data key is 32 bytes")
    prologue = import_prologue(model_id, key_version, noise_key_binding(keys_node_static_public))
    envelope = seal_envelope(provider, keys_node_static_public, prologue, data_key, entropy)
    return DataKeyImport(model_id=model_id, key_version=key_version, envelope=envelope)
