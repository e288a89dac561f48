"""Channel throughput against raw ChaCha20-Poly1305, and small-message rate.

Run: .venv/bin/python benchmarks/bench_channel.py [--quick]

What is measured (all in one process, one thread, so figures are per core):

1. Bulk throughput through an established Noise XX session, driven through
   the sans-IO layer directly (protocol.framing.SecureSession): per payload,
   chunk + encrypt + frame on one side, deframe + decrypt + reassemble on the
   other. Compared with raw ``cryptography`` ChaCha20Poly1305 encrypt+decrypt
   of the same payload in one AEAD call each, measured in the same run.
   Batches of the two alternate (interleaved repetitions); the medians of the
   per-batch rates are reported. A 64 KiB payload does not fit one Noise
   message (65535 bytes including the 16-byte tag and the 1-byte chunk flag),
   so it travels as two.
2. The same bulk transfer through actors.channel.SecureChannel over an
   in-memory anyio byte stream pair on trio (informational: adds the event
   loop and stream costs).
3. Small messages: a ~400-byte request envelope, encode + frame + encrypt +
   decrypt + deframe + decode, per second.

Targets: >= 0.8x raw at 64 KiB; >= 60,000 small messages/s.

``--breakdown`` adds where the time goes: per-call medians of each stage of
the 64 KiB and small-message paths, each next to the unavoidable work it
contains (AEAD calls, one 64 KiB copy, msgpack), timed in the same loop.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio
import msgpack
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from actors.attestation import AttestationService, PeerAttestationVerifier, run_inline
from actors.channel import (
    NOT_ATTESTED,
    ChannelAttestation,
    accept_secure,
    connect_secure,
    memory_byte_stream_pair,
)
from actors.key_custody import NodeKeyCustody
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
from protocol.customer_data import CustomerData
from protocol.framing import PayloadReceived, PeerIdentity, SecureSession, SessionState
from protocol.messages import U32, Envelope, MaxLen, MessageRegistry
from protocol.noise import HandshakeState, KeyPair, NoiseProtocol
from simulations.nitrotpm import SimulatedNitroPKI, SimulatedNitroTPM

PROTOCOL = NoiseProtocol.from_name("Noise_XX_25519_ChaChaPoly_BLAKE2s")
SIZES = (1024, 16 * 1024, 64 * 1024)
TARGET_RATIO_64K = 0.8
TARGET_SMALL_PER_SECOND = 60_000

BENCH_REGISTRY = MessageRegistry()


def attested_ends(static: KeyPair) -> tuple[ChannelAttestation, ChannelAttestation]:
    """The server (a node on a simulated NitroTPM, key ``static``) and its
    verifying client. Throughput is measured on the established channel; what
    the exchange after the handshake costs is in bench_actors.py."""
    clock = TrioClock()
    pki = SimulatedNitroPKI("bench-channel")
    tpm = SimulatedNitroTPM(seed="bench-channel", pki=pki, clock=clock)
    service = AttestationService(
        tpm=tpm,
        custody=NodeKeyCustody(random=SystemRandom(), static=static),
        kind=DocumentKind.NITRO,
        clock=clock,
        run_blocking=run_inline,
    )
    verifier = PeerAttestationVerifier(
        verifier=AttestationVerifier([NitroAuthenticator(TrustAnchor.from_der(pki.root_der))]),
        policy=PcrPolicy(releases=(PcrRelease.from_mapping("bench", {0: tpm.pcr_read(0)}),)),
        clock=clock,
    )
    return (
        ChannelAttestation(prove=service.attest, require=NOT_ATTESTED),
        ChannelAttestation(prove=NOT_ATTESTED, require=verifier),
    )


@BENCH_REGISTRY.message("bench.completion_request")
@dataclasses.dataclass(frozen=True, slots=True)
class CompletionRequest:
    """Shaped like a scheduler -> inference request: routing fields plus a prompt."""

    tenant: Annotated[str, MaxLen(64)]
    model: Annotated[str, MaxLen(128)]
    prompt: CustomerData
    max_tokens: U32
    temperature: float
    top_p: float
    stream: bool
    stop: Annotated[tuple[Annotated[str, MaxLen(32)], ...], MaxLen(4)]
    deadline_ms: U32


def session_pair() -> tuple[SecureSession, SecureSession]:
    """Two sessions with a completed XX handshake, via the sans-IO layer."""
    initiator = SecureSession(
        HandshakeState(
            PROTOCOL,
            initiator=True,
            prologue=b"mantle/1 bench",
            static=KeyPair.generate(PROTOCOL.dh, os.urandom),
            entropy=os.urandom,
        ),
        handshake_payload=b"I",
        max_payload=1 << 24,
    )
    responder = SecureSession(
        HandshakeState(
            PROTOCOL,
            initiator=False,
            prologue=b"mantle/1 bench",
            static=KeyPair.generate(PROTOCOL.dh, os.urandom),
            entropy=os.urandom,
        ),
        handshake_payload=b"R",
        max_payload=1 << 24,
    )
    sides = {True: initiator, False: responder}
    turn = True
    while not (initiator.state is responder.state is SessionState.OPEN):
        writer, reader = sides[turn], sides[not turn]
        reader.receive_data(writer.write_handshake())
        if isinstance(reader.next_event(), PeerIdentity):
            reader.accept_peer()
        turn = not turn
    return initiator, responder


def time_batch(run: Callable[[int], None], count: int) -> float:
    start = time.perf_counter()
    run(count)
    return time.perf_counter() - start


def raw_runner(payload: bytes) -> Callable[[int], None]:
    aead = ChaCha20Poly1305(os.urandom(32))
    counter = [0]

    def run(count: int) -> None:
        n = counter[0]
        encrypt, decrypt = aead.encrypt, aead.decrypt
        for i in range(n, n + count):
            nonce = b"\x00\x00\x00\x00" + i.to_bytes(8, "little")
            assert decrypt(nonce, encrypt(nonce, payload, b""), b"") is not None
        counter[0] = n + count

    return run


def session_runner(payload: bytes) -> Callable[[int], None]:
    sender, receiver = session_pair()

    def run(count: int) -> None:
        send, receive_data, next_event = sender.send, receiver.receive_data, receiver.next_event
        for _ in range(count):
            receive_data(send(payload))
            event = next_event()
            assert type(event) is PayloadReceived and len(event.data) == len(payload)

    return run


def small_message_runner() -> tuple[Callable[[int], None], int, bytes]:
    sender, receiver = session_pair()
    prompt = CustomerData(
        "Summarise the following meeting notes in three bullet points. The team agreed to "
        "move the launch by one week, to add two reviewers to the release checklist, and "
        "to rotate the on-call schedule starting Monday. Budget questions were deferred "
        "to the next review, and the design doc gets a security section."
    )
    body = CompletionRequest(
        tenant="tenant-4f2a9c",
        model="smollm2-360m-instruct-q8_0",
        prompt=prompt,
        max_tokens=256,
        temperature=0.7,
        top_p=0.95,
        stream=True,
        stop=("</s>", "\n\nUser:"),
        deadline_ms=30_000,
    )
    sample = BENCH_REGISTRY.encode(Envelope.wrap(body, request_id=1, registry=BENCH_REGISTRY))
    encode, decode = BENCH_REGISTRY.encode, BENCH_REGISTRY.decode
    request_ids = [0]

    def run(count: int) -> None:
        send, receive_data, next_event = sender.send, receiver.receive_data, receiver.next_event
        base = request_ids[0]
        for i in range(base, base + count):
            receive_data(send(encode(Envelope(1, "bench.completion_request", i, body))))
            event = next_event()
            assert type(event) is PayloadReceived
            assert decode(event.data).request_id == i
        request_ids[0] = base + count

    return run, len(sample), sample


def small_message_floor_runner(envelope_bytes: bytes) -> Callable[[int], None]:
    """What no implementation of this path can avoid on this machine: one AEAD
    encrypt and decrypt plus one msgpack pack and unpack of the same envelope.
    Context for the small-message figure, measured in the same run."""
    aead = ChaCha20Poly1305(os.urandom(32))
    structure = msgpack.unpackb(envelope_bytes, use_list=False)

    def run(count: int) -> None:
        encrypt, decrypt, packb, unpackb = (
            aead.encrypt,
            aead.decrypt,
            msgpack.packb,
            msgpack.unpackb,
        )
        for i in range(count):
            nonce = b"\x00\x00\x00\x00" + i.to_bytes(8, "little")
            unpackb(decrypt(nonce, encrypt(nonce, packb(structure), b""), b""))

    return run


async def channel_throughput(payload: bytes, count: int) -> float:
    """Bytes/s through SecureChannel over an in-memory stream pair (one direction)."""
    a, b = memory_byte_stream_pair(max_buffer_size=64)
    key_a = KeyPair.generate(PROTOCOL.dh, os.urandom)
    key_b = KeyPair.generate(PROTOCOL.dh, os.urandom)
    channels = {}
    served, client_side = attested_ends(key_b)

    async def accept() -> None:
        channels["server"] = await accept_secure(
            b,
            static=key_b,
            entropy=os.urandom,
            verify_peer=lambda k, p: None,
            attestation=served,
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(accept)
        client = await connect_secure(
            a,
            static=key_a,
            entropy=os.urandom,
            verify_peer=lambda k, p: None,
            attestation=client_side,
        )
    server = channels["server"]

    async def produce() -> None:
        for _ in range(count):
            await client.send(payload)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        for _ in range(count):
            assert len(await server.receive()) == len(payload)
    elapsed = time.perf_counter() - start
    await client.aclose()
    await server.aclose()
    return count * len(payload) / elapsed


def stage_medians(stages: dict[str, Callable[[], object]], iterations: int) -> dict[str, float]:
    """Median microseconds per call of each stage, the stages run in turn each iteration.

    Running them round-robin (rather than one after another) exposes every
    stage to the same machine noise, and lets stateful stages (a sender and
    its receiver) run in order.
    """
    clock = time.perf_counter_ns
    samples: dict[str, list[int]] = {name: [] for name in stages}
    calls = [(samples[name], stage) for name, stage in stages.items()]
    for _ in range(iterations):
        for sink, stage in calls:
            start = clock()
            stage()
            sink.append(clock() - start)
    return {name: statistics.median(values) / 1e3 for name, values in samples.items()}


def bulk_breakdown(iterations: int) -> None:
    size = 64 * 1024
    payload = os.urandom(size)
    sender, receiver = session_pair()
    aead = ChaCha20Poly1305(os.urandom(32))
    nonce = bytes(12)
    ciphertext = aead.encrypt(nonce, payload, None)
    half = size // 2
    chunk = payload[: half + 1]  # one chunk's plaintext: flag and half the payload
    chunk_ciphertext = aead.encrypt(nonce, chunk, None)
    copy_source = memoryview(bytearray(payload))
    wire: list[bytes] = []

    def session_send() -> None:
        wire.append(sender.send(payload))

    def session_receive() -> None:
        receiver.receive_data(wire.pop())
        event = receiver.next_event()
        assert type(event) is PayloadReceived and len(event.data) == size

    def two_chunk_encrypt() -> None:
        aead.encrypt(nonce, chunk, None)
        aead.encrypt(nonce, chunk, None)

    def two_chunk_decrypt() -> None:
        aead.decrypt(nonce, chunk_ciphertext, None)
        aead.decrypt(nonce, chunk_ciphertext, None)

    def copy_64k() -> None:
        bytes(copy_source)  # as a frame buffer or reassembled payload becomes bytes

    medians = stage_medians(
        {
            "raw encrypt, 1 call": lambda: aead.encrypt(nonce, payload, None),
            "raw decrypt, 1 call": lambda: aead.decrypt(nonce, ciphertext, None),
            "AEAD encrypt, 2 half chunks": two_chunk_encrypt,
            "AEAD decrypt, 2 half chunks": two_chunk_decrypt,
            "one 64 KiB copy": copy_64k,
            "SecureSession.send": session_send,
            "receive_data + next_event": session_receive,
        },
        iterations,
    )
    print("\nbreakdown, 64 KiB (median us per call)")
    for name, micros in medians.items():
        print(f"  {name:<30} {micros:>8.2f}")
    raw = medians["raw encrypt, 1 call"] + medians["raw decrypt, 1 call"]
    floor = (
        medians["AEAD encrypt, 2 half chunks"]
        + medians["AEAD decrypt, 2 half chunks"]
        + 3 * medians["one 64 KiB copy"]
    )
    session = medians["SecureSession.send"] + medians["receive_data + next_event"]
    print(
        f"  raw {raw:.1f} us; two chunks' AEAD + 3 copies (flag||data, frame bytes, "
        f"reassembled bytes) {floor:.1f} us = {raw / floor:.2f}x; "
        f"session {session:.1f} us = {raw / session:.2f}x"
    )


def small_breakdown(iterations: int) -> None:
    _, _, envelope_bytes = small_message_runner()
    sender, receiver = session_pair()
    body = BENCH_REGISTRY.decode(envelope_bytes).body
    structure = msgpack.unpackb(envelope_bytes, use_list=False)
    aead = ChaCha20Poly1305(os.urandom(32))
    nonce = bytes(12)
    plaintext = b"\x01" + envelope_bytes
    ciphertext = aead.encrypt(nonce, plaintext, None)
    state: dict[str, object] = {}

    def make_envelope() -> None:
        state["envelope"] = Envelope(1, "bench.completion_request", 1, body)

    def encode() -> None:
        state["encoded"] = BENCH_REGISTRY.encode(typing.cast(Envelope, state["envelope"]))

    def send() -> None:
        state["wire"] = sender.send(typing.cast(bytes, state["encoded"]))

    def receive() -> None:
        receiver.receive_data(typing.cast(bytes, state["wire"]))
        event = receiver.next_event()
        assert type(event) is PayloadReceived
        state["received"] = event.data

    def decode() -> None:
        BENCH_REGISTRY.decode(typing.cast(bytes, state["received"]))

    medians = stage_medians(
        {
            "Envelope(...)": make_envelope,
            "MessageRegistry.encode": encode,
            "SecureSession.send": send,
            "receive_data + next_event": receive,
            "MessageRegistry.decode": decode,
            "raw AEAD encrypt": lambda: aead.encrypt(nonce, plaintext, None),
            "raw AEAD decrypt": lambda: aead.decrypt(nonce, ciphertext, None),
            "msgpack pack": lambda: msgpack.packb(structure),
            "msgpack unpack": lambda: msgpack.unpackb(envelope_bytes, use_list=False),
        },
        iterations,
    )
    print(f"\nbreakdown, small message ({len(envelope_bytes)} bytes; median us per call)")
    for name, micros in medians.items():
        print(f"  {name:<30} {micros:>8.2f}")


def calibrate(run: Callable[[int], None], seconds: float) -> int:
    count = 16
    while True:
        elapsed = time_batch(run, count)
        if elapsed >= seconds / 4:
            return max(1, int(count * seconds / elapsed))
        count *= 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repetitions")
    parser.add_argument(
        "--breakdown", action="store_true", help="also time each stage of the two hot paths"
    )
    args = parser.parse_args()
    repetitions = 5 if args.quick else 11
    batch_seconds = 0.05 if args.quick else 0.15

    python = sys.version.split()[0]
    print(f"python {python}, {os.cpu_count()} cpus; {repetitions} interleaved repetitions")
    print(
        "bulk: sans-IO SecureSession (both ends in-process) vs raw ChaCha20Poly1305 encrypt+decrypt"
    )
    print(f"{'payload':>9} {'raw MB/s':>10} {'session MB/s':>13} {'ratio':>7}")
    ratios: dict[int, float] = {}
    for size in SIZES:
        payload = os.urandom(size)
        raw, session = raw_runner(payload), session_runner(payload)
        raw_count, session_count = calibrate(raw, batch_seconds), calibrate(session, batch_seconds)
        raw_rates: list[float] = []
        session_rates: list[float] = []
        for _ in range(repetitions):
            raw_rates.append(raw_count * size / time_batch(raw, raw_count))
            session_rates.append(session_count * size / time_batch(session, session_count))
        raw_mbs = statistics.median(raw_rates) / 1e6
        session_mbs = statistics.median(session_rates) / 1e6
        # Ratio of medians of paired batches: each pair ran back to back.
        ratio = statistics.median(s / r for s, r in zip(session_rates, raw_rates, strict=True))
        ratios[size] = ratio
        print(f"{size // 1024:>6} KiB {raw_mbs:>10.0f} {session_mbs:>13.0f} {ratio:>6.2f}x")

    print("\nbulk through SecureChannel over in-memory anyio streams on trio (informational)")
    for size in SIZES:
        payload = os.urandom(size)
        count = max(200, (8 if args.quick else 32) * 1024 * 1024 // size)
        rates = [anyio.run(channel_throughput, payload, count, backend="trio") for _ in range(3)]
        print(f"{size // 1024:>6} KiB {statistics.median(rates) / 1e6:>10.0f} MB/s")

    run, message_size, envelope_bytes = small_message_runner()
    floor = small_message_floor_runner(envelope_bytes)
    count, floor_count = calibrate(run, batch_seconds), calibrate(floor, batch_seconds)
    rates: list[float] = []
    floor_rates: list[float] = []
    for _ in range(repetitions):
        rates.append(count / time_batch(run, count))
        floor_rates.append(floor_count / time_batch(floor, floor_count))
    per_second = statistics.median(rates)
    print(f"\nsmall messages: {message_size}-byte envelope, encode+frame+encrypt+decrypt+decode")
    micros = statistics.median(1e6 / r for r in rates)
    print(f"  {per_second:,.0f} messages/s (median; {micros:.1f} us each)")
    floor_per_second = statistics.median(floor_rates)
    print(
        f"  floor on this machine (raw AEAD enc+dec + msgpack pack+unpack only): "
        f"{floor_per_second:,.0f}/s ({1e6 / floor_per_second:.1f} us)"
    )

    if args.breakdown:
        bulk_breakdown(2000 if args.quick else 6000)
        small_breakdown(10_000 if args.quick else 40_000)

    print("\ntargets:")
    ratio_64k = ratios[64 * 1024]
    print(
        f"  64 KiB ratio {ratio_64k:.2f}x vs >= {TARGET_RATIO_64K}x: "
        + ("met" if ratio_64k >= TARGET_RATIO_64K else "BELOW TARGET")
    )
    print(
        f"  small messages {per_second:,.0f}/s vs >= {TARGET_SMALL_PER_SECOND:,}/s: "
        + ("met" if per_second >= TARGET_SMALL_PER_SECOND else "BELOW TARGET")
    )


if __name__ == "__main__":
    main()
