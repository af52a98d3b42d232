<?php
// Included first by every generated test server script.
// TASKQ_PORT and TASKQ_DIR come from the test; record() appends one JSON line
// per event to events.log so the test can assert what happened where;
// evaluate() runs PHP code a test sent, for servers that take orders.
$port = (int) getenv('TASKQ_PORT');
$dir = (string) getenv('TASKQ_DIR');

function record(string $event, array $fields = []): void
{
    $line = json_encode(['event' => $event, 'pid' => getmypid()] + $fields, JSON_INVALID_UTF8_SUBSTITUTE) . "\n";
    file_put_contents(getenv('TASKQ_DIR') . '/events.log', $line, FILE_APPEND | LOCK_EX);
}

/**
 * Runs $code with $s (the server), $ctx and $fd ($ctx['fd']) in scope and
 * returns what happened: result, warnings, exception, seconds, and where.
 */
function evaluate($s, string $code, array $ctx = []): array
{
    $w = [];
    set_error_handler(function ($no, $msg) use (&$w) { $w[] = $msg; return true; });
    $t0 = microtime(true);
    try {
        $r = (function ($s, $ctx, $fd) use ($code) { return eval($code); })($s, $ctx, $ctx['fd'] ?? null);
        $x = null;
    } catch (Throwable $e) {
        $r = null;
        $x = get_class($e) . ': ' . $e->getMessage();
    } finally {
        restore_error_handler();
    }
    return ['r' => $r, 'w' => $w, 'x' => $x, 't' => microtime(true) - $t0, 'worker_id' => $s->worker_id, 'pid' => getmypid()];
}
