"""The TPM seam over a real TPM 2.0, through tpm2-pytss (ESAPI).

One :class:`TpmDeviceBackend` owns one ESAPI context: ``device:/dev/tpmrm0``
on hardware (the kernel resource manager), ``swtpm:host=...,port=...`` in
tests, ``device:/dev/tpm0`` on EC2 when the NitroTPM vendor command is used
(see :mod:`nodes.tpm._nsm`). ESAPI contexts are not thread-safe and TPM
commands block, so every public method holds one lock; async callers run the
methods in a worker thread, as the seam documents.

What each seam operation maps to:

* ``pcr_read`` / ``pcr_extend``: ``TPM2_PCR_Read`` / ``TPM2_PCR_Extend`` on the
  SHA-384 bank only (``new = SHA384(old || digest)``).
* ``attest``: with ``attestation="quote"``, ``TPM2_Quote`` over the configured
  PCRs with an ECC P-384 attestation key, wrapped in the ``tpm2-quote``
  envelope of :mod:`protocol.attestation.tpm2_quote`; with
  ``attestation="nitrotpm"``, the NitroTPM document from AWS's NSM vendor
  command (EC2 only).
* ``seal`` / ``unseal``: a keyed-hash sealed-data object under the owner
  hierarchy's storage key whose only authorisation is ``TPM2_PolicyPCR`` over
  the named SHA-384 PCRs. Unsealing runs in a salted session with response
  encryption, so the secret does not cross the TPM bus in the clear.
* ``measured_hmac``: ``TPM2_HMAC`` with a keyed-hash HMAC-SHA256 *primary* key
  of the owner hierarchy whose template's ``authPolicy`` is ``TPM2_PolicyPCR``
  over the named SHA-384 PCRs' current values (computed in a trial session).
  A primary key is derived from the hierarchy's seed and its template, so the
  key is the same for the same state after every restart and a different one
  for every other state; without ``USERWITHAUTH`` the key signs only in a
  policy session that satisfied that PolicyPCR, i.e. while the PCRs hold those
  values. The owner can create the same primary from any state (creating
  checks no PCR) but cannot use it outside the state. The HMAC runs in a
  salted session with response encryption, like ``unseal``: a tag for a
  message chosen by whoever supplied it is as good as the key for that message.
* ``counter_*``: ``TPM_NT_COUNTER`` NV indices in the owner hierarchy, which
  never decrease while they exist, across reboots. The owner can undefine one;
  ``TPM2_NV_Increment`` then initialises a counter defined again above the
  deleted one's count, so the value at a handle never goes down. Each
  definition carries a random ``authPolicy`` from ``TPM2_GetRandom``; the NV
  name hashes the public area, so every definition has its own name. Nothing
  ever satisfies that policy and nothing needs to: reads and increments use the
  index's (empty) auth value (``AUTHREAD``/``AUTHWRITE``). An undefined counter
  raises :class:`~actors.seams.tpm.CounterMissing` and only
  ``counter_define`` creates one; an index at a counter handle that is not
  such a counter raises :class:`~actors.seams.tpm.CounterMismatch`.
* ``random_bytes``: ``TPM2_GetRandom``.

The attestation key and the storage key are primary keys derived from the
TPM's endorsement and owner seeds with fixed templates: the same TPM yields the
same keys after every restart, so an AK can be enrolled once and sealed blobs
survive reboots, without persisting any handle in NV.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Final, Literal, TypeVar

from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_NT,
    TPM2_RC,
    TPM2_SE,
    TPMA_NV,
    TPMA_OBJECT,
    TPMA_SESSION,
)
from tpm2_pytss.types import (
    TPM2B_NV_PUBLIC,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPM2B_SENSITIVE_DATA,
    TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION,
    TPMS_NV_PUBLIC,
    TPMS_PCR_SELECTION,
    TPMS_SENSITIVE_CREATE,
    TPMT_HA,
    TPMT_PUBLIC,
    TPMT_SYM_DEF,
    TPMU_HA,
    TPMU_SYM_KEY_BITS,
    TPMU_SYM_MODE,
)

from actors.seams.tpm import (
    MAX_MEASURED_HMAC_MESSAGE,
    MEASURED_HMAC_SIZE,
    CounterMismatch,
    CounterMissing,
    TPMError,
)
from nodes.tpm._nsm import NsmError, request_nitrotpm_document
from protocol.attestation import tpm2_quote

__all__ = [
    "COUNTER_NV_BASE",
    "DEFAULT_QUOTE_PCRS",
    "MAX_SEALED_DATA",
    "PCR_COUNT",
    "TpmDeviceBackend",
]

PCR_COUNT: Final = 24
PCR_SIZE: Final = 48
#: Every PCR by default: the verifier's policy decides which ones matter.
DEFAULT_QUOTE_PCRS: Final = tuple(range(PCR_COUNT))
#: Monotonic counter ``n`` lives at NV index ``COUNTER_NV_BASE + n`` in the
#: owner range of the TCG handle registry (0x01000000-0x013FFFFF).
COUNTER_NV_BASE: Final = 0x01004D00
_MAX_COUNTERS: Final = 256
#: What every counter index this backend defines is, apart from TPMA_NV_WRITTEN.
#: Empty auth: anyone with TPM access may read or advance the counter. What the
#: counter protects is that it never goes back; advancing it is a denial of
#: service at worst, the same as unplugging the node.
_COUNTER_ATTRIBUTES: Final = (
    (TPM2_NT.COUNTER << TPMA_NV.TPM2_NT_SHIFT)
    | TPMA_NV.AUTHREAD
    | TPMA_NV.AUTHWRITE
    | TPMA_NV.NO_DA
)
#: A SHA-256 digest: the random authPolicy that makes each definition's name unique.
_COUNTER_POLICY_BYTES: Final = 32
#: ``MAX_SYM_DATA``: the most a TPM will seal into one keyed-hash object.
MAX_SEALED_DATA: Final = 128
#: ``TPM2_PCR_Read`` returns at most eight digests per call.
_PCR_READ_BATCH: Final = 8
_RANDOM_CHUNK: Final = 32
#: Largest ``random_bytes`` request (as the simulated TPM): the lock is held
#: for the whole request, one 32-byte ``TPM2_GetRandom`` after another.
MAX_RANDOM_BYTES: Final = 4096
_QUOTE_ATTEMPTS: Final = 3

#: Versioned header of a sealed blob (the blob is opaque to callers).
_SEAL_MAGIC: Final = b"MNTLSEAL\x01"

_T = TypeVar("_T")


def _ak_template() -> TPM2B_PUBLIC:
    """A restricted ECDSA P-384 / SHA-384 signing key: the attestation key.

    Restricted means the TPM signs with it only digests it computed itself or
    structures it generated (``TPM_GENERATED_VALUE``), so nothing outside the
    TPM can make it sign a forged ``TPMS_ATTEST``.
    """
    attributes = (
        TPMA_OBJECT.FIXEDTPM
        | TPMA_OBJECT.FIXEDPARENT
        | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.USERWITHAUTH
        | TPMA_OBJECT.RESTRICTED
        | TPMA_OBJECT.SIGN_ENCRYPT
    )
    template = TPM2B_PUBLIC.parse(
        "ecc384:ecdsa-sha384", objectAttributes=attributes, nameAlg="sha384"
    )
    # A signing key has no symmetric algorithm; the parser's default would
    # make the TPM refuse the template.
    template.publicArea.parameters.eccDetail.symmetric.algorithm = TPM2_ALG.NULL
    # A distinct unique field keeps this AK apart from any EK derived from the
    # same seed with a similar template.
    template.publicArea.unique.ecc.x = b"mantle attestation key"
    return template


def _srk_template() -> TPM2B_PUBLIC:
    """The owner hierarchy's storage key: ECC P-256, AES-128-CFB, restricted decrypt."""
    return TPM2B_PUBLIC.parse(
        "ecc256:aes128cfb",
        objectAttributes=TPMA_OBJECT.DEFAULT_TPM2_TOOLS_CREATEPRIMARY_ATTRS,
        nameAlg="sha256",
    )


