"""Attack: hold a challenge for each of many throwaway identities, locking new peers out.

Before the fix the keys node kept a table of outstanding challenges for at
most 1024 peers, and a full table refused every new peer
(``too_many_peers``) rather than evict anyone. Noise static keys are free and
issuing needs no attestation, so 1024 throwaway keys, each asking again within
the 60 s TTL, kept every new inference node from ever getting a challenge --
and so a data key.

Now challenges are stateless (an HMAC under a key the vault drew at start over
the peer, the issue time and a random part) and only used nonces are
remembered, until they expire. Identities asking, or even spending their
challenges on junk requests, hold nothing a newcomer needs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _custody_kit import MODEL, CustodyCloud

from actors.key_custody import Denial, KeyReleaseDenied
from nodes.random import SystemRandom
from protocol.key_custody import DataKeyRequest
from protocol.sealed_model import DATA_KEY_SIZE

#: The old table's size: this many identities filled it.
OLD_PEER_TABLE = 1024


def test_throwaway_identities_refreshing_challenges_do_not_lock_out_a_new_node(
    tmp_path: Path,
) -> None:
    cloud = CustodyCloud(tmp_path)
    cloud.vault.add_data_key(MODEL, SystemRandom().token_bytes(DATA_KEY_SIZE))
    sybils = [SystemRandom().token_bytes(32) for _ in range(OLD_PEER_TABLE)]
    tpm, node = cloud.inference_node("late-node")
    for _ in range(3):  # three TTL periods
        held = [(sybil, cloud.vault.issue_challenge(sybil)) for sybil in sybils]
        cloud.wall.advance(50)  # every Sybil challenge is still young
        assert cloud.fetch(tpm, node) == 1
        # Spending them on junk requests does not fill anything a newcomer needs.
        for sybil, nonce in held:
            junk = DataKeyRequest(
                model_id=MODEL,
                key_version=None,
                nonce=nonce,
                evidence=b"not a document",
                static_public=sybil,
            )
            with pytest.raises(KeyReleaseDenied) as caught:
                cloud.vault.release_data_key(junk, peer=sybil)
            assert caught.value.denial is Denial.ATTESTATION
        assert cloud.fetch(tpm, node) == 1
