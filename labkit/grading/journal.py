"""The signed resume journal: one record per student that ``grade(resume=True)`` may reuse.

Each record (``<feedback folder>/<student>.json``) carries the grade, the run's settings
fingerprint (:func:`run_settings`) and an HMAC-SHA256 signature with a key kept in
``<feedback folder>/.labkit-journal-key`` (mode 0600). A resumed run reuses a record only
when the signature, the settings and the submission's sha256 all match.

Example:
    >>> key = journal_key(folder)  # doctest: +SKIP
    >>> write_journal(folder, result, run_settings(settings, lesson="01_feature_extraction", isolation="bwrap"), key)
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from labkit.grading._files import write_atomic
from labkit.grading.discover import safe_name
from labkit.grading.report import SubmissionGrade
from labkit.grading.settings import GradingSettings

__all__ = ["JOURNAL_VERSION", "run_settings", "journal_key", "write_journal", "load_journal", "remove_stale_feedback"]

JOURNAL_VERSION = 3
_KEY_FILE = ".labkit-journal-key"


def run_settings(settings: GradingSettings, *, lesson: str, isolation: str) -> dict:
    """What a record must match to be reused: the lesson, the isolation used, the settings' fingerprint.

    Example:
        >>> run_settings(GradingSettings(), lesson="01_feature_extraction", isolation="bwrap")["lesson"]
        '01_feature_extraction'
    """
    return {"lesson": lesson, "isolation": isolation, "fingerprint": settings.fingerprint()}


def journal_key(folder: Path) -> bytes:
    """This output folder's signing key (created on first use, readable by the grader's user only)."""
    path = folder / _KEY_FILE
    try:
        key = path.read_bytes()
        if len(key) == 32:
            return key
    except OSError:
        pass
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def _sign(record: dict, key: bytes) -> str:
    """HMAC-SHA256 of the record's canonical JSON."""
    body = json.dumps(record, sort_keys=True, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def write_journal(folder: Path, result: SubmissionGrade, settings: dict, key: bytes) -> None:
    """Write the student's signed record and feedback file; ``settings`` from :func:`run_settings`."""
    name = safe_name(result.student)
    record = {"labkit_grade": JOURNAL_VERSION, "settings": settings, "grade": result.to_dict()}
    record["signature"] = _sign(record, key)
    write_atomic(folder / f"{name}.json", json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    write_atomic(folder / f"{name}.md", result.feedback_markdown())


def _verified(path: Path, key: bytes) -> dict | None:
    """The journal record at ``path`` if this grader signed it with ``key``, else None."""
    try:
        if path.stat().st_size > 10_000_000:
            return None
        record = json.loads(path.read_text(encoding="utf-8"))
        signature = record.pop("signature")
        if not isinstance(signature, str) or not hmac.compare_digest(signature, _sign(record, key)):
            return None
        return record
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def load_journal(path: Path, submission: Path, settings: dict, key: bytes) -> SubmissionGrade | None:
    """The grade recorded at ``path`` if signed with ``key``, for these settings and this very submission."""
    record = _verified(path, key)
    if record is None:
        return None
    try:
        if record.get("labkit_grade") != JOURNAL_VERSION or record.get("settings") != settings:
            return None
        result = SubmissionGrade.from_dict(record["grade"])
        if result.sha256 != hashlib.sha256(submission.read_bytes()).hexdigest():
            return None
        return result
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_stale_feedback(folder: Path, keep: set[str], key: bytes) -> None:
    """Delete feedback files this grader signed for students no longer in the batch."""
    for record in folder.glob("*.json"):
        if record.stem in keep or _verified(record, key) is None:
            continue
        record.unlink(missing_ok=True)
        record.with_suffix(".md").unlink(missing_ok=True)
