"""build/report.json and build/manifest.json: what was compiled, and the proof it is right.

``report.json`` holds ``artifacts`` (graph, target, precision, path, bytes, sha256, parity
per runner, and for LiteRT the GPU-delegate figures), ``passes`` (one record per pass and
graph), ``baseline`` (stock litert-torch conversions, for comparison) and ``summary``.
``manifest.json`` is the app developer's view: each artifact's file, digest and tensors.
Both are written atomically.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

REPORT_VERSION = 1


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become strings ("inf"), paths strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(_clean(data), fh, indent=2, sort_keys=False)
            fh.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a report is for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def summarize(artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of artifacts and parity checks, and the list of failed checks."""
    failed = []
    checks = 0
    for a in artifacts:
        for runner, p in a.get("parity", {}).items():
            if p.get("skipped"):
                continue
            checks += 1
            if not p.get("passed"):
                failed.append(
                    f"{a['graph']}/{a['target']}/{a['precision']} on {runner}: "
                    + "; ".join(p.get("failures") or [p.get("error", "failed")])
                )
    return {"artifacts": len(artifacts), "parity_checks": checks, "parity_failed": failed, "passed": not failed}


def manifest(artifacts: list[dict[str, Any]], tensors: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "version": REPORT_VERSION,
        "artifacts": [
            {k: a[k] for k in ("graph", "target", "precision", "path", "bytes", "sha256") if k in a}
            | {"tensors": tensors.get(a["graph"], {})}
            for a in artifacts
        ],
    }
