<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;
use TaskQ\Tests\Support\ProcessTree;

/**
 * The durable task_store (issue 4): a kill -9 of every taskq process while
 * 10,000 acknowledged tasks are queued or running loses none of them; a
 * store locked by a running server or an unusable path makes start() fail
 * clearly; queued, delayed and failed tasks survive a graceful restart and
 * delayed ones a kill -9; operator signals during a drain from disk lose
 * and repeat nothing.
 */
final class DurableStoreTest extends TaskqTestCase
{
    /**
     * Settings come from TASKQ_SETTINGS (JSON). A string task is cheap: onTask
     * appends "<taskId> <data>\n" to exec/<pid> (one file per task worker, no
     * lock), after sleeping TASKQ_SLOW_US microseconds while the file "slow"
     * exists. An array task ['label' =>, 'ms' =>, 'throw' =>] is recorded as
     * 'run' and 'done' events.
     */
    private const SERVER = <<<'PHP'
$settings = (getenv('TASKQ_SETTINGS') ? json_decode(getenv('TASKQ_SETTINGS'), true) : [])
    + ['worker_num' => 1, 'task_worker_num' => 2, 'log_file' => "$dir/taskq.log"];
$server = new TaskServer('127.0.0.1', $port);
$server->set($settings);
$slowUs = (int) getenv('TASKQ_SLOW_US');
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) {
    if ($data === 'stats') { $s->send($fd, json_encode($s->stats())); return; }
    if ($data === 'targeted') {
        // four tasks for task worker 0 only: the first holds it 2 s, the rest wait for it
        foreach (range(0, 3) as $i) { $s->task(['label' => "t$i", 'ms' => $i === 0 ? 2000 : 0], 0); }
    }
    $s->send($fd, "ok:$data");
});
$server->on('Task', function ($s, $taskId, $src, $data) use ($dir, $slowUs) {
    if (is_string($data)) {
        if ($slowUs > 0 && file_exists("$dir/slow")) { usleep($slowUs); }
        if ($slowUs > 0 && file_exists("$dir/hold-" . substr($data, 0, 6))) {
            // the test's moment to kill this task worker mid-task
            touch("$dir/held");
            while (!file_exists("$dir/go")) { usleep(1000); }
        }
        file_put_contents("$dir/exec/" . getmypid(), "$taskId $data\n", FILE_APPEND);
        return;
    }
    record('run', ['label' => $data['label'], 'task_id' => $taskId, 't' => microtime(true)]);
    if (!empty($data['throw'])) { throw new RuntimeException('boom ' . $data['label']); }
    if (isset($data['ms'])) { usleep($data['ms'] * 1000); }
    record('done', ['label' => $data['label'], 'task_id' => $taskId, 't' => microtime(true)]);
});
$server->on('TaskFailed', function ($s, $taskId, $data, $error) {
    record('failed', ['task_id' => $taskId, 'label' => is_array($data) ? $data['label'] : $data, 'error' => $error]);
});
$server->start();
PHP;

    protected function setUp(): void
    {
        parent::setUp();
        mkdir("$this->dir/exec");
    }

    // ---------------------------------------------------------------- helpers

    private function settings(array $settings = []): array
    {
        return $settings + ['task_store' => "$this->dir/store"];
    }

    private function server(array $settings, array $env = []): ServerProcess
    {
        $before = count($this->events('workerstart'));
        $server = $this->startServer(self::SERVER, ['TASKQ_SETTINGS' => json_encode($settings)] + $env);
        $n = ($settings['worker_num'] ?? 1) + ($settings['task_worker_num'] ?? 2);
        $this->waitUntil(fn () => count($this->events('workerstart')) >= $before + $n, 10, "$n workers started", $server);
        return $server;
    }

    /** Runs the very script of $first again (same port, same settings): a restart. */
    private function restart(ServerProcess $first, array $settings, array $env = []): ServerProcess
    {
        $before = count($this->events('workerstart'));
        $server = new ServerProcess($first->script, $this->dir, ['TASKQ_PORT' => (string) $this->port, 'TASKQ_DIR' => $this->dir, 'TASKQ_SETTINGS' => json_encode($settings)] + $env);
        $this->servers[] = $server;
        $this->waitUntil(fn () => self::listening($this->port), 10, "the restarted server listening on port $this->port", $server);
        $n = ($settings['worker_num'] ?? 1) + ($settings['task_worker_num'] ?? 2);
        $this->waitUntil(fn () => count($this->events('workerstart')) >= $before + $n, 10, "$n workers restarted", $server);
        return $server;
    }

    /** Submits each task; returns the ids (asserting each was acknowledged). */
    private function submit(array $tasks, array $options = []): array
    {
        $code = "<?php\n\$c = new TaskClient(TASKQ_SOCK_TCP);\n"
            . "if (!\$c->connect('127.0.0.1', {$this->port}, 3)) { fwrite(STDERR, 'connect failed: ' . \$c->errCode); exit(3); }\n"
            . '$ids = [];' . "\n"
            . 'foreach (' . var_export($tasks, true) . ' as $t) { $ids[] = $c->task($t, ' . var_export($options, true) . "); }\n"
            . 'echo json_encode([$ids, $c->errCode, $c->errMsg, microtime(true)]);';
        [$exit, $out, $err] = $this->runPhp($code, 15);
        $this->assertSame([0, ''], [$exit, $err], "client failed\nstdout: $out");
        [$ids, $code, $msg] = json_decode($out, true);
        foreach ($ids as $i => $id) {
            $this->assertIsInt($id, "task #$i was acknowledged (errCode $code: $msg)");
        }
        return $ids;
    }

    /** Every "<taskId> <data>" line the task workers appended, in no particular order. */
    private function executed(): array
    {
        return $this->lines("$this->dir/exec/*");
    }

    /**
     * The finished lines of the files matching $glob: a line another
     * process is appending right now (no newline yet) is left for the next
     * read.
     */
    private function lines(string $glob): array
    {
        $lines = [];
        foreach (glob($glob) ?: [] as $file) {
            $text = (string) @file_get_contents($file);
            $end = strrpos($text, "\n");
            if ($end !== false) {
                array_push($lines, ...explode("\n", substr($text, 0, $end)));
            }
        }
        return $lines;
    }

    /** The producers' acknowledged ids by task data, from their "<id> <data>" lines in acked-*. */
    private function acked(): array
    {
        $acked = [];
        foreach ($this->lines("$this->dir/acked-*") as $line) {
            [$id, $data] = explode(' ', $line, 2);
            $acked[$data] = (int) $id;
        }
        return $acked;
    }

    /** SIGKILLs every process of the server at once (master, manager, workers). */
    private function killEverything(ServerProcess $server): int
    {
        $pids = $server->tree();
        $this->assertGreaterThanOrEqual(4, count($pids), 'master, manager and workers are running');
        $left = ProcessTree::killAll($server->tag);
        $this->assertSame([], $left, 'every taskq process died');
        $server->wait(2);
        return count($pids);
    }

    private function of(string $kind, string $label): array
    {
        return array_values(array_filter($this->events($kind), fn ($e) => ($e['label'] ?? null) === $label));
    }

    // ---------------------------------------------------------------- the crash test

    public function testKill9OfEveryProcessWith10000TasksQueuedOrRunningLosesNoAcknowledgedTask(): void
    {
        $t0 = microtime(true);
        $settings = $this->settings(['worker_num' => 1, 'task_worker_num' => 2]);
        $env = ['TASKQ_SLOW_US' => '20000'];
        touch("$this->dir/slow");
        $first = $this->server($settings, $env);

        // 4 producers x 2,500 acknowledged tasks; each acknowledged id goes to acked-<k>
        $producers = [];
        for ($k = 0; $k < 4; $k++) {
            $script = "$this->dir/producer-$k.php";
            file_put_contents($script, <<<PHP
<?php
\$c = new TaskClient(TASKQ_SOCK_TCP);
if (!\$c->connect('127.0.0.1', {$this->port}, 5)) { fwrite(STDERR, "connect failed: {\$c->errCode}\\n"); exit(3); }
\$out = fopen('{$this->dir}/acked-$k', 'a');
\$errors = [];
for (\$i = 0; \$i < 2500; \$i++) {
    \$id = \$c->task("p$k:\$i");
    if (\$id === false) { \$errors[] = "\$i: {\$c->errCode} {\$c->errMsg}"; continue; }
    fwrite(\$out, "\$id p$k:\$i\\n");
}
fclose(\$out);
echo json_encode(\$errors);
PHP);
            $cmd = self::phpCommand($script, 30);
            $producers[$k] = [proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['file', "$script.out", 'w'], 2 => ['file', "$script.err", 'w']], $pipes, $this->dir), $script];
        }
        $exitCodes = [];
        $this->waitUntil(function () use ($producers, &$exitCodes) {
            foreach ($producers as $k => [$p]) {
                if (!isset($exitCodes[$k])) {
                    $st = proc_get_status($p);
                    if ($st['running']) {
                        return false;
                    }
                    $exitCodes[$k] = $st['exitcode'];
                }
            }
            return true;
        }, 40, 'the producers to finish', $first);
        $produced = microtime(true) - $t0;
        foreach ($producers as $k => [$p, $script]) {
            $code = $exitCodes[$k];
            proc_close($p);
            $this->assertSame(0, $code, "producer $k: " . @file_get_contents("$script.err"));
            $this->assertSame('[]', trim((string) file_get_contents("$script.out")), "producer $k: submissions that were not acknowledged");
        }

        // kill -9 everything while most of them are still queued or running
        $executedBeforeKill = count(array_unique($this->executed()));
        $killed = $this->killEverything($first);
        $this->assertLessThan(9000, $executedBeforeKill, 'at least 1,000 tasks were still queued or running at the kill');

        $acked = $this->acked();
        $this->assertCount(10000, $acked, 'every submission was acknowledged');
        $this->assertCount(10000, array_unique($acked), 'acknowledged ids are distinct');

        // restart the same script on the same store: every acknowledged task completes
        unlink("$this->dir/slow");
        $t1 = microtime(true);
        $second = $this->restart($first, $settings, $env);
        $deadline = microtime(true) + 40;
        do {
            $seen = [];
            foreach ($this->executed() as $line) {
                $seen[explode(' ', $line, 2)[1]] = true;
            }
            $missing = array_diff_key($acked, $seen);
            if (!$missing) {
                break;
            }
            usleep(50000);
        } while (microtime(true) < $deadline);
        $recoveredIn = microtime(true) - $t1;

        $lines = $this->executed();
        $runs = [];
        $wrongId = [];
        foreach ($lines as $line) {
            [$id, $data] = explode(' ', $line, 2);
            $runs[$data] = ($runs[$data] ?? 0) + 1;
            if (isset($acked[$data]) && $acked[$data] !== (int) $id) {
                $wrongId[] = "$data ran as task $id, acknowledged as {$acked[$data]}";
            }
        }
        $duplicates = array_filter($runs, fn ($n) => $n > 1);
        // the restarted server's line (the last one)
        $m = preg_match_all('/task_store [^:]+: (\d+) unfinished task\(s\) recovered/', $this->log(), $all) ? [1 => end($all[1])] : [];
        $summary = sprintf(
            'crash test: 10000 acknowledged in %.1fs; %d executed (unique) before kill -9 of %d processes; %s recovered; all done %.1fs after restart; %d duplicate execution(s) of %d task(s); total %.1fs',
            $produced, $executedBeforeKill, $killed, $m[1] ?? '?', $recoveredIn, array_sum($duplicates) - count($duplicates), count($duplicates), microtime(true) - $t0,
        );
        fwrite(STDERR, "\n$summary\n");
        $this->assertSame([], array_slice(array_keys($missing), 0, 20), count($missing) . " acknowledged task(s) never ran (first 20 shown). $summary");
        $this->assertSame([], array_slice($wrongId, 0, 10), 'a recovered task keeps the id it was acknowledged with');
        $this->assertArrayHasKey(1, $m, 'the log reports the recovery');
        $this->assertGreaterThan(0, (int) $m[1]);
        
        // a task submitted after the recovery gets a fresh id
        [$next] = $this->submit(['after-recovery']);
        $this->assertGreaterThan(max($acked), $next, 'ids are never reused after a crash');
        $this->waitUntil(fn () => in_array("$next after-recovery", $this->executed(), true), 5, 'the new task', $second);
    }

    // ---------------------------------------------------------------- commits on the writer thread

    public static function stops(): array
    {
        return ['kill -9 of every process' => ['kill'], 'SIGTERM to the master' => ['term']];
    }

    /**
     * Six producers calling task() at once share commits, which the
     * master hands to the store's writer thread (issue 17 §4) and keeps
     * reading. The server is stopped while they submit, with commits in
     * flight: every task a producer saw acknowledged runs after a restart,
     * with its id.
     *
     * @dataProvider stops
     */
    public function testAStopWhileProducersShareCommitsLosesNoAcknowledgedTask(string $stop): void
    {
        $settings = $this->settings(['worker_num' => 1, 'task_worker_num' => 2]);
        $env = ['TASKQ_SLOW_US' => '2000'];
        touch("$this->dir/slow");
        $first = $this->server($settings, $env);
        $producers = [];
        for ($k = 0; $k < 6; $k++) {
            $producers[] = $this->startPhp(<<<PHP
<?php
\$c = new TaskClient(TASKQ_SOCK_TCP);
if (!\$c->connect('127.0.0.1', {$this->port}, 3)) { exit(3); }
\$out = fopen('{$this->dir}/acked-$k', 'a');
stream_set_write_buffer(\$out, 0);
for (\$i = 0; \$i < 100000; \$i++) {
    \$id = @\$c->task("q$k:\$i");
    if (\$id === false) { break; }
    fwrite(\$out, "\$id q$k:\$i\n");
}
PHP, 30);
        }
        $this->waitUntil(fn () => count($this->acked()) >= 3000, 20, '3,000 acknowledged tasks', $first);
        if ($stop === 'kill') {
            $this->killEverything($first);
        } else {
            posix_kill($first->pid(), SIGTERM);
            $this->assertSame(0, $first->wait(15), 'the master stopped cleanly');
        }
        foreach ($producers as $h) {
            [$code, , $err] = $this->finishPhp($h, 10);
            $this->assertSame(0, $code, "a producer ended on the stop, not otherwise: $err");
        }
        $before = $this->acked();
        $this->assertGreaterThanOrEqual(3000, count($before));
        $this->assertCount(count($before), array_unique($before), 'acknowledged ids are distinct');

        unlink("$this->dir/slow");
        $second = $this->restart($first, $settings, $env);
        $ran = [];
        $this->waitUntil(function () use ($before, &$ran) {
            $ran = [];
            foreach ($this->executed() as $line) {
                [$id, $data] = explode(' ', $line, 2);
                $ran[$data][] = (int) $id;
            }
            return !array_diff_key($before, $ran);
        }, 30, 'every acknowledged task to run', $second);
        $wrongId = [];
        foreach ($before as $data => $id) {
            if (!in_array($id, $ran[$data], true)) {
                $wrongId[] = "$data acknowledged as $id ran as " . implode(',', $ran[$data]);
            }
        }
        $this->assertSame([], array_slice($wrongId, 0, 10), 'each task ran with its acknowledged id');
    }

    // ---------------------------------------------------------------- a backlog larger than memory

    /**
     * Holds the only task worker 1.5 s, then queues 20,000 acknowledged
     * tasks of 1,500 bytes (30 MB: beyond the 16 MiB the master keeps in
     * memory, so most wait on disk only) and 5 of priority 5 after them.
     * Returns the acknowledged ids by data.
     */
    private function queueABacklogBeyondMemory(ServerProcess $server): array
    {
        $this->submit([['label' => 'blocker', 'ms' => 1500]]);
        $this->waitUntil(fn () => $this->of('run', 'blocker'), 5, 'the blocker to start', $server);
        $code = "<?php\n\$c = new TaskClient(TASKQ_SOCK_TCP);\n"
            . "if (!\$c->connect('127.0.0.1', {$this->port}, 3)) { exit(3); }\n"
            . '$acked = [];' . "\n"
            . 'for ($b = 0; $b < 20; $b++) {' . "\n"
            . '    $tasks = [];' . "\n"
            . '    for ($i = $b * 1000; $i < ($b + 1) * 1000; $i++) { $tasks[] = sprintf("b%05d ", $i) . str_repeat("x", 1493); }' . "\n"
            . '    foreach ($c->taskMulti($tasks) as $k => $id) { if (is_int($id)) { $acked[substr($tasks[$k], 0, 6)] = $id; } }' . "\n"
            . "}\n"
            . 'foreach (range(0, 4) as $i) { $id = $c->task("hi$i", ["priority" => 5]); if (is_int($id)) { $acked["hi$i"] = $id; } }' . "\n"
            . '$c->send("stats"); $stats = json_decode($c->recv(), true);' . "\n"
            . 'echo json_encode([$acked, $stats]);';
        [$exit, $out, $err] = $this->runPhp($code, 20);
        $this->assertSame([0, ''], [$exit, $err], "client failed\nstdout: $out");
        [$acked, $stats] = json_decode($out, true);
        $this->assertCount(20005, $acked, 'every task was acknowledged');
        $this->assertSame(20005, $stats['task_queue_num'], 'stats() counts the tasks waiting on disk too');
        return $acked;
    }

    /** The executed task lines' labels in the order the one task worker ran them. */
    private function ranInOrder(): array
    {
        return array_map(fn ($line) => substr(explode(' ', $line, 3)[1], 0, 6), $this->executed());
    }

    /** The backlog ran exactly once each, the priority-5 tasks first, the rest in submission order. */
    private function assertBacklogRanInOrder(array $acked, ServerProcess $server): void
    {
        $this->waitUntil(fn () => count($this->executed()) >= count($acked), 30, 'the backlog to run', $server);
        $ran = $this->ranInOrder();
        $this->assertCount(count($acked), $ran, 'each task ran once');
        $expected = ['hi0', 'hi1', 'hi2', 'hi3', 'hi4'];
        for ($i = 0; $i < 20000; $i++) {
            $expected[] = sprintf('b%05d', $i);
        }
        $this->assertTrue($ran === $expected, 'priority first, then submission order; first differences: '
            . json_encode(array_slice(array_diff_assoc($ran, $expected), 0, 5, true)));
        foreach ($this->executed() as $line) {
            [$id, $data] = explode(' ', $line, 2);
            $label = substr($data, 0, 6);
            $this->assertSame($acked[$label], (int) $id, "$label keeps its acknowledged id");
        }
    }

    public function testABacklogBeyondTheMemoryWindowWaitsOnDiskAndRunsInOrder(): void
    {
        $server = $this->server($this->settings(['worker_num' => 1, 'task_worker_num' => 1]));
        $acked = $this->queueABacklogBeyondMemory($server);
        $this->assertBacklogRanInOrder($acked, $server);
        $this->assertStringNotContainsString('were not found', $this->log());
    }

    public function testABacklogOnDiskSurvivesAKill9AndRunsInOrderAfterTheRestart(): void
    {
        $settings = $this->settings(['worker_num' => 1, 'task_worker_num' => 1]);
        $first = $this->server($settings);
        $acked = $this->queueABacklogBeyondMemory($first);
        $this->killEverything($first);
        $this->assertSame([], $this->executed(), 'nothing ran before the kill: the blocker held the task worker');
        $second = $this->restart($first, $settings);
        $this->assertBacklogRanInOrder($acked, $second);
        $this->assertMatchesRegularExpression('/task_store [^:]+: 20006 unfinished task\(s\) recovered/', $this->log());
    }

    /**
     * What an operator does while a backlog larger than memory drains from
     * the store (its reads back and removals on the store's writer thread):
     * SIGUSR1 (reload the workers), SIGHUP (reopen the log), a SIGKILL of
     * the task worker in the middle of a task, then SIGTERM to the master
     * mid-drain and a restart. Every acknowledged task runs once, with its
     * id (the killed one had not finished: it runs once, after the kill),
     * and no read back comes up short.
     */
    public function testOperatorSignalsDuringADrainFromDiskLoseNothing(): void
    {
        $settings = $this->settings(['worker_num' => 1, 'task_worker_num' => 1, 'max_wait_time' => 5]);
        $env = ['TASKQ_SLOW_US' => '200'];
        touch("$this->dir/slow");
        touch("$this->dir/hold-b09000");
        $first = $this->server($settings, $env);
        $acked = $this->queueABacklogBeyondMemory($first);
        $ran = fn () => count($this->executed());
        $restarted = function (string $what, callable $signal) use ($first) {
            $starts = $this->eventsOf('workerstart', 1);
            $this->assertTrue($signal(end($starts)['pid']), $what);
            $this->waitUntil(fn () => count($this->eventsOf('workerstart', 1)) > count($starts), 10, "a new task worker after the $what", $first);
        };
        $this->waitUntil(fn () => $ran() >= 3000, 20, '3,000 tasks run before the SIGUSR1', $first);
        $restarted('SIGUSR1 to the master', fn () => posix_kill($first->pid(), SIGUSR1));
        $this->waitUntil(fn () => $ran() >= 6000, 20, '6,000 tasks run before the SIGHUP', $first);
        $this->assertTrue(posix_kill($first->pid(), SIGHUP), 'SIGHUP to the master');
        $this->waitUntil(fn () => is_file("$this->dir/held"), 20, 'task b09000 to hold the task worker', $first);
        $restarted('SIGKILL of the task worker', fn ($pid) => posix_kill($pid, SIGKILL));
        touch("$this->dir/go");
        $this->waitUntil(fn () => $ran() >= 12000, 20, '12,000 tasks run after the SIGKILL', $first);
        posix_kill($first->pid(), SIGTERM);
        $this->assertSame(0, $first->wait(15), 'the master stopped cleanly mid-drain');
        $this->assertLessThan(count($acked), $ran(), 'the stop came before the end of the backlog');
        $this->assertStringContainsString('reloading', $this->log(), 'the SIGUSR1 reloaded the workers');

        unlink("$this->dir/slow");
        $second = $this->restart($first, $settings, $env);
        $this->waitUntil(fn () => !array_diff_key($acked, $this->ranById()), 30, 'every acknowledged task to run', $second);
        $runs = $this->ranById();
        $twice = array_keys(array_filter($runs, fn ($ids) => count($ids) > 1));
        $this->assertSame([], $twice, 'no task ran twice');
        foreach ($acked as $label => $id) {
            $this->assertSame([$id], $runs[$label], "$label ran with its acknowledged id");
        }
        $log = $this->log();
        foreach (['were not found', 'reading queued tasks back', 'task store commit failed', 'writer thread ended'] as $error) {
            $this->assertStringNotContainsString($error, $log);
        }
    }

    /** The runs of each task by its label: the ids it ran under. */
    private function ranById(): array
    {
        $runs = [];
        foreach ($this->executed() as $line) {
            [$id, $data] = explode(' ', $line, 2);
            $runs[substr($data, 0, 6)][] = (int) $id;
        }
        return $runs;
    }

    // ---------------------------------------------------------------- start() failures

    private function startFailureScript(string $store): string
    {
        $port = self::freePort();
        return '<?php
$s = new TaskServer("127.0.0.1", ' . $port . ');
$s->set(["worker_num" => 1, "task_worker_num" => 1, "task_store" => ' . var_export($store, true) . ', "log_file" => ' . var_export("$this->dir/second.log", true) . ']);
$s->on("WorkerStart", function ($s, $id) { file_put_contents(' . var_export("$this->dir/second-workers", true) . ', "$id\n", FILE_APPEND); });
$s->on("Receive", function () {});
$s->on("Task", function () {});
$t = microtime(true);
try {
    $r = $s->start();
    echo json_encode(["returned" => $r]);
} catch (Throwable $e) {
    echo json_encode(["class" => get_class($e), "message" => $e->getMessage(), "elapsed" => microtime(true) - $t]);
}
';
    }

    public function testAStoreLockedByARunningServerMakesASecondStartFailClearly(): void
    {
        $settings = $this->settings(['worker_num' => 1, 'task_worker_num' => 1]);
        $first = $this->server($settings);
        [$id] = $this->submit([['label' => 'first']]);

        [$exit, $out, $err] = $this->runPhp($this->startFailureScript("$this->dir/store"), 10);
        $this->assertSame(0, $exit, "stdout: $out\nstderr: $err");
        $r = json_decode($out, true);
        $this->assertSame('TaskQ\Exception', $r['class'] ?? null, "start() on a locked store: $out");
        $this->assertStringContainsString('locked', $r['message']);
        $this->assertStringContainsString("$this->dir/store", $r['message'], 'the message names the store');
        $this->assertLessThan(5, $r['elapsed'], 'fails at once');
        $this->assertFileDoesNotExist("$this->dir/second-workers", 'no worker of the second server ran');

        // the first server is unharmed and keeps using its store
        $this->waitUntil(fn () => $this->of('done', 'first'), 5, 'the first task', $first);
        [$id2] = $this->submit([['label' => 'still']]);
        $this->waitUntil(fn () => $this->of('done', 'still'), 5, 'a task after the refused start', $first);
        $this->assertGreaterThan($id, $id2);

        // once it stopped, the store is free again
        $this->stopServer($first);
        $again = $this->restart($first, $settings);
        [$id3] = $this->submit([['label' => 'again']]);
        $this->waitUntil(fn () => $this->of('done', 'again'), 5, 'a task on the restarted server', $again);
        $this->assertGreaterThan($id2, $id3);
    }

    public static function badStores(): array
    {
        return [
            'a regular file in the way' => ['file'],
            'a path under a regular file' => ['under-file'],
            'a location nobody can create' => ['proc'],
            'a damaged store file' => ['damaged'],
        ];
    }

    /** @dataProvider badStores */
    public function testAnUnusableTaskStoreFailsStartClearly(string $case): void
    {
        $bad = "$this->dir/bad";
        switch ($case) {
            case 'file':
                file_put_contents($bad, 'not a directory');
                $store = $bad;
                break;
            case 'under-file':
                file_put_contents($bad, 'not a directory');
                $store = "$bad/store";
                break;
            case 'proc':
                $store = '/proc/taskq-store-' . bin2hex(random_bytes(4));
                break;
            case 'damaged':
                mkdir($bad);
                file_put_contents("$bad/tasks.redb", str_repeat(random_bytes(4096), 16));
                $store = $bad;
                break;
        }
        $hashBefore = is_file("$bad/tasks.redb") ? md5_file("$bad/tasks.redb") : null;
        [$exit, $out, $err] = $this->runPhp($this->startFailureScript($store), 10);
        $this->assertSame(0, $exit, "stdout: $out\nstderr: $err");
        $r = json_decode($out, true);
        $this->assertSame('TaskQ\Exception', $r['class'] ?? null, "start() with task_store $store: $out");
        $this->assertStringContainsString('task_store', $r['message']);
        $this->assertStringContainsString($store, $r['message'], 'the message names the path');
        $this->assertFileDoesNotExist("$this->dir/second-workers", 'no worker ran');
        if ($hashBefore !== null) {
            $this->assertSame($hashBefore, md5_file("$bad/tasks.redb"), 'a damaged store is left as it was, not overwritten');
        }
    }

    // ---------------------------------------------------------------- graceful restart, delayed tasks

    public function testQueuedDelayedAndFailedTasksSurviveAGracefulRestart(): void
    {
        $settings = $this->settings(['worker_num' => 1, 'task_worker_num' => 1]);
        $first = $this->server($settings);
        $this->submit([['label' => 'bad', 'throw' => true]], ['max_attempts' => 1]);
        $this->waitUntil(fn () => $this->events('failed'), 5, 'the failing task reported', $first);
        $t0 = microtime(true);
        $delayed = $this->submit(array_map(fn ($i) => ['label' => "d$i"], range(0, 4)), ['delay' => 2.0]);
        $queued = $this->submit(array_map(fn ($i) => ['label' => "q$i", 'ms' => 100], range(0, 19)));
        $this->waitUntil(fn () => $this->of('run', 'q0'), 5, 'the first queued task running', $first);
        $this->stopServer($first);
        $stopLog = $this->log();
        $doneAtStop = count($this->events('done'));
        $this->assertLessThan(20, $doneAtStop, 'tasks were still queued at the stop');
        $this->assertSame([], array_filter($this->events('run'), fn ($e) => $e['label'][0] === 'd'), 'no delayed task ran before the stop');

        $second = $this->restart($first, $settings);
        $this->waitUntil(fn () => count($this->events('done')) >= 25, 10, 'all 25 tasks done after the restart', $second);
        $done = array_column($this->events('done'), 'label');
        $counts = array_count_values($done);
        $duplicates = array_filter($counts, fn ($n) => $n > 1);
        $this->assertSame([], $duplicates, 'a graceful restart runs nothing twice');
        $this->assertEqualsCanonicalizing(array_merge(array_map(fn ($i) => "d$i", range(0, 4)), array_map(fn ($i) => "q$i", range(0, 19))), $done);
        $byLabel = array_column($this->events('done'), null, 'label');
        foreach (range(0, 4) as $i) {
            $this->assertGreaterThanOrEqual($t0 + 2.0 - 0.01, $this->of('run', "d$i")[0]['t'], "d$i still waited for its delay");
            $this->assertSame($delayed[$i], $byLabel["d$i"]['task_id'], "d$i kept its id");
        }
        foreach (range(0, 19) as $i) {
            $this->assertSame($queued[$i], $byLabel["q$i"]['task_id'], "q$i kept its id");
        }
        $this->assertMatchesRegularExpression('/1 failed task\(s\) kept/', $this->log(), 'the failed task is kept in the store');
        $this->assertCount(1, $this->events('failed'), 'a failed task is not run again after a restart');
        $this->assertDoesNotMatchRegularExpression('/they are lost/', $stopLog, 'with a task_store the stop must not claim the queued tasks are lost');
    }

    /** Tasks from `$server->task($data, $dstWorkerId)` wait outside the queue, for their worker; the store keeps them too. */
    public function testTasksForOneTaskWorkerSurviveAKill9(): void
    {
        $settings = $this->settings(['worker_num' => 1, 'task_worker_num' => 2]);
        $first = $this->server($settings);
        $code = "<?php\n\$c = new TaskClient(TASKQ_SOCK_TCP);\n"
            . "if (!\$c->connect('127.0.0.1', {$this->port}, 3)) { exit(3); }\n"
            . "\$c->send('targeted'); echo \$c->recv();";
        [$exit, $out] = $this->runPhp($code, 10);
        $this->assertSame([0, 'ok:targeted'], [$exit, $out]);
        $this->waitUntil(fn () => $this->of('run', 't0'), 5, 't0 running in task worker 0', $first);
        $this->killEverything($first);
        $this->assertSame([], array_merge($this->of('run', 't1'), $this->of('run', 't2'), $this->of('run', 't3')), 't1-t3 were still waiting for task worker 0');
        $second = $this->restart($first, $settings);
        $this->waitUntil(fn () => count(array_filter(['t0', 't1', 't2', 't3'], fn ($l) => $this->of('done', $l))) === 4, 8, 'all four targeted tasks done after the restart', $second);
        foreach (['t1', 't2', 't3'] as $label) {
            $this->assertCount(1, $this->of('run', $label), "$label ran once");
        }
        $this->assertCount(2, $this->of('run', 't0'), 't0 was running when the server died: it runs again');
    }

    public function testDelayedTasksSurviveAKill9(): void
    {
        $settings = $this->settings(['worker_num' => 1, 'task_worker_num' => 1]);
        $first = $this->server($settings);
        $t0 = microtime(true);
        $ids = $this->submit(array_map(fn ($i) => ['label' => "d$i"], range(0, 2)), ['delay' => 1.5]);
        $this->killEverything($first);
        $this->assertSame([], $this->events('run'));
        $second = $this->restart($first, $settings);
        $this->waitUntil(fn () => count($this->events('done')) >= 3, 8, 'the three delayed tasks', $second);
        foreach (range(0, 2) as $i) {
            $runs = $this->of('run', "d$i");
            $this->assertCount(1, $runs, "d$i ran once");
            $this->assertSame($ids[$i], $runs[0]['task_id']);
            $this->assertGreaterThanOrEqual($t0 + 1.5 - 0.01, $runs[0]['t'], "d$i kept its due time across the crash");
        }
    }
}
