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

  // QuickJS's JSON.stringify recurses in C without checking the stack: a value nested some ten
  // thousand levels deep overflows the worker's C stack (SIGSEGV) instead of throwing.  With a
  // replacer function every level is a JavaScript call, and calls do check the stack, so the
  // same value throws "stack overflow" like any deep recursion.  The identity replacer changes
  // nothing else; array replacers (rare) keep the native path.
  const nativeStringify = JSON.stringify;
  const passThrough = function (key, value) { return value; };
  Object.defineProperty(JSON, "stringify", { writable: true, configurable: true, enumerable: false, value: {
    stringify(value, replacer, space) {
      return nativeStringify(value, Array.isArray(replacer) || typeof replacer === "function" ? replacer : passThrough, space);
    },
  }.stringify });

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
      // As JSON text: the bridge would cut a raw string at its first NUL character.
      emitLog(level, JSON.stringify(wellFormed(parts.join(" "))));
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

  // Stream messages are text; any other value is sent as its JSON (the original took strings).
  function messageText(data) {
    if (typeof data === "string") return wellFormed(data);
    if (data === undefined) return "null";
    const text = JSON.stringify(data);
    return text === undefined ? String(data) : wellFormed(text);
  }

  const routeRegistry = {
    registerRoute: function (path, handler, method, metadata) {
      return hostCall("routeRegistry.registerRoute", [
        path,
        handlerName(handler),
        method === undefined ? null : method,
        metadata === undefined ? null : metadata,
      ]);
    },
    registerStreamRoute: function (path, customizationFunction, metadata) {
      return hostCall("routeRegistry.registerStreamRoute", [
        path === undefined ? null : path,
        customizationFunction === undefined || customizationFunction === null ? null : handlerName(customizationFunction),
        metadata === undefined ? null : metadata,
      ]);
    },
    registerWebSocketRoute: function (path, onMessage, options) {
      let opts = options === undefined || options === null ? null : options;
      if (opts && typeof opts === "object" && opts.customizationFunction !== undefined && opts.customizationFunction !== null) {
        opts = Object.assign({}, opts, { customizationFunction: handlerName(opts.customizationFunction) });
      }
      return hostCall("routeRegistry.registerWebSocketRoute", [
        path === undefined ? null : path,
        onMessage === undefined || onMessage === null ? null : handlerName(onMessage),
        opts,
      ]);
    },
    sendStreamMessage: function (path, data) {
      return hostCall("routeRegistry.sendStreamMessage", [path === undefined ? null : path, messageText(data)]);
    },
    sendStreamMessageFiltered: function (path, data, filter, matchMode) {
      return hostCall("routeRegistry.sendStreamMessageFiltered", [
        path === undefined ? null : path,
        messageText(data),
        filter === undefined ? null : filter,
        matchMode === undefined ? null : matchMode,
      ]);
    },
    registerAssetRoute: function (path, asset, metadata) {
      return hostCall("routeRegistry.registerAssetRoute", [
        path === undefined ? null : path,
        asset === undefined ? null : asset,
        metadata === undefined ? null : metadata,
      ]);
    },
  };
  Object.freeze(routeRegistry);

  function argText(value) {
    return value === undefined || value === null ? null : typeof value === "string" ? wellFormed(value) : String(value);
  }

  // Asset names and mimetypes are strings (other values are converted, where the original
  // threw); content travels as base64 text.
  const assetStorage = Object.freeze({
    listAssets: function () { return hostCall("assetStorage.listAssets", []); },
    fetchAsset: function (name) { return hostCall("assetStorage.fetchAsset", [argText(name)]); },
    upsertAsset: function (name, mimetype, contentBase64) {
      return hostCall("assetStorage.upsertAsset", [argText(name), argText(mimetype), argText(contentBase64)]);
    },
    deleteAsset: function (name) { return hostCall("assetStorage.deleteAsset", [argText(name)]); },
  });

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

  // -- base64 of UTF-8 (btoa/atob as the original: UTF-8 bytes, not Latin-1) --------------
  const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const B64_INDEX = {};
  for (let i = 0; i < B64.length; i++) B64_INDEX[B64[i]] = i;

  // Bytes live in typed arrays: a plain array spends 16 bytes of heap per byte.
  function utf8Bytes(text) {
    const source = wellFormed(text);
    const bytes = new Uint8Array(source.length * 3);
    let n = 0;
    for (const ch of source) {
      const c = ch.codePointAt(0);
      if (c < 0x80) bytes[n++] = c;
      else if (c < 0x800) { bytes[n++] = 0xc0 | (c >> 6); bytes[n++] = 0x80 | (c & 63); }
      else if (c < 0x10000) { bytes[n++] = 0xe0 | (c >> 12); bytes[n++] = 0x80 | ((c >> 6) & 63); bytes[n++] = 0x80 | (c & 63); }
      else { bytes[n++] = 0xf0 | (c >> 18); bytes[n++] = 0x80 | ((c >> 12) & 63); bytes[n++] = 0x80 | ((c >> 6) & 63); bytes[n++] = 0x80 | (c & 63); }
    }
    return bytes.subarray(0, n);
  }

  const NOT_UTF8 = "atob(): the decoded bytes are not valid UTF-8";

  // Strings are built from parts joined once: QuickJS copies a string on every `+=`, which
  // made long inputs quadratic (2 MB took longer than a handler's deadline).
  const CHUNK = 8192;

  function fromCodePoints(points) {
    const parts = [];
    for (let i = 0; i < points.length; i += CHUNK) {
      parts.push(String.fromCodePoint.apply(null, points.slice(i, i + CHUNK)));
    }
    return parts.join("");
  }

  function utf8Text(bytes) {
    const points = [];
    let i = 0;
    while (i < bytes.length) {
      const b = bytes[i];
      let need;
      let c;
      if (b < 0x80) { need = 0; c = b; }
      else if (b >= 0xc2 && b < 0xe0) { need = 1; c = b & 0x1f; }
      else if (b >= 0xe0 && b < 0xf0) { need = 2; c = b & 0x0f; }
      else if (b >= 0xf0 && b < 0xf5) { need = 3; c = b & 0x07; }
      else throw new Error(NOT_UTF8);
      if (i + need >= bytes.length && need > 0) throw new Error(NOT_UTF8);
      for (let k = 1; k <= need; k++) {
        const next = bytes[i + k];
        if ((next & 0xc0) !== 0x80) throw new Error(NOT_UTF8);
        c = (c << 6) | (next & 63);
      }
      // Overlong forms, surrogates and code points past U+10FFFF are not UTF-8.
      if ((need === 2 && (c < 0x800 || (c >= 0xd800 && c <= 0xdfff))) || (need === 3 && (c < 0x10000 || c > 0x10ffff))) {
        throw new Error(NOT_UTF8);
      }
      points.push(c);
      i += need + 1;
    }
    return fromCodePoints(points);
  }

  function btoa(text) {
    if (typeof text !== "string") throw new TypeError("btoa() expects a string parameter");
    const bytes = utf8Bytes(text);
    const out = [];
    for (let i = 0; i < bytes.length; i += 3) {
      const n = (bytes[i] << 16) | ((bytes[i + 1] || 0) << 8) | (bytes[i + 2] || 0);
      out.push(
        B64[(n >> 18) & 63] + B64[(n >> 12) & 63] +
          (i + 1 < bytes.length ? B64[(n >> 6) & 63] : "=") +
          (i + 2 < bytes.length ? B64[n & 63] : "=")
      );
    }
    return out.join("");
  }

  function atob(encoded) {
    if (typeof encoded !== "string") throw new TypeError("atob() expects a string parameter");
    const compact = encoded.replace(/[\t\n\f\r ]+/g, "");
    if (compact.length % 4 === 1 || !/^[A-Za-z0-9+/]*={0,2}$/.test(compact)) {
      throw new Error("atob(): the input is not valid base64");
    }
    const body = compact.replace(/=+$/, "");
    const bytes = new Uint8Array(Math.floor((body.length * 3) / 4));
    let n = 0;
    let buffer = 0;
    let bits = 0;
    for (let i = 0; i < body.length; i++) {
      buffer = ((buffer << 6) | B64_INDEX[body[i]]) & 0xffffff;
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        bytes[n++] = (buffer >> bits) & 0xff;
      }
    }
    return utf8Text(bytes.subarray(0, n));
  }

  // -- validation helpers (the original's, undocumented there) ---------------------------
  function present(value) {
    return value !== undefined && value !== null && value !== "";
  }

  function requireFrom(ctx, where, label, name) {
    const request = ctx && ctx.request;
    const value = request && request[where] ? request[where][name] : undefined;
    if (!present(value)) throw new Error("Required " + label + " parameter '" + name + "' is missing or empty");
    return value;
  }

  function validateStringWith(value, rules) {
    rules = rules || {};
    if (typeof value !== "string") throw new Error("Value must be a string");
    if (rules.minLength !== undefined && rules.minLength !== null && value.length < rules.minLength) {
      throw new Error("Value must be at least " + rules.minLength + " characters long");
    }
    if (rules.maxLength !== undefined && rules.maxLength !== null && value.length > rules.maxLength) {
      throw new Error("Value must be at most " + rules.maxLength + " characters long");
    }
    if (rules.pattern !== undefined && rules.pattern !== null) {
      const pattern = rules.pattern instanceof RegExp ? rules.pattern : new RegExp(rules.pattern);
      if (!pattern.test(value)) throw new Error("Value does not match the required pattern");
    }
    return value;
  }

  function validateNumberWith(value, rules) {
    rules = rules || {};
    const number = typeof value === "number" ? value : typeof value === "string" && value.trim() !== "" ? Number(value) : NaN;
    if (!isFinite(number)) throw new Error("Value must be a number");
    if (rules.min !== undefined && rules.min !== null && number < rules.min) throw new Error("Value must be at least " + rules.min);
    if (rules.max !== undefined && rules.max !== null && number > rules.max) throw new Error("Value must be at most " + rules.max);
    return number;
  }

  const validate = Object.freeze({
    requireQueryParam: function (ctx, name) { return requireFrom(ctx, "query", "query", name); },
    requirePathParam: function (ctx, name) { return requireFrom(ctx, "params", "path", name); },
    validateString: validateStringWith,
    validateNumber: validateNumberWith,
  });

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
  define("btoa", btoa);
  define("atob", atob);
  define("convert", Object.freeze({
    btoa: btoa,
    atob: atob,
    render_handlebars_template: function (template, data) {
      // The original took the data as JSON text; an object is accepted as well.
      const json = typeof data === "string" ? data : data === undefined || data === null ? "{}" : JSON.stringify(data);
      return hostCall("convert.render_handlebars_template", [typeof template === "string" ? wellFormed(template) : String(template), wellFormed(json)]);
    },
    markdown_to_html: function (markdown) {
      return hostCall("convert.markdown_to_html", [typeof markdown === "string" ? wellFormed(markdown) : markdown === undefined || markdown === null ? "" : String(markdown)]);
    },
  }));
  define("validate", validate);
  define("requireQueryParam", function (name) { return requireFrom(global.context, "query", "query", name); });
  define("requirePathParam", function (name) { return requireFrom(global.context, "params", "path", name); });
  define("optionalQueryParam", function (name, fallback) {
    const request = global.context && global.context.request;
    const value = request && request.query ? request.query[name] : undefined;
    return present(value) ? value : fallback === undefined ? null : fallback;
  });
  define("validateString", function (value, minLength, maxLength) {
    return validateStringWith(value, { minLength: minLength, maxLength: maxLength });
  });
  define("validateNumber", function (value, min, max) {
    return validateNumberWith(value, { min: min, max: max });
  });
  // v0.9 flat reads of the engine's state.
  for (const name of ["listScripts", "listLogs"]) {
    define(name, function () { return hostCall(name, []); });
  }
  for (const name of ["getScript", "getScriptInitStatus", "listLogsForUri"]) {
    define(name, function (uri) { return hostCall(name, [uri === undefined ? null : uri]); });
  }
  define("upsertScript", function (uri, content) {
    return hostCall("upsertScript", [uri === undefined ? null : uri, content === undefined ? null : content]);
  });
  define("deleteScript", function (uri) { return hostCall("deleteScript", [uri === undefined ? null : uri]); });
  define("dispatcher", Object.freeze({
    registerListener: function (messageType, handler) {
      return hostCall("dispatcher.registerListener", [messageType === undefined ? null : messageType, handlerName(handler)]);
    },
    sendMessage: function (messageType, data) {
      // The original took JSON text; any value is accepted and sent as JSON.
      const json = typeof data === "string" ? data : data === undefined ? "{}" : JSON.stringify(data);
      return hostCall("dispatcher.sendMessage", [messageType === undefined ? null : messageType, json]);
    },
  }));
  // -- GraphQL ------------------------------------------------------------------------------
  function registerField(api, name, sdl, resolver, visibility) {
    return hostCall(api, [
      argText(name),
      argText(sdl),
      resolver === undefined || resolver === null ? null : handlerName(resolver),
      visibility === undefined ? null : visibility,
    ]);
  }
  define("graphQLRegistry", Object.freeze({
    registerQuery: function (name, sdl, resolver, visibility) {
      return registerField("graphQLRegistry.registerQuery", name, sdl, resolver, visibility);
    },
    registerMutation: function (name, sdl, resolver, visibility) {
      return registerField("graphQLRegistry.registerMutation", name, sdl, resolver, visibility);
    },
    registerSubscription: function (name, sdl, resolver, visibility) {
      return registerField("graphQLRegistry.registerSubscription", name, sdl, resolver, visibility);
    },
    sendSubscriptionMessage: function (name, message) {
      return hostCall("graphQLRegistry.sendSubscriptionMessage", [argText(name), messageText(message)]);
    },
    sendSubscriptionMessageFiltered: function (name, message, filter, matchMode) {
      return hostCall("graphQLRegistry.sendSubscriptionMessageFiltered", [
        argText(name),
        messageText(message),
        filter === undefined ? null : filter,
        matchMode === undefined ? null : matchMode,
      ]);
    },
    executeGraphQL: function (query, variables) {
      const vars = variables === undefined || variables === null ? null : typeof variables === "string" ? variables : JSON.stringify(variables);
      return hostCall("graphQLRegistry.executeGraphQL", [argText(query), vars]);
    },
  }));
  // v0.9: three arguments, always external.
  define("registerGraphQLQuery", function (name, sdl, resolver) {
    return registerField("registerGraphQLQuery", name, sdl, resolver, "external");
  });
  define("registerGraphQLMutation", function (name, sdl, resolver) {
    return registerField("registerGraphQLMutation", name, sdl, resolver, "external");
  });
  define("registerGraphQLSubscription", function (name, sdl, resolver) {
    return registerField("registerGraphQLSubscription", name, sdl, resolver, "external");
  });
  define("sendSubscriptionMessage", function (name, message) {
    return hostCall("graphQLRegistry.sendSubscriptionMessage", [argText(name), messageText(message)]);
  });
  define("assetStorage", assetStorage);
  // v0.9 streams: registerWebStream(path); sendStreamMessage(message) to every stream, or
  // (path, message) to one; sendStreamMessageToPath(path, message).
  define("registerWebStream", function (path) {
    return hostCall("registerWebStream", [path === undefined ? null : path]);
  });
  define("sendStreamMessage", function (first, second) {
    if (arguments.length < 2) return hostCall("sendStreamMessage", [messageText(first)]);
    return routeRegistry.sendStreamMessage(first, second);
  });
  define("sendStreamMessageToPath", function (path, message) {
    return routeRegistry.sendStreamMessage(path, message);
  });
  // v0.9 asset globals: the calling script's assets; upsertAsset takes the content before the
  // mimetype, and listAssets answers an array of names.
  define("listAssets", function () { return hostCall("listAssets", []); });
  define("fetchAsset", assetStorage.fetchAsset);
  define("upsertAsset", function (path, contentBase64, mimetype) {
    return assetStorage.upsertAsset(path, mimetype, contentBase64);
  });
  define("deleteAsset", assetStorage.deleteAsset);
  define("sharedStorage", keyValueStorage("sharedStorage"));
  define("personalStorage", keyValueStorage("personalStorage"));
  // fetch(url, options): options as JSON text (the original's form) or as an object; the
  // result is JSON text. Failures throw "Fetch error: ...".
  define("fetch", function (url, options) {
    return hostCall("fetch", [
      url === undefined || url === null ? null : wellFormed(String(url)),
      options === undefined || options === null ? null : typeof options === "string" ? wellFormed(options) : options,
    ]);
  });
  // User-level secrets of the calling user; nothing reads a value back (fetch injects them).
  define("secretStorage", Object.freeze({
    exists: function (key) { return hostCall("secretStorage.exists", [keyText(key)]); },
    setSecret: function (key, value, allowedHosts) {
      return hostCall("secretStorage.setSecret", [
        keyText(key),
        value === undefined || value === null ? "" : wellFormed(String(value)),
        allowedHosts === undefined ? null : allowedHosts,
      ]);
    },
    removeSecret: function (key) { return hostCall("secretStorage.removeSecret", [keyText(key)]); },
    clear: function () { return hostCall("secretStorage.clear", []); },
  }));
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
    // v0.9 resolvers took the GraphQL arguments themselves: `function user(args) { args.id }`.
    if (typeof ctx.kind === "string" && ctx.kind.indexOf("graphql") === 0 && ctx.args && typeof ctx.args === "object") {
      const args = ctx.args;
      for (const name of Object.keys(args)) {
        if (!(name in ctx)) {
          Object.defineProperty(ctx, name, { get: function () { return args[name]; }, enumerable: false });
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
    const result = handler(ctx);
    if (phase === "value") {
      // Customization functions and message handlers: the value itself, as JSON.
      if (isThenable(result)) return JSON.stringify({ type: "promise" });
      const valueType = result === null ? "null" : Array.isArray(result) ? "array" : typeof result;
      const json = result === undefined || typeof result === "function" || typeof result === "symbol" ? undefined : JSON.stringify(result);
      return JSON.stringify({ type: "value", valueType: valueType, value: json === undefined ? null : JSON.parse(json) });
    }
    return JSON.stringify(normalizeResult(result));
  } });
})(globalThis);
