"""WSGI apps for the gunicorn peer in scripts/bench.py.

Each mirrors one of forkhorn's built-in apps:

  hello  -> 200 "Hello, World!\\n" text/plain          (forkhorn `hello`)
  echo   -> 200 JSON description of the request       (forkhorn `echo`)
  chaos  -> /pid answers the worker pid, /sleep?s=N sleeps N seconds
            then answers the pid                      (forkhorn `chaos`)
"""

import base64
import json
import os
import time
from urllib.parse import parse_qs

HELLO = b"Hello, World!\n"
HELLO_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))]


def hello(environ, start_response):
    start_response("200 OK", HELLO_HEADERS)
    return [HELLO]


def echo(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    headers = [
        [k[5:].replace("_", "-").title(), v]
        for k, v in environ.items()
        if k.startswith("HTTP_")
    ]
    if environ.get("CONTENT_TYPE"):
        headers.append(["Content-Type", environ["CONTENT_TYPE"]])
    if environ.get("CONTENT_LENGTH"):
        headers.append(["Content-Length", environ["CONTENT_LENGTH"]])
    target = environ.get("RAW_URI") or environ.get("PATH_INFO", "/")
    out = json.dumps(
        {
            "method": environ["REQUEST_METHOD"],
            "target": target,
            "version": environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
            "headers": headers,
            "body": base64.b64encode(body).decode("ascii"),
            "trailers": [],
        }
    ).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))]
    )
    return [out]


def chaos(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/sleep":
        qs = parse_qs(environ.get("QUERY_STRING", ""))
        time.sleep(float(qs.get("s", ["1"])[0]))
    out = f"{os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]
