'use strict';

// The middleware over real HTTP (node's own server and client): the request's X-Session-*
// headers in, the response's delta out.

const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const sticklessSession = require('..');

/**
 * Serves one request with the middleware and `route`, from a client that sends `session`
 * (`{ id, attributes: { name: value } }`, as the proxy would); resolves with the response's
 * status, its X-Session-* headers (lower-case), its body, and what the app logged.
 */
async function exchange(route, session, options) {
  const middleware = sticklessSession(options);
  const logged = [];
  const server = http.createServer((req, res) => {
    middleware(req, res, () => {
      Promise.resolve(route(req, res)).catch((error) => {
        res.statusCode = 500;
        res.end(String(error.stack));
      });
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const headers = {};
  if (session) {
    headers['X-Session-Id'] = session.id;
    for (const [name, value] of Object.entries(session.attributes || {})) {
      headers[`X-Session-${name}`] = value;
    }
  }
  const error = console.error;
  console.error = (...args) => logged.push(args.join(' '));
  try {
    const response = await new Promise((resolve, reject) => {
      const request = http.request(
        { host: '127.0.0.1', port: server.address().port, path: '/', headers },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (chunk) => (body += chunk));
          res.on('end', () => resolve({ res, body }));
        }
      );
      request.on('error', reject);
      request.end();
    });
    // The response's 'finish' on the server side may come after the client has it all.
    await new Promise((resolve) => setImmediate(resolve));
    const sessionHeaders = {};
    for (const [name, value] of Object.entries(response.res.headers)) {
      if (name.startsWith('x-session-')) sessionHeaders[name] = value;
    }
    return {
      status: response.res.statusCode,
      headers: sessionHeaders,
      body: response.body,
      logged,
    };
  } finally {
    console.error = error;
    server.close();
  }
}

const alice = {
  id: 'sess-1',
  attributes: {
    user: '"alice"',
    cart: '{"items":[{"sku":"A-1","qty":2}],"total":19.99}',
    visits: '3',
    admin: 'false',
    'xuser-49d': '7',
  },
};

test('a request without a session gets an empty session and sends nothing', async () => {
  const out = await exchange((req, res) => {
    res.end(JSON.stringify({ id: req.sessionID ?? null, keys: Object.keys(req.session) }));
  });
  assert.equal(out.status, 200);
  assert.deepEqual(JSON.parse(out.body), { id: null, keys: [] });
  assert.deepEqual(out.headers, {});
});

test("the proxy's attributes read back with their types; reading sends nothing", async () => {
  const out = await exchange((req, res) => {
    res.end(
      JSON.stringify({
        id: req.sessionID,
        sessionId: req.session.id,
        session: req.session,
        total: req.session.cart.total + 1,
      })
    );
  }, alice);
  assert.deepEqual(JSON.parse(out.body), {
    id: 'sess-1',
    sessionId: 'sess-1',
    session: {
      user: 'alice',
      cart: { items: [{ sku: 'A-1', qty: 2 }], total: 19.99 },
      visits: 3,
      admin: false,
      userId: 7,
    },
    total: 20.99,
  });
  assert.deepEqual(out.headers, {});
});

test('only changed keys are sent: assigned, changed in place, deleted', async () => {
  const out = await exchange((req, res) => {
    req.session.visits += 1;
    req.session.cart.items.push({ sku: 'B-2', qty: 1 });
    delete req.session.admin;
    req.session.userId = 7; // the same value: not sent
    req.session.lastPage = '/é';
    req.session.gone = undefined; // JSON drops it: nothing to store
    res.end('ok');
  }, alice);
  assert.deepEqual(out.headers, {
    'x-session-set-visits': '4',
    'x-session-set-cart': '{"items":[{"sku":"A-1","qty":2},{"sku":"B-2","qty":1}],"total":19.99}',
    'x-session-set-xlast-50age': '"/\\u00e9"',
    'x-session-remove': 'admin',
  });
});

test('a new session sends its keys and has no id yet', async () => {
  const out = await exchange((req, res) => {
    req.session.user = 'bob';
    req.session.cart = [];
    res.end(String(req.sessionID));
  });
  assert.equal(out.body, 'undefined');
  assert.deepEqual(out.headers, { 'x-session-set-user': '"bob"', 'x-session-set-cart': '[]' });
});

test('regenerate: a new id and a new empty session, as express-session', async () => {
  const out = await exchange(
    (req, res) =>
      new Promise((resolve) => {
        const old = req.session;
        old.regenerate((error) => {
          assert.equal(error, null);
          assert.notEqual(req.session, old);
          assert.deepEqual(Object.keys(req.session), []);
          assert.equal(req.sessionID, undefined);
          assert.equal(req.session.id, undefined);
          req.session.user = 'alice'; // what passport's logIn does after regenerate
          res.end('ok');
          resolve();
        });
      }),
    alice
  );
  assert.deepEqual(out.headers, {
    'x-session-rotate': 'true',
    'x-session-remove': 'cart, visits, admin, xuser-49d',
  });
});

test('regenerate without a session is an empty new session, no rotation', async () => {
  const out = await exchange((req, res) => {
    req.session.draft = 1;
    req.session.regenerate();
    req.session.user = 'carol';
    res.end();
  });
  assert.deepEqual(out.headers, { 'x-session-set-user': '"carol"' });
});

test('destroy invalidates; req.session is undefined afterwards', async () => {
  const out = await exchange(
    (req, res) =>
      new Promise((resolve) => {
        req.session.visits = 99;
        req.session.destroy((error) => {
          assert.equal(error, null);
          assert.equal(req.session, undefined);
          assert.equal(req.sessionID, undefined);
          res.end('bye');
          resolve();
        });
      }),
    alice
  );
  assert.deepEqual(out.headers, { 'x-session-invalidate': 'true' });
});

test('destroy without a session sends nothing', async () => {
  const out = await exchange((req, res) => {
    req.session.destroy();
    res.end();
  });
  assert.deepEqual(out.headers, {});
});

test('destroyed, then a new session object with a flash message: rotate, remove all, set', async () => {
  const out = await exchange((req, res) => {
    req.session.destroy();
    req.session = { flash: 'You are logged out' };
    res.end();
  }, alice);
  assert.deepEqual(out.headers, {
    'x-session-rotate': 'true',
    'x-session-remove': 'user, cart, visits, admin, xuser-49d',
    'x-session-set-flash': '"You are logged out"',
  });
});

test('unset: "destroy" ends a session set to null; by default null keeps it', async () => {
  const drop = (req, res) => {
    req.session = null;
    res.end();
  };
  assert.deepEqual((await exchange(drop, alice)).headers, {});
  const out = await exchange(drop, alice, { unset: 'destroy', secret: 'kept for show' });
  assert.deepEqual(out.headers, { 'x-session-invalidate': 'true' });
});

test("another backend's attributes: plain strings, unknown names untouched", async () => {
  const session = { id: 's', attributes: { user: 'alice', 'user-name': 'Alice A.', role: 'admin' } };
  const read = await exchange((req, res) => res.end(JSON.stringify(req.session)), session);
  assert.deepEqual(JSON.parse(read.body), { user: 'alice', role: 'admin' });
  assert.deepEqual(read.headers, {});
  const write = await exchange((req, res) => {
    req.session.role += '!';
    res.end();
  }, session);
  assert.deepEqual(write.headers, { 'x-session-set-role': '"admin!"' });
});

test('a change after the headers were sent is logged as lost, not sent', async () => {
  const out = await exchange((req, res) => {
    req.session.visits = 4;
    res.write('partial ');
    req.session.late = true;
    req.session.visits = 5;
    res.end('body');
  }, alice);
  assert.deepEqual(out.headers, { 'x-session-set-visits': '4' });
  assert.equal(out.logged.length, 1, out.logged.join('\n'));
  assert.match(out.logged[0], /ERROR.*LOST \(set visits, late\) on GET \//);
});

test('save, regenerate and destroy after the headers were sent fail loudly', async () => {
  const out = await exchange(
    (req, res) =>
      new Promise((resolve) => {
        res.end('done');
        req.session.save((error) => {
          assert.equal(error, null, 'nothing changed: no loss');
          req.session.late = 1;
          req.session.save((error) => {
            assert.equal(error.code, 'ERR_STICKLESS_HEADERS_SENT');
            req.session.destroy((error) => {
              assert.equal(error.code, 'ERR_STICKLESS_HEADERS_SENT');
              resolve();
            });
          });
        });
      }),
    alice
  );
  assert.deepEqual(out.headers, {});
  assert.equal(out.logged.length, 2, out.logged.join('\n'));
  assert.match(out.logged[0], /LOST \(set late\)/);
  assert.match(out.logged[1], /LOST \(destroy\)/);
});

test('reload goes back to the last save, or to what the proxy sent', async () => {
  const out = await exchange(
    (req, res) =>
      new Promise((resolve) => {
        req.session.visits = 10;
        req.session.save(() => {
          req.session.visits = 11;
          delete req.session.user;
          req.session.reload((error) => {
            assert.equal(error, null);
            assert.equal(req.session.visits, 10);
            assert.equal(req.session.user, 'alice');
            res.end();
            resolve();
          });
        });
      }),
    alice
  );
  assert.deepEqual(out.headers, { 'x-session-set-visits': '10' });
});

test("express-session's cookie and methods are there and are not session keys", async () => {
  const out = await exchange((req, res) => {
    req.session.cookie.maxAge = 60000;
    req.session.cookie.expires = false;
    req.session.touch().resetMaxAge();
    assert.equal(typeof req.session.save, 'function');
    res.end(JSON.stringify(Object.keys(req.session)));
  }, alice);
  assert.deepEqual(JSON.parse(out.body), ['user', 'cart', 'visits', 'admin', 'userId']);
  assert.deepEqual(out.headers, {});
});

test('a key that cannot be named, or a value JSON cannot hold, is refused in the log', async () => {
  const out = await exchange((req, res) => {
    req.session['k'.repeat(65)] = 1;
    req.session.big = 10n;
    req.session.ok = 1;
    res.end();
  });
  assert.deepEqual(out.headers, { 'x-session-set-ok': '1' });
  assert.equal(out.logged.length, 2, out.logged.join('\n'));
  assert.match(out.logged.join('\n'), /too long/);
  assert.match(out.logged.join('\n'), /"big" cannot be saved as JSON/);
});

test('express-session options are accepted; headerPrefix follows the proxy', async () => {
  const out = await exchange(
    (req, res) => {
      req.session.n = req.session.n + 1;
      res.end();
    },
    { id: 's', attributes: { n: '1' } },
    { headerPrefix: 'X-Session-', secret: 's', resave: false, cookie: { maxAge: 1 } }
  );
  assert.deepEqual(out.headers, { 'x-session-set-n': '2' });
});

test('a second stickless-session middleware leaves the first one’s session alone', async () => {
  const inner = sticklessSession();
  const out = await exchange(
    (req, res) =>
      new Promise((resolve) => {
        const first = req.session;
        inner(req, res, () => {
          assert.equal(req.session, first);
          req.session.visits = 4;
          res.end();
          resolve();
        });
      }),
    alice
  );
  assert.deepEqual(out.headers, { 'x-session-set-visits': '4' });
});
