// Type declarations for aiwebengine scripts: every global the engine installs in a script's
// sandbox. Served by the engine at /engine/types/aiwebengine.d.ts.
//
// Scripts are evaluated as global scripts (not ES modules). Handlers are named by string and
// looked up on the global object, so declare them as top-level `function`s.

/** Authentication details of the caller (everyone is anonymous until login exists). */
interface AuthUser {
  id: string;
  email: string | null;
  name: string | null;
  provider: string | null;
  isAuthenticated: true;
}

interface AuthContext {
  isAuthenticated: boolean;
  isAdmin: boolean;
  isEditor: boolean;
  userId: string | null;
  userEmail: string | null;
  userName: string | null;
  provider: string | null;
  user: AuthUser | null;
  /** The user, or throws "Authentication required. Please login to access this resource." */
  requireAuth(): AuthUser;
  /** v0.9: the user or null. */
  currentUser(): AuthUser | null;
}

interface UploadedFile {
  field: string;
  filename?: string;
  contentType?: string;
  /** The file's bytes, base64-encoded. */
  data: string;
  size: number;
}

interface HttpRequest {
  /** The raw path, percent-encoding preserved. */
  path: string;
  method: string;
  /** Lower-case names; the last value of a repeated header. Absent when there are none. */
  headers?: Record<string, string>;
  query: Record<string, string>;
  /** Values of `:name` route segments, not percent-decoded. */
  params: Record<string, string>;
  form: Record<string, string>;
  files: UploadedFile[];
  /** The whole body as UTF-8 text ("" if it is not UTF-8), or null when empty. */
  body: string | null;
  auth: AuthContext;
}

interface HandlerContext {
  kind: "httpRoute" | "init" | string;
  /** Equals the response's x-request-id. */
  invocationId: string;
  scriptUri: string;
  handlerName: string;
  request: HttpRequest;
  args: unknown;
  meta?: { init?: { scriptName: string; timestamp: number; isStartup: boolean } };
  // Read-only v0.9 aliases of request fields (handlers written as `function h(req)`).
  readonly path: string;
  readonly method: string;
  readonly query: Record<string, string>;
  readonly form: Record<string, string>;
  readonly body: string | null;
  readonly headers?: Record<string, string>;
  readonly params: Record<string, string>;
  readonly files: UploadedFile[];
  // v0.9 aliases of meta.init in init(context).
  readonly scriptName?: string;
  readonly timestamp?: number;
  readonly isStartup?: boolean;
}

/** What a handler may return: a string (200 text/plain) or a response object. */
interface HandlerResponse {
  status: number;
  body?: string | { __html: string } | { toString(): string };
  /** Base64 body; wins over `body`. */
  bodyBase64?: string;
  /** Default "text/plain; charset=UTF-8" (or "application/octet-stream" with bodyBase64). */
  contentType?: string;
  /** String values only; applied after contentType. */
  headers?: Record<string, string>;
}

type Handler = (context: HandlerContext) => HandlerResponse | string | undefined;

interface RouteMetadata {
  summary?: string;
  description?: string;
  tags?: string[];
}

