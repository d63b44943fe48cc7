"""What every request text must pass before it reaches a model, for search and the embedding APIs alike."""

from __future__ import annotations

from fastapi import HTTPException


def check_text(text: str, what: str) -> None:
    """A text the tokenizer can read: JSON allows lone surrogates (``\\ud800``), UTF-8 does not."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise HTTPException(400, f"{what} is not valid Unicode: a lone surrogate at character {exc.start + 1}") from None


def error_body(path: str, status: int, message: str) -> dict[str, object]:
    """The service's one error format, ``{"error": message}``, except under ``/v1/``, where OpenAI's clients
    read only their own (``{"error": {"message": ...}}``) and would otherwise show a bare status code."""
    if path.startswith("/v1/"):
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return {"error": message}
