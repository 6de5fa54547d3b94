"""`wsgi_pkg.sub:application`: an app one package deep."""


def application(environ, start_response):
    body = f"from {__name__}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
