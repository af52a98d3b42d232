<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;

/**
 * Batches (issue 16): tasks queued with ['batch' => $name] through task()
 * or taskMulti() are counted as one batch, and TaskClient::batch($name)
 * reports total, done, failed and pending while they run and the failures
 * grouped by error at the end, as a page showing "these 10,000 emails"
 * going out needs. Unknown batches and bad names get clear errors.
 */
final class BatchTest extends TaskqTestCase
{
    /**
     * A task is ['n' => i, 'fail' => error or null]; every task first waits
     * (bounded) for the file "go", so progress can be read before anything
     * ran. Failing tasks are given up at once (task_max_attempts 1).
     */
    private const SERVER = <<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'task_worker_num' => 2, 'task_max_attempts' => 1, 'log_file' => "$dir/taskq.log"]
    + (getenv('TASKQ_STORE') ? ['task_store' => "$dir/store"] : []));
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) {});
$server->on('Task', function ($s, $taskId, $src, $data) use ($dir) {
    $deadline = microtime(true) + 20;
    while (!file_exists("$dir/go") && microtime(true) < $deadline) { usleep(5000); }
    if (!empty($data['fail'])) { throw new RuntimeException($data['fail']); }
    record('task', ['n' => $data['n']]);
});
$server->start();
PHP;

    private function server(bool $store = false): ServerProcess
    {
        $server = $this->startServer(self::SERVER, $store ? ['TASKQ_STORE' => '1'] : []);
        $this->waitEvents('workerstart', 3, 10, $server);
        return $server;
    }

    public static function queues(): array
    {
        return ['memory queue' => [false], 'task_store' => [true]];
    }

    /**
     * @dataProvider queues
     */
    public function testABatchIsCountedFromQueuedToTheEndWithFailuresByReason(bool $store): void
    {
        $server = $this->server($store);
        $out = $this->client(<<<'PHP'
$tasks = [];
for ($i = 0; $i < 20; $i++) {
    $tasks["mail-$i"] = ['n' => $i, 'fail' => $i % 7 === 3 ? '550 no such user' : ($i === 5 ? 'timed out' : null)];
}
$ids = $c->taskMulti($tasks, ['batch' => 'newsletter 12/2026']);
$one = $c->task(['n' => 20], ['batch' => 'newsletter 12/2026', 'priority' => 1]);
$other = $c->task(['n' => 21], ['batch' => 'other']);
$report = $c->batch('newsletter 12/2026');
echo json_encode([count(array_filter($ids, 'is_int')), is_int($one), is_int($other), $report]);
PHP);
        [$acked, $one, $other, $report] = json_decode($out, true);
        $this->assertSame([20, true, true], [$acked, $one, $other]);
        $this->assertSame('newsletter 12/2026', $report['batch']);
        $this->assertSame([21, 0, 0, 21], [$report['total'], $report['done'], $report['failed'], $report['pending']], 'nothing ran before "go"');
        $this->assertNull($report['finished_at']);
        $this->assertSame([], $report['failures']);
        $this->assertEqualsWithDelta(microtime(true), $report['started_at'], 30);

        touch("$this->dir/go");
        $report = null;
        $this->waitUntil(function () use (&$report) {
            $report = json_decode($this->client("echo json_encode(\$c->batch('newsletter 12/2026'));"), true);
            return $report['pending'] === 0;
        }, 15, 'the batch to end', $server);
        $this->assertSame([21, 17, 4, 0], [$report['total'], $report['done'], $report['failed'], $report['pending']]);
        $failures = $report['failures'];
        usort($failures, fn ($a, $b) => $b['count'] <=> $a['count']);
        $this->assertSame([3, 1], array_column($failures, 'count'), json_encode($failures));
        $this->assertStringStartsWith('RuntimeException: 550 no such user in ', $failures[0]['error'], 'grouped by the first line of the error');
        $this->assertStringStartsWith('RuntimeException: timed out in ', $failures[1]['error']);
        $this->assertGreaterThanOrEqual($report['started_at'], $report['finished_at']);

        $other = json_decode($this->client("echo json_encode(\$c->batch('other'));"), true);
        $this->assertSame([1, 1, 0, 0], [$other['total'], $other['done'], $other['failed'], $other['pending']], 'batches are counted apart');
        $ran = array_column($this->waitEvents('task', 18, 10, $server), 'n');
        sort($ran);
        $this->assertSame([0, 1, 2, 4, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 18, 19, 20, 21], $ran, 'every task not meant to fail ran once');
    }

    public function testUnknownBatchesAndBadNamesAreRefusedClearly(): void
    {
        $this->server();
        $out = $this->client(<<<'PHP'
$r = @$c->batch('never tagged');
echo json_encode([$r, $c->errCode, $c->errMsg]), "\n";
foreach (['', str_repeat('x', 129), "a\nb"] as $bad) {
    try { $c->batch($bad); echo "no exception\n"; }
    catch (TaskQ\Exception $e) { echo get_class($e), ' ', $e->getCode(), ': ', $e->getMessage(), "\n"; }
}
foreach ([42, '', ['x']] as $bad) {
    try { $c->task(1, ['batch' => $bad]); echo "no exception\n"; }
    catch (TaskQ\Exception $e) { echo $e->getMessage(), "\n"; }
}
echo json_encode($c->isConnected());
PHP);
        $lines = explode("\n", trim($out));
        [$r, $code, $msg] = json_decode($lines[0], true);
        $this->assertSame([false, 9011], [$r, $code]);
        $this->assertStringContainsString('no batch named "never tagged"', $msg);
        $this->assertSame('TaskQ\Exception 22: invalid batch name for batch($name): a batch name must be 1 to 128 bytes of printable UTF-8, got 0 bytes: ""', $lines[1]);
        $this->assertStringContainsString('got 129 bytes', $lines[2]);
        $this->assertStringContainsString('got 3 bytes: "a\nb"', $lines[3]);
        $this->assertSame("invalid value for task option 'batch' (allowed: a string of 1 to 128 bytes without control characters)", $lines[4]);
        $this->assertStringStartsWith("invalid batch name for task option 'batch': a batch name must be 1 to 128 bytes", $lines[5]);
        $this->assertStringStartsWith("invalid value for task option 'batch'", $lines[6]);
        $this->assertSame('true', $lines[7], 'a refused name costs no connection');
    }

    public function testAHostileBatchNameOnTheWireIsRefusedAndNothingIsQueued(): void
    {
        $server = $this->server();
        $s = stream_socket_client("tcp://127.0.0.1:{$this->port}", $errno, $errstr, 3);
        $this->assertNotFalse($s, "$errno $errstr");
        stream_set_timeout($s, 5);
        // A task frame (kind 2) flagged "in a batch" whose name holds a NUL.
        $name = "evil\0name";
        $body = chr(0x80) . pack('N', 0) . pack('J', 0) . pack('N', 0) . chr(strlen($name)) . $name . 'payload';
        fwrite($s, "\x89TASKQ\r\n" . pack('N', strlen($body) + 1) . chr(2) . $body);
        $head = fread($s, 5);
        $this->assertSame(5, strlen($head), 'an answer came');
        $len = unpack('N', $head)[1] - 1;
        $this->assertSame(4, ord($head[4]), 'an ERROR frame');
        $answer = fread($s, $len);
        $this->assertSame(9005, unpack('N', substr($answer, 0, 4))[1]);
        $this->assertStringContainsString('printable UTF-8', substr($answer, 4));
        fclose($s);
        touch("$this->dir/go");
        $stats = json_decode($this->client('echo json_encode(@$c->batch("evil"));'), true);
        $this->assertFalse($stats, 'no batch came of it');
        $this->assertSame([], $this->events('task'));
        $this->assertTrue($server->running());
    }
}
