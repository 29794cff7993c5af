"""The node's identity on disk: keys, certificate and network record under <data_dir>/identity.

`init_network` makes a new single-node network (CA key + node key + certificate);
`load_identity` reads it back. Key handling itself lives in federation.identity/certs.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from aiosd.errors import AiosdError, AlreadyInitialisedError, NotInitialisedError
from federation.certs import NodeCert, issue_cert
from federation.errors import AuthError
from federation.identity import CaKey, NodeKey

NODE_KEY = "node.key"
CA_KEY = "ca.key"
NODE_CERT = "node.cert"
NETWORK = "network.json"
# A node certificate lives 30 days and renews itself at 2/3 of that (federation.certs.needs_renewal).
NODE_CERT_TTL_S = 30 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Network:
    network_id: str
    ca_public: bytes
    ca_fingerprint: str

    def to_json(self) -> str:
        return json.dumps({"network_id": self.network_id, "ca_public": self.ca_public.hex(),
                           "ca_fingerprint": self.ca_fingerprint}, indent=2) + "\n"

    @staticmethod
    def from_json(text: str, where: Path) -> Network:
        try:
            d = json.loads(text)
            return Network(str(d["network_id"]), bytes.fromhex(d["ca_public"]), str(d["ca_fingerprint"]))
        except (ValueError, KeyError, TypeError) as e:
            raise AiosdError(f"{where} is damaged ({e}); re-run `aiosd init --force` or restore it") from None


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    key: NodeKey
    cert: NodeCert
    network: Network
    ca: CaKey | None  # present on nodes that hold the network CA (the first node)

    @property
    def node_id(self) -> str:
        return str(self.key.node_id)


def identity_dir(data_dir: Path) -> Path:
    return data_dir / "identity"


def is_initialised(data_dir: Path) -> bool:
    d = identity_dir(data_dir)
    return (d / NODE_KEY).exists() and (d / NODE_CERT).exists() and (d / NETWORK).exists()


def init_network(data_dir: Path, *, cluster: str, force: bool = False, now: float | None = None) -> NodeIdentity:
    """Create a new network with this node as its first member and CA holder.

    Raises: AlreadyInitialisedError (without `force`), AiosdError on permission problems.
    """
    now = time.time() if now is None else now
    if is_initialised(data_dir) and not force:
        raise AlreadyInitialisedError(
            f"{data_dir} is already initialised (node {load_identity(data_dir).node_id}); "
            "use --force to replace its identity"
        )
    d = identity_dir(data_dir)
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    except PermissionError:
        raise AiosdError(f"cannot create {d}: permission denied (run as root or pick another --data-dir)") from None
    ca = CaKey.generate()
    key = NodeKey.generate()
    cert = issue_cert(ca, key.public_bytes, network_id=ca.network_id, cluster=cluster,
                      roles=("admin", "member"), ttl_s=NODE_CERT_TTL_S, now=now)
    network = Network(ca.network_id, ca.public_bytes, ca.fingerprint)
    ca.save(d / CA_KEY, force=True)
    key.save(d / NODE_KEY, force=True)
    write_cert(data_dir, cert)
    _atomic_write(d / NETWORK, network.to_json().encode(), 0o644)
    return NodeIdentity(key, cert, network, ca)


def write_cert(data_dir: Path, cert: NodeCert) -> None:
    _atomic_write(identity_dir(data_dir) / NODE_CERT, cert.to_bytes(), 0o644)


def load_identity(data_dir: Path) -> NodeIdentity:
    """Read the identity back. Raises: NotInitialisedError, AiosdError for damaged files."""
    d = identity_dir(data_dir)
    if not is_initialised(data_dir):
        raise NotInitialisedError(f"{data_dir} has no aiosd identity; run `aiosd init` or `aiosd join TOKEN`")
    key = NodeKey.load(d / NODE_KEY)
    try:
        cert = NodeCert.from_bytes((d / NODE_CERT).read_bytes())
    except (OSError, AuthError) as e:  # a damaged cert file is the user's to fix, with a clear sentence
        raise AiosdError(f"{d / NODE_CERT} is damaged or unreadable ({e}); restore it or re-join") from None
    network = Network.from_json((d / NETWORK).read_text(), d / NETWORK)
    ca = CaKey.load(d / CA_KEY) if (d / CA_KEY).exists() else None
    return NodeIdentity(key, cert, network, ca)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


__all__ = ["Network", "NodeIdentity", "identity_dir", "init_network", "is_initialised", "load_identity",
           "write_cert"]
