<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;

/**
 * Start/stop by signal, pid_file, daemonize, errors in callbacks, crashing
 * and recycled workers, and unix-socket servers, all with real process trees.
 */
final class ServerLifecycleTest extends TaskqTestCase
{
    // ---------------------------------------------------------------- helpers

    /**
     * Runs a TaskClient script connected to the last server's port ($c is the
     * connected client); asserts it exits 0 with empty stderr; returns stdout.
     */
    /** Whether a TCP port on 127.0.0.1 can be bound again right now. */
    private static function bindable(int $port): bool
    {
        $s = @stream_socket_server("tcp://127.0.0.1:$port", $errno, $errstr);
        if ($s === false) {
            return false;
        }
        fclose($s);
        return true;
    }

    private static function alive(int $pid): bool
    {
        $stat = @file_get_contents("/proc/$pid/stat");
        return $stat !== false && !preg_match('/\) Z /', $stat);
    }

    /** Sends $signal to $pid and waits until no process of $server is left. */
    private function stopAndWait(ServerProcess $server, int $pid, int $signal = SIGTERM, float $timeout = 4): void
    {
        $this->assertTrue(posix_kill($pid, $signal), "signal $signal to $pid");
        $this->waitUntil(fn () => $server->tree() === [], $timeout, 'every server process to exit', $server);
    }

    // ---------------------------------------------------------------- stop by signal

