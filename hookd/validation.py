"""Request validation against the OpenAPI document's own schemas (JSON Schema 2020-12).

For each operation of the document (hookd/openapi.py): path and query parameters are converted
from text by their schema's type (integer, number, boolean, string; `format: date-time` becomes an
aware UTC datetime), unknown and repeated query parameters are refused, and a JSON body is checked
against its schema with `jsonschema`. Every problem becomes a `FieldError` naming the parameter
(`parameter`) or the body field (`pointer`, a JSON pointer as in RFC 6901) with a one-line
`detail`, and all of them are raised together as `InvalidRequest`. Messages never repeat the
offending value, so a secret sent in the wrong field is not echoed back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from hookd.errors import HookdError
from hookd.openapi import LINE_PATTERN, NO_NUL_PATTERN

BASE_URI = "urn:hookd:openapi"
"""The URI the document is registered under, so `#/components/...` references resolve."""

MAX_ERRORS = 50
"""Most entries one problem lists."""

_METHODS = ("get", "put", "post", "delete", "patch")
_INTEGER = re.compile(r"^-?[0-9]{1,30}$")
_NUMBER = re.compile(r"^-?[0-9]{1,20}(\.[0-9]{1,20})?([eE][-+]?[0-9]{1,3})?$")
_TYPE_NAMES = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "an object",
    "array": "an array",
    "null": "null",
}
_PATTERN_HINTS = {
    LINE_PATTERN: "must not contain control characters or line breaks",
    NO_NUL_PATTERN: "must not contain NUL characters",
}
TIME_HINT = "expected an RFC 3339 time with a zone, e.g. 2024-05-01T12:00:00Z"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid part of a request: a body field (`pointer`) or a parameter (`parameter`)."""

    detail: str
    pointer: str | None = None
    parameter: str | None = None

    def as_json(self) -> dict[str, str]:
        """The RFC 9457 `errors` entry."""
        out = {"detail": self.detail}
        if self.pointer is not None:
            out["pointer"] = self.pointer
        if self.parameter is not None:
            out["parameter"] = self.parameter
        return out

    def describe(self) -> str:
        where = self.parameter if self.parameter is not None else (self.pointer or "body")
        return f"{where}: {self.detail}"


class InvalidRequest(HookdError):
    """The request is invalid."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(e.describe() for e in errors[:3]))
        self.errors = errors[:MAX_ERRORS]


@dataclass(frozen=True, slots=True)
class Parameter:
    """A path or query parameter: `kind` is its schema's JSON type; `time` for date-time."""

    name: str
    location: str
    required: bool
    kind: str
    time: bool
    default: Any
    validator: Draft202012Validator


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of the document, ready to validate requests."""

    operation_id: str
    method: str
    path: str
    parameters: tuple[Parameter, ...]
    body: Draft202012Validator | None
    body_required: bool
    secured: bool


def pointer(path: Iterable[object]) -> str:
    """The JSON pointer (RFC 6901) of a path of keys and indexes."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def parse_time(text: str) -> datetime:
    """An RFC 3339 time (already checked by the schema) as an aware UTC datetime.

    Raises:
        ValueError: a time Python cannot hold (a leap second, a year 1 or 9999 moved out of range
            by its offset), or one without a zone.
    """
    value = datetime.fromisoformat(text.upper())
    if value.tzinfo is None:
        raise ValueError(TIME_HINT)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("time out of range") from None


