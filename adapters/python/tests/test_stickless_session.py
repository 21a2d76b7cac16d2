"""Unit tests of stickless_session (Flask only): `python3 -m unittest discover -s adapters/python/tests`.

Requests go through Flask's test client; `FakeProxy` plays the proxy's part of the header
protocol (inject the stored attributes, apply the response's updates) so that a sequence of
requests reads like a browser session.
"""

import datetime
import os
import sys
import unittest
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import flask  # noqa: E402
from flask import flash, get_flashed_messages, session, stream_with_context  # noqa: E402
from markupsafe import Markup  # noqa: E402

import stickless_session  # noqa: E402
from stickless_session import decode_name, decode_value, encode_name, encode_value  # noqa: E402


def session_headers(response):
    """The X-Session-* response headers, lower-case names."""
    return {k.lower(): v for k, v in response.headers.items() if k.lower().startswith("x-session-")}


class FakeProxy:
    """The proxy's side of the protocol, enough for unit tests: one session, ids 's1', 's2'…"""

    def __init__(self, client):
        self.client = client
        self.sid = None
        self.attributes = {}
        self.ids = 0

    def headers(self):
        if self.sid is None:
            return {}
        headers = {"X-Session-Id": self.sid}
        for name, value in self.attributes.items():
            headers["X-Session-" + name] = value
        return headers

    def request(self, method, path, **kwargs):
        response = self.client.open(path, method=method, headers=self.headers(), **kwargs)
        self.apply(session_headers(response))
        return response

    def apply(self, updates):
        if updates.get("x-session-invalidate") == "true":
            self.sid, self.attributes = None, {}
            return
        if updates.get("x-session-rotate") == "true" and self.sid is not None:
            self.sid = self.new_id()
        for name in filter(None, (n.strip() for n in updates.get("x-session-remove", "").split(","))):
            self.attributes.pop(name, None)
        for header, value in updates.items():
            if header.startswith("x-session-set-"):
                if self.sid is None:
                    self.sid = self.new_id()
                self.attributes[header[len("x-session-set-"):]] = value

    def new_id(self):
        self.ids += 1
        return f"s{self.ids}"


def make_app():
    app = flask.Flask(__name__)
    app.session_interface = stickless_session.SessionInterface()
    # Deliberately no SECRET_KEY.

    @app.route("/read")
    def read():
        return flask.jsonify(
            user=session.get("user"),
            cart=session.get("cart"),
            sid=stickless_session.session_id(),
            new=session.new,
            keys=sorted(session.keys()),
        )

    @app.route("/set/<key>/<value>", methods=["POST"])
    def set_value(key, value):
        session[key] = value
        return "ok"

    @app.route("/del/<key>", methods=["POST"])
    def delete(key):
        del session[key]
        return "ok"

    @app.route("/cart/<item>", methods=["POST"])
    def add_to_cart(item):
        if "cart" not in session:
            session["cart"] = []
        else:
            session["cart"].append(item)  # in place: session.modified stays False
        return flask.jsonify(modified=session.modified)

    @app.route("/login/<user>", methods=["POST"])
    def login(user):
        session["user"] = user
        stickless_session.rotate()
        return flask.jsonify(sid=stickless_session.session_id())

    @app.route("/rotate", methods=["POST"])
    def rotate():
        return flask.jsonify(rotated=stickless_session.rotate(), sid=session.sid)

    @app.route("/logout", methods=["POST"])
    def logout():
        session.clear()
        if flask.request.args.get("say"):
            flash(flask.request.args["say"])
        return "bye"

    @app.route("/flash/<message>", methods=["POST"])
    def do_flash(message):
        flash(message)
        return "ok"

    @app.route("/flashes")
    def flashes():
        return flask.jsonify(get_flashed_messages())

    @app.route("/types", methods=["POST"])
    def set_types():
        for key, value in TYPED.items():
            session[key] = value
        return "ok"

    @app.route("/types")
    def get_types():
        return flask.jsonify({key: repr(session.get(key)) for key in TYPED})

    @app.route("/stream")
    def stream():
        session["before"] = "sent"

        @stream_with_context
        def body():
            yield "one "
            session["late"] = "lost"
            yield "two"

        return flask.Response(body())

    @app.route("/teardown")
    def teardown_route():
        return "ok"

    @app.teardown_request
    def change_in_teardown(error):
        if flask.request.path == "/teardown":
            session["torn"] = 1

    @app.route("/bad-value", methods=["POST"])
    def bad_value():
        session["set"] = {1, 2}
        return "ok"

    return app


