"""TPM backends for the node: a TPM 2.0 device through tpm2-pytss.

``TpmDeviceBackend`` implements :class:`actors.seams.tpm.TPM` on
``/dev/tpmrm0``, swtpm, or EC2's NitroTPM. It needs the ``tpm`` extra
(``tpm2-pytss``, which links against the system's libtss2), so it is imported
on first use; the NSM encodings need only cbor2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodes.tpm._nsm import (
    TPM2_CC_AWS_NSM_REQUEST,
    NsmError,
    NsmErrorResponse,
    NsmUnavailable,
    decode_nsm_response,
    encode_nsm_attestation_request,
    encode_nsm_vendor_command,
)

if TYPE_CHECKING:
    from nodes.tpm._device import TpmDeviceBackend

__all__ = [
    "TPM2_CC_AWS_NSM_REQUEST",
    "NsmError",
    "NsmErrorResponse",
    "NsmUnavailable",
    "TpmDeviceBackend",
    "decode_nsm_response",
    "encode_nsm_attestation_request",
    "encode_nsm_vendor_command",
]


def __getattr__(name: str) -> Any:
    if name == "TpmDeviceBackend":
        from nodes.tpm._device import TpmDeviceBackend

        return TpmDeviceBackend
    raise AttributeError(name)
