"""Loading and writing saved artifacts safely: predictor folders, skops models, output folders.

Everything we ship or build is loaded without executing code from the file:

* skops models load only when *every* object in the file is of a type in :data:`SKOPS_ALLOWED_TYPES`
  (exact full names, never prefixes) and is rebuilt by a loader in :data:`SKOPS_ALLOWED_LOADERS`. skops's own
  check trusts any scikit-learn estimator by default, ``FunctionTransformer`` and ``Pipeline`` included, and a
  check by prefix (``builtins.``, ``numpy.``) lets ``builtins.exec`` through; so the whole object tree in the
  file's ``schema.json`` is read as JSON and checked here before skops sees it.
* A predictor folder's ``predictor.json`` must be a JSON object; the file names it lists must be plain names
  inside the folder (no ``..``, no absolute paths, no links out of it).
* An output folder is replaced only when it is empty or holds an artifact of ours of the same kind, never
  when it is the working folder or one above it, and atomically (the new folder is complete before the old one
  goes).
* An output file is written atomically (:func:`write_atomically`, :func:`write_text_atomically`,
  :func:`write_json_atomically`, or :func:`atomic_path` for writers that take a file name): readers see the old
  file or the whole new one, never half of it. This is the one implementation; ``measure/agent.py`` keeps a
  copy because it runs alone on the device under Python 3.6.

Examples
--------
>>> safe_member(Path("predictors/jetson_nano"), "power_w.skops").name
'power_w.skops'
>>> safe_member(Path("predictors/jetson_nano"), "../../etc/passwd")
Traceback (most recent call last):
...
nni_hwaware.errors.ArtifactError: predictors/jetson_nano names the file '../../etc/passwd', which is not a plain file name inside the folder; rebuild the predictor
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nni_hwaware.errors import ArtifactError, HwAwareError

#: Every type an object in one of our skops files may have, by full name. Generated from what our savers
#: write (ESM gb/rf/linear surrogates, the Jetson Nano gradient-boosting models); tests/test_artifacts.py
#: fails when a saver writes a type that is not here.
SKOPS_ALLOWED_TYPES = frozenset({
    "builtins.dict", "builtins.list", "builtins.str", "builtins.tuple", "builtins.int", "builtins.float",
    "builtins.bool",
    "numpy.ndarray", "numpy.float64", "numpy.float32", "numpy.int64", "numpy.int32", "numpy.uint64",
    "numpy.bool_", "numpy.random._generator.Generator", "numpy.random.mtrand.RandomState",
    "nni_hwaware.esm.surrogate.SklearnSurrogate",
    "sklearn._loss._loss.CyHalfSquaredError", "sklearn._loss._loss.CyPinballLoss",
    "sklearn._loss.link.IdentityLink", "sklearn._loss.link.Interval",
    "sklearn._loss.loss.HalfSquaredError", "sklearn._loss.loss.PinballLoss",
    "sklearn.dummy.DummyRegressor",
    "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.ensemble._gb.GradientBoostingRegressor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.linear_model._base.LinearRegression",
    "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.tree._tree.Tree",
})

#: How skops may rebuild those objects. Functions, methods, partials and ``__reduce__`` calls are never needed
#: by what we save, and they are how a crafted file runs code.
SKOPS_ALLOWED_LOADERS = frozenset({
    "DictNode", "ListNode", "TupleNode", "JsonNode", "TypeNode", "ObjectNode", "NdArrayNode", "LossNode",
    "TreeNode", "RandomGeneratorNode", "RandomStateNode",
})

#: A skops file's ``schema.json`` larger than this is not one of ours (ours are well under 1 MB).
_MAX_SCHEMA_BYTES = 64 * 2**20


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    """Every skops node (a dict with ``__class__`` and ``__module__``) in a schema, without recursion."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "__class__" in item or "__loader__" in item:
                yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def skops_contents(path: Path) -> tuple[set[str], set[str]]:
    """The full type names and the loader names of every object stored in a skops file."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("schema.json")
        if info.file_size > _MAX_SCHEMA_BYTES:
            raise ArtifactError(f"{path} is not a model we saved (schema of {info.file_size} bytes)")
        schema = json.loads(archive.read(info))
    types, loaders = set(), set()
    for node in _nodes(schema):
        types.add(f"{node.get('__module__')}.{node.get('__class__')}")
        loaders.add(str(node.get("__loader__")))
    return types, loaders


def load_skops(path: str | Path) -> Any:
    """A scikit-learn model saved with skops, refusing anything outside the exact allow-lists.

    Raises :class:`~nni_hwaware.errors.ArtifactError` (one line: the file and the refused names) before any
    object is constructed when the file holds another type or loader, and when it is missing or corrupt.
    """
    import skops.io as sio

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model file {path} is missing; rebuild the predictor")
    try:
        types, loaders = skops_contents(path)
        untrusted = set(sio.get_untrusted_types(file=path))
    except ArtifactError:
        raise
    except Exception as exc:  # any reader error (zip, JSON, skops) means the same to the user
        raise ArtifactError(f"model file {path} is corrupt or truncated ({type(exc).__name__}); "
                            "rebuild the predictor") from None
    refused = sorted((types | untrusted) - SKOPS_ALLOWED_TYPES) + sorted(loaders - SKOPS_ALLOWED_LOADERS)
    if refused:
        raise ArtifactError(f"refusing to load {path}: it holds {', '.join(refused[:5])}"
                            + (f" and {len(refused) - 5} more" if len(refused) > 5 else "")
                            + ", which our predictors never save (a file that could run code); rebuild the "
                            "predictor from its data")
    try:
        return sio.load(path, trusted=sorted(untrusted))
    except Exception as exc:
        raise ArtifactError(f"model file {path} is corrupt or truncated ({type(exc).__name__}); "
                            "rebuild the predictor") from None


def safe_member(folder: Path, name: Any) -> Path:
    """``folder / name`` for a file name read from an artifact's JSON, refused when it leaves the folder."""
    bad = (not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", "..")
           or "\x00" in name)
    path = Path(folder) / name if not bad else Path(folder)
    if bad or (path.is_symlink() and Path(folder).resolve() not in path.resolve().parents):
        raise ArtifactError(f"{folder} names the file {name!r}, which is not a plain file name inside the "
                            "folder; rebuild the predictor")
    return path


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON file that must hold an object (``predictor.json``, ``build.json``), with one-line errors."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing; {what}") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ArtifactError(f"{path} is corrupt or truncated ({type(exc).__name__}); {what}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} holds a JSON {type(data).__name__}, not an object; {what}")
    return data


