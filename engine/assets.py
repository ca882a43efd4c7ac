"""Script assets: files (bytes and a mimetype) that belong to a script.

Three callers use them:

* scripts, through ``assetStorage`` and the v0.9 globals (:class:`AssetHostApi`), which answer
  with the original engine's strings because scripts compare them (UPSTREAM_API §2.3);
* the ``/engine/assets`` API (:class:`AssetService`): listing, reading whole files, line ranges
  and searches, uploads, edits against a known digest and all-or-nothing batches, the last two
  followed by one re-run of the script's ``init()``;
* asset routes (``routeRegistry.registerAssetRoute``), which serve the stored bytes as they are
  at request time, with the content digest as the entity tag.

Names, edits, ranges and batches are checked by the pure functions of ``engine.asset_text``;
everything here is storage and orchestration.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Literal, Protocol

import trio

from engine.asset_text import (
    MAX_ASSET_BYTES,
    MAX_BATCH_BYTES,
    BatchRequest,
    Edit,
    apply_edits,
    as_text,
    grep,
    name_problem,
    parse_line_range,
    select_lines,
)
from engine.errors import Conflict, HostCallError, NotFound, StorageUnavailable, ValidationError
from engine.storage import AssetInfo, AssetRepository, AssetWrite, StoredAsset, WriteResult

TOO_LARGE: Final = "Asset too large (max 10MB)"
# The largest ``/engine/assets`` request body: a full batch as base64 inside JSON, plus room
# for the rest of the document.
MAX_JSON_BODY_BYTES: Final = (MAX_BATCH_BYTES + 2) // 3 * 4 + 512 * 1024

METHODS: Final = frozenset(
    {
        "assetStorage.listAssets",
        "assetStorage.fetchAsset",
        "assetStorage.upsertAsset",
        "assetStorage.deleteAsset",
        "listAssets",  # v0.9: an array of names, not JSON text
    }
)

Reinit = Callable[[str], Awaitable["InitSummary | None"]]


def _now_ms() -> int:
    return int(time.time() * 1000)


_MIMETYPE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+(\s*;[ -~]*)?$")
MAX_MIMETYPE_CHARS: Final = 255


def mimetype_problem(mimetype: object) -> str | None:
    """Why ``mimetype`` cannot be served as a ``Content-Type`` header, or ``None``."""
    if not isinstance(mimetype, str) or not mimetype.strip():
        return "must be a non-empty string"
    if len(mimetype) > MAX_MIMETYPE_CHARS:
        return f"must be at most {MAX_MIMETYPE_CHARS} characters"
    if not _MIMETYPE.match(mimetype.strip()):
        return "must be a media type such as 'text/css' (type/subtype, printable ASCII)"
    return None


def info_json(info: AssetInfo) -> dict[str, Any]:
    """An asset as ``listAssets`` and ``GET /engine/assets`` describe it (times in epoch ms)."""
    return {
        "uri": info.name,
        "name": info.name,
        "size": info.size,
        "mimetype": info.mimetype,
        "createdAt": info.created_at,
        "updatedAt": info.updated_at,
    }


def entity_tag(sha256: str) -> str:
    return f'"{sha256}"'


def etag_matches(if_none_match: str, sha256: str) -> bool:
    """``If-None-Match`` against our strong tag, compared weakly as RFC 9110 §13.1.2 asks."""
    wanted = entity_tag(sha256)
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == wanted:
            return True
    return False


class InitSummary(Protocol):
    """What re-running a script's ``init()`` reports (``engine.scripts.InitReport``)."""

    def to_json(self) -> dict[str, Any]: ...


def _skipped(reason: str) -> dict[str, Any]:
    return {"ran": False, "reason": reason}


