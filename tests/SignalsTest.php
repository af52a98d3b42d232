<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;

/**
 * Signals and supervision: every child is reaped whatever killed it, every
 * process survives the signals a service manager sends to the whole group,
 * a dead manager makes the master exit non-zero, SIGHUP reopens the logs.
 */
final class SignalsTest extends TaskqTestCase
{
    /**
     * Settings from TASKQ_SETTINGS (JSON). onReceive: "eval:<code>" runs the
     * code and replies serialize(evaluate(...)); "throw:<message>" throws;
     * anything else is answered "ok:<data>:<pid>". onTask evaluates its
     * payload.
     */
    private const SERVER = <<<'PHP'
$settings = (getenv('TASKQ_SETTINGS') ? json_decode(getenv('TASKQ_SETTINGS'), true) : [])
    + ['worker_num' => 1, 'task_worker_num' => 1, 'log_file' => "$dir/taskq.log"];
$server = new TaskServer('127.0.0.1', $port);
$server->set($settings);
$server->on('Start', function ($s) { record('start', ['manager_pid' => $s->manager_pid]); });
$server->on('ManagerStart', function ($s) { record('managerstart'); });
$server->on('Shutdown', function ($s) { record('shutdown'); echo "shutdown-echo\n"; });
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('WorkerError', function ($s, $id, $pid, $code, $signal) {
    record('workererror', ['id' => $id, 'worker_pid' => $pid, 'exit_code' => $code, 'signal' => $signal]);
});
$server->on('Receive', function ($s, $fd, $rid, $data) {
    if (str_starts_with($data, 'eval:')) {
        $s->send($fd, serialize(evaluate($s, substr($data, 5), ['fd' => $fd])));
        return;
    }
    if (str_starts_with($data, 'throw:')) {
        throw new RuntimeException(substr($data, 6));
    }
    $s->send($fd, "ok:$data:" . getmypid());
});
$server->on('Task', function ($s, $taskId, $src, $data) { return eval($data); });
$server->start();
record('after_start');
PHP;

    private function server(array $settings = []): ServerProcess
    {
        $server = $this->startServer(self::SERVER, ['TASKQ_SETTINGS' => json_encode($settings)]);
        $n = ($settings['worker_num'] ?? 1) + ($settings['task_worker_num'] ?? 1);
        $this->waitEvents('workerstart', $n, 5, $server);
        return $server;
    }

    private static function alive(int $pid): bool
    {
        $stat = @file_get_contents("/proc/$pid/stat");
        return $stat !== false && !preg_match('/\) Z /', $stat);
    }

    /** The pid of the latest incarnation of worker `$id`. */
    private function workerPid(int $id): int
    {
        $starts = $this->eventsOf('workerstart', $id);
        return end($starts)['pid'];
    }

    public static function fatalSignals(): array
    {
        return [
            'SIGRTMIN+5' => [SIGRTMIN + 5],
            'SIGSYS' => [SIGSYS],
        ];
    }

    /**
     * A worker killed by a signal the manager may not know by name (the
     * real-time ones) is reaped, logged, reported to onWorkerError and
     * replaced, and a stop afterwards is as quick as ever.
     *
     * @dataProvider fatalSignals
     */
    public function testAWorkerKilledByAnySignalIsReapedLoggedAndRespawned(int $signal): void
    {
        $server = $this->server();
        foreach ([0 => 'worker', 1 => 'task worker'] as $id => $kind) {
            $pid = $this->workerPid($id);
            $this->assertTrue(posix_kill($pid, $signal));
            $this->waitUntil(fn () => count($this->eventsOf('workerstart', $id)) === 2, 3, "$kind #$id respawned after signal $signal", $server);
            $e = $this->eventsOf('workererror', $id);
            $this->assertCount(1, $e, "onWorkerError for the $kind");
            $this->assertSame([$pid, 0, $signal], [$e[0]['worker_pid'], $e[0]['exit_code'], $e[0]['signal']]);
            $this->assertStringContainsString("$kind(pid=$pid, id=$id) abnormal exit, status=0, signal=$signal", $this->log());
        }
        $this->assertSame(42, $this->evalInWorker('eval:', 'return $s->taskwait("return 42;", 3);')['r'], 'the replacements serve');
        $t0 = microtime(true);
        $this->stopServer($server);
        $this->assertLessThan(5, microtime(true) - $t0, 'the stop did not wait for a child nobody reaped');
        $this->assertSame(0, $server->wait(2));
    }

