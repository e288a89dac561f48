"""A deterministic certificate hierarchy shaped like AWS's Nitro PKI.

root -> regional -> zonal -> instance -> signing certificate, every key
ECDSA P-384 derived from the seed, every signature deterministic (RFC 6979),
so one seed and one point in time reproduce the same bytes.

Lifetimes follow what AWS issues: the root is long-lived and independent of
time (so ``mantle-sim tpm root --seed S`` can be pinned once); the lower tiers
rotate in fixed time buckets, and a certificate for bucket ``k`` is valid
from the bucket's start until its end plus the longest lifetime below it, so
every certificate a verifier sees at time ``t`` is inside its validity.

Nothing here is AWS: subjects say "SIMULATED" and use ``.invalid`` names, and
module ids start with ``sim-``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

_P384_ORDER = int(
    "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
    16,
)
_DOMAIN = b"mantle-sim/nitro-pki/v1\x00"
_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS

ROOT_NOT_BEFORE = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
ROOT_NOT_AFTER = dt.datetime(2050, 1, 1, tzinfo=dt.UTC)
SIMULATED_REGION = "sim-region-1"
SIMULATED_DOMAIN = "sim-nitro.invalid"


@dataclass(frozen=True, slots=True)
class _Tier:
    name: str
    bucket_ms: int
    lifetime_ms: int
    path_length: int | None


# Bucket = how often a new certificate (and key) is issued; lifetime covers
# the bucket plus everything issued under it during that bucket.
_REGIONAL = _Tier("regional", 20 * _DAY_MS, 26 * _DAY_MS + 3 * _HOUR_MS, 2)
_ZONAL = _Tier("zonal", 5 * _DAY_MS, 6 * _DAY_MS + 3 * _HOUR_MS, 1)
_INSTANCE = _Tier("instance", _DAY_MS, _DAY_MS + 3 * _HOUR_MS, 0)
#: AWS's signing certificates live three hours; a new one each hour.
SIGNING_BUCKET_MS = _HOUR_MS
SIGNING_LIFETIME_MS = 3 * _HOUR_MS


def seed_bytes(seed: int | bytes | str) -> bytes:
    """Canonical bytes for a seed given as an int, text or bytes."""
    if isinstance(seed, bool):
        raise TypeError("a seed is an int, str or bytes")
    if isinstance(seed, int):
        if seed < 0:
            raise ValueError("an integer seed is non-negative")
        return str(seed).encode()
    if isinstance(seed, str):
        return seed.encode()
    return bytes(seed)


def derive_bytes(seed: bytes, label: str, length: int = 64) -> bytes:
    """Domain-separated pseudo-random bytes from a seed (SHAKE-256)."""
    return hashlib.shake_256(_DOMAIN + label.encode() + b"\x00" + seed).digest(length)


def derive_p384_key(seed: bytes, label: str) -> ec.EllipticCurvePrivateKey:
    # 512 bits reduced mod a 384-bit order: the bias is below 2**-128.
    scalar = int.from_bytes(derive_bytes(seed, "key/" + label), "big") % (_P384_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP384R1())


def _serial(seed: bytes, label: str) -> int:
    # Positive, non-zero, at most 20 octets as RFC 5280 requires.
    return int.from_bytes(derive_bytes(seed, "serial/" + label, 16), "big") | 1


def _utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms // 1000, tz=dt.UTC)


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A certificate with its private key."""

    der: bytes
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    @property
    def subject(self) -> x509.Name:
        return self.certificate.subject


