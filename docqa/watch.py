"""What a documents location held when it was last trained on, and when it was last announced.

Two small JSON files per location under ``WORKSPACE/state/`` (on the store of a URL workspace, so the
watcher and the pipeline may run on different machines): ``trained-<key>.json``, written by a
pipeline run that completed (the fingerprints it saw when it started), and ``announced-<key>.json``,
written by the watcher when it emits ``docqa.documents.changed``. The watcher announces a change once:
while the triggered run is pending the location still differs from what was trained, but not from what
was announced.
"""

from __future__ import annotations

from pydantic import BaseModel

from docqa.hashing import json_digest
from docqa.sources import DocumentDiff, canonical_location, diff_fingerprints, fingerprint_location
from docqa.workspace import Workspace

EVENT = "docqa.documents.changed"
RESOURCE_PREFIX = "docqa.documents."


class LocationState(BaseModel):
    location: str
    fingerprints: dict[str, str]  # relative name → content fingerprint (docqa.sources)


def location_key(location: str) -> str:
    return json_digest(canonical_location(location))[:16]


def resource_id(location: str) -> str:
    """The event resource a location's changes are announced on (what deployment triggers match)."""
    return f"{RESOURCE_PREFIX}{location_key(location)}"


def _name(kind: str, location: str) -> str:
    return f"state/{kind}-{location_key(location)}.json"


def read_state(workspace: Workspace, kind: str, location: str) -> dict[str, str] | None:
    """The fingerprints last ``trained`` on or ``announced`` for a location; None when never."""
    record = workspace.read_record(_name(kind, location))
    return LocationState.model_validate(record).fingerprints if record is not None else None


def write_state(workspace: Workspace, kind: str, location: str, fingerprints: dict[str, str]) -> None:
    state = LocationState(location=canonical_location(location), fingerprints=fingerprints)
    workspace.write_record(_name(kind, location), state)


def changes_since_trained(workspace: Workspace, location: str, current: dict[str, str]) -> DocumentDiff:
    """Everything is new when the location was never trained on."""
    return diff_fingerprints(read_state(workspace, "trained", location) or {}, current)


def fingerprint(location: str, extensions: list[str]) -> dict[str, str]:
    return fingerprint_location(canonical_location(location), extensions)
