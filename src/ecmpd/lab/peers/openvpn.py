"""OpenVPN as a point-to-point `tun` uplink: a server in an ISP, a client in the router.

Authentication by pinned certificate fingerprints (`--peer-fingerprint`, OpenVPN 2.6):
each end has a self-signed EC certificate made per run with the openssl command, and
accepts only the other's. No static key: static-key mode is deprecated in 2.6 (its
ciphers have no forward secrecy, newer releases refuse it without
--allow-deprecated-insecure-static-crypto), and a CA-signed PKI would only add steps.
The tunnel runs in peer-to-peer mode (no --server/--client pools): `--ifconfig` gives
each end its address, as a VPN provider's point-to-point line would.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from ecmpd.lab import netns
from ecmpd.lab.peers.process import Peer, PeerError

OPENVPN, OPENSSL = "openvpn", "openssl"
PORT = 1194
INIT_DONE = "Initialization Sequence Completed"


@dataclass(frozen=True)
class Identity:
    """One end's certificate and key, and the certificate's SHA-256 fingerprint."""

    cert: Path
    key: Path
    fingerprint: str


def make_identity(directory: Path, name: str) -> Identity:
    """A fresh self-signed P-256 certificate (valid two days) and its key."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}"],
        check=True, capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    out = subprocess.run(
        [OPENSSL, "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    # "sha256 Fingerprint=AB:CD:..." (the prefix's case varies between releases)
    return Identity(cert, key, out.strip().partition("=")[2])


@dataclass(frozen=True)
class TunnelPlan:
    """The tunnel's addresses: the outer ones it runs between, the inner point-to-point pair."""

    server_outer: IPv4Address  # where the server listens (the ISP's side)
    server_inner: IPv4Address
    client_inner: IPv4Address
    device: str = "tun0"
    port: int = PORT


class _OpenVpn(Peer):
    """Common options of both ends."""

    role = ""

    def __init__(
        self, ns: str, plan: TunnelPlan, me: Identity, peer: Identity, workdir: Path
    ) -> None:
        super().__init__(ns, workdir, f"openvpn-{self.role}-{plan.device}")
        self.plan, self.me, self.peer = plan, me, peer
        self._log_start = 0  # where this run's lines begin in the (appended) log

    def common(self, local: IPv4Address, remote: IPv4Address) -> list[str]:
        return [
            OPENVPN,
            "--dev", self.plan.device, "--dev-type", "tun",
            "--proto", "udp",
            "--ifconfig", str(local), str(remote),
            "--cert", str(self.me.cert), "--key", str(self.me.key),
            "--peer-fingerprint", self.peer.fingerprint,
            # A peer silent for 3 s is gone: the tunnel restarts (the client retries).
            "--ping", "1", "--ping-restart", "3",
            "--verb", "3",
            "--writepid", str(self.dir / "openvpn.pid"),
        ]  # fmt: skip

    def established(self) -> bool:
        """Whether this end has completed the handshake (since it last started)."""
        return INIT_DONE in self.log_tail_since_start()

    def log_tail_since_start(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[self._log_start :]

    def start(self) -> None:
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        super().start()


class TunnelServer(_OpenVpn):
    """The ISP's end: listens on the outer address."""

    role = "server"

    def argv(self) -> list[str]:
        p = self.plan
        return [*self.common(p.server_inner, p.client_inner),
                "--tls-server", "--dh", "none", "--float",
                "--local", str(p.server_outer), "--lport", str(p.port)]  # fmt: skip

    def ready(self) -> bool:
        return "link local (bound)" in self.log_tail_since_start()


class TunnelClient(_OpenVpn):
    """The router's end: connects to the server's outer address.

    `persist_tun`: keep the device when the tunnel restarts (the server went silent),
    as a VPN client set up to hold its routes does; the device is removed when the
    client exits unless it was made persistent beforehand (make_persistent_tun).
    """

    role = "client"

    def __init__(
        self,
        ns: str,
        plan: TunnelPlan,
        me: Identity,
        peer: Identity,
        workdir: Path,
        persist_tun: bool = False,
    ) -> None:
        super().__init__(ns, plan, me, peer, workdir)
        self.persist_tun = persist_tun

    def argv(self) -> list[str]:
        p = self.plan
        extra = ["--persist-tun"] if self.persist_tun else []
        # A fixed local port: a restarted client comes from the address and port the
        # server knows (a peer-to-peer server answers only those, until --float moves it).
        return [*self.common(p.client_inner, p.server_inner),
                "--tls-client", "--lport", str(p.port),
                "--remote", str(p.server_outer), str(p.port), *extra]  # fmt: skip


def make_persistent_tun(ns: str, device: str) -> None:
    """Create a persistent tun device (it stays, without carrier, while no client holds it)."""
    done = netns.run_in(
        ns, [OPENVPN, "--mktun", "--dev", device, "--dev-type", "tun"], capture_output=True
    )
    if done.returncode != 0:
        raise PeerError(f"openvpn --mktun {device}: {done.stdout!r} {done.stderr!r}")


def remove_persistent_tun(ns: str, device: str) -> None:
    """Remove a persistent tun device."""
    done = netns.run_in(
        ns, [OPENVPN, "--rmtun", "--dev", device, "--dev-type", "tun"], capture_output=True
    )
    if done.returncode != 0:
        raise PeerError(f"openvpn --rmtun {device}: {done.stdout!r} {done.stderr!r}")
