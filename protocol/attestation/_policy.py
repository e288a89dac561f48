"""PCR policy: which measured values a verifier accepts.

A policy is a set of *releases*; each release pins the values of some PCR
indices. Evidence passes if it matches ANY one release on EVERY index that
release pins, so several releases can be live at once (a rollout, a
rollback window). PCRs a release does not pin are unconstrained.

Debug mode: Nitro reports an all-zero PCR0 for an enclave started in debug
mode, where the host can inspect its memory. A production policy
(``allow_debug=False``, the default) refuses such evidence whatever the
releases say, and refuses to be built with a release that pins PCR0 to zeros.

JSON form (``PcrPolicy.from_json`` / ``to_json``)::

    {
      "version": 1,
      "allow_debug": false,
      "releases": [
        {"name": "2025.06.1", "pcrs": {"0": "<96 hex digits>", "4": "<96 hex>"}},
        {"name": "2025.05.3", "pcrs": {"0": "<96 hex digits>"}}
      ]
    }

Indices are decimal strings 0-31; values are the 48-byte SHA-384 PCR values
in hex. Unknown keys are refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from protocol.attestation._errors import Check, ConfigurationError, PolicyViolation

PCR_VALUE_BYTES = 48
MAX_PCR_INDEX = 31
MAX_RELEASES = 1024
DEBUG_PCR0 = bytes(PCR_VALUE_BYTES)
POLICY_FORMAT_VERSION = 1
_INDEX_TEXT = re.compile(r"0|[1-9][0-9]?")
_HEX_VALUE = re.compile(r"[0-9a-fA-F]{96}")
_NOT_JSON = object()


@dataclass(frozen=True, slots=True)
class PcrRelease:
    """One release's expected PCR values, as sorted ``(index, value)`` pairs."""

    name: str
    pcrs: tuple[tuple[int, bytes], ...]

    def __post_init__(self) -> None:
        # Messages never quote the name: it may come from a policy file, and
        # a loader adds the release's position instead (see _release_from_json).
        if not self.name:
            raise ConfigurationError("a release needs a name")
        if not self.pcrs:
            raise ConfigurationError("a release pins no PCR")
        seen: set[int] = set()
        for index, value in self.pcrs:
            if type(index) is not int or not 0 <= index <= MAX_PCR_INDEX:
                raise ConfigurationError("a release pins a PCR index out of 0-31")
            if index in seen:
                raise ConfigurationError(f"a release pins PCR {index} twice")
            seen.add(index)
            if type(value) is not bytes or len(value) != PCR_VALUE_BYTES:
                raise ConfigurationError(
                    f"a release pins PCR {index} to a value that is not {PCR_VALUE_BYTES} bytes"
                )

    @classmethod
    def from_mapping(cls, name: str, pcrs: Mapping[int, bytes]) -> PcrRelease:
        return cls(name=name, pcrs=tuple(sorted(pcrs.items())))

    def mismatches(self, measured: Mapping[int, bytes]) -> tuple[int, ...]:
        """Indices this release pins whose measured value differs (or is absent)."""
        return tuple(index for index, value in self.pcrs if measured.get(index) != value)


