"""Settings: one frozen pydantic tree, loaded once from file → environment → flags (flags win).

File: TOML (`--config PATH`, else /etc/aiosd/aiosd.toml when it exists). Environment:
`AIOSD_<SECTION>_<FIELD>` (e.g. `AIOSD_API_TCP_PORT=8080`), plus the shortcuts
`AIOSD_DATA_DIR`, `AIOSD_SOCKET` and `AIOSD_CONFIG`. Unknown keys and bad values raise
ConfigError naming the key and where it came from. This module does not touch the disk
beyond reading the config file.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aiosd.errors import ConfigError

DEFAULT_CONFIG = Path("/etc/aiosd/aiosd.toml")
ENV_PREFIX = "AIOSD_"
_SHORTCUTS = {"AIOSD_DATA_DIR": ("node", "data_dir"), "AIOSD_SOCKET": ("api", "socket")}
# Variables under the AIOSD_ prefix that are not settings (block instances, tests, the CLI).
_NOT_SETTINGS = ("AIOSD_CONFIG", "AIOSD_INSTANCE_", "AIOSD_SLOW", "AIOSD_TEST_", "AIOSD_BENCH_")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSettings(_Section):
    data_dir: Path | None = Field(None, description="where identity and the LMDB store live")
    cluster: str = Field("default", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="cluster of a new node")
    shutdown_grace_s: float = Field(5.0, ge=0, le=60, description="drain time for in-flight work on stop")


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class ApiSettings(_Section):
    socket: Path | None = Field(None, description="unix socket of the local API (mode 0660)")
    tcp_port: int | None = Field(None, ge=1, le=65535, description="also serve on HOST:PORT, bearer token")
    host: str = Field("127.0.0.1", min_length=1, max_length=255,
                      description="address of the TCP listener; anything but 127.0.0.1 needs tls_cert/tls_key")
    tls_cert: Path | None = Field(None, description="PEM certificate (chain) of the TCP listener: serve HTTPS")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    local_role: Literal["admin", "operator", "viewer", "inference"] = Field(
        "operator", description="role of local socket users other than root and the daemon's own user")


class P2PSettings(_Section):
    host: str = Field("0.0.0.0", description="address the p2p listener binds")
    port: int = Field(7701, ge=0, le=65535, description="p2p port (0 = any free port)")
    advertise: str | None = Field(None, description="host:port peers should dial; default: first non-loopback")


class DiscoverySettings(_Section):
    mdns: bool = Field(False, description="announce and browse _aiosd._tcp.local. (off by default)")
    mdns_interfaces: list[str] = Field(default_factory=list, description="addresses zeroconf binds; [] = all")
    seeds: list[str] = Field(default_factory=list, description="host:port of peers to contact at start")


class MembershipSettings(_Section):
    profile: Literal["lan", "wan", "test"] = Field(
        "lan", description="SWIM timers: lan (default), wan (slow links), test (5x faster, tests only)")
    probe_interval_s: float | None = Field(
        None, gt=0, le=60, description="override the profile's probe period (lan: 0.5 s); lower = faster "
        "failure detection, more traffic")
    probe_timeout_s: float | None = Field(
        None, gt=0, le=60, description="override the profile's direct-ack deadline (lan: 0.25 s; ~99th pct RTT)")
    suspicion_mult: int | None = Field(
        None, ge=1, le=20, description="override the suspicion multiplier (lan: 3); higher = fewer false "
        "dead verdicts under loss or stalls, slower detection")
    leave_grace_s: float = Field(1.0, ge=0, le=10, description="time a graceful leave spends spreading the news")
    cert_ttl_s: int = Field(30 * 24 * 3600, ge=10, le=366 * 24 * 3600,
                            description="lifetime of certificates this node signs (CA holders only)")
    renew_check_s: float = Field(3600.0, gt=0, le=86400, description="how often the node checks its cert expiry")


class RuntimeSettings(_Section):
    driver: Literal["auto", "podman", "process"] = Field("auto", description="auto: podman when present")


class RaftSettings(_Section):
    """Controller election timing (maps onto federation.consensus.RaftConfig; Raft §5.2)."""

    profile: Literal["lan", "test"] = Field("lan", description="lan: failover ~1 s; test: smaller limits")
    election_timeout_min_s: float | None = Field(
        None, gt=0, le=60, description="override: a follower campaigns after [min, max) of silence (lan 0.5 s); "
        "lower = faster failover, more split votes")
    election_timeout_max_s: float | None = Field(None, gt=0, le=120, description="override (lan 1.0 s)")
    heartbeat_interval_s: float | None = Field(
        None, gt=0, le=30, description="override: leader heartbeat to voters (lan 0.25 s; learners every 1 s); at most "
        "half the minimum timeout")
    max_voters: int = Field(5, ge=1, le=9, description="voters per cluster; 5 tolerates 2 failures")


class ReplicationSettings(_Section):
    profile: Literal["lan", "test"] = Field(
        "lan", description="registry gossip timers: lan (push every 200 ms to 3 peers, anti-entropy every 5 s), "
        "test (anti-entropy every 1 s, short tombstone grace; tests only)")
    ae_interval_s: float | None = Field(
        None, gt=0, le=3600, description="override the anti-entropy period; lower = faster catch-up after "
        "an absence, more digest traffic")


class MetricsSettings(_Section):
    interval_s: float = Field(5.0, ge=0.2, le=3600, description="seconds between samples; each sample is also "
                              "gossiped as this node's summary, so lower = fresher views, more traffic")
    retention_points: int = Field(720, ge=1, le=100_000, description="samples kept per metric in memory "
                                  "(720 x 5 s = 1 hour)")
    publish_interval_s: float = Field(15.0, ge=0.2, le=3600, description="least seconds between this node's "
                                      "summaries in the replicated metrics table, published when a capacity "
                                      "figure (memory, disk, GPU memory) moved by 10% or more; lower = fresher "
                                      "remote views, more gossip (each summary is ~1 KB)")
    refresh_interval_s: float = Field(300.0, ge=0.2, le=3600, description="most seconds between summaries "
                                      "even when nothing moved: remote views of loads, counters and ts are up "
                                      "to this old (every summary is gossiped to every node: ~80 signed "
                                      "pushes at 10 nodes, ~1,200 at 100)")


class AssetsSettings(_Section):
    chunk_bytes: int = Field(4 << 20, ge=4096, le=16 << 20, description="chunk size of newly pushed assets; "
                             "bigger = fewer requests and hashes per byte, more memory per in-flight request")
    window_per_holder: int = Field(4, ge=1, le=64, description="chunk requests in flight per holder; more hides "
                                   "more round trips, costs window x chunk_bytes of memory per holder")
    chunk_timeout_s: float = Field(15.0, gt=0, le=600, description="deadline of one chunk request; a slower "
                                   "holder is backed off and its chunk asked of another")
    max_chunk_attempts: int = Field(8, ge=1, le=100, description="corrupt answers tolerated per chunk")
    holder_max_failures: int = Field(3, ge=1, le=100, description="failed periods before a holder is dropped "
                                     "from a fetch (back-off doubles from retry_backoff_s each time)")
    retry_backoff_s: float = Field(0.25, gt=0, le=60, description="first back-off after a holder fails")


class Settings(_Section):
    node: NodeSettings = NodeSettings()
    log: LogSettings = LogSettings()
    api: ApiSettings = ApiSettings()
    p2p: P2PSettings = P2PSettings()
    discovery: DiscoverySettings = DiscoverySettings()
    runtime: RuntimeSettings = RuntimeSettings()
    membership: MembershipSettings = MembershipSettings()
    raft: RaftSettings = RaftSettings()
    replication: ReplicationSettings = ReplicationSettings()
    metrics: MetricsSettings = MetricsSettings()
    assets: AssetsSettings = AssetsSettings()

    @property
    def data_dir(self) -> Path:
        return self.node.data_dir or default_data_dir()

    @property
    def socket_path(self) -> Path:
        return self.api.socket or default_socket_path(self.data_dir)


_SECTIONS: dict[str, type[_Section]] = {
    name: field.annotation  # type: ignore[misc]  # every field of Settings is a _Section subclass
    for name, field in Settings.model_fields.items()
}


def default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/aiosd")
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "aiosd"


def default_socket_path(data_dir: Path) -> Path:
    if os.geteuid() == 0:
        return Path("/run/aiosd/aiosd.sock")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "aiosd.sock" if runtime else data_dir / "aiosd.sock"


def load_settings(
    config: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Build the settings: file, then environment, then flags (`{"node": {"data_dir": ...}}`).

    Raises: ConfigError naming the key and its source.
    """
    env = os.environ if env is None else env
    merged: dict[str, dict[str, Any]] = {}
    source: dict[tuple[str, str], str] = {}

    path = config or (Path(env["AIOSD_CONFIG"]) if env.get("AIOSD_CONFIG") else None)
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    if path is not None:
        _merge(merged, source, _read_toml(path), str(path))
    _merge(merged, source, _from_env(env), "the environment")
    if flags:
        _merge(merged, source, {k: {f: v for f, v in sec.items() if v is not None} for k, sec in flags.items()},
               "the command line")
    try:
        return Settings.model_validate(merged)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc)
        where = source.get((loc[0], loc[1]), "the defaults") if len(loc) >= 2 else "the configuration"
        raise ConfigError(f"bad value for {key} in {where}: {err['msg']}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except PermissionError:
        raise ConfigError(f"config file {path} is not readable (permission denied)") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    for name, value in data.items():
        if name not in _SECTIONS:
            raise ConfigError(f"unknown key {name!r} in {path}; known sections: {', '.join(_SECTIONS)}")
        if not isinstance(value, dict):
            raise ConfigError(f"{name} in {path} must be a table like [{name}]")
        fields = _SECTIONS[name].model_fields
        for key in value:
            if key not in fields:
                raise ConfigError(f"unknown key {name}.{key} in {path}; known: {', '.join(fields)}")
    return data


def _from_env(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name.startswith(_NOT_SETTINGS):
            continue
        if name in _SHORTCUTS:
            section, key = _SHORTCUTS[name]
        else:
            rest = name[len(ENV_PREFIX):].lower()
            section = next((s for s in _SECTIONS if rest.startswith(s + "_")), "")
            key = rest[len(section) + 1:]
            if not section or key not in _SECTIONS[section].model_fields:
                raise ConfigError(f"unknown setting {name} in the environment (expected AIOSD_<SECTION>_<FIELD>)")
        field = _SECTIONS[section].model_fields[key]
        value: Any = raw
        if "list" in str(field.annotation):
            value = [item.strip() for item in raw.split(",") if item.strip()]
        out.setdefault(section, {})[key] = value
    return out


def _merge(
    into: dict[str, dict[str, Any]], source: dict[tuple[str, str], str], layer: Mapping[str, Any], where: str
) -> None:
    for section, values in layer.items():
        for key, value in values.items():
            into.setdefault(section, {})[key] = value
            source[(section, key)] = where


def render_toml(settings: Settings) -> str:
    """The effective settings as TOML text (for `aiosd config show`)."""
    lines: list[str] = []
    for name in _SECTIONS:
        lines.append(f"[{name}]")
        for key, value in getattr(settings, name).model_dump(mode="json").items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


__all__ = [
    "ApiSettings",
    "DiscoverySettings",
    "LogSettings",
    "MembershipSettings",
    "NodeSettings",
    "P2PSettings",
    "RaftSettings",
    "RuntimeSettings",
    "Settings",
    "default_data_dir",
    "default_socket_path",
    "load_settings",
    "render_toml",
]
