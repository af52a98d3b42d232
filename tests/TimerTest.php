<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;

/**
 * Per-process timers: tick(), after(), clearTimer() in event and task
 * workers, their ids, arguments, intervals, interaction with task()/send(),
 * exceptions, and that they neither leak into other processes nor hold up a
 * stop or a reload.
 */
final class TimerTest extends TaskqTestCase
{
    /**
     * onReceive evaluates the client's PHP code (with $s, $fd) and replies with
     * serialize(['r' => result, 'w' => warnings, 'x' => exception]).
     * Timer callbacks record('timer', [...]) so the test sees when and where they ran.
     */
    private const SERVER = <<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'task_worker_num' => 1, 'log_file' => "$dir/taskq.log"]);
$server->on('WorkerStart', function ($s, $id) {
    record('workerstart', ['id' => $id]);
    if (getenv('TASKQ_TICK_ON_START')) {
        $tid = $s->tick(40, function ($timerId) use ($s, $id) {
            record('tick', ['id' => $id, 'timer' => $timerId, 'args' => func_num_args(), 't' => microtime(true)]);
        });
        record('tick_set', ['id' => $id, 'timer' => $tid]);
    }
});
$server->on('WorkerStop', function ($s, $id) { record('workerstop', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) {
    $s->send($fd, serialize(evaluate($s, $data, ['fd' => $fd])));
});
$server->on('Task', function ($s, $taskId, $src, $data) {
    record('task', ['data' => $data]);
    return "done:$data";
});
$server->on('Finish', function ($s, $taskId, $data) { record('finish', ['data' => $data]); });
$server->start();
PHP;

    // ---------------------------------------------------------------- helpers

    private function server(array $env = []): ServerProcess
    {
        $server = $this->startServer(self::SERVER, $env);
        $this->waitEvents('workerstart', 2, 5, $server);
        return $server;
    }

    /** Timer events with $field === $value. */
    private function timers(string $field, mixed $value): array
    {
        return array_values(array_filter($this->events('timer'), fn ($e) => ($e[$field] ?? null) === $value));
    }

    // ---------------------------------------------------------------- tick

    public function testTickCallsBackWithItsIdAtTheInterval(): void
    {
        $server = $this->server();
        $reply = $this->evalInWorker('', <<<'CODE'
$GLOBALS['t0'] = microtime(true);
return $s->tick(50, function ($timerId) use ($s) {
    record('timer', ['name' => 'tick', 'timer' => $timerId, 'args' => func_num_args(), 'worker_id' => $s->worker_id, 'since' => microtime(true) - $GLOBALS['t0']]);
});
CODE);
        $id = $reply['r'];
        $this->assertSame([], $reply['w']);
        $this->assertSame(1, $id, 'the first timer of a process has id 1');
        $this->waitUntil(fn () => count($this->timers('name', 'tick')) >= 6, 3, '6 ticks', $server);
        $ticks = array_slice($this->timers('name', 'tick'), 0, 6);
        foreach ($ticks as $i => $t) {
            $this->assertSame($id, $t['timer'], 'the callback gets the timer id');
            $this->assertSame(1, $t['args'], 'one argument');
            $this->assertSame($reply['pid'], $t['pid'], 'runs in the process that created it');
            $this->assertSame(0, $t['worker_id']);
            $this->assertGreaterThanOrEqual(0.05 * ($i + 1) - 0.002, $t['since'], "tick $i not early");
            $this->assertLessThan(0.05 * ($i + 1) + 0.1, $t['since'], "tick $i not late (no drift)");
        }
    }

    public function testClearTimerStopsATickFromInsideItsCallback(): void
    {
        $server = $this->server();
        $reply = $this->evalInWorker('', <<<'CODE'
$n = 0;
$id = $s->tick(20, function ($timerId) use ($s, &$n) {
    $n++;
    record('timer', ['name' => 'tick', 'n' => $n]);
    if ($n === 3) {
        record('timer', ['name' => 'cleared', 'first' => $s->clearTimer($timerId), 'again' => $s->clearTimer($timerId)]);
        // a barrier well after the next tick would have fired
        $s->after(120, function () { record('timer', ['name' => 'barrier']); });
    }
});
return $id;
CODE);
        $this->assertSame(1, $reply['r']);
        $this->waitUntil(fn () => count($this->timers('name', 'barrier')) === 1, 3, 'the barrier timer', $server);
        $this->assertSame([1, 2, 3], array_column($this->timers('name', 'tick'), 'n'), 'no tick after clearTimer');
        $cleared = $this->timers('name', 'cleared')[0];
        $this->assertTrue($cleared['first'], 'clearTimer() of a live timer returns true');
        $this->assertFalse($cleared['again'], 'clearing it again returns false');
    }

    // ---------------------------------------------------------------- after

    public function testAfterFiresOnceWithoutArgumentsAfterTheDelay(): void
    {
        $server = $this->server();
        $reply = $this->evalInWorker('', <<<'CODE'
$t0 = microtime(true);
$a = $s->after(80, function () use ($t0) { record('timer', ['name' => 'after', 'args' => func_num_args(), 'since' => microtime(true) - $t0]); });
$b = $s->after(300, function () { record('timer', ['name' => 'barrier']); });
return [$a, $b];
CODE);
        $this->assertSame([1, 2], $reply['r'], 'ids count up per process');
        $this->waitUntil(fn () => count($this->timers('name', 'barrier')) === 1, 3, 'the barrier timer', $server);
        $after = $this->timers('name', 'after');
        $this->assertCount(1, $after, 'after() fires exactly once');
        $this->assertSame(0, $after[0]['args'], 'no arguments');
        $this->assertGreaterThanOrEqual(0.078, $after[0]['since']);
        $this->assertLessThan(0.25, $after[0]['since']);
        $this->assertSame($reply['pid'], $after[0]['pid']);
    }

    public function testClearTimerCancelsAPendingAfterAndUnknownIdsReturnFalse(): void
    {
        $server = $this->server();
        $reply = $this->evalInWorker('', <<<'CODE'
$a = $s->after(50, function () { record('timer', ['name' => 'cancelled']); });
$b = $s->after(200, function () { record('timer', ['name' => 'barrier']); });
return [$s->clearTimer($a), $s->clearTimer($a), $s->clearTimer(999), $s->clearTimer(0), $s->clearTimer(-1)];
CODE);
        $this->assertSame([true, false, false, false, false], $reply['r']);
        $this->waitUntil(fn () => count($this->timers('name', 'barrier')) === 1, 3, 'the barrier timer', $server);
        $this->assertSame([], $this->timers('name', 'cancelled'));
    }

    public function testAFiredAfterCannotBeClearedAndTimerIdsAreNotReused(): void
    {
        $server = $this->server();
        $first = $this->evalInWorker('', 'return $s->after(1, function () { record("timer", ["name" => "fired"]); });');
        $this->waitUntil(fn () => count($this->timers('name', 'fired')) === 1, 3, 'the after() timer', $server);
        $reply = $this->evalInWorker('', 'return [$s->clearTimer(' . $first['r'] . '), $s->after(1000, function () {}), $s->tick(1000, function () {})];');
        $this->assertSame([false, 2, 3], $reply['r']);
    }

    // ---------------------------------------------------------------- where timers run

    public function testTimersArePerProcessAndWorkInTaskWorkers(): void
    {
        $server = $this->server(['TASKQ_TICK_ON_START' => '1']);
        $set = $this->waitEvents('tick_set', 2, 3, $server);
        $this->assertSame([1, 1], array_column($set, 'timer'), 'each process numbers its timers from 1');
        $this->waitUntil(fn () => count(array_filter($this->events('tick'), fn ($e) => $e['id'] === 1)) >= 3, 3, 'ticks in the task worker', $server);
        $this->waitUntil(fn () => count(array_filter($this->events('tick'), fn ($e) => $e['id'] === 0)) >= 3, 3, 'ticks in the event worker', $server);
        $pids = array_column($this->events('workerstart'), 'pid', 'id');
        foreach ($this->events('tick') as $t) {
            $this->assertSame($pids[$t['id']], $t['pid'], 'a tick runs in the worker that set it');
            $this->assertSame(1, $t['timer']);
            $this->assertSame(1, $t['args']);
        }
    }

    public function testTimerCallbacksCanDispatchTasksAndPushToClients(): void
    {
        $server = $this->server();
        $code = <<<'CODE'
$n = 0;
$s->tick(30, function ($id) use ($s, $fd, &$n) {
    $n++;
    $s->task("from-tick-$n");
    $s->send($fd, "push-$n");
    if ($n === 3) { $s->clearTimer($id); }
});
return 'subscribed';
CODE;
        $client = "<?php\n\$c = new TaskClient(TASKQ_SOCK_TCP);\n\$c->connect('127.0.0.1', {$this->port}, 3);\n"
            . '$c->send(' . var_export($code, true) . ");\n"
            . "\$out = [unserialize(\$c->recv())['r']];\n"
            . "for (\$i = 0; \$i < 3; \$i++) { \$out[] = \$c->recv(); }\n"
            . "echo json_encode(\$out);\n";
        [$exit, $out, $err] = $this->runPhp($client, 10);
        $this->assertSame([0, ''], [$exit, $err], $out);
        $this->assertSame(['subscribed', 'push-1', 'push-2', 'push-3'], json_decode($out, true), 'timer sends reach the client in order');
        $finish = $this->waitEvents('finish', 3, 3, $server);
        $this->assertSame(['done:from-tick-1', 'done:from-tick-2', 'done:from-tick-3'], array_column($finish, 'data'), 'tasks from a timer callback finish in the event worker');
    }

    public function testAnExceptionInATimerCallbackIsLoggedAndTheTimerKeepsRunning(): void
    {
        $server = $this->server();
        $this->evalInWorker('', <<<'CODE'
$n = 0;
$s->tick(20, function ($id) use ($s, &$n) {
    $n++;
    record('timer', ['name' => 'tick', 'n' => $n]);
    if ($n === 1) { throw new RuntimeException('boom-in-timer'); }
    if ($n === 3) { $s->clearTimer($id); }
});
CODE);
        $this->waitUntil(fn () => count($this->timers('name', 'tick')) >= 3, 3, 'three ticks despite the exception', $server);
        $this->waitUntil(fn () => str_contains($this->log(), 'boom-in-timer'), 3, 'the exception in the log', $server);
        $this->assertMatchesRegularExpression('/\tERROR\t[^\n]*RuntimeException: boom-in-timer/', $this->log());
        $this->assertCount(1, array_unique(array_column($this->timers('name', 'tick'), 'pid')), 'the worker was not restarted');
        $this->assertCount(2, $this->events('workerstart'));
    }

    // ---------------------------------------------------------------- errors

    public function testTimersOutsideAWorkerWarnAndBadArgumentsThrow(): void
    {
        [$exit, $out, $err] = $this->runPhp(<<<'PHP'
<?php
$s = new TaskServer('127.0.0.1', 0);
var_dump($s->tick(100, function () {}));
var_dump($s->after(100, function () {}));
var_dump($s->clearTimer(1));
PHP);
        $this->assertSame(0, $exit, $err);
        $this->assertSame("bool(false)\nbool(false)\nbool(false)\n", $out);
        $this->assertSame(2, substr_count($err, 'Warning:'), $err);

        $this->server();
        $reply = $this->evalInWorker('', <<<'CODE'
$out = [];
foreach ([[0, 'tick'], [-5, 'tick'], [86400001, 'after'], [0, 'after']] as [$ms, $m]) {
    try { $s->$m($ms, function () {}); $out[] = 'no exception'; }
    catch (TaskQ\Exception $e) { $out[] = $e->getMessage(); }
}
try { $s->tick(10, 'no_such_function_anywhere'); $out[] = 'no exception'; }
catch (TypeError $e) { $out[] = 'not callable'; }
$out[] = $s->after(86400000, function () {}) > 0;
return $out;
CODE);
        [$zero, $negative, $tooBig, $afterZero, $notCallable, $maxOk] = $reply['r'];
        foreach ([$zero, $negative, $tooBig, $afterZero] as $msg) {
            $this->assertStringContainsString('1 to 86400000', $msg);
        }
        $this->assertStringContainsString('0', $zero);
        $this->assertStringContainsString('86400001', $tooBig);
        $this->assertSame('not callable', $notCallable);
        $this->assertTrue($maxOk, '86400000 ms is allowed');
    }

    // ---------------------------------------------------------------- lifecycle

    public function testLiveTimersDoNotDelayAStop(): void
    {
        $server = $this->server(['TASKQ_TICK_ON_START' => '1']);
        $this->waitEvents('tick', 4, 3, $server);
        $t0 = microtime(true);
        $this->stopServer($server);
        $this->assertLessThan(1.5, microtime(true) - $t0, 'stopped well before max_wait_time (3 s) with ticking timers');
        $this->assertCount(2, $this->events('workerstop'), 'both workers stopped cleanly');
        $this->assertStringNotContainsString('forced termination', $this->log());
        $this->assertStringNotContainsString('abnormal exit', $this->log());
    }

    public function testTimersDoNotSurviveAReloadAndDoNotDelayIt(): void
    {
        $server = $this->server();
        $this->evalInWorker('', 'return $s->tick(30, function () { record("timer", ["name" => "old"]); });');
        $this->waitUntil(fn () => count($this->timers('name', 'old')) >= 2, 3, 'old ticks', $server);
        $oldPid = $this->timers('name', 'old')[0]['pid'];
        posix_kill($server->pid(), SIGUSR1);
        $this->waitUntil(fn () => count($this->events('workerstop')) === 2 && count($this->events('workerstart')) === 4, 3, 'both workers reloaded', $server);
        $newStart = array_values(array_filter($this->events('workerstart'), fn ($e) => $e['id'] === 0))[1];
        $this->assertNotSame($oldPid, $newStart['pid']);
        $this->waitUntil(fn () => !file_exists("/proc/$oldPid/stat") || str_contains((string) @file_get_contents("/proc/$oldPid/stat"), ') Z '), 3, 'the old worker to exit', $server);
        // a fresh timer in the new worker gets id 1 again, and only it ticks
        $reply = $this->evalInWorker('', 'return $s->tick(30, function () { record("timer", ["name" => "new"]); });');
        $this->assertSame(1, $reply['r']);
        $this->waitUntil(fn () => count($this->timers('name', 'new')) >= 3, 3, 'new ticks', $server);
        $old = $this->timers('name', 'old');
        foreach ($old as $e) {
            $this->assertSame($oldPid, $e['pid'], 'the old timer only ever ran in the old process');
        }
        $this->assertSame([$newStart['pid']], array_values(array_unique(array_column($this->timers('name', 'new'), 'pid'))));
        $this->assertStringNotContainsString('forced termination', $this->log());
    }
}
