'use strict';

// The name and value encodings (the scheme all stickless adapters share).

const test = require('node:test');
const assert = require('node:assert/strict');
const { encodeName, decodeName, encodeValue, decodeValue } = require('..');

test('plain keys are their own attribute names', () => {
  for (const key of ['cart', 'user', 'a', '0', 'x', 'xuser', 'a'.repeat(64)]) {
    assert.equal(encodeName(key), key);
    assert.equal(decodeName(key), key);
  }
});

test('other keys are escaped byte by byte after an "x"', () => {
  const cases = [
    ['userId', 'xuser-49d'],
    ['user_id', 'xuser-5fid'],
    ['-', 'x-2d'],
    ['id', 'x-69d'],
    ['flash messages', 'xflash-20messages'],
    ['é', 'x-c3-a9'],
    ['😀', 'x-f0-9f-98-80'],
    ['x-1', 'xx-2d1'],
  ];
  for (const [key, name] of cases) {
    assert.equal(encodeName(key), name, key);
    assert.equal(decodeName(name), key, name);
    assert.match(name, /^[a-z0-9][a-z0-9-]{0,63}$/);
  }
});

test('keys that cannot be named are refused', () => {
  assert.throws(() => encodeName(''), /empty/);
  assert.throws(() => encodeName('a'.repeat(65)), /too long/);
  assert.throws(() => encodeName('Ä'.repeat(11)), /too long/);
  assert.throws(() => encodeName('aB'.repeat(22)), /at most 64/);
});

test('names this adapter does not write are not decoded', () => {
  for (const name of ['id', 'user-name', 'y-2d', 'x-zz', 'x-2', 'x-2D', 'x-61', 'x-ff', 'x-c3']) {
    assert.equal(decodeName(name), null, name);
  }
});

test('values are JSON in printable ASCII and read back with their type', () => {
  const values = [
    'alice',
    '',
    ' padded ',
    42,
    -1.5,
    true,
    false,
    null,
    [1, 'two', { three: 3 }],
    { items: [{ sku: 'A-1', qty: 2 }], total: 19.99, note: null },
    'é€😀 and \u007f, tab\t, newline\n, quote " and backslash \\',
    '\ud800 lone surrogate',
  ];
  for (const value of values) {
    const encoded = encodeValue(value);
    assert.match(encoded, /^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$/, encoded);
    assert.deepEqual(decodeValue(encoded), value);
  }
  assert.equal(encodeValue('é'), '"\\u00e9"');
  assert.equal(encodeValue('\u007f'), '"\\u007f"');
});

test('what JSON drops is not stored, Dates become strings as in express-session', () => {
  assert.equal(encodeValue(undefined), undefined);
  assert.equal(encodeValue(() => 1), undefined);
  const date = new Date('2024-05-06T07:08:09.000Z');
  assert.equal(decodeValue(encodeValue(date)), '2024-05-06T07:08:09.000Z');
});

test('a value that is not JSON reads as the plain string', () => {
  assert.equal(decodeValue('alice'), 'alice');
  assert.equal(decodeValue('a:1:{i:0;s:1:"x";}'), 'a:1:{i:0;s:1:"x";}');
  // Header bytes arrive as latin1: UTF-8 from another backend reads as what it says.
  assert.equal(decodeValue(Buffer.from('Zoë', 'utf8').toString('latin1')), 'Zoë');
});
