"""dhcpcd as the router's DHCP client on one uplink interface, IPv4 only.

dhcpcd keeps its lease database and control sockets at paths fixed at build time
(/var/lib/dhcpcd, /run/dhcpcd): the peer runs it in a mount namespace of its own with
private directories bound over /var/lib/dhcpcd and /run (see mounts), so neither the
host's leases nor another lab's are read or written. Its hook script is /bin/true:
nothing outside the namespace (resolv.conf, NTP) is touched. It installs the lease's
address and a default route in main (`proto dhcp`), which `gateway: dhcp` follows.
Signals drive it as dhcpcd's own `-n`/`-k` would: SIGUSR1 renews, SIGHUP rebinds,
SIGALRM releases the lease and exits.
"""

from __future__ import annotations

import signal
from pathlib import Path

from ecmpd.lab.peers.mounts import launch_argv
from ecmpd.lab.peers.process import Peer

DHCPCD = "dhcpcd"
DBDIR, RUNDIR = Path("/var/lib/dhcpcd"), Path("/run")
# ipv4only: the lab's IPv6 comes from static addresses or radvd, never DHCPv6.
# nodelay: no random wait of up to 2 s before the first DISCOVER. noarp: no ARP
# probe of the offered address (a second more; the lab's pools have no conflicts).
# noipv4ll: no 169.254/16 fallback while waiting.
CONFIG = """\
script /bin/true
ipv4only
nodelay
noarp
noipv4ll
option routers
"""


class DhcpClient(Peer):
    """dhcpcd on `interface` of namespace `ns`, in the foreground."""

    start_timeout = 10.0

    def __init__(self, ns: str, interface: str, workdir: Path, metric: int | None = None) -> None:
        super().__init__(ns, workdir, f"dhcpcd-{interface}")
        self.interface, self.metric = interface, metric
        self.db_dir, self.run_dir = self.dir / "db", self.dir / "run"
        self.db_dir.mkdir()
        (self.run_dir / "dhcpcd").mkdir(parents=True)
        self.config = self.dir / "dhcpcd.conf"
        self.config.write_text(CONFIG)

    def argv(self) -> list[str]:
        program = [DHCPCD, "--nobackground", "--debug", "--config", str(self.config)]
        if self.metric is not None:
            program += ["--metric", str(self.metric)]
        binds = [(self.db_dir, DBDIR), (self.run_dir, RUNDIR)]
        return launch_argv(binds, [*program, self.interface])

    def renew(self) -> None:
        """Renew the lease now (a unicast REQUEST to the server), as at T1."""
        self.send(signal.SIGUSR1)

    def rebind(self) -> None:
        """Rebind now (a broadcast REQUEST to any server), as at T2 or after a link change."""
        self.send(signal.SIGHUP)

    def release(self, timeout: float = 5.0) -> None:
        """Release the lease (the address and the default route go) and exit."""
        self.send(signal.SIGALRM)
        assert self.process is not None
        self.process.wait_exit(timeout)
