"""The Mantle client library (``import mantle``) and the ``mantle`` command.

The client installs without any server code: nothing here imports ``nodes``
or ``simulations`` (import-linter checks it). What the server side shares
with the client -- the release bundle layout, the pins directory, bounded file
reads -- is defined here and imported by ``nodes`` from this surface.

Public surface:

* **Trust** -- :class:`TrustPins` and :func:`load_pins` (the attestation root,
  the release root and the log key, read from a pins directory, never from a
  bundle; file names :data:`ATTESTATION_ROOT_PIN`, :data:`RELEASE_ROOT_PIN`,
  :data:`LOG_KEY_PIN`); :func:`client_release_view` (a bundle's metadata and
  log proof checked against the pins and the client's release floor, kept by
  :class:`mantle.trust_state.TrustStateFile`).
* **Release bundles** -- :class:`ReleaseDirectory` (``root.json``,
  ``targets.json``, ``log-proof.json``).
* **Checking an ingress** -- :func:`verify_ingress` (its document over the
  client's nonce: pinned root, PCRs of a verified release, the pinned TLS
  certificate's key bound in it) and :func:`pinned_tls_context`;
  :class:`VerifiedIngress`, :class:`IngressRefused` (``check``:
  :class:`IngressCheck`).
* **Asking a node** -- :class:`NodeVerifier` (a node's evidence for this
  channel against the pinned root and the release's policy for a model) and
  :func:`ask_node` (verify first, then send and stream the answer);
  :class:`UnexpectedAnswer`.
* **End to end** -- :class:`Client` and :class:`AsyncClient` (settings from
  arguments, ``MANTLE_*`` variables or a TOML file: :func:`load_settings`,
  :class:`ClientSettings`): ``client.chat.completions.create(...)`` and
  ``client.responses.create(...)`` return the ``openai`` SDK's types
  (:class:`ChatCompletion`, :class:`Response`, streams of its chunks and
  events: :class:`Stream`, :class:`AsyncStream`) with a verified ``.receipt``;
  the walk's result is :class:`VerifiedNodes` of :class:`VerifiedNode`.
  Errors: :class:`AttestationError` (``check``: :class:`ClientCheck`),
  :class:`RateLimited`, :class:`APIError`, :class:`ClientConfigError`,
  :class:`ClientTimeout`.
* **The SDK on a verified ingress** -- :func:`openai_client`,
  :func:`async_openai_client`.
* **Files** -- :func:`read_bounded_file`, :func:`read_metadata_file` and
  :class:`KeyFileError`.
* Modules of their own: :mod:`mantle.trust_state` (the client's persistent
  release floor), :mod:`mantle.commands` (the convention of Mantle's command
  lines), :mod:`mantle.cli` (the ``mantle`` command).
"""

from mantle._bundle import LOG_PROOF_FILE, ROOT_FILE, TARGETS_FILE, ReleaseDirectory
from mantle._client import AsyncClient, AsyncStream, Client, Stream
from mantle._config import ClientSettings, load_settings
from mantle._errors import (
    APIError,
    AttestationError,
    ClientCheck,
    ClientConfigError,
    ClientTimeout,
    RateLimited,
)
from mantle._exchange import ChatCompletion, Response
from mantle._files import KeyFileError, read_bounded_file, read_metadata_file
from mantle._ingress import (
    IngressCheck,
    IngressRefused,
    VerifiedIngress,
    pinned_tls_context,
    verify_ingress,
)
from mantle._node_client import NodeVerifier, UnexpectedAnswer, ask_node
from mantle._openai_bridge import async_openai_client, openai_client
from mantle._trust import (
    ATTESTATION_ROOT_PIN,
    LOG_KEY_PIN,
    MAX_PEM_PIN_BYTES,
    RELEASE_ROOT_PIN,
    TrustPins,
    client_release_view,
    load_pins,
    verify_release_bytes,
)
from mantle._walk import VerifiedNode, VerifiedNodes

__all__ = [
    "ATTESTATION_ROOT_PIN",
    "LOG_KEY_PIN",
    "LOG_PROOF_FILE",
    "MAX_PEM_PIN_BYTES",
    "RELEASE_ROOT_PIN",
    "ROOT_FILE",
    "TARGETS_FILE",
    "APIError",
    "AsyncClient",
    "AsyncStream",
    "AttestationError",
    "ChatCompletion",
    "Client",
    "ClientCheck",
    "ClientConfigError",
    "ClientSettings",
    "ClientTimeout",
    "IngressCheck",
    "IngressRefused",
    "KeyFileError",
    "NodeVerifier",
    "RateLimited",
    "ReleaseDirectory",
    "Response",
    "Stream",
    "TrustPins",
    "UnexpectedAnswer",
    "VerifiedIngress",
    "VerifiedNode",
    "VerifiedNodes",
    "ask_node",
    "async_openai_client",
    "client_release_view",
    "load_pins",
    "load_settings",
    "openai_client",
    "pinned_tls_context",
    "read_bounded_file",
    "read_metadata_file",
    "verify_ingress",
    "verify_release_bytes",
]
