"""A stand-in for the Lambda context object, with the attributes Powertools reads."""

from __future__ import annotations

import time
import uuid


class FakeLambdaContext:
    """What the Lambda runtime passes as ``context``; ``remaining_ms`` counts down from creation."""

    def __init__(self, function_name: str = "ApiFunction", remaining_ms: int = 28_000) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = f"arn:aws:lambda:eu-west-1:123456789012:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "2026/11/27/[$LATEST]0123456789abcdef"
        self._deadline = time.monotonic() + remaining_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
