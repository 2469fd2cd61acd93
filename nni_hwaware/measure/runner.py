"""Measure models through a backend into the store: one model, a list of architectures, or an ONNX file.

:class:`Measurer` (:mod:`nni_hwaware.measure.measurer`) applies the protocol (and the energy window where a meter
exists) to one model at a time; :func:`make_measurer` makes one from names, for this machine or a remote device;
:func:`measure_architectures` is what the ESM builder calls to get latencies of architectures of a space,
reusing whatever the store already holds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nni_hwaware.errors import HwAwareError, ParameterError
from nni_hwaware.measure.backends import Backend, ModelToMeasure, get_backend
from nni_hwaware.measure.energy import create_meter
from nni_hwaware.measure.measurer import DEFAULT_OUTLIER_CV, Measurer, ModelResult, check_positive
from nni_hwaware.measure.protocol import Protocol
from nni_hwaware.measure.remote import RemoteMeasurer, is_device_url
from nni_hwaware.measure.store import ONNX_SPACE, Measurement, MeasurementStore, text_hash

__all__ = ["DEFAULT_OUTLIER_CV", "Measurer", "ModelResult", "architecture_model", "check_positive", "make_measurer",
           "measure_architectures", "measure_architectures_unstored", "measure_onnx_file", "measurer_model"]

def make_measurer(backend: str | Backend = "onnxruntime", *, threads: int = 1,
                  device: str | Sequence[str] | None = None, precision: str = "fp32", protocol: Any = None,
                  energy: str = "auto", energy_seconds: float = 2.0, idle_seconds: float = 2.0,
                  token_file: str | None = None) -> Measurer:
    """A :class:`Measurer` from names (what the CLI and the NNI trial use).

    ``device`` is ``cpu`` / ``cuda[:N]`` (this machine, ``None``: the backend's default), or a device URL
    ``ssh://...`` / ``http://...``, or a list of URLs (a pool): then a
    :class:`~nni_hwaware.measure.remote.RemoteMeasurer` is returned (``token_file``: the HTTP token).

    Examples
    --------
    >>> make_measurer("onnxruntime", energy="none").backend.name
    'onnxruntime'
    """
    check_positive(energy_seconds, "energy_seconds")  # before a backend or meter is set up
    check_positive(idle_seconds, "idle_seconds")
    devices = [device] if isinstance(device, str) or device is None else list(device)
    if not devices:
        devices = [None]
    if any(is_device_url(d) for d in devices):
        local = [d for d in devices if not is_device_url(d)]
        if local:
            raise ParameterError(f"device {local[0]} is this machine; a pool takes device URLs only "
                                 "(ssh://... or http://...)", parameter="device")
        if not isinstance(backend, str):
            backend = backend.name
        return RemoteMeasurer(devices, backend, threads=threads, precision=precision, protocol=protocol,
                              energy=energy, energy_seconds=energy_seconds, idle_seconds=idle_seconds,
                              token_file=token_file)
    if len(devices) > 1:
        raise ParameterError("device: several values make a pool of remote devices; give ssh:// or http:// URLs, "
                             "or a single cpu or cuda[:N]", parameter="device")
    if protocol is not None and not isinstance(protocol, Protocol):
        raise HwAwareError(f"the {getattr(protocol, 'name', protocol)} protocol runs on a device agent only; give "
                           "a device URL (ssh://... or http://...)")
    if isinstance(backend, str):
        backend = get_backend(backend, threads=threads, device=devices[0], precision=precision)
    meter = create_meter(energy, backend.accelerator)
    return Measurer(backend, protocol, meter, energy_seconds=energy_seconds, idle_seconds=idle_seconds)


def architecture_model(space: Any, arch: Any, backend_name: str, input_size: int, *,
                       opset: int | None = None) -> ModelToMeasure:
    """What a backend needs for one architecture: ONNX bytes exported in memory, or a module factory.

    ``opset``: the ONNX opset to export at (``None``: the package's default; a remote device may parse only
    older ones, see :attr:`Measurer.onnx_opset`).
    """
    from nni_hwaware.spaces import build_module, export_onnx

    shape = (1, int(space.defaults["in_channels"]), input_size, input_size)
    name = f"{space.name}:{space.arch_hash(arch)}"
    if backend_name == "torch":
        return ModelToMeasure(name, shape, module_factory=lambda: build_module(space, arch, input_size=input_size))
    if opset is None:
        return ModelToMeasure(name, shape, onnx=export_onnx(space, arch, None, input_size=input_size))
    from nni_hwaware.spaces.export import example_input, module_to_onnx_bytes

    module = build_module(space, arch, input_size=input_size)
    return ModelToMeasure(name, shape, onnx=module_to_onnx_bytes(module, example_input(space, input_size),
                                                                 opset=opset))


def measurer_model(measurer: Measurer, space: Any, arch: Any, input_size: int) -> ModelToMeasure:
    """:func:`architecture_model` for what ``measurer`` runs (its backend and the opset its device parses)."""
    return architecture_model(space, arch, measurer.backend.name, input_size, opset=measurer.onnx_opset)


def measure_architectures(
    space: Any,
    archs: Sequence[Any],
    backend: str | Backend | Measurer,
    store: MeasurementStore,
    *,
    input_size: int | None = None,
    runs: int | None = None,
    protocol: Protocol | None = None,
    threads: int = 1,
    energy: str = "auto",
    remeasure: bool = False,
    campaign: str | None = None,
    progress: Callable[[int, int, Measurement], None] | None = None,
) -> list[Measurement]:
    """Measure architectures of a space through a backend into the store, reusing stored measurements.

    Each model is committed in its own transaction as soon as it is measured.

    Parameters
    ----------
    space
        A :class:`~nni_hwaware.spaces.SearchSpace` or its name.
    archs
        Architectures (dicts or JSON).
    backend
        Backend name, a :class:`Backend`, or a ready :class:`Measurer`.
    store
        The measurement store.
    input_size
        Input resolution (default: the space's).
    runs, protocol
        Timed runs (shortcut) or a full :class:`Protocol`.
    threads, energy
        Used when ``backend`` is a name.
    remeasure
        Measure again what is stored (the old values go to the history table).
    progress
        Called as ``progress(done, total, measurement)`` after each model.

    Returns
    -------
    list[Measurement]
        One per architecture, in order.

    Examples
    --------
    >>> import os, tempfile
    >>> from nni_hwaware.spaces import load_space, sample_architectures
    >>> space = load_space("mobilenetv3")
    >>> store = MeasurementStore(os.path.join(tempfile.mkdtemp(), "m.db"))
    >>> out = measure_architectures(space, sample_architectures(space, 1, seed=0), "onnxruntime", store,
    ...                             input_size=16, runs=10, energy="none")
    >>> len(out), store.count()
    (1, 1)
    """
    from nni_hwaware.spaces import load_space

    if isinstance(space, str):
        space = load_space(space)
    size = space.resolve_input_size(input_size)
    if protocol is None:
        protocol = Protocol(runs=runs) if runs is not None else Protocol()
    own = not isinstance(backend, Measurer)
    measurer = backend if isinstance(backend, Measurer) else make_measurer(
        backend, threads=threads, protocol=protocol, energy=energy)
    try:
        canon = [space.validate(a) for a in archs]
        out: list[Measurement] = []
        for i, arch in enumerate(canon):
            stored = _measure_or_reuse(space, arch, measurer, store, size, remeasure, campaign)
            out.append(stored)
            if progress is not None:
                progress(i + 1, len(canon), stored)
        return out
    finally:
        if own:
            measurer.close()


def measure_onnx_file(path: str | Path, measurer: Measurer, store: MeasurementStore, *,
                      remeasure: bool = False) -> tuple[Measurement, bool]:
    """Measure one ONNX file (any model) into the store under the pseudo-space ``onnx``.

    The file is identified by the hash of its bytes; ``input_size`` is the last dimension of its first input
    (0 if unknown). Returns the measurement and whether it was measured now (``False``: already stored).
    """
    import json

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HwAwareError(f"cannot read ONNX file {path}: {exc.strerror}") from None
    file_hash = text_hash(data)
    input_shape = _onnx_input_shape(data, path)
    size = int(input_shape[-1]) if input_shape and isinstance(input_shape[-1], int) else 0
    stored = None if remeasure else store.get_measurement(
        ONNX_SPACE, file_hash, measurer.device_key, measurer.backend.name, size, precision=measurer.backend.precision)
    if stored is not None:
        return stored, False
    result = measurer.measure(ModelToMeasure(path.name, None, onnx=data))
    description = json.dumps({"file": path.name, "sha256": __import__("hashlib").sha256(data).hexdigest(),
                              "bytes": len(data), "input_shape": input_shape}, sort_keys=True)
    m = measurer.to_measurement(result, space=ONNX_SPACE, arch_hash=file_hash, arch_json=description,
                                input_size=size, extra={"path": os.fspath(path.resolve())})
    store.add_measurement(m, device_description=measurer.device_description, replace=remeasure)
    return m, True


def _onnx_input_shape(data: bytes, path: Path) -> list[Any] | None:
    """Shape of the first graph input (dims as ints or names), or ``None`` if the file is not ONNX."""
    try:
        import onnx

        model = onnx.load_model_from_string(data)
    except Exception:  # the backend reports the real error when it loads the model
        return None
    initializers = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        dims = inp.type.tensor_type.shape.dim
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
    return None



def _measure_or_reuse(space: Any, arch: Any, measurer: Measurer, store: MeasurementStore, size: int,
                      remeasure: bool, campaign: str | None) -> Measurement:
    """The stored measurement of one architecture on this measurer's device, or a new one, committed at once."""
    arch_hash = space.arch_hash(arch)
    stored = None if remeasure else store.get_measurement(
        space, arch_hash, measurer.device_key, measurer.backend.name, size, precision=measurer.backend.precision)
    if stored is None:
        result = measurer.measure(measurer_model(measurer, space, arch, size))
        stored = measurer.to_measurement(result, space=space.name, arch_hash=arch_hash,
                                         arch_json=space.canonical_json(arch), input_size=size, campaign=campaign)
        store.add_measurement(stored, space=space, device_description=measurer.device_description,
                              replace=remeasure)
    return stored

def measure_architectures_unstored(space: Any, archs: Sequence[Any], measurer: Measurer, *,
                                   input_size: int) -> list[Measurement]:
    """Measure architectures without a store (NNI trials report them instead), in order (all devices of a pool
    at once)."""
    canon = [space.validate(arch) for arch in archs]
    models = [measurer_model(measurer, space, arch, input_size) for arch in canon]
    if getattr(measurer, "size", 1) > 1 and hasattr(measurer, "measure_many"):
        results: dict[int, ModelResult] = dict(measurer.measure_many(models))
    else:
        results = {i: measurer.measure(model) for i, model in enumerate(models)}
    return [measurer.to_measurement(results[i], space=space.name, arch_hash=space.arch_hash(arch),
                                    arch_json=space.canonical_json(arch), input_size=input_size)
            for i, arch in enumerate(canon)]
