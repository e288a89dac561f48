"""Attack: have ``mantle-node dev`` hand the model's data key to a keys node outside the release.

The operator runs a "keys node" on a genuine machine of the (simulated)
cloud, but its application registers show a release nobody logged (patched
code). The dev cluster, acting as the model provider, must check the keys
node's attestation on the channel -- chain to the pinned root, the
channel's nonce, the bound key, and the PCRs of a node of the verified
release -- before the key leaves: the import is refused with a typed error
naming the failed check, and nothing reaches the impostor's vault.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from _dev_keys_node import KeysNodeKit

from nodes.devcluster import DevClusterCheck, DevClusterError


def test_data_key_is_not_sent_to_a_keys_node_with_unlogged_registers(tmp_path: Path) -> None:
    kit = KeysNodeKit.create(tmp_path, impostor=True)

    async def main() -> None:
        async with anyio.create_task_group() as group:
            port = await group.start(kit.serve)
            with pytest.raises(DevClusterError) as refused:
                await kit.provision(port)
            group.cancel_scope.cancel()
        assert refused.value.check is DevClusterCheck.KEY_IMPORT
        assert "attestation was refused (pcr_policy)" in str(refused.value)
        assert refused.value.__context__ is None

    anyio.run(main, backend="trio")
    assert kit.imports == []
