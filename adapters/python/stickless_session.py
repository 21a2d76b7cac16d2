"""Flask sessions kept by the stickless proxy instead of a signed cookie.

One line after the application is created::

    import stickless_session
    app.session_interface = stickless_session.SessionInterface()

The application keeps using ``flask.session`` unchanged (``session[key]`` read, assign and
``del``, ``session.get``, ``session.clear()``, ``session.modified``, ``flash()``); no
``SECRET_KEY`` is needed and Flask's own ``session`` cookie is never issued. The proxy injects
the session as ``X-Session-Id`` and one ``X-Session-<name>`` header per attribute; this module
turns them into the session at the start of a request, and at the end writes back only what
the request changed, as response headers the proxy applies and strips:

- a new or changed key: ``X-Session-Set-<name>: <value>`` (changes made in place to a list or
  dict read from the session count, without ``session.modified``: encodings are compared);
- a deleted key: ``X-Session-Remove: <name>, ...``;
- ``rotate()``: ``X-Session-Rotate: true`` (new id, data kept), what ``session_regenerate_id``
  is in PHP;
- ``session.clear()`` of a live session: ``X-Session-Invalidate: true`` when the session is left
  empty, or ``Rotate`` + ``Remove`` of the old keys + ``Set`` of the new ones when the request
  writes to it again (a logout followed by ``flash()``);
- a request that changes nothing sends no ``X-Session-*`` header at all.

Names: a key matching ``[a-z0-9]{1,64}`` other than ``id`` is the attribute name itself;
any other key is ``x`` followed by its UTF-8 bytes, ``[a-z0-9]`` kept and every other byte
written ``-hh`` (``_flashes`` -> ``x-5fflashes``, ``userId`` -> ``xuser-49d``, ``id`` ->
``x-69d``). Values: Flask's tagged JSON (what its cookie session stores), dumped compact and
ASCII-only. See README.md beside this file.

Trust: the ``X-Session-*`` request headers are believed as coming from the proxy, which strips
any a client sends. The application must be reachable only through the proxy.
"""

import logging
import re

from flask import json as _flask_json
from flask import session as _current_session
from flask.json.tag import TaggedJSONSerializer
from flask.sessions import SecureCookieSession
from flask.sessions import SessionInterface as _FlaskSessionInterface

__all__ = [
    "SessionInterface",
    "Session",
    "rotate",
    "session_id",
    "encode_name",
    "decode_name",
    "encode_value",
    "decode_value",
]

#: Used only when no application is at hand (an error before any app is known).
log = logging.getLogger("stickless_session")

_serializer = TaggedJSONSerializer()
_LITERAL = re.compile(r"[a-z0-9]{1,64}")
_ATTRIBUTE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_HEX = re.compile(r"[0-9a-f]{2}")
_NOT_ASCII = re.compile(r"[^\x00-\x7e]")
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")
_MAX_NAME = 64


# ---------------------------------------------------------------------------------------------
# Encoding of names and values (the same name scheme as the PHP, Node and Java adapters)


def _kept(byte):
    return 0x61 <= byte <= 0x7A or 0x30 <= byte <= 0x39


def encode_name(key):
    """The attribute name a session key is stored under; ValueError/TypeError if it has none."""
    if not isinstance(key, str):
        raise TypeError(
            f"stickless_session: session keys must be strings, not {type(key).__name__}"
        )
    if key != "id" and _LITERAL.fullmatch(key):
        return key
    if not key:
        raise ValueError("stickless_session: the empty string cannot be a session key")
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"stickless_session: session key {key!r} is not valid UTF-8") from e
    parts = [chr(b) if _kept(b) else f"-{b:02x}" for b in raw]
    if all(len(p) == 1 for p in parts):
        parts[0] = f"-{raw[0]:02x}"
    name = "x" + "".join(parts)
    if len(name) > _MAX_NAME:
        raise ValueError(
            f"stickless_session: session key {key[:40]!r}... is too long: its attribute name"
            f" would have {len(name)} characters, at most {_MAX_NAME} are allowed"
        )
    return name


