"""The scheduler room (on ``ingress`` nodes): where requests wait and where they go.

Duties:

* a registry of inference nodes that joined over attested links, with the
  capacity their heartbeats report, and that leave when their link's
  attestation lapses or fails;
* per-model queues with admission limits (a full queue answers at once with a
  rate-limit error carrying a retry delay, never a hang), per-tenant fairness
  and deadlines;
* placement of each request on a node of its candidate set, cancellation when
  the client goes away, and retry on another node of a request that had not
  started streaming when its node died (a streaming one ends with an explicit
  error event: invariant I7).

The scheduler sees routing metadata (model, size limits, tenant) and, on the
end-to-end path, ciphertext only. What the ingress sees of it
(:class:`Dispatcher`, :class:`Submission`, the admission errors and
:class:`ModelListing`) is defined here.
"""

from actors.scheduler._api import (
    AdmissionCheck,
    AdmissionError,
    Dispatcher,
    ModelListing,
    NoCapacity,
    Overloaded,
    Submission,
    UnknownModel,
)

__all__ = [
    "AdmissionCheck",
    "AdmissionError",
    "Dispatcher",
    "ModelListing",
    "NoCapacity",
    "Overloaded",
    "Submission",
    "UnknownModel",
]