def require_keys(meta: dict[str, Any], keys: tuple[str, ...], source: Path) -> None:
    """Refuse a metadata object that lacks any of ``keys``."""
    missing = [k for k in keys if k not in meta]
    if missing:
        raise ArtifactError(f"{source} lacks {', '.join(repr(k) for k in missing)}; rebuild the predictor")


# ------------------------------------------------------------------------------------------ output folders
def declared_kind(folder: Path) -> str | None:
    """The ``kind`` a folder's ``predictor.json`` declares, or ``None`` (no file, not JSON, no kind)."""
    try:
        meta = json.loads((folder / "predictor.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    kind = meta.get("kind") if isinstance(meta, dict) else None
    return kind if isinstance(kind, str) else None


def refuse_foreign_folder(out: str | Path, parameter: str, ours: Callable[[Path], bool], what: str) -> Path:
    """Refuse an output folder that must not be written into or replaced; returns it as a ``Path``.

    Refused: a file, the working folder or one above it, and a non-empty folder for which ``ours`` is false
    (it holds something other than an earlier output of ours). ``what`` names the output in the messages;
    ``parameter`` is the name of the caller's parameter (``"out"``), which the messages start with.
    """
    out = Path(out)
    resolved = out.resolve()
    cwd = Path.cwd().resolve()
    name = parameter if parameter.isidentifier() else None
    if resolved == cwd or resolved in cwd.parents:
        raise HwAwareError(f"{parameter} {out} is the current folder or one above it; give a new folder for "
                           f"{what}", parameter=name)
    if out.exists() and not out.is_dir():
        raise HwAwareError(f"{parameter} {out} is a file; give a folder for {what}", parameter=name)
    if out.is_dir() and any(out.iterdir()) and not ours(out):
        raise HwAwareError(f"{parameter} {out} holds other files, not {what} of ours; give a new or empty "
                           "folder", parameter=name)
    return out


def check_output_dir(out: str | Path, kind: str, parameter: str = "out") -> Path:
    """Refuse a predictor folder we must not replace, before any work starts; returns it as a ``Path``.

    Allowed: a folder that does not exist yet (in an existing, writable parent), an empty folder, or a folder
    whose ``predictor.json`` declares ``kind`` (:func:`refuse_foreign_folder` says what is refused).
    """
    article = "an" if kind[:1] in "aeiou" else "a"
    out = refuse_foreign_folder(out, parameter, lambda folder: declared_kind(folder) == kind,
                                f"{article} {kind} predictor")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise HwAwareError(f"cannot write {out}: folder {parent} does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".probe-"):
            pass
    except OSError as exc:
        raise HwAwareError(f"cannot write into {parent}: {exc.strerror}; choose a writable {parameter}",
                           mentions=(parameter,)) from None
    return out


def staging_dir(out: Path) -> Path:
    """A new hidden folder beside ``out`` to write into before :func:`replace_output_dir`."""
    parent = out.resolve().parent
    staged = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}.tmp-"))
    umask = os.umask(0)
    os.umask(umask)
    staged.chmod(0o777 & ~umask)  # mkdtemp makes folders private; the predictor gets the usual permissions
    return staged


def replace_output_dir(staged: Path, out: Path, kind: str, parameter: str = "out") -> None:
    """Move a complete ``staged`` folder to ``out``, replacing an old predictor of the same kind.

    The old folder is first renamed aside, so ``out`` is always either the old or the new predictor; it is
    deleted only after the new one is in place. The checks of :func:`check_output_dir` run again here, because
    the folder may have changed during the work.
    """
    try:
        check_output_dir(out, kind, parameter)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.resolve().parent, prefix=f".{out.name}.old-"))
            os.replace(out, old / "content")
        try:
            os.replace(staged, out)
        except OSError:
            if old is not None:
                os.replace(old / "content", out)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


