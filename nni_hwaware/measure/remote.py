"""Measure on a remote device through the device agent: ``--device ssh://...`` or ``--device http://...``.

The device runs :mod:`nni_hwaware.measure.agent` (one self-contained file: Python >= 3.6, numpy and the
device's runtime), and this module speaks its JSON protocol (``/work/specs/device_protocol.md``):

* :class:`SshConnection` starts ``ssh [user@]host PYTHON ~/.cache/nni-hwaware/agent-<sha12>.py serve-stdio``
  and exchanges JSON lines over the pipe, copying the agent file over first when the device lacks it;
* :class:`HttpConnection` talks to ``agent.py serve-http`` with a bearer token;
* :class:`RemoteMeasurer` is a :class:`~nni_hwaware.measure.measurer.Measurer` whose models are uploaded (once,
  by hash) and timed on the device; with several URLs it is a pool: every device must have the same comparable
  fingerprint, and :meth:`RemoteMeasurer.measure_many` keeps every device busy.

Examples
--------
>>> parse_device_url("ssh://nvidia@jetson:2222?python=python3.6").port
2222
>>> is_device_url("cuda:0")
False
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import json
import os
import queue
import shlex
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nni_hwaware.errors import DeviceError, HwAwareError, ParameterError
from nni_hwaware.measure.backends import ModelToMeasure
from nni_hwaware.measure.fingerprint import comparable, fingerprint_difference
from nni_hwaware.measure.measurer import DEFAULT_OUTLIER_CV, Measurer, ModelResult, check_positive
from nni_hwaware.measure.protocol import Protocol, TimingResult, trimmed_stats
from nni_hwaware.measure.store import Measurement, device_key

#: environment variable holding the HTTP agent's token when no ``--token-file`` is given
TOKEN_ENV = "NNI_HWAWARE_TOKEN"
#: where the SSH transport keeps the agent file on the device (``~`` is the remote user's home)
REMOTE_AGENT_DIR = "~/.cache/nni-hwaware"
#: seconds to wait for the agent's hello line (a busy board may take long to start Python and numpy)
STARTUP_TIMEOUT_S = 60.0
#: backends the agent runs
REMOTE_BACKENDS = ("onnxruntime", "tensorrt")
_SSH_QUERY = ("python", "identity", "known_hosts", "gpu")
_HTTP_QUERY = ("gpu",)
_MISSING_AGENT_EXIT = 97


# ----------------------------------------------------------------------------------------------- URLs
@dataclass(frozen=True)
class DeviceURL:
    """A parsed ``--device`` URL.

    Parameters
    ----------
    url
        The URL as given.
    scheme
        ``ssh`` or ``http``.
    host, port, user
        Where the device is (``port`` ``None``: the scheme's default).
    python
        SSH: the Python that runs the agent on the device.
    identity, known_hosts
        SSH: private key file and known-hosts file (``None``: ssh's defaults).
    gpu
        GPU index on the device.
    """

    url: str
    scheme: str
    host: str
    port: int | None = None
    user: str | None = None
    python: str = "python3"
    identity: str | None = None
    known_hosts: str | None = None
    gpu: int = 0


def is_device_url(text: Any) -> bool:
    """Whether a ``--device`` value names a remote device (anything with ``://``) rather than ``cpu``/``cuda:N``.

    Examples
    --------
    >>> is_device_url("http://127.0.0.1:8765"), is_device_url("cpu")
    (True, False)
    """
    return isinstance(text, str) and "://" in text


def parse_device_url(url: str) -> DeviceURL:
    """Parse ``ssh://[user@]host[:port][?python=..&identity=..&known_hosts=..&gpu=N]`` or
    ``http://host:port[?gpu=N]``; anything else is a one-line :class:`DeviceError`.

    Examples
    --------
    >>> d = parse_device_url("http://127.0.0.1:8765?gpu=1")
    >>> d.scheme, d.host, d.port, d.gpu
    ('http', '127.0.0.1', 8765, 1)
    """
    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("ssh", "http"):
        hint = " (the agent speaks plain HTTP: use http:// inside a trusted network, or ssh://)" \
            if scheme == "https" else ""
        raise DeviceError(f"device {url}: unknown scheme {scheme!r}{hint}; use ssh://[user@]host[:port] or "
                          "http://host:port (or cpu, cuda[:N] for this machine)", parameter="device")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise DeviceError(f"device {url}: {exc}; use ssh://[user@]host[:port] or http://host:port",
                          parameter="device") from None
    if not parts.hostname:
        raise DeviceError(f"device {url}: no host; use ssh://[user@]host[:port] or http://host:port",
                          parameter="device")
    if parts.path not in ("", "/") or parts.fragment:
        raise DeviceError(f"device {url}: no path allowed; use {scheme}://HOST[:PORT][?OPTIONS]", parameter="device")
    if port == 0:
        raise DeviceError(f"device {url}: port 0 is not a port; give the port the agent listens on",
                          parameter="device")
    allowed = _SSH_QUERY if scheme == "ssh" else _HTTP_QUERY
    try:
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise DeviceError(f"device {url}: cannot read the options after '?'; write them as "
                          "?key=value&key=value", parameter="device") from None
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        raise DeviceError(f"device {url}: unknown option(s) {', '.join(unknown)}; {scheme}:// takes "
                          f"{', '.join(allowed)}", parameter="device")
    options: dict[str, str] = {}
    for key, values in query.items():
        if len(values) != 1 or not values[0]:
            raise DeviceError(f"device {url}: option {key} needs exactly one non-empty value", parameter="device")
        options[key] = values[0]
    gpu = options.get("gpu", "0")
    if not gpu.isdigit():
        raise DeviceError(f"device {url}: gpu must be a GPU index (0, 1, ...), got {gpu!r}", parameter="device")
    if scheme == "http" and parts.username:
        raise DeviceError(f"device {url}: an http:// URL takes no user; the token authenticates "
                          "(token_file or NNI_HWAWARE_TOKEN)", parameter="device", mentions=("token_file",))
    for key in ("identity", "known_hosts"):
        if key == "identity" and key in options and not Path(options[key]).expanduser().is_file():
            raise DeviceError(f"device {url}: identity file {options[key]} does not exist", parameter="device")
    return DeviceURL(url=url, scheme=scheme, host=parts.hostname, port=port, user=parts.username,
                     python=options.get("python", "python3"), identity=options.get("identity"),
                     known_hosts=options.get("known_hosts"), gpu=int(gpu))


def agent_path() -> Path:
    """The device agent file (what ``nni-hwaware device agent-path`` prints and the SSH transport copies)."""
    return Path(__file__).with_name("agent.py")


def agent_digest() -> str:
    """First 12 hex digits of the agent file's SHA-256 (names the copy on a device, so versions never mix)."""
    try:
        return hashlib.sha256(agent_path().read_bytes()).hexdigest()[:12]
    except OSError as exc:
        raise HwAwareError(f"the device agent {agent_path()} cannot be read ({exc.strerror}); reinstall "
                           "nni-hwaware") from None


def read_token(token_file: str | None) -> str:
    """The HTTP token: the first line of ``token_file``, else the environment variable ``NNI_HWAWARE_TOKEN``."""
    if token_file is not None:
        try:
            token = Path(token_file).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise DeviceError(f"token_file {token_file} cannot be read ({getattr(exc, 'strerror', None) or exc})"
                              "; give the file holding the agent's token", parameter="token_file") from None
        if not token:
            raise DeviceError(f"token_file {token_file} is empty; write the agent's token into it",
                              parameter="token_file")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise DeviceError(f"an http:// device needs its token: token_file or the environment variable "
                          f"{TOKEN_ENV}", parameter="token_file", mentions=("token_file",))
    return token


# -------------------------------------------------------------------------------------------- transports
class Connection:
    """One device agent, over some transport: :meth:`call` sends a request and returns its ``result``."""

    url: str

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Send ``{"op": op, ...args}``; the result, or :class:`DeviceError` naming the URL."""
        raise NotImplementedError

    def upload(self, sha256: str, data: bytes) -> None:
        """Send an ONNX model (the agent checks its hash and that it is ONNX)."""
        self.call("upload", sha256=sha256, data_b64=base64.b64encode(data).decode("ascii"))

    def has_model(self, sha256: str) -> bool:
        """Whether the device's cache holds the model."""
        return bool(self.call("has_model", sha256=sha256).get("present"))

    def close(self) -> None:
        """Stop talking to the agent (the SSH transport stops it)."""


def _agent_error(url: str, reply: dict[str, Any]) -> DeviceError:
    message = str(reply.get("error") or "the agent answered without a result").strip().splitlines()
    return DeviceError(f"device {url}: {message[0] if message else 'unknown error'}")


class SshConnection(Connection):
    """The agent over SSH: ``ssh ... 'PYTHON ~/.cache/nni-hwaware/agent-<sha12>.py serve-stdio'``, JSON lines.

    The agent file is copied to the device (``mkdir -p``, ``cat`` into a temporary file, ``mv``) when it is
    missing there. A reader thread notices ssh or the agent dying; every call then fails with a one-line
    :class:`DeviceError` giving the URL and the end of ssh's error output.

    Parameters
    ----------
    device
        The parsed URL.
    startup_timeout
        Seconds to wait for the agent's hello line (ssh exiting fails at once).
    start
        Start the agent now (``False``: only :meth:`copy_agent` and :meth:`run_agent` are used).
    """

    def __init__(self, device: DeviceURL, startup_timeout: float = STARTUP_TIMEOUT_S, *, start: bool = True) -> None:
        self.url = device.url
        self.device = device
        self._startup_timeout = startup_timeout
        self._next_id = 0
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self.hello = self._start() if start else None

    # ------------------------------------------------------------------ ssh command lines
    def ssh_command(self, remote: str) -> list[str]:
        """The ``ssh`` command line running ``remote`` (a shell command) on the device."""
        d = self.device
        cmd = ["ssh", "-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "ServerAliveInterval=15",
               "-o", "ServerAliveCountMax=4"]
        if d.port is not None:
            cmd += ["-p", str(d.port)]
        if d.identity:
            cmd += ["-i", str(Path(d.identity).expanduser()), "-o", "IdentitiesOnly=yes"]
        if d.known_hosts:
            cmd += ["-o", f"UserKnownHostsFile={Path(d.known_hosts).expanduser()}",
                    "-o", "StrictHostKeyChecking=accept-new"]
        cmd += [f"{d.user}@{d.host}" if d.user else d.host, remote]
        return cmd

    def remote_agent(self) -> str:
        """Path of the agent file on the device (``~`` expanded by the remote shell)."""
        return f"{REMOTE_AGENT_DIR}/agent-{agent_digest()}.py"

    def agent_command(self, *args: str) -> str:
        """Remote shell command running the agent with ``args`` (exit 97 when the file is missing)."""
        path = self.remote_agent()
        quoted = " ".join(shlex.quote(a) for a in args)
        return (f'f={path}; if [ ! -f "$f" ]; then echo "nni-hwaware: agent file missing" >&2; '
                f'exit {_MISSING_AGENT_EXIT}; fi; exec {shlex.quote(self.device.python)} "$f" {quoted}')

    def copy_agent(self) -> None:
        """Copy the agent file to the device (atomically: a temporary file, then ``mv``)."""
        path = self.remote_agent()
        remote = (f"mkdir -p {REMOTE_AGENT_DIR} && cat > {path}.tmp.$$ && mv {path}.tmp.$$ {path}")
        try:
            done = subprocess.run(self.ssh_command(remote), input=agent_path().read_bytes(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"device {self.url}: copying the agent timed out; check the connection") from None
        except FileNotFoundError:
            raise DeviceError("ssh is not installed here; install the OpenSSH client") from None
        if done.returncode != 0:
            raise self._ssh_failure(done.returncode, done.stderr.decode(errors="replace"), "copying the agent")

    def run_agent(self, *args: str, timeout: float = 120) -> tuple[int, str, str]:
        """Run ``agent.py ARGS`` on the device once (copying it first if needed): exit status, stdout, stderr."""
        for attempt in range(2):
            try:
                done = subprocess.run(self.ssh_command(self.agent_command(*args)), stdin=subprocess.DEVNULL,
                                      capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise DeviceError(f"device {self.url}: `agent {' '.join(args)}` did not finish in "
                                  f"{timeout:.0f} s") from None
            except FileNotFoundError:
                raise DeviceError("ssh is not installed here; install the OpenSSH client") from None
            if done.returncode == _MISSING_AGENT_EXIT and attempt == 0:
                self.copy_agent()
                continue
            if done.returncode == 255:
                raise self._ssh_failure(255, done.stderr, "connecting")
            return done.returncode, done.stdout, done.stderr
        raise DeviceError(f"device {self.url}: the agent file is still missing after copying it; check that "
                          f"{REMOTE_AGENT_DIR} is writable there")

    def _ssh_failure(self, code: int, stderr: str, doing: str) -> DeviceError:
        tail = _tail(stderr)
        if code == 255:
            return DeviceError(f"cannot reach device {self.url} over ssh ({tail or 'ssh failed'}); check the host, "
                               "port, user and key (ssh -o BatchMode=yes must log in without a password)")
        return DeviceError(f"device {self.url}: {doing} failed (exit {code}: {tail or 'no message'})")

    # ------------------------------------------------------------------ the agent process
    def _start(self) -> dict[str, Any]:
        for attempt in range(2):
            self._open_process()
            line = self._read_line(self._startup_timeout, starting=True)
            if line is not None:
                try:
                    hello = json.loads(line)
                except ValueError:
                    hello = None
                if not isinstance(hello, dict) or hello.get("agent") != "nni-hwaware-device-agent":
                    self.close()
                    raise DeviceError(f"device {self.url}: the agent did not introduce itself (got "
                                      f"{line[:120]!r}); check that {self.device.python} is Python >= 3.6")
                return hello
            code = self._wait_exit()
            if code == _MISSING_AGENT_EXIT and attempt == 0:
                self.copy_agent()
                continue
            raise self._died("starting the agent", code)
        raise DeviceError(f"device {self.url}: the agent file is still missing after copying it")

    def _open_process(self) -> None:
        try:
            self._process = subprocess.Popen(
                self.ssh_command(self.agent_command("serve-stdio")), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        except FileNotFoundError:
            raise DeviceError("ssh is not installed here; install the OpenSSH client") from None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        process = self._process
        threading.Thread(target=self._pump_stdout, args=(process, self._lines), daemon=True).start()
        self._stderr_thread = threading.Thread(target=self._pump_stderr, args=(process, self._stderr), daemon=True)
        self._stderr_thread.start()

    @staticmethod
    def _pump_stdout(process: subprocess.Popen, lines: queue.Queue) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            lines.put(raw.decode("utf-8", errors="replace"))
        lines.put(None)  # end of the stream: ssh or the agent is gone

    @staticmethod
    def _pump_stderr(process: subprocess.Popen, tail: collections.deque) -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            text = raw.decode("utf-8", errors="replace").strip()
            if text:
                tail.append(text)

    def _read_line(self, timeout: float | None, *, starting: bool = False) -> str | None:
        """The next line from the agent; ``None`` when the stream ended (timeout: a :class:`DeviceError`)."""
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            self.close()
            what = "did not start" if starting else "did not answer"
            raise DeviceError(f"device {self.url}: the agent {what} within {timeout:.0f} s; check the device "
                              f"(`nni-hwaware device setup {self.url}`)") from None

    def _wait_exit(self) -> int:
        assert self._process is not None
        try:
            code = self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait()
        self._stderr_thread.join(timeout=2)
        return code

    def _died(self, doing: str, code: int) -> DeviceError:
        tail = _tail("\n".join(self._stderr))
        if code == 255 and getattr(self, "hello", None) is None:  # ssh itself failed before the agent started
            return self._ssh_failure(255, tail, doing)
        return DeviceError(f"device {self.url}: the agent stopped while {doing} (exit {code}"
                           f"{': ' + tail if tail else ''}); check the device and run the command again "
                           "(stored measurements are kept)")

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        with self._lock:
            process = self._process
            if process is None or process.stdin is None:
                raise DeviceError(f"device {self.url}: the connection is closed")
            self._next_id += 1
            request = json.dumps({"id": self._next_id, "op": op, **args}) + "\n"
            try:
                process.stdin.write(request.encode())
                process.stdin.flush()
            except (BrokenPipeError, OSError):
                pass  # the reader sees the end of the stream and says why
            while True:
                line = self._read_line(None)
                if line is None:
                    raise self._died(f"running {op!r}", self._wait_exit())
                try:
                    reply = json.loads(line)
                except ValueError:
                    continue  # not ours (a stray print of a runtime library)
                if isinstance(reply, dict) and reply.get("id") == self._next_id:
                    break
            if not reply.get("ok"):
                raise _agent_error(self.url, reply)
            return dict(reply.get("result") or {})

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            if process.poll() is None and process.stdin is not None:
                process.stdin.write((json.dumps({"id": 0, "op": "shutdown"}) + "\n").encode())
                process.stdin.close()
            process.wait(timeout=5)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()


class HttpConnection(Connection):
    """The agent over HTTP (``agent.py serve-http``): ``Authorization: Bearer TOKEN`` on every request.

    Parameters
    ----------
    device
        The parsed URL.
    token
        The agent's token (see :func:`read_token`).
    timeout
        Seconds to wait for an answer to a measurement (engine builds on a board take minutes).
    """

    def __init__(self, device: DeviceURL, token: str, timeout: float = 3600.0) -> None:
        self.url = device.url
        self.device = device
        self._base = f"http://{device.host}:{device.port or 80}"
        self._token = token
        self._timeout = timeout

    def _request(self, method: str, path: str, body: bytes | None = None, *, content_type: str = "application/json",
                 timeout: float = 60.0) -> dict[str, Any]:
        request = urllib.request.Request(self._base + path, data=body, method=method)
        request.add_header("Authorization", f"Bearer {self._token}")
        if body is not None:
            request.add_header("Content-Type", content_type)
            request.add_header("Content-Length", str(len(body)))
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http:// only
                payload = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise DeviceError(f"device {self.url} refused the token (401): wrong token; give the agent's "
                                  f"token with token_file or {TOKEN_ENV}", mentions=("token_file",)) from None
            payload = exc.read()
            try:
                reply = json.loads(payload)
            except ValueError:
                raise DeviceError(f"device {self.url}: HTTP {exc.code} {exc.reason}; is it an nni-hwaware "
                                  "agent (`agent.py serve-http`)?") from None
            raise _agent_error(self.url, reply if isinstance(reply, dict) else {}) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeviceError(f"cannot reach device {self.url} ({reason}); check that the agent runs there "
                              "(`python3 agent.py serve-http --port P --token-file F`) and the address") from None
        try:
            reply = json.loads(payload)
        except ValueError:
            raise DeviceError(f"device {self.url} did not answer JSON; is it an nni-hwaware agent?") from None
        if not isinstance(reply, dict) or not reply.get("ok"):
            raise _agent_error(self.url, reply if isinstance(reply, dict) else {})
        return dict(reply.get("result") or {})

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        if op == "info":
            return self._request("GET", "/info")
        if op == "ping":
            return self._request("GET", "/info")
        if op == "has_model":
            return self._request("GET", f"/models/{args['sha256']}")
        if op == "measure":
            return self._request("POST", "/measure", json.dumps(args).encode(), timeout=self._timeout)
        if op == "upload":
            return self._request("PUT", f"/models/{args['sha256']}", base64.b64decode(args["data_b64"]),
                                 content_type="application/octet-stream", timeout=self._timeout)
        raise HwAwareError(f"the HTTP transport has no operation {op!r}")

    def upload(self, sha256: str, data: bytes) -> None:
        self._request("PUT", f"/models/{sha256}", data, content_type="application/octet-stream",
                      timeout=self._timeout)


def connect(url: str | DeviceURL, *, token_file: str | None = None) -> Connection:
    """A connection to the agent at ``url`` (SSH starts it; HTTP reads the token and asks for ``info``)."""
    device = url if isinstance(url, DeviceURL) else parse_device_url(url)
    if device.scheme == "ssh":
        return SshConnection(device)
    connection = HttpConnection(device, read_token(token_file))
    connection.call("info")  # unreachable or wrong token: fail now, with the one-line reason
    return connection


# ------------------------------------------------------------------------------------------- protocols
@dataclass(frozen=True)
class JetsonDatasetProtocol:
    """The public Jetson Nano dataset's protocol: timed host-side calls (copies included) for ``seconds``.

    Latency is the plain mean of those calls; energy is the GPU rail summed over the same window divided by the
    inferences run (see ``../shared/data/jetson_nano/README.md``). Only a device agent runs it.

    Examples
    --------
    >>> JetsonDatasetProtocol(seconds=5.0).to_dict()["name"]
    'jetson_dataset'
    """

    seconds: float = 60.0
    warmup: int = 10
    name: str = "jetson_dataset"
    #: what the stored measurement records (no runs are dropped; the run count is what fits the window)
    trim: float = 0.0
    adaptive: bool = False
    runs: int = 0
    confidence: float = 0.95

    def __post_init__(self) -> None:
        check_positive(self.seconds, "seconds")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ParameterError(f"warmup must be an integer >= 0, got {self.warmup!r}", parameter="warmup")

    def to_dict(self) -> dict[str, Any]:
        """What the agent is sent and the store records."""
        return {"name": self.name, "seconds": float(self.seconds), "warmup": self.warmup}


def protocol_request(protocol: Any) -> dict[str, Any]:
    """The protocol as the agent takes it (``name`` ``esm`` or ``jetson_dataset``)."""
    if isinstance(protocol, JetsonDatasetProtocol):
        return protocol.to_dict()
    if isinstance(protocol, Protocol):
        return {"name": "esm", **protocol.to_dict()}
    raise HwAwareError(f"a remote device measures with the esm or jetson_dataset protocol, not {protocol!r}")


def protocol_name(protocol: Any) -> str:
    """``jetson_dataset`` for :class:`JetsonDatasetProtocol`, else ``esm``."""
    return str(getattr(protocol, "name", "esm")) if isinstance(protocol, JetsonDatasetProtocol) else "esm"


# -------------------------------------------------------------------------------------------- measurer
class RemoteBackend:
    """What the rest of the package reads of a backend (name, precision, threads, version), for a remote one."""

    def __init__(self, name: str, precision: str, threads: int, fingerprint: dict[str, Any], gpu: int) -> None:
        self.name = name
        self.precision = precision
        self.threads = threads
        self.gpu = gpu
        self.version = (fingerprint.get("runtimes") or {}).get(name)
        gpu_name = fingerprint.get("gpu")
        self.accelerator = "cpu" if name == "onnxruntime" else f"cuda:{gpu_name}"

    def describe(self) -> dict[str, Any]:
        """The backend's part of the device description."""
        return {"backend": self.name, "backend_version": self.version, "threads": self.threads,
                "accelerator": self.accelerator, "precision": self.precision}


class RemoteMeter:
    """The name of the meter the device reads (the agent does the reading)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def close(self) -> None:
        """Nothing to release here."""


class RemoteMeasurer(Measurer):
    """A :class:`Measurer` whose models run on remote devices through the agent; several URLs make a pool.

    Parameters
    ----------
    urls
        One device URL or several (a pool: every device must have the same comparable fingerprint).
    backend
        Runtime on the device: ``onnxruntime`` or ``tensorrt``.
    threads, precision
        Backend settings (recorded).
    protocol
        :class:`~nni_hwaware.measure.protocol.Protocol` (``esm``) or :class:`JetsonDatasetProtocol`.
    energy
        ``auto``, ``none``, ``tegrastats``, ``nvml`` or ``rapl`` (read on the device).
    energy_seconds, idle_seconds, tegrastats_interval_ms
        Energy window settings sent to the agent.
    token_file
        HTTP token file (else ``NNI_HWAWARE_TOKEN``).

    Examples
    --------
    >>> measurer = RemoteMeasurer(["http://127.0.0.1:8765"], token_file="token")  # doctest: +SKIP
    >>> measurer.device_description["protocol"]  # doctest: +SKIP
    'esm'
    """

    #: the agent times one model per request, so a campaign measures one model at a time on a remote device
    interleaves = False


    def __init__(self, urls: str | Sequence[str], backend: str = "onnxruntime", *, threads: int = 1,
                 precision: str = "fp32", protocol: Any = None, energy: str = "auto", energy_seconds: float = 2.0,
                 idle_seconds: float = 2.0, tegrastats_interval_ms: int = 1000, token_file: str | None = None,
                 outlier_cv: float = DEFAULT_OUTLIER_CV) -> None:
        from nni_hwaware.measure.energy import METERS
        from nni_hwaware.spaces.export import OPSET

        urls = [urls] if isinstance(urls, str) else list(urls)
        devices = [parse_device_url(u) for u in urls]  # every URL is checked before any connection
        if backend not in REMOTE_BACKENDS:
            raise ParameterError(f"backend {backend} does not run on a remote device; use "
                                 f"{' or '.join(REMOTE_BACKENDS)}", parameter="backend")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ParameterError(f"threads must be a positive integer, got {threads!r}", parameter="threads")
        if precision not in ("fp32", "fp16") or (backend == "onnxruntime" and precision != "fp32"):
            raise ParameterError(f"precision {precision} is not available with {backend}; onnxruntime measures "
                                 "fp32, tensorrt fp32 or fp16", parameter="precision")
        if energy not in METERS:
            raise HwAwareError(f"unknown energy meter {energy!r}; use one of {', '.join(METERS)}")
        for name, value in (("energy_seconds", energy_seconds), ("idle_seconds", idle_seconds),
                            ("outlier_cv", outlier_cv)):
            check_positive(value, name)
        self.protocol = protocol if protocol is not None else Protocol()
        protocol_request(self.protocol)
        self.energy_seconds, self.idle_seconds, self.outlier_cv = energy_seconds, idle_seconds, outlier_cv
        self.tegrastats_interval_ms = tegrastats_interval_ms
        self.idle_power_w = None
        self.connections: list[Connection] = []
        try:
            for device in devices:
                self.connections.append(connect(device, token_file=token_file))
            self.fingerprints = [c.call("info") for c in self.connections]
        except BaseException:
            self.close()
            raise
        self._check_pool(urls)
        first = self.fingerprints[0]
        max_opset = (first.get("max_onnx_opset") or {}).get(backend)
        if not first.get("runtimes", {}).get(backend) or max_opset is None:
            self.close()
            raise DeviceError(f"device {urls[0]} has no usable {backend}; run `nni-hwaware device setup "
                              f"{urls[0]}` to see what to install")
        self.onnx_opset = min(OPSET, int(max_opset))
        self.backend = RemoteBackend(backend, precision, threads, first, devices[0].gpu)  # type: ignore[assignment]
        self._gpus = [d.gpu for d in devices]
        self.energy = energy if energy != "auto" or first.get("meters") else "none"
        self.meter = None if self.energy == "none" else RemoteMeter(  # type: ignore[assignment]
            self.energy if self.energy != "auto" else str(first["meters"][0]))
        self.device_description = {**comparable(first), **self.backend.describe(),
                                   "protocol": protocol_name(self.protocol)}
        self.device_key = device_key(self.device_description)
        self._idle: queue.Queue[int] = queue.Queue()
        for i in range(len(self.connections)):
            self._idle.put(i)
        self._present: list[set[str]] = [set() for _ in self.connections]
        self.models_measured = [0] * len(self.connections)

    def _check_pool(self, urls: list[str]) -> None:
        first = comparable(self.fingerprints[0])
        for url, fingerprint in zip(urls[1:], self.fingerprints[1:]):
            difference = fingerprint_difference(first, fingerprint) or fingerprint_difference(
                comparable(fingerprint), first)
            if difference:
                self.close()
                raise DeviceError(f"device {url} is not the same kind of device as {urls[0]} ({difference}); a "
                                  "pool takes identical devices only")

    @property
    def size(self) -> int:
        """Number of devices in the pool."""
        return len(self.connections)

    # ------------------------------------------------------------------ measuring
    def measure(self, model: ModelToMeasure) -> ModelResult:
        """Measure one model on whichever device of the pool is free."""
        index = self._idle.get()
        try:
            return self.measure_on(index, model)
        finally:
            self._idle.put(index)

    def measure_on(self, index: int, model: ModelToMeasure) -> ModelResult:
        """Upload the model to device ``index`` if it lacks it, and measure it there."""
        if model.onnx is None:
            raise HwAwareError(f"{model.name}: a remote device measures ONNX models")
        connection = self.connections[index]
        sha = hashlib.sha256(model.onnx).hexdigest()
        if sha not in self._present[index]:
            if not connection.has_model(sha):
                connection.upload(sha, model.onnx)
            self._present[index].add(sha)
        reply = connection.call(
            "measure", sha256=sha, backend=self.backend.name, threads=self.backend.threads, gpu=self._gpus[index],
            precision=self.backend.precision,
            input_shape=list(model.input_shape) if model.input_shape is not None else None,
            protocol=protocol_request(self.protocol),
            energy={"meter": self.energy, "seconds": self.energy_seconds, "idle_seconds": self.idle_seconds,
                    "tegrastats_interval_ms": self.tegrastats_interval_ms})
        self.models_measured[index] += 1
        return self._result(reply, index)

    def _result(self, reply: dict[str, Any], index: int) -> ModelResult:
        samples = reply.get("samples_ms") or []
        if not samples:
            raise DeviceError(f"device {self.connections[index].url} returned no timed runs")
        trim = 0.0 if isinstance(self.protocol, JetsonDatasetProtocol) else self.protocol.trim
        timing: TimingResult = trimmed_stats(samples, trim, self.protocol.confidence)
        if isinstance(self.protocol, JetsonDatasetProtocol):  # the agent returns at most some of the samples
            timing.mean_ms = float(reply.get("latency_ms") or timing.mean_ms)
            timing.runs = int(reply.get("runs") or timing.runs)
        fingerprint = self.fingerprints[index]
        extra: dict[str, Any] = {"host": fingerprint.get("host"), "agent_version": fingerprint.get("agent_version"),
                                 "device_url": self.connections[index].url,
                                 "engine_cached": reply.get("engine_cached"), "onnx_opset": self.onnx_opset}
        result = ModelResult(timing=timing, build_time_s=float(reply.get("build_time_s") or 0.0),
                             energy_extra=extra)
        energy = reply.get("energy")
        if energy:
            result.energy_mj = energy.get("energy_mj")
            result.power_w = energy.get("power_w")
            result.idle_power_w = energy.get("idle_power_w")
            extra.update({"energy_meter": energy.get("meter"), "energy_inferences": energy.get("inferences"),
                          "energy_window_s": energy.get("window_s"), "energy_samples": energy.get("samples")})
            for key in ("rails_mj_per_inference", "rails_total_mj"):
                if energy.get(key):
                    extra[key] = energy[key]
        return result

    def measure_many(self, models: Iterable[ModelToMeasure]) -> Iterator[tuple[int, ModelResult]]:
        """Measure models on every device of the pool at once; yields ``(position, result)`` as each finishes.

        One worker thread per device takes the next model from a shared queue. When a device fails, the others
        finish the model they are measuring (those results are yielded) and take no new one; then the first
        error is raised.
        """
        todo: queue.Queue[tuple[int, ModelToMeasure]] = queue.Queue()
        for item in enumerate(models):
            todo.put(item)
        done: queue.Queue[tuple[int, ModelResult | None, BaseException | None]] = queue.Queue()
        failed = threading.Event()

        def work(index: int) -> None:
            while not failed.is_set():
                try:
                    position, model = todo.get_nowait()
                except queue.Empty:
                    break
                try:
                    done.put((position, self.measure_on(index, model), None))
                except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                    failed.set()
                    done.put((position, None, exc))
            done.put((-1, None, None))

        idle = [self._idle.get() for _ in range(self.size)]  # the whole pool, for this batch
        workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in idle]
        for worker in workers:
            worker.start()
        error: BaseException | None = None
        try:
            finished = 0
            while finished < len(workers):
                position, result, exc = done.get()
                if position < 0:
                    finished += 1
                elif exc is not None:
                    error = error or exc
                elif result is not None and error is None:
                    yield position, result
        finally:
            failed.set()
            for worker in workers:
                worker.join()
            for i in idle:
                self._idle.put(i)
        if error is not None:
            raise error

    def to_measurement(self, result: ModelResult, *, space: str, arch_hash: str, arch_json: str, input_size: int,
                       campaign: str | None = None, extra: dict[str, Any] | None = None) -> Measurement:
        """As :meth:`Measurer.to_measurement`, with the meter the device used and the protocol it ran."""
        m = super().to_measurement(result, space=space, arch_hash=arch_hash, arch_json=arch_json,
                                   input_size=input_size, campaign=campaign, extra=extra)
        m.extra["protocol"] = protocol_request(self.protocol)
        if result.energy_mj is not None:
            m.energy_meter = (result.energy_extra or {}).get("energy_meter") or m.energy_meter
        else:
            m.energy_meter = None
        if isinstance(self.protocol, JetsonDatasetProtocol):
            m.extra["max_runs"] = None  # the window's length decides the runs
        return m

    def measure_idle(self) -> float:
        """Idle power is measured on the device, by the agent."""
        raise HwAwareError("a remote device measures its idle power itself")

    def close(self) -> None:
        """Stop the agents started over SSH and forget every connection."""
        for connection in getattr(self, "connections", []):
            with contextlib.suppress(Exception):  # closing must not hide the error being reported
                connection.close()
        self.connections = []


def _tail(text: str, limit: int = 300) -> str:
    """The last meaningful lines of an error output, as one line."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return " | ".join(lines[-3:])[-limit:]


def device_argument(devices: list[str] | None) -> str | list[str] | None:
    """The parsed ``--device`` values as :func:`~nni_hwaware.measure.runner.make_measurer` takes them; a bad
    URL is a one-line error here, before anything is opened."""
    if not devices:
        return None
    for device in devices:
        if is_device_url(device):
            parse_device_url(device)
    return devices[0] if len(devices) == 1 else list(devices)