    private const LIFECYCLE_SERVER = <<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set([
    'worker_num' => 2,
    'task_worker_num' => 2,
    'pid_file' => "$dir/server.pid",
    'log_file' => "$dir/taskq.log",
]);
$server->on('Start', function ($s) { record('start', ['master_pid' => $s->master_pid, 'manager_pid' => $s->manager_pid]); });
$server->on('Shutdown', function ($s) { record('shutdown'); });
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('WorkerStop', function ($s, $id) { record('workerstop', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) { $s->send($fd, "ok:$data"); });
$server->on('Task', function ($s, $id, $src, $data) { return $data; });
$ret = $server->start();
record('after_start', ['ret' => $ret]);
PHP;

    private function assertSignalStopsEverything(int $signal): void
    {
        $server = $this->startServer(self::LIFECYCLE_SERVER);
        $port = $this->port;
        $master = $server->pid();
        $start = $this->waitEvents('start', 1, 5, $server)[0];
        $this->assertSame($master, $start['pid'], 'Start runs in the master');
        $this->assertSame($master, $start['master_pid']);
        $starts = $this->waitEvents('workerstart', 4, 5, $server);
        $ids = array_column($starts, 'id');
        sort($ids);
        $this->assertSame([0, 1, 2, 3], $ids, 'WorkerStart for every worker and task worker id');
        $workerPids = array_column($starts, 'pid', 'id');
        $this->assertNotContains($master, $workerPids);

        $pidFile = "$this->dir/server.pid";
        $this->waitUntil(fn () => is_file($pidFile), 3, 'the pid file', $server);
        $this->assertSame((string) $master, trim(file_get_contents($pidFile)), 'pid_file holds the master pid');
        $this->waitUntil(fn () => count($server->tree()) === 6, 3, 'master, manager and 4 workers', $server);
        $this->assertSame('ok:x', $this->client('$c->send("x"); echo $c->recv();'));

        $this->assertTrue(posix_kill($master, $signal));
        $code = $server->wait(4);
        $this->assertSame(0, $code, 'the master exits 0 after the signal' . "\nstderr: " . $server->stderr());
        $this->assertFalse(self::listening($port), 'nothing listens on the port right after exit');
        $this->assertTrue(self::bindable($port), 'the port can be bound again right after exit');
        $this->waitUntil(fn () => $server->tree() === [], 2, 'no process left', $server);
        $this->assertFileDoesNotExist($pidFile, 'pid_file removed on stop');

        $stops = $this->events('workerstop');
        $stopIds = array_column($stops, 'id');
        sort($stopIds);
        $this->assertSame([0, 1, 2, 3], $stopIds, 'WorkerStop for every worker');
        foreach ($stops as $stop) {
            $this->assertSame($workerPids[$stop['id']], $stop['pid'], "WorkerStop {$stop['id']} ran in that worker");
        }
        $shutdown = $this->events('shutdown');
        $this->assertCount(1, $shutdown);
        $this->assertSame($master, $shutdown[0]['pid'], 'Shutdown runs in the master');
        $after = $this->events('after_start');
        $this->assertSame([true], array_column($after, 'ret'), 'start() returned true and the code after it ran');
        $this->assertSame($master, $after[0]['pid']);

        $stopIdx = $this->indexes(fn ($e) => $e['event'] === 'workerstop');
        $shutdownIdx = $this->indexes(fn ($e) => $e['event'] === 'shutdown');
        $afterIdx = $this->indexes(fn ($e) => $e['event'] === 'after_start');
        $this->assertLessThan($shutdownIdx[0], max($stopIdx), 'Shutdown after every WorkerStop');
        $this->assertLessThan($afterIdx[0], $shutdownIdx[0], 'start() returns after Shutdown');
        $this->assertStringNotContainsString('abnormal exit', $this->log());
    }

    public function testSigtermStopsWorkersThenShutdownThenStartReturns(): void
    {
        $this->assertSignalStopsEverything(SIGTERM);
    }

    public function testSigintStopsWorkersThenShutdownThenStartReturns(): void
    {
        $this->assertSignalStopsEverything(SIGINT);
    }

    // ---------------------------------------------------------------- daemonize

    public function testDaemonizeDetachesWritesPidFileAndRedirectsOutput(): void
    {
        $server = $this->startServer(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set([
    'worker_num' => 1,
    'task_worker_num' => 1,
    'daemonize' => 1,
    'log_file' => "$dir/taskq.log",
    'pid_file' => "$dir/server.pid",
]);
$server->on('Start', function ($s) { echo "echo-start\n"; record('start', ['master_pid' => $s->master_pid]); });
$server->on('WorkerStart', function ($s, $id) { echo "echo-workerstart-$id\n"; record('workerstart', ['id' => $id, 'cwd' => getcwd()]); });
$server->on('Receive', function ($s, $fd, $rid, $data) { echo "echo-receive:$data\n"; $s->task($data); });
$server->on('Task', function ($s, $id, $src, $data) { echo "echo-task:$data\n"; record('task', ['data' => $data]); });
$server->on('Shutdown', function ($s) { record('shutdown'); });
$server->start();
record('after_start');
PHP, [], false);
        $launcher = $server->pid();
        $this->assertSame(0, $server->wait(3), 'the launching process exits 0 quickly' . "\nstderr: " . $server->stderr());
        $pidFile = "$this->dir/server.pid";
        $this->waitUntil(fn () => is_file($pidFile) && trim(file_get_contents($pidFile)) !== '', 3, 'the pid file', $server);
        $master = (int) trim(file_get_contents($pidFile));
        $this->assertNotSame($launcher, $master, 'the master is a new (daemon) process');
        $this->assertTrue(self::alive($master), 'the pid in pid_file is alive');
        $this->waitUntil(fn () => self::listening($this->port), 3, 'the daemon to listen', $server);
        $this->waitEvents('workerstart', 2, 3, $server);
        $this->assertSame($master, $this->waitEvents('start', 1, 3, $server)[0]['pid'], 'pid_file holds the master pid');
        $this->assertContains($master, $server->tree());
        $this->assertSame($this->dir, $this->events('workerstart')[0]['cwd'], 'cwd kept');

        $this->client('$c->send("hello");');
        $this->waitEvents('task', 1, 3, $server);
        $this->waitUntil(fn () => str_contains($this->log(), 'echo-task:hello'), 3, 'echo output in the log file', $server);
        $log = $this->log();
        foreach (['echo-start', 'echo-workerstart-0', 'echo-workerstart-1', 'echo-receive:hello', 'echo-task:hello'] as $line) {
            $this->assertStringContainsString("$line\n", $log);
        }
        $this->assertStringNotContainsString('echo-', $server->stdout(), 'callbacks do not write to the launcher\'s stdout');

        $this->stopAndWait($server, $master);
        $this->assertFileDoesNotExist($pidFile);
        $this->assertTrue(self::bindable($this->port), 'the port is free');
        $this->assertCount(1, $this->events('shutdown'));
        $this->assertCount(1, $this->events('after_start'));
    }

    // ---------------------------------------------------------------- errors in callbacks

    public function testExceptionsInOnReceiveAndOnTaskAreLoggedAndTheWorkersKeepServing(): void
    {
        $server = $this->startServer(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'task_worker_num' => 1, 'log_file' => "$dir/taskq.log"]);
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) {
    record('receive', ['data' => $data]);
    if ($data === 'boom') {
        throw new RuntimeException('boom-in-receive');
    }
    $s->task($data);
});
$server->on('Task', function ($s, $id, $src, $data) {
    record('task', ['data' => $data]);
    if ($data === 'task-boom') {
        throw new LogicException('boom-in-task');
    }
    return "ok:$data";
});
$server->on('Finish', function ($s, $id, $data) { record('finish', ['data' => $data]); });
$server->start();
PHP);
        $this->waitEvents('workerstart', 2, 5, $server);
        $script = file($server->script);
        $lineOf = fn (string $needle) => 1 + key(array_filter($script, fn ($l) => str_contains($l, $needle)));

        $this->client('$c->send("boom");');
        $this->waitUntil(fn () => str_contains($this->log(), 'boom-in-receive'), 3, 'the onReceive exception in the log', $server);
        $this->client('$c->send("task-boom");');
        $this->waitUntil(fn () => str_contains($this->log(), 'boom-in-task'), 3, 'the onTask exception in the log', $server);
        $this->client('$c->send("after");');
        $finish = $this->waitEvents('finish', 1, 3, $server);
        $this->assertSame(['ok:after'], array_column($finish, 'data'), 'no result for the task that threw');

        $log = $this->log();
        $receiveLine = $lineOf("throw new RuntimeException('boom-in-receive')");
        $taskLine = $lineOf("throw new LogicException('boom-in-task')");
        $this->assertMatchesRegularExpression(
            '/\tERROR\tuncaught exception in onReceive callback: RuntimeException: boom-in-receive in '
            . preg_quote($server->script, '/') . ':' . $receiveLine . '\nStack trace:\n#0 /',
            $log,
        );
        $this->assertMatchesRegularExpression(
            '/\tERROR\tuncaught exception in onTask callback: LogicException: boom-in-task in '
            . preg_quote($server->script, '/') . ':' . $taskLine . '\nStack trace:\n#0 /',
            $log,
        );
        $this->assertStringNotContainsString('abnormal exit', $log);

        $receive = $this->events('receive');
        $this->assertSame(['boom', 'task-boom', 'after'], array_column($receive, 'data'));
        $this->assertCount(1, array_unique(array_column($receive, 'pid')), 'the same event worker served all three');
        $tasks = $this->events('task');
        $this->assertSame(['task-boom', 'after'], array_column($tasks, 'data'));
        $this->assertCount(1, array_unique(array_column($tasks, 'pid')), 'the same task worker ran both');
        $this->assertCount(2, $this->events('workerstart'), 'no worker was restarted');
    }

    public function testAnErrorFromAnUndefinedFunctionIsLoggedAndTheTaskWorkerKeepsServing(): void
    {
        // PHP 8 throws \Error here. Swoole turns any uncaught throwable into a fatal
        // error that restarts the worker; taskq logs it with its trace and keeps serving.
        $server = $this->startServer(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'task_worker_num' => 1, 'log_file' => "$dir/taskq.log"]);
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) { $s->task($data); });
$server->on('Task', function ($s, $id, $src, $data) {
    if ($data === 'error') {
        no_such_function_in_taskq_tests();
    }
    record('task', ['data' => $data]);
    return "ok:$data";
});
$server->on('Finish', function ($s, $id, $data) { record('finish', ['data' => $data]); });
$server->start();
PHP);
        $this->waitEvents('workerstart', 2, 5, $server);
        $taskWorker = $this->eventsOf('workerstart', 1)[0]['pid'];
        $this->client('$c->send("error"); $c->send("two");');
        $task = $this->waitEvents('task', 1, 3, $server)[0];
        $this->assertSame(['two', $taskWorker], [$task['data'], $task['pid']]);
        $this->assertSame(['ok:two'], array_column($this->waitEvents('finish', 1, 3, $server), 'data'));
        $this->waitLog('uncaught exception in onTask callback: Error: Call to undefined function no_such_function_in_taskq_tests()', 3, $server);
        $this->assertStringContainsString('Stack trace:', $this->log());
        $this->assertCount(2, $this->events('workerstart'), 'no worker was restarted');
    }

    public function testAFatalErrorKillsTheTaskWorkerAndThePoisonTaskIsGivenUpAfterThreeRuns(): void
    {
        $server = $this->startServer(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'task_worker_num' => 1, 'task_retry_max' => 2, 'log_file' => "$dir/taskq.log"]); // a worker's task() runs once unless retries are set
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) { $s->task($data); });
$server->on('Task', function ($s, $id, $src, $data) {
    if ($data === 'fatal') {
        record('before_fatal');
        ini_set('memory_limit', '16M');
        $x = str_repeat('x', 64 * 1024 * 1024); // E_ERROR: allowed memory size exhausted
        record('after_fatal');
    }
    record('task', ['data' => $data]);
    return "ok:$data";
});
$server->on('Finish', function ($s, $id, $data) { record('finish', ['data' => $data]); });
$server->start();
PHP);
        $this->waitEvents('workerstart', 2, 5, $server);
        $oldPid = $this->eventsOf('workerstart', 1)[0]['pid'];

        $this->client('$c->send("fatal");');
        $this->waitLog("worker(pid=$oldPid, id=1) abnormal exit, status=255, signal=0", 3, $server);
        $this->waitLog('failed 3 time(s); given up: task worker #1 died while running it', 5, $server);
        $this->assertCount(3, $this->events('before_fatal'), 'the task ran three times, each on a fresh task worker');
        $this->assertCount(3, array_unique(array_column($this->events('before_fatal'), 'pid')));
        $this->assertSame([], $this->events('after_fatal'));
        $this->assertStringContainsString('Allowed memory size', $server->stderr() . $this->log(), 'the fatal error is reported');

        $this->client('$c->send("two");');
        $task = $this->waitEvents('task', 1, 5, $server)[0];
        $this->assertSame('two', $task['data']);
        $this->assertNotSame($oldPid, $task['pid'], 'later tasks run in a respawned worker');
        $this->assertSame(['ok:two'], array_column($this->waitEvents('finish', 1, 3, $server), 'data'));
        $this->assertCount(1, $this->eventsOf('workerstart', 0), 'the event worker was not restarted');
    }

    public function testAWorkerThatDiesInWorkerStartIsRespawnedWithBackoff(): void
    {
        $server = $this->startServer(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'task_worker_num' => 1, 'log_file' => "$dir/taskq.log"]);
