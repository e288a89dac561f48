"""The transparency log as a node runs it: SQLite storage and the HTTP view.

* :class:`TransparencyLog` over a :class:`~actors.seams.store.Store` —
  ``append(leaf_input) -> index``, ``append_many``, ``sth()``,
  ``inclusion_proof(leaf_hash, tree_size) -> InclusionProof``,
  ``consistency_proof(first, second)``, ``entries(start, end)`` (inclusive),
  ``root_hash``, ``size``, ``public_key``.
* :class:`TlogHttpApp` — RFC 6962 §4 read-only ASGI app under ``/ct/v1/``,
  mountable by the ingress; :func:`serve_tlog` runs it under hypercorn.
* Key files: :func:`load_log_signing_key`, :func:`load_log_public_key`,
  :func:`write_log_keypair`.
"""

from nodes.tlog._http import DEFAULT_PREFIX, TlogHttpApp
from nodes.tlog._keys import load_log_public_key, load_log_signing_key, write_log_keypair
from nodes.tlog._log import (
    InclusionProof,
    LogRequestError,
    LogStoreError,
    TransparencyLog,
    public_key_bytes,
)
from nodes.tlog._serve import serve_tlog

__all__ = [
    "DEFAULT_PREFIX",
    "InclusionProof",
    "LogRequestError",
    "LogStoreError",
    "TlogHttpApp",
    "TransparencyLog",
    "load_log_public_key",
    "load_log_signing_key",
    "public_key_bytes",
    "serve_tlog",
    "write_log_keypair",
]
