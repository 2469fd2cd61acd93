"""Real device-agent endpoints for tests: an ``sshd`` on a loopback port, and the agent serving HTTP.

Nothing here is a stand-in: :func:`start_sshd` runs the system's OpenSSH server (``/usr/sbin/sshd``, from
Debian's ``openssh-server``; ``.ci/run`` installs it) with its own configuration, throwaway host and client
keys and a known-hosts file, all in a temporary folder, listening on 127.0.0.1 only; logins run commands as
the current user with ``HOME`` set to a folder inside it (so the agent copy and its model cache stay there).
:func:`start_http_agent` runs ``agent.py serve-http`` on a free loopback port with a token file.

Use them from fixtures, which stop what they started::

    from sshd import sshd_unavailable, start_http_agent, start_sshd

    @pytest.fixture
    def sshd(tmp_path):
        reason = sshd_unavailable()
        if reason:
            pytest.skip(reason)
        info = start_sshd(tmp_path / "sshd")
        yield info
        info.stop()

    def test_measure(sshd):
        url = sshd.url()   # ssh://USER@127.0.0.1:PORT?python=...&identity=...&known_hosts=...
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
REPO_ROOT = Path(__file__).resolve().parents[1]
AGENT = REPO_ROOT / "nni_hwaware" / "measure" / "agent.py"


def sshd_unavailable() -> str | None:
    """Why a real sshd cannot run here (``None`` when it can): a reason for ``pytest.skip``."""
    if not os.path.exists(SSHD):
        return f"{SSHD} is missing (apt-get install openssh-server; .ci/run installs it when it runs as root)"
    for tool in ("ssh", "ssh-keygen"):
        if not any(os.access(os.path.join(d, tool), os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep)):
            return f"the OpenSSH client ({tool}) is not installed"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(process: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """Stop a process this module started: SIGTERM, then SIGKILL if it does not end in ``timeout`` s."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class SshdInfo:
    """A running test sshd.

    Parameters
    ----------
    folder
        Its temporary folder (config, keys, known_hosts, pid file, log, ``home``).
    port, user
        Where to log in.
    client_key, known_hosts
        The client's private key and known-hosts file.
    home
        ``HOME`` of every login (the agent copy goes to ``home/.cache/nni-hwaware``).
    python
        The Python that runs the agent there (this test run's interpreter).
    process
        The sshd process.
    """

    folder: Path
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    home: Path
    python: str
    process: subprocess.Popen

    @property
    def url_base(self) -> str:
        """``ssh://USER@127.0.0.1:PORT``."""
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def url(self, python: str | None = None, **options: str) -> str:
        """The device URL with this sshd's key, known hosts and Python (``options`` add query fields)."""
        query = {"python": python or self.python, "identity": str(self.client_key),
                 "known_hosts": str(self.known_hosts), **options}
        return f"{self.url_base}?{urllib.parse.urlencode(query)}"

    def ssh(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a shell command over this sshd (as the device would), capturing its output."""
        return subprocess.run(
            ["ssh", "-T", "-o", "BatchMode=yes", "-p", str(self.port), "-i", str(self.client_key),
             "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
             f"{self.user}@127.0.0.1", command], capture_output=True, text=True, timeout=timeout)

    def log(self) -> str:
        """What sshd wrote (for failure messages)."""
        path = self.folder / "sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def session_pids(self) -> list[int]:
        """Processes started through this sshd's logins (their ``HOME`` is :attr:`home`), e.g. the agents."""
        marker = f"HOME={self.home}".encode() + b"\0"
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if marker in (entry / "environ").read_bytes() + b"\0":
                        pids.append(int(entry.name))
                except OSError:
                    continue
        return pids

    def stop(self) -> None:
        """Stop sshd and whatever its logins left running."""
        stop_process(self.process)
        for pid in self.session_pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "nni-hwaware-test", "-f", str(path)],
                   check=True, capture_output=True)


