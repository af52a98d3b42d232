<?php
use TaskQ\Tests\Support\TaskqTestCase;

/**
 * Issue 12.11, client-side truth: a connection the server closed reads as
 * closed and the next call says so; a task above the server's
 * package_max_length is refused naming the limit and the size; a delay
 * beyond the maximum is refused by the server too; taskMulti() failing
 * midway always says how many tasks were acknowledged.
 */
final class ClientTruthTest extends TaskqTestCase
{
    private const MAGIC = "\x89TASKQ\r\n";

    /** A server that closes a connection on "bye" and takes tasks up to 64 KiB. */
    private function server(): void
    {
        $this->startServer(<<<'PHP'
$s = new TaskServer('127.0.0.1', $port);
$s->set(['worker_num' => 1, 'task_worker_num' => 1, 'package_max_length' => 65536, 'log_file' => "$dir/taskq.log"]);
$s->on('Receive', function ($s, $fd, $r, $data) {
    if ($data === 'bye') {
        $s->close($fd);
    }
});
$s->on('Task', fn ($s, $id, $w, $data) => record('task', ['data' => strlen($data) > 100 ? strlen($data) : $data]));
$s->start();
PHP);
    }

    public function testAConnectionTheServerClosedIsNotConnectedAndSaysSo(): void
    {
        $this->server();
        $out = $this->client(<<<'PHP'
$r = [];
$c->send('bye');
$deadline = microtime(true) + 3;
while ($c->isConnected() && microtime(true) < $deadline) {
    usleep(10000);
}
$r['connected'] = $c->isConnected();
set_error_handler(function ($no, $msg) use (&$r) { $r['warnings'][] = $msg; return true; });
foreach (['send' => fn () => $c->send('x'), 'task' => fn () => $c->task('x'), 'again' => fn () => $c->send('y'), 'taskMulti' => fn () => $c->taskMulti(['a', 'b', 'c'])] as $what => $call) {
    $r[$what] = [$call(), $c->errCode, $c->errMsg];
}
$r['close'] = $c->close();
// The same through recv(): "" for the close (Swoole's answer), then the reason.
$d = new TaskClient(TASKQ_SOCK_TCP);
$d->connect('127.0.0.1', $port, 3);
$d->send('bye');
$r['recv'] = $d->recv();
$r['after_recv'] = [$d->isConnected(), $d->send('x'), $d->errCode, $d->errMsg];
// connect() again works.
$r['reconnect'] = [$d->connect('127.0.0.1', $port, 3), $d->isConnected(), is_int($d->task('after'))];
restore_error_handler();
echo json_encode($r);
PHP);
        $r = json_decode($out, true);
        $closed = 'the connection was closed by the server';
        $this->assertFalse($r['connected'], 'isConnected() is false once the server closed the connection');
        $this->assertSame([false, 104, $closed], $r['send']);
        $this->assertSame([false, 104, $closed], $r['task']);
        $this->assertSame([false, 104, $closed], $r['again']);
        $this->assertSame([false, 104, "$closed (0 of 3 tasks were acknowledged before and are queued)"], $r['taskMulti']);
        $this->assertTrue($r['close'], 'closing a connection the server closed is no error');
        foreach ($r['warnings'] as $w) {
            $this->assertStringNotContainsString('Broken pipe', $w);
        }
        $this->assertSame('', $r['recv']);
        $this->assertSame([false, false, 104, $closed], $r['after_recv']);
        $this->assertSame([true, true, true], $r['reconnect']);
        $this->waitEvents('task', 1);
        $this->assertSame(['after'], array_column($this->events('task'), 'data'), 'only the task sent after reconnecting ran');
    }

    public function testATaskAboveThePackageMaxLengthIsRefusedNamingLimitAndSize(): void
    {
        $this->server();
        $out = $this->client(<<<'PHP'
set_error_handler(fn () => true);
$r = [];
foreach ([100000, 1000000] as $size) {
    $d = new TaskClient(TASKQ_SOCK_TCP);
    $d->connect('127.0.0.1', $port, 3);
    $r[$size] = [$d->task(str_repeat('x', $size)), $d->errCode, $d->errMsg, $d->isConnected()];
}
// taskMulti: two acknowledged, the third too large, the fourth never answered.
$r['multi'] = [$c->taskMulti(['a', 'b', str_repeat('x', 100000), 'c']), $c->errCode, $c->errMsg];
echo json_encode($r);
PHP);
        $r = json_decode($out, true);
        foreach ([100000, 1000000] as $size) {
            $request = $size + 17; // encoding, priority, delay and attempts precede the payload
            $this->assertSame([false, 9009, "request of $request bytes exceeds the server's package_max_length of 65536 bytes", false], $r[$size], "a task of $size bytes");
        }
        [$multi, $code, $msg] = $r['multi'];
        $this->assertFalse($multi);
        $this->assertStringEndsWith('(2 of 4 tasks were acknowledged before and are queued)', $msg);
        $this->assertStringContainsString("request of 100017 bytes exceeds the server's package_max_length of 65536 bytes", $msg);
        $this->waitEvents('task', 2);
        $this->assertSame(['a', 'b'], array_column($this->events('task'), 'data'));
    }

    /** The server refuses a delay over a year from any client, not only from TaskClient's option check. */
    public function testADelayBeyondTheMaximumIsRefused(): void
    {
        $this->server();
        $out = $this->client(<<<'PHP'
set_error_handler(fn () => true);
$r = [];
try {
    $c->task('x', ['delay' => 31536001]);
} catch (TaskQ\Exception $e) {
    $r['option'] = $e->getMessage();
}
$r['year'] = is_int($c->task('x', ['delay' => 31536000]));
// A raw task frame: encoding 0, priority 0, delay 2^62 ms, attempts 0.
$s = stream_socket_client("tcp://127.0.0.1:$port", $errno, $errstr, 3);
stream_set_timeout($s, 3);
$body = "\x02" . "\x00" . pack('N', 0) . pack('J', 1 << 62) . pack('N', 0) . 'x';
fwrite($s, "\x89TASKQ\r\n" . pack('N', strlen($body)) . $body);
$reply = stream_get_contents($s);
$r['raw'] = strlen($reply) >= 9 ? [ord($reply[4]), unpack('N', substr($reply, 5, 4))[1], substr($reply, 9)] : bin2hex($reply);
echo json_encode($r);
PHP);
        $r = json_decode($out, true);
        $this->assertSame("invalid value for task option 'delay' (allowed: seconds from 0 to 31536000 (one year))", $r['option']);
        $this->assertTrue($r['year'], 'a delay of exactly one year is accepted');
        $this->assertSame([4, 9005, 'malformed task: delay of ' . (1 << 62) . ' ms exceeds the maximum of 31536000000 ms (one year)'], $r['raw']);
    }
}
