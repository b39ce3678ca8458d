"""The gate result as JUnit XML (the Jenkins/Ant dialect CI systems read).

One ``<testsuite name="profdiag gate">`` inside ``<testsuites>``; one
``<testcase classname="profdiag.gate" name="<check id>">`` per check: ``<failure>`` for a
failed check, ``<skipped/>`` for a skipped (or severity "off") check, and a warning passes
with its summary in ``<system-out>``. No timestamps: the output is deterministic.
Takes ``GateResult.to_dict()``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

SUITE = "profdiag gate"
CLASSNAME = "profdiag.gate"
# characters XML 1.0 cannot hold at all (kernel names come from untrusted traces)
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(value: Any) -> str:
    return _INVALID_XML.sub("\ufffd", "" if value is None else str(value))


def _details(check: dict[str, Any]) -> str:
    parts = [f"{check['id']}: {check['summary']}"]
    for key in ("observed", "limit", "baseline"):
        if check.get(key) is not None:
            parts.append(f"{key}: {check[key]}")
    parts.append(f"severity: {check.get('severity')}")
    return "\n".join(parts)


def render(data: dict[str, Any]) -> str:
    """The XML document (UTF-8 declaration, two-space indent)."""
    checks = data.get("checks") or []
    failures = sum(c["status"] == "fail" for c in checks)
    skipped = sum(c["status"] == "skip" for c in checks)
    counts = {"tests": str(len(checks)), "failures": str(failures), "errors": "0",
              "skipped": str(skipped), "time": "0"}
    root = ET.Element("testsuites", {"name": SUITE, **counts})
    suite = ET.SubElement(root, "testsuite", {"name": SUITE, **counts})
    props = ET.SubElement(suite, "properties")
    for name in ("trace", "mode", "baseline", "baseline_mode", "status"):
        if data.get(name) is not None:
            ET.SubElement(props, "property", {"name": name, "value": _text(data[name])})
    for c in checks:
        case = ET.SubElement(suite, "testcase", {"classname": CLASSNAME, "name": _text(c["id"]),
                                                 "time": "0"})
        if c["status"] == "fail":
            failure = ET.SubElement(case, "failure", {"message": _text(c["summary"]),
                                                      "type": "profdiag.gate." + _text(
                                                          c.get("severity", "fail"))})
            failure.text = _text(_details(c))
        elif c["status"] == "skip":
            ET.SubElement(case, "skipped", {"message": _text(c["summary"])})
        elif c["status"] == "warn":
            out = ET.SubElement(case, "system-out")
            out.text = _text("WARNING " + _details(c))
    if not len(props):
        suite.remove(props)
    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"
