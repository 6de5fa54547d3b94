"""POST echo (scripts/bench.py's "4 KiB POST echo" row): reads the whole
request body from wsgi.input and sends it back, so the figure covers body
reading on the way in and a 4 KiB response on the way out."""


def app(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))],
    )
    return [body]
