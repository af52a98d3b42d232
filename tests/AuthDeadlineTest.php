<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;

/**
 * Unauthenticated connections do not hold slots (issue 12, item 9). With an
 * auth_token, a connection must present it within `auth_timeout` or be
 * closed; connections that have not presented it count towards their own
 * limit (`auth_max_pending`, whose oldest member makes room for a
 * newcomer), not towards `max_conn`; and a raw client is told why it is
 * refused.
 */
final class AuthDeadlineTest extends TaskqTestCase
{
    private const MAGIC = "\x89TASKQ\r\n";
    private const TOKEN = 's3cret-token';

    private const SERVER = <<<'PHP'
$settings = json_decode(getenv('TASKQ_SETTINGS'), true)
    + ['worker_num' => 1, 'task_worker_num' => 1, 'log_file' => "$dir/taskq.log", 'auth_token' => 's3cret-token'];
$server = new TaskServer('127.0.0.1', $port);
$server->set($settings);
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) {
    $s->send($fd, $data === 'stats' ? json_encode($s->stats()) : "ok:$data");
});
$server->on('Task', function ($s, $taskId, $src, $data) { record('task', ['label' => $data['label'] ?? null]); });
$server->start();
PHP;

    private function server(array $settings): ServerProcess
    {
        $server = $this->startServer(self::SERVER, ['TASKQ_SETTINGS' => json_encode($settings)]);
        $this->waitEvents('workerstart', 2, 5, $server);
        return $server;
    }

    /**
     * Runs `$body` in a client script with $port; with `$connect`, $c is a
     * TaskClient that presented the token. Fails on a non-zero exit or
     * stderr output; returns stdout.
     */
    private function producer(string $body, bool $connect = true, float $timeout = 10): string
    {
        $code = "<?php\n\$port = {$this->port};\n";
        if ($connect) {
            $code .= "\$c = new TaskClient(TASKQ_SOCK_TCP);\n\$c->set(['auth_token' => '" . self::TOKEN . "']);\n"
                . "if (!\$c->connect('127.0.0.1', \$port, 3)) { fwrite(STDERR, \"connect failed: {\$c->errCode} {\$c->errMsg}\"); exit(3); }\n";
        }
        [$exit, $out, $err] = $this->runPhp($code . $body, $timeout);
        $this->assertSame(0, $exit, "client script failed\nstdout: $out\nstderr: $err");
        $this->assertSame('', $err, 'client script wrote to stderr');
        return $out;
    }

    /** A raw socket to the server, after writing `$bytes`. */
    private function raw(string $bytes = '')
    {
        $s = stream_socket_client("tcp://127.0.0.1:{$this->port}", $errno, $errstr, 3);
        $this->assertNotFalse($s, "connect: $errno $errstr");
        if ($bytes !== '') {
            fwrite($s, $bytes);
        }
        return $s;
    }

    /** [seconds until the server closed `$s`, what it sent], or null if it stayed open for `$timeout`. */
    private static function closedWithin($s, float $timeout): ?array
    {
        $t = microtime(true);
        $got = '';
        stream_set_blocking($s, false);
        while (microtime(true) - $t < $timeout) {
            $d = @fread($s, 65536);
            if ($d === false || ($d === '' && feof($s))) {
                return [microtime(true) - $t, $got];
            }
            $got .= $d;
            usleep(5000);
        }
        return null;
    }

    public function testConnectionsThatNeverPresentTheTokenAreClosedAfterAuthTimeout(): void
    {
        $this->server(['auth_timeout' => 0.5]);
        $silent = $this->raw();
        $magicOnly = $this->raw(self::MAGIC);
        $prefix = $this->raw(substr(self::MAGIC, 0, 3));
        $t0 = microtime(true);
        foreach (['silent' => $silent, 'magic only' => $magicOnly, 'magic prefix' => $prefix] as $what => $s) {
            $closed = self::closedWithin($s, 5);
            $this->assertNotNull($closed, "$what: closed by the server");
            $this->assertGreaterThanOrEqual(0.4, microtime(true) - $t0, "$what: not before auth_timeout");
            if ($what === 'magic only') {
                $body = substr($closed[1], 5);
                $this->assertSame(4, ord($closed[1][4]), 'a taskq client gets an error frame');
                $this->assertSame(9003, unpack('N', substr($body, 0, 4))[1]);
                $this->assertStringContainsString('the auth_token was not presented within auth_timeout (500ms)', substr($body, 4));
            } else {
                $this->assertSame('', $closed[1], "$what: nothing is written to a client whose protocol is unknown");
            }
        }
        $this->waitLog('the auth_token was not presented within auth_timeout (500ms); connection closed', 3, $this->servers[0]);
        // a producer that presents the token is served past the deadline
        $out = $this->producer(<<<'PHP'
usleep(800000);
echo json_encode([$c->task(['label' => 'late']), $c->errCode]);
PHP);
        $this->assertIsInt(json_decode($out, true)[0], $out);
    }

    public function testSixHundredIdleSocketsDoNotLockProducersOutAtMaxConn500(): void
    {
        $soft = posix_getrlimit()['soft openfiles'];
        if (is_numeric($soft) && (int) $soft < 800) {
            $this->markTestSkipped("ulimit -n is $soft: 600 sockets need at least 800 descriptors");
        }
        $this->server(['max_conn' => 500, 'auth_timeout' => 60]);
        $idle = [];
        for ($i = 0; $i < 600; $i++) {
            $idle[] = $this->raw($i % 2 ? self::MAGIC : '');
        }
        $out = $this->producer(<<<'PHP'
$ids = [$c->task(['label' => 'first'])];
for ($i = 0; $i < 5; $i++) {
    $p = new TaskClient(TASKQ_SOCK_TCP);
    $p->set(['auth_token' => 's3cret-token']);
    $ids[] = $p->connect('127.0.0.1', $port, 3) ? $p->task(['label' => "producer-$i"]) : "connect failed: {$p->errCode} {$p->errMsg}";
}
echo json_encode($ids);
PHP, true, 20);
        foreach (json_decode($out, true) as $i => $id) {
            $this->assertIsInt($id, "producer $i is served with 600 idle sockets open: " . json_encode($id));
        }
        $this->waitEvents('task', 6);
        $this->waitLog('had not presented the auth_token; closed to make room for a new connection (auth_max_pending 128)', 3, $this->servers[0]);
        foreach ($idle as $s) {
            fclose($s);
        }
    }

    public function testOnlyAuthenticatedConnectionsCountTowardsMaxConn(): void
    {
        $this->server(['max_conn' => 2]);
        $idle = [$this->raw(), $this->raw(), $this->raw()];
        $out = $this->producer(<<<'PHP'
$held = [];
$r = [];
for ($i = 0; $i < 3; $i++) {
    $p = new TaskClient(TASKQ_SOCK_TCP);
    $p->set(['auth_token' => 's3cret-token']);
    $r[] = [@$p->connect('127.0.0.1', $port, 3), $p->errCode, $p->errMsg];
    $held[] = $p;
}
echo json_encode($r);
PHP, false);
        [$first, $second, $third] = json_decode($out, true);
        $this->assertTrue($first[0], 'three idle sockets do not count towards max_conn 2');
        $this->assertTrue($second[0]);
        $this->assertFalse($third[0], 'a third authenticated connection is over max_conn');
        $this->assertSame(9008, $third[1]);
        $this->assertSame('max_conn 2 reached', $third[2]);
        foreach ($idle as $s) {
            fclose($s);
        }
    }

    public function testARawClientIsToldWhyItIsRefused(): void
    {
        $this->server([]);
        $closed = self::closedWithin($this->raw("hello\n"), 3);
        $this->assertNotNull($closed, 'the raw client is disconnected');
        $this->assertLessThan(1.0, $closed[0], 'at once');
        $this->assertSame("taskq: this server requires an auth_token, which only a taskq client (TaskClient) can present; connection closed\n", $closed[1]);
    }

    public function testAuthOptionsAreValidated(): void
    {
        $server = new TaskServer('127.0.0.1', 0);
        foreach ([['auth_timeout', 0, "invalid value for option 'auth_timeout': 0"], ['auth_max_pending', -1, "invalid value for option 'auth_max_pending': -1 (allowed: an integer from 1 to 1000000)"]] as [$key, $value, $message]) {
            try {
                $server->set([$key => $value]);
                $this->fail("$key => $value accepted");
            } catch (TaskQ\Exception $e) {
                $this->assertStringContainsString($message, $e->getMessage());
            }
        }
    }
}
