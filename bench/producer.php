<?php
// One producer process for the "many producers" scenarios, started by
// bench/run.php. It connects, prints "ready", waits for a line on stdin (so
// all producers start together), submits its share and prints one JSON line.
//
//   php bench/producer.php <task|send|multi|redis> <host:port | unix path> <count> <first id>
//
// multi: taskMulti() calls of 1,000, counting the tasks acknowledged.

require __DIR__ . '/lib.php';

[$_, $mode, $target, $n, $first] = $argv;
$n = (int) $n;
$first = (int) $first;
$unix = !str_contains($target, ':');
[$host, $port] = $unix ? [$target, 0] : explode(':', $target);

$payloads = [];
for ($i = 0; $i < $n; $i++) {
    $payloads[] = Bench::payload($first + $i);
}

if ($mode === 'redis') {
    $r = stream_socket_client("tcp://$host:$port", $errno, $errstr, 5);
    stream_set_write_buffer($r, 0);
    $submit = function (string $p) use ($r) {
        fwrite($r, "*3\r\n\$5\r\nLPUSH\r\n\$2\r\nbq\r\n\$" . strlen($p) . "\r\n$p\r\n");
        $line = fgets($r);
        return $line !== false && $line[0] === ':';
    };
} else {
    $c = new TaskClient($unix ? TASKQ_SOCK_UNIX_STREAM : TASKQ_SOCK_TCP);
    if (!$c->connect($host, (int) $port, 5)) {
        fwrite(STDERR, "connect failed: $c->errMsg\n");
        exit(1);
    }
    $submit = $mode === 'task'
        ? fn (string $p) => $c->task($p) !== false
        : fn (string $p) => $c->send($p) !== false;
}
$batches = $mode === 'multi' ? array_chunk($payloads, 1000) : null;

echo "ready\n";
fgets(STDIN);
$ok = 0;
$t0 = hrtime(true);
if ($batches !== null) {
    foreach ($batches as $chunk) {
        $ok += count(array_filter($c->taskMulti($chunk) ?: [], 'is_int'));
    }
} else {
    foreach ($payloads as $p) {
        $ok += $submit($p) ? 1 : 0;
    }
}
$elapsed = hrtime(true) - $t0;
if (isset($c)) {
    $c->close();
}
echo json_encode(['n' => $n, 'ok' => $ok, 'elapsed_ns' => $elapsed, 'end_ns' => hrtime(true)]), "\n";
