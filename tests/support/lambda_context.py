"""A stand-in for the Lambda context object: the two things the shim reads of it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LambdaContext:
    remaining_ms: int = 10_000
    aws_request_id: str = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms
