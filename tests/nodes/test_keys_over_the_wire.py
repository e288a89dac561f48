"""Key custody over real TCP on loopback: a model provider imports a data key,
an inference node fetches it, and the sealed model decrypts with it; the
keys node's connections are bounded.

Two simulated NitroTPM nodes booted from a real release (``_custody_kit``),
the keys node's supervised vault served by ``serve_key_custody`` on
``nodes.tcp.serve_secure`` (``_keys_wire_kit``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import anyio
import pytest
from _custody_kit import MODEL, WEIGHTS, CustodyCloud, new_key_pair
from _keys_wire_kit import dial, keys_node_verifier, serving_keys_node

from actors.key_custody import (
    KeyChannelCheck,
    KeyChannelError,
    fetch_data_key,
    import_data_key,
    serve_key_custody,
)
from nodes.model_store import open_sealed_model, seal_model_file
from nodes.random import SystemRandom
from protocol.framing import TruncatedStream
from protocol.key_custody import ChallengeRequest
from protocol.messages import Envelope
from protocol.sealed_model import DATA_KEY_SIZE

pytestmark = pytest.mark.anyio

DATA_KEY = hashlib.sha256(b"wire data key").digest()
assert len(DATA_KEY) == DATA_KEY_SIZE


async def test_a_provider_imports_a_node_fetches_and_the_model_decrypts(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    tpm, custody = cloud.inference_node("inference-1")
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(WEIGHTS)
    info = seal_model_file(
        gguf,
        tmp_path / "model.sealed",
        model_id=MODEL,
        key_version=1,
        data_key=DATA_KEY,
        random=SystemRandom(),
    )
    async with serving_keys_node(cloud) as keys:
        async with await dial(keys.port, cloud.provider, keys_node_verifier(cloud)) as provider:
            version = await import_data_key(
                provider,
                cloud.provider,
                MODEL,
                DATA_KEY,
                key_version=1,
                entropy=SystemRandom().token_bytes,
            )
        assert version == 1
        async with await dial(keys.port, custody.static, keys_node_verifier(cloud)) as channel:
            assert await fetch_data_key(channel, custody, tpm, MODEL) == 1
        assert keys.errors == []
    with open_sealed_model(
        tmp_path / "model.sealed",
        custody.data_key_for,
        model_id=MODEL,
        expected_length=info.plaintext_length,
        expected_sha384=info.plaintext_sha384,
    ) as weights:
        assert Path(weights.path).read_bytes() == WEIGHTS


async def test_a_connection_makes_a_bounded_number_of_requests(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    asker = new_key_pair()
    async with serving_keys_node(
        cloud, handler=lambda ask: serve_key_custody(ask, max_requests=2)
    ) as keys:
        async with await dial(keys.port, asker, keys_node_verifier(cloud)) as channel:
            for request_id in (1, 2):
                await channel.send_message(Envelope.wrap(ChallengeRequest(), request_id=request_id))
                assert (await channel.receive_message()).request_id == request_id
            # The third is not answered: the keys node ended the connection.
            await channel.send_message(Envelope.wrap(ChallengeRequest(), request_id=3))
            with anyio.fail_after(5), pytest.raises(TruncatedStream):
                await channel.receive_message()
        await _settle(keys.errors)
        assert [getattr(e, "check", None) for e in keys.errors] == [
            KeyChannelCheck.TOO_MANY_REQUESTS
        ]


async def test_an_idle_connection_is_cut(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    async with serving_keys_node(
        cloud, handler=lambda ask: serve_key_custody(ask, idle_timeout=0.3)
    ) as keys:
        async with await dial(keys.port, new_key_pair(), keys_node_verifier(cloud)) as channel:
            with anyio.fail_after(5), pytest.raises(TruncatedStream):
                await channel.receive()
        await _settle(keys.errors)
        assert isinstance(keys.errors[0], KeyChannelError)
        assert keys.errors[0].check is KeyChannelCheck.IDLE


async def _settle(errors: list[Exception]) -> None:
    with anyio.fail_after(5):
        while not errors:
            await anyio.sleep(0.01)