#: The ``unique`` field of the measured-HMAC primary's template: part of what
#: the key derives from, so no other keyed-hash primary template yields it.
_MEASURED_HMAC_UNIQUE: Final = hashlib.sha256(b"mantle/measured-hmac-key/v1").digest()


def _measured_hmac_template(policy_digest: bytes) -> TPM2B_PUBLIC:
    """The measured-HMAC primary key for the PCR state whose PolicyPCR digest
    is ``policy_digest``: HMAC-SHA256, usable only through that policy.

    No ``USERWITHAUTH``: the (empty) auth value never authorises a use, only a
    policy session does. ``FIXEDTPM | FIXEDPARENT``: never duplicated off the
    TPM. ``NODA``: a refused use (the PCRs moved) must not count towards
    dictionary-attack lockout, as no auth value is involved.
    """
    public = TPM2B_PUBLIC(
        TPMT_PUBLIC(
            type=TPM2_ALG.KEYEDHASH,
            nameAlg=TPM2_ALG.SHA256,
            objectAttributes=TPMA_OBJECT.FIXEDTPM
            | TPMA_OBJECT.FIXEDPARENT
            | TPMA_OBJECT.SENSITIVEDATAORIGIN
            | TPMA_OBJECT.SIGN_ENCRYPT
            | TPMA_OBJECT.NODA,
            authPolicy=policy_digest,
        )
    )
    details = public.publicArea.parameters.keyedHashDetail
    details.scheme.scheme = TPM2_ALG.HMAC
    details.scheme.details.hmac.hashAlg = TPM2_ALG.SHA256
    public.publicArea.unique.keyedHash = _MEASURED_HMAC_UNIQUE
    return public


