<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;

/**
 * Acknowledged submission (issue 4): TaskClient::task() ids and what they
 * mean, the delay/priority/max_attempts options, value rules, send() with
 * 'ack', the errors (bad options, queue full, not connected, server gone,
 * server stopping) and persistent TASKQ_KEEP connections across objects and
 * across a server restart.
 */
final class AcknowledgedTaskTest extends TaskqTestCase
{
    /**
     * Settings come from TASKQ_SETTINGS (JSON). onTask records every run
     * (task id, src worker, worker id, type and serialize() of the data,
     * time); an array payload may carry 'label', 'block' (wait, bounded, for
     * the file release-<block>) and 'throw'. onReceive: "stats", "shutdown",
     * "task:<serialized>" ($server->task() from the event worker), anything
     * else is recorded and answered "ok:<data>".
     */
    private const SERVER = <<<'PHP'
$settings = (getenv('TASKQ_SETTINGS') ? json_decode(getenv('TASKQ_SETTINGS'), true) : [])
    + ['worker_num' => 1, 'task_worker_num' => 2, 'log_file' => "$dir/taskq.log"];
$server = new TaskServer('127.0.0.1', $port);
$server->set($settings);
$gen = (string) getenv('TASKQ_GEN');
$server->on('WorkerStart', function ($s, $id) use ($gen) { record('workerstart', ['id' => $id, 'gen' => $gen]); });
$server->on('Connect', function ($s, $fd, $rid) use ($gen) { record('connect', ['fd' => $fd, 'gen' => $gen]); });
$server->on('Receive', function ($s, $fd, $rid, $data) {
    if ($data === 'stats') { $s->send($fd, json_encode($s->stats())); return; }
    if ($data === 'shutdown') { $s->send($fd, json_encode($s->shutdown())); return; }
    if (str_starts_with($data, 'task:')) {
        $w = [];
        set_error_handler(function ($no, $msg) use (&$w) { $w[] = $msg; return true; });
        $id = $s->task(unserialize(substr($data, 5)));
        restore_error_handler();
        $s->send($fd, json_encode(['id' => $id, 'warnings' => $w]));
        return;
    }
    record('receive', ['data' => base64_encode($data), 'fd' => $fd]);
    $s->send($fd, "ok:$data");
});
$server->on('Task', function ($s, $taskId, $src, $data) use ($gen, $dir) {
    $e = ['task_id' => $taskId, 'src' => $src, 'worker_id' => $s->worker_id, 'type' => get_debug_type($data),
        'ser' => base64_encode(serialize($data)), 't' => microtime(true), 'gen' => $gen];
    if (is_array($data) && isset($data['label'])) { $e['label'] = $data['label']; }
    record('task', $e);
    if (is_array($data) && isset($data['block'])) {
        $deadline = microtime(true) + 10;
        while (!file_exists("$dir/release-{$data['block']}") && microtime(true) < $deadline) { usleep(5000); }
    }
    if (is_array($data) && !empty($data['throw'])) { throw new RuntimeException('boom ' . ($data['label'] ?? '')); }
});
$server->on('TaskFailed', function ($s, $taskId, $data, $error) {
    record('failed', ['task_id' => $taskId, 'worker_id' => $s->worker_id, 'ser' => base64_encode(serialize($data)),
        'label' => is_array($data) ? ($data['label'] ?? null) : null, 'error' => $error, 'argc' => func_num_args()]);
});
$server->start();
PHP;

    // ---------------------------------------------------------------- helpers

    private function server(array $settings = [], array $env = []): ServerProcess
    {
        $server = $this->startServer(self::SERVER, ['TASKQ_SETTINGS' => json_encode($settings)] + $env);
        $n = ($settings['worker_num'] ?? 1) + ($settings['task_worker_num'] ?? 2);
        $this->waitUntil(fn () => count($this->workerStarts($env['TASKQ_GEN'] ?? '')) >= $n, 5, "$n workers started", $server);
        return $server;
    }

    private function workerStarts(string $gen): array
    {
        return array_values(array_filter($this->events('workerstart'), fn ($e) => $e['gen'] === $gen));
    }

    /**
     * The head of every client script: $port, $dir, $warnings (every PHP
     * warning the script raises, collected instead of printed) and
     * connected() which returns a connected TaskClient or exits 3.
     */
    private function clientPrelude(): string
    {
        return "<?php\n\$port = {$this->port};\n\$dir = " . var_export($this->dir, true) . ";\n" . <<<'PHP'
$warnings = [];
set_error_handler(function ($no, $msg) use (&$warnings) { $warnings[] = $msg; return true; });
function connected(int $port, array $set = [], int $type = TASKQ_SOCK_TCP): TaskClient {
    $c = new TaskClient($type);
    if ($set) { $c->set($set); }
    if (!$c->connect('127.0.0.1', $port, 3)) { fwrite(STDERR, "connect failed: {$c->errCode} {$c->errMsg}\n"); exit(3); }
    return $c;
}
function waitFile(string $file, float $timeout = 15): void {
    $deadline = microtime(true) + $timeout;
    while (!file_exists($file)) {
        if (microtime(true) > $deadline) { fwrite(STDERR, "timed out waiting for $file\n"); exit(4); }
        usleep(5000);
    }
}

PHP;
    }