declare const routeRegistry: {
  /**
   * Register a route during init() or at the top level. Returns
   * "Route '<METHOD> <path>' registered to handler '<h>'", or outside registration
   * "routeRegistry.registerRoute: '<path>' not registered - registration only takes effect
   * during script startup and init()". Throws for the engine's reserved prefixes.
   */
  registerRoute(
    path: string,
    handler: string | Handler,
    method?: string | null,
    metadata?: RouteMetadata | null,
  ): string;
  /**
   * Serve one of this script's assets on exactly `path` (GET and HEAD), ahead of routes and
   * streams, with an ETag from the content digest (If-None-Match answers 304). The asset must
   * exist when this is called. Returns "Asset path '<p>' registered to asset '<a>'", "Asset
   * '<a>' not found or not owned by script '<uri>'", an "Invalid asset …" message, or the
   * registration-phase message outside init(). Throws for the engine's reserved prefixes.
   */
  registerAssetRoute(path: string, asset: string, metadata?: RouteMetadata | null): string;
  /**
   * Register a stream path during init(): browsers connect with SSE (GET) or a WebSocket.
   * Each connection's metadata is its query parameters, or the object of strings the
   * customization function returns (it gets `context.args` = the query parameters).
   * Returns "Web stream '<p>' registered successfully", "Invalid stream path '<p>': …",
   * "Invalid customization function name …" or the registration-phase message.
   */
  registerStreamRoute(
    path: string,
    customizationFunction?: string | ((context: HandlerContext) => Record<string, string>) | null,
    metadata?: RouteMetadata | null,
  ): string;
  /**
   * A stream path whose WebSocket clients may also send messages: each incoming text message
   * runs `onMessage` with `context.kind = "websocketMessage"` and `context.args = {message,
   * connectionId, metadata}`; a non-empty string it returns is sent back to that client only.
   * Returns "WebSocket stream '<p>' registered successfully" or the messages above.
   */
  registerWebSocketRoute(
    path: string,
    onMessage: string | ((context: HandlerContext) => string | null | undefined | void),
    options?: (RouteMetadata & { customizationFunction?: string | ((context: HandlerContext) => Record<string, string>) }) | null,
  ): string;
  /**
   * Send `data` (text; other values are sent as JSON) to every connection of a stream:
   * "Successfully sent message to <n> connections on path '<p>'" or "Sent message to
   * <ok>/<total> connections on path '<p>' (<f> failed)" (failed = dropped for lagging).
   */
  sendStreamMessage(path: string, data: unknown): string;
  /**
   * Send to the connections whose metadata matches `filter` (an object of strings or its JSON):
   * "subset" (default) reaches connections whose metadata is contained in the filter,
   * "overlap" those whose metadata does not contradict it; connections without metadata
   * always receive. Throws "Invalid filter JSON: …" or "Invalid match mode '<m>'. Expected
   * 'subset' or 'overlap'".
   */
  sendStreamMessageFiltered(
    path: string,
    data: unknown,
    filter?: string | Record<string, string> | null,
    matchMode?: "subset" | "overlap" | null,
  ): string;
};

/** An asset as listAssets describes it; times are epoch milliseconds. */
interface AssetInfo {
  uri: string;
  name: string;
  size: number;
  mimetype: string;
  createdAt: number;
  updatedAt: number;
}

/** Files (up to 10 MB each) that belong to the calling script. */
declare const assetStorage: {
  /** JSON text of an AssetInfo[] (parse it with JSON.parse). */
  listAssets(): string;
  /** The content as base64, or "Asset '<name>' not found". */
  fetchAsset(name: string): string;
  /**
   * "Asset '<name>' upserted successfully", or "Invalid asset URI: …", "Asset too large (max
   * 10MB)", "Error decoding base64 content: …", "Error upserting asset: …". Names are 1-255
   * characters without "..", "\\" or control characters.
   */
  upsertAsset(name: string, mimetype: string, contentBase64: string): string;
  /** "Asset '<name>' deleted successfully" or "Asset '<name>' not found". */
  deleteAsset(name: string): string;
};

declare const ResponseBuilder: {
  json(data: unknown, status?: number): HandlerResponse;
  text(text: string, status?: number): HandlerResponse;
  html(html: string, status?: number): HandlerResponse;
  error(status: number, message: string): HandlerResponse;
  noContent(): HandlerResponse;
  redirect(url: string, status?: number): HandlerResponse;
};

/** Each call writes one script log line and returns "Log written successfully". */
declare const console: {
  log(...values: unknown[]): string;
  info(...values: unknown[]): string;
  warn(...values: unknown[]): string;
  error(...values: unknown[]): string;
  debug(...values: unknown[]): string;
};

interface KeyValueStorage {
  getItem(key: string): string | null;
  /** "Item set successfully", "Error: Key cannot be empty" or "Error: Value too large (>1MB)". */
  setItem(key: string, value: unknown): string;
  removeItem(key: string): boolean;
  /** "Storage cleared successfully". */
  clear(): string;
}

/** Per-script storage, kept in the engine's database. */
declare const sharedStorage: KeyValueStorage;
/** Per-script, per-user storage (answers for anonymous callers until login exists). */
declare const personalStorage: KeyValueStorage;

interface FetchOptions {
  /** HTTP method, default "GET". */
  method?: string;
  /** Header values may contain `{{secret:NAME}}`, replaced by the secret of that name. */
  headers?: Record<string, string>;
  /** Request body; a non-string value is sent as its JSON. */
  body?: string | unknown;
  /** At most this long, in milliseconds (never longer than the engine's limit or the handler's deadline). */
  timeout_ms?: number;
}

