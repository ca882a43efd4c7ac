// The engine's JavaScript side, evaluated in every QuickJS context before the script.
//
// Two host bridges are installed by the worker before this file runs:
//   __aiwe_host(name, argsJson) -> replyJson   synchronous call answered by the parent
//   __aiwe_log(level, message)                 one-way console line
// Everything here is plain ES2020 and keeps its helpers off the global object except the
// documented API names and the __aiwe_* entry points the worker calls.
(function (global) {
  "use strict";
  const host = global.__aiwe_host;
  const emitLog = global.__aiwe_log;
  delete global.__aiwe_host;
  delete global.__aiwe_log;

  function hostCall(name, args) {
    const reply = JSON.parse(host(name, JSON.stringify(args)));
    if (!reply.ok) {
      throw new Error(reply.error);
    }
    return reply.value;
  }

  function formatArg(value) {
    if (typeof value === "string") return value;
    if (value instanceof Error) return value.stack ? value.name + ": " + value.message + "\n" + value.stack : String(value);
    if (value === undefined) return "undefined";
    if (typeof value === "function") return "[Function " + (value.name || "anonymous") + "]";
    if (typeof value === "symbol" || typeof value === "bigint") return String(value);
    try {
      const text = JSON.stringify(value);
      return text === undefined ? String(value) : text;
    } catch (e) {
      return String(value);
    }
  }

  // A lone surrogate cannot cross into the host (it is not valid Unicode text); it becomes
  // U+FFFD, as it would when a browser encodes the string.
  const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

  function wellFormed(text) {
    return text.replace(LONE_SURROGATE, "\uFFFD");
  }

  function writer(level) {
    return function () {
      const parts = [];
      for (let i = 0; i < arguments.length; i++) parts.push(formatArg(arguments[i]));
      emitLog(level, wellFormed(parts.join(" ")));
      return "Log written successfully";
    };
  }

  const consoleObject = {
    log: writer("LOG"),
    info: writer("INFO"),
    warn: writer("WARN"),
    error: writer("ERROR"),
    debug: writer("DEBUG"),
  };
  Object.freeze(consoleObject);

  // True while the worker evaluates the script's top level (see __aiwe_top_level below).
  let topLevel = false;
  let anonymousHandlers = 0;

  // Handlers are looked up by name in every context of a script version, including contexts
  // that never ran init().  A function object is accepted when it is reachable by name: a
  // global function, or -- at the top level, which every context evaluates identically -- any
  // function, which then gets a stable generated global name.
  function handlerName(handler) {
    if (typeof handler !== "function") return handler;
    if (handler.name && global[handler.name] === handler) return handler.name;
    if (topLevel) {
      anonymousHandlers += 1;
      const name = "__aiwe_handler_" + anonymousHandlers;
      Object.defineProperty(global, name, { value: handler, writable: false, configurable: false, enumerable: false });
      return name;
    }
    throw new Error(
      "a handler registered inside init() must be a global function or its name" +
        (handler.name ? " ('" + handler.name + "' is not a global)" : "") +
        "; anonymous functions can be registered at the top level of the script"
    );
  }

  Object.defineProperty(global, "__aiwe_top_level", {
    writable: false, configurable: false, enumerable: false,
    value: function (on) { topLevel = on === true; },
  });

  const routeRegistry = {
    registerRoute: function (path, handler, method, metadata) {
      return hostCall("routeRegistry.registerRoute", [
        path,
        handlerName(handler),
        method === undefined ? null : method,
        metadata === undefined ? null : metadata,
      ]);
    },
  };
  Object.freeze(routeRegistry);

  // Values are strings; other values are accepted and stored as text (objects as JSON), where
  // the original threw a conversion error.
  function storedText(value) {
    if (typeof value === "string") return wellFormed(value);
    if (value === undefined) return "undefined";
    if (value !== null && typeof value === "object") {
      try {
        const text = JSON.stringify(value);
        if (text !== undefined) return wellFormed(text);
      } catch (e) {
        // fall through to String()
      }
    }
    return wellFormed(String(value));
  }

  function keyText(key) {
    return key === undefined || key === null ? "" : wellFormed(String(key));
  }

  function keyValueStorage(area) {
    return Object.freeze({
      getItem: function (key) {
        return hostCall(area + ".getItem", [keyText(key)]);
      },
      setItem: function (key, value) {
        return hostCall(area + ".setItem", [keyText(key), storedText(value)]);
      },
      removeItem: function (key) {
        return hostCall(area + ".removeItem", [keyText(key)]);
      },
      clear: function () {
        return hostCall(area + ".clear", []);
      },
    });
  }

  const ResponseBuilder = Object.freeze({
    json: function (data, status) {
      return { status: status === undefined ? 200 : status, body: JSON.stringify(data), contentType: "application/json" };
    },
    text: function (text, status) {
      return { status: status === undefined ? 200 : status, body: text, contentType: "text/plain; charset=UTF-8" };
    },
    html: function (html, status) {
      return { status: status === undefined ? 200 : status, body: html, contentType: "text/html; charset=UTF-8" };
    },
    error: function (status, message) {
      return { status: status, body: JSON.stringify({ error: message }), contentType: "application/json" };
    },
    noContent: function () {
      return { status: 204, body: "", contentType: "" };
    },
    redirect: function (url, status) {
      return {
        status: status === undefined ? 302 : status,
        body: "Redirecting to " + url,
        contentType: "text/plain; charset=UTF-8",
        headers: { Location: url },
      };
    },
  });

  function define(name, value) {
    Object.defineProperty(global, name, { value: value, writable: true, configurable: true, enumerable: false });
  }

  define("console", consoleObject);
  define("routeRegistry", routeRegistry);
  define("ResponseBuilder", ResponseBuilder);
  define("sharedStorage", keyValueStorage("sharedStorage"));
  define("personalStorage", keyValueStorage("personalStorage"));
  // v0.9 flat aliases.
  define("register", function (path, handler, method) {
    routeRegistry.registerRoute(path, handler, method);
    return undefined;
  });
  define("writeLog", function (message) {
    return consoleObject.log(message);
  });

  const AUTH_REQUIRED = "Authentication required. Please login to access this resource.";

  function decorateAuth(auth) {
    if (!auth || typeof auth !== "object") return auth;
    const requireAuth = function () {
      if (!auth.isAuthenticated || !auth.user) throw new Error(AUTH_REQUIRED);
      return auth.user;
    };
    Object.defineProperty(auth, "requireAuth", { value: requireAuth, enumerable: false });
    Object.defineProperty(auth, "currentUser", { value: function () { return auth.user || null; }, enumerable: false });
    return auth;
  }

  // v0.9 handlers took the request itself (`function h(req) { req.query.x }`): the context
  // exposes read-only, non-enumerable aliases of the request's fields.
  const REQUEST_ALIASES = ["path", "method", "query", "form", "body", "headers", "params", "files"];

  // v0.9 init(context) read scriptName, timestamp and isStartup from the context itself.
  const INIT_ALIASES = ["scriptName", "timestamp", "isStartup"];

  function prepareContext(ctx) {
    const init = ctx.meta && ctx.meta.init;
    if (init && typeof init === "object") {
      for (const name of INIT_ALIASES) {
        if (!(name in ctx)) {
          Object.defineProperty(ctx, name, { get: function () { return init[name]; }, enumerable: false });
        }
      }
    }
    const request = ctx.request;
    if (request && typeof request === "object") {
      decorateAuth(request.auth);
      for (const name of REQUEST_ALIASES) {
        if (!(name in ctx)) {
          Object.defineProperty(ctx, name, { get: function () { return request[name]; }, enumerable: false });
        }
      }
    }
    return ctx;
  }

  function isThenable(value) {
    return value !== null && (typeof value === "object" || typeof value === "function") && typeof value.then === "function";
  }

  const BODY_ERROR = "Body must be a string or object with __html property";

  function normalizeResult(result) {
    if (typeof result === "string") return { type: "string", value: result };
    if (isThenable(result)) return { type: "promise" };
    if (result === null || typeof result !== "object") return { type: "none" };
    const out = {
      type: "object",
      has_status: result.status !== undefined && result.status !== null,
      status: result.status === undefined ? null : result.status,
      body: null,
      body_error: null,
      body_base64: typeof result.bodyBase64 === "string" ? result.bodyBase64 : null,
      content_type: typeof result.contentType === "string" ? result.contentType : null,
      headers: {},
    };
    const body = result.body;
    if (typeof body === "string") {
      out.body = body;
    } else if (body !== null && typeof body === "object") {
      out.body = body.__html !== undefined ? String(body.__html) : String(body);
    } else if (body !== undefined) {
      out.body_error = BODY_ERROR;
    }
    if (typeof out.status === "number" && !isFinite(out.status)) out.status = String(out.status);
    const headers = result.headers;
    if (headers && typeof headers === "object") {
      for (const key of Object.keys(headers)) {
        if (typeof headers[key] === "string") out.headers[key] = headers[key];
      }
    }
    return out;
  }

  const NO_HANDLER = "__aiwe_no_handler__:";

  Object.defineProperty(global, "__aiwe_invoke", { writable: false, configurable: false, enumerable: false, value: function (name, contextJson, phase) {
    const ctx = prepareContext(JSON.parse(contextJson));
    global.context = ctx;
    if (ctx.request && ctx.request.auth) global.auth = ctx.request.auth;
    if (phase === "init") {
      if (typeof global.init !== "function") return JSON.stringify({ type: "init", ran: false });
      global.init(ctx);
      return JSON.stringify({ type: "init", ran: true });
    }
    const handler = global[name];
    if (typeof handler !== "function") {
      throw new Error(NO_HANDLER + name + ": " + (handler === undefined ? "not defined" : "not a function"));
    }
    return JSON.stringify(normalizeResult(handler(ctx)));
  } });
})(globalThis);
