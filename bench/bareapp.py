"""The ceiling of the stack: a bare Flask app under gunicorn serving the same bytes with send_file.

No cache logic, no negotiation: what Flask + gunicorn cost by themselves for a file on disk.
BARE_FILES and BARE_PAGES name the directories it serves at /files/<name> and /pages/<name>.
"""

import os

from flask import Flask, abort, send_from_directory

app = Flask(__name__)
FILES, PAGES = os.environ.get("BARE_FILES", "."), os.environ.get("BARE_PAGES", ".")


@app.get("/files/")
def ready():
    return "ok\n"


@app.get("/files/<name>")
def files(name: str):
    return send_from_directory(FILES, name, mimetype="application/octet-stream", max_age=None)


@app.get("/pages/<name>")
def pages(name: str):
    if not name.endswith(".json"):
        abort(404)
    return send_from_directory(
        PAGES, name, mimetype="application/vnd.pypi.simple.v1+json", max_age=None
    )
