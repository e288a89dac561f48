"""Attack: a node running a release nobody logged asks the keys node for the
model's data key over the wire.

The operator boots a genuine machine of the cloud into its own build (the
application registers show a patched release), dials the keys node, which
proves itself like to anyone, asks a challenge and answers it with a fresh,
genuine document of that machine. The keys node verifies the document
against the model's policy -- the logged releases' registers -- and answers
``keys.denied`` naming the attestation check; no grant is sent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _custody_kit import MODEL, CustodyCloud
from _keys_wire_kit import (
    RANDOM,
    dial,
    keys_node_verifier,
    serving_keys_node,
    unlisted_release_node,
)

from actors.key_custody import KeyExchangeCheck, KeyExchangeRefused, fetch_data_key, import_data_key
from protocol.attestation import Check
from protocol.key_custody import Denial

pytestmark = pytest.mark.anyio


async def test_a_node_of_an_unlisted_release_is_denied_the_data_key(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    tpm, custody = unlisted_release_node(cloud, "operator's build")
    async with serving_keys_node(cloud) as keys:
        async with await dial(keys.port, cloud.provider, keys_node_verifier(cloud)) as provider:
            await import_data_key(
                provider,
                cloud.provider,
                MODEL,
                bytes(32),
                key_version=1,
                entropy=RANDOM.token_bytes,
            )
        async with await dial(keys.port, custody.static, keys_node_verifier(cloud)) as channel:
            with pytest.raises(KeyExchangeRefused) as refused:
                await fetch_data_key(channel, custody, tpm, MODEL)
    assert refused.value.check is KeyExchangeCheck.DENIED
    assert refused.value.denial is Denial.ATTESTATION
    assert refused.value.attestation_check == Check.PCR_POLICY.value
    assert not custody.has_data_key(MODEL, 1)
