"""A throwaway sshd on 127.0.0.1 with its own host key and a client key for the current user."""

from __future__ import annotations

import getpass
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.harness.procs import ManagedProcess, ServiceUnavailable, free_port, is_root, wait_until

SSHD = Path("/usr/sbin/sshd")


@dataclass(frozen=True)
class SshInfo:
    host: str
    port: int
    user: str
    client_key: Path  # private key (ed25519, no passphrase)
    known_hosts: Path  # holds this server's host key, for strict checking


class SshServer:
    def __init__(self, session_dir: Path) -> None:
        self.session_dir = session_dir
        self.proc: ManagedProcess | None = None

    def start(self) -> SshInfo:
        if not SSHD.exists() or not shutil.which("ssh-keygen"):
            raise ServiceUnavailable("sshd not found: apt-get install openssh-server")
        root = self.session_dir / "sshd"
        root.mkdir()
        host_key, client_key = root / "host_ed25519", root / "client_ed25519"
        for key in (host_key, client_key):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
            )
        (root / "authorized_keys").write_text((root / "client_ed25519.pub").read_text())
        if is_root():
            Path("/run/sshd").mkdir(exist_ok=True)  # privilege-separation directory
        port = free_port()
        config = root / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    f"AuthorizedKeysFile {root / 'authorized_keys'}",
                    f"PidFile {root / 'sshd.pid'}",
                    "StrictModes no",
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "PubkeyAuthentication yes",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        self.proc = ManagedProcess(
            "sshd",
            [str(SSHD), "-D", "-e", "-f", str(config)],
            session_dir=self.session_dir,
            term_timeout=5,
        )
        host_pub = (root / "host_ed25519.pub").read_text().split()
        known = root / "known_hosts"
        known.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")

        def listening() -> bool:
            import socket

            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                return sock.recv(4).startswith(b"SSH-")

        wait_until(listening, timeout=20, what="sshd", proc=self.proc)
        return SshInfo(
            "127.0.0.1", port, getpass.getuser() if not is_root() else "root", client_key, known
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