/** What `fetch` answers, as JSON text: `JSON.parse(fetch(...)) as FetchResult`. */
interface FetchResult {
  status: number;
  /** true for a 2xx status; other statuses are normal results, not errors. */
  ok: boolean;
  /** Lowercase names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  /** The body as text (UTF-8 unless the response names another charset). */
  body: string;
}

/**
 * An HTTP request made by the engine. Options as JSON text (the original's form) or an object.
 * Returns the JSON text of a `FetchResult`. Throws "Fetch error: ..." for blocked destinations
 * (internal addresses, localhost, schemes other than http/https), network failures, timeouts,
 * responses over the size limit, and missing secrets; "Invalid fetch options: ..." for options
 * that do not parse.
 */
declare function fetch(url: string, options?: FetchOptions | string | null): string;

/** Secrets of the calling user in this script; values are never read back, only used by `fetch`. */
declare const secretStorage: {
  /** The user's secret, else the script's (set over /engine/secrets). */
  exists(key: string): boolean;
  /**
   * "Secret set successfully", "Error: Key cannot be empty", "Error: Value too large (>1MB)" or
   * "Error: Secret storage requires authentication. Please log in." (anonymous callers).
   * `allowedHosts` limits the hosts `fetch` may send the secret to ("api.example.com", "*.example.com").
   */
  setSecret(key: string, value: string, allowedHosts?: string[] | string | null): string;
  /** false when there was no such secret or the caller is anonymous. */
  removeSecret(key: string): boolean;
  /** "Secrets cleared successfully" or the authentication error. */
  clear(): string;
};

/** Base64 of the UTF-8 bytes of `text`. */
declare function btoa(text: string): string;
/** Decodes base64 to UTF-8 text; throws for invalid base64 or non-UTF-8 bytes. */
declare function atob(base64: string): string;
declare const convert: {
  btoa(text: string): string;
  atob(base64: string): string;
  /**
   * CommonMark plus tables, strikethrough, footnotes and task lists. Raw HTML passes through.
   * "Error: Markdown input cannot be empty" / "Error: Markdown input too large (max 1000000
   * bytes)".
   */
  markdown_to_html(markdown: string): string;
  /**
   * Handlebars: {{x}} HTML-escaped, {{{x}}} raw, #if/#unless/#each/#with, this, @index, ../.
   * `data` is JSON text (or an object). Errors are returned as "Error: …" strings.
   */
  render_handlebars_template(template: string, data?: string | object): string;
};

declare const validate: {
  requireQueryParam(context: HandlerContext, name: string): string;
  requirePathParam(context: HandlerContext, name: string): string;
  validateString(
    value: unknown,
    rules?: { minLength?: number; maxLength?: number; pattern?: string | RegExp },
  ): string;
  validateNumber(value: unknown, rules?: { min?: number; max?: number }): number;
};
declare function requireQueryParam(name: string): string;
declare function requirePathParam(name: string): string;
declare function optionalQueryParam<T = null>(name: string, fallback?: T): string | T;
declare function validateString(value: unknown, minLength?: number, maxLength?: number): string;
declare function validateNumber(value: unknown, min?: number, max?: number): number;

/** The context of the invocation in progress (the handler's argument). */
declare var context: HandlerContext;
/** v0.9: the caller's AuthContext. */
declare var auth: AuthContext;

// v0.9 flat API.
/** Registers a route like routeRegistry.registerRoute; returns undefined. */
declare function register(path: string, handler: string | Handler, method?: string): void;
/** console.log with one argument. */
declare function writeLog(message: unknown): string;
declare function listScripts(): string[];
declare function getScript(uri: string): string | null;
/** A JSON string {scriptName, initialized, initError, lastInitTime, createdAt, updatedAt}. */
declare function getScriptInitStatus(uri: string): string | null;
declare function listLogs(): string[];
declare function listLogsForUri(uri: string): string[];
/**
 * Store a script and run its init(); "Script '<uri>' upserted successfully" or "Error: …".
 * Throws when the script's own init() (or one up the chain) is running, or past 4 levels.
 */
