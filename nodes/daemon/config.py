"""``node.toml``: one node's configuration, parsed strictly into frozen dataclasses.

The schema (what ``mantle-node dev`` writes for each node of a local cluster)::

    node = "keys-1"                 # unique in the cluster: [A-Za-z0-9][A-Za-z0-9._-]{0,63}
    roles = ["keys"]                # non-empty subset of "ingress", "inference", "keys"
    data_dir = "state/keys-1"       # state, node.log, ready.json
    log_level = "info"              # optional: "debug" | "info" | "warning" | "error"
    drain_deadline_s = 30           # optional: how long in-flight work may finish on SIGTERM

    [tpm]
    backend = "simulated"           # "simulated" | "tpm2" | "nitrotpm"
    pki_seed_file = "pki.seed"      # simulated only: the simulated cloud PKI's seed
    seed_file = "keys-1.seed"       # simulated only: this simulated TPM's seed
    # tcti = "swtpm:host=127.0.0.1,port=2321"   # tpm2 (required) and nitrotpm (optional,
    #                                           # default "device:/dev/tpmrm0")

    [release]
    bundle = "release"              # the `mantle-node release` directory layout
    install_root = "install"        # the installed artifacts

    [trust]                         # pins, never taken from the bundle
    attestation_root = "root.pem"   # the attestation PKI's root certificate
    release_root = "root.json"
    log_key = "log-key.pem"
    attestation_keys = ["ak.pem"]   # optional: pinned TPM 2.0 attestation keys (PEM
                                    # public keys) whose quotes peers may attest with

    [link]
    listen = "127.0.0.1:0"
    peers = [{ node = "ingress-1", address = "127.0.0.1:7001" }]

    [keys]                          # role "keys"
    listen = "127.0.0.1:0"

    [inference]                     # role "inference"
    model = "smollm2-135m-instruct"
    engine = "llama"                # "llama" | "scripted" (simulated TPM only)
    sealed_model = "model.sealed"   # llama only
    keys_address = "127.0.0.1:7002" # llama only
    scheduler_node = "ingress-1"    # must be one of [link].peers
    slots = 1                       # 1..64
    token_interval_s = 0.05         # optional, scripted only: a pause before each chunk

    [ingress]                       # role "ingress"
    listen = "127.0.0.1:8443"
    tenants = "tenants.toml"        # [[tenants]] id = "dev", key_sha256 = "<64 hex digits>"
    tlog = "tlog.sqlite"
    max_queued = 256                # optional: requests waiting per model (1..100000)
    max_queued_per_tenant = 64      # optional: of them from one tenant (at most max_queued)

Rules, all enforced here so that nothing later runs on a half-understood file:

* **Unknown keys are refused**, at every level (a misspelt ``sealed_modle``
  would otherwise be silently ignored).
* **A role's section is required when the role is listed, and refused when it
  is not**: a ``[keys]`` table on an inference node is a mistake in the file
  (a role left out, or a section copied from another node), never something to
  ignore. Likewise keys that belong to another TPM backend or engine are
  refused (``seed_file`` on a ``tpm2`` node, ``sealed_model`` on a scripted one).
* **The scripted engine runs on the simulated TPM only**: nothing measures
  the engine, so on a TPM whose documents peers admit a scripted node would
  serve made-up words under the measurement of the release's model.
* **Relative paths resolve against the config file's directory**, never the
  working directory, so a cluster directory can be moved as a whole.
* **Addresses are ``host:port``**, parsed strictly: a dotted IPv4 literal, a
  bracketed IPv6 literal or a DNS name, and a decimal port (listen addresses
  may use 0, "any free port"; dialled addresses may not).
* **Errors name the key, never the value**: :class:`ConfigError` carries a
  :class:`ConfigCheck` and the dotted key (``inference.slots``,
  ``link.peers[2].address``); values may be secrets or paths an operator would
  not want in a log, so no message quotes one. Errors are raised outside
  ``except`` blocks, so no exception's ``__context__`` carries the input.

The tenants file an ingress node names is the ingress room's
(:meth:`actors.ingress.TenantStore.load`): ``[[tenants]]`` tables with an
``id`` and the hex SHA-256 of the tenant's API key.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mantle import read_bounded_file
from protocol.sealed_model import MAX_MODEL_ID_LENGTH, MODEL_ID_PATTERN

#: The largest config (or tenants) file read; a config is a few hundred bytes.
MAX_CONFIG_BYTES: Final = 256 * 1024
MAX_PEERS: Final = 256
MAX_SLOTS: Final = 64
MAX_QUEUED: Final = 100_000
MAX_TOKEN_INTERVAL_S: Final = 10.0
DEFAULT_DRAIN_DEADLINE_S: Final = 30.0
MAX_DRAIN_DEADLINE_S: Final = 600.0
DEFAULT_NITROTPM_TCTI: Final = "device:/dev/tpmrm0"
MAX_TCTI_LENGTH: Final = 256
MAX_PATH_LENGTH: Final = 4096

ROLES: Final = ("ingress", "inference", "keys")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")

_NODE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HOST_LABEL: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PORT: Final = re.compile(r"[0-9]{1,5}")
_TCTI: Final = re.compile(r"(device|swtpm|mssim):[A-Za-z0-9/._=,:-]{1,250}")
# tomllib reports where, then what; only the where is kept (see _parse_toml).
_TOML_POSITION: Final = re.compile(r"\(at line [0-9]+, column [0-9]+\)|\(at end of document\)")


class ConfigCheck(enum.StrEnum):
    """What was wrong with the configuration (:attr:`ConfigError.check`)."""

    #: The file cannot be read (missing, unreadable, too large).
    FILE = "file"
    #: The file is not valid TOML (or not UTF-8).
    SYNTAX = "syntax"
    #: A key the schema does not have.
    UNKNOWN_KEY = "unknown_key"
    #: A required key is missing.
    MISSING = "missing"
    #: A value of the wrong TOML type.
    TYPE = "type"
    #: A value of the right type outside what the key allows.
    VALUE = "value"
    #: A ``host:port`` that does not parse.
    ADDRESS = "address"
    #: A path that is empty, too long or holds a NUL.
    PATH = "path"
    #: A role's section is missing, or present without its role.
    ROLE_SECTION = "role_section"
    #: A key that belongs to another backend or engine than the one chosen.
    NOT_APPLICABLE = "not_applicable"
    #: Two entries that must differ do not (peers, tenants, roles).
    DUPLICATE = "duplicate"
    #: A name that must refer to another entry does not (or two values disagree).
    REFERENCE = "reference"


class _Unreadable(Exception):
    """A file that could not be read (its message, which holds the path, is dropped)."""


class ConfigError(Exception):
    """The configuration cannot be used; :attr:`check` says why, :attr:`key` where.

    The message names the key and the rule, never the value found there.
    """

    def __init__(self, check: ConfigCheck, key: str, detail: str) -> None:
        self.check = check
        self.key = key
        self.detail = detail
        super().__init__(f"config {key}: {detail} [{check.value}]")


class TpmBackend(enum.StrEnum):
    SIMULATED = "simulated"
    TPM2 = "tpm2"
    NITROTPM = "nitrotpm"


class EngineKind(enum.StrEnum):
    LLAMA = "llama"
    SCRIPTED = "scripted"


@dataclass(frozen=True, slots=True)
class Address:
    """A ``host:port``: ``host`` without brackets (an IPv6 literal is bare)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class TpmConfig:
    backend: TpmBackend
    #: simulated: the simulated cloud PKI's seed file, and this TPM's own.
    pki_seed_file: Path | None = None
    seed_file: Path | None = None
    #: tpm2 and nitrotpm: the TCTI string (what tpm2-tss's ESAPI opens).
    tcti: str | None = None

    @property
    def simulated(self) -> bool:
        return self.backend is TpmBackend.SIMULATED


