"""Secrets in bot files come only from the environment: ``api_key = "${env:OPENAI_API_KEY}"``.

A `SecretRef` keeps the variable's *name*; the value is read when a call is built and is
never part of a model dump, a log line or a call record.
"""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from runtime.errors import CallSetupError

_REFERENCE = re.compile(r"^\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}$")


class SecretRef:
    __slots__ = ("env_name",)

    def __init__(self, env_name: str) -> None:
        self.env_name = env_name

    def get(self) -> str:
        value = os.environ.get(self.env_name)
        if not value:
            raise CallSetupError(
                f"environment variable {self.env_name} is not set "
                f"(a bot option refers to it as ${{env:{self.env_name}}})"
            )
        return value

    def get_or_none(self) -> str | None:
        return os.environ.get(self.env_name) or None

    def __repr__(self) -> str:
        return f"SecretRef('${{env:{self.env_name}}}')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretRef) and other.env_name == self.env_name

    def __hash__(self) -> int:
        return hash(self.env_name)

    @classmethod
    def parse(cls, value: Any) -> SecretRef:
        if isinstance(value, SecretRef):
            return value
        if isinstance(value, str):
            match = _REFERENCE.match(value.strip())
            if match:
                return cls(match.group(1))
        raise ValueError(
            'secrets are read from the environment only: write "${env:NAME}" '
            "and export NAME before starting dialplan"
        )

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.parse,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda ref: f"${{env:{ref.env_name}}}"
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "pattern": _REFERENCE.pattern, "examples": ["${env:API_KEY}"]}
