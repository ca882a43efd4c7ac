// The example script installed on a fresh engine.  Try it: GET /hello?name=world
//
// init() runs once when the script is saved (and when the engine starts); it registers the
// script's routes.  Each handler receives a context whose `request` holds the path, query,
// headers, form fields and body of the HTTP request.

function hello(context) {
  const name = context.request.query.name || "world";
  return "Hello, " + name + "!";
}

function helloJson(context) {
  return ResponseBuilder.json({ greeting: "Hello, " + (context.request.query.name || "world") + "!" });
}

function init(context) {
  routeRegistry.registerRoute("/hello", "hello", "GET", { summary: "Say hello as text" });
  routeRegistry.registerRoute("/hello.json", "helloJson", "GET", { summary: "Say hello as JSON" });
  console.log("example script ready: try GET /hello?name=you");
}