@dataclass(frozen=True, slots=True)
class ReleaseConfig:
    bundle: Path
    install_root: Path


@dataclass(frozen=True, slots=True)
class TrustConfig:
    attestation_root: Path
    release_root: Path
    log_key: Path
    attestation_keys: tuple[Path, ...] = ()


@dataclass(frozen=True, slots=True)
class LinkPeer:
    node: str
    address: Address


@dataclass(frozen=True, slots=True)
class LinkConfig:
    listen: Address
    peers: tuple[LinkPeer, ...] = ()


@dataclass(frozen=True, slots=True)
class KeysConfig:
    listen: Address


@dataclass(frozen=True, slots=True)
class InferenceConfig:
    model: str
    engine: EngineKind
    scheduler_node: str
    slots: int
    #: llama only: the sealed weights, and the keys node that holds their data key.
    sealed_model: Path | None = None
    keys_address: Address | None = None
    #: scripted only: seconds before each chunk (``None``: at once).
    token_interval_s: float | None = None


@dataclass(frozen=True, slots=True)
class IngressConfig:
    listen: Address
    tenants: Path
    tlog: Path
    #: The scheduler's queue bounds (``None``: its defaults).
    max_queued: int | None = None
    max_queued_per_tenant: int | None = None


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """One node's whole configuration, every path absolute."""

    path: Path
    node: str
    roles: frozenset[str]
    data_dir: Path
    tpm: TpmConfig
    release: ReleaseConfig
    trust: TrustConfig
    link: LinkConfig
    keys: KeysConfig | None = None
    inference: InferenceConfig | None = None
    ingress: IngressConfig | None = None
    log_level: str = "info"
    drain_deadline_s: float = DEFAULT_DRAIN_DEADLINE_S

    @property
    def log_file(self) -> Path:
        return self.data_dir / "node.log"

    @property
    def ready_file(self) -> Path:
        return self.data_dir / "ready.json"

    @property
    def state_dir(self) -> Path:
        """Persistent node state (the release counter's binding, the keyring)."""
        return self.data_dir / "state"


