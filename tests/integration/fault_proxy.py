# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A fault-injecting HTTP proxy on loopback, in front of a moto server (tests only).

Point boto3's ``endpoint_url`` at ``FaultProxy.url``. Every request is classified as
(service, action) -- query protocol (``Action=``: ec2, cloudformation, iam, sts), JSON protocol
(``X-Amz-Target``: events, ...), REST (S3 by method and path/query, Lambda by path) -- recorded with
its outcome, and forwarded to moto unless a rule says otherwise. A rule matches (service, action,
nth occurrence of that pair since the rules were set) and ``times`` consecutive occurrences from
there (a call and its botocore retries) and does one of:

``before``   answer the service's 5xx error without forwarding (the call did not happen);
``after``    forward (the call takes effect), then answer the 5xx error (the reply is lost);
``throttle`` answer the service's throttling error without forwarding;
``reset``    close the connection without a reply, ``when="before"`` or ``"after"`` forwarding;
``hook``     hold the call, run ``callback(call)`` (e.g. send SIGINT to the module's process),
             then forward it.

Answers carry the proxy's own Date header, moved forward by ``clock_offset`` seconds when set.

moto ignores ``ClientToken``; AWS answers a repeated ``RunInstances`` / ``CreateFleet`` /
``RequestSpotFleet`` with the same token with the first call's result instead of launching again
(EC2 User Guide, "Ensure idempotency in Amazon EC2 API requests"; EC2 API Reference, CreateFleet
``ClientToken``). The proxy emulates that, so a botocore retry of a call
whose reply was lost does not launch twice -- as on AWS.

Bounded: every upstream request has a timeout, a hook callback gets ``HOOK_TIMEOUT`` seconds, the
server threads are daemons and ``stop()`` shuts it down. It binds 127.0.0.1 only.
"""
import http.client
import http.server
import json
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from moto_server import classify  # noqa: E402  pylint: disable=wrong-import-position

UPSTREAM_TIMEOUT = 60  # seconds for moto to answer one request
HOOK_TIMEOUT = 30  # seconds a hook callback may hold a call
MODES = ("before", "after", "throttle", "reset", "hook")

# The error each protocol answers, in its real wire format; (HTTP status, code, message).
# 5xx "internal error" codes:
#   EC2: InternalError, HTTP 500 (EC2 API Reference, "Error codes for the Amazon EC2 API", server errors)
#   query protocol (CloudFormation, IAM, STS): InternalFailure, HTTP 500 (each API Reference, "Common Errors")
#   JSON protocol (EventBridge): InternalException, HTTP 500 (EventBridge API Reference, PutRule "Errors")
#   Lambda (REST-JSON): ServiceException, HTTP 500 (Lambda API Reference, Invoke/CreateFunction "Errors")
#   S3 (REST-XML): InternalError, HTTP 500 (S3 API Reference, "Error responses", list of error codes)
INTERNAL = {
    "ec2": (500, "InternalError", "An internal error has occurred"),
    "query": (500, "InternalFailure", "The request processing has failed because of an unknown error"),
    "json": (500, "InternalException", "An internal error occurred"),
    "lambda": (500, "ServiceException", "The Lambda service encountered an internal error"),
    "s3": (500, "InternalError", "We encountered an internal error. Please try again."),
}
# Throttling codes (all in botocore's retry model, botocore/data/_retry.json "throttling" /
# botocore.retries.standard.ThrottledRetryableChecker._THROTTLED_ERROR_CODES):
#   EC2: RequestLimitExceeded, HTTP 503 (EC2 API Reference, "Request throttling")
#   query protocol: Throttling, HTTP 400 (CloudFormation/IAM/STS "Common Errors": ThrottlingException
#     is documented with code Throttling on the query protocol)
#   EventBridge: ThrottlingException, HTTP 400 (EventBridge API Reference, "Common Errors")
#   Lambda: TooManyRequestsException, HTTP 429 (Lambda API Reference, "Errors")
#   S3: SlowDown, HTTP 503 (S3 API Reference, "Error responses")
THROTTLING = {
    "ec2": (503, "RequestLimitExceeded", "Request limit exceeded."),
    "query": (400, "Throttling", "Rate exceeded"),
    "json": (400, "ThrottlingException", "Rate exceeded"),
    "lambda": (429, "TooManyRequestsException", "Rate exceeded"),
    "s3": (503, "SlowDown", "Please reduce your request rate."),
}
# Launch calls AWS de-duplicates by ClientToken (emulated here, see the module docstring).
IDEMPOTENT_LAUNCHES = {("ec2", "RunInstances"): "ClientToken",
                       ("ec2", "CreateFleet"): "ClientToken",
                       ("ec2", "RequestSpotFleet"): "SpotFleetRequestConfig.ClientToken"}


def protocol(service, headers, action_from_form):
    """Which error format the service speaks: ec2 / query / json / lambda / s3."""
    if service == "s3":
        return "s3"
    if service == "ec2":
        return "ec2"
    if "x-amz-target" in headers:
        return "json"
    if action_from_form:
        return "query"
    return "lambda"  # the REST-JSON services this project calls: Lambda


def error_reply(proto_name, status, code, message):
    """(status, headers, body) of an AWS error in the protocol's wire format.
    EC2: <Response><Errors><Error><Code> (EC2 API Reference, "Error codes", error response structure);
    query: <ErrorResponse><Error><Type/Code/Message> (e.g. CloudFormation API Reference "Common Errors",
    botocore.parsers.QueryParser._do_error_parse); JSON: {"__type": ..., "message": ...}
    (botocore.parsers.BaseJSONParser._do_error_parse); REST-JSON: the X-Amzn-ErrorType header plus a
    JSON body (botocore.parsers.RestJSONParser._inject_error_code); S3: <Error><Code> (S3 API Reference,
    "Error responses", REST error response)."""
    request_id = str(uuid.uuid4())
    headers = {"x-amzn-RequestId": request_id}
    if proto_name == "ec2":
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>%s</Code>'
                '<Message>%s</Message></Error></Errors><RequestID>%s</RequestID></Response>'
                % (code, message, request_id))
        headers["Content-Type"] = "text/xml;charset=UTF-8"
    elif proto_name == "query":
        kind = "Receiver" if status >= 500 else "Sender"
        body = ('<ErrorResponse xmlns="http://fault-proxy.invalid/doc/"><Error><Type>%s</Type><Code>%s</Code>'
                '<Message>%s</Message></Error><RequestId>%s</RequestId></ErrorResponse>'
                % (kind, code, message, request_id))
        headers["Content-Type"] = "text/xml"
    elif proto_name == "json":
        body = json.dumps({"__type": code, "message": message})
        headers["Content-Type"] = "application/x-amz-json-1.1"
    elif proto_name == "lambda":
        body = json.dumps({"Type": "Service" if status >= 500 else "User", "message": message})
        headers.update({"Content-Type": "application/json", "X-Amzn-ErrorType": code})
    else:
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code><Message>%s</Message>'
                '<RequestId>%s</RequestId></Error>' % (code, message, request_id))
        headers.update({"Content-Type": "application/xml", "x-amz-request-id": request_id})
    return status, headers, body.encode()


class Rule:
    """Fault for occurrences nth .. nth+times-1 (1-based) of (service, action)."""

    def __init__(self, service, action, mode, nth=1, times=1, when="before", callback=None):
        if mode not in MODES:
            raise ValueError("unknown fault mode %r" % mode)
        if mode == "hook" and callback is None:
            raise ValueError("a hook rule needs a callback")
        self.service, self.action, self.mode = service, action, mode
        self.nth, self.times, self.when, self.callback = nth, times, when, callback

    def matches(self, service, action, occurrence):
        return (service, action) == (self.service, self.action) and \
            self.nth <= occurrence < self.nth + self.times

    def __repr__(self):
        when = "/" + self.when if self.mode == "reset" else ""
        return "Rule(%s:%s #%d x%d %s%s)" % (self.service, self.action, self.nth, self.times, self.mode, when)


class Call:
    """One request as the proxy saw it."""

    def __init__(self, service, action, occurrence, params):
        self.service, self.action, self.occurrence, self.params = service, action, occurrence, params
        self.outcome = None  # "ok" or the fault applied (before/after/throttle/reset-before/...)
        self.status = None  # HTTP status answered (None: connection closed)

    def as_tuple(self):
        return self.service, self.action, self.outcome

    def __repr__(self):
        return "%s:%s#%d=%s" % (self.service, self.action, self.occurrence, self.outcome)


def _s3_action(method, parsed, action):
    """Sharper S3 names than moto_server.classify: ListObjectsV2 and bucket sub-resources."""
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    if action == "ListObjects" and query.get("list-type") == ["2"]:
        return "ListObjectsV2"
    if action.endswith("Bucket") and query:
        sub = sorted(k for k in query if k not in ("list-type", "prefix", "max-keys", "encoding-type"))
        if sub:
            return action + sub[0][:1].upper() + sub[0][1:]
    return action


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

    def log_message(self, *args):  # quiet: the proxy records calls itself
        pass

    def date_time_string(self, timestamp=None):
        """The Date header, moved by the proxy's clock_offset (a run "some minutes later")."""
        return super().date_time_string((timestamp or time.time()) + self.server.proxy.clock_offset)

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self):
        proxy = self.server.proxy
        body = self._body()
        headers = dict(self.headers.items())
        lower = {k.lower(): v for k, v in headers.items()}
        parsed = urllib.parse.urlparse(self.path)
        entry = dict(headers=headers, method=self.command, url=self.path, body="")
        service = classify(entry)[0]
        form_text = body.decode("latin-1") if service != "s3" else ""
        entry["body"] = form_text
        service, action = classify(entry)
        if service == "s3":
            action = _s3_action(self.command, parsed, action)
        form = urllib.parse.parse_qs(form_text) if "Action=" in form_text else {}
        params = {k: v[0] for k, v in form.items()}
        call, rule = proxy.register(service, action, params)
        error_format = protocol(service, lower, bool(form))
        try:
            if rule is None:
                call.outcome = "ok"
                self._reply(*self._upstream(proxy, call, body, headers))
            elif rule.mode == "hook":
                call.outcome = "hook"
                proxy.run_hook(rule, call)
                self._reply(*self._upstream(proxy, call, body, headers))
            elif rule.mode == "before":
                call.outcome = "before"
                self._reply(*error_reply(error_format, *INTERNAL[error_format]))
            elif rule.mode == "throttle":
                call.outcome = "throttle"
                self._reply(*error_reply(error_format, *THROTTLING[error_format]))
            elif rule.mode == "after":
                call.outcome = "after"
                self._upstream(proxy, call, body, headers)
                self._reply(*error_reply(error_format, *INTERNAL[error_format]))
            else:  # reset
                call.outcome = "reset-" + rule.when
                if rule.when == "after":
                    self._upstream(proxy, call, body, headers)
                self._reset()
        finally:
            proxy.done(call)

    def _upstream(self, proxy, call, body, headers):
        """(status, headers, body) of moto's answer, or the first answer to a repeated launch token."""
        key = IDEMPOTENT_LAUNCHES.get((call.service, call.action))
        token = call.params.get(key) if key else None
        if token:
            with proxy.token_lock(call.service, call.action, token):
                cached = proxy.launches.get((call.action, token))
                if cached is not None:
                    return cached
                answer = proxy.forward(self.command, self.path, body, headers)
                if 200 <= answer[0] < 300:
                    proxy.launches[(call.action, token)] = answer
                return answer
        return proxy.forward(self.command, self.path, body, headers)

    def _reply(self, status, headers, body):
        self.send_response(status)
        for key, value in headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                self.send_header(key, value)
        if self.command == "HEAD" and "content-length" in {k.lower() for k in headers}:
            self.send_header("Content-Length", [v for k, v in headers.items() if k.lower() == "content-length"][0])
            body = b""
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _reset(self):
        """Close without a reply: SO_LINGER 0 makes close() send a TCP RST."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass  # the connection was reset on purpose

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _handle


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        """A client that went away (a module process interrupted while its call was held, a reset
        on purpose) is part of the test, not an error worth a traceback; anything else is kept."""
        error = sys.exc_info()[1]
        if not isinstance(error, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)):
            self.proxy.errors.append(repr(error))


class FaultProxy:
    """``with FaultProxy(moto.url) as proxy: proxy.url`` -- see the module docstring."""

    def __init__(self, upstream):
        target = urllib.parse.urlparse(upstream)
        if target.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the fault proxy only fronts a loopback server, not %s" % upstream)
        self.upstream = (target.hostname, target.port)
        self.calls = []
        self.rules = []
        self.launches = {}  # (action, client token) -> first successful answer
        self.errors = []  # unexpected exceptions in request handlers (forwarding failures)
        # Seconds added to the Date header of every answer: what a client that learns the service's
        # clock from its answers (the launch lock learns S3's) sees of a run that much later.
        self.clock_offset = 0
        self._counts = {}
        self._lock = threading.Lock()
        self._token_locks = {}
        self._server = None
        self._thread = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self._server.server_address[1]

    def start(self):
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- rules and the record ----
    def set_rules(self, *rules):
        """Replace the rules; occurrences are counted afresh from here."""
        with self._lock:
            self.rules = list(rules)
            self._counts = {}

    def clear(self):
        self.set_rules()

    def reset_record(self):
        with self._lock:
            self.calls = []

    def register(self, service, action, params):
        with self._lock:
            occurrence = self._counts.get((service, action), 0) + 1
            self._counts[(service, action)] = occurrence
            call = Call(service, action, occurrence, params)
            self.calls.append(call)
            rule = next((r for r in self.rules if r.matches(service, action, occurrence)), None)
        return call, rule

    def done(self, call):
        if call.outcome is None:
            call.outcome = "error"

    def record(self):
        """Every call since reset_record(): (service, action, outcome)."""
        with self._lock:
            return [c.as_tuple() for c in self.calls]

    def run_hook(self, rule, call):
        worker = threading.Thread(target=rule.callback, args=(call,), daemon=True)
        worker.start()
        worker.join(timeout=HOOK_TIMEOUT)

    def token_lock(self, service, action, token):
        with self._lock:
            return self._token_locks.setdefault((service, action, token), threading.Lock())

    # ---- forwarding ----
    def forward(self, method, path, body, headers):
        conn = http.client.HTTPConnection(*self.upstream, timeout=UPSTREAM_TIMEOUT)
        try:
            send = {k: v for k, v in headers.items()
                    if k.lower() not in ("connection", "transfer-encoding", "content-length", "expect")}
            send["Content-Length"] = str(len(body))
            conn.request(method, path, body=body, headers=send)
            response = conn.getresponse()
            data = response.read()
            return response.status, dict(response.getheaders()), data
        finally:
            conn.close()


def no_retry_delay():
    """Context manager: botocore's standard/adaptive retries without their back-off sleep, so a
    call throttled or failed beyond its retries costs milliseconds. The retries themselves (their
    number, which errors they retry) are unchanged. In-process only."""
    from unittest import mock  # pylint: disable=import-outside-toplevel
    from botocore.retries import standard  # pylint: disable=import-outside-toplevel
    return mock.patch.object(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0)
