"""What ``mantle verify`` and ``mantle chat`` share: the user's pins, the
release they accept, and the check of an ingress before anything is sent.

Every pin comes from the user's own files (``--pins DIR`` holds all three,
``--root``/``--release-root``/``--tlog-key`` name them one by one and win
over the directory); none is ever read from the server, and a pin that is
missing is a usage error, never a default. The release bundle is the one the
ingress serves (``GET /v1/mantle/release``) unless ``--release-dir`` names a
bundle on disk; either way it is checked against the user's pins and the
release floor kept in the user's trust state (``--state``).

Failures are :class:`CheckFailed` (exit 1, naming the check) or
:class:`UnusableInput` (exit 2: a file that cannot be read); neither quotes
what the server sent.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import secrets
import ssl
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import httpx2

from mantle._bundle import LOG_PROOF_FILE, ROOT_FILE, TARGETS_FILE, ReleaseDirectory
from mantle._errors import APIError, ClientConfigError, ClientTimeout, RateLimited
from mantle._errors import AttestationError as ClientAttestationError
from mantle._files import KeyFileError, read_bounded_file, read_metadata_file
from mantle._http import api_error_of, get_bounded
from mantle._ingress import (
    DEFAULT_DEADLINE_S,
    IngressRefused,
    VerifiedIngress,
    _is_https,
    pinned_tls_context,
    verify_ingress,
)
from mantle._trust import (
    ATTESTATION_ROOT_PIN,
    LOG_KEY_PIN,
    MAX_PEM_PIN_BYTES,
    RELEASE_ROOT_PIN,
    TrustPins,
    _load_log_key_pin,
    client_release_view,
)
from mantle.trust_state import TrustStateError, TrustStateFile
from protocol.attestation import AttestationError, ConfigurationError, TrustAnchor
from protocol.release import (
    MAX_LOG_PROOF_BYTES,
    MAX_ROOT_BYTES,
    MAX_TARGETS_BYTES,
    ReleaseError,
)

EXIT_VERIFIED: Final = 0
EXIT_REFUSED: Final = 1
EXIT_UNUSABLE: Final = 2

#: The route serving the release bundle the ingress booted.
RELEASE_ROUTE: Final = "/v1/mantle/release"
#: Its answer: the three files, base64 in a JSON object (a third more, and slack).
MAX_RELEASE_ANSWER_BYTES: Final = (MAX_ROOT_BYTES + MAX_TARGETS_BYTES + MAX_LOG_PROOF_BYTES) * 2
#: Where the release floor is kept unless ``--state`` or ``MANTLE_STATE`` says.
STATE_ENV: Final = "MANTLE_STATE"


class CheckFailed(Exception):
    """A check refused the ingress or its release; ``check`` names it."""

    def __init__(self, check: str, detail: str) -> None:
        super().__init__(f"{check}: {detail}")
        self.check = check
        self.detail = detail


class UnusableInput(Exception):
    """A pin, certificate or state file the user named cannot be used."""


class SystemRandom:
    """The operating system's CSPRNG (the client's nonces)."""

    def token_bytes(self, n: int) -> bytes:
        return secrets.token_bytes(n)

    def randbelow(self, n: int) -> int:
        return secrets.randbelow(n)

    def random(self) -> float:
        return secrets.randbits(53) / (1 << 53)


class SystemWallClock:
    """The machine's wall clock (document freshness, certificate validity)."""

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000