TYPED = {
    "int": 7,
    "float": 2.5,
    "bool": True,
    "none": None,
    "text": "h\u00e9llo \u2603 \U0001F600 \x7f end",
    "list": [1, "two", [3]],
    "tuple": (1, "a", (2, 3)),
    "bytes": b"\x00\xffraw",
    "when": datetime.datetime(2024, 2, 29, 13, 45, 6, tzinfo=datetime.timezone.utc),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "markup": Markup("<b>bold</b>"),
    "tagged": {" t": ["not", "a", "tuple"], "nested": {" di": 1}},
    "userId": 42,
}


class NameEncodingTest(unittest.TestCase):
    def test_common_keys_are_literal(self):
        for key in ["cart", "user", "a", "x", "abc123", "z" * 64, "xcart"]:
            self.assertEqual(encode_name(key), key)
            self.assertEqual(decode_name(key), key)

    def test_other_keys_are_escaped(self):
        cases = {
            "userId": "xuser-49d",
            "user_id": "xuser-5fid",
            "-": "x-2d",
            "id": "x-69d",
            "_flashes": "x-5fflashes",
            "_permanent": "x-5fpermanent",
            "caf\u00e9": "xcaf-c3-a9",
            "a b": "xa-20b",
            "Cart": "x-43art",
        }
        for key, name in cases.items():
            self.assertEqual(encode_name(key), name, key)
            self.assertEqual(decode_name(name), key, name)
            self.assertEqual(decode_name(name.upper()), key, "names are case-insensitive")

    def test_keys_without_a_name_are_refused(self):
        for key in ["", "A" * 30, "z" * 65, "\ud800"]:
            with self.assertRaises(ValueError, msg=repr(key)):
                encode_name(key)
        with self.assertRaises(TypeError):
            encode_name(3)

    def test_names_not_written_by_the_adapter_are_not_ours(self):
        for name in ["id", "user-name", "x-zz", "x-61", "x-ff", "x-4", "xa-2", "", "-x", "x" * 65]:
            self.assertIsNone(decode_name(name), name)


class ValueEncodingTest(unittest.TestCase):
    def test_values_round_trip_with_their_type_as_printable_ascii(self):
        app = flask.Flask(__name__)
        with app.app_context():
            for key, value in TYPED.items():
                text = encode_value(value)
                self.assertRegex(text, r"\A[\x20-\x7e]+\Z", key)
                self.assertEqual(text, text.strip(), key)
                back = decode_value(text)
                self.assertEqual(back, value, key)
                self.assertIs(type(back), type(value), key)

    def test_encoding_is_flask_tagged_json(self):
        self.assertEqual(encode_value((1, 2)), '{" t":[1,2]}')
        self.assertEqual(encode_value("\u00e9"), '"\\u00e9"')
        self.assertEqual(encode_value("a\x7fb"), '"a\\u007fb"')
        self.assertEqual(encode_value({"b": 1, "a": [True, None]}), '{"a":[true,null],"b":1}')

    def test_foreign_values_are_plain_strings(self):
        self.assertEqual(decode_value("alice"), "alice")
        self.assertEqual(decode_value('{" u":"zz"}'), '{" u":"zz"}')
        self.assertEqual(decode_value("3"), 3)


