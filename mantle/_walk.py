"""The client's walk before it seals a request (docs/architecture.md §14).

1. ``GET /v1/mantle/release`` -- the bundle the ingress booted; checked
   against the client's own pins and release floor
   (:func:`mantle.verify_release_bytes`: signatures, expiry, floor, inclusion
   in the pinned log).
2. ``GET /ct/v1/get-sth`` -- the log's signed tree head, checked under the
   pinned log key; proven consistent (``get-sth-consistency``) with the tree
   head of the release's inclusion proof and with the largest tree head this
   client stored on its own disk in earlier runs
   (:class:`~mantle.trust_state.TrustState`): a log that forked or was wound
   back between runs is refused. Only when every check passed are the floor
   and the tree head stored.
3. ``GET /v1/mantle/nodes?model=M&nonce=HEX`` -- the candidate inference
   nodes, each with a document over the client's fresh nonce and its Noise
   static key next to it. Each document must chain to the pinned root,
   verify, be fresh, carry the nonce, show the PCRs of the verified release
   for the model (:func:`protocol.measurement.model_policy`), bind that very
   static key (:func:`~protocol.attestation.noise_key_binding` as
   ``public_key``) and carry a 32-byte receipt key binding (``user_data``);
   a node that fails is left out and named in :attr:`VerifiedNodes.refused`;
   none left is an :class:`~mantle.AttestationError`.

The nodes answer is JSON ``{"nodes": [{"node": name, "document": base64,
"kind": "nitro", "static_key": base64}]}``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import httpx2

from actors.seams.clock import WallClock
from actors.seams.random import Random
from mantle._errors import AttestationError, ClientCheck
from mantle._http import api_error_of, get_bounded
from mantle._trust import TrustPins, verify_release_bytes
from mantle.trust_state import TrustState, TrustStateError, TrustStateFile
from protocol.attestation import (
    AttestationError as DocumentRefused,
)
from protocol.attestation import (
    AttestationVerifier,
    ChainCache,
    DocumentKind,
    Expectations,
    NitroAuthenticator,
    PcrPolicy,
    VerifiedAttestation,
    noise_key_binding,
)
from protocol.measurement import model_policy
from protocol.release import (
    MAX_LOG_PROOF_BYTES,
    MAX_ROOT_BYTES,
    MAX_TARGETS_BYTES,
    ReleaseError,
    ReleaseLogProof,
    VerifiedRelease,
)
from protocol.tlog import SignedTreeHead, TlogError, verify_consistency, verify_sth

RELEASE_ROUTE: Final = "/v1/mantle/release"
NODES_ROUTE: Final = "/v1/mantle/nodes"
STH_ROUTE: Final = "/ct/v1/get-sth"
CONSISTENCY_ROUTE: Final = "/ct/v1/get-sth-consistency"
#: The release answer's keys: the bundle's file names.
RELEASE_FILES: Final = ("root.json", "targets.json", "log-proof.json")
NONCE_BYTES: Final = 32
STATIC_KEY_BYTES: Final = 32
RECEIPT_BINDING_BYTES: Final = 32
#: At most this many candidates (the sealed request holds 1..16 envelopes).
MAX_CANDIDATES: Final = 16
MAX_RELEASE_ANSWER_BYTES: Final = 2 * (MAX_ROOT_BYTES + MAX_TARGETS_BYTES + MAX_LOG_PROOF_BYTES)
MAX_NODES_ANSWER_BYTES: Final = 2 * 1024 * 1024
MAX_TLOG_ANSWER_BYTES: Final = 64 * 1024
#: How often :meth:`TrustWalk.store` checks again against a state other runs change.
_STORE_ATTEMPTS: Final = 8
#: A node document older than this is refused even with the right nonce.
DEFAULT_DOCUMENT_MAX_AGE_S: Final = 300.0


@dataclass(frozen=True, slots=True)
class VerifiedNode:
    """One inference node that passed every check of the walk."""

    name: str
    #: Its attested X25519 Noise static key: what a request is sealed to.
    static_key: bytes
    #: ``user_data`` of its document: the binding of its receipt key.
    receipt_key_binding: bytes
    attestation: VerifiedAttestation
    #: The document itself (a saved receipt carries it, for offline checks).
    document: bytes


@dataclass(frozen=True, slots=True)
class VerifiedNodes:
    """The verified candidates for a model, and what vouched for them."""

    model: str
    release: VerifiedRelease
    tree_head: SignedTreeHead
    nodes: tuple[VerifiedNode, ...]
    #: ``(node name, check)`` for each node left out.
    refused: tuple[tuple[str, str], ...]
    #: Wall time of the verification, ms since the epoch.
    verified_at_ms: int

    def node_for_receipt_binding(self, binding: bytes) -> VerifiedNode | None:
        """The candidate whose document bound the receipt key ``binding``."""
        for node in self.nodes:
            if hmac.compare_digest(node.receipt_key_binding, binding):
                return node
        return None


def _b64(value: object) -> bytes | None:
    if not isinstance(value, str) or not value.isascii():
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _json_object(body: bytes | None) -> dict[str, object] | None:
    if body is None:
        return None
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        # RecursionError: an answer nested deeper than the parser recurses.
        return None
    return parsed if isinstance(parsed, dict) else None


class TrustWalk:
    """Runs the walk for one ingress with one set of pins and one trust state."""

    def __init__(
        self,
        http: httpx2.AsyncClient,
        url: str,
        *,
        api_key: str,
        pins: TrustPins,
        state: TrustStateFile,
        random: Random,
        clock: WallClock,
        deadline_s: float,
        document_max_age_s: float = DEFAULT_DOCUMENT_MAX_AGE_S,
    ) -> None:
        self._http = http
        self._url = url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {api_key}"}
        self._pins = pins
        self._state = state
        self._random = random
        self._clock = clock
        self._deadline_s = deadline_s
        self._max_age_ms = int(document_max_age_s * 1000)
        self._verifier = AttestationVerifier(
            [NitroAuthenticator(pins.attestation_root, cache=ChainCache())]
        )

    async def verify(self, model: str) -> VerifiedNodes:
        """Steps 1-3 of the module docstring for ``model``; stores the raised
        floor and the tree head only once all of them passed."""
        release, head, checked = await self.release()
        nodes, refused = await self._nodes(model, release)
        await self.store(release, head, checked)
        return VerifiedNodes(
            model=model,
            release=release,
            tree_head=head,
            nodes=nodes,
            refused=refused,
            verified_at_ms=self._clock.wall_ms(),
        )

    async def release(self) -> tuple[VerifiedRelease, SignedTreeHead, TrustState]:
        """Steps 1 and 2: the verified release and the log's tree head,
        consistent with everything seen before, and the trust state they were
        checked against. Stores nothing (:meth:`store`)."""
        loaded = self._load_state()
        release, proof = await self._release(loaded.release_floor)
        head = await self._tree_head(proof, loaded.tree_head)
        return release, head, loaded

    async def store(
        self, release: VerifiedRelease, head: SignedTreeHead, checked: TrustState
    ) -> None:
        """Keep the release's floor and the tree head for later runs.

        Another run sharing the trust state (another process, another client)
        may have stored a floor or a head since :meth:`release` checked
        against it (``checked``): then ``release`` must still meet that floor and ``head``
        be consistent with that head (each run alone could be shown its own
        branch of a fork), checked again until the state stands still."""
        for _ in range(_STORE_ATTEMPTS):
            stored: TrustState | None = None
            refusal: TrustStateError | None = None
            try:
                stored = self._state.advance_if(checked, release.min_version, head)
            except TrustStateError as error:
                refusal = error
            if refusal is not None:
                raise AttestationError(ClientCheck.TRUST_STATE, str(refusal))
            if stored is not None:
                return
            checked = self._load_state()
            if release.version < checked.release_floor:
                raise AttestationError(
                    ClientCheck.RELEASE, "the release is below the floor another run stored"
                )
            other = checked.tree_head
            if other is not None:
                older, newer = (other, head) if other.tree_size <= head.tree_size else (head, other)
                await self._consistent(older, newer, "the tree head another run stored")
        raise AttestationError(ClientCheck.TRUST_STATE, "the trust state keeps changing")

    def _load_state(self) -> TrustState:
        try:
            return self._state.load()
        except TrustStateError as error:
            detail = str(error)
            raise AttestationError(ClientCheck.TRUST_STATE, detail) from None

    # -- 1. the release ---------------------------------------------------------------

    async def _release(self, floor: int) -> tuple[VerifiedRelease, ReleaseLogProof]:
        answer = await get_bounded(
            self._http,
            self._url + RELEASE_ROUTE,
            step="release",
            cap=MAX_RELEASE_ANSWER_BYTES,
            deadline_s=self._deadline_s,
            headers=self._auth,
        )
        if answer.status != 200:
            raise api_error_of(answer.status, answer.headers, answer.body)
        parsed = _json_object(answer.body)
        files = [_b64(parsed.get(name)) for name in RELEASE_FILES] if parsed else []
        if len(files) != len(RELEASE_FILES) or any(f is None for f in files):
            raise AttestationError(ClientCheck.RELEASE, "the answer is not a base64 bundle")
        root, targets, log_proof = (f or b"" for f in files)
        refusal: ReleaseError | None = None
        try:
            now = datetime.fromtimestamp(self._clock.wall_ms() / 1000, tz=UTC)
            return verify_release_bytes(
                root, targets, log_proof, pins=self._pins, now=now, floor=floor
            )
        except ReleaseError as error:
            refusal = error
        raise AttestationError(ClientCheck.RELEASE, f"{type(refusal).__name__}: {refusal}")

    # -- 2. the log -------------------------------------------------------------------

    async def _tree_head(
        self, proof: ReleaseLogProof, stored: SignedTreeHead | None
    ) -> SignedTreeHead:
        answer = await get_bounded(
            self._http,
            self._url + STH_ROUTE,
            step="tlog.get-sth",
            cap=MAX_TLOG_ANSWER_BYTES,
            deadline_s=self._deadline_s,
        )
        parsed = _json_object(answer.body) if answer.status == 200 else None
        head: SignedTreeHead | None = None
        if parsed is not None:
            try:
                head = SignedTreeHead.from_json_dict(parsed)
                verify_sth(head, self._pins.log_public_key)
            except TlogError:
                head = None
        if head is None:
            raise AttestationError(
                ClientCheck.TLOG_TREE_HEAD, "no tree head signed by the pinned log key"
            )
        # The release was proven in an earlier (or this) tree; this tree must extend it.
        await self._consistent(proof.sth, head, "the release's tree head")
        if stored is not None:
            # A tree never shrinks: a smaller head than one seen before is a log
            # wound back, or another branch of a fork.
            await self._consistent(stored, head, "the tree head stored in an earlier run")
        return head

    async def _consistent(self, older: SignedTreeHead, newer: SignedTreeHead, what: str) -> None:
        if older.tree_size > newer.tree_size:
            raise AttestationError(
                ClientCheck.TLOG_CONSISTENCY, f"the log is smaller than {what}: wound back"
            )
        if older.tree_size == newer.tree_size:
            if not hmac.compare_digest(older.root_hash, newer.root_hash):
                raise AttestationError(
                    ClientCheck.TLOG_CONSISTENCY, f"the log forked: another root than {what}"
                )
            return
        if older.tree_size == 0:
            return
        answer = await get_bounded(
            self._http,
            self._url + CONSISTENCY_ROUTE,
            step="tlog.get-sth-consistency",
            cap=MAX_TLOG_ANSWER_BYTES,
            deadline_s=self._deadline_s,
            params={"first": str(older.tree_size), "second": str(newer.tree_size)},
        )
        parsed = _json_object(answer.body) if answer.status == 200 else None
        raw = parsed.get("consistency") if parsed is not None else None
        path = [_b64(h) for h in raw] if isinstance(raw, list) and len(raw) <= 128 else None
        proven = False
        if path is not None and all(h is not None for h in path):
            try:
                verify_consistency(
                    older.tree_size,
                    newer.tree_size,
                    older.root_hash,
                    newer.root_hash,
                    [h for h in path if h is not None],
                )
                proven = True
            except TlogError:
                proven = False
        if not proven:
            raise AttestationError(
                ClientCheck.TLOG_CONSISTENCY, f"the log forked: no consistency proof from {what}"
            )

    # -- 3. the nodes -----------------------------------------------------------------

    async def _nodes(
        self, model: str, release: VerifiedRelease
    ) -> tuple[tuple[VerifiedNode, ...], tuple[tuple[str, str], ...]]:
        policy = model_policy([release], model)
        if policy is None:
            raise AttestationError(ClientCheck.MODEL, "the verified release does not list it")
        nonce = self._random.token_bytes(NONCE_BYTES)
        answer = await get_bounded(
            self._http,
            self._url + NODES_ROUTE,
            step="nodes",
            cap=MAX_NODES_ANSWER_BYTES,
            deadline_s=self._deadline_s,
            params={"model": model, "nonce": nonce.hex()},
            headers=self._auth,
        )
        if answer.status != 200:
            raise api_error_of(answer.status, answer.headers, answer.body)
        parsed = _json_object(answer.body)
        entries = parsed.get("nodes") if parsed is not None else None
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise AttestationError(ClientCheck.NODES_ANSWER, "not a list of nodes")
        expectations_for = _ExpectationsFor(policy=policy, nonce=nonce, max_age_ms=self._max_age_ms)
        verified: list[VerifiedNode] = []
        refused: list[tuple[str, str]] = []
        first_refusal: AttestationError | None = None
        seen: set[bytes] = set()
        for entry in entries[: 4 * MAX_CANDIDATES]:
            name = entry.get("node")
            label = name if isinstance(name, str) and name.isprintable() else "?"
            label = label[:64]
            outcome = self._one_node(entry, label, expectations_for)
            if isinstance(outcome, AttestationError):
                refused.append((label, outcome.document_check or outcome.check))
                first_refusal = first_refusal or outcome
                continue
            if outcome.static_key in seen or len(verified) >= MAX_CANDIDATES:
                continue
            seen.add(outcome.static_key)
            verified.append(outcome)
        if not verified:
            if first_refusal is not None:
                raise first_refusal
            raise AttestationError(ClientCheck.NO_VERIFIED_NODE, "the ingress listed no node")
        return tuple(verified), tuple(refused)

    def _one_node(
        self, entry: Mapping[str, object], label: str, expectations_for: _ExpectationsFor
    ) -> VerifiedNode | AttestationError:
        document = _b64(entry.get("document"))
        static_key = _b64(entry.get("static_key"))
        if document is None or entry.get("kind") != DocumentKind.NITRO.value:
            return AttestationError(ClientCheck.NODES_ANSWER, "a node without a nitro document")
        if static_key is None or len(static_key) != STATIC_KEY_BYTES:
            return AttestationError(ClientCheck.NODE_KEYS, "a node's static key is not 32 bytes")
        refusal: DocumentRefused | None = None
        try:
            proved = self._verifier.verify(
                document,
                kind=DocumentKind.NITRO,
                expectations=expectations_for(static_key),
                now_ms=self._clock.wall_ms(),
            )
        except DocumentRefused as error:
            refusal = error
        if refusal is not None:
            return AttestationError(
                ClientCheck.NODE_DOCUMENT,
                f"node {label}: {refusal}",
                document_check=refusal.check,
            )
        binding = proved.claims.user_data
        if binding is None or len(binding) != RECEIPT_BINDING_BYTES:
            return AttestationError(
                ClientCheck.NODE_KEYS, f"node {label}: its document binds no receipt key"
            )
        return VerifiedNode(label, static_key, binding, proved, document)


@dataclass(frozen=True, slots=True)
class _ExpectationsFor:
    policy: PcrPolicy
    nonce: bytes
    max_age_ms: int

    def __call__(self, static_key: bytes) -> Expectations:
        return Expectations(
            pcr_policy=self.policy,
            max_age_ms=self.max_age_ms,
            expected_nonce=self.nonce,
            expected_public_key=noise_key_binding(static_key),
        )


def candidates_of(nodes: Sequence[VerifiedNode]) -> list[bytes]:
    """The static keys a request is sealed to."""
    return [node.static_key for node in nodes]
