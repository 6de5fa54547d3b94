"""An app made by a factory, for `module:factory()` and `module:factory(ARGS)`."""


def create_app(greeting="default", punct=""):
    body = f"factory: {greeting}{punct}\n".encode()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return app
