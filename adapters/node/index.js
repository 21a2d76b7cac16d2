'use strict';

// stickless-session: express-session's `req.session` API on the stickless header protocol.
//
// The proxy (stickless) keeps the session in its store and sends it with each request as
// `X-Session-Id` and one `X-Session-<name>` header per attribute. This middleware turns those
// headers into `req.session`, and when the response headers go out it compares the session
// with what it was given and answers with the difference only (delta writes):
// `X-Session-Set-<name>`, `X-Session-Remove`, `X-Session-Rotate`, `X-Session-Invalidate`.
// A request that changes nothing sends none of them.
//
// Layout of this file:
//   1. names    application keys <-> attribute names (the scheme shared by all adapters)
//   2. values   JSON, made a valid header value
//   3. Session  the object behind req.session, with express-session's methods
//   4. middleware  reads the request's session, writes the delta when headers are sent
//
// Safety: `X-Session-*` request headers are trusted as the proxy's. The proxy strips any a
// client sends, so the application must be reachable only through the proxy.

const DEFAULT_PREFIX = 'X-Session-';

// Options of express-session's session(options) that this middleware accepts and ignores:
// the proxy issues, signs, stores and expires the session, and sets its cookie.
const EXPRESS_SESSION_OPTIONS = [
  'cookie', 'genid', 'name', 'proxy', 'resave', 'rolling', 'saveUninitialized', 'secret',
  'store', 'unset',
];

// ---------------------------------------------------------------------------------------------
// 1. Names

const LITERAL = /^[a-z0-9]{1,64}$/;

function isPlainByte(byte) {
  return (byte >= 0x61 && byte <= 0x7a) || (byte >= 0x30 && byte <= 0x39);
}

/**
 * The attribute name for an application key: the key itself when it is 1 to 64 of [a-z0-9]
 * (and not the reserved `id`), otherwise "x" followed by its UTF-8 bytes, [a-z0-9] kept and
 * every other byte written as "-" and two lowercase hex digits. Throws for a key that cannot
 * be named (empty, or longer than 64 characters once escaped).
 */
