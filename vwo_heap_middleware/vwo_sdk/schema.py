"""VWO settings checked with the installed SDK's own settings schema."""

from __future__ import annotations


def settings_problem(settings: object) -> str | None:
    """Why the installed SDK's settings schema rejects ``settings``, or None if it accepts it."""
    import jsonschema
    from wingify.models.schemas.settings_schema import SETTINGS_FILE_SCHEMA

    if not isinstance(settings, dict):
        return "settings must be a JSON object"
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft7Validator(SETTINGS_FILE_SCHEMA).iter_errors(settings)
    )
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "top level"
    return f"not valid VWO settings at {where}: {error.message}"
