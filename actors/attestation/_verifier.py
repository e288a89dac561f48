"""Verifying a peer's evidence on a channel: authentic, bound to the channel, in policy."""

from __future__ import annotations

from collections.abc import Callable
from typing import final

from actors.attestation._evidence import Evidence
from actors.attestation._service import MIN_NONCE_BYTES
from actors.seams.clock import Clock
from protocol.attestation import (
    AttestationVerifier,
    Expectations,
    PcrPolicy,
    VerifiedAttestation,
    noise_key_binding,
)
from protocol.measurement import require_measured


@final
class PeerAttestationVerifier:
    """A channel's ``VerifyAttestation``: the peer's document must

    * authenticate (chain to the pinned root or a pinned attestation key,
      signature) as of the Clock seam's wall time;
    * carry ``expected_nonce``, which the channel derived from its handshake
      hash (or a re-attestation challenge): that is its freshness, so no
      maximum age is asked and TPM 2.0 quotes, which carry no time, pass;
    * bind ``noise_key_binding(remote_static)``, the key this very handshake
      authenticated;
    * show PCRs that the policy allows. ``policy`` is a policy or a function
      returning the current one (releases change while links stay open); it
      cannot be ``None``, and a policy that does not pin the platform and
      application registers is refused (``require_measured``).

    Final, and the only verifier a node link takes
    (``nodes.tcp_transport``): peers are checked by this code, not by a
    stand-in.
    """

    def __init__(
        self,
        *,
        verifier: AttestationVerifier,
        policy: PcrPolicy | Callable[[], PcrPolicy],
        clock: Clock,
    ) -> None:
        if not isinstance(verifier, AttestationVerifier):
            raise TypeError("a peer verifier needs an AttestationVerifier")
        if isinstance(policy, PcrPolicy):
            fixed = policy
            self._policy: Callable[[], PcrPolicy] = lambda: fixed
        elif callable(policy):
            self._policy = policy
        else:
            raise TypeError("a peer verifier needs a PCR policy")
        self._verifier = verifier
        self._clock = clock

    def __call__(
        self, remote_static: bytes, evidence: Evidence, expected_nonce: bytes
    ) -> VerifiedAttestation:
        if not isinstance(expected_nonce, bytes) or len(expected_nonce) < MIN_NONCE_BYTES:
            # An empty or short nonce would make freshness vacuous.
            raise ValueError("a peer's evidence is verified against a nonce")
        policy = self._policy()
        if not isinstance(policy, PcrPolicy):
            raise TypeError("the policy source returned no PCR policy")
        require_measured(policy)  # never admit on the application registers alone
        return self._verifier.verify(
            evidence.document,
            kind=evidence.kind,
            expectations=Expectations(
                pcr_policy=policy,
                expected_nonce=expected_nonce,
                expected_public_key=noise_key_binding(remote_static),
            ),
            now_ms=self._clock.wall_ms(),
        )
