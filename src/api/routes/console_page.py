"""`GET /console`: the operator console, a page where a support person watches an account's
live sessions, takes one over, replies, whispers to the AI and hands it back; and its script
and style sheet (src/api/static/console.js, console.css), served as they are in the
repository. No auth on these three: the page asks for an account API key and sends it with
each API call, never in a cookie or URL.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

STATIC = Path(__file__).resolve().parents[1] / "static"
CONSOLE_SCRIPT = STATIC / "console.js"
CONSOLE_STYLE = STATIC / "console.css"
# A new release reaches an open console at its next load.
CONSOLE_CACHE = "no-cache"
# The page holds an account API key: it runs its own script only, talks to its own origin
# only, and may not be framed by another site.
CONSOLE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Cache-Control": CONSOLE_CACHE,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter()


@router.get("/console", include_in_schema=False)
async def console_page() -> HTMLResponse:
    return HTMLResponse(
        CONSOLE_HTML,
        headers={
            **SECURITY_HEADERS,
            "Content-Security-Policy": CONSOLE_POLICY,
            "X-Frame-Options": "DENY",
        },
    )


@router.get("/console.js", include_in_schema=False)
async def console_script() -> Response:
    return Response(
        CONSOLE_SCRIPT.read_bytes(),
        media_type="text/javascript; charset=utf-8",
        headers=SECURITY_HEADERS,
    )


@router.get("/console.css", include_in_schema=False)
async def console_style() -> Response:
    return Response(
        CONSOLE_STYLE.read_bytes(), media_type="text/css; charset=utf-8", headers=SECURITY_HEADERS
    )


# Relative URLs throughout: the page works under a root path (a proxy's prefix) too.
CONSOLE_HTML = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Parley operator console</title>
  <link rel="stylesheet" href="console.css">
  <script type="module" src="console.js"></script>
</head>
<body>
  <a class="skip" href="#detail">Skip to the conversation</a>
  <header class="topbar">
    <h1 class="brand">Parley <span>operator console</span></h1>
    <div class="whoami" id="whoami" hidden>
      <span id="operator-badge"></span>
      <button type="button" class="quiet" id="sign-out">Sign out</button>
    </div>
  </header>

  <main id="sign-in-view" class="sign-in" hidden>
    <form id="sign-in" class="card" method="post" novalidate>
      <h2>Sign in</h2>
      <p class="hint">Paste an account API key. It is kept in this tab only (session storage)
        and sent with each request; closing the tab forgets it.</p>
      <label for="api-key">API key</label>
      <input id="api-key" name="api-key" type="password" autocomplete="off" spellcheck="false"
        required>
      <label for="operator-name">Your name</label>
      <input id="operator-name" name="operator-name" type="text" autocomplete="name" required
        aria-describedby="operator-name-hint">
      <p class="hint" id="operator-name-hint">Customers see it on the messages you send.</p>
      <label for="operator-id">Operator id</label>
      <input id="operator-id" name="operator-id" type="text" autocomplete="off"
        spellcheck="false" aria-describedby="operator-id-hint">
      <p class="hint" id="operator-id-hint">Stable id in the session's audit log; made from
        your name when left empty.</p>
      <p class="alert" id="sign-in-error" role="alert"></p>
      <button type="submit" class="primary">Sign in</button>
    </form>
  </main>

  <div id="console-view" class="console" hidden>
    <nav class="sessions" aria-labelledby="sessions-heading">
      <div class="sessions-head">
        <h2 id="sessions-heading">Active sessions</h2>
        <span class="count" id="session-count" aria-live="polite"></span>
      </div>
      <p class="updated" id="list-updated"></p>
      <ul id="session-list" class="session-list"></ul>
      <p class="empty" id="no-sessions" hidden>No active sessions.</p>
    </nav>

    <main id="detail" class="detail" tabindex="-1">
      <p class="alert" id="error" role="alert"></p>
      <div id="placeholder" class="placeholder">
        <p>Pick a session on the left to see its conversation.</p>
      </div>
      <section id="session" class="session" hidden aria-labelledby="session-title">
        <header class="session-head">
          <div class="session-id">
            <h2 id="session-title">Session <code id="session-id"></code></h2>
            <p class="facts" id="session-facts"></p>
          </div>
          <div class="session-actions">
            <button type="button" id="take-over" class="primary">Take over</button>
            <button type="button" id="hand-back">Hand back</button>
            <button type="button" id="end" class="danger">End</button>
          </div>
        </header>
        <p class="banner" id="banner" role="status"></p>

        <section id="approvals" class="approvals" aria-labelledby="approvals-heading" hidden>
          <h3 id="approvals-heading">Tool calls waiting for approval</h3>
          <ul id="approval-list"></ul>
        </section>

        <div id="transcript" class="transcript" role="log" aria-label="Conversation"
          tabindex="0"></div>

        <form id="reply-form" class="composer reply">
          <label for="reply">Reply</label>
          <div class="row">
            <textarea id="reply" rows="2" maxlength="4000"
              aria-describedby="reply-hint"></textarea>
            <button type="submit" id="send" class="primary">Send</button>
          </div>
          <p class="hint" id="reply-hint"></p>
        </form>

        <form id="whisper-form" class="composer whisper">
          <label for="whisper">Whisper to the AI
            <span class="aside">(the customer never sees it)</span></label>
          <div class="row">
            <textarea id="whisper" rows="1" maxlength="4000"></textarea>
            <button type="submit" id="whisper-send">Whisper</button>
          </div>
          <div class="whisper-options">
            <input type="checkbox" id="reply-now" aria-describedby="whisper-hint">
            <label for="reply-now">The AI answers the customer now</label>
            <span class="hint" id="whisper-hint"></span>
          </div>
        </form>
      </section>
    </main>
  </div>
</body>
</html>
"""