# -- reading --------------------------------------------------------------------------------


def _parse_toml(path: Path, key: str) -> dict[str, object]:
    """The TOML table in ``path``; a syntax error is reported by position only
    (tomllib's messages can quote a fragment of the line)."""
    error = ""
    data: dict[str, object] | None = None
    try:
        raw: bytes | None = read_bounded_file(path, MAX_CONFIG_BYTES, "config", error=_Unreadable)
    except _Unreadable:
        raw = None
    if raw is None:
        raise ConfigError(
            ConfigCheck.FILE,
            key,
            f"cannot read the file (missing, unreadable or over {MAX_CONFIG_BYTES} bytes)",
        )
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        error = "the file is not UTF-8"
    except tomllib.TOMLDecodeError as decode_error:
        where = _TOML_POSITION.search(str(decode_error))
        error = "not valid TOML" + (f" {where.group(0)}" if where else "")
    except ValueError:
        # tomllib's int() on an integer of more digits than Python converts.
        error = "not valid TOML (a number too long to read)"
    except RecursionError:
        # Arrays or inline tables nested deeper than tomllib's recursion goes.
        error = "not valid TOML (nested too deeply)"
    if data is None:
        raise ConfigError(ConfigCheck.SYNTAX, key, error)
    return data


class _Table:
    """One TOML table being read: every key taken is ticked off, and
    :meth:`done` refuses whatever is left (unknown keys)."""

    def __init__(self, data: Mapping[str, object], where: str, base: Path) -> None:
        self._data = data
        self._where = where
        self._base = base
        self._taken: set[str] = set()

    @property
    def base(self) -> Path:
        return self._base

    def key(self, name: str) -> str:
        return f"{self._where}.{name}" if self._where else name

    def has(self, name: str) -> bool:
        return name in self._data

    def _get(self, name: str, required: bool) -> object:
        self._taken.add(name)
        if name not in self._data:
            if required:
                raise ConfigError(ConfigCheck.MISSING, self.key(name), "is required")
            return None
        return self._data[name]

    def string(self, name: str, *, required: bool = True, max_length: int = 256) -> str | None:
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ConfigError(ConfigCheck.TYPE, self.key(name), "must be a string")
        if not value or len(value) > max_length or "\x00" in value:
            raise ConfigError(
                ConfigCheck.VALUE, self.key(name), f"must be 1 to {max_length} characters, no NUL"
            )
        return value

    def required_string(self, name: str, *, max_length: int = 256) -> str:
        value = self.string(name, max_length=max_length)
        assert value is not None
        return value

    def choice(self, name: str, options: tuple[str, ...]) -> str:
        value = self.required_string(name)
        if value not in options:
            raise ConfigError(
                ConfigCheck.VALUE, self.key(name), "must be one of " + ", ".join(options)
            )
        return value

    def path(self, name: str, *, required: bool = True) -> Path | None:
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ConfigError(ConfigCheck.TYPE, self.key(name), "must be a string (a path)")
        if not value or len(value) > MAX_PATH_LENGTH or "\x00" in value:
            raise ConfigError(
                ConfigCheck.PATH,
                self.key(name),
                f"must be a path of 1 to {MAX_PATH_LENGTH} characters without NUL",
            )
        candidate = Path(value)
        return candidate if candidate.is_absolute() else self._base / candidate

    def required_path(self, name: str) -> Path:
        value = self.path(name)
        assert value is not None
        return value

    def integer(self, name: str, low: int, high: int) -> int:
        value = self.optional_integer(name, low, high, required=True)
        assert value is not None
        return value

    def optional_integer(
        self, name: str, low: int, high: int, *, required: bool = False
    ) -> int | None:
        value = self._get(name, required)
        if value is None:
            return None
        # bool is an int in Python; TOML's true is no number.
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(ConfigCheck.TYPE, self.key(name), "must be an integer")
        if not low <= value <= high:
            raise ConfigError(ConfigCheck.VALUE, self.key(name), f"must be from {low} to {high}")
        return value

    def number(self, name: str, low: float, high: float, default: float) -> float:
        value = self._get(name, False)
        if value is None:
            return default
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(ConfigCheck.TYPE, self.key(name), "must be a number")
        if not math.isfinite(value) or not low < value <= high:
            raise ConfigError(
                ConfigCheck.VALUE, self.key(name), f"must be above {low:g} and at most {high:g}"
            )
        return float(value)

    def address(self, name: str, *, listen: bool, required: bool = True) -> Address | None:
        value = self.string(name, required=required)
        if value is None:
            return None
        return parse_address(value, self.key(name), listen=listen)

    def required_address(self, name: str, *, listen: bool) -> Address:
        value = self.address(name, listen=listen)
        assert value is not None
        return value

    def table(self, name: str, *, required: bool = True) -> _Table | None:
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ConfigError(ConfigCheck.TYPE, self.key(name), "must be a table")
        return _Table(value, self.key(name), self._base)

    def required_table(self, name: str) -> _Table:
        value = self.table(name)
        assert value is not None
        return value

    def array(self, name: str, *, required: bool = True, max_items: int) -> list[object]:
        value = self._get(name, required)
        if value is None:
            return []
        if not isinstance(value, list):
            raise ConfigError(ConfigCheck.TYPE, self.key(name), "must be an array")
        if len(value) > max_items:
            raise ConfigError(
                ConfigCheck.VALUE, self.key(name), f"must have at most {max_items} entries"
            )
        return value

    def not_applicable(self, name: str, why: str) -> None:
        if name in self._data:
            raise ConfigError(ConfigCheck.NOT_APPLICABLE, self.key(name), why)
        self._taken.add(name)

    def done(self) -> None:
        unknown = sorted(set(self._data) - self._taken)
        if unknown:
            # The key is the user's text: bounded, and shown only as a key name
            # (keys are schema positions, never secrets; values are not shown).
            shown = unknown[0] if len(unknown[0]) <= 64 else unknown[0][:64] + "…"
            raise ConfigError(ConfigCheck.UNKNOWN_KEY, self.key(shown), "is not a known key")


