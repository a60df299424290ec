"""Reading a request's JSON body: invalid or too deeply nested JSON is the caller's 400.

Python's JSON decoder recurses once per nesting level and gives up with RecursionError
(not a ValueError) past about a thousand: a 2 KB body of `[` made every JSON route
answer 500. No tensor or parameter set nests anywhere near that deep.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import bad_request


def parse(body: bytes | str) -> Any:
    try:
        return json.loads(body)
    except RecursionError:
        raise bad_request("Request body is not valid JSON: nested too deeply") from None
    except ValueError as e:
        raise bad_request(f"Request body is not valid JSON: {e}") from None
