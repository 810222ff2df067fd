"""The HTTP API's shapes: request and response bodies (pydantic), the JSON error and its OpenAPI entries.

Every error the server answers is `{"error": {"type", "message", "limit"?, "maximum"?, "value"?}}` (ErrorDetail);
routes raise `ApiError(status, type, message)` and app.py turns it into that JSON.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from softprompt.errors import SoftpromptError

# Task names never become paths: they are matched against the registry, after this pattern.
TASK_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def valid_name(name: str) -> bool:
    """Whether `name` (a prompt file's stem) may be served as a task."""
    return re.fullmatch(TASK_NAME, name) is not None


def _encodable(text: str) -> str:
    # JSON may carry lone surrogates ("\ud800"); the tokenizer cannot take them: refuse as bad input.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (lone surrogate)") from None
    return text


TaskName = Annotated[str, StringConstraints(pattern=TASK_NAME), Field(
    description="A task served by this server (a prompt file's stem); see GET /v1/tasks.", examples=["sst2"])]
Text = Annotated[str, AfterValidator(_encodable)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ClassifyBody(_Body):
    task: TaskName
    inputs: list[Text] = Field(min_length=1, description="Texts to label (at most max_inputs).",
                               examples=[["sentence : a gem of a movie ."]])


class GenerateBody(_Body):
    task: TaskName
    input: Text = Field(description="Text to continue.", examples=["question : who wrote hamlet ? answer :"])
    max_new_tokens: int | None = Field(default=None, ge=1, description="Tokens to generate at most "
                                       "(default and upper bound: the server's max_new_tokens).")


class Prediction(BaseModel):
    label: str = Field(description="The most likely label word.")
    probabilities: dict[str, float | None] = Field(description="Softmax over the label words' log-likelihoods.")
    scores: dict[str, float | None] = Field(description="Summed log-likelihood of each label word.")


class ClassifyResponse(BaseModel):
    task: str
    predictions: list[Prediction]


class GenerateResponse(BaseModel):
    task: str
    output: str


class TaskInfo(BaseModel):
    name: str
    prompt_length: int = Field(description="P: prompt vectors.")
    hidden_size: int = Field(description="H.")
    label_words: list[str] | None
    metrics: Any = Field(default=None, description="The prompt file's recorded metrics, if any.")
    init: Any = None
    base_model: Any = None
    file: str | None = None


class SkippedFile(BaseModel):
    file: str
    reason: str


class TasksResponse(BaseModel):
    model: str
    tasks: list[TaskInfo]
    skipped: list[SkippedFile]


class Health(BaseModel):
    status: str
    model: str
    version: str
    tasks: int
    queued: int
    batches: int
    examples: int


class ErrorDetail(BaseModel):
    type: str
    message: str
    limit: str | None = None
    maximum: int | None = None
    value: int | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ApiError(SoftpromptError):
    """An error answered as JSON with `status`; `limit` names the setting that was exceeded."""

    def __init__(self, status: int, type_: str, message: str, *, limit: str | None = None,
                 maximum: int | None = None, value: int | None = None) -> None:
        super().__init__(message)
        self.status, self.detail = status, ErrorDetail(type=type_, message=message, limit=limit, maximum=maximum,
                                                       value=value)


def limit_error(name: str, value: int, maximum: int, what: str) -> ApiError:
    return ApiError(422, "limit_exceeded", f"{what}: {value} > {name}={maximum}", limit=name, maximum=maximum,
                    value=value)


def error_response(status: int, detail: ErrorDetail) -> JSONResponse:
    return JSONResponse({"error": detail.model_dump(exclude_none=True)}, status_code=status)


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text} for code, text in {
        404: "Unknown task.", 413: "Body larger than max_body_bytes.",
        422: "Malformed body, bad task name, or a limit exceeded (`limit` names it).",
        503: "Queued longer than queue_timeout_s, or the queue is full."}.items()
}


def finite(value: Any) -> Any:
    """JSON has no NaN/inf: replace them (in metadata from user files, or -inf scores) with null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
