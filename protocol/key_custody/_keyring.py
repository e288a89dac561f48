"""The keys node's keyring: sealed KEKs and wrapped DEKs, with their lifecycles.

The keyring holds no secret in the clear. A KEK (key-encryption key) is kept
only as a TPM-sealed blob, which the TPM opens only while the keys node's PCRs
hold the values they had when it was sealed. A DEK (per-model data key) is
kept only wrapped: ChaCha20-Poly1305 under a KEK, with the model id, key
version and KEK id as associated data, so a wrapped key cannot be relabelled
as another model's or another version's.

Both lifecycles are explicit tables (``_DATA_KEY_TRANSITIONS`` and
``_KEK_TRANSITIONS``); a transition not in a table is a :class:`KeyringError`.
Every state in ``SERVABLE_DATA_KEY_STATES`` is released to attested peers, which
is what lets a rotation proceed while nodes keep loading models:

    data key:  STAGED --activate--> ACTIVE --supersede--> RETIRING --retire--> (gone)
               STAGED --retire--> (gone)              (abandoning a rotation)
    KEK:       PENDING --promote--> ACTIVE --retire--> (gone, once no DEK uses it)

A retired data key leaves the keyring, but its version number does not
come free: the keyring remembers the highest version each model ever retired,
and a new key (generated or imported) must be numbered above every version
the model has had, so a replayed import of an old key is refused.

The keyring is an immutable value; every change returns a new keyring, which
the owner persists before using (so a crash never loses a key that a sealed
model file already depends on). Its encoding here is strict msgpack; on disk
it travels inside an authenticated, counter-bound keyring file
(:class:`~protocol.key_custody.KeyringFile`).
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Final

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from protocol.key_custody._errors import KeyringError
from protocol.sealed_model import DATA_KEY_SIZE, SealedModelFormatError, validate_model_id

KEK_SIZE: Final = 32
WRAP_NONCE_SIZE: Final = 12
# 2: adds the retired-version high-water marks.
KEYRING_FORMAT_VERSION: Final = 2
_WRAP_AAD_DOMAIN: Final = b"mantle/dek-wrap/v1\x00"
_MAX_KEYRING_BYTES: Final = 16 << 20
_MAX_SEALED_BLOB: Final = 64 << 10


class DataKeyState(enum.StrEnum):
    STAGED = "staged"
    ACTIVE = "active"
    RETIRING = "retiring"


class DataKeyEvent(enum.StrEnum):
    ACTIVATE = "activate"
    SUPERSEDE = "supersede"
    RETIRE = "retire"


class KekState(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"


class KekEvent(enum.StrEnum):
    PROMOTE = "promote"
    RETIRE = "retire"


# None = the key leaves the keyring.
_DATA_KEY_TRANSITIONS: Final[Mapping[tuple[DataKeyState, DataKeyEvent], DataKeyState | None]] = (
    MappingProxyType(
        {
            (DataKeyState.STAGED, DataKeyEvent.ACTIVATE): DataKeyState.ACTIVE,
            (DataKeyState.STAGED, DataKeyEvent.RETIRE): None,
            (DataKeyState.ACTIVE, DataKeyEvent.SUPERSEDE): DataKeyState.RETIRING,
            (DataKeyState.RETIRING, DataKeyEvent.RETIRE): None,
        }
    )
)

_KEK_TRANSITIONS: Final[Mapping[tuple[KekState, KekEvent], KekState | None]] = MappingProxyType(
    {
        (KekState.PENDING, KekEvent.PROMOTE): KekState.ACTIVE,
        (KekState.ACTIVE, KekEvent.RETIRE): None,
    }
)

SERVABLE_DATA_KEY_STATES: Final = frozenset(
    {DataKeyState.STAGED, DataKeyState.ACTIVE, DataKeyState.RETIRING}
)


def next_data_key_state(state: DataKeyState, event: DataKeyEvent) -> DataKeyState | None:
    try:
        return _DATA_KEY_TRANSITIONS[(state, event)]
    except KeyError:
        raise KeyringError(f"a {state.value} data key cannot {event.value}") from None


def next_kek_state(state: KekState, event: KekEvent) -> KekState | None:
    try:
        return _KEK_TRANSITIONS[(state, event)]
    except KeyError:
        raise KeyringError(f"a {state.value} KEK cannot {event.value}") from None


@dataclass(frozen=True)
class SealedKek:
    """A KEK as the TPM sealed it, with the PCR indices it is sealed to."""

    kek_id: int
    state: KekState
    sealed_blob: bytes
    pcr_indices: tuple[int, ...]


@dataclass(frozen=True)
class WrappedDataKey:
    """A DEK wrapped under KEK ``kek_id``."""

    model_id: str
    version: int
    state: DataKeyState
    kek_id: int
    nonce: bytes
    ciphertext: bytes

    @property
    def key(self) -> tuple[str, int]:
        return (self.model_id, self.version)


def _wrap_aad(model_id: str, version: int, kek_id: int) -> bytes:
    packed: bytes = msgpack.packb([model_id, version, kek_id])
    return _WRAP_AAD_DOMAIN + packed


def wrap_data_key(
    kek: bytes, *, model_id: str, version: int, kek_id: int, data_key: bytes, nonce: bytes
) -> bytes:
    """``data_key`` encrypted under ``kek``, bound to model, version and KEK id."""
    if len(kek) != KEK_SIZE or len(data_key) != DATA_KEY_SIZE or len(nonce) != WRAP_NONCE_SIZE:
        raise KeyringError("wrong key or nonce size for a DEK wrap")
    return ChaCha20Poly1305(kek).encrypt(nonce, data_key, _wrap_aad(model_id, version, kek_id))


def unwrap_data_key(kek: bytes, record: WrappedDataKey) -> bytes:
    """The DEK in ``record``; :class:`KeyringError` if the KEK or record is wrong."""
    data_key: bytes | None = None
    with contextlib.suppress(InvalidTag):
        data_key = ChaCha20Poly1305(kek).decrypt(
            record.nonce,
            record.ciphertext,
            _wrap_aad(record.model_id, record.version, record.kek_id),
        )
    if data_key is None:
        raise KeyringError(
            f"wrapped data key for {record.model_id} v{record.version} failed authentication"
        )
    if len(data_key) != DATA_KEY_SIZE:
        raise KeyringError("wrapped data key has the wrong size")
    return data_key


@dataclass(frozen=True)
class Keyring:
    """Sealed KEKs and wrapped DEKs. Immutable; changes return a new keyring."""

    keks: tuple[SealedKek, ...]
    data_keys: tuple[WrappedDataKey, ...] = ()
    #: (model id, highest version of it ever retired), one entry per model.
    retired_versions: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        # Canonical order, so equal keyrings compare (and encode) equal.
        object.__setattr__(self, "keks", tuple(sorted(self.keks, key=lambda k: k.kek_id)))
        object.__setattr__(self, "data_keys", tuple(sorted(self.data_keys, key=lambda r: r.key)))
        object.__setattr__(self, "retired_versions", tuple(sorted(self.retired_versions)))
        retired_models = [model_id for model_id, _ in self.retired_versions]
        if len(set(retired_models)) != len(retired_models):
            raise KeyringError("duplicate retired-version entry")
        kek_ids = [kek.kek_id for kek in self.keks]
        if len(set(kek_ids)) != len(kek_ids):
            raise KeyringError("duplicate KEK id")
        active = [kek for kek in self.keks if kek.state is KekState.ACTIVE]
        pending = [kek for kek in self.keks if kek.state is KekState.PENDING]
        if len(active) != 1 or len(pending) > 1:
            raise KeyringError("a keyring has exactly one active KEK and at most one pending")
        known = set(kek_ids)
        seen: set[tuple[str, int]] = set()
        active_per_model: dict[str, int] = {}
        for record in self.data_keys:
            if record.key in seen:
                raise KeyringError(f"duplicate data key {record.model_id} v{record.version}")
            seen.add(record.key)
            if record.kek_id not in known:
                raise KeyringError(f"data key {record.model_id} v{record.version} uses no KEK")
            if record.state is DataKeyState.ACTIVE:
                active_per_model[record.model_id] = active_per_model.get(record.model_id, 0) + 1
        if any(count > 1 for count in active_per_model.values()):
            raise KeyringError("a model has more than one active data key")

    # --- queries -----------------------------------------------------------------------

    @property
    def active_kek(self) -> SealedKek:
        return next(kek for kek in self.keks if kek.state is KekState.ACTIVE)

    @property
    def pending_kek(self) -> SealedKek | None:
        return next((kek for kek in self.keks if kek.state is KekState.PENDING), None)

    @property
    def wrapping_kek(self) -> SealedKek:
        """The KEK new wraps go under: the pending one while a rotation runs."""
        return self.pending_kek or self.active_kek

    def kek(self, kek_id: int) -> SealedKek:
        for kek in self.keks:
            if kek.kek_id == kek_id:
                return kek
        raise KeyringError(f"no KEK {kek_id}")

    def data_key(self, model_id: str, version: int) -> WrappedDataKey | None:
        for record in self.data_keys:
            if record.model_id == model_id and record.version == version:
                return record
        return None

    def active_data_key(self, model_id: str) -> WrappedDataKey | None:
        for record in self.data_keys:
            if record.model_id == model_id and record.state is DataKeyState.ACTIVE:
                return record
        return None

    def versions(self, model_id: str) -> tuple[WrappedDataKey, ...]:
        return tuple(
            sorted((r for r in self.data_keys if r.model_id == model_id), key=lambda r: r.version)
        )

    def models(self) -> tuple[str, ...]:
        return tuple(sorted({record.model_id for record in self.data_keys}))

    def retired_through(self, model_id: str) -> int:
        """The highest version of ``model_id`` ever retired (0: none)."""
        return next((v for m, v in self.retired_versions if m == model_id), 0)

    def next_version(self, model_id: str) -> int:
        """The lowest version a new key of ``model_id`` may take: above every
        version the model has now and every version it ever retired."""
        held = max((r.version for r in self.versions(model_id)), default=0)
        return max(held, self.retired_through(model_id)) + 1

    def next_kek_id(self) -> int:
        return max(kek.kek_id for kek in self.keks) + 1

    # --- changes -----------------------------------------------------------------------

    def with_data_key(self, record: WrappedDataKey) -> Keyring:
        """A keyring with ``record`` added or replacing the record of the same key."""
        others = tuple(r for r in self.data_keys if r.key != record.key)
        return replace(self, data_keys=(*others, record))

    def apply_data_key_event(self, model_id: str, version: int, event: DataKeyEvent) -> Keyring:
        record = self.data_key(model_id, version)
        if record is None:
            raise KeyringError(f"no data key {model_id} v{version}")
        state = next_data_key_state(record.state, event)
        others = tuple(r for r in self.data_keys if r.key != record.key)
        if state is None:
            retired = max(self.retired_through(model_id), version)
            marks = tuple((m, v) for m, v in self.retired_versions if m != model_id)
            return replace(self, data_keys=others, retired_versions=(*marks, (model_id, retired)))
        return replace(self, data_keys=(*others, replace(record, state=state)))

    def with_kek(self, kek: SealedKek) -> Keyring:
        return replace(self, keks=(*self.keks, kek))

    def apply_kek_events(self, events: Mapping[int, KekEvent]) -> Keyring:
        """Apply several KEK transitions at once (a rotation retires one KEK and
        promotes another; neither half alone is a valid keyring)."""
        keks: list[SealedKek] = []
        for kek in self.keks:
            event = events.get(kek.kek_id)
            if event is None:
                keks.append(kek)
                continue
            state = next_kek_state(kek.state, event)
            if state is not None:
                keks.append(replace(kek, state=state))
            elif any(r.kek_id == kek.kek_id for r in self.data_keys):
                raise KeyringError(f"KEK {kek.kek_id} still wraps data keys")
        unknown = set(events) - {kek.kek_id for kek in self.keks}
        if unknown:
            raise KeyringError(f"no KEK {min(unknown)}")
        return replace(self, keks=tuple(keks))

    # --- persistence -------------------------------------------------------------------

    def encode(self) -> bytes:
        encoded: bytes = msgpack.packb(
            [
                KEYRING_FORMAT_VERSION,
                [[k.kek_id, k.state.value, k.sealed_blob, list(k.pcr_indices)] for k in self.keks],
                [
                    [r.model_id, r.version, r.state.value, r.kek_id, r.nonce, r.ciphertext]
                    for r in self.data_keys
                ],
                [[model_id, version] for model_id, version in self.retired_versions],
            ],
            use_bin_type=True,
        )
        return encoded

    @classmethod
    def decode(cls, data: bytes) -> Keyring:
        """Strictly parse a persisted keyring; :class:`KeyringError` names what is wrong."""
        if type(data) is not bytes:
            raise KeyringError("a keyring is bytes")
        if len(data) > _MAX_KEYRING_BYTES:
            raise KeyringError("keyring file is too large")
        failure: str | None = None
        try:
            top = msgpack.unpackb(
                data,
                raw=False,
                strict_map_key=True,
                use_list=True,
                ext_hook=_refuse_ext,
                max_bin_len=_MAX_SEALED_BLOB,
            )
        except KeyringError:
            raise
        except Exception as error:  # msgpack raises several unrelated types
            failure = type(error).__name__
        if failure is not None:
            # Raised outside the handler: msgpack's ExtraData holds the whole
            # decoded keyring, and __context__ would keep it.
            raise KeyringError(f"keyring is not valid msgpack ({failure})")
        version, keks, data_keys, retired = _shape(top, 4, "keyring")
        if version != KEYRING_FORMAT_VERSION:
            raise KeyringError("unsupported keyring format version")
        if not (
            isinstance(keks, list) and isinstance(data_keys, list) and isinstance(retired, list)
        ):
            raise KeyringError("keyring sections must be lists")
        with contextlib.suppress(SealedModelFormatError):
            return cls(
                keks=tuple(_decode_kek(item) for item in keks),
                data_keys=tuple(_decode_data_key(item) for item in data_keys),
                retired_versions=tuple(_decode_retired(item) for item in retired),
            )
        raise KeyringError("keyring holds a malformed model id")


def _refuse_ext(code: int, data: bytes) -> object:
    raise KeyringError("msgpack extension types are not allowed in a keyring")


def _shape(item: object, length: int, what: str) -> list[object]:
    if not isinstance(item, list) or len(item) != length:
        raise KeyringError(f"{what} must be a {length}-element array")
    return item


def _int(value: object, what: str, upper: int = 1 << 32) -> int:
    if type(value) is not int or not 0 <= value < upper:
        raise KeyringError(f"{what} must be an integer in [0, {upper})")
    return value


def _bytes(value: object, what: str, size: int | None = None) -> bytes:
    if type(value) is not bytes or (size is not None and len(value) != size):
        raise KeyringError(f"{what} must be {size if size else 'some'} bytes")
    return value


def _decode_kek(item: object) -> SealedKek:
    kek_id, state, blob, indices = _shape(item, 4, "KEK record")
    if not isinstance(state, str) or state not in KekState._value2member_map_:
        raise KeyringError("unknown KEK state")
    if not isinstance(indices, list) or not indices:
        raise KeyringError("KEK PCR indices must be a non-empty list")
    return SealedKek(
        kek_id=_int(kek_id, "KEK id"),
        state=KekState(state),
        sealed_blob=_bytes(blob, "sealed KEK"),
        pcr_indices=tuple(_int(i, "PCR index", 24) for i in indices),
    )


def _decode_retired(item: object) -> tuple[str, int]:
    model_id, version = _shape(item, 2, "retired-version entry")
    if not isinstance(model_id, str):
        raise KeyringError("model id must be a string")
    return validate_model_id(model_id), _int(version, "retired version")


def _decode_data_key(item: object) -> WrappedDataKey:
    model_id, version, state, kek_id, nonce, ciphertext = _shape(item, 6, "data key record")
    if not isinstance(model_id, str):
        raise KeyringError("model id must be a string")
    if not isinstance(state, str) or state not in DataKeyState._value2member_map_:
        raise KeyringError("unknown data key state")
    return WrappedDataKey(
        model_id=validate_model_id(model_id),
        version=_int(version, "data key version"),
        state=DataKeyState(state),
        kek_id=_int(kek_id, "KEK id"),
        nonce=_bytes(nonce, "wrap nonce", WRAP_NONCE_SIZE),
        ciphertext=_bytes(ciphertext, "wrapped key", DATA_KEY_SIZE + 16),
    )
