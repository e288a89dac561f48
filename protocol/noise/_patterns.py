"""Handshake patterns: the table of spec §7 and §18, psk modifiers (§9), validity (§7.3).

The table is written in the spec's own notation so it can be checked against
the document line by line: lines before ``...`` are pre-messages, ``->`` is
initiator-to-responder, ``<-`` the reverse. It is parsed once at import into
immutable :class:`HandshakePattern` values, and every entry is run through the
validity rules at that time, so a typo in the table fails loudly on import.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from protocol.noise._errors import NoiseProtocolNameError


class Token(enum.Enum):
    """Message-pattern tokens (§7.1) and the ``psk`` token (§9.1)."""

    E = "e"
    S = "s"
    EE = "ee"
    ES = "es"
    SE = "se"
    SS = "ss"
    PSK = "psk"


# The DH tokens name the initiator's key first and the responder's second (§7.1):
# "es" is DH(initiator's e, responder's s).
DH_TOKENS: Final = frozenset({Token.EE, Token.ES, Token.SE, Token.SS})
_KEY_TOKENS: Final = frozenset({Token.E, Token.S})
DH_KEYS: Final[Mapping[Token, tuple[Token, Token]]] = MappingProxyType(
    {
        Token.EE: (Token.E, Token.E),
        Token.ES: (Token.E, Token.S),
        Token.SE: (Token.S, Token.E),
        Token.SS: (Token.S, Token.S),
    }
)

INITIATOR: Final = 0
RESPONDER: Final = 1


@dataclass(frozen=True, slots=True)
class HandshakePattern:
    """A handshake pattern after modifiers were applied.

    ``messages[i]`` is sent by the initiator when ``i`` is even and by the
    responder when ``i`` is odd (§7.1: patterns alternate, starting with the
    initiator).
    """

    name: str
    initiator_premessage: tuple[Token, ...]
    responder_premessage: tuple[Token, ...]
    messages: tuple[tuple[Token, ...], ...]

    @property
    def one_way(self) -> bool:
        """§7.4: single-message patterns; only the initiator ever sends."""
        return len(self.messages) == 1

    @property
    def psk_count(self) -> int:
        return sum(message.count(Token.PSK) for message in self.messages)

    def sender(self, index: int) -> int:
        return INITIATOR if index % 2 == 0 else RESPONDER

    def premessage(self, party: int) -> tuple[Token, ...]:
        return self.initiator_premessage if party == INITIATOR else self.responder_premessage

    def uses_static(self, party: int) -> bool:
        """Whether ``party`` needs its own static key pair."""
        if Token.S in self.premessage(party):
            return True
        if any(
            Token.S in message
            for index, message in enumerate(self.messages)
            if self.sender(index) == party
        ):
            return True
        # A static key may be used in DH without ever being sent (never in the
        # spec's table, but checked rather than assumed).
        position = 0 if party == INITIATOR else 1
        return any(
            DH_KEYS[token][position] is Token.S
            for message in self.messages
            for token in message
            if token in DH_TOKENS
        )

    def knows_remote_static_at_start(self, party: int) -> bool:
        """Whether ``party`` must be given the peer's static key before the handshake."""
        return Token.S in self.premessage(1 - party)

    def sends_ephemeral(self, party: int) -> bool:
        return Token.E in self.premessage(party) or any(
            Token.E in message
            for index, message in enumerate(self.messages)
            if self.sender(index) == party
        )


def _parse(name: str, notation: str) -> HandshakePattern:
    lines = [line.strip() for line in notation.strip().splitlines() if line.strip()]
    if "..." in lines:
        split = lines.index("...")
        pre_lines, message_lines = lines[:split], lines[split + 1 :]
    else:
        pre_lines, message_lines = [], lines

    def tokens(line: str) -> tuple[str, tuple[Token, ...]]:
        arrow, _, rest = line.partition(" ")
        return arrow, tuple(Token(t.strip()) for t in rest.split(","))

    pre: dict[str, tuple[Token, ...]] = {"->": (), "<-": ()}
    for line in pre_lines:
        arrow, toks = tokens(line)
        if arrow not in pre or pre[arrow]:
            raise AssertionError(f"pattern table: bad pre-message in {name}")
        pre[arrow] = toks
    messages: list[tuple[Token, ...]] = []
    for index, line in enumerate(message_lines):
        arrow, toks = tokens(line)
        if arrow != ("->" if index % 2 == 0 else "<-"):
            raise AssertionError(f"pattern table: {name} does not alternate")
        messages.append(toks)
    return HandshakePattern(name, pre["->"], pre["<-"], tuple(messages))


# --- The table -----------------------------------------------------------------------------