function encodeName(key) {
  if (LITERAL.test(key) && key !== 'id') return key;
  const bytes = Buffer.from(String(key), 'utf8');
  if (bytes.length === 0) {
    throw new RangeError('stickless-session: the empty session key cannot be stored');
  }
  let name = 'x';
  let escaped = false;
  bytes.forEach((byte, i) => {
    // A key that needed no escape at all ("id", or too long to be literal) escapes its first
    // byte, so that the name has a "-" and cannot be read as a literal name.
    const escapeAnyway = i === 0 && !/[^a-z0-9]/.test(key);
    if (isPlainByte(byte) && !escapeAnyway) {
      name += String.fromCharCode(byte);
    } else {
      name += '-' + byte.toString(16).padStart(2, '0');
      escaped = true;
    }
  });
  if (!escaped || name.length > 64) {
    throw new RangeError(
      `stickless-session: session key ${JSON.stringify(key)} is too long: its attribute name ` +
        `"${name.slice(0, 80)}…" has ${name.length} characters, at most 64 are allowed`
    );
  }
  return name;
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The application key an attribute name stands for, or null when the name is not one this
 * adapter writes (another backend's attribute: left alone).
 */
function decodeName(name) {
  if (!name.includes('-')) return LITERAL.test(name) && name !== 'id' ? name : null;
  if (name[0] !== 'x') return null;
  const bytes = [];
  for (let i = 1; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (isPlainByte(c)) {
      bytes.push(c);
    } else if (c === 0x2d && /^[0-9a-f]{2}$/.test(name.slice(i + 1, i + 3))) {
      bytes.push(parseInt(name.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      return null;
    }
  }
  let key;
  try {
    key = UTF8.decode(Uint8Array.from(bytes));
  } catch {
    return null;
  }
  // Only the one spelling encodeName produces is ours (x-61 for "a" is not).
  try {
    return encodeName(key) === name ? key : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// 2. Values

/**
 * A value as a header value: its JSON, with every character outside printable ASCII written
 * as \uXXXX (JSON already escapes control characters). Undefined for what JSON drops
 * (undefined, functions, symbols): such a key is not stored, as with express-session.
 */
function encodeValue(value) {
  const json = JSON.stringify(value);
  if (json === undefined) return undefined;
  return json.replace(
    /[\u007f-\uffff]/g,
    (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0')
  );
}

/**
 * A header value back to a value. What is not JSON (an attribute another backend wrote, such
 * as `alice`) reads as the plain string; it is rewritten, as JSON, only if the application
 * changes it.
 */
function decodeValue(text) {
  try {
    return JSON.parse(text);
  } catch {
    // Node hands header bytes over as latin1; a non-ASCII value from another backend is
    // most likely UTF-8.
    const bytes = Buffer.from(text, 'latin1');
    try {
      return UTF8.decode(bytes);
    } catch {
      return text;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Session

const STATE = Symbol('stickless-session.state');

/**
 * The object behind `req.session`: the session's keys are its own enumerable properties; its
 * methods (on the prototype), `id` and `cookie` are not keys.
 */
class Session {
  constructor(state, data) {
    Object.defineProperty(this, STATE, { value: state });
    // express-session's cookie object, for code that reads or sets `cookie.maxAge`; the
    // proxy owns the real cookie, so nothing set here has an effect. Not a session key.
    Object.defineProperty(this, 'cookie', {
      value: new Cookie(),
      writable: true,
      enumerable: false,
      configurable: true,
    });
    if (data) {
      for (const [key, value] of data) {
        if (!(key in this)) this[key] = value;
      }
    }
  }

  /** The proxy's session id; undefined while it is not known yet (new or rotated session). */
  get id() {
    return this[STATE].id();
  }

  /** Nothing to do: the proxy extends the session's idle timeout on each request. */
  touch() {
    return this;
  }

  resetMaxAge() {
    return this;
  }

  /**
   * Marks what reload() goes back to. The changes themselves are sent when the response
   * headers go out; after that, a change can no longer be sent and the callback gets an error.
   */
  save(callback) {
    this[STATE].save(this, callback);
    return this;
  }

  /** Back to the session as the proxy sent it (or as last saved in this request). */
  reload(callback) {
    this[STATE].reload(this, callback);
    return this;
  }

  /**
   * express-session's regenerate: a new session id and a NEW EMPTY session in req.session
   * (sent as X-Session-Rotate plus the removal of the old keys).
   */
  regenerate(callback) {
    this[STATE].regenerate(this, callback);
    return this;
  }

  /** Ends the session (X-Session-Invalidate); req.session is undefined afterwards. */
  destroy(callback) {
    this[STATE].destroy(this, callback);
    return this;
  }
}

/**
 * Stands in for express-session's Cookie. The session cookie's settings belong to the proxy
 * (`session.cookie` and the timeouts in proxy.yaml); values set here are kept for the request
 * and otherwise ignored.
 */
class Cookie {
  constructor() {
    this.path = '/';
    this.httpOnly = true;
    this.secure = undefined;
    this.domain = undefined;
    this.sameSite = undefined;
    this.expires = null;
    this.originalMaxAge = null;
    this.maxAge = null;
  }

  serialize() {
    return '';
  }

  toJSON() {
    return { ...this };
  }
}

// ---------------------------------------------------------------------------------------------
// 4. Middleware

/** Calls `callback` later, as express-session's stores do. */
function later(callback, error) {
  if (typeof callback === 'function') setImmediate(() => callback(error || null));
}

/** Marks a key whose value cannot be encoded (a BigInt, a cycle): neither set nor removed. */
const UNENCODABLE = Symbol('stickless-session.unencodable');

/** The session's keys and their encodings; `complain`: log a value that cannot be encoded. */
function contents(session, complain = false) {
  const out = new Map();
  if (session === null || typeof session !== 'object') return out;
  for (const key of Object.keys(session)) {
    let encoded;
    try {
      encoded = encodeValue(session[key]);
    } catch (error) {
      if (complain) {
        log(
          `session key ${JSON.stringify(key)} cannot be saved as JSON (${error.message}); ` +
            'its stored value is left as it was'
        );
      }
      encoded = UNENCODABLE;
    }
    if (encoded !== undefined) out.set(key, encoded);
  }
  return out;
}

function log(message) {
  console.error(`stickless-session: ERROR: ${message}`);
}

/**
 * The middleware factory: `app.use(require('stickless-session')())` in place of
 * `app.use(session({...}))`. express-session's options are accepted and ignored;
 * `headerPrefix` must match the proxy's `session.header_prefix` when that is not the default.
 */
function sticklessSession(options = {}) {
  const prefix = String(options.headerPrefix || DEFAULT_PREFIX);
  const requestPrefix = prefix.toLowerCase();
  const idHeader = requestPrefix + 'id';
  const destroyOnUnset = options.unset === 'destroy';
  const ignored = Object.keys(options).filter((k) => EXPRESS_SESSION_OPTIONS.includes(k));
  if (ignored.length > 0) {
    console.warn(
      `stickless-session: ignoring express-session options (${ignored.join(', ')}${
        destroyOnUnset ? '; unset: "destroy" is honoured' : ''
      }): the proxy issues, stores and expires the session and sets its cookie`
    );
  }

  return function sticklessSessionMiddleware(req, res, next) {
    if (req.session) return next();

    // The session as the proxy sent it.
    const origId = typeof req.headers[idHeader] === 'string' ? req.headers[idHeader] : undefined;
    const given = new Map(); // key -> value, decoded
    if (origId !== undefined) {
      for (const [header, text] of Object.entries(req.headers)) {
        if (!header.startsWith(requestPrefix) || header === idHeader) continue;
        const key = decodeName(header.slice(requestPrefix.length));
        if (key !== null && typeof text === 'string') given.set(key, decodeValue(text));
      }
    }

    const state = {
      rotated: false,
      destroyed: false,
      // The encodings reload() goes back to: the proxy's, or the last save()'s.
      savePoint: null,
      // Set once the headers went out: what was sent.
      committed: null,
      // The last loss logged, so that one loss is logged once.
      reported: null,
      id: () => (state.rotated || state.destroyed ? undefined : origId),

      save(session, callback) {
        if (state.committed) {
          const lost = state.lostSince();
          if (lost) {
            const error = headersSentError(req, lost);
            state.report(error);
            return later(callback, error);
          }
        }
        state.savePoint = contents(session);
        later(callback);
      },

      reload(session, callback) {
        if (state.rotated || state.destroyed) {
          return later(callback, new Error('failed to load session'));
        }
        const data = new Map();
        for (const [key, encoded] of state.savePoint) {
          if (encoded !== UNENCODABLE) data.set(key, JSON.parse(encoded));
        }
        setImmediate(() => {
          req.session = new Session(state, data);
          if (typeof callback === 'function') callback(null);
        });
      },

      regenerate(session, callback) {
        if (state.committed) {
          const error = headersSentError(req, 'regenerate');
          state.report(error);
          return later(callback, error);
        }
        state.rotated = origId !== undefined || state.rotated;
        state.savePoint = new Map();
        req.session = new Session(state);
        req.sessionID = state.id();
        later(callback);
      },

      destroy(session, callback) {
        if (state.committed) {
          const error = headersSentError(req, 'destroy');
          state.report(error);
          return later(callback, error);
        }
        state.destroyed = true;
        state.savePoint = new Map();
        delete req.session;
        req.sessionID = undefined;
        later(callback);
      },

      /** What the response says to the proxy, from the current state. */
      delta() {
        let session = req.session;
        let destroyed = state.destroyed;
        if (session == null && destroyOnUnset) destroyed = true;
        if (session == null && !destroyed) return null; // `req.session = null`: kept, as in express-session
        const target = contents(session, !state.committed);
        if (destroyed && target.size === 0) {
          return { invalidate: origId !== undefined, rotate: false, set: [], remove: [] };
        }
        const set = [];
        const remove = [];
        for (const [key, encoded] of target) {
          if (encoded !== UNENCODABLE && snapshot.get(key) !== encoded) set.push([key, encoded]);
        }
        for (const key of snapshot.keys()) {
          if (!target.has(key)) remove.push(key);
        }
        // Destroyed, then given new values (a new req.session object): a new id holding only
        // the new values, so that nothing is lost.
        const rotate = origId !== undefined && (state.rotated || destroyed);
        return { invalidate: false, rotate, set, remove };
      },

      /** Describes what changed since the headers went out, or null. */
      lostSince() {
        return difference(state.committed, state.delta() || NO_CHANGE);
      },

      report(error) {
        if (state.reported === error.message) return;
        state.reported = error.message;
        log(error.message);
      },
    };

    const session = new Session(state, given);
    // What the proxy holds, key -> encoding: a key whose encoding is unchanged is not sent.
    // (Keys the session object cannot hold, such as "save", are not the application's.)
    const snapshot = contents(session);
    state.savePoint = snapshot;
    req.session = session;
    req.sessionID = origId;

    const writeHead = res.writeHead;
    res.writeHead = function writeHeadWithSession(...args) {
      if (!state.committed) {
        state.committed = state.delta() || NO_CHANGE;
        writeDelta(res, prefix, state.committed);
      }
      return writeHead.apply(this, args);
    };

    // A change after the headers went out cannot reach the proxy: say so, loudly, when the
    // response ends (before its last bytes leave), and once more if the session changes
    // between then and the end of the write.
    const end = res.end;
    res.end = function endWithSession(...args) {
      if (state.committed) {
        const lost = state.lostSince();
        if (lost) state.report(headersSentError(req, lost));
      }
      return end.apply(this, args);
    };
    res.once('finish', () => {
      if (!state.committed) return;
      const lost = state.lostSince();
      if (lost) state.report(headersSentError(req, lost));
    });

    next();
  };
}

/** Sets the response headers for a delta; bad keys are refused in the log, the rest sent. */
function writeDelta(res, prefix, delta) {
  if (delta.invalidate) {
    res.setHeader(prefix + 'Invalidate', 'true');
    return;
  }
  if (delta.rotate) res.setHeader(prefix + 'Rotate', 'true');
  const names = (keys) =>
    keys.flatMap((key) => {
      try {
        return [encodeName(key)];
      } catch (error) {
        log(`${error.message}; it was not saved`);
        return [];
      }
    });
  const removed = names(delta.remove);
  if (removed.length > 0) res.setHeader(prefix + 'Remove', removed.join(', '));
  for (const [key, encoded] of delta.set) {
    for (const name of names([key])) res.setHeader(prefix + 'Set-' + name, encoded);
  }
}

const NO_CHANGE = Object.freeze({ invalidate: false, rotate: false, set: [], remove: [] });

/** What `now` asks of the proxy beyond what `sent` told it, in words; null when nothing. */
function difference(sent, now) {
  if (now.invalidate) return sent.invalidate ? null : 'destroy';
  const parts = [];
  if (now.rotate && !sent.rotate) parts.push('regenerate');
  const sentSet = new Map(sent.set);
  const changed = now.set.filter(([key, encoded]) => sentSet.get(key) !== encoded);
  if (changed.length) parts.push('set ' + changed.map(([key]) => key).join(', '));
  const deleted = now.remove.filter((key) => !sent.remove.includes(key));
  if (deleted.length) parts.push('delete ' + deleted.join(', '));
  // A key sent but now back to the proxy's value is a change too.
  const nowSet = new Map(now.set);
  const reverted = sent.set.filter(([key]) => !nowSet.has(key) && !now.remove.includes(key));
  if (reverted.length) parts.push('revert ' + reverted.map(([key]) => key).join(', '));
  const restored = sent.remove.filter((key) => !now.remove.includes(key) && !nowSet.has(key));
  if (restored.length) parts.push('restore ' + restored.join(', '));
  return parts.length ? parts.join('; ') : null;
}

function headersSentError(req, what) {
  const error = new Error(
    `session change after the response headers were sent is LOST (${what}) ` +
      `on ${req.method} ${req.originalUrl || req.url}: change req.session before the ` +
      'response starts (res.write, res.send, res.end, res.redirect)'
  );
  error.code = 'ERR_STICKLESS_HEADERS_SENT';
  return error;
}

module.exports = sticklessSession;
module.exports.Session = Session;
module.exports.encodeName = encodeName;
module.exports.decodeName = decodeName;
module.exports.encodeValue = encodeValue;
module.exports.decodeValue = decodeValue;