def parse_address(text: str, key: str, *, listen: bool) -> Address:
    """``host:port`` strictly (see the module docstring); ``listen`` allows port 0."""
    host, port_text = "", ""
    if text.startswith("["):
        end = text.find("]")
        if end > 0 and text[end + 1 : end + 2] == ":":
            host, port_text = text[1:end], text[end + 2 :]
            if not _is_ip(host, version=6):
                host = ""
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host or not (_is_ip(host, version=4) or _is_dns_name(host)):
            host = ""
    if not host:
        raise ConfigError(
            ConfigCheck.ADDRESS,
            key,
            "must be host:port (an IPv4 address, [IPv6 address] or DNS name, and a port)",
        )
    low = 0 if listen else 1
    if not _PORT.fullmatch(port_text) or not low <= int(port_text) <= 65535:
        raise ConfigError(
            ConfigCheck.ADDRESS, key, f"the port must be a number from {low} to 65535"
        )
    return Address(host, int(port_text))


def _is_ip(text: str, *, version: int) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    # ip_address also takes "1" style shorthands for v4? No, but it takes
    # leading-zero-free forms only in recent Pythons; insist on the canonical text.
    return address.version == version and (version == 6 or str(address) == text)


def _is_dns_name(text: str) -> bool:
    if not 1 <= len(text) <= 253:
        return False
    labels = text.split(".")
    if labels[-1].isdigit():
        return False  # "127.1" and the like: numeric forms that are not dotted quads
    return all(_HOST_LABEL.fullmatch(label) for label in labels)


# -- the schema -----------------------------------------------------------------------------


