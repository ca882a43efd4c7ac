"""Reading request bodies under a limit that depends on the surface."""

from __future__ import annotations

from quart import request
from werkzeug.exceptions import RequestEntityTooLarge

from security import check_json_depth


class PayloadTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds the {limit}-byte limit")
        self.limit = limit


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


async def read_body(limit: int) -> bytes:
    """The whole body, or :class:`PayloadTooLarge` as soon as it is known to exceed ``limit``.

    A JSON body nested deeper than ``security.limits.MAX_JSON_DEPTH`` raises
    :class:`security.LimitExceeded` (400) before any parser recurses into it.
    """
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
    if _is_json(request.headers.get("content-type", "")):
        check_json_depth(data)
    return data
