"""convert.markdown_to_html: CommonMark plus GFM-style extensions, the original's errors."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.convert import (
    EMPTY,
    MAX_INPUT_BYTES,
    TEMPLATE_EMPTY,
    TOO_LARGE,
    markdown_to_html,
    render_handlebars_template,
)
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


HANDLEBARS = (
    "Hi {{name}} {{{raw}}} {{#if ok}}yes{{else}}no{{/if}}{{#unless ok}}U{{/unless}} "
    "{{#each items}}[{{@index}}:{{this}}:{{../name}}]{{/each}} {{#with obj}}{{x}}{{/with}}"
)


def test_handlebars_semantics() -> None:
    data = '{"name": "<b>", "raw": "<i>", "ok": true, "items": ["a", "b"], "obj": {"x": 1}}'
    assert render_handlebars_template(HANDLEBARS, data) == (
        "Hi &lt;b&gt; <i> yes [0:a:&lt;b&gt;][1:b:&lt;b&gt;] 1"
    )


def test_handlebars_errors_are_strings() -> None:
    assert render_handlebars_template("", "{}") == TEMPLATE_EMPTY
    assert render_handlebars_template("{{x}}", "{nope").startswith("Error: Invalid JSON data: ")
    assert render_handlebars_template("{{#if x}}", "{}").startswith(
        "Error: Template compilation error: "
    )


@given(st.text(max_size=200), st.dictionaries(st.text(max_size=5), st.text(max_size=5)))
def test_any_template_gives_text_or_an_error_string(template: str, data: dict[str, str]) -> None:
    import json

    assert isinstance(render_handlebars_template(template, json.dumps(data)), str)


async def test_a_script_renders_a_template_from_json_or_an_object(engine: Engine) -> None:
    await engine.deploy(
        "hbs",
        """
        function page() {
          return ResponseBuilder.json({
            fromJson: convert.render_handlebars_template("{{a}}-{{b}}", '{"a": 1, "b": "<x>"}'),
            fromObject: convert.render_handlebars_template("{{#each xs}}{{this}}{{/each}}",
                                                         { xs: [1, 2, 3] }),
          });
        }
        function init() { register("/hbs", "page"); }
        """,
    )
    assert (await engine.client.get("/hbs")).json() == {
        "fromJson": "1-&lt;x&gt;",
        "fromObject": "123",
    }
