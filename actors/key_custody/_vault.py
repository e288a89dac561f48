"""The keys role: KEKs sealed to this node's PCRs, DEKs released only to attested peers.

:class:`KeyVault` is the state of the ``key_custody`` actor on a ``keys`` node
(:class:`~actors.key_custody.KeyCustodyActor`, which turns the ``keys.*``
messages of :mod:`protocol.key_custody` into calls here). It is synchronous
(TPM commands are blocking device I/O; the actor runs calls in a worker
thread) and single-threaded: the actor's mailbox serialises calls, so a
rotation step and a release never interleave inside one call, and the
rotation protocol is designed so that any interleaving *between* calls keeps
every servable key servable -- that is what "no downtime" means here.

The vault has no key of its own: it uses the node's
:class:`~actors.key_custody.NodeKeyCustody` static key, the one this keys
node's attestation documents bind. Providers seal imports to it; grants are
sealed *with* it, so an inference node that verified the keys node's document
can tell a grant from this keys node from one any other key sealed.

Release of a data key (:meth:`KeyVault.release_data_key`), in order:

1. the request's nonce was issued by :meth:`issue_challenge` *to the peer now
   asking* (its authenticated channel identity), is unused and younger than
   ``challenge_ttl`` -- consumed whatever happens next;
2. the model has a key policy (the PCR states of logged releases serving it);
3. the attestation document verifies: chain to the pinned root, signature,
   freshness, *our* nonce, the bound key equal to
   ``noise_key_binding(request.static_public)``, PCRs matching the policy;
4. the requested key version exists and is in a servable state;
5. the KEK wrapping it unseals -- only while this node's PCRs are unchanged;
6. the DEK goes out in a Noise ``K`` envelope from this node's attested key
   to ``request.static_public``, with a prologue naming nonce, model and version.

Challenges are stateless: a nonce is ``issued_at || random || tag``, the tag an
HMAC, under a key the vault draws from the Random seam when it starts, over
the peer, the issue time and the random part. Checking one recomputes the tag
(so a nonce issued to one peer is refused from any other, and nothing this
vault did not issue passes) and its age. Issuing keeps no state at all, so no
number of identities asking -- Noise static keys are free to make -- can fill
a table and lock newcomers out, or evict anyone's challenge. Only *used*
nonces are remembered, each until it expires (a nonce older than the TTL is
refused by age alone), so the memory is bounded by how many requests arrive
within one TTL; past :data:`MAX_USED_CHALLENGES` the vault refuses to issue or
accept more (:attr:`Denial.TOO_MANY_CHALLENGES`) rather than forget a used
nonce, which would let it be replayed. That refusal needs a sustained flood of
release requests over authenticated channels, a denial of service that any
flood achieves; it never lets a request through.

Imports (:meth:`KeyVault.import_data_key`) are accepted only from the model's
provider: the envelope must be a Noise ``K`` message sealed by the provider's
static key that the verified release names for the model
(``provider_static_for``), addressed to this node's attested key. No provider
key for the model, or an envelope from any other key, is refused, and leaves
the keyring untouched (so a refused import cannot stage a key that would then
block a legitimate rotation). An import must also name a version above every
version the model has or ever retired, so a replayed old import file does not
bring a superseded key back.

The KEK is unsealed for each use and dropped afterwards: key releases are rare
(node start, rotation), and a change to this node's PCRs stops releases at once.

KEKs are sealed to every register of the measured state
(:data:`~protocol.measurement.MEASURED_PCRS`: the node image's platform
registers and the application registers) or a superset; a narrower selection
is refused (:class:`UnmeasuredKekSelection`), since a KEK sealed to the
application registers alone unseals on the same machine booted into any
image that extends their published digests.

The keyring lives in a file bound to the TPM counter :data:`KEYRING_COUNTER`
and authenticated by the TPM's measured HMAC over the same registers
(:mod:`actors.key_custody._keyring_file`; the file's format is
:class:`protocol.key_custody.KeyringFile`), a MAC only this keys node's code,
in its measured state on this TPM, can compute: :meth:`KeyVault.new_keyring`
defines the counter and makes the first file, the constructor opens only the
newest file (an older copy, a counter the owner deleted or re-created, an
edited file or one written anywhere else are refused), and every change goes
through :meth:`KeyVault._commit`, which writes the next version and then
advances the counter, and never writes two different changes under one
version. So a retired data key or a destroyed KEK does not come back by
restoring an old file.

Rotation without downtime:

* data key: :meth:`begin_data_key_rotation` stages version n+1 (already
  servable) -> :meth:`reseal_model` re-encrypts the sealed file under it,
  streamed -> :meth:`activate_data_key` makes n+1 active and n retiring (both
  still served, so nodes still holding the old file keep loading it) ->
  :meth:`retire_data_key` once every node runs the new file.
* KEK: :meth:`begin_kek_rotation` seals a new pending KEK (new wraps go under
  it) -> :meth:`rewrap_data_keys` moves wrapped DEKs onto it a batch at a
  time, each batch committed atomically (one file write and one counter step
  per batch, not per record: NV writes wear the TPM), every record always
  unwrappable by the KEK it names -> :meth:`complete_kek_rotation` promotes
  the new KEK and deletes the old sealed blob, after which no keyring this
  vault opens holds the old KEK.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import hmac
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Final

from actors.counter_guard import advance_counter, open_counter
from actors.key_custody._errors import (
    CommitInterrupted,
    KeyReleaseDenied,
    UnmeasuredKekSelection,
)
from actors.key_custody._keyring_file import (
    KEYRING_COUNTER,
    seal_keyring_file,
    verify_keyring_file,
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
from protocol.key_custody import (
    CHALLENGE_SIZE,
    KEK_SIZE,
    SERVABLE_DATA_KEY_STATES,
    WRAP_NONCE_SIZE,
    DataKeyEvent,
    DataKeyGrant,
    DataKeyImport,
    DataKeyRequest,
    DataKeyState,
    Denial,
    EnvelopeError,
    KekEvent,
    KekState,
    Keyring,
    KeyringCheck,
    KeyringError,
    KeyringFile,
    KeyringRefused,
    SealedKek,
    WrappedDataKey,
    grant_prologue,
    import_prologue,
    open_envelope,
    seal_envelope,
    unwrap_data_key,
    wrap_data_key,
)
from protocol.measurement import (
    MEASURED_PCRS,
    MeasurementError,
    MissingPlatformRegisters,
    require_measured,
)
from protocol.noise import KeyPair
from protocol.sealed_model import (
    DATA_KEY_SIZE,
    DEFAULT_CHUNK_SIZE,
    NONCE_PREFIX_SIZE,
    SealedModelHeader,
    open_stream,
    seal_stream,
    validate_model_id,
)

if TYPE_CHECKING:
    from actors.key_custody._node import NodeKeyCustody

DEFAULT_CHALLENGE_TTL_S: Final = 60.0
#: Used challenges the vault remembers at once (each until it expires). Filling
#: it takes this many release requests within one TTL -- about 1 100 a second
#: for the default 60 s, each over an authenticated channel -- and costs some
#: 15 MB; when it is full, issuing and answering wait for entries to expire.
MAX_USED_CHALLENGES: Final = 1 << 16
#: A peer is named by its authenticated channel identity: its Noise static key.
PEER_ID_SIZE: Final = 32
#: Nonce layout: issue time (signed milliseconds of the vault's monotonic
#: clock) || random || tag over (peer, issue time, random).
_CHALLENGE_TIME_SIZE: Final = 8
_CHALLENGE_RANDOM_SIZE: Final = 8
_CHALLENGE_TAG_SIZE: Final = CHALLENGE_SIZE - _CHALLENGE_TIME_SIZE - _CHALLENGE_RANDOM_SIZE
_CHALLENGE_KEY_SIZE: Final = 32
_CHALLENGE_TAG_DOMAIN: Final = b"mantle/key-release-challenge/v1\x00"
#: The registers a KEK must be sealed to (at least): the measured state.
KEK_PCRS: Final = MEASURED_PCRS
# Evidence older than this is refused even with the right nonce.
DEFAULT_MAX_EVIDENCE_AGE_MS: Final = 60_000

PolicyLookup = Callable[[str], PcrPolicy | None]
#: model id -> the model provider's 32-byte X25519 static public key named for it
#: in the verified release (``VerifiedRelease.model_provider_static``), or None.
ProviderKeyLookup = Callable[[str], bytes | None]
#: Stores a keyring file durably (atomically replacing the previous one) before
#: returning; the vault uses the new keyring only after it returned.
KeyringSink = Callable[[bytes], None]


class KeyVault:
    """Model key custody on a ``keys`` node. See the module docstring."""

    def __init__(
        self,
        *,
        custody: NodeKeyCustody,
        tpm: TPM,
        random: Random,
        clock: Clock,
        verifier: AttestationVerifier,
        policy_for: PolicyLookup,
        provider_static_for: ProviderKeyLookup,
        keyring: bytes,
        persist: KeyringSink,
        challenge_ttl_s: float = DEFAULT_CHALLENGE_TTL_S,
        max_evidence_age_ms: int = DEFAULT_MAX_EVIDENCE_AGE_MS,
    ) -> None:
        self._tpm = tpm
        self._random = random
        self._clock = clock
        self._verifier = verifier
        self._policy_for = policy_for
        self._provider_static_for = provider_static_for
        self._persist = persist
        self._challenge_ttl_ms = int(challenge_ttl_s * 1000)
        self._max_evidence_age_ms = max_evidence_age_ms
        # Tags challenges (see the module docstring); lives as long as this
        # vault, so a restart invalidates every challenge issued before it.
        self._challenge_key = random.token_bytes(_CHALLENGE_KEY_SIZE)
        # Used nonces until they expire: the set to look up, the heap (by
        # expiry) to forget them in order.
        self._used: set[bytes] = set()
        self._used_expiry: list[tuple[int, bytes]] = []
        # The node's one Noise static key, the one its attestation documents
        # bind; never a key of the vault's own (there is no parameter for one).
        self._static: KeyPair = custody.static
        #: Set while a commit is under way, and left set if it fails after the
        #: write began: see _commit.
        self._interrupted = False
        opened, self._needs_own_version = self._open_keyring(keyring)
        self._stored = opened
        self._keyring = opened.keyring
        self._binding = opened.binding
        #: The keyring's version, equal to the keyring counter once opened.
        self._version = opened.version

    # --- creation ----------------------------------------------------------------------

    @staticmethod
    def new_keyring(tpm: TPM, random: Random, pcr_indices: Sequence[int] = KEK_PCRS) -> bytes:
        """The first keyring file of this keys node: one fresh KEK, sealed to
        ``pcr_indices`` (every register of :data:`KEK_PCRS`, and any others) as
        they are now, bound to a newly defined keyring counter and MACed in this
        measured state.

        Refused (:class:`~actors.counter_guard.CounterRefused`, BINDING_MISSING)
        if this TPM already has a keyring counter: a keyring exists somewhere,
        and starting afresh needs the TPM owner to delete that counter first,
        which forgets every key the old keyring held.
        """
        # The selection first: a refused one must not define the counter.
        indices = _kek_selection(pcr_indices)
        counter, binding = open_counter(tpm, KEYRING_COUNTER, None)
        kek = _seal_new_kek(tpm, random, 1, KekState.ACTIVE, indices)
        # A KEK that does not unseal in this state is no start of a keyring.
        _unseal(tpm, kek)
        # One above the fresh counter, as an interrupted commit leaves a file:
        # the vault that opens it advances the counter to it, so its history
        # starts with its own increment and needs no copy first (see _commit).
        # No other file can carry this version: this counter was just defined.
        return seal_keyring_file(
            Keyring(keks=(kek,)), version=counter + 1, binding=binding, tpm=tpm
        ).encode()

    def _open_keyring(self, data: bytes) -> tuple[KeyringFile, bool]:
        """The stored keyring, if it is the newest this node committed, and
        whether its version is the counter's (see :meth:`_commit` for why that
        matters)."""
        stored = KeyringFile.decode(data)
        # Nothing in the file is used before the MAC verified: only this keys
        # node, in this measured state on this TPM, can have computed it.
        verify_keyring_file(stored, self._tpm)
        counter, binding = open_counter(self._tpm, KEYRING_COUNTER, stored.binding)
        if stored.version < counter:
            raise KeyringRefused(
                KeyringCheck.ROLLBACK,
                f"keyring version {stored.version} is below the keyring counter {counter}:"
                " an older copy of the keyring file",
            )
        if stored.version > counter + 1:
            raise KeyringRefused(
                KeyringCheck.AHEAD_OF_COUNTER,
                f"keyring version {stored.version} is more than one write ahead of the"
                f" keyring counter {counter}",
            )
        if stored.version == counter + 1:
            # The last commit wrote the file and stopped before advancing the
            # counter (see _commit): finish it before anything uses the keyring.
            # This vault's increment made the counter reach this version, so
            # nobody wrote the next one yet.
            advance_counter(self._tpm, binding, counter, stored.version)
            return stored, False
        return stored, True

    # --- state -------------------------------------------------------------------------

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    @property
    def keyring_version(self) -> int:
        """The committed keyring's version (the keyring counter's value)."""
        return self._version

    @property
    def static_public(self) -> bytes:
        """This node's attested static key: imports are sealed to it, grants with it."""
        return self._static.public

    def _commit(self, keyring: Keyring) -> None:
        """Make ``keyring`` the committed one: file first, then counter, then memory.

        1. persist the file as version ``counter + 1`` -- a key a sealed model
           file depends on must never exist only in memory;
        2. advance the keyring counter to that version -- from now on every
           older file is refused;
        3. use the new keyring.

        A crash after 1 leaves a file one above the counter, which opening
        accepts and completes (see :meth:`_open_keyring`).

        No version is ever written with two different changes. Were it, the
        owner could keep one file (say, still holding a data key the other
        retired) and restore it once the counter reached that version: both
        verify, both are "the newest". The interrupted commit is what would
        cause it -- a file written, the counter not advanced (power cut, a
        failed increment) -- followed by another change numbered the same. So:

        * a commit that fails once its write began leaves the vault
          *interrupted*: it takes no further change (:class:`CommitInterrupted`)
          until it is opened again from the stored file, whatever that is now;
        * a vault opened on a file one above the counter advances the counter
          to it before anything else (:meth:`_open_keyring`);
        * a vault opened on a file *equal* to the counter cannot tell whether an
          interrupted commit left a file one above it somewhere. Before its
          first change it commits the keyring unchanged, as ``counter + 1``,
          and advances; the change then takes ``counter + 2``.

        Hence a change is only ever written as version ``v + 1`` right after
        *this* vault's own increment took the counter to ``v`` -- and each
        counter value is reached by exactly one increment -- so at most one
        change carries each version. The only other files that may share it
        are unchanged copies of a version-``v`` keyring, written by a vault
        that opened one. And once a commit *returns*, its vault advanced the
        counter to its version itself, having written nothing else under it:
        no other file carries that version, every older one is refused, so
        nothing the commit removed comes back. (A change whose commit failed
        was never made; a later start may find its file and adopt it, or not.)

        Before writing, the committed file's MAC is computed again: the PCRs
        only move forward, so if they still show the state that file was
        written in, the new file's MAC (computed first) is of that state too,
        and a commit never writes a file that would not open here.
        """
        if self._interrupted:
            raise CommitInterrupted(
                "an earlier commit stopped after writing the keyring file; open the vault"
                " again from the stored file before changing the keyring"
            )
        if self._needs_own_version:
            self._write_and_advance(self._keyring)
            self._needs_own_version = False
        self._write_and_advance(keyring)

    def _write_and_advance(self, keyring: Keyring) -> None:
        target = self._version + 1
        stored = seal_keyring_file(keyring, version=target, binding=self._binding, tpm=self._tpm)
        unmoved = False
        with contextlib.suppress(KeyringRefused):
            verify_keyring_file(self._stored, self._tpm)
            unmoved = True
        if not unmoved:
            raise KeyringError(
                "this node's PCRs changed since the keyring was opened: a file written now"
                " would not open in the measured state; nothing was committed"
            )
        self._interrupted = True
        self._persist(stored.encode())
        self._version = advance_counter(self._tpm, self._binding, self._version, target)
        self._interrupted = False
        self._stored = stored
        self._keyring = keyring

    def _unseal_kek(self, kek: SealedKek) -> bytes:
        return _unseal(self._tpm, kek)

    def _data_key(self, record: WrappedDataKey) -> bytes:
        kek = self._unseal_kek(self._keyring.kek(record.kek_id))
        return unwrap_data_key(kek, record)

    def _wrap(
        self, keyring: Keyring, model_id: str, version: int, state: DataKeyState, data_key: bytes
    ) -> Keyring:
        """``keyring`` with ``data_key`` wrapped under its wrapping KEK."""
        kek_record = keyring.wrapping_kek
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
        return keyring.with_data_key(record)

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
        elif not self._keyring.next_version(model_id) <= version < 1 << 32:
            # Never a version the model has, or had and retired.
            raise KeyringError(f"data key {model_id} v{version} is not a new version")
        state = (
            DataKeyState.ACTIVE
            if self._keyring.active_data_key(model_id) is None
            else DataKeyState.STAGED
        )
        self._commit(self._wrap(self._keyring, model_id, version, state, data_key))
        return version

    def import_data_key(self, request: DataKeyImport) -> int:
        """Store the data key in a model provider's import; see the module docstring.

        :class:`EnvelopeError` names why an import was refused
        (:attr:`Denial.NO_PROVIDER_KEY`, :attr:`Denial.UNAUTHENTICATED_SENDER`);
        a refused import changes nothing.
        """
        model_id = validate_model_id(request.model_id)
        provider_static = self._provider_static_for(model_id)
        if provider_static is None:
            raise EnvelopeError(
                Denial.NO_PROVIDER_KEY, "no verified release names a provider key for this model"
            )
        if type(provider_static) is not bytes or len(provider_static) != 32:
            raise EnvelopeError(
                Denial.NO_PROVIDER_KEY, "the provider key named for this model is not 32 bytes"
            )
        prologue = import_prologue(
            model_id, request.key_version, noise_key_binding(self.static_public)
        )
        data_key = open_envelope(self._static, provider_static, prologue, request.envelope)
        # Authentic, but possibly an old import file played again: add_data_key
        # takes no version the model has or ever retired.
        return self.add_data_key(model_id, data_key, version=request.key_version)

    # --- release -----------------------------------------------------------------------

    def issue_challenge(self, peer: bytes) -> bytes:
        """A fresh single-use nonce for ``peer`` to attest over.

        ``peer`` is the requester's authenticated identity (its Noise static
        key from the channel the request arrives on); only a request from the
        same peer can use the nonce. Issuing keeps no state (see the module
        docstring); it is refused only while the used-challenge memory is full.
        """
        _check_peer(peer)
        now = self._monotonic_ms()
        self._forget_expired(now)
        if len(self._used) >= MAX_USED_CHALLENGES:
            raise KeyReleaseDenied(
                Denial.TOO_MANY_CHALLENGES, "too many challenges used recently; retry later"
            )
        issued = now.to_bytes(_CHALLENGE_TIME_SIZE, "big", signed=True)
        random_part = self._random.token_bytes(_CHALLENGE_RANDOM_SIZE)
        return issued + random_part + self._challenge_tag(peer, issued, random_part)

    def _monotonic_ms(self) -> int:
        return int(self._clock.monotonic() * 1000)

    def _challenge_tag(self, peer: bytes, issued: bytes, random_part: bytes) -> bytes:
        message = _CHALLENGE_TAG_DOMAIN + peer + issued + random_part
        return hmac.new(self._challenge_key, message, hashlib.sha256).digest()[:_CHALLENGE_TAG_SIZE]

    def _forget_expired(self, now: int) -> None:
        # A nonce past its expiry is refused by age, so remembering it is moot.
        while self._used_expiry and self._used_expiry[0][0] < now:
            _, nonce = heapq.heappop(self._used_expiry)
            self._used.discard(nonce)

    def _consume_challenge(self, peer: bytes, nonce: bytes) -> None:
        issued = nonce[:_CHALLENGE_TIME_SIZE]
        random_part = nonce[_CHALLENGE_TIME_SIZE : _CHALLENGE_TIME_SIZE + _CHALLENGE_RANDOM_SIZE]
        tag = nonce[_CHALLENGE_TIME_SIZE + _CHALLENGE_RANDOM_SIZE :]
        if not hmac.compare_digest(tag, self._challenge_tag(peer, issued, random_part)):
            raise KeyReleaseDenied(
                Denial.UNKNOWN_CHALLENGE, "nonce not issued to this peer, or already used"
            )
        now = self._monotonic_ms()
        issued_ms = int.from_bytes(issued, "big", signed=True)
        if not 0 <= now - issued_ms <= self._challenge_ttl_ms:
            raise KeyReleaseDenied(Denial.EXPIRED_CHALLENGE, "nonce expired")
        self._forget_expired(now)
        if nonce in self._used:
            raise KeyReleaseDenied(
                Denial.UNKNOWN_CHALLENGE, "nonce not issued to this peer, or already used"
            )
        if len(self._used) >= MAX_USED_CHALLENGES:
            # Not consumed: nothing about the request was looked at, and the
            # nonce stays good for one use until it expires.
            raise KeyReleaseDenied(
                Denial.TOO_MANY_CHALLENGES, "too many challenges used recently; retry later"
            )
        self._used.add(nonce)
        heapq.heappush(self._used_expiry, (issued_ms + self._challenge_ttl_ms, nonce))

    def release_data_key(self, request: DataKeyRequest, *, peer: bytes) -> DataKeyGrant:
        """The data key for an attested peer, or :class:`KeyReleaseDenied`.

        ``peer`` is the authenticated identity the request arrived from (as
        given to :meth:`issue_challenge`).
        """
        _check_peer(peer)
        if not isinstance(request.nonce, bytes) or len(request.nonce) != CHALLENGE_SIZE:
            raise KeyReleaseDenied(Denial.MALFORMED, "nonce must be 32 bytes")
        self._consume_challenge(peer, request.nonce)
        if not isinstance(request.static_public, bytes) or len(request.static_public) != 32:
            raise KeyReleaseDenied(Denial.MALFORMED, "static key must be 32 bytes")
        policy: PcrPolicy | None = None
        unmeasured = False
        try:
            policy = self._policy_for(request.model_id)
        except MeasurementError:  # e.g. a release naming no node image
            unmeasured = True
        if policy is None and not unmeasured:
            raise KeyReleaseDenied(Denial.NO_POLICY, "no logged release serves this model")
        if unmeasured or policy is None or not _is_measured(policy):
            raise KeyReleaseDenied(
                Denial.UNMEASURED_POLICY,
                "the model's policy does not pin the node image and the application registers",
            )
        try:
            self._verifier.verify(
                request.evidence,
                kind=request.evidence_kind,
                expectations=Expectations(
                    pcr_policy=policy,
                    # Freshness is the single-use, short-lived challenge. A
                    # document that carries a time is also held to a maximum
                    # age; a TPM 2.0 quote carries none, and its nonce is enough.
                    max_age_ms=(
                        None
                        if request.evidence_kind is DocumentKind.TPM2_QUOTE
                        else self._max_evidence_age_ms
                    ),
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
            self._static,
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
        """Seal a new pending KEK; new wraps go under it from now on.

        ``pcr_indices`` (default: the active KEK's) must include every register
        of :data:`KEK_PCRS`, or :class:`UnmeasuredKekSelection`.
        """
        if self._keyring.pending_kek is not None:
            raise KeyringError("a KEK rotation is already in progress")
        indices = _kek_selection(
            pcr_indices if pcr_indices is not None else self._keyring.active_kek.pcr_indices
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
        keyring = self._keyring
        for record in todo[:batch]:
            data_key = self._data_key(record)
            keyring = self._wrap(keyring, record.model_id, record.version, record.state, data_key)
        if keyring is not self._keyring:
            self._commit(keyring)
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


def _unseal(tpm: TPM, kek: SealedKek) -> bytes:
    secret: bytes | None = None
    with contextlib.suppress(TPMError):
        secret = tpm.unseal(kek.sealed_blob)
    if secret is None:
        raise KeyringError(f"KEK {kek.kek_id} does not unseal: this node's PCR state changed")
    if len(secret) != KEK_SIZE:
        raise KeyringError(f"KEK {kek.kek_id} unsealed to the wrong size")
    return secret


def _kek_selection(pcr_indices: Sequence[int]) -> tuple[int, ...]:
    """``pcr_indices`` sorted, if it includes every register of :data:`KEK_PCRS`.

    A KEK sealed to fewer unseals outside the measured state: to the
    application registers alone, on this machine booted into any image that
    extends their published digests (they are extendable by anyone).
    """
    indices = tuple(sorted(set(pcr_indices)))
    if not set(KEK_PCRS) <= set(indices):
        raise UnmeasuredKekSelection(
            "a KEK is sealed to the node image's platform registers and the application"
            f" registers (PCR {', '.join(map(str, KEK_PCRS))}) at least"
        )
    return indices


def _seal_new_kek(
    tpm: TPM, random: Random, kek_id: int, state: KekState, pcr_indices: Sequence[int]
) -> SealedKek:
    indices = _kek_selection(pcr_indices)
    kek = random.token_bytes(KEK_SIZE)
    try:
        blob = tpm.seal(kek, indices)
    except TPMError:
        raise KeyringError("the TPM refused to seal a new KEK") from None
    return SealedKek(kek_id=kek_id, state=state, sealed_blob=blob, pcr_indices=indices)


def _is_measured(policy: PcrPolicy) -> bool:
    """Whether every entry of ``policy`` pins the platform and application registers."""
    try:
        require_measured(policy)
    except MissingPlatformRegisters:
        return False
    return True


def _check_peer(peer: object) -> None:
    if type(peer) is not bytes or len(peer) != PEER_ID_SIZE:
        raise KeyReleaseDenied(Denial.MALFORMED, "a peer is named by its 32-byte static key")
