"""Re-attestation over an open channel: challenge, answer, verify, on a timer."""

from __future__ import annotations

import enum
import inspect
from collections.abc import Awaitable, Callable
from typing import Final, NoReturn, Protocol

import anyio

from actors.attestation._evidence import (
    Attest,
    AttestationUnavailable,
    ChallengeMessage,
    EvidenceMessage,
    VerifyAttestation,
    decode_control,
    encode_control,
)
from actors.seams.clock import Clock
from actors.seams.random import Random
from protocol.attestation import CHALLENGE_BYTES, channel_attestation_nonce
from protocol.framing import SessionError
from protocol.messages import MessageDecodeError

DEFAULT_REATTEST_INTERVAL_S: Final = 60.0
DEFAULT_REATTEST_TIMEOUT_S: Final = 10.0
#: Answer a peer's challenges at most this often: each answer is a TPM
#: command, and a peer must not be able to keep this node's TPM busy.
DEFAULT_MIN_ANSWER_INTERVAL_S: Final = 1.0

_CHANNEL_GONE = (SessionError, anyio.BrokenResourceError, anyio.ClosedResourceError)


class ReattestCheck(enum.StrEnum):
    """What broke re-attestation (:attr:`ReattestationFailed.check`)."""

    #: A control message on the link did not decode.
    CONTROL_DECODE = "control.decode"
    #: The peer challenged again before answering or being answered.
    CHALLENGE_OVERLAP = "challenge.overlap"
    #: The peer sent evidence nobody asked for.
    EVIDENCE_UNSOLICITED = "evidence.unsolicited"
    #: The peer did not answer a challenge in time.
    LAPSED = "reattest.lapsed"
    #: The peer answered without evidence.
    NO_EVIDENCE = "reattest.no_evidence"
    #: The peer's evidence did not verify (``attestation_check`` says why).
    REJECTED = "reattest.rejected"
    #: This node could not attest when challenged.
    ATTEST_UNAVAILABLE = "attest.unavailable"
    #: The channel closed under re-attestation.
    CHANNEL_CLOSED = "channel.closed"


class ReattestationFailed(Exception):
    """The peer failed, missed or broke re-attestation; the channel must close.

    ``check`` names what happened; ``attestation_check`` is the verifier's
    check when the peer's document was refused. Never carries peer bytes.
    """

    def __init__(self, check: ReattestCheck, *, attestation_check: str | None = None) -> None:
        text = f"re-attestation failed: {check.value}"
        if attestation_check is not None:
            text += f" ({attestation_check})"
        super().__init__(text)
        self.check = check
        self.attestation_check = attestation_check


class AttestedChannel(Protocol):
    """What re-attestation needs to know about its channel."""

    @property
    def handshake_hash(self) -> bytes: ...

    @property
    def remote_static(self) -> bytes: ...

    @property
    def is_initiator(self) -> bool: ...


