"""An ingress whose ``/v1/attestation`` answers with documents of a simulated NitroTPM.

:func:`attested_ingress` boots a node from a real release (``ReleaseKit``) on a
simulated NitroTPM, then runs the real ingress app under the real hypercorn
TLS server (``_ingress_kit``), its attestation route answering with the
TPM's documents. What the documents bind, and over which nonce, is the
test's to choose (``DocumentSource``): an honest node binds its own TLS key
over the client's nonce; an attacker relays, replays or binds another key.

:class:`ClientSide` is what a client holds: the pins (the simulated PKI's
root, the release root, the log key), the verified release and the pinned
certificate; :meth:`ClientSide.verify` runs :func:`mantle.verify_ingress`
from its own trio loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import trio
from _ingress_kit import IngressServer, start_ingress
from _release_kit import NOW, ReleaseKit

from actors.key_custody import NodeKeyCustody
from mantle import TrustPins, VerifiedIngress, pinned_tls_context, verify_ingress
from nodes.boot import measured_boot
from nodes.random import SystemRandom
from protocol.attestation import TrustAnchor, tls_key_binding
from protocol.release import VerifiedRelease
from simulations.clock import ManualClock
from simulations.nitrotpm import SimulatedNitroPKI, SimulatedNitroTPM

NOW_MS = int(NOW.timestamp() * 1000)


@dataclass
class BootedIngress:
    """The ingress node's TPM and key custody after measured boot of ``release``."""

    kit: ReleaseKit
    release: VerifiedRelease
    pki: SimulatedNitroPKI
    tpm: SimulatedNitroTPM
    custody: NodeKeyCustody
    clock: ManualClock

    def document(self, nonce: bytes, tls_spki_der: bytes) -> bytes:
        """What an honest ingress answers: its document over ``nonce``, binding
        the TLS key ``tls_spki_der``."""
        return self.custody.attest(self.tpm, nonce=nonce, user_data=tls_key_binding(tls_spki_der))


def boot_ingress(tmp: Path, *, pki_seed: str = "cloud") -> BootedIngress:
    kit = ReleaseKit(install_root=tmp / "install")
    files = kit.publish(1)
    release = kit.verified(files)
    pki = SimulatedNitroPKI(pki_seed)
    clock = ManualClock(NOW_MS)
    tpm = SimulatedNitroTPM(seed="ingress", pki=pki, clock=clock)
    booted = measured_boot(
        kit.boot_inputs(files, None, kit.node_state_dir(tpm)),
        tpm=tpm,
        random=SystemRandom(),
        now=NOW,
    )
    return BootedIngress(kit, release, pki, tpm, booted.custody, clock)


def client_pins(node: BootedIngress) -> TrustPins:
    """What a client of ``node``'s cluster pins: the PKI's root, the release root, the log key."""
    return TrustPins(
        attestation_root=TrustAnchor.from_der(node.pki.root_der),
        release_root=node.kit.root,
        log_public_key=node.kit.log_public_key,
    )


#: ``(nonce the client sent, SPKI of the TLS key the server presents) -> document``.
DocumentSource = Callable[[bytes, bytes], bytes]


@dataclass
class ClientSide:
    server: IngressServer
    pins: TrustPins
    release: VerifiedRelease
    clock: ManualClock
    #: Every nonce the attestation route was asked with, in order.
    nonces: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.running.base_url

    @property
    def cert_pem(self) -> bytes:
        return self.server.running.cert_path.read_bytes()

    def verify(self, cert_pem: bytes | None = None) -> VerifiedIngress:
        pinned = cert_pem if cert_pem is not None else self.cert_pem

        async def run() -> VerifiedIngress:
            async with httpx2.AsyncClient(verify=pinned_tls_context(pinned), timeout=30) as http:
                return await verify_ingress(
                    http,
                    self.url,
                    pins=self.pins,
                    release=self.release,
                    tls_cert_pem=pinned,
                    random=SystemRandom(),
                    clock=self.clock,
                )

        return trio.run(run)


@contextmanager
def attested_ingress(
    tmp: Path, node: BootedIngress, source: DocumentSource | None = None
) -> Iterator[ClientSide]:
    """The ingress app over TLS, its attestation route answering with ``source``
    (default: ``node``'s honest document binding the server's own TLS key)."""
    choose: DocumentSource = source if source is not None else node.document
    holder: list[IngressServer] = []
    nonces: list[bytes] = []

    async def attestation(nonce: bytes) -> bytes:
        nonces.append(nonce)
        return choose(nonce, holder[0].running.endpoint.spki_der)

    (tmp / "server").mkdir(exist_ok=True)
    server = start_ingress(tmp / "server", attestation=attestation)
    holder.append(server)
    try:
        yield ClientSide(server, client_pins(node), node.release, node.clock, nonces)
    finally:
        server.close()


def spki_sha256(spki_der: bytes) -> bytes:
    return hashlib.sha256(spki_der).digest()
