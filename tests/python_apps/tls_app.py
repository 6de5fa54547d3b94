"""The WSGI app that tests/tls.rs runs behind a TLS listener: it answers
every request with JSON saying what the environ says about the connection,
`wsgi.url_scheme` and the client certificate's subject (`SSL_CLIENT_S_DN`,
null without one). Standard library only.
"""

import json


def app(environ, start_response):
    body = json.dumps(
        {
            "url_scheme": environ["wsgi.url_scheme"],
            "ssl_client_s_dn": environ.get("SSL_CLIENT_S_DN"),
        }
    ).encode("utf-8")
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]
