<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;

/**
 * How the master ends: it reads what exited workers wrote last before it
 * exits, and waits for that only so long when the workers are still alive
 * (the manager died under them).
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
        $this->assertSame(array_fill_keys(['r0-a', 'r0-b', 'r1-a', 'r1-b', 'r2-a', 'r2-b'], 1), $runs, 'every task ran once');
        $this->assertCount(6, $this->events('done'));
    }
}
