"""The v0.9 flat reads: listScripts, getScript, getScriptInitStatus, listLogs, listLogsForUri."""

from __future__ import annotations

import json

from tests.conftest import Engine

READER = """
function read(ctx) {
  console.log("reading");
  var status = getScriptInitStatus("reader");
  return ResponseBuilder.json({
    scripts: listScripts(),
    source: getScript("other"),
    missing: getScript("nope"),
    status: status === null ? null : JSON.parse(status),
    statusType: typeof status,
    missingStatus: getScriptInitStatus("nope"),
    otherLogs: listLogsForUri("other"),
    allLogsHaveReading: listLogs().indexOf("reading") >= 0,
    badUri: (function () {
      try { getScript(""); return "no error"; } catch (e) { return e.message; }
    })(),
  });
}
function init() { register("/read", "read"); }
"""

OTHER = 'function init() { console.log("other one"); console.log("other two"); }'


async def test_flat_reads_answer_with_the_original_shapes(engine: Engine) -> None:
    await engine.deploy("other", OTHER)
    await engine.deploy("reader", READER)
    first = await engine.client.get("/read")  # logs "reading" before answering
    assert first.status_code == 200, first.text
    response = await engine.client.get("/read")
    body = response.json()
    assert set(body["scripts"]) >= {"other", "reader"}
    assert body["source"] == OTHER
    assert body["missing"] is None
    assert body["statusType"] == "string"
    assert body["status"]["scriptName"] == "reader"
    assert body["status"]["initialized"] is True
    assert body["status"]["initError"] is None
    assert isinstance(body["status"]["createdAt"], int)
    assert body["missingStatus"] is None
    assert body["otherLogs"] == ["other one", "other two"]
    assert body["allLogsHaveReading"] is True
    assert body["badUri"] == "getScript: the script URI must be a non-empty string"
    assert json.loads(json.dumps(body))  # plain JSON values only
