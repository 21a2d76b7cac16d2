<?php
/**
 * stickless session adapter for PHP: `$_SESSION` kept in the stickless proxy's store instead of
 * local session files, with no change to the application.
 *
 * Install with `auto_prepend_file=/path/to/stickless_session.php` (php.ini, `php -d`, or the FPM
 * pool's `php_admin_value[auto_prepend_file]`). See README.md next to this file.
 *
 * Layout:
 * - Codec: application keys <-> attribute names, PHP values <-> header values (the encoding
 *   every stickless adapter shares, documented in README.md).
 * - Plan: which X-Session-* response headers turn the request's session into this one.
 * - Handler: PHP's session save handler. read() serves the attributes the proxy injected;
 *   write()/destroy()/session_regenerate_id() are turned into headers as they happen, so the
 *   response carries them whenever it is sent; an output callback sends them at the last moment
 *   headers can still go out.
 * - install(): runs once per request, before the application.
 *
 * Security: the X-Session-* request headers are trusted as the proxy's. The application must be
 * reachable only through stickless (which strips any client-sent X-Session-* header).
 */

namespace Stickless\Session;

/** Names and values as every stickless adapter writes them. */
final class Codec
{
    /** The longest attribute name the proxy accepts. */
    const MAX_NAME = 64;

    /**
     * The attribute name for an application key, or null when the key cannot be expressed
     * (empty, or longer than 64 characters once escaped).
     *
     * Keys that are already valid names (`[a-z0-9]{1,64}`, except the reserved `id`) are kept;
     * any other key becomes "x" followed by the key with every byte outside [a-z0-9] written as
     * "-" and two lower-case hex digits (`userId` -> `xuser-49d`). A key that needed no escape
     * (`id`) gets its first byte escaped (`x-69d`), so that a name without "-" is always literal.
     *
     * @param string|int $key
     */
    public static function encodeName($key)
    {
        $key = (string) $key;
        if ($key !== 'id' && preg_match('/\A[a-z0-9]{1,64}\z/', $key)) {
            return $key;
        }
        if ($key === '') {
            return null;
        }
        $escaped = '';
        $any = false;
        $length = strlen($key);
        for ($i = 0; $i < $length; $i++) {
            $byte = $key[$i];
            if (($byte >= 'a' && $byte <= 'z') || ($byte >= '0' && $byte <= '9')) {
                $escaped .= $byte;
            } else {
                $escaped .= '-' . bin2hex($byte);
                $any = true;
            }
        }
        if (!$any) {
            $escaped = '-' . bin2hex($key[0]) . substr($key, 1);
        }
        $name = 'x' . $escaped;
        return strlen($name) <= self::MAX_NAME ? $name : null;
    }

    /**
     * The application key an attribute name stands for, or null when the name is not one this
     * encoding produces (such attributes belong to other code and are never touched).
     */
    public static function decodeName($name)
    {
        $name = (string) $name;
        if ($name === 'id' || !preg_match('/\A[a-z0-9][a-z0-9-]{0,63}\z/', $name)) {
            return null;
        }
        if (strpos($name, '-') === false) {
            return $name;
        }
        if (!preg_match('/\Ax(?:[a-z0-9]|-[0-9a-f]{2})+\z/', $name)) {
            return null;
        }
        $key = preg_replace_callback('/-([0-9a-f]{2})/', function ($m) {
            return chr(hexdec($m[1]));
        }, substr($name, 1));
        // Only the canonical spelling is ours: `xab-63` would decode to `abc`, which encodes
        // as `abc`, and writing it back would leave two names for one key.
        return self::encodeName($key) === $name ? $key : null;
    }

    /**
     * `serialize($value)` as is when it is printable ASCII (it then starts with its type
     * letter: `s:5:"alice";`, `i:3;`, `a:2:{...}`), otherwise `~` and its base64.
     */
    public static function encodeValue($value)
    {
        $serialized = serialize($value);
        if (preg_match('/\A[\x20-\x7e]*\z/', $serialized)) {
            return $serialized;
        }
        return '~' . base64_encode($serialized);
    }

