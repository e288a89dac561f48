"""Key custody on every node: the Noise static key, and model data keys in memory.

Each node's ``key_custody`` actor owns one X25519 static key pair, generated
in memory at boot and never written anywhere. The attestation document binds
``noise_key_binding(static.public)``, so a peer that verified the document
knows that whatever it encrypts to this key is readable only inside this
measured node. Data keys received from the ``keys`` role are kept here, in
memory, and handed to the model loader through :meth:`NodeKeyCustody.data_key_for`.
"""

from __future__ import annotations

from actors.key_custody._envelope import new_static_key, open_envelope
from actors.key_custody._errors import KeyCustodyError, KeyringError
from actors.key_custody._vault import DataKeyGrant, DataKeyRequest, grant_prologue
from actors.seams.random import Random
from actors.seams.tpm import TPM
from protocol.attestation import DocumentKind
from protocol.attestation.binding import noise_key_binding
from protocol.noise import KeyPair
from protocol.sealed_model import DATA_KEY_SIZE, SealedModelHeader, validate_model_id


class NodeKeyCustody:
    """This node's static key and the data keys it was granted."""

    def __init__(self, *, random: Random, static: KeyPair | None = None) -> None:
        self._static = static if static is not None else new_static_key(random.token_bytes)
        self._data_keys: dict[tuple[str, int], bytes] = {}

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

    def attest(self, tpm: TPM, *, nonce: bytes | None, user_data: bytes | None = None) -> bytes:
        """An attestation document over the current PCRs binding this node's key."""
        return tpm.attest(nonce=nonce, public_key=self.key_binding, user_data=user_data)

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

    def accept_grant(self, request: DataKeyRequest, grant: DataKeyGrant) -> int:
        """Open ``grant`` (answering ``request``) and keep the key; returns its version."""
        if grant.model_id != request.model_id or (
            request.key_version is not None and grant.key_version != request.key_version
        ):
            raise KeyCustodyError("grant answers a different model or key version")
        data_key = open_envelope(
            self._static,
            grant_prologue(request.nonce, grant.model_id, grant.key_version),
            grant.envelope,
        )
        if len(data_key) != DATA_KEY_SIZE:
            raise KeyCustodyError("granted data key has the wrong size")
        self._data_keys[(grant.model_id, grant.key_version)] = data_key
        return grant.key_version

    def has_data_key(self, model_id: str, key_version: int) -> bool:
        return (model_id, key_version) in self._data_keys

    def data_key_for(self, header: SealedModelHeader) -> bytes:
        """The data key a sealed file's header names (lookup for the model decryptor)."""
        try:
            return self._data_keys[(header.model_id, header.key_version)]
        except KeyError:
            raise KeyringError(
                f"no data key held for {header.model_id} v{header.key_version}"
            ) from None

    def forget(self, model_id: str, key_version: int) -> None:
        self._data_keys.pop((model_id, key_version), None)
