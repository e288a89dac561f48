"""Attested nodes for link and channel tests: one simulated cloud, its TPMs and policy.

A :class:`Cloud` is a simulated Nitro PKI, the verifier pinned to its root,
and the PCR policy an honest node satisfies: every register of a TPM that
booted and measured nothing else (so any later extend leaves the policy).
:meth:`Cloud.node` gives one node's attestation service (on a fresh
SimulatedNitroTPM of that cloud) and its verifier of peers.

:class:`SlowTpm` gives a node's TPM the latency of real hardware (one
command at a time, each taking a while), where a test is about TPM cost.

Also what an attacker on the network runs (:func:`raw_handshake`: the real
Noise XX handshake with a key it holds, then whatever it chooses to send),
and :class:`LogCapture` to read the refusals a node logs.
"""

from __future__ import annotations

import io
import json
import secrets
import threading
import time
from dataclasses import dataclass

import anyio.abc
import trio

from actors.attestation import AttestationService, PeerAttestationVerifier
from actors.channel import NODE_LINK_PROLOGUE
from actors.key_custody import NodeKeyCustody
from actors.log import configure_logging
from actors.lowlevel import NodeHello
from actors.seams.clock import Clock
from nodes.clock import TrioClock
from nodes.random import SystemRandom
from protocol.attestation import (
    AttestationVerifier,
    DocumentKind,
    NitroAuthenticator,
    PcrPolicy,
    PcrRelease,
    TrustAnchor,
)
from protocol.framing import NEED_DATA, PeerIdentity, SecureSession, SessionState
from protocol.messages import REGISTRY, Envelope
from protocol.noise import HandshakeState, KeyPair, NoiseProtocol
from simulations.nitrotpm import PCR_COUNT, SimulatedNitroPKI, SimulatedNitroTPM

PROTOCOL = NoiseProtocol.from_name("Noise_XX_25519_ChaChaPoly_BLAKE2s")
DH = PROTOCOL.dh


def new_key() -> KeyPair:
    return KeyPair.generate(DH, SystemRandom().token_bytes)


@dataclass
class NodeAttestation:
    """What one node needs for its links: its TPM, key custody, service, verifier."""

    tpm: SimulatedNitroTPM
    custody: NodeKeyCustody
    service: AttestationService
    verifier: PeerAttestationVerifier

    @property
    def static(self) -> KeyPair:
        return self.custody.static


class Cloud:
    def __init__(self, seed: str = "link-tests", *, clock: Clock | None = None) -> None:
        self.clock = clock if clock is not None else TrioClock()
        self.pki = SimulatedNitroPKI(seed)
        self.attestation_verifier = AttestationVerifier(
            [NitroAuthenticator(TrustAnchor.from_der(self.pki.root_der))]
        )
        reference = self.tpm("reference")
        self.policy = PcrPolicy(
            releases=(
                PcrRelease.from_mapping(
                    "honest", {index: reference.pcr_read(index) for index in range(PCR_COUNT)}
                ),
            )
        )
        self._count = 0

    def tpm(self, name: str) -> SimulatedNitroTPM:
        return SimulatedNitroTPM(seed=f"tpm/{name}", pki=self.pki, clock=self.clock)

    def peer_verifier(self) -> PeerAttestationVerifier:
        return PeerAttestationVerifier(
            verifier=self.attestation_verifier, policy=self.policy, clock=self.clock
        )

    def node(self, name: str, *, tpm_latency_s: float = 0.0) -> NodeAttestation:
        """A node on a fresh TPM of this cloud; ``tpm_latency_s`` makes each
        of its attestations take that long, one at a time (:class:`SlowTpm`)."""
        self._count += 1
        tpm = self.tpm(f"{name}/{self._count}")
        # The node's key is born in its custody, as at boot: the one its documents bind.
        custody = NodeKeyCustody(random=SystemRandom())
        service = AttestationService(
            tpm=SlowTpm(tpm, tpm_latency_s) if tpm_latency_s else tpm,
            custody=custody,
            kind=DocumentKind.NITRO,
            clock=self.clock,
            run_blocking=trio.to_thread.run_sync,
        )
        return NodeAttestation(tpm, custody, service, self.peer_verifier())


class SlowTpm:
    """A simulated TPM whose attest command takes ``latency_s`` (a NitroTPM or
    a discrete TPM takes 100-350 ms) and, like any TPM, runs one command at a
    time: callers queue on its lock. Everything else is the TPM's own."""

    def __init__(self, tpm: SimulatedNitroTPM, latency_s: float) -> None:
        self._tpm = tpm
        self._latency_s = latency_s
        self._lock = threading.Lock()

    def attest(
        self,
        *,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
        user_data: bytes | None = None,
    ) -> bytes:
        with self._lock:
            time.sleep(self._latency_s)  # runs in a worker thread (run_blocking)
            return self._tpm.attest(nonce=nonce, public_key=public_key, user_data=user_data)

    def __getattr__(self, name: str) -> object:
        return getattr(self._tpm, name)


class RecordingEvents:
    """A TransportEvents sink that records what a transport reports."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.frames: list[tuple[str, bytes]] = []

    def peer_up(self, peer: str) -> None:
        self.events.append(("up", peer))

    def peer_down(self, peer: str) -> None:
        self.events.append(("down", peer))

    def frame_received(self, peer: str, frame: bytes) -> None:
        self.frames.append((peer, frame))

    def count(self, kind: str, peer: str) -> int:
        return self.events.count((kind, peer))


def hello(node: str) -> bytes:
    """A node link's handshake payload claiming to be ``node``."""
    return REGISTRY.encode(Envelope.wrap(NodeHello(node)))


async def raw_handshake(
    stream: anyio.abc.ByteStream, static: KeyPair, handshake_payload: bytes
) -> SecureSession:
    """Complete the initiator's handshake and stop: no attestation exchange,
    the open session is the caller's to use."""
    handshake = HandshakeState(
        PROTOCOL,
        initiator=True,
        prologue=NODE_LINK_PROLOGUE,
        static=static,
        entropy=secrets.token_bytes,
    )
    session = SecureSession(handshake, handshake_payload=handshake_payload)
    while session.state is not SessionState.OPEN:
        if session.state is SessionState.HANDSHAKE_WRITE:
            await stream.send(session.write_handshake())
            continue
        event = session.next_event()
        if event is NEED_DATA:
            session.receive_data(await stream.receive())
        elif isinstance(event, PeerIdentity):
            session.accept_peer()
    return session


class LogCapture:
    """The JSON log lines of this process, parsed (logging is reconfigured)."""

    def __init__(self) -> None:
        self._stream = io.StringIO()
        configure_logging(self._stream, level="debug")

    def events(self, name: str) -> list[dict[str, object]]:
        records = [json.loads(line) for line in self._stream.getvalue().splitlines()]
        return [record for record in records if record.get("event") == name]

    def checks(self, name: str) -> list[object]:
        return [record.get("check") for record in self.events(name)]