@dataclass(frozen=True, slots=True)
class PcrPolicy:
    """Allowed releases; evidence must match one of them entirely."""

    releases: tuple[PcrRelease, ...]
    allow_debug: bool = False

    def __post_init__(self) -> None:
        if not self.releases:
            raise ConfigurationError("a PCR policy needs at least one release")
        if len(self.releases) > MAX_RELEASES:
            raise ConfigurationError(f"a PCR policy holds at most {MAX_RELEASES} releases")
        names = [release.name for release in self.releases]
        if len(set(names)) != len(names):
            raise ConfigurationError("release names in a PCR policy must be unique")
        if not self.allow_debug:
            for position, release in enumerate(self.releases):
                if dict(release.pcrs).get(0) == DEBUG_PCR0:
                    raise ConfigurationError(
                        f"release {position + 1} pins a debug-mode PCR0 in a production policy"
                    )

    def evaluate(self, measured: Mapping[int, bytes]) -> PcrRelease:
        """The first release ``measured`` satisfies; :class:`PolicyViolation` if none."""
        if not self.allow_debug and measured.get(0) == DEBUG_PCR0:
            raise PolicyViolation(
                Check.PCR_POLICY, "PCR0 is all zeros (debug mode) under a production policy"
            )
        closest: tuple[int, ...] | None = None
        for release in self.releases:
            mismatched = release.mismatches(measured)
            if not mismatched:
                return release
            if closest is None or len(mismatched) < len(closest):
                closest = mismatched
        listed = ", ".join(str(index) for index in closest or ())
        raise PolicyViolation(
            Check.PCR_POLICY,
            f"PCR values match no allowed release (closest release differs at PCR {listed})",
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> PcrPolicy:
        """Parse the JSON form documented in this module; strict about every key."""
        document: object = _NOT_JSON
        try:
            document = json.loads(text, object_pairs_hook=_unique_keys)
        except ConfigurationError:
            raise
        except (ValueError, RecursionError):
            # JSONDecodeError keeps the document, UnicodeDecodeError the bytes.
            pass
        if document is _NOT_JSON:
            # Raised outside the handler so that no __context__ keeps them.
            raise ConfigurationError("PCR policy is not valid JSON")
        if not isinstance(document, dict):
            raise ConfigurationError("PCR policy must be a JSON object")
        unknown = set(document) - {"version", "allow_debug", "releases"}
        if unknown:
            raise ConfigurationError(f"PCR policy has {len(unknown)} unknown key(s)")
        version = document.get("version")
        # ``type`` first: JSON ``true`` and ``1.0`` compare equal to 1 in Python.
        if type(version) is not int or version != POLICY_FORMAT_VERSION:
            raise ConfigurationError(f"PCR policy version must be {POLICY_FORMAT_VERSION}")
        allow_debug = document.get("allow_debug", False)
        if type(allow_debug) is not bool:
            raise ConfigurationError("allow_debug must be true or false")
        raw_releases = document.get("releases")
        if not isinstance(raw_releases, list):
            raise ConfigurationError("releases must be a list")
        releases = tuple(
            _release_from_json(position, item) for position, item in enumerate(raw_releases)
        )
        return cls(releases=releases, allow_debug=allow_debug)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": POLICY_FORMAT_VERSION,
                "allow_debug": self.allow_debug,
                "releases": [
                    {
                        "name": release.name,
                        "pcrs": {str(index): value.hex() for index, value in release.pcrs},
                    }
                    for release in self.releases
                ],
            },
            indent=2,
        )


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # json.loads keeps the last of duplicate keys; in a policy that would let
    # one PCR value silently shadow another, so a repeated key is an error.
    mapping = dict(pairs)
    if len(mapping) != len(pairs):
        raise ConfigurationError("PCR policy repeats a key in one object")
    return mapping


def _release_from_json(position: int, item: object) -> PcrRelease:
    # Releases are named by their position in the file: a name read from the
    # file would put the file's text into the message.
    where = f"release {position + 1}"
    if not isinstance(item, dict) or set(item) != {"name", "pcrs"}:
        raise ConfigurationError(f'{where} is not an object with exactly "name" and "pcrs"')
    name, pcrs = item["name"], item["pcrs"]
    if not isinstance(name, str):
        raise ConfigurationError(f"{where}: the name is not a string")
    if not isinstance(pcrs, dict):
        raise ConfigurationError(f"{where}: pcrs must be an object")
    parsed: dict[int, bytes] = {}
    for index_text, value_text in pcrs.items():
        if not _INDEX_TEXT.fullmatch(index_text):
            raise ConfigurationError(f"{where}: PCR index must be decimal 0-31")
        if not isinstance(value_text, str) or not _HEX_VALUE.fullmatch(value_text):
            raise ConfigurationError(
                f"{where}: PCR {index_text} must be {PCR_VALUE_BYTES * 2} hex digits"
            )
        parsed[int(index_text)] = bytes.fromhex(value_text)
    refusal = ""
    try:
        return PcrRelease.from_mapping(name, parsed)
    except ConfigurationError as error:
        refusal = str(error)  # quotes nothing of the file (see PcrRelease)
    raise ConfigurationError(f"{where}: {refusal}")
