"""``nni-hwaware device ...``: set up a remote measuring device and look at what it is.

* ``device setup ssh://user@board``: copies the device agent to the board (``~/.cache/nni-hwaware``), runs its
  ``check`` there and prints what the runtime has and lacks, with the command that installs each missing piece;
  exit 1 when the backend cannot run there;
* ``device agent-path``: the agent file, to copy by hand (e.g. for ``agent.py serve-http`` on a device farm);
* ``device info --device URL``: the device's fingerprint as JSON (what every measurement made there records).
"""

from __future__ import annotations

import argparse
import json
import sys

from nni_hwaware.errors import DeviceError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``device setup``, ``device agent-path`` and ``device info``."""
    p = subparsers.add_parser("device", help="set up and inspect remote measuring devices (the device agent)")
    sub = p.add_subparsers(dest="device_command", metavar="{setup,agent-path,info}", required=True,
                           parser_class=type(p))
    s = sub.add_parser("setup", help="copy the agent to a device over ssh and check its runtime",
                       description="Copy the device agent to a device over SSH, run its check and print what "
                                   "is missing with the command that installs it (exit 1 if the backend cannot "
                                   "run there). For an http:// device, check what the running agent reports.")
    s.add_argument("url", help="ssh://[user@]host[:port][?python=python3] or http://host:port")
    s.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "tensorrt"),
                   help="the runtime that must work there")
    s.add_argument("--token-file", default=None, help="http:// devices: the agent's token file")
    s.set_defaults(func=_setup)
    a = sub.add_parser("agent-path", help="print the path of the agent file (to copy to a device by hand)")
    a.set_defaults(func=_agent_path)
    i = sub.add_parser("info", help="print a device's fingerprint as JSON")
    i.add_argument("--device", required=True, help="ssh://... or http://... device URL")
    i.add_argument("--token-file", default=None, help="http:// devices: the agent's token file")
    i.set_defaults(func=_info)


def _agent_path(args: argparse.Namespace) -> int:
    from nni_hwaware.measure.remote import agent_path

    print(agent_path())
    return 0


def _info(args: argparse.Namespace) -> int:
    from nni_hwaware.measure.remote import connect, parse_device_url

    connection = connect(parse_device_url(args.device), token_file=args.token_file)
    try:
        fingerprint = connection.call("info")
    finally:
        connection.close()
    print(json.dumps(fingerprint, indent=1, sort_keys=True))
    return 0


def _setup(args: argparse.Namespace) -> int:
    from nni_hwaware.measure.remote import SshConnection, connect, parse_device_url

    device = parse_device_url(args.url)
    if device.scheme == "http":  # the agent already runs there: say what its runtime has
        connection = connect(device, token_file=args.token_file)
        try:
            fingerprint = connection.call("info")
        finally:
            connection.close()
        version = (fingerprint.get("runtimes") or {}).get(args.backend)
        print(json.dumps(fingerprint.get("runtimes"), sort_keys=True))
        if not version:
            sys.stderr.write(f"{args.url}: {args.backend} is missing on that device; run `python3 agent.py check "
                             f"--backend {args.backend}` there to see how to install it\n")
            return 1
        print(f"{args.url}: {args.backend} {version} ready")
        return 0
    connection = SshConnection(device, start=False)  # copy and check only: no agent process is started
    connection.copy_agent()
    code, stdout, stderr = connection.run_agent("check", "--backend", args.backend)
    sys.stdout.write(stdout)
    if code not in (0, 1):
        raise DeviceError(f"device {args.url}: the agent's check failed (exit {code}: "
                          f"{' | '.join(stderr.strip().splitlines()[-3:]) or 'no message'}); check that "
                          f"{device.python} there is Python >= 3.6 with numpy")
    print(f"agent copied to {device.host}:{connection.remote_agent()}")
    if code == 1:
        sys.stderr.write(f"{args.url}: {args.backend} cannot run there yet; install what is listed above and run "
                         "`nni-hwaware device setup` again\n")
    return code
