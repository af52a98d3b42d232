<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;

/**
 * Operating taskq like a daemon: reload (method and signals) with tasks queued
 * and running, shutdown(), stop(), the manager/shutdown/worker-exit/error
 * events, heartbeat, dispatch modes, log_level, log reopen on SIGRTMIN,
 * max_wait_time, reload_wait_time, user/group and buffer_output_size.
 */
final class OperationsTest extends TaskqTestCase
{
    /**
     * Settings come from TASKQ_SETTINGS (JSON). onReceive: "eval:<code>" runs
     * the code (with $s, $fd) and replies serialize(['r' =>, 'w' =>, 'x' =>]);
     * "throw" throws; anything else is recorded and answered "ok:<data>".
     * onTask: an array ['n' => , 'sleep_ms' => ] is a job recorded at begin and
     * end; a string is PHP code evaluated.
     */
    private const SERVER = <<<'PHP'
$settings = (getenv('TASKQ_SETTINGS') ? json_decode(getenv('TASKQ_SETTINGS'), true) : [])
    + ['worker_num' => 1, 'task_worker_num' => 2, 'log_file' => "$dir/taskq.log"];
$server = new TaskServer('127.0.0.1', $port);
$server->set($settings);
function ppid() {
    // not /proc/self: PHP's realpath cache, inherited over fork, would resolve it to the parent
    $st = file_get_contents('/proc/' . getmypid() . '/stat');
    return (int) explode(' ', substr($st, strrpos($st, ')') + 2))[1];
}
$server->on('Start', function ($s) { record('start', ['master_pid' => $s->master_pid, 'manager_pid' => $s->manager_pid, 'argc' => func_num_args()]); });
$server->on('ManagerStart', function ($s) { record('managerstart', ['master_pid' => $s->master_pid, 'manager_pid' => $s->manager_pid, 'ppid' => ppid(), 'argc' => func_num_args()]); });
$server->on('ManagerStop', function ($s) { record('managerstop', ['manager_pid' => $s->manager_pid, 'argc' => func_num_args()]); });
$server->on('BeforeShutdown', function ($s) { record('beforeshutdown', ['master_pid' => $s->master_pid, 'argc' => func_num_args()]); });
$server->on('Shutdown', function ($s) { record('shutdown', ['argc' => func_num_args()]); });
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id, 'ppid' => ppid(), 'taskworker' => $s->taskworker]); });
$server->on('WorkerStop', function ($s, $id) { record('workerstop', ['id' => $id]); });
$server->on('WorkerExit', function ($s, $id) { record('workerexit', ['id' => $id, 'worker_id' => $s->worker_id, 'argc' => func_num_args()]); });
$server->on('WorkerError', function ($s, $id, $pid, $code, $signal) {
    record('workererror', ['id' => $id, 'worker_pid' => $pid, 'exit_code' => $code, 'signal' => $signal, 'argc' => func_num_args()]);
});
$server->on('Connect', function ($s, $fd, $rid) { record('connect', ['fd' => $fd, 'id' => $s->worker_id]); });
$server->on('Close', function ($s, $fd, $rid) { record('close', ['fd' => $fd, 'id' => $s->worker_id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) {
    if (str_starts_with($data, 'eval:')) {
        $s->send($fd, serialize(evaluate($s, substr($data, 5), ['fd' => $fd])));
        return;
    }
    if ($data === 'throw') {
        throw new RuntimeException('uncaught-in-receive');
    }
    $e = ['data' => $data, 'fd' => $fd, 'id' => $s->worker_id];
    if (getenv('TASKQ_RECORD_IP')) {
        $e['ip'] = $s->getClientInfo($fd)['remote_ip'];
    }
    record('receive', $e);
    $s->send($fd, "ok:$data");
});
$server->on('Task', function ($s, $taskId, $src, $data) {
    if (is_array($data)) {
        record('task_begin', ['n' => $data['n'], 'id' => $s->worker_id]);
        usleep($data['sleep_ms'] * 1000);
        record('task_end', ['n' => $data['n'], 'id' => $s->worker_id]);
        return "done:{$data['n']}";
    }
    return eval($data);
});
$server->on('Finish', function ($s, $taskId, $data) { record('finish', ['data' => $data, 'task_id' => $taskId, 'id' => $s->worker_id]); });
$server->start();
record('after_start');
PHP;

    // ---------------------------------------------------------------- helpers

    private function server(array $settings = [], array $env = []): ServerProcess
    {
        $server = $this->startServer(self::SERVER, ['TASKQ_SETTINGS' => json_encode($settings)] + $env);
        $n = ($settings['worker_num'] ?? 1) + ($settings['task_worker_num'] ?? 2);
        $this->waitEvents('workerstart', $n, 5, $server);
        return $server;
    }

    private static function alive(int $pid): bool
    {
        $stat = @file_get_contents("/proc/$pid/stat");
        return $stat !== false && !preg_match('/\) Z /', $stat);
    }

    /** Values that occur more than once, with their counts. */
    private static function duplicates(array $values): array
    {
        return array_filter(array_count_values(array_map('strval', $values)), fn ($n) => $n > 1);
    }

    // ---------------------------------------------------------------- reload

    public static function reloadWays(): array
    {
        return [
            'reload() from a worker' => ['method', false],
            'reload(true) from a worker' => ['method', true],
            'SIGUSR1 to the master' => ['signal', false],
            'SIGUSR2 to the master' => ['signal', true],
        ];
    }

    /** @dataProvider reloadWays */
    public function testReloadWithTasksQueuedAndRunningRunsEveryAcknowledgedTaskOnce(string $how, bool $onlyTasks): void
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 2]);
        $before = array_column($this->events('workerstart'), 'pid', 'id');
        $reply = $this->evalInWorker('eval:', '$ids = []; for ($i = 0; $i < 24; $i++) { $ids[] = $s->task(["n" => $i, "sleep_ms" => 50]); } return $ids;');
        $this->assertSame(range(0, 23), $reply['r'], 'every task() was acknowledged with an id');

        // reload while two tasks run and the rest are queued
        $this->waitEvents('task_begin', 2, 3, $server);
        if ($how === 'method') {
            $this->assertTrue($this->evalInWorker('eval:', 'return $s->reload(' . ($onlyTasks ? 'true' : '') . ');')['r']);
        } else {
            $this->assertTrue(posix_kill($server->pid(), $onlyTasks ? SIGUSR2 : SIGUSR1));
        }
        $endedAtReload = count($this->events('task_end'));
        $this->assertLessThan(20, $endedAtReload, 'tasks were still queued when the reload began');

        $this->waitUntil(fn () => count($this->events('finish')) >= 24, 6, 'all 24 results', $server);
        $this->waitUntil(fn () => count($this->eventsOf('workerstart', 1)) === 2 && count($this->eventsOf('workerstart', 2)) === 2, 3, 'both task workers restarted', $server);

        $begun = array_column($this->events('task_begin'), 'n');
        $this->assertSame([], array_values(array_diff(range(0, 23), $begun)), 'acknowledged tasks that never ran');
        $this->assertSame([], self::duplicates($begun), 'tasks that ran more than once (n => runs)');
        $finished = array_column($this->events('finish'), 'data');
        $this->assertSame([], self::duplicates($finished), 'results delivered more than once');
        $this->assertEqualsCanonicalizing(array_map(fn ($i) => "done:$i", range(0, 23)), $finished);

        // each task ran to its end in the process that began it (none was cut off)
        $beginPid = array_column($this->events('task_begin'), 'pid', 'n');
        $endPid = array_column($this->events('task_end'), 'pid', 'n');
        ksort($endPid);
        ksort($beginPid);
        $this->assertSame($beginPid, $endPid, 'every task that began also ended in that process');

        // the queue outlived the old task workers: new incarnations ran some of it
        $newTaskPids = [$this->eventsOf('workerstart', 1)[1]['pid'], $this->eventsOf('workerstart', 2)[1]['pid']];
        $this->assertNotEmpty(array_intersect($newTaskPids, array_values($beginPid)), 'queued tasks ran on the reloaded task workers');
        foreach ([1, 2] as $id) {
            $this->assertNotSame($before[$id], $this->eventsOf('workerstart', $id)[1]['pid']);
            $stop = array_values(array_filter($this->events('workerstop'), fn ($e) => $e['pid'] === $before[$id]));
            $this->assertCount(1, $stop, "WorkerStop in the old task worker $id");
        }
        $this->waitUntil(fn () => count($this->eventsOf('workerstart', 0)) === ($onlyTasks ? 1 : 2), 3, 'the event worker ' . ($onlyTasks ? 'kept' : 'reloaded'), $server);
        $this->assertCount($onlyTasks ? 1 : 2, $this->eventsOf('workerstart', 0), $onlyTasks ? 'a task-only reload leaves the event worker alone' : 'a full reload restarts the event worker');
        $this->assertSame([], $this->events('workererror'), 'a reload is not an error');
        $this->assertStringContainsString($onlyTasks ? 'reloading task workers' : 'reloading all workers', $this->log());
        $this->assertStringNotContainsString('abnormal exit', $this->log());
        $this->assertStringNotContainsString('requeued', $this->log(), 'a graceful reload requeues nothing');

        // the server still works after the reload
        $this->assertSame('done:99', $this->evalInWorker('eval:', 'return $s->taskwait(["n" => 99, "sleep_ms" => 0], 2);')['r']);
    }

    public function testReloadOfEventWorkersLosesNoClientMessage(): void
    {
        $server = $this->server(['worker_num' => 2, 'task_worker_num' => 1]);
        $old = [$this->eventsOf('workerstart', 0)[0]['pid'], $this->eventsOf('workerstart', 1)[0]['pid']];
        $bg = $this->startPhp(<<<PHP
<?php
\$c = new TaskClient(TASKQ_SOCK_TCP);
if (!\$c->connect('127.0.0.1', {$this->port}, 5)) { exit(3); }
\$d = new TaskClient(TASKQ_SOCK_TCP);
if (!\$d->connect('127.0.0.1', {$this->port}, 5)) { exit(3); }
for (\$i = 0; \$i < 300; \$i++) { \$c->send("c-\$i"); \$d->send("d-\$i"); usleep(2000); }
\$bad = [];
for (\$i = 0; \$i < 300; \$i++) {
    if ((\$r = \$c->recv()) !== "ok:c-\$i") { \$bad[] = [\$i, \$r]; }
    if ((\$r = \$d->recv()) !== "ok:d-\$i") { \$bad[] = [\$i, \$r]; }
}
echo json_encode(\$bad);
PHP);
        $this->waitEvents('receive', 60, 5, $server);
        $this->assertTrue(posix_kill($server->pid(), SIGUSR1));
        [$exit, $out, $err] = $this->finishPhp($bg, 10);
        $this->assertSame([0, ''], [$exit, $err], $out);
        $this->assertSame([], json_decode($out, true), 'replies missing or out of order');
        $data = array_column($this->events('receive'), 'data');
        $this->assertCount(600, $data);
        $this->assertSame([], self::duplicates($data), 'messages handled twice');
        $servers = array_unique(array_column($this->events('receive'), 'pid'));
        $this->assertNotEmpty(array_intersect($old, $servers), 'old workers served before the reload');
        $this->assertNotEmpty(array_diff($servers, $old), 'new workers served after the reload');
        $this->assertCount(2, $this->eventsOf('workerstart', 0));
        $this->assertCount(2, $this->eventsOf('workerstart', 1));
        $this->assertStringNotContainsString('abnormal exit', $this->log());
    }

    // ---------------------------------------------------------------- events and shutdown

    public function testManagerAndShutdownEventsRunInTheirProcessesInOrder(): void
    {
        $server = $this->server(['worker_num' => 2, 'task_worker_num' => 1]);
        $master = $server->pid();
        $start = $this->waitEvents('start', 1, 3, $server)[0];
        $manager = $start['manager_pid'];
        $ms = $this->waitEvents('managerstart', 1, 3, $server);
        $this->assertCount(1, $ms);
        $this->assertSame($manager, $ms[0]['pid'], 'ManagerStart runs in the manager');
        $this->assertSame($master, $ms[0]['ppid'], 'the manager is a child of the master');
        $this->assertSame([$master, $manager, 1], [$ms[0]['master_pid'], $ms[0]['manager_pid'], $ms[0]['argc']]);
        foreach ($this->events('workerstart') as $ws) {
            $this->assertSame($manager, $ws['ppid'], 'workers are children of the manager');
        }
        $this->assertSame([], $this->events('beforeshutdown'));

        $this->assertTrue(posix_kill($master, SIGTERM));
        $this->assertSame(0, $server->wait(5), 'the master exits 0');
        $this->waitUntil(fn () => $server->tree() === [], 3, 'no process left', $server);

        $before = $this->events('beforeshutdown');
        $this->assertCount(1, $before);
        $this->assertSame([$master, $master, 1], [$before[0]['pid'], $before[0]['master_pid'], $before[0]['argc']], 'BeforeShutdown runs in the master');
        $mstop = $this->events('managerstop');
        $this->assertCount(1, $mstop);
        $this->assertSame([$manager, 1], [$mstop[0]['pid'], $mstop[0]['argc']], 'ManagerStop runs in the manager');
        $this->assertCount(1, $this->events('shutdown'));
        $this->assertSame($master, $this->events('shutdown')[0]['pid']);

        $b = $this->indexes(fn ($e) => $e['event'] === 'beforeshutdown')[0];
        $stops = $this->indexes(fn ($e) => $e['event'] === 'workerstop');
        $this->assertCount(3, $stops);
        $m = $this->indexes(fn ($e) => $e['event'] === 'managerstop')[0];
        $sd = $this->indexes(fn ($e) => $e['event'] === 'shutdown')[0];
        $this->assertLessThan(min($stops), $b, 'BeforeShutdown before the workers stop');
        $this->assertLessThan($m, max($stops), 'ManagerStop after every WorkerStop');
        $this->assertLessThan($sd, $m, 'Shutdown after ManagerStop');
        $this->assertSame([], $this->events('workererror'));
    }

    public function testShutdownFromAWorkerStopsTheWholeServer(): void
    {
        $server = $this->server(['worker_num' => 2, 'task_worker_num' => 1]);
        $reply = $this->evalInWorker('eval:', 'return $s->shutdown();');
        $this->assertTrue($reply['r']);
        $this->assertSame(0, $server->wait(5), 'the master exits 0');
        $this->waitUntil(fn () => $server->tree() === [], 3, 'no process left', $server);
        $this->assertFalse(self::listening($this->port));
        $this->assertCount(1, $this->events('beforeshutdown'));
        $this->assertCount(3, $this->events('workerstop'));
        $this->assertCount(1, $this->events('managerstop'));
        $this->assertCount(1, $this->events('shutdown'));
        $this->assertCount(1, $this->events('after_start'), 'start() returned');
        $this->assertSame([], $this->events('workererror'));
    }

    public function testStopRestartsTheOwnOrAnotherWorker(): void
    {
        $server = $this->server(['worker_num' => 2, 'task_worker_num' => 1]);
        $pid = function (int $id): ?int {
            $starts = $this->eventsOf('workerstart', $id);
            return $starts ? $starts[count($starts) - 1]['pid'] : null;
        };

        // stop() in the calling worker: it replies, then leaves and is respawned
        $reply = $this->evalInWorker('eval:', 'return [$s->stop(), $s->worker_id];');
        [$ok, $me] = $reply['r'];
        $this->assertTrue($ok);
        $old = $reply['pid'];
        $this->waitUntil(fn () => count($this->eventsOf('workerstart', $me)) === 2, 3, "worker $me respawned", $server);
        $this->assertNotSame($old, $pid($me));
        $this->assertCount(1, array_filter($this->events('workerstop'), fn ($e) => $e['pid'] === $old), 'WorkerStop in the stopped worker');
        $this->assertCount(1, array_filter($this->events('workerexit'), fn ($e) => $e['pid'] === $old), 'WorkerExit in the stopped worker');

        // stop($other) from a worker
        $other = 1 - $me;
        $otherPid = $pid($other);
        // (if this connection lands on $other itself, that is stop() of its own worker: same outcome)
        $this->assertTrue($this->evalInWorker('eval:', "return \$s->stop($other);")['r']);
        $this->waitUntil(fn () => count($this->eventsOf('workerstart', $other)) === 2, 3, "worker $other respawned", $server);
        $this->assertCount(1, array_filter($this->events('workerstop'), fn ($e) => $e['pid'] === $otherPid));

        // stop() in a task worker
        $taskPid = $pid(2);
        $this->assertSame([true, 2], $this->evalInWorker('eval:', 'return $s->taskwait(\'return [$s->stop(), $s->worker_id];\', 2);')['r']);
        $this->waitUntil(fn () => count($this->eventsOf('workerstart', 2)) === 2, 3, 'task worker respawned', $server);
        $this->assertNotSame($taskPid, $pid(2));

        $this->assertFalse($this->evalInWorker('eval:', 'return $s->stop(99);')['r'], 'an unknown worker id');
        $this->assertSame([], $this->events('workererror'), 'stop() is not an error');
        $this->assertStringNotContainsString('abnormal exit', $this->log());
        $this->assertSame('done:1', $this->evalInWorker('eval:', 'return $s->taskwait(["n" => 1, "sleep_ms" => 0], 2);')['r'], 'still serving');
    }

    public function testWorkerErrorRunsInTheManagerWithExitCodeAndSignal(): void
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 1]);
        $manager = $this->waitEvents('managerstart', 1, 3, $server)[0]['pid'];

        // a clean SIGTERM of a worker is no error
        $first = $this->eventsOf('workerstart', 1)[0]['pid'];
        posix_kill($first, SIGTERM);
        $this->waitUntil(fn () => count($this->eventsOf('workerstart', 1)) === 2, 3, 'task worker respawned after SIGTERM', $server);

        // SIGKILL: signal 9
        $second = $this->eventsOf('workerstart', 1)[1]['pid'];
        posix_kill($second, SIGKILL);
        $e = $this->waitEvents('workererror', 1, 3, $server)[0];
        $this->assertSame([1, $second, 0, SIGKILL, 5, $manager], [$e['id'], $e['worker_pid'], $e['exit_code'], $e['signal'], $e['argc'], $e['pid']], 'WorkerError(id, pid, exit code, signal) in the manager');

        // a fatal error in the event worker: exit code 255
        $worker = $this->eventsOf('workerstart', 0)[0]['pid'];
        $this->client('$c->send("eval:ini_set(\'memory_limit\', \'16M\'); \$x = str_repeat(\'x\', 64 << 20);");');
        $e = $this->waitEvents('workererror', 2, 3, $server)[1];
        $this->assertSame([0, $worker, 255, 0, $manager], [$e['id'], $e['worker_pid'], $e['exit_code'], $e['signal'], $e['pid']]);

        // exit(7) in a callback: exit code 7
        $this->waitUntil(fn () => count($this->eventsOf('workerstart', 0)) === 2, 3, 'event worker respawned', $server);
        $worker = $this->eventsOf('workerstart', 0)[1]['pid'];
        $this->client('$c->send("eval:exit(7);");');
        $e = $this->waitEvents('workererror', 3, 3, $server)[2];
        $this->assertSame([0, $worker, 7, 0, $manager], [$e['id'], $e['worker_pid'], $e['exit_code'], $e['signal'], $e['pid']]);

        $this->assertCount(3, $this->events('workererror'), 'no WorkerError for the SIGTERM');
        $this->assertNotContains($first, array_column($this->events('workererror'), 'worker_pid'));
    }

    public function testWorkerExitFiresOnceBeforeWorkerStopWhenAWorkerLeaves(): void
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 1]);
        $old = array_column($this->events('workerstart'), 'pid', 'id');
        $this->assertTrue(posix_kill($server->pid(), SIGUSR1));
        $this->waitUntil(fn () => count($this->events('workerstart')) === 4, 3, 'both workers reloaded', $server);
        $this->waitUntil(fn () => count($this->events('workerstop')) === 2, 3, 'both old workers stopped', $server);
        foreach ($old as $id => $pid) {
            $exits = array_values(array_filter($this->events('workerexit'), fn ($e) => $e['pid'] === $pid));
            $this->assertCount(1, $exits, "WorkerExit once in old worker $id");
            $this->assertSame([$id, $id, 2], [$exits[0]['id'], $exits[0]['worker_id'], $exits[0]['argc']]);
            $exitIdx = $this->indexes(fn ($e) => $e['event'] === 'workerexit' && $e['pid'] === $pid)[0];
            $stopIdx = $this->indexes(fn ($e) => $e['event'] === 'workerstop' && $e['pid'] === $pid)[0];
            $this->assertLessThan($stopIdx, $exitIdx, "WorkerExit before WorkerStop in worker $id");
        }
    }

    // ---------------------------------------------------------------- heartbeat

    public function testHeartbeatClosesIdleConnectionsAndKeepsActiveOnes(): void
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 1, 'heartbeat_check_interval' => 1, 'heartbeat_idle_time' => 1]);
        $out = $this->client(<<<'PHP'
$idle = stream_socket_client("tcp://127.0.0.1:$port", $errno, $errstr, 3);
$t0 = microtime(true);
$closedAfter = null;
$pings = 0;
while (microtime(true) - $t0 < 7.5) {
    $c->send("ping-$pings");
    if ($c->recv() !== "ok:ping-$pings") { fwrite(STDERR, "active client lost"); exit(5); }
    $pings++;
    $r = [$idle]; $w = $e = null;
    if (stream_select($r, $w, $e, 0, 150000) === 1) {
        if (fread($idle, 100) === '') { $closedAfter = microtime(true) - $t0; break; }
    }
}
$c->send("final");
echo json_encode([$closedAfter, $pings, $c->recv(), $c->isConnected()]);
PHP, 10);
        [$closedAfter, $pings, $final, $connected] = json_decode($out, true);
        $this->assertNotNull($closedAfter, 'the idle connection was closed by the server');
        $this->assertGreaterThanOrEqual(0.95, $closedAfter, 'not before heartbeat_idle_time');
        // idle time + check interval is 2 s; the margin absorbs a loaded machine
        $this->assertLessThan(6.0, $closedAfter, 'within idle time + check interval');
        $this->assertSame('ok:final', $final, 'the active connection was kept');
        $this->assertTrue($connected);
        $this->assertGreaterThan(3, $pings);
        $idleFd = $this->events('connect')[1]['fd'];
        $this->waitUntil(fn () => in_array($idleFd, array_column($this->events('close'), 'fd'), true), 3, 'onClose of the idle connection', $server);
        $this->assertMatchesRegularExpression("/\tNOTICE\tsession #$idleFd idle for 1s; closed by heartbeat check\n/", $this->log());
        $this->assertStringNotContainsString('session #' . $this->events('connect')[0]['fd'] . ' idle', $this->log());
    }

    // ---------------------------------------------------------------- dispatch_mode

    public function testDispatchMode1RoundRobinsMessagesOfOneConnection(): void
    {
        $server = $this->server(['worker_num' => 3, 'task_worker_num' => 1, 'dispatch_mode' => 1]);
        $out = $this->client('for ($i = 0; $i < 12; $i++) { $c->send("rr-$i"); } for ($i = 0; $i < 12; $i++) { $c->recv(); } echo "done";');
        $this->assertSame('done', $out);
        $receive = $this->waitEvents('receive', 12, 3, $server);
        $byMsg = [];
        foreach ($receive as $e) {
            $byMsg[(int) substr($e['data'], 3)] = $e['id'];
        }
        ksort($byMsg);
        $this->assertSame(range(0, 11), array_keys($byMsg));
        $cycle = array_slice($byMsg, 0, 3);
        sort($cycle);
        $this->assertSame([0, 1, 2], $cycle, 'three consecutive messages go to three different workers');
        for ($i = 3; $i < 12; $i++) {
            $this->assertSame($byMsg[$i - 3], $byMsg[$i], "message $i follows the rotation");
        }
    }

    public static function connectionModes(): array
    {
        return ['dispatch_mode 2' => [2], 'dispatch_mode 5 (no bind)' => [5]];
    }

    /** @dataProvider connectionModes */
    public function testDispatchModeByConnectionKeepsEachConnectionOnOneWorker(int $mode): void
    {
        $server = $this->server(['worker_num' => 2, 'task_worker_num' => 1, 'dispatch_mode' => $mode]);
        $this->client(<<<'PHP'
$cs = [$c];
for ($k = 1; $k < 4; $k++) { $x = new TaskClient(TASKQ_SOCK_TCP); $x->connect('127.0.0.1', $port, 3); $cs[] = $x; }
for ($i = 0; $i < 6; $i++) { foreach ($cs as $k => $x) { $x->send("c$k-$i"); } }
foreach ($cs as $x) { for ($i = 0; $i < 6; $i++) { $x->recv(); } }
PHP);
        $receive = $this->waitEvents('receive', 24, 3, $server);
        $workersByConn = [];
        foreach ($receive as $e) {
            $workersByConn[$e['fd']][$e['id']] = true;
        }
        $this->assertCount(4, $workersByConn);
        foreach ($workersByConn as $fd => $workers) {
            $this->assertCount(1, $workers, "every message of connection $fd goes to one worker");
        }
        $used = array_unique(array_merge(...array_map('array_keys', array_values($workersByConn))));
        $this->assertCount(2, $used, 'connections are spread over both workers');
        foreach ($this->events('connect') as $e) {
            $this->assertArrayHasKey($e['id'], $workersByConn[$e['fd']], 'onConnect runs in the connection\'s worker');
        }
    }

    public function testDispatchMode3SendsToAnIdleWorkerWhileAnotherIsBusy(): void
    {
        $server = $this->server(['worker_num' => 2, 'task_worker_num' => 1, 'dispatch_mode' => 3]);
        $bg = $this->startPhp(<<<PHP
<?php
\$c = new TaskClient(TASKQ_SOCK_TCP);
if (!\$c->connect('127.0.0.1', {$this->port}, 5)) { exit(3); }
\$c->send('eval:record("blocking", ["id" => \$s->worker_id]); for (\$i = 0; \$i < 400 && !file_exists(getenv("TASKQ_DIR") . "/release"); \$i++) { usleep(10000); } record("unblocked"); return \$s->worker_id;');
\$replies = [];
// one at a time: each request arrives when the other worker has finished the previous one
for (\$i = 0; \$i < 30; \$i++) { \$c->send("m\$i"); \$replies[] = \$c->recv(); }
\$replies[] = \$c->recv();
echo json_encode(\$replies);
PHP);
        $blocking = $this->waitEvents('blocking', 1, 3, $server)[0];
        // all 30 are answered while the first request blocks its worker, unless one was routed to it
        $deadline = microtime(true) + 3;
        while (count($this->events('receive')) < 30 && microtime(true) < $deadline) {
            usleep(10000);
        }
        touch("$this->dir/release");
        [$exit, $out, $err] = $this->finishPhp($bg);
        $this->assertSame([0, ''], [$exit, $err], $out);
        $replies = json_decode($out, true);
        $this->assertCount(31, $replies);
        $toBusy = array_column(array_filter($this->events('receive'), fn ($e) => $e['id'] === $blocking['id']), 'data');
        $this->assertSame([], $toBusy, "requests routed to the busy worker #{$blocking['id']} while the other was idle");
        $unblocked = $this->indexes(fn ($e) => $e['event'] === 'unblocked');
        $this->assertCount(1, $unblocked);
        $this->assertLessThan($unblocked[0], max($this->indexes(fn ($e) => $e['event'] === 'receive')), 'the 30 requests were handled while the first worker was still blocked');
    }

    public function testDispatchMode4KeepsEachClientIpOnOneWorker(): void
    {
        $server = $this->server(['worker_num' => 2, 'task_worker_num' => 1, 'dispatch_mode' => 4], ['TASKQ_RECORD_IP' => '1']);
        [$exit, $out, $err] = $this->runPhp(<<<PHP
<?php
foreach (['127.0.0.1', '127.0.0.2'] as \$ip) {
    for (\$k = 0; \$k < 4; \$k++) {
        \$ctx = stream_context_create(['socket' => ['bindto' => "\$ip:0"]]);
        \$sock = stream_socket_client('tcp://127.0.0.1:{$this->port}', \$errno, \$errstr, 3, STREAM_CLIENT_CONNECT, \$ctx);
        if (!\$sock) { fwrite(STDERR, "connect from \$ip: \$errstr"); exit(3); }
        stream_set_timeout(\$sock, 3);
        fwrite(\$sock, "\$ip/\$k");
        \$r = fread(\$sock, 100);
        if (\$r !== "ok:\$ip/\$k") { fwrite(STDERR, "bad reply \$r"); exit(4); }
        fclose(\$sock);
    }
}
PHP);
        $this->assertSame([0, ''], [$exit, $err], $out);
        $receive = $this->waitEvents('receive', 8, 3, $server);
        $byIp = [];
        foreach ($receive as $e) {
            $this->assertSame(explode('/', $e['data'])[0], $e['ip'], 'the server sees the client address');
            $byIp[$e['ip']][$e['id']] = true;
        }
        $this->assertCount(2, $byIp);
        foreach ($byIp as $ip => $workers) {
            $this->assertCount(1, $workers, "all 4 connections from $ip go to one worker");
        }
    }

    // ---------------------------------------------------------------- log_level

    public static function logLevels(): array
    {
        return [
            'DEBUG (0)' => [0, ['DEBUG', 'INFO', 'NOTICE', 'WARNING', 'ERROR']],
            'INFO (2, default)' => [2, ['INFO', 'NOTICE', 'WARNING', 'ERROR']],
            'WARNING (4)' => [4, ['WARNING', 'ERROR']],
            'ERROR (5)' => [5, ['ERROR']],
            'NONE (6)' => [6, []],
        ];
    }

    /** @dataProvider logLevels */
    public function testLogLevelFiltersTaskqsOwnLines(int $level, array $expected): void
    {
        $settings = ['worker_num' => 1, 'task_worker_num' => 1];
        if ($level !== 2) {
            $settings['log_level'] = $level;
        }
        $server = $this->server($settings);
        // ERROR from the worker (uncaught exception), NOTICE from the master (send to a closed session)
        $this->client('$c->send("throw"); $c->send("eval:\$s->send(424242, \'x\'); return 1;"); $c->recv();');
        // WARNING from the manager (abnormal exit), written before the respawn
        posix_kill($this->eventsOf('workerstart', 1)[0]['pid'], SIGKILL);
        $this->waitUntil(fn () => count($this->eventsOf('workerstart', 1)) === 2, 3, 'task worker respawned', $server);
        $this->client('$c->send("eval:return 1;"); $c->recv();');

        $log = $this->log();
        preg_match_all('/^\[[^\]]+\]\t([A-Z]+)\t/m', $log, $m);
        $found = array_values(array_intersect(['DEBUG', 'INFO', 'NOTICE', 'WARNING', 'ERROR'], array_unique($m[1])));
        $this->assertSame($expected, $found, "levels in the log with log_level $level:\n$log");
        if ($level === 6) {
            $this->assertSame('', $log, 'log_level 6 silences taskq completely');
        }
        if ($level === 0) {
            $this->assertMatchesRegularExpression('/^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} \*\d+\.0\]\tERROR\tuncaught exception in onReceive callback: RuntimeException: uncaught-in-receive/m', $log, 'worker line: * pid.worker_id');
            $this->assertMatchesRegularExpression('/^\[[^\]]+ #' . $server->pid() . '\.-1\]\tNOTICE\tsend to session #424242/m', $log, 'master line: # pid.-1');
            $this->assertMatchesRegularExpression('/^\[[^\]]+ \$\d+\.-1\]\tWARNING\ttask worker\(pid=\d+, id=1\) abnormal exit, status=0, signal=9/m', $log, 'manager line: $ pid');
        }
    }

    // ---------------------------------------------------------------- SIGRTMIN

    public function testSigrtminReopensTheLogFileInEveryProcessAfterLogrotate(): void
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 1]);
        $this->waitLog('server started', 3, $server);
        $this->assertTrue(rename("$this->dir/taskq.log", "$this->dir/taskq.log.1"));
        $this->assertTrue(posix_kill($server->pid(), SIGRTMIN));
        $this->waitUntil(fn () => is_file("$this->dir/taskq.log"), 3, 'the master to create a new log file', $server);

        // worker (*) and task worker (^) lines: they reopen on the SIGHUP the manager relays
        $deadline = microtime(true) + 3;
        for ($n = 0; ; $n++) {
            $evalCode = 'eval:$s->task(' . var_export("throw new LogicException('task-line-$n');", true) . '); return 1;';
            $this->client('$c->send("throw"); $c->send(' . var_export($evalCode, true) . '); $c->recv();');
            $new = $this->log();
            if (str_contains($new, 'uncaught-in-receive') && str_contains($new, "task-line-$n")) {
                break;
            }
            $this->assertLessThan($deadline, microtime(true), "workers never wrote to the new log file:\n$new\nold:\n" . $this->log('taskq.log.1'));
            usleep(50000);
        }
        // master (#) line and manager ($) line
        $this->client('$c->send("eval:\$s->send(424242, \'x\'); return 1;"); $c->recv();');
        posix_kill($this->eventsOf('workerstart', 1)[0]['pid'], SIGKILL);
        $this->waitUntil(fn () => count($this->eventsOf('workerstart', 1)) === 2, 3, 'task worker respawned', $server);
        $this->waitLog('abnormal exit', 3, $server);

        $new = $this->log();
        $old = $this->log('taskq.log.1');
        $this->assertMatchesRegularExpression('/ #\d+\.-1\]\tNOTICE\tsend to session #424242/', $new, 'master writes to the new file');
        $this->assertMatchesRegularExpression('/ \$\d+\.-1\]\tWARNING\ttask worker\(pid=\d+, id=1\) abnormal exit/', $new, 'manager writes to the new file');
        $this->assertMatchesRegularExpression('/ \*\d+\.0\]\tERROR\tuncaught exception in onReceive/', $new, 'worker writes to the new file');
        $this->assertMatchesRegularExpression('/ \^\d+\.1\]\tERROR\tuncaught exception in onTask/', $new, 'task worker writes to the new file');
        $this->assertStringContainsString('server started', $old, 'the rotated file keeps the old lines');
        $this->assertStringNotContainsString('session #424242', $old, 'the master no longer writes to the rotated file');
        $this->assertStringNotContainsString('abnormal exit', $old, 'the manager no longer writes to the rotated file');
    }

    // ---------------------------------------------------------------- max_wait_time

    public function testMaxWaitTimeKillsWorkersStuckInAnInfiniteLoopOnStop(): void
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 1, 'max_wait_time' => 1]);
        $bg = $this->startPhp(<<<PHP
<?php
\$c = new TaskClient(TASKQ_SOCK_TCP);
\$c->connect('127.0.0.1', {$this->port}, 3);
\$c->send('eval:\$s->task("record(\'task_looping\'); while (true) { usleep(1000); }"); record("looping"); while (true) {}');
\$c->recv();
PHP);
        $this->waitEvents('looping', 1, 3, $server);
        $this->waitEvents('task_looping', 1, 3, $server);
        $t0 = microtime(true);
        $this->assertTrue(posix_kill($server->pid(), SIGTERM));
        $this->waitUntil(fn () => $server->tree() === [], 4, 'every process to exit', $server);
        $elapsed = microtime(true) - $t0;
        $this->finishPhp($bg, 3);
        $this->assertGreaterThanOrEqual(0.95, $elapsed, 'the stuck workers got max_wait_time');
        $this->assertLessThan(2.5, $elapsed, 'then they were killed');
        $this->assertSame(0, $server->wait(1), 'the master still exits 0');
        $this->assertStringContainsString('worker exit timeout after 1s, forced termination of 2 processes', $this->log());
        $this->assertCount(1, $this->events('shutdown'), 'Shutdown still runs');
        $this->assertSame([], $this->events('workerstop'), 'the killed workers ran no WorkerStop');
    }

    public function testReloadWaitTimeBoundsAReloadOfAStuckWorker(): void
    {
        // Swoole applies max_wait_time to reload as well; taskq has a separate,
        // longer bound (a reload must not cut tasks in half), after which a
        // worker that cannot finish its callback is killed, logged and counted
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 1, 'max_wait_time' => 1, 'reload_wait_time' => 1]);
        $stuck = $this->eventsOf('workerstart', 0)[0]['pid'];
        $bg = $this->startPhp(<<<PHP
<?php
\$c = new TaskClient(TASKQ_SOCK_TCP);
\$c->connect('127.0.0.1', {$this->port}, 3);
\$c->send('eval:record("looping"); while (true) {}');
\$c->recv();
PHP);
        $this->waitEvents('looping', 1, 3, $server);
        $t0 = microtime(true);
        $this->assertTrue(posix_kill($server->pid(), SIGUSR1));
        $this->waitUntil(fn () => count($this->eventsOf('workerstart', 0)) === 2, 3.5, 'the stuck worker to be replaced', $server);
        $elapsed = microtime(true) - $t0;
        $this->finishPhp($bg, 3);
        $this->assertFalse(self::alive($stuck), 'the stuck worker was killed');
        $this->assertGreaterThanOrEqual(0.95, $elapsed, 'it got reload_wait_time first');
        $this->assertLessThan(2.5, $elapsed);
        $this->assertStringContainsString("worker(pid=$stuck) did not exit within reload_wait_time 1s after a reload or stop(); forced termination (1 worker(s) killed by reloads so far)", $this->log());
        $this->assertSame('ok:after', $this->client('$c->send("after"); echo $c->recv();'), 'the replacement serves');
    }

    // ---------------------------------------------------------------- user / group

    public function testUserAndGroupDropTheWorkersPrivileges(): void
    {
        if (posix_getuid() !== 0) {
            $this->markTestSkipped('user/group needs root');
        }
        chmod($this->dir, 0777);
        touch("$this->dir/events.log");
        chmod("$this->dir/events.log", 0666);
        $server = $this->startServer(self::SERVER, ['TASKQ_SETTINGS' => json_encode(['worker_num' => 1, 'task_worker_num' => 1, 'user' => 'nobody', 'group' => 'nogroup'])]);
        // the unprivileged workers serve a request and a task
        [$exit, $out, $err] = $this->runPhp("<?php\n\$c = new TaskClient(TASKQ_SOCK_TCP);\n\$c->connect('127.0.0.1', {$this->port}, 3);\n"
            . "\$c->send('eval:return [getmypid(), \$s->taskwait(\"return getmypid();\", 2)];');\necho \$c->recv();\n", 8);
        $reply = @unserialize($out);
        $this->assertIsArray($reply, "workers running as nobody cannot serve (exit $exit): $err\nlog:\n" . $this->log());
        [$workerPid, $taskPid] = $reply['r'];
        $this->assertIsInt($taskPid, 'the task worker answered');

        $nobody = posix_getpwnam('nobody')['uid'];
        $nogroup = posix_getgrnam('nogroup')['gid'];
        $status = function (int $pid): array {
            $s = (string) @file_get_contents("/proc/$pid/status");
            preg_match('/^Uid:\s+(.*)$/m', $s, $u);
            preg_match('/^Gid:\s+(.*)$/m', $s, $g);
            preg_match('/^Groups:\s*(.*)$/m', $s, $gr);
            return [array_map('intval', preg_split('/\s+/', trim($u[1] ?? ''))), array_map('intval', preg_split('/\s+/', trim($g[1] ?? ''))), trim($gr[1] ?? '')];
        };
        foreach (['worker' => $workerPid, 'task worker' => $taskPid] as $what => $pid) {
            [$uid, $gid, $groups] = $status($pid);
            $this->assertSame([$nobody, $nobody, $nobody, $nobody], $uid, "$what real/effective/saved/fs uid");
            $this->assertSame([$nogroup, $nogroup, $nogroup, $nogroup], $gid, "$what gids");
            $this->assertNotContains('0', explode(' ', $groups), "$what keeps no root supplementary group");
        }
        $master = $server->pid();
        $manager = $this->waitEvents('start', 1, 3, $server)[0]['manager_pid'];
        $this->assertSame(0, $status($master)[0][1], 'the master stays root');
        $this->assertSame(0, $status($manager)[0][1], 'the manager stays root (it must signal workers)');
        $this->assertStringNotContainsString('abnormal exit', $this->log());
        $this->stopServer($server);
        $this->assertCount(2, $this->events('workerstop'));
    }

    // ---------------------------------------------------------------- buffer_output_size

    public function testBufferOutputSizeRefusesLargerSends(): void
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 1, 'buffer_output_size' => 4096]);
        $out = $this->client(<<<'PHP'
$c->send('eval:return [$s->send($fd, str_repeat("a", 4097)), $s->send($fd, str_repeat("b", 4096))];');
$first = $c->recv();
$reply = unserialize($c->recv());
echo json_encode([$first === str_repeat("b", 4096), $reply['r'], $reply['w']]);
PHP);
        [$firstIsB, $r, $w] = json_decode($out, true);
        $this->assertTrue($firstIsB, 'the 4096-byte send arrived; the 4097-byte one did not');
        $this->assertSame([false, true], $r);
        $this->assertCount(1, $w);
        $this->assertStringContainsString('data of 4097 bytes exceeds buffer_output_size 4096', $w[0]);
    }
}