$server->on('WorkerStart', function ($s, $id) {
    record('workerstart', ['id' => $id, 't' => microtime(true)]);
    if ($id === 1) {
        exec('kill -9 ' . getmypid());
    }
});
$server->on('Receive', function ($s, $fd, $rid, $data) { record('receive', ['data' => $data]); $s->send($fd, "ok:$data"); });
$server->on('Task', function ($s, $id, $src, $data) {});
$server->start();
PHP);
        $master = $server->pid();
        $this->waitUntil(fn () => count($this->eventsOf('workerstart', 1)) >= 4, 4, 'task worker 1 to start 4 times', $server);
        $this->waitLog('died 3 times in a row', 2, $server);
        $log = $this->log();
        $this->assertMatchesRegularExpression('/task worker\(pid=\d+, id=1\) abnormal exit, status=0, signal=9/', $log);
        $this->assertStringContainsString('task worker #1 died 2 times in a row before onWorkerStart returned; respawning in 100ms', $log);
        $this->assertStringContainsString('task worker #1 died 3 times in a row before onWorkerStart returned; respawning in 200ms', $log);

        $t = array_column($this->eventsOf('workerstart', 1), 't');
        $this->assertGreaterThanOrEqual(0.095, $t[2] - $t[1], 'second respawn waits >= 100 ms');
        $this->assertGreaterThanOrEqual(0.195, $t[3] - $t[2], 'third respawn waits >= 200 ms');
        $pids = array_column($this->eventsOf('workerstart', 1), 'pid');
        $this->assertCount(count($pids), array_unique($pids), 'each start is a new process');

        // the event worker is unaffected and still serves
        $this->assertSame('ok:hi', $this->client('$c->send("hi"); echo $c->recv();'));

        $this->stopAndWait($server, $master, SIGTERM, 3);
        $this->assertSame(0, $server->wait(1));
        $n = count($this->eventsOf('workerstart', 1));
        $this->assertSame([], $server->tree());
        $this->assertSame($n, count($this->eventsOf('workerstart', 1)), 'no respawn after the stop');
    }

    public function testSigtermToOneWorkerStopsItCleanlyAndItIsRespawned(): void
    {
        $server = $this->startServer(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 2, 'task_worker_num' => 1, 'log_file' => "$dir/taskq.log"]);
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id, 'worker_id' => $s->worker_id]); });
$server->on('WorkerStop', function ($s, $id) { record('workerstop', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) { $s->task($data); $s->send($fd, "ok:$data"); });
$server->on('Task', function ($s, $id, $src, $data) { record('task', ['data' => $data, 'worker_id' => $s->worker_id]); });
$server->start();
PHP);
        $this->waitEvents('workerstart', 3, 5, $server);
        foreach ([0, 2] as $id) {
            $old = $this->eventsOf('workerstart', $id)[0]['pid'];
            $this->assertTrue(posix_kill($old, SIGTERM));
            $this->waitUntil(fn () => count($this->eventsOf('workerstop', $id)) === 1, 3, "WorkerStop of worker $id", $server);
            $this->assertSame($old, $this->eventsOf('workerstop', $id)[0]['pid'], 'WorkerStop ran in the signalled worker');
            $this->waitUntil(fn () => count($this->eventsOf('workerstart', $id)) === 2, 3, "worker $id to be respawned", $server);
            $new = $this->eventsOf('workerstart', $id)[1];
            $this->assertNotSame($old, $new['pid']);
            $this->assertSame($id, $new['worker_id'], 'the respawned worker has the same id');
            $this->waitUntil(fn () => !self::alive($old), 2, "old worker $id to be gone", $server);
            $this->assertStringNotContainsString("pid=$old,", $this->log(), 'a clean exit is not logged as abnormal');
        }
        $this->assertCount(1, $this->eventsOf('workerstart', 1), 'the other worker was not touched');
        $this->assertCount(5, $server->tree(), 'master, manager, 3 workers');
        $this->assertSame('ok:again', $this->client('$c->send("again"); echo $c->recv();'));
        $task = $this->waitEvents('task', 1, 3, $server)[0];
        $this->assertSame($this->eventsOf('workerstart', 2)[1]['pid'], $task['pid'], 'the respawned task worker runs tasks');
    }

    // ---------------------------------------------------------------- max_request

    public function testMaxRequestRecyclesTheWorkerWithoutLosingMessages(): void
    {
        $server = $this->startServer(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'max_request' => 3, 'max_request_grace' => 0, 'log_file' => "$dir/taskq.log"]);
