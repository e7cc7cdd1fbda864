"""The documents watcher: announces a change once, with what was added, changed and removed, as a real
Prefect event on the (test) server; says nothing while the location is what was last trained on. The
workspace is a URL (fsspec's in-memory store), so the state lives on the store, not in a local folder."""

from __future__ import annotations

import time

import fsspec
import pytest
from conftest import write_topic_documents

from docqa.watch import EVENT, fingerprint, read_state, resource_id, write_state
from docqa.workspace import Workspace

pytestmark = pytest.mark.slow
EXTENSIONS = [".pdf", ".txt", ".md"]


def server_events(resource: str, timeout_s: float = 30.0, expected: int = 1) -> list[dict]:
    """The ``docqa.documents.changed`` events the server stored for ``resource`` (they arrive async)."""
    from prefect.client.orchestration import get_client

    query = {
        "filter": {
            "event": {"name": [EVENT]},
            "resource": {"id": [resource]},
            "occurred": {"since": "2000-01-01T00:00:00Z"},
        },
        "limit": 50,
    }
    deadline = time.monotonic() + timeout_s
    while True:
        with get_client(sync_client=True) as client:
            events = client.request("POST", "/events/filter", json=query).json()["events"]
        if len(events) >= expected or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def test_a_change_is_announced_once_with_what_changed(prefect_harness, tmp_path):
    from flows.watch import watch_documents

    docs = write_topic_documents(tmp_path / "docs")
    workspace = Workspace("memory://watch-test/ws")
    write_state(workspace, "trained", str(docs), fingerprint(str(docs), EXTENSIONS))

    quiet = watch_documents(docs=str(docs), workspace=workspace.location)
    assert quiet == {"changed": False, "announced": False, "documents": 4}

    (docs / "operators.md").write_text("Binary arithmetic operators have the usual priority levels.")
    (docs / "names.txt").write_text("Names refer to objects, and are introduced by name binding.")
    (docs / "functions.txt").unlink()
    first = watch_documents(docs=str(docs), workspace=workspace.location)
    assert first["announced"] is True
    assert (first["added"], first["changed"], first["removed"]) == (
        ["operators.md"],
        ["names.txt"],
        ["functions.txt"],
    )
    again = watch_documents(docs=str(docs), workspace=workspace.location)  # the next tick: run still pending
    assert again == {"changed": True, "announced": False, "documents": 4}

    events = server_events(resource_id(str(docs)))
    assert len(events) == 1
    assert events[0]["payload"]["added"] == ["operators.md"]
    assert events[0]["payload"]["location"] == str(docs.resolve())
    assert read_state(workspace, "announced", str(docs)) == fingerprint(str(docs), EXTENSIONS)
    on_store = fsspec.filesystem("memory").find("/watch-test/ws/state")
    assert [p.rsplit("/", 1)[-1].split("-")[0] for p in on_store] == ["announced", "trained"]

    # once a run trained on it, the location is quiet again; a further upload is a new announcement
    write_state(workspace, "trained", str(docs), fingerprint(str(docs), EXTENSIONS))
    assert watch_documents(docs=str(docs), workspace=workspace.location)["announced"] is False
    (docs / "more.txt").write_text("Another document arrives later with its own text.")
    later = watch_documents(docs=str(docs), workspace=workspace.location)
    assert later["announced"] is True and later["added"] == ["more.txt"] and later["removed"] == []
    assert len(server_events(resource_id(str(docs)), expected=2)) == 2
