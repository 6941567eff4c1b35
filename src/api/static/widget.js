/*
 * Parley web chat widget. Embed it with
 *   <script src="https://parley.example/widget.js" data-key="pw_..." defer></script>
 * The API is the script's own origin. Plain JavaScript, no dependencies, no build step.
 *
 * Styling: the host page sets CSS custom properties on the widget's host element or on an
 * ancestor (they inherit into its shadow root): --parley-accent, --parley-accent-text,
 * --parley-position-right, --parley-position-bottom, --parley-font, --parley-radius,
 * --parley-z-index, --parley-panel-width, --parley-panel-height.
 */
(function () {
  "use strict";

  var script = document.currentScript ||
    document.querySelector('script[data-key][src*="widget.js"]');
  if (!script || !script.getAttribute("data-key")) {
    console.error("Parley widget: the script tag needs data-key=\"pw_...\"");
    return;
  }
  var KEY = script.getAttribute("data-key");
  var API = new URL(script.src, document.baseURI).origin + "/api/v1";
  var TITLE = script.getAttribute("data-title") || "Chat with us";
  var SUBTITLE = script.getAttribute("data-subtitle") || "We usually answer right away";
  var TOKEN_KEY = "parley:visitor:" + KEY;
  var OPEN_KEY = "parley:open:" + KEY;
  var BACKOFF_FIRST_MS = 500;
  var BACKOFF_MAX_MS = 15000;
  var SEND_ATTEMPTS = 6;

  var CSS = [
    // !important: the page's own rules for its divs reach this host element, and win over
    // a plain :host rule; important ones from inside the shadow root win over the page's.
    ":host { all: initial !important; position: fixed !important; display: block !important;",
    "  z-index: var(--parley-z-index, 2147483000) !important;",
    "  right: var(--parley-position-right, 20px) !important;",
    "  bottom: var(--parley-position-bottom, 20px) !important;",
    "  font-family: var(--parley-font, system-ui, -apple-system, 'Segoe UI', Roboto,",
    "    sans-serif) !important;",
    "  font-size: 15px !important; line-height: 1.45 !important; color: #111827 !important; }",
    "*, *::before, *::after { box-sizing: border-box; }",
    "button, textarea { font: inherit; color: inherit; }",
    ".launcher { display: flex; align-items: center; justify-content: center; width: 60px;",
    "  height: 60px; margin-left: auto; border: 0; border-radius: 50%; cursor: pointer;",
    "  background: var(--parley-accent, #2563eb); color: var(--parley-accent-text, #fff);",
    "  box-shadow: 0 6px 20px rgba(15, 23, 42, .28); transition: transform .15s ease; }",
    ".launcher:hover { transform: scale(1.06); }",
    ".launcher svg { width: 28px; height: 28px; }",
    ":focus-visible { outline: 3px solid var(--parley-accent, #2563eb); outline-offset: 2px; }",
    ".launcher:focus-visible { outline-color: #111827; }",
    ".panel { display: flex; flex-direction: column; position: absolute; right: 0;",
    "  bottom: 76px; width: var(--parley-panel-width, 370px);",
    "  height: var(--parley-panel-height, 560px);",
    "  max-height: calc(100vh - 120px); max-width: calc(100vw - 40px); overflow: hidden;",
    "  background: #fff; border-radius: var(--parley-radius, 16px);",
    "  box-shadow: 0 12px 48px rgba(15, 23, 42, .25), 0 0 0 1px rgba(15, 23, 42, .06); }",
    ".panel[hidden] { display: none; }",
    ".header { display: flex; align-items: center; gap: 12px; padding: 16px 16px 16px 20px;",
    "  background: var(--parley-accent, #2563eb); color: var(--parley-accent-text, #fff); }",
    ".avatar { flex: none; display: flex; align-items: center; justify-content: center;",
    "  width: 38px; height: 38px; border-radius: 50%; background: rgba(255, 255, 255, .2); }",
    ".avatar svg { width: 20px; height: 20px; }",
    ".heading { flex: 1; min-width: 0; }",
    ".title { margin: 0; font-size: 16px; font-weight: 600; }",
    ".subtitle { margin: 0; font-size: 13px; opacity: .85; }",
    ".close { flex: none; display: flex; width: 34px; height: 34px; align-items: center;",
    "  justify-content: center; border: 0; border-radius: 8px; cursor: pointer;",
    "  background: transparent; color: inherit; }",
    ".close:hover { background: rgba(255, 255, 255, .18); }",
    ".close:focus-visible { outline-color: var(--parley-accent-text, #fff); outline-offset: -3px; }",
    ".close svg { width: 18px; height: 18px; }",
    ".log { flex: 1; overflow-y: auto; padding: 18px 16px 8px; background: #f8fafc;",
    "  display: flex; flex-direction: column; gap: 8px; }",
    ".msg { max-width: 82%; padding: 9px 13px; border-radius: 16px; white-space: pre-wrap;",
    "  overflow-wrap: anywhere; }",
    ".msg.assistant { align-self: flex-start; background: #fff; color: #111827;",
    "  border: 1px solid #e5e7eb; border-bottom-left-radius: 5px; }",
    ".msg.user { align-self: flex-end; background: var(--parley-accent, #2563eb);",
    "  color: var(--parley-accent-text, #fff); border-bottom-right-radius: 5px; }",
    ".msg.streaming::after { content: '\\258D'; margin-left: 1px; opacity: .5; }",
    ".msg .who { display: block; font-size: 11.5px; font-weight: 600; color: #4b5563;",
    "  margin-bottom: 2px; }",
    ".note { align-self: center; margin: 6px 0; font-size: 12.5px; color: #6b7280;",
    "  text-align: center; }",
    ".typing { align-self: flex-start; display: flex; gap: 4px; padding: 13px 14px;",
    "  background: #fff; border: 1px solid #e5e7eb; border-radius: 16px;",
    "  border-bottom-left-radius: 5px; }",
    ".typing[hidden] { display: none; }",
    ".typing span { width: 7px; height: 7px; border-radius: 50%; background: #9ca3af;",
    "  animation: parley-blink 1.2s infinite ease-in-out; }",
    ".typing span:nth-child(2) { animation-delay: .2s; }",
    ".typing span:nth-child(3) { animation-delay: .4s; }",
    "@keyframes parley-blink { 0%, 80%, 100% { opacity: .3; transform: translateY(0); }",
    "  40% { opacity: 1; transform: translateY(-3px); } }",
    "@media (prefers-reduced-motion: reduce) { .typing span { animation: none; }",
    "  .launcher { transition: none; } }",
    ".alert { margin: 0; padding: 10px 16px; font-size: 13.5px; color: #991b1b;",
    "  background: #fef2f2; border-top: 1px solid #fecaca; }",
    ".alert[hidden] { display: none; }",
    ".composer { display: flex; align-items: flex-end; gap: 8px; padding: 12px;",
    "  border-top: 1px solid #e5e7eb; background: #fff; }",
    ".input { flex: 1; min-height: 42px; max-height: 120px; resize: none; margin: 0;",
    "  padding: 10px 12px; border: 1px solid #d1d5db; border-radius: 12px; background: #fff;",
    "  line-height: 1.4; }",
    ".input:focus { border-color: var(--parley-accent, #2563eb); outline: none;",
    "  box-shadow: 0 0 0 3px color-mix(in srgb, var(--parley-accent, #2563eb) 25%, transparent); }",
    ".input:disabled { background: #f3f4f6; }",
    ".send { flex: none; display: flex; align-items: center; justify-content: center;",
    "  width: 42px; height: 42px; border: 0; border-radius: 12px; cursor: pointer;",
    "  background: var(--parley-accent, #2563eb); color: var(--parley-accent-text, #fff); }",
    ".send:disabled { opacity: .45; cursor: default; }",
    ".send svg { width: 20px; height: 20px; }",
    ".footer { margin: 0; padding: 0 12px 8px; background: #fff; font-size: 11px;",
    "  color: #9ca3af; text-align: center; }",
    ".sr-only { position: absolute; width: 1px; height: 1px; margin: -1px; padding: 0;",
    "  overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0; }",
    "@media (max-width: 480px) { .panel { position: fixed; inset: 0; width: auto; height: auto;",
    "  max-height: none; max-width: none; border-radius: 0; }",
    // Full screen, the header's close button is the way out; the launcher would cover Send.
    "  .launcher[aria-expanded='true'] { display: none; } }"
  ].join("\n");

  var ICON_CHAT = '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" ' +
    'stroke-linecap="round" stroke-linejoin="round" aria-hidden="true"><path d="M21 12a8 8 0 0 ' +
    '1-11.6 7.1L4 20l1-4.6A8 8 0 1 1 21 12z"/></svg>';
  var ICON_CLOSE = '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2.2" ' +
    'stroke-linecap="round" aria-hidden="true"><path d="M6 6l12 12M18 6L6 18"/></svg>';
  var ICON_SEND = '<svg viewBox="0 0 24 24" fill="currentColor" aria-hidden="true"><path d="M3.4 ' +
    '20.4l17.45-7.48a1 1 0 0 0 0-1.84L3.4 3.6a1 1 0 0 0-1.39 1.18L4.3 12l-2.29 7.22a1 1 0 0 0 ' +
    '1.39 1.18zM4.9 13h7.1v-2H4.9z"/></svg>';

  // ---- small helpers ---------------------------------------------------------------------

  function el(tag, className, attrs) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    for (var name in attrs || {}) node.setAttribute(name, attrs[name]);
    return node;
  }

  function stored(key) {
    try { return window.localStorage.getItem(key); } catch (e) { return null; }
  }

  function store(key, value) {
    try {
      if (value === null) window.localStorage.removeItem(key);
      else window.localStorage.setItem(key, value);
    } catch (e) { /* storage off (private mode): the visitor starts afresh on each page */ }
  }

  function randomId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) {
      return (b + 256).toString(16).slice(1);
    }).join("");
  }

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  // Exponential backoff with jitter: 0.5 s, 1 s, 2 s, ... up to 15 s.
  function backoff(attempt) {
    var ms = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * Math.pow(2, attempt));
    return ms / 2 + Math.random() * ms / 2;
  }

  // An HTTP answer that is not what was asked for; `code` comes from Parley's error shape.
  function ApiError(status, code, message) {
    this.status = status;
    this.code = code;
    this.message = message;
  }

  function retryable(error) {
    return !(error instanceof ApiError) || error.status === 429 || error.status >= 500;
  }

  function apiError(response) {
    return response.json().then(function (body) {
      var e = (body && body.error) || {};
      return new ApiError(response.status, e.code || "http_" + response.status,
        e.message || response.statusText);
    }, function () {
      return new ApiError(response.status, "http_" + response.status, response.statusText);
    });
  }

  // Reads a text/event-stream body and calls onEvent(name, data, id) per event.
  function readEvents(response, onEvent) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    var name = "", data = [], id = null;

    function line(text) {
      if (text === "") {
        if (data.length) onEvent(name || "message", data.join("\n"), id);
        name = ""; data = []; id = null;
        return;
      }
      if (text.charAt(0) === ":") return;
      var colon = text.indexOf(":");
      var field = colon < 0 ? text : text.slice(0, colon);
      var value = colon < 0 ? "" : text.slice(colon + 1).replace(/^ /, "");
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
      else if (field === "id") id = value;
    }

    function pump() {
      return reader.read().then(function (chunk) {
        if (chunk.done) {
          buffer += decoder.decode();
          if (buffer) line(buffer);
          line("");
          return;
        }
        buffer += decoder.decode(chunk.value, { stream: true });
        // A trailing \r may be the first half of a \r\n: it waits for the next chunk.
        var held = buffer.slice(-1) === "\r" ? "\r" : "";
        var lines = (held ? buffer.slice(0, -1) : buffer).split(/\r\n|\r|\n/);
        buffer = lines.pop() + held;
        lines.forEach(line);
        return pump();
      });
    }
    return pump();
  }

  // ---- the widget ------------------------------------------------------------------------

  function Widget() {
    this.session = null;       // {id, status, ...} once opened
    this.visitor = stored(TOKEN_KEY);
    this.opening = null;       // the promise of the session open in flight
    this.lastEventId = null;   // the live stream's last event id, where it resumes
    this.seen = {};            // events already applied: both streams carry the turn's events
    this.rendered = {};        // messages shown, by signature: a stream from the start repeats them
    this.turn = null;          // {partials: {message_index: element}} while a reply streams
    this.sending = 0;          // own messages whose replies have not come yet
    this.pendingUser = [];     // contents of own messages not yet echoed by the live stream
    this.streamGeneration = 0; // bumped to stop the live stream
    this.streamAvailable = true;
    this.humanMode = false;    // a person (an operator) holds the conversation: no bot reply
    this.build();
  }

  Widget.prototype.build = function () {
    var host = el("div", "", { id: "parley-chat-widget" });
    var root = host.attachShadow({ mode: "open" });
    var style = el("style");
    style.textContent = CSS;
    root.appendChild(style);

    var panel = el("section", "panel", { role: "dialog", "aria-label": TITLE, hidden: "" });
    var header = el("header", "header");
    var avatar = el("div", "avatar");
    avatar.innerHTML = ICON_CHAT;
    var heading = el("div", "heading");
    var title = el("h2", "title");
    title.textContent = TITLE;
    var subtitle = el("p", "subtitle");
    subtitle.textContent = SUBTITLE;
    heading.append(title, subtitle);
    var close = el("button", "close", { type: "button", "aria-label": "Close chat" });
    close.innerHTML = ICON_CLOSE;
    header.append(avatar, heading, close);

    var log = el("div", "log", {
      role: "log", "aria-live": "polite", "aria-label": "Conversation", tabindex: "-1"
    });
    var typing = el("div", "typing", { role: "status", "aria-label": "Assistant is typing", hidden: "" });
    typing.innerHTML = "<span></span><span></span><span></span>";
    var alert = el("p", "alert", { role: "alert", hidden: "" });

    var form = el("form", "composer");
    var input = el("textarea", "input", {
      "aria-label": "Message", placeholder: "Write a message…", rows: "1", maxlength: "4000"
    });
    var send = el("button", "send", { type: "submit", "aria-label": "Send" });
    send.innerHTML = ICON_SEND;
    form.append(input, send);
    var footer = el("p", "footer");
    footer.textContent = "Powered by Parley";
    panel.append(header, log, alert, form, footer);

    var launcher = el("button", "launcher", {
      type: "button", "aria-label": "Open chat", "aria-expanded": "false"
    });
    launcher.innerHTML = ICON_CHAT;
    root.append(panel, launcher);

    var self = this;
    launcher.addEventListener("click", function () {
      if (panel.hidden) self.open(); else self.close();
    });
    close.addEventListener("click", function () { self.close(); });
    root.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && !panel.hidden) {
        event.preventDefault();
        self.close();
      }
    });
    input.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        self.submit();
      }
    });
    input.addEventListener("input", function () { self.fit(); });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      self.submit();
    });

    this.host = host;
    this.panel = panel;
    this.log = log;
    this.typing = typing;
    this.alert = alert;
    this.input = input;
    this.sendButton = send;
    this.launcher = launcher;
    document.body.appendChild(host);
    try {
      if (window.sessionStorage.getItem(OPEN_KEY) === "1") this.open({ focus: false });
    } catch (e) { /* no session storage: start closed */ }
  };

  Widget.prototype.open = function (options) {
    this.panel.hidden = false;
    this.launcher.setAttribute("aria-expanded", "true");
    this.launcher.setAttribute("aria-label", "Close chat");
    this.launcher.innerHTML = ICON_CLOSE;
    try { window.sessionStorage.setItem(OPEN_KEY, "1"); } catch (e) { /* ignore */ }
    if (!options || options.focus !== false) this.input.focus();
    if (!this.session && !this.opening) this.startSession();
    this.scroll();
  };

  Widget.prototype.close = function () {
    this.panel.hidden = true;
    this.launcher.setAttribute("aria-expanded", "false");
    this.launcher.setAttribute("aria-label", "Open chat");
    this.launcher.innerHTML = ICON_CHAT;
    try { window.sessionStorage.removeItem(OPEN_KEY); } catch (e) { /* ignore */ }
    this.launcher.focus();
  };

  Widget.prototype.fit = function () {
    this.input.style.height = "auto";
    this.input.style.height = Math.min(this.input.scrollHeight + 2, 120) + "px";
  };

  Widget.prototype.scroll = function () {
    this.log.scrollTop = this.log.scrollHeight;
  };

  Widget.prototype.showError = function (text) {
    this.alert.textContent = text;
    this.alert.hidden = !text;
  };

  Widget.prototype.describe = function (error) {
    if (!(error instanceof ApiError)) {
      // A refused origin gets an answer without CORS headers: to the page, a network error.
      return "The chat could not be reached from this page. Check your connection; if it " +
        "keeps happening, this site may not be allowed to use this chat.";
    }
    if (error.status === 401 || error.status === 403) {
      return "This chat is not available on this site (" + error.message + ").";
    }
    if (error.status === 429) return "Too many messages at once; please wait a moment.";
    return "Chat error: " + error.message;
  };

  // ---- session -----------------------------------------------------------------------------

  Widget.prototype.headers = function (extra) {
    var headers = { Authorization: "Bearer " + KEY };
    if (this.visitor) headers["X-Parley-Visitor"] = this.visitor;
    for (var name in extra || {}) headers[name] = extra[name];
    return headers;
  };

  Widget.prototype.startSession = function () {
    var self = this;
    this.showError("");
    this.opening = this.requestSession().catch(function (error) {
      // A token of another key, or sealed with a key since retired: start as a new visitor.
      if (!(error instanceof ApiError) || error.status !== 401 || !self.visitor) throw error;
      self.visitor = null;
      store(TOKEN_KEY, null);
      return self.requestSession();
    }).then(function (body) {
      self.visitor = body.visitor_token;
      store(TOKEN_KEY, self.visitor);
      self.adopt(body.session);
      return body.session;
    }).catch(function (error) {
      self.showError(self.describe(error));
      throw error;
    }).finally(function () {
      self.opening = null;
    });
    this.opening.catch(function () { /* shown above */ });
    return this.opening;
  };

  // POST /widget/sessions: the visitor's active session (or a new one), and its token.
  Widget.prototype.requestSession = function () {
    return fetch(API + "/widget/sessions", {
      method: "POST",
      headers: this.headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({ visitor_token: this.visitor })
    }).then(function (response) {
      if (!response.ok) return apiError(response).then(function (e) { throw e; });
      return response.json();
    });
  };

  // Shows a session's transcript and follows its live events.
  Widget.prototype.adopt = function (session) {
    var fresh = !this.session || this.session.id !== session.id;
    if (fresh && this.session) this.note("New conversation");
    this.session = session;
    this.humanMode = session.mode === "human";
    if (fresh) {
      this.lastEventId = null;
      this.seen = {};
      this.rendered = {};
      this.turn = null;
      (session.messages || []).forEach(function (message, seq) {
        this.renderMessage(message, seq);
      }, this);
      this.followStream();
    }
    if (session.status === "final") this.ended();
    this.scroll();
  };

  Widget.prototype.ended = function () {
    if (this.session) this.session.status = "final";
    this.note("This conversation has ended. Send a message to start a new one.");
    this.streamGeneration += 1;
  };

  Widget.prototype.note = function (text) {
    var last = this.log.lastElementChild;
    if (last && last.className === "note" && last.textContent === text) return;
    var note = el("p", "note");
    note.textContent = text;
    this.log.appendChild(note);
  };

  // ---- rendering -------------------------------------------------------------------------

  function shown(message) {
    return message && (message.role === "user" || message.role === "assistant") &&
      typeof message.content === "string" && message.content !== "";
  }

  // `author` {kind: "human", name} marks a message a person (an operator) wrote: named.
  Widget.prototype.bubble = function (role, text, author) {
    var bubble = el("div", "msg " + role);
    var person = author && author.kind === "human" && author.name;
    var who = el("span", person ? "who" : "sr-only");
    who.textContent = role === "user" ? "You: " : person ? author.name : "Assistant: ";
    var body = el("span", "text");
    body.textContent = text;
    bubble.append(who, body);
    this.log.appendChild(bubble);
    this.scroll();
    return bubble;
  };

  // Names of a message, in the transcript and in events alike: its place in the transcript
  // (`seq`, where known) and what it is.
  function names(message, seq) {
    var found = [message.role + "|" + Date.parse(message.time) + "|" + message.content];
    if (typeof seq === "number") found.push("seq:" + seq);
    return found;
  }

  Widget.prototype.known = function (message, seq) {
    var rendered = this.rendered;
    return names(message, seq).some(function (name) { return rendered[name]; });
  };

  Widget.prototype.remember = function (message, seq) {
    var rendered = this.rendered;
    names(message, seq).forEach(function (name) { rendered[name] = true; });
  };

  Widget.prototype.renderMessage = function (message, seq) {
    if (!message || this.known(message, seq)) return;
    this.remember(message, seq);
    if (shown(message)) this.bubble(message.role, message.content, message.author);
  };

  Widget.prototype.partial = function (index) {
    this.turn = this.turn || { partials: {} };
    var bubble = this.turn.partials[index];
    if (!bubble) {
      bubble = this.bubble("assistant", "");
      bubble.classList.add("streaming");
      this.turn.partials[index] = bubble;
    }
    return bubble;
  };

  Widget.prototype.setTyping = function () {
    var streaming = false;
    var partials = this.turn ? this.turn.partials : {};
    for (var index in partials) if (partials[index].classList.contains("streaming")) streaming = true;
    var waiting = this.sending > 0 || (this.turn !== null && this.turn.waiting);
    this.typing.hidden = !waiting || streaming;
    if (!this.typing.hidden) {
      this.log.appendChild(this.typing); // always last
      this.scroll();
    }
  };

  // One event of the session, from the reply stream of a send or from the live stream. An
  // event has the same id (its position in the session's stream) on both, so each is applied
  // once; `done` and `error` reuse the id of the event before them, hence name and id.
  Widget.prototype.apply = function (name, data, id) {
    if (id !== null && id !== undefined) {
      if (this.seen[name + "@" + id]) return;
      this.seen[name + "@" + id] = true;
    }
    var event;
    try { event = JSON.parse(data); } catch (e) { return; }
    var turn;
    switch (name) {
      case "user_message":
        if (!event.message || this.known(event.message, event.seq)) break; // shown already
        var own = this.pendingUser.indexOf(event.message.content);
        if (own >= 0) {
          this.pendingUser.splice(own, 1);
          this.remember(event.message, event.seq);
        } else {
          this.renderMessage(event.message, event.seq);
        }
        // Someone (this visitor in another tab) asked: a reply is coming, unless a person
        // holds the conversation (they answer in their own time).
        this.turn = { partials: {}, waiting: !this.humanMode };
        break;
      case "message.delta":
        var bubble = this.partial(event.message_index);
        var text = bubble.querySelector(".text");
        text.textContent += event.delta;
        this.scroll();
        break;
      case "message":
        if (!event.message) break;
        turn = this.turn || { partials: {} };
        this.turn = turn;
        var partialBubble = turn.partials[event.message_index];
        if (this.known(event.message, event.seq)) {
          // In the transcript already (a stream followed from its start repeats the text of
          // recorded messages): its partial text goes.
          if (partialBubble) partialBubble.remove();
          delete turn.partials[event.message_index];
          turn.waiting = false;
          break;
        }
        this.remember(event.message, event.seq);
        if (shown(event.message) && event.message.role === "assistant") {
          partialBubble = partialBubble || this.bubble("assistant", "", event.message.author);
          partialBubble.querySelector(".text").textContent = event.message.content;
          partialBubble.classList.remove("streaming");
          turn.partials[event.message_index] = partialBubble;
          // A reply with no tool calls ends its turn (the live stream has no `done`).
          if (!(event.message.tool_calls || []).length) turn.waiting = false;
        } else if (partialBubble) {
          // A message with tool calls and no text: its partial text is not the reply.
          partialBubble.remove();
          delete turn.partials[event.message_index];
        }
        this.scroll();
        break;
      case "discard":
        turn = this.turn;
        if (turn && turn.partials[event.message_index]) {
          turn.partials[event.message_index].remove();
          delete turn.partials[event.message_index];
        }
        break;
      case "done":
        // Its messages, in case some `message` event did not come: they replace what is left
        // of the partial text.
        var missing = (event.messages || []).filter(function (m) { return !this.known(m); }, this);
        if (missing.length && this.turn) {
          for (var index in this.turn.partials) this.turn.partials[index].remove();
        }
        missing.forEach(function (m) { this.renderMessage(m); }, this);
        this.turn = null;
        if (event.mode === "human") this.humanMode = true;
        if (event.is_final) this.ended();
        break;
      case "session.takeover":
        this.humanMode = true;
        this.turn = null;
        this.note(((event.operator || {}).name || "A person") + " has joined the chat");
        break;
      case "session.handback":
        this.humanMode = false;
        this.note("You are chatting with the assistant again");
        break;
      case "session.final":
        this.turn = null;
        this.ended();
        break;
      case "error":
        this.turn = null;
        this.showError(this.describe(new ApiError(500, (event.error || {}).code,
          (event.error || {}).message || "the reply failed")));
        break;
      default: // tool_call, tool_result: the typing dots say enough
        break;
    }
    this.setTyping();
  };

  // ---- the live stream -----------------------------------------------------------------------

  // GET /chats/{id}/stream, kept open: messages from other tabs, and the rest of a reply whose
  // own stream dropped. Reconnects with backoff and resumes after the last event id.
  Widget.prototype.followStream = function () {
    var self = this;
    var generation = ++this.streamGeneration;
    var session = this.session;
    var attempt = 0;

    function connect() {
      if (generation !== self.streamGeneration || !self.streamAvailable) return;
      var headers = self.headers({ Accept: "text/event-stream" });
      if (self.lastEventId !== null) headers["Last-Event-ID"] = self.lastEventId;
      fetch(API + "/chats/" + encodeURIComponent(session.id) + "/stream", { headers: headers })
        .then(function (response) {
          if (!response.ok) return apiError(response).then(function (e) { throw e; });
          if (!/text\/event-stream/.test(response.headers.get("content-type") || "")) {
            throw new ApiError(response.status, "not_a_stream", "no event stream");
          }
          return readEvents(response, function (name, data, id) {
            if (generation !== self.streamGeneration) return;
            attempt = 0;
            // Only this stream sees every event: a reply stream skips other turns' events.
            if (id !== null) self.lastEventId = id;
            self.apply(name, data, id);
          });
        })
        .then(function () { retry(); }, function (error) {
          if (error instanceof ApiError && !retryable(error)) {
            // This server has no live stream for the session (an older Parley, or gone).
            self.streamAvailable = error.status !== 404 && error.code !== "not_a_stream";
            return;
          }
          retry();
        });
    }

    function retry() {
      if (generation !== self.streamGeneration) return;
      sleep(backoff(attempt++)).then(connect);
    }

    connect();
  };

  // ---- sending -----------------------------------------------------------------------------

  Widget.prototype.submit = function () {
    var content = this.input.value.trim();
    if (!content) return;
    this.input.value = "";
    this.fit();
    this.showError("");
    var self = this;
    var shown = false;

    function post() {
      if (!shown) {
        // After a new session's greeting, when the last one had ended.
        self.bubble("user", content);
        self.pendingUser.push(content);
        shown = true;
      }
      return self.send(content, randomId());
    }

    function active() {
      if (self.session && self.session.status !== "final") return Promise.resolve(self.session);
      return self.opening || self.startSession();
    }

    this.sending += 1;
    this.setTyping();
    active().then(post).catch(function (error) {
      // It ended between the last reply and this message: once more, in a new session.
      if (!(error instanceof ApiError) || error.status !== 409) throw error;
      return active().then(post);
    }).catch(function (error) {
      self.showError(self.describe(error));
    }).finally(function () {
      self.sending -= 1;
      self.setTyping();
      if (!self.panel.hidden) self.input.focus();
    });
  };


  // POSTs one message, retrying with the same Idempotency-Key (the server answers a repeat
  // with the first attempt's turn, not a second one).
  Widget.prototype.send = function (content, idempotencyKey) {
    var self = this;
    var session = this.session;
    var attempt = 0;

    function once() {
      return fetch(API + "/chats/" + encodeURIComponent(session.id) + "/messages", {
        method: "POST",
        headers: self.headers({
          "Content-Type": "application/json",
          Accept: "text/event-stream, application/json",
          "Idempotency-Key": idempotencyKey
        }),
        body: JSON.stringify({ content: content })
      }).then(function (response) {
        if (!response.ok) return apiError(response).then(function (e) { throw e; });
        var type = response.headers.get("content-type") || "";
        if (/text\/event-stream/.test(type)) return self.readReply(response);
        return response.json().then(function (body) { self.applyTurn(body); });
      }).catch(function (error) {
        if (error instanceof ApiError && error.status === 409 && self.session === session) {
          // The session ended meanwhile: the next send opens a new one.
          self.ended();
        }
        if (!retryable(error) || ++attempt >= SEND_ATTEMPTS) throw error;
        self.showError("Connection lost; retrying…");
        return sleep(backoff(attempt)).then(function () {
          self.showError("");
          return once();
        });
      });
    }
    return once();
  };

  // An SSE reply: events are applied as they come; it ends at `done` or `error`.
  Widget.prototype.readReply = function (response) {
    var self = this;
    var finished = false;
    var failure = null;
    return readEvents(response, function (name, data, id) {
      if (name === "done") finished = true;
      if (name === "error") {
        finished = true;
        try { failure = JSON.parse(data).error; } catch (e) { failure = {}; }
      }
      self.apply(name, data, id);
    }).then(function () {
      if (failure) {
        self.showError(self.describe(new ApiError(500, failure.code, failure.message)));
        return;
      }
      if (!finished) {
        // The stream dropped mid-reply: a retry with the same Idempotency-Key rejoins it.
        throw new TypeError("the reply stream ended early");
      }
    });
  };

  // A plain JSON reply: {"messages": [...], "is_final": bool}.
  Widget.prototype.applyTurn = function (body) {
    this.pendingUser.shift();
    (body.messages || []).forEach(this.renderMessage, this);
    if (body.mode === "human") this.humanMode = true;
    if (body.is_final) this.ended();
  };

  function start() {
    if (window.__parleyWidget) return; // the script tag pasted twice
    window.__parleyWidget = new Widget();
  }

  if (document.body) start();
  else document.addEventListener("DOMContentLoaded", start);
})();
