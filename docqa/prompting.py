"""One way to turn a question into a prompt, shared by SFT and evaluation so they cannot drift apart."""

from __future__ import annotations

from docqa.settings import ModelSettings


def uses_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


OPEN_BOOK_PROMPT = "Answer the question using the passages below.\n\n{passages}\n\nQuestion: {question}"


def open_book_question(question: str, passages: list[str]) -> str:
    """A question with passages to read first: the open-book references of evaluation (oracle, RAG)."""
    numbered = "\n\n".join(f"Passage {i}:\n{text}" for i, text in enumerate(passages, 1))
    return OPEN_BOOK_PROMPT.format(passages=numbered, question=question)


def sft_example(tokenizer, question: str, answer: str, settings: ModelSettings) -> dict:
    """A TRL prompt-completion example: conversational with a chat template, plain text without one."""
    if uses_chat_template(tokenizer):
        return {
            "prompt": [{"role": "user", "content": question}],
            "completion": [{"role": "assistant", "content": answer}],
        }
    return {
        "prompt": settings.prompt_template.format(question=question),
        "completion": answer + tokenizer.eos_token,
    }


def qa_text(tokenizer, question: str, answer: str, settings: ModelSettings) -> str:
    """A whole Q&A example as one text, exactly as SFT presents it (the chat template's turns, or the
    prompt template and the answer): how mixed training writes the SFT pairs into pretraining."""
    if uses_chat_template(tokenizer):
        turns = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        return tokenizer.apply_chat_template(turns, tokenize=False)
    return settings.prompt_template.format(question=question) + answer


def generation_prompt(tokenizer, question: str, settings: ModelSettings) -> str:
    """The text a model continues to answer ``question``, exactly as SFT presented it."""
    if uses_chat_template(tokenizer):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
    return settings.prompt_template.format(question=question)


def encode_prompts(tokenizer, questions: list[str], settings: ModelSettings):
    """Left-padded batch of generation prompts (the chat template already carries special tokens)."""
    prompts = [generation_prompt(tokenizer, q, settings) for q in questions]
    tokenizer.padding_side = "left"
    return tokenizer(
        prompts, return_tensors="pt", padding=True, add_special_tokens=not uses_chat_template(tokenizer)
    )