# §7.4 one-way handshake patterns.
_ONE_WAY: Final = {
    "N": """
        <- s
        ...
        -> e, es
    """,
    "K": """
        -> s
        <- s
        ...
        -> e, es, ss
    """,
    "X": """
        <- s
        ...
        -> e, es, s, ss
    """,
}

# §7.5 interactive handshake patterns (fundamental).
_INTERACTIVE: Final = {
    "NN": """
        -> e
        <- e, ee
    """,
    "NK": """
        <- s
        ...
        -> e, es
        <- e, ee
    """,
    "NX": """
        -> e
        <- e, ee, s, es
    """,
    "KN": """
        -> s
        ...
        -> e
        <- e, ee, se
    """,
    "KK": """
        -> s
        <- s
        ...
        -> e, es, ss
        <- e, ee, se
    """,
    "KX": """
        -> s
        ...
        -> e
        <- e, ee, se, s, es
    """,
    "XN": """
        -> e
        <- e, ee
        -> s, se
    """,
    "XK": """
        <- s
        ...
        -> e, es
        <- e, ee
        -> s, se
    """,
    "XX": """
        -> e
        <- e, ee, s, es
        -> s, se
    """,
    "IN": """
        -> e, s
        <- e, ee, se
    """,
    "IK": """
        <- s
        ...
        -> e, es, s, ss
        <- e, ee, se
    """,
    "IX": """
        -> e, s
        <- e, ee, se, s, es
    """,
}

# §18.2 deferred handshake patterns: a "1" after a letter defers that party's
# static-key authentication DH to the next message.
_DEFERRED: Final = {
    "NK1": """
        <- s
        ...
        -> e
        <- e, ee, es
    """,
    "NX1": """
        -> e
        <- e, ee, s
        -> es
    """,
    "X1N": """
        -> e
        <- e, ee
        -> s
        <- se
    """,
    "X1K": """
        <- s
        ...
        -> e, es
        <- e, ee
        -> s
        <- se
    """,
    "XK1": """
        <- s
        ...
        -> e
        <- e, ee, es
        -> s, se
    """,
    "X1K1": """
        <- s
        ...
        -> e
        <- e, ee, es
        -> s
        <- se
    """,
    "X1X": """
        -> e
        <- e, ee, s, es
        -> s
        <- se
    """,
    "XX1": """
        -> e
        <- e, ee, s
        -> es, s, se
    """,
    "X1X1": """
        -> e
        <- e, ee, s
        -> es, s
        <- se
    """,
    "K1N": """
        -> s
        ...
        -> e
        <- e, ee
        -> se
    """,
    "K1K": """
        -> s
        <- s
        ...
        -> e, es
        <- e, ee
        -> se
    """,
    "KK1": """
        -> s
        <- s
        ...
        -> e
        <- e, ee, se, es
    """,
    "K1K1": """
        -> s
        <- s
        ...
        -> e
        <- e, ee, es
        -> se
    """,
    "K1X": """
        -> s
        ...
        -> e
        <- e, ee, s, es
        -> se
    """,
    "KX1": """
        -> s
        ...
        -> e
        <- e, ee, se, s
        -> es
    """,
    "K1X1": """
        -> s
        ...
        -> e
        <- e, ee, s
        -> se, es
    """,
    "I1N": """
        -> e, s
        <- e, ee
        -> se
    """,
    "I1K": """
        <- s
        ...
        -> e, es, s
        <- e, ee
        -> se
    """,
    "IK1": """
        <- s
        ...
        -> e, s
        <- e, ee, se, es
    """,
    "I1K1": """
        <- s
        ...
        -> e, s
        <- e, ee, es
        -> se
    """,
    "I1X": """
        -> e, s
        <- e, ee, s, es
        -> se
    """,
    "IX1": """
        -> e, s
        <- e, ee, se, s
        -> es
    """,
    "I1X1": """
        -> e, s
        <- e, ee, s
        -> se, es
    """,
}


# --- Validity (§7.3, §9.3) -----------------------------------------------------------------


class PatternValidityError(NoiseProtocolNameError):
    """A pattern (usually after modifiers) breaks a validity rule of §7.3 or §9.3."""


