"""Protocol names (spec §8) resolved into a pattern and three crypto functions."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.noise._errors import NoiseProtocolNameError
from protocol.noise._patterns import INITIATOR, RESPONDER, HandshakePattern, pattern_from_name
from protocol.noise._primitives import (
    CIPHER_FUNCTIONS,
    DH_FUNCTIONS,
    HASH_FUNCTIONS,
    CipherFunction,
    DHFunction,
    HashFunction,
)

# §8: a protocol name is at most 255 bytes.
MAX_PROTOCOL_NAME_LEN = 255


@dataclass(frozen=True, slots=True)
class NoiseProtocol:
    """A concrete Noise protocol: ``Noise_<pattern>_<DH>_<cipher>_<hash>``."""

    name: str
    pattern: HandshakePattern
    dh: DHFunction
    cipher: CipherFunction
    hash: HashFunction

    @classmethod
    def from_name(cls, name: str) -> NoiseProtocol:
        """Parse a protocol name; raise :class:`NoiseProtocolNameError` if it is not supported."""
        if not isinstance(name, str):
            raise NoiseProtocolNameError("protocol name must be a str")
        if not name.isascii() or not name.isprintable() or len(name) > MAX_PROTOCOL_NAME_LEN:
            raise NoiseProtocolNameError("protocol name must be printable ASCII, at most 255 bytes")
        sections = name.split("_")
        if len(sections) != 5 or sections[0] != "Noise":
            raise NoiseProtocolNameError(
                "protocol name must be Noise_<pattern>_<DH>_<cipher>_<hash>"
            )
        _, pattern_text, dh_name, cipher_name, hash_name = sections
        pattern = pattern_from_name(pattern_text)
        dh = DH_FUNCTIONS.get(dh_name)
        if dh is None:
            raise NoiseProtocolNameError("unsupported DH function")
        cipher = CIPHER_FUNCTIONS.get(cipher_name)
        if cipher is None:
            raise NoiseProtocolNameError("unsupported cipher function")
        hash_function = HASH_FUNCTIONS.get(hash_name)
        if hash_function is None:
            raise NoiseProtocolNameError("unsupported hash function")
        return cls(name, pattern, dh, cipher, hash_function)

    @property
    def one_way(self) -> bool:
        """True for N, K and X (and their psk variants): only the initiator sends."""
        return self.pattern.one_way

    @property
    def psk_count(self) -> int:
        """How many 32-byte psks a HandshakeState for this protocol needs."""
        return self.pattern.psk_count

    def requires_static(self, *, initiator: bool) -> bool:
        """Whether that side must be given its own static key pair."""
        return self.pattern.uses_static(INITIATOR if initiator else RESPONDER)

    def requires_remote_static(self, *, initiator: bool) -> bool:
        """Whether that side must be given the peer's static public key up front."""
        return self.pattern.knows_remote_static_at_start(INITIATOR if initiator else RESPONDER)

    def sends_ephemeral(self, *, initiator: bool) -> bool:
        """Whether that side generates an ephemeral key pair during the handshake."""
        return self.pattern.sends_ephemeral(INITIATOR if initiator else RESPONDER)
