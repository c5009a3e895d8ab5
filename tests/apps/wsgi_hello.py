"""A WSGI app for the `run` tests, served by a real gunicorn under socket activation:

    gunicorn --chdir tests/apps --workers 2 wsgi_hello:app   (with LISTEN_FDS=1 and fd 3)

GET /pid answers the worker's pid and its parent's (gunicorn's master).
"""
import json
import os


def app(environ, start_response):
    body = json.dumps({"pid": os.getpid(), "master": os.getppid(), "path": environ["PATH_INFO"]})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]