    /**
     * [true, value] for a value this encoding wrote; [false, the raw text] for anything else
     * (an attribute set by a backend that is not PHP, e.g. `user: alice`), which the
     * application then sees as a plain string.
     */
    public static function decodeValue($raw)
    {
        $raw = (string) $raw;
        $serialized = $raw;
        if ($raw !== '' && $raw[0] === '~') {
            $serialized = base64_decode(substr($raw, 1), true);
            if ($serialized === false) {
                return array(false, $raw);
            }
        }
        if (!preg_match('/\A(?:N;|[bidsaOCE]:)/', $serialized)) {
            return array(false, $raw);
        }
        // Failures are expected here (foreign values): keep their notices away from the
        // application's error handler, which may turn any notice into an exception.
        set_error_handler(function () {
            return true;
        });
        try {
            // The syntax is checked first without creating any object (no autoload, no
            // __wakeup), wrapped in an array so that trailing bytes (`i:5;junk`) fail too.
            $probe = unserialize('a:1:{i:0;' . $serialized . '}', array('allowed_classes' => false));
            if (!is_array($probe) && strpos($serialized, 'E:') === false) {
                return array(false, $raw);
            }
            $value = unserialize($serialized);
        } catch (\Throwable $e) {
            return array(false, $raw);
        } finally {
            restore_error_handler();
        }
        if ($value === false && $serialized !== 'b:0;') {
            return array(false, $raw);
        }
        return array(true, $value);
    }
}

/** The response headers that turn the session the request carried into the current one. */
final class Plan
{
    /**
     * @param string   $prefix      header prefix, `X-Session-`
     * @param string[] $requestNames every attribute name the request carried (adapter's or not)
     * @param bool     $hadSession  whether the request carried a session (X-Session-Id)
     * @param array    $base        key => encoded value, the adapter's attributes at the start
     * @param array|null $final     key => encoded value now; null when nothing was written
     * @param bool     $gone        the request's session was destroyed (session_destroy)
     * @param bool     $rotated     session_regenerate_id was called
     * @return array{0: array<string,string>, 1: string[]} headers (name => value) and errors
     */
    public static function headers($prefix, array $requestNames, $hadSession, array $base, $final, $gone, $rotated)
    {
        $headers = array();
        $errors = array();
        $sets = array();
        $removes = array();
        if ($gone) {
            if ($final === null || $final === array()) {
                if ($hadSession) {
                    $headers[$prefix . 'Invalidate'] = 'true';
                }
                return array($headers, $errors);
            }
            // Destroyed, then a new session started in the same request (a logout that leaves
            // a flash message): the old attributes go, the new ones come, under a new id.
            foreach ($final as $key => $encoded) {
                self::set($sets, $errors, $key, $encoded);
            }
            if ($hadSession) {
                $rotated = true;
                foreach ($requestNames as $name) {
                    if (!isset($sets[$name])) {
                        $removes[] = $name;
                    }
                }
            }
        } elseif ($final !== null) {
            foreach ($final as $key => $encoded) {
                if (!array_key_exists($key, $base) || $base[$key] !== $encoded) {
                    self::set($sets, $errors, $key, $encoded);
                }
            }
            foreach ($base as $key => $encoded) {
                if (!array_key_exists($key, $final)) {
                    $removes[] = Codec::encodeName($key);
                }
            }
        }
        if ($rotated && $hadSession) {
            $headers[$prefix . 'Rotate'] = 'true';
        }
        if ($removes) {
            $headers[$prefix . 'Remove'] = implode(', ', $removes);
        }
        foreach ($sets as $name => $encoded) {
            $headers[$prefix . 'Set-' . $name] = $encoded;
        }
        return array($headers, $errors);
    }

    private static function set(array &$sets, array &$errors, $key, $encoded)
    {
        $name = Codec::encodeName($key);
        if ($name === null) {
            $errors[] = sprintf(
                'session key %s cannot be stored: it is empty or longer than %d characters as an attribute name',
                var_export((string) $key, true),
                Codec::MAX_NAME
            );
            return;
        }
        $sets[$name] = $encoded;
    }
}

/** What the handler does to the outside world; replaced by a recorder in the unit tests. */
interface Io
{
    /** Whether headers went out already, and where output started. */
    public function headersSent(&$file, &$line);

    public function header($name, $value);

    public function remove($name);

    /** A line in the application's log (error_log). */
    public function log($message);

    /** Takes back a `Set-Cookie` for PHP's own session cookie `$name`, if one is queued. */
    public function dropCookie($name);
}

final class HeaderIo implements Io
{
    public function headersSent(&$file, &$line)
    {
        return headers_sent($file, $line);
    }

    public function header($name, $value)
    {
        header($name . ': ' . $value, true);
    }

    public function remove($name)
    {
        header_remove($name);
    }

