"""Key custody (docs/architecture.md §6): the node's Noise static key on every node,
and on ``keys`` nodes the model KEKs sealed to the TPM's measured state (in a
keyring bound to a TPM counter, so an older copy of it is refused, and MACed
by the TPM in that state, so nobody else can write one), data key imports from
model providers only, and the release of data keys to attested peers only.

The room holds the state -- :class:`NodeKeyCustody` (the static key and the
data keys granted), :class:`KeyVault` (the TPM, the keyring, the challenges,
the policy and provider lookups) -- and :class:`KeyCustodyActor`, which serves
a vault's messages under supervision; :func:`serve_key_custody` serves that
actor on a secure channel, and :func:`fetch_data_key` / :func:`import_data_key`
are the inference node's and the model provider's sides of it. The formats it reads and writes (key
envelopes, the keyring and its file, the ``keys.*`` messages) are
:mod:`protocol.key_custody`'s; the format errors and :class:`Denial` are
re-exported here because the room raises them.
"""

from actors.key_custody._actor import (
    CustodyReply,
    FromPeer,
    KeyCustodyActor,
    OpenVault,
)
from actors.key_custody._errors import (
    CommitInterrupted,
    KeyReleaseDenied,
    UnmeasuredKekSelection,
)
from actors.key_custody._keyring_file import (
    KEYRING_COUNTER,
    KEYRING_MAC_PCRS,
    seal_keyring_file,
    verify_keyring_file,
)
from actors.key_custody._node import NodeKeyCustody
from actors.key_custody._vault import (
    KEK_PCRS,
    MAX_USED_CHALLENGES,
    KeyVault,
    ProviderKeyLookup,
)

# Last: the channel side imports actors.channel, whose attestation room needs
# NodeKeyCustody from this package (already bound above).
from actors.key_custody._wire import (
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_MAX_REQUESTS,
    MAX_KEY_MESSAGE_BYTES,
    AskCustody,
    KeyChannelCheck,
    KeyChannelError,
    KeyExchangeCheck,
    KeyExchangeRefused,
    asker_channel_attestation,
    custody_actor,
    fetch_data_key,
    import_data_key,
    keys_node_channel_attestation,
    serve_key_custody,
)
from protocol.key_custody import (
    Denial,
    EnvelopeError,
    KeyCustodyError,
    KeyringCheck,
    KeyringError,
    KeyringRefused,
)

__all__ = [
    "DEFAULT_IDLE_TIMEOUT_S",
    "DEFAULT_MAX_REQUESTS",
    "KEK_PCRS",
    "KEYRING_COUNTER",
    "KEYRING_MAC_PCRS",
    "MAX_KEY_MESSAGE_BYTES",
    "MAX_USED_CHALLENGES",
    "AskCustody",
    "CommitInterrupted",
    "CustodyReply",
    "Denial",
    "EnvelopeError",
    "FromPeer",
    "KeyChannelCheck",
    "KeyChannelError",
    "KeyCustodyActor",
    "KeyCustodyError",
    "KeyExchangeCheck",
    "KeyExchangeRefused",
    "KeyReleaseDenied",
    "KeyVault",
    "KeyringCheck",
    "KeyringError",
    "KeyringRefused",
    "NodeKeyCustody",
    "OpenVault",
    "ProviderKeyLookup",
    "UnmeasuredKekSelection",
    "asker_channel_attestation",
    "custody_actor",
    "fetch_data_key",
    "import_data_key",
    "keys_node_channel_attestation",
    "seal_keyring_file",
    "serve_key_custody",
    "verify_keyring_file",
]
