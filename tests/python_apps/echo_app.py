"""The Python twin of forkhorn's built-in `echo` app (src/apps/echo.rs), for
replaying the conformance corpus through the WSGI host.

Answers 200 with JSON: `method`, `target` (the request target as sent, from
RAW_URI), `version`, `headers` (rebuilt from the environ: WSGI keeps neither
the order nor the spelling of names, and joins repeated fields with ", "),
`body_base64` and `trailers` (WSGI has no way to see trailers: always []).
A body the client cut short is shown as far as it arrived; another error
reading it gets a 400 naming the error.
"""

import base64
import json
from urllib.parse import quote
from wsgiref.validate import validator

def target(environ):
    raw = environ.get("RAW_URI")
    if raw:
        return raw
    path = quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), safe="/;=,")
    query = environ.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path


def headers(environ):
    out = []
    for key, value in sorted(environ.items()):
        if key.startswith("HTTP_"):
            name = key[5:]
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            name = key
        else:
            continue
        out.append([name.replace("_", "-").title(), value])
    return out


def read_body(stream):
    """The body, or as much of it as arrived when the client cut it short
    (forkhorn's wsgi.input raises OSError then). A failed read returns
    nothing, so the body is read a byte at a time to lose none of it."""
    pieces = []
    while True:
        try:
            piece = stream.read(1)
        except OSError:
            break
        if not piece:
            break
        pieces.append(piece)
    return b"".join(pieces)


def app(environ, start_response):
    try:
        body = read_body(environ["wsgi.input"])
    except Exception as e:
        out = f"cannot read the request body: {type(e).__name__}: {e}\n".encode()
        start_response("400 Bad Request", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
        return [out]
    reply = {
        "method": environ["REQUEST_METHOD"],
        "target": target(environ),
        "version": environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
        "headers": headers(environ),
        "body_base64": base64.b64encode(body).decode("ascii"),
        "trailers": [],
    }
    out = json.dumps(reply, separators=(",", ":")).encode("utf-8")
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]


_validated = validator(app)


def validated_app(environ, start_response):
    """`app` inside wsgiref.validate, except for requests whose target is not
    a path (`OPTIONS *`, `CONNECT host:port`): the validator insists that
    PATH_INFO starts with "/", which those cannot give."""
    path = environ.get("PATH_INFO", "")
    if path and not path.startswith("/"):
        return app(environ, start_response)
    return _validated(environ, start_response)
