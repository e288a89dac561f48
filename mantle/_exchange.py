"""One end-to-end request, sans-IO: SDK arguments in, sealed bytes out; sealed
records in, the official ``openai`` SDK's objects out.

The arguments are checked exactly as the ingress checks an OpenAI request
(:func:`protocol.openai.parse_chat_request`, :func:`~protocol.openai.parse_responses_request`
on the JSON the SDK would send), then the generation request is sealed to
the verified candidates (:func:`protocol.e2e.seal_request`). The answer's
records are opened in order (:class:`protocol.e2e.ResponseOpener`: forged,
dropped, reordered and replayed records are refused, the receipt must sign
this request and exactly the text and usage received), and the receipt's key
must be the one a verified candidate's document bound
(:func:`protocol.e2e.receipt_key_binding` as ``user_data``), for this model,
its digest in the verified release and that release's version. The objects
are rendered by the same renderers the ingress uses for the plain path
(:mod:`protocol.openai`), so both paths give the SDK the same shapes.
"""

from __future__ import annotations

import enum
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import openai.types.chat as chat_types
import openai.types.responses as responses_types
from pydantic import PrivateAttr, TypeAdapter

from actors.seams.random import Random
from mantle._errors import APIError, AttestationError, ClientCheck
from mantle._walk import VerifiedNode, VerifiedNodes
from protocol.customer_data import CustomerData
from protocol.e2e import (
    E2EError,
    Receipt,
    RequestBody,
    ResponseFinal,
    ResponseOpener,
    SavedReceipt,
    SealedRequest,
    receipt_key_binding,
    request_digest,
    seal_request,
)
from protocol.inference import GenerateChunk, GenerateRequest
from protocol.measurement import MeasurementError, release_measurement
from protocol.openai import (
    ApiLimits,
    ChatStreamRenderer,
    OpenAIRequestError,
    ResponseRenderer,
    ResponsesRequest,
    Usage,
    parse_chat_request,
    parse_responses_request,
    render_chat_completion,
)

#: What the client checks arguments against (the ingress's defaults).
CLIENT_LIMITS: Final = ApiLimits()
_U32: Final = 1 << 32


class Kind(enum.Enum):
    CHAT = "chat"
    RESPONSES = "responses"


class ChatCompletion(chat_types.ChatCompletion):
    """:class:`openai.types.chat.ChatCompletion`, with the verified :attr:`receipt`."""

    _saved: SavedReceipt | None = PrivateAttr(default=None)

    @property
    def receipt(self) -> Receipt:
        """The serving node's receipt, verified (see the module docstring)."""
        assert self._saved is not None
        return self._saved.receipt

    @property
    def saved_receipt(self) -> SavedReceipt:
        """The receipt with the hashes and the node's document (a receipt file)."""
        assert self._saved is not None
        return self._saved


class Response(responses_types.Response):
    """:class:`openai.types.responses.Response`, with the verified :attr:`receipt`."""

    _saved: SavedReceipt | None = PrivateAttr(default=None)

    @property
    def receipt(self) -> Receipt:
        assert self._saved is not None
        return self._saved.receipt

    @property
    def saved_receipt(self) -> SavedReceipt:
        assert self._saved is not None
        return self._saved


_STREAM_EVENT: Final[TypeAdapter[responses_types.ResponseStreamEvent]] = TypeAdapter(
    responses_types.ResponseStreamEvent
)


def _sse_payloads(data: bytes) -> list[bytes]:
    """The ``data:`` payloads of rendered server-sent events (``[DONE]`` left out)."""
    out: list[bytes] = []
    for event in data.split(b"\n\n"):
        for line in event.split(b"\n"):
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                out.append(line[len(b"data: ") :])
    return out


def chat_body(arguments: Mapping[str, object]) -> bytes:
    """The JSON the SDK would send for these ``chat.completions.create`` arguments."""
    return json.dumps({k: v for k, v in arguments.items() if v is not None}).encode()


