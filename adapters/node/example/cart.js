'use strict';

// A small Express shop that keeps its state in req.session, as any express-session app does.
// The integration tests (tests/adapter_node.rs) run two instances of it behind stickless.
//
//   PORT=9001 INSTANCE=a node example/cart.js            # with stickless-session
//   PORT=9001 INSTANCE=a SESSION=express node example/cart.js   # the control: express-session
//
// The one line that differs between the two is the app.use(session) line below.

const fs = require('node:fs');
const path = require('node:path');
const express = require('express');

const app = express();
const instance = process.env.INSTANCE || 'a';

if (process.env.SESSION === 'express') {
  app.use(require('express-session')({ secret: 'control', resave: false, saveUninitialized: false }));
} else {
  app.use(require('stickless-session')());
}

// Every answer says which instance served it and what the session holds.
function show(req, res, extra = {}) {
  res.json({
    instance,
    id: req.sessionID === undefined ? null : req.sessionID,
    session: req.session === undefined ? null : req.session,
    ...extra,
  });
}

app.get('/', (req, res) => show(req, res));

app.get('/login', (req, res, next) => {
  // Session fixation protection as express-session documents it: a new session on log-in.
  req.session.regenerate((err) => {
    if (err) return next(err);
    req.session.user = String(req.query.user || 'alice');
    req.session.loginCount = 1;
    req.session.cart = { items: [], total: 0 };
    req.session.vip = false;
    req.session.save((err) => (err ? next(err) : show(req, res)));
  });
});

app.get('/cart/add', (req, res) => {
  if (!req.session.user) return res.status(401).json({ instance, error: 'log in first' });
  // Changed in place: the object read from the session is modified, never reassigned.
  const qty = Number(req.query.qty || 1);
  const price = Number(req.query.price || 0);
  req.session.cart.items.push({ sku: String(req.query.sku), qty, price });
  req.session.cart.total = Math.round((req.session.cart.total + qty * price) * 100) / 100;
  req.session.loginCount += 1;
  if (req.session.cart.total > 100) req.session.vip = true;
  req.session.lastSku = req.query.sku ? String(req.query.sku) : null;
  show(req, res);
});

app.get('/forget', (req, res) => {
  delete req.session[String(req.query.key)];
  show(req, res);
});

app.get('/set', (req, res) => {
  req.session[String(req.query.key)] = JSON.parse(String(req.query.value));
  show(req, res);
});

// Two requests meet: each notes that it has read the session (a file in BARRIER_DIR), waits
// (at most 10 s) until the other one has too, then sets its own key. Both therefore read a
// session without the other's key, and both writes must persist.
app.get('/meet-then-set', (req, res, next) => {
  const dir = process.env.BARRIER_DIR;
  const key = String(req.query.key);
  const saw = Object.keys(req.session);
  fs.writeFileSync(path.join(dir, key), instance);
  const deadline = Date.now() + 10000;
  const poll = () => {
    if (fs.existsSync(path.join(dir, String(req.query.other)))) {
      req.session[key] = String(req.query.value);
      return show(req, res, { saw });
    }
    if (Date.now() > deadline) return next(new Error(`${req.query.other} never came`));
    setTimeout(poll, 10);
  };
  poll();
});

app.get('/rotate', (req, res, next) => {
  // A new id, the data kept: regenerate empties the session, so copy it over.
  const kept = { ...req.session };
  req.session.regenerate((err) => {
    if (err) return next(err);
    Object.assign(req.session, kept);
    show(req, res);
  });
});

app.get('/logout', (req, res, next) => {
  req.session.destroy((err) => (err ? next(err) : res.redirect('/')));
});

// Log out with a message for the next page: regenerate, then write into the new session.
app.get('/logout-with-message', (req, res, next) => {
  req.session.regenerate((err) => {
    if (err) return next(err);
    req.session.flash = 'You have been logged out';
    show(req, res);
  });
});

// Streams: the headers are out before the session changes, so the change cannot be saved.
app.get('/stream', (req, res) => {
  req.session.beforeHeaders = true;
  res.write('first chunk\n');
  req.session.afterHeaders = true;
  res.end('last chunk\n');
});

app.listen(Number(process.env.PORT || 3000), '127.0.0.1', () => {
  console.log(`cart instance ${instance} listening on ${process.env.PORT || 3000}`);
});