def check_validity(pattern: HandshakePattern) -> None:
    """Enforce the rules of §7.3 and the psk rule of §9.3, or raise PatternValidityError.

    1. A party can only do DH with keys it has: both public keys of a DH token
       must have been sent (or be pre-messages) before the token.
    2. No party sends its e or s more than once, pre-messages included.
    3. No DH token appears more than once.
    4. After a DH between the local static key and a remote key, a party sends
       no payload (handshake or transport) unless it also did a DH between its
       ephemeral and that remote key: for the initiator "se" needs "ee" and "ss"
       needs "es"; for the responder "es" needs "ee" and "ss" needs "se".
    §9.3: after a "psk" token, a party sends no encrypted data unless it has sent
    an ephemeral key, because the psk-derived key would otherwise repeat.
    """
    sent: tuple[set[Token], set[Token]] = (set(), set())
    done: set[Token] = set()
    psk_seen = False

    def may_send_payload(party: int, where: str) -> None:
        if party == INITIATOR:
            pairs = ((Token.SE, Token.EE), (Token.SS, Token.ES))
        else:
            pairs = ((Token.ES, Token.EE), (Token.SS, Token.SE))
        for static_dh, ephemeral_dh in pairs:
            if static_dh in done and ephemeral_dh not in done:
                raise PatternValidityError(
                    f"{pattern.name}: {where} after {static_dh.value!r} "
                    f"without {ephemeral_dh.value!r} (spec 7.3 rule 4)"
                )
        if psk_seen and Token.E not in sent[party]:
            raise PatternValidityError(
                f"{pattern.name}: {where} after 'psk' before sending 'e' (spec 9.3)"
            )

    for party in (INITIATOR, RESPONDER):
        for token in pattern.premessage(party):
            # §7.1 also allows "e" pre-messages, but only the fallback modifier
            # (§10.2) produces them and it is not supported here.
            if token is not Token.S or token in sent[party]:
                raise PatternValidityError(f"{pattern.name}: bad pre-message (spec 7.1, 7.3)")
            sent[party].add(token)

    for index, message in enumerate(pattern.messages):
        sender = pattern.sender(index)
        for token in message:
            if token in _KEY_TOKENS:
                if token in sent[sender]:
                    raise PatternValidityError(
                        f"{pattern.name}: {token.value!r} sent twice (spec 7.3 rule 2)"
                    )
                sent[sender].add(token)
            elif token is Token.PSK:
                psk_seen = True
            else:
                if token in done:
                    raise PatternValidityError(
                        f"{pattern.name}: {token.value!r} repeated (spec 7.3 rule 3)"
                    )
                initiator_key, responder_key = DH_KEYS[token]
                if initiator_key not in sent[INITIATOR] or responder_key not in sent[RESPONDER]:
                    raise PatternValidityError(
                        f"{pattern.name}: {token.value!r} before both keys exist (spec 7.3 rule 1)"
                    )
                done.add(token)
        may_send_payload(sender, f"message {index + 1} payload")

    may_send_payload(INITIATOR, "initiator transport")
    if not pattern.one_way:
        may_send_payload(RESPONDER, "responder transport")


def _build_table() -> Mapping[str, HandshakePattern]:
    table: dict[str, HandshakePattern] = {}
    for group in (_ONE_WAY, _INTERACTIVE, _DEFERRED):
        for name, notation in group.items():
            pattern = _parse(name, notation)
            check_validity(pattern)
            table[name] = pattern
    return MappingProxyType(table)


PATTERNS: Final[Mapping[str, HandshakePattern]] = _build_table()


# --- Modifiers (§9.2, §10.2) ---------------------------------------------------------------

_PATTERN_PART: Final = re.compile(r"([A-Z][A-Z0-9]*)([a-z][a-z0-9]*(?:\+[a-z][a-z0-9]*)*)?")
_PSK_MODIFIER: Final = re.compile(r"psk(0|[1-9][0-9]{0,2})")


def pattern_from_name(text: str) -> HandshakePattern:
    """Resolve the pattern section of a protocol name, e.g. ``XXpsk0+psk3``.

    §9.2: ``psk0`` puts a "psk" token at the start of the first message,
    ``pskN`` (N >= 1) at the end of message N. Several psk modifiers may be
    joined with "+"; we require them in strictly increasing order so that every
    pattern has one spelling, and the psks given to a HandshakeState are used
    in that order.
    """
    match = _PATTERN_PART.fullmatch(text)
    if match is None:
        raise NoiseProtocolNameError("malformed handshake pattern")
    base = PATTERNS.get(match.group(1))
    if base is None:
        raise NoiseProtocolNameError("unknown handshake pattern")
    modifiers = match.group(2)
    if not modifiers:
        return base

    messages = [list(message) for message in base.messages]
    previous = -1
    for modifier in modifiers.split("+"):
        psk = _PSK_MODIFIER.fullmatch(modifier)
        if psk is None:
            raise NoiseProtocolNameError("unsupported pattern modifier")
        position = int(psk.group(1))
        if position <= previous:
            raise NoiseProtocolNameError("psk modifiers must be in increasing order")
        if position > len(messages):
            raise NoiseProtocolNameError("psk modifier names a message the pattern lacks")
        previous = position
        if position == 0:
            messages[0].insert(0, Token.PSK)
        else:
            messages[position - 1].append(Token.PSK)

    pattern = HandshakePattern(
        text,
        base.initiator_premessage,
        base.responder_premessage,
        tuple(tuple(message) for message in messages),
    )
    check_validity(pattern)
    return pattern
