<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;

/**
 * How the master ends: it closes the door first (new connections are
 * refused, what arrives afterwards is answered "stopping" and counted), it
 * reads what exited workers wrote last before it exits, and waits for that
 * only so long when the workers are still alive (the manager died under them).
 */
final class MasterStopTest extends TaskqTestCase
{
    private function server(string $settings = ''): ServerProcess
    {
        return $this->startServer(<<<PHP
\$server = new TaskServer('127.0.0.1', \$port);
\$server->set(['worker_num' => 1, 'task_worker_num' => 2, 'log_file' => \$dir . '/taskq.log', $settings]);
\$server->on('Start', function (\$s) { record('start', ['manager_pid' => \$s->manager_pid]); });
\$server->on('Receive', function (\$s, \$fd, \$rid, \$data) {});
\$server->on('Task', function (\$s, \$id, \$src, \$data) {
    record('run', ['label' => \$data]);
    usleep(300000);
    record('done', ['label' => \$data]);
    return null;
});
\$server->start();
PHP);
    }

    public function testAMasterWhoseManagerDiedExitsAndTakesTheWorkersWithIt(): void
    {
        $server = $this->server();
        $manager = $this->waitEvents('start', 1, 5, $server)[0]['manager_pid'];
        $this->assertGreaterThan(1, count($server->tree()) - 2, 'workers are running');
        posix_kill($manager, SIGKILL);
        $this->waitLog('manager process exited unexpectedly', 5, $server);
        $this->waitUntil(fn () => $server->tree() === [], 10, 'the master and every worker to exit', $server);
    }

    public function testTasksThatFinishDuringAGracefulStopAreNotRunAgainFromTheStore(): void
    {
        $store = "$this->dir/store";
        $settings = "'task_store' => " . var_export($store, true);
        for ($round = 0; $round < 3; $round++) {
            $server = $this->server($settings);
            $out = $this->client(<<<PHP
foreach (['a', 'b'] as \$k) { if (\$c->task("r$round-\$k") === false) { echo 'refused'; exit(1); } }
echo 'ok';
PHP);
            $this->assertSame('ok', $out);
            // Stop while both run: each worker finishes its task, reports
            // it done and exits at once.
            $this->waitUntil(fn () => count(array_filter($this->events('run'), fn ($e) => str_starts_with($e['label'], "r$round-"))) === 2, 10, "both tasks of round $round running", $server);
            $this->stopServer($server);
        }
        $server = $this->server($settings);
        $this->client('echo "ok";');
        $this->stopServer($server);
        $runs = array_count_values(array_column($this->events('run'), 'label'));
        ksort($runs); // the two tasks of a round run in parallel, in either order
        $this->assertSame(array_fill_keys(['r0-a', 'r0-b', 'r1-a', 'r1-b', 'r2-a', 'r2-b'], 1), $runs, 'every task ran once');
        $this->assertCount(6, $this->events('done'));
    }