    /** Runs a client script (after the prelude); asserts exit 0 and an empty stderr; returns its JSON output decoded. */
    private function clientJson(string $body, float $timeout = 15): mixed
    {
        [$exit, $out, $err] = $this->runPhp($this->clientPrelude() . $body, $timeout);
        $this->assertSame(0, $exit, "client script failed\nstdout: $out\nstderr: $err");
        $this->assertSame('', $err, 'client script wrote to stderr');
        $decoded = json_decode($out, true);
        $this->assertNotNull($decoded, "client output is not JSON: $out");
        return $decoded;
    }

    /** Starts a client script (after the prelude) in the background. */
    private function background(string $body, float $timeout = 20): array
    {
        return $this->startPhp($this->clientPrelude() . $body, $timeout);
    }

    /** Waits (bounded) for a background script; asserts exit 0 and empty stderr; returns its JSON output. */
    private function finishBackground(array $h, float $timeout = 20): mixed
    {
        [$code, $stdout, $stderr] = $this->finishPhp($h, $timeout);
        $this->assertSame(0, $code, "background client failed\nstdout: $stdout\nstderr: $stderr");
        $this->assertSame('', $stderr, 'background client wrote to stderr');
        $decoded = json_decode($stdout, true);
        $this->assertNotNull($decoded, "client output is not JSON: $stdout");
        return $decoded;
    }

    private function stats(): array
    {
        return $this->clientJson('$c = connected($port); $c->send("stats"); echo $c->recv();');
    }

    /** onTask runs recorded so far, optionally only those with $label. */
    private function runs(?string $label = null): array
    {
        return array_values(array_filter($this->events('task'), fn ($e) => $label === null || ($e['label'] ?? null) === $label));
    }

