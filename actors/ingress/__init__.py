"""The ingress room: the HTTPS front door of a cluster.

Duties:

* an OpenAI-compatible API (``/v1/models``, ``/v1/chat/completions``,
  ``/v1/responses``, server-sent-event streaming, OpenAI error bodies and
  status codes) over hypercorn on trio, with TLS whose key is generated at
  boot and bound into this node's attestation;
* tenant API keys stored hashed and compared in constant time; limits on body,
  headers, messages and tokens; a 400 naming any parameter Mantle does not
  support, never silent ignoring;
* ``/v1/attestation?nonce=HEX`` (this node's fresh document), a health
  endpoint and the transparency log's read API under ``/ct/v1/``;
* the end-to-end relay of the Mantle client: it forwards ciphertext it cannot
  read between the client and the scheduler.

Mantle keeps no conversation state. Requests reach the scheduler as
registered messages; nothing lives here yet.
"""
