<?php
/**
 * Unit tests of the PHP adapter: the name and value encoding, the delta plan, and the save
 * handler driven by PHP's own session functions (php-cli, no web server).
 *
 *     php adapters/php/tests/run.php        # exit 0 when every check passes
 */

namespace Stickless\Session\Tests;

use Stickless\Session\Codec;
use Stickless\Session\Handler;
use Stickless\Session\Io;
use Stickless\Session\Plan;

require __DIR__ . '/../stickless_session.php';

error_reporting(E_ALL);
set_error_handler(function ($severity, $message, $file, $line) {
    throw new \ErrorException($message, 0, $severity, $file, $line);
});

$GLOBALS['checks'] = 0;
$GLOBALS['failures'] = array();

function same($expected, $actual, $what)
{
    $GLOBALS['checks']++;
    if ($expected !== $actual) {
        $GLOBALS['failures'][] = sprintf(
            "%s\n  expected: %s\n  actual:   %s",
            $what,
            var_export($expected, true),
            var_export($actual, true)
        );
    }
}

function test($name, callable $body)
{
    $before = count($GLOBALS['failures']);
    try {
        $body();
    } catch (\Throwable $e) {
        $GLOBALS['failures'][] = "$name: " . get_class($e) . ': ' . $e->getMessage() . ' at ' . $e->getFile() . ':' . $e->getLine();
    }
    $status = count($GLOBALS['failures']) === $before ? 'ok' : 'FAILED';
    fwrite(STDOUT, "$status  $name\n");
}

final class Recorder implements Io
{
    public $headers = array();
    public $logs = array();
    public $sent = false;

    public function headersSent(&$file, &$line)
    {
        $file = $this->sent ? '/app/page.php' : '';
        $line = $this->sent ? 7 : 0;
        return $this->sent;
    }

    public function header($name, $value)
    {
        $this->headers[$name] = $value;
    }

    public function remove($name)
    {
        unset($this->headers[$name]);
    }

    public function log($message)
    {
        $this->logs[] = $message;
    }

    public function dropCookie($name)
    {
    }
}

class Item
{
    public $sku;
    public $qty;

    public function __construct($sku, $qty)
    {
        $this->sku = $sku;
        $this->qty = $qty;
    }
}

/**
 * Runs $app against a handler that holds the session the proxy injected ($id, $attributes),
 * through PHP's real session functions, and returns what it sent and logged.
 */
function request($id, array $attributes, callable $app, $cookie = false)
{
    $io = new Recorder();
    $handler = new Handler('X-Session-', $id, $attributes, $io);
    \Stickless\Session\configure();
    session_id('');
    session_set_save_handler($handler, false);
    $_COOKIE = array();
    if ($cookie && $id !== null) {
        $_COOKIE[session_name()] = $id;   // as install() provides it
    }
    $app($io, $handler);
    if (session_status() === PHP_SESSION_ACTIVE) {
        session_write_close();
    }
    return $io;
}

const ID = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';

function alice()
{
    return array(
        'user' => 's:5:"alice";',
        'cart' => Codec::encodeValue(array('A1' => 2)),
        'xuser-49d' => 'i:42;',
        'plain' => 'bob',                 // set by a backend that is not PHP
        'other-app' => 'kept as it is',   // not a name this encoding makes
    );
}

// --- names -----------------------------------------------------------------------------

test('names: valid attribute names are kept, others escaped as the brief shows', function () {
    $cases = array(
        'cart' => 'cart',
        'user' => 'user',
        '0' => '0',
        'userId' => 'xuser-49d',
        'user_id' => 'xuser-5fid',
        '-' => 'x-2d',
        'id' => 'x-69d',
        'x' => 'x',
        'é' => 'x-c3-a9',
        'a b' => 'xa-20b',
        str_repeat('a', 64) => str_repeat('a', 64),
    );
    foreach ($cases as $key => $name) {
        same($name, Codec::encodeName((string) $key), "encodeName($key)");
        same((string) $key, (string) Codec::decodeName($name), "decodeName($name)");
    }
    same('5', Codec::encodeName(5), 'integer keys are their decimal text');
});

test('names: keys that cannot be names are refused', function () {
    same(null, Codec::encodeName(''), 'empty key');
    same(null, Codec::encodeName(str_repeat('a', 65)), '65 letters');
    same(null, Codec::encodeName(str_repeat('A', 22)), '22 capitals escape to 67 chars');
    same('x' . str_repeat('-41', 21), Codec::encodeName(str_repeat('A', 21)), '21 capitals fit in 64');
});

test('names: anything this encoding does not make is not ours', function () {
    foreach (array('id', 'other-app', 'xab-63', 'x-4', 'x-zz', 'x-4A', 'Cart', 'a_b', '', '-x') as $name) {
        same(null, Codec::decodeName($name), "decodeName($name)");
    }
});

