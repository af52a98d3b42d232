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
     * code and replies serialize(evaluate(...)); anything else is answered
     * "ok:<data>:<pid>". onTask evaluates its payload.
     */
    private const SERVER = <<<'PHP'
$settings = (getenv('TASKQ_SETTINGS') ? json_decode(getenv('TASKQ_SETTINGS'), true) : [])
    + ['worker_num' => 1, 'task_worker_num' => 1, 'log_file' => "$dir/taskq.log"];
$server = new TaskServer('127.0.0.1', $port);
$server->set($settings);
$server->on('ManagerStart', function ($s) { record('managerstart'); });
$server->on('Shutdown', function ($s) { record('shutdown'); });
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('WorkerError', function ($s, $id, $pid, $code, $signal) {
    record('workererror', ['id' => $id, 'worker_pid' => $pid, 'exit_code' => $code, 'signal' => $signal]);
});
$server->on('Receive', function ($s, $fd, $rid, $data) {
    if (str_starts_with($data, 'eval:')) {
        $s->send($fd, serialize(evaluate($s, substr($data, 5), ['fd' => $fd])));
        return;
    }
    $s->send($fd, "ok:$data:" . getmypid());
});
$server->on('Task', function ($s, $taskId, $src, $data) { return eval($data); });
$server->start();
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
}
