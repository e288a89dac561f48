"""The inference room on a secure channel: one generation request per connection."""

from __future__ import annotations

from typing import Final

import anyio

from actors.channel import ConnectionHandler, SecureChannel
from actors.inference._actor import Generate, InferenceActor, Reply
from protocol.inference import GenerateRequest
from protocol.messages import Envelope, ErrorCode, ErrorReply

#: How long a client that completed the handshake has to send its request.
#: An idle channel holds a descriptor and one of the server's channels
#: (``serve_secure``'s ``max_channels``); after this it gives them back.
FIRST_REQUEST_TIMEOUT_S: Final = 10.0


def serve_inference(
    inference: InferenceActor, *, first_request_timeout: float = FIRST_REQUEST_TIMEOUT_S
) -> ConnectionHandler:
    """A :class:`~actors.channel.SecureServer` handler (``nodes.tcp.serve_secure``
    serves one on TCP): the channel's first message is a
    :class:`~protocol.inference.GenerateRequest`, answered by ``inference``
    with chunks and then ``inference.done`` or ``core.error``, each reply
    carrying the request's id. Anything else is answered ``BAD_REQUEST``.

    The actor holds no per-request state, so each connection runs
    :meth:`InferenceActor.generate` in its own task, and a failure raised
    from it (after the actor's explicit error) ends this connection only:
    the server logs it by type and closes the channel. A client that
    sends no request within ``first_request_timeout`` is cut off the same way
    (``TimeoutError``).
    """
    if not first_request_timeout > 0:
        raise ValueError("the first-request deadline must be positive")

    async def handle(channel: SecureChannel) -> None:
        with anyio.fail_after(first_request_timeout):
            envelope = await channel.receive_message()
        request_id = envelope.request_id

        async def reply(message: Reply) -> None:
            await channel.send_message(Envelope.wrap(message, request_id=request_id))

        body = envelope.body
        if not isinstance(body, GenerateRequest):
            await reply(ErrorReply(ErrorCode.BAD_REQUEST, False))
            return
        await inference.generate(Generate(body, reply))

    return handle
