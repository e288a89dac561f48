"""Attack: serve the API from a genuine machine that runs code no release lists.

The operator boots the ingress's release, then runs something else on it (or
boots a patched tree): the machine is genuine and signs over the client's
nonce, binding the TLS key its code generated, but its application registers
no longer show the logged release. The client refuses (``pcr_policy``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from _ingress_attestation import attested_ingress, boot_ingress

from protocol.attestation import AttestationError, Check
from protocol.measurement import RELEASE_PCR


def test_a_node_whose_registers_show_another_release_is_refused(tmp_path: Path) -> None:
    node = boot_ingress(tmp_path)
    node.tpm.pcr_extend(RELEASE_PCR, hashlib.sha384(b"patched serving code").digest())
    with attested_ingress(tmp_path, node) as client, pytest.raises(AttestationError) as refused:
        client.verify()
    assert refused.value.check is Check.PCR_POLICY
