"""Flask hello (scripts/bench.py's "Flask hello" row): one route, a plain-text
answer, so the figure measures the server plus Flask's request cycle."""

from flask import Flask

app = Flask(__name__)


@app.route("/")
def hello():
    return "Hello, World!\n", 200, {"Content-Type": "text/plain"}
