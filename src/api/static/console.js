/*
 * Parley operator console: an account's active sessions, help requests first; one session's
 * live transcript; take over, reply, whisper to the AI, hand back, end, decide tool approvals.
 * Plain JavaScript (an ES module), no dependencies, no build step; served by Parley at
 * /console with the API on the same origin.
 *
 * The account API key lives in sessionStorage only: this tab forgets it when it closes, and it
 * never goes in a cookie or a URL. The live stream is read with fetch() because EventSource
 * cannot send the Authorization header.
 */

const API = new URL("api/v1/", document.baseURI).href;
const STORE_KEY = "parley:console";
const TITLE = document.title;
const LIST_EVERY_MS = 4000;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15000;
// Events after which the list may have changed (order, badges, mode).
const LIST_EVENTS = new Set([
  "session.help_requested", "session.takeover", "session.handback", "session.final",
  "user_message", "message",
]);

// ---- the API ------------------------------------------------------------------------------

/** An HTTP answer that is not what was asked for; `code` from Parley's error shape. */
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function apiError(response) {
  try {
    const body = await response.json();
    const error = (body && body.error) || {};
    return new ApiError(response.status, error.code || `http_${response.status}`,
      error.message || response.statusText);
  } catch {
    return new ApiError(response.status, `http_${response.status}`, response.statusText);
  }
}

function retryable(error) {
  return !(error instanceof ApiError) || error.status === 429 || error.status >= 500;
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    if (signal) signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); });
  });
}

// Exponential backoff with jitter: 0.5 s, 1 s, 2 s, ... up to 15 s.
function backoff(attempt) {
  const ms = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt);
  return ms / 2 + Math.random() * ms / 2;
}

class Api {
  constructor(key) {
    this.key = key;
  }

  headers(extra = {}) {
    return { Authorization: `Bearer ${this.key}`, Accept: "application/json", ...extra };
  }

  async call(method, path, body) {
    const init = { method, headers: this.headers() };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(API + path, init);
    if (!response.ok) throw await apiError(response);
    return response.status === 204 ? null : response.json();
  }

  get(path) { return this.call("GET", path); }
  post(path, body = {}) { return this.call("POST", path, body); }

  stream(path, lastEventId, signal) {
    const headers = this.headers({ Accept: "text/event-stream" });
    if (lastEventId !== null) headers["Last-Event-ID"] = lastEventId;
    return fetch(API + path, { headers, signal });
  }
}

const chatPath = (id, rest = "") => `chats/${encodeURIComponent(id)}${rest}`;

/** Reads a text/event-stream body and calls onEvent(name, data, id) per event. */
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let name = "";
  let data = [];
  let id = null;

  function line(text) {
    if (text === "") {
      if (data.length) onEvent(name || "message", data.join("\n"), id);
      name = ""; data = []; id = null;
      return;
    }
    if (text.startsWith(":")) return;
    const colon = text.indexOf(":");
    const field = colon < 0 ? text : text.slice(0, colon);
    const value = colon < 0 ? "" : text.slice(colon + 1).replace(/^ /, "");
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
    else if (field === "id") id = value;
  }

  for (;;) {
    const chunk = await reader.read();
    if (chunk.done) {
      buffer += decoder.decode();
      if (buffer) line(buffer);
      line("");
      return;
    }
    buffer += decoder.decode(chunk.value, { stream: true });
    // A trailing \r may be the first half of a \r\n: it waits for the next chunk.
    const held = buffer.endsWith("\r") ? "\r" : "";
    const lines = (held ? buffer.slice(0, -1) : buffer).split(/\r\n|\r|\n/);
    buffer = lines.pop() + held;
    lines.forEach(line);
  }
}

// ---- small pieces -------------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const $ = (id) => document.getElementById(id);

function operatorIdOf(name) {
  const slug = name.toLowerCase().normalize("NFKD").replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "");
  return slug ? `operator-${slug}` : "operator";
}

