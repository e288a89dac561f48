"""The inference room on a secure channel: one generation request per connection."""

from __future__ import annotations

from actors.channel import ConnectionHandler, SecureChannel
from actors.inference._actor import Generate, InferenceActor, Reply
from protocol.inference import GenerateRequest
from protocol.messages import Envelope, ErrorCode, ErrorReply


def serve_inference(inference: InferenceActor) -> ConnectionHandler:
    """A :func:`~actors.channel.serve_secure` handler: the channel's first
    message is a :class:`~protocol.inference.GenerateRequest`, answered by
    ``inference`` with chunks and then ``inference.done`` or ``core.error``,
    each reply carrying the request's id. Anything else is answered
    ``BAD_REQUEST``.

    The actor holds no per-request state, so each connection runs
    :meth:`InferenceActor.generate` in its own task, and a failure raised
    from it (after the actor's explicit error) ends this connection only:
    ``serve_secure`` logs it by type and closes the channel.
    """

    async def handle(channel: SecureChannel) -> None:
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
