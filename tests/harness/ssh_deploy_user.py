"""A non-root login, `slipway-deploy`, that exists only for the test hosts' sshd.

The machine's /etc is left alone: each host's sshd runs in a private mount namespace (which
`ip netns exec` gives it) where copies of /etc/passwd and /etc/group with the user added, a
shadow file of password-less entries, and, when sudo is installed, an /etc/sudoers letting
the user run the host's stand-in systemctl (`<root>/bin/systemctl`) as root with `sudo -n`
(nothing else) are bound over the originals. Whatever the sessions start inherits that view.
"""

from __future__ import annotations

import os
import pwd
import shlex
from collections.abc import Sequence
from pathlib import Path

USER = "slipway-deploy"
SUDO = Path("/usr/bin/sudo")
SUDOERS = Path("/etc/sudoers")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ACCOUNT_FILES = ("passwd", "group")


def sudo_available() -> bool:
    return SUDO.exists() and SUDOERS.exists()


def free_id(start: int = 64100) -> int:
    """A uid (and gid) no account or group of the machine uses."""
    groups = {line.split(":")[2] for line in Path("/etc/group").read_text().splitlines() if line}
    for candidate in range(start, 65000):
        try:
            pwd.getpwuid(candidate)
        except KeyError:
            if str(candidate) not in groups:
                return candidate
    raise RuntimeError("no free uid between 64100 and 65000")


def _sudoers(root: Path, timestamps: Path) -> str:
    systemctl = root / "bin" / "systemctl"
    return "\n".join(
        [
            "Defaults env_reset",
            # The stand-in systemctl first: `sudo -n systemctl` finds it as on a real host.
            f'Defaults secure_path="{root}/bin:{SYSTEM_PATH}"',
            f"Defaults timestampdir={timestamps}",  # not /run/sudo
            "Defaults lecture=never",
            "Defaults !syslog",
            "root ALL=(ALL:ALL) ALL",
            f"{USER} ALL=(root) NOPASSWD: {systemctl}",
            "",
        ]
    )


def account_files(etc: Path, root: Path, uid: int, *, sudo: bool) -> list[tuple[Path, Path]]:
    """Write the host's copies under `etc`; (copy, original) pairs to bind."""
    etc.mkdir(parents=True)
    entries = {
        "passwd": f"{USER}:x:{uid}:{uid}:Slipway deploy user:{root}:/bin/sh\n",
        "group": f"{USER}:x:{uid}:\n",
    }
    pairs = []
    for name in ACCOUNT_FILES:
        original = Path("/etc") / name
        copy = etc / name
        copy.write_text(original.read_text() + entries[name])
        copy.chmod(original.stat().st_mode & 0o777)
        os.chown(copy, 0, original.stat().st_gid)
        pairs.append((copy, original))
    # sshd and sudo's PAM account check want shadow entries: root's and the user's, with
    # no password ("*", not locked), none of the machine's password hashes copied.
    shadow = etc / "shadow"
    shadow.write_text("".join(f"{u}:*:19000:0:99999:7:::\n" for u in ("root", USER)))
    shadow.chmod(0o640)
    pairs.append((shadow, Path("/etc/shadow")))
    if sudo:
        timestamps = etc / "sudo-ts"
        timestamps.mkdir(mode=0o700)
        copy = etc / "sudoers"
        copy.write_text(_sudoers(root, timestamps))
        copy.chmod(0o440)
        pairs.append((copy, SUDOERS))
    return pairs


def bind_then_exec(pairs: Sequence[tuple[Path, Path]], argv: Sequence[str]) -> list[str]:
    """A `sh -c` command binding each copy over its original, then exec'ing `argv`."""
    binds = [f"mount --bind {shlex.quote(str(a))} {shlex.quote(str(b))}" for a, b in pairs]
    return ["sh", "-c", " && ".join([*binds, f"exec {shlex.join(argv)}"])]