@dataclass(frozen=True)
class Prepared:
    """A request checked and sealed, ready to send."""

    kind: Kind
    sealed: SealedRequest
    encoded: bytes
    opener: ResponseOpener
    generate: GenerateRequest
    stream: bool
    include_usage: bool
    responses_request: ResponsesRequest | None


def prepare(
    kind: Kind,
    arguments: Mapping[str, object],
    nodes: VerifiedNodes,
    *,
    random: Random,
) -> Prepared:
    """Check ``arguments`` (as the ingress would), seal them to ``nodes``.

    An argument the API refuses is an :class:`~mantle.APIError` (status 400,
    the parameter named), raised before anything is sealed or sent.
    """
    body = chat_body(arguments)
    seed = random.randbelow(_U32)
    refused: OpenAIRequestError | None = None
    responses_request: ResponsesRequest | None = None
    try:
        if kind is Kind.CHAT:
            chat = parse_chat_request(body, limits=CLIENT_LIMITS, default_seed=seed)
            generate, stream, include_usage = chat.generate, chat.stream, chat.include_usage
        else:
            responses_request = parse_responses_request(
                body, limits=CLIENT_LIMITS, default_seed=seed
            )
            generate, stream, include_usage = (
                responses_request.generate,
                responses_request.stream,
                True,
            )
    except OpenAIRequestError as error:
        refused = error
    if refused is not None:
        raise APIError(
            400,
            refused.message,
            type="invalid_request_error",
            param=refused.param,
            code=refused.code,
        )
    if generate.model != nodes.model:
        raise ValueError("the request names another model than the verified nodes serve")
    request_body = RequestBody.of(generate)
    sealed, key = seal_request(
        request_body,
        model=generate.model,
        max_tokens=generate.max_tokens,
        candidates=[node.static_key for node in nodes.nodes],
        entropy=random.token_bytes,
    )
    # What the node computes from what it opened: the same fields, canonically.
    opened = request_body.to_request(model=generate.model, max_tokens=generate.max_tokens)
    opener = ResponseOpener(
        key, sealed.request_id, request_sha256=request_digest(sealed.request_id, opened)
    )
    return Prepared(
        kind=kind,
        sealed=sealed,
        encoded=sealed.encode(),
        opener=opener,
        generate=opened,
        stream=stream,
        include_usage=include_usage,
        responses_request=responses_request,
    )


