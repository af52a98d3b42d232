<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;

/**
 * taskwait() and taskWaitMulti(): blocking dispatch from an event worker,
 * results, timeouts (false / absent keys), late results discarded, routing by
 * dst_worker_id, and the error paths.
 *
 * The server evaluates the PHP code a client sends in onReceive (with $s the
 * server) and replies with serialize(['r' => result, 'w' => warnings, 't' =>
 * seconds]); a task's data is PHP code evaluated by onTask, whose value is
 * the onTask return value. So each test runs the real methods in a real
 * worker of a real server.
 */
final class TaskWaitTest extends TaskqTestCase
{
    private const SERVER = <<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 2, 'task_worker_num' => 2, 'log_file' => "$dir/taskq.log"] + (getenv('TASKQ_SETTINGS') ? json_decode(getenv('TASKQ_SETTINGS'), true) : []));
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) {
    $s->send($fd, serialize(evaluate($s, $data, ['fd' => $fd])));
});
$server->on('Task', function ($s, $taskId, $src, $data) {
    if (!is_string($data)) {
        return $data;
    }
    if (!str_contains($data, '/*quiet*/')) {
        record('task', ['task_id' => $taskId, 'src' => $src, 'worker_id' => $s->worker_id, 'code' => $data]);
    }
    return eval($data);
});
$server->on('Finish', function ($s, $taskId, $data) {
    record('finish', ['task_id' => $taskId, 'worker_id' => $s->worker_id, 'data' => base64_encode(serialize($data))]);
});
$server->start();
PHP;

    // ---------------------------------------------------------------- helpers

    private function server(array $settings = []): ServerProcess
    {
        $server = $this->startServer(self::SERVER, $settings ? ['TASKQ_SETTINGS' => json_encode($settings)] : []);
        $this->waitEvents('workerstart', 2 + ($settings['task_worker_num'] ?? 2), 5, $server);
        return $server;
    }

    /** Finish events seen by onFinish, data unserialized. */
    private function finishes(): array
    {
        return array_map(fn ($e) => unserialize(base64_decode($e['data'])), $this->events('finish'));
    }

    /** Waits (bounded) until onFinish saw $value; proves every earlier result for that worker was handled. */
    private function waitFinish(mixed $value, ServerProcess $server): void
    {
        $this->waitUntil(fn () => in_array($value, $this->finishes(), true), 5, 'onFinish of ' . var_export($value, true), $server);
    }

    private function assertWarning(string $needle, array $reply): void
    {
        $this->assertCount(1, $reply['w'], 'exactly one warning: ' . implode(' | ', $reply['w']));
        $this->assertStringContainsString($needle, $reply['w'][0]);
    }

    // ---------------------------------------------------------------- taskwait

    public function testTaskwaitReturnsTheOnTaskReturnValueOfAnyType(): void
    {
        $server = $this->server();
        $reply = $this->evalInWorker('', <<<'CODE'
return [
    $s->taskwait('return "bin\0\xff\xfe";', 2),
    $s->taskwait('return 42;', 2),
    $s->taskwait('return 2.5;', 2),
    $s->taskwait('return true;', 2),
    $s->taskwait('return ["a" => [1, 2], "b" => null];', 2),
    $s->taskwait('return str_repeat("x", 1 << 20);', 2),
    $s->taskwait(['not', 'code'], 2),
    $s->taskwait('/*quiet*/ $o = new stdClass; $o->p = "v"; return $o;', 2),
];
CODE);
        $this->assertSame([], $reply['w']);
        [$bin, $int, $float, $bool, $arr, $big, $echo, $obj] = $reply['r'];
        $this->assertSame("bin\0\xff\xfe", $bin);
        $this->assertSame(42, $int);
        $this->assertSame(2.5, $float);
        $this->assertTrue($bool);
        $this->assertSame(['a' => [1, 2], 'b' => null], $arr);
        $this->assertSame(str_repeat('x', 1 << 20), $big, 'a 1 MiB result arrives whole');
        $this->assertSame(['not', 'code'], $echo, 'non-string task data arrives identical');
        $this->assertEquals((object) ['p' => 'v'], $obj);
        $this->assertInstanceOf(stdClass::class, $obj);
        $this->assertCount(6, $this->events('task'), 'each taskwait ran one task (the non-string and the quiet one are not recorded)');
    }

    public function testTaskwaitResultsDoNotReachOnFinish(): void
    {
        $server = $this->server();
        $reply = $this->evalInWorker('', <<<'CODE'
$a = $s->taskwait('return "waited-0";', 2, 0);
$b = $s->taskwait('return "waited-1";', 2, 1);
// barriers: ordinary tasks on the same task workers, after the waited ones
$s->task('return "barrier-0";', 0);
$s->task('return "barrier-1";', 1);
return [$a, $b];
CODE);
        $this->assertSame(['waited-0', 'waited-1'], $reply['r']);
        $this->waitFinish('barrier-0', $server);
        $this->waitFinish('barrier-1', $server);
        $this->assertEqualsCanonicalizing(['barrier-0', 'barrier-1'], $this->finishes(), 'only the plain task() results reach onFinish');
    }

    public function testTaskwaitReturnsTheFirstFinishAndDiscardsLaterResults(): void
    {
        $server = $this->server();
        $reply = $this->evalInWorker('', <<<'CODE'
$r = $s->taskwait('$s->finish("first"); $s->finish("second"); return "returned";', 2, 0);
$s->task('return "barrier";', 0);
return $r;
CODE);
        $this->assertSame('first', $reply['r']);
        $this->waitFinish('barrier', $server);
        $this->assertSame(['barrier'], $this->finishes(), 'the second finish() and the return value of a waited task are discarded');
    }

    public function testTaskwaitTimesOutWithFalseAndTheLateResultIsDiscarded(): void
    {
        $server = $this->server();
        $reply = $this->evalInWorker('', <<<'CODE'
$t0 = microtime(true);
$late = $s->taskwait('usleep(400000); return "late";', 0.1, 0);
$waited = microtime(true) - $t0;
// the next taskwait on the same task worker must get its own result, not the late one
$next = $s->taskwait('return "next";', 2, 0);
$s->task('return "barrier";', 0);
return [$late, $waited, $next];
CODE);
        [$late, $waited, $next] = $reply['r'];
        $this->assertFalse($late, 'timed out');
        $this->assertGreaterThanOrEqual(0.095, $waited, 'waited the whole timeout');
        $this->assertLessThan(0.35, $waited, 'returned at the timeout, not when the task finished');
        $this->assertSame('next', $next, 'the following taskwait gets its own result');
        $this->waitFinish('barrier', $server);
        $this->assertSame(['barrier'], $this->finishes(), 'the late result does not reach onFinish');
        $codes = array_column($this->events('task'), 'code');
        $this->assertCount(3, $codes);
        $this->assertStringContainsString('"late"', $codes[0], 'the timed-out task still ran');
    }

    public function testTaskwaitDefaultTimeoutIsHalfASecond(): void
    {
        $this->server();
        $reply = $this->evalInWorker('', 'return $s->taskwait(\'usleep(900000); return "too late";\');');
        $this->assertFalse($reply['r']);
        $this->assertGreaterThanOrEqual(0.48, $reply['t']);
        $this->assertLessThan(0.8, $reply['t']);
    }

    public function testTaskwaitOfATaskWithoutResultTimesOutWithFalse(): void
    {
        $this->server();
        $reply = $this->evalInWorker('', 'return $s->taskwait(\'$x = 1;\', 0.2);');
        $this->assertFalse($reply['r'], 'onTask returned null and never called finish()');
        $this->assertGreaterThanOrEqual(0.19, $reply['t']);
        $this->assertCount(1, $this->events('task'));
    }

    public function testTaskwaitDstWorkerIdRunsTheTaskOnThatTaskWorker(): void
    {
        $this->server();
        $reply = $this->evalInWorker('', <<<'CODE'
$out = [];
foreach ([1, 0, 1, 0] as $dst) {
    $out[] = $s->taskwait('return [$s->worker_id, getmypid(), $s->taskworker];', 2, $dst);
}
return $out;
CODE);
        $this->assertSame([], $reply['w']);
        $this->assertSame([3, 2, 3, 2], array_column($reply['r'], 0), 'dst 0 -> worker id 2, dst 1 -> worker id 3 (worker_num 2)');
        $this->assertSame([true, true, true, true], array_column($reply['r'], 2));
        $pids = array_column($reply['r'], 1);
        $this->assertSame($pids[0], $pids[2]);
        $this->assertSame($pids[1], $pids[3]);
        $this->assertNotSame($pids[0], $pids[1]);
        $this->assertNotContains($reply['pid'], $pids);
    }

    public function testTaskwaitErrorPathsWarnAndReturnFalse(): void
    {
        $this->server();
        $reply = $this->evalInWorker('', 'return $s->taskwait("return 1;", 1, 2);');
        $this->assertFalse($reply['r']);
        $this->assertWarning('worker_id must be less than task_worker_num[2]', $reply);

        // inside a task worker
        $reply = $this->evalInWorker('', <<<'CODE'
return $s->taskwait('
    $w = [];
    set_error_handler(function ($no, $msg) use (&$w) { $w[] = $msg; return true; });
    $r = $s->taskwait("return 1;", 0.2);
    $m = $s->taskWaitMulti(["return 1;"], 0.2);
    restore_error_handler();
    return [$r, $m, $w];
', 2);
CODE);
        [$r, $m, $w] = $reply['r'];
        $this->assertFalse($r);
        $this->assertFalse($m);
        $this->assertCount(2, $w, implode(' | ', $w));
        $this->assertStringContainsString('taskwait() cannot use in the task-worker', $w[0]);
        $this->assertStringContainsString('taskWaitMulti() cannot use in the task-worker', $w[1]);
    }

    public function testTaskwaitWithoutTaskWorkersWarnsAndReturnsFalse(): void
    {
        $server = $this->startServer(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1]);
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) {
    $w = [];
    set_error_handler(function ($no, $msg) use (&$w) { $w[] = $msg; return true; });
    $r = [$s->taskwait('x', 0.2), $s->taskWaitMulti(['x'], 0.2)];
    restore_error_handler();
    $s->send($fd, serialize(['r' => $r, 'w' => $w, 'x' => null]));
});
$server->start();
PHP);
        $this->waitEvents('workerstart', 1, 5, $server);
        $reply = $this->evalInWorker('', 'x');
        $this->assertSame([false, false], $reply['r']);
        $this->assertCount(2, $reply['w'], implode(' | ', $reply['w']));
        $this->assertStringContainsString("taskwait method can't be executed without task worker", $reply['w'][0]);
        $this->assertStringContainsString("taskWaitMulti method can't be executed without task worker", $reply['w'][1]);
    }

    public function testTaskwaitAndTaskWaitMultiBeforeStartWarnServerIsNotRunning(): void
    {
        [$exit, $out, $err] = $this->runPhp(<<<'PHP'
<?php
$s = new TaskServer('127.0.0.1', 0);
$s->set(['worker_num' => 1, 'task_worker_num' => 1]);
var_dump($s->taskwait('x'));
var_dump($s->taskWaitMulti(['x']));
PHP);
        $this->assertSame(0, $exit, $err);
        $this->assertSame("bool(false)\nbool(false)\n", $out);
        $this->assertSame(2, substr_count($err, 'server is not running'), $err);
        $this->assertStringContainsString('taskwait', $err);
    }

    public function testConcurrentTaskwaitsFromTwoWorkersEachGetTheirOwnResults(): void
    {
        $this->server();
        // 4 connections (2 per event worker), each running 40 taskwaits with distinct values
        $code = <<<'CODE'
$bad = [];
for ($i = 0; $i < 40; $i++) {
    $v = "$ctx[fd]:$i:" . random_int(0, PHP_INT_MAX);
    $r = $s->taskwait('/*quiet*/ usleep(random_int(0, 2000)); return ' . var_export($v, true) . ';', 3);
    if ($r !== $v) { $bad[] = [$v, $r]; }
}
return $bad;
CODE;
        $client = "<?php\n\$cs = [];\nfor (\$k = 0; \$k < 4; \$k++) {\n"
            . "  \$c = new TaskClient(TASKQ_SOCK_TCP);\n"
            . "  if (!\$c->connect('127.0.0.1', {$this->port}, 8)) { exit(3); }\n"
            . '  $c->send(' . var_export($code, true) . ");\n"
            . "  \$cs[] = \$c;\n}\n"
            . "\$out = [];\nforeach (\$cs as \$c) { \$out[] = unserialize(\$c->recv()); }\n"
            . "echo serialize(\$out);\n";
        [$exit, $out, $err] = $this->runPhp($client, 15);
        $this->assertSame([0, ''], [$exit, $err], $out);
        $replies = unserialize($out);
        $this->assertCount(4, $replies);
        foreach ($replies as $r) {
            $this->assertNull($r['x']);
            $this->assertSame([], $r['w']);
            $this->assertSame([], $r['r'], 'a taskwait got a result that was not its own');
        }
        $this->assertEqualsCanonicalizing([0, 0, 1, 1], array_column($replies, 'worker_id'), 'both event workers waited concurrently');
    }

    public function testTaskwaitInAWorkerThatIsLeavingStillGetsItsResult(): void
    {
        // A worker that is leaving (stop(), reload, max_request) first handles
        // what it holds; a taskwait/taskWaitMulti in that callback must still
        // get its results (under load this is what a reload looks like).
        $server = $this->server();
        $reply = $this->evalInWorker('', <<<'CODE'
$stopped = $s->stop();
$a = $s->taskwait('return "after-stop";', 2);
$b = $s->taskWaitMulti(['return "m0";', 'return "m1";'], 2);
ksort($b);
return [$stopped, $a, $b];
CODE);
        $this->assertSame([true, 'after-stop', ['m0', 'm1']], $reply['r']);
        $id = $reply['worker_id'];
        $this->waitUntil(fn () => count(array_filter($this->events('workerstart'), fn ($e) => $e['id'] === $id)) === 2, 3, "worker $id respawned", $server);
        $this->assertSame([], $this->finishes(), 'the waited results did not leak to onFinish of the next incarnation');
    }

    // ---------------------------------------------------------------- taskWaitMulti

    public function testTaskWaitMultiReturnsEveryResultKeyedLikeTheInputInParallel(): void
    {
        $this->server();
        $reply = $this->evalInWorker('', <<<'CODE'
return $s->taskWaitMulti([
    'usleep(300000); return ["k0", $s->worker_id];',
    'usleep(300000); return ["k1", $s->worker_id];',
    'return "k2";',
    'return 3;',
], 2);
CODE);
        $this->assertSame([], $reply['w']);
        $r = $reply['r'];
        ksort($r);
        $this->assertSame([0, 1, 2, 3], array_keys($r));
        $this->assertSame('k0', $r[0][0]);
        $this->assertSame('k1', $r[1][0]);
        $this->assertSame(['k2', 3], [$r[2], $r[3]]);
        $this->assertNotSame($r[0][1], $r[1][1], 'the two slow tasks ran on different task workers');
        $this->assertLessThan(0.55, $reply['t'], 'tasks ran in parallel (serially they take 0.6 s)');
        $this->assertGreaterThanOrEqual(0.29, $reply['t']);
    }

    public function testTaskWaitMultiKeepsStringAndSparseKeys(): void
    {
        $this->server();
        $reply = $this->evalInWorker('', <<<'CODE'
return $s->taskWaitMulti(['alpha' => 'return "A";', 7 => 'return "seven";', 'z' => 'return ["Z"];'], 2);
CODE);
        $r = $reply['r'];
        ksort($r, SORT_STRING);
        $expected = ['alpha' => 'A', 7 => 'seven', 'z' => ['Z']];
        ksort($expected, SORT_STRING);
        $this->assertSame($expected, $r);
    }

    public function testTaskWaitMultiLeavesTimedOutKeysAbsentAndDiscardsTheirLateResults(): void
    {
        $server = $this->server();
        $reply = $this->evalInWorker('', <<<'CODE'
$t0 = microtime(true);
$r = $s->taskWaitMulti([
    'a' => 'return "fast-a";',
    'slow' => 'usleep(600000); return "slow";',
    'none' => '$nothing = 1;',
    'b' => 'return "fast-b";',
], 0.3);
$t = microtime(true) - $t0;
// barriers behind the slow task on both task workers
$s->task('return "barrier-0";', 0);
$s->task('return "barrier-1";', 1);
return [$r, $t];
CODE);
        [$r, $t] = $reply['r'];
        ksort($r);
        $this->assertSame(['a' => 'fast-a', 'b' => 'fast-b'], $r, 'timed-out keys are absent, not false');
        $this->assertGreaterThanOrEqual(0.29, $t);
        $this->assertLessThan(0.55, $t, 'returned at the timeout');
        $this->waitFinish('barrier-0', $server);
        $this->waitFinish('barrier-1', $server);
        $this->assertEqualsCanonicalizing(['barrier-0', 'barrier-1'], $this->finishes(), 'the late "slow" result does not reach onFinish');
        $this->assertCount(6, $this->events('task'));
    }

    public function testTaskWaitMultiDefaultTimeoutIsHalfASecond(): void
    {
        $this->server();
        $reply = $this->evalInWorker('', 'return $s->taskWaitMulti([\'usleep(900000); return 1;\', \'return 2;\']);');
        $this->assertSame([1 => 2], $reply['r']);
        $this->assertGreaterThanOrEqual(0.48, $reply['t']);
        $this->assertLessThan(0.8, $reply['t']);
    }

    public function testTaskWaitMultiAccepts1023TasksAndRefuses1024(): void
    {
        $this->server();
        $reply = $this->evalInWorker('', <<<'CODE'
$ok = $s->taskWaitMulti(array_fill(0, 1023, '/*quiet*/ return $s->worker_id;'), 10);
return [count($ok), array_count_values($ok), array_keys($ok) == range(0, 1022) || (ksort($ok) && array_keys($ok) === range(0, 1022)), $s->taskWaitMulti(array_fill(0, 1024, '/*quiet*/ return 1;'), 1)];
CODE, 15);
        [$count, $byWorker, $keysOk, $tooMany] = $reply['r'];
        $this->assertSame(1023, $count, 'every one of 1023 tasks answered');
        $this->assertTrue($keysOk, 'keys 0..1022');
        $this->assertSame(1023, array_sum($byWorker));
        $this->assertFalse($tooMany);
        $this->assertWarning('too many concurrent tasks', $reply);
    }

    public function testTaskWaitMultiResultsDoNotMixWithAsyncTaskResults(): void
    {
        $server = $this->server();
        $reply = $this->evalInWorker('', <<<'CODE'
$ids = [];
for ($i = 0; $i < 5; $i++) { $ids[] = $s->task("return 'async-$i';"); }
$r = $s->taskWaitMulti(['return "m0";', 'return "m1";', 'return "m2";'], 2);
ksort($r);
return [$ids, $r];
CODE);
        [$ids, $r] = $reply['r'];
        $this->assertSame([0, 1, 2, 3, 4], $ids);
        $this->assertSame(['m0', 'm1', 'm2'], $r);
        $this->waitUntil(fn () => count($this->finishes()) >= 5, 5, '5 async results', $server);
        $this->assertEqualsCanonicalizing(['async-0', 'async-1', 'async-2', 'async-3', 'async-4'], $this->finishes(), 'async results reach onFinish, waited ones do not');
        $byId = array_column($this->events('finish'), 'data', 'task_id');
        foreach ($ids as $i => $id) {
            $this->assertSame("async-$i", unserialize(base64_decode($byId[$id])), "onFinish gets task id $id with its own result");
        }
    }

    public function testUnderABacklogEveryResultReachesOnFinishOnceAndTaskwaitIsNotHeldBack(): void
    {
        // 300 tasks for 2 task workers: results come while tasks wait, so
        // onFinish's may be written in batches; taskwait's never waits.
        $server = $this->server();
        $reply = $this->evalInWorker('', <<<'CODE'
$ids = [];
for ($i = 0; $i < 300; $i++) { $ids[] = $s->task("/*quiet*/ usleep(300); return $i;"); }
return [$ids, $s->taskwait('/*quiet*/ return "waited";', 5)];
CODE);
        [$ids, $waited] = $reply['r'];
        $this->assertSame('waited', $waited);
        $this->waitUntil(fn () => count($this->finishes()) >= 300, 10, '300 results in onFinish', $server);
        usleep(50000);
        $byId = [];
        foreach ($this->events('finish') as $e) {
            $this->assertArrayNotHasKey($e['task_id'], $byId, "task {$e['task_id']} reached onFinish once");
            $byId[$e['task_id']] = unserialize(base64_decode($e['data']));
        }
        ksort($byId);
        $this->assertSame($ids, array_keys($byId));
        $this->assertSame(range(0, 299), array_values($byId), 'each with its own result, none with taskwait\'s');
    }
}
