"""Settings files in YAML, validated by a pydantic model (guardrails, the approval policy)."""

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from features.errors import InputError

Model = TypeVar("Model", bound=BaseModel)


def _field_name(location: tuple) -> str:
    name = str(location[0]) if location else "document"
    return name + "".join(f"[{part}]" for part in location[1:])


def load_yaml_model(path: str | Path, model: type[Model], what: str,
                    error: type[InputError] = InputError) -> Model:
    """Read a YAML mapping from `path` and validate it as `model` (an empty file is the
    model's defaults); `error` (an `InputError`) names the file and every bad field, `what`
    says what the file holds (e.g. "guardrails")."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: file not found")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as problem:
        raise error(f"{path}: not valid YAML: {problem}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        kind = type(document).__name__
        raise error(f"{path}: expected a mapping of {what} fields, got a {kind}")
    try:
        return model.model_validate(document)
    except ValidationError as invalid:
        problems = "; ".join(f"field '{_field_name(detail['loc'])}': {detail['msg']}"
                             for detail in invalid.errors())
        raise error(f"{path}: invalid {what}: {problems}") from None
