"""Plain WSGI hello: the smallest app a WSGI server can run (scripts/bench.py's
"plain WSGI hello" row). Same bytes as forkhorn's built-in `hello`."""

BODY = b"Hello, World!\n"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