test('names: every byte round-trips', function () {
    for ($byte = 0; $byte < 256; $byte++) {
        $key = 'k' . chr($byte);
        same($key, Codec::decodeName(Codec::encodeName($key)), "byte $byte");
    }
});

// --- values ----------------------------------------------------------------------------

test('values: printable serializations as they are, others in base64', function () {
    same('s:5:"alice";', Codec::encodeValue('alice'), 'string');
    same('i:3;', Codec::encodeValue(3), 'int');
    same('d:0.5;', Codec::encodeValue(0.5), 'float');
    same('b:1;', Codec::encodeValue(true), 'bool');
    same('N;', Codec::encodeValue(null), 'null');
    same('a:1:{s:2:"A1";i:2;}', Codec::encodeValue(array('A1' => 2)), 'array');
    same('~' . base64_encode(serialize("crème")), Codec::encodeValue("crème"), 'non-ASCII');
    same('~' . base64_encode(serialize("a\nb")), Codec::encodeValue("a\nb"), 'newline');
});

test('values: round trips keep type', function () {
    $values = array('alice', '', '0', 3, 0, -7, 1.0, 0.1, true, false, null, array(), array(1, 'two' => array(3.5)),
        "crème ✓", "\0\xff", new Item('A1', 2), PHP_INT_MAX);
    foreach ($values as $value) {
        $encoded = Codec::encodeValue($value);
        same(1, preg_match('/\A[\x21-\x7e][\x20-\x7e]*\z/', $encoded), "header-safe: $encoded");
        list($ok, $decoded) = Codec::decodeValue($encoded);
        same(true, $ok, "decodes: $encoded");
        same(serialize($value), serialize($decoded), "same value and type: $encoded");
    }
    list(, $item) = Codec::decodeValue(Codec::encodeValue(new Item('A1', 2)));
    same(Item::class, get_class($item), 'objects come back as their class');
});

test('values: foreign values are plain strings', function () {
    foreach (array('alice', 'i:5;junk', 'a:1:{', '~not base64!', '~' . base64_encode('hello'), 'O:1:"', 'true', '{"a":1}', '') as $raw) {
        same(array(false, $raw), Codec::decodeValue($raw), "raw " . var_export($raw, true));
    }
});

// --- plan ------------------------------------------------------------------------------

function plan($hadSession, array $base, $final, $gone = false, $rotated = false, $names = null)
{
    $names = $names === null ? array_map(function ($k) {
        return Codec::encodeName($k);
    }, array_keys($base)) : $names;
    return Plan::headers('X-Session-', $names, $hadSession, $base, $final, $gone, $rotated);
}

test('plan: nothing written or nothing changed sends nothing', function () {
    $base = array('user' => 's:5:"alice";');
    same(array(array(), array()), plan(true, $base, null), 'not written');
    same(array(array(), array()), plan(true, $base, $base), 'unchanged');
    same(array(array(), array()), plan(false, array(), array()), 'empty new session');
    same(array(array(), array()), plan(false, array(), null, true), 'destroyed what never existed');
});

test('plan: sets changed and new keys, removes deleted ones', function () {
    $base = array('user' => 's:5:"alice";', 'cart' => 'a:0:{}', 'userId' => 'i:1;');
    list($headers) = plan(true, $base, array('user' => 's:5:"alice";', 'cart' => 'a:1:{i:0;i:1;}', 'note' => 'N;'));
    same(array(
        'X-Session-Remove' => 'xuser-49d',
        'X-Session-Set-cart' => 'a:1:{i:0;i:1;}',
        'X-Session-Set-note' => 'N;',
    ), $headers, 'delta');
});

test('plan: rotation and invalidation', function () {
    $base = array('user' => 's:5:"alice";');
    same(array(array('X-Session-Rotate' => 'true'), array()), plan(true, $base, $base, false, true), 'rotate');
    same(array(array(), array()), plan(false, array(), null, false, true), 'no session to rotate');
    same(array(array('X-Session-Invalidate' => 'true'), array()), plan(true, $base, null, true), 'destroy');
    same(array(array('X-Session-Invalidate' => 'true'), array()), plan(true, $base, array(), true, true), 'destroy wins');
    list($headers) = plan(true, $base, array('flash' => 's:3:"bye";', 'user' => 's:3:"bob";'), true, false, array('user', 'plain', 'other-app'));
    same(array(
        'X-Session-Rotate' => 'true',
        'X-Session-Remove' => 'plain, other-app',
        'X-Session-Set-flash' => 's:3:"bye";',
        'X-Session-Set-user' => 's:3:"bob";',
    ), $headers, 'destroyed then written: rotate, remove all old, set new');
    same(array(array('X-Session-Set-flash' => 'N;'), array()), plan(false, array(), array('flash' => 'N;'), true), 'new session after destroying none');
});

