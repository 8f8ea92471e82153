"""JSON Merge Patch (RFC 7396): how a PATCH body changes an item before it is validated again."""

from __future__ import annotations

from typing import Any


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """The document `target` with `patch` applied: objects merge, null removes, anything else
    replaces (RFC 7396 section 2). Neither argument is modified."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result