    /**
     * A server with task_queue_max 5 whose only task worker runs the task
     * "blocker" until release('b'): what is submitted next queues.
     */
    private function serverWithItsOnlyTaskWorkerHeld(): ServerProcess
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 1, 'task_queue_max' => 5]);
        $this->clientJson('$c = connected($port); echo json_encode($c->task(["label" => "blocker", "block" => "b"]));');
        $this->waitRuns('blocker', 1, 5, $server);
        return $server;
    }

    private function waitRuns(string $label, int $n, float $timeout, ServerProcess $server): array
    {
        $this->waitUntil(fn () => count($this->runs($label)) >= $n, $timeout, "$n run(s) of task '$label'", $server);
        return $this->runs($label);
    }

    private function release(string $name): void
    {
        touch("$this->dir/release-$name");
    }

    // ---------------------------------------------------------------- ids and values

    public function testTaskReturnsDistinctIncreasingIdsAndEachAcknowledgedTaskRunsOnceWithThatId(): void
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 2]);
        $r = $this->clientJson(<<<'PHP'
$c = connected($port);
$ids = [];
for ($i = 0; $i < 200; $i++) { $ids[$i] = $c->task(['label' => "t$i"]); }
echo json_encode(['ids' => $ids, 'errCode' => $c->errCode, 'warnings' => $warnings]);
PHP);
        $ids = $r['ids'];
        $this->assertSame([], $r['warnings']);
        $this->assertSame(0, $r['errCode']);
        foreach ($ids as $i => $id) {
            $this->assertIsInt($id, "task() #$i returned " . var_export($id, true));
        }
        $sorted = $ids;
        sort($sorted);
        $this->assertSame($sorted, $ids, 'ids increase in submission order');
        $this->assertCount(200, array_unique($ids), 'ids are distinct');

        $this->waitUntil(fn () => count($this->runs()) >= 200, 10, '200 task runs', $server);
        $byLabel = [];
        foreach ($this->runs() as $run) {
            $byLabel[$run['label']][] = $run;
        }
        $this->assertCount(200, $byLabel);
        foreach ($ids as $i => $id) {
            $this->assertCount(1, $byLabel["t$i"], "task t$i ran exactly once");
            $run = $byLabel["t$i"][0];
            $this->assertSame($id, $run['task_id'], "onTask's \$taskId is the id task() returned (t$i)");
            $this->assertSame(-1, $run['src'], 'a client-submitted task has src_worker_id -1');
            $this->assertGreaterThanOrEqual(1, $run['worker_id'], 'ran in a task worker');
        }
        $this->assertSame([], $this->events('receive'), 'task() goes straight to the queue, no onReceive');
    }

    public function testValuesArriveIdenticalAndStringsTravelRaw(): void
    {
        // objects from clients only of the classes the server allows
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 1, 'task_allowed_classes' => ['stdClass']]);
        $r = $this->clientJson(<<<'PHP'
$o = new stdClass(); $o->a = 1; $o->list = [1, 2, ['x' => null]];
$values = [
    'plain string', "bin\0ary\xff\xfe\x00end", 's:3:"abc";', 'a:1:{i:0;i:1;}', 'N;', 'b:0;', '0', ' ',
    42, -7, PHP_INT_MAX, 1.5, -0.25, true, false, null, [], [1, 'two', 3.0], ['k' => ['nested' => [true]]], $o,
    str_repeat("\x00\x01\xff", 400000),
];
$c = connected($port);
$out = [];
foreach ($values as $v) {
    $id = $c->task($v);
    $out[] = ['id' => $id, 'ser' => base64_encode(serialize($v)), 'type' => get_debug_type($v)];
}
echo json_encode(['sent' => $out, 'warnings' => $warnings]);
PHP);
        $this->assertSame([], $r['warnings']);
        $sent = $r['sent'];
        $this->waitUntil(fn () => count($this->runs()) >= count($sent), 10, count($sent) . ' task runs', $server);
        $runs = array_column($this->runs(), null, 'task_id');
        foreach ($sent as $i => $s) {
            $this->assertIsInt($s['id'], "value #$i ({$s['type']}) was acknowledged");
            $this->assertArrayHasKey($s['id'], $runs, "value #$i ran");
            $this->assertSame($s['type'], $runs[$s['id']]['type'], "value #$i arrives with its type");
            $this->assertTrue($s['ser'] === $runs[$s['id']]['ser'], "value #$i ({$s['type']}) arrives identical (a string is never unserialized)");
        }
    }

    // ---------------------------------------------------------------- options

    public function testDelayHoldsATaskBackWithoutBlockingOthers(): void
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 1]);
        $r = $this->clientJson(<<<'PHP'
$c = connected($port);
$t0 = microtime(true);
$d = $c->task(['label' => 'delayed'], ['delay' => 1.0]);
$f = $c->task(['label' => 'fractional'], ['delay' => 0.4]);
$n = $c->task(['label' => 'now']);
echo json_encode(['t0' => $t0, 'ack' => microtime(true) - $t0, 'ids' => [$d, $f, $n], 'warnings' => $warnings]);
PHP);
        $this->assertSame([], $r['warnings']);
        foreach ($r['ids'] as $id) {
            $this->assertIsInt($id);
        }
        $this->assertLessThan(0.9, $r['ack'], 'delayed tasks are acknowledged at once, not after their delay');
        $delayed = $this->waitRuns('delayed', 1, 5, $server)[0];
        $fractional = $this->runs('fractional')[0];
        $now = $this->runs('now')[0];
        $this->assertSame(['now', 'fractional', 'delayed'], array_column($this->runs(), 'label'), 'the task without delay ran first, then by due time');
        $this->assertGreaterThanOrEqual(1.0 - 0.01, $delayed['t'] - $r['t0'], 'delay 1.0 s held the task back');
        $this->assertLessThan(1.0 + 2.0, $delayed['t'] - $r['t0'], 'the delayed task ran soon after it was due');
        $this->assertGreaterThanOrEqual(0.4 - 0.01, $fractional['t'] - $r['t0'], 'delay 0.4 s (fractional seconds) held the task back');
        $this->assertLessThan($fractional['t'], $now['t']);
        $this->assertSame($r['ids'][0], $delayed['task_id']);
        $this->assertCount(3, $this->runs(), 'each ran once');
    }

    public function testHigherPriorityRunsFirstAndEqualPrioritiesInSubmissionOrder(): void
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 1]);
        $this->clientJson(<<<'PHP'
$c = connected($port);
$ids = [$c->task(['label' => 'blocker', 'block' => 'b'])];
echo json_encode($ids);
PHP);
        $this->waitRuns('blocker', 1, 5, $server);
        $r = $this->clientJson(<<<'PHP'
$c = connected($port);
$ids = [];
foreach ([[1, 'a'], [5, 'b'], [1, 'c'], [-3, 'd'], [5, 'e'], [0, 'f'], [100, 'g'], [0, 'h']] as [$p, $name]) {
    $ids[$name] = $c->task(['label' => $name], ['priority' => $p]);
}
echo json_encode(['ids' => $ids, 'warnings' => $warnings]);
PHP);
        $this->assertSame([], $r['warnings']);
        $this->release('b');
        $this->waitUntil(fn () => count($this->runs()) >= 9, 5, 'all 9 runs', $server);
        $order = array_column(array_slice($this->runs(), 1), 'label');
        $this->assertSame(['g', 'b', 'e', 'a', 'c', 'f', 'h', 'd'], $order, 'queued tasks ran by priority (higher first), equal priorities in submission order');
    }

    public function testMaxAttemptsOverridesTheServerRetryLimit(): void
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 2, 'task_retry_max' => 3, 'task_retry_delay' => 0.02]);
        $r = $this->clientJson(<<<'PHP'
$c = connected($port);
echo json_encode([
    'one' => $c->task(['label' => 'one', 'throw' => true], ['max_attempts' => 1]),
    'two' => $c->task(['label' => 'two', 'throw' => true], ['max_attempts' => 2]),
    'default' => $c->task(['label' => 'default', 'throw' => true]),
    'warnings' => $warnings,
]);
PHP);
        $this->assertSame([], $r['warnings']);
        $this->waitUntil(fn () => count($this->events('failed')) >= 3, 8, 'three onTaskFailed', $server);
        $this->assertCount(1, $this->runs('one'), 'max_attempts 1: a single run');
        $this->assertCount(2, $this->runs('two'), 'max_attempts 2: two runs');
        $this->assertCount(4, $this->runs('default'), 'no max_attempts: 1 + task_retry_max (3) runs');
        $failed = array_column($this->events('failed'), null, 'label');
        foreach (['one', 'two', 'default'] as $label) {
            $this->assertSame($r[$label], $failed[$label]['task_id'], "onTaskFailed of '$label' carries its id");
        }
        $this->assertSame(3, $this->stats()['task_failed_count']);
    }

    public function testTaskOptionsAreValidated(): void
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 1]);
        $r = $this->clientJson(<<<'PHP'
$c = connected($port);
$bad = [
    ['delay', -1], ['delay', 'soon'], ['delay', [1]], ['delay', 40000000],
    ['priority', 'high'], ['priority', [1]],
    ['max_attempts', 0], ['max_attempts', 102], ['max_attempts', -1], ['max_attempts', 'x'],
];
$thrown = [];
foreach ($bad as $i => [$key, $value]) {
    try {
        $r = $c->task(['label' => "bad$i"], [$key => $value]);
        $thrown[] = [$key, 'returned ' . var_export($r, true)];
    } catch (Throwable $e) {
        $thrown[] = [$key, get_class($e), $e->getMessage()];
    }
}
$unknownWarnings = count($warnings);
$c->task(['label' => 'unknown'], ['dealy' => 1]);
$unknown = array_slice($warnings, $unknownWarnings);
try {
    $c->task(function () {});
    $closure = 'no exception';
} catch (Throwable $e) {
    $closure = get_class($e) . ': ' . $e->getMessage();
}
$sentinel = $c->task(['label' => 'sentinel']);
echo json_encode(['thrown' => $thrown, 'unknown' => $unknown, 'closure' => $closure, 'sentinel' => $sentinel, 'connected' => $c->isConnected()]);
PHP);
        foreach ($r['thrown'] as [$key, $class, $msg]) {
            $this->assertSame('TaskQ\Exception', $class, "bad '$key': " . ($msg ?? $class));
            $this->assertStringContainsString("'$key'", $msg, 'the message names the option');
        }
        $this->assertCount(1, $r['unknown'], 'an unknown task option raises one warning');
        $this->assertStringContainsString("'dealy'", $r['unknown'][0]);
        $this->assertStringContainsString('delay', $r['unknown'][0], 'the warning lists the known options');
        $this->assertStringContainsString('Closure', $r['closure'], 'an unserializable value throws');
        $this->assertIsInt($r['sentinel'], 'the client still works after the errors');
        $this->assertTrue($r['connected']);
        $this->waitRuns('sentinel', 1, 5, $server);
        $labels = array_column($this->runs(), 'label');
        $this->assertSame([], array_values(array_filter($labels, fn ($l) => str_starts_with((string) $l, 'bad'))), 'no task with a bad option reached the queue');
    }

    // ---------------------------------------------------------------- send() with ack

    public function testAckedSendWaitsForTheServerWhilePlainSendDoesNot(): void
    {
        // a listening socket that never accepts: the kernel completes the
        // handshake, so connect() works, but nobody will ever answer
        $r = $this->clientJson(<<<'PHP'
$mute = stream_socket_server('tcp://127.0.0.1:0');
$mutePort = (int) substr(strrchr(stream_socket_get_name($mute, false), ':'), 1);
$a = new TaskClient();
$a->set(['ack' => true]);
$a->connect('127.0.0.1', $mutePort, 1.0);
$t = microtime(true);
$acked = $a->send('hello');
$ackedTime = microtime(true) - $t;
$ackedErr = $a->errCode;
$p = new TaskClient();
$p->connect('127.0.0.1', $mutePort, 1.0);
$t = microtime(true);
$plain = $p->send('hello');
$plainTime = microtime(true) - $t;
echo json_encode(compact('acked', 'ackedTime', 'ackedErr', 'plain', 'plainTime'));
PHP);
        $this->assertFalse($r['acked'], 'without an answer, an acked send() fails');
        $this->assertSame(11, $r['ackedErr'], 'errCode 11 (timeout)');
        $this->assertGreaterThanOrEqual(0.95, $r['ackedTime'], 'it waited for the acknowledgement (the I/O timeout, 1 s)');
        $this->assertLessThan(4, $r['ackedTime'], 'bounded by the timeout');
        $this->assertSame(5, $r['plain'], 'a plain send() does not wait');
        $this->assertLessThan(0.5, $r['plainTime']);
    }

    public function testTaskWithoutAnAnswerTimesOutWith11(): void
    {
        $r = $this->clientJson(<<<'PHP'
$mute = stream_socket_server('tcp://127.0.0.1:0');
$mutePort = (int) substr(strrchr(stream_socket_get_name($mute, false), ':'), 1);
$c = new TaskClient();
$c->connect('127.0.0.1', $mutePort, 1.0);
$t = microtime(true);
$id = $c->task('x');
echo json_encode(['id' => $id, 'errCode' => $c->errCode, 'elapsed' => microtime(true) - $t, 'warnings' => $warnings]);
PHP);
        $this->assertFalse($r['id'], 'no id without an acknowledgement');
        $this->assertSame(11, $r['errCode'], 'errCode 11 (timeout)');
        $this->assertGreaterThanOrEqual(0.95, $r['elapsed'], 'it waited for the acknowledgement (the I/O timeout, 1 s)');
        $this->assertLessThan(4, $r['elapsed'], 'bounded by the connect timeout');
        $this->assertCount(1, $r['warnings']);
    }

    public function testAckedSendReturnsTheByteCountOnceTheServerTookEachMessage(): void
    {
        $server = $this->server(['worker_num' => 2, 'task_worker_num' => 1]);
        // replies to earlier messages arrive while send() waits for acks: recv() still gets each, in order
        $r = $this->clientJson(<<<'PHP'
$c = connected($port, ['ack' => true]);
$results = [];
for ($i = 0; $i < 300; $i++) { $results[] = $c->send("m-$i"); }
$bad = [];
for ($i = 0; $i < 300; $i++) { if (($got = $c->recv()) !== "ok:m-$i") { $bad[] = [$i, $got]; } }
echo json_encode(['results' => $results, 'bad' => $bad, 'warnings' => $warnings]);
PHP);
        $this->assertSame([], $r['warnings']);
        foreach ($r['results'] as $i => $n) {
            $this->assertSame(strlen("m-$i"), $n, "acked send #$i returns the byte count");
        }
        $this->assertSame([], $r['bad'], 'replies missing or out of order behind the acks');

        $got = array_map(fn ($e) => base64_decode($e['data']), $this->events('receive'));
        $this->assertSame(array_map(fn ($i) => "m-$i", range(0, 299)), $got, 'each acknowledged message reached onReceive once, in order');
    }

    // ---------------------------------------------------------------- errors

    public function testAFullQueueRefusesFastWith9001AndAcceptsAgainOnceDrained(): void
    {
        $server = $this->serverWithItsOnlyTaskWorkerHeld();

        $r = $this->clientJson(<<<'PHP'
$c = connected($port);
$res = [];
$t = microtime(true);
for ($i = 0; $i < 8; $i++) {
    $id = $c->task(['label' => "q$i"]);
    $res[] = [$id, $c->errCode, $c->errMsg];
}
$elapsed = microtime(true) - $t;
// a worker's $server->task() beyond the cap goes to onTaskFailed
$c->send('task:' . serialize(['label' => 'from-worker']));
$fromWorker = json_decode($c->recv(), true);
echo json_encode(['res' => $res, 'elapsed' => $elapsed, 'warnings' => $warnings, 'fromWorker' => $fromWorker, 'connected' => $c->isConnected()]);
PHP);
        for ($i = 0; $i < 5; $i++) {
            $this->assertIsInt($r['res'][$i][0], "q$i fits in the queue (task_queue_max 5)");
        }
        for ($i = 5; $i < 8; $i++) {
            [$id, $code, $msg] = $r['res'][$i];
            $this->assertFalse($id, "q$i is refused: the queue is full");
            $this->assertSame(9001, $code, "q$i errCode");
            $this->assertStringContainsString('full', $msg);
        }
        $this->assertLessThan(1.0, $r['elapsed'], 'a full queue fails fast');
        $this->assertCount(3, $r['warnings'], 'one warning per refused task');
        $this->assertTrue($r['connected'], 'a refusal does not cost the connection');
        $failed = $this->waitUntil(fn () => array_values(array_filter($this->events('failed'), fn ($e) => $e['label'] === 'from-worker')), 5, "onTaskFailed for the worker's task() beyond the cap", $server);
        $this->assertSame(0, $failed[0]['worker_id'], 'reported in the worker that called task()');
        $this->assertStringContainsString('full', $failed[0]['error']);
        if (is_int($r['fromWorker']['id'])) {
            $this->assertSame($r['fromWorker']['id'], $failed[0]['task_id']);
        }

        $this->release('b');
        $after = $this->clientJson('$c = connected($port); echo json_encode($c->task(["label" => "after"]));');
        $this->assertIsInt($after, 'accepted again once there is room');
        $this->waitRuns('after', 1, 5, $server);
        $labels = array_column($this->runs(), 'label');
        $this->assertSame(['blocker', 'q0', 'q1', 'q2', 'q3', 'q4', 'after'], $labels, 'every acknowledged task ran once; no refused one ran');
        $stats = $this->stats();
        $this->assertSame(0, $stats['task_queue_num']);
        $this->assertSame(0, $stats['tasking_num']);
    }

    public function testTaskWithoutAConnectionFailsWith5001(): void
    {
        $this->server();
        $r = $this->clientJson(<<<'PHP'
$out = [];
$n = new TaskClient();
$out['never'] = [$n->task('x'), $n->errCode, $n->errMsg];
$c = connected($port);
$out['ok'] = $c->task('y');
$c->close();
$out['closed'] = [$c->task('z'), $c->errCode, $c->errMsg];
$f = new TaskClient();
@$f->connect('127.0.0.1', 1, 0.5);
$out['failed_connect'] = [$f->task('w'), $f->errCode];
$out['warnings'] = $warnings;
echo json_encode($out);
PHP);
        $this->assertSame([false, 5001, 'client is not connected to server'], $r['never']);
        $this->assertIsInt($r['ok']);
        $this->assertSame([false, 5001, 'client is not connected to server'], $r['closed']);
        $this->assertSame([false, 5001], $r['failed_connect']);
        $notConnected = array_filter($r['warnings'], fn ($w) => str_contains($w, 'not connected'));
        $this->assertCount(3, $notConnected, 'each call warns');
    }

    public function testTaskAfterTheServerWentAwayFailsClearly(): void
    {
        $server = $this->server();
        $r = $this->clientJson(<<<'PHP'
$c = connected($port);
$first = $c->task('before');
$c->send('shutdown');
$c->recv();
// wait (bounded) until nothing listens any more
$deadline = microtime(true) + 10;
do {
    $probe = @stream_socket_client("tcp://127.0.0.1:$port", $errno, $errstr, 0.2);
    if ($probe) { fclose($probe); usleep(20000); }
} while ($probe && microtime(true) < $deadline);
$t = microtime(true);
$gone = $c->task('after');
echo json_encode(['first' => $first, 'gone' => $gone, 'errCode' => $c->errCode, 'errMsg' => $c->errMsg, 'elapsed' => microtime(true) - $t, 'warnings' => count($warnings)]);
PHP);
        $this->assertIsInt($r['first']);
        $this->assertFalse($r['gone'], 'no id from a server that is gone');
        $this->assertNotSame(0, $r['errCode']);
        $this->assertNotSame('', $r['errMsg']);
        $this->assertNotContains($r['errCode'], [9001, 9003, 9004], "a misleading errCode: {$r['errMsg']}");
        $this->assertLessThan(2, $r['elapsed'], 'fails at once, not after a long wait');
        $this->assertGreaterThanOrEqual(1, $r['warnings']);
        $this->waitUntil(fn () => $server->tree() === [], 10, 'the server to exit', $server);
    }

    public function testTaskWhileTheServerIsStoppingFailsWith9006(): void
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 1, 'max_wait_time' => 8]);
        $r1 = $this->clientJson('$c = connected($port); echo json_encode($c->task(["label" => "blocker", "block" => "b"]));');
        $this->assertIsInt($r1);
        $this->waitRuns('blocker', 1, 5, $server);
        $bg = $this->background(<<<'PHP'
$c = connected($port);
touch("$dir/connected");
waitFile("$dir/stopping");
$deadline = microtime(true) + 5;
do { $id = $c->task('probe'); } while ($id !== false && microtime(true) < $deadline && !usleep(10000));
echo json_encode(['id' => $id, 'errCode' => $c->errCode, 'errMsg' => $c->errMsg]);
PHP);
        $this->waitUntil(fn () => file_exists("$this->dir/connected"), 5, 'the client connected', $server);
        posix_kill($server->pid(), SIGTERM);
        $this->waitUntil(fn () => str_contains($this->log(), 'SIGTERM'), 5, 'the server began stopping', $server);
        touch("$this->dir/stopping");
        $r = $this->finishBackground($bg, 10);
        $this->release('b');
        $this->assertFalse($r['id']);
        $this->assertSame(9006, $r['errCode'], "a stopping server refuses new tasks with 9006 while it finishes what runs; got: {$r['errMsg']}");
        $this->waitUntil(fn () => $server->tree() === [], 10, 'the server to exit', $server);
    }

    // ---------------------------------------------------------------- taskMulti()

    public function testTaskMultiAcknowledgesEveryTaskInBatchesUnderItsKey(): void
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 2]);
        $r = $this->clientJson(<<<'PHP'
$c = connected($port);
$tasks = [];
for ($i = 0; $i < 2500; $i++) { $tasks[$i] = ['label' => "m$i"]; }
$tasks['big'] = ['label' => 'mbig', 'pad' => str_repeat('x', 600000)];
$tasks['str'] = ['label' => 'mstr'];
$ids = $c->taskMulti($tasks, ['max_attempts' => 2]);
$empty = $c->taskMulti([]);
echo json_encode(['ids' => $ids, 'empty' => $empty, 'errCode' => $c->errCode, 'warnings' => $warnings, 'after' => $c->task(['label' => 'after'])]);
PHP, 30);
        $this->assertSame([], $r['warnings']);
        $this->assertSame(0, $r['errCode']);
        $this->assertSame([], $r['empty'], 'no tasks, no ids');
        $ids = $r['ids'];
        $keys = array_merge(range(0, 2499), ['big', 'str']);
        $this->assertSame($keys, array_keys($ids), 'the keys of the input, in its order');
        foreach ($ids as $k => $id) {
            $this->assertIsInt($id, "task [$k] got " . var_export($id, true));
        }
        $list = array_values($ids);
        $sorted = $list;
        sort($sorted);
        $this->assertSame($sorted, $list, 'ids increase in submission order');
        $this->assertCount(2502, array_unique($list));
        $this->assertIsInt($r['after'], 'the connection serves task() afterwards');

        $this->waitUntil(fn () => count($this->runs()) >= 2503, 20, '2503 task runs', $server);
        $byLabel = [];
        foreach ($this->runs() as $run) {
            $byLabel[$run['label']][] = $run;
        }
        foreach ($ids as $k => $id) {
            $label = "m$k";
            $this->assertCount(1, $byLabel[$label], "task [$k] ran exactly once");
            $this->assertSame($id, $byLabel[$label][0]['task_id'], "onTask's \$taskId is the id taskMulti() gave [$k]");
        }
        $big = unserialize(base64_decode($byLabel['mbig'][0]['ser']));
        $this->assertSame(600000, strlen($big['pad']), 'a large task arrives whole');
    }

    public function testTaskMultiGivesFalseInPlaceOfRefusedTasksAndKeepsTheRest(): void
    {
        $server = $this->serverWithItsOnlyTaskWorkerHeld();
        $r = $this->clientJson(<<<'PHP'
$c = connected($port);
$tasks = [];
for ($i = 0; $i < 8; $i++) { $tasks["k$i"] = ['label' => "q$i"]; }
$ids = $c->taskMulti($tasks);
echo json_encode(['ids' => $ids, 'errCode' => $c->errCode, 'errMsg' => $c->errMsg, 'warnings' => $warnings, 'connected' => $c->isConnected()]);
PHP);
        $this->assertSame(['k0', 'k1', 'k2', 'k3', 'k4', 'k5', 'k6', 'k7'], array_keys($r['ids']));
        for ($i = 0; $i < 5; $i++) {
            $this->assertIsInt($r['ids']["k$i"], "k$i fits in the queue (task_queue_max 5)");
        }
        for ($i = 5; $i < 8; $i++) {
            $this->assertFalse($r['ids']["k$i"], "k$i is refused: the queue is full");
        }
        $this->assertSame(9001, $r['errCode'], 'errCode tells the first refusal');
        $this->assertStringContainsString('full', $r['errMsg']);
        $this->assertCount(1, $r['warnings'], 'one warning for the call');
        $this->assertTrue($r['connected'], 'a refusal does not cost the connection');
        $this->release('b');
        $this->waitRuns('q4', 1, 5, $server);
        usleep(200000);
        $labels = array_column($this->runs(), 'label');
        $this->assertSame(['blocker', 'q0', 'q1', 'q2', 'q3', 'q4'], $labels, 'every acknowledged task ran once; no refused one ran');
    }

    public function testTaskMultiErrors(): void
    {
        $server = $this->server();
        $r = $this->clientJson(<<<'PHP'
$out = [];
$n = new TaskClient();
$out['never'] = [$n->taskMulti(['x']), $n->errCode, $n->errMsg];
$out['never_empty'] = [$n->taskMulti([]), $n->errCode];
$c = connected($port);
try { $c->taskMulti(['ok', 'bad' => function () {}]); $out['resource'] = 'no exception'; }
catch (Throwable $e) { $out['resource'] = [get_class($e), $e->getMessage()]; }
try { $c->taskMulti(['x'], ['priority' => 'high']); $out['option'] = 'no exception'; }
catch (Throwable $e) { $out['option'] = [get_class($e), $e->getMessage()]; }
$out['still'] = $c->taskMulti(['still']);
$raw = connected($port, ['taskq_protocol' => false]);
$out['raw'] = [$raw->taskMulti(['x']), $raw->errCode, $raw->errMsg];
$c->close();
$out['closed'] = [$c->taskMulti(['z']), $c->errCode];
$out['warnings'] = count($warnings);
echo json_encode($out);
PHP);
        $this->assertSame([false, 5001, 'client is not connected to server'], $r['never']);
        $this->assertSame([false, 5001], $r['never_empty'], 'not connected, even with nothing to submit');
        $this->assertSame('TaskQ\Exception', $r['resource'][0]);
        $this->assertStringContainsString('task [bad]', $r['resource'][1], 'names the key of the bad task');
        $this->assertStringContainsString("Serialization of 'Closure' is not allowed", $r['resource'][1], 'and what was wrong with it');
        $this->assertSame('TaskQ\Exception', $r['option'][0]);
        $this->assertStringContainsString("task option 'priority'", $r['option'][1]);
        $this->assertCount(1, $r['still']);
        $this->assertIsInt($r['still'][0], 'nothing was sent for the calls that threw; the connection still works');
        $this->assertFalse($r['raw'][0]);
        $this->assertSame(71, $r['raw'][1], 'EPROTO');
        $this->assertStringContainsString('taskMulti()', $r['raw'][2]);
        $this->assertSame([false, 5001], $r['closed']);
        $this->assertSame(4, $r['warnings'], 'each failed call warns once');
        // acknowledged is not yet run: wait for it, then for any stray run
        $this->waitUntil(fn () => count($this->runs()) >= 1, 5, 'the run of "still"', $server);
        usleep(200000);
        $this->assertCount(1, $this->runs(), 'only "still" ran');
    }

    public function testTaskMultiSaysHowManyWereAcknowledgedWhenTheConnectionDrops(): void
    {
        // A stand-in server that answers the first 3 tasks, then hangs up.
        $sock = "$this->dir/fake.sock";
        $fake = $this->startPhp("<?php\n\$s = stream_socket_server('unix://$sock');\n" . <<<'PHP'
$c = stream_socket_accept($s, 10);
$buf = '';
while (strlen($buf) < 8 + 3 * 20 && ($chunk = fread($c, 65536)) !== false && $chunk !== '') { $buf .= $chunk; }
// ACK, ERROR 9001 (refused), ACK: three answers, two acknowledgements
fwrite($c, pack('NCJ', 9, 3, 1001) . pack('NCN', 1 + 4 + 4, 4, 9001) . 'full' . pack('NCJ', 9, 3, 1003));
fclose($c);
echo 'served';
PHP, 15);
        $this->waitUntil(fn () => self::unixListening($sock), 5, 'the stand-in server to listen');
        $r = $this->clientJson(<<<PHP
\$c = new TaskClient(TASKQ_SOCK_UNIX_STREAM);
\$c->connect('$sock', 0, 3);
\$ids = \$c->taskMulti(['a', 'b', 'c', 'd', 'e']);
echo json_encode(['ids' => \$ids, 'errCode' => \$c->errCode, 'errMsg' => \$c->errMsg, 'connected' => \$c->isConnected(), 'warnings' => count(\$warnings)]);
PHP);
        [$code, $out] = $this->finishPhp($fake, 10);
        $this->assertSame([0, 'served'], [$code, $out]);
        $this->assertFalse($r['ids']);
        $this->assertSame(104, $r['errCode'], "ECONNRESET: {$r['errMsg']}");
        $this->assertStringContainsString('2 of 5 tasks were acknowledged before and are queued', $r['errMsg']);
        $this->assertFalse($r['connected']);
        $this->assertSame(1, $r['warnings']);
    }

    // ---------------------------------------------------------------- TASKQ_KEEP

    public function testKeepReusesOneConnectionAcrossObjectsAndClose(): void
    {
        $server = $this->server();
        $r = $this->clientJson(<<<'PHP'
$ids = [];
foreach ([TASKQ_SOCK_TCP | TASKQ_KEEP, SWOOLE_SOCK_TCP | SWOOLE_KEEP] as $type) {
    for ($i = 0; $i < 5; $i++) {
        $k = new TaskClient($type);
        if (!$k->connect('127.0.0.1', $port, 3)) { fwrite(STDERR, "connect failed: {$k->errCode}\n"); exit(3); }
        $ids[] = $k->task(['label' => 'keep']);
        $k->close();
        unset($k);
    }
}
// close(true) really closes: the next persistent client opens a new connection
$k = new TaskClient(TASKQ_SOCK_TCP | TASKQ_KEEP);
$k->connect('127.0.0.1', $port, 3);
$ids[] = $k->task(['label' => 'keep']);
$k->close(true);
$k = new TaskClient(TASKQ_SOCK_TCP | TASKQ_KEEP);
$k->connect('127.0.0.1', $port, 3);
$ids[] = $k->task(['label' => 'keep']);
echo json_encode(['ids' => $ids, 'warnings' => $warnings]);
PHP);
        $this->assertSame([], $r['warnings']);
        foreach ($r['ids'] as $i => $id) {
            $this->assertIsInt($id, "persistent task #$i");
        }
        $this->waitRuns('keep', 12, 5, $server);
        $this->assertCount(2, $this->events('connect'), 'twelve persistent clients in one process used one connection, plus one after close(true)');
    }

    /**
     * The PHP-FPM pattern: each "request" makes a persistent client,
     * connects, submits and closes; the server restarts between requests.
     */
    public function testKeepReconnectsTransparentlyAfterTheServerRestarted(): void
    {
        $old = $this->server([], ['TASKQ_GEN' => 'old']);
        $port = $this->port;
        $bg = $this->background(<<<'PHP'
function request(int $port, string $label): array {
    $k = new TaskClient(TASKQ_SOCK_TCP | TASKQ_KEEP);
    $ok = $k->connect('127.0.0.1', $port, 3);
    $id = $ok ? $k->task(['label' => $label]) : false;
    $r = [$ok, $id, $k->errCode, $k->errMsg];
    $k->close();
    return $r;
}
$out = [request($port, 'before'), request($port, 'before')];
touch("$dir/phase1");
waitFile("$dir/restarted");
$out[] = request($port, 'after');
$out[] = request($port, 'after');
echo json_encode(['out' => $out, 'warnings' => $warnings]);
PHP);
        $this->waitUntil(fn () => file_exists("$this->dir/phase1"), 10, 'the first requests', $old);
        $this->stopServer($old);
        $new = $this->server([], ['TASKQ_GEN' => 'new', 'TASKQ_PORT' => (string) $port]);
        touch("$this->dir/restarted");
        $r = $this->finishBackground($bg);
        foreach ($r['out'] as $i => [$ok, $id, $code, $msg]) {
            $this->assertTrue($ok, "request $i: connect() on the persistent client ($code $msg)");
            $this->assertIsInt($id, "request $i: task() on the persistent client ($code $msg)");
        }
        $this->assertSame([], $r['warnings']);
        $after = $this->waitRuns('after', 2, 5, $new);
        $this->assertSame(['new', 'new'], array_column($after, 'gen'), 'the new server ran the tasks submitted after the restart');
        $this->assertSame(['old', 'old'], array_column($this->runs('before'), 'gen'));
        $this->assertCount(1, array_filter($this->events('connect'), fn ($e) => $e['gen'] === 'old'), 'one pooled connection to the old server');
        $this->assertCount(1, array_filter($this->events('connect'), fn ($e) => $e['gen'] === 'new'), 'one pooled connection to the new server');
    }

    /**
     * A long-running producer keeps a persistent client connected while the
     * server restarts: its next task() goes to the new server instead of
     * failing on the dead connection.
     */
    public function testAConnectedKeepClientSurvivesAServerRestart(): void
    {
        $old = $this->server([], ['TASKQ_GEN' => 'old']);
        $port = $this->port;
        $bg = $this->background(<<<'PHP'
$k = connected($port, [], TASKQ_SOCK_TCP | TASKQ_KEEP);
$before = $k->task(['label' => 'before']);
touch("$dir/phase1");
waitFile("$dir/restarted");
$after = $k->task(['label' => 'after']);
echo json_encode(['before' => $before, 'after' => $after, 'errCode' => $k->errCode, 'errMsg' => $k->errMsg, 'warnings' => $warnings]);
PHP);
        $this->waitUntil(fn () => file_exists("$this->dir/phase1"), 10, 'the first task', $old);
        $this->stopServer($old);
        $new = $this->server([], ['TASKQ_GEN' => 'new', 'TASKQ_PORT' => (string) $port]);
        touch("$this->dir/restarted");
        $r = $this->finishBackground($bg);
        $this->assertIsInt($r['before']);
        $this->assertIsInt($r['after'], "task() on a persistent client whose server restarted: errCode {$r['errCode']} ({$r['errMsg']}); warnings: " . implode(' | ', $r['warnings']));
        $this->assertSame(['new'], array_column($this->waitRuns('after', 1, 5, $new), 'gen'));
    }
}
