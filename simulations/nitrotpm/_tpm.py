"""SimulatedNitroTPM: the TPM seam for the simulator, deterministic from a seed.

* PCR bank: 24 SHA-384 PCRs with the reset values of a PC-client TPM as EC2
  NitroTPM reports them (0-16 and 23 all zeros, 17-22 all ``0xff``);
  ``extend`` computes ``SHA384(old || digest)``; PCRs can be locked until the
  next reboot. At power-on and every reboot the simulated firmware measures
  the TPM's node image (:class:`NodeImage`) into PCRs 0-7 and 12 before any
  node code runs (the boot chain in ``_image.py``): PCR 0 holds the firmware,
  so a simulated document never shows a debug-mode (all-zero) PCR0, and
  PCR 4, 7 and 12 name the image. By default the image is the one derived from
  the code this process runs.
* Attestation: NitroTPM-format documents signed by the run's
  :class:`SimulatedNitroPKI`, with AWS's size limits on nonce, public key and
  user data.
* Sealing: AES-256-GCM under a key derived from this TPM's seed secret and the
  current values of the chosen PCRs, so changing any of them (or using another
  TPM) makes unsealing fail. Nonces are synthetic (derived from the RNG
  position and the sealed data), so they stay deterministic without repeating
  for different data. :meth:`~SimulatedNitroTPM.owner_seal_to` is the TPM
  owner's power to seal data of its choosing to PCR values the machine is not
  in (on a device, ``TPM2_Create`` under a PolicyPCR computed in a trial
  session from the published values).
* Measured HMAC: HMAC-SHA256 under a key derived, like the seal key, from the
  seed secret and the *current* values of the chosen PCRs, so a tag can only
  be computed for the state the simulated machine is in; nothing, the owner
  included, can compute one for another state.
* NV state (monotonic counters, the RNG position) lives in :class:`NvState`,
  which survives :meth:`SimulatedNitroTPM.reboot` and can be handed to a new
  instance to model a node restart on the same machine.
* Counters behave as TPM 2.0 ``TPM_NT_COUNTER`` indices: undefined until
  :meth:`~SimulatedNitroTPM.counter_define`, which gives each definition a
  fresh NV name (a random authorisation policy hashed into it, as on the
  device backend) and initialises the counter one above the highest count any
  counter deleted from this TPM held, as ``TPM2_NV_Increment`` does on an
  unwritten counter (observed on swtpm/libtpms: a counter defined while another
  stands does not inherit that one's count; one defined after a deletion starts
  above it). :meth:`~SimulatedNitroTPM.owner_undefine_counter` is the TPM
  owner's power to delete one, and what raises that high-water mark.
* Fault hooks: make the next calls of an operation fail, or take simulated time.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import hmac
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from actors.seams.clock import WallClock
from actors.seams.tpm import (
    MAX_MEASURED_HMAC_MESSAGE,
    CounterMismatch,
    CounterMissing,
    TPMError,
)
from protocol.attestation import MAX_USER_FIELD_BYTES
from simulations.nitrotpm._document import encode_payload, nitrotpm_fields, sign_payload
from simulations.nitrotpm._image import (
    PCR_COUNT,
    NodeImage,
    firmware_pcrs,
    running_image,
)
from simulations.nitrotpm._pki import SimulatedNitroPKI, derive_bytes, seed_bytes

PCR_BYTES = 48
COUNTER_COUNT = 16
#: NV names are ``nameAlg || H(public area)``; the simulator names with SHA-256.
_NAME_ALG_SHA256 = b"\x00\x0b"
_POLICY_BYTES = 32
MAX_RANDOM_BYTES = 4096
MAX_SEAL_BYTES = 64 * 1024
_COUNTER_LIMIT = (1 << 64) - 1
_SEAL_VERSION = 1
_SEAL_HEADER = 1 + 4  # version, PCR selection bitmap
_SEAL_NONCE = 12


class TpmOp(enum.StrEnum):
    PCR_READ = "pcr_read"
    PCR_EXTEND = "pcr_extend"
    ATTEST = "attest"
    SEAL = "seal"
    UNSEAL = "unseal"
    MEASURED_HMAC = "measured_hmac"
    COUNTER_DEFINE = "counter_define"
    COUNTER_NAME = "counter_name"
    COUNTER_READ = "counter_read"
    COUNTER_INCREMENT = "counter_increment"
    RANDOM = "random_bytes"


@dataclass
class NvCounter:
    """One defined counter: the NV name of its definition and its value."""

    name: bytes
    value: int


@dataclass
class NvState:
    """Non-volatile TPM state: kept across reboots (mutable on purpose)."""

    #: Defined counters by number; an undefined counter has no entry.
    counters: dict[int, NvCounter] = field(default_factory=dict)
    #: The highest count any counter deleted from this TPM held: a counter
    #: defined afresh starts one above it, so re-creating a counter never
    #: lowers the value found at its number.
    highest_count: int = 0
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
        image: NodeImage | None = None,
    ) -> None:
        """``image``: the node image this machine boots (default: the image of
        the code this process runs, :func:`running_image`)."""
        self.image = image if image is not None else running_image()
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
        cls,
        seed: int | bytes | str,
        *,
        clock: WallClock,
        nv: NvState | None = None,
        image: NodeImage | None = None,
    ) -> SimulatedNitroTPM:
        """A TPM whose PKI is derived from the same seed (one-node tools and tests)."""
        return cls(seed=seed, pki=SimulatedNitroPKI(seed), clock=clock, nv=nv, image=image)

    @property
    def pki(self) -> SimulatedNitroPKI:
        return self._pki

    # -- lifecycle ---------------------------------------------------------

    def _boot(self) -> None:
        # Platform reset, then the firmware's measurements of the image.
        self._pcrs = list(firmware_pcrs(self.image))
        self._locked = set()
        self.boots += 1

    def reboot(self) -> None:
        """Platform reset: PCRs and locks reset and the image is measured again;
        NV state (counters) persists."""
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

    def _selection(self, pcr_indices: Sequence[int]) -> int:
        selection = 0
        for index in pcr_indices:
            self._check_index(index)
            selection |= 1 << index
        return selection

    def _selected_values(self, selection: int) -> bytes:
        return b"".join(self._pcrs[i] for i in range(PCR_COUNT) if selection >> i & 1)

    def _seal_key(self, selection: int, values: bytes) -> bytes:
        return hmac.new(
            self._secret, b"seal/v1\x00" + selection.to_bytes(4, "big") + values, hashlib.sha256
        ).digest()

    def _seal_to(self, data: bytes, selection: int, values: bytes) -> bytes:
        if len(data) > MAX_SEAL_BYTES:
            raise TPMError(f"sealed data is at most {MAX_SEAL_BYTES} bytes")
        header = bytes([_SEAL_VERSION]) + selection.to_bytes(4, "big")
        # Synthetic nonce: the RNG position repeats when a TPM of the same
        # seed starts from a fresh NvState, so the nonce also commits to the
        # sealed data; two different secrets never share a key and nonce.
        nonce = hmac.new(
            self._secret,
            b"seal-nonce/v1\x00" + self._draw(16) + header + data,
            hashlib.sha256,
        ).digest()[:_SEAL_NONCE]
        sealed = AESGCM(self._seal_key(selection, values)).encrypt(nonce, data, header)
        return header + nonce + sealed

    def seal(self, data: bytes, pcr_indices: Sequence[int]) -> bytes:
        with self._lock:
            self._enter(TpmOp.SEAL)
            selection = self._selection(pcr_indices)
            return self._seal_to(data, selection, self._selected_values(selection))

    def owner_seal_to(self, data: bytes, pcr_values: Mapping[int, bytes]) -> bytes:
        """What the TPM owner can do on any TPM: seal ``data`` of its choosing to
        PCR values the machine need not be in (``TPM2_Create`` checks no PCR
        state; the owner computes the PolicyPCR digest from values it read in
        an attestation document). :meth:`unseal` opens the blob in that state.
        """
        with self._lock:
            selection = self._selection(list(pcr_values))
            for value in pcr_values.values():
                if type(value) is not bytes or len(value) != PCR_BYTES:
                    raise TPMError(f"a PCR value is {PCR_BYTES} bytes")
            values = b"".join(pcr_values[i] for i in range(PCR_COUNT) if selection >> i & 1)
            return self._seal_to(data, selection, values)

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
                return AESGCM(self._seal_key(selection, self._selected_values(selection))).decrypt(
                    nonce, blob[_SEAL_HEADER + _SEAL_NONCE :], header
                )
            # One answer for "PCRs changed", "other TPM" and "tampered":
            # telling them apart would help an attacker probe. Raised outside
            # the handler, as every decoder's refusal is.
            raise TPMError("unseal refused: PCR policy not satisfied")

    def measured_hmac(self, pcr_indices: Sequence[int], message: bytes) -> bytes:
        with self._lock:
            self._enter(TpmOp.MEASURED_HMAC)
            if type(message) is not bytes or len(message) > MAX_MEASURED_HMAC_MESSAGE:
                raise TPMError(
                    f"a measured HMAC message is at most {MAX_MEASURED_HMAC_MESSAGE} bytes"
                )
            selection = self._selection(pcr_indices)
            if not selection:
                raise TPMError("no PCRs selected")
            # The key of the state the machine is in now: as on a device, there
            # is no way to name another state's key and use it.
            key = hmac.new(
                self._secret,
                b"measured-hmac/v1\x00"
                + selection.to_bytes(4, "big")
                + self._selected_values(selection),
                hashlib.sha256,
            ).digest()
            return hmac.new(key, message, hashlib.sha256).digest()

    # -- counters and randomness -------------------------------------------

    def _check_counter(self, counter: int) -> None:
        if type(counter) is not int or not 0 <= counter < COUNTER_COUNT:
            raise TPMError(f"counter must be 0-{COUNTER_COUNT - 1}")

    def _defined(self, counter: int) -> NvCounter:
        self._check_counter(counter)
        defined = self.nv.counters.get(counter)
        if defined is None:
            raise CounterMissing(f"counter {counter} is not defined")
        return defined

    def counter_define(self, counter: int) -> bytes:
        with self._lock:
            self._enter(TpmOp.COUNTER_DEFINE)
            self._check_counter(counter)
            if counter in self.nv.counters:
                raise TPMError(f"counter {counter} is already defined")
            if self.nv.highest_count >= _COUNTER_LIMIT:
                raise TPMError("counter exhausted")
            # As on a device: the name hashes the index's public area, whose
            # authorisation policy is drawn at random for each definition.
            policy = self._draw(_POLICY_BYTES)
            name = (
                _NAME_ALG_SHA256
                + hashlib.sha256(
                    b"mantle-sim/nv-counter/v1\x00" + counter.to_bytes(4, "big") + policy
                ).digest()
            )
            # The initialising increment: one above the TPM's high-water mark.
            self.nv.counters[counter] = NvCounter(name=name, value=self.nv.highest_count + 1)
            return name

    def counter_name(self, counter: int) -> bytes:
        with self._lock:
            self._enter(TpmOp.COUNTER_NAME)
            return self._defined(counter).name

    def counter_read(self, counter: int) -> int:
        with self._lock:
            self._enter(TpmOp.COUNTER_READ)
            return self._defined(counter).value

    def counter_increment(self, counter: int, *, expected_name: bytes | None = None) -> int:
        with self._lock:
            self._enter(TpmOp.COUNTER_INCREMENT)
            defined = self._defined(counter)
            if expected_name is not None and not hmac.compare_digest(defined.name, expected_name):
                raise CounterMismatch(f"counter {counter} is another definition")
            if defined.value >= _COUNTER_LIMIT:
                raise TPMError("counter exhausted")
            defined.value += 1
            return defined.value

    def owner_undefine_counter(self, counter: int) -> None:
        """What the TPM owner can do to any owner-defined counter: delete it.

        The TPM raises its high-water mark to the deleted counter's value, so a
        counter defined again (at any number) starts above it.
        """
        with self._lock:
            deleted = self._defined(counter)
            self.nv.highest_count = max(self.nv.highest_count, deleted.value)
            del self.nv.counters[counter]

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