def _text_arg(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class AssetHostApi:
    """``assetStorage`` for the calling script, with the original's return strings."""

    def __init__(self, repository: AssetRepository) -> None:
        self._repository = repository

    async def exists(self, script_uri: str, name: str) -> bool:
        return await self._repository.info(script_uri, name) is not None

    async def call(self, name: str, args: list[Any], *, script_uri: str) -> Any:
        try:
            return await self._dispatch(name, args, script_uri)
        except StorageUnavailable:
            raise HostCallError(f"{name}: storage is unavailable, try again later") from None

    async def _dispatch(self, name: str, args: list[Any], script_uri: str) -> Any:
        repository = self._repository
        method = name.rpartition(".")[2]
        if method == "listAssets":
            assets = await repository.list(script_uri)
            if name == "listAssets":
                return [info.name for info in assets]
            return json.dumps([info_json(info) for info in assets], separators=(",", ":"))
        asset = _text_arg(args[0] if args else None)
        if method == "fetchAsset":
            if asset is None:
                return "Error: asset name must be a string"
            stored = await repository.get(script_uri, asset)
            if stored is None:
                return f"Asset '{asset}' not found"
            return base64.b64encode(stored.content).decode("ascii")
        if method == "deleteAsset":
            if asset is None:
                return "Error: asset name must be a string"
            if await repository.delete(script_uri, asset):
                return f"Asset '{asset}' deleted successfully"
            return f"Asset '{asset}' not found"
        if method == "upsertAsset":
            return await self._upsert(script_uri, asset, args)
        raise HostCallError(f"{name} is not an asset method")

    async def _upsert(self, script_uri: str, asset: str | None, args: list[Any]) -> str:
        problem = name_problem(asset)
        if problem is not None or asset is None:
            return problem or "Invalid asset URI: must be 1-255 characters"
        mimetype = args[1] if len(args) > 1 else None
        encoded = args[2] if len(args) > 2 else None
        if not isinstance(encoded, str):
            return "Error decoding base64 content: content must be a base64 string"
        # Before decoding: 10 MB of content is at most ~13.4 million base64 characters.
        if len(encoded) > (MAX_ASSET_BYTES // 3 + 1) * 4 + 1024:
            return TOO_LARGE
        try:
            content = base64.b64decode("".join(encoded.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            return f"Error decoding base64 content: {exc}"
        if len(content) > MAX_ASSET_BYTES:
            return TOO_LARGE
        problem = mimetype_problem(mimetype)
        if problem is not None or not isinstance(mimetype, str):
            return f"Error upserting asset: mimetype {problem}"
        await self._repository.upsert(
            script_uri,
            AssetWrite(name=asset, mimetype=mimetype.strip(), content=content),
            _now_ms(),
        )
        return f"Asset '{asset}' upserted successfully"


def _checked_name(name: str) -> str:
    problem = name_problem(name)
    if problem is not None:
        raise ValidationError("asset", problem)
    return name


class AssetService:
    """The ``/engine/assets`` operations.  ``reinit`` re-runs a script's ``init()`` and answers
    ``None`` when the script does not exist (its assets may be uploaded before it)."""

    def __init__(self, repository: AssetRepository, reinit: Reinit) -> None:
        self._repository = repository
        self._reinit = reinit
        self._searches = trio.CapacityLimiter(2)

    async def list(self, script: str) -> list[AssetInfo]:
        return await self._repository.list(script)

    async def info(self, script: str, name: str) -> AssetInfo | None:
        return await self._repository.info(script, name)

    async def get(self, script: str, name: str) -> StoredAsset:
        stored = await self._repository.get(script, name)
        if stored is None:
            raise NotFound(f"Asset '{name}' not found")
        return stored

    async def read(
        self, script: str, name: str, *, lines: str | None = None, pattern: str | None = None
    ) -> dict[str, Any]:
        """The whole asset as base64, or a range of its lines, or the lines matching a pattern."""
        if lines is not None and pattern is not None:
            raise ValidationError("lines", "cannot be combined with grep")
        selection = parse_line_range(lines) if lines is not None else None
        stored = await self.get(script, name)
        info = stored.info
        common = {"sha256": info.sha256, "bytes": info.size, "script": script, "asset": name}
        if selection is not None:
            return {**select_lines(as_text(stored.content), selection), **common}
        if pattern is not None:
            # A search may run for up to its time budget: off the event loop, a few at a time.
            text = as_text(stored.content)
            found = await trio.to_thread.run_sync(grep, text, pattern, limiter=self._searches)
            return {**found, **common}
        return {"content": base64.b64encode(stored.content).decode("ascii"), **common}

    async def upsert(self, script: str, name: str, mimetype: str, content: bytes) -> WriteResult:
        _checked_name(name)
        problem = mimetype_problem(mimetype)
        if problem is not None:
            raise ValidationError("mimetype", problem)
        if len(content) > MAX_ASSET_BYTES:
            raise ValidationError("content", TOO_LARGE)
        write = AssetWrite(name=name, mimetype=mimetype.strip(), content=content)
        return await self._repository.upsert(script, write, _now_ms())

    async def delete(self, script: str, name: str) -> None:
        if not await self._repository.delete(script, name):
            raise NotFound(f"Asset '{name}' not found")

    async def patch(
        self,
        script: str,
        name: str,
        edits: Sequence[Edit],
        *,
        base_sha256: str | None,
        reinit: Literal["after", "never"],
    ) -> dict[str, Any]:
        """Apply ``edits`` in order, all or nothing, to the asset as it is now -- or refuse
        with 409 when it is no longer at ``base_sha256``."""
        stored = await self.get(script, name)
        current = stored.info.sha256
        if base_sha256 is not None and base_sha256.lower() != current:
            raise Conflict(
                f"Asset '{name}' has changed: base_sha256 does not match the current content",
                sha256=current,
                base_sha256=base_sha256.lower(),
            )
        text, replacements = apply_edits(as_text(stored.content), edits)
        content = text.encode("utf-8")
        if len(content) > MAX_ASSET_BYTES:
            raise ValidationError("edits", f"the edited asset would exceed {TOO_LARGE[7:-1]}")
        result = await self._repository.replace_if(script, name, content, current, _now_ms())
        if result is None:
            # Changed between our read and our write: the caller must look again.
            latest = await self._repository.info(script, name)
            raise Conflict(
                f"Asset '{name}' changed while the edits were applied",
                sha256=latest.sha256 if latest is not None else None,
                base_sha256=current,
            )
        changed = result.status != "unchanged"
        return {
            "script": script,
            "asset": name,
            "sha256": result.info.sha256,
            "bytes": result.info.size,
            "replacements": replacements,
            "status": "updated" if changed else "unchanged",
            "init": await self._maybe_reinit(script, reinit, changed=changed),
        }

    async def batch(self, request: BatchRequest) -> dict[str, Any]:
        """Write every file of ``request`` in one transaction, then re-run ``init()`` once."""
        for index, file in enumerate(request.files):
            problem = mimetype_problem(file.mimetype)
            if problem is not None:
                raise ValidationError(f"files[{index}].mimetype", problem)
        writes = [
            AssetWrite(name=file.name, mimetype=file.mimetype, content=file.content)
            for file in request.files
        ]
        results = await self._repository.upsert_many(request.script, writes, _now_ms())
        written = sum(1 for result in results if result.status != "unchanged")
        return {
            "script": request.script,
            "results": [
                {
                    "name": result.info.name,
                    "sha256": result.info.sha256,
                    "bytes": result.info.size,
                    "status": result.status,
                }
                for result in results
            ],
            "written": written,
            "init": await self._maybe_reinit(request.script, request.reinit, changed=written > 0),
        }

    async def _maybe_reinit(
        self, script: str, reinit: Literal["after", "never"], *, changed: bool
    ) -> dict[str, Any]:
        if reinit == "never":
            return _skipped("reinit is 'never'")
        if not changed:
            return _skipped("no asset changed")
        outcome = await self._reinit(script)
        if outcome is None:
            return _skipped(f"script '{script}' is not deployed")
        return outcome.to_json()
