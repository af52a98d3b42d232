<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;

/**
 * Misconfiguration fails at start, not later (issue 12, items 6 and 10): a
 * `user` or `group` that does not exist and an unwritable `pid_file` make
 * start() throw before anything forks (a daemon's launcher exits non-zero
 * with the message on its stderr); a server without task workers refuses
 * TaskClient::task() instead of acknowledging a task that can never run;
 * and a daemon reachable from other hosts without an auth_token says so on
 * the terminal that started it.
 */
final class StartChecksTest extends TaskqTestCase
{
    /**
     * Settings come from TASKQ_SETTINGS (JSON) and the host from TASKQ_HOST.
     * start() is wrapped: a TaskQ\Exception is recorded as 'refused' and the
     * script exits 0, unless TASKQ_UNCAUGHT is set.
     */
    private const SERVER = <<<'PHP'
$settings = json_decode(getenv('TASKQ_SETTINGS'), true) + ['worker_num' => 1, 'task_worker_num' => 1];
$server = new TaskServer(getenv('TASKQ_HOST') ?: '127.0.0.1', $port);
$server->set($settings);
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) { $s->send($fd, "ok:$data"); });
$server->on('Task', function ($s, $id, $src, $data) { record('task', ['data' => $data]); });
if (getenv('TASKQ_UNCAUGHT')) {
    $server->start();
    exit(0);
}
try {
    $server->start();
    record('started');
} catch (TaskQ\Exception $e) {
    record('refused', ['message' => $e->getMessage()]);
}
PHP;

    private function launch(array $settings, array $env = []): ServerProcess
    {
        return $this->startServer(self::SERVER, ['TASKQ_SETTINGS' => json_encode($settings)] + $env, false);
    }

    /** The script ended on its own, having started no worker and listened on nothing. */
    private function assertRefusedBeforeForking(ServerProcess $server, string $message): void
    {
        $this->assertSame(0, $server->wait(10), "start() returns instead of serving\nstderr: " . $server->stderr() . "\nlog:\n" . $this->log());
        $refused = $this->events('refused');
        $this->assertCount(1, $refused, 'start() threw TaskQ\Exception');
        $this->assertStringContainsString($message, $refused[0]['message']);
        $this->assertSame($server->pid(), $refused[0]['pid'], 'in the process that called start()');
        $this->assertSame([], $this->events('workerstart'), 'no worker was forked');
        $this->assertSame([], $server->tree(), 'nothing is left running');
        $this->assertFalse(self::listening($this->port));
    }

    public static function missingIdentities(): array
    {
        return [
            'user' => [['user' => 'no-such-user-taskq'], "option 'user' => 'no-such-user-taskq': no such user"],
            'group' => [['group' => 'no-such-group-taskq'], "option 'group' => 'no-such-group-taskq': no such group"],
        ];
    }

    /** @dataProvider missingIdentities */
    public function testAUserOrGroupThatDoesNotExistFailsStart(array $settings, string $message): void
    {
        $server = $this->launch($settings + ['log_file' => "$this->dir/taskq.log"]);
        $this->assertRefusedBeforeForking($server, $message);
    }

    public function testAnUnwritablePidFileFailsStart(): void
    {
        $server = $this->launch(['pid_file' => "$this->dir/no-such-dir/server.pid", 'log_file' => "$this->dir/taskq.log"]);
        $this->assertRefusedBeforeForking($server, "cannot write pid_file $this->dir/no-such-dir/server.pid");
    }

    public function testADaemonWithAnUnwritablePidFileExitsNonZeroWithTheMessageOnStderr(): void
    {
        $server = $this->launch(
            ['daemonize' => 1, 'pid_file' => "$this->dir/no-such-dir/server.pid", 'log_file' => "$this->dir/taskq.log"],
            ['TASKQ_UNCAUGHT' => '1'],
        );
        $code = $server->wait(10);
        $this->assertNotNull($code, 'the launcher exits');
        $this->assertNotSame(0, $code, 'with a non-zero code');
        $this->assertStringContainsString("cannot write pid_file $this->dir/no-such-dir/server.pid", $server->stderr());
        usleep(300000);
        $this->assertSame([], $server->tree(), 'no daemon was left running');
        $this->assertSame([], $this->events('workerstart'));
    }

    public function testWithoutTaskWorkersTaskClientSubmissionsAreRefused(): void
    {
        $server = $this->launch(['task_worker_num' => 0, 'log_file' => "$this->dir/taskq.log"]);
        $this->waitUntil(fn () => self::listening($this->port), 10, 'the server to listen', $server);
        $this->waitEvents('workerstart', 1, 5, $server);
        $this->assertStringContainsString('a Task callback is registered but task_worker_num is 0', $server->stderr(), 'start() warns about the Task callback that can never run');
        $out = $this->client(<<<'PHP'
$id = @$c->task(['n' => 1]);
$one = [$id, $c->errCode, $c->errMsg];
$c2 = new TaskClient(TASKQ_SOCK_TCP);
$c2->connect('127.0.0.1', $port, 3);
$many = @$c2->taskMulti(['a' => 1, 'b' => 2]);
echo json_encode([$one, $many, $c2->errCode, $c2->errMsg, $c->send('still') !== false ? $c->recv() : null]);
PHP);
        [[$id, $code, $msg], $many, $multiCode, $multiMsg, $reply] = json_decode($out, true);
        $this->assertFalse($id, 'task() is not acknowledged');
        $this->assertSame(9007, $code);
        $this->assertSame('the server has no task workers (task_worker_num is 0): the task was not queued', $msg);
        $this->assertSame(['a' => false, 'b' => false], $many, 'taskMulti() acknowledges none');
        $this->assertSame(9007, $multiCode, $multiMsg);
        $this->assertSame('ok:still', $reply, 'the connection keeps working');
        usleep(200000);
        $this->assertSame([], $this->events('task'));
        $this->stopServer($server);
    }

    public function testADaemonReachableFromOtherHostsWarnsOnTheLaunchersStderr(): void
    {
        $server = $this->launch(
            ['daemonize' => 1, 'pid_file' => "$this->dir/server.pid"],
            ['TASKQ_HOST' => '0.0.0.0', 'TASKQ_UNCAUGHT' => '1'],
        );
        $this->assertSame(0, $server->wait(10), 'the launcher exits 0 once the daemon runs: ' . $server->stderr());
        $this->assertStringContainsString(
            "listening on 0.0.0.0:{$this->port}, reachable from other hosts, without an auth_token",
            $server->stderr(),
            'the warning reaches the terminal, not only /dev/null',
        );
        $pidFile = "$this->dir/server.pid";
        $this->waitUntil(fn () => is_file($pidFile) && trim(file_get_contents($pidFile)) !== '', 5, 'the pid file', $server);
        $this->waitEvents('workerstart', 2, 5, $server);
        $this->stopServer($server, SIGTERM, (int) trim(file_get_contents($pidFile)));
    }

    public function testADaemonWithAnAuthTokenDoesNotWarn(): void
    {
        $server = $this->launch(
            ['daemonize' => 1, 'pid_file' => "$this->dir/server.pid", 'auth_token' => 'secret'],
            ['TASKQ_HOST' => '0.0.0.0', 'TASKQ_UNCAUGHT' => '1'],
        );
        $this->assertSame(0, $server->wait(10), $server->stderr());
        $this->assertStringNotContainsString('reachable from other hosts', $server->stderr());
        $pidFile = "$this->dir/server.pid";
        $this->waitUntil(fn () => is_file($pidFile) && trim(file_get_contents($pidFile)) !== '', 5, 'the pid file', $server);
        $this->stopServer($server, SIGTERM, (int) trim(file_get_contents($pidFile)));
    }
}
