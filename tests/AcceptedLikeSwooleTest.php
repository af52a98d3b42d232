<?php
use TaskQ\Tests\Support\TaskqTestCase;

/**
 * What Swoole accepts, taskq accepts (issue 13.4): task_ipc_mode 4 (Swoole's
 * stream mode, examples/task/task_stream.php), a log_file that cannot be
 * opened (a warning naming the path and errno, logs on stderr, the server
 * serves), shutdown() called in onWorkerStart (onShutdown runs and
 * start() returns), null for an option, which Swoole's set() takes as
 * the option not given, and settings read with parse_ini_file().
 */
final class AcceptedLikeSwooleTest extends TaskqTestCase
{
    /** The end of a server script whose onReceive answers with a taskwait(). */
    private const SERVES = <<<'PHP'

$server->on('Receive', function ($s, $fd, $rid, $data) { $s->send($fd, (string) $s->taskwait($data, 2)); });
$server->on('Task', function ($s, $taskId, $src, $data) { return "done: $data"; });
$server->start();
PHP;

    /** The gist of Swoole's examples/task/task_stream.php: taskwait over task_ipc_mode 4. */
    public function testTaskIpcModeFourRunsTasksLikeTheOtherModes(): void
    {
        $server = $this->startServer(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
record('set', ['r' => $server->set(['worker_num' => 1, 'task_worker_num' => 2, 'task_ipc_mode' => 4, 'log_file' => "$dir/taskq.log"])]);
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) { $s->send($fd, (string) $s->taskwait($data, 2)); });
$server->on('Task', function ($s, $taskId, $src, $data) { return "task: $data"; });
$server->on('Finish', function ($s, $taskId, $data) {});
$server->start();
PHP);
        $this->waitEvents('workerstart', 3, 5, $server);
        $this->assertTrue($this->events('set')[0]['r']);
        $this->assertSame('task: hello', $this->client('$c->send("hello"); echo $c->recv();'));
        $this->assertSame('', $server->stderr(), 'no warning about task_ipc_mode');
    }

    public function testALogFileThatCannotBeOpenedWarnsAndTheServerServes(): void
    {
        $server = $this->startServer(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'task_worker_num' => 1, 'log_file' => "$dir/no/such/dir/taskq.log"]);
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) { $s->send($fd, (string) $s->taskwait($data, 2)); });
$server->on('Task', function ($s, $taskId, $src, $data) { return "done: $data"; });
$server->on('Finish', function ($s, $taskId, $data) {});
$server->start();
PHP);
        $this->waitEvents('workerstart', 2, 5, $server);
        $this->assertSame('done: x', $this->client('$c->send("x"); echo $c->recv();'));
        $this->assertStringContainsString("cannot open log_file '{$this->dir}/no/such/dir/taskq.log': No such file or directory (os error 2); logging to stderr instead", $server->stderr());
        $this->assertStringContainsString('server started', $server->stderr(), 'the log goes to stderr');
    }

    public function testShutdownInOnWorkerStartRunsOnShutdownAndStartReturns(): void
    {
        $server = $this->startServer(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 2, 'task_worker_num' => 1, 'log_file' => "$dir/taskq.log"]);
$server->on('WorkerStart', function ($s, $id) {
    record('workerstart', ['id' => $id]);
    if ($id === 0) {
        record('shutdown_ret', ['r' => $s->shutdown()]);
    }
});
$server->on('Start', function ($s) { usleep(300_000); }); // the workers start meanwhile: the stop arrives this early
$server->on('Shutdown', function ($s) { record('shutdown'); });
$server->on('Receive', function ($s, $fd, $rid, $data) {});
$server->on('Task', function ($s, $taskId, $src, $data) {});
record('after_start', ['r' => $server->start()]);
PHP, [], false);
        $exit = $server->wait(10);
        $this->assertSame(0, $exit, "the master exits normally, not by SIGTERM\nstderr: " . $server->stderr());
        $this->assertTrue($this->events('shutdown_ret')[0]['r']);
        $this->assertCount(1, $this->events('shutdown'), 'onShutdown ran');
        $this->assertSame([['r' => true]], array_map(fn ($e) => ['r' => $e['r']], $this->events('after_start')), 'start() returned true');
    }

    /**
     * Configuration read from elsewhere passes `?? null` for what it does
     * not set: Swoole's set() (server and client) skips such keys, so the
     * defaults, or what an earlier set() gave, stay. taskq used to throw.
     */
    public function testANullOptionIsAnOptionNotGiven(): void
    {
        $server = $this->startServer(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'task_worker_num' => 1, 'log_file' => "$dir/taskq.log"]);
$server->set(['worker_num' => null, 'task_worker_num' => null, 'daemonize' => null, 'max_request' => null,
    'heartbeat_check_interval' => null, 'pid_file' => null, 'user' => null, 'package_eof' => null, 'log_file' => null]);
$server->on('WorkerStart', function ($s, $id) {
    record('workerstart', ['id' => $id, 'worker_num' => $s->setting['worker_num'], 'daemonize' => $s->setting['daemonize']]);
});
PHP . self::SERVES);
        $this->waitEvents('workerstart', 2, 5, $server);
        $this->assertSame('1done: x', $this->client('echo $c->set(["timeout" => null, "package_eof" => null, "open_eof_check" => null]); $c->send("x"); echo $c->recv();'));
        usleep(200_000);
        $this->assertCount(2, $this->events('workerstart'), 'worker_num and task_worker_num stayed 1');
        $this->assertSame([1, false], [$this->events('workerstart')[0]['worker_num'], $this->events('workerstart')[0]['daemonize']]);
        $this->assertStringContainsString('server started', $this->log(), 'log_file stayed');
        $this->assertSame('', $server->stderr());
    }

    /**
     * Settings kept in an ini file arrive as parse_ini_file() makes them:
     * strings, "1" for On/yes/true and "" for Off/no/false. Swoole takes ""
     * as false; taskq used to refuse it.
     */
    public function testSettingsFromParseIniFileAreAccepted(): void
    {
        file_put_contents("$this->dir/server.ini", "worker_num = 1\ntask_worker_num = 1\ndaemonize = Off\nopen_tcp_nodelay = On\nreload_async = no\nmax_wait_time = 2\n");
        $server = $this->startServer(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(parse_ini_file("$dir/server.ini") + ['log_file' => "$dir/taskq.log"]);
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
PHP . self::SERVES);
        $this->waitEvents('workerstart', 2, 5, $server);
        $this->assertSame('done: x', $this->client('$c->send("x"); echo $c->recv();'));
        $this->assertSame('', $server->stderr());
    }
}
