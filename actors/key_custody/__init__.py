"""Key custody (docs/architecture.md §6): the node's Noise static key on every node,
and on ``keys`` nodes the model KEKs sealed to the TPM's measured state (in a
keyring bound to a TPM counter, so an older copy of it is refused, and MACed
by the TPM in that state, so nobody else can write one), data key imports from
model providers only, and the release of data keys to attested peers only."""

from actors.key_custody._envelope import (
    ENVELOPE_PROTOCOL,
    open_envelope,
    seal_envelope,
)
from actors.key_custody._errors import (
    CommitInterrupted,
    Denial,
    EnvelopeError,
    KeyCustodyError,
    KeyReleaseDenied,
    KeyringError,
    UnmeasuredKekSelection,
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
from actors.key_custody._keyring_file import (
    KEYRING_COUNTER,
    KEYRING_MAC_PCRS,
    KeyringCheck,
    KeyringFile,
    KeyringRefused,
)
from actors.key_custody._node import NodeKeyCustody
from actors.key_custody._vault import (
    KEK_PCRS,
    MAX_USED_CHALLENGES,
    DataKeyGrant,
    DataKeyImport,
    DataKeyRequest,
    KeyVault,
    ProviderKeyLookup,
    seal_data_key_import,
)

__all__ = [
    "ENVELOPE_PROTOCOL",
    "KEK_PCRS",
    "KEYRING_COUNTER",
    "KEYRING_MAC_PCRS",
    "MAX_USED_CHALLENGES",
    "SERVABLE_DATA_KEY_STATES",
    "CommitInterrupted",
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
    "KeyringCheck",
    "KeyringError",
    "KeyringFile",
    "KeyringRefused",
    "NodeKeyCustody",
    "ProviderKeyLookup",
    "SealedKek",
    "UnmeasuredKekSelection",
    "WrappedDataKey",
    "open_envelope",
    "seal_data_key_import",
    "seal_envelope",
]
