"""NitroTPM attestation documents through AWS's NSM vendor command.

On an EC2 instance with NitroTPM, the Nitro Security Module (NSM) is reached
through the TPM itself: the caller writes a CBOR-encoded NSM request into an NV
index it defined, sends the AWS vendor command ``TPM2_CC 0x20000001`` naming
that index (as both the authorisation handle and the NV index), and reads the
CBOR response back from the same index. The response's document is the
COSE-signed NitroTPM attestation document that :mod:`protocol.attestation`
verifies against AWS's root.

Encodings (the NSM API's serde representation, externally tagged enums):

* request:  ``{"Attestation": {"user_data": bstr|null, "nonce": bstr|null,
  "public_key": bstr|null}}``
* response: ``{"Attestation": {"document": bstr}}`` or ``{"Error": "<code>"}``,
  followed by whatever the rest of the NV buffer holds.

The vendor command is sent with a password session carrying the index's auth
value; AWS's own tool uses a salted HMAC session instead, which protects the
auth value on the bus but changes nothing about what is attested (the
document is signed by the NSM, not by the channel). The kernel resource
manager (``/dev/tpmrm0``) may not pass vendor command codes through; on EC2
use the ``device:/dev/tpm0`` TCTI for a NitroTPM-mode backend.

Only the encodings are exercised off EC2: a TPM without the vendor command
answers ``TPM_RC_COMMAND_CODE``, which surfaces as :class:`NsmUnavailable`.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

import cbor2

if TYPE_CHECKING:
    from tpm2_pytss import ESAPI

__all__ = [
    "NSM_BUFFER_SIZE",
    "NSM_ERROR_CODES",
    "TPM2_CC_AWS_NSM_REQUEST",
    "NsmError",
    "NsmErrorResponse",
    "NsmUnavailable",
    "decode_nsm_response",
    "encode_nsm_attestation_request",
    "encode_nsm_vendor_command",
    "parse_tpm_response_code",
    "request_nitrotpm_document",
]

TPM2_CC_AWS_NSM_REQUEST: Final = 0x20000001
TPM_ST_NO_SESSIONS: Final = 0x8001
TPM_ST_SESSIONS: Final = 0x8002
TPM_RS_PW: Final = 0x40000009
#: ``TPM_RC_COMMAND_CODE``: the TPM does not know the command (not a NitroTPM).
TPM_RC_COMMAND_CODE: Final = 0x143
#: The NV buffer holds the request and then the response; a document without
#: optional fields is about 5 KiB and each optional field adds at most 1 KiB.
NSM_BUFFER_SIZE: Final = 8192
_MAX_FIELD: Final = 1024
_MAX_TPM_RESPONSE: Final = 4096
_NOT_CBOR: Final = object()
#: Where the message buffer's NV index is looked for (owner range, clear of
#: the monotonic counters in :mod:`nodes.tpm._device`).
_NSM_NV_FIRST: Final = 0x01004E00
_NSM_NV_CANDIDATES: Final = 64

#: The NSM API's ``ErrorCode`` variants.
NSM_ERROR_CODES: Final = frozenset(
    {
        "Success",
        "InvalidArgument",
        "InvalidIndex",
        "InvalidResponse",
        "ReadOnlyIndex",
        "InvalidOperation",
        "BufferTooSmall",
        "InputTooLarge",
        "InternalError",
    }
)


class NsmError(Exception):
    """The NitroTPM attestation request failed; the message names the step."""


class NsmUnavailable(NsmError):
    """The TPM does not implement the NSM vendor command (not a NitroTPM)."""

    def __init__(self, response_code: int) -> None:
        super().__init__(f"NSM vendor command refused (rc=0x{response_code:x})")
        self.response_code = response_code


class NsmErrorResponse(NsmError):
    """The NSM answered with an error code."""

    def __init__(self, code: str) -> None:
        super().__init__(f"NSM error response: {code}")
        self.code = code


def _optional_field(name: str, value: bytes | None) -> bytes | None:
    if value is not None and (not isinstance(value, bytes) or len(value) > _MAX_FIELD):
        raise NsmError(f"{name} must be at most {_MAX_FIELD} bytes")
    return value


def encode_nsm_attestation_request(
    *, nonce: bytes | None, public_key: bytes | None, user_data: bytes | None
) -> bytes:
    """The CBOR NSM ``Attestation`` request."""
    return cbor2.dumps(
        {
            "Attestation": {
                "user_data": _optional_field("user_data", user_data),
                "nonce": _optional_field("nonce", nonce),
                "public_key": _optional_field("public_key", public_key),
            }
        }
    )


def decode_nsm_response(buffer: bytes) -> bytes:
    """The attestation document from an NSM response read out of the NV buffer.

    The response is one CBOR item at the start of the buffer; the bytes after
    it are the rest of the NV index and are ignored.
    """
    response: object = _NOT_CBOR
    with contextlib.suppress(Exception):  # cbor2 raises several types on malformed input
        response = cbor2.CBORDecoder(io.BytesIO(buffer)).decode()
    if response is _NOT_CBOR:
        # Raised outside the handler: cbor2's exceptions hold what they read.
        raise NsmError("NSM response is not CBOR")
    if not isinstance(response, Mapping) or len(response) != 1:
        raise NsmError("NSM response is not a single-variant map")
    ((variant, body),) = response.items()
    if variant == "Error":
        if not isinstance(body, str) or body not in NSM_ERROR_CODES:
            raise NsmError("NSM error response carries an unknown code")
        raise NsmErrorResponse(body)
    if variant != "Attestation":
        raise NsmError("NSM response is not an attestation response")
    if not isinstance(body, Mapping) or set(body) != {"document"}:
        raise NsmError("NSM attestation response fields")
    document = body["document"]
    if not isinstance(document, bytes) or not document:
        raise NsmError("NSM attestation document is not a byte string")
    return document


def encode_nsm_vendor_command(nv_index: int, auth_value: bytes) -> bytes:
    """``TPM2_CC_AWS_NSM_REQUEST`` naming ``nv_index``, password-authorised.

    Layout (TPM 2.0 Part 1 section 18): tag ``TPM_ST_SESSIONS``, commandSize,
    commandCode; handles ``@authHandle = nvIndex`` and ``nvIndex``; the
    authorization area (its size, then one ``TPMS_AUTH_COMMAND``: ``TPM_RS_PW``,
    an empty nonce, attributes 0, and the index's auth value as the password).
    """
    if not 0 <= nv_index <= 0xFFFFFFFF or len(auth_value) > 64:
        raise NsmError("vendor command arguments out of range")
    session = (
        TPM_RS_PW.to_bytes(4, "big")
        + (0).to_bytes(2, "big")
        + b"\x00"
        + len(auth_value).to_bytes(2, "big")
        + auth_value
    )
    body = (
        TPM2_CC_AWS_NSM_REQUEST.to_bytes(4, "big")
        + nv_index.to_bytes(4, "big")
        + nv_index.to_bytes(4, "big")
        + len(session).to_bytes(4, "big")
        + session
    )
    return TPM_ST_SESSIONS.to_bytes(2, "big") + (2 + 4 + len(body)).to_bytes(4, "big") + body


def parse_tpm_response_code(response: bytes) -> int:
    """The response code of a raw TPM response, after checking its header."""
    if len(response) < 10:
        raise NsmError("TPM response truncated")
    tag = int.from_bytes(response[0:2], "big")
    size = int.from_bytes(response[2:6], "big")
    if tag not in (TPM_ST_NO_SESSIONS, TPM_ST_SESSIONS) or size != len(response):
        raise NsmError("TPM response header malformed")
    return int.from_bytes(response[6:10], "big")


def request_nitrotpm_document(
    esapi: ESAPI,
    *,
    nonce: bytes | None,
    public_key: bytes | None,
    user_data: bytes | None,
    buffer_size: int = NSM_BUFFER_SIZE,
) -> bytes:
    """Run one NSM attestation request through the TPM behind ``esapi``.

    Defines a message-buffer NV index with a fresh random auth value (so no
    other process can read or rewrite it meanwhile), writes the request, sends
    the vendor command, reads the response and always undefines the index.
    ``buffer_size`` exists for TPMs whose NV indices are smaller than a
    NitroTPM's (swtpm allows 2048 bytes); a NitroTPM needs the default.
    """
    # Imported here so that the encodings above work without the ``tpm`` extra.
    from tpm2_pytss import TSS2_Exception
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_CAP, TPM2_PT_NV, TPM2_RC, TPMA_NV
    from tpm2_pytss.types import TPM2B_NV_PUBLIC, TPMS_NV_PUBLIC

    request = encode_nsm_attestation_request(
        nonce=nonce, public_key=public_key, user_data=user_data
    )
    try:
        _, capability = esapi.get_capability(TPM2_CAP.TPM_PROPERTIES, TPM2_PT_NV.BUFFER_MAX)
        properties = capability.data.tpmProperties
        chunk = 512
        if len(properties) and properties[0].property == TPM2_PT_NV.BUFFER_MAX:
            chunk = int(properties[0].value)
        auth_value = bytes(esapi.get_random(32))
        tcti = esapi.get_tcti()
        if tcti is None:
            raise NsmError("ESAPI context has no TCTI for the vendor command")

        nv = None
        nv_index = 0
        for candidate in range(_NSM_NV_FIRST, _NSM_NV_FIRST + _NSM_NV_CANDIDATES):
            public = TPM2B_NV_PUBLIC(
                TPMS_NV_PUBLIC(
                    nvIndex=candidate,
                    nameAlg=TPM2_ALG.SHA256,
                    attributes=TPMA_NV.AUTHREAD | TPMA_NV.AUTHWRITE | TPMA_NV.NO_DA,
                    dataSize=buffer_size,
                )
            )
            try:
                nv = esapi.nv_define_space(auth_value, public, ESYS_TR.OWNER)
            except TSS2_Exception as exc:
                if exc.error == TPM2_RC.NV_DEFINED:
                    continue  # another process holds this one; try the next
                raise
            nv_index = candidate
            break
        if nv is None:
            raise NsmError("no free NV index for the NSM message buffer")

        try:
            for offset in range(0, len(request), chunk):
                esapi.nv_write(nv, request[offset : offset + chunk], offset)
            tcti.transmit(encode_nsm_vendor_command(nv_index, auth_value))
            response_code = parse_tpm_response_code(tcti.receive(_MAX_TPM_RESPONSE))
            if response_code == TPM_RC_COMMAND_CODE:
                raise NsmUnavailable(response_code)
            if response_code != 0:
                # A NitroTPM that failed the request (auth, NV, NSM fault): not "unavailable".
                raise NsmError(f"NSM vendor command failed (rc=0x{response_code:x})")
            buffer = bytearray()
            for offset in range(0, buffer_size, chunk):
                size = min(chunk, buffer_size - offset)
                buffer += bytes(esapi.nv_read(nv, size, offset))
        finally:
            esapi.nv_undefine_space(nv, ESYS_TR.OWNER)
    except TSS2_Exception as exc:
        raise NsmError(f"NSM message buffer failed (rc=0x{exc.rc:x})") from exc
    return decode_nsm_response(bytes(buffer))