    /**
     * A stop held open by a long task: from its first moment new connections
     * are refused (the kernel no longer completes them for nobody to read),
     * a message or task that an open connection sends is answered with the
     * "server stopping" error (a raw client is disconnected) and counted in
     * the stop's log line, and a producer that keeps connecting throughout
     * either gets an error or its task runs.
     */
    public function testAStopClosesTheDoorFirst(): void
    {
        $server = $this->startServer(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'task_worker_num' => 2, 'log_file' => "$dir/taskq.log", 'max_wait_time' => 10]);
$server->on('BeforeShutdown', function ($s) { record('beforeshutdown'); });
$server->on('Receive', function ($s, $fd, $rid, $data) { record('receive', ['data' => $data]); });
$server->on('Task', function ($s, $id, $src, $data) {
    if ($data === 'long') { record('long'); sleep(2); return null; }
    record('run', ['label' => $data]);
    return null;
});
$server->start();
PHP);
        // connections opened before the stop: a TaskClient and a raw one
        $early = $this->startPhp(<<<PHP
<?php
\$c = new TaskClient(TASKQ_SOCK_TCP);
\$c->connect('127.0.0.1', {$this->port}, 3);
if (\$c->task('long') === false) { exit(2); }
\$raw = stream_socket_client('tcp://127.0.0.1:{$this->port}', \$errno, \$errstr, 3);
touch('{$this->dir}/connected');
while (!is_file('{$this->dir}/stopping')) { usleep(10000); }
\$sent = \$c->send('late-message');
\$task = \$c->task('late-task');
fwrite(\$raw, 'late-raw');
stream_set_timeout(\$raw, 3);
echo json_encode(['sent' => \$sent, 'task' => \$task, 'code' => \$c->errCode, 'msg' => \$c->errMsg, 'raw' => fread(\$raw, 100), 'eof' => feof(\$raw)]);
PHP, 15);
        $this->waitUntil(fn () => is_file("$this->dir/connected") && $this->events('long'), 5, 'the long task and the early connections', $server);

        // a producer that keeps connecting and submitting, before and during the stop
        $producer = $this->startPhp(<<<PHP
<?php
\$acked = []; \$errors = []; \$t0 = microtime(true);
for (\$i = 0; microtime(true) - \$t0 < 3; \$i++) {
    \$c = new TaskClient(TASKQ_SOCK_TCP);
    if (!@\$c->connect('127.0.0.1', {$this->port}, 1)) { \$errors[] = 'connect:' . \$c->errCode; usleep(20000); continue; }
    \$id = @\$c->task("p\$i");
    if (\$id === false) { \$errors[] = 'task:' . \$c->errCode; } else { \$acked[] = "p\$i"; }
    \$c->close();
    usleep(5000);
}
echo json_encode(['acked' => \$acked, 'errors' => \$errors]);
PHP, 15);
        $this->waitUntil(fn () => $this->events('run'), 5, 'the producer to get tasks through', $server);

        $this->assertTrue(posix_kill($server->pid(), SIGTERM));
        $this->waitEvents('beforeshutdown', 1, 3, $server);
        $refused = @stream_socket_client("tcp://127.0.0.1:$this->port", $errno, $errstr, 1);
        $this->assertFalse($refused, 'a connection made once the stop began is refused');
        $this->assertSame(SOCKET_ECONNREFUSED, $errno, $errstr);
        touch("$this->dir/stopping");

        [$code, $out, $err] = $this->finishPhp($early, 10);
        $this->assertSame(0, $code, $err);
        $late = json_decode($out, true);
        $this->assertSame(strlen('late-message'), $late['sent'], 'a message is written');
        $this->assertFalse($late['task'], 'a task sent during the stop is refused');
        $this->assertSame(9006, $late['code'], $late['msg']);
        $this->assertSame('', $late['raw'], 'the raw client is disconnected');
        $this->assertTrue($late['eof']);

        [$code, $out, $err] = $this->finishPhp($producer, 10);
        $this->assertSame(0, $code, $err);
        $produced = json_decode($out, true);
        $this->assertNotEmpty($produced['errors'], 'the producer met the closed door');
        $this->waitUntil(fn () => $server->tree() === [], 10, 'every process to exit', $server);
        $this->assertSame(0, $server->wait(2));

        $ran = array_column($this->events('run'), 'label');
        $this->assertSame([], array_values(array_diff($produced['acked'], $ran)), 'every acknowledged task ran');
        $this->assertNotContains('late-task', $ran);
        $this->assertSame([], array_column($this->events('receive'), 'data'), 'no message was handled during the stop');
        $stoppingErrors = count(array_filter($produced['errors'], fn ($e) => $e === 'task:9006'));
        $this->assertMatchesRegularExpression('/server stopped: .* (\d+) refused while stopping/', $this->log());
        preg_match('/(\d+) refused while stopping/', $this->log(), $m);
        $this->assertSame(3 + $stoppingErrors, (int) $m[1], 'the late message, task and raw message, and the producer\'s refused tasks, are counted');
    }
}