def default_state_path() -> Path:
    """``$MANTLE_STATE``, else ``$XDG_STATE_HOME/mantle/trust.json``
    (``~/.local/state/mantle/trust.json``)."""
    explicit = os.environ.get(STATE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mantle" / "trust.json"


def add_pin_options(parser: argparse.ArgumentParser) -> None:
    """The server to check and the user's three pins (each command adds its own)."""
    parser.add_argument("url", help="the ingress's https:// URL")
    parser.add_argument(
        "--pins", type=Path, default=None, help="a pins directory holding all three pins below"
    )
    parser.add_argument(
        "--root", type=Path, default=None, help="pinned attestation root certificate (PEM)"
    )
    parser.add_argument(
        "--tlog-key", type=Path, default=None, help="pinned transparency log public key (PEM)"
    )
    parser.add_argument(
        "--release-root", type=Path, default=None, help="pinned release root metadata (JSON)"
    )


def add_trust_options(parser: argparse.ArgumentParser) -> None:
    """The options naming what the user trusts, and the server to check."""
    add_pin_options(parser)
    parser.add_argument(
        "--tls-cert",
        type=Path,
        required=True,
        help="the ingress's TLS certificate (PEM), checked to be the attested key's",
    )
    parser.add_argument(
        "--release-dir",
        type=Path,
        default=None,
        help="a release bundle on disk instead of the one the ingress serves",
    )
    parser.add_argument(
        "--state",
        type=Path,
        default=None,
        help=f"the trust state keeping the release floor (default ${STATE_ENV}, "
        "else $XDG_STATE_HOME/mantle/trust.json)",
    )


def _pin_path(explicit: Path | None, pins: Path | None, name: str, what: str) -> Path:
    if explicit is not None:
        return explicit
    if pins is not None:
        return pins / name
    raise UnusableInput(f"no {what} pinned: give --pins DIR or the file itself")


def load_trust(args: argparse.Namespace) -> tuple[TrustPins, bytes]:
    """The user's pins and the ingress's certificate, from the options."""
    pins = load_trust_pins(args)
    problem = ""
    try:
        cert_pem = read_bounded_file(
            args.tls_cert, MAX_PEM_PIN_BYTES, "TLS certificate", error=KeyFileError
        )
    except KeyFileError as error:
        problem = f"{type(error).__name__}: {error}"
    else:
        return pins, cert_pem
    raise UnusableInput(problem)


def load_trust_pins(args: argparse.Namespace) -> TrustPins:
    """The user's three pins, from ``--pins`` and ``--root``/``--release-root``/``--tlog-key``."""
    root = _pin_path(args.root, args.pins, ATTESTATION_ROOT_PIN, "attestation root (--root)")
    release_root = _pin_path(
        args.release_root, args.pins, RELEASE_ROOT_PIN, "release root (--release-root)"
    )
    log_key = _pin_path(args.tlog_key, args.pins, LOG_KEY_PIN, "log key (--tlog-key)")
    try:
        pins = TrustPins(
            attestation_root=TrustAnchor.from_pem(
                read_metadata_file(root, MAX_PEM_PIN_BYTES, "attestation root")
            ),
            release_root=read_metadata_file(release_root, MAX_ROOT_BYTES, "release root"),
            log_public_key=_load_log_key_pin(log_key),
        )
    except (ConfigurationError, KeyFileError, ReleaseError) as error:
        problem = f"{type(error).__name__}: {error}"
    else:
        return pins
    raise UnusableInput(problem)


@dataclass(frozen=True)
class CheckedIngress:
    """An ingress that passed, and the pinned TLS context to talk to it with."""

    ingress: VerifiedIngress
    tls: ssl.SSLContext
    release_source: str


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def _transport_check(error: httpx2.HTTPError) -> CheckFailed:
    """A transport failure, named: a TLS refusal is the pinned certificate's."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return CheckFailed(
                "tls.cert", "the ingress did not present the pinned certificate's key"
            )
        if isinstance(cause, ssl.SSLError):
            return CheckFailed("tls", "the TLS handshake with the ingress failed")
        cause = cause.__cause__ or cause.__context__
    if isinstance(error, httpx2.TimeoutException):
        return CheckFailed("timeout", "the ingress did not answer in time")
    return CheckFailed("connection", f"cannot reach the ingress ({type(error).__name__})")


async def _fetch_release(http: httpx2.AsyncClient, url: str, into: Path) -> None:
    """Write the bundle the ingress serves into ``into`` (unverified yet)."""
    status, body = 0, bytearray()
    async with http.stream(
        "GET",
        url.rstrip("/") + RELEASE_ROUTE,
        headers={"Accept-Encoding": "identity"},
        follow_redirects=False,
    ) as response:
        status = response.status_code
        if status == 200:
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > MAX_RELEASE_ANSWER_BYTES:
                    break
    if status != 200:
        raise CheckFailed("release.http_status", f"{RELEASE_ROUTE} answered HTTP {status}")
    files: dict[str, bytes] | None = None
    if len(body) <= MAX_RELEASE_ANSWER_BYTES:
        try:
            parsed = json.loads(body)
            if isinstance(parsed, dict):
                files = {
                    name: base64.b64decode(parsed[name], validate=True)
                    for name in (ROOT_FILE, TARGETS_FILE, LOG_PROOF_FILE)
                    if isinstance(parsed.get(name), str)
                }
        except (ValueError, binascii.Error, RecursionError):
            files = None
    if files is None or len(files) != 3:
        # Raised outside the handler, and without quoting the answer.
        raise CheckFailed("release.response", f"{RELEASE_ROUTE} did not answer a release bundle")
    for name, data in files.items():
        (into / name).write_bytes(data)


async def check_ingress(args: argparse.Namespace, http_timeout_s: float) -> CheckedIngress:
    """Pins, release and ingress, checked in that order; see the module docstring."""
    pins, cert_pem = load_trust(args)
    if not _is_https(args.url):
        # Before anything is fetched: the release too comes over the pinned TLS only.
        raise CheckFailed("ingress.url", "the ingress is reached over https:// only")
    try:
        tls = pinned_tls_context(cert_pem)
    except IngressRefused as refused:
        raise UnusableInput(str(refused)) from None
    state = TrustStateFile(args.state if args.state is not None else default_state_path())
    failure: CheckFailed | None = None
    problem = ""
    with tempfile.TemporaryDirectory(prefix="mantle-release-") as scratch:
        try:
            async with httpx2.AsyncClient(verify=tls, timeout=http_timeout_s) as http:
                if args.release_dir is not None:
                    bundle, source = ReleaseDirectory(args.release_dir), str(args.release_dir)
                else:
                    await _fetch_release(http, args.url, Path(scratch))
                    bundle, source = ReleaseDirectory(Path(scratch)), "served by the ingress"
                release = client_release_view(bundle, pins, datetime.now(UTC), state)
                verified = await verify_ingress(
                    http,
                    args.url,
                    pins=pins,
                    release=release,
                    tls_cert_pem=cert_pem,
                    random=SystemRandom(),
                    clock=SystemWallClock(),
                    deadline_s=min(DEFAULT_DEADLINE_S, http_timeout_s),
                )
                return CheckedIngress(verified, tls, source)
        except AttestationError as error:
            failure = CheckFailed(f"attestation.{error.check.value}", error.detail)
        except IngressRefused as error:
            failure = CheckFailed(f"ingress.{error.check.value}", str(error))
        except ReleaseError as error:
            failure = CheckFailed(f"release.{_snake(type(error).__name__)}", str(error))
        except httpx2.HTTPError as error:
            failure = _transport_check(error)
        except TrustStateError as error:
            problem = str(error)
    if failure is not None:
        raise failure
    raise UnusableInput(problem)


# -- the end-to-end client's options ---------------------------------------------------

#: Where the tenant's API key is read from when ``--api-key`` is not given (a
#: key on the command line is visible to other users of the machine).
API_KEY_ENV: Final = "MANTLE_API_KEY"
MODELS_ROUTE: Final = "/v1/models"
MAX_MODELS_ANSWER_BYTES: Final = 256 * 1024
#: A sealed request names a model of at most this many characters.
MAX_MODEL_ID_LEN: Final = 128


def api_key_of(args: argparse.Namespace) -> str:
    """``--api-key``, else ``$MANTLE_API_KEY``; :class:`UnusableInput` without one."""
    key: str | None = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV)
    if not key:
        raise UnusableInput(f"no API key: give --api-key or set ${API_KEY_ENV}")
    return key


def client_pins(args: argparse.Namespace) -> dict[str, Path | None]:
    """The pins for :class:`mantle.AsyncClient`, as paths: each explicit option,
    else the ``--pins`` directory's file, else ``None`` (the client then reads
    ``MANTLE_*`` or its config file, and refuses to start without a pin)."""

    def one(explicit: Path | None, name: str) -> Path | None:
        if explicit is not None:
            return explicit
        return args.pins / name if args.pins is not None else None

    return {
        "attestation_root": one(args.root, ATTESTATION_ROOT_PIN),
        "release_root": one(args.release_root, RELEASE_ROOT_PIN),
        "tlog_key": one(args.tlog_key, LOG_KEY_PIN),
    }


async def first_model(
    http: httpx2.AsyncClient, url: str, api_key: str, deadline_s: float
) -> str | None:
    """The first model the ingress lists (``GET /v1/models``), or ``None``.

    Only a routing name: the release verified later must list it, and the
    nodes serving it must prove that release's PCRs for it.
    """
    answer = await get_bounded(
        http,
        url.rstrip("/") + MODELS_ROUTE,
        step="models",
        cap=MAX_MODELS_ANSWER_BYTES,
        deadline_s=deadline_s,
        headers={"Authorization": f"Bearer {api_key}"},
    )
    if answer.status != 200:
        raise api_error_of(answer.status, answer.headers, answer.body)
    parsed: object = None
    if answer.body is not None:
        try:
            parsed = json.loads(answer.body)
        except (ValueError, RecursionError):
            parsed = None
    listed = parsed.get("data") if isinstance(parsed, dict) else None
    if not isinstance(listed, list):
        raise CheckFailed("models.answer", f"{MODELS_ROUTE} did not answer a model list")
    for entry in listed:
        model = entry.get("id") if isinstance(entry, dict) else None
        if isinstance(model, str) and 0 < len(model) <= MAX_MODEL_ID_LEN and model.isprintable():
            return model
    return None


def failure_of(error: BaseException) -> CheckFailed | None:
    """The client library's typed errors as a named check (never quoting the
    server's message: an error body is the server's text); ``None`` for others.
    A task group's group of one error is judged by that error."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    if isinstance(error, UnusableInput):
        raise UnusableInput(str(error))
    if isinstance(error, CheckFailed):
        return error
    if isinstance(error, ClientAttestationError):
        named = error.check.value
        if error.document_check is not None:
            named = f"{named}/{error.document_check.value}"
        return CheckFailed(f"attestation.{named}", error.detail)
    if isinstance(error, RateLimited):
        after = "unknown" if error.retry_after is None else f"{error.retry_after:g} s"
        return CheckFailed("api.rate_limited", f"HTTP 429, retry after {after}")
    if isinstance(error, APIError):
        kind = f" ({error.type})" if error.type else ""
        return CheckFailed(f"api.http_{error.status}", f"HTTP {error.status}{kind}")
    if isinstance(error, ClientTimeout):
        return CheckFailed("timeout", f"{error.step}: no answer in time")
    if isinstance(error, ClientConfigError):
        return None
    if isinstance(error, httpx2.HTTPError):
        return _transport_check(error)
    return None
