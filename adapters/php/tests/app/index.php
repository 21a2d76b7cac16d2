<?php
// A small PHP application written against PHP's own session API only, as an application that
// keeps sessions in files would be; tests/adapter_php.rs runs two instances of it behind the
// proxy, with and without the adapter. `?do=<action>`; pages answer with `instance: <INSTANCE>`
// and `id: <session_id()>` lines, then one `key <key> = <serialize(value)>` line per session
// key, sorted.

class CartItem
{
    public $sku;
    public $qty;

    public function __construct($sku, $qty)
    {
        $this->sku = $sku;
        $this->qty = $qty;
    }
}

function show()
{
    header('Content-Type: text/plain');
    echo 'instance: ', getenv('INSTANCE'), "\n";
    echo 'id: ', session_id(), "\n";
    $keys = isset($_SESSION) ? array_keys($_SESSION) : array();
    sort($keys, SORT_STRING);
    foreach ($keys as $key) {
        echo 'key ', $key, ' = ', serialize($_SESSION[$key]), "\n";
    }
}

$do = isset($_GET['do']) ? $_GET['do'] : 'show';
switch ($do) {
    case 'plain':
        // Never touches the session.
        echo 'instance: ', getenv('INSTANCE'), "\n";
        echo 'headers: ', implode(',', array_keys(array_filter($_SERVER, function ($k) {
            return stripos($k, 'HTTP_X_SESSION') === 0;
        }, ARRAY_FILTER_USE_KEY))), "\n";
        break;
    case 'show':
        session_start();
        show();
        break;
    case 'login':
        session_start();
        if (empty($_POST['user'])) {
            http_response_code(400);
            break;
        }
        session_regenerate_id(true);
        $_SESSION['user'] = $_POST['user'];
        $_SESSION['loginAt'] = 1700000000;
        show();
        break;
    case 'cart':
        session_start();
        $_SESSION['cart'] = array(new CartItem('A1', 2));
        $_SESSION['count'] = 3;
        $_SESSION['total'] = 19.5;
        $_SESSION['gift'] = false;
        $_SESSION['coupon'] = null;
        $_SESSION['note'] = "crème brûlée ✓";
        $_SESSION['user_id'] = 42;
        show();
        break;
    case 'add':
        session_start();
        $_SESSION['cart'][] = new CartItem($_GET['sku'], (int) $_GET['qty']);
        $_SESSION['count']++;
        show();
        break;
    case 'drop':
        session_start();
        unset($_SESSION[$_GET['key']]);
        show();
        break;
    case 'rotate':
        session_start();
        session_regenerate_id();
        show();
        break;
    case 'logout':
        session_start();
        $_SESSION = array();
        session_destroy();
        show();
        break;
    case 'logout-flash':
        session_start();
        session_destroy();
        session_start();
        $_SESSION['flash'] = 'logged out';
        show();
        break;
    case 'set':
        // Sets one key once both requests of a pair have read the session: the two run at the
        // same time, each on the session as it was before either wrote.
        session_start();
        $dir = getenv('BARRIER_DIR') . '/' . basename($_GET['pair']);
        @mkdir($dir);
        touch($dir . '/' . basename($_GET['key']));
        $deadline = microtime(true) + 10;
        while (count(glob($dir . '/*')) < 2 && microtime(true) < $deadline) {
            usleep(5000);
        }
        $_SESSION[$_GET['key']] = $_GET['value'];
        show();
        break;
    case 'flushed':
        // Output flushed to the client before the session changes: too late for headers.
        session_start();
        echo "streaming\n";
        flush();
        $_SESSION['late'] = 'lost';
        break;
    case 'closed-first':
        // The same, with the session written before the flush.
        session_start();
        $_SESSION['early'] = 'kept';
        session_write_close();
        echo "streaming\n";
        ob_flush();
        flush();
        break;
    case 'cleared':
        // The session written, then every header the application queued taken back.
        session_start();
        $_SESSION['cleared'] = 'kept';
        session_write_close();
        header_remove();
        echo "cleared\n";
        break;
    case 'after-output':
        // Output before the change, not flushed: the adapter's buffer still holds it.
        echo str_repeat('x', 10000), "\n";
        session_start();
        $_SESSION['after'] = 'kept';
        break;
    default:
        http_response_code(404);
}
