"""The node's TPM, chosen by ``[tpm].backend``, and what verifies its peers' evidence.

* ``simulated`` -- :class:`simulations.nitrotpm.SimulatedNitroTPM` from the
  node's seed file, its documents signed by the :class:`SimulatedNitroPKI`
  whose seed the development cluster shares. Its simulated firmware measures
  the image of the code this process runs into PCR 4, 7 and 12 when it is
  created (a process start is a machine boot), exactly as the demo's nodes and
  the release kit's images expect. A simulated document proves nothing about
  hardware: the node logs ``simulated_tpm`` at warning level at start and
  reports ``simulated_tpm: true`` in ``ready.json``. Its non-volatile state
  (the release and keyring counters, the RNG position) is kept in
  ``<data_dir>/state/simulated-tpm-nv.json`` after every command that may
  change it, so a restarted node finds the counters its bindings name.
* ``tpm2`` -- :class:`nodes.tpm.TpmDeviceBackend` on the configured TCTI
  (``device:/dev/tpmrm0``, or swtpm in tests), evidence TPM2_Quote.
* ``nitrotpm`` -- the same backend on EC2's NitroTPM, documents from the NSM
  vendor command.

A backend that cannot be opened is a :class:`TpmUnavailable`.

What a node accepts as its peers' evidence is not the operator's to choose:
``node.toml`` is written by the operator and measured nowhere, so a pin read
from it alone would let the operator name its own certificate authority (or
a TPM 2.0 attestation key it holds in swtpm) and have a genuine ingress or
keys node admit forged documents with the released registers. The pins in
``[trust]`` are therefore only used when the booted release's
``config/cluster.json`` (signed, logged and measured into PCR 14) names them
(:func:`release_attestation_trust`); a release that names none admits no one.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import hmac
import json
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from actors.seams.clock import WallClock
from actors.seams.tpm import TPM, TPMError
from mantle import read_bounded_file
from nodes.daemon.config import NodeConfig, TpmBackend, TpmConfig
from protocol.attestation import (
    AttestationVerifier,
    DocumentKind,
    EvidenceAuthenticator,
    NitroAuthenticator,
    TrustAnchor,
)
from protocol.attestation.tpm2_quote import QuoteTrust, Tpm2QuoteAuthenticator
from protocol.measurement import CONFIG_ARTIFACT, MEASUREMENT_HASH
from protocol.release import VerifiedRelease
from simulations.nitrotpm import NvCounter, NvState, SimulatedNitroPKI, SimulatedNitroTPM

MIN_SEED_BYTES: Final = 16
MAX_SEED_BYTES: Final = 4096
MAX_PEM_BYTES: Final = 64 * 1024
NV_STATE_FILE: Final = "simulated-tpm-nv.json"


class TpmCheck(enum.StrEnum):
    """Why the TPM or the attestation pins could not be used."""

    #: A seed file is missing, unreadable, or not 16 to 4096 bytes.
    SEED_FILE = "seed_file"
    #: The simulated TPM's saved NV state does not decode.
    NV_STATE = "nv_state"
    #: The device (or swtpm) cannot be opened, or tpm2-pytss is missing.
    DEVICE = "device"
    #: The attestation root or an attestation key does not load, or the booted
    #: release's cluster config does not name it.
    TRUST = "trust"


class TpmUnavailable(Exception):
    """The node has no usable TPM; :attr:`check` names why (no secret in the message)."""

    def __init__(self, check: TpmCheck, detail: str) -> None:
        self.check = check
        super().__init__(f"tpm unavailable [{check.value}]: {detail}")


@dataclass(frozen=True)
class OpenedTpm:
    tpm: TPM
    kind: DocumentKind
    simulated: bool
    #: Releases the device (no-op for the simulator).
    close: object = None


class _Unreadable(Exception):
    pass


def _read(path: Path, limit: int, check: TpmCheck, what: str) -> bytes:
    try:
        data: bytes | None = read_bounded_file(path, limit, what, error=_Unreadable)
    except _Unreadable:
        data = None
    if data is None:
        raise TpmUnavailable(check, f"cannot read the {what} at {path} (or over {limit} bytes)")
    return data


def _seed(path: Path, what: str) -> bytes:
    seed = _read(path, MAX_SEED_BYTES, TpmCheck.SEED_FILE, what)
    if len(seed) < MIN_SEED_BYTES:
        raise TpmUnavailable(
            TpmCheck.SEED_FILE, f"the {what} at {path} holds fewer than {MIN_SEED_BYTES} bytes"
        )
    return seed


# -- the simulated TPM's non-volatile state on disk ------------------------------------------


def _encode_nv(nv: NvState) -> bytes:
    return json.dumps(
        {
            "counters": {
                str(number): {"name": counter.name.hex(), "value": counter.value}
                for number, counter in sorted(nv.counters.items())
            },
            "highest_count": nv.highest_count,
            "random_draws": nv.random_draws,
        },
        sort_keys=True,
    ).encode()


def _decode_nv(data: bytes) -> NvState | None:
    try:
        raw = json.loads(data)
        counters = {
            int(number): NvCounter(bytes.fromhex(entry["name"]), int(entry["value"]))
            for number, entry in raw["counters"].items()
        }
        state = NvState(
            counters=counters,
            highest_count=int(raw["highest_count"]),
            random_draws=int(raw["random_draws"]),
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return state


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (0600) so a reader sees the old or the new file."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


class PersistedSimulatedTPM:
    """A :class:`SimulatedNitroTPM` whose NV state is saved after every
    command that may change it (counters, random draws, sealing's nonces),
    before the command's result is returned."""

    def __init__(self, tpm: SimulatedNitroTPM, nv_file: Path) -> None:
        self.inner = tpm
        self._nv_file = nv_file
        self._lock = threading.Lock()

    def _save(self) -> None:
        with self._lock:
            write_atomically(self._nv_file, _encode_nv(self.inner.nv))

    def pcr_read(self, index: int) -> bytes:
        return self.inner.pcr_read(index)

    def pcr_extend(self, index: int, digest: bytes) -> None:
        self.inner.pcr_extend(index, digest)

    def attest(
        self,
        *,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
        user_data: bytes | None = None,
    ) -> bytes:
        return self.inner.attest(nonce=nonce, public_key=public_key, user_data=user_data)

    def seal(self, data: bytes, pcr_indices: Sequence[int]) -> bytes:
        try:
            return self.inner.seal(data, pcr_indices)
        finally:
            self._save()

    def unseal(self, blob: bytes) -> bytes:
        return self.inner.unseal(blob)

    def measured_hmac(self, pcr_indices: Sequence[int], message: bytes) -> bytes:
        return self.inner.measured_hmac(pcr_indices, message)

    def counter_define(self, counter: int) -> bytes:
        try:
            return self.inner.counter_define(counter)
        finally:
            self._save()

    def counter_name(self, counter: int) -> bytes:
        return self.inner.counter_name(counter)

    def counter_read(self, counter: int) -> int:
        return self.inner.counter_read(counter)

    def counter_increment(self, counter: int, *, expected_name: bytes | None = None) -> int:
        try:
            return self.inner.counter_increment(counter, expected_name=expected_name)
        finally:
            self._save()

    def random_bytes(self, n: int) -> bytes:
        try:
            return self.inner.random_bytes(n)
        finally:
            self._save()


def open_simulated(config: TpmConfig, state_dir: Path, clock: WallClock) -> PersistedSimulatedTPM:
    assert config.pki_seed_file is not None and config.seed_file is not None
    pki = SimulatedNitroPKI(_seed(config.pki_seed_file, "simulated PKI seed file"))
    seed = _seed(config.seed_file, "simulated TPM seed file")
    nv_file = state_dir / NV_STATE_FILE
    nv: NvState | None = None
    if nv_file.exists():
        nv = _decode_nv(_read(nv_file, MAX_PEM_BYTES, TpmCheck.NV_STATE, "simulated NV state"))
        if nv is None:
            raise TpmUnavailable(
                TpmCheck.NV_STATE, f"the simulated NV state at {nv_file} is malformed"
            )
    tpm = SimulatedNitroTPM(seed=seed, pki=pki, clock=clock, nv=nv)
    persisted = PersistedSimulatedTPM(tpm, nv_file)
    persisted._save()
    return persisted


def open_device(config: TpmConfig) -> TPM:
    assert config.tcti is not None
    failure: str | None = None
    backend: TPM | None = None
    try:
        from nodes.tpm import TpmDeviceBackend

        backend = TpmDeviceBackend(
            config.tcti,
            attestation="nitrotpm" if config.backend is TpmBackend.NITROTPM else "quote",
        )
    except ImportError:
        failure = "tpm2-pytss is not installed (the tpm extra)"
    except TPMError as error:
        failure = f"cannot open the TPM through the configured TCTI ({type(error).__name__})"
    if backend is None:
        raise TpmUnavailable(TpmCheck.DEVICE, failure or "cannot open the TPM")
    return backend


def open_tpm(config: NodeConfig, clock: WallClock) -> OpenedTpm:
    """The configured backend, opened (the state directory must exist)."""
    if config.tpm.backend is TpmBackend.SIMULATED:
        simulated = open_simulated(config.tpm, config.state_dir, clock)
        return OpenedTpm(simulated, DocumentKind.NITRO, simulated=True)
    device = open_device(config.tpm)
    kind = (
        DocumentKind.NITRO
        if config.tpm.backend is TpmBackend.NITROTPM
        else (DocumentKind.TPM2_QUOTE)
    )
    return OpenedTpm(device, kind, simulated=False, close=getattr(device, "close", None))


#: The largest ``config/cluster.json`` read (the release signs its exact length).
MAX_CLUSTER_CONFIG_BYTES: Final = 1024 * 1024
#: At most this many pins of each kind in a release's attestation trust.
MAX_TRUST_PINS: Final = 256
_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ReleaseAttestationTrust:
    """The evidence a release lets its nodes accept, as ``attestation_trust``
    in its ``config/cluster.json``::

        "attestation_trust": {
            "nitro_roots_sha256": ["<SHA-256 of the root certificate's DER, hex>"],
            "tpm2_attestation_keys_sha256": ["<SHA-256 of the key's SPKI DER, hex>"]
        }

    (the second list optional). Other keys of the file are the cluster's own."""

    nitro_roots: frozenset[bytes]
    tpm2_attestation_keys: frozenset[bytes]

    def table(self) -> dict[str, list[str]]:
        """The ``attestation_trust`` table naming these pins (what a release
        publisher writes into ``config/cluster.json``)."""
        table = {"nitro_roots_sha256": sorted(pin.hex() for pin in self.nitro_roots)}
        if self.tpm2_attestation_keys:
            table["tpm2_attestation_keys_sha256"] = sorted(
                pin.hex() for pin in self.tpm2_attestation_keys
            )
        return table


def _pin_list(table: dict[str, object], name: str, *, required: bool) -> frozenset[bytes]:
    value = table.get(name, None if required else [])
    pins: list[str] = []
    if isinstance(value, list) and len(value) <= MAX_TRUST_PINS:
        pins = [item for item in value if isinstance(item, str) and _SHA256_HEX.fullmatch(item)]
    if not isinstance(value, list) or len(pins) != len(value) or (required and not pins):
        raise TpmUnavailable(
            TpmCheck.TRUST,
            f"the release's {CONFIG_ARTIFACT} attestation_trust.{name} must list"
            f" {'1' if required else '0'} to {MAX_TRUST_PINS} SHA-256 digests (lower-case hex)",
        )
    return frozenset(bytes.fromhex(pin) for pin in pins)


def release_attestation_trust(cluster_config: bytes) -> ReleaseAttestationTrust:
    """The ``attestation_trust`` of a release's ``config/cluster.json``; a file
    without one (or with a malformed one) is :class:`TpmUnavailable` (TRUST):
    a release that names no attestation root admits no peer."""
    raw: object = None
    with contextlib.suppress(ValueError, RecursionError):
        raw = json.loads(cluster_config)
    trust = raw.get("attestation_trust") if isinstance(raw, dict) else None
    if not isinstance(trust, dict) or set(trust) - {
        "nitro_roots_sha256",
        "tpm2_attestation_keys_sha256",
    }:
        raise TpmUnavailable(
            TpmCheck.TRUST,
            f"the release's {CONFIG_ARTIFACT} holds no attestation_trust table"
            " (nitro_roots_sha256, tpm2_attestation_keys_sha256)",
        )
    return ReleaseAttestationTrust(
        nitro_roots=_pin_list(trust, "nitro_roots_sha256", required=True),
        tpm2_attestation_keys=_pin_list(trust, "tpm2_attestation_keys_sha256", required=False),
    )


def read_release_cluster_config(install_root: Path, release: VerifiedRelease) -> bytes:
    """The installed ``config/cluster.json``, read once and checked against the
    length and SHA-384 the release signed (boot checked the file earlier; this
    read is the one used, so a file swapped since is refused)."""
    spec = release.artifacts.get(CONFIG_ARTIFACT)
    if spec is None or MEASUREMENT_HASH not in spec.hashes:
        raise TpmUnavailable(TpmCheck.TRUST, f"the release lists no {CONFIG_ARTIFACT}")
    data = _read(
        install_root / CONFIG_ARTIFACT, MAX_CLUSTER_CONFIG_BYTES, TpmCheck.TRUST, "cluster config"
    )
    digest = hashlib.sha384(data).digest()
    if len(data) != spec.length or not hmac.compare_digest(digest, spec.hashes[MEASUREMENT_HASH]):
        raise TpmUnavailable(
            TpmCheck.TRUST, f"the installed {CONFIG_ARTIFACT} is not the one the release signed"
        )
    return data


def peer_evidence_verifier(config: NodeConfig, release: VerifiedRelease) -> AttestationVerifier:
    """What this node checks its peers' evidence with: NitroTPM documents
    chaining to ``[trust].attestation_root``, and TPM 2.0 quotes signed by one
    of ``[trust].attestation_keys`` when any are pinned -- each pin only if the
    booted ``release`` names it (module docstring); otherwise :class:`TpmUnavailable`."""
    trust = release_attestation_trust(
        read_release_cluster_config(config.release.install_root, release)
    )
    root_pem = _read(
        config.trust.attestation_root, MAX_PEM_BYTES, TpmCheck.TRUST, "attestation root"
    )
    anchor: TrustAnchor | None = None
    with contextlib.suppress(ValueError, TypeError):
        anchor = TrustAnchor.from_pem(root_pem)
    if anchor is None:
        raise TpmUnavailable(
            TpmCheck.TRUST, f"the attestation root at {config.trust.attestation_root} does not load"
        )
    if not any(hmac.compare_digest(anchor.sha256, pin) for pin in trust.nitro_roots):
        raise TpmUnavailable(
            TpmCheck.TRUST,
            f"the attestation root at {config.trust.attestation_root} is not one the"
            f" release's {CONFIG_ARTIFACT} names",
        )
    authenticators: list[EvidenceAuthenticator] = [NitroAuthenticator(anchor)]
    keys: list[bytes] = []
    for path in config.trust.attestation_keys:
        der: bytes | None = None
        with contextlib.suppress(ValueError, TypeError):
            der = load_pem_public_key(
                _read(path, MAX_PEM_BYTES, TpmCheck.TRUST, "attestation key")
            ).public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        if der is None:
            raise TpmUnavailable(TpmCheck.TRUST, f"the attestation key at {path} does not load")
        fingerprint = hashlib.sha256(der).digest()
        if not any(hmac.compare_digest(fingerprint, pin) for pin in trust.tpm2_attestation_keys):
            raise TpmUnavailable(
                TpmCheck.TRUST,
                f"the attestation key at {path} is not one the release's {CONFIG_ARTIFACT} names",
            )
        keys.append(der)
    if keys:
        authenticators.append(Tpm2QuoteAuthenticator(QuoteTrust.from_ak_public_keys(keys)))
    return AttestationVerifier(authenticators)
