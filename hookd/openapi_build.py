"""Builder helpers for the OpenAPI document (hookd/openapi.py) and its media types.

Owns the small functions the hookd.openapi modules write the contract with: schema shapes (`_ref`,
`_nullable`, `_object`, `_closed`), parameters (`_param`, `_query`), answers (`_json`, `_ok`,
`_links`) and `_operation`, which adds the problem responses every /v1 operation can give. They
are private to hookd/openapi.py, hookd/openapi_schemas.py and hookd/openapi_paths.py.
"""

from __future__ import annotations

from typing import Any

PROBLEM_JSON = "application/problem+json"
JSON = "application/json"

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    """`schema` or null (OpenAPI 3.1 has no `nullable`; a $ref needs anyOf)."""
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    kind = schema["type"]
    return {**schema, "type": [*([kind] if isinstance(kind, str) else kind), "null"]}


def _object(properties: dict[str, Schema], required: tuple[str, ...] = (), **extra: Any) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        **extra,
    }


def _closed(properties: dict[str, Schema], required: tuple[str, ...] = (), **extra: Any) -> Schema:
    """A request object: unknown fields are refused (so a misspelt field is named, not ignored)."""
    return _object(properties, required, additionalProperties=False, **extra)


def _param(name: str) -> Schema:
    return {"$ref": f"#/components/parameters/{name}"}


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "description": description, "schema": schema}


def _json(schema: Schema, description: str, headers: dict[str, Any] | None = None) -> Schema:
    response: Schema = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _ok(name: str, description: str) -> dict[str, Schema]:
    """The answers of an operation whose one success is a 200 with schema `name`."""
    return {"200": _json(_ref(name), description)}


def _links(source: str, targets: tuple[str, ...]) -> dict[str, Schema]:
    """OpenAPI links: the id at JSON pointer `source` of this answer is `id` of each target."""
    return {
        target[0].upper() + target[1:]: {
            "operationId": target,
            "parameters": {"id": f"$response.body#{source}"},
        }
        for target in targets
    }


def _operation(
    operation_id: str,
    summary: str,
    ok: dict[str, Schema],
    *,
    params: tuple[Schema, ...] = (),
    body: str | None = None,
    body_required: bool = True,
    found: bool = True,
    conflict: bool = False,
    forbidden: bool = False,
    tag: str,
) -> Schema:
    """One operation with the problem responses every /v1 operation can give."""
    responses: dict[str, Schema] = dict(ok)

    def problem(status: str, name: str) -> None:
        responses[status] = {"$ref": f"#/components/responses/{name}"}

    problem("401", "Unauthorized")
    if forbidden:
        problem("403", "Forbidden")
    if found:
        problem("404", "NotFound")
    if conflict:
        problem("409", "Conflict")
    problem("422", "Invalid")
    problem("503", "Unavailable")
    op: Schema = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "parameters": list(params),
        "responses": responses,
    }
    if body is not None:
        problem("400", "BadRequest")
        problem("413", "TooLarge")
        problem("415", "UnsupportedMediaType")
        op["requestBody"] = {"required": body_required, "content": {JSON: {"schema": _ref(body)}}}
    op["responses"] = dict(sorted(responses.items()))
    return op
