"""Attack: flush another node's key-release challenge by asking for challenges in a loop.

Before the fix the keys node kept one global FIFO of 4096 outstanding
challenges: any peer asking 4096 times pushed every other peer's challenge
out, so a node that had just attested over its challenge was refused
(``unknown_challenge``) -- one chatty peer denied key release to all others.

Now challenges are issued to the requester's authenticated identity (its
channel's Noise static key): one peer holds at most
``MAX_CHALLENGES_PER_PEER`` (its own oldest goes first), a request must come
from the peer its challenge was issued to, and a full peer table refuses
newcomers instead of evicting anyone.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from _custody_kit import CustodyCloud, new_key_pair

from actors.key_custody import (
    MAX_CHALLENGE_PEERS,
    MAX_CHALLENGES_PER_PEER,
    Denial,
    KeyReleaseDenied,
)
from nodes.random import SystemRandom
from protocol.sealed_model import DATA_KEY_SIZE

MODEL = "smol"


def test_one_peer_asking_in_a_loop_does_not_flush_another_peers_challenge(
    tmp_path: Path,
) -> None:
    cloud = CustodyCloud(tmp_path)
    cloud.vault.add_data_key(MODEL, SystemRandom().token_bytes(DATA_KEY_SIZE))
    tpm, node = cloud.inference_node("inference-1")
    request = cloud.request(tpm, node)  # attested over its challenge

    flooder = new_key_pair().public
    flood = [cloud.vault.issue_challenge(flooder) for _ in range(5000)]

    # The flooder only ever held its own last few challenges...
    with pytest.raises(KeyReleaseDenied) as caught:
        cloud.vault.release_data_key(replace(request, nonce=flood[0]), peer=flooder)
    assert caught.value.denial is Denial.UNKNOWN_CHALLENGE
    # ...and cannot spend the node's challenge from its own channel.
    with pytest.raises(KeyReleaseDenied) as caught:
        cloud.vault.release_data_key(request, peer=flooder)
    assert caught.value.denial is Denial.UNKNOWN_CHALLENGE

    # The node's challenge survived the flood and the theft attempt.
    grant = cloud.grant(request, node)
    assert node.accept_grant(request, grant, keys_node_static=cloud.keys_static) == 1


def test_a_peer_keeps_only_its_own_newest_challenges(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    cloud.vault.add_data_key(MODEL, SystemRandom().token_bytes(DATA_KEY_SIZE))
    tpm, node = cloud.inference_node("inference-1")
    requests = [cloud.request(tpm, node) for _ in range(MAX_CHALLENGES_PER_PEER + 1)]
    # The oldest went first; the newest MAX_CHALLENGES_PER_PEER still answer.
    with pytest.raises(KeyReleaseDenied) as caught:
        cloud.grant(requests[0], node)
    assert caught.value.denial is Denial.UNKNOWN_CHALLENGE
    for request in requests[1:]:
        node.accept_grant(request, cloud.grant(request, node), keys_node_static=cloud.keys_static)


def test_many_identities_cannot_evict_a_tracked_peer(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    cloud.vault.add_data_key(MODEL, SystemRandom().token_bytes(DATA_KEY_SIZE))
    tpm, node = cloud.inference_node("inference-1")
    request = cloud.request(tpm, node)

    # Noise static keys are free: a Sybil fills the peer table...
    for index in range(MAX_CHALLENGE_PEERS - 1):
        cloud.vault.issue_challenge(index.to_bytes(32, "big"))
    with pytest.raises(KeyReleaseDenied) as caught:
        cloud.vault.issue_challenge(new_key_pair().public)
    assert caught.value.denial is Denial.TOO_MANY_PEERS
    # ...but the tracked node's challenge is still there.
    assert node.accept_grant(
        request, cloud.grant(request, node), keys_node_static=cloud.keys_static
    )

    # The slot it freed is taken again; still nobody is evicted.
    cloud.vault.issue_challenge(MAX_CHALLENGE_PEERS.to_bytes(32, "big"))
    latecomer = new_key_pair().public
    with pytest.raises(KeyReleaseDenied) as caught:
        cloud.vault.issue_challenge(latecomer)
    assert caught.value.denial is Denial.TOO_MANY_PEERS
    # Once the Sybil's challenges expire, their slots go to whoever asks next.
    cloud.wall.advance(61)
    assert len(cloud.vault.issue_challenge(latecomer)) == 32
