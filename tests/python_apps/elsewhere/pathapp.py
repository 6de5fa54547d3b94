"""An app found only through --pythonpath: this directory and elsewhere_too
(for `pathhelper`) are not on sys.path unless forkhorn puts them there."""

import pathhelper


def app(environ, start_response):
    body = f"pathapp with {pathhelper.NAME}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
