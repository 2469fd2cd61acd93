"""Where the data folders shipped with the package are, both in a repository checkout and in a wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _PACKAGE_DIR.parent


def data_dir(name: str) -> Path:
    """Return the folder ``search_spaces`` or ``predictors``.

    In a checkout (or an editable install) the folders live at the top of the repository; a wheel ships them
    inside the package as ``nni_hwaware.<name>``.

    Parameters
    ----------
    name
        ``"search_spaces"`` or ``"predictors"``.
    """
    in_repo = _REPO_ROOT / name
    if in_repo.is_dir() and (_REPO_ROOT / "pyproject.toml").is_file():
        return in_repo
    return _PACKAGE_DIR / name
