"""Key custody on every node: the Noise static key, and model data keys in memory.

Each node's ``key_custody`` actor owns one X25519 static key pair, generated
in memory when the custody is created (measured boot creates it, right before
the node's first attestation) and never written anywhere; there is no way to
hand a custody a key from outside. Every attestation document of the node
binds ``noise_key_binding(static.public)`` (:meth:`NodeKeyCustody.attest`), so
a peer that verified the document knows that whatever it encrypts to this key
is readable only inside this measured node. On a ``keys`` node the
:class:`~actors.key_custody.KeyVault` uses this same key for imports and
grants: one key per node, the attested one.

An inference node's custody also holds its **receipt key**: an Ed25519 key
pair born in memory with the custody (``receipt_key=True``) and never
written. Its binding, :func:`protocol.e2e.receipt_key_binding` of the public
key, is the ``user_data`` of every document the node makes unless a caller
names other user data, so a client that verified a node's document knows
which key signs that node's receipts; the private key signs them here and
never leaves (:meth:`NodeKeyCustody.sign_receipt`).

Data keys received from the ``keys`` role are kept here, in memory, and handed
to the model loader through :meth:`NodeKeyCustody.data_key_for`. A grant is
accepted only if it was sealed by the keys node's static key -- the one the
caller verified in the keys node's attestation document.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from actors.seams.random import Random
from actors.seams.tpm import TPM
from protocol.attestation import DocumentKind
from protocol.attestation.binding import noise_key_binding
from protocol.e2e import Receipt, receipt_key_binding, sign_receipt
from protocol.key_custody import (
    DataKeyGrant,
    DataKeyRequest,
    Denial,
    EnvelopeError,
    KeyringError,
    grant_prologue,
    new_static_key,
    open_envelope,
)
from protocol.noise import KeyPair
from protocol.sealed_model import DATA_KEY_SIZE, SealedModelHeader, validate_model_id


class NodeKeyCustody:
    """This node's static key and the data keys it was granted."""

    def __init__(self, *, random: Random, receipt_key: bool = False) -> None:
        self._static = new_static_key(random.token_bytes)
        self._data_keys: dict[tuple[str, int], bytes] = {}
        self._receipt_key: Ed25519PrivateKey | None = None
        self._receipt_public: bytes | None = None
        if receipt_key:
            self._receipt_key = Ed25519PrivateKey.from_private_bytes(random.token_bytes(32))
            self._receipt_public = self._receipt_key.public_key().public_bytes(
                Encoding.Raw, PublicFormat.Raw
            )

    def __repr__(self) -> str:
        return f"NodeKeyCustody(keys={len(self._data_keys)})"

    @property
    def static(self) -> KeyPair:
        return self._static

    @property
    def static_public(self) -> bytes:
        return self._static.public

    @property
    def key_binding(self) -> bytes:
        """The value this node's attestation documents carry as ``public_key``."""
        return noise_key_binding(self._static.public)

    @property
    def receipt_public(self) -> bytes | None:
        """The receipt key's raw Ed25519 public key (``None``: no receipt key)."""
        return self._receipt_public

    @property
    def receipt_key_binding(self) -> bytes | None:
        """What this node's documents carry as ``user_data`` by default."""
        if self._receipt_public is None:
            return None
        return receipt_key_binding(self._receipt_public)

    def attest(self, tpm: TPM, *, nonce: bytes | None, user_data: bytes | None = None) -> bytes:
        """An attestation document over the current PCRs binding this node's key.

        Its ``user_data`` is ``user_data`` when given (the ingress binds its
        TLS key there), else the receipt key's binding on a node that holds
        one, so node links, key requests and clients' nonces all see it."""
        if user_data is None:
            user_data = self.receipt_key_binding
        return tpm.attest(nonce=nonce, public_key=self.key_binding, user_data=user_data)

    def sign_receipt(
        self,
        *,
        request_id: bytes,
        request_sha256: bytes,
        response_sha256: bytes,
        model: str,
        model_sha384: bytes,
        release_version: int,
    ) -> Receipt:
        """A receipt (:func:`protocol.e2e.sign_receipt`) signed by this node's
        receipt key, which never leaves the custody."""
        if self._receipt_key is None:
            raise KeyringError("this node holds no receipt key")
        return sign_receipt(
            self._receipt_key,
            request_id=request_id,
            request_sha256=request_sha256,
            response_sha256=response_sha256,
            model=model,
            model_sha384=model_sha384,
            release_version=release_version,
        )

    def data_key_request(
        self,
        tpm: TPM,
        *,
        challenge: bytes,
        model_id: str,
        key_version: int | None = None,
        evidence_kind: DocumentKind = DocumentKind.NITRO,
    ) -> DataKeyRequest:
        """A request for ``model_id``'s data key, attested fresh over ``challenge``."""
        validate_model_id(model_id)
        return DataKeyRequest(
            model_id=model_id,
            key_version=key_version,
            nonce=challenge,
            evidence=self.attest(tpm, nonce=challenge),
            static_public=self._static.public,
            evidence_kind=evidence_kind,
        )

    def accept_grant(
        self, request: DataKeyRequest, grant: DataKeyGrant, *, keys_node_static: bytes
    ) -> int:
        """Open ``grant`` (answering ``request``) and keep the key; returns its version.

        ``keys_node_static`` is the keys node's Noise static public key as the
        caller verified it: the key its attestation document binds (and the
        channel the grant came over authenticated). A grant sealed by any other
        key is refused with :attr:`Denial.UNAUTHENTICATED_SENDER`.
        """
        if grant.model_id != request.model_id or (
            request.key_version is not None and grant.key_version != request.key_version
        ):
            raise EnvelopeError(Denial.MALFORMED, "grant answers a different model or key version")
        if type(keys_node_static) is not bytes or len(keys_node_static) != 32:
            raise EnvelopeError(Denial.MALFORMED, "the keys node's static key must be 32 bytes")
        data_key = open_envelope(
            self._static,
            keys_node_static,
            grant_prologue(request.nonce, grant.model_id, grant.key_version),
            grant.envelope,
        )
        if len(data_key) != DATA_KEY_SIZE:
            raise EnvelopeError(Denial.MALFORMED, "granted data key has the wrong size")
        self._data_keys[(grant.model_id, grant.key_version)] = data_key
        return grant.key_version

    def has_data_key(self, model_id: str, key_version: int) -> bool:
        return (model_id, key_version) in self._data_keys

    def data_key_for(self, header: SealedModelHeader) -> bytes:
        """The data key a sealed file's header names (lookup for the model decryptor)."""
        data_key = self._data_keys.get((header.model_id, header.key_version))
        if data_key is None:
            raise KeyringError(f"no data key held for {header.model_id} v{header.key_version}")
        return data_key

    def forget(self, model_id: str, key_version: int) -> None:
        self._data_keys.pop((model_id, key_version), None)