    public function log($message)
    {
        error_log($message);
    }

    public function dropCookie($name)
    {
        $prefix = $name . '=';
        $keep = array();
        $found = false;
        foreach (headers_list() as $line) {
            if (stripos($line, 'Set-Cookie:') !== 0) {
                continue;
            }
            if (strpos(ltrim(substr($line, 11)), $prefix) === 0) {
                $found = true;
            } else {
                $keep[] = $line;
            }
        }
        if ($found) {
            header_remove('Set-Cookie');
            foreach ($keep as $line) {
                header($line, false);
            }
        }
    }
}

/**
 * PHP's session save handler over the header protocol. One per request.
 *
 * PHP calls it as: session_start -> open, create_sid (no id yet), read; session_write_close and
 * the end of the request -> write (or updateTimestamp when nothing changed); session_destroy ->
 * destroy, close; session_regenerate_id -> write or destroy (old id), close, open, create_sid,
 * read (new id). Which PHP function called it is read from the backtrace, since
 * session_destroy and session_regenerate_id(true) both end in destroy().
 */
final class Handler implements \SessionHandlerInterface, \SessionIdInterface, \SessionUpdateTimestampHandlerInterface
{
    /** @var string */
    private $prefix;
    /** @var string|null the proxy's session id (X-Session-Id), null without a session */
    private $id;
    /** @var array<string,string> attribute name => raw value, as injected */
    private $attributes;
    /** @var Io */
    private $io;

    /** @var bool whether the attributes were decoded (at the first read, as PHP decodes) */
    private $decoded = false;
    /** @var array key => encoded value of the attributes at the start */
    private $base = array();
    /** @var string the start state in session.serialize_handler's format */
    private $baseData = '';
    /** @var array|null key => encoded value last written; null before any write */
    private $final = null;
    /** @var string|null the session data last written, served by a later read() */
    private $lastData = null;
    /** @var bool the request's session was destroyed */
    private $gone = false;
    /** @var bool the id was regenerated */
    private $rotated = false;
    /** @var bool between open() and close(): this handler serves the active session */
    private $open = false;
    /** @var array<string,string> the headers set so far */
    private $emitted = array();
    /** @var array<string,bool> errors logged, so that each is logged once */
    private $logged = array();

    public function __construct($prefix, $id, array $attributes, Io $io)
    {
        $this->prefix = $prefix;
        $this->id = $id;
        $this->attributes = $id === null ? array() : $attributes;
        $this->io = $io;
    }

    #[\ReturnTypeWillChange]
    public function open($path, $name)
    {
        $this->open = true;
        return true;
    }

    #[\ReturnTypeWillChange]
    public function close()
    {
        $this->open = false;
        return true;
    }

    /**
     * The proxy's id when session_start() begins the request's session. A new session (none
     * yet, or after session_destroy) and session_regenerate_id get a provisional id: 32 hex
     * digits the proxy never issues; the proxy's new id is only known from the next request.
     */
    #[\ReturnTypeWillChange]
    public function create_sid()
    {
        if ($this->id !== null && !$this->gone && self::caller() === 'session_start') {
            return $this->id;
        }
        return bin2hex(random_bytes(16));
    }

    /** Only the proxy's live session exists (asked in session.use_strict_mode, and for new ids). */
    #[\ReturnTypeWillChange]
    public function validateId($id)
    {
        return $this->id !== null && !$this->gone && $id === $this->id;
    }

    /** The proxy extends the session's idle timeout itself. */
    #[\ReturnTypeWillChange]
    public function updateTimestamp($id, $data)
    {
        return true;
    }

    #[\ReturnTypeWillChange]
    public function read($id)
    {
        $this->decode();
        $this->dropCookie();
        if (self::caller() === 'session_regenerate_id') {
            // PHP keeps $_SESSION and ignores what is read here.
            $this->rotated = true;
            $this->commit(null);
            return '';
        }
        return $this->lastData !== null ? $this->lastData : $this->baseData;
    }

    #[\ReturnTypeWillChange]
    public function write($id, $data)
    {
        $this->decode();
        $this->final = $this->encodeAll($this->currentValues($data));
        $this->lastData = $data;
        $this->commit(null);
        return true;
    }

