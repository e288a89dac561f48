"""The client's typed errors: what failed is a field, never a guess from a message.

* :class:`AttestationError` -- a verification step refused (``check``:
  :class:`ClientCheck`; a node document's own failed check in
  ``document_check``). Nothing was sent to the node or nodes concerned.
* :class:`RateLimited` -- the ingress answered 429; ``retry_after`` (seconds)
  is its ``Retry-After``, or ``None`` when it named none.
* :class:`APIError` -- any other refusal, from the OpenAI error body the
  ingress answered (``status``, ``type``, ``param``, ``code``) or from the
  node's sealed error record.
* :class:`ClientConfigError` -- a setting is missing or unusable (``setting``
  names it). A missing pin is this error, never an unverified mode.
* :class:`ClientTimeout` -- a step did not end within its deadline.

Messages name fields and sizes; they never quote a server's answer or any
customer text.
"""

from __future__ import annotations

import enum

from protocol.attestation import Check


class ClientCheck(enum.StrEnum):
    """The client's verification steps (:attr:`AttestationError.check`)."""

    #: ``/v1/mantle/release`` is not a bundle the pins verify (signatures,
    #: expiry, floor, inclusion in the pinned log).
    RELEASE = "release"
    #: The release does not list the requested model.
    MODEL = "model"
    #: ``/ct/v1/get-sth`` is not a tree head signed by the pinned log key.
    TLOG_TREE_HEAD = "tlog.tree_head"
    #: The log's tree heads are inconsistent: the release's proof, the tree
    #: head now served and the one stored from earlier runs are not one log
    #: (a fork, or a log wound back).
    TLOG_CONSISTENCY = "tlog.consistency"
    #: The nodes answer is not the route's JSON shape.
    NODES_ANSWER = "nodes.answer"
    #: A node's document failed (``document_check`` names the check).
    NODE_DOCUMENT = "node.document"
    #: A node's static key is not 32 bytes, or its receipt key binding
    #: (``user_data``) is not 32 bytes.
    NODE_KEYS = "node.keys"
    #: No node of the model passed verification.
    NO_VERIFIED_NODE = "nodes.none_verified"
    #: A receipt is not signed by the serving node's attested receipt key,
    #: or covers other bytes, another request, model or release.
    RECEIPT = "receipt"
    #: The sealed answer failed to open (forged, truncated, reordered records).
    RESPONSE = "response"
    #: The trust state on disk cannot be read or written.
    TRUST_STATE = "trust_state"


class AttestationError(Exception):
    """A verification step refused; :attr:`check` names it. Nothing was sent."""

    def __init__(
        self, check: ClientCheck, detail: str, *, document_check: Check | None = None
    ) -> None:
        self.check = check
        self.document_check = document_check
        self.detail = detail
        named = f"{check.value}/{document_check.value}" if document_check else check.value
        super().__init__(f"attestation refused ({named}): {detail}")


class APIError(Exception):
    """The ingress or the node refused the request (an OpenAI error body)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        super().__init__(f"HTTP {status}: {message}")


class RateLimited(APIError):
    """429: the ingress is full for this tenant or model; retry after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: float | None, **fields: str | None) -> None:
        super().__init__(429, message, **fields)
        self.retry_after = retry_after


class ClientConfigError(Exception):
    """A setting is missing or unusable; :attr:`setting` names it."""

    def __init__(self, setting: str, detail: str) -> None:
        self.setting = setting
        super().__init__(f"{setting}: {detail}")


class ClientTimeout(TimeoutError):
    """A step (named by :attr:`step`) did not end within its deadline."""

    def __init__(self, step: str) -> None:
        self.step = step
        super().__init__(f"{step}: no answer within the deadline")