function clock(iso) {
  const time = new Date(iso);
  return Number.isNaN(time.getTime()) ? "" :
    time.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function ago(iso) {
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (!Number.isFinite(seconds)) return "";
  if (seconds < 45) return "just now";
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

function modeLabel(mode) {
  return mode === "human" ? "Human mode" : "AI mode";
}

function isLive(view) {
  return Boolean(view) && !view.is_final && view.status !== "final";
}

// Help requests first, then the most recent activity.
function byUrgency(a, b) {
  if (Boolean(a.help_requested) !== Boolean(b.help_requested)) return a.help_requested ? -1 : 1;
  return Date.parse(b.last_activity) - Date.parse(a.last_activity);
}

function authorOf(message) {
  if (message.role === "user") return { kind: "user", label: "Customer" };
  const author = message.author || {};
  if (author.kind === "human") {
    const name = author.name || author.id || "Operator";
    return { kind: "human", label: `${name} (operator)` };
  }
  return { kind: "ai", label: "AI" };
}

function messageKey(message) {
  const author = message.author ? `${message.author.kind}:${message.author.id || ""}` : "";
  const calls = (message.tool_calls || []).map((c) => `${c.id}:${c.response ?? ""}`).join(",");
  return `${message.role}|${message.time}|${author}|${message.content ?? ""}|${calls}`;
}

function argumentsText(args) {
  if (typeof args === "string") return args;
  try { return JSON.stringify(args); } catch { return String(args); }
}

// ---- the console --------------------------------------------------------------------------

class Console {
  constructor() {
    this.api = null;
    this.operator = null;        // {id, name}
    this.sessions = [];          // summaries, in list order
    this.listSignature = "";
    this.selectedId = null;
    this.view = null;            // the selected session's SessionView
    this.rendered = [];          // message keys shown in the transcript, in order
    this.partials = new Map();   // message_index -> element of text streaming in
    this.streamAbort = null;     // stops the live stream of the selected session
    this.streamUp = false;       // that stream is connected
    this.lastEventId = null;
    this.viewTimer = null;
    this.viewLoading = null;
    this.viewDirty = false;
    this.listTimer = null;
    this.poller = null;
    this.busy = 0;               // actions in flight: their buttons wait
    this.errorSource = null;     // what the message in the alert is about
    this.bind();
  }

  bind() {
    $("sign-in").addEventListener("submit", (event) => {
      event.preventDefault();
      this.signIn();
    });
    $("sign-out").addEventListener("click", () => this.signOut(""));
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && this.api) this.poll();
    });
    $("operator-name").addEventListener("input", () => {
      $("operator-id").placeholder = operatorIdOf($("operator-name").value);
    });
    $("take-over").addEventListener("click", () => this.takeOver());
    $("hand-back").addEventListener("click", () => this.handBack());
    $("end").addEventListener("click", () => this.end());
    $("reply-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.sendReply();
    });
    $("whisper-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.whisper();
    });
    for (const [box, act] of [["reply", () => this.sendReply()], ["whisper", () => this.whisper()]]) {
      $(box).addEventListener("input", () => this.renderControls());
      $(box).addEventListener("keydown", (event) => {
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          act();
        }
      });
    }
  }

  // ---- signing in ------------------------------------------------------------------------

  start() {
    const saved = this.loadCredentials();
    if (saved) {
      this.enter(saved);
    } else {
      this.showSignIn("");
    }
  }

  loadCredentials() {
    try {
      const saved = JSON.parse(window.sessionStorage.getItem(STORE_KEY) || "null");
      if (saved && saved.key && saved.operator && saved.operator.id && saved.operator.name) {
        return saved;
      }
    } catch { /* nothing kept, or not readable: sign in again */ }
    return null;
  }

  showSignIn(message) {
    $("console-view").hidden = true;
    $("whoami").hidden = true;
    $("sign-in-view").hidden = false;
    $("sign-in-error").textContent = message;
    const name = $("operator-name");
    if (this.operator && !name.value) name.value = this.operator.name;
    $("api-key").focus();
  }

  async signIn() {
    const key = $("api-key").value.trim();
    const name = $("operator-name").value.trim();
    const id = $("operator-id").value.trim() || operatorIdOf(name);
    const problems = [];
    if (!key) problems.push("Paste an account API key.");
    if (!name) problems.push("Give your name: customers see it on your messages.");
    if (problems.length) {
      $("sign-in-error").textContent = problems.join(" ");
      $(key ? "operator-name" : "api-key").focus();
      return;
    }
    const submit = $("sign-in").querySelector("button[type=submit]");
    submit.disabled = true;
    $("sign-in-error").textContent = "";
    try {
      await new Api(key).get("chats?limit=1");
    } catch (error) {
      $("sign-in-error").textContent = error instanceof ApiError && error.status === 401
        ? `This API key was refused: ${error.message}`
        : `Could not reach Parley: ${error.message}`;
      $("api-key").focus();
      return;
    } finally {
      submit.disabled = false;
    }
    const saved = { key, operator: { id, name } };
    try {
      window.sessionStorage.setItem(STORE_KEY, JSON.stringify(saved));
    } catch { /* no session storage: signed in for this page view only */ }
    $("api-key").value = "";
    this.enter(saved);
  }

  signOut(message) {
    try { window.sessionStorage.removeItem(STORE_KEY); } catch { /* nothing kept */ }
    clearInterval(this.poller);
    this.poller = null;
    this.stopStream();
    this.api = null;
    this.sessions = [];
    this.listSignature = "";
    this.selectedId = null;
    this.view = null;
    $("session-list").replaceChildren();
    $("session").hidden = true;
    $("placeholder").hidden = false;
    this.clearError();
    document.title = TITLE;
    this.showSignIn(message);
  }

  enter(saved) {
    this.api = new Api(saved.key);
    this.operator = saved.operator;
    $("sign-in-view").hidden = true;
    $("console-view").hidden = false;
    $("whoami").hidden = false;
    $("operator-badge").textContent = `Signed in as ${saved.operator.name}`;
    this.refreshList();
    clearInterval(this.poller);
    this.poller = setInterval(() => this.poll(), LIST_EVERY_MS);
  }

  // ---- errors ----------------------------------------------------------------------------

  // `source` names what failed, so that its next success takes the message away (a list that
  // loads again) while an action's failure stays until the next action.
  showError(action, error, source = "action") {
    if (error instanceof ApiError && error.status === 401) {
      this.signOut(`Signed out: the API key was refused (${error.message}).`);
      return;
    }
    const detail = error instanceof ApiError ? `${error.message} (${error.code})` : error.message;
    $("error").textContent = `${action}: ${detail}`;
    this.errorSource = source;
  }

  clearError(source = "action") {
    if (source === "action" || this.errorSource === source) {
      $("error").textContent = "";
      this.errorSource = null;
    }
  }

  // ---- the session list ------------------------------------------------------------------

  // The list every few seconds while the tab is seen; the selected session too while its
  // live stream is down (while it is up, its events say when to load it).
  poll() {
    if (document.visibilityState === "hidden") return;
    this.refreshList();
    if (isLive(this.view) && !this.streamUp) this.scheduleView(0);
  }

  scheduleList() {
    clearTimeout(this.listTimer);
    this.listTimer = setTimeout(() => this.refreshList(), 150);
  }

  async refreshList() {
    const api = this.api;
    if (!api) return;
    let page;
    try {
      page = await api.get("chats?status=active&limit=100");
    } catch (error) {
      if (api === this.api) this.showError("Could not load the sessions", error, "list");
      return;
    }
    if (api !== this.api) return; // signed out meanwhile
    this.clearError("list");
    this.sessions = (page.items || []).slice().sort(byUrgency);
    const asking = this.sessions.filter((s) => s.help_requested).length;
    document.title = `${asking ? `(${asking}) ` : ""}${TITLE}`;
    $("list-updated").textContent = `Updated ${clock(new Date().toISOString())}`;
    this.renderList();
  }

  renderList() {
    const list = $("session-list");
    const signature = this.sessions.map((s) => [
      s.id, s.channel, s.mode, s.help_requested, s.active_human && s.active_human.name,
    ].join("|")).join("\n") + `\n@${this.selectedId}`;
    $("no-sessions").hidden = this.sessions.length > 0;
    $("session-count").textContent = this.sessions.length
      ? `${this.sessions.length}${this.sessions.length === 100 ? "+" : ""}` : "";
    if (signature === this.listSignature) {
      // Same entries: only the times move.
      for (const item of list.children) {
        const summary = this.sessions.find((s) => s.id === item.dataset.id);
        if (summary) item.querySelector(".when").textContent = ago(summary.last_activity);
      }
      return;
    }
    this.listSignature = signature;
    const focused = document.activeElement && document.activeElement.closest(".session-entry");
    const focusedId = focused ? focused.closest("li").dataset.id : null;
    list.replaceChildren(...this.sessions.map((summary) => this.entry(summary)));
    if (focusedId) {
      const again = list.querySelector(`li[data-id="${CSS.escape(focusedId)}"] button`);
      if (again) again.focus();
    }
  }

  entry(summary) {
    const item = el("li");
    item.dataset.id = summary.id;
    const button = el("button", "session-entry");
    button.type = "button";
    if (summary.help_requested) button.classList.add("help");
    if (summary.id === this.selectedId) button.setAttribute("aria-current", "true");
    const id = el("span", "sid", summary.id);
    const tags = el("span", "tags");
    if (summary.help_requested) tags.append(el("span", "tag help", "Help requested"));
    const mode = summary.mode || "ai";
    const holder = summary.active_human && summary.active_human.name;
    tags.append(el("span", `tag mode-${mode}`, holder ? `${modeLabel(mode)}: ${holder}` :
      modeLabel(mode)));
    const meta = el("span", "meta", `${summary.channel} · `);
    meta.append(el("span", "when", ago(summary.last_activity)));
    tags.append(meta);
    button.append(id, tags);
    button.addEventListener("click", () => this.select(summary.id));
    item.append(button);
    return item;
  }

  // ---- the selected session --------------------------------------------------------------

  select(id) {
    if (id === this.selectedId) {
      this.scheduleView(0);
      return;
    }
    this.stopStream();
    this.clearError();
    this.selectedId = id;
    this.view = null;
    this.rendered = [];
    $("transcript").replaceChildren();
    $("reply").value = "";
    $("whisper").value = "";
    $("placeholder").hidden = true;
    $("session").hidden = false;
    $("session-id").textContent = id;
    $("session-facts").replaceChildren(el("span", "", "Loading…"));
    this.renderList();
    this.renderControls();
    this.scheduleView(0);
    this.follow(id);
  }

  scheduleView(delay = 120) {
    clearTimeout(this.viewTimer);
    this.viewTimer = setTimeout(() => this.loadView(), delay);
  }

  // One load at a time; an event during a load asks for one more after it.
  async loadView() {
    if (this.viewLoading) {
      this.viewDirty = true;
      return;
    }
    const id = this.selectedId;
    if (!id || !this.api) return;
    this.viewLoading = this.api.get(chatPath(id));
    try {
      const view = await this.viewLoading;
      if (id === this.selectedId) {
        this.clearError("view");
        this.show(view);
      }
    } catch (error) {
      if (id === this.selectedId) this.showError("Could not load the session", error, "view");
    } finally {
      this.viewLoading = null;
      if (this.viewDirty) {
        this.viewDirty = false;
        this.scheduleView(0);
      }
    }
  }

  /** Shows a SessionView of the selected session (from a load or an action's answer). */
  show(view) {
    if (!view || view.id !== this.selectedId) return;
    this.view = view;
    this.renderHeader();
    this.renderApprovals();
    this.renderTranscript();
    this.renderControls();
    // The list shows what the view says, without waiting for the next poll.
    const summary = this.sessions.find((s) => s.id === view.id);
    if (summary) {
      Object.assign(summary, {
        mode: view.mode, help_requested: view.help_requested, active_human: view.active_human,
        last_activity: view.last_activity,
      });
      if (!isLive(view)) this.sessions = this.sessions.filter((s) => s.id !== view.id);
      this.sessions.sort(byUrgency);
      this.renderList();
    }
  }

  renderHeader() {
    const view = this.view;
    const facts = $("session-facts");
    const mode = view.mode || "ai";
    const parts = [];
    if (!isLive(view)) parts.push(el("span", "tag final", "Ended"));
    else parts.push(el("span", `tag mode-${mode}`, modeLabel(mode)));
    if (view.help_requested) parts.push(el("span", "tag help", "Help requested"));
    parts.push(el("span", "tag", view.channel));
    parts.push(el("span", "", `Agent ${view.agent_id} · started ${clock(view.created_time)}`));
    facts.replaceChildren(...parts);

    const banner = $("banner");
    banner.className = "banner";
    const holder = view.active_human;
    if (!isLive(view)) {
      banner.classList.add("final");
      banner.textContent = "This session has ended.";
    } else if (mode === "human") {
      banner.classList.add("human");
      const mine = holder && holder.id === this.operator.id;
      banner.textContent = mine
        ? "You hold this session: the AI is silent and your replies go to the customer."
        : `${holder ? holder.name : "An operator"} holds this session; the AI is silent.`;
    } else if ((view.pending_approvals || []).length) {
      banner.classList.add("help");
      banner.textContent = "A tool call waits for your decision: approve or refuse it below " +
        "(take over once it is decided).";
    } else if (view.help_requested) {
      banner.classList.add("help");
      banner.textContent = "The AI asked for a human. Take over to answer the customer yourself.";
    } else {
      banner.textContent = "";
    }
  }

  renderApprovals() {
    const pending = (this.view && this.view.pending_approvals) || [];
    $("approvals").hidden = pending.length === 0;
    const list = $("approval-list");
    const shown = [...list.children].map((item) => item.dataset.id).join(",");
    if (shown === pending.map((p) => p.tool_call_id).join(",")) return;
    list.replaceChildren(...pending.map((approval) => {
      const item = el("li", "approval");
      item.dataset.id = approval.tool_call_id;
      item.setAttribute("role", "group");
      item.setAttribute("aria-label", `Tool call ${approval.name}`);
      const what = el("div", "what");
      what.append(el("strong", "", approval.name),
        el("code", "", argumentsText(approval.arguments)));
      const note = el("input", "note");
      note.type = "text";
      note.maxLength = 2000;
      note.setAttribute("aria-label", "Note for the AI");
      note.placeholder = "Why (optional, the AI reads it)";
      const buttons = el("div", "buttons");
      const approve = el("button", "approve", "Approve");
      approve.type = "button";
      approve.addEventListener("click", () => this.decide(approval, true, note.value));
      const refuse = el("button", "danger", "Refuse");
      refuse.type = "button";
      refuse.addEventListener("click", () => this.decide(approval, false, note.value));
      buttons.append(approve, refuse);
      item.append(what, note, buttons);
      return item;
    }));
  }

  renderTranscript() {
    const log = $("transcript");
    const messages = (this.view.messages || []);
    const keys = messages.map(messageKey);
    const prefix = this.rendered.every((key, index) => keys[index] === key);
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    if (!prefix || keys.length < this.rendered.length) {
      log.replaceChildren();
      this.rendered = [];
      this.partials.clear();
    }
    const added = messages.slice(this.rendered.length);
    if (added.length) this.clearPartials();
    for (const message of added) {
      for (const node of this.messageNodes(message)) log.append(node);
    }
    this.rendered = keys;
    if (atBottom || added.length) log.scrollTop = log.scrollHeight;
  }

  messageNodes(message) {
    const nodes = [];
    if (message.role === "system") {
      if (message.content) nodes.push(el("p", "event guidance", `Guidance to the AI: ${message.content}`));
      return nodes;
    }
    if (message.role === "tool") return nodes;
    if (typeof message.content === "string" && message.content !== "") {
      const author = authorOf(message);
      const bubble = el("div", `msg ${author.kind}`);
      const who = el("span", "who", author.label);
      const time = el("time", "", clock(message.time));
      time.dateTime = message.time;
      who.append(time);
      bubble.append(who, el("div", "text", message.content));
      nodes.push(bubble);
    }
    for (const call of message.tool_calls || []) {
      const line = el("div", "tool");
      line.append(`AI called `, el("code", "", `${call.name}(${argumentsText(call.arguments)})`));
      if (call.response !== undefined && call.response !== null) {
        line.append(" → ", el("code", "", argumentsText(call.response)));
      }
      nodes.push(line);
    }
    return nodes;
  }

  partial(index) {
    let bubble = this.partials.get(index);
    if (!bubble) {
      bubble = el("div", "msg ai streaming");
      bubble.append(el("span", "who", "AI (typing)"), el("div", "text", ""));
      $("transcript").append(bubble);
      this.partials.set(index, bubble);
    }
    return bubble;
  }

  clearPartials(index) {
    for (const [key, bubble] of this.partials) {
      if (index === undefined || key === index) {
        bubble.remove();
        this.partials.delete(key);
      }
    }
  }

  renderControls() {
    const view = this.view;
    const live = isLive(view) && this.busy === 0;
    const human = Boolean(view) && view.mode === "human";
    // A takeover is refused while a tool call waits: the operator decides it first.
    const waiting = Boolean(view) && (view.pending_approvals || []).length > 0;
    $("take-over").disabled = !live || human || waiting;
    $("hand-back").disabled = !live || !human;
    $("end").disabled = !live;
    $("send").disabled = !live || !human || !$("reply").value.trim();
    $("whisper-send").disabled = !live || !$("whisper").value.trim();
    $("reply-now").disabled = !live || human;
    $("reply").disabled = !isLive(view);
    $("whisper").disabled = !isLive(view);
    $("reply-hint").textContent = !isLive(view) ? "" : human
      ? "Goes to the customer under your name. Enter sends, Shift+Enter for a new line."
      : "Take over first: while the AI holds the session, only it answers.";
    $("whisper-hint").textContent = isLive(view) && human ? "(while the AI holds the session)" : "";
    for (const control of $("approval-list").querySelectorAll("button, input")) {
      control.disabled = !live;
    }
  }

  // ---- the live stream -------------------------------------------------------------------

  stopStream() {
    if (this.streamAbort) this.streamAbort.abort();
    this.streamAbort = null;
    this.streamUp = false;
    this.lastEventId = null;
    this.clearPartials();
  }

  // GET /chats/{id}/stream, kept open while the session is selected; reconnects with backoff
  // and resumes after the last event id; ends after `session.final`.
  async follow(id) {
    const abort = new AbortController();
    this.streamAbort = abort;
    let attempt = 0;
    while (!abort.signal.aborted) {
      let ended = false;
      try {
        const response = await this.api.stream(chatPath(id, "/stream"), this.lastEventId,
          abort.signal);
        if (!response.ok) throw await apiError(response);
        this.streamUp = true;
        await readEvents(response, (name, data, eventId) => {
          if (abort.signal.aborted) return;
          attempt = 0;
          if (eventId !== null) this.lastEventId = eventId;
          if (name === "session.final") ended = true;
          this.apply(name, data);
        });
      } catch (error) {
        if (abort.signal.aborted) return;
        this.streamUp = false;
        if (!retryable(error)) {
          // No stream for it (gone, or another account's): the periodic refresh stays.
          if (error.status !== 404) this.showError("The live updates stopped", error);
          return;
        }
      }
      this.streamUp = false;
      if (ended) return;
      await sleep(backoff(attempt++), abort.signal);
    }
  }

  apply(name, data) {
    let event = {};
    try { event = JSON.parse(data); } catch { /* an event without a body */ }
    switch (name) {
      case "message.delta": {
        const text = this.partial(event.message_index).querySelector(".text");
        text.textContent += event.delta || "";
        const log = $("transcript");
        log.scrollTop = log.scrollHeight;
        return;
      }
      case "message":
      case "discard":
        this.clearPartials(event.message_index);
        break;
      default:
        break;
    }
    this.scheduleView();
    if (LIST_EVENTS.has(name)) this.scheduleList();
  }

  // ---- actions ---------------------------------------------------------------------------

  async act(label, call) {
    const id = this.selectedId;
    this.busy += 1;
    this.renderControls();
    this.clearError();
    try {
      const answer = await call(id);
      return answer;
    } catch (error) {
      if (id === this.selectedId) this.showError(label, error);
      return undefined;
    } finally {
      this.busy -= 1;
      this.renderControls();
      if (id === this.selectedId) this.scheduleView(0);
      this.scheduleList();
    }
  }

  async takeOver() {
    const view = await this.act("Could not take over", (id) =>
      this.api.post(chatPath(id, "/takeover"), { operator: this.operator }));
    if (view) {
      this.show(view);
      $("reply").focus();
    }
  }

  async sendReply() {
    const content = $("reply").value.trim();
    if (!content || $("send").disabled) return;
    const sent = await this.act("Could not send the reply", (id) =>
      this.api.post(chatPath(id, "/operator-messages"), { content }));
    if (sent) {
      $("reply").value = "";
      this.renderControls();
    }
    $("reply").focus();
  }

  async whisper() {
    const content = $("whisper").value.trim();
    if (!content || $("whisper-send").disabled) return;
    const replyNow = $("reply-now").checked && !$("reply-now").disabled;
    const answer = await this.act("Could not whisper to the AI", (id) =>
      this.api.post(chatPath(id, "/whisper"), {
        content, reply_now: replyNow, operator: this.operator,
      }));
    if (answer) {
      $("whisper").value = "";
      $("reply-now").checked = false;
      this.renderControls();
    }
    $("whisper").focus();
  }

  async handBack() {
    const view = await this.act("Could not hand back", (id) =>
      this.api.post(chatPath(id, "/handback"), { operator: this.operator }));
    if (view) {
      this.show(view);
      $("take-over").focus();
    }
  }

  async end() {
    const view = await this.act("Could not end the session", (id) =>
      this.api.post(chatPath(id, "/end")));
    if (view) {
      this.show(view);
      $("transcript").focus();
    }
  }

  async decide(approval, approved, note) {
    const body = { approved, operator: this.operator };
    if (note.trim()) body.note = note.trim();
    await this.act(approved ? "Could not approve the tool call" : "Could not refuse the tool call",
      (id) => this.api.post(
        chatPath(id, `/approvals/${encodeURIComponent(approval.tool_call_id)}`), body));
  }
}

new Console().start();
