"""The client's settings: from arguments, ``MANTLE_*`` variables or a TOML file.

Nothing here comes from the server: the pins (attestation root, release root,
log key) and the TLS pin are the user's, read from files the user names. A
setting given as an argument wins over the environment, which wins over the
config file (``MANTLE_CONFIG``, or the ``config_file`` argument). A missing pin
is a :class:`~mantle.ClientConfigError` naming it; there is no mode without
pins.

=====================  ======================  ==================
argument               variable                TOML key
=====================  ======================  ==================
``url``                ``MANTLE_URL``          ``url``
``api_key``            ``MANTLE_API_KEY``      ``api_key``
``attestation_root``   ``MANTLE_ATTESTATION_ROOT``  ``attestation_root``
``release_root``       ``MANTLE_RELEASE_ROOT`` ``release_root``
``tlog_key``           ``MANTLE_TLOG_KEY``     ``tlog_key``
``tls_cert``           ``MANTLE_TLS_CERT``     ``tls_cert``
``trust_state``        ``MANTLE_TRUST_STATE``  ``trust_state``
=====================  ======================  ==================

Pins are paths (a relative path in the TOML file is relative to the file); as
arguments they may also be the file's bytes. ``tls_cert`` is optional: without
it the ingress's certificate is checked against the system's trust store. The
trust state defaults to ``$XDG_STATE_HOME/mantle/trust-state.json``
(``~/.local/state/...``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mantle._errors import ClientConfigError
from mantle._files import KeyFileError, read_bounded_file
from mantle._ingress import IngressRefused, pinned_tls_context
from mantle._trust import MAX_PEM_PIN_BYTES, TrustPins, load_log_key_pem
from protocol.attestation import AttestationError, ConfigurationError, TrustAnchor
from protocol.release import MAX_ROOT_BYTES

#: A pin given as an argument: the file's bytes, or its path.
PinSource = bytes | str | os.PathLike[str]

MAX_CONFIG_BYTES: Final = 64 * 1024
_SETTINGS: Final = (
    "url",
    "api_key",
    "attestation_root",
    "release_root",
    "tlog_key",
    "tls_cert",
    "trust_state",
)
_ENV: Final = {name: f"MANTLE_{name.upper()}" for name in _SETTINGS}
CONFIG_ENV: Final = "MANTLE_CONFIG"


@dataclass(frozen=True)
class ClientSettings:
    """Everything a client needs, read and checked (never from the server)."""

    url: str
    api_key: str
    pins: TrustPins
    #: The ingress's certificate, PEM (one certificate), or ``None``: the
    #: system's trust store checks it.
    tls_cert_pem: bytes | None
    trust_state: Path


def _state_home(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_STATE_HOME")
    root = Path(base) if base else Path.home() / ".local" / "state"
    return root / "mantle" / "trust-state.json"


def _read_config_file(path: Path) -> dict[str, object]:
    data = read_bounded_file(
        path, MAX_CONFIG_BYTES, "config file", error=lambda m: ClientConfigError("config", m)
    )
    parsed: dict[str, object] | None = None
    try:
        parsed = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        parsed = None
    if parsed is None:
        # Raised outside the handler, without quoting the file.
        raise ClientConfigError("config", f"{path} is not a UTF-8 TOML file")
    unknown = set(parsed) - set(_SETTINGS)
    if unknown:
        raise ClientConfigError("config", f"{path} has keys the client does not know")
    return parsed


def _pin_bytes(setting: str, source: PinSource, base: Path | None, limit: int) -> bytes:
    if isinstance(source, bytes):
        if len(source) > limit:
            raise ClientConfigError(setting, "the pin is too large")
        return source
    path = Path(source)
    if base is not None and not path.is_absolute():
        path = base / path
    return read_bounded_file(
        path, limit, setting, error=lambda message: ClientConfigError(setting, message)
    )


def load_settings(
    *,
    url: str | None = None,
    api_key: str | None = None,
    attestation_root: PinSource | None = None,
    release_root: PinSource | None = None,
    tlog_key: PinSource | None = None,
    tls_cert: PinSource | None = None,
    trust_state: str | os.PathLike[str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> ClientSettings:
    """The settings from the arguments, then ``env`` (default ``os.environ``),
    then the config file; see the module docstring."""
    environ = os.environ if env is None else env
    arguments: dict[str, object | None] = {
        "url": url,
        "api_key": api_key,
        "attestation_root": attestation_root,
        "release_root": release_root,
        "tlog_key": tlog_key,
        "tls_cert": tls_cert,
        "trust_state": trust_state,
    }
    file_path = config_file if config_file is not None else environ.get(CONFIG_ENV)
    from_file: dict[str, object] = {}
    base: Path | None = None
    if file_path:
        from_file = _read_config_file(Path(file_path))
        base = Path(file_path).parent
    chosen: dict[str, tuple[object, Path | None]] = {}
    for name in _SETTINGS:
        if arguments[name] is not None:
            chosen[name] = (arguments[name], None)
        elif environ.get(_ENV[name]):
            chosen[name] = (environ[_ENV[name]], None)
        elif name in from_file:
            chosen[name] = (from_file[name], base)

    def text(name: str) -> str:
        if name not in chosen:
            raise ClientConfigError(name, f"missing (argument, {_ENV[name]} or config file)")
        value = chosen[name][0]
        if not isinstance(value, str) or not value:
            raise ClientConfigError(name, "is not a non-empty string")
        return value

    def pin(name: str, limit: int, required: bool = True) -> bytes | None:
        if name not in chosen:
            if required:
                raise ClientConfigError(
                    name, f"a pin is required (argument, {_ENV[name]} or config file)"
                )
            return None
        value, where = chosen[name]
        if not isinstance(value, bytes | str | os.PathLike):
            raise ClientConfigError(name, "is a path or the pin's bytes")
        return _pin_bytes(name, value, where, limit)

    resolved_url = text("url").rstrip("/")
    key = text("api_key")
    root_pem = pin("attestation_root", MAX_PEM_PIN_BYTES)
    release = pin("release_root", MAX_ROOT_BYTES)
    log_pem = pin("tlog_key", MAX_PEM_PIN_BYTES)
    cert = pin("tls_cert", MAX_PEM_PIN_BYTES, required=False)
    assert root_pem is not None and release is not None and log_pem is not None
    anchor: TrustAnchor | None = None
    try:
        anchor = TrustAnchor.from_pem(root_pem)
    except (ConfigurationError, AttestationError, ValueError):
        anchor = None
    if anchor is None:
        raise ClientConfigError("attestation_root", "is not one PEM certificate")
    log_key: bytes | None = None
    try:
        log_key = load_log_key_pem(log_pem)
    except KeyFileError as error:
        log_error = str(error)
    if log_key is None:
        raise ClientConfigError("tlog_key", log_error)
    if cert is not None:
        refused: IngressRefused | None = None
        try:
            pinned_tls_context(cert)
        except IngressRefused as error:
            refused = error
        if refused is not None:
            raise ClientConfigError("tls_cert", "a pin is exactly one PEM certificate")
    if "trust_state" in chosen:
        state_value, where = chosen["trust_state"]
        if not isinstance(state_value, str | os.PathLike):
            raise ClientConfigError("trust_state", "is a path")
        state_path = Path(state_value)
        if where is not None and not state_path.is_absolute():
            state_path = where / state_path
    else:
        state_path = _state_home(environ)
    return ClientSettings(
        url=resolved_url,
        api_key=key,
        pins=TrustPins(attestation_root=anchor, release_root=release, log_public_key=log_key),
        tls_cert_pem=cert,
        trust_state=state_path,
    )
