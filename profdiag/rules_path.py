"""Where the shipped rule files (hardware table, policies) live."""

from __future__ import annotations

from pathlib import Path


def rules_dir() -> Path:
    """Return the directory holding the shipped rule files.

    An installed wheel carries them as ``profdiag/_rules`` (pyproject's force-include); a source
    checkout or editable install keeps them in the repository's top-level ``rules/``.
    """
    import profdiag

    packaged = Path(profdiag.__file__).resolve().parent / "_rules"
    if packaged.is_dir():
        return packaged
    return Path(profdiag.__file__).resolve().parent.parent / "rules"
