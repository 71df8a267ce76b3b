"""One SSH connection to one host (paramiko), and the one place remote commands run.

Host keys are checked strictly: an unknown key or a changed one is refused, naming the
fingerprint offered. Every command is a shell script sent on the channel's standard input
to `sh -c 'eval "$(cat)"'`, so neither it nor the secret variables it exports appear in any
command line. The script takes the host's deploy lock (flock: a killed run's commands end
before the next run's start), runs the command under `timeout`, and only the tail of its
output is kept.

    session = SshSession(SshAccess(settings, auth), "10.0.0.5", 22)
    result = session.run("git checkout v2", label="deploy step 1")
"""

from __future__ import annotations

import shlex
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from paramiko.hostkeys import HostKeyEntry

from blocks.errors import ConfigError, SlipwayError
from blocks.rollout_ssh import SshTargetSettings, split_host
from blocks.text import one_line

# `timeout`'s status when it killed the command; 75 (EX_TEMPFAIL) when the lock was busy.
TIMED_OUT, LOCK_BUSY = 124, 75
_REMOTE = "sh -c 'eval \"$(cat)\"'"


class HostUnreachable(SlipwayError):
    """The host does not answer SSH, or refused the login."""


class HostKeyRefused(SlipwayError):
    """The host's key is not the one known_hosts holds for it."""


class CommandFailed(SlipwayError):
    """A remote command exited non-zero or timed out; carries its result."""

    def __init__(self, message: str, result: CommandResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class CommandResult:
    label: str
    status: int
    output: str  # the tail, stdout and stderr together
    seconds: float

    def last_line(self) -> str:
        """The end of the output: its last two lines (a tool's error and its hint)."""
        lines = [line.strip() for line in self.output.splitlines() if line.strip()]
        return one_line(" / ".join(lines[-2:]), 300) if lines else "no output"


@dataclass
class SshAuth:
    """How to log in, shared by every host of a target: keys, agent, known host keys."""

    pkey: paramiko.PKey | None = None
    secret_env: dict[str, str] = field(default_factory=dict)
    host_keys: paramiko.HostKeys = field(default_factory=paramiko.HostKeys)

    @classmethod
    def load_known_hosts(cls, value: str) -> paramiko.HostKeys:
        """known_hosts lines, or the path of a file holding them."""
        text = value
        if "\n" not in value.strip() and not value.strip().startswith(("|", "[")):
            first = value.strip().split(" ", 1)[0]
            if " " not in value.strip() or first.startswith(("/", "~", ".")):
                path = Path(value.strip()).expanduser()
                try:
                    text = path.read_text()
                except OSError as exc:
                    raise ConfigError(
                        f"known_hosts file {path} cannot be read ({exc.strerror}): give its "
                        "path or its lines (ssh-keyscan HOST prints them)"
                    ) from exc
        keys = paramiko.HostKeys()
        for line in text.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                entry = HostKeyEntry.from_line(line)
            except (paramiko.SSHException, ValueError):
                entry = None
            if entry is None or entry.key is None:
                raise ConfigError(f"known_hosts line is not a host key: {one_line(line, 60)!r}")
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)
        return keys


def _known_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise HostKeyRefused(
            f"host key of {hostname} is unknown (it offered {key.get_name()} {key.fingerprint}): "
            "check that fingerprint on the host (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), "
            "then add `ssh-keyscan` of it to known_hosts"
        )


