"""The one security layer, in front of every route (static files included).

- Host: only the names this server was told it is reached by (DNS rebinding: a page on another site whose
  name is pointed at 127.0.0.1 sends its own Host, and is refused).
- Origin: a request that carries one must come from this server's own origin; a request that changes
  anything (POST) must be JSON, which a cross-site form cannot send without the browser asking first.
- Fetches the browser marks as from another site (`Sec-Fetch-Site` other than same-origin / none) reach no
  /api route, GETs included: a page elsewhere cannot make this server read files or load tokenizers for it.
- Token (any host but loopback, or --require-token): `/?token=T` once, exchanged for an HttpOnly,
  SameSite=Strict cookie and a redirect that drops it from the address bar; scripts may send
  `Authorization: Bearer T` (the scheme in any case, as HTTP allows).
- Request bodies: at most MAX_BODY_BYTES (JSON; the upload route has its own limit), refused with a 413 from the
  declared Content-Length before anything is read, or as soon as a body without one grows past it.
- Every answer: a Content-Security-Policy that allows our own files only, no framing, no referrer.
Paths inside requests are checked where they are used (context.inside).
"""

from __future__ import annotations

import json
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from .context import ApiError, Settings

COOKIE = "qwen_sft_ui_{port}"  # one per port: cookies are not port-specific, and two UIs on one host have two tokens
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Routes whose body is a file (application/octet-stream): a cross-site page cannot send that type without the
# browser asking first (a CORS preflight, which this server never grants), as with JSON.
RAW_BODY = {"/api/data/upload"}
# A JSON body: a form, a conversation (chat's limit is 1M characters: up to 4 MB of UTF-8), a list of files.
MAX_BODY_BYTES = 8 * 2**20
HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                 b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class Guard:
    def __init__(self, app, settings: Settings):
        self.app, self.settings = app, settings
        self.cookie = COOKIE.format(port=settings.port)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self.refuse(scope, headers)
        if refusal is not None:
            return await _answer(send, *refusal)
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if self.settings.token and "token" in query and scope["method"] == "GET":
            if not _same(query["token"], self.settings.token):
                return await _answer(send, 401, "wrong token: open the URL printed by `qwen-sft ui`")
            rest = urlencode([(k, v) for k, v in query.items() if k != "token"])
            cookie = f"{self.cookie}={self.settings.token}; HttpOnly; SameSite=Strict; Path=/"
            return await _answer(send, 303, "", [(b"location", (scope["path"] + (f"?{rest}" if rest else "")).encode()),
                                                 (b"set-cookie", cookie.encode())])
        if self.settings.token and not self.authorized(headers):
            return await _answer(send, 401, "this server needs its token: open the URL printed by `qwen-sft ui` "
                                            "(it ends with ?token=...)")

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + HEADERS}
            await send(message)

        if scope["method"] not in SAFE_METHODS and scope["path"] not in RAW_BODY:
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
                return await _answer(send, 413, TOO_LARGE)
            receive = _bounded(receive, MAX_BODY_BYTES)
        return await self.app(scope, receive, send_with_headers)

    def refuse(self, scope, headers: dict) -> tuple[int, str] | None:
        host = headers.get("host", "")
        if host.lower() not in self.settings.allowed_hosts:
            return 403, (f"Host {host!r} is not one this server answers to; if you reach it by that name, restart it "
                         f"with --allowed-host {host.rsplit(':', 1)[0] or 'NAME'}")
        origin = headers.get("origin")
        if origin is not None and origin.lower() not in (f"http://{host}".lower(), f"https://{host}".lower()):
            return 403, f"cross-origin request from {origin} refused"
        cross_site = headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none")
        if cross_site and (scope["path"].startswith("/api/") or scope["method"] not in SAFE_METHODS):
            # Only the page itself calls the API; another site's page (a link, an <img>, a fetch) gets nothing.
            return 403, "cross-site request refused"
        if scope["method"] not in SAFE_METHODS:
            kind = headers.get("content-type", "").split(";")[0].strip().lower()  # media types ignore case
            if kind != "application/json" and not (kind == "application/octet-stream" and scope["path"] in RAW_BODY):
                return 415, "send JSON (Content-Type: application/json)"
        return None

    def authorized(self, headers: dict) -> bool:
        token = self.settings.token
        scheme, _, given = headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() == "bearer" and _same(given.strip(), token):  # the scheme ignores case (RFC 9110)
            return True
        jar = SimpleCookie()
        try:
            jar.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is no credential
            return False
        return self.cookie in jar and _same(jar[self.cookie].value, token)


TOO_LARGE = f"the request body is over {MAX_BODY_BYTES // 2**20} MiB"


def _bounded(receive, limit: int):
    """receive() that refuses a body once it grows past `limit` bytes (a body sent without a Content-Length):
    the route reading it answers 413 (ApiError) instead of holding it all in memory."""
    seen = 0

    async def bounded():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise ApiError(413, TOO_LARGE)
        return message

    return bounded


def _same(given: str, token: str) -> bool:
    return secrets.compare_digest(given.encode(), token.encode())  # bytes: a non-ASCII guess is just wrong


async def _answer(send, status: int, message: str, extra: list | None = None) -> None:
    body = json.dumps({"error": message}).encode() if message else b""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), *HEADERS, *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