class Exchange:
    """The answer side of one :class:`Prepared` request: feed it records."""

    def __init__(
        self, prepared: Prepared, nodes: VerifiedNodes, *, random: Random, created_s: int
    ) -> None:
        self._prepared = prepared
        self._nodes = nodes
        self._pieces: list[CustomerData] = []
        self._saved: SavedReceipt | None = None
        token = random.token_bytes(12).hex()
        created = created_s
        model = prepared.generate.model
        self._completion_id = f"chatcmpl-{token}"
        self._created = created
        self._chat_stream = ChatStreamRenderer(
            completion_id=self._completion_id,
            created=created,
            model=model,
            include_usage=prepared.include_usage,
        )
        self._responses: ResponseRenderer | None = None
        if prepared.responses_request is not None:
            self._responses = ResponseRenderer(
                response_id=f"resp_{token}",
                message_id=f"msg_{token}",
                created_at=created,
                request=prepared.responses_request,
            )
        self._started = False

    @property
    def saved_receipt(self) -> SavedReceipt | None:
        return self._saved

    def _open(self, record: bytes) -> GenerateChunk | ResponseFinal:
        refusal: E2EError | None = None
        try:
            return self._prepared.opener.open(record)
        except E2EError as error:
            refusal = error
        receipt = refusal.check.startswith("receipt.")
        check = ClientCheck.RECEIPT if receipt else ClientCheck.RESPONSE
        raise AttestationError(check, f"{refusal.check}: the answer is refused")

    def _check_receipt(self, final: ResponseFinal) -> SavedReceipt:
        """The receipt key must be a verified candidate's; the receipt for this
        model, its digest in the verified release, that release's version."""
        receipt = final.receipt
        node: VerifiedNode | None = None
        binding: bytes | None = None
        try:
            binding = receipt_key_binding(receipt.receipt_key)
        except ValueError:
            binding = None
        if binding is not None:
            node = self._nodes.node_for_receipt_binding(binding)
        if node is None:
            raise AttestationError(
                ClientCheck.RECEIPT, "the receipt key is no verified node's attested receipt key"
            )
        model = self._prepared.generate.model
        digest: bytes | None = None
        try:
            digest = release_measurement(self._nodes.release, model).model_digest
        except MeasurementError:
            digest = None
        if (
            receipt.model != model
            or digest is None
            or not hmac.compare_digest(receipt.model_sha384, digest)
            or receipt.release_version != self._nodes.release.version
        ):
            raise AttestationError(
                ClientCheck.RECEIPT, "the receipt names another model, digest or release"
            )
        return SavedReceipt(
            receipt=receipt,
            request_sha256=receipt.request_sha256,
            response_sha256=receipt.response_sha256,
            document_kind=node.attestation.kind,
            document=node.document,
        )

    # -- streaming -------------------------------------------------------------------

    def stream_record(self, record: bytes) -> list[Any]:
        """The SDK objects (chat chunks or responses events) this record makes."""
        opened = self._open(record)
        out = self._start() if not self._started else []
        if isinstance(opened, GenerateChunk):
            self._pieces.append(opened.text)
            if self._prepared.kind is Kind.CHAT:
                out += self._chunks(self._chat_stream.delta(opened.text))
            else:
                assert self._responses is not None
                out += self._events(self._responses.delta(opened.text))
            return out
        self._saved = self._check_receipt(opened)
        usage = Usage(opened.done.prompt_tokens, opened.done.completion_tokens)
        if self._prepared.kind is Kind.CHAT:
            out += self._chunks(self._chat_stream.finish(opened.done.finish_reason, usage))
        else:
            assert self._responses is not None
            out += self._events(self._responses.finish(opened.done.finish_reason, usage))
        return out

    def _start(self) -> list[Any]:
        self._started = True
        if self._prepared.kind is Kind.CHAT:
            return self._chunks(self._chat_stream.start())
        assert self._responses is not None
        return self._events(self._responses.start())

    @staticmethod
    def _chunks(data: bytes) -> list[Any]:
        return [chat_types.ChatCompletionChunk.model_validate_json(p) for p in _sse_payloads(data)]

    @staticmethod
    def _events(data: bytes) -> list[Any]:
        return [_STREAM_EVENT.validate_json(p) for p in _sse_payloads(data)]

    def end_of_stream(self) -> SavedReceipt:
        """The stream ended: its verified receipt, or the refusal of a cut-short one."""
        refusal: E2EError | None = None
        try:
            self._prepared.opener.finish()
        except E2EError as error:
            refusal = error
        if refusal is not None:
            raise AttestationError(ClientCheck.RESPONSE, f"{refusal.check}: the answer is refused")
        assert self._saved is not None
        return self._saved

    # -- whole answers ---------------------------------------------------------------

    def collect(self, record: bytes) -> None:
        """Non-streaming: take the next record of the answer."""
        opened = self._open(record)
        if isinstance(opened, GenerateChunk):
            self._pieces.append(opened.text)
            if self._responses is not None:
                self._responses.add(opened.text)
        else:
            self._saved = self._check_receipt(opened)

    def result(self) -> ChatCompletion | Response:
        """Non-streaming: the whole answer, once the stream ended."""
        saved = self.end_of_stream()
        final = self._prepared.opener.final
        assert final is not None
        usage = Usage(final.done.prompt_tokens, final.done.completion_tokens)
        result: ChatCompletion | Response
        if self._prepared.kind is Kind.CHAT:
            result = ChatCompletion.model_validate_json(
                render_chat_completion(
                    completion_id=self._completion_id,
                    created=self._created,
                    model=self._prepared.generate.model,
                    pieces=self._pieces,
                    finish_reason=final.done.finish_reason,
                    usage=usage,
                )
            )
        else:
            assert self._responses is not None
            result = Response.model_validate_json(
                self._responses.render_response(final.done.finish_reason, usage)
            )
        result._saved = saved
        return result
