"""Known trust anchors.

Which root a verifier pins is configuration: AWS's Nitro root in production,
a simulator's root (``mantle-sim tpm root``) in development. AWS's root is
included here so production needs no extra file; it is checked against the
SHA-256 of its DER that AWS publishes before it is used.
"""

from __future__ import annotations

from protocol.attestation._chain import TrustAnchor

#: SHA-256 of the DER of AWS's Nitro attestation root ("aws.nitro-enclaves").
AWS_NITRO_ROOT_SHA256 = bytes.fromhex(
    "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
)

#: AWS's Nitro attestation root certificate (ECDSA P-384, valid 2019-10-28 to 2049-10-28).
AWS_NITRO_ROOT_PEM = b"""-----BEGIN CERTIFICATE-----
MIICETCCAZagAwIBAgIRAPkxdWgbkK/hHUbMtOTn+FYwCgYIKoZIzj0EAwMwSTEL
MAkGA1UEBhMCVVMxDzANBgNVBAoMBkFtYXpvbjEMMAoGA1UECwwDQVdTMRswGQYD
VQQDDBJhd3Mubml0cm8tZW5jbGF2ZXMwHhcNMTkxMDI4MTMyODA1WhcNNDkxMDI4
MTQyODA1WjBJMQswCQYDVQQGEwJVUzEPMA0GA1UECgwGQW1hem9uMQwwCgYDVQQL
DANBV1MxGzAZBgNVBAMMEmF3cy5uaXRyby1lbmNsYXZlczB2MBAGByqGSM49AgEG
BSuBBAAiA2IABPwCVOumCMHzaHDimtqQvkY4MpJzbolL//Zy2YlES1BR5TSksfbb
48C8WBoyt7F2Bw7eEtaaP+ohG2bnUs990d0JX28TcPQXCEPZ3BABIeTPYwEoCWZE
h8l5YoQwTcU/9KNCMEAwDwYDVR0TAQH/BAUwAwEB/zAdBgNVHQ4EFgQUkCW1DdkF
R+eWw5b6cp3PmanfS5YwDgYDVR0PAQH/BAQDAgGGMAoGCCqGSM49BAMDA2kAMGYC
MQCjfy+Rocm9Xue4YnwWmNJVA44fA0P5W2OpYow9OYCVRaEevL8uO1XYru5xtMPW
rfMCMQCi85sWBbJwKKXdS6BptQFuZbT73o/gBh1qUxl/nNr12UO8Yfwr6wPLb+6N
IwLz3/Y=
-----END CERTIFICATE-----
"""


def aws_nitro_root() -> TrustAnchor:
    """AWS's Nitro root, verified against its published hash."""
    return TrustAnchor.from_pem(AWS_NITRO_ROOT_PEM, expected_sha256=AWS_NITRO_ROOT_SHA256)