def load_config(path: Path) -> NodeConfig:
    """Read and check ``path``; every problem is a :class:`ConfigError`."""
    path = Path(path).absolute()
    top = _Table(_parse_toml(path, "config"), "", path.parent)
    node = top.required_string("node", max_length=64)
    if not _NODE_NAME.fullmatch(node):
        raise ConfigError(ConfigCheck.VALUE, "node", "must be 1 to 64 characters of [A-Za-z0-9._-]")
    roles = _roles(top)
    data_dir = top.required_path("data_dir")
    log_level = top.string("log_level", required=False) or "info"
    if log_level not in LOG_LEVELS:
        raise ConfigError(ConfigCheck.VALUE, "log_level", "must be one of " + ", ".join(LOG_LEVELS))
    drain = top.number("drain_deadline_s", 0.0, MAX_DRAIN_DEADLINE_S, DEFAULT_DRAIN_DEADLINE_S)
    tpm = _tpm(top.required_table("tpm"))
    release_table = top.required_table("release")
    release = ReleaseConfig(
        bundle=release_table.required_path("bundle"),
        install_root=release_table.required_path("install_root"),
    )
    release_table.done()
    trust_table = top.required_table("trust")
    trust = TrustConfig(
        attestation_root=trust_table.required_path("attestation_root"),
        release_root=trust_table.required_path("release_root"),
        log_key=trust_table.required_path("log_key"),
        attestation_keys=_paths(trust_table, "attestation_keys"),
    )
    trust_table.done()
    link = _link(top.required_table("link"), node)
    sections = {role: top.table(role, required=False) for role in ROLES}
    for role, section in sections.items():
        if role in roles and section is None:
            raise ConfigError(
                ConfigCheck.ROLE_SECTION, role, f"the [{role}] table is required for role {role}"
            )
        if role not in roles and section is not None:
            raise ConfigError(
                ConfigCheck.ROLE_SECTION,
                role,
                f"a [{role}] table without role {role} in roles (add the role or remove the table)",
            )
    keys = _keys(sections["keys"]) if sections["keys"] is not None else None
    inference = (
        _inference(sections["inference"], link) if sections["inference"] is not None else None
    )
    ingress = _ingress(sections["ingress"]) if sections["ingress"] is not None else None
    top.done()
    if (
        inference is not None
        and inference.engine is EngineKind.SCRIPTED
        and tpm.backend is not TpmBackend.SIMULATED
    ):
        # Nothing measures the engine (node.toml is the operator's): on a
        # TPM whose documents peers admit, a scripted node would answer with
        # made-up words under the measurement of the release's model.
        raise ConfigError(
            ConfigCheck.REFERENCE,
            "inference.engine",
            'engine = "scripted" runs on the simulated TPM backend only (development)',
        )
    return NodeConfig(
        path=path,
        node=node,
        roles=roles,
        data_dir=data_dir,
        tpm=tpm,
        release=release,
        trust=trust,
        link=link,
        keys=keys,
        inference=inference,
        ingress=ingress,
        log_level=log_level,
        drain_deadline_s=drain,
    )


def _paths(table: _Table, name: str) -> tuple[Path, ...]:
    paths: list[Path] = []
    for position, item in enumerate(table.array(name, required=False, max_items=MAX_PEERS)):
        entry = _Table({"path": item}, f"{table.key(name)}[{position}]", table.base)
        paths.append(entry.required_path("path"))
    return tuple(paths)


def _roles(top: _Table) -> frozenset[str]:
    items = top.array("roles", max_items=len(ROLES))
    if not items:
        raise ConfigError(ConfigCheck.VALUE, "roles", "must list at least one role")
    roles: set[str] = set()
    for position, item in enumerate(items):
        key = f"roles[{position}]"
        if not isinstance(item, str):
            raise ConfigError(ConfigCheck.TYPE, key, "must be a string")
        if item not in ROLES:
            raise ConfigError(ConfigCheck.VALUE, key, "must be one of " + ", ".join(ROLES))
        if item in roles:
            raise ConfigError(ConfigCheck.DUPLICATE, key, "is listed twice")
        roles.add(item)
    return frozenset(roles)