record('setting', ['setting' => $server->setting]);
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('WorkerStop', function ($s, $id) { record('workerstop', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) { record('receive', ['data' => $data]); });
$server->start();
PHP);
        $setting = $this->waitEvents('setting', 1, 5, $server)[0]['setting'];
        $this->assertSame(3, $setting['max_request']);
        $this->assertSame(0, $setting['max_request_grace'], 'an explicit 0 grace is kept');
        $this->waitEvents('workerstart', 1, 5, $server);

        $this->client('for ($i = 0; $i < 10; $i++) { $c->send("m$i"); }');
        $this->waitEvents('receive', 10, 4, $server);
        $this->waitLog('max_request 3 reached; recycling', 3, $server);
        $this->waitUntil(fn () => count($this->eventsOf('workerstart', 0)) >= 2, 3, 'the replacement worker', $server);
        $this->client('for ($i = 10; $i < 15; $i++) { $c->send("m$i"); }');
        $receive = $this->waitEvents('receive', 15, 4, $server);
        $this->assertSame(array_map(fn ($i) => "m$i", range(0, 14)), array_column($receive, 'data'), 'every message once, in order');

        // taskq recycles after max_request but first handles what the master had
        // already routed to the old process, so a burst may give it more (never
        // fewer) than max_request; nothing is lost or reordered either way.
        $pids = array_column($receive, 'pid');
        $first = $pids[0];
        $servedByFirst = count(array_filter($pids, fn ($p) => $p === $first));
        $this->assertGreaterThanOrEqual(3, $servedByFirst);
        $this->assertSame(array_fill(0, $servedByFirst, $first), array_slice($pids, 0, $servedByFirst), 'the first process served a prefix');
        $this->assertNotContains($first, array_slice($pids, 10), 'after recycling, new messages go to the new process');
        $startPids = array_column($this->eventsOf('workerstart', 0), 'pid');
        foreach (array_unique($pids) as $pid) {
            $this->assertContains($pid, $startPids, 'each serving process had a WorkerStart with id 0');
        }
        $this->waitUntil(fn () => in_array($first, array_column($this->eventsOf('workerstop', 0), 'pid'), true), 3, 'WorkerStop of the recycled worker', $server);
        $this->assertStringNotContainsString('abnormal exit', $this->log());
    }

    // ---------------------------------------------------------------- unix socket

    public function testAServerOnAUnixSocket(): void
    {
        $path = "$this->dir/taskq.sock";
        // a stale socket file left by an earlier run
        $stale = stream_socket_server("unix://$path", $errno, $errstr);
        $this->assertNotFalse($stale);
        fclose($stale);
        clearstatcache();
        $this->assertSame('socket', filetype($path), 'a stale socket file is in place');

        $server = $this->startServer(<<<'PHP'
$path = "$dir/taskq.sock";
$server = new TaskServer($path, 0, TASKQ_PROCESS, TASKQ_SOCK_UNIX_STREAM);
$server->set(['worker_num' => 1, 'task_worker_num' => 1]);
record('ctor', ['host' => $server->host, 'type' => $server->type]);
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Connect', function ($s, $fd, $rid) { record('connect', ['fd' => $fd]); });
$server->on('Receive', function ($s, $fd, $rid, $data) { record('receive', ['fd' => $fd, 'data' => $data]); $s->task($data); $s->send($fd, "echo:$data"); });
$server->on('Task', function ($s, $id, $src, $data) { record('task', ['data' => $data]); });
$server->on('Close', function ($s, $fd, $rid) { record('close', ['fd' => $fd]); });
$server->start();
record('after_start');
PHP, [], false);
        $this->waitEvents('workerstart', 2, 5, $server);
        $this->waitUntil(fn () => @filetype($path) === 'socket', 3, 'the socket file', $server);
        $this->assertSame(['host' => $path, 'type' => TASKQ_SOCK_UNIX_STREAM], array_intersect_key($this->events('ctor')[0], ['host' => 1, 'type' => 1]));

        [$exit, $out, $err] = $this->runPhp(<<<PHP
<?php
\$c = new TaskClient(TASKQ_SOCK_UNIX_STREAM);
if (!\$c->connect('$path')) { fwrite(STDERR, 'connect failed ' . \$c->errCode); exit(3); }
\$c->send("hello\\0unix");
echo \$c->recv();
\$c->close();
PHP, 10);
        $this->assertSame([0, "echo:hello\0unix", ''], [$exit, $out, $err]);
        $task = $this->waitEvents('task', 1, 3, $server)[0];
        $this->assertSame("hello\0unix", $task['data']);
        $close = $this->waitEvents('close', 1, 3, $server)[0];
        $this->assertSame($this->events('connect')[0]['fd'], $close['fd']);

        $this->stopAndWait($server, $server->pid());
        clearstatcache();
        $this->assertFileDoesNotExist($path, 'the socket file is removed on stop');
        $this->assertCount(1, $this->events('after_start'));
    }
}