# ------------------------------------------------------------------------------------------ output files
@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A new temporary file beside ``path`` for a writer that takes a file name; it becomes ``path`` when the
    block ends, and is removed when the block raises.

    The temporary name ends with ``path``'s suffix, so writers that choose the format by it (matplotlib's
    ``savefig``) write the right one. Renaming within one folder is atomic, so readers see the old ``path`` or
    the whole new file, never half of it.

    Raises
    ------
    HwAwareError
        When the folder does not exist or the file cannot be created or renamed there.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "figure.png") as tmp:
    ...     _ = tmp.write_bytes(b"png")
    >>> sorted(p.name for p in folder.iterdir())
    ['figure.png']
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise HwAwareError(f"cannot write {path}: folder {folder} does not exist")
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
        os.close(fd)
    except OSError as exc:
        raise HwAwareError(f"cannot write {path}: {exc.strerror}; choose a writable location") from None
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; give them the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        raise HwAwareError(f"cannot write {path}: {exc.strerror or exc}; choose a writable location") from None
    finally:
        tmp.unlink(missing_ok=True)  # gone already after the rename


def write_atomically(path: str | Path, data: bytes) -> Path:
    """Write bytes to ``path`` through a temporary file in the same folder (:func:`atomic_path`); returns it.

    Examples
    --------
    >>> import tempfile
    >>> out = write_atomically(Path(tempfile.mkdtemp()) / "model.onnx", b"onnx")
    >>> out.read_bytes()
    b'onnx'
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write UTF-8 text to ``path`` atomically (:func:`write_atomically`); returns it."""
    return write_atomically(path, text.encode("utf-8"))


def write_json_atomically(path: str | Path, obj: Any, **json_kwargs: Any) -> Path:
    """Write ``obj`` as JSON (``json.dumps(obj, **json_kwargs)`` and a final newline) to ``path`` atomically.

    Examples
    --------
    >>> import tempfile
    >>> out = write_json_atomically(Path(tempfile.mkdtemp()) / "result.json", {"latency_ms": 1.5}, indent=1)
    >>> json.loads(out.read_text())
    {'latency_ms': 1.5}
    """
    return write_text_atomically(path, json.dumps(obj, **json_kwargs) + "\n")
