"""Attestation on every node: proving this node to its peers, and keeping them proven.

Duties of this room:

* **It owns the TPM seam for attestation.** :class:`AttestationService` is
  how a node asks its TPM for evidence: a document over the current PCRs that
  binds the node's Noise static key (``NodeKeyCustody.key_binding``). Two
  older callers still ask the TPM through ``NodeKeyCustody.attest`` directly,
  boot's first document and ``NodeKeyCustody.data_key_request``; they are to
  move onto the service.
* **It answers attest requests with a nonce.** :meth:`AttestationService.attest`
  produces a fresh document over the requester's nonce. On a secure channel
  that nonce is derived from the Noise handshake hash
  (:func:`protocol.attestation.channel_attestation_nonce`), so the document is
  bound to that one session: replayed on another it fails, and freshness
  does not rest on a timestamp, which is why TPM 2.0 quotes (no timestamp)
  work on these paths.
* **It keeps anonymous clients from taking the TPM from node links.** Every
  TPM command takes 100-350 ms on real hardware and the TPM runs one at a
  time, while anyone can open a channel to a node that serves customers.
  Node links and re-attestation answers call :meth:`AttestationService.attest`,
  the priority path; channels to customers' clients call
  :meth:`AttestationService.attest_client_channel`, of which at most
  ``max_concurrent_client_proofs`` (one by default) run at once and none
  starts while a priority request is in flight. A flood of clients then
  delays a node link's answer by at most the client proofs already at the
  TPM, never by the flood's queue, so it cannot make the link's
  re-attestation lapse. The channel adds the other half: a client-channel
  proof starts only after the client's (empty) evidence message arrived
  (``actors.channel``), so a connection that completes the handshake and
  stays silent costs no TPM command at all.
* **It caches timestamp-only documents within the freshness window.**
  :meth:`AttestationService.cached` hands out a document without a nonce,
  for readers that cannot send one, only while it is well inside the window
  its verifiers allow.
* **It re-attests on a timer.** :meth:`AttestationService.run` refreshes that
  cached document every ``refresh_interval_s`` (Clock seam);
  :class:`Reattestation` challenges the peer of an open channel every
  ``interval_s`` with a fresh nonce of the verifier's and ends the channel
  when the answer is refused or late. One deadline covers sending the
  challenge and waiting for the answer: a peer that stops reading, so that
  the challenge cannot even be sent, lapses like one that does not answer.
* **It verifies peers' evidence bound to a channel.**
  :class:`PeerAttestationVerifier` checks chain, signature, the channel's
  nonce, the key binding of the peer's handshake key and a PCR policy that
  cannot be left out.

``actors.channel`` runs the exchange after each handshake with these pieces;
``nodes.tcp_transport`` adds re-attestation to every node link.
"""

from actors.attestation._evidence import (
    MAX_EVIDENCE_MESSAGE_BYTES,
    Attest,
    AttestationUnavailable,
    ChallengeMessage,
    Evidence,
    EvidenceMessage,
    UnavailableCheck,
    VerifyAttestation,
    decode_control,
    encode_control,
)
from actors.attestation._reattest import (
    DEFAULT_MIN_ANSWER_INTERVAL_S,
    DEFAULT_REATTEST_INTERVAL_S,
    DEFAULT_REATTEST_TIMEOUT_S,
    AttestedChannel,
    Reattestation,
    ReattestationFailed,
    ReattestCheck,
)
from actors.attestation._service import (
    DEFAULT_MAX_AGE_MS,
    DEFAULT_MAX_CLIENT_PROOFS,
    MAX_NONCE_BYTES,
    MIN_NONCE_BYTES,
    AttestationService,
    RunBlocking,
    run_inline,
)
from actors.attestation._verifier import PeerAttestationVerifier

__all__ = [
    "DEFAULT_MAX_AGE_MS",
    "DEFAULT_MAX_CLIENT_PROOFS",
    "DEFAULT_MIN_ANSWER_INTERVAL_S",
    "DEFAULT_REATTEST_INTERVAL_S",
    "DEFAULT_REATTEST_TIMEOUT_S",
    "MAX_EVIDENCE_MESSAGE_BYTES",
    "MAX_NONCE_BYTES",
    "MIN_NONCE_BYTES",
    "Attest",
    "AttestationService",
    "AttestationUnavailable",
    "AttestedChannel",
    "ChallengeMessage",
    "Evidence",
    "EvidenceMessage",
    "PeerAttestationVerifier",
    "ReattestCheck",
    "Reattestation",
    "ReattestationFailed",
    "RunBlocking",
    "UnavailableCheck",
    "VerifyAttestation",
    "decode_control",
    "encode_control",
    "run_inline",
]