class Contract:
    """The operations of an OpenAPI 3.1 document, with validators built from its schemas."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(BASE_URI, resource)
        self._resolver = self._registry.resolver(BASE_URI)
        self._formats = FormatChecker(["date-time"])
        secured_default = bool(document.get("security"))
        self.operations: dict[str, Operation] = {}
        for path, item in document["paths"].items():
            for method in _METHODS:
                spec = item.get(method)
                if spec is None:
                    continue
                body = spec.get("requestBody")
                op = Operation(
                    operation_id=spec["operationId"],
                    method=method.upper(),
                    path=path,
                    parameters=tuple(self._parameter(p) for p in spec.get("parameters", ())),
                    body=self._validator(body["content"]["application/json"]["schema"])
                    if body
                    else None,
                    body_required=bool(body and body.get("required")),
                    secured=bool(spec.get("security", [{}] if secured_default else [])),
                )
                self.operations[op.operation_id] = op

    def resolve(self, node: Mapping[str, Any]) -> Mapping[str, Any]:
        """Follow `$ref`s (within the document) until a node without one."""
        while "$ref" in node:
            node = self._resolver.lookup(BASE_URI + node["$ref"]).contents
        return node

    def _validator(self, schema: Mapping[str, Any]) -> Draft202012Validator:
        return Draft202012Validator(
            _absolute(schema), registry=self._registry, format_checker=self._formats
        )

    def _parameter(self, node: Mapping[str, Any]) -> Parameter:
        spec = self.resolve(node)
        schema = self.resolve(spec["schema"])
        kind = schema.get("type", "string")
        return Parameter(
            name=spec["name"],
            location=spec["in"],
            required=bool(spec.get("required")),
            kind=kind if isinstance(kind, str) else kind[0],
            time=schema.get("format") == "date-time",
            default=schema.get("default"),
            validator=self._validator(spec["schema"]),
        )

    # -- checks ----------------------------------------------------------------------------------

    def parameters(
        self, op: Operation, path: Mapping[str, str], query: Mapping[str, str], repeated: set[str]
    ) -> dict[str, Any]:
        """The operation's parameters, converted and checked; absent optional ones get their
        default (or None). `repeated` names query parameters given more than once.

        Raises:
            InvalidRequest: listing every bad, missing, repeated or unknown parameter.
        """
        errors: list[FieldError] = []
        known = {p.name for p in op.parameters if p.location == "query"}
        for name in query:
            if name not in known:
                hint = f"known: {', '.join(sorted(known))}" if known else "none are taken here"
                errors.append(FieldError(f"unknown query parameter ({hint})", parameter=name))
        values: dict[str, Any] = {}
        for param in op.parameters:
            source = path if param.location == "path" else query
            if param.name in repeated:
                errors.append(FieldError("give this parameter once", parameter=param.name))
                continue
            raw = source.get(param.name)
            if raw is None:
                if param.required:
                    errors.append(FieldError("required", parameter=param.name))
                values[param.name] = param.default
                continue
            try:
                value = _convert(raw, param.kind)
            except ValueError as exc:
                errors.append(FieldError(str(exc), parameter=param.name))
                continue
            found = [
                FieldError(e.detail, parameter=param.name)
                for e in describe(param.validator.iter_errors(value))
            ]
            if not found and param.time:
                try:
                    value = parse_time(value)
                except ValueError as exc:
                    found.append(FieldError(str(exc), parameter=param.name))
            errors.extend(found)
            values[param.name] = value
        if errors:
            raise InvalidRequest(errors)
        return values

    def body(self, op: Operation, value: Any) -> None:
        """Check a parsed JSON body against the operation's schema.

        Raises:
            InvalidRequest: naming each invalid field by JSON pointer.
        """
        assert op.body is not None
        errors = list(describe(op.body.iter_errors(value)))
        if errors:
            raise InvalidRequest(errors)


def _absolute(node: Any) -> Any:
    """A copy of a schema whose document-local `$ref`s name the registered document, so they
    resolve from a schema that is not itself part of it (references inside the document's own
    schemas then resolve within the document)."""
    if isinstance(node, Mapping):
        return {
            k: BASE_URI + v if k == "$ref" and v.startswith("#") else _absolute(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_absolute(v) for v in node]
    return node


def _convert(raw: str, kind: str) -> Any:
    """A parameter's text as its schema's type. Raises ValueError with the expected form."""
    if kind == "integer":
        if not _INTEGER.match(raw):
            raise ValueError("expected an integer")
        return int(raw)
    if kind == "number":
        if not _NUMBER.match(raw):
            raise ValueError("expected a number")
        return float(raw)
    if kind == "boolean":
        if raw not in ("true", "false"):
            raise ValueError("expected true or false")
        return raw == "true"
    return raw


def describe(errors: Iterable[ValidationError]) -> Iterator[FieldError]:
    """FieldErrors (with body pointers) for jsonschema's errors, sorted by where they are."""
    found: list[FieldError] = []
    for error in errors:
        found.extend(_explain(error))
    found.sort(key=lambda e: e.pointer or "")
    seen: set[tuple[str | None, str]] = set()
    for e in found:
        if (e.pointer, e.detail) not in seen:
            seen.add((e.pointer, e.detail))
            yield e


