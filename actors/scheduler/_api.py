"""What the ingress sees of the scheduler: admission, listings and submissions.

These are the seams between the HTTP front door (:mod:`actors.ingress`) and
the scheduler actor: the ingress turns an admission error into its HTTP
status (``UnknownModel`` 404, ``Overloaded`` 429 with ``Retry-After``,
``NoCapacity`` 503) and relays a :class:`Submission`'s replies as they come.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

from actors.inference import Reply
from protocol.attestation import DocumentKind
from protocol.e2e import SealedRequest, record_is_final
from protocol.inference import GenerateRequest


@dataclass(frozen=True, slots=True)
class ModelListing:
    """One entry of ``GET /v1/models``."""

    model: str
    #: Inference nodes currently serving it.
    nodes: int


@dataclass(frozen=True, slots=True)
class SealedRecord:
    """One sealed response record of an end-to-end request, as the serving
    node sealed it: opaque bytes here but for its header's flag."""

    record: bytes = field(repr=False)

    @property
    def final(self) -> bool:
        """Whether the record is flagged final (the answer's last)."""
        return record_is_final(self.record)


#: What a submission yields: a plain request's replies, or a sealed one's
#: records (then one ``ErrorReply`` if it failed before its final record).
SubmissionReply: TypeAlias = Reply | SealedRecord


@dataclass(frozen=True, slots=True)
class NodeDocument:
    """A serving node's fresh document over a client's nonce (``GET
    /v1/mantle/nodes``): the node's name, the document and its kind."""

    node: str
    kind: DocumentKind
    document: bytes = field(repr=False)
    #: The Noise static key the document binds (what a client seals to).
    static_key: bytes = field(repr=False, default=b"")


class PeerKeys(Protocol):
    """The Noise static key the transport authenticated for the link to a
    node (``None`` while no link is up): where the scheduler learns which
    key binding a joined node holds. Never a claim the node makes."""

    def __call__(self, node: str, /) -> bytes | None: ...


class AdmissionCheck(enum.StrEnum):
    """Why a request was not admitted."""

    #: No such model in this cluster.
    UNKNOWN_MODEL = "unknown_model"
    #: The model's queue is full; retry after a delay.
    OVERLOADED = "overloaded"
    #: The model is known but no node serves it now (for a sealed request:
    #: none of the nodes it was sealed for).
    NO_CAPACITY = "no_capacity"
    #: A sealed request whose id this scheduler already admitted.
    REPLAYED = "replayed"


class AdmissionError(Exception):
    """A request refused before it was admitted; :attr:`check` names why.

    The message names the check only, never the request (model names are
    routing metadata, but the message is built without them all the same).
    """

    check: AdmissionCheck

    def __init__(self, check: AdmissionCheck, detail: str) -> None:
        super().__init__(detail)
        self.check = check


class UnknownModel(AdmissionError):
    """No such model in this cluster (HTTP 404)."""

    def __init__(self) -> None:
        super().__init__(AdmissionCheck.UNKNOWN_MODEL, "no such model in this cluster")


class Overloaded(AdmissionError):
    """The queue is full (HTTP 429 with ``Retry-After``)."""

    def __init__(self, retry_after: float) -> None:
        if not retry_after > 0:
            raise ValueError("retry_after is a positive number of seconds")
        super().__init__(AdmissionCheck.OVERLOADED, "the model's queue is full")
        #: Seconds after which a retry may be admitted (> 0).
        self.retry_after = retry_after


class NoCapacity(AdmissionError):
    """The model is known but no inference node serves it now (HTTP 503)."""

    def __init__(self) -> None:
        super().__init__(AdmissionCheck.NO_CAPACITY, "no node serves the model now")


class Replayed(AdmissionError):
    """A sealed request whose id was admitted before (HTTP 409): a replay is
    never placed again, so no node seals a second answer under its key."""

    def __init__(self) -> None:
        super().__init__(AdmissionCheck.REPLAYED, "this request id was already submitted")


class Submission(Protocol):
    """One admitted request. Iterate replies: any number of ``GenerateChunk``,
    then exactly one ``GenerateDone`` or ``ErrorReply`` (I7), then iteration
    ends; for a sealed request, :class:`SealedRecord` items up to the final
    one, or an ``ErrorReply`` instead of it."""

    def __aiter__(self) -> AsyncIterator[SubmissionReply]: ...

    async def aclose(self) -> None:
        """The client went away: cancel on the node. Idempotent."""
        ...


class Dispatcher(Protocol):
    """Admits requests and lists the models the cluster serves."""

    def models(self) -> Sequence[ModelListing]: ...

    async def submit(
        self, request: GenerateRequest | SealedRequest, *, tenant: str, deadline: float
    ) -> Submission:
        """Admit ``request`` or raise :class:`UnknownModel`, :class:`Overloaded`,
        :class:`NoCapacity` (or :class:`Replayed`) at once (never hangs).
        ``deadline`` is absolute time on the Clock seam."""
        ...

    async def node_documents(self, model: str, nonce: bytes) -> Sequence[NodeDocument]:
        """Fresh documents over ``nonce`` of the nodes serving ``model`` (at
        most 16; those that fail or are slow are left out), or
        :class:`UnknownModel`."""
        ...