declare function upsertScript(uri: string, content: string): string;
/** Delete a script; true if it existed. Throws when its init() is running up the chain. */
declare function deleteScript(uri: string): boolean;
type GraphQLVisibility = "external" | "engine" | "internal";
type GraphQLResolver = string | ((context: HandlerContext) => unknown);

/**
 * GraphQL fields served on /graphql. `sdl` is a bare field ("hello(name: String): String")
 * or SDL blocks ("type User { id: ID! } type Query { user(id: ID!): User }"). Visibility:
 * "external" (on /graphql), "engine" (only through executeGraphQL), "internal" (neither).
 * Resolvers get `context.args`; their result follows the declared type (JSON text is parsed
 * for object and list types). A resolver that throws produces a GraphQL error.
 * Returns "GraphQL query '<name>' registered successfully" (mutation/subscription alike) or
 * "Error registering GraphQL query '<name>': …"; a fragment that does not build fails init().
 */
declare const graphQLRegistry: {
  registerQuery(name: string, sdl: string, resolver: GraphQLResolver, visibility: GraphQLVisibility): string;
  registerMutation(name: string, sdl: string, resolver: GraphQLResolver, visibility: GraphQLVisibility): string;
  /**
   * The resolver, if given, runs once per subscriber like a stream customization function
   * (`context.args` = the subscription arguments as strings) and returns its metadata.
   */
  registerSubscription(name: string, sdl: string, resolver: GraphQLResolver | null, visibility: "external"): string;
  /** "GraphQL subscription message sent to '<name>' (<n> connections) successfully". */
  sendSubscriptionMessage(name: string, message: unknown): string;
  sendSubscriptionMessageFiltered(
    name: string,
    message: unknown,
    filter?: string | Record<string, string> | null,
    matchMode?: "subset" | "overlap" | null,
  ): string;
  /** Runs against the external and engine fields; returns the GraphQL response as JSON text. */
  executeGraphQL(query: string, variables?: string | Record<string, unknown> | null): string;
};
/** v0.9: graphQLRegistry.registerQuery(name, sdl, resolver, "external"). */
declare function registerGraphQLQuery(name: string, sdl: string, resolver: GraphQLResolver): string;
/** v0.9: graphQLRegistry.registerMutation(name, sdl, resolver, "external"). */
declare function registerGraphQLMutation(name: string, sdl: string, resolver: GraphQLResolver): string;
/** v0.9: graphQLRegistry.registerSubscription(name, sdl, resolver, "external"). */
declare function registerGraphQLSubscription(name: string, sdl: string, resolver?: GraphQLResolver | null): string;
/** v0.9: graphQLRegistry.sendSubscriptionMessage. */
declare function sendSubscriptionMessage(name: string, message: unknown): string;

/** v0.9: routeRegistry.registerStreamRoute(path). */
declare function registerWebStream(path: string): string;
/**
 * v0.9: with one argument, send to every stream ("Successfully sent message to <n>
 * connections on all streams"); with two, routeRegistry.sendStreamMessage(path, message).
 */
declare function sendStreamMessage(messageOrPath: unknown, message?: unknown): string;
/** v0.9: routeRegistry.sendStreamMessage. */
declare function sendStreamMessageToPath(path: string, message: unknown): string;
/** The names of the calling script's assets. */
declare function listAssets(): string[];
/** assetStorage.fetchAsset. */
declare function fetchAsset(path: string): string;
/** assetStorage.upsertAsset with the v0.9 argument order: content before mimetype. */
declare function upsertAsset(path: string, contentBase64: string, mimetype: string): string;
/** assetStorage.deleteAsset. */
declare function deleteAsset(path: string): string;

declare const dispatcher: {
  /**
   * During init(): "Registered listener for message type '<t>': handler '<h>'". The listener
   * receives `{messageType, messageData}`. Re-init replaces a script's listeners.
   */
  registerListener(messageType: string, handler: string | ((message: { messageType: string; messageData: unknown }) => unknown)): string;
  /**
   * Runs every listener now, each in its own invocation: "Dispatched message type '<t>':
   * <n> successful, <m> failed" or "No listeners for message type '<t>'". `data` is JSON text
   * or any value. Listeners may send messages 3 levels deep; beyond that this throws.
   */
  sendMessage(messageType: string, data?: unknown): string;
};