def decode_name(name):
    """The session key an attribute name stands for, or None when the name is not one this
    adapter writes (such attributes are left alone)."""
    name = name.lower()
    if name == "id" or not _ATTRIBUTE.fullmatch(name):
        return None
    if "-" not in name:
        return name
    if not name.startswith("x"):
        return None
    raw = bytearray()
    i = 1
    while i < len(name):
        if name[i] == "-":
            digits = name[i + 1 : i + 3]
            if not _HEX.fullmatch(digits):
                return None
            raw.append(int(digits, 16))
            i += 3
        else:
            raw.append(ord(name[i]))
            i += 1
    try:
        key = raw.decode("utf-8")
        canonical = encode_name(key)
    except (UnicodeDecodeError, ValueError, TypeError):
        return None
    return key if canonical == name else None


def _escape_char(match):
    code = ord(match.group())
    if code > 0xFFFF:
        code -= 0x10000
        return "\\u%04x\\u%04x" % (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF))
    return "\\u%04x" % code


def encode_value(value):
    """Flask's tagged JSON of ``value``, compact and printable ASCII (a valid header value).

    Raises TypeError for what Flask's session cannot serialize either (a set, an object)."""
    text = _flask_json.dumps(
        _serializer.tag(value), separators=(",", ":"), ensure_ascii=True, sort_keys=True
    )
    # ensure_ascii leaves DEL (0x7f) and a custom JSON provider may ignore it: escape whatever
    # is not ASCII (it can only stand inside a JSON string, where \\uXXXX means the same).
    text = _NOT_ASCII.sub(_escape_char, text)
    if not _HEADER_VALUE.fullmatch(text) or text != text.strip(" "):
        raise ValueError(
            "stickless_session: the application's JSON provider wrote control characters"
        )
    return text


def decode_value(text):
    """The value an attribute holds; a value that is not tagged JSON (set by another backend,
    e.g. ``alice``) is returned as the plain string."""
    try:
        return _serializer.loads(text)
    except Exception:  # noqa: BLE001 - anything not ours is a plain string
        return text


# ---------------------------------------------------------------------------------------------
# The session object


class Session(SecureCookieSession):
    """``flask.session`` under this adapter: a dict that tracks ``modified`` and ``accessed``
    like Flask's own, plus ``sid``, ``rotate()`` and what the proxy sent."""

    def __init__(self, initial=None, sid=None, raw=None):
        super().__init__(initial)
        #: The proxy's session id (``X-Session-Id``). None for a session this request creates,
        #: and after ``rotate()`` or ``clear()``: the new id is known only once the proxy has
        #: answered, i.e. from the next request on.
        self.sid = sid
        self.new = sid is None
        #: The id the request arrived with (kept when ``sid`` changes).
        self._incoming_sid = sid
        #: Attribute name -> the value text the proxy injected (the delta's baseline).
        self._raw = dict(raw or {})
        self._rotate = False
        self._cleared = False

    def __setitem__(self, key, value):
        encode_name(key)  # a key that cannot be stored fails here, where the app set it
        super().__setitem__(key, value)

    def clear(self):
        """Empties the session. Of a live session: destroyed at the end of the request, or
        given a new id when the request writes new values to it (nothing is lost)."""
        if self._incoming_sid is not None:
            self._cleared = True
            self.sid = None
        super().clear()

    def rotate(self):
        """A new session id at the end of this request, data kept (session fixation
        protection after a login)."""
        if self._incoming_sid is not None:
            self._rotate = True
            self.sid = None

    def _state(self):
        """Attribute name -> encoded value for the whole session now."""
        return {encode_name(key): encode_value(value) for key, value in dict.items(self)}

    def _changes(self, state):
        """(invalidate, rotate, removed names, {name: value to set}) against the baseline."""
        live = self._incoming_sid is not None
        if self._cleared and not state:
            return True, False, [], {}
        removed = [name for name in self._raw if name not in state]
        changed = {}
        for name, text in state.items():
            old = self._raw.get(name)
            if old is not None and (old == text or encode_value(decode_value(old)) == text):
                continue
            changed[name] = text
        return False, live and (self._rotate or self._cleared), removed, changed


