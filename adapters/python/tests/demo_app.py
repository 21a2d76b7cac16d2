"""A small Flask shop that tests/adapter_python.rs runs as two gunicorn instances behind
stickless. It uses nothing but Flask's own session API; the adapter is the one line marked
below. Environment: INSTANCE (its name in every answer), STICKLESS=0 for the control (Flask's
signed-cookie session with this instance's own SECRET_KEY, as an app that generates its key at
start-up has).
"""

import datetime
import os
import time
import uuid

from flask import Flask, Response, flash, get_flashed_messages, jsonify, request, session
from flask import stream_with_context
from markupsafe import Markup

import stickless_session

app = Flask(__name__)
INSTANCE = os.environ.get("INSTANCE", "?")
if os.environ.get("STICKLESS", "1") != "0":
    app.session_interface = stickless_session.SessionInterface()  # the one line
else:
    app.secret_key = os.environ.get("SECRET_KEY") or os.urandom(32)

TYPED = {
    "count": 3,
    "price": 9.75,
    "gift": True,
    "coupon": None,
    "note": "h\u00e9llo \u2603 \U0001F600",
    "sizes": ["S", "M", 42],
    "pair": (1, "a", (2, 3)),
    "blob": b"\x00\xffraw",
    "when": datetime.datetime(2024, 2, 29, 13, 45, 6, tzinfo=datetime.timezone.utc),
    "order": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "label": Markup("<b>sale</b>"),
    "meta": {" t": ["not", "a", "tuple"], "deep": {"k": (1, 2)}},
    "shippingAddress": {"city": "Z\u00fcrich", "zip": "8001"},
}


def answer(**fields):
    return jsonify(instance=INSTANCE, **fields)


@app.route("/whoami")
def whoami():
    return answer(
        user=session.get("user"),
        cart=session.get("cart"),
        sid=stickless_session.session_id(),
        keys=sorted(session.keys()),
    )


@app.route("/login", methods=["POST"])
def login():
    session["user"] = request.form["user"]
    session["userId"] = int(request.form.get("id", "1"))
    stickless_session.rotate()
    flash(f"welcome {request.form['user']}")
    return answer(user=session["user"])


@app.route("/cart", methods=["POST"])
def add_to_cart():
    cart = session.get("cart")
    if cart is None:
        session["cart"] = [request.form["item"]]
    else:
        cart.append(request.form["item"])  # in place, no session.modified
    return answer(cart=session["cart"])


@app.route("/types", methods=["POST"])
def set_types():
    for key, value in TYPED.items():
        session[key] = value
    return answer(types={key: repr(session[key]) for key in TYPED})


@app.route("/types")
def get_types():
    return answer(types={key: repr(session.get(key)) for key in TYPED})


@app.route("/rotate", methods=["POST"])
def rotate():
    return answer(rotated=stickless_session.rotate())


@app.route("/logout", methods=["POST"])
def logout():
    session.clear()
    if request.form.get("say"):
        flash(request.form["say"])
    return answer()


@app.route("/flashes")
def flashes():
    return answer(flashes=get_flashed_messages())


@app.route("/meet-then-set", methods=["POST"])
def meet_then_set():
    """Sets one key, but only once the other party of the pair has read the session too: a
    file per party in BARRIER_DIR (shared by both instances), waited for at most 10 s. So both
    requests read the session before either answers."""
    saw = sorted(session.keys())
    barrier = os.environ["BARRIER_DIR"]
    me, other = request.form["key"], request.form["other"]
    if not (me.isalnum() and other.isalnum()):
        return answer(error="bad party"), 400
    open(os.path.join(barrier, me), "w").close()
    deadline = time.monotonic() + 10
    while not os.path.exists(os.path.join(barrier, other)):
        if time.monotonic() > deadline:
            return answer(error="the other request never came"), 504
        time.sleep(0.01)
    session[me] = request.form["value"]
    return answer(saw=saw)


@app.route("/stream")
def stream():
    session["before"] = "sent with the headers"

    @stream_with_context
    def body():
        yield "streamed "
        session["late"] = "changed after the headers"
        yield "body"

    return Response(body(), mimetype="text/plain")
