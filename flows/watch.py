"""Watch a documents location and announce changes: the start of re-training by itself.

Run on a schedule (the ``docqa-watch-documents`` deployment's cron), the flow fingerprints the location
(a local folder or any fsspec URL) and compares it with what the last completed pipeline run trained on.
When they differ, it emits one ``docqa.documents.changed`` event that lists the documents added, changed
and removed; the pipeline deployment's trigger turns that event into a run (debounced: a burst of
uploads makes one run). A change is announced once, not again on every tick while its run is pending.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.events import emit_event

from docqa.settings import IngestSettings
from docqa.sources import canonical_location
from docqa.watch import (
    EVENT,
    changes_since_trained,
    fingerprint,
    read_state,
    resource_id,
    write_state,
)
from docqa.workspace import Workspace

EXTENSIONS = IngestSettings().extensions
LISTED_NAMES = 200  # names per list in the event payload (counts are always complete)


@flow(name="docqa-watch-documents", description=__doc__.splitlines()[0])
def watch_documents(
    docs: str,
    workspace: str = "workspace",
    extensions: list[str] = EXTENSIONS,
) -> dict[str, Any]:
    """Emit ``docqa.documents.changed`` when ``docs`` differs from what was last trained on.

    Args:
        docs: the documents location: a folder or an fsspec URL (s3://bucket/prefix)
        workspace: the pipeline's workspace (a shared path or an fsspec URL), where it records what it
            trained on
        extensions: file types that count as documents
    """
    logger = get_run_logger()
    ws = Workspace(workspace)
    current = fingerprint(docs, extensions)
    diff = changes_since_trained(ws, docs, current)
    if diff.empty:
        logger.info("%s: %d documents, as last trained on; nothing to announce", docs, len(current))
        return {"changed": False, "announced": False, "documents": len(current)}
    if read_state(ws, "announced", docs) == current:
        logger.info("%s: change already announced; its run is pending or running", docs)
        return {"changed": True, "announced": False, "documents": len(current)}
    lists = {kind: getattr(diff, kind) for kind in ("added", "changed", "removed")}
    payload = {
        "location": canonical_location(docs),
        "workspace": ws.location,
        "documents": len(current),
        **{kind: names[:LISTED_NAMES] for kind, names in lists.items()},
        **{f"{kind}_count": len(names) for kind, names in lists.items()},
    }
    event = emit_event(
        EVENT,
        resource={
            "prefect.resource.id": resource_id(docs),
            "prefect.resource.name": canonical_location(docs),
        },
        payload=payload,
    )
    write_state(ws, "announced", docs, current)
    logger.info(
        "%s: announced %s (%s)",
        docs,
        EVENT,
        ", ".join(f"{len(names)} {kind}" for kind, names in lists.items()),
    )
    return {"changed": True, "announced": True, "event_id": str(event.id) if event else None, **payload}
