"""SimulatedNitroTPM: the TPM seam for the simulator, deterministic from a seed.

* PCR bank: 24 SHA-384 PCRs with the reset values of a PC-client TPM as EC2
  NitroTPM reports them (0-16 and 23 all zeros, 17-22 all ``0xff``);
  ``extend`` computes ``SHA384(old || digest)``; PCRs can be locked until the
  next reboot. At every boot the simulated firmware measures itself into PCR0,
  so a simulated document never shows a debug-mode (all-zero) PCR0.
* Attestation: NitroTPM-format documents signed by the run's
  :class:`SimulatedNitroPKI`, with AWS's size limits on nonce, public key and
  user data.
* Sealing: AES-256-GCM under a key derived from this TPM's seed secret and the
  current values of the chosen PCRs, so changing any of them (or using another
  TPM) makes unsealing fail. Nonces are synthetic (derived from the RNG
  position and the sealed data), so they stay deterministic without repeating
  for different data.
* NV state (monotonic counters, the RNG position) lives in :class:`NvState`,
  which survives :meth:`SimulatedNitroTPM.reboot` and can be handed to a new
  instance to model a node restart on the same machine.
* Fault hooks: make the next calls of an operation fail, or take simulated time.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import hmac
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from actors.seams.tpm import TPMError
from protocol.attestation import MAX_USER_FIELD_BYTES
from simulations.nitrotpm._document import encode_payload, nitrotpm_fields, sign_payload
from simulations.nitrotpm._pki import SimulatedNitroPKI, derive_bytes, seed_bytes

PCR_COUNT = 24
PCR_BYTES = 48
COUNTER_COUNT = 16
MAX_RANDOM_BYTES = 4096
MAX_SEAL_BYTES = 64 * 1024
_COUNTER_LIMIT = (1 << 64) - 1
_SEAL_VERSION = 1
_SEAL_HEADER = 1 + 4  # version, PCR selection bitmap
_SEAL_NONCE = 12

#: What the simulated firmware extends into PCR0 at every boot.
FIRMWARE_MEASUREMENT = hashlib.sha384(b"mantle-sim/nitrotpm/firmware/v1").digest()


def reset_value(index: int) -> bytes:
    """A PCR's value after a platform reset (TCG PC client, as NitroTPM reports)."""
    return b"\xff" * PCR_BYTES if 17 <= index <= 22 else bytes(PCR_BYTES)


class TpmOp(enum.StrEnum):
    PCR_READ = "pcr_read"
    PCR_EXTEND = "pcr_extend"
    ATTEST = "attest"
    SEAL = "seal"
    UNSEAL = "unseal"
    COUNTER_READ = "counter_read"
    COUNTER_INCREMENT = "counter_increment"
    RANDOM = "random_bytes"


class WallClock(Protocol):
    """The part of the Clock seam the simulated TPM reads."""

    def wall_ms(self) -> int: ...


class ManualClock:
    """The Clock seam on time that moves only when told (for tools and tests):
    ``advance`` and ``sleep`` move it; nothing else does."""

    def __init__(self, start_ms: int) -> None:
        self._now_ms = start_ms

    def wall_ms(self) -> int:
        return self._now_ms

    def monotonic(self) -> float:
        return self._now_ms / 1000

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._now_ms += round(seconds * 1000)


@dataclass
class NvState:
    """Non-volatile TPM state: kept across reboots (mutable on purpose)."""

    counters: list[int] = field(default_factory=lambda: [0] * COUNTER_COUNT)
    #: Position of the deterministic RNG, so a reboot never repeats output.
    random_draws: int = 0


@dataclass
class _Fault:
    remaining: int
    delay_s: float = 0.0