def start_sshd(folder: Path, *, python: str | None = None, timeout: float = 30.0) -> SshdInfo:
    """Start a real sshd on a free 127.0.0.1 port, configured and keyed inside ``folder``; returns when it
    accepts connections (``RuntimeError`` with its log if it cannot start)."""
    folder = Path(folder)
    home = folder / "home"
    home.mkdir(parents=True, exist_ok=True)
    host_key, client_key = folder / "host_key", folder / "client_key"
    _keygen(host_key)
    _keygen(client_key)
    (folder / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    os.chmod(folder / "authorized_keys", 0o600)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    last_error = ""
    for _ in range(3):  # a free port can be taken by someone else before sshd binds it
        port = free_port()
        config = folder / "sshd_config"
        config.write_text("\n".join([
            f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
            f"AuthorizedKeysFile {folder / 'authorized_keys'}", "StrictModes no", f"PidFile {folder / 'sshd.pid'}",
            "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password", f"SetEnv HOME={home}", "LogLevel ERROR", "MaxSessions 20",
            "MaxStartups 20:30:60", "",
        ]))
        log = open(folder / "sshd.log", "ab")  # noqa: SIM115 - owned by the process
        process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.05)
        if process.poll() is None:
            known_hosts = folder / "known_hosts"
            key = Path(f"{host_key}.pub").read_text().split()
            known_hosts.write_text(f"[127.0.0.1]:{port} {key[0]} {key[1]}\n")
            return SshdInfo(folder=folder, port=port, user=getpass.getuser(), client_key=client_key,
                            known_hosts=known_hosts, home=home, python=python or sys.executable, process=process)
        last_error = (folder / "sshd.log").read_text(errors="replace")
    raise RuntimeError(f"sshd did not start: {last_error.strip()[-1000:]}")


@dataclass
class HttpAgent:
    """A running ``agent.py serve-http``: its URL, token file and process (iterable as that triple)."""

    url: str
    token_file: Path
    process: subprocess.Popen

    def __iter__(self) -> Iterator:
        return iter((self.url, self.token_file, self.process))

    def stop(self) -> None:
        """Stop the agent (SIGTERM, as a user would)."""
        stop_process(self.process)


def start_http_agent(folder: Path, token: str = "test-token", *, extra_args: tuple[str, ...] = (),
                     env: dict[str, str] | None = None, wrapper: tuple[str, ...] = (),
                     timeout: float = 60.0) -> HttpAgent:
    """Start ``agent.py serve-http --port 0`` with a token file in ``folder`` and its cache there; returns once
    it printed ``listening on http://H:P`` (``RuntimeError`` with its output if it exits first).

    ``wrapper`` goes before the command (``("setarch", "linux32")`` makes a device whose machine is ``i686``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    token_file = folder / "token"
    token_file.write_text(token + "\n")
    os.chmod(token_file, 0o600)
    process = subprocess.Popen(
        [*wrapper, sys.executable, str(AGENT), "serve-http", "--port", "0", "--token-file", str(token_file),
         "--cache", str(folder / "cache"), *extra_args],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})})
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    assert process.stderr is not None
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
        if "listening on http://" in line:
            url = line.split("listening on ", 1)[1].split()[0].rstrip("/")
            _drain(process)
            return HttpAgent(url=url, token_file=token_file, process=process)
    stop_process(process)
    raise RuntimeError(f"the HTTP agent did not start: {''.join(seen)[-1000:]}")


def _drain(process: subprocess.Popen) -> None:
    """Keep reading the agent's log so a full pipe never blocks it."""
    import threading

    def drain() -> None:
        assert process.stderr is not None
        for _ in process.stderr:
            pass

    threading.Thread(target=drain, daemon=True).start()


def write_tiny_space(folder: Path, name: str = "tinyconv") -> Path:
    """A small space file of the ``convnet`` family (8-16 filters, 1-3 layers): models of a few kilobytes that
    time in well under a millisecond, so a campaign over SSH or HTTP takes seconds on a busy machine."""
    text = (REPO_ROOT / "search_spaces" / "convnet.yaml").read_text()
    text = text.replace("name: convnet", f"name: {name}", 1)
    lines = []
    for line in text.splitlines():
        if line.strip().startswith("filters:"):
            line = "  filters: [8, 12, 16]"
        elif line.strip().startswith("kernel_size:"):
            line = "  kernel_size: [1, 3]"
        elif "max_depth: 10" in line:
            line = line.replace("max_depth: 10", "max_depth: 3")
        lines.append(line)
    path = Path(folder) / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