class SessionInterfaceTest(unittest.TestCase):
    def setUp(self):
        self.app = make_app()
        self.client = self.app.test_client()
        self.proxy = FakeProxy(self.client)

    def test_no_session_and_reading_sends_nothing(self):
        response = self.proxy.request("GET", "/read")
        self.assertEqual(response.json["sid"], None)
        self.assertTrue(response.json["new"])
        self.assertEqual(session_headers(response), {})
        self.assertNotIn("Set-Cookie", response.headers)

    def test_a_write_sets_one_attribute_and_no_cookie(self):
        response = self.proxy.request("POST", "/set/user/alice")
        self.assertEqual(session_headers(response), {"x-session-set-user": '"alice"'})
        self.assertNotIn("Set-Cookie", response.headers)
        response = self.proxy.request("GET", "/read")
        self.assertEqual(response.json["user"], "alice")
        self.assertEqual(response.json["sid"], "s1")
        self.assertFalse(response.json["new"])
        self.assertEqual(session_headers(response), {}, "a read-only request sends nothing")
        self.assertIn("Cookie", response.headers.get("Vary", ""))

    def test_only_changed_keys_are_sent(self):
        self.proxy.request("POST", "/set/user/alice")
        self.proxy.request("POST", "/set/theme/dark")
        response = self.proxy.request("POST", "/set/user/alice")
        self.assertEqual(session_headers(response), {}, "same value: nothing to send")
        response = self.proxy.request("POST", "/set/theme/light")
        self.assertEqual(session_headers(response), {"x-session-set-theme": '"light"'})

    def test_in_place_changes_are_saved_without_modified(self):
        self.proxy.request("POST", "/cart/apple")
        response = self.proxy.request("POST", "/cart/pear")
        self.assertFalse(response.json["modified"])
        self.assertEqual(session_headers(response), {"x-session-set-cart": '["pear"]'})
        self.proxy.request("POST", "/cart/plum")
        self.assertEqual(self.proxy.request("GET", "/read").json["cart"], ["pear", "plum"])

    def test_delete_sends_remove(self):
        self.proxy.request("POST", "/set/user/alice")
        self.proxy.request("POST", "/set/theme/dark")
        response = self.proxy.request("POST", "/del/theme")
        self.assertEqual(session_headers(response), {"x-session-remove": "theme"})
        self.assertEqual(self.proxy.attributes, {"user": '"alice"'})

    def test_rotate_keeps_data_and_hides_the_old_id(self):
        self.proxy.request("POST", "/set/cart/x")
        response = self.proxy.request("POST", "/login/bob")
        self.assertEqual(
            session_headers(response),
            {"x-session-rotate": "true", "x-session-set-user": '"bob"'},
        )
        self.assertIsNone(response.json["sid"], "the new id is unknown until the proxy answers")
        self.assertEqual(self.proxy.sid, "s2")
        read = self.proxy.request("GET", "/read").json
        self.assertEqual((read["user"], read["cart"], read["sid"]), ("bob", "x", "s2"))

    def test_rotate_without_a_session_sends_nothing(self):
        response = self.proxy.request("POST", "/rotate")
        self.assertEqual(session_headers(response), {})
        self.assertTrue(response.json["rotated"])

    def test_clear_of_a_live_session_invalidates(self):
        self.proxy.request("POST", "/set/user/alice")
        response = self.proxy.request("POST", "/logout")
        self.assertEqual(session_headers(response), {"x-session-invalidate": "true"})
        self.assertIsNone(self.proxy.sid)

    def test_clear_then_write_rotates_removes_and_sets(self):
        self.proxy.request("POST", "/set/user/alice")
        self.proxy.request("POST", "/cart/apple")
        response = self.proxy.request("POST", "/logout?say=bye")
        headers = session_headers(response)
        self.assertEqual(headers["x-session-rotate"], "true")
        self.assertEqual(sorted(headers["x-session-remove"].split(", ")), ["cart", "user"])
        self.assertIn("x-session-set-x-5fflashes", headers)
        self.assertNotIn("x-session-invalidate", headers)
        self.assertEqual(self.proxy.request("GET", "/flashes").json, ["bye"])
        self.assertEqual(self.proxy.attributes, {}, "flashes consumed")

    def test_clear_without_a_session_is_nothing(self):
        response = self.proxy.request("POST", "/logout")
        self.assertEqual(session_headers(response), {})

    def test_flash_survives_to_the_next_request(self):
        response = self.proxy.request("POST", "/flash/hello")
        self.assertEqual(list(session_headers(response)), ["x-session-set-x-5fflashes"])
        response = self.proxy.request("GET", "/flashes")
        self.assertEqual(response.json, ["hello"])
        self.assertEqual(session_headers(response), {"x-session-remove": "x-5fflashes"})

    def test_typed_values_round_trip(self):
        self.proxy.request("POST", "/types")
        for name, value in self.proxy.attributes.items():
            self.assertRegex(value, r"\A[\x20-\x7e]+\Z", name)
        self.assertIn("xuser-49d", self.proxy.attributes)
        response = self.proxy.request("GET", "/types")
        self.assertEqual(response.json, {key: repr(value) for key, value in TYPED.items()})
        self.assertEqual(session_headers(response), {})

    def test_foreign_attributes_are_left_alone(self):
        self.proxy.sid = "s0"
        self.proxy.attributes = {"user": "alice", "user-name": "Alice A", "x-zz": "?"}
        response = self.proxy.request("GET", "/read")
        self.assertEqual(response.json["user"], "alice")
        self.assertEqual(response.json["keys"], ["user"])
        self.assertEqual(session_headers(response), {}, "an undecodable value is not rewritten")
        response = self.proxy.request("POST", "/set/user/bob")
        self.assertEqual(session_headers(response), {"x-session-set-user": '"bob"'})
        self.assertEqual(self.proxy.attributes["user-name"], "Alice A")

    def test_concurrent_requests_send_only_their_own_key(self):
        self.proxy.request("POST", "/set/user/alice")
        headers = self.proxy.headers()
        one = self.client.post("/set/a/1", headers=headers)
        two = self.client.post("/set/b/2", headers=headers)
        self.assertEqual(session_headers(one), {"x-session-set-a": '"1"'})
        self.assertEqual(session_headers(two), {"x-session-set-b": '"2"'})

    def test_the_header_prefix_is_configurable(self):
        self.app.session_interface = stickless_session.SessionInterface(prefix="X-Sess-")
        response = self.client.post("/cart/x", headers={"X-Sess-Id": "q", "X-Sess-Cart": '["a"]'})
        self.assertEqual(response.headers.get("X-Sess-Set-cart"), '["a","x"]')

    def test_a_key_without_a_name_fails_where_it_is_set(self):
        self.app.testing = False
        response = self.client.post("/set/" + "K" * 30 + "/v")
        self.assertEqual(response.status_code, 500)
        self.assertEqual(session_headers(response), {})

    def test_an_unserializable_value_fails_loudly(self):
        with self.assertLogs(self.app.logger, "ERROR") as logs:
            response = self.client.post("/bad-value")
        self.assertEqual(response.status_code, 500)
        self.assertEqual(session_headers(response), {})
        self.assertIn("cannot be saved", "\n".join(logs.output))

    def test_a_change_while_streaming_is_logged_as_lost(self):
        with self.assertLogs(self.app.logger, "ERROR") as logs:
            response = self.proxy.request("GET", "/stream")
            self.assertEqual(response.get_data(as_text=True), "one two")
            response.close()
        self.assertEqual(self.proxy.attributes, {"before": '"sent"'})
        output = "\n".join(logs.output)
        self.assertIn("LOST", output)
        self.assertIn("late", output)

    def test_a_change_in_teardown_is_logged_as_lost(self):
        with self.assertLogs(self.app.logger, "ERROR") as logs:
            response = self.proxy.request("GET", "/teardown")
            response.close()
        self.assertEqual(self.proxy.attributes, {})
        self.assertIn("torn", "\n".join(logs.output))

    def test_no_log_when_nothing_changes_after_the_headers(self):
        with self.assertNoLogs(self.app.logger, "ERROR"):
            response = self.proxy.request("POST", "/set/user/alice")
            response.close()

    def test_rotate_outside_the_adapter_is_a_no_op(self):
        app = flask.Flask(__name__)
        app.secret_key = "k"
        with app.test_request_context("/"):
            self.assertFalse(stickless_session.rotate())
            self.assertIsNone(stickless_session.session_id())


if __name__ == "__main__":
    unittest.main()
