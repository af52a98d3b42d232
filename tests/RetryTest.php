<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;

/**
 * Failures during execution (issue 4): onTask throwing is retried with
 * exponential backoff then reported through onTaskFailed, stats() and the
 * log; a task worker dying mid-task (exit(), SIGKILL, fatal error) requeues
 * the task; task_timeout kills a stuck worker and counts the run as failed;
 * reload, max_request recycling and graceful shutdown never drop a task.
 */
final class RetryTest extends TaskqTestCase
{
    /**
     * Settings come from TASKQ_SETTINGS (JSON). A task is an array
     * ['n' => name, 'do' => what, 'ms' => sleep]: do = ok (default), throw,
     * exit, kill, fatal (every run) or throw_once, exit_once, kill_once,
     * fatal_once (first run only), stuck (sleeps up to 30 s). Each run is
     * recorded as 'run' at its start and 'done' at its end. With
     * TASKQ_TASK_FROM_WORKER=<id>, that event worker submits one always
     * throwing task 'w' from a timer after its first start.
     */
    private const SERVER = <<<'PHP'
$settings = (getenv('TASKQ_SETTINGS') ? json_decode(getenv('TASKQ_SETTINGS'), true) : [])
    + ['worker_num' => 1, 'task_worker_num' => 2, 'log_file' => "$dir/taskq.log"];
$server = new TaskServer('127.0.0.1', $port);
$server->set($settings);
$server->on('WorkerStart', function ($s, $id) use ($dir) {
    record('workerstart', ['id' => $id, 'taskworker' => $s->taskworker]);
    $from = getenv('TASKQ_TASK_FROM_WORKER');
    if ($from !== false && (int) $from === $id && !file_exists("$dir/submitted-from-worker")) {
        touch("$dir/submitted-from-worker");
        $s->after(10, function () use ($s) {
            record('submitted', ['task_id' => $s->task(['n' => 'w', 'do' => 'throw']), 'worker_id' => $s->worker_id]);
        });
    }
});
$server->on('WorkerStop', function ($s, $id) { record('workerstop', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) {
    if ($data === 'stats') { $s->send($fd, json_encode($s->stats())); return; }
    if ($data === 'reload') { $s->send($fd, json_encode($s->reload())); return; }
    $s->send($fd, "ok:$data");
});
$server->on('Task', function ($s, $taskId, $src, $data) use ($dir) {
    $n = $data['n'];
    $do = $data['do'] ?? 'ok';
    $marker = "$dir/marker-$n";
    $first = !file_exists($marker);
    if ($first) { touch($marker); }
    record('run', ['n' => $n, 'task_id' => $taskId, 'src' => $src, 'worker_id' => $s->worker_id, 't' => microtime(true)]);
    $how = str_replace('_once', '', $do);
    if ($how !== $do && !$first) { $how = 'ok'; }
    switch ($how) {
        case 'throw':
            throw new RuntimeException("boom $n");
        case 'exit':
            exit(3);
        case 'kill':
            exec('kill -KILL ' . getmypid());
            sleep(5);
            break;
        case 'fatal':
            ini_set('memory_limit', '16M');
            $x = str_repeat('x', 64 << 20);
            break;
        case 'stuck':
            $deadline = microtime(true) + 30;
            while (microtime(true) < $deadline) { usleep(10000); }
            break;
    }
    if (isset($data['ms'])) { usleep($data['ms'] * 1000); }
    record('done', ['n' => $n, 'task_id' => $taskId, 'worker_id' => $s->worker_id, 't' => microtime(true)]);
});
$server->on('TaskFailed', function ($s, $taskId, $data, $error) {
    record('failed', ['task_id' => $taskId, 'n' => $data['n'] ?? null, 'error' => $error, 'worker_id' => $s->worker_id, 'argc' => func_num_args(), 't' => microtime(true)]);
});
$server->start();
PHP;

    // ---------------------------------------------------------------- helpers

    private function server(array $settings = [], array $env = []): ServerProcess
    {
        $server = $this->startServer(self::SERVER, ['TASKQ_SETTINGS' => json_encode($settings)] + $env);
        $n = ($settings['worker_num'] ?? 1) + ($settings['task_worker_num'] ?? 2);
        $this->waitEvents('workerstart', $n, 5, $server);
        return $server;
    }

    /** Submits each task with TaskClient::task(); returns the ids (asserting each was acknowledged). */
    private function submit(array $tasks, array $options = []): array
    {
        $code = "<?php\n\$c = new TaskClient(TASKQ_SOCK_TCP);\n"
            . "if (!\$c->connect('127.0.0.1', {$this->port}, 3)) { fwrite(STDERR, 'connect failed: ' . \$c->errCode); exit(3); }\n"
            . '$ids = [];' . "\n"
            . 'foreach (' . var_export($tasks, true) . ' as $t) { $ids[] = $c->task($t, ' . var_export($options, true) . "); }\n"
            . 'echo json_encode([$ids, $c->errCode, $c->errMsg]);';
        [$exit, $out, $err] = $this->runPhp($code, 15);
        $this->assertSame([0, ''], [$exit, $err], "client failed\nstdout: $out");
        [$ids, $code, $msg] = json_decode($out, true);
        foreach ($ids as $i => $id) {
            $this->assertIsInt($id, "task #$i was acknowledged (errCode $code: $msg)");
        }
        return $ids;
    }

    private function send(string $message): string
    {
        $code = "<?php\n\$c = new TaskClient(TASKQ_SOCK_TCP);\n"
            . "if (!\$c->connect('127.0.0.1', {$this->port}, 3)) { fwrite(STDERR, 'connect failed: ' . \$c->errCode); exit(3); }\n"
            . '$c->send(' . var_export($message, true) . "); echo \$c->recv();\n";
        [$exit, $out, $err] = $this->runPhp($code, 10);
        $this->assertSame([0, ''], [$exit, $err], "client failed\nstdout: $out");
        return $out;
    }

    private function stats(): array
    {
        return json_decode($this->send('stats'), true);
    }

    /** Events of $kind for the task named $n. */
    private function of(string $kind, $n): array
    {
        return array_values(array_filter($this->events($kind), fn ($e) => ($e['n'] ?? null) === $n));
    }

    private static function duplicates(array $values): array
    {
        return array_filter(array_count_values(array_map('strval', $values)), fn ($n) => $n > 1);
    }

    // ---------------------------------------------------------------- onTask throws

    public function testAThrowingTaskIsRetriedWithDoublingBackoffThenReportedFailed(): void
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 2, 'task_retry_max' => 2, 'task_retry_delay' => 0.2]);
        [$id] = $this->submit([['n' => 'bad', 'do' => 'throw']]);
        $this->waitUntil(fn () => count($this->of('run', 'bad')) >= 1, 5, 'the first run', $server);
        $others = $this->submit(array_map(fn ($i) => ['n' => "ok$i"], range(0, 4)));

        $failed = $this->waitUntil(fn () => $this->events('failed'), 5, 'onTaskFailed', $server);
        $runs = $this->of('run', 'bad');
        $this->assertCount(3, $runs, 'one run + task_retry_max (2) retries');
        foreach ($runs as $r) {
            $this->assertSame($id, $r['task_id'], 'every retry carries the same task id');
        }
        $gap1 = $runs[1]['t'] - $runs[0]['t'];
        $gap2 = $runs[2]['t'] - $runs[1]['t'];
        $this->assertGreaterThanOrEqual(0.19, $gap1, 'first retry after task_retry_delay (0.2 s)');
        $this->assertLessThan(0.2 + 1.0, $gap1);
        $this->assertGreaterThanOrEqual(0.39, $gap2, 'second retry after twice the delay (0.4 s)');
        $this->assertLessThan(0.4 + 1.0, $gap2);
        $this->assertGreaterThan($gap1, $gap2, 'the backoff grows');
        $this->assertSame([], $this->of('done', 'bad'));

        $this->assertCount(1, $failed, 'onTaskFailed once');
        $f = $failed[0];
        $this->assertSame([$id, 'bad', 0, 4], [$f['task_id'], $f['n'], $f['worker_id'], $f['argc']], 'onTaskFailed($server, $taskId, $data, $error) in worker 0 for a client task');
        $this->assertStringContainsString('RuntimeException', $f['error']);
        $this->assertStringContainsString('boom bad', $f['error']);
        $this->assertGreaterThanOrEqual($runs[2]['t'], $f['t']);

        // the task waiting for its retry held no worker: the others ran meanwhile
        foreach (range(0, 4) as $i) {
            $done = $this->of('done', "ok$i");
            $this->assertCount(1, $done, "ok$i ran once");
            $this->assertLessThan($runs[2]['t'], $done[0]['t'], "ok$i ran while 'bad' waited for its retry");
        }
        $this->assertSame(range($id + 1, $id + 5), $others);

        $stats = $this->stats();
        $this->assertSame(1, $stats['task_failed_count']);
        $this->assertSame(0, $stats['tasking_num']);
        $this->waitLog("failed 3 time(s); given up", 2, $server);
        $this->assertMatchesRegularExpression("/\tERROR\ttask $id \\(id $id from a client\\) failed 3 time\\(s\\); given up: RuntimeException: boom bad/", $this->log());
    }

    public function testATaskThatThrowsOnceSucceedsOnItsRetryAndIsNotReported(): void
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 1, 'task_retry_delay' => 0.05]);
        [$id] = $this->submit([['n' => 'flaky', 'do' => 'throw_once']]);
        $done = $this->waitUntil(fn () => $this->of('done', 'flaky'), 5, 'the retry to succeed', $server);
        $this->assertSame($id, $done[0]['task_id']);
        $this->assertCount(2, $this->of('run', 'flaky'));
        // a sentinel behind it: once it ran, any failure report would have been made
        $this->submit([['n' => 'sentinel']]);
        $this->waitUntil(fn () => $this->of('done', 'sentinel'), 5, 'the sentinel', $server);
        $this->assertSame([], $this->events('failed'));
        $this->assertSame(0, $this->stats()['task_failed_count']);
        $this->assertStringNotContainsString('given up', $this->log());
    }

    public function testATaskFromAnEventWorkerIsReportedFailedInThatWorker(): void
    {
        $server = $this->server(['worker_num' => 2, 'task_worker_num' => 1, 'task_retry_max' => 1, 'task_retry_delay' => 0.05], ['TASKQ_TASK_FROM_WORKER' => '1']);
        $submitted = $this->waitEvents('submitted', 1, 5, $server)[0];
        $this->assertIsInt($submitted['task_id']);
        $failed = $this->waitEvents('failed', 1, 5, $server);
        $this->assertCount(2, $this->of('run', 'w'), '1 + task_retry_max (1) runs');
        $this->assertSame(1, $this->of('run', 'w')[0]['src'], 'src_worker_id is the submitting worker');
        $this->assertSame([$submitted['task_id'], 'w', 1], [$failed[0]['task_id'], $failed[0]['n'], $failed[0]['worker_id']], 'onTaskFailed runs in the worker that called task()');
        $this->assertSame($submitted['pid'], $failed[0]['pid']);
        $this->assertStringContainsString('boom w', $failed[0]['error']);
    }

    // ---------------------------------------------------------------- worker death

    public static function deaths(): array
    {
        return ['exit()' => ['exit'], 'SIGKILL' => ['kill'], 'fatal error' => ['fatal']];
    }

    /** @dataProvider deaths */
    public function testATaskWhoseWorkerDiesIsRequeuedAndCompletesOnAFreshWorker(string $how): void
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 2, 'task_retry_delay' => 0.05]);
        $tasks = [['n' => 'victim', 'do' => "{$how}_once"]];
        foreach (range(0, 19) as $i) {
            $tasks[] = ['n' => "t$i", 'ms' => 5];
        }
        $ids = $this->submit($tasks);
        $this->waitUntil(fn () => count($this->events('done')) >= 21, 10, 'all 21 tasks done', $server);

        $runs = $this->of('run', 'victim');
        $this->assertCount(2, $runs, 'the task ran again after its worker died');
        $this->assertNotSame($runs[0]['pid'], $runs[1]['pid'], 'on a fresh worker');
        $this->assertSame([$ids[0], $ids[0]], array_column($runs, 'task_id'));
        $this->assertCount(1, $this->of('done', 'victim'));
        $this->assertFalse(file_exists("/proc/{$runs[0]['pid']}/stat") && !preg_match('/\) Z /', (string) @file_get_contents("/proc/{$runs[0]['pid']}/stat")), 'the first worker is gone');
        $done = array_column($this->events('done'), 'n');
        $this->assertSame([], self::duplicates($done), 'tasks completed more than once');
        $this->assertEqualsCanonicalizing(array_merge(['victim'], array_map(fn ($i) => "t$i", range(0, 19))), $done);
        $this->assertSame([], $this->events('failed'));
        $stats = $this->stats();
        $this->assertGreaterThanOrEqual(1, $stats['task_requeued_count']);
        $this->assertSame(0, $stats['task_failed_count']);
        $this->assertSame(0, $stats['tasking_num']);
    }

    /** @dataProvider deaths */
    public function testATaskThatAlwaysKillsItsWorkerIsGivenUpAfterTheLimit(string $how): void
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 2, 'task_retry_max' => 1, 'task_retry_delay' => 0.05]);
        [$id] = $this->submit([['n' => 'poison', 'do' => $how]]);
        $failed = $this->waitEvents('failed', 1, 8, $server);
        $this->assertCount(2, $this->of('run', 'poison'), 'a worker death counts as a failed run: 1 + task_retry_max (1) runs');
        $this->assertSame([$id, 0], [$failed[0]['task_id'], $failed[0]['worker_id']]);
        $this->assertNotSame('', $failed[0]['error']);
        // the server still works and runs nothing more of it
        $this->submit([['n' => 'after']]);
        $this->waitUntil(fn () => $this->of('done', 'after'), 5, 'a task after the poison one', $server);
        $this->assertCount(2, $this->of('run', 'poison'));
        $stats = $this->stats();
        $this->assertSame(1, $stats['task_failed_count']);
        $this->assertSame(0, $stats['tasking_num']);
        $this->assertStringContainsString('given up', $this->log());
    }

    /** Whether process $pid is blocked in poll(): a task worker waiting for its next task. */
    private static function waitingInPoll(int $pid): bool
    {
        $call = explode(' ', (string) @file_get_contents("/proc/$pid/syscall"))[0];
        return in_array($call, ['7', '271'], true); // poll, ppoll (x86_64)
    }

    /**
     * A client's task is settled through the completion board: its worker
     * posts it finished instead of writing to the master. A worker killed
     * after that must not have the task requeued as if it had died running it.
     */
    public function testATaskFinishedBeforeItsWorkerIsKilledDoesNotRunAgain(): void
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 1]);
        $this->submit([['n' => 'a']]);
        [$done] = $this->waitUntil(fn () => $this->of('done', 'a'), 5, 'task a done', $server);
        $this->waitUntil(fn () => self::waitingInPoll($done['pid']), 5, 'the task worker waits for its next task', $server);
        exec('kill -KILL ' . $done['pid']);
        $this->waitUntil(fn () => count(array_filter($this->events('workerstart'), fn ($e) => $e['taskworker'])) >= 2, 5, 'a fresh task worker', $server);
        $this->submit([['n' => 'b']]);
        $this->waitUntil(fn () => $this->of('done', 'b'), 5, 'task b done', $server);
        $this->assertCount(1, $this->of('run', 'a'), 'the finished task ran once');
        $stats = $this->stats();
        $this->assertSame([0, 0], [$stats['task_requeued_count'], $stats['tasking_num']]);
    }

    // ---------------------------------------------------------------- task_timeout

    public function testTaskTimeoutKillsAStuckWorkerAndCountsTheRunAsFailed(): void
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 1, 'task_timeout' => 0.5, 'task_retry_delay' => 0.05]);
        $t0 = microtime(true);
        [$id] = $this->submit([['n' => 'stuck', 'do' => 'stuck']], ['max_attempts' => 2]);
        $failed = $this->waitEvents('failed', 1, 6, $server);
        $elapsed = microtime(true) - $t0;
        $runs = $this->of('run', 'stuck');
        $this->assertCount(2, $runs, 'each timed-out run counts as failed: max_attempts 2 = two runs');
        $this->assertNotSame($runs[0]['pid'], $runs[1]['pid'], 'the stuck worker was replaced');
        $this->assertSame([], $this->of('done', 'stuck'));
        $this->assertLessThan(4.0, $elapsed, 'two runs of 0.5 s each, not the 30 s the task would sleep');
        $this->assertGreaterThanOrEqual(0.45, $failed[0]['t'] - $runs[1]['t'], 'the second run was given task_timeout too');
        $this->assertSame([$id, 0], [$failed[0]['task_id'], $failed[0]['worker_id']]);
        $this->assertStringContainsString('task_timeout', $failed[0]['error']);
        foreach ($runs as $r) {
            $this->waitUntil(fn () => !file_exists("/proc/{$r['pid']}/stat") || preg_match('/\) Z /', (string) @file_get_contents("/proc/{$r['pid']}/stat")), 3, "stuck worker {$r['pid']} killed", $server);
        }
        $this->assertStringContainsString('task_timeout', $this->log());

        // a task within the limit on the replacement worker is not killed
        $this->submit([['n' => 'quick', 'ms' => 200]]);
        $done = $this->waitUntil(fn () => $this->of('done', 'quick'), 5, 'a task under task_timeout', $server);
        $this->assertNotContains($done[0]['pid'], array_column($runs, 'pid'));
        $this->assertSame(1, $this->stats()['task_failed_count']);
    }

    /** The timeout check reads the board first: a quick task settled there is not "still running". */
    public function testTaskTimeoutSparesAWorkerWhoseTaskFinishedWithoutReporting(): void
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 1, 'task_timeout' => 0.3]);
        $this->submit([['n' => 'quick']]);
        [$done] = $this->waitUntil(fn () => $this->of('done', 'quick'), 5, 'the quick task done', $server);
        usleep(800_000); // past task_timeout, so the master's timeout check has run
        $this->assertTrue(self::waitingInPoll($done['pid']), 'the task worker is alive and idle');
        $this->assertStringNotContainsString('task_timeout', $this->log());
        $this->assertCount(1, array_filter($this->events('workerstart'), fn ($e) => $e['taskworker']));
        $this->assertSame(0, $this->stats()['task_failed_count']);
    }

    // ---------------------------------------------------------------- reload, max_request, shutdown

    public static function reloadSignals(): array
    {
        return ['SIGUSR1 (all workers)' => [SIGUSR1], 'SIGUSR2 (task workers)' => [SIGUSR2]];
    }

    /** @dataProvider reloadSignals */
    public function testReloadNeverDropsAQueuedOrRunningClientTask(int $signal): void
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 2]);
        $old = array_column(array_filter($this->events('workerstart'), fn ($e) => $e['taskworker']), 'pid');
        $ids = $this->submit(array_map(fn ($i) => ['n' => "r$i", 'ms' => 40], range(0, 39)));
        $this->waitUntil(fn () => count($this->events('run')) >= 2, 5, 'two tasks running', $server);
        $this->assertTrue(posix_kill($server->pid(), $signal));
        $this->assertLessThan(30, count($this->events('done')), 'tasks were still queued at the reload');
        $this->waitUntil(fn () => count($this->events('done')) >= 40, 10, 'all 40 tasks done', $server);

        $done = array_column($this->events('done'), 'n');
        $this->assertSame([], self::duplicates($done), 'tasks that completed more than once');
        $this->assertEqualsCanonicalizing(array_map(fn ($i) => "r$i", range(0, 39)), $done);
        $runPid = array_column($this->events('run'), 'pid', 'n');
        $donePid = array_column($this->events('done'), 'pid', 'n');
        ksort($runPid);
        ksort($donePid);
        $this->assertSame($runPid, $donePid, 'every task that began ended in that process (none was cut off)');
        $this->assertCount(40, $this->events('run'), 'no task ran twice');
        $this->assertNotEmpty(array_diff(array_unique(array_values($donePid)), $old), 'the reloaded task workers ran part of the queue');
        $this->assertSame($ids, array_values(array_unique($ids)));
        $this->assertStringNotContainsString('abnormal exit', $this->log());
    }

    public function testMaxRequestRecyclingNeverDropsAClientTask(): void
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 2, 'task_max_request' => 3]);
        $this->submit(array_map(fn ($i) => ['n' => "m$i", 'ms' => 5], range(0, 59)));
        $this->waitUntil(fn () => count($this->events('done')) >= 60, 15, 'all 60 tasks done', $server);
        $done = array_column($this->events('done'), 'n');
        $this->assertSame([], self::duplicates($done));
        $this->assertEqualsCanonicalizing(array_map(fn ($i) => "m$i", range(0, 59)), $done);
        $this->assertCount(60, $this->events('run'), 'no task ran twice');
        $pids = array_unique(array_column($this->events('done'), 'pid'));
        $this->assertGreaterThanOrEqual(8, count($pids), 'task workers were recycled every ~3 tasks');
        $this->assertStringNotContainsString('abnormal exit', $this->log());
        $this->assertSame(0, $this->stats()['tasking_num']);
    }

    public function testGracefulShutdownFinishesRunningTasksAndCountsTheQueuedOnesItDrops(): void
    {
        $server = $this->server(['worker_num' => 1, 'task_worker_num' => 2, 'max_wait_time' => 10]);
        $this->submit(array_map(fn ($i) => ['n' => "s$i", 'ms' => 400], range(0, 9)));
        $this->waitUntil(fn () => count($this->events('run')) >= 2, 5, 'two tasks running', $server);
        $this->stopServer($server);
        $runs = $this->events('run');
        $done = $this->events('done');
        $this->assertGreaterThanOrEqual(2, count($runs));
        $this->assertEqualsCanonicalizing(array_column($runs, 'n'), array_column($done, 'n'), 'every task that had begun ran to its end before its worker exited');
        $runPid = array_column($runs, 'pid', 'n');
        $donePid = array_column($done, 'pid', 'n');
        ksort($runPid);
        ksort($donePid);
        $this->assertSame($runPid, $donePid, 'each in the process that began it');
        $lost = 10 - count($done);
        $this->assertGreaterThan(0, $lost, 'tasks were still queued at the stop');
        // without a task_store the queued ones cannot survive; the README promises they are counted
        $this->assertMatchesRegularExpression("/server stopped with $lost unfinished task\\(s\\) in memory; they are lost/", $this->log());
    }
}