# ---------------------------------------------------------------------------------------------
# The interface Flask calls


class SessionInterface(_FlaskSessionInterface):
    """Flask's session interface for an application behind stickless.

    ``prefix`` is the proxy's ``session.header_prefix`` (default ``X-Session-``)."""

    session_class = Session

    def __init__(self, prefix="X-Session-"):
        self.prefix = prefix
        self._lower_prefix = prefix.lower()

    def open_session(self, app, request):
        sid = None
        data = {}
        raw = {}
        for header, value in request.headers.items():
            lower = header.lower()
            if not lower.startswith(self._lower_prefix):
                continue
            name = lower[len(self._lower_prefix) :]
            if name == "id":
                sid = value
                continue
            key = decode_name(name)
            if key is None:
                continue  # not an attribute this adapter wrote: never touched
            data[key] = decode_value(value)
            raw[name] = value
        return self.session_class(data, sid=sid, raw=raw)

    def save_session(self, app, session, response):
        if not isinstance(session, Session):
            return
        if session.accessed:
            response.vary.add("Cookie")
        try:
            state = session._state()
            invalidate, rotate_id, removed, changed = session._changes(state)
        except (TypeError, ValueError) as e:
            app.logger.error(
                "stickless_session: the session cannot be saved, no change of this request"
                " is kept: %s",
                e,
            )
            raise
        self._write(response, invalidate, rotate_id, removed, changed)
        sent = (state, session._cleared, session._rotate)
        response.call_on_close(lambda: self._check_unsent(app, session, sent))

    def _write(self, response, invalidate, rotate_id, removed, changed):
        headers = response.headers
        if invalidate:
            headers[self.prefix + "Invalidate"] = "true"
            return
        if rotate_id:
            headers[self.prefix + "Rotate"] = "true"
        if removed:
            headers[self.prefix + "Remove"] = ", ".join(removed)
        for name, text in changed.items():
            headers[self.prefix + "Set-" + name] = text

    def _check_unsent(self, app, session, sent):
        """After the body went out (a streamed response): a change made since the headers were
        written cannot reach the proxy any more. Never silently: the application's log."""
        try:
            now = (session._state(), session._cleared, session._rotate)
        except (TypeError, ValueError) as e:
            now = (str(e), session._cleared, session._rotate)
        if now == sent:
            return
        state, sent_cleared, sent_rotate = sent
        lost = []
        if isinstance(now[0], dict):
            lost = sorted(
                set(name for name in now[0] if state.get(name) != now[0][name])
                | set(name for name in state if name not in now[0])
            )
        app.logger.error(
            "stickless_session: the session was changed after the response headers were"
            " sent (a streamed response?); these changes are LOST, the proxy never sees"
            " them: attributes %s%s%s. Change the session before returning the response.",
            ", ".join(lost) or "(none)",
            "; clear()" if now[1] and not sent_cleared else "",
            "; rotate()" if now[2] and not sent_rotate else "",
        )


# ---------------------------------------------------------------------------------------------
# Module functions for what Flask's session API has no call for


def rotate():
    """Gives the current session a new id at the end of this request, keeping its data.
    Returns False (and does nothing) when the current session is not this adapter's."""
    session = _current_session._get_current_object()
    if not isinstance(session, Session):
        return False
    session.rotate()
    return True


def session_id():
    """The proxy's id of the current session, or None (see ``Session.sid``)."""
    session = _current_session._get_current_object()
    return session.sid if isinstance(session, Session) else None
