"""Release metadata verification: every way a release must be refused.

Keys are real (Ed25519 and ECDSA via securesystemslib's CryptoSigner), the
metadata is real TUF metadata, and every refusal is checked by its type and
by the check its message names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from securesystemslib.signer import CryptoSigner, Signature, SSlibKey
from tuf.api.metadata import DelegatedRole, Delegations, TargetFile
from tuf.api.serialization.json import CanonicalJSONSerializer

from protocol.release import (
    RELEASE_ENTRY_SIZE,
    ArtifactSpec,
    BadSignature,
    BelowThreshold,
    Expired,
    MalformedRelease,
    NotInLog,
    ReleaseError,
    ReleaseLogProof,
    UnknownSigner,
    UntrustedRoot,
    VersionRollback,
    WrongKey,
    add_signer,
    bump_root_version,
    decode_release_log_entry,
    metadata_to_bytes,
    new_root,
    new_targets,
    release_log_entry,
    release_log_proof,
    sign_metadata,
    verify_release_in_log,
    verify_release_metadata,
)
from protocol.tlog import MerkleTree, leaf_hash, sign_tree_head

NOW = datetime(2030, 6, 1, tzinfo=UTC)
LATER = NOW + timedelta(days=365)


def _spec(content: bytes) -> ArtifactSpec:
    return ArtifactSpec(len(content), {"sha384": hashlib.sha384(content).digest()})


ARTIFACTS = {
    "mantle-0.1.0-py3-none-any.whl": _spec(b"wheel bytes"),
    "config/node-schema.json": _spec(b'{"type": "object"}'),
    "models/smollm2.gguf": _spec(b"GGUF" + bytes(100)),
}


@dataclass
class Keys:
    root: list[CryptoSigner]
    release: list[CryptoSigner]
    outsiders: list[CryptoSigner] = field(default_factory=list)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        root=[CryptoSigner.generate_ed25519() for _ in range(2)],
        release=[
            CryptoSigner.generate_ed25519(),
            CryptoSigner.generate_ed25519(),
            CryptoSigner(ec.generate_private_key(ec.SECP256R1())),
        ],
        outsiders=[CryptoSigner.generate_ed25519() for _ in range(2)],
    )


def make_root(
    keys: Keys, *, expires: datetime = LATER, threshold: int = 2, sign_with: list[Any] | None = None
) -> bytes:
    root = new_root(expires=expires, targets_threshold=threshold, root_threshold=2)
    for signer in keys.root:
        add_signer(root, signer.public_key, "root")
    for signer in keys.release:
        add_signer(root, signer.public_key, "targets")
    for signer in keys.root if sign_with is None else sign_with:
        sign_metadata(root, signer)
    return metadata_to_bytes(root)


def make_targets(
    signers: list[CryptoSigner],
    *,
    version: int = 5,
    expires: datetime = LATER,
    artifacts: dict[str, ArtifactSpec] | None = None,
    mutate: Callable[[Any], None] | None = None,
) -> bytes:
    targets = new_targets(
        version=version, expires=expires, artifacts=artifacts or ARTIFACTS, min_version=0
    )
    if mutate is not None:
        mutate(targets)
    for signer in signers:
        sign_metadata(targets, signer)
    return metadata_to_bytes(targets)


def verify(root: bytes, targets: bytes, *, trusted: bytes | None = None, min_version: int = 0):  # type: ignore[no-untyped-def]
    # A pin is required; by default the test pins the root it just built.
    return verify_release_metadata(
        root,
        targets,
        trusted_root=root if trusted is None else trusted,
        now=NOW,
        min_version=min_version,
    )


# --- the good path ---------------------------------------------------------------


def test_threshold_of_signers_verifies_and_reports_the_release(keys: Keys) -> None:
    root = make_root(keys)
    targets = make_targets(keys.release[:2])
    verified = verify(root, targets, trusted=root, min_version=5)
    assert verified.version == 5
    assert dict(verified.artifacts) == ARTIFACTS
    assert verified.expires == LATER
    assert len(verified.signer_keyids) == 2
    assert verified.root_version == 1
    signed = json.loads(targets)["signed"]
    canonical = CanonicalJSONSerializer().serialize(
        new_targets(version=5, expires=LATER, artifacts=ARTIFACTS, min_version=0).signed
    )
    assert json.loads(canonical) == signed
    assert verified.release_digest == hashlib.sha384(canonical).digest()


def test_ecdsa_release_signer_counts_toward_threshold(keys: Keys) -> None:
    verified = verify(make_root(keys), make_targets([keys.release[0], keys.release[2]]))
    assert len(verified.signer_keyids) == 2


def test_release_digest_ignores_signature_set_but_not_content(keys: Keys) -> None:
    root = make_root(keys)
    a = verify(root, make_targets(keys.release[:2]))
    b = verify(root, make_targets(keys.release[1:]))
    c = verify(root, make_targets(keys.release[:2], version=6))
    assert a.release_digest == b.release_digest != c.release_digest


# --- signatures and thresholds ----------------------------------------------------


def test_below_threshold_is_refused(keys: Keys) -> None:
    with pytest.raises(BelowThreshold) as caught:
        verify(make_root(keys), make_targets(keys.release[:1]))
    assert type(caught.value) is BelowThreshold
    assert "targets metadata has 1 valid signature(s), threshold is 2" in str(caught.value)


def test_missing_signatures_are_refused(keys: Keys) -> None:
    with pytest.raises(BelowThreshold, match="0 valid signature"):
        verify(make_root(keys), make_targets([]))


def test_wrong_key_is_refused_as_unknown_signer(keys: Keys) -> None:
    with pytest.raises(UnknownSigner) as caught:
        verify(make_root(keys), make_targets(keys.outsiders))
    assert WrongKey is UnknownSigner
    assert set(caught.value.unknown_keyids) == {s.public_key.keyid for s in keys.outsiders}
    assert "not named for the role" in str(caught.value)


def test_root_keys_cannot_sign_releases(keys: Keys) -> None:
    with pytest.raises(UnknownSigner):
        verify(make_root(keys), make_targets(keys.root))


def test_one_key_under_two_keyids_cannot_meet_a_threshold_of_two(keys: Keys) -> None:
    # A keyid is a label the root picks; the same public key listed twice
    # (here with its hex spelled in upper case) must not count as two signers.
    signer = keys.release[0]
    public = signer.public_key
    twin = SSlibKey(
        "f" * 64, public.keytype, public.scheme, {"public": public.keyval["public"].upper()}
    )
    root = new_root(expires=LATER, targets_threshold=2, root_threshold=2)
    for root_signer in keys.root:
        add_signer(root, root_signer.public_key, "root")
    add_signer(root, public, "targets")
    add_signer(root, twin, "targets")
    for root_signer in keys.root:
        sign_metadata(root, root_signer)
    targets = new_targets(version=5, expires=LATER, artifacts=ARTIFACTS, min_version=0)
    signature = targets.signatures[sign_metadata(targets, signer)]
    targets.signatures[twin.keyid] = Signature(twin.keyid, signature.signature)
    root_bytes = metadata_to_bytes(root)
    with pytest.raises(MalformedRelease, match="one public key twice for the targets role"):
        verify(root_bytes, metadata_to_bytes(targets))
    # Also as the pinned root a rotation is counted against.
    with pytest.raises(MalformedRelease, match="pinned root names one public key twice"):
        verify(make_root(keys), make_targets(keys.release[:2]), trusted=root_bytes)


def test_metadata_altered_after_signing_is_refused(keys: Keys) -> None:
    document = json.loads(make_targets(keys.release[:2]))
    document["signed"]["targets"]["models/smollm2.gguf"]["length"] += 1
    with pytest.raises(BadSignature) as caught:
        verify(make_root(keys), json.dumps(document).encode())
    assert len(caught.value.bad_keyids) == 2


def test_unsigned_or_under_signed_root_is_refused(keys: Keys) -> None:
    with pytest.raises(BelowThreshold, match="root metadata has 1 valid"):
        verify(make_root(keys, sign_with=keys.root[:1]), make_targets(keys.release[:2]))


# --- expiry and rollback ----------------------------------------------------------


def test_expired_root_is_refused(keys: Keys) -> None:
    root = make_root(keys, expires=NOW - timedelta(seconds=1))
    with pytest.raises(Expired) as caught:
        verify(root, make_targets(keys.release[:2]))
    assert caught.value.role == "root"
    assert "root metadata expired at" in str(caught.value)


def test_expired_targets_are_refused(keys: Keys) -> None:
    with pytest.raises(Expired) as caught:
        verify(make_root(keys), make_targets(keys.release[:2], expires=NOW))
    assert caught.value.role == "targets"


def test_lower_version_than_trusted_is_refused(keys: Keys) -> None:
    root = make_root(keys)
    with pytest.raises(VersionRollback) as caught:
        verify(root, make_targets(keys.release[:2], version=4), min_version=5)
    assert (caught.value.version, caught.value.minimum) == (4, 5)
    assert "rollback" in str(caught.value)
    assert verify(root, make_targets(keys.release[:2], version=5), min_version=5).version == 5


def test_naive_time_is_a_programming_error(keys: Keys) -> None:
    with pytest.raises(ValueError, match="timezone"):
        verify_release_metadata(
            make_root(keys),
            make_targets(keys.release[:2]),
            trusted_root=None,
            now=datetime(2030, 1, 1),
            min_version=0,
        )


# --- pinned root and rotation ----------------------------------------------------


def _rotated(keys: Keys, new_root_keys: list[CryptoSigner], sign_with: list[CryptoSigner]) -> bytes:
    root = new_root(expires=LATER, targets_threshold=2, root_threshold=2)
    for signer in keys.root:
        add_signer(root, signer.public_key, "root")
    for signer in keys.release:
        add_signer(root, signer.public_key, "targets")
    bump_root_version(root, LATER)
    for signer in keys.root:
        root.signed.revoke_key(signer.public_key.keyid, "root")
    for signer in new_root_keys:
        add_signer(root, signer.public_key, "root")
    for signer in sign_with:
        sign_metadata(root, signer)
    return metadata_to_bytes(root)


def test_root_rotation_needs_both_old_and_new_thresholds(keys: Keys) -> None:
    pinned = make_root(keys)
    targets = make_targets(keys.release[:2])
    new_keys = keys.outsiders
    good = _rotated(keys, new_keys, keys.root + new_keys)
    assert verify(good, targets, trusted=pinned).root_version == 2
    with pytest.raises(BelowThreshold, match="by pinned root v1 keys"):
        verify(_rotated(keys, new_keys, new_keys), targets, trusted=pinned)
    with pytest.raises(BelowThreshold, match="by its own keys"):
        verify(_rotated(keys, new_keys, keys.root), targets, trusted=pinned)


def test_root_other_than_the_pin_is_refused(keys: Keys) -> None:
    pinned = make_root(keys)
    other = make_root(keys, threshold=1)  # same version, different content
    with pytest.raises(UntrustedRoot):
        verify(other, make_targets(keys.release[:2]), trusted=pinned)
    newer = _rotated(keys, keys.outsiders, keys.root + keys.outsiders)
    with pytest.raises(VersionRollback) as caught:
        verify(pinned, make_targets(keys.release[:2]), trusted=newer)
    assert caught.value.role == "root"


def test_root_skipping_a_version_is_refused(keys: Keys) -> None:
    root = new_root(expires=LATER, targets_threshold=2, root_threshold=2, version=3)
    for signer in keys.root:
        add_signer(root, signer.public_key, "root")
    for signer in keys.release:
        add_signer(root, signer.public_key, "targets")
    for signer in keys.root:
        sign_metadata(root, signer)
    with pytest.raises(UntrustedRoot, match="one version at a time"):
        verify(metadata_to_bytes(root), make_targets(keys.release[:2]), trusted=make_root(keys))


# --- malformed metadata -----------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../escape", "/etc/passwd", "a//b", "a/./b", "", ".hidden", "a\\b", "x" * 300]
)
def test_unsafe_artifact_names_are_refused(keys: Keys, name: str) -> None:
    def rename(md: Any) -> None:
        md.signed.targets = {name: TargetFile(1, {"sha384": "00" * 48}, name)}

    with pytest.raises(MalformedRelease, match="not a safe relative path"):
        verify(make_root(keys), make_targets(keys.release[:2], mutate=rename))


def _set_hashes(hashes: dict[str, str]) -> Callable[[Any], None]:
    def mutate(md: Any) -> None:
        md.signed.targets["models/smollm2.gguf"].hashes = hashes

    return mutate


@pytest.mark.parametrize(
    "mutate",
    [
        _set_hashes({"md5": "00" * 16}),
        _set_hashes({"sha384": "zz" * 48}),
        _set_hashes({"sha384": "00" * 47}),
        lambda md: setattr(
            md.signed,
            "delegations",
            Delegations({}, roles={"x": DelegatedRole("x", [], 1, True, ["*"])}),
        ),
    ],
)
def test_structurally_bad_targets_are_refused(keys: Keys, mutate: Callable[[Any], None]) -> None:
    with pytest.raises(MalformedRelease):
        verify(make_root(keys), make_targets(keys.release[:2], mutate=mutate))


def test_empty_release_is_refused(keys: Keys) -> None:
    with pytest.raises(MalformedRelease, match="no artifacts"):
        verify(
            make_root(keys),
            make_targets(keys.release[:2], mutate=lambda md: md.signed.targets.clear()),
        )


@pytest.mark.parametrize(
    "root_bytes, targets_bytes",
    [
        (b"", b"{}"),
        (b"not json", b"{}"),
        (b"[]", b"{}"),
        (b'{"signed": {"_type": "root"}, "signatures": []}', b"{}"),
        (b"x" * (600 * 1024), b"{}"),
    ],
)
def test_garbage_is_a_typed_refusal(keys: Keys, root_bytes: bytes, targets_bytes: bytes) -> None:
    with pytest.raises(MalformedRelease):
        verify(root_bytes, targets_bytes, trusted=make_root(keys))


def test_roles_in_swapped_files_are_refused(keys: Keys) -> None:
    root, targets = make_root(keys), make_targets(keys.release[:2])
    with pytest.raises(MalformedRelease, match="expected root metadata, got targets"):
        verify(targets, root)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_property_any_byte_change_is_refused_or_harmless(keys: Keys, data: st.DataObject) -> None:
    root, targets = make_root(keys), make_targets(keys.release[:2])
    good = verify(root, targets)
    which = data.draw(st.sampled_from(["root", "targets"]))
    blob = bytearray(root if which == "root" else targets)
    position = data.draw(st.integers(0, len(blob) - 1))
    blob[position] = data.draw(st.integers(0, 255).filter(lambda b: b != blob[position]))
    try:
        result = verify(bytes(blob), targets) if which == "root" else verify(root, bytes(blob))
    except ReleaseError:
        return
    # Only a change outside the signed content (e.g. JSON whitespace) may pass,
    # and then it must describe exactly the same release.
    assert result.release_digest == good.release_digest


# --- log entry and log proof -----------------------------------------------------


def _log_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_log_entry_is_fixed_and_decodable(keys: Keys) -> None:
    verified = verify(make_root(keys), make_targets(keys.release[:2]))
    entry = release_log_entry(verified)
    assert len(entry) == RELEASE_ENTRY_SIZE == 74
    decoded = decode_release_log_entry(entry)
    assert (decoded.version, decoded.release_digest) == (5, verified.release_digest)
    for bad in (entry[:-1], b"x" + entry[1:], entry + b"\x00"):
        with pytest.raises(MalformedRelease):
            decode_release_log_entry(bad)


def test_release_in_log_verifies_and_absent_release_does_not(keys: Keys) -> None:
    root = make_root(keys)
    logged = verify(root, make_targets(keys.release[:2], version=5))
    unlogged = verify(root, make_targets(keys.release[:2], version=6))
    tree = MerkleTree()
    for i in range(9):
        tree.append(f"other-{i}".encode())
    index = tree.append(release_log_entry(logged))
    tree.append(b"after")
    key = _log_key()
    sth = sign_tree_head(key, len(tree), 1_900_000_000_000, tree.root_hash())
    proof = release_log_proof(sth, index, tree.inclusion_proof(index), _raw(key))
    verify_release_in_log(logged, ReleaseLogProof.from_json_bytes(proof.to_json_bytes()), _raw(key))

    with pytest.raises(NotInLog, match="version 6"):
        verify_release_in_log(unlogged, proof, _raw(key))
    other_key = Ed25519PrivateKey.from_private_bytes(b"\x08" * 32)
    with pytest.raises(NotInLog, match="different log"):
        verify_release_in_log(logged, proof, _raw(other_key))
    forged = release_log_proof(
        sign_tree_head(other_key, sth.tree_size, sth.timestamp_ms, sth.root_hash),
        index,
        proof.audit_path,
        _raw(key),
    )
    with pytest.raises(NotInLog, match="signature"):
        verify_release_in_log(logged, forged, _raw(key))
    bent = release_log_proof(sth, index, (leaf_hash(b"x"), *proof.audit_path[1:]), _raw(key))
    with pytest.raises(NotInLog):
        verify_release_in_log(logged, bent, _raw(key))


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"[]",
        b'{"log_id": "", "sth": {}, "leaf_index": 0}',
        b'{"log_id": "!", "sth": {}, "leaf_index": 0, "audit_path": []}',
        b'{"log_id": "", "sth": [], "leaf_index": 0, "audit_path": []}',
        b'{"log_id": "", "sth": {}, "leaf_index": true, "audit_path": []}',
        b'{"log_id": "", "sth": {}, "leaf_index": -1, "audit_path": []}',
        b'{"log_id": "", "sth": {}, "leaf_index": 0, "audit_path": {}}',
        b"\xff\xfe",
    ],
)
def test_malformed_log_proofs_are_typed_refusals(text: bytes) -> None:
    with pytest.raises(MalformedRelease):
        ReleaseLogProof.from_json_bytes(text)


def test_deeply_nested_log_proof_is_a_typed_refusal() -> None:
    # Small enough for the size cap, deep enough to exhaust the JSON parser's recursion.
    with pytest.raises(MalformedRelease, match="not JSON"):
        ReleaseLogProof.from_json_bytes(b"[" * 60_000)