def _sha384_selection(indices: Sequence[int]) -> TPML_PCR_SELECTION:
    selection = TPMS_PCR_SELECTION(hash=TPM2_ALG.SHA384, sizeofSelect=3)
    bits = bytearray(3)
    for index in indices:
        bits[index // 8] |= 1 << (index % 8)
    selection.pcrSelect = bytes(bits)
    return TPML_PCR_SELECTION([selection])


def _check_pcr_index(index: int) -> None:
    if type(index) is not int or not 0 <= index < PCR_COUNT:
        raise TPMError("PCR index out of range")


def _check_pcr_indices(indices: Sequence[int]) -> tuple[int, ...]:
    for index in indices:
        _check_pcr_index(index)
    ordered = tuple(sorted(set(indices)))
    if not ordered:
        raise TPMError("no PCRs selected")
    return ordered


def _take_sized(blob: bytes, offset: int) -> tuple[bytes, int]:
    """One ``TPM2B`` (16-bit size + data) from ``blob`` at ``offset``, bounds-checked."""
    if offset + 2 > len(blob):
        raise TPMError("sealed blob truncated")
    size = int.from_bytes(blob[offset : offset + 2], "big")
    end = offset + 2 + size
    if end > len(blob):
        raise TPMError("sealed blob truncated")
    return blob[offset:end], end


class TpmDeviceBackend:
    """The :class:`actors.seams.tpm.TPM` seam on a TPM 2.0 device."""

    def __init__(
        self,
        tcti: str = "device:/dev/tpmrm0",
        *,
        attestation: Literal["quote", "nitrotpm"] = "quote",
        quote_pcrs: Sequence[int] = DEFAULT_QUOTE_PCRS,
        counter_nv_base: int = COUNTER_NV_BASE,
    ) -> None:
        if attestation not in ("quote", "nitrotpm"):
            raise ValueError("attestation must be 'quote' or 'nitrotpm'")
        self._quote_pcrs = _check_pcr_indices(quote_pcrs)
        self._attestation = attestation
        self._counter_nv_base = counter_nv_base
        self._lock = threading.Lock()
        self._ak: ESYS_TR | None = None
        self._ak_public_der: bytes | None = None
        self._srk: ESYS_TR | None = None
        try:
            self._esapi: ESAPI | None = ESAPI(tcti)
        except TSS2_Exception as exc:
            raise TPMError(f"cannot open TPM (rc=0x{exc.rc:x})") from exc
        # Fail at start-up, not on first extend, if the bank of record is missing;
        # the caller never gets the backend then, so release the context here.
        try:
            self.pcr_read(0)
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        with self._lock:
            esapi, self._esapi = self._esapi, None
            if esapi is None:
                return
            for handle in (self._ak, self._srk):
                if handle is not None:
                    # Closing anyway; the TPM drops transient objects on reset.
                    with suppress(TSS2_Exception):
                        esapi.flush_context(handle)
            self._ak = self._srk = None
            esapi.close()

    def __enter__(self) -> TpmDeviceBackend:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _session(self, operation: str) -> Iterator[ESAPI]:
        """The ESAPI context under the lock; TSS errors become :class:`TPMError`.

        Error messages carry the operation name and the TPM response code,
        never data.
        """
        with self._lock:
            if self._esapi is None:
                raise TPMError("TPM backend is closed")
            try:
                yield self._esapi
            except TSS2_Exception as exc:
                raise TPMError(f"{operation} failed (rc=0x{exc.rc:x})") from exc

    # ---------------------------------------------------------------- PCRs

    def _read_pcrs(self, esapi: ESAPI, indices: Sequence[int]) -> dict[int, bytes]:
        values: dict[int, bytes] = {}
        for start in range(0, len(indices), _PCR_READ_BATCH):
            batch = indices[start : start + _PCR_READ_BATCH]
            _, _, digests = esapi.pcr_read(_sha384_selection(batch))
            if len(digests) != len(batch):
                raise TPMError("SHA-384 PCR bank is not allocated")
            for index, digest in zip(batch, digests, strict=True):
                value = bytes(digest)
                if len(value) != PCR_SIZE:
                    raise TPMError("PCR value has the wrong size")
                values[index] = value
        return values

    def pcr_read(self, index: int) -> bytes:
        _check_pcr_index(index)
        with self._session("PCR read") as esapi:
            return self._read_pcrs(esapi, (index,))[index]

    def pcr_read_many(self, indices: Sequence[int]) -> dict[int, bytes]:
        """Several SHA-384 PCRs at once (ascending index order)."""
        ordered = _check_pcr_indices(indices)
        with self._session("PCR read") as esapi:
            return self._read_pcrs(esapi, ordered)

    def pcr_extend(self, index: int, digest: bytes) -> None:
        _check_pcr_index(index)
        if not isinstance(digest, bytes) or len(digest) != PCR_SIZE:
            raise TPMError("extend digest must be 48 bytes")
        values = TPML_DIGEST_VALUES(
            [TPMT_HA(hashAlg=TPM2_ALG.SHA384, digest=TPMU_HA(sha384=digest))]
        )
        with self._session("PCR extend") as esapi:
            # Other banks stay as they are: extending only SHA-384 leaves them
            # stale, which is harmless because nothing here reads them.
            esapi.pcr_extend(ESYS_TR.parse(f"PCR{index}"), values)

    # ---------------------------------------------------------------- attestation

    def _attestation_key(self, esapi: ESAPI) -> ESYS_TR:
        if self._ak is None:
            handle, public, _, _, _ = esapi.create_primary(
                TPM2B_SENSITIVE_CREATE(), _ak_template(), ESYS_TR.ENDORSEMENT
            )
            self._ak = handle
            self._ak_public_der = public.to_der()
        return self._ak

    def attestation_key_public(self) -> bytes:
        """The AK's DER SubjectPublicKeyInfo, for enrolment (pinning or certification)."""
        with self._session("attestation key") as esapi:
            self._attestation_key(esapi)
            assert self._ak_public_der is not None
            return self._ak_public_der

    def attest(
        self,
        *,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
        user_data: bytes | None = None,
    ) -> bytes:
        for name, value in (("nonce", nonce), ("public_key", public_key), ("user_data", user_data)):
            if value is not None and (not isinstance(value, bytes) or len(value) > 1024):
                raise TPMError(f"{name} must be at most 1024 bytes")
        if self._attestation == "nitrotpm":
            with self._session("NitroTPM attestation") as esapi:
                try:
                    return request_nitrotpm_document(
                        esapi, nonce=nonce, public_key=public_key, user_data=user_data
                    )
                except NsmError as exc:
                    raise TPMError(str(exc)) from exc
        return self._quote(nonce, public_key, user_data)

    def _quote(
        self, nonce: bytes | None, public_key: bytes | None, user_data: bytes | None
    ) -> bytes:
        extra_data = tpm2_quote.qualifying_data(nonce, public_key, user_data)
        with self._session("quote") as esapi:
            ak = self._attestation_key(esapi)
            assert self._ak_public_der is not None
            for _ in range(_QUOTE_ATTEMPTS):
                attest, signature = esapi.quote(ak, _sha384_selection(self._quote_pcrs), extra_data)
                pcrs = self._read_pcrs(esapi, self._quote_pcrs)
                attest_bytes = bytes(attest)
                # Another process on the machine (IMA, a boot service) may
                # extend a PCR between the quote and the read; then the values
                # no longer match the quoted digest and we quote again.
                quoted = tpm2_quote.parse_attest(attest_bytes)
                expected = tpm2_quote.pcr_digest(
                    tpm2_quote.TpmAlg.SHA384, (pcrs[i] for i in self._quote_pcrs)
                )
                if quoted.pcr_digest == expected:
                    return tpm2_quote.encode_quote_document(
                        tpm2_quote.QuoteDocument(
                            attest=attest_bytes,
                            signature=signature.marshal(),
                            ak_public=self._ak_public_der,
                            pcrs=pcrs,
                            nonce=nonce,
                            public_key=public_key,
                            user_data=user_data,
                        )
                    )
        raise TPMError("PCRs kept changing while quoting")

    # ---------------------------------------------------------------- sealing

    def _storage_key(self, esapi: ESAPI) -> ESYS_TR:
        if self._srk is None:
            handle, _, _, _, _ = esapi.create_primary(
                TPM2B_SENSITIVE_CREATE(), _srk_template(), ESYS_TR.OWNER
            )
            self._srk = handle
        return self._srk

    def _with_flushed(self, esapi: ESAPI, handle: ESYS_TR, use: Callable[[], _T]) -> _T:
        try:
            return use()
        finally:
            esapi.flush_context(handle)

    def _current_pcr_policy(self, esapi: ESAPI, selection: TPML_PCR_SELECTION) -> bytes:
        """The PolicyPCR digest of the selected PCRs' values right now.

        A trial session computes it from the values the TPM holds: PolicyPCR
        with an empty expected digest means "whatever they are at this moment".
        """
        trial = esapi.start_auth_session(
            tpm_key=ESYS_TR.NONE,
            bind=ESYS_TR.NONE,
            session_type=TPM2_SE.TRIAL,
            symmetric=TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
            auth_hash=TPM2_ALG.SHA256,
        )

        def trial_policy() -> bytes:
            esapi.policy_pcr(trial, b"", selection)
            return bytes(esapi.policy_get_digest(trial))

        return self._with_flushed(esapi, trial, trial_policy)

    def _in_pcr_policy_session(
        self,
        esapi: ESAPI,
        selection: TPML_PCR_SELECTION,
        use: Callable[[ESYS_TR], _T],
        operation: str,
    ) -> _T:
        """``use(session)`` in a policy session that satisfied PolicyPCR over
        ``selection`` as the PCRs are now; :class:`TPMError` on a policy failure.

        Salted with the storage key and with response encryption: what the
        command returns (an unsealed secret, an HMAC) travels encrypted to
        this process.
        """
        policy = esapi.start_auth_session(
            tpm_key=self._storage_key(esapi),
            bind=ESYS_TR.NONE,
            session_type=TPM2_SE.POLICY,
            symmetric=TPMT_SYM_DEF(
                algorithm=TPM2_ALG.AES,
                keyBits=TPMU_SYM_KEY_BITS(aes=128),
                mode=TPMU_SYM_MODE(aes=TPM2_ALG.CFB),
            ),
            auth_hash=TPM2_ALG.SHA256,
        )

        def run_policy() -> _T:
            # Inside the flush guard: a failure here must not leak the session.
            esapi.trsess_set_attributes(policy, TPMA_SESSION.CONTINUESESSION | TPMA_SESSION.ENCRYPT)
            esapi.policy_pcr(policy, b"", selection)
            try:
                return use(policy)
            except TSS2_Exception as exc:
                if exc.error == TPM2_RC.POLICY_FAIL:
                    raise TPMError(f"{operation} refused: PCR values changed") from exc
                raise

        return self._with_flushed(esapi, policy, run_policy)

    def seal(self, data: bytes, pcr_indices: Sequence[int]) -> bytes:
        if not isinstance(data, bytes) or not 0 < len(data) <= MAX_SEALED_DATA:
            raise TPMError(f"sealed data must be 1..{MAX_SEALED_DATA} bytes")
        indices = _check_pcr_indices(pcr_indices)
        selection = _sha384_selection(indices)
        with self._session("seal") as esapi:
            srk = self._storage_key(esapi)
            policy_digest = self._current_pcr_policy(esapi, selection)
            # No USERWITHAUTH: the object's auth value can never open it; only
            # a policy session that satisfied PolicyPCR can.
            public = TPM2B_PUBLIC(
                TPMT_PUBLIC(
                    type=TPM2_ALG.KEYEDHASH,
                    nameAlg=TPM2_ALG.SHA256,
                    objectAttributes=TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT,
                    authPolicy=policy_digest,
                )
            )
            public.publicArea.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG.NULL
            sensitive = TPM2B_SENSITIVE_CREATE(
                TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(data))
            )
            private, public_out, _, _, _ = esapi.create(srk, sensitive, public)
        public_bytes: bytes = public_out.marshal()
        private_bytes: bytes = private.marshal()
        return _SEAL_MAGIC + bytes([len(indices)]) + bytes(indices) + public_bytes + private_bytes

    def _parse_sealed(self, blob: bytes) -> tuple[tuple[int, ...], TPM2B_PUBLIC, TPM2B_PRIVATE]:
        if not isinstance(blob, bytes) or not blob.startswith(_SEAL_MAGIC):
            raise TPMError("not a sealed blob")
        offset = len(_SEAL_MAGIC)
        if offset >= len(blob):
            raise TPMError("sealed blob truncated")
        count = blob[offset]
        offset += 1
        if not 0 < count <= PCR_COUNT or offset + count > len(blob):
            raise TPMError("sealed blob PCR list")
        indices = tuple(blob[offset : offset + count])
        offset += count
        if indices != _check_pcr_indices(indices):
            raise TPMError("sealed blob PCR list")
        public_bytes, offset = _take_sized(blob, offset)
        private_bytes, offset = _take_sized(blob, offset)
        if offset != len(blob):
            raise TPMError("trailing bytes in sealed blob")
        decoded = False
        try:
            public, used_public = TPM2B_PUBLIC.unmarshal(public_bytes)
            private, used_private = TPM2B_PRIVATE.unmarshal(private_bytes)
            decoded = True
        except Exception:  # noqa: S110 - the TSS unmarshaller raises several types
            pass
        # Raised outside the handler, so that no __context__ keeps the blob.
        if not decoded or used_public != len(public_bytes) or used_private != len(private_bytes):
            raise TPMError("sealed blob does not decode")
        return indices, public, private

    def unseal(self, blob: bytes) -> bytes:
        indices, public, private = self._parse_sealed(blob)
        selection = _sha384_selection(indices)
        with self._session("unseal") as esapi:
            srk = self._storage_key(esapi)
            sealed = esapi.load(srk, private, public)

            def unseal_in(session: ESYS_TR) -> bytes:
                return bytes(esapi.unseal(sealed, session1=session))

            return self._with_flushed(
                esapi,
                sealed,
                lambda: self._in_pcr_policy_session(esapi, selection, unseal_in, "unseal"),
            )

    # ---------------------------------------------------------------- measured HMAC

    def measured_hmac(self, pcr_indices: Sequence[int], message: bytes) -> bytes:
        if not isinstance(message, bytes) or len(message) > MAX_MEASURED_HMAC_MESSAGE:
            raise TPMError(f"a measured HMAC message is at most {MAX_MEASURED_HMAC_MESSAGE} bytes")
        selection = _sha384_selection(_check_pcr_indices(pcr_indices))
        with self._session("measured HMAC") as esapi:
            # The primary for the state the PCRs are in now. Should they move
            # before the HMAC below, the session's PolicyPCR no longer matches
            # this key's authPolicy and the TPM refuses: a tag is only ever
            # computed under the key of the state the HMAC ran in.
            template = _measured_hmac_template(self._current_pcr_policy(esapi, selection))
            key, _, _, _, _ = esapi.create_primary(
                TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.OWNER
            )

            def hmac_in(session: ESYS_TR) -> bytes:
                return bytes(esapi.hmac(key, message, TPM2_ALG.SHA256, session1=session))

            tag = self._with_flushed(
                esapi,
                key,
                lambda: self._in_pcr_policy_session(esapi, selection, hmac_in, "measured HMAC"),
            )
        if len(tag) != MEASURED_HMAC_SIZE:
            raise TPMError("the TPM returned an HMAC of the wrong size")
        return tag

    # ---------------------------------------------------------------- counters

    def _counter_handle(self, counter: int) -> int:
        if type(counter) is not int or not 0 <= counter < _MAX_COUNTERS:
            raise TPMError("counter number out of range")
        return self._counter_nv_base + counter

    @staticmethod
    def _counter_public(handle: int, auth_policy: bytes) -> TPM2B_NV_PUBLIC:
        return TPM2B_NV_PUBLIC(
            TPMS_NV_PUBLIC(
                nvIndex=handle,
                nameAlg=TPM2_ALG.SHA256,
                attributes=_COUNTER_ATTRIBUTES,
                authPolicy=auth_policy,
                dataSize=8,
            )
        )

    @contextmanager
    def _counter(self, esapi: ESAPI, counter: int) -> Iterator[tuple[ESYS_TR, bytes]]:
        """The counter's ESYS handle and NV name, checked to be a counter as
        :meth:`counter_define` makes them; :class:`CounterMissing` if undefined."""
        handle = self._counter_handle(counter)
        try:
            nv = esapi.tr_from_tpmpublic(handle)
        except TSS2_Exception as exc:
            if exc.error != TPM2_RC.HANDLE:
                raise
            nv = None
        if nv is None:
            raise CounterMissing(f"counter {counter} is not defined")
        try:
            yield nv, self._checked_name(esapi, nv, handle)
        finally:
            # Each tr_from_tpmpublic allocates an ESYS object; release it.
            esapi.tr_close(nv)

    @staticmethod
    def _checked_name(esapi: ESAPI, nv: ESYS_TR, handle: int) -> bytes:
        nv_public, reported = esapi.nv_read_public(nv)
        public = nv_public.nvPublic
        attributes = int(public.attributes) & ~int(TPMA_NV.WRITTEN)
        # An index someone else defined at our handle must not pass for a counter.
        if (
            public.nvIndex != handle
            or public.nameAlg != TPM2_ALG.SHA256
            or attributes != int(_COUNTER_ATTRIBUTES)
            or public.dataSize != 8
            or len(bytes(public.authPolicy)) != _COUNTER_POLICY_BYTES
        ):
            raise CounterMismatch("the NV index at the counter handle is not a Mantle counter")
        name = bytes(public.get_name())
        # The name is the hash of the public area just checked; a TPM (or a
        # proxy in front of it) reporting another name is not to be believed.
        if not hmac.compare_digest(name, bytes(reported)):
            raise TPMError("the TPM reported an NV name that does not match the public area")
        return name

    def _read_counter(self, esapi: ESAPI, nv: ESYS_TR) -> int:
        try:
            return int.from_bytes(bytes(esapi.nv_read(nv, 8)), "big")
        except TSS2_Exception as exc:
            if exc.error != TPM2_RC.NV_UNINITIALIZED:
                raise
        # counter_define initialises before it returns: this is a definition
        # interrupted half-way, or not ours. Never a value of zero.
        raise TPMError("counter is defined but was never initialised")

    def counter_define(self, counter: int) -> bytes:
        handle = self._counter_handle(counter)
        with self._session("counter define") as esapi:
            try:
                esapi.tr_close(esapi.tr_from_tpmpublic(handle))
            except TSS2_Exception as exc:
                if exc.error != TPM2_RC.HANDLE:
                    raise
            else:
                raise TPMError(f"counter {counter} is already defined")
            policy = bytes(esapi.get_random(_COUNTER_POLICY_BYTES))
            if len(policy) != _COUNTER_POLICY_BYTES:
                raise TPMError("TPM returned too few random bytes")
            nv = esapi.nv_define_space(None, self._counter_public(handle, policy))
            try:
                # The initialising increment: the TPM sets the counter above the
                # highest count of any counter deleted from it.
                esapi.nv_increment(nv)
            except BaseException:
                # Leave no unwritten counter behind (it would read as nothing
                # and block the next definition).
                with suppress(TSS2_Exception):
                    esapi.nv_undefine_space(nv)
                raise
            esapi.tr_close(nv)
            with self._counter(esapi, counter) as (_, name):
                return name

    def counter_name(self, counter: int) -> bytes:
        with self._session("counter name") as esapi, self._counter(esapi, counter) as (_, name):
            return name

    def counter_read(self, counter: int) -> int:
        with self._session("counter read") as esapi, self._counter(esapi, counter) as (nv, _):
            return self._read_counter(esapi, nv)

    def counter_increment(self, counter: int, *, expected_name: bytes | None = None) -> int:
        """Advance the counter by one and return the new value.

        Never creates a counter (:class:`CounterMissing` if it is undefined).
        With ``expected_name`` the increment is authorised in an HMAC session:
        its HMAC covers the names ESYS holds for the index, which must be
        ``expected_name``, and the TPM checks it against the index it finds
        when it runs the command, so a counter swapped in between is refused
        (``TPM_RC_BAD_AUTH``) rather than advanced.
        """
        with (
            self._session("counter increment") as esapi,
            self._counter(esapi, counter) as (nv, _),
        ):
            if expected_name is None:
                esapi.nv_increment(nv)
                return self._read_counter(esapi, nv)
            # The name ESYS will put into the HMAC, not a fresh read.
            if not hmac.compare_digest(bytes(esapi.tr_get_name(nv)), expected_name):
                raise CounterMismatch(f"counter {counter} is another definition")
            session = esapi.start_auth_session(
                tpm_key=ESYS_TR.NONE,
                bind=ESYS_TR.NONE,
                session_type=TPM2_SE.HMAC,
                symmetric=TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
                auth_hash=TPM2_ALG.SHA256,
            )
            refused = False
            try:
                esapi.nv_increment(nv, session1=session)
            except TSS2_Exception as exc:
                # The auth value is empty: a bad HMAC can only mean other names.
                if exc.error != TPM2_RC.BAD_AUTH:
                    raise
                refused = True
            finally:
                esapi.flush_context(session)
            if refused:
                raise CounterMismatch(f"counter {counter} was replaced before the increment")
            return self._read_counter(esapi, nv)

    # ---------------------------------------------------------------- randomness

    def random_bytes(self, n: int) -> bytes:
        if type(n) is not int or not 0 <= n <= MAX_RANDOM_BYTES:
            raise TPMError(f"random byte count must be an int in 0..{MAX_RANDOM_BYTES}")
        out = bytearray()
        with self._session("get random") as esapi:
            while len(out) < n:
                chunk = bytes(esapi.get_random(min(_RANDOM_CHUNK, n - len(out))))
                if not chunk:
                    raise TPMError("TPM returned no random bytes")
                out += chunk
        return bytes(out[:n])
