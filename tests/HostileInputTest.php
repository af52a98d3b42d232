<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;

/**
 * Hostile and broken input (issue 4), one test per case: a frame over
 * package_max_length, garbage after the magic, a slowloris, thousands of
 * idle connections, more than max_conn connections, a connection flood, NUL
 * and invalid UTF-8 payloads, and auth_token (missing, wrong, raw client).
 *
 * Every test keeps a well-behaved client connected across the attack (only
 * the offending connection may be closed), has acknowledged tasks pending
 * (delayed) while it happens, and ends by checking that a fresh
 * well-behaved client is served, that every acknowledged task ran, and that
 * no taskq process crashed.
 */
final class HostileInputTest extends TaskqTestCase
{
    private const MAGIC = "\x89TASKQ\r\n";

    /**
     * Settings come from TASKQ_SETTINGS (JSON). onReceive: "stats" answers
     * stats(); anything else is recorded (length and base64) and answered
     * "ok:<data>". onTask records the task's label (array) or its base64
     * (string).
     */
    private const SERVER = <<<'PHP'
$settings = (getenv('TASKQ_SETTINGS') ? json_decode(getenv('TASKQ_SETTINGS'), true) : [])
    + ['worker_num' => 1, 'task_worker_num' => 2, 'log_file' => "$dir/taskq.log", 'package_max_length' => 65536, 'package_timeout' => 0.5];
$server = new TaskServer('127.0.0.1', $port);
$server->set($settings);
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) {
    if ($data === 'stats') { $s->send($fd, json_encode($s->stats())); return; }
    record('receive', ['len' => strlen($data), 'b64' => base64_encode($data)]);
    $s->send($fd, "ok:$data");
});
$server->on('Task', function ($s, $taskId, $src, $data) {
    record('task', is_array($data) && isset($data['label'])
        ? ['label' => $data['label'], 'task_id' => $taskId]
        : ['b64' => base64_encode(is_string($data) ? $data : serialize($data)), 'type' => get_debug_type($data), 'task_id' => $taskId]);
});
$server->start();
PHP;

    private ?string $token = null;
    private ServerProcess $server;
    private int $masterPid;
    private int $workerStarts;

    // ---------------------------------------------------------------- helpers

    private function server(array $settings = []): ServerProcess
    {
        $this->token = $settings['auth_token'] ?? null;
        $this->server = $this->startServer(self::SERVER, ['TASKQ_SETTINGS' => json_encode($settings)]);
        $n = ($settings['worker_num'] ?? 1) + ($settings['task_worker_num'] ?? 2);
        $this->waitEvents('workerstart', $n, 5, $this->server);
        $this->masterPid = $this->server->pid();
        $this->workerStarts = $n;
        return $this->server;
    }

    /**
     * Runs an attack script. Before $attack runs, $good (a well-behaved
     * client) is connected and has made a round trip and queued delayed
     * tasks; $attack runs with $port, $dir, $good and the helpers below and
     * sets $result; then $good must still work. Returns the decoded output.
     */
    private function attack(string $attack, float $timeout = 30): array
    {
        $code = "<?php\n\$port = {$this->port};\n\$dir = " . var_export($this->dir, true) . ";\n\$token = " . var_export($this->token, true) . ";\n\$MAGIC = " . var_export(self::MAGIC, true) . ";\n" . <<<'PHP'
$warnings = [];
set_error_handler(function ($no, $msg) use (&$warnings) { $warnings[] = $msg; return true; });
function good(): TaskClient {
    global $port, $token;
    $c = new TaskClient();
    if ($token !== null) { $c->set(['auth_token' => $token]); }
    if (!$c->connect('127.0.0.1', $port, 3)) { fwrite(STDERR, "well-behaved client cannot connect: {$c->errCode} {$c->errMsg}\n"); exit(3); }
    return $c;
}
/** Seconds a send/recv round trip took, or an error string. */
function roundtrip(TaskClient $c, string $m) {
    $t = microtime(true);
    if ($c->send($m) === false) { return "send failed: {$c->errCode} {$c->errMsg}"; }
    $r = $c->recv();
    return $r === "ok:$m" ? microtime(true) - $t : 'bad reply: ' . var_export($r, true) . " ({$c->errCode})";
}
function stats(TaskClient $c): array { $c->send('stats'); return json_decode($c->recv(), true); }
function raw() {
    global $port;
    $r = @stream_socket_client("tcp://127.0.0.1:$port", $errno, $errstr, 3);
    if (!$r) { fwrite(STDERR, "raw connect failed: $errno $errstr\n"); exit(3); }
    return $r;
}
/** Seconds until the server closed $r (EOF or reset), or null if it stayed open for $timeout. */
function closedWithin($r, float $timeout): ?float {
    $t = microtime(true);
    stream_set_blocking($r, false);
    while (microtime(true) - $t < $timeout) {
        $d = @fread($r, 65536);
        if ($d === false || ($d === '' && feof($r))) { return microtime(true) - $t; }
        usleep(2000);
    }
    return null;
}
$acked = [];
function submit(TaskClient $c, string $label, array $opt = []) {
    global $acked;
    $id = $c->task(['label' => $label], $opt);
    if ($id !== false) { $acked[] = $label; }
    return $id;
}
$good = good();
$out = ['before' => roundtrip($good, 'before')];
for ($i = 0; $i < 3; $i++) { submit($good, "pending-$i", ['delay' => 0.7]); submit($good, "before-$i"); }
$result = null;

PHP . $attack . "\n" . <<<'PHP'

$out['after'] = roundtrip($good, 'after');
for ($i = 0; $i < 3; $i++) { submit($good, "after-$i"); }
$out['result'] = $result;
$out['acked'] = $acked;
$out['warnings'] = $warnings;
echo json_encode($out, JSON_INVALID_UTF8_SUBSTITUTE | JSON_PRESERVE_ZERO_FRACTION);
PHP;
        [$exit, $stdout, $err] = $this->runPhp($code, $timeout);
        $this->assertSame(0, $exit, "attack script failed\nstdout: $stdout\nstderr: $err");
        $this->assertSame('', $err, 'attack script wrote to stderr');
        $r = json_decode($stdout, true);
        $this->assertIsArray($r, "attack output: $stdout");
        $this->assertIsFloat($r['before'], 'the well-behaved client was served before the attack: ' . json_encode($r['before']));
        $this->assertIsFloat($r['after'], 'the well-behaved connection still works after the attack: ' . json_encode($r['after']));
        $this->assertGreaterThanOrEqual(9, count($r['acked']), 'the well-behaved client got every task acknowledged');
        return $r;
    }

    /**
     * The server survived: same master, no worker respawned, a fresh
     * well-behaved client is served, and every acknowledged task ran.
     */
    private function assertStillServing(array $acked): void
    {
        $r = $this->attack('$result = true;');
        $acked = array_merge($acked, $r['acked']);
        $this->waitUntil(function () use ($acked) {
            return array_diff($acked, array_column($this->events('task'), 'label')) === [];
        }, 5, 'every acknowledged task to run', $this->server);
        $labels = array_column($this->events('task'), 'label');
        $this->assertSame([], array_values(array_diff($acked, $labels)), 'acknowledged tasks that never ran');
        $this->assertTrue($this->server->running(), 'the master is still running');
        $this->assertSame($this->masterPid, $this->server->pid());
        $this->assertCount($this->workerStarts, $this->events('workerstart'), 'no worker crashed and was respawned');
        $this->assertStringNotContainsString('abnormal exit', $this->log());
        $this->assertStringNotContainsString('panick', $this->log());
    }

    private static function median(array $values): float
    {
        sort($values);
        return (float) $values[intdiv(count($values), 2)];
    }

    private function assertLogged(string $needle): void
    {
        $this->waitUntil(fn () => str_contains($this->log(), $needle), 3, "a log line containing '$needle'\nlog:\n" . $this->log(), $this->server);
    }

    // ---------------------------------------------------------------- oversized frames

    public function testAFrameOverPackageMaxLengthClosesOnlyThatConnectionFromItsHeader(): void
    {
        $this->server();
        $r = $this->attack(<<<'PHP'
// a header announcing 100 MiB: refused before any body is sent
$s = raw();
fwrite($s, $MAGIC . pack('N', 100 << 20) . "\x01abc");
$result['header'] = closedWithin($s, 3);
// just over the limit (64 KiB)
$s = raw();
@fwrite($s, $MAGIC . pack('N', 65536 + 2) . "\x01" . str_repeat('x', 65536 + 1));
$result['just_over'] = closedWithin($s, 3);
// TaskClient: a task and a message over the server's limit
$c = good();
$result['task'] = $c->task(str_repeat('t', 100000));
$result['task_err'] = $c->errCode;
$d = good();
$d->send(str_repeat('m', 100000));
$result['send_reply'] = $d->recv();
// exactly at the limit is fine (64 KiB frame = kind byte + 65535 bytes)
$e = good();
$result['at_limit'] = $e->send(str_repeat('a', 65535)) === 65535 ? strlen((string) $e->recv()) : 'send failed';
PHP);
        $res = $r['result'];
        $this->assertIsFloat($res['header'], 'a frame header over package_max_length closes the connection');
        $this->assertLessThan(1.0, $res['header'], 'at once, from the header alone');
        $this->assertIsFloat($res['just_over'], 'a frame one byte over the limit closes the connection');
        $this->assertFalse($res['task'], 'task() over the limit is not acknowledged');
        $this->assertNotSame(0, $res['task_err']);
        $this->assertContains($res['send_reply'], ['', false], 'a message over the limit closes that connection');
        $this->assertSame(strlen('ok:') + 65535, $res['at_limit'], 'a message of exactly package_max_length passes');
        $this->assertSame([], array_values(array_filter($this->events('receive'), fn ($e) => $e['len'] > 65535)), 'nothing over the limit reached onReceive');
        $this->assertSame([], array_values(array_filter($this->events('task'), fn ($e) => isset($e['b64']))), 'the oversized task did not run');
        $this->assertLogged('exceeds the limit');
        $this->assertStillServing($r['acked']);
    }

    // ---------------------------------------------------------------- garbage

    public static function garbage(): array
    {
        return [
            'unknown frame kind' => [self::MAGIC . pack('N', 5) . "\xEEabcd", 'unknown'],
            'random bytes after the magic' => [self::MAGIC . "\x00\x00\x00\x09\x63" . random_bytes(4000), ''],
            'an empty frame' => [self::MAGIC . pack('N', 0), ''],
            'a truncated task frame' => [self::MAGIC . pack('N', 4) . "\x02\x00\x00\x00", ''],
            'an ack frame from a client' => [self::MAGIC . pack('N', 9) . "\x03" . str_repeat("\x00", 8), ''],
            'a wrong magic followed by frames' => ["\x89TASKQ\n\r" . pack('N', 5) . "\x01hello", null],
        ];
    }

    /** @dataProvider garbage */
    public function testGarbageClosesOnlyThatConnection(string $bytes, ?string $logNeedle): void
    {
        $this->server();
        $r = $this->attack('$s = raw(); fwrite($s, ' . var_export($bytes, true) . ');'
            . ($logNeedle === null ? ' stream_set_timeout($s, 3); $result = base64_encode((string) fread($s, 100));' : ' $result = closedWithin($s, 3);'));
        if ($logNeedle === null) {
            // not the magic: a foreign (raw) client, whose bytes are simply delivered, as in Swoole
            $this->assertStringStartsWith('ok:', base64_decode($r['result']), 'a foreign client is served, not closed, for its bytes');
        } else {
            $this->assertIsFloat($r['result'], 'the connection sending garbage is closed');
            $this->assertLessThan(1.0, $r['result'], 'at once');
            $this->assertLogged('connection closed');
            if ($logNeedle !== '') {
                $this->assertLogged($logNeedle);
            }
            $this->assertSame(['before', 'after'], array_map(fn ($e) => base64_decode($e['b64']), $this->events('receive')), 'no garbage reached onReceive');
        }
        $this->assertStillServing($r['acked']);
    }

    // ---------------------------------------------------------------- slowloris

    public function testASlowlorisIsDisconnectedAfterPackageTimeout(): void
    {
        $this->server(['package_timeout' => 0.5]);
        $r = $this->attack(<<<'PHP'
// an idle taskq connection with no partial message is left alone
$idle = good();
// stops in the middle of a frame
$stalled = raw();
fwrite($stalled, $MAGIC . pack('N', 100) . "\x01abc");
// keeps dribbling one byte every 100 ms, never finishing
$dribble = raw();
fwrite($dribble, $MAGIC . pack('N', 100) . "\x01");
// stops in the middle of the magic
$half = raw();
fwrite($half, "\x89TAS");
$t0 = microtime(true);
stream_set_blocking($stalled, false);
stream_set_blocking($dribble, false);
stream_set_blocking($half, false);
$closed = ['stalled' => null, 'dribble' => null, 'half' => null];
$served = [];
while (microtime(true) - $t0 < 5 && in_array(null, $closed, true)) {
    foreach (['stalled' => $stalled, 'dribble' => $dribble, 'half' => $half] as $k => $s) {
        if ($closed[$k] === null) {
            $d = @fread($s, 100);
            if ($d === false || ($d === '' && feof($s))) { $closed[$k] = microtime(true) - $t0; }
        }
    }
    if (!isset($last) || microtime(true) - $last >= 0.1) {
        $last = microtime(true);
        if ($closed['dribble'] === null) { @fwrite($dribble, 'x'); }
        $served[] = roundtrip($good, 'meanwhile-' . count($served));
    }
    usleep(5000);
}
$result = ['closed' => $closed, 'served' => $served, 'idle' => roundtrip($idle, 'idle'), 'idle_for' => microtime(true) - $t0];
PHP);
        $res = $r['result'];
        foreach ($res['closed'] as $k => $t) {
            $this->assertIsFloat($t, "the $k connection was disconnected");
            $this->assertGreaterThanOrEqual(0.4, $t, "$k: not before package_timeout");
            $this->assertLessThan(2.0, $t, "$k: soon after package_timeout (0.5 s)");
        }
        foreach ($res['served'] as $i => $rt) {
            $this->assertIsFloat($rt, "round trip $i of the well-behaved client during the slowloris: " . json_encode($rt));
        }
        $this->assertGreaterThanOrEqual(3, count($res['served']));
        $this->assertLessThan(0.25, self::median($res['served']), 'the well-behaved client was not held up by the slowloris (median round trip)');
        $this->assertIsFloat($res['idle'], 'an idle connection with no partial message is not closed by package_timeout');
        $this->assertGreaterThan(0.5, $res['idle_for']);
        $this->assertLogged('package_timeout');
        $this->assertStillServing($r['acked']);
    }

    // ---------------------------------------------------------------- many connections

    public function testThousandsOfIdleConnectionsCostLittleAndBlockNobody(): void
    {
        $soft = posix_getrlimit()['soft openfiles'];
        $n = (int) min(2000, (is_numeric($soft) ? (int) $soft : 2000) - 200);
        $this->assertGreaterThanOrEqual(500, $n, "ulimit -n ($soft) leaves room for at least 500 connections");
        $this->server();
        $rss = fn () => (int) (preg_match('/VmRSS:\s+(\d+) kB/', (string) @file_get_contents("/proc/{$this->masterPid}/status"), $m) ? $m[1] : 0);
        $rssBefore = $rss();

        $t0 = microtime(true);
        $conns = [];
        for ($i = 0; $i < $n; $i++) {
            $s = @stream_socket_client("tcp://127.0.0.1:{$this->port}", $errno, $errstr, 3);
            $this->assertNotFalse($s, "idle connection $i: $errno $errstr");
            if ($i % 2 === 0) {
                fwrite($s, self::MAGIC); // an idle taskq client
            }
            $conns[] = $s;
        }
        $r = $this->attack(<<<PHP
\$deadline = microtime(true) + 10;
do { \$st = stats(\$good); } while (\$st['connection_num'] < $n + 1 && microtime(true) < \$deadline && !usleep(20000));
\$rts = [];
for (\$i = 0; \$i < 20; \$i++) { \$rts[] = roundtrip(\$good, "rt-\$i"); }
\$result = ['connection_num' => \$st['connection_num'], 'rts' => \$rts];
PHP);
        $opened = microtime(true) - $t0;
        $rssAfter = $rss();
        $this->assertGreaterThanOrEqual($n + 1, $r['result']['connection_num'], "all $n idle connections are held");
        foreach ($r['result']['rts'] as $i => $rt) {
            $this->assertIsFloat($rt, "round trip $i with $n idle connections open");
            $this->assertLessThan(2.0, $rt);
        }
        $this->assertLessThan(0.25, self::median($r['result']['rts']), "median round trip with $n idle connections open");
        $perConn = ($rssAfter - $rssBefore) * 1024 / $n;
        $this->assertLessThan(16 * 1024, $perConn, sprintf('an idle connection costs a few KiB of master memory (measured %.1f KiB each)', $perConn / 1024));
        $this->assertLessThan(20, $opened, 'bounded');
        foreach ($conns as $s) {
            fclose($s);
        }
        $this->waitUntil(function () {
            $r = $this->attack('$result = stats($good)["connection_num"];');
            return $r['result'] <= 2;
        }, 10, 'the closed idle connections to be released', $this->server);
        $this->assertStillServing($r['acked']);
    }

    public function testConnectionsBeyondMaxConnAreClosedAtOnce(): void
    {
        $this->server(['max_conn' => 20]);
        $r = $this->attack(<<<'PHP'
// $good is connection 1; hold 19 more: the server is full
$held = [];
for ($i = 0; $i < 19; $i++) { $held[] = raw(); }
$deadline = microtime(true) + 5;
do { $st = stats($good); } while ($st['connection_num'] < 20 && microtime(true) < $deadline && !usleep(10000));
$result['full'] = $st['connection_num'];
$abortBefore = $st['abort_count'];
$extra = [];
for ($i = 0; $i < 10; $i++) {
    $s = @stream_socket_client("tcp://127.0.0.1:$port", $errno, $errstr, 3);
    $extra[] = $s ? closedWithin($s, 3) : 'refused';
}
$result['extra'] = $extra;
$x = new TaskClient();
if ($token !== null) { $x->set(['auth_token' => $token]); }
$result['extra_taskq'] = @$x->connect('127.0.0.1', $port, 1) ? $x->task(['label' => 'over-max-conn']) : false;
if ($result['extra_taskq'] !== false) { $acked[] = 'over-max-conn'; }
$st = stats($good);
$result['aborted'] = $st['abort_count'] - $abortBefore;
// a held connection still works
fwrite($held[0], 'held');
stream_set_timeout($held[0], 3);
$result['held'] = fread($held[0], 100);
// once some leave, newcomers get in again
foreach (array_splice($held, 10) as $s) { fclose($s); }
$deadline = microtime(true) + 5;
do { $in = good(); $rt = roundtrip($in, 'newcomer'); } while (!is_float($rt) && microtime(true) < $deadline && !usleep(20000));
$result['newcomer'] = $rt;
PHP);
        $res = $r['result'];
        $this->assertSame(20, $res['full'], 'max_conn connections are accepted');
        foreach ($res['extra'] as $i => $t) {
            $this->assertIsFloat($t, "connection " . (21 + $i) . ' beyond max_conn is closed');
            $this->assertLessThan(1.0, $t, 'at once');
        }
        $this->assertFalse($res['extra_taskq'], 'a taskq client beyond max_conn gets no acknowledgement');
        $this->assertGreaterThanOrEqual(11, $res['aborted'], 'abort_count counts the refused connections');
        $this->assertSame('ok:held', $res['held'], 'the connections within the limit still work');
        $this->assertIsFloat($res['newcomer'], 'a new client is served once there is room again');
        $this->assertLogged('max_conn 20 reached');
        $this->assertStillServing($r['acked']);
    }

    public function testAConnectionFloodDoesNotStopTheServer(): void
    {
        $this->server();
        $t0 = microtime(true);
        // two flooders (3,000 connections in all: plain, with the magic, with a partial frame) while the attack script works
        $flooders = [];
        for ($k = 0; $k < 2; $k++) {
            $script = "$this->dir/flood-$k.php";
            file_put_contents($script, "<?php\n\$port = {$this->port};\n\$M = " . var_export(self::MAGIC, true) . ";\n" . <<<'PHP'
$fail = 0;
for ($i = 0; $i < 1500; $i++) {
    $s = @stream_socket_client("tcp://127.0.0.1:$port", $errno, $errstr, 3);
    if (!$s) { $fail++; continue; }
    if ($i % 3 === 1) { @fwrite($s, $M); }
    if ($i % 3 === 2) { @fwrite($s, $M . pack('N', 50) . "\x01abc"); }
    fclose($s);
}
echo $fail;
PHP);
            $cmd = ['timeout', '-k', '1', '30', PHP_BINARY, '-n', '-d', 'display_errors=stderr', '-d', 'log_errors=0', $script];
            $flooders[] = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['file', "$script.out", 'w'], 2 => ['file', "$script.err", 'w']], $pipes, $this->dir);
        }
        $r = $this->attack(<<<'PHP'
$rts = [];
$ids = [];
$t = microtime(true);
while (microtime(true) - $t < 1.5) {
    $rts[] = roundtrip($good, 'during-' . count($rts));
    $ids[] = submit($good, 'during-' . count($ids));
    usleep(5000);
}
$result = ['rts' => $rts, 'ids' => $ids];
PHP);
        $codes = [];
        $this->waitUntil(function () use ($flooders, &$codes) {
            foreach ($flooders as $k => $p) {
                if (!isset($codes[$k])) {
                    $st = proc_get_status($p);
                    if ($st['running']) {
                        return false;
                    }
                    $codes[$k] = $st['exitcode'];
                }
            }
            return true;
        }, 30, 'the flooders to finish', $this->server);
        foreach ($flooders as $k => $p) {
            proc_close($p);
            $this->assertSame(0, $codes[$k], (string) @file_get_contents("$this->dir/flood-$k.php.err"));
            $this->assertSame('0', trim((string) file_get_contents("$this->dir/flood-$k.php.out")), "flooder $k: connections refused by the server");
        }
        foreach ($r['result']['rts'] as $i => $rt) {
            $this->assertIsFloat($rt, "round trip $i during the flood: " . json_encode($rt));
        }
        foreach ($r['result']['ids'] as $i => $id) {
            $this->assertIsInt($id, "task $i during the flood was acknowledged");
        }
        $stats = $this->waitUntil(function () {
            $st = $this->attack('$result = stats($good);')['result'];
            return $st['connection_num'] <= 2 ? $st : false;
        }, 10, 'the flood connections to be released', $this->server);
        $this->assertGreaterThanOrEqual(3000, $stats['accept_count'], 'every flood connection was accepted and closed');
        $this->assertLessThan(40, microtime(true) - $t0, 'bounded');
        $this->assertStillServing($r['acked']);
    }

    // ---------------------------------------------------------------- payload bytes

    public function testNulAndInvalidUtf8PayloadsTravelUntouched(): void
    {
        $this->server();
        $payloads = ["\0", "a\0b\0", "\xff\xfe\xfd", "\xc3\x28", "\xed\xa0\x80", "\xf8\x88\x80\x80\x80", "\xc0\xaf", "\0\xff" . random_bytes(3000) . "\0", str_repeat("\0", 60000)];
        $r = $this->attack('$payloads = ' . var_export($payloads, true) . <<<'PHP'
;
$result = ['echo' => [], 'ids' => [], 'raw' => null];
foreach ($payloads as $i => $p) {
    $good->send($p);
    $result['echo'][$i] = $good->recv() === "ok:$p";
    $result['ids'][$i] = [$good->task($p), $good->task(['bytes' => $p])];
}
// a foreign (raw) client sending NUL and invalid UTF-8
$s = raw();
fwrite($s, "\0\xff\xc3\x28raw");
stream_set_timeout($s, 3);
$result['raw'] = base64_encode(fread($s, 100));
PHP);
        $res = $r['result'];
        foreach ($payloads as $i => $p) {
            $this->assertTrue($res['echo'][$i], "payload $i came back identical through onReceive and send()");
            $this->assertIsInt($res['ids'][$i][0], "payload $i as a task was acknowledged");
            $this->assertIsInt($res['ids'][$i][1], "payload $i inside an array was acknowledged");
        }
        $this->assertSame("ok:\0\xff\xc3\x28raw", base64_decode($res['raw']), 'a raw client with NUL and invalid UTF-8 is served');
        $this->waitUntil(fn () => count(array_filter($this->events('task'), fn ($e) => isset($e['b64']))) >= 2 * count($payloads), 5, 'every payload task ran', $this->server);
        $byId = array_column(array_filter($this->events('task'), fn ($e) => isset($e['b64'])), null, 'task_id');
        foreach ($payloads as $i => $p) {
            [$stringId, $arrayId] = $res['ids'][$i];
            $this->assertSame('string', $byId[$stringId]['type']);
            $this->assertTrue($p === base64_decode($byId[$stringId]['b64']), "payload $i arrived byte for byte in onTask");
            $this->assertTrue(serialize(['bytes' => $p]) === base64_decode($byId[$arrayId]['b64']), "payload $i inside an array arrived byte for byte");
        }
        $received = array_map(fn ($e) => base64_decode($e['b64']), $this->events('receive'));
        foreach ($payloads as $i => $p) {
            $this->assertContains($p, $received, "payload $i reached onReceive untouched");
        }
        $this->assertStringNotContainsString('WARNING', $this->log(), 'nothing about these payloads is an error');
        $this->assertStillServing($r['acked']);
    }

    // ---------------------------------------------------------------- auth_token

    public function testAuthTokenRequiredAClientWithoutItCanSubmitNothing(): void
    {
        $this->server(['auth_token' => 's3cret-token']);
        $r = $this->attack(<<<'PHP'
$n = new TaskClient();
$result['connect'] = $n->connect('127.0.0.1', $port, 2);
$result['task'] = $n->task(['label' => 'unauthenticated']);
$result['task_err'] = [$n->errCode, $n->errMsg];
$m = new TaskClient();
$m->connect('127.0.0.1', $port, 2);
$m->send('unauthenticated-message');
$result['reply'] = $m->recv();
$a = new TaskClient();
$a->set(['ack' => true]);
$a->connect('127.0.0.1', $port, 2);
$result['acked_send'] = $a->send('unauthenticated-acked');
$result['acked_err'] = $a->errCode;
PHP);
        $res = $r['result'];
        $this->assertFalse($res['task'], 'no acknowledgement without the token');
        $this->assertSame(9003, $res['task_err'][0], 'errCode 9003: ' . $res['task_err'][1]);
        $this->assertContains($res['reply'], ['', false], 'a message without the token gets no reply');
        $this->assertFalse($res['acked_send']);
        $this->assertSame(9003, $res['acked_err']);
        $this->assertStillServing($r['acked']);
        $this->assertSame([], array_values(array_filter($this->events('task'), fn ($e) => ($e['label'] ?? '') === 'unauthenticated')), 'the unauthenticated task did not run');
        $this->assertSame([], array_values(array_filter($this->events('receive'), fn ($e) => str_starts_with(base64_decode($e['b64']), 'unauthenticated'))), 'no unauthenticated message reached onReceive');
        $this->assertLogged('before presenting the auth_token');
    }

    public function testAuthTokenWrongIsRefusedAtConnect(): void
    {
        $this->server(['auth_token' => 's3cret-token']);
        $r = $this->attack(<<<'PHP'
$result = [];
foreach (['wrong', 's3cret-toke', 's3cret-token-', str_repeat('x', 5000), "s3cret-token\0"] as $i => $t) {
    $w = new TaskClient();
    $w->set(['auth_token' => $t]);
    $ok = $w->connect('127.0.0.1', $port, 2);
    $result[] = [$ok, $w->errCode, $w->errMsg, $ok ? $w->task(['label' => "wrong-$i"]) : null];
}
// a burst of wrong tokens does not wear the server down
for ($i = 0; $i < 100; $i++) { $w = new TaskClient(); $w->set(['auth_token' => "guess-$i"]); $w->connect('127.0.0.1', $port, 2); }
PHP);
        foreach ($r['result'] as $i => [$ok, $code, $msg, $task]) {
            $this->assertFalse($ok, "wrong token $i: connect() fails");
            $this->assertSame(9003, $code, "wrong token $i: errCode 9003 ($msg)");
            $this->assertNull($task);
        }
        $this->assertLogged('wrong auth_token');
        $this->assertStillServing($r['acked']);
        $this->assertSame([], array_values(array_filter($this->events('task'), fn ($e) => str_starts_with($e['label'] ?? '', 'wrong-'))));
    }

    public function testAuthTokenRawClientsAreRefused(): void
    {
        $this->server(['auth_token' => 's3cret-token']);
        $r = $this->attack(<<<'PHP'
$s = raw();
fwrite($s, "raw-hello\n");
$result['closed'] = closedWithin($s, 3);
// a raw client sending the token as text is still a raw client
$s = raw();
fwrite($s, "s3cret-token\nraw-with-token");
$result['closed_token'] = closedWithin($s, 3);
// a non-taskq TaskClient cannot present it at all
$p = new TaskClient();
$p->set(['taskq_protocol' => false, 'auth_token' => 's3cret-token']);
try {
    $result['plain'] = $p->connect('127.0.0.1', $port, 2) ? ($p->send('plain-client') !== false ? $p->recv() : false) : false;
} catch (Throwable $e) {
    $result['plain'] = get_class($e);
}
PHP);
        $this->assertIsFloat($r['result']['closed'], 'a raw client is disconnected');
        $this->assertLessThan(1.0, $r['result']['closed'], 'at once');
        $this->assertIsFloat($r['result']['closed_token'], 'a raw client is disconnected even if it sends the token');
        $this->assertNotSame('ok:plain-client', $r['result']['plain'], 'a client without taskq protocol is not served');
        $received = array_map(fn ($e) => base64_decode($e['b64']), $this->events('receive'));
        foreach ($received as $m) {
            $this->assertStringNotContainsString('raw', $m, 'no raw bytes reached onReceive');
            $this->assertStringNotContainsString('plain-client', $m);
        }
        $this->assertLogged('cannot present the auth_token');
        $this->assertStillServing($r['acked']);
    }
}
