"""A small Flask app for tests/wsgi.rs: a page, a form that POSTs, and JSON."""

from flask import Flask, jsonify, request

app = Flask(__name__)

FORM = """<!doctype html>
<form method="post" action="/greet">
  <input name="name"> <button>Greet</button>
</form>
"""


@app.get("/")
def index():
    return "Hello from Flask\n"


@app.route("/greet", methods=["GET", "POST"])
def greet():
    if request.method == "GET":
        return FORM
    name = request.form.get("name", "")
    if not name:
        return "a name is needed\n", 400
    return f"Hello, {name}!\n"


@app.get("/json")
def as_json():
    return jsonify(path=request.path, args=request.args.to_dict())