    #[\ReturnTypeWillChange]
    public function destroy($id)
    {
        $this->decode();
        if (self::caller() === 'session_regenerate_id') {
            // session_regenerate_id(true): PHP writes the kept data under the new id next.
            $this->rotated = true;
        } else {
            $this->gone = true;
            $this->final = null;
            $this->lastData = '';
            // As the browser's cookie will be: a session_start() after this begins a new one.
            $name = session_name();
            if (isset($_COOKIE[$name]) && $_COOKIE[$name] === $this->id) {
                unset($_COOKIE[$name]);
            }
        }
        $this->commit(null);
        return true;
    }

    #[\ReturnTypeWillChange]
    public function gc($max_lifetime)
    {
        return 0;
    }

    /**
     * Output callback (ob_start): output is about to leave, and headers with it. If the session
     * is still open, its changes so far are sent now, since later they cannot be.
     */
    public function onFlush($buffer, $phase)
    {
        try {
            if ($this->decoded && !$this->io->headersSent($file, $line)) {
                $live = $this->open && session_status() === PHP_SESSION_ACTIVE && isset($_SESSION) && is_array($_SESSION);
                // Everything again, in case the application called header_remove() since.
                $this->commit($live ? $this->encodeAll($_SESSION) : null, true);
            }
        } catch (\Throwable $e) {
            $this->loud('stickless_session: ERROR preparing session headers: ' . $e->getMessage());
        }
        return $buffer;
    }

    private function decode()
    {
        if ($this->decoded) {
            return;
        }
        $this->decoded = true;
        $values = array();
        foreach ($this->attributes as $name => $raw) {
            $key = Codec::decodeName($name);
            if ($key === null) {
                continue;
            }
            list(, $value) = Codec::decodeValue($raw);
            $values[$key] = $value;
        }
        $this->base = $this->encodeAll($values);
        $this->baseData = self::sessionData($values);
    }

    /**
     * PHP queues its session cookie when it makes an id (session_start without one,
     * session_regenerate_id); the proxy issues the only session cookie, so PHP's is taken
     * back whenever the handler runs and headers can still change.
     */
    private function dropCookie()
    {
        if (!$this->io->headersSent($file, $line)) {
            $this->io->dropCookie(session_name());
        }
    }

    /**
     * @param array|null $live  the open session's current values, when committing early
     * @param bool       $again set every header even if it was set before
     */
    private function commit($live, $again = false)
    {
        $this->dropCookie();
        $final = $live !== null ? $live : $this->final;
        list($headers, $errors) = Plan::headers(
            $this->prefix,
            array_keys($this->attributes),
            $this->id !== null,
            $this->base,
            $final,
            $this->gone,
            $this->rotated
        );
        foreach ($errors as $error) {
            $this->loud('stickless_session: ERROR ' . $error);
        }
        $this->emit($headers, $again);
    }

    private function emit(array $headers, $again)
    {
        if (!$again && self::same($headers, $this->emitted)) {
            return;
        }
        if ($this->io->headersSent($file, $line)) {
            $lost = array();
            foreach ($headers as $name => $value) {
                if (!array_key_exists($name, $this->emitted) || $this->emitted[$name] !== $value) {
                    $lost[] = $name;
                }
            }
            foreach ($this->emitted as $name => $value) {
                if (!array_key_exists($name, $headers)) {
                    $lost[] = 'no ' . $name;
                }
            }
            $this->loud(sprintf(
                'stickless_session: ERROR session changes NOT saved: headers already sent (%s); lost: %s. '
                . 'Call session_write_close() before output is flushed.',
                $file ? "output started at $file:$line" : 'by flush() before any output',
                implode(', ', $lost)
            ));
            return;
        }
        foreach ($this->emitted as $name => $value) {
            if (!array_key_exists($name, $headers)) {
                $this->io->remove($name);
            }
        }
        foreach ($headers as $name => $value) {
            $this->io->header($name, $value);
        }
        $this->emitted = $headers;
    }

    private static function same(array $a, array $b)
    {
        if (count($a) !== count($b)) {
            return false;
        }
        foreach ($a as $name => $value) {
            if (!array_key_exists($name, $b) || $b[$name] !== $value) {
                return false;
            }
        }
        return true;
    }

    private function loud($message)
    {
        if (!isset($this->logged[$message])) {
            $this->logged[$message] = true;
            $this->io->log($message);
        }
    }

    private function encodeAll(array $values)
    {
        $encoded = array();
        foreach ($values as $key => $value) {
            $encoded[$key] = Codec::encodeValue($value);
        }
        return $encoded;
    }

