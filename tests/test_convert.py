"""convert.markdown_to_html: CommonMark plus GFM-style extensions, the original's errors."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.convert import EMPTY, MAX_INPUT_BYTES, TOO_LARGE, markdown_to_html
from tests.conftest import Engine

DOCUMENT = """# Title

| a | b |
|---|---|
| 1 | 2 |

~~gone~~ and a note[^1]

- [x] done
- [ ] todo

[^1]: the footnote
"""


def test_commonmark_and_the_extensions_render() -> None:
    html = markdown_to_html(DOCUMENT)
    assert "<h1>Title</h1>" in html
    assert "<table>" in html and "<td>1</td>" in html
    assert "<s>gone</s>" in html
    assert 'class="footnote-ref"' in html and "the footnote" in html
    assert 'type="checkbox"' in html and 'checked="checked"' in html


def test_empty_and_oversized_input_answer_the_original_errors() -> None:
    assert markdown_to_html("") == EMPTY
    assert markdown_to_html("  \n\t") == EMPTY
    assert markdown_to_html("x" * MAX_INPUT_BYTES) != TOO_LARGE
    assert markdown_to_html("x" * (MAX_INPUT_BYTES + 1)) == TOO_LARGE


@given(st.text(max_size=400))
def test_any_text_renders_to_a_string(text: str) -> None:
    assert isinstance(markdown_to_html(text), str)


SCRIPT = """
function page(ctx) {
  return ResponseBuilder.html(convert.markdown_to_html(ctx.request.body || ""));
}
function empty() { return convert.markdown_to_html(""); }
function init() { register("/md", "page", "POST"); register("/md/empty", "empty"); }
"""


async def test_a_script_renders_markdown(engine: Engine) -> None:
    await engine.deploy("md", SCRIPT)
    response = await engine.client.post("/md", content="*hi* there")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=UTF-8"
    assert response.text == "<p><em>hi</em> there</p>\n"
    assert (await engine.client.get("/md/empty")).text == EMPTY
