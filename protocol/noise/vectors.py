"""Run cacophony/snow-format Noise test vectors: ``python -m protocol.noise.vectors FILE...``.

A vector file is ``{"vectors": [...]}`` with hex values: ``protocol_name``,
``init_prologue``, ``init_psks``, ``init_static``, ``init_ephemeral``,
``init_remote_static``, the same for ``resp_``, an optional ``handshake_hash``
and ``messages`` (``payload``, ``ciphertext``). Handshake messages alternate,
starting with the initiator; transport messages keep alternating by index,
except in one-way patterns, where all go from initiator to responder.

Every ciphertext, every decrypted payload and the handshake hash (when given)
are checked. A vector this package cannot run (unsupported name, malformed
field) counts as failed, never skipped. The last line printed is exactly
``N passed, N failed``; the exit status is 0 only when nothing failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from protocol.noise._errors import NoiseError
from protocol.noise._primitives import KeyPair
from protocol.noise._protocol import NoiseProtocol
from protocol.noise._state import CipherState, HandshakeState


@dataclass(frozen=True, slots=True)
class VectorResult:
    """The outcome of one vector; ``reason`` says what failed ("" when it passed)."""

    protocol_name: str
    passed: bool
    reason: str = ""


class _Malformed(Exception):
    """A vector does not have the expected shape."""


class _Mismatch(Exception):
    """A computed value differs from the vector."""


def _hex(vector: Mapping[str, object], key: str) -> bytes:
    value = vector.get(key)
    if not isinstance(value, str):
        raise _Malformed(f"{key} missing or not a string")
    with contextlib.suppress(ValueError):
        return bytes.fromhex(value)
    raise _Malformed(f"{key} is not hex")


def _optional_hex(vector: Mapping[str, object], key: str) -> bytes | None:
    return _hex(vector, key) if key in vector else None


def _hex_list(vector: Mapping[str, object], key: str) -> list[bytes]:
    value = vector.get(key, [])
    if not isinstance(value, list):
        raise _Malformed(f"{key} is not a list")
    return [_hex({key: item}, key) for item in value]


def _side(protocol: NoiseProtocol, vector: Mapping[str, object], initiator: bool) -> HandshakeState:
    """Build one side, passing exactly the keys its pattern uses.

    Vector files carry keys for both roles whatever the pattern (snow gives
    an N responder an ephemeral it never uses); HandshakeState refuses keys a
    pattern does not use, so the runner selects them here.
    """
    prefix = "init_" if initiator else "resp_"
    dh = protocol.dh
    static = (
        KeyPair.from_private(dh, _hex(vector, prefix + "static"))
        if protocol.requires_static(initiator=initiator)
        else None
    )
    remote_static = (
        _hex(vector, prefix + "remote_static")
        if protocol.requires_remote_static(initiator=initiator)
        else None
    )
    ephemeral = (
        KeyPair.from_private(dh, _hex(vector, prefix + "ephemeral"))
        if protocol.sends_ephemeral(initiator=initiator)
        else None
    )
    return HandshakeState(
        protocol,
        initiator=initiator,
        prologue=_optional_hex(vector, prefix + "prologue") or b"",
        static=static,
        remote_static=remote_static,
        psks=_hex_list(vector, prefix + "psks"),
        ephemeral=ephemeral,
    )


def _messages(vector: Mapping[str, object]) -> list[tuple[bytes, bytes]]:
    raw = vector.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _Malformed("messages missing or empty")
    messages: list[tuple[bytes, bytes]] = []
    for item in raw:
        if not isinstance(item, dict):
            raise _Malformed("message is not an object")
        messages.append((_hex(item, "payload"), _hex(item, "ciphertext")))
    return messages


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise _Mismatch(what)


def _run(vector: Mapping[str, object], protocol: NoiseProtocol) -> None:
    initiator = _side(protocol, vector, initiator=True)
    responder = _side(protocol, vector, initiator=False)
    expected_hash = _optional_hex(vector, "handshake_hash")
    messages = _messages(vector)
    handshake_len = len(protocol.pattern.messages)
    if len(messages) < handshake_len:
        raise _Malformed("fewer messages than the handshake needs")

    for index, (payload, ciphertext) in enumerate(messages[:handshake_len]):
        writer, reader = (initiator, responder) if index % 2 == 0 else (responder, initiator)
        _expect(writer.write_message(payload) == ciphertext, f"handshake message {index}")
        _expect(reader.read_message(ciphertext) == payload, f"handshake payload {index}")

    _expect(initiator.is_complete and responder.is_complete, "handshake not complete")
    _expect(initiator.handshake_hash == responder.handshake_hash, "handshake hashes differ")
    if expected_hash is not None:
        _expect(initiator.handshake_hash == expected_hash, "handshake hash")
    if protocol.requires_static(initiator=True):
        _expect(
            responder.remote_static == _public(protocol, vector, "init_static"),
            "responder's view of the initiator's static key",
        )
    if protocol.requires_static(initiator=False):
        _expect(
            initiator.remote_static == _public(protocol, vector, "resp_static"),
            "initiator's view of the responder's static key",
        )

    init_send, init_recv = initiator.split()
    resp_send, resp_recv = responder.split()
    for index, (payload, ciphertext) in enumerate(messages[handshake_len:], handshake_len):
        send: CipherState
        recv: CipherState
        if protocol.one_way or index % 2 == 0:
            send, recv = init_send, resp_recv
        else:
            send, recv = resp_send, init_recv
        _expect(send.encrypt_with_ad(b"", payload) == ciphertext, f"transport message {index}")
        _expect(recv.decrypt_with_ad(b"", ciphertext) == payload, f"transport payload {index}")


def _public(protocol: NoiseProtocol, vector: Mapping[str, object], key: str) -> bytes:
    return protocol.dh.public_from_private(_hex(vector, key))


def run_vector(vector: object) -> VectorResult:
    """Run one vector; never raises for bad vectors, it reports them as failed."""
    if not isinstance(vector, dict):
        return VectorResult("?", False, "malformed vector: not an object")
    name = vector.get("protocol_name")
    if not isinstance(name, str):
        return VectorResult("?", False, "malformed vector: protocol_name missing")
    try:
        protocol = NoiseProtocol.from_name(name)
    except NoiseError as error:
        return VectorResult(name, False, f"unsupported protocol: {error}")
    try:
        _run(vector, protocol)
    except _Malformed as error:
        return VectorResult(name, False, f"malformed vector: {error}")
    except _Mismatch as error:
        return VectorResult(name, False, f"mismatch: {error}")
    except NoiseError as error:
        return VectorResult(name, False, f"{type(error).__name__}: {error}")
    return VectorResult(name, True)


def load_vectors(path: Path | str) -> list[object]:
    """The ``vectors`` list of a file; raises ValueError if the file is not one."""
    failure: str | None = None
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        failure = type(error).__name__
    if failure is not None:
        # Outside the handler: JSONDecodeError keeps the whole file.
        raise ValueError(f"cannot read vector file: {failure}")
    vectors = document.get("vectors") if isinstance(document, dict) else None
    if not isinstance(vectors, list):
        raise ValueError('vector file has no "vectors" list')
    return vectors


def run_vectors(vectors: Iterable[object]) -> list[VectorResult]:
    return [run_vector(vector) for vector in vectors]


def run_file(path: Path | str) -> list[VectorResult]:
    """Every vector of a file; an unreadable file is one failed result."""
    try:
        vectors = load_vectors(path)
    except ValueError as error:
        return [VectorResult(str(path), False, str(error))]
    return run_vectors(vectors)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m protocol.noise.vectors",
        description="Run cacophony/snow-format Noise test vector files.",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    arguments = parser.parse_args(argv)
    passed = failed = 0
    for path in arguments.files:
        results = run_file(path)
        file_failed = 0
        for index, result in enumerate(results):
            if not result.passed:
                file_failed += 1
                print(f"FAIL {path}#{index} {result.protocol_name}: {result.reason}")
        file_passed = len(results) - file_failed
        print(f"{path}: {file_passed} passed, {file_failed} failed")
        passed += file_passed
        failed += file_failed
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
