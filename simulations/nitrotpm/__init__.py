"""The simulated NitroTPM, its boot chain (node images) and its deterministic AWS-shaped PKI."""

from simulations.nitrotpm._document import encode_payload, nitrotpm_fields, sign_payload
from simulations.nitrotpm._image import (
    CALLING_EFI_APPLICATION,
    DEVELOPMENT_SECURE_BOOT_POLICY,
    FIRMWARE_CONFIG_MEASUREMENT,
    FIRMWARE_MEASUREMENT,
    PCR_COUNT,
    SEPARATOR_MEASUREMENT,
    NodeImage,
    boot_chain_events,
    development_image,
    firmware_pcrs,
    image_measurements_file,
    reference_measurements,
    reset_value,
    running_image,
)
from simulations.nitrotpm._pki import (
    IssuedCertificate,
    SimulatedChain,
    SimulatedNitroPKI,
    derive_p384_key,
    issue_certificate,
    seed_bytes,
)
from simulations.nitrotpm._tpm import (
    NvCounter,
    NvState,
    SimulatedNitroTPM,
    TpmOp,
)

__all__ = [
    "CALLING_EFI_APPLICATION",
    "DEVELOPMENT_SECURE_BOOT_POLICY",
    "FIRMWARE_CONFIG_MEASUREMENT",
    "FIRMWARE_MEASUREMENT",
    "PCR_COUNT",
    "SEPARATOR_MEASUREMENT",
    "IssuedCertificate",
    "NodeImage",
    "NvCounter",
    "NvState",
    "SimulatedChain",
    "SimulatedNitroPKI",
    "SimulatedNitroTPM",
    "TpmOp",
    "boot_chain_events",
    "derive_p384_key",
    "development_image",
    "encode_payload",
    "firmware_pcrs",
    "image_measurements_file",
    "issue_certificate",
    "nitrotpm_fields",
    "reference_measurements",
    "reset_value",
    "running_image",
    "seed_bytes",
    "sign_payload",
]
