"""Every report the test suite produces is checked against the printed JSON Schema.

``install()`` wraps ``Diagnosis.to_dict`` for the session: each distinct report (by the
sha256 of the JSON the report writer writes) is validated with ``jsonschema`` against
``report_model.json_schema()`` when jsonschema is installed, else decoded strictly with
``report_model.decode``. A report that does not validate fails the test that produced it,
naming its source file and the JSON path.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHECKED: dict[str, float] = {"produced": 0, "validated": 0, "seconds": 0.0}


def _validator() -> Callable[[dict[str, Any]], None]:
    from profdiag import report_model

    try:
        import jsonschema
    except ImportError:  # pragma: no cover (jsonschema is a test dependency)
        def decode_only(data: dict[str, Any]) -> None:
            report_model.decode(data, (data.get("source") or {}).get("path", "<report>"))

        return decode_only
    schema = report_model.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)

    def check(data: dict[str, Any]) -> None:
        error = jsonschema.exceptions.best_match(validator.iter_errors(data))
        if error is not None:
            where = (data.get("source") or {}).get("path", "<report>")
            raise AssertionError(f"{where}: the report does not validate against "
                                 f"`profdiag schema` at {error.json_path}: {error.message}")
        report_model.decode(data, "<report>")

    return check


@contextmanager
def install() -> Iterator[None]:
    import orjson

    from profdiag.diagnosis.model import Diagnosis
    from profdiag.renderers.json_ import dumps

    original = Diagnosis.to_dict
    check = _validator()
    seen: set[str] = set()

    def to_dict(self: Diagnosis) -> dict[str, Any]:
        data = original(self)
        start = time.perf_counter()
        CHECKED["produced"] += 1
        text = dumps(data)
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            check(orjson.loads(text))
            CHECKED["validated"] += 1
        CHECKED["seconds"] += time.perf_counter() - start
        return data

    Diagnosis.to_dict = to_dict  # type: ignore[method-assign]
    try:
        yield
    finally:
        Diagnosis.to_dict = original  # type: ignore[method-assign]
        stats = os.environ.get("PROFDIAG_SCHEMA_GUARD_STATS")
        if stats:  # what the check cost this session, for whoever sizes the CI
            Path(stats).write_text(orjson.dumps(CHECKED).decode())