def issue_certificate(
    *,
    subject: x509.Name,
    subject_key: ec.EllipticCurvePrivateKey,
    issuer: IssuedCertificate | None,
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
    ca: bool | None,
    path_length: int | None = None,
    key_cert_sign: bool = False,
    digital_signature: bool = False,
    content_commitment: bool = False,
    crl_sign: bool = False,
    key_usage_critical: bool = True,
) -> IssuedCertificate:
    """Build and sign one certificate; ``issuer=None`` makes it self-signed.

    ``ca=None`` omits basicConstraints. Exposed so tests can build chains that
    break one rule at a time.
    """
    issuer_name = subject if issuer is None else issuer.subject
    signing_key = subject_key if issuer is None else issuer.private_key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(subject_key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True
        )
    builder = builder.add_extension(
        x509.KeyUsage(
            digital_signature=digital_signature,
            content_commitment=content_commitment,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=key_cert_sign,
            crl_sign=crl_sign,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=key_usage_critical,
    )
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), critical=False
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.private_key.public_key()),
            critical=False,
        )
    certificate = builder.sign(signing_key, hashes.SHA384(), ecdsa_deterministic=True)
    return IssuedCertificate(
        der=certificate.public_bytes(Encoding.DER), certificate=certificate, private_key=subject_key
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "XX"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Mantle simulation"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "SIMULATED - NOT AWS"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@dataclass(frozen=True, slots=True)
class SimulatedChain:
    """What one simulated instance signs with at one moment."""

    #: Root, regional, zonal, instance, with their keys.
    authorities: tuple[IssuedCertificate, ...]
    signing: IssuedCertificate

    @property
    def cabundle(self) -> tuple[bytes, ...]:
        """Root first, as the document's ``cabundle`` lists them."""
        return tuple(authority.der for authority in self.authorities)


class SimulatedNitroPKI:
    """The simulated cloud's certificate authority, deterministic from ``seed``.

    One PKI serves every simulated TPM of a run, so a verifier pins one root.
    Issued certificates are memoised per time bucket.
    """

    def __init__(self, seed: int | bytes | str) -> None:
        self._seed = seed_bytes(seed)
        self._tag = derive_bytes(self._seed, "tag", 8).hex()
        self._issued: dict[tuple[str, ...], IssuedCertificate] = {}
        self.root = issue_certificate(
            subject=_name(f"SIMULATED-root-{self._tag}.{SIMULATED_DOMAIN}"),
            subject_key=derive_p384_key(self._seed, "root"),
            issuer=None,
            serial=_serial(self._seed, "root"),
            not_before=ROOT_NOT_BEFORE,
            not_after=ROOT_NOT_AFTER,
            ca=True,
            key_cert_sign=True,
            digital_signature=True,
            crl_sign=True,
        )

    @property
    def root_der(self) -> bytes:
        return self.root.der

    def root_pem(self) -> bytes:
        return self.root.certificate.public_bytes(Encoding.PEM)

    def _ca(
        self, tier: _Tier, label: str, common_name: str, issuer: IssuedCertificate, time_ms: int
    ) -> IssuedCertificate:
        bucket = time_ms // tier.bucket_ms
        key = (tier.name, label, str(bucket))
        issued = self._issued.get(key)
        if issued is None:
            start = bucket * tier.bucket_ms
            full_label = f"{tier.name}/{label}/{bucket}"
            issued = issue_certificate(
                subject=_name(common_name),
                subject_key=derive_p384_key(self._seed, full_label),
                issuer=issuer,
                serial=_serial(self._seed, full_label),
                not_before=_utc(start),
                not_after=_utc(start + tier.lifetime_ms),
                ca=True,
                path_length=tier.path_length,
                key_cert_sign=True,
                # AWS's instance certificates carry keyCertSign alone.
                digital_signature=tier is not _INSTANCE,
                crl_sign=tier is not _INSTANCE,
            )
            self._issued[key] = issued
        return issued

    def chain_for(self, instance_id: str, time_ms: int) -> SimulatedChain:
        """The chain ``instance_id`` signs with at ``time_ms`` (ms since the epoch)."""
        if time_ms < int(ROOT_NOT_BEFORE.timestamp()) * 1000:
            raise ValueError("simulated PKI starts in 2020")
        regional = self._ca(
            _REGIONAL, "", f"{self._tag}.{SIMULATED_REGION}.{SIMULATED_DOMAIN}", self.root, time_ms
        )
        zonal = self._ca(
            _ZONAL,
            "",
            f"{self._tag}.zonal.{SIMULATED_REGION}.{SIMULATED_DOMAIN}",
            regional,
            time_ms,
        )
        instance = self._ca(
            _INSTANCE,
            instance_id,
            f"{instance_id}.{SIMULATED_REGION}.{SIMULATED_DOMAIN}",
            zonal,
            time_ms,
        )
        bucket = time_ms // SIGNING_BUCKET_MS
        key = ("signing", instance_id, str(bucket))
        signing = self._issued.get(key)
        if signing is None:
            start = bucket * SIGNING_BUCKET_MS
            label = f"signing/{instance_id}/{bucket}"
            signing = issue_certificate(
                subject=_name(f"{instance_id}-tpm.{SIMULATED_REGION}.{SIMULATED_DOMAIN}"),
                subject_key=derive_p384_key(self._seed, label),
                issuer=instance,
                serial=_serial(self._seed, label),
                not_before=_utc(start),
                not_after=_utc(start + SIGNING_LIFETIME_MS),
                ca=False,
                digital_signature=True,
                content_commitment=True,
                key_usage_critical=False,
            )
            self._issued[key] = signing
        return SimulatedChain(authorities=(self.root, regional, zonal, instance), signing=signing)
