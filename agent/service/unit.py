"""The systemd unit that runs the service as root: its text, install, uninstall, state."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onlooker.agent.service.common import DEFAULT_SOCKET, ServiceError, need_root, write_atomic

UNIT_NAME = "onlooker.service"
UNIT_PATH = Path("/etc/systemd/system") / UNIT_NAME
SYSTEMD_RUNNING = Path("/run/systemd/system")  # present only while systemd is PID 1
# fanotify mount marks and open_by_handle_at; netlink and its receive buffer; reading
# other users' /proc/<pid>; writing and handing over the owner's store; git run as the
# project's owner (agent/probes/gitstate.py); signalling its agents.
CAPABILITIES = ("CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_DAC_READ_SEARCH", "CAP_DAC_OVERRIDE",
                "CAP_SYS_PTRACE", "CAP_CHOWN", "CAP_FOWNER", "CAP_SETUID", "CAP_SETGID",
                "CAP_KILL")


def _unit_quote(arg: str) -> str:
    """One ExecStart word: systemd's specifiers (%) and variables ($) escaped, quoted
    when it holds anything but plain path characters."""
    if any(ord(c) < 32 or c == "\x7f" for c in arg):
        # a newline would end ExecStart and begin a line of the unit's own choosing
        raise ServiceError(f"{arg!r} cannot be written into a systemd unit: it holds a "
                           "control character")
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and all(c.isalnum() or c in "/._-+:=,@%$" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def service_argv(socket_path: Path = DEFAULT_SOCKET) -> list[str]:
    """`onlooker service run` through this very interpreter (a venv's link kept: it is
    what makes the venv's packages, onlooker among them, importable)."""
    argv = [os.path.abspath(sys.executable), "-m", "onlooker.cli", "service", "run"]
    if Path(socket_path) != DEFAULT_SOCKET:
        argv += ["--socket", str(socket_path)]
    return argv


def unit_text(argv: list[str]) -> str:
    """The system unit that runs `argv` (the supervisor) as root."""
    return f"""\
# Written by 'onlooker service install'; removed by 'onlooker service uninstall'.
[Unit]
Description=onlooker: records runs in the projects their owners register
After=local-fs.target

[Service]
Type=simple
ExecStart={' '.join(_unit_quote(a) for a in argv)}
Restart=on-failure
RestartSec=2
# agents commit what they saw before they exit
TimeoutStopSec=300
RuntimeDirectory=onlooker
RuntimeDirectoryMode=0755
StateDirectory=onlooker
StateDirectoryMode=0700
UMask=0077
Environment=ONLOOKER_LOG_LEVEL=INFO
# What the privileged tier needs, and nothing else: fanotify (CAP_SYS_ADMIN,
# CAP_DAC_READ_SEARCH), netlink (CAP_NET_ADMIN), other users' /proc (CAP_SYS_PTRACE),
# the owner's store (CAP_DAC_OVERRIDE, CAP_CHOWN, CAP_FOWNER), git as the owner
# (CAP_SETUID, CAP_SETGID), its agents (CAP_KILL).
CapabilityBoundingSet={' '.join(CAPABILITIES)}
NoNewPrivileges=yes
# Projects live anywhere (/home, /srv, /tmp): the system is read-only, homes are not.
ProtectSystem=full
ProtectKernelModules=yes
ProtectKernelTunables=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RestrictNamespaces=yes
LockPersonality=yes
RestrictAddressFamilies=AF_UNIX AF_NETLINK

[Install]
WantedBy=multi-user.target
"""


def _systemctl(*args: str, run: Callable[..., Any] = subprocess.run, check: bool = True) -> None:
    try:
        res = run(["systemctl", *args], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ServiceError(f"systemctl {' '.join(args)} failed: {err}") from err
    if check and res.returncode != 0:
        said = (res.stderr or res.stdout or "").strip().splitlines()
        raise ServiceError(f"systemctl {' '.join(args)} failed: "
                           f"{said[-1] if said else f'status {res.returncode}'}")


def install(socket_path: Path = DEFAULT_SOCKET, *, unit_path: Path | None = None,
            systemd: Path | None = None, run: Callable[..., Any] = subprocess.run
            ) -> dict[str, Any]:
    """Write the unit; enable and start it where systemd runs. {"unit", "started"}.

    Where systemd is not running (a container, an image being built) the unit is still
    written, for when it boots with systemd, and "started" is False."""
    need_root("installing the onlooker service")
    unit_path = Path(unit_path or UNIT_PATH)
    systemd = Path(systemd or SYSTEMD_RUNNING)
    unit_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(unit_path, unit_text(service_argv(socket_path)).encode(), 0o644)
    if not systemd.is_dir():
        return {"unit": str(unit_path), "started": False}
    _systemctl("daemon-reload", run=run)
    _systemctl("enable", "--now", UNIT_NAME, run=run)
    return {"unit": str(unit_path), "started": True}


def uninstall(*, unit_path: Path | None = None, systemd: Path | None = None,
              run: Callable[..., Any] = subprocess.run) -> bool:
    """Stop, disable and remove the unit; False when there was none."""
    need_root("removing the onlooker service")
    unit_path = Path(unit_path or UNIT_PATH)
    running = Path(systemd or SYSTEMD_RUNNING).is_dir()
    if running:
        _systemctl("disable", "--now", UNIT_NAME, run=run, check=unit_path.exists())
    if not unit_path.exists():
        return False
    unit_path.unlink()
    if running:
        _systemctl("daemon-reload", run=run)
    return True


def unit_state() -> str:
    """"not installed", "installed (systemd not running here)" or systemd's word for it."""
    if not UNIT_PATH.exists():
        return "not installed"
    if not SYSTEMD_RUNNING.is_dir():
        return "installed (systemd not running here)"
    try:
        res = subprocess.run(["systemctl", "is-active", UNIT_NAME], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "installed"
    return f"installed ({res.stdout.strip() or 'unknown'})"