class Reattestation:
    """Keeps the peer of one open channel attested, and answers its challenges.

    Every ``interval_s`` (Clock seam) this side draws a 32-byte challenge,
    sends it and waits for the peer's document, the two within one deadline
    of ``timeout_s``: a send that does not complete in time (the peer stopped
    reading) lapses like a missing answer. The document's nonce must be
    ``channel_attestation_nonce(handshake_hash, peer's role, challenge)``,
    and it is verified like the first one (``verify``): same policy, same
    bound key. The peer's challenges are answered with :func:`prove` over the
    nonce derived the same way for this side, at most one at a time and at
    most once per ``min_answer_interval_s``.

    :meth:`run` raises :class:`ReattestationFailed` as soon as the peer's
    answer is refused or late, this side cannot attest, or the peer breaks
    the exchange (a challenge while one is pending, an answer nobody asked
    for, undecodable control bytes in :meth:`control_received`). The owner
    then closes the channel; nothing here closes it.

    ``send`` carries one encoded control message to the peer (the owner adds
    whatever framing separates control from data on its channel).
    """

    def __init__(
        self,
        channel: AttestedChannel,
        *,
        prove: Attest,
        verify: VerifyAttestation,
        send: Callable[[bytes], Awaitable[None]],
        clock: Clock,
        random: Random,
        interval_s: float = DEFAULT_REATTEST_INTERVAL_S,
        timeout_s: float = DEFAULT_REATTEST_TIMEOUT_S,
        min_answer_interval_s: float = DEFAULT_MIN_ANSWER_INTERVAL_S,
    ) -> None:
        if not (interval_s > 0 and timeout_s > 0 and min_answer_interval_s >= 0):
            raise ValueError("re-attestation intervals must be positive")
        if min_answer_interval_s > interval_s:
            # Links are configured alike on both ends: a peer challenging at
            # our interval must never find its challenge held past its deadline.
            raise ValueError("the minimum answer interval exceeds the challenge interval")
        self._channel = channel
        self._prove = prove
        self._verify = verify
        self._send = send
        self._clock = clock
        self._random = random
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._min_answer_interval_s = min_answer_interval_s
        # Our challenge awaiting the peer's answer, and that answer.
        self._outstanding: bytes | None = None
        self._answer: EvidenceMessage | None = None
        self._answer_arrived = anyio.Event()
        # The peer's challenge awaiting our answer.
        self._peer_challenge: bytes | None = None
        self._challenge_arrived = anyio.Event()
        #: Rounds in which the peer's fresh document verified.
        self.verified_rounds = 0
        #: Challenges of the peer this side answered.
        self.answered = 0

    # -- input from the owner's reader ------------------------------------------------

    def control_received(self, data: bytes | memoryview) -> None:
        """One control message from the peer; :class:`ReattestationFailed` if it
        breaks the exchange."""
        try:
            body = decode_control(data)
        except MessageDecodeError as error:
            check: str | None = error.check
        else:
            check = None
        if check is not None:
            raise ReattestationFailed(ReattestCheck.CONTROL_DECODE, attestation_check=check)
        if isinstance(body, ChallengeMessage):
            if self._peer_challenge is not None:
                raise ReattestationFailed(ReattestCheck.CHALLENGE_OVERLAP)
            self._peer_challenge = body.challenge
            self._challenge_arrived.set()
            return
        if self._outstanding is None or self._answer is not None:
            raise ReattestationFailed(ReattestCheck.EVIDENCE_UNSOLICITED)
        self._answer = body
        self._answer_arrived.set()

    # -- the two loops -------------------------------------------------------------------

    async def run(self) -> NoReturn:
        """Challenge and answer until something fails (see the class docstring)."""
        failure: ReattestationFailed | None = None

        async with anyio.create_task_group() as group:

            async def guarded(loop: Callable[[], Awaitable[NoReturn]]) -> None:
                nonlocal failure
                try:
                    await loop()
                except ReattestationFailed as error:
                    if failure is None:
                        failure = error
                    group.cancel_scope.cancel()

            group.start_soon(guarded, self._challenge_peer)
            group.start_soon(guarded, self._answer_peer)
        assert failure is not None  # the loops only end by failing
        raise failure

    async def _challenge_peer(self) -> NoReturn:
        channel = self._channel
        while True:
            await self._clock.sleep(self._interval_s)
            challenge = self._random.token_bytes(CHALLENGE_BYTES)
            self._answer = None
            self._answer_arrived = anyio.Event()
            self._outstanding = challenge

            async def ask(challenge: bytes = challenge) -> None:
                await self._send_control(ChallengeMessage(challenge))
                await self._answer_arrived.wait()

            # One deadline over both: the send alone may block for good on a
            # peer that stops reading, and its frames keep arriving meanwhile.
            answered = await self._within(self._timeout_s, ask)
            answer, self._answer, self._outstanding = self._answer, None, None
            if not answered or answer is None:
                raise ReattestationFailed(ReattestCheck.LAPSED)
            evidence = answer.evidence()
            if evidence is None:
                raise ReattestationFailed(ReattestCheck.NO_EVIDENCE)
            nonce = channel_attestation_nonce(
                channel.handshake_hash,
                attester_is_initiator=not channel.is_initiator,
                challenge=challenge,
            )
            refused: str | None = None
            try:
                verdict = self._verify(channel.remote_static, evidence, nonce)
                if inspect.isawaitable(verdict):
                    await verdict
            except Exception as error:
                # Verifier errors are typed and name their check; anything
                # else counts as a refusal too (fail closed).
                refused = str(getattr(error, "check", type(error).__name__))
            if refused is not None:
                raise ReattestationFailed(ReattestCheck.REJECTED, attestation_check=refused)
            self.verified_rounds += 1

    async def _answer_peer(self) -> NoReturn:
        channel = self._channel
        while True:
            await self._challenge_arrived.wait()
            challenge = self._peer_challenge
            assert challenge is not None
            nonce = channel_attestation_nonce(
                channel.handshake_hash,
                attester_is_initiator=channel.is_initiator,
                challenge=challenge,
            )
            try:
                evidence = await self._prove(nonce)
            except AttestationUnavailable as error:
                check: str | None = error.check
            else:
                check = None
            if check is not None:
                raise ReattestationFailed(ReattestCheck.ATTEST_UNAVAILABLE, attestation_check=check)
            await self._send_control(EvidenceMessage.of(evidence))
            self.answered += 1
            # Ready for the next challenge, which is held (not refused) if it
            # comes sooner than the minimum interval.
            self._peer_challenge = None
            self._challenge_arrived = anyio.Event()
            await self._clock.sleep(self._min_answer_interval_s)

    # -- helpers -------------------------------------------------------------------------

    async def _send_control(self, body: ChallengeMessage | EvidenceMessage) -> None:
        try:
            await self._send(encode_control(body))
        except _CHANNEL_GONE:
            gone = True
        else:
            gone = False
        if gone:
            raise ReattestationFailed(ReattestCheck.CHANNEL_CLOSED)

    async def _within(self, seconds: float, work: Callable[[], Awaitable[object]]) -> bool:
        """Whether ``work`` finished within ``seconds`` of the Clock seam (it
        is cancelled at the deadline); its :class:`ReattestationFailed` is
        raised as it is."""
        finished = False
        failure: ReattestationFailed | None = None
        async with anyio.create_task_group() as group:

            async def deadline() -> None:
                await self._clock.sleep(seconds)
                group.cancel_scope.cancel()

            group.start_soon(deadline)
            try:
                await work()
            except ReattestationFailed as error:
                failure = error  # raised below, outside the task group
            else:
                finished = True
            group.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return finished
