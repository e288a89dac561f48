"""Attack: anyone may ask ``/v1/attestation`` for a fresh document (no API
key: clients verify the node before they send it one), and each document
costs the TPM a signature. A flood of nonces would keep the TPM busy for
everything else the node needs it for.

The ingress produces at most ``max_concurrent_attestations`` documents at
once and answers the rest 429 with ``Retry-After`` at once, without touching
the TPM.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import pytest
import trio
from _ingress_kit import RunningIngress, running_ingress

from actors.ingress import IngressLimits


class SlowTpm:
    """An attestation source that takes its time, counting how many run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.produced = 0

    async def __call__(self, nonce: bytes) -> bytes:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await trio.sleep(0.4)
        finally:
            self.running -= 1
        self.produced += 1
        return b"document:" + nonce


TPM = SlowTpm()


@pytest.fixture(scope="module")
def ingress(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningIngress]:
    yield from running_ingress(
        tmp_path_factory.mktemp("ingress"), IngressLimits(max_concurrent_attestations=2), TPM
    )


def test_a_flood_of_attestation_requests_is_capped(ingress: RunningIngress) -> None:
    def ask(i: int) -> tuple[int, str | None]:
        with ingress.http() as http:
            reply = http.get("/v1/attestation", params={"nonce": f"{i:064x}"})
            return reply.status_code, reply.headers.get("retry-after")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    statuses = [status for status, _ in answers]
    assert TPM.most <= 2, "more documents were produced at once than the cap"
    assert statuses.count(200) == TPM.produced >= 1
    assert statuses.count(429) >= 1
    assert all(retry == "1" for status, retry in answers if status == 429)
    assert set(statuses) <= {200, 429}
