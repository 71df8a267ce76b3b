"""Several real SSH hosts: one sshd per network namespace, each with its own address and HOME.

Host i runs `/usr/sbin/sshd` in namespace `slw<pid>-h<i>-n<N>` on 10.200.N.2:22, with its
own ed25519 host key; one client key logs in on every host as root or as the non-root
`slipway-deploy` (tests/harness/ssh_deploy_user.py). Its HOME (and PATH's first entry,
`<root>/bin`) is `<session>/ssh-hosts/host<i>/`. `cut(host)` makes a host stop
answering like a dead machine (packets dropped: open connections hang, new ones time
out) and `heal(host)` brings it back. A guard process removes the namespaces (and all that
runs in them) if pytest dies without stopping the harness; a later session also reaps them.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.harness import netns, ssh_deploy_user
from tests.harness.procs import ManagedProcess, ServiceUnavailable, is_root, wait_until

SSHD = Path("/usr/sbin/sshd")
DEFAULT_HOSTS = 3


@dataclass(frozen=True)
class SshHost:
    name: str  # host1, host2, ...
    address: str  # 10.200.N.2
    port: int
    root: Path  # its HOME: the stand-in app lives here
    netns: str
    host_public_key: str  # "ssh-ed25519 AAAA..."
    link: str  # the root side of its veth pair


@dataclass(frozen=True)
class SshHostsInfo:
    hosts: list[SshHost]
    user: str
    client_key: Path  # private key (ed25519, no passphrase), accepted by every host
    client_public_key: str
    known_hosts: str  # content: one line per host
    # A non-root login on every host (same key, same HOME); `sudo -n systemctl` works for
    # it when `sudo` is true (Debian's sudo package installed), else it has no sudo.
    deploy_user: str = ssh_deploy_user.USER
    sudo: bool = False

    def host(self, name: str) -> SshHost:
        for host in self.hosts:
            if name in (host.name, host.address):
                return host
        raise KeyError(name)

    def _host(self, host: SshHost | str) -> SshHost:
        return self.host(host) if isinstance(host, str) else host

    def run_on(
        self, host: SshHost | str, *argv: str, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run a process inside the host's namespace (as root, not through SSH)."""
        return netns.in_ns(self._host(host).netns, argv, timeout=timeout)

    def cut(self, host: SshHost | str) -> None:
        """The host stops answering: its packets are dropped, nothing is reset."""
        h = self._host(host)
        mac = self.run_on(h, "cat", "/sys/class/net/eth0/address").stdout.strip()
        # A permanent neighbour entry: new connections time out (as with a routed host)
        # instead of failing at once on the missing ARP answer.
        netns.ip("neigh", "replace", h.address, "lladdr", mac, "dev", h.link, "nud", "permanent")
        netns.in_ns(h.netns, ["ip", "link", "set", "eth0", "down"], check=True)

    def heal(self, host: SshHost | str) -> None:
        """The host answers again; connections left open resume."""
        h = self._host(host)
        netns.in_ns(h.netns, ["ip", "link", "set", "eth0", "up"], check=True)
        netns.ip("neigh", "del", h.address, "dev", h.link, check=False)

    def heal_all(self) -> None:
        for host in self.hosts:
            self.heal(host)


def _keygen(path: Path, comment: str) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
    kind, key = path.with_suffix(".pub").read_text().split()[:2]
    return f"{kind} {key}"


def _sshd_config(ns: netns.Namespace, root: Path, host_key: Path, authorized: Path) -> str:
    return "\n".join(
        [
            f"ListenAddress {ns.address}:22",
            # A host seen from itself: a jump host's hop to 127.0.0.1:22 lands here.
            "ListenAddress 127.0.0.1:22",
            f"HostKey {host_key}",
            f"AuthorizedKeysFile {authorized}",
            "PidFile none",
            "StrictModes no",
            "UsePAM no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PrintMotd no",
            "PrintLastLog no",
            "MaxStartups 100",
            "MaxSessions 100",
            # sshd sets these after its own HOME and PATH; the working directory stays
            # the user's passwd home (/root): commands `cd "$HOME"` themselves.
            f"SetEnv HOME={root} PATH={root}/bin:/usr/local/bin:/usr/bin:/bin",
            "LogLevel VERBOSE",
            "",
        ]
    )


def _answers_ssh(address: str) -> bool:
    with socket.create_connection((address, 22), timeout=1) as sock:
        return sock.recv(4).startswith(b"SSH-")


class SshHosts:
    """The harness service: start() returns SshHostsInfo, stop() leaves nothing behind."""

    def __init__(self, session_dir: Path, count: int = DEFAULT_HOSTS) -> None:
        self.session_dir = session_dir
        self.count = count
        self.namespaces: list[netns.Namespace] = []
        self.procs: list[ManagedProcess] = []
        self.guard: ManagedProcess | None = None

    def start(self) -> SshHostsInfo:
        if not is_root():
            raise ServiceUnavailable("needs root (network namespaces): run the tests as root")
        missing = [tool for tool in ("ip", "ssh-keygen") if not shutil.which(tool)] + (
            [str(SSHD)] if not SSHD.exists() else []
        )
        if missing:
            raise ServiceUnavailable(
                f"{', '.join(missing)} not found: apt-get install iproute2 openssh-server"
            )
        netns.reap_stale()
        base = self.session_dir / "ssh-hosts"
        base.mkdir()
        client_key = base / "client_ed25519"
        client_public = _keygen(client_key, "slipway-tests")
        authorized = base / "authorized_keys"
        authorized.write_text(client_public + "\n")
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        uid, sudo = ssh_deploy_user.free_id(), ssh_deploy_user.sudo_available()
        owner = os.getpid()
        self.namespaces = netns.create(owner, self.count)
        self.guard = ManagedProcess(
            "ssh-hosts-guard",
            [sys.executable, "-I", netns.__file__, str(owner)]
            + [ns.name for ns in self.namespaces],
            session_dir=self.session_dir,
        )
        hosts = []
        for i, ns in enumerate(self.namespaces, start=1):
            name = f"host{i}"
            root = base / name
            (root / "bin").mkdir(parents=True)
            os.chown(root, uid, uid)  # the deploy user's HOME too
            accounts = ssh_deploy_user.account_files(base / "etc" / name, root, uid, sudo=sudo)
            keys = base / "keys" / name
            keys.mkdir(parents=True)
            host_public = _keygen(keys / "host_ed25519", name)
            config = keys / "sshd_config"
            config.write_text(_sshd_config(ns, root, keys / "host_ed25519", authorized))
            self.procs.append(
                ManagedProcess(
                    f"ssh-{name}",
                    [
                        *("ip", "netns", "exec", ns.name),
                        *ssh_deploy_user.bind_then_exec(
                            accounts, [str(SSHD), "-D", "-e", "-f", str(config)]
                        ),
                    ],
                    session_dir=self.session_dir,
                    term_timeout=5,
                )
            )
            hosts.append(SshHost(name, ns.address, 22, root, ns.name, host_public, ns.link))
        for host, proc in zip(hosts, self.procs, strict=True):
            wait_until(
                functools.partial(_answers_ssh, host.address),
                timeout=20,
                what=f"sshd {host.name}",
                proc=proc,
            )
        known = "".join(f"{h.address} {h.host_public_key}\n" for h in hosts)
        return SshHostsInfo(hosts, "root", client_key, client_public, known, sudo=sudo)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()
        for ns in self.namespaces:
            netns.remove(ns.name)
        if self.guard is not None:
            self.guard.stop()
