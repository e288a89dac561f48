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
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
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
    #: The attestation root or an attestation key does not load.
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


def peer_evidence_verifier(config: NodeConfig) -> AttestationVerifier:
    """What this node checks its peers' evidence with: NitroTPM documents
    chaining to ``[trust].attestation_root``, and TPM 2.0 quotes signed by one
    of ``[trust].attestation_keys`` when any are pinned."""
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
        keys.append(der)
    if keys:
        authenticators.append(Tpm2QuoteAuthenticator(QuoteTrust.from_ak_public_keys(keys)))
    return AttestationVerifier(authenticators)