test('plan: a key that cannot be named is reported, the others still go', function () {
    list($headers, $errors) = plan(false, array(), array(str_repeat('k', 70) => 'i:1;', 'ok' => 'i:2;'));
    same(array('X-Session-Set-ok' => 'i:2;'), $headers, 'headers');
    same(1, count($errors), 'one error');
});

// --- the handler under PHP's session functions -----------------------------------------

test('handler: an application that never starts a session sends nothing', function () {
    $io = request(ID, alice(), function () {
    });
    same(array(), $io->headers, 'headers');
});

test('handler: reading sends nothing; the id and values are the proxy\'s', function () {
    foreach (array('1', '0') as $lazy) {
        ini_set('session.lazy_write', $lazy);
        $seen = null;
        $io = request(ID, alice(), function () use (&$seen) {
            session_start();
            $seen = array(session_id(), $_SESSION);
        });
        same(array(ID, array('user' => 'alice', 'cart' => array('A1' => 2), 'userId' => 42, 'plain' => 'bob')), $seen, "session (lazy_write=$lazy)");
        same(array(), $io->headers, "headers (lazy_write=$lazy)");
        same(array(), $io->logs, 'logs');
    }
    ini_set('session.lazy_write', '1');
});

test('handler: a new session gets a provisional id and sets its values', function () {
    $id = null;
    $io = request(null, array(), function () use (&$id) {
        session_start();
        $id = session_id();
        $_SESSION['user'] = 'alice';
    });
    same(1, preg_match('/\A[0-9a-f]{32}\z/', $id), "provisional id $id");
    same(array('X-Session-Set-user' => 's:5:"alice";'), $io->headers, 'headers');
});

test('handler: in-place changes, unset and session_unset', function () {
    $io = request(ID, alice(), function () {
        session_start();
        $_SESSION['cart']['B2'] = 1;
        unset($_SESSION['user']);
        $_SESSION['plain'] = 'carol';
    });
    same(array(
        'X-Session-Remove' => 'user',
        'X-Session-Set-cart' => 'a:2:{s:2:"A1";i:2;s:2:"B2";i:1;}',
        'X-Session-Set-plain' => 's:5:"carol";',
    ), $io->headers, 'delta');
    $io = request(ID, alice(), function () {
        session_start();
        session_unset();
    });
    same(array('X-Session-Remove' => 'user, cart, xuser-49d, plain'), $io->headers, 'session_unset leaves other-app alone');
});

test('handler: session_regenerate_id rotates and keeps the data, with or without deleting', function () {
    foreach (array(false, true) as $delete) {
        $ids = array();
        $io = request(ID, alice(), function () use ($delete, &$ids) {
            session_start();
            session_regenerate_id($delete);
            $ids[] = session_id();
            $_SESSION['role'] = 'admin';
        });
        same(array('X-Session-Rotate' => 'true', 'X-Session-Set-role' => 's:5:"admin";'), $io->headers, 'regenerate(' . var_export($delete, true) . ')');
        same(1, preg_match('/\A[0-9a-f]{32}\z/', $ids[0]), 'a provisional id after rotation');
    }
});

test('handler: session_destroy invalidates; a new session after it rotates and replaces', function () {
    $io = request(ID, alice(), function () {
        session_start();
        $_SESSION = array();
        session_destroy();
    });
    same(array('X-Session-Invalidate' => 'true'), $io->headers, 'destroy');
    $after = null;
    $io = request(ID, alice(), function () use (&$after) {
        session_start();
        session_destroy();
        session_start();
        $after = array(session_id(), $_SESSION);
        $_SESSION['flash'] = 'bye';
    });
    same(array(), $after[1], 'the new session starts empty');
    same(true, $after[0] !== ID, 'with another id');
    same(array(
        'X-Session-Rotate' => 'true',
        'X-Session-Remove' => 'user, cart, xuser-49d, plain, other-app',
        'X-Session-Set-flash' => 's:3:"bye";',
    ), $io->headers, 'rotate, remove everything old, set the new');
});

test('handler: with the id in PHP\'s cookie, as install() gives it', function () {
    $seen = array();
    $io = request(ID, alice(), function () use (&$seen) {
        session_start();
        $seen[] = session_id();
        $seen[] = $_SESSION['user'];
        session_destroy();
        session_start();
        $seen[] = session_id() !== ID;
        $seen[] = $_SESSION;
        $_SESSION['flash'] = 'bye';
    }, true);
    same(array(ID, 'alice', true, array()), $seen, 'the proxy\'s session, then a new one');
    same('true', $io->headers['X-Session-Rotate'], 'rotated');
    foreach (array(false, true) as $strict) {
        ini_set('session.use_strict_mode', $strict ? '1' : '0');
        $seen = null;
        request(ID, alice(), function () use (&$seen) {
            session_start();
            $seen = array(session_id(), $_SESSION['user']);
        }, true);
        same(array(ID, 'alice'), $seen, 'use_strict_mode=' . (int) $strict);
    }
    ini_set('session.use_strict_mode', '0');
});