    /** The server's processes by role, from the events. */
    private function roles(ServerProcess $server): array
    {
        $start = $this->waitEvents('start', 1, 3, $server)[0];
        return ['master' => $start['pid'], 'manager' => $start['manager_pid'], 'worker' => $this->workerPid(0), 'task worker' => $this->workerPid(1)];
    }

    public static function harmlessGroupSignals(): array
    {
        return [
            'SIGHUP' => [SIGHUP, 0],
            'SIGRTMIN' => [SIGRTMIN, 0],
            'SIGPIPE' => [SIGPIPE, 0],
            'SIGUSR1' => [SIGUSR1, 2],
            'SIGUSR2' => [SIGUSR2, 1],
        ];
    }

    /**
     * A signal a service manager sends to the whole group (`systemctl kill
     * -s SIGRTMIN taskq`) reaches every process at once: none dies of it,
     * a reload happens once (not once per process that got it), and the
     * server keeps serving and stops cleanly afterwards.
     *
     * @dataProvider harmlessGroupSignals
     */
    public function testAGroupSignalKillsNoProcessAndActsOnce(int $signal, int $restarted): void
    {
        $server = $this->server();
        $before = $this->roles($server);
        foreach ($server->tree() as $pid) {
            posix_kill($pid, $signal);
        }
        if ($restarted) {
            $this->waitUntil(fn () => count($this->events('workerstart')) === 2 + $restarted, 3, 'the reload', $server);
        }
        usleep(300000);
        $this->assertCount(2 + $restarted, $this->events('workerstart'), 'reloaded once, not once per process');
        $this->assertSame([], $this->events('workererror'), 'no worker died');
        foreach (['master', 'manager'] as $role) {
            $this->assertTrue(self::alive($before[$role]), "the $role survived");
        }
        if (!$restarted) {
            $this->assertSame($before, $this->roles($server), 'every process survived');
        }
        $this->assertSame(42, $this->evalInWorker('eval:', 'return $s->taskwait("return 42;", 3);')['r'], 'still serving');
        $this->stopServer($server);
        $this->assertSame(0, $server->wait(2));
        $this->assertCount(1, $this->events('shutdown'));
    }

    public static function stoppingGroupSignals(): array
    {
        return ['SIGTERM' => [SIGTERM], 'SIGINT' => [SIGINT], 'SIGQUIT' => [SIGQUIT]];
    }

    /**
     * TERM, INT (Ctrl-C) and QUIT sent to the whole group stop the server in
     * order: onShutdown runs, `start()` returns, exit code 0.
     *
     * @dataProvider stoppingGroupSignals
     */
    public function testAStoppingGroupSignalStopsTheServerInOrder(int $signal): void
    {
        $server = $this->server();
        foreach ($server->tree() as $pid) {
            posix_kill($pid, $signal);
        }
        $this->waitUntil(fn () => $server->tree() === [], 8, 'every process to exit', $server);
        $this->assertSame(0, $server->wait(2), $server->stderr());
        $this->assertCount(1, $this->events('shutdown'));
        $this->assertCount(1, $this->events('after_start'), 'start() returned');
        $this->assertSame([], $this->events('workererror'));
    }

    /**
     * A group SIGTERM reaches an idle worker and the manager before the
     * master's stop order (here 300 ms before): the worker leaves at once,
     * and the manager does not replace it only to stop the new one.
     */
    public function testAGroupSigtermForksNoNewWorkerBeforeTheStop(): void
    {
        $server = $this->server();
        $roles = $this->roles($server);
        $this->assertTrue(posix_kill($roles['manager'], SIGTERM));
        $this->assertTrue(posix_kill($roles['task worker'], SIGTERM));
        usleep(300_000);
        $this->assertTrue(posix_kill($roles['master'], SIGTERM));
        $this->waitUntil(fn () => $server->tree() === [], 8, 'every process to exit', $server);
        $this->assertSame(0, $server->wait(2), $server->stderr());
        $this->assertCount(1, $this->eventsOf('workerstart', 1), 'the task worker was not replaced during the stop');
    }

    public static function managerDeaths(): array
    {
        return ['SIGKILL' => [SIGKILL], 'SIGRTMIN+5' => [SIGRTMIN + 5], 'SIGSYS' => [SIGSYS]];
    }

