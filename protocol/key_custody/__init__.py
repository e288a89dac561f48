"""Key-custody wire formats, sans-IO (docs/architecture.md §10, §11).

What crosses a node boundary or a disk in key custody, and nothing that holds
a TPM, a clock or a source of randomness (keys and entropy are arguments):

* key envelopes -- one-way Noise ``K`` messages and their prologues
  (:func:`seal_envelope`, :func:`open_envelope`, :func:`grant_prologue`,
  :func:`import_prologue`);
* the keyring -- sealed KEKs and wrapped data keys with their lifecycles
  (:class:`Keyring`), the data-key wrap and its AAD (:func:`wrap_data_key`,
  :func:`unwrap_data_key`), and the keyring file's codec and MAC input
  (:class:`KeyringFile`);
* the messages, registered with :mod:`protocol.messages` under ``keys.*``:
  :class:`ChallengeRequest`/:class:`Challenge`, :class:`DataKeyRequest` ->
  :class:`DataKeyGrant` or :class:`KeyDenied`, :class:`DataKeyImport` ->
  :class:`DataKeyImported` or :class:`KeyDenied`; and a provider's
  ``.import`` file (:meth:`DataKeyImport.encode`).

The room that holds the state -- the TPM, the keyring, the challenges -- is
:mod:`actors.key_custody`.
"""

from protocol.key_custody._envelope import (
    ENVELOPE_PROTOCOL,
    GRANT_PURPOSE,
    IMPORT_PURPOSE,
    envelope_prologue,
    grant_prologue,
    import_prologue,
    new_static_key,
    open_envelope,
    seal_envelope,
)
from protocol.key_custody._errors import (
    Denial,
    EnvelopeError,
    KeyCustodyError,
    KeyringCheck,
    KeyringError,
    KeyringRefused,
)
from protocol.key_custody._keyring import (
    KEK_SIZE,
    KEYRING_FORMAT_VERSION,
    SERVABLE_DATA_KEY_STATES,
    WRAP_NONCE_SIZE,
    DataKeyEvent,
    DataKeyState,
    KekEvent,
    KekState,
    Keyring,
    SealedKek,
    WrappedDataKey,
    next_data_key_state,
    next_kek_state,
    unwrap_data_key,
    wrap_data_key,
)
from protocol.key_custody._keyring_file import KEYRING_FILE_FORMAT, MAC_SIZE, KeyringFile
from protocol.key_custody._messages import (
    CHALLENGE_SIZE,
    IMPORT_FORMAT_VERSION,
    MAX_ENVELOPE_BYTES,
    STATIC_KEY_SIZE,
    Challenge,
    ChallengeRequest,
    DataKeyGrant,
    DataKeyImport,
    DataKeyImported,
    DataKeyRequest,
    KeyDenied,
    seal_data_key_import,
)

__all__ = [
    "CHALLENGE_SIZE",
    "ENVELOPE_PROTOCOL",
    "GRANT_PURPOSE",
    "IMPORT_FORMAT_VERSION",
    "IMPORT_PURPOSE",
    "KEK_SIZE",
    "KEYRING_FILE_FORMAT",
    "KEYRING_FORMAT_VERSION",
    "MAC_SIZE",
    "MAX_ENVELOPE_BYTES",
    "SERVABLE_DATA_KEY_STATES",
    "STATIC_KEY_SIZE",
    "WRAP_NONCE_SIZE",
    "Challenge",
    "ChallengeRequest",
    "DataKeyEvent",
    "DataKeyGrant",
    "DataKeyImport",
    "DataKeyImported",
    "DataKeyRequest",
    "DataKeyState",
    "Denial",
    "EnvelopeError",
    "KekEvent",
    "KekState",
    "KeyCustodyError",
    "KeyDenied",
    "Keyring",
    "KeyringCheck",
    "KeyringError",
    "KeyringFile",
    "KeyringRefused",
    "SealedKek",
    "WrappedDataKey",
    "envelope_prologue",
    "grant_prologue",
    "import_prologue",
    "new_static_key",
    "next_data_key_state",
    "next_kek_state",
    "open_envelope",
    "seal_data_key_import",
    "seal_envelope",
    "unwrap_data_key",
    "wrap_data_key",
]
