<?php
use TaskQ\Tests\Support\AdminListener;
use TaskQ\Tests\Support\ProcessTree;
use TaskQ\Tests\Support\RedisServer;
use TaskQ\Tests\Support\ServerProcess;
use TaskQ\Tests\Support\TaskqTestCase;

/**
 * The failed-task tools (issue 16, "`taskq` command-line tool": `taskq
 * failed list|show|retry|purge`, and from PHP `failedTasks()`,
 * `retryFailed()`, `purgeFailed()`), against real servers with the memory
 * queue, the task_store and a Redis backend: rows with their error and
 * data (objects never created), retry running the task again, purge,
 * every bad argument and a master that cannot answer as exceptions, and
 * the command's output and exit codes (server down, wrong token).
 */
final class FailedTasksTest extends TaskqTestCase
{
    /**
     * Settings come from TASKQ_SETTINGS (JSON). onReceive evaluates
     * "eval:<code>" with $s in scope. A task fails while the file "fixed" is
     * missing if it is an array with 'fail' or a string starting with
     * "fail"; each run is recorded as 'task'. Parcel records its __wakeup().
     */
    private const SERVER = <<<'PHP'
final class Parcel
{
    public function __construct(public string $what) {}
    public function __wakeup(): void { record('wakeup', ['what' => $this->what]); }
}
$settings = json_decode(getenv('TASKQ_SETTINGS'), true)
    + ['worker_num' => 1, 'task_worker_num' => 1, 'task_retry_max' => 0, 'log_file' => "$dir/taskq.log"];
$server = new TaskServer('127.0.0.1', $port);
$server->set($settings);
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) {
    $s->send($fd, serialize(evaluate($s, substr($data, 5), ['fd' => $fd])));
});
$server->on('Task', function ($s, $taskId, $src, $data) use ($dir) {
    $fails = (is_array($data) && !empty($data['fail'])) || (is_string($data) && str_starts_with($data, 'fail'));
    if ($fails && !file_exists("$dir/fixed")) {
        $n = is_array($data) ? $data['fail'] : $data;
        throw new RuntimeException("broken $n");
    }
    record('task', ['data' => is_array($data) ? array_map(fn ($v) => is_object($v) ? get_class($v) : $v, $data) : $data]);
});
$server->on('Finish', function () {});
$server->start();
PHP;

    use AdminListener;

    private ?RedisServer $redis = null;

    protected function tearDown(): void
    {
        $this->redis?->kill();
        $this->redis = null;
        parent::tearDown();
    }

    private function server(array $settings = []): ServerProcess
    {
        return $this->startListening(self::SERVER, $settings, 2);
    }

    /** Runs `$code` in the event worker; its result, or [class, code, message] of what it threw. */
    private function inWorker(string $code): mixed
    {
        $client = "<?php\n\$c = new TaskClient(TASKQ_SOCK_TCP);\n"
            . "\$c->set(['auth_token' => 's3cret']);\n"
            . "if (!\$c->connect('127.0.0.1', {$this->port}, 5)) { exit(3); }\n"
            . '$c->send(' . var_export("eval:try { return $code; } catch (Throwable \$e) { return ['threw' => [get_class(\$e), \$e->getCode(), \$e->getMessage()]]; }", true) . ");\n"
            . "\$r = \$c->recv(40);\n"
            . "if (\$r === false || \$r === '') { fwrite(STDERR, 'no reply: ' . \$c->errCode); exit(4); }\n"
            . "echo \$r;\n";
        [$exit, $out, $err] = $this->runPhp($client, 45);
        $this->assertSame(0, $exit, "client failed\nstdout: $out\nstderr: $err");
        $reply = unserialize($out);
        $this->assertIsArray($reply, "reply: $out");
        $this->assertNull($reply['x'], 'the code threw outside its try: ' . $reply['x']);
        $this->assertSame([], $reply['w'], 'no warning');
        return $reply['r'];
    }

    /** What `$code` threw in the event worker: [class, code, message]. */
    private function thrown(string $code): array
    {
        $r = $this->inWorker($code);
        $this->assertIsArray($r);
        $this->assertArrayHasKey('threw', $r, "$code did not throw: " . json_encode($r));
        return $r['threw'];
    }

    /** Queues `$data` (PHP source) from the event worker and waits until `$n` tasks have failed. */
    private function failTask(string $data, int $n, ServerProcess $server): void
    {
        $this->assertIsInt($this->inWorker("\$s->task($data)"));
        $this->waitUntil(fn () => count($this->inWorker('$s->failedTasks()')) === $n, 10, "$n failed task(s)", $server);
    }

    public static function queues(): array
    {
        return ['memory queue' => [false], 'task_store' => [true]];
    }

    /**
     * @dataProvider queues
     */
    public function testFailedTasksAreListedRetriedAndPurgedFromPhp(bool $store): void
    {
        $server = $this->server($store ? ['task_store' => "$this->dir/store"] : []);
        $this->assertSame([], $this->inWorker('$s->failedTasks()'));
        $this->failTask("['fail' => 1, 'o' => new Parcel('one')]", 1, $server);
        $this->failTask("'fail two'", 2, $server);

        $rows = $this->inWorker('$s->failedTasks()');
        $this->assertSame(['id', 'worker', 'task_id', 'attempts', 'error', 'failed_at', 'data'], array_keys($rows[0]));
        $this->assertSame('fail two', $rows[0]['data'], 'newest first; a string comes back as it was');
        [$newest, $oldest] = $rows;
        $this->assertSame([0, 1], [$oldest['worker'], $oldest['attempts']]);
        $this->assertIsInt($oldest['task_id']);
        $this->assertStringStartsWith('RuntimeException: broken 1', $oldest['error']);
        $this->assertEqualsWithDelta(microtime(true), $oldest['failed_at'], 30);
        $this->assertLessThanOrEqual($newest['failed_at'], $oldest['failed_at']);
        $this->assertSame(1, $oldest['data']['fail']);
        $this->assertInstanceOf(__PHP_Incomplete_Class::class, $oldest['data']['o'], 'objects are never created');
        $this->assertSame('Parcel', ((array) $oldest['data']['o'])['__PHP_Incomplete_Class_Name'], 'the incomplete object names its class');
        $wakeups = count($this->events('wakeup'));
        $this->inWorker('$s->failedTasks()');
        $this->assertCount($wakeups, $this->events('wakeup'), 'listing ran no __wakeup()');

        $this->assertSame([$oldest['id']], array_column($this->inWorker('$s->failedTasks(1, 1)'), 'id'));
        $this->assertSame([], $this->inWorker('$s->failedTasks(2)'));
        $this->assertCount(2, $this->inWorker('$s->failedTasks(null, 1000)'));

        $this->assertSame(0, $this->inWorker('$s->retryFailed([])'), 'an empty array selects nothing');
        $this->assertSame(0, $this->inWorker('$s->retryFailed(999999)'), 'an unknown id');
        touch("$this->dir/fixed");
        $this->assertSame(1, $this->inWorker("\$s->retryFailed({$oldest['id']})"));
        $ran = $this->waitEvents('task', 1, 10, $server);
        $this->assertSame(['fail' => 1, 'o' => 'Parcel'], $ran[0]['data'], 'the retried task ran again');
        $this->assertSame([$newest['id']], array_column($this->inWorker('$s->failedTasks()'), 'id'));
        $this->assertSame(1, $this->inWorker('$s->retryFailed(true)'));
        $this->waitEvents('task', 2, 10, $server);
        $this->assertSame([], $this->inWorker('$s->failedTasks()'));

        unlink("$this->dir/fixed");
        $this->failTask("'fail three'", 1, $server);
        $this->failTask("'fail four'", 2, $server);
        $four = $this->inWorker('$s->failedTasks()')[0]['id'];
        $this->assertSame(1, $this->inWorker("\$s->purgeFailed([$four, 999999])"));
        $this->assertSame(['fail three'], array_column($this->inWorker('$s->failedTasks()'), 'data'));
        $this->assertSame(1, $this->inWorker('$s->purgeFailed(true)'));
        $this->assertSame([], $this->inWorker('$s->failedTasks()'));
        $this->assertSame(0, $this->inWorker('$s->purgeFailed(true)'));
        usleep(200000);
        $this->assertCount(2, $this->events('task'), 'purged tasks do not run');
    }

    /**
     * Data nested deeper than task_max_depth runs (a worker's own task() is
     * trusted) but cannot be decoded for the listing: data null, raw bytes.
     */
    public function testDataThatCannotBeDecodedIsListedRaw(): void
    {
        $server = $this->server(['task_max_depth' => 2]);
        $this->assertIsInt($this->inWorker("\$s->task(['fail' => 'deep', 'a' => ['b' => ['c' => 1]]])"));
        $this->waitUntil(fn () => $this->taskq(['failed', 'list', '--json'])[1] !== "[]\n", 10, 'the task failed', $server);
        // As an error handler that honours error_reporting() (and @) sees it.
        [$rows, $shown] = $this->inWorker('(function () use ($s) {
            $shown = [];
            set_error_handler(function ($no, $msg) use (&$shown) { if (error_reporting() & $no) { $shown[] = $msg; } return true; });
            try { return [$s->failedTasks(), $shown]; } finally { restore_error_handler(); }
        })()');
        $this->assertSame([], $shown, 'unserialize() warnings are silenced: raw says it');
        $row = $rows[0];
        $this->assertSame(['id', 'worker', 'task_id', 'attempts', 'error', 'failed_at', 'data', 'raw'], array_keys($row));
        $this->assertNull($row['data']);
        $this->assertSame(['fail' => 'deep', 'a' => ['b' => ['c' => 1]]], unserialize($row['raw']));
        $this->assertStringContainsString('broken deep', $row['error']);
    }

    public function testBadArgumentsAndNoRunningServerThrowNamingTheArgument(): void
    {
        $this->server();
        $ids = 'allowed: a failed task\'s id (an int of 0 or more), an array of such ids, or true for every failed task';
        foreach ([
            '$s->failedTasks(-1)' => 'failedTasks(): $offset is -1; allowed: 0 or more',
            '$s->failedTasks(0, 0)' => 'failedTasks(): $limit is 0; allowed: 1 to 1000',
            '$s->failedTasks(0, 1001)' => 'failedTasks(): $limit is 1001; allowed: 1 to 1000',
            '$s->retryFailed(null)' => "retryFailed(): \$ids is null; $ids",
            '$s->retryFailed(false)' => "retryFailed(): \$ids is false; $ids",
            '$s->retryFailed(-3)' => "retryFailed(): \$ids is -3; $ids",
            '$s->retryFailed("7")' => "retryFailed(): \$ids is string; $ids",
            '$s->purgeFailed([1, "x"])' => "purgeFailed(): \$ids[1] is string; $ids",
            '$s->purgeFailed(["a" => 1.5])' => "purgeFailed(): \$ids[a] is double; $ids",
            '$s->purgeFailed([2, -2])' => "purgeFailed(): \$ids[1] is -2; $ids",
        ] as $code => $message) {
            $this->assertSame(['TaskQ\Exception', 22, $message], $this->thrown($code), $code);
        }
        $this->assertSame([], $this->events('task'));

        [$exit, $out, $err] = $this->runPhp(<<<'PHP'
<?php
$s = new TaskServer('127.0.0.1', 0);
foreach (['failedTasks' => [], 'retryFailed' => [true], 'purgeFailed' => [1]] as $m => $args) {
    try { $s->$m(...$args); echo "$m returned\n"; } catch (TaskQ\Exception $e) { echo get_class($e), ': ', $e->getMessage(), "\n"; }
}
PHP, 10);
        $this->assertSame(0, $exit, $err);
        $this->assertSame('', $err);
        $this->assertSame(
            "TaskQ\\Exception: failedTasks() works only in a running server's worker (in a callback such as onWorkerStart, onReceive or onTask)\n"
            . "TaskQ\\Exception: retryFailed() works only in a running server's worker (in a callback such as onWorkerStart, onReceive or onTask)\n"
            . "TaskQ\\Exception: purgeFailed() works only in a running server's worker (in a callback such as onWorkerStart, onReceive or onTask)\n",
            $out,
        );
    }

    /**
     * @dataProvider queues
     */
    public function testTheCommandListsShowsRetriesAndPurges(bool $store): void
    {
        $server = $this->server($store ? ['task_store' => "$this->dir/store"] : []);
        [$exit, $out, $err] = $this->taskq(['failed', 'list']);
        $this->assertSame([0, "no failed tasks at http://127.0.0.1:{$this->apiPort}\n", ''], [$exit, $out, $err]);
        $this->failTask("['fail' => 1, 'to' => 'a@example.com']", 1, $server);
        $this->failTask("'fail: {\"k\": [1, 2]}'", 2, $server);
        [$newest, $oldest] = array_column($this->inWorker('$s->failedTasks()'), 'id');

        [$exit, $out, $err] = $this->taskq(['failed', 'list']);
        $this->assertSame(0, $exit, $err);
        $lines = explode("\n", rtrim($out, "\n"));
        $this->assertCount(3, $lines, $out);
        $this->assertSame(['ID', 'ATTEMPTS', 'WORKER', 'FAILED', 'AT', 'ERROR'], preg_split('~\s+~', trim($lines[0])));
        $this->assertMatchesRegularExpression("~^\s+$newest\s+1\s+0\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+RuntimeException: broken fail: \{\"k\": \[1, 2\]\} in /\S*…$~u", $lines[1]);
        $this->assertMatchesRegularExpression("~^\s+$oldest\s+1\s+0\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+RuntimeException: broken 1 in /\S*…?$~u", $lines[2]);
        $when = gmdate('Y-m-d H:i', (int) $this->inWorker('$s->failedTasks()[0]["failed_at"]'));
        $this->assertStringContainsString($when, $lines[1], 'the time is UTC');

        [$exit, $out, $err] = $this->taskq(['failed', 'list', '--json', '--offset', '1', '--limit', '1']);
        $this->assertSame(0, $exit, $err);
        $json = json_decode($out, true);
        $this->assertSame([$oldest], array_column($json, 'id'));
        $this->assertSame(['fail' => 1, 'to' => 'a@example.com'], unserialize(base64_decode($json[0]['data'])));

        [$exit, $out, $err] = $this->taskq(['failed', 'show', (string) $oldest]);
        $this->assertSame(0, $exit, $err);
        $this->assertStringStartsWith("id:        $oldest\nattempts:  1\nworker:    0\n", $out);
        $this->assertStringContainsString("error:\n  RuntimeException: broken 1 in ", $out);
        $this->assertStringEndsWith("data (PHP serialize()):\n  a:2:{s:4:\"fail\";i:1;s:2:\"to\";s:13:\"a@example.com\";}\n", $out);
        [$exit, $out, $err] = $this->taskq(['failed', 'show', (string) $newest]);
        $this->assertSame(0, $exit, $err);
        $this->assertStringEndsWith("data (text):\n  fail: {\"k\": [1, 2]}\n", $out);
        [$exit, $out, $err] = $this->taskq(['failed', 'show', (string) $newest, '--json']);
        $this->assertSame(0, $exit, $err);
        $this->assertSame('fail: {"k": [1, 2]}', base64_decode(json_decode($out, true)['data']));
        [$exit, $out, $err] = $this->taskq(['failed', 'show', '999999']);
        $this->assertSame([5, ''], [$exit, $out]);
        $this->assertSame("taskq: the taskq server at http://127.0.0.1:{$this->apiPort}/api/failed/999999 answered 404: no failed task has the id 999999\n", $err);

        touch("$this->dir/fixed");
        [$exit, $out, $err] = $this->taskq(['failed', 'retry', (string) $oldest, '999999']);
        $this->assertSame([0, "retried 1 failed task(s)\n", ''], [$exit, $out, $err]);
        $this->assertSame(['fail' => 1, 'to' => 'a@example.com'], $this->waitEvents('task', 1, 10, $server)[0]['data']);
        unlink("$this->dir/fixed");
        $this->failTask("'fail again'", 2, $server);
        [$exit, $out, $err] = $this->taskq(['failed', 'purge', (string) $newest]);
        $this->assertSame([0, "purged 1 failed task(s)\n", ''], [$exit, $out, $err]);
        [$exit, $out, $err] = $this->taskq(['failed', 'purge', '--all']);
        $this->assertSame([0, "purged 1 failed task(s)\n", ''], [$exit, $out, $err]);
        [$exit, $out] = $this->taskq(['failed', 'retry', '--all']);
        $this->assertSame([0, "retried 0 failed task(s)\n"], [$exit, $out]);
        $this->assertSame([], $this->inWorker('$s->failedTasks()'));
    }

    public function testTheCommandsExitCodesWhenTheServerIsDownOrTheTokenWrong(): void
    {
        $this->apiPort = self::freePort();
        [$exit, $out, $err] = $this->taskq(['failed', 'list']);
        $this->assertSame([3, ''], [$exit, $out]);
        $this->assertStringStartsWith("taskq: cannot reach the taskq server at http://127.0.0.1:{$this->apiPort}/api/failed?offset=0&limit=100: ", $err);

        $server = $this->server(['auth_token' => 's3cret']);
        $this->failTask("'fail one'", 1, $server);
        foreach ([['failed', 'list'], ['failed', 'show', '1'], ['failed', 'retry', '--all'], ['--token', 'wrong', 'failed', 'purge', '--all']] as $args) {
            [$exit, $out, $err] = $this->taskq($args);
            $this->assertSame([4, ''], [$exit, $out], implode(' ', $args));
            $this->assertStringContainsString('refused the token: a valid auth_token is required', $err);
        }
        $this->assertCount(1, $this->inWorker('$s->failedTasks()'), 'nothing was retried or purged');
        [$exit, $out, $err] = $this->taskq(['failed', 'list', '--json'], 15, ['TASKQ_TOKEN' => 's3cret']);
        $this->assertSame(0, $exit, $err);
        $this->assertSame(['fail one'], array_map(fn ($r) => base64_decode($r['data']), json_decode($out, true)));

        foreach ([['failed', 'retry'], ['failed', 'purge', '1', '--all'], ['failed', 'list', '--limit', '0'], ['failed', 'show', 'x']] as $args) {
            [$exit, $out, $err] = $this->taskq($args, 15, ['TASKQ_TOKEN' => 's3cret']);
            $this->assertSame([2, ''], [$exit, $out], implode(' ', $args));
            $this->assertStringContainsString('error:', $err);
        }
        $this->assertCount(1, $this->inWorker('$s->failedTasks()'));
    }

    public function testWithARedisBackendFailedTasksAreListedAndRetriedAndRedisDownThrows(): void
    {
        $this->redis = new RedisServer("$this->dir/redis", self::freePort());
        $this->redis->start();
        $server = $this->server([
            'task_backend' => $this->redis->dsn(),
            'task_queue' => 'failed',
            'task_consumer' => 'failed-a',
            'task_backend_timeout' => 1,
            'task_allowed_classes' => ['Parcel'],
        ]);
        $this->failTask("['fail' => 'r', 'o' => new Parcel('r')]", 1, $server);
        $this->waitBackendMetrics(['queued' => 0, 'pending' => 0, 'delayed' => 0, 'failed' => 1], $server);
        $row = $this->inWorker('$s->failedTasks()')[0];
        $this->assertSame(['id', 'worker', 'task_id', 'attempts', 'error', 'failed_at', 'data'], array_keys($row));
        $this->assertStringContainsString('broken r', $row['error']);
        $this->assertSame('r', $row['data']['fail']);
        $this->assertInstanceOf(__PHP_Incomplete_Class::class, $row['data']['o']);
        [$exit, $out, $err] = $this->taskq(['failed', 'show', (string) $row['id']]);
        $this->assertSame(0, $exit, $err);
        $this->assertStringContainsString("\n  RuntimeException: broken r in ", $out);

        touch("$this->dir/fixed");
        $this->assertSame(1, $this->inWorker('$s->retryFailed(true)'));
        $this->assertSame(['fail' => 'r', 'o' => 'Parcel'], $this->waitEvents('task', 1, 10, $server)[0]['data']);
        $this->assertSame([], $this->inWorker('$s->failedTasks()'));
        $this->waitBackendMetrics(['queued' => 0, 'pending' => 0, 'delayed' => 0, 'failed' => 0], $server);

        $this->redis->kill();
        foreach (['failedTasks()', 'retryFailed(true)', 'purgeFailed(1)'] as $call) {
            [$class, $code, $message] = $this->thrown("\$s->$call");
            $this->assertSame(['TaskQ\Exception', 0], [$class, $code], $call);
            $this->assertStringStartsWith(strstr($call, '(', true) . '(): ', $message);
            $this->assertStringContainsString('redis', strtolower($message), $call);
        }
    }

    public function testWithRedisUnreachableFromTheStartFailedTaskCallsThrowNamingRedis(): void
    {
        $server = $this->server([
            'task_backend' => 'redis://127.0.0.1:' . self::freePort(),
            'task_queue' => 'failed',
            'task_backend_timeout' => 1,
        ]);
        foreach (['failedTasks()', 'retryFailed(true)', 'purgeFailed(1)'] as $call) {
            [$class, $code, $message] = $this->thrown("\$s->$call");
            $this->assertSame(['TaskQ\Exception', 0], [$class, $code], $call);
            $this->assertStringStartsWith(strstr($call, '(', true) . '(): ', $message);
            $this->assertStringContainsString('task backend', $message, $call);
        }
        [$exit, , $err] = $this->taskq(['failed', 'list']);
        $this->assertNotSame(0, $exit, 'taskq failed list fails while Redis is unreachable');
        $this->assertStringContainsString('task backend', $err);
        $this->assertTrue($server->running(), 'the server keeps running');
    }

    /**
     * Waits (bounded) until /metrics shows the Redis-wide counts
     * `taskq_backend_tasks{state}` as `$want` (Redis counts once a second).
     */
    private function waitBackendMetrics(array $want, ServerProcess $server): void
    {
        $this->waitUntil(function () use ($want) {
            $context = stream_context_create(['http' => ['timeout' => 3, 'ignore_errors' => true]]);
            $text = (string) @file_get_contents("http://127.0.0.1:{$this->apiPort}/metrics", false, $context);
            foreach ($want as $state => $n) {
                if (!str_contains($text, "\ntaskq_backend_tasks{state=\"$state\"} $n\n")) {
                    return false;
                }
            }
            return true;
        }, 10, 'the metrics to show the Redis-wide queue as ' . json_encode($want), $server);
    }
}
