"""Key custody (ARCHITECTURE §4): the node's Noise static key on every node,
and on ``keys`` nodes the model KEKs sealed to the TPM and the release of data
keys to attested peers only."""

from actors.key_custody._envelope import (
    ENVELOPE_PROTOCOL,
    open_envelope,
    seal_envelope,
)
from actors.key_custody._errors import (
    Denial,
    EnvelopeError,
    KeyCustodyError,
    KeyReleaseDenied,
    KeyringError,
)
from actors.key_custody._keyring import (
    SERVABLE_DATA_KEY_STATES,
    DataKeyEvent,
    DataKeyState,
    KekEvent,
    KekState,
    Keyring,
    SealedKek,
    WrappedDataKey,
)
from actors.key_custody._node import NodeKeyCustody
from actors.key_custody._vault import (
    DataKeyGrant,
    DataKeyImport,
    DataKeyRequest,
    KeyVault,
    seal_data_key_import,
)

__all__ = [
    "ENVELOPE_PROTOCOL",
    "SERVABLE_DATA_KEY_STATES",
    "DataKeyEvent",
    "DataKeyGrant",
    "DataKeyImport",
    "DataKeyRequest",
    "DataKeyState",
    "Denial",
    "EnvelopeError",
    "KekEvent",
    "KekState",
    "KeyCustodyError",
    "KeyReleaseDenied",
    "KeyVault",
    "Keyring",
    "KeyringError",
    "NodeKeyCustody",
    "SealedKek",
    "WrappedDataKey",
    "open_envelope",
    "seal_data_key_import",
    "seal_envelope",
]
