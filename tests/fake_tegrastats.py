#!/usr/bin/env python3
"""A stand-in for Jetson's ``tegrastats`` that replays a recorded log, for testing the agent's tegrastats meter.

Run as ``tegrastats --interval MS`` (tests put it on PATH under that name): it prints the lines of the file named
in the environment variable ``FAKE_TEGRASTATS_LOG``, one per interval (flushed each time, the first after one
interval as tegrastats does), then sleeps until it is killed; SIGTERM ends it with status 0.
"""

import argparse
import os
import signal
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(prog="tegrastats")
    parser.add_argument("--interval", type=int, default=1000, help="milliseconds between lines")
    args, _unknown = parser.parse_known_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    path = os.environ.get("FAKE_TEGRASTATS_LOG")
    if not path:
        sys.stderr.write("fake tegrastats: set FAKE_TEGRASTATS_LOG to a recorded tegrastats log\n")
        return 2
    with open(path, encoding="utf-8") as fh:
        lines = [line.rstrip("\n") for line in fh if line.strip()]
    interval = max(args.interval, 1) / 1e3
    try:
        for line in lines:
            time.sleep(interval)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
    except BrokenPipeError:
        return 0
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
