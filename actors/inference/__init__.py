"""The inference room (on ``inference`` nodes): generation on the model this node holds.

Duties:

* **It serves verified, decrypted weights through the Engine seam.** The
  node opens the sealed model with the data key key custody was granted,
  checks the plaintext against the release and keeps it in memory only
  (``nodes.model_store``), and loads it into an
  :class:`~actors.seams.engine.Engine` (``nodes.engines.llama``);
  :class:`InferenceActor` is handed that engine, or ``None`` on a node that
  holds no model, which answers every request ``UNAVAILABLE``.
* **It generates in a worker thread and streams.** Each blocking step of the
  engine runs through the injected run-blocking seam
  (:class:`~actors.attestation.RunBlocking`: a worker thread on a node, inline
  in the simulator), one token per hop; each chunk is sent as it comes.
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
runs). Receiving requests from the scheduler over node links is the daemon's
to wire.
"""

from actors.inference._actor import Generate, InferenceActor, Reply, ReplySink
from actors.inference._channel import FIRST_REQUEST_TIMEOUT_S, serve_inference

__all__ = [
    "FIRST_REQUEST_TIMEOUT_S",
    "Generate",
    "InferenceActor",
    "Reply",
    "ReplySink",
    "serve_inference",
]
