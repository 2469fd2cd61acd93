#!/usr/bin/env bash
# The two set-up commands of the README:
#   ./run.sh main   - create/reuse .venv, install, run the main job on the embedded default
#   ./run.sh test   - create/reuse .venv, install with test extras, run the test suite
# Everything goes into the project-local virtual environment .venv; nothing is installed system-wide.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PY=${PYTHON:-python3}

ensure_venv() {
    local extras="$1"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "[setup] creating $VENV" >&2
        "$PY" -m venv "$VENV"
    fi
    # Reinstall only when the project's requirements changed since the last install into this venv.
    local stamp="$VENV/.installed-$extras"
    local want
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return
    fi
    # pip's and setuptools' own notices (an editable install of mapped packages always prints one) go to a log,
    # shown only when the install fails, so a first run prints just our progress.
    local log="$VENV/install.log"
    echo "[setup] installing nni-hwaware[$extras] into $VENV (first run takes a few minutes; log: $log)" >&2
    if ! {
        "$VENV/bin/python" -m pip install -q --upgrade "pip>=23" "setuptools>=77,<81" wheel &&
        # torch first, pinned: the CPU build on this machine's disk. A plain `torch` would pull a CUDA build.
        "$VENV/bin/python" -m pip install -q "torch==2.13.0" &&
        "$VENV/bin/python" -m pip install -q --no-build-isolation -e ".[$extras]"
    } >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "[setup] install failed; the whole log is in $log" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
}

case "${1:-}" in
    main)
        ensure_venv main
        shift
        exec "$VENV/bin/python" -m nni_hwaware.main "$@"
        ;;
    test)
        ensure_venv dev
        shift
        # Two workers (pytest-xdist), one per core of a CI machine; a file's tests stay on one worker, so its
        # module fixtures are built once. PYTEST_WORKERS=0 runs everything in this process.
        # One OpenMP thread per process: two workers on two cores (and a busy machine) with torch's default of
        # one thread per core spin-wait against each other, which made single tests up to 20x slower.
        export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
        exec "$VENV/bin/python" -m pytest -q -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
        ;;
    *)
        echo "usage: ./run.sh main|test [args]" >&2
        exit 2
        ;;
esac
