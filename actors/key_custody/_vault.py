"""The keys role: KEKs sealed to this node's PCRs, DEKs released only to attested peers.

:class:`KeyVault` is the logic of the ``key_custody`` actor on a ``keys`` node.
It is synchronous (TPM commands are blocking device I/O; the actor runs calls
in a worker thread) and single-threaded: the actor's mailbox serialises calls,
so a rotation step and a release never interleave inside one call, and the
rotation protocol is designed so that any interleaving *between* calls keeps
every servable key servable -- that is what "no downtime" means here.

Release of a data key (:meth:`KeyVault.release_data_key`), in order:

1. the request's nonce was issued by :meth:`issue_challenge`, is unused and
   younger than ``challenge_ttl`` -- consumed whatever happens next;
2. the model has a key policy (the PCR states of logged releases serving it);
3. the attestation document verifies: chain to the pinned root, signature,
   freshness, *our* nonce, the bound key equal to
   ``noise_key_binding(request.static_public)``, PCRs matching the policy;
4. the requested key version exists and is in a servable state;
5. the KEK wrapping it unseals -- only while this node's PCRs are unchanged;
6. the DEK goes out in a Noise ``N`` envelope to ``request.static_public``,
   with a prologue naming nonce, model and version.

The KEK is unsealed for each use and dropped afterwards: key releases are rare
(node start, rotation), and a change to this node's PCRs stops releases at once.

Rotation without downtime:

* data key: :meth:`begin_data_key_rotation` stages version n+1 (already
  servable) -> :meth:`reseal_model` re-encrypts the sealed file under it,
  streamed -> :meth:`activate_data_key` makes n+1 active and n retiring (both
  still served, so nodes still holding the old file keep loading it) ->
  :meth:`retire_data_key` once every node runs the new file.
* KEK: :meth:`begin_kek_rotation` seals a new pending KEK (new wraps go under
  it) -> :meth:`rewrap_data_keys` moves wrapped DEKs onto it a batch at a
  time, each record replaced atomically, every record always unwrappable by
  the KEK it names -> :meth:`complete_kek_rotation` promotes the new KEK and
  deletes the old sealed blob, after which the old KEK is gone for good.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import msgpack

from actors.key_custody._envelope import (
    envelope_prologue,
    new_static_key,
    open_envelope,
    seal_envelope,
)
from actors.key_custody._errors import (
    Denial,
    KeyReleaseDenied,
    KeyringError,
)
from actors.key_custody._keyring import (
    KEK_SIZE,
    SERVABLE_DATA_KEY_STATES,
    WRAP_NONCE_SIZE,
    DataKeyEvent,
    DataKeyState,
    KekEvent,
    KekState,
    Keyring,
    SealedKek,
    WrappedDataKey,
    unwrap_data_key,
    wrap_data_key,
)
from actors.seams.clock import Clock
from actors.seams.random import Random
from actors.seams.tpm import TPM, TPMError
from protocol.attestation import (
    AttestationError,
    AttestationVerifier,
    DocumentKind,
    Expectations,
    PcrPolicy,
)
from protocol.attestation.binding import noise_key_binding
from protocol.noise import KeyPair
from protocol.sealed_model import (
    DATA_KEY_SIZE,
    DEFAULT_CHUNK_SIZE,
    NONCE_PREFIX_SIZE,
    SealedModelFormatError,
    SealedModelHeader,
    open_stream,
    seal_stream,
    validate_model_id,
)

CHALLENGE_SIZE: Final = 32
DEFAULT_CHALLENGE_TTL_S: Final = 60.0
# Bounded so that a peer asking for challenges in a loop cannot grow memory;
# the oldest outstanding challenge is forgotten first.
MAX_OUTSTANDING_CHALLENGES: Final = 4096
# Evidence older than this is refused even with the right nonce.
DEFAULT_MAX_EVIDENCE_AGE_MS: Final = 60_000

IMPORT_FORMAT_VERSION: Final = 1
GRANT_PURPOSE: Final = "data-key-grant"
IMPORT_PURPOSE: Final = "data-key-import"

PolicyLookup = Callable[[str], PcrPolicy | None]
KeyringSink = Callable[[Keyring], None]


@dataclass(frozen=True)
class DataKeyRequest:
    """A peer asks for a model's data key, proving who it is.

    ``key_version`` ``None`` asks for the active version. ``evidence`` was
    produced for ``nonce`` (from :meth:`KeyVault.issue_challenge`) and binds
    ``noise_key_binding(static_public)``.
    """

    model_id: str
    key_version: int | None
    nonce: bytes
    evidence: bytes
    static_public: bytes
    evidence_kind: DocumentKind = DocumentKind.NITRO


@dataclass(frozen=True)
class DataKeyGrant:
    """A data key in an envelope only the requester's attested key opens."""

    model_id: str
    key_version: int
    envelope: bytes


