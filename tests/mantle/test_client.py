"""``mantle.AsyncClient`` and ``mantle.Client`` against a Mantle ingress in a box
(``_e2e_ingress_kit``: a real release and log, nodes booted on simulated NitroTPMs,
requests opened and answers sealed by ``protocol.e2e``), on asyncio and trio."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from _e2e_ingress_kit import MODEL, E2EIngress, reply_for
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import Response as SdkResponse

import mantle
from mantle.trust_state import TrustStateFile
from protocol.e2e import receipt_key_binding

pytestmark = pytest.mark.anyio
CANARY = "CANARY-e2e-client-51c2 the heron flies at dusk"
USER = [{"role": "user", "content": CANARY}]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _canary_absent(box: E2EIngress) -> None:
    for relayed in box.relayed:
        assert CANARY.encode() not in relayed
        assert b"heron" not in relayed


async def test_chat_completion_end_to_end_with_a_verified_receipt(tmp_path: Path) -> None:
    box = E2EIngress(tmp_path)
    async with mantle.AsyncClient(**box.client_arguments(tmp_path)) as client:
        out = await client.chat.completions.create(model=MODEL, messages=USER, max_tokens=8)
    assert out.choices[0].message.content == "".join(reply_for(len(CANARY)))
    assert out.choices[0].finish_reason == "stop"
    assert out.usage is not None and out.usage.prompt_tokens == len(CANARY)
    # The receipt is the serving node's, bound by its verified document.
    bindings = {receipt_key_binding(node.receipt_public) for node in box.nodes}
    assert receipt_key_binding(out.receipt.receipt_key) in bindings
    assert out.receipt.release_version == box.release.version
    assert out.saved_receipt.document
    _canary_absent(box)


async def test_chat_stream_yields_sdk_chunks_and_ends_with_the_receipt(tmp_path: Path) -> None:
    box = E2EIngress(tmp_path)
    async with mantle.AsyncClient(**box.client_arguments(tmp_path)) as client:
        stream = await client.chat.completions.create(
            model=MODEL, messages=USER, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    assert all(isinstance(chunk, ChatCompletionChunk) for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(reply_for(len(CANARY)))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert stream.receipt is not None
    _canary_absent(box)


async def test_responses_whole_and_streamed(tmp_path: Path) -> None:
    box = E2EIngress(tmp_path)
    async with mantle.AsyncClient(**box.client_arguments(tmp_path)) as client:
        whole = await client.responses.create(model=MODEL, input=CANARY, max_output_tokens=2)
        stream = await client.responses.create(model=MODEL, input=CANARY, stream=True)
        events = [event async for event in stream]
    assert isinstance(whole, SdkResponse)
    assert whole.output_text == "".join(reply_for(len(CANARY))[:2])
    assert whole.status == "incomplete" and whole.receipt.model == MODEL
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    _canary_absent(box)


async def test_the_verified_set_is_cached_within_its_window_then_verified_again(
    tmp_path: Path,
) -> None:
    box = E2EIngress(tmp_path)
    async with mantle.AsyncClient(**box.client_arguments(tmp_path), freshness_s=60) as client:
        for _ in range(3):
            await client.chat.completions.create(model=MODEL, messages=USER, max_tokens=1)
        assert box.requests.count("/v1/mantle/nodes") == 1
        box.clock.advance(61)
        await client.chat.completions.create(model=MODEL, messages=USER, max_tokens=1)
        assert box.requests.count("/v1/mantle/nodes") == 2
        # Past half the window a refresh runs in the background; the request
        # is served from the cached set meanwhile.
        box.clock.advance(31)
        await client.chat.completions.create(model=MODEL, messages=USER, max_tokens=1)
        with anyio.fail_after(30):
            while box.requests.count("/v1/mantle/nodes") < 3:
                await anyio.sleep(0.01)
    assert len(set(box.nonces)) == 3  # a fresh nonce each time


async def test_the_tree_head_and_floor_are_kept_on_disk(tmp_path: Path) -> None:
    box = E2EIngress(tmp_path)
    arguments = box.client_arguments(tmp_path)
    async with mantle.AsyncClient(**arguments) as client:
        await client.verify(MODEL)
    state = TrustStateFile(Path(str(arguments["trust_state"]))).load()
    assert box.kit.log is not None
    assert state.tree_head is not None and state.tree_head == box.kit.log.sth()


async def test_an_unsupported_parameter_is_refused_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    box = E2EIngress(tmp_path)
    async with mantle.AsyncClient(**box.client_arguments(tmp_path)) as client:
        with pytest.raises(mantle.APIError) as refused:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "tool", "content": CANARY}]
            )
    assert refused.value.status == 400 and refused.value.param is not None
    assert CANARY not in str(refused.value)
    assert "/v1/mantle/chat" not in box.requests


async def test_429_is_rate_limited_with_its_retry_delay_and_errors_are_typed(
    tmp_path: Path,
) -> None:
    box = E2EIngress(tmp_path)
    async with mantle.AsyncClient(**box.client_arguments(tmp_path)) as client:
        box.chat_status = (429, {"retry-after": "7"}, b'{"error": {"message": "queue full"}}')
        with pytest.raises(mantle.RateLimited) as limited:
            await client.chat.completions.create(model=MODEL, messages=USER)
        assert limited.value.retry_after == 7.0
        body = {"error": {"message": "unknown model", "type": "invalid_request_error"}}
        box.chat_status = (404, {}, json.dumps(body).encode())
        with pytest.raises(mantle.APIError) as missing:
            await client.chat.completions.create(model=MODEL, messages=USER)
    assert missing.value.status == 404 and missing.value.type == "invalid_request_error"


async def test_an_error_frame_mid_stream_is_an_api_error(tmp_path: Path) -> None:
    box = E2EIngress(tmp_path)
    box.fail_after_records = 2
    async with mantle.AsyncClient(**box.client_arguments(tmp_path)) as client:
        stream = await client.chat.completions.create(model=MODEL, messages=USER, stream=True)
        texts: list[str] = []
        with pytest.raises(mantle.APIError) as failed:
            async for chunk in stream:
                texts.append(chunk.choices[0].delta.content or "")
    assert failed.value.type == "server_error" and stream.receipt is None
    assert "".join(texts) == "".join(reply_for(len(CANARY))[:2])


def test_the_blocking_client_streams_and_closes(tmp_path: Path) -> None:
    box = E2EIngress(tmp_path)
    with mantle.Client(**box.client_arguments(tmp_path), backend="trio") as client:
        out = client.chat.completions.create(model=MODEL, messages=USER)
        with client.chat.completions.create(model=MODEL, messages=USER, stream=True) as stream:
            chunks = list(stream)
    assert out.choices[0].message.content == "".join(reply_for(len(CANARY)))
    assert isinstance(chunks[0], ChatCompletionChunk) and stream.receipt is not None


# -- settings ------------------------------------------------------------------------------


def test_a_missing_pin_is_a_typed_error_naming_it(tmp_path: Path) -> None:
    box = E2EIngress(tmp_path, nodes=0)
    arguments = box.client_arguments(tmp_path)
    del arguments["tlog_key"]
    with pytest.raises(mantle.ClientConfigError) as missing:
        mantle.load_settings(
            **{
                k: v
                for k, v in arguments.items()
                if k in ("url", "api_key", "attestation_root", "release_root")
            },
            env={},
        )
    assert missing.value.setting == "tlog_key"


def test_settings_from_the_environment_and_a_toml_file(tmp_path: Path) -> None:
    box = E2EIngress(tmp_path, nodes=0)
    pins = box.pin_files(tmp_path / "pins")
    config = tmp_path / "mantle.toml"
    config.write_text(
        f'url = "https://from-file.test"\napi_key = "mk-file"\n'
        f'attestation_root = "pins/{pins["attestation_root"].name}"\n'
        f'release_root = "pins/{pins["release_root"].name}"\n'
    )
    env = {
        "MANTLE_CONFIG": str(config),
        "MANTLE_TLOG_KEY": str(pins["tlog_key"]),
        "MANTLE_API_KEY": "mk-env",
        "XDG_STATE_HOME": str(tmp_path / "xdg"),
    }
    settings = mantle.load_settings(env=env)
    assert settings.url == "https://from-file.test" and settings.api_key == "mk-env"
    assert settings.pins.log_public_key == box.kit.log_public_key
    assert settings.trust_state == tmp_path / "xdg" / "mantle" / "trust-state.json"
    assert settings.tls_cert_pem is None
    # An argument wins over both.
    assert mantle.load_settings(url="https://arg.test", env=env).url == "https://arg.test"
