"""The OpenAPI document: quart-schema's, completed.

quart-schema (0.25) with msgspec models inlines each documented struct but drops the structs
nested in it, so ``$ref``s such as ``#/components/schemas/JobOut`` would dangle. This provider
adds every component and trims the operation descriptions.
"""

from __future__ import annotations

from typing import Any

import msgspec
from quart_schema import OpenAPIProvider

from web.auth import KEY_DOC, SCHEME
from web.schemas import DOCUMENTED

REF_TEMPLATE = "#/components/schemas/{name}"


class ApiOpenAPIProvider(OpenAPIProvider):
    def schema(self) -> dict[str, Any]:
        document = super().schema()
        _, components = msgspec.json.schema_components(DOCUMENTED, ref_template=REF_TEMPLATE)
        document["components"]["schemas"].update(components)
        for path_item in document["paths"].values():
            for operation in path_item.values():
                description = operation.get("description")
                if isinstance(description, str):
                    operation["description"] = description.strip()
                needs = [s for item in operation.get("security", []) for s in item.get(SCHEME, [])]
                operation["x-required-scope"] = needs[0] if needs else None
        for scheme in document["components"].get("securitySchemes", {}).values():
            scheme["description"] = KEY_DOC
        return document