@dataclass(frozen=True)
class DataKeyImport:
    """A model provider's new data key, in an envelope to the keys node's key.

    ``key_version`` is the version the provider sealed the model file under.
    """

    model_id: str
    key_version: int
    envelope: bytes

    def encode(self) -> bytes:
        encoded: bytes = msgpack.packb(
            [IMPORT_FORMAT_VERSION, self.model_id, self.key_version, self.envelope],
            use_bin_type=True,
        )
        return encoded

    @classmethod
    def decode(cls, data: bytes) -> DataKeyImport:
        if len(data) > 4096:
            raise KeyringError("data key import is too large")
        failure: str | None = None
        try:
            item = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=4096)
        except Exception as error:  # msgpack raises several unrelated types
            failure = type(error).__name__
        if failure is not None:
            # Outside the handler: msgpack's ExtraData holds the decoded import.
            raise KeyringError(f"data key import is not msgpack ({failure})")
        if not isinstance(item, list) or len(item) != 4 or item[0] != IMPORT_FORMAT_VERSION:
            raise KeyringError("data key import has the wrong shape or version")
        _, model_id, key_version, envelope = item
        if not isinstance(model_id, str) or type(envelope) is not bytes:
            raise KeyringError("data key import fields have the wrong types")
        if type(key_version) is not int or not 1 <= key_version < 1 << 32:
            raise KeyringError("data key import version out of range")
        # A malformed id must fail as this module's error, not the sealed-model one.
        with contextlib.suppress(SealedModelFormatError):
            return cls(validate_model_id(model_id), key_version, envelope)
        raise KeyringError("data key import names a malformed model id")


def grant_prologue(nonce: bytes, model_id: str, key_version: int) -> bytes:
    return envelope_prologue(GRANT_PURPOSE, nonce, model_id, key_version)


def import_prologue(model_id: str, key_version: int, recipient_binding: bytes) -> bytes:
    return envelope_prologue(IMPORT_PURPOSE, model_id, key_version, recipient_binding)


