"""Attack: flush another node's key-release challenge by asking for challenges in a loop.

Before the fix the keys node kept one global FIFO of 4096 outstanding
challenges: any peer asking 4096 times pushed every other peer's challenge
out, so a node that had just attested over its challenge was refused
(``unknown_challenge``) -- one chatty peer denied key release to all others.

Now challenges are issued to the requester's authenticated identity (its
channel's Noise static key) and carry their own proof of issue (a tag over
peer, issue time and a random part), so the vault keeps no table of
outstanding challenges for anyone to flush: a request must come from the
peer its challenge was issued to, each challenge answers once, and no number
of identities asking evicts or locks out anyone
(test_sybil_challenges_lock_out_new_peers.py holds new peers' side).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from _custody_kit import CustodyCloud, new_key_pair

from actors.key_custody import Denial, KeyReleaseDenied
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

    # The flooder's challenges are its own: one does not answer the node's
    # document (attested over another nonce)...
    with pytest.raises(KeyReleaseDenied) as caught:
        cloud.vault.release_data_key(replace(request, nonce=flood[0]), peer=flooder)
    assert caught.value.attestation_check == "nonce"
    # ...and it cannot spend the node's challenge from its own channel.
    with pytest.raises(KeyReleaseDenied) as caught:
        cloud.vault.release_data_key(request, peer=flooder)
    assert caught.value.denial is Denial.UNKNOWN_CHALLENGE

    # The node's challenge survived the flood and the theft attempt.
    grant = cloud.grant(request, node)
    assert node.accept_grant(request, grant, keys_node_static=cloud.keys_static) == 1


def test_each_of_a_peers_challenges_answers_once(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    cloud.vault.add_data_key(MODEL, SystemRandom().token_bytes(DATA_KEY_SIZE))
    tpm, node = cloud.inference_node("inference-1")
    # A node asking several times in a row (one per key it fetches) loses none.
    requests = [cloud.request(tpm, node) for _ in range(5)]
    for request in requests:
        node.accept_grant(request, cloud.grant(request, node), keys_node_static=cloud.keys_static)
    for request in requests:
        with pytest.raises(KeyReleaseDenied) as caught:
            cloud.grant(request, node)
        assert caught.value.denial is Denial.UNKNOWN_CHALLENGE


def test_many_identities_cannot_evict_a_tracked_peer(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    cloud.vault.add_data_key(MODEL, SystemRandom().token_bytes(DATA_KEY_SIZE))
    tpm, node = cloud.inference_node("inference-1")
    request = cloud.request(tpm, node)

    # Noise static keys are free: a Sybil asks under thousands of identities...
    for index in range(5000):
        cloud.vault.issue_challenge(index.to_bytes(32, "big"))
    # ...the node's challenge is still there, and a latecomer is still served.
    assert node.accept_grant(
        request, cloud.grant(request, node), keys_node_static=cloud.keys_static
    )
    latecomer = new_key_pair().public
    assert len(cloud.vault.issue_challenge(latecomer)) == 32
    # Challenges still expire.
    stale = cloud.request(tpm, node)
    cloud.wall.advance(61)
    with pytest.raises(KeyReleaseDenied) as caught:
        cloud.grant(stale, node)
    assert caught.value.denial is Denial.EXPIRED_CHALLENGE