    /**
     * A manager that dies anyway (OOM killer, kill -9) makes the master stop
     * in order and exit non-zero, so that `Restart=on-failure` restarts it;
     * no worker is left behind.
     *
     * @dataProvider managerDeaths
     */
    public function testAManagerThatDiesMakesTheMasterStopAndExitNonZero(int $signal): void
    {
        $server = $this->server(['pid_file' => "$this->dir/server.pid"]);
        $roles = $this->roles($server);
        $this->assertTrue(posix_kill($roles['manager'], $signal));
        $this->waitUntil(fn () => $server->tree() === [], 8, 'every process to exit', $server);
        $code = $server->wait(2);
        $this->assertNotSame(0, $code, 'a non-zero exit code: the service manager restarts it');
        $this->assertNotNull($code);
        $this->assertStringContainsString('the manager process died (status=0, signal=' . $signal . ')', $server->stderr());
        $this->assertStringContainsString("manager process exited unexpectedly (status=0, signal=$signal); stopping the server", $this->log());
        $this->assertCount(1, $this->events('shutdown'), 'onShutdown ran');
        $this->assertFileDoesNotExist("$this->dir/server.pid", 'pid_file removed');
    }

    /**
     * kill -9 of the master leaves no manager or worker running, also after
     * a worker died of a real-time signal (the manager used to wait for
     * that lost child forever).
     */
    public function testAKilledMasterLeavesNoOrphans(): void
    {
        $server = $this->server();
        $this->assertTrue(posix_kill($this->workerPid(1), SIGRTMIN + 5));
        $this->waitUntil(fn () => count($this->eventsOf('workerstart', 1)) === 2, 3, 'the task worker respawned', $server);
        $roles = $this->roles($server);
        $this->assertTrue(posix_kill($roles['master'], SIGKILL));
        $this->waitUntil(fn () => $server->tree() === [], 5, 'the manager and workers to exit', $server);
    }

    /**
     * SIGHUP (a closed terminal, a logrotate `-HUP` rule) reopens the log
     * file in every process, as SIGRTMIN does; it never kills the master.
     */
    public function testSighupToTheMasterReopensTheLogsAndKillsNothing(): void
    {
        $server = $this->server(['pid_file' => "$this->dir/server.pid"]);
        $before = $this->roles($server);
        $this->waitLog('server started', 3, $server);
        $this->assertTrue(rename("$this->dir/taskq.log", "$this->dir/taskq.log.1"));
        $this->assertTrue(posix_kill($before['master'], SIGHUP));
        $this->waitUntil(fn () => is_file("$this->dir/taskq.log"), 3, 'the master to create a new log file', $server);
        $this->evalInWorker('eval:', '$s->task("throw new LogicException(\'task-line\');");');
        $this->client('$c->send("throw:worker-line");');
        $this->waitLog('task-line', 3, $server);
        $this->waitLog('worker-line', 3, $server);
        $this->assertSame($before, $this->roles($server), 'every process survived');
        $this->stopServer($server);
        $this->assertSame(0, $server->wait(2));
        $this->assertCount(1, $this->events('shutdown'));
        $this->assertFileDoesNotExist("$this->dir/server.pid");
    }

