<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;

/**
 * Backpressure and memory: a client that sends faster than its event worker
 * handles is held back by TCP once the worker has socket_buffer_size bytes
 * waiting in the master, instead of piling up in the master's memory; and
 * nothing is lost or reordered on the way.
 */
final class BackpressureTest extends TaskqTestCase
{
    /** The high-water mark the tests set (socket_buffer_size), 256 KiB. */
    private const MARK = 256 * 1024;
    /** Bytes of each message: an 8-digit sequence number and padding. */
    private const SIZE = 1000;

    /**
     * A server whose event workers record every message's sequence number
     * in recv-<pid>.txt (or "bad" for a damaged one). The worker that gets
     * the message "block" waits for the file "go" (at most 60 s) first.
     */
    private function server(int $workers, int $dispatchMode): ServerProcess
    {
        $mark = self::MARK;
        $size = self::SIZE;
        return $this->startServer(<<<PHP
\$server = new TaskServer('127.0.0.1', \$port);
\$server->set(['worker_num' => $workers, 'dispatch_mode' => $dispatchMode, 'socket_buffer_size' => $mark, 'log_file' => \$dir . '/taskq.log']);
\$server->on('Receive', function (\$server, \$fd, \$rid, \$data) use (\$dir) {
    static \$fh;
    \$fh ??= fopen(\$dir . '/recv-' . getmypid() . '.txt', 'a');
    if (\$data === 'block') {
        \$deadline = microtime(true) + 60;
        while (!is_file(\$dir . '/go') && microtime(true) < \$deadline) { usleep(10000); }
        fwrite(\$fh, "block\\n");
        return;
    }
    \$ok = strlen(\$data) === $size && substr(\$data, 8) === str_repeat('x', $size - 8);
    fwrite(\$fh, (\$ok ? (int) substr(\$data, 0, 8) : 'bad') . "\\n");
});
\$server->start();
PHP);
    }

    /** Starts a client that sends "block", then `$n` numbered messages as fast as it can. */
    private function startSender(int $n): array
    {
        $pad = str_repeat('x', self::SIZE - 8);
        return $this->startPhp(<<<PHP
<?php
\$c = new TaskClient(TASKQ_SOCK_TCP);
if (!\$c->connect('127.0.0.1', {$this->port}, 60)) { fwrite(STDERR, 'connect failed: ' . \$c->errCode); exit(3); }
\$c->send('block');
for (\$i = 0; \$i < $n; \$i++) {
    if (!\$c->send(sprintf('%08d', \$i) . '$pad')) { fwrite(STDERR, "send \$i failed: " . \$c->errCode); exit(4); }
    if (\$i % 256 === 0) { file_put_contents('{$this->dir}/sent', (string) \$i); }
}
file_put_contents('{$this->dir}/sent', 'all');
echo 'sent';
PHP, 90);
    }

    /** Lines every worker recorded, per worker pid. */
    private function received(): array
    {
        $out = [];
        foreach (glob("$this->dir/recv-*.txt") as $f) {
            $out[$f] = file($f, FILE_IGNORE_NEW_LINES);
        }
        return $out;
    }

    /**
     * Bytes the kernel holds between clients and the server on `$port`:
     * unsent on the client side plus unread on the server side.
     */
    private static function heldByKernel(int $port): int
    {
        $hex = sprintf(':%04X', $port);
        $sum = 0;
        foreach (file('/proc/net/tcp') ?: [] as $line) {
            $cols = preg_split('/\s+/', trim($line));
            if (!isset($cols[4]) || $cols[3] !== '01') {
                continue;
            }
            [$tx, $rx] = array_map('hexdec', explode(':', $cols[4]));
            if (str_ends_with($cols[1], $hex)) {
                $sum += $rx;
            } elseif (str_ends_with($cols[2], $hex)) {
                $sum += $tx;
            }
        }
        return $sum;
    }

    private static function rssBytes(int $pid): int
    {
        $status = (string) @file_get_contents("/proc/$pid/status");
        return preg_match('/VmRSS:\s+(\d+) kB/', $status, $m) ? (int) $m[1] * 1024 : 0;
    }

    public function testAClientFasterThanItsBlockedWorkerIsHeldBackByTcpAndLosesNothing(): void
    {
        $n = 48 * 1024; // 48 MiB: far beyond the mark and what the kernel buffers
        $server = $this->server(1, 2);
        $master = $server->pid();
        $rssBefore = self::rssBytes($master);
        $sender = $this->startSender($n);

        // The client gets stuck: its data waits in the kernel and it makes
        // no progress for half a second (or it got everything out, and the
        // assertions below fail).
        $last = null;
        $since = microtime(true);
        $this->waitUntil(function () use (&$last, &$since) {
            $sent = @file_get_contents("$this->dir/sent");
            if ($sent !== $last) {
                [$last, $since] = [$sent, microtime(true)];
            }
            return $sent === 'all'
                || (self::heldByKernel($this->port) >= 4 * self::MARK && microtime(true) - $since >= 0.5);
        }, 60, 'the client to get stuck or done', $server);
        $this->assertNotSame('all', $last, 'the client cannot get 48 MiB out while its worker is blocked');
        $growth = self::rssBytes($master) - $rssBefore;
        $this->assertLessThan(16 * 1024 * 1024, $growth,
            sprintf('the master holds back a blocked worker\'s client instead of buffering it (grew %.1f MiB)', $growth / 1048576));
        $this->assertSame([], array_merge(...array_values($this->received())), 'the worker is still blocked');

        touch("$this->dir/go");
        [$exit, $out, $err] = $this->finishPhp($sender, 90);
        $this->assertSame(0, $exit, "sender: $out $err");
        $this->assertSame('sent', $out);
        $this->waitUntil(fn () => count(array_merge(...array_values($this->received()))) >= $n + 1, 60,
            "all $n messages handled", $server);
        $lines = array_merge(...array_values($this->received()));
        $this->assertSame(array_merge(['block'], range(0, $n - 1)), array_map(fn ($l) => $l === 'block' ? $l : (int) $l, $lines),
            'every message delivered exactly once, in order');
        $this->assertStringNotContainsString('bad', implode(',', $lines));
    }

    public function testAWorkerBackedUpInDispatchMode3HoldsNoClientBack(): void
    {
        $n = 16 * 1024; // 16 MiB, 64 times the mark
        $server = $this->server(2, 3);
        $sender = $this->startSender($n);

        // One worker is blocked; the other takes the rest, so the client
        // gets everything out while the block holds.
        [$exit, $out, $err] = $this->finishPhp($sender, 90);
        $this->assertSame(0, $exit, "sender: $out $err");
        $this->assertSame('sent', $out);
        $this->assertFileDoesNotExist("$this->dir/go");

        touch("$this->dir/go");
        $this->waitUntil(fn () => count(array_merge(...array_values($this->received()))) >= $n + 1, 60,
            "all $n messages handled", $server);
        $perWorker = $this->received();
        $this->assertCount(2, $perWorker, 'both workers handled messages');
        $all = array_merge(...array_values($perWorker));
        $this->assertNotContains('bad', $all);
        $numbers = array_values(array_filter($all, fn ($l) => $l !== 'block'));
        sort($numbers);
        $this->assertSame(range(0, $n - 1), array_map('intval', $numbers), 'every message delivered exactly once');
        foreach ($perWorker as $lines) {
            $mine = array_map('intval', array_filter($lines, fn ($l) => $l !== 'block'));
            $sorted = $mine;
            sort($sorted);
            $this->assertSame($sorted, array_values($mine), 'each worker got its messages in order');
        }
    }
}