def _tpm(table: _Table) -> TpmConfig:
    backend = TpmBackend(table.choice("backend", tuple(b.value for b in TpmBackend)))
    if backend is TpmBackend.SIMULATED:
        table.not_applicable("tcti", "applies to the tpm2 and nitrotpm backends only")
        config = TpmConfig(
            backend,
            pki_seed_file=table.required_path("pki_seed_file"),
            seed_file=table.required_path("seed_file"),
        )
    else:
        for name in ("pki_seed_file", "seed_file"):
            table.not_applicable(name, "applies to the simulated backend only")
        tcti = table.string("tcti", required=backend is TpmBackend.TPM2, max_length=MAX_TCTI_LENGTH)
        tcti = tcti if tcti is not None else DEFAULT_NITROTPM_TCTI
        if not _TCTI.fullmatch(tcti):
            raise ConfigError(
                ConfigCheck.VALUE,
                table.key("tcti"),
                "must be a device:, swtpm: or mssim: TCTI string",
            )
        config = TpmConfig(backend, tcti=tcti)
    table.done()
    return config


def _link(table: _Table, node: str) -> LinkConfig:
    listen = table.required_address("listen", listen=True)
    peers: list[LinkPeer] = []
    names: set[str] = set()
    for position, item in enumerate(table.array("peers", required=False, max_items=MAX_PEERS)):
        where = f"link.peers[{position}]"
        if not isinstance(item, dict):
            raise ConfigError(ConfigCheck.TYPE, where, "must be a table { node, address }")
        entry = _Table(item, where, Path("/"))
        name = entry.required_string("node", max_length=64)
        if not _NODE_NAME.fullmatch(name):
            raise ConfigError(
                ConfigCheck.VALUE, entry.key("node"), "must be 1 to 64 characters of [A-Za-z0-9._-]"
            )
        if name == node:
            raise ConfigError(ConfigCheck.REFERENCE, entry.key("node"), "names this node itself")
        if name in names:
            raise ConfigError(
                ConfigCheck.DUPLICATE, entry.key("node"), "names a peer listed before"
            )
        names.add(name)
        peers.append(LinkPeer(name, entry.required_address("address", listen=False)))
        entry.done()
    table.done()
    return LinkConfig(listen=listen, peers=tuple(peers))


def _keys(table: _Table) -> KeysConfig:
    config = KeysConfig(listen=table.required_address("listen", listen=True))
    table.done()
    return config


def _inference(table: _Table, link: LinkConfig) -> InferenceConfig:
    model = table.required_string("model", max_length=MAX_MODEL_ID_LENGTH)
    if not MODEL_ID_PATTERN.fullmatch(model):
        raise ConfigError(
            ConfigCheck.VALUE, table.key("model"), "must be a model id ([A-Za-z0-9._-] segments)"
        )
    engine = EngineKind(table.choice("engine", tuple(e.value for e in EngineKind)))
    scheduler = table.required_string("scheduler_node", max_length=64)
    if scheduler not in {peer.node for peer in link.peers}:
        raise ConfigError(
            ConfigCheck.REFERENCE,
            table.key("scheduler_node"),
            "must name one of [link].peers (the node link reaches the scheduler)",
        )
    slots = table.integer("slots", 1, MAX_SLOTS)
    interval: float | None = None
    if engine is EngineKind.LLAMA:
        sealed: Path | None = table.required_path("sealed_model")
        keys_address = table.address("keys_address", listen=False)
        table.not_applicable("token_interval_s", 'applies to engine = "scripted" only')
    else:
        for name in ("sealed_model", "keys_address"):
            table.not_applicable(name, 'applies to engine = "llama" only')
        sealed, keys_address = None, None
        if table.has("token_interval_s"):
            interval = table.number("token_interval_s", 0.0, MAX_TOKEN_INTERVAL_S, 0.0)
    table.done()
    return InferenceConfig(
        model=model,
        engine=engine,
        scheduler_node=scheduler,
        slots=slots,
        sealed_model=sealed,
        keys_address=keys_address,
        token_interval_s=interval,
    )


def _ingress(table: _Table) -> IngressConfig:
    max_queued = table.optional_integer("max_queued", 1, MAX_QUEUED)
    per_tenant = table.optional_integer("max_queued_per_tenant", 1, MAX_QUEUED)
    if max_queued is not None and per_tenant is not None and per_tenant > max_queued:
        raise ConfigError(
            ConfigCheck.REFERENCE,
            table.key("max_queued_per_tenant"),
            "must be at most ingress.max_queued",
        )
    config = IngressConfig(
        listen=table.required_address("listen", listen=True),
        tenants=table.required_path("tenants"),
        tlog=table.required_path("tlog"),
        max_queued=max_queued,
        max_queued_per_tenant=per_tenant,
    )
    table.done()
    return config