class SimulatedNitroTPM:
    """Implements :class:`actors.seams.tpm.TPM` in memory; see the module docstring."""

    def __init__(
        self,
        *,
        seed: int | bytes | str,
        pki: SimulatedNitroPKI,
        clock: WallClock,
        nv: NvState | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._secret = derive_bytes(seed_bytes(seed), "tpm-secret", 32)
        self._pki = pki
        self._clock = clock
        self._sleep = sleep
        self.nv = nv if nv is not None else NvState()
        self.instance_id = "sim-i-" + derive_bytes(self._secret, "instance", 9).hex()[:17]
        self.module_id = f"{self.instance_id}-tpm0000000000000000"
        self._lock = threading.Lock()
        self._failures: dict[TpmOp, _Fault] = {}
        self._delays: dict[TpmOp, _Fault] = {}
        self._pcrs: list[bytes] = []
        self._locked: set[int] = set()
        self.boots = 0
        self._boot()

    @classmethod
    def from_seed(
        cls, seed: int | bytes | str, *, clock: WallClock, nv: NvState | None = None
    ) -> SimulatedNitroTPM:
        """A TPM whose PKI is derived from the same seed (one-node tools and tests)."""
        return cls(seed=seed, pki=SimulatedNitroPKI(seed), clock=clock, nv=nv)

    @property
    def pki(self) -> SimulatedNitroPKI:
        return self._pki

    # -- lifecycle ---------------------------------------------------------

    def _boot(self) -> None:
        self._pcrs = [reset_value(index) for index in range(PCR_COUNT)]
        self._locked = set()
        self._pcrs[0] = _extend(self._pcrs[0], FIRMWARE_MEASUREMENT)
        self.boots += 1

    def reboot(self) -> None:
        """Platform reset: PCRs and locks reset, NV state (counters) persists."""
        with self._lock:
            self._boot()

    # -- fault hooks -------------------------------------------------------

    def inject_failure(self, op: TpmOp, *, times: int = 1) -> None:
        """The next ``times`` calls of ``op`` raise :class:`TPMError`."""
        if times < 1:
            raise ValueError("times must be positive")
        self._failures[op] = _Fault(remaining=times)

    def inject_delay(self, op: TpmOp, seconds: float, *, times: int = 1) -> None:
        """The next ``times`` calls of ``op`` take ``seconds`` via the injected sleep."""
        if self._sleep is None:
            raise ValueError("this TPM was built without a sleep function")
        if times < 1 or seconds < 0:
            raise ValueError("times must be positive and seconds non-negative")
        self._delays[op] = _Fault(remaining=times, delay_s=seconds)

    def clear_faults(self) -> None:
        self._failures.clear()
        self._delays.clear()

    def _enter(self, op: TpmOp) -> None:
        delay = self._delays.get(op)
        if delay is not None:
            delay.remaining -= 1
            if delay.remaining == 0:
                del self._delays[op]
            if self._sleep is not None:
                self._sleep(delay.delay_s)
        failure = self._failures.get(op)
        if failure is not None:
            failure.remaining -= 1
            if failure.remaining == 0:
                del self._failures[op]
            raise TPMError(f"{op.value}: injected failure")

    # -- PCRs --------------------------------------------------------------

    @staticmethod
    def _check_index(index: int) -> None:
        if type(index) is not int or not 0 <= index < PCR_COUNT:
            raise TPMError(f"PCR index must be 0-{PCR_COUNT - 1}")

    def pcr_read(self, index: int) -> bytes:
        with self._lock:
            self._enter(TpmOp.PCR_READ)
            self._check_index(index)
            return self._pcrs[index]

    def pcr_extend(self, index: int, digest: bytes) -> None:
        with self._lock:
            self._enter(TpmOp.PCR_EXTEND)
            self._check_index(index)
            if type(digest) is not bytes or len(digest) != PCR_BYTES:
                raise TPMError(f"an extend digest is {PCR_BYTES} bytes")
            if index in self._locked:
                raise TPMError(f"PCR {index} is locked")
            self._pcrs[index] = _extend(self._pcrs[index], digest)

    def pcr_lock(self, index: int) -> None:
        """Refuse further extends of PCR ``index`` until the next reboot."""
        with self._lock:
            self._check_index(index)
            self._locked.add(index)

    def pcr_locked(self, index: int) -> bool:
        self._check_index(index)
        return index in self._locked

    # -- attestation -------------------------------------------------------

    def attest(
        self,
        *,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
        user_data: bytes | None = None,
    ) -> bytes:
        with self._lock:
            self._enter(TpmOp.ATTEST)
            for name, value in (
                ("nonce", nonce),
                ("public_key", public_key),
                ("user_data", user_data),
            ):
                if value is not None and (
                    type(value) is not bytes or len(value) > MAX_USER_FIELD_BYTES
                ):
                    raise TPMError(f"{name} must be at most {MAX_USER_FIELD_BYTES} bytes")
            timestamp_ms = self._clock.wall_ms()
            chain = self._pki.chain_for(self.instance_id, timestamp_ms)
            fields = nitrotpm_fields(
                module_id=self.module_id,
                timestamp_ms=timestamp_ms,
                pcrs=dict(enumerate(self._pcrs)),
                certificate=chain.signing.der,
                cabundle=chain.cabundle,
                public_key=public_key,
                user_data=user_data,
                nonce=nonce,
            )
            return sign_payload(encode_payload(fields), chain.signing.private_key)

    # -- sealing -----------------------------------------------------------

    def _seal_key(self, selection: int) -> bytes:
        values = b"".join(self._pcrs[i] for i in range(PCR_COUNT) if selection >> i & 1)
        return hmac.new(
            self._secret, b"seal/v1\x00" + selection.to_bytes(4, "big") + values, hashlib.sha256
        ).digest()

    def seal(self, data: bytes, pcr_indices: Sequence[int]) -> bytes:
        with self._lock:
            self._enter(TpmOp.SEAL)
            if len(data) > MAX_SEAL_BYTES:
                raise TPMError(f"sealed data is at most {MAX_SEAL_BYTES} bytes")
            selection = 0
            for index in pcr_indices:
                self._check_index(index)
                selection |= 1 << index
            header = bytes([_SEAL_VERSION]) + selection.to_bytes(4, "big")
            # Synthetic nonce: the RNG position repeats when a TPM of the same
            # seed starts from a fresh NvState, so the nonce also commits to the
            # sealed data; two different secrets never share a key and nonce.
            nonce = hmac.new(
                self._secret,
                b"seal-nonce/v1\x00" + self._draw(16) + header + data,
                hashlib.sha256,
            ).digest()[:_SEAL_NONCE]
            sealed = AESGCM(self._seal_key(selection)).encrypt(nonce, data, header)
            return header + nonce + sealed

    def unseal(self, blob: bytes) -> bytes:
        with self._lock:
            self._enter(TpmOp.UNSEAL)
            if len(blob) < _SEAL_HEADER + _SEAL_NONCE + 16 or blob[0] != _SEAL_VERSION:
                raise TPMError("not a sealed blob of this TPM")
            header = blob[:_SEAL_HEADER]
            selection = int.from_bytes(blob[1:_SEAL_HEADER], "big")
            if selection >> PCR_COUNT:
                raise TPMError("not a sealed blob of this TPM")
            nonce = blob[_SEAL_HEADER : _SEAL_HEADER + _SEAL_NONCE]
            with contextlib.suppress(InvalidTag):
                return AESGCM(self._seal_key(selection)).decrypt(
                    nonce, blob[_SEAL_HEADER + _SEAL_NONCE :], header
                )
            # One answer for "PCRs changed", "other TPM" and "tampered":
            # telling them apart would help an attacker probe. Raised outside
            # the handler, as every decoder's refusal is.
            raise TPMError("unseal refused: PCR policy not satisfied")

    # -- counters and randomness -------------------------------------------

    def _check_counter(self, counter: int) -> None:
        if type(counter) is not int or not 0 <= counter < COUNTER_COUNT:
            raise TPMError(f"counter must be 0-{COUNTER_COUNT - 1}")

    def counter_read(self, counter: int) -> int:
        with self._lock:
            self._enter(TpmOp.COUNTER_READ)
            self._check_counter(counter)
            return self.nv.counters[counter]

    def counter_increment(self, counter: int) -> int:
        with self._lock:
            self._enter(TpmOp.COUNTER_INCREMENT)
            self._check_counter(counter)
            if self.nv.counters[counter] >= _COUNTER_LIMIT:
                raise TPMError("counter exhausted")
            self.nv.counters[counter] += 1
            return self.nv.counters[counter]

    def _draw(self, n: int) -> bytes:
        self.nv.random_draws += 1
        return hashlib.shake_256(
            self._secret + b"rng/v1\x00" + self.nv.random_draws.to_bytes(8, "big")
        ).digest(n)

    def random_bytes(self, n: int) -> bytes:
        with self._lock:
            self._enter(TpmOp.RANDOM)
            if type(n) is not int or not 0 <= n <= MAX_RANDOM_BYTES:
                raise TPMError(f"random_bytes takes 0-{MAX_RANDOM_BYTES}")
            return self._draw(n)


def _extend(old: bytes, digest: bytes) -> bytes:
    return hashlib.sha384(old + digest).digest()
