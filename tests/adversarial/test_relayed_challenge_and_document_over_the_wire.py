"""Attack: a man in the middle relays a genuine node's challenge and document to
the keys node, to obtain a data key grant it can use.

The operator runs a process with its own Noise key between a genuine
inference node and the keys node. It has its own channel to the keys node
and can make the genuine node attest over any nonce it likes (it owns the
host). Each relay fails:

* the keys node's challenge, issued on the attacker's channel, answered with
  the genuine node's document: the grant is sealed to the key that document
  binds -- the genuine node's -- so the attacker cannot open it;
* the same request with the attacker's key put in: the document binds the
  genuine node's key, so the keys node denies it (attestation);
* the genuine node's own request (over a challenge issued on its own channel)
  replayed on the attacker's channel: the challenge is bound to the channel
  it was issued on, so it is unknown here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from _custody_kit import MODEL, CustodyCloud, new_key_pair
from _keys_wire_kit import RANDOM, ask, dial, keys_node_verifier, serving_keys_node

from actors.key_custody import import_data_key
from protocol.key_custody import (
    Challenge,
    ChallengeRequest,
    DataKeyGrant,
    Denial,
    EnvelopeError,
    KeyDenied,
    grant_prologue,
    open_envelope,
)

pytestmark = pytest.mark.anyio

DATA_KEY = bytes(range(32))


async def test_relayed_challenges_and_documents_yield_no_usable_grant(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    genuine_tpm, genuine = cloud.inference_node("inference-1")
    attacker = new_key_pair()
    async with serving_keys_node(cloud) as keys:
        async with await dial(keys.port, cloud.provider, keys_node_verifier(cloud)) as provider:
            await import_data_key(
                provider, cloud.provider, MODEL, DATA_KEY, key_version=1, entropy=RANDOM.token_bytes
            )
        async with (
            await dial(keys.port, attacker, keys_node_verifier(cloud)) as middle,
            await dial(keys.port, genuine.static, keys_node_verifier(cloud)) as honest,
        ):
            # 1. The attacker's challenge, the genuine node's document over it.
            challenge = await ask(middle, ChallengeRequest())
            assert isinstance(challenge, Challenge)
            relayed = genuine.data_key_request(
                genuine_tpm, challenge=challenge.nonce, model_id=MODEL
            )
            grant = await ask(middle, relayed, 2)
            assert isinstance(grant, DataKeyGrant)
            prologue = grant_prologue(relayed.nonce, grant.model_id, grant.key_version)
            with pytest.raises(EnvelopeError):
                open_envelope(attacker, cloud.keys_static, prologue, grant.envelope)

            # 2. The same, with the attacker's key where the grant goes.
            challenge = await ask(middle, ChallengeRequest(), 3)
            assert isinstance(challenge, Challenge)
            rebound = dataclasses.replace(
                genuine.data_key_request(genuine_tpm, challenge=challenge.nonce, model_id=MODEL),
                static_public=attacker.public,
            )
            denied = await ask(middle, rebound, 4)
            assert isinstance(denied, KeyDenied)
            assert denied.denial is Denial.ATTESTATION

            # 3. The genuine node's own request, replayed on the attacker's channel.
            own = await ask(honest, ChallengeRequest())
            assert isinstance(own, Challenge)
            stolen = genuine.data_key_request(genuine_tpm, challenge=own.nonce, model_id=MODEL)
            assert await ask(middle, stolen, 5) == KeyDenied(Denial.UNKNOWN_CHALLENGE)
        assert DATA_KEY not in repr(keys.errors).encode()
