"""Text that reads like instructions to a language model, flagged per chunk.

A document can carry a prompt injection meant for the LLM that synthesises Q&A from it ("ignore previous
instructions and …"), visibly or not (hidden text is dropped at ingest: ``docqa.pdf_visibility``). The
chunk stage flags every chunk in which one of these markers appears, counts them, lists them in the
report, and drops them when ``chunk.drop_instruction_like`` is set. The markers are patterns, not a
classifier: each names what it saw, so a person can judge a flagged chunk.
"""

from __future__ import annotations

import re

MARKERS: dict[str, re.Pattern[str]] = {
    # "ignore (all) previous instructions", "disregard the rules above", "forget your prompt"
    "override_instructions": re.compile(
        r"\b(?:ignore|disregard|forget|override|bypass)\b[^.\n]{0,40}?"
        r"\b(?:previous|prior|above|earlier|preceding|all|any|your|the|these|those|system)\b[^.\n]{0,20}?"
        r"\b(?:instructions?|prompts?|rules|directions|guidelines)\b",
        re.IGNORECASE,
    ),
    # chat-template and role markup that has no business in a document's prose
    "role_tag": re.compile(
        r"<\|(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id)\|>|\[/?INST\]|<</?SYS>>"
        r"|^\s*(?:system|assistant)\s*:",
        re.IGNORECASE | re.MULTILINE,
    ),
    # "you are now DAN", "from now on you will", "Act as a …" opening a sentence ("a method can act as a
    # decorator" and "objects can pretend to be numbers" are prose, not orders)
    "new_persona": re.compile(
        r"\byou are now\b|\bfrom now on,? you\b|(?:^|[.!?:]\s+)act as (?:an?|the|my)\b"
        r"|\b(?:pretend|imagine) (?:that )?you are\b",
        re.IGNORECASE | re.MULTILINE,
    ),
    # requests for secrets: "reveal your API key", "print the system prompt", "send me the password"
    "secret_request": re.compile(
        r"\b(?:reveal|print|show|give|send|tell|output|leak|repeat|expose)\b[^.\n]{0,40}?"
        r"\b(?:api[ _-]?keys?|passwords?|secret keys?|access tokens?|credentials|system prompt|"
        r"private keys?)\b",
        re.IGNORECASE,
    ),
}


def instruction_markers(text: str) -> list[str]:
    """The names of the markers found in ``text``, in :data:`MARKERS` order (empty: none)."""
    return [name for name, pattern in MARKERS.items() if pattern.search(text)]