    /** The values being written: $_SESSION, which PHP just encoded into $data. */
    private function currentValues($data)
    {
        if (isset($_SESSION) && is_array($_SESSION)) {
            return $_SESSION;
        }
        list($ok, $values) = Codec::decodeValue($data);
        return $ok && is_array($values) ? $values : array();
    }

    /** Session data in the format session.serialize_handler decodes. */
    private static function sessionData(array $values)
    {
        $format = ini_get('session.serialize_handler');
        if ($format === 'php') {
            $data = '';
            foreach ($values as $key => $value) {
                if (is_string($key) && strpbrk($key, '|!') === false) {
                    $data .= $key . '|' . serialize($value);
                }
            }
            return $data;
        }
        if ($format === 'php_binary') {
            $data = '';
            foreach ($values as $key => $value) {
                if (is_string($key) && strlen($key) < 128) {
                    $data .= chr(strlen($key)) . $key . serialize($value);
                }
            }
            return $data;
        }
        return serialize($values);
    }

    /** The session_* function PHP is running this handler for. */
    private static function caller()
    {
        foreach (debug_backtrace(DEBUG_BACKTRACE_IGNORE_ARGS, 4) as $frame) {
            if (!isset($frame['class']) && isset($frame['function']) && strncmp($frame['function'], 'session_', 8) === 0) {
                return $frame['function'];
            }
        }
        return '';
    }
}

/** A setting from the environment (FPM: `env[...]`) or php.ini / `php -d` (`stickless_session.*`). */
function setting($name, $default)
{
    $value = getenv('STICKLESS_' . strtoupper($name));
    if ($value === false || $value === '') {
        $value = get_cfg_var('stickless_session.' . $name);
    }
    return ($value === false || $value === '') ? $default : (string) $value;
}

/**
 * PHP's session settings under the adapter: ids only from the cookie PHP is given (never from
 * URLs or forms), none in URLs, and `serialize()` as the session format.
 */
function configure()
{
    ini_set('session.use_only_cookies', '1');
    ini_set('session.use_trans_sid', '0');
    ini_set('session.serialize_handler', 'php_serialize');
}

/**
 * Takes the session headers out of the request, and makes the proxy's session PHP's session
 * for this request.
 */
function install()
{
    if (session_status() === PHP_SESSION_DISABLED) {
        return;
    }
    $prefix = setting('header_prefix', 'X-Session-');
    $serverPrefix = 'HTTP_' . strtoupper(strtr($prefix, '-', '_'));
    $length = strlen($serverPrefix);
    $id = null;
    $attributes = array();
    foreach ($_SERVER as $key => $value) {
        if (!is_string($key) || strncmp($key, $serverPrefix, $length) !== 0) {
            continue;
        }
        // Header names reach PHP upper-cased with "-" as "_"; attribute names have neither.
        $name = strtolower(strtr(substr($key, $length), '_', '-'));
        unset($_SERVER[$key], $_ENV[$key]);
        if ($name === 'id') {
            $id = (string) $value;
        } elseif ($name !== '') {
            $attributes[$name] = (string) $value;
        }
    }
    if ($id !== null && !preg_match('/\A[A-Za-z0-9_,.-]{1,256}\z/', $id)) {
        error_log('stickless_session: ERROR ignoring a malformed X-Session-Id');
        $id = null;
    }
    $io = new HeaderIo();
    $handler = new Handler($prefix, $id, $attributes, $io);

    // session.auto_start began a session with the configured handler before this file ran:
    // discard it (nothing was changed yet) and its cookie, and start ours in its place.
    $restart = session_status() === PHP_SESSION_ACTIVE;
    if ($restart) {
        session_abort();
        $io->dropCookie(session_name());
        session_id('');
    }

    configure();
    session_set_save_handler($handler, false);
    // PHP takes the id from its cookie: the proxy's id, under the configured session name (an
    // application that renames the session gets it from create_sid instead). A PHP session
    // cookie the client still holds from before never becomes the id.
    if ($id !== null) {
        $_COOKIE[session_name()] = $id;
    } else {
        unset($_COOKIE[session_name()]);
    }
    // Output waits here (up to output_buffer bytes), so that session changes made after
    // output began can still go out as headers.
    ob_start(array($handler, 'onFlush'), (int) setting('output_buffer', '1048576'));
    if ($restart) {
        session_start();
    }
}

if (PHP_SAPI !== 'cli' && !defined('STICKLESS_SESSION_INSTALLED')) {
    define('STICKLESS_SESSION_INSTALLED', true);
    install();
}
