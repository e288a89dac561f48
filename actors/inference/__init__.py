"""The inference room (on ``inference`` nodes): generation on the model this node holds.

Duties:

* **It serves verified, decrypted weights through the Engine seam.** The
  node opens the sealed model with the data key key custody was granted,
  checks the plaintext against the release and keeps it in memory only
  (``nodes.model_store``), and loads it into an
  :class:`~actors.seams.engine.Engine` (``nodes.engines.llama``);
  :class:`InferenceActor` is handed that engine, or ``None`` on a node that
  holds no model, which answers every request ``UNAVAILABLE``.
* **It generates in a worker thread and streams.** The engine runs through
  the injected run-blocking seam (:class:`~actors.attestation.RunBlocking`:
  a worker thread on a node, inline in the simulator). On a node
  (``engine_loop_in_thread``) a whole generation is one call: the engine's
  loop turns in the worker thread and hands each chunk to the event loop as
  it comes, never waiting for it to be sent; chunks made while the event
  loop has not taken the previous ones go out as one (text joined, tokens
  added, at most :data:`MAX_COALESCED_CHARS`). In the simulator each
  engine step is one hop.
* **It honours the request's sampling parameters**: ``max_tokens``,
  ``temperature``, ``top_p``, ``seed`` and up to four stop sequences (ranges
  checked by the wire format and the seam alike); the answer ends ``stop``
  (end of text, or a stop sequence, none of which is sent), ``length``
  (exactly ``max_tokens`` tokens generated) or ``cancelled``, as the engine
  reports it.
* **It counts usage**: ``GenerateDone.completion_tokens``, the tokens of
  every chunk the engine produced, and ``GenerateDone.prompt_tokens``, the
  prompt's tokens as the model reads it (``Engine.count_prompt_tokens``).
* **It stops within one token** when the request is cancelled
  (:attr:`Generate.cancel`) or the requester went away (its reply fails).
* **Every accepted request ends** with ``inference.done`` or ``core.error``
  (invariant I7): an engine failure is answered ``INTERNAL`` (retryable)
  before it is raised on, by type and location only, never its text.

Messages handled: :class:`protocol.inference.GenerateRequest`
(``inference.generate``) in; :class:`~protocol.inference.GenerateChunk`
(``inference.chunk``), :class:`~protocol.inference.GenerateDone`
(``inference.done``) and :class:`protocol.messages.ErrorReply`
(``core.error``) out. Locally the actor takes :class:`Generate` (the request
and the sink its replies go to); :func:`serve_inference` is the adapter that
serves it on a secure channel, one request per connection (what the demo
runs).

From the scheduler (``sched.*`` of :mod:`protocol.scheduling`, over the
node link): :class:`InferenceWorker` (registered as ``"inference"``) runs
each ``sched.place`` in its own linked actor through
:meth:`InferenceActor.generate`, at most ``slots`` at once (one more is
refused ``OVERLOADED`` at once), streams ``sched.chunk`` (numbered),
``sched.done`` and ``sched.error`` back to the placing scheduler and honours
``sched.cancel`` through the generation's cancel token; after
:class:`DrainWorker` (its node drains) it takes no new placement and lets
what it runs finish. :class:`SchedulerMembership` joins the scheduler with the model and slots,
heartbeats the worker's load, leaves when the worker dies and joins again
under a new session whenever the scheduler's ``Down`` (a lost link, a
restarted scheduler) or a ``sched.rejoin`` says it must.

End to end (:mod:`protocol.e2e`): given :class:`SealedServing` (the node's
key custody, the release's model digest and version), the worker runs
``sched.place_sealed``: it opens the request with the node's static key
(``open_request``; one not sealed for this node is refused ``UNAVAILABLE``,
retryable elsewhere, one that does not open ``BAD_REQUEST``), refuses a
request id it already opened (no request key seals two answers here),
generates, and streams every chunk as a sealed ``sched.record``, the last
one holding the usage and a receipt over the request's and the answer's
digests, the model digest and the release version, signed by the receipt
key in custody. :class:`NodeAttestor` (``inference_attestor``) answers
``sched.attest`` with a document over the client's nonce from the
attestation service's client path (its ``user_data`` the receipt key's
binding).
"""

from actors.inference._actor import (
    MAX_COALESCED_CHARS,
    Generate,
    InferenceActor,
    Reply,
    ReplySink,
)
from actors.inference._channel import FIRST_REQUEST_TIMEOUT_S, serve_inference
from actors.inference._sealed import (
    ATTESTOR_NAME,
    REMEMBERED_REQUESTS,
    ClientAttest,
    NodeAttestor,
    SealedServing,
)
from actors.inference._worker import (
    WORKER_NAME,
    DrainWorker,
    InferenceWorker,
    SchedulerMembership,
    WorkerLoad,
    WorkerStatus,
)

__all__ = [
    "ATTESTOR_NAME",
    "FIRST_REQUEST_TIMEOUT_S",
    "MAX_COALESCED_CHARS",
    "REMEMBERED_REQUESTS",
    "WORKER_NAME",
    "ClientAttest",
    "DrainWorker",
    "Generate",
    "InferenceActor",
    "InferenceWorker",
    "NodeAttestor",
    "Reply",
    "ReplySink",
    "SchedulerMembership",
    "SealedServing",
    "WorkerLoad",
    "WorkerStatus",
    "serve_inference",
]