class SshSession:
    """A lazily opened, thread-safe SSH connection to one host, reopened when it dropped."""

    def __init__(self, settings: SshTargetSettings, auth: SshAuth, address: str, port: int):
        self.settings = settings
        self.auth = auth
        self.address = address
        self.port = port
        self._client: paramiko.SSHClient | None = None
        self._jump: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.address if self.port == 22 else f"{self.address}:{self.port}"

    def close(self) -> None:
        with self._lock:
            for client in (self._client, self._jump):
                if client is not None:
                    client.close()
            self._client = self._jump = None

    def _connected(self) -> paramiko.SSHClient:
        with self._lock:
            transport = self._client.get_transport() if self._client else None
            if self._client is None or transport is None or not transport.is_active():
                sock = None
                if self.settings.jump_host:
                    address, port, user = self._jump_target()
                    self._jump = self._open(address, port, None, user)
                    sock = self._tunnel(self._jump)
                self._client = self._open(self.address, self.port, sock)
            return self._client

    def _jump_target(self) -> tuple[str, int, str]:
        jump = self.settings.jump_host or ""
        user, _, host = jump.rpartition("@")
        address, port = split_host(host, 22)
        return address, port, user or self.settings.user

    def _tunnel(self, jump: paramiko.SSHClient) -> paramiko.Channel:
        transport = jump.get_transport()
        assert transport is not None
        try:
            return transport.open_channel(
                "direct-tcpip",
                (self.address, self.port),
                ("127.0.0.1", 0),
                timeout=self.settings.connect_timeout_seconds,
            )
        except (paramiko.SSHException, OSError) as exc:
            raise HostUnreachable(
                f"jump host {self.settings.jump_host} cannot reach {self.name} "
                f"({one_line(str(exc), 100)}): check the address, or that the jump host allows "
                "TCP forwarding"
            ) from exc

    def _open(
        self, address: str, port: int, sock: paramiko.Channel | None, user: str | None = None
    ) -> paramiko.SSHClient:
        settings = self.settings
        user = user or settings.user
        where = f"{address}:{port}"
        client = paramiko.SSHClient()
        known = client.get_host_keys()
        for name in self.auth.host_keys:
            for key in self.auth.host_keys[name].values():
                known.add(name, key.get_name(), key)
        client.set_missing_host_key_policy(_RefuseUnknown())
        timeout = settings.connect_timeout_seconds
        try:
            client.connect(
                address,
                port,
                username=user,
                pkey=self.auth.pkey,
                key_filename=str(Path(settings.identity_file).expanduser())
                if settings.identity_file
                else None,
                allow_agent=settings.use_agent,
                look_for_keys=self.auth.pkey is None and not settings.identity_file,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                sock=sock,
            )
        except HostKeyRefused:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyRefused(
                f"host key of {where} CHANGED: it offered {exc.key.get_name()} "
                f"{exc.key.fingerprint}, known_hosts has {exc.expected_key.fingerprint}: the "
                "host was reinstalled, or someone is in between; check, then fix known_hosts"
            ) from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            raise HostUnreachable(
                f"{user}@{where} refused every key offered: add the public key to "
                f"~{user}/.ssh/authorized_keys there, or fix credentials_block / identity_file"
            ) from exc
        except TimeoutError as exc:
            client.close()
            raise HostUnreachable(
                f"cannot reach {where} over SSH: no answer within {timeout:g} s: check the "
                "address and firewall, or raise connect_timeout_seconds"
            ) from exc
        except (paramiko.SSHException, OSError) as exc:
            client.close()
            if "No authentication methods available" in str(exc):
                raise HostUnreachable(
                    f"no key to log in to {user}@{where} with: set the target's "
                    "credentials_block or identity_file, or add a key to the SSH agent"
                ) from exc
            raise HostUnreachable(
                f"cannot reach {where} over SSH ({one_line(str(exc), 120)}): check the "
                "address and that sshd runs there"
            ) from exc
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
        return client

    def check(self) -> None:
        """Connect (host key checked, login accepted), else raise a one-line error."""
        self._connected()

    def script(self, command: str, timeout: float) -> str:
        """The whole script sent for `command`: home, lock, variables, working directory."""
        s = self.settings
        lock = shlex.quote(s.lock_file)
        seconds = max(1, round(timeout))
        lines = [
            'cd "$HOME" || exit 70',
            f"exec 9>>{lock} || exit 70",
            f"flock -w {seconds} 9 || {{ echo 'another Slipway run holds the lock "
            f"~/{s.lock_file} on this host'; exit {LOCK_BUSY}; }}",
        ]
        variables = {**s.environment, **self.auth.secret_env}
        lines += [f"export {k}={shlex.quote(v)}" for k, v in variables.items()]
        if s.working_directory:
            lines.append(f"cd -- {shlex.quote(s.working_directory)} || exit 70")
        # This shell holds the lock until the command ends; fd 9 is closed for the command,
        # so what it starts (a daemon, say) does not hold the lock on.
        lines.append(f"timeout -k 5 {seconds} sh -c {shlex.quote(command)} 9>&-")
        lines.append("exit $?")
        return "\n".join(lines) + "\n"

    def run(
        self,
        command: str,
        *,
        label: str,
        timeout: float | None = None,
        check: bool = True,
        lines: int | None = None,
    ) -> CommandResult:
        """Run `command` on the host; raise `CommandFailed` on non-zero unless `check` is off.

        The output kept is its last `lines` lines (default: the `output_lines` setting)."""
        limit = timeout or self.settings.command_timeout_seconds
        started = time.monotonic()
        client = self._connected()
        transport = client.get_transport()
        assert transport is not None
        try:
            channel = transport.open_session(timeout=self.settings.connect_timeout_seconds)
        except (paramiko.SSHException, OSError) as exc:
            raise HostUnreachable(
                f"{self.name} stopped answering ({one_line(str(exc), 100)})"
            ) from exc
        tail: deque[str] = deque(maxlen=lines or self.settings.output_lines)
        with channel:
            try:
                channel.set_combine_stderr(True)
                channel.settimeout(1.0)
                channel.exec_command(_REMOTE)
                channel.sendall(self.script(command, limit).encode())
                channel.shutdown_write()
                status = self._collect(channel, tail, started, limit + 10, label)
            except (paramiko.SSHException, OSError) as exc:
                self.close()
                raise HostUnreachable(
                    f"{self.name} dropped the connection during {label} ({one_line(str(exc), 100)})"
                ) from exc
        result = CommandResult(label, status, "\n".join(tail), time.monotonic() - started)
        if check and status != 0:
            raise CommandFailed(self.failure(result, limit), result)
        return result

    def _collect(
        self, channel: paramiko.Channel, tail: deque[str], started: float, wait: float, label: str
    ) -> int:
        """Read the output into `tail` until the command ends; its exit status."""
        deadline = started + wait
        pending = b""
        while True:
            try:
                data = channel.recv(65536)
            except TimeoutError:
                data = None
            if data:
                pending += data
                *lines, pending = pending.split(b"\n")
                tail.extend(line.decode(errors="replace").rstrip("\r") for line in lines)
            elif data == b"" and channel.exit_status_ready():
                break
            elif data == b"":
                transport = channel.get_transport()
                if transport is None or not transport.is_active():
                    self.close()
                    raise HostUnreachable(f"{self.name} dropped the connection during {label}")
                time.sleep(0.01)
            if time.monotonic() > deadline:
                self.close()  # the connection is not to be trusted any more
                raise HostUnreachable(
                    f"{self.name} stopped answering: {label} gave no result within {wait:g} s"
                )
        if pending:
            tail.append(pending.decode(errors="replace"))
        return channel.recv_exit_status()

    def failure(self, result: CommandResult, limit: float) -> str:
        if result.status == TIMED_OUT:
            return f"{result.label} timed out after {limit:g} s (command_timeout_seconds)"
        if result.status == LOCK_BUSY:
            return (
                f"{result.label}: another Slipway run still holds the host's lock after "
                f"{limit:g} s: let it finish, or find it with `fuser ~/{self.settings.lock_file}`"
            )
        if result.status == -1:
            return f"{result.label} ended without an exit status (killed by a signal?): {result.last_line()}"
        return f"{result.label} exited with {result.status}: {result.last_line()}"
