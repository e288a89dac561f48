"""The scheduler room (on ``ingress`` nodes): where requests wait and where they go.

Duties (:class:`SchedulerActor`, registered as ``"scheduler"``):

* **A registry of inference nodes.** A node's membership actor
  (:class:`actors.inference.SchedulerMembership`) joins with ``sched.join``
  (model, slots, a random session); who joined is the authenticated link's
  peer, never a field. The scheduler monitors the joining actor, so a lost
  link -- which is what a lapsed or failed re-attestation is: the transport
  closes the link and the runtime delivers ``Down(noconnection)`` -- removes
  the node at once; so does ``sched.leave``, a new session of the same node,
  or three heartbeat intervals without a ``sched.heartbeat`` (the node is
  then told ``sched.rejoin``).
* **Per-model queues with admission limits.** A request waits in its
  model's queue, FIFO per tenant and round robin across tenants, so one
  tenant's burst cannot starve another; a full queue (per model, or per
  tenant within it) refuses at once with :class:`Overloaded` and its
  ``retry_after``, never a hang. An unknown model is :class:`UnknownModel`;
  a known one no node serves now is :class:`NoCapacity`.
* **Deadlines.** A request still queued or running at its deadline ends
  with ``ErrorReply(DEADLINE_EXCEEDED)`` (and is cancelled on its node).
* **Placement** on the node of the model with the most free slots (its
  slots less the attempts the scheduler placed there and the node has not
  ended; a node that refused for want of a slot gets nothing until its next
  heartbeat). Each placement is an *attempt* with a fresh 16-byte id from
  the Random seam; replies are routed by it and accepted only from the node
  it was placed on, and chunks pass on in order only (a lost chunk ends the
  request explicitly, a duplicate is dropped). Ids are random rather than
  counted so that nodes learn nothing about other requests' volume or
  order; integrity rests on the node check, not on the ids being secret.
* **Cancellation**: :meth:`Submission.aclose` takes a queued request off its
  queue, or sends ``sched.cancel`` to its node, which sets the generation's
  cancel token (it stops within one token).
* **Retry and I7.** A request whose node is lost (``Down``, leave, silence,
  or a placement the node's heartbeats never listed) before its first chunk
  is placed again, at the front of its tenant's queue, at most
  ``max_attempts`` times in all; one that already streamed ends with
  ``ErrorReply(UNAVAILABLE, retryable=False)``. Every admitted request ends
  with the node's ``inference.done``, the node's error, or the scheduler's
  own ``ErrorReply``; a submission whose scheduler died ends by itself a
  grace period after its deadline.

* **Sealed requests** (:class:`~protocol.e2e.SealedRequest`, the end-to-end
  path): placed as ``sched.place_sealed`` only on a node whose key binding
  one of the request's envelopes names, that binding taken from the static
  key the transport authenticated for the node's link when it joined (the
  ``peer_keys`` lookup; checked again at each placement), never from a
  message; retries stay within those nodes; the node's ``sched.record``
  items (opaque sealed records) are relayed in order, the final one ending
  the request; at most ``max_tokens + 2`` records. A sealed request id is
  admitted once (:class:`Replayed` after that), remembered across restarts
  of the actor, so no node is asked to answer a request key twice.
* **Node documents** for clients: :meth:`SchedulerDispatcher.node_documents`
  lists the nodes serving a model (at most 16) and asks each one's worker
  ``sched.attest`` over its attested link, all at once, each within a
  timeout; the nodes that answer are listed.

The ingress reaches it through :class:`SchedulerDispatcher` (the
:class:`Dispatcher` of this node, in the same process): ``models()`` reads
the listing the actor publishes, ``submit`` asks the actor to admit
(bounded by a timeout: a busy scheduler is :class:`Overloaded`) and returns a
:class:`SchedulerSubmission` whose replies the actor pushes as they come.

Messages: ``sched.*`` of :mod:`protocol.scheduling` with the nodes; the
local commands :class:`Admit` and :class:`Abandon` from the dispatcher. The
scheduler sees routing metadata (model, size limits, tenant) and passes the
request and its replies through without reading, logging or reporting them.
"""

from actors.scheduler._actor import (
    MAX_LISTED_NODES,
    MISSED_HEARTBEATS,
    SCHEDULER_NAME,
    Abandon,
    Admit,
    ClusterDirectory,
    ListNodes,
    SchedulerActor,
    SchedulerLimits,
    SchedulerStats,
    ServingNode,
)
from actors.scheduler._api import (
    AdmissionCheck,
    AdmissionError,
    Dispatcher,
    ModelListing,
    NoCapacity,
    NodeDocument,
    Overloaded,
    PeerKeys,
    Replayed,
    SealedRecord,
    Submission,
    SubmissionReply,
    UnknownModel,
)
from actors.scheduler._dispatcher import (
    DEFAULT_ADMISSION_TIMEOUT,
    DEFAULT_ATTEST_TIMEOUT,
    DEFAULT_END_GRACE,
    DEFAULT_SCHEDULER_MAILBOX,
    SchedulerDispatcher,
    SchedulerSubmission,
)

__all__ = [
    "DEFAULT_ADMISSION_TIMEOUT",
    "DEFAULT_ATTEST_TIMEOUT",
    "DEFAULT_END_GRACE",
    "DEFAULT_SCHEDULER_MAILBOX",
    "MAX_LISTED_NODES",
    "MISSED_HEARTBEATS",
    "SCHEDULER_NAME",
    "Abandon",
    "AdmissionCheck",
    "AdmissionError",
    "Admit",
    "ClusterDirectory",
    "Dispatcher",
    "ListNodes",
    "ModelListing",
    "NoCapacity",
    "NodeDocument",
    "Overloaded",
    "PeerKeys",
    "Replayed",
    "SchedulerActor",
    "SchedulerDispatcher",
    "SchedulerLimits",
    "SchedulerStats",
    "SchedulerSubmission",
    "SealedRecord",
    "ServingNode",
    "Submission",
    "SubmissionReply",
    "UnknownModel",
]
