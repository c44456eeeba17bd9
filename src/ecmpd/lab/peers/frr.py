"""FRR (Debian's 8.4: zebra, bgpd, bfdd) as a router of the lab, one instance per namespace.

No systemd, no watchfrr, no pathspace under /etc or /var/run: each daemon runs in the
foreground inside the namespace with its pid file, vty socket and zserv socket in a
private directory made with tempfile under the system temp dir (the daemons drop to the
`frr` user, which must reach the directory: a test's tmp_path is root's alone), and
reads the same integrated frr.conf (each ignores the other daemons' lines, which it logs
as unknown), then the file is pushed through vtysh as at boot. `vtysh --vty_socket DIR`
talks to exactly this instance. Stopped by the
context manager (SIGTERM, then SIGKILL) and the directory removed; `kill()` is an edge
dying (SIGKILL: zebra leaves its routes in the kernel, as a crashed router would).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ecmpd.lab.peers.process import PeerError, PeerProcess
from ecmpd.lab.running import Running

FRR_DIR = Path("/usr/lib/frr")
DAEMONS = ("zebra", "bgpd", "bfdd")
FRR_USER, VTY_GROUP = "frr", "frrvty"
START_TIMEOUT = 10.0
# zebra's netlink receive buffer: the Debian unit's value (a burst must not overflow it).
NL_BUFSIZE = "90000000"


def frr_available() -> str | None:
    """None when FRR can run here, else why not (for a test's skip)."""
    missing = [d for d in DAEMONS if not (FRR_DIR / d).exists()]
    if missing or shutil.which("vtysh") is None:
        return f"FRR is not installed ({', '.join(missing) or 'vtysh'} missing): ./dev installs it"
    try:
        pwd.getpwnam(FRR_USER)
        grp.getgrnam(VTY_GROUP)
    except KeyError as err:
        return f"FRR's user or group is missing: {err}"
    return None


class FrrRouter(Running):
    """zebra, bgpd and bfdd in namespace `ns`, configured with `config` (frr.conf text)."""

    def __init__(self, ns: str, config: str, name: str, daemons: Sequence[str] = DAEMONS) -> None:
        self.ns, self.name, self.daemons = ns, name, tuple(daemons)
        self.dir = Path(tempfile.mkdtemp(prefix=f"ecmpd-frr-{name}-"))
        user, group = pwd.getpwnam(FRR_USER), grp.getgrnam(VTY_GROUP)
        os.chown(self.dir, user.pw_uid, group.gr_gid)
        self.dir.chmod(0o750)
        self.config_path = self.dir / "frr.conf"
        self.config_path.write_text(config)
        self.config_path.chmod(0o644)
        (self.dir / "vtysh.conf").write_text("service integrated-vtysh-config\n")
        self.refused: list[str] = []  # config lines vtysh reported as refused
        self.processes: dict[str, PeerProcess] = {}

    def argv(self, daemon: str) -> list[str]:
        """One daemon's command line: foreground, private sockets, no TCP vty."""
        argv = [
            str(FRR_DIR / daemon),
            "-P", "0",
            "--vty_socket", str(self.dir),
            "-z", str(self.dir / "zserv.api"),
            "-i", str(self.dir / f"{daemon}.pid"),
            "-f", str(self.config_path),
            "--log", f"file:{self.dir / daemon}.log",
        ]  # fmt: skip
        if daemon == "zebra":
            argv += ["-s", NL_BUFSIZE]
        if daemon == "bfdd":
            argv += ["--bfdctl", str(self.dir / "bfdd.sock")]
        return argv

    def start(self) -> None:
        """Starts the daemons, zebra first; each ready once its vty socket answers."""
        try:
            for daemon in self.daemons:
                proc = PeerProcess(self.ns, self.argv(daemon), self.dir / f"{daemon}.out", daemon)
                self.processes[daemon] = proc
                proc.start()
                socket = self.dir / f"{daemon}.vty"
                proc.wait_until(socket.exists, START_TIMEOUT, f"{daemon} vty socket")
            self.refused = self.push_config()
        except BaseException:
            self.stop()
            raise

    def vtysh(self, *commands: str, check: bool = True) -> str:
        """Runs vtysh commands against this instance (unix sockets: no namespace needed)."""
        argv = ["vtysh", "--vty_socket", str(self.dir)]
        for command in commands:
            argv += ["-c", command]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if check and out.returncode != 0:
            raise PeerError(f"vtysh {commands}: {out.stderr or out.stdout}")
        return out.stdout

    def json(self, command: str) -> Any:
        """A `show ... json` command's answer, parsed."""
        return json.loads(self.vtysh(command) or "{}")

    def running_config(self) -> str:
        """`show running-config` of every daemon."""
        return self.vtysh("show running-config")

    def push_config(self) -> list[str]:
        """Applies frr.conf through vtysh (as `vtysh -b` at boot); the lines refused.

        The daemons read the file at start, but bfdd 8.4 refuses its own `bfd` node from
        it: the integrated push is what applies everything (zebra's own lines, read at
        its start, are in force from the first moment).
        """
        out = subprocess.run(
            ["vtysh", "--vty_socket", str(self.dir), "--config_dir", str(self.dir), "-b"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return [line for line in (out.stdout + out.stderr).splitlines() if "% " in line]

    def kill(self, daemons: Sequence[str] | None = None) -> None:
        """SIGKILL (an edge dying): zebra's routes stay in the kernel, as after a crash."""
        for daemon in daemons or self.daemons:
            proc = self.processes.get(daemon)
            if proc is not None and proc.running():
                proc.stop(signal.SIGKILL)

    def stop(self) -> None:
        """Stops every daemon (bfdd and bgpd before zebra) and removes the directory."""
        for daemon in reversed(list(self.processes)):
            self.processes[daemon].stop()
        self.processes.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, daemon: str = "zebra", chars: int = 3000) -> str:
        """The end of one daemon's log, for error messages."""
        log = self.dir / f"{daemon}.log"
        return log.read_text(errors="replace")[-chars:] if log.exists() else ""