test('handler: session_create_id is not a rotation', function () {
    $io = request(ID, alice(), function () {
        session_start();
        $new = session_create_id();
        same(1, preg_match('/\A[0-9a-f]{32}\z/', $new), 'an id');
        same(ID, session_id(), 'the session keeps its id');
    });
    same(array(), $io->headers, 'headers');
});

test('handler: closing and restarting within a request keeps what was written', function () {
    $seen = null;
    $io = request(ID, alice(), function () use (&$seen) {
        session_start();
        $_SESSION['step'] = 1;
        session_write_close();
        session_start();
        $seen = $_SESSION['step'];
        $_SESSION['step'] = 2;
        unset($_SESSION['cart']);
        session_write_close();
        session_start();
        session_reset();
        $seen .= ',' . $_SESSION['step'];
    });
    same('1,2', $seen, 'values read back');
    same(array('X-Session-Set-step' => 'i:2;', 'X-Session-Remove' => 'cart'), $io->headers, 'headers');
});

test('handler: session_abort sends nothing', function () {
    $io = request(ID, alice(), function () {
        session_start();
        $_SESSION['user'] = 'mallory';
        session_abort();
    });
    same(array(), $io->headers, 'headers');
});

test('handler: changes after headers went out are logged loudly, not lost silently', function () {
    $io = request(ID, alice(), function (Recorder $io) {
        session_start();
        $io->sent = true;
        $_SESSION['late'] = 1;
    });
    same(array(), $io->headers, 'nothing could be sent');
    same(1, count($io->logs), 'one log line');
    same(1, preg_match('~ERROR session changes NOT saved: headers already sent \(output started at /app/page.php:7\); lost: X-Session-Set-late~', $io->logs[0]), $io->logs[0]);
    $io = request(ID, alice(), function (Recorder $io) {
        session_start();
        $_SESSION['early'] = 1;
        session_write_close();
        $io->sent = true;
    });
    same(array('X-Session-Set-early' => 'i:1;'), $io->headers, 'written before output');
    same(array(), $io->logs, 'and nothing to report');
});

test('handler: the output callback sends the open session\'s changes before headers go', function () {
    $io = request(ID, alice(), function (Recorder $io, Handler $handler) {
        session_start();
        $_SESSION['a'] = 1;
        same('body', $handler->onFlush('body', PHP_OUTPUT_HANDLER_FLUSH), 'output untouched');
        $io->sent = true;
    });
    same(array('X-Session-Set-a' => 'i:1;'), $io->headers, 'headers');
    same(array(), $io->logs, 'nothing lost');
});

test('handler: the output callback sets the headers again after header_remove()', function () {
    $io = request(ID, alice(), function (Recorder $io, Handler $handler) {
        session_start();
        $_SESSION['a'] = 1;
        session_write_close();
        $io->headers = array();
        $handler->onFlush('', PHP_OUTPUT_HANDLER_FINAL);
    });
    same(array('X-Session-Set-a' => 'i:1;'), $io->headers, 'headers');
});

test('handler: a key too long for a name is logged, the rest saved', function () {
    $io = request(ID, alice(), function () {
        session_start();
        $_SESSION[str_repeat('k', 70)] = 1;
        $_SESSION['ok'] = 2;
    });
    same(array('X-Session-Set-ok' => 'i:2;'), $io->headers, 'headers');
    same(1, count($io->logs), 'logged');
    same(1, preg_match('/ERROR session key .* cannot be stored/', $io->logs[0]), $io->logs[0]);
});

test('handler: session.serialize_handler=php set by the application still reads', function () {
    $seen = null;
    $io = request(ID, alice(), function () use (&$seen) {
        ini_set('session.serialize_handler', 'php');
        session_start();
        $seen = $_SESSION['user'];
        $_SESSION['user'] = 'bob';
    });
    same('alice', $seen, 'read');
    same(array('X-Session-Set-user' => 's:3:"bob";'), $io->headers, 'headers');
});

$failures = $GLOBALS['failures'];
fwrite(STDOUT, sprintf("%d checks, %d failed\n", $GLOBALS['checks'], count($failures)));
foreach ($failures as $failure) {
    fwrite(STDOUT, "FAIL: $failure\n");
}
exit($failures ? 1 : 0);
