"""Reading request bodies under a limit that depends on the surface."""

from __future__ import annotations

from quart import request
from werkzeug.exceptions import RequestEntityTooLarge


class PayloadTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds the {limit}-byte limit")
        self.limit = limit


async def read_body(limit: int) -> bytes:
    """The whole body, or :class:`PayloadTooLarge` as soon as it is known to exceed ``limit``."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(limit)
    if not declared and "transfer-encoding" not in request.headers:
        return b""  # no body announced: nothing to wait for
    try:
        data = await request.get_data(cache=True, as_text=False, parse_form_data=False)
    except RequestEntityTooLarge:
        raise PayloadTooLarge(limit) from None
    if len(data) > limit:
        raise PayloadTooLarge(limit)
    return data
