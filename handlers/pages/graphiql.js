// The query page of /graphql: send what is typed, show the JSON that comes back.
//
// Every operation is first POSTed to /graphql.  The engine answers a subscription there with
// 400 SUBSCRIPTION_NOT_SUPPORTED, and the page then follows it over /graphql/sse, so the page
// needs no GraphQL parser of its own.  Kept in a file of its own: the page's
// Content-Security-Policy allows no inline script.
"use strict";

(function () {
  const STORAGE_KEY = "aiwebengine.graphql.page";
  const EXAMPLE = "# Type a query, then Run (Ctrl+Enter).\n{\n  __typename\n}\n";

  const query = document.getElementById("query");
  const variables = document.getElementById("variables");
  const operation = document.getElementById("operation");
  const run = document.getElementById("run");
  const stop = document.getElementById("stop");
  const schema = document.getElementById("schema");
  const status = document.getElementById("status");
  const output = document.getElementById("output");

  let source = null; // the EventSource of a running subscription

  function restore() {
    let saved = null;
    try {
      saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null");
    } catch (error) {
      saved = null;
    }
    query.value = (saved && saved.query) || EXAMPLE;
    variables.value = (saved && saved.variables) || "";
    operation.value = (saved && saved.operation) || "";
  }

  function save() {
    try {
      localStorage.setItem(
        STORAGE_KEY,
        JSON.stringify({ query: query.value, variables: variables.value, operation: operation.value }),
      );
    } catch (error) {
      // Storage may be full or disabled: the page works without it.
    }
  }

  function say(text, isError) {
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  function show(value) {
    output.textContent = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  }

  function append(value) {
    const text = JSON.stringify(value, null, 2);
    output.textContent = output.textContent ? output.textContent + "\n\n" + text : text;
    output.scrollTop = output.scrollHeight;
  }

  function stopSubscription(message) {
    if (source !== null) {
      source.close();
      source = null;
    }
    stop.disabled = true;
    run.disabled = false;
    if (message) {
      say(message);
    }
  }

  function request() {
    const body = { query: query.value };
    const text = variables.value.trim();
    if (text) {
      try {
        body.variables = JSON.parse(text);
      } catch (error) {
        throw new Error("Variables are not valid JSON: " + error.message);
      }
    }
    if (operation.value.trim()) {
      body.operationName = operation.value.trim();
    }
    return body;
  }

  function subscribe(body) {
    const params = new URLSearchParams({ query: body.query });
    if (body.variables !== undefined) {
      params.set("variables", JSON.stringify(body.variables));
    }
    if (body.operationName) {
      params.set("operationName", body.operationName);
    }
    let received = 0;
    show("");
    source = new EventSource("/graphql/sse?" + params.toString());
    stop.disabled = false;
    run.disabled = true;
    say("Subscribed; waiting for messages…");
    source.onmessage = function (event) {
      received += 1;
      say("Subscribed; " + received + " message" + (received === 1 ? "" : "s") + " received.");
      try {
        append(JSON.parse(event.data));
      } catch (error) {
        append(event.data);
      }
    };
    source.addEventListener("complete", function () {
      stopSubscription("The subscription ended (" + received + " messages).");
    });
    source.onerror = function () {
      stopSubscription("The subscription's connection failed or was refused.");
      status.classList.add("error");
    };
  }

  async function execute() {
    save();
    stopSubscription(null);
    let body;
    try {
      body = request();
    } catch (error) {
      say(error.message, true);
      return;
    }
    const started = performance.now();
    say("Running…");
    let response;
    let payload;
    try {
      response = await fetch("/graphql", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body),
      });
      payload = await response.json();
    } catch (error) {
      say("The request failed: " + error.message, true);
      return;
    }
    const code = payload && payload.error && payload.error.code;
    if (response.status === 400 && code === "SUBSCRIPTION_NOT_SUPPORTED") {
      subscribe(body);
      return;
    }
    const elapsed = Math.round(performance.now() - started);
    say(response.status + " " + response.statusText + " in " + elapsed + " ms", !response.ok);
    show(payload);
  }

  async function showSchema() {
    say("Loading the schema…");
    try {
      const response = await fetch("/engine/graphql/schema", { headers: { Accept: "text/plain" } });
      const text = await response.text();
      say("Schema: " + response.status + " " + response.statusText, !response.ok);
      show(text);
    } catch (error) {
      say("The request failed: " + error.message, true);
    }
  }

  run.addEventListener("click", execute);
  stop.addEventListener("click", function () {
    stopSubscription("Stopped.");
  });
  schema.addEventListener("click", showSchema);
  document.addEventListener("keydown", function (event) {
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
      event.preventDefault();
      if (!run.disabled) {
        execute();
      }
    }
  });
  restore();
})();
