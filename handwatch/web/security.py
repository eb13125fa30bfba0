"""Who may use the review page: passwords (scrypt), allowed Host names, same-origin POSTs, CSRF tokens, strict headers."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import math
import os
import secrets
import time
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool

from handwatch import log
from handwatch.config.web import Web, is_loopback
from handwatch.errors import ConfigError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 15, 8, 1
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
OPEN_PATHS = ("/healthz",)  # for uptime monitors: says only whether the daemon makes progress


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=128 << 20)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt)}${b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, key = stored.split("$")
        want = base64.b64decode(key)
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), maxmem=256 << 20, dklen=len(want)
        )
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(got, want)


class Password:
    """The configured password, checked once per distinct header value (scrypt is slow on purpose)."""

    def __init__(self, stored_hash: str | None = None, plain: str | None = None):
        self.stored_hash, self.plain = stored_hash, plain
        self._good: set[bytes] = set()
        self._key = secrets.token_bytes(32)

    def known(self, password: str) -> bool:
        """Checked right before: no scrypt needed (each request of a page sends the password again)."""
        return hmac.new(self._key, password.encode(), "sha256").digest() in self._good

    def check(self, password: str) -> bool:
        tag = hmac.new(self._key, password.encode(), "sha256").digest()
        if tag in self._good:
            return True
        ok = (
            hmac.compare_digest(password.encode(), self.plain.encode())
            if self.plain is not None
            else verify_password(password, self.stored_hash or "")
        )
        if ok:
            self._good.add(tag)
        return ok


def password_for(web: Web, source: str) -> Password | None:
    """The password the server will ask for; refuses to start when one is needed and missing."""
    if web.password_env:
        value = os.environ.get(web.password_env, "")
        if not value:
            raise ConfigError(
                source,
                [
                    f"web.password_env: the environment variable {web.password_env} is not set "
                    "or empty; the review page will not start without its password"
                ],
            )
        return Password(plain=value)
    if web.password_hash:
        return Password(stored_hash=web.password_hash)
    host, _ = web.address()
    if not is_loopback(host):  # config/web.py refuses this too; a second lock on the same door
        raise ConfigError(source, [f"web.listen: {host} is not loopback and no password is set"])
    return None


def allowed_hosts(web: Web) -> set[str] | None:
    """Without a password the page trusts loopback only, so a page elsewhere that points its own name at
    127.0.0.1 (DNS rebinding) must not be served: only these Host names are. None: any (a password guards it)."""
    if web.password_hash or web.password_env:
        return None
    hosts = {"localhost", "127.0.0.1", "::1", web.address()[0].lower()}
    if web.public_url:
        hosts.add((urlsplit(web.public_url).hostname or "").lower())
    return hosts


def _hostname(host_header: str) -> str:
    return (urlsplit("//" + host_header).hostname or "").lower()


def client_key(address: str) -> str:
    """Whom a failure counts against: the IPv4 address, or the IPv6 /64 (one home or host has a whole /64)."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)