class KeyVault:
    """Model key custody on a ``keys`` node. See the module docstring."""

    def __init__(
        self,
        *,
        tpm: TPM,
        random: Random,
        clock: Clock,
        verifier: AttestationVerifier,
        policy_for: PolicyLookup,
        keyring: Keyring,
        persist: KeyringSink | None = None,
        static: KeyPair | None = None,
        challenge_ttl_s: float = DEFAULT_CHALLENGE_TTL_S,
        max_evidence_age_ms: int = DEFAULT_MAX_EVIDENCE_AGE_MS,
    ) -> None:
        self._tpm = tpm
        self._random = random
        self._clock = clock
        self._verifier = verifier
        self._policy_for = policy_for
        self._keyring = keyring
        self._persist = persist
        self._challenge_ttl_s = challenge_ttl_s
        self._max_evidence_age_ms = max_evidence_age_ms
        self._challenges: OrderedDict[bytes, float] = OrderedDict()
        # The node's Noise static key (``NodeKeyCustody.static``, bound into its
        # attestation): model providers seal data key imports to it.
        self._static = static if static is not None else new_static_key(random.token_bytes)

    # --- creation ----------------------------------------------------------------------

    @staticmethod
    def new_keyring(tpm: TPM, random: Random, pcr_indices: Sequence[int]) -> Keyring:
        """A first keyring: one fresh KEK, sealed to ``pcr_indices`` as they are now."""
        return Keyring(keks=(_seal_new_kek(tpm, random, 1, KekState.ACTIVE, pcr_indices),))

    # --- state -------------------------------------------------------------------------

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    @property
    def static_public(self) -> bytes:
        """The envelope key providers seal imports to (bind it into attestation)."""
        return self._static.public

    def _commit(self, keyring: Keyring) -> None:
        # Persist first: a key a sealed file depends on must never exist only in memory.
        if self._persist is not None:
            self._persist(keyring)
        self._keyring = keyring

    def _unseal_kek(self, kek: SealedKek) -> bytes:
        try:
            secret = self._tpm.unseal(kek.sealed_blob)
        except TPMError:
            raise KeyringError(
                f"KEK {kek.kek_id} does not unseal: this node's PCR state changed"
            ) from None
        if len(secret) != KEK_SIZE:
            raise KeyringError(f"KEK {kek.kek_id} unsealed to the wrong size")
        return secret

    def _data_key(self, record: WrappedDataKey) -> bytes:
        kek = self._unseal_kek(self._keyring.kek(record.kek_id))
        return unwrap_data_key(kek, record)

    def _wrap(self, model_id: str, version: int, state: DataKeyState, data_key: bytes) -> Keyring:
        kek_record = self._keyring.wrapping_kek
        kek = self._unseal_kek(kek_record)
        nonce = self._random.token_bytes(WRAP_NONCE_SIZE)
        record = WrappedDataKey(
            model_id=model_id,
            version=version,
            state=state,
            kek_id=kek_record.kek_id,
            nonce=nonce,
            ciphertext=wrap_data_key(
                kek,
                model_id=model_id,
                version=version,
                kek_id=kek_record.kek_id,
                data_key=data_key,
                nonce=nonce,
            ),
        )
        return self._keyring.with_data_key(record)

    # --- adding models -----------------------------------------------------------------

    def add_data_key(self, model_id: str, data_key: bytes, *, version: int | None = None) -> int:
        """Store ``data_key`` as ``version`` (default: the next) of ``model_id``.

        The first key of a model is active at once; later ones are staged.
        """
        validate_model_id(model_id)
        if len(data_key) != DATA_KEY_SIZE:
            raise KeyringError("a data key is 32 bytes")
        if version is None:
            version = self._keyring.next_version(model_id)
        elif not 1 <= version < 1 << 32 or self._keyring.data_key(model_id, version) is not None:
            raise KeyringError(f"data key {model_id} v{version} exists or is out of range")
        state = (
            DataKeyState.ACTIVE
            if self._keyring.active_data_key(model_id) is None
            else DataKeyState.STAGED
        )
        self._commit(self._wrap(model_id, version, state, data_key))
        return version

    def import_data_key(self, request: DataKeyImport) -> int:
        """Open a provider's import envelope addressed to this node and store the key."""
        validate_model_id(request.model_id)
        prologue = import_prologue(
            request.model_id, request.key_version, noise_key_binding(self._static.public)
        )
        data_key = open_envelope(self._static, prologue, request.envelope)
        return self.add_data_key(request.model_id, data_key, version=request.key_version)

    # --- release -----------------------------------------------------------------------

    def issue_challenge(self) -> bytes:
        """A fresh single-use nonce for a peer to attest over."""
        nonce = self._random.token_bytes(CHALLENGE_SIZE)
        self._challenges[nonce] = self._clock.monotonic()
        while len(self._challenges) > MAX_OUTSTANDING_CHALLENGES:
            self._challenges.popitem(last=False)
        return nonce

    def _consume_challenge(self, nonce: bytes) -> None:
        issued = self._challenges.pop(nonce, None)
        if issued is None:
            raise KeyReleaseDenied(Denial.UNKNOWN_CHALLENGE, "nonce unknown or already used")
        if self._clock.monotonic() - issued > self._challenge_ttl_s:
            raise KeyReleaseDenied(Denial.EXPIRED_CHALLENGE, "nonce expired")

    def release_data_key(self, request: DataKeyRequest) -> DataKeyGrant:
        """The data key for an attested peer, or :class:`KeyReleaseDenied`."""
        if not isinstance(request.nonce, bytes) or len(request.nonce) != CHALLENGE_SIZE:
            raise KeyReleaseDenied(Denial.MALFORMED, "nonce must be 32 bytes")
        self._consume_challenge(request.nonce)
        if not isinstance(request.static_public, bytes) or len(request.static_public) != 32:
            raise KeyReleaseDenied(Denial.MALFORMED, "static key must be 32 bytes")
        policy = self._policy_for(request.model_id)
        if policy is None:
            raise KeyReleaseDenied(Denial.NO_POLICY, "no logged release serves this model")
        try:
            self._verifier.verify(
                request.evidence,
                kind=request.evidence_kind,
                expectations=Expectations(
                    pcr_policy=policy,
                    max_age_ms=self._max_evidence_age_ms,
                    expected_nonce=request.nonce,
                    expected_public_key=noise_key_binding(request.static_public),
                ),
                now_ms=self._clock.wall_ms(),
            )
        except AttestationError as error:
            raise KeyReleaseDenied(
                Denial.ATTESTATION, "attestation refused", attestation_check=error.check.value
            ) from None
        if request.key_version is None:
            record = self._keyring.active_data_key(request.model_id)
        else:
            record = self._keyring.data_key(request.model_id, request.key_version)
        if record is None or record.state not in SERVABLE_DATA_KEY_STATES:
            raise KeyReleaseDenied(Denial.UNKNOWN_KEY, "no servable data key for this request")
        try:
            data_key = self._data_key(record)
        except KeyringError:
            raise KeyReleaseDenied(Denial.KEK_SEALED, "KEK unavailable on this node") from None
        envelope = seal_envelope(
            request.static_public,
            grant_prologue(request.nonce, record.model_id, record.version),
            data_key,
            self._random.token_bytes,
        )
        return DataKeyGrant(model_id=record.model_id, key_version=record.version, envelope=envelope)

    # --- data key rotation -------------------------------------------------------------

    def begin_data_key_rotation(self, model_id: str) -> int:
        """Stage a new data key version for ``model_id`` (servable at once)."""
        if self._keyring.active_data_key(model_id) is None:
            raise KeyringError(f"model {model_id} has no active data key to rotate")
        if any(r.state is DataKeyState.STAGED for r in self._keyring.versions(model_id)):
            raise KeyringError(f"model {model_id} already has a staged data key")
        return self.add_data_key(model_id, self._random.token_bytes(DATA_KEY_SIZE))

    def reseal_model(
        self,
        model_id: str,
        sealed: Iterable[bytes],
        new_version: int,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> Iterator[bytes]:
        """The sealed file re-encrypted under data key ``new_version``, streamed.

        The old version is read from the file's header; plaintext exists only
        one chunk at a time in this process's memory.
        """
        target = self._keyring.data_key(model_id, new_version)
        if target is None or target.state not in SERVABLE_DATA_KEY_STATES:
            raise KeyringError(f"no servable data key {model_id} v{new_version}")

        def old_key(header: SealedModelHeader) -> bytes:
            record = self._keyring.data_key(header.model_id, header.key_version)
            if record is None or record.state not in SERVABLE_DATA_KEY_STATES:
                raise KeyringError(f"no servable data key {model_id} v{header.key_version}")
            return self._data_key(record)

        header = SealedModelHeader(
            model_id=model_id,
            key_version=new_version,
            chunk_size=chunk_size,
            nonce_prefix=self._random.token_bytes(NONCE_PREFIX_SIZE),
        )
        plaintext = open_stream(sealed, old_key, expected_model_id=model_id)
        return seal_stream(plaintext, header, self._data_key(target))

    def activate_data_key(self, model_id: str, version: int) -> None:
        """Make staged ``version`` active; the previous active one starts retiring."""
        keyring = self._keyring
        previous = keyring.active_data_key(model_id)
        if previous is not None:
            keyring = keyring.apply_data_key_event(
                model_id, previous.version, DataKeyEvent.SUPERSEDE
            )
        self._commit(keyring.apply_data_key_event(model_id, version, DataKeyEvent.ACTIVATE))

    def retire_data_key(self, model_id: str, version: int) -> None:
        """Forget a retiring (or abandoned staged) data key for good."""
        self._commit(self._keyring.apply_data_key_event(model_id, version, DataKeyEvent.RETIRE))

    # --- KEK rotation ------------------------------------------------------------------

    def begin_kek_rotation(self, pcr_indices: Sequence[int] | None = None) -> int:
        """Seal a new pending KEK; new wraps go under it from now on."""
        if self._keyring.pending_kek is not None:
            raise KeyringError("a KEK rotation is already in progress")
        indices = (
            tuple(pcr_indices) if pcr_indices is not None else self._keyring.active_kek.pcr_indices
        )
        kek_id = self._keyring.next_kek_id()
        kek = _seal_new_kek(self._tpm, self._random, kek_id, KekState.PENDING, indices)
        self._commit(self._keyring.with_kek(kek))
        return kek_id

    def rewrap_data_keys(self, batch: int = 16) -> int:
        """Move up to ``batch`` wrapped DEKs onto the pending KEK; returns how many remain."""
        pending = self._keyring.pending_kek
        if pending is None:
            raise KeyringError("no KEK rotation in progress")
        todo = [r for r in self._keyring.data_keys if r.kek_id != pending.kek_id]
        for record in todo[:batch]:
            data_key = self._data_key(record)
            self._commit(self._wrap(record.model_id, record.version, record.state, data_key))
        return max(0, len(todo) - batch)

    def complete_kek_rotation(self) -> None:
        """Promote the pending KEK and destroy the old one (all DEKs must be rewrapped)."""
        pending = self._keyring.pending_kek
        if pending is None:
            raise KeyringError("no KEK rotation in progress")
        old = self._keyring.active_kek
        self._commit(
            self._keyring.apply_kek_events(
                {old.kek_id: KekEvent.RETIRE, pending.kek_id: KekEvent.PROMOTE}
            )
        )


def _seal_new_kek(
    tpm: TPM, random: Random, kek_id: int, state: KekState, pcr_indices: Sequence[int]
) -> SealedKek:
    indices = tuple(sorted(set(pcr_indices)))
    if not indices:
        raise KeyringError("a KEK must be sealed to at least one PCR")
    kek = random.token_bytes(KEK_SIZE)
    try:
        blob = tpm.seal(kek, indices)
    except TPMError:
        raise KeyringError("the TPM refused to seal a new KEK") from None
    return SealedKek(kek_id=kek_id, state=state, sealed_blob=blob, pcr_indices=indices)


def seal_data_key_import(
    model_id: str,
    data_key: bytes,
    keys_node_static_public: bytes,
    random: Random,
    *,
    key_version: int = 1,
) -> DataKeyImport:
    """A provider-side import envelope for a keys node whose attested key is given.

    The caller must have verified the keys node's attestation document, with
    ``noise_key_binding(keys_node_static_public)`` as its bound key.
    """
    validate_model_id(model_id)
    if len(data_key) != DATA_KEY_SIZE:
        raise KeyringError("a data key is 32 bytes")
    prologue = import_prologue(model_id, key_version, noise_key_binding(keys_node_static_public))
    envelope = seal_envelope(keys_node_static_public, prologue, data_key, random.token_bytes)
    return DataKeyImport(model_id=model_id, key_version=key_version, envelope=envelope)
