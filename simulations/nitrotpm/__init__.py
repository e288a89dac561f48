"""The simulated NitroTPM and its deterministic AWS-shaped PKI."""

from simulations.nitrotpm._document import encode_payload, nitrotpm_fields, sign_payload
from simulations.nitrotpm._pki import (
    IssuedCertificate,
    SimulatedChain,
    SimulatedNitroPKI,
    derive_p384_key,
    issue_certificate,
    seed_bytes,
)
from simulations.nitrotpm._tpm import (
    FIRMWARE_MEASUREMENT,
    PCR_COUNT,
    NvCounter,
    NvState,
    SimulatedNitroTPM,
    TpmOp,
    reset_value,
)

__all__ = [
    "FIRMWARE_MEASUREMENT",
    "PCR_COUNT",
    "IssuedCertificate",
    "NvCounter",
    "NvState",
    "SimulatedChain",
    "SimulatedNitroPKI",
    "SimulatedNitroTPM",
    "TpmOp",
    "derive_p384_key",
    "encode_payload",
    "issue_certificate",
    "nitrotpm_fields",
    "reset_value",
    "seed_bytes",
    "sign_payload",
]