def _basic_password(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(value.strip()).decode("utf-8").partition(":")[2]
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


class Throttle:
    """Failed password attempts per client: a few typos are free, then each failure makes that client wait
    longer before its next try is even checked (1 s, doubling, at most MAX_WAIT_S), so guessing runs at about
    one try a minute, not thousands a second. Pure: `clock` is injected. Bounded: past MAX_CLIENTS the
    longest-quiet clients are forgotten."""

    FREE, FIRST_WAIT_S, MAX_WAIT_S, MAX_CLIENTS = 3, 1.0, 60.0, 10_000

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.failures: dict[str, tuple[int, float]] = {}  # client -> (failures in a row, may try again at)

    def wait(self, client: str) -> float:
        """Seconds this client must still wait before its next attempt is even checked (0: go ahead)."""
        count, until = self.failures.get(client, (0, 0.0))
        return max(0.0, until - self.clock()) if count else 0.0

    def failed(self, client: str) -> int:
        now = self.clock()
        count, _ = self.failures.pop(client, (0, 0.0))
        count += 1
        extra = count - self.FREE
        self.failures[client] = (
            count,
            now + (min(self.MAX_WAIT_S, self.FIRST_WAIT_S * 2 ** min(extra - 1, 16)) if extra > 0 else 0.0),
        )
        if len(self.failures) > self.MAX_CLIENTS:  # insertion order: the first keys are the longest quiet
            for key in list(self.failures)[: len(self.failures) - self.MAX_CLIENTS]:
                del self.failures[key]
        return count

    def succeeded(self, client: str) -> None:
        self.failures.pop(client, None)


class Guard:
    """ASGI middleware in front of every route: Host, password (HTTP Basic), same-origin POSTs, headers.

    The password is checked off the event loop (scrypt takes tens of milliseconds and memory on purpose), a few
    at a time, and each client that gets it wrong waits longer before its next try is checked; every failure is
    logged (`auth.failed`). A request that passed the password carries `scope["state"]["authenticated"]`."""

    CHECKS_AT_ONCE = 2

    def __init__(self, app, password: Password | None, hosts: set[str] | None, public_url: str | None = None, clock=None):
        self.app, self.password, self.hosts = app, password, hosts
        self.public_origin = _origin(public_url) if public_url else None
        self.throttle = Throttle(clock or time.monotonic)
        self._checks: asyncio.Semaphore | None = None
        self._pending: dict[str, int] = {}  # unknown passwords being checked, per client
        self.log = log.get("web")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + HEADERS}
            await send(message)

        problem = None
        authorised = None if self.password else True  # without a password, only loopback reaches the page at all
        client = client_key((scope.get("client") or ("?", 0))[0])
        password = _basic_password(headers.get("authorization", "")) if self.password else None
        known = password is not None and self.password is not None and self.password.known(password)
        # A client that got it wrong waits; and has one unknown password checked at a time, so sending guesses
        # at once cannot outrun the wait (a browser sends the same, known password with each request).
        wait = self.throttle.wait(client) if self.password and not known else 0.0
        if wait <= 0 and password is not None and not known and self._pending.get(client):
            wait = 1.0
        if self.hosts is not None and _hostname(host) not in self.hosts:
            problem = (421, "this address is not served here", [])
        elif wait > 0 and scope["path"] not in OPEN_PATHS:
            problem = (429, "too many wrong passwords: wait and try again", [(b"retry-after", str(math.ceil(wait)).encode())])
        else:
            if known:
                authorised = True
            elif self.password and headers.get("authorization") and wait <= 0:
                authorised = await self._authorised(password, client)
            if not authorised and self.password and scope["path"] not in OPEN_PATHS:
                problem = (401, "password required", [(b"www-authenticate", b'Basic realm="handwatch", charset="UTF-8"')])
            elif scope["method"] not in ("GET", "HEAD", "OPTIONS") and not self._same_origin(headers, host):
                problem = (403, "cross-site request refused", [])
        scope.setdefault("state", {})["authenticated"] = bool(authorised)
        if problem is None:
            return await self.app(scope, receive, send_with_headers)
        status, text, extra = problem
        body = text.encode() + b"\n"
        await send_with_headers(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _authorised(self, password: str | None, client: str) -> bool:
        ok = False
        if password is not None and self.password is not None:
            if self._checks is None:
                self._checks = asyncio.Semaphore(self.CHECKS_AT_ONCE)
            self._pending[client] = self._pending.get(client, 0) + 1
            try:
                async with self._checks:
                    ok = await run_in_threadpool(self.password.check, password)
            finally:
                self._pending[client] -= 1
                if not self._pending[client]:
                    del self._pending[client]
        if ok:
            self.throttle.succeeded(client)
            return True
        failures = self.throttle.failed(client)
        self.log.warning("auth.failed", client=client, failures=failures, retry_in_s=round(self.throttle.wait(client), 1))
        return False

    def _same_origin(self, headers: dict, host: str) -> bool:
        """A browser names the page a POST comes from; it must be this server (by Host, or the public URL)."""
        claimed = headers.get("origin") or (_origin(headers["referer"]) if headers.get("referer") else None)
        if claimed is None:
            return True  # not a browser (curl, scripts): the CSRF token still has to be right
        if claimed == "null":
            return False
        return urlsplit(claimed).netloc.lower() == host.lower() or claimed == self.public_origin


def _origin(url: str) -> str:
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc}".lower()


class Csrf:
    """One random token per server run, in every form; a POST without it is refused even from this origin."""

    def __init__(self):
        self.token = secrets.token_urlsafe(32)

    def valid(self, value: str | None) -> bool:
        return value is not None and value != "" and hmac.compare_digest(value.encode(), self.token.encode())