    /**
     * After `mv log log.1` and the reopen signal, PHP's own output (echo,
     * warnings) of every process of a daemon goes to the new file as well.
     */
    public function testLogRotationMovesPhpOutputOfEveryDaemonProcess(): void
    {
        $server = $this->startServer(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'task_worker_num' => 1, 'daemonize' => 1, 'log_file' => "$dir/taskq.log", 'pid_file' => "$dir/server.pid"]);
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('WorkerError', function ($s, $id) { echo "manager-echo\n"; record('workererror'); });
$server->on('Receive', function ($s, $fd, $rid, $data) { echo "worker-echo:$data\n"; trigger_error("worker-warning:$data", E_USER_WARNING); $s->task($data); });
$server->on('Task', function ($s, $id, $src, $data) { echo "task-echo:$data\n"; trigger_error("task-warning:$data", E_USER_WARNING); record('task'); });
$server->on('Shutdown', function ($s) { echo "master-echo\n"; record('shutdown'); });
$server->start();
PHP, [], false);
        $this->assertSame(0, $server->wait(3), $server->stderr());
        $pidFile = "$this->dir/server.pid";
        $this->waitUntil(fn () => is_file($pidFile) && trim(file_get_contents($pidFile)) !== '', 3, 'the pid file', $server);
        $master = (int) trim(file_get_contents($pidFile));
        $this->waitEvents('workerstart', 2, 5, $server);
        $this->client('$c->send("before");');
        $this->waitEvents('task', 1, 3, $server);

        $this->assertTrue(rename("$this->dir/taskq.log", "$this->dir/taskq.log.1"));
        $this->assertTrue(posix_kill($master, SIGRTMIN));
        $this->waitUntil(fn () => is_file("$this->dir/taskq.log"), 3, 'a new log file', $server);
        // the manager and the workers reopen just after the master
        $deadline = microtime(true) + 3;
        for ($n = 0; ; $n++) {
            $this->client("\$c->send('after$n');");
            $this->waitEvents('task', 2 + $n, 3, $server);
            if (str_contains($this->log(), "task-echo:after$n")) {
                break;
            }
            $this->assertLessThan($deadline, microtime(true), "PHP output never reached the new file:\n" . $this->log());
        }
        posix_kill($this->eventsOf('workerstart', 1)[0]['pid'], SIGKILL);
        $this->waitEvents('workererror', 1, 3, $server);
        posix_kill($master, SIGTERM);
        $this->waitUntil(fn () => $server->tree() === [], 8, 'every process to exit', $server);

        $new = $this->log();
        $old = $this->log('taskq.log.1');
        foreach (["worker-echo:after$n", "worker-warning:after$n", "task-echo:after$n", "task-warning:after$n", 'manager-echo', 'master-echo'] as $line) {
            $this->assertStringContainsString($line, $new, "$line in the new file");
            $this->assertStringNotContainsString($line, $old, "$line not in the rotated file");
        }
        $this->assertStringContainsString('task-echo:before', $old);
    }

    /** Queues a task that records when it began and how long its sleep(2) really took. */
    private function startSleepingTask(ServerProcess $server): void
    {
        $task = 'record("task_begin"); $t = microtime(true); sleep(2); record("task_end", ["slept" => microtime(true) - $t]);';
        $this->evalInWorker('eval:', '$s->task(' . var_export($task, true) . '); return 1;');
        $this->waitEvents('task_begin', 1, 3, $server);
    }

    /**
     * A stop does not interrupt a running callback: the task's sleep(2)
     * sleeps 2 s (the signal used to wake it after a fraction of that).
     */
    public function testAStopLetsARunningTaskSleepAsWritten(): void
    {
        $server = $this->server();
        $this->startSleepingTask($server);
        $this->assertTrue(posix_kill($server->pid(), SIGTERM));
        $this->waitUntil(fn () => $server->tree() === [], 6, 'every process to exit', $server);
        $end = $this->events('task_end');
        $this->assertCount(1, $end, 'the task ran to its end');
        $this->assertGreaterThanOrEqual(1.99, $end[0]['slept'], 'its sleep(2) was not cut short');
        $this->assertSame(0, $server->wait(2));
    }

    /**
     * Task worker 1 is told to leave by `$leave` while its task sleeps:
     * it is replaced, and the task ran once, its sleep(2) not cut short,
     * nothing killed.
     */
    private function assertTheTaskWorkerLeavesAfterItsTaskSleptAsWritten(ServerProcess $server, callable $leave): void
    {
        $old = $this->workerPid(1);
        $this->startSleepingTask($server);
        $leave();
        $this->waitUntil(fn () => count($this->eventsOf('workerstart', 1)) === 2, 5, 'the task worker to be replaced', $server);
        $end = $this->events('task_end');
        $this->assertCount(1, $end, 'the task ran to its end');
        $this->assertGreaterThanOrEqual(1.99, $end[0]['slept'], 'its sleep(2) was not cut short');
        $this->assertCount(1, $this->events('task_begin'), 'and it did not run again');
        $this->assertSame([], $this->events('workererror'), 'nothing was killed');
        $this->assertFalse(self::alive($old));
    }

    /**
     * `$server->stop($workerId)` from another worker tells the target to
     * leave the way a reload does (a SIGTERM used to wake its sleep early).
     */
    public function testStoppingAnotherWorkerLetsItsRunningTaskSleepAsWritten(): void
    {
        $server = $this->server();
        $this->assertTheTaskWorkerLeavesAfterItsTaskSleptAsWritten($server, function (): void {
            $this->assertTrue($this->evalInWorker('eval:', 'return $s->stop(1);')['r']);
        });
    }

    /**
     * A reload waits for a task running longer than max_wait_time (up to
     * reload_wait_time): it is neither cut short nor killed and run again.
     */
    public function testAReloadWaitsForATaskLongerThanMaxWaitTimeAndDoesNotRunItAgain(): void
    {
        $server = $this->server(['max_wait_time' => 1]);
        $this->assertTheTaskWorkerLeavesAfterItsTaskSleptAsWritten($server, function () use ($server): void {
            $this->assertTrue(posix_kill($server->pid(), SIGUSR2));
        });
        $this->assertStringNotContainsString('forced termination', $this->log());
    }
}
