"""Attack: import a data key of the operator's choosing into the keys node over
the wire, so that nodes load weights the operator sealed (or the operator
knows the key they are sealed under).

The operator dials the keys node (which proves itself to anyone), and sends
a well-formed ``keys.data_key_import`` sealed to the keys node's attested key
-- from its own static key, not the model provider's key the release names.
The keys node authenticates an import by its envelope's sender alone (the
channel's key says nothing about who may import): ``keys.denied`` (unauthenticated
sender), nothing stored, and a genuine node then finds no key to fetch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _custody_kit import MODEL, CustodyCloud, new_key_pair
from _keys_wire_kit import RANDOM, dial, keys_node_verifier, serving_keys_node

from actors.key_custody import (
    KeyExchangeCheck,
    KeyExchangeRefused,
    fetch_data_key,
    import_data_key,
)
from protocol.key_custody import Denial

pytestmark = pytest.mark.anyio


async def test_an_import_from_another_key_is_refused_and_stores_nothing(tmp_path: Path) -> None:
    cloud = CustodyCloud(tmp_path)
    tpm, custody = cloud.inference_node("inference-1")
    operator = new_key_pair()
    async with serving_keys_node(cloud) as keys:
        async with await dial(keys.port, operator, keys_node_verifier(cloud)) as channel:
            with pytest.raises(KeyExchangeRefused) as refused:
                await import_data_key(
                    channel, operator, MODEL, bytes(32), key_version=1, entropy=RANDOM.token_bytes
                )
        assert refused.value.check is KeyExchangeCheck.DENIED
        assert refused.value.denial is Denial.UNAUTHENTICATED_SENDER
        async with await dial(keys.port, custody.static, keys_node_verifier(cloud)) as channel:
            with pytest.raises(KeyExchangeRefused) as nothing:
                await fetch_data_key(channel, custody, tpm, MODEL)
        assert nothing.value.denial is Denial.UNKNOWN_KEY
    assert len(cloud.stored) == 1  # the keyring file was never rewritten
