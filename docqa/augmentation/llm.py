"""Knowledge augmentation by a chat model: one prompt per rewrite kind (EntiGraph and Jiang et al. style).

The model is the synthesize section's (an OpenAI-compatible server or a local ``transformers`` model).
Each prompt asks for one rewrite of the passage that keeps every fact and adds none; the reply is the
rewrite, with any preamble line ("Here is the rewrite:") dropped. ``shuffled`` is always made by the
rules: a model adds nothing to a reordering.
"""

from __future__ import annotations

import re

from docqa.synthesis.base import ChatRequest

PROMPT_VERSION = "augment-v1"
SYSTEM_PROMPT = (
    "You rewrite passages of technical documents for a language model to learn from. You keep every fact, "
    "name and number of the passage, add no fact of your own, and reply with the rewrite only."
)
KIND_INSTRUCTIONS = {
    "facts": "List every fact the passage states, one self-contained sentence per line, each naming its "
    "subject (never 'it' or 'this').",
    "entities": "For each term, name or concept the passage talks about, write a short note that starts "
    "with the term and says, in your own words, everything the passage states about it.",
    "rephrased": "Rewrite the passage in your own words, with different sentence structure and wording, "
    "keeping every fact.",
    "explained": "Explain what the passage says to a newcomer to the subject, in plain prose, keeping "
    "every fact and saying how they relate.",
}
USER_PROMPT = """Document: {title}

Passage:
\"\"\"
{text}
\"\"\"

{instruction}
Write in {language}. Reply with the rewrite only, no introduction."""
_PREAMBLE = re.compile(r"^(?:sure|here(?:'s| is| are)|certainly|okay|ok)\b[^\n]*:\s*$", re.IGNORECASE)


def rewrite_request(request_id: str, kind: str, text: str, title: str, language: str) -> ChatRequest:
    if kind not in KIND_INSTRUCTIONS:
        raise ValueError(
            f"no prompt writes {kind!r} rewrites; the prompts write {', '.join(KIND_INSTRUCTIONS)}"
        )
    prompt = USER_PROMPT.format(
        title=title or "(untitled)", text=text, instruction=KIND_INSTRUCTIONS[kind], language=language
    )
    return ChatRequest(
        request_id=request_id,
        messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}],
    )


def read_rewrite(reply: str) -> str:
    """The rewrite in a reply: code fences and a first preamble line ("Here is …:") removed."""
    text = reply.strip()
    if text.startswith("```"):
        text = text.strip("`").split("\n", 1)[-1] if "\n" in text else ""
    lines = text.split("\n")
    if lines and _PREAMBLE.match(lines[0].strip()):
        lines = lines[1:]
    return "\n".join(lines).strip()
