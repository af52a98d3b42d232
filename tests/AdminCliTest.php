<?php
use TaskQ\Tests\Support\AdminListener;
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ProcessTree;
use TaskQ\Tests\Support\RedisServer;
use TaskQ\Tests\Support\ServerProcess;

/**
 * The admin API and the `taskq` command (issue 16, "An admin channel",
 * "`taskq` command-line tool", "Producers in any language"): real servers
 * with `metrics_listen`, the built bin/taskq run against them. ping, stats
 * (table and --json), push (the task runs with the decoded JSON), POST
 * /tasks with a batch and bad bodies, exit codes and stderr when the server
 * is down or the token wrong, reload and stop taking effect, and `taskq
 * watch` following a backlog to its end.
 */
final class AdminCliTest extends TaskqTestCase
{
    /**
     * Settings come from TASKQ_SETTINGS (JSON). onTask records its data and
     * PHP type; an array payload with 'block' waits (bounded) for the file
     * "release".
     */
    private const SERVER = <<<'PHP'
$settings = json_decode(getenv('TASKQ_SETTINGS'), true)
    + ['worker_num' => 1, 'task_worker_num' => 2, 'log_file' => "$dir/taskq.log"];
$server = new TaskServer('127.0.0.1', $port);
$server->set($settings);
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) { $s->send($fd, "ok:$data"); });
$server->on('Task', function ($s, $taskId, $src, $data) use ($dir) {
    if (is_array($data) && !empty($data['block'])) {
        $deadline = microtime(true) + 20;
        while (!file_exists("$dir/release") && microtime(true) < $deadline) { usleep(5000); }
    }
    if (is_array($data) && !empty($data['fail']) && !file_exists("$dir/fixed")) {
        throw new RuntimeException("broken {$data['fail']}");
    }
    record('task', ['data' => $data, 'type' => get_debug_type($data)]);
});
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
        return $this->startListening(self::SERVER, $settings, 3);
    }

    /**
     * Starts `$cmd` in the background, bounded by 20 s, tagged so that
     * everything it starts can be killed; returns [process, tag].
     */
    private function startTagged(array $cmd, string $out): array
    {
        $tag = 'admin-' . bin2hex(random_bytes(6));
        $env = array_merge(getenv(), ['TASKQ_URL' => "http://127.0.0.1:{$this->apiPort}", 'TERM' => 'xterm', 'TASKQ_TEST_TAG' => $tag]);
        $p = proc_open(array_merge(['timeout', '-k', '1', '20'], $cmd), [0 => ['file', '/dev/null', 'r'], 1 => ['file', $out, 'w'], 2 => ['file', "$out.err", 'w']], $pipes, $this->dir, $env);
        return [$p, $tag];
    }

    /** Waits (bounded) for a startTagged() process; returns its exit code. Its whole tree is killed in any case. */
    private function finishTagged(array $started, ServerProcess $server): int
    {
        [$p, $tag] = $started;
        $exit = null;
        try {
            // The exit code is reported once, by the call that sees the exit.
            $this->waitUntil(function () use ($p, &$exit) {
                $st = proc_get_status($p);
                $exit = $st['running'] ? null : $st['exitcode'];
                return !$st['running'];
            }, 15, 'the command to exit', $server);
        } finally {
            ProcessTree::killAll($tag);
            proc_close($p);
        }
        return $exit;
    }

    /**
     * Runs `taskq watch $args` (as lines: not a terminal) until it printed
     * two lines, then releases the blocked tasks; returns its lines once it
     * exited 0.
     */
    private function watchReleased(array $args, ServerProcess $server): array
    {
        $out = "$this->dir/watch.out";
        $started = $this->startTagged(array_merge([self::binary(), 'watch'], $args), $out);
        try {
            $this->waitUntil(fn () => substr_count((string) @file_get_contents($out), "\n") >= 2, 10, 'two progress lines', $server);
        } finally {
            touch("$this->dir/release");
            $exit = $this->finishTagged($started, $server);
        }
        $this->assertSame(0, $exit, (string) file_get_contents("$out.err"));
        return explode("\n", rtrim((string) file_get_contents($out)));
    }

    /**
     * One HTTP/1.1 request over a plain socket (bounded by 5 s); returns
     * [status, headers with lower-case names, decoded JSON body].
     */
    private function http(string $method, string $path, ?string $body = null, array $headers = []): array
    {
        $s = stream_socket_client("tcp://127.0.0.1:{$this->apiPort}", $errno, $errstr, 3);
        $this->assertNotFalse($s, "connect to the admin port: $errno $errstr");
        stream_set_timeout($s, 5);
        if ($body !== null) {
            $headers += ['Content-Type' => 'application/json', 'Content-Length' => (string) strlen($body)];
        }
        $head = "$method $path HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
        foreach ($headers as $name => $value) {
            $head .= "$name: $value\r\n";
        }
        fwrite($s, "$head\r\n" . ($body ?? ''));
        $raw = (string) stream_get_contents($s);
        $timedOut = stream_get_meta_data($s)['timed_out'];
        fclose($s);
        $this->assertFalse($timedOut, "no complete answer within 5 s; got: $raw");
        [$head, $text] = explode("\r\n\r\n", $raw, 2) + [1 => ''];
        $lines = explode("\r\n", $head);
        $got = [];
        foreach (array_slice($lines, 1) as $line) {
            [$name, $value] = explode(':', $line, 2);
            $got[strtolower($name)] = trim($value);
        }
        $json = json_decode($text, true);
        $this->assertIsArray($json, "a JSON answer: $raw");
        return [(int) substr($lines[0], 9, 3), $got, $json];
    }

    public function testPingAndStatsShowTheServerAndItsWorkers(): void
    {
        $server = $this->server();
        [$exit, $out, $err] = $this->taskq(['ping']);
        $this->assertSame(0, $exit, $err);
        $this->assertMatchesRegularExpression("~^pong from http://127\.0\.0\.1:{$this->apiPort}: taskq \d+\.\d+\.\d+, pid {$server->pid()}, up \d+s\n$~", $out);

        [$exit, $out, $err] = $this->taskq(['stats', '--json', '--interval', '0.2']);
        $this->assertSame(0, $exit, $err);
        $stats = json_decode($out, true);
        $this->assertIsArray($stats, $out);
        $this->assertSame(2, $stats['stats']['task_worker_num']);
        $this->assertSame(0, $stats['tasks']['waiting']);
        $this->assertSame(['submitted' => 0, 'done' => 0, 'failed' => 0], array_map('intval', $stats['rates']));
        $this->assertCount(3, $stats['workers']);
        $pids = [];
        foreach ($stats['workers'] as $i => $w) {
            $this->assertSame($i, $w['id']);
            $this->assertSame($i === 0 ? 'event' : 'task', $w['kind']);
            $this->assertSame('idle', $w['state']);
            $this->assertIsInt($w['pid']);
            $this->assertGreaterThan(1024 * 1024, $w['memory_rss'], 'RSS from /proc');
            $this->assertEqualsWithDelta(time(), $w['started_at'], 60);
            $pids[] = $w['pid'];
        }
        $started = array_column($this->events('workerstart'), 'pid', 'id');
        ksort($started);
        $this->assertSame($started, $pids, 'the pids that ran onWorkerStart, by worker id');

        [$exit, $out, $err] = $this->taskq(['stats', '--interval', '0.2']);
        $this->assertSame(0, $exit, $err);
        $lines = explode("\n", $out);
        $this->assertSame("taskq at http://127.0.0.1:{$this->apiPort}", $lines[0]);
        $this->assertSame(['QUEUED', 'RUNNING', 'DONE', 'FAILED', 'RETRIES'], preg_split('~\s+~', trim($lines[1])));
        $this->assertSame(['0', '0', '0', '0', '0'], preg_split('~\s+~', trim($lines[2])));
        $this->assertStringStartsWith('rates/s: submitted 0.0', $lines[3]);
        $this->assertMatchesRegularExpression("~^\s+0  event\s+{$pids[0]}  idle\s+0\s+[\d.]+ MB  \d+s ago$~", $lines[6]);
        $this->assertMatchesRegularExpression("~^\s+2  task\s+{$pids[2]}  idle\s+0\s+[\d.]+ MB  \d+s ago$~", $lines[8]);
    }

    public static function queues(): array
    {
        return ['memory queue' => [false], 'task_store' => [true]];
    }

    /**
     * @dataProvider queues
     */
    public function testFailedTasksAreListedRetriedAndPurgedOverTheApi(bool $store): void
    {
        $server = $this->server($store ? ['task_store' => "$this->dir/store"] : []);
        [$status, , $json] = $this->http('POST', '/tasks', json_encode(['data' => ['fail' => 1], 'max_attempts' => 1]));
        $this->assertSame(200, $status, json_encode($json));
        $id = $json['id'];
        $failed = [];
        $this->waitUntil(function () use (&$failed) {
            $failed = $this->http('GET', '/api/failed')[2];
            return count($failed) === 1;
        }, 10, 'the task in the failed list', $server);
        $this->assertSame([$id, -1, 1], [$failed[0]['id'], $failed[0]['worker'], $failed[0]['attempts']], json_encode($failed));
        $this->assertStringContainsString('broken 1', $failed[0]['error']);
        $this->assertStringContainsString('"fail"', base64_decode($failed[0]['data']), 'the task\'s data comes along');
        $this->assertEqualsWithDelta(microtime(true), $failed[0]['failed_at'], 30);

        touch("$this->dir/fixed");
        [$status, , $n] = $this->http('POST', '/api/failed/retry', '{"ids": [999999]}');
        $this->assertSame([200, ['retried' => 0]], [$status, $n], 'an unknown id retries nothing');
        [$status, , $n] = $this->http('POST', '/api/failed/retry', json_encode(['ids' => [$id]]));
        $this->assertSame([200, ['retried' => 1]], [$status, $n]);
        $ran = $this->waitEvents('task', 1, 10, $server);
        $this->assertSame(['fail' => 1], $ran[0]['data'], 'the retried task ran again');
        $this->assertSame([], $this->http('GET', '/api/failed')[2]);

        unlink("$this->dir/fixed");
        foreach ([2, 3] as $n) {
            // One at a time: two task workers would fail them in either order.
            $this->http('POST', '/tasks', json_encode(['data' => ['fail' => $n], 'max_attempts' => 1]));
            $this->waitUntil(fn () => count($this->http('GET', '/api/failed')[2]) === $n - 1, 10, "failed task $n", $server);
        }
        $this->assertSame(['broken 3'], array_map(fn ($f) => substr($f['error'], strpos($f['error'], 'broken'), 8), $this->http('GET', '/api/failed?limit=1')[2]), 'newest first');
        $this->assertCount(1, $this->http('GET', '/api/failed?offset=1')[2]);
        [$status, , $json] = $this->http('GET', '/api/failed?limit=0');
        $this->assertSame(400, $status);
        $this->assertStringContainsString('limit=N (1 to 1000)', $json['error']);
        [$status, , $json] = $this->http('POST', '/api/failed/purge', '{"ids": []}');
        $this->assertSame(400, $status);
        $this->assertStringContainsString('"all": true', $json['error']);
        [$status, , $n] = $this->http('POST', '/api/failed/purge', '{"all": true}');
        $this->assertSame([200, ['purged' => 2]], [$status, $n]);
        $this->assertSame([], $this->http('GET', '/api/failed')[2]);
    }

    public function testPushedTasksRunWithTheDecodedJson(): void
    {
        $server = $this->server(['task_store' => "$this->dir/store"]);
        [$exit, $out, $err] = $this->taskq(['push', '{"to": "a@example.com", "n": [1, 2.5, null], "o": {}}']);
        $this->assertSame(0, $exit, $err);
        $this->assertMatchesRegularExpression('~^\d+\n$~', $out, 'the id');
        [$exit, $out, $err] = $this->taskq(['push', 'hello world', '--priority', '-1']);
        $this->assertSame(0, $exit, $err);
        file_put_contents("$this->dir/task.json", '[true, "x"]');
        [$exit, , $err] = $this->taskq(['push', '--file', "$this->dir/task.json"]);
        $this->assertSame(0, $exit, $err);

        $tasks = $this->waitEvents('task', 3, 10, $server);
        $byType = [];
        foreach ($tasks as $t) {
            $byType[$t['type']][] = $t['data'];
        }
        $this->assertSame(['to' => 'a@example.com', 'n' => [1, 2.5, null], 'o' => []], $byType['array'][0]);
        $this->assertSame([true, 'x'], $byType['array'][1]);
        $this->assertSame(['hello world'], $byType['string']);
    }

    public function testPostTasksTakesABatchAndRefusesBadBodies(): void
    {
        $server = $this->server(['package_max_length' => 65536, 'auth_token' => 's3cret']);
        $auth = ['Authorization' => 'Bearer s3cret'];
        [$status, , $json] = $this->http('POST', '/tasks', '{"tasks": [{"data": {"k": 1}}, {"data": "two", "priority": 5}, {"data": 3, "delay": 0.1, "max_attempts": 2}]}', $auth);
        $this->assertSame(200, $status, json_encode($json));
        $this->assertCount(3, $json['ids']);
        $this->assertSame($json['ids'], array_unique($json['ids']));
        $tasks = $this->waitEvents('task', 3, 10, $server);
        $this->assertEqualsCanonicalizing([['k' => 1], 'two', 3], array_column($tasks, 'data'));
        $this->assertEqualsCanonicalizing(['array', 'string', 'int'], array_column($tasks, 'type'));

        [$status, , $json] = $this->http('POST', '/tasks', '{"data": 1}', $auth);
        $this->assertSame(200, $status);
        $this->assertIsInt($json['id']);

        foreach ([
            ['{"data": 1', 'the body is not valid JSON'],
            ['[1, 2]', 'the body must be a JSON object'],
            ['{"data": 1, "prio": 2}', "the task: unknown field 'prio'; allowed: data, delay, priority, max_attempts, batch"],
            ['{"delay": 1}', "the task: the field 'data' is required"],
            ['{"data": 1, "priority": "high"}', "the task: 'priority' must be an integer"],
            ['{"tasks": [{"data": 1}, {"data": 2, "max_attempts": 0}]}', "tasks[1]: 'max_attempts' must be an integer of at least 1"],
        ] as [$body, $error]) {
            [$status, , $json] = $this->http('POST', '/tasks', $body, $auth);
            $this->assertSame(400, $status, $body);
            $this->assertStringStartsWith($error, $json['error'], $body);
        }
        // Declared too large: refused before the body is read.
        [$status, , $json] = $this->http('POST', '/tasks', null, $auth + ['Content-Length' => '100000']);
        $this->assertSame(413, $status);
        $this->assertSame('the body is larger than package_max_length (65536 bytes)', $json['error']);
        [$status, $headers, $json] = $this->http('POST', '/tasks', '{"data": 1}');
        $this->assertSame(401, $status);
        $this->assertSame('Bearer realm="taskq"', $headers['www-authenticate']);
        $this->assertStringContainsString('auth_token', $json['error']);
        [$status, $headers] = $this->http('GET', '/tasks', null, $auth);
        $this->assertSame(405, $status);
        $this->assertSame('POST', $headers['allow']);
        [$status, , $json] = $this->http('GET', '/api/nope', null, $auth);
        $this->assertSame(404, $status);
        $this->assertStringStartsWith('no such endpoint: /api/nope', $json['error']);
        usleep(300000);
        $this->assertCount(4, $this->events('task'), 'no refused body queued a task');
        [$status, , $stats] = $this->http('GET', '/api/stats', null, $auth);
        $this->assertSame(200, $status);
        $this->assertSame(4, $stats['tasks']['finished']);
        $taskWorkers = array_filter($stats['workers'], fn ($w) => $w['kind'] === 'task');
        $this->assertSame(4, array_sum(array_column($taskWorkers, 'handled')), 'the runs, counted by the task worker that ended them');
    }

    public function testAFullQueueAnswers503WithRetryAfterAndTheIdsTaken(): void
    {
        $server = $this->server(['task_queue_max' => 3]);
        $tasks = [];
        for ($i = 0; $i < 20; $i++) {
            $tasks[] = ['data' => ['i' => $i, 'block' => true]];
        }
        [$status, $headers, $json] = $this->http('POST', '/tasks', json_encode(['tasks' => $tasks]));
        $this->assertSame(503, $status, json_encode($json));
        $this->assertSame('1', $headers['retry-after']);
        $this->assertSame('task queue is full (task_queue_max = 3)', $json['error']);
        $this->assertGreaterThanOrEqual(3, count($json['ids']));
        $this->assertLessThan(20, count($json['ids']));
        touch("$this->dir/release");
        $this->waitEvents('task', count($json['ids']), 10, $server);
        usleep(300000);
        $ran = $this->events('task');
        $this->assertCount(count($json['ids']), $ran, 'exactly the tasks whose ids were given ran');
        $this->assertSame(range(0, count($json['ids']) - 1), self::sorted(array_map(fn ($t) => $t['data']['i'], $ran)), 'the batch was taken in order up to the refusal');
    }

    private static function sorted(array $a): array
    {
        sort($a);
        return $a;
    }

    public function testExitCodesAndMessagesWhenTheServerIsDownOrTheTokenWrong(): void
    {
        $this->apiPort = self::freePort();
        [$exit, $out, $err] = $this->taskq(['ping']);
        $this->assertSame(3, $exit, $err);
        $this->assertSame('', $out);
        $this->assertStringStartsWith("taskq: cannot reach the taskq server at http://127.0.0.1:{$this->apiPort}/api/ping: ", $err);

        $this->server(['auth_token' => 's3cret']);
        [$exit, , $err] = $this->taskq(['stats']);
        $this->assertSame(4, $exit, $err);
        $this->assertStringStartsWith("taskq: the taskq server at http://127.0.0.1:{$this->apiPort}/api/stats refused the token: a valid auth_token is required", $err);
        [$exit, , $err] = $this->taskq(['--token', 'wrong', 'push', 'x']);
        $this->assertSame(4, $exit, $err);
        [$exit, $out, $err] = $this->taskq(['ping'], 15, ['TASKQ_TOKEN' => 's3cret']);
        $this->assertSame(0, $exit, $err);
        $this->assertStringStartsWith('pong', $out);

        [$exit, , $err] = $this->taskq(['push']);
        $this->assertSame(2, $exit);
        $this->assertStringContainsString('<DATA>', $err);
        [$exit, , $err] = $this->taskq(['--url', '127.0.0.1:9502', 'ping']);
        $this->assertSame(2, $exit);
        $this->assertStringContainsString("--url must be an http:// address", $err);
        [$exit, , $err] = $this->taskq(['--token', 's3cret', 'push', '1', '--max-attempts', '0']);
        $this->assertSame(2, $exit);
        $this->assertStringContainsString('--max-attempts must be at least 1', $err);
        $this->assertSame([], $this->events('task'));
    }

    public function testReloadAndStopTakeEffect(): void
    {
        $server = $this->server();
        [$exit, $out, $err] = $this->taskq(['reload', '--task']);
        $this->assertSame(0, $exit, $err);
        $this->assertSame("reloading the task workers at http://127.0.0.1:{$this->apiPort}\n", $out);
        $starts = $this->waitEvents('workerstart', 5, 10, $server);
        usleep(300000);
        $this->assertEqualsCanonicalizing([1, 2], array_column(array_slice($this->events('workerstart'), 3), 'id'), 'only the task workers restarted');

        [$exit, $out, $err] = $this->taskq(['reload']);
        $this->assertSame(0, $exit, $err);
        $this->assertSame("reloading every worker at http://127.0.0.1:{$this->apiPort}\n", $out);
        $starts = $this->waitEvents('workerstart', 8, 10, $server);
        $this->assertEqualsCanonicalizing([0, 1, 2], array_column(array_slice($starts, 5, 3), 'id'));

        [$exit, $out, $err] = $this->taskq(['stop']);
        $this->assertSame(0, $exit, $err);
        $this->assertSame("stopping the server at http://127.0.0.1:{$this->apiPort}\n", $out);
        $this->waitUntil(fn () => $server->tree() === [], 10, 'every server process to exit', $server);
        $this->assertSame(0, $server->wait(5));
        [$exit] = $this->taskq(['ping']);
        $this->assertSame(3, $exit, 'the listener closed with the server');
    }

    public function testWithARedisBackendPostTasksIsAnsweredOnceRedisHoldsTheTask(): void
    {
        $this->redis = new RedisServer("$this->dir/redis", self::freePort());
        $this->redis->start();
        $server = $this->server([
            'task_backend' => $this->redis->dsn(),
            'task_queue' => 'admin',
            'task_consumer' => 'admin-a',
            'task_backend_timeout' => 1,
        ]);
        [$status, , $json] = $this->http('POST', '/tasks', '{"tasks": [{"data": {"via": "redis"}}, {"data": "two"}]}');
        $this->assertSame(200, $status, json_encode($json));
        $this->assertCount(2, array_unique($json['ids']));
        $tasks = $this->waitEvents('task', 2, 10, $server);
        $this->assertEqualsCanonicalizing([['via' => 'redis'], 'two'], array_column($tasks, 'data'));

        $this->redis->kill();
        [$status, $headers, $json] = $this->http('POST', '/tasks', '{"data": "lost?"}');
        $this->assertSame(503, $status, json_encode($json));
        $this->assertSame('1', $headers['retry-after']);
        $this->assertNotEmpty($json['error']);
        [$exit, , $err] = $this->taskq(['push', 'lost?']);
        $this->assertSame(5, $exit, $err);
        $this->assertStringContainsString("/tasks answered 503: ", $err);
    }

    public function testWatchDrawsAProgressBarOnATerminal(): void
    {
        $server = $this->server();
        $tasks = [];
        for ($i = 0; $i < 30; $i++) {
            $tasks[] = ['data' => ['i' => $i, 'block' => true]];
        }
        [$status] = $this->http('POST', '/tasks', json_encode(['tasks' => $tasks]));
        $this->assertSame(200, $status);
        // script(1) gives taskq a pseudo-terminal and copies what it draws.
        $typescript = "$this->dir/watch.typescript";
        $cmd = escapeshellarg(self::binary()) . ' watch --interval 0.2';
        $started = $this->startTagged(['script', '-qfec', $cmd, $typescript], "$typescript.out");
        try {
            $this->waitUntil(fn () => str_contains((string) @file_get_contents($typescript), '0/30'), 10, 'the bar at 0/30', $server);
        } finally {
            touch("$this->dir/release");
            $exit = $this->finishTagged($started, $server);
        }
        $screen = (string) file_get_contents($typescript);
        $this->assertSame(0, $exit, $screen . file_get_contents("$typescript.out.err"));
        $this->assertStringContainsString('30/30', $screen);
        $this->assertMatchesRegularExpression('~done: 30 task\(s\) in [\d.]+s~', $screen);
        $this->assertStringNotContainsString(' done, ', $screen, 'a bar, not the lines for a pipe');
        $this->assertStringContainsString("\u{2588}", $screen, 'bar cells drawn');
    }

    public function testWatchFollowsABacklogToItsEnd(): void
    {
        $server = $this->server();
        $tasks = [];
        for ($i = 0; $i < 40; $i++) {
            $tasks[] = ['data' => ['i' => $i, 'block' => true]];
        }
        [$status, , $json] = $this->http('POST', '/tasks', json_encode(['tasks' => $tasks]));
        $this->assertSame(200, $status, json_encode($json));

        $lines = $this->watchReleased(['--interval', '0.2'], $server);
        $this->assertMatchesRegularExpression('~^0/40 done, ~', $lines[0], 'nothing ran before the release');
        $this->assertMatchesRegularExpression('~^40/40 done, [\d.]+/s, ETA 0s$~', $lines[count($lines) - 2]);
        $this->assertMatchesRegularExpression('~^done: 40 task\(s\) in [\d.]+s$~', end($lines));
        $done = array_map(fn ($l) => (int) $l, array_slice($lines, 0, -1));
        $sorted = $done;
        sort($sorted);
        $this->assertSame($sorted, $done, 'done only grows');
        $this->assertCount(40, $this->events('task'));
    }

    public function testBatchesAreReportedOverHttpAndFollowedByTaskqWatchBatch(): void
    {
        $server = $this->server(['task_max_attempts' => 1]);
        $tasks = [];
        foreach ([1, 2, 3, 4, 5] as $i) {
            $tasks[] = ['data' => ['i' => $i, 'block' => true] + ($i % 2 === 0 ? ['fail' => 'x'] : []), 'batch' => 'mail 12/2026'];
        }
        [$status, , $json] = $this->http('POST', '/tasks', json_encode(['tasks' => $tasks]));
        $this->assertSame(200, $status, json_encode($json));
        [$exit, , $err] = $this->taskq(['push', '{"i": 6, "block": true}', '--batch', 'mail 12/2026']);
        $this->assertSame(0, $exit, $err);

        [$status, , $open] = $this->http('GET', '/api/batches');
        $this->assertSame(200, $status);
        $this->assertSame([['mail 12/2026', 6, 6]], array_map(fn ($b) => [$b['batch'], $b['total'], $b['pending']], $open), 'the unfinished batches');
        [$status, , $one] = $this->http('GET', '/api/batches?name=mail+12%2F2026');
        $this->assertSame([200, 6, 0, 0], [$status, $one['total'], $one['done'], $one['failed']]);
        [$status, , $json] = $this->http('GET', '/api/batches?name=nope');
        $this->assertSame([404, 'no batch named "nope"'], [$status, $json['error']]);
        [$status, , $json] = $this->http('GET', '/api/batches?name=');
        $this->assertSame(400, $status);
        $this->assertStringContainsString('name=<batch name>', $json['error']);
        [$status, , $json] = $this->http('POST', '/tasks', json_encode(['data' => 1, 'batch' => str_repeat('b', 129)]));
        $this->assertSame([400, "the task: 'batch' must be a string of 1 to 128 bytes, no control characters"], [$status, $json['error']]);

        $lines = $this->watchReleased(['--batch', 'mail 12/2026', '--interval', '0.2'], $server);
        $this->assertMatchesRegularExpression('~^0/6 ended, 0 failed, ~', $lines[0], 'nothing ran before the release');
        $summary = array_slice($lines, -2);
        $this->assertMatchesRegularExpression('~^batch mail 12/2026: 4 of 6 done, 2 failed \([\d.]+s\)$~', $summary[0]);
        $this->assertMatchesRegularExpression('~^\s+2 × RuntimeException: broken x in ~', $summary[1], 'the failures by error');
        $this->assertSame([], $this->http('GET', '/api/batches')[2], 'no batch is unfinished');

        [$exit, , $err] = $this->taskq(['watch', '--batch', 'nope']);
        $this->assertSame(5, $exit);
        $this->assertStringContainsString('answered 404: no batch named "nope"', $err);
    }
}