def _explain(error: ValidationError) -> list[FieldError]:
    at = pointer(error.absolute_path)
    keyword, schema = error.validator, error.schema
    expected: Any = error.validator_value
    if not isinstance(schema, Mapping):
        schema = {}
    if "propertyNames" in error.relative_schema_path:
        key = str(error.instance)
        key = key if len(key) <= 60 else key[:57] + "..."
        inner = _detail(keyword, expected, schema, error)
        return [FieldError(f"key {key!r}: {inner}", pointer=at)]
    if keyword == "required" and isinstance(error.instance, Mapping):
        return [
            FieldError("required", pointer=pointer([*error.absolute_path, name]))
            for name in expected
            if name not in error.instance
        ]
    if keyword == "additionalProperties" and isinstance(error.instance, Mapping):
        props = list(schema.get("properties", {}))
        hint = f"known: {', '.join(props)}" if props else "no fields are taken here"
        return [
            FieldError(f"unknown field ({hint})", pointer=pointer([*error.absolute_path, name]))
            for name in error.instance
            if name not in props
        ]
    if keyword in ("anyOf", "oneOf") and error.context:
        # `X or null`: explain what is wrong against X, not that the value is not null.
        branches: dict[int, list[ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(int(sub.relative_schema_path[0]), []).append(sub)
        options = expected if isinstance(expected, list) else []
        real = [i for i, s in enumerate(options) if s != {"type": "null"}]
        if len(real) == 1 and real[0] in branches:
            return [e for sub in branches[real[0]] for e in _explain(sub)]
    return [FieldError(_detail(keyword, expected, schema, error), pointer=at)]


def _detail(keyword: Any, expected: Any, schema: Mapping[str, Any], error: ValidationError) -> str:
    if keyword == "type":
        kinds = [expected] if isinstance(expected, str) else list(expected)
        return "expected " + " or ".join(_TYPE_NAMES.get(k, k) for k in kinds)
    if keyword == "enum":
        return "expected one of: " + ", ".join(map(str, expected))
    bounds = {
        "minimum": "must be at least",
        "maximum": "must be at most",
        "exclusiveMinimum": "must be greater than",
        "exclusiveMaximum": "must be less than",
    }
    if keyword in bounds:
        return f"{bounds[keyword]} {_number(expected)}"
    if keyword == "minLength":
        return "must not be empty" if expected == 1 else f"at least {expected} characters"
    if keyword == "maxLength":
        return f"at most {expected} characters"
    if keyword == "minItems":
        return f"give at least {expected} item{'s' if expected != 1 else ''}"
    if keyword == "maxItems":
        return f"at most {expected} items"
    if keyword == "uniqueItems":
        return "items must not repeat"
    if keyword == "maxProperties":
        return f"at most {expected} keys"
    if keyword == "minProperties":
        props = list(schema.get("properties", {}))
        return f"give at least one of: {', '.join(props)}" if props else "must not be empty"
    if keyword == "format" and expected == "date-time":
        return TIME_HINT
    if keyword == "pattern":
        if expected in _PATTERN_HINTS:
            return _PATTERN_HINTS[expected]
        hint = schema.get("description")
        return f"not in the expected form: {hint}" if hint else f"must match {expected}"
    # jsonschema's own messages repeat the value (which may be a secret): never shown.
    return str(schema.get("description") or f"not allowed here ({keyword})")


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
