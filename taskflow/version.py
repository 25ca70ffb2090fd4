"""The release, in one place (the package, the OpenAPI document and health read it)."""

__version__ = "0.1.0"
