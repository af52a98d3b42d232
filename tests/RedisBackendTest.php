<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;
use TaskQ\Tests\Support\ProcessTree;
use TaskQ\Tests\Support\RedisServer;

/**
 * The Redis Streams backend end to end (issue 15): TaskServers on
 * different addresses (and, where the machine allows, in different network
 * namespaces) share one queue in a real redis-server started by the test.
 * Each test checks one promise of the README's "Redis Streams backend":
 * every acknowledged task runs (exactly once while every server lives, at
 * most the dead server's in-flight ones twice after a SIGKILL), a task a
 * live server keeps running is not stolen, a Redis restart loses nothing
 * acknowledged and refuses submissions with errCode 9010 meanwhile, a
 * SIGTERM/SIGINT/SIGQUIT to the master leaves no finished task pending, a
 * SIGUSR1 reload or SIGHUP reopen loses and repeats none, stop signals to
 * the manager are ignored, a SIGKILLed task worker's task and a task cut
 * off at max_wait_time run again, delayed/priority/onFinish/taskwait work across servers,
 * and given-up tasks land in the Redis failed list with their error.
 */
final class RedisBackendTest extends TaskqTestCase
{
    /** The BACKEND protocol code: "task backend unavailable". */
    private const BACKEND = 9010;

    private const QUEUE = 'mail';

    /**
     * One TaskServer. TASKQ_HOST/TASKQ_PORT: where it listens;
     * TASKQ_SETTINGS: set() (JSON). A string task appends "<consumer>
     * <payload>\n" to runs.log (one fwrite on a file opened with 'a'), after
     * TASKQ_TASK_US microseconds. An array task ['kind' =>, 'label' =>] is
     * recorded as run/done events: sleep (ms), throw, block (until the file
     * "go" exists), echo (returns "result:<label>:<consumer>"). onReceive
     * takes dispatch:/dispatchcb:/wait:/waitmulti: orders and answers JSON.
     */
    private const SERVER = <<<'PHP'
/** A class whose magic methods would show that a payload from Redis became an object. */
class Gadget
{
    public string $path = '';
    public function __wakeup() { file_put_contents("$this->path.wakeup", 'x'); }
    public function __destruct() { if ($this->path !== '') { file_put_contents("$this->path.destruct", 'x'); } }
}
$settings = json_decode((string) getenv('TASKQ_SETTINGS'), true);
$me = $settings['task_consumer'];
$taskUs = (int) getenv('TASKQ_TASK_US');
$server = new TaskServer((string) getenv('TASKQ_HOST'), $port);
$server->set($settings);
$server->on('WorkerStart', function ($s, $id) use ($me) { record('workerstart', ['server' => $me, 'id' => $id, 'manager' => $s->manager_pid]); });
$server->on('Receive', function ($s, $fd, $rid, $data) use ($me) {
    [$order, $arg] = explode(':', $data, 2) + [1 => ''];
    $echo = fn ($label) => ['kind' => 'echo', 'label' => $label];
    switch ($order) {
        case 'dispatch':
            $id = $s->task($echo($arg));
            record('dispatched', ['server' => $me, 'label' => $arg, 'task_id' => $id, 'worker' => $s->worker_id]);
            $s->send($fd, json_encode(['id' => $id]));
            return;
        case 'stats':
            $s->send($fd, json_encode($s->stats()));
            return;
        case 'dispatchthrow':
            $s->send($fd, json_encode(['id' => $s->task(['kind' => 'throw', 'label' => $arg])]));
            return;
        case 'dispatchcb':
            $id = $s->task($echo($arg), -1, function ($s, $taskId, $result) use ($me, $arg) {
                record('callback', ['server' => $me, 'label' => $arg, 'task_id' => $taskId, 'data' => $result, 'worker' => $s->worker_id]);
            });
            $s->send($fd, json_encode(['id' => $id]));
            return;
        case 'wait':
            $s->send($fd, json_encode(['r' => $s->taskwait($echo($arg), 10)]));
            return;
        case 'waitmulti':
            $s->send($fd, json_encode(['r' => $s->taskWaitMulti(array_map($echo, explode(',', $arg)), 10)]));
            return;
    }
    $s->send($fd, json_encode(['error' => "unknown order $data"]));
});
$server->on('Task', function ($s, $taskId, $src, $data) use ($me, $dir, $taskUs) {
    static $runs = null;
    if (is_string($data)) {
        if ($taskUs > 0) { usleep($taskUs); }
        $runs ??= fopen("$dir/runs.log", 'a');
        fwrite($runs, "$me $data\n");
        return null;
    }
    $label = $data['label'];
    record('run', ['server' => $me, 'label' => $label, 'task_id' => $taskId, 't' => microtime(true)]);
    switch ($data['kind']) {
        case 'throw':
            throw new RuntimeException("boom $label");
        case 'sleep':
            usleep($data['ms'] * 1000);
            break;
        case 'block':
            $until = microtime(true) + 20;
            while (!file_exists("$dir/go") && microtime(true) < $until) { usleep(10000); }
            usleep(($data['ms'] ?? 0) * 1000);
            break;
        case 'echo':
            record('done', ['server' => $me, 'label' => $label, 'task_id' => $taskId, 't' => microtime(true)]);
            return "result:$label:$me";
    }
    record('done', ['server' => $me, 'label' => $label, 'task_id' => $taskId, 't' => microtime(true)]);
    return null;
});
$server->on('Finish', function ($s, $taskId, $result) use ($me) {
    record('finish', ['server' => $me, 'task_id' => $taskId, 'data' => $result, 'worker' => $s->worker_id]);
});
$server->on('TaskFailed', function ($s, $taskId, $data, $error) use ($me) {
    record('failed', ['server' => $me, 'task_id' => $taskId, 'label' => is_array($data) ? $data['label'] : $data, 'error' => $error]);
});
$server->start();
PHP;

    /**
     * Submits tasks to one server: argv host, port, prefix, count (0 = until
     * the file "<out>.stop" exists), mode (one = task() per task, multi =
     * taskMulti() batches of 500), options JSON, pause between tasks (µs),
     * out file. Writes "<id> <payload>" per acknowledged task and "ERR
     * <errCode> <seconds> <payload> <errMsg>" per refused one.
     */
    private const PRODUCER = <<<'PHP'
<?php
[, $host, $port, $prefix, $count, $mode, $options, $pauseUs, $out] = $argv;
[$count, $pauseUs, $options] = [(int) $count, (int) $pauseUs, json_decode($options, true)];
$c = new TaskClient(TASKQ_SOCK_TCP);
if (!$c->connect($host, (int) $port, 5)) { fwrite(STDERR, "connect to $host:$port failed: {$c->errCode} {$c->errMsg}\n"); exit(3); }
$f = fopen($out, 'a');
$oneLine = fn ($s) => str_replace(["\n", "\r"], ' ', (string) $s);
$i = 0;
while ($count > 0 ? $i < $count : !file_exists("$out.stop")) {
    if ($mode === 'multi') {
        $batch = [];
        for ($n = 0; $n < 500 && ($count === 0 || $i < $count); $n++, $i++) { $batch[] = "$prefix:$i"; }
        $t0 = microtime(true);
        $ids = $c->taskMulti($batch, $options);
        $dt = microtime(true) - $t0;
        foreach ($batch as $k => $payload) {
            $id = $ids === false ? false : $ids[$k];
            fwrite($f, $id === false ? "ERR {$c->errCode} $dt $payload {$oneLine($c->errMsg)}\n" : "$id $payload\n");
        }
    } else {
        $t0 = microtime(true);
        $id = @$c->task("$prefix:$i", $options); // a refusal also warns; errCode says which
        $dt = microtime(true) - $t0;
        fwrite($f, $id === false ? "ERR {$c->errCode} $dt $prefix:$i {$oneLine($c->errMsg)}\n" : "$id $prefix:$i\n");
        $i++;
    }
    if ($pauseUs > 0) { usleep($pauseUs); }
}
fclose($f);
PHP;

    /** @var RedisServer[] */
    private array $redis = [];
    /** @var string[] network namespaces this test created */
    private array $netns = [];

    protected function setUp(): void
    {
        parent::setUp();
        file_put_contents("$this->dir/producer.php", self::PRODUCER);
    }

    protected function tearDown(): void
    {
        foreach ($this->servers as $server) {
            $server->destroy();
        }
        $this->servers = [];
        foreach ($this->redis as $redis) {
            $redis->kill();
        }
        $this->redis = [];
        foreach ($this->netns as $ns) {
            exec('ip netns del ' . escapeshellarg($ns) . ' 2>/dev/null');
        }
        $this->netns = [];
        parent::tearDown();
    }

    // ---------------------------------------------------------------- helpers

    private function startRedis(bool $durable = false, ?int $port = null, bool $start = true, string $host = '127.0.0.1', array $wrapper = []): RedisServer
    {
        $redis = new RedisServer("$this->dir/redis-" . count($this->redis), $port ?? self::freePort(), $durable, $host, $wrapper);
        $this->redis[] = $redis;
        if ($start) {
            $redis->start();
        }
        return $redis;
    }

    /**
     * Starts a TaskServer named `$name` (its task_consumer) on `$host` that
     * uses `$dsn` as task_backend; waits until it listens and every worker
     * started.
     */
    private function taskServer(string $name, string $host, string $dsn, array $settings = [], array $env = [], array $wrapper = [], ?int $port = null): ServerProcess
    {
        $settings += [
            'worker_num' => 1,
            'task_worker_num' => 2,
            'task_backend' => $dsn,
            'task_queue' => self::QUEUE,
            'task_consumer' => $name,
            'task_claim_idle' => 1.5,
            'task_backend_timeout' => 1,
            'log_file' => "$this->dir/taskq-$name.log",
        ];
        $port ??= self::freePort();
        $script = "$this->dir/server.php";
        if (!is_file($script)) {
            file_put_contents($script, "<?php\nrequire " . var_export(__DIR__ . '/Support/prelude.php', true) . ";\n" . self::SERVER);
        }
        $home = "$this->dir/srv-$name";
        @mkdir($home);
        $before = count($this->workerStarts($name));
        $server = new ServerProcess($script, $home, [
            'TASKQ_PORT' => (string) $port,
            'TASKQ_HOST' => $host,
            'TASKQ_DIR' => $this->dir,
            'TASKQ_SETTINGS' => json_encode($settings),
        ] + $env, [], $wrapper);
        $this->servers[] = $server;
        $this->port = $port;
        $this->waitUntil(function () use ($server, $port) {
            // a build without the backend takes these options for typos and runs the embedded queue
            $this->assertStringNotContainsString('unsupported option', $server->stderr(), 'this build does not know the task_backend options');
            return self::listeningIn($server->pid(), $port);
        }, 15, "server $name listening on $host:$port\nlog:\n" . $this->log("taskq-$name.log"), $server);
        $n = $settings['worker_num'] + $settings['task_worker_num'];
        $this->waitUntil(fn () => count($this->workerStarts($name)) >= $before + $n, 15, "$n workers of $name started\nlog:\n" . $this->log("taskq-$name.log"), $server);
        return $server;
    }

    private function workerStarts(string $name): array
    {
        return array_filter($this->events('workerstart'), fn ($e) => $e['server'] === $name);
    }

    /** Whether the network namespace of process `$pid` has a socket listening on `$port`. */
    private static function listeningIn(int $pid, int $port): bool
    {
        $hex = sprintf(':%04X', $port);
        foreach (["/proc/$pid/net/tcp", "/proc/$pid/net/tcp6"] as $f) {
            foreach (@file($f) ?: [] as $line) {
                $cols = preg_split('/\s+/', trim($line));
                if (isset($cols[1], $cols[3]) && str_ends_with($cols[1], $hex) && $cols[3] === '0A') {
                    return true;
                }
            }
        }
        return false;
    }

    /** Starts a producer (see PRODUCER) in the background; finish it with finishPhp(). */
    private function produce(string $host, int $port, string $prefix, int $count, string $out, string $mode = 'one', array $options = [], int $pauseUs = 0, float $timeout = 120, array $wrapper = []): array
    {
        $args = [$host, (string) $port, $prefix, (string) $count, $mode, json_encode((object) $options), (string) $pauseUs, "$this->dir/$out"];
        if ($wrapper === []) {
            return $this->startPhp('', $timeout, $args, "$this->dir/producer.php");
        }
        $log = "$this->dir/$out";
        $cmd = array_merge($wrapper, self::phpCommand("$this->dir/producer.php", $timeout, $args));
        $p = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['file', "$log.stdout", 'w'], 2 => ['file', "$log.stderr", 'w']], $pipes, $this->dir);
        return [$p, "$log.stdout", "$log.stderr"];
    }

    /** Waits for a producer and asserts it exited cleanly. */
    private function finishProducer(array $h, float $timeout, string $what): void
    {
        [$code, $out, $err] = $this->finishPhp($h, $timeout);
        $this->assertSame([0, ''], [$code, $err], "$what exited badly\nstdout: $out");
    }

    /** [acknowledged payload => id, refusals as [code, seconds, payload, message]] of producer output files. */
    private function submissions(string ...$files): array
    {
        $acked = [];
        $refused = [];
        foreach ($files as $file) {
            foreach (@file("$this->dir/$file", FILE_IGNORE_NEW_LINES) ?: [] as $line) {
                if (str_starts_with($line, 'ERR ')) {
                    $refused[] = explode(' ', substr($line, 4), 4) + [3 => ''];
                    continue;
                }
                [$id, $payload] = explode(' ', $line, 2);
                $acked[$payload] = (int) $id;
            }
        }
        return [$acked, $refused];
    }

    /** Every "<consumer> <payload>" line of runs.log as [consumer, payload]. */
    private function runs(): array
    {
        $out = [];
        foreach (@file("$this->dir/runs.log", FILE_IGNORE_NEW_LINES) ?: [] as $line) {
            $out[] = explode(' ', $line, 2);
        }
        return $out;
    }

    /** payload => list of the consumers that ran it. */
    private function runsByPayload(): array
    {
        $by = [];
        foreach ($this->runs() as [$consumer, $payload]) {
            $by[$payload][] = $consumer;
        }
        return $by;
    }

    /** Polls `$cond` every `$every` s (for conditions that read big files), at most `$timeout` s. */
    private function poll(callable $cond, float $timeout, string $what, float $every = 0.2): void
    {
        $deadline = microtime(true) + $timeout;
        while (!$cond()) {
            if (microtime(true) > $deadline) {
                $logs = '';
                foreach (glob("$this->dir/taskq-*.log") ?: [] as $log) {
                    $logs .= "\n--- " . basename($log) . ":\n" . substr((string) file_get_contents($log), -3000);
                }
                $this->fail("timed out after {$timeout}s waiting for $what$logs");
            }
            usleep((int) ($every * 1e6));
        }
    }

    /** Waits until Redis holds no task of the queue: nothing queued, pending or delayed. */
    private function waitQueueDrained(RedisServer $redis, float $timeout): void
    {
        $this->poll(fn () => $this->queueCounts($redis) === ['entries' => 0, 'pending' => 0, 'delayed' => 0], $timeout, 'the Redis queue to drain: ' . json_encode($this->queueCounts($redis)));
    }

    /** Entries in the priority streams, pending entries, delayed tasks (read with redis-cli). */
    private function queueCounts(RedisServer $redis): array
    {
        $p = 'taskq:{' . self::QUEUE . '}';
        $entries = $pending = 0;
        foreach ($redis->lines('ZRANGE', "$p:priorities", '0', '-1') as $prio) {
            $entries += (int) trim($redis->cli('XLEN', "$p:stream:$prio"));
            $pending += array_sum($this->pendingByConsumer($redis, (int) $prio));
        }
        return ['entries' => $entries, 'pending' => $pending, 'delayed' => (int) trim($redis->cli('ZCARD', "$p:delayed"))];
    }

    /** consumer => pending entries it owns in one priority stream (XPENDING summary). */
    private function pendingByConsumer(RedisServer $redis, int $prio = 0): array
    {
        $lines = $redis->lines('XPENDING', 'taskq:{' . self::QUEUE . "}:stream:$prio", 'taskq');
        $out = [];
        for ($i = 3; $i + 1 < count($lines); $i += 2) {
            $out[$lines[$i]] = (int) $lines[$i + 1];
        }
        return $out;
    }

    /**
     * The payloads of the entries `$consumer` holds pending in one priority
     * stream (XPENDING, then XRANGE each); a client's string task is stored
     * as the encoding byte 0 (raw, `crates/engine/src/payload.rs`) and the string.
     * Tasks with an id in `$except` are left out.
     */
    private function pendingPayloads(RedisServer $redis, string $consumer, int $prio = 0, array $except = []): array
    {
        $stream = 'taskq:{' . self::QUEUE . "}:stream:$prio";
        $lines = $redis->lines('XPENDING', $stream, 'taskq', '-', '+', '100000', $consumer);
        $out = [];
        for ($i = 0; $i + 3 < count($lines); $i += 4) {
            $fields = $redis->lines('XRANGE', $stream, $lines[$i], $lines[$i]);
            $k = array_search('meta', $fields, true);
            if ($k !== false && in_array((int) explode(' ', $fields[$k + 1])[0], $except, true)) {
                continue;
            }
            $k = array_search('payload', $fields, true);
            $this->assertNotFalse($k, "pending entry {$lines[$i]} has a payload: " . implode(' ', $fields));
            $this->assertStringStartsWith("\0", $fields[$k + 1], "pending entry {$lines[$i]} holds a raw string (encoding byte 0)");
            $out[] = substr($fields[$k + 1], 1);
        }
        return $out;
    }

    /** Events of `$kind` with label `$label`. */
    private function labelled(string $kind, string $label): array
    {
        return array_values(array_filter($this->events($kind), fn ($e) => ($e['label'] ?? null) === $label));
    }

    /** Sends one order to the server at host:port and returns its decoded JSON reply. */
    private function order(string $host, int $port, string $order, float $timeout = 15): array
    {
        $code = "<?php\n\$c = new TaskClient(TASKQ_SOCK_TCP);\n"
            . "if (!\$c->connect(" . var_export($host, true) . ", $port, 5)) { fwrite(STDERR, 'connect failed: ' . \$c->errCode); exit(3); }\n"
            . '$c->send(' . var_export($order, true) . ");\n"
            . "\$r = \$c->recv();\n"
            . "if (\$r === false || \$r === '') { fwrite(STDERR, 'no reply: ' . \$c->errCode . ' ' . \$c->errMsg); exit(4); }\n"
            . "echo \$r;\n";
        [$exit, $out, $err] = $this->runPhp($code, $timeout);
        $this->assertSame([0, ''], [$exit, $err], "order $order failed\nstdout: $out");
        $reply = json_decode($out, true);
        $this->assertIsArray($reply, "reply to $order: $out");
        return $reply;
    }

    /** One TaskClient::task() to host:port: [result, errCode, errMsg, seconds]. */
    private function submitOne(string $host, int $port, mixed $data, array $options = []): array
    {
        $code = "<?php\n\$c = new TaskClient(TASKQ_SOCK_TCP);\n"
            . "if (!\$c->connect(" . var_export($host, true) . ", $port, 5)) { fwrite(STDERR, 'connect failed: ' . \$c->errCode); exit(3); }\n"
            . "\$t0 = microtime(true);\n"
            . '$r = @$c->task(' . var_export($data, true) . ', ' . var_export($options, true) . ");\n"
            . "echo json_encode([\$r, \$c->errCode, \$c->errMsg, microtime(true) - \$t0, \$t0]);\n";
        [$exit, $out, $err] = $this->runPhp($code, 20);
        $this->assertSame([0, ''], [$exit, $err], "client failed\nstdout: $out");
        return json_decode($out, true);
    }

    /**
     * A real Redis Cluster: three masters on 127.0.0.1 (cluster-enabled,
     * their own ports, bus ports and node files), the slots assigned by
     * `redis-cli --cluster create` (bounded), each node waited for until
     * it reports cluster_state:ok. The nodes are killed in tearDown.
     *
     * @return RedisServer[]
     */
    private function startRedisCluster(): array
    {
        $nodes = [];
        for ($i = 0; $i < 3; $i++) {
            $dir = "$this->dir/redis-cluster-$i";
            $node = new RedisServer($dir, self::freePort(), extra: [
                '--cluster-enabled', 'yes',
                '--cluster-config-file', "$dir/nodes.conf",
                '--cluster-port', (string) self::freePort(),
                '--cluster-node-timeout', '5000',
            ]);
            $this->redis[] = $node;
            $node->start();
            $nodes[] = $node;
        }
        $cmd = array_merge(['timeout', '-k', '1', '30', RedisServer::CLI, '--cluster', 'create'], array_map(fn ($n) => "127.0.0.1:$n->port", $nodes), ['--cluster-replicas', '0', '--cluster-yes']);
        $p = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['redirect', 1]], $pipes);
        $out = stream_get_contents($pipes[1]);
        fclose($pipes[1]);
        $this->assertSame(0, proc_close($p), "redis-cli --cluster create:\n$out");
        foreach ($nodes as $node) {
            $this->poll(fn () => str_contains($node->cli('CLUSTER', 'INFO'), 'cluster_state:ok'), 20, "node $node->port to report cluster_state:ok", 0.05);
        }
        return $nodes;
    }

    /** The node of `$nodes` serving `$key`'s slot (CLUSTER KEYSLOT, then the slot ranges of CLUSTER NODES). */
    private function clusterNodeOf(array $nodes, string $key): RedisServer
    {
        $slot = (int) trim($nodes[0]->cli('CLUSTER', 'KEYSLOT', $key));
        foreach ($nodes[0]->lines('CLUSTER', 'NODES') as $line) {
            $f = explode(' ', $line);
            $port = (int) substr(strstr($f[1], '@', true), strrpos(strstr($f[1], '@', true), ':') + 1);
            foreach (array_slice($f, 8) as $range) {
                [$lo, $hi] = explode('-', $range) + [1 => $range];
                if (ctype_digit($lo) && ctype_digit($hi) && $slot >= (int) $lo && $slot <= (int) $hi) {
                    foreach ($nodes as $node) {
                        if ($node->port === $port) {
                            return $node;
                        }
                    }
                }
            }
        }
        $this->fail("no node serves slot $slot of $key");
    }

    // ---------------------------------------------------------------- sharing

    /**
     * Waits until every acknowledged task (payload => id) has run, up to
     * `$within` s, then until Redis holds nothing of the queue.
     */
    private function waitEveryAckedRan(RedisServer $redis, array $acked, int $within, int $drainWithin): void
    {
        $this->poll(fn () => count(array_diff_key($acked, $this->runsByPayload())) === 0, $within, 'every acknowledged task to run', 0.5);
        $this->waitQueueDrained($redis, $drainWithin);
    }

    /**
     * No task ran twice, and server A (two task workers and one worker, as
     * `$before` listed its processes) still runs with the same processes,
     * none started again.
     */
    private function assertRanOnceAndNothingReplaced(ServerProcess $a, array $before, string $when): void
    {
        $this->assertSame([], array_filter($this->runsByPayload(), fn ($c) => count($c) > 1), "no task ran twice $when");
        $this->assertSame($before, $a->tree(), "no process died or was replaced $when");
        $this->assertCount(3, $this->workerStarts('srv-a'), "no worker was started again $when");
    }

    /**
     * Half of `$count` acknowledged tasks one task() at a time through A,
     * half as taskMulti() through B: every one acknowledged with a distinct
     * id, each run exactly once, both servers ran some, and the queue on
     * `$redis` (the node holding it) drained.
     */
    private function shareBetweenAAndB(RedisServer $redis, int $portA, int $portB, int $count): void
    {
        $half = intdiv($count, 2);
        $n = number_format($count);
        $p1 = $this->produce('127.0.0.2', $portA, 'a', $half, 'acked-a');
        $p2 = $this->produce('127.0.0.3', $portB, 'b', $half, 'acked-b', 'multi');
        $this->finishProducer($p1, 120, 'producer through A');
        $this->finishProducer($p2, 120, 'producer through B');
        [$acked, $refused] = $this->submissions('acked-a', 'acked-b');
        $this->assertSame([], $refused, 'no submission was refused');
        $this->assertCount($count, $acked, 'every submission was acknowledged');
        $this->assertCount($count, array_unique($acked), 'queue-wide ids are distinct across the two servers');
        $this->assertGreaterThan(0, min($acked), 'ids are positive');

        $this->poll(fn () => count($this->runs()) >= $count, 120, "$n runs (" . count($this->runs()) . ' so far)', 0.5);
        $this->waitQueueDrained($redis, 30);
        $by = $this->runsByPayload();
        $twice = array_filter($by, fn ($c) => count($c) > 1);
        $this->assertSame([], array_slice($twice, 0, 10, true), count($twice) . ' tasks ran more than once');
        $this->assertEqualsCanonicalizing(array_keys($acked), array_keys($by), 'exactly the acknowledged tasks ran');
        $perServer = array_count_values(array_merge(...array_values($by)));
        $this->assertGreaterThan(0, $perServer['srv-a'] ?? 0, 'server A ran some: ' . json_encode($perServer));
        $this->assertGreaterThan(0, $perServer['srv-b'] ?? 0, 'server B ran some: ' . json_encode($perServer));
    }

    public function testTwoServersShare20000AcknowledgedTasksEachRunsExactlyOnce(): void
    {
        $redis = $this->startRedis();
        $a = $this->taskServer('srv-a', '127.0.0.2', $redis->dsn(), ['task_worker_num' => 3]);
        $portA = $this->port;
        $b = $this->taskServer('srv-b', '127.0.0.3', $redis->dsn(), ['task_worker_num' => 3]);
        $portB = $this->port;

        $this->shareBetweenAAndB($redis, $portA, $portB, 20000);
        $this->assertNotSame([], $a->tree(), 'server A still runs');
        $this->assertNotSame([], $b->tree(), 'server B still runs');
    }

    /**
     * The backend on a real Redis Cluster (three masters). The DSN names
     * only the two nodes that do not serve the queue's slot, so the client
     * must learn the slot map and route every script and MULTI to the third.
     * Two TaskServers share 3,000 acknowledged tasks (task() through A,
     * taskMulti() through B): each runs exactly once and both run some.
     * Then each server, and a third one without task workers (so its tasks
     * surely run on A or B), dispatches tasks from its worker, and every
     * onFinish runs once, on the server that dispatched, with the runner's
     * result.
     */
    public function testTwoServersShareAQueueOnARealRedisClusterEachTaskOnceAndOnFinishReachesTheDispatcher(): void
    {
        $nodes = $this->startRedisCluster();
        $home = $this->clusterNodeOf($nodes, 'taskq:{' . self::QUEUE . '}:ids');
        $seeds = array_map(fn ($n) => "127.0.0.1:$n->port", array_values(array_filter($nodes, fn ($n) => $n !== $home)));
        $this->assertCount(2, $seeds);
        $dsn = 'redis+cluster://' . implode(',', $seeds);
        $this->taskServer('srv-a', '127.0.0.2', $dsn, ['task_worker_num' => 2]);
        $portA = $this->port;
        $this->taskServer('srv-b', '127.0.0.3', $dsn, ['task_worker_num' => 2]);
        $portB = $this->port;

        $this->shareBetweenAAndB($home, $portA, $portB, 3000);

        $this->taskServer('srv-c', '127.0.0.4', $dsn, ['task_worker_num' => 0]);
        $portC = $this->port;
        $dispatched = [];
        foreach ([['srv-a', '127.0.0.2', $portA], ['srv-b', '127.0.0.3', $portB], ['srv-c', '127.0.0.4', $portC]] as [$name, $host, $port]) {
            for ($i = 0; $i < 20; $i++) {
                $dispatched["$name-f$i"] = [$name, $this->order($host, $port, "dispatch:$name-f$i")['id']];
            }
        }
        $finishes = $this->waitEvents('finish', 60, 30);
        $runners = [];
        foreach ($finishes as $f) {
            $this->assertMatchesRegularExpression('/^result:(srv-[abc]-f\d+):(srv-[ab])$/', (string) $f['data']);
            [, $label, $runner] = explode(':', $f['data']);
            $this->assertSame($dispatched[$label], [$f['server'], $f['task_id']], "onFinish of $label ran on the server that dispatched it, with the id task() returned");
            $runners[$label] = $runner;
        }
        $this->assertCount(60, $runners, 'one onFinish per dispatched task');
        foreach (array_keys($dispatched) as $label) {
            $this->assertCount(1, $this->labelled('run', $label), "$label ran once");
        }
        usleep(300000);
        $this->assertCount(60, $this->events('finish'), 'no onFinish twice');

        // Everything lived on the node serving the queue's slot, none on the seeds.
        $this->assertNotSame([], $home->lines('KEYS', 'taskq:{' . self::QUEUE . '}:*'));
        foreach ($nodes as $node) {
            if ($node !== $home) {
                $this->assertSame([], $node->lines('KEYS', 'taskq:*'), "no queue key on seed node $node->port");
            }
        }
    }

    /**
     * The asserted bound: a task can run twice only if the dead server ran
     * it and its acknowledgement never reached Redis, i.e. it was still in
     * that server's pending entries list when it died. So duplicates ≤ the
     * dead consumer's pending entries read from Redis right after the
     * SIGKILL (before the 1.5 s claim idle time lets anyone reclaim them),
     * each duplicate ran once on each server, and the survivor ran nothing
     * twice itself.
     */
    public function testSigkillOfOneServerTheOtherFinishesItsTasksDuplicatesBoundedByItsInFlight(): void
    {
        $redis = $this->startRedis();
        $env = ['TASKQ_TASK_US' => '4000'];
        $a = $this->taskServer('srv-a', '127.0.0.2', $redis->dsn(), ['task_worker_num' => 2], $env);
        $portA = $this->port;
        $b = $this->taskServer('srv-b', '127.0.0.3', $redis->dsn(), ['task_worker_num' => 2], $env);

        $p = $this->produce('127.0.0.2', $portA, 'k', 3000, 'acked', 'multi');
        $this->finishProducer($p, 60, 'producer');
        [$acked] = $this->submissions('acked');
        $this->assertCount(3000, $acked);

        $this->poll(function () {
            $per = array_count_values(array_column($this->runs(), 0));
            return ($per['srv-b'] ?? 0) >= 100 && ($per['srv-a'] ?? 0) >= 100;
        }, 60, 'both servers running tasks', 0.05);
        $pids = $b->tree();
        $this->assertSame([], ProcessTree::killAll($b->tag), 'every process of server B died');
        $killedAt = count($this->runs());
        $inFlight = $this->pendingByConsumer($redis)['srv-b'] ?? 0;
        $ranByB = count(array_filter($this->runs(), fn ($r) => $r[0] === 'srv-b'));
        $this->assertLessThan(3000, $killedAt, 'the kill came while tasks were left');

        $this->waitEveryAckedRan($redis, $acked, 90, 30);
        $by = $this->runsByPayload();
        $this->assertSame([], array_keys(array_diff_key($acked, $by)), 'no acknowledged task is lost');
        $dups = array_filter($by, fn ($c) => count($c) > 1);
        foreach ($dups as $payload => $consumers) {
            sort($consumers);
            $this->assertSame(['srv-a', 'srv-b'], $consumers, "$payload ran once on B before the kill and once on A");
        }
        $this->assertSame($ranByB, count(array_filter($this->runs(), fn ($r) => $r[0] === 'srv-b')), 'B ran nothing after its SIGKILL');
        $this->assertLessThanOrEqual($inFlight, count($dups), sprintf(
            '%d duplicates, but B held only %d unacknowledged entries at the kill (%d processes killed, %d runs by then)',
            count($dups), $inFlight, count($pids), $killedAt,
        ));
        $this->assertNotSame([], $a->tree(), 'server A still runs');
    }

    /**
     * A server SIGKILLed and started again under its consumer name takes
     * back the entries it held (it reads its own pending entries from 0
     * before new ones). The claim idle time is 60 s, longer than this test
     * waits, so the other server cannot be the one that finishes them.
     */
    public function testServerRestartedUnderItsNameTakesBackItsOwnPendingEntries(): void
    {
        $redis = $this->startRedis();
        $settings = ['task_worker_num' => 2, 'task_claim_idle' => 60];
        $env = ['TASKQ_TASK_US' => '4000'];
        $this->taskServer('srv-a', '127.0.0.2', $redis->dsn(), $settings, $env);
        $portA = $this->port;
        $b = $this->taskServer('srv-b', '127.0.0.3', $redis->dsn(), $settings, $env);
        $portB = $this->port;
        $p = $this->produce('127.0.0.2', $portA, 'r', 3000, 'acked', 'multi');
        $this->finishProducer($p, 60, 'producer');
        [$acked] = $this->submissions('acked');
        $this->assertCount(3000, $acked);

        $this->poll(fn () => count(array_filter($this->runs(), fn ($r) => $r[0] === 'srv-b')) >= 100, 60, 'server B running tasks', 0.05);
        $this->assertSame([], ProcessTree::killAll($b->tag), 'every process of server B died');
        $held = $this->pendingByConsumer($redis)['srv-b'] ?? 0;
        $this->assertGreaterThan(0, $held, 'B held unacknowledged entries when it died');
        $runsBefore = count($this->runs());
        $this->taskServer('srv-b', '127.0.0.3', $redis->dsn(), $settings, $env, [], $portB);

        $this->poll(fn () => count(array_diff_key($acked, $this->runsByPayload())) === 0, 40, 'every acknowledged task to run (well before the 60 s claim idle time)', 0.5);
        $this->waitQueueDrained($redis, 20);
        $by = $this->runsByPayload();
        $dups = array_filter($by, fn ($c) => count($c) > 1);
        foreach ($dups as $payload => $consumers) {
            $this->assertSame(['srv-b', 'srv-b'], $consumers, "$payload ran twice only because B died after running it");
        }
        $this->assertLessThanOrEqual($held, count($dups), sprintf('%d duplicates, B held %d entries at the kill (%d runs by then)', count($dups), $held, $runsBefore));
    }

    public static function masterStopSignals(): array
    {
        return ['SIGTERM' => [SIGTERM, 'SIGTERM'], 'SIGINT' => [SIGINT, 'SIGINT'], 'SIGQUIT' => [SIGQUIT, 'SIGQUIT']];
    }

    /**
     * SIGTERM, SIGINT or SIGQUIT to the master of a server draining a
     * backlog: it stops within a bound, and its stop flush acknowledged
     * every task it finished, so what it still holds in Redis under its
     * consumer name is only tasks that never ran. Started again under that
     * name it finishes the rest, and no task runs twice (a stop lets
     * workers finish what they hold: nothing is cut off mid-run).
     *
     * @dataProvider masterStopSignals
     */
    public function testStopSignalToTheMasterStopsTheServerAndLeavesNoFinishedTaskPending(int $signal, string $name): void
    {
        $redis = $this->startRedis();
        $settings = ['task_worker_num' => 2, 'task_claim_idle' => 60];
        $env = ['TASKQ_TASK_US' => '3000'];
        $a = $this->taskServer('srv-a', '127.0.0.2', $redis->dsn(), $settings, $env);
        $portA = $this->port;
        $p = $this->produce('127.0.0.2', $portA, 's', 2000, 'acked', 'multi');
        $this->finishProducer($p, 60, 'producer');
        [$acked] = $this->submissions('acked');
        $this->assertCount(2000, $acked);

        $this->poll(fn () => count($this->runs()) >= 300, 60, 'server A running tasks', 0.05);
        posix_kill($a->pid(), $signal);
        $this->assertSame(0, $a->wait(10), "server A exited cleanly within 10 s of $name\nlog:\n" . $this->log('taskq-srv-a.log'));
        $this->poll(fn () => $a->tree() === [], 5, 'every process of server A to exit');
        $this->assertStringContainsString("$name received; stopping", $this->log('taskq-srv-a.log'), 'the signal sent was the one that stopped it');

        $ranBefore = $this->runsByPayload();
        $this->assertLessThan(2000, count($ranBefore), 'the stop came before the backlog was drained');
        $stillHeld = $this->pendingPayloads($redis, 'srv-a');
        $this->assertSame([], array_diff($stillHeld, array_keys($acked)), 'every entry A still holds is one of the acknowledged tasks');
        $this->assertSame([], array_values(array_intersect($stillHeld, array_keys($ranBefore))), 'no task that ran is still pending under srv-a');
        $counts = $this->queueCounts($redis);
        $this->assertSame(2000 - count($ranBefore), $counts['entries'], 'Redis still holds exactly the tasks that did not run: ' . json_encode($counts));

        $this->taskServer('srv-a', '127.0.0.2', $redis->dsn(), $settings, $env, [], $portA);
        $this->poll(fn () => count(array_diff_key($acked, $this->runsByPayload())) === 0, 60, 'every acknowledged task to run after the restart', 0.5);
        $this->waitQueueDrained($redis, 20);
        $twice = array_filter($this->runsByPayload(), fn ($c) => count($c) > 1);
        $this->assertSame([], $twice, 'no task ran twice across the stop');
    }

    /**
     * SIGUSR1 to the master mid-drain replaces every worker while the
     * backlog sits in Redis; every acknowledged task still runs exactly once.
     */
    public function testSigusr1ReloadDuringARedisBacklogLosesAndDuplicatesNothing(): void
    {
        $redis = $this->startRedis();
        $settings = ['task_worker_num' => 2, 'task_claim_idle' => 60];
        $a = $this->taskServer('srv-a', '127.0.0.2', $redis->dsn(), $settings, ['TASKQ_TASK_US' => '3000']);
        $p = $this->produce('127.0.0.2', $this->port, 'u', 2000, 'acked', 'multi');
        $this->finishProducer($p, 60, 'producer');
        [$acked] = $this->submissions('acked');
        $this->assertCount(2000, $acked);

        $this->poll(fn () => count($this->runs()) >= 300, 60, 'server A running tasks', 0.05);
        $starts = count($this->workerStarts('srv-a'));
        posix_kill($a->pid(), SIGUSR1);
        $this->poll(fn () => count($this->workerStarts('srv-a')) >= $starts + 3, 30, 'every worker of A to be replaced by the reload');
        $this->assertLessThan(2000, count($this->runsByPayload()), 'the reload came before the backlog was drained');

        $this->waitEveryAckedRan($redis, $acked, 60, 20);
        $this->assertTrue($a->running(), 'the reload did not stop the server');
        $twice = array_filter($this->runsByPayload(), fn ($c) => count($c) > 1);
        $this->assertSame([], $twice, 'no task ran twice across the reload');
    }

    /**
     * Where task `$id` (its queue-wide id) is in Redis: "pending:<consumer>"
     * or "queued" for a stream entry holding it, "delayed", "failed".
     */
    private function placesOf(RedisServer $redis, int $id): array
    {
        $p = 'taskq:{' . self::QUEUE . '}';
        $find = "local out = {} for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do local f = e[2] "
            . "for i = 1, #f, 2 do if f[i] == 'meta' and string.match(f[i + 1], '^%d+') == ARGV[1] then table.insert(out, e[1]) end end end return out";
        $places = [];
        foreach ($redis->lines('ZRANGE', "$p:priorities", '0', '-1') as $prio) {
            $stream = "$p:stream:$prio";
            $owner = [];
            $pending = $redis->lines('XPENDING', $stream, 'taskq', '-', '+', '100000');
            for ($i = 0; $i + 3 < count($pending); $i += 4) {
                $owner[$pending[$i]] = $pending[$i + 1];
            }
            foreach ($redis->lines('EVAL', $find, '1', $stream, (string) $id) as $entry) {
                $places[] = isset($owner[$entry]) ? "pending:$owner[$entry]" : 'queued';
            }
        }
        foreach (['delayed', 'failed'] as $set) {
            if ($redis->lines('ZSCORE', "$p:$set", (string) $id) !== []) {
                $places[] = $set;
            }
        }
        return $places;
    }

    /**
     * SIGKILL of a task worker while it runs a task: the manager respawns
     * it, the run counts as failed and the task goes back to Redis, and a
     * task worker of the server runs it again (README, *Process model*:
     * a dead task worker's running task is requeued). The backlog the other
     * worker drains meanwhile runs exactly once: only the cut-off run is
     * repeated.
     */
    public function testSigkillOfATaskWorkerMidRunRunsItsTaskAgainAndLosesNothing(): void
    {
        $redis = $this->startRedis();
        $settings = ['task_worker_num' => 2, 'task_claim_idle' => 60];
        $a = $this->taskServer('srv-a', '127.0.0.2', $redis->dsn(), $settings, ['TASKQ_TASK_US' => '3000']);
        $port = $this->port;
        [$id, $code, $msg] = $this->submitOne('127.0.0.2', $port, ['kind' => 'block', 'label' => 'victim']);
        $this->assertIsInt($id, "acknowledged (errCode $code: $msg)");
        $victim = $this->waitEvents('run', 1, 15, $a)[0]['pid'];
        $workerId = array_values(array_filter($this->workerStarts('srv-a'), fn ($e) => $e['pid'] === $victim))[0]['id'];
        $p = $this->produce('127.0.0.2', $port, 'k', 1000, 'acked', 'multi');
        $this->finishProducer($p, 60, 'producer');
        [$acked] = $this->submissions('acked');
        $this->assertCount(1000, $acked);

        $this->poll(fn () => count($this->runs()) >= 200, 60, 'the other task worker draining the backlog', 0.05);
        $this->assertTrue(posix_kill($victim, SIGKILL));
        $this->poll(fn () => !in_array($victim, $a->tree(), true), 5, "task worker $victim to die");
        $this->assertLessThan(1000, count($this->runs()), 'the kill came mid-drain');
        touch("$this->dir/go"); // the second run of "victim" does not block

        $this->poll(fn () => count(array_filter($this->workerStarts('srv-a'), fn ($e) => $e['id'] === $workerId)) >= 2, 10, "task worker $workerId to be respawned");
        $this->poll(fn () => count(array_diff_key($acked, $this->runsByPayload())) === 0 && $this->labelled('done', 'victim') !== [], 60, 'every acknowledged task, "victim" included, to run', 0.2);
        $this->waitQueueDrained($redis, 20);
        $runs = $this->labelled('run', 'victim');
        $this->assertCount(2, $runs, 'the cut-off task ran once more: ' . json_encode($runs));
        $this->assertSame($victim, $runs[0]['pid']);
        $this->assertNotSame($victim, $runs[1]['pid'], 'run again by a live task worker');
        $this->assertCount(1, $this->labelled('done', 'victim'));
        $this->assertSame([], $this->events('failed'), 'nothing was given up');
        $this->assertSame([], array_filter($this->runsByPayload(), fn ($c) => count($c) > 1), 'no task of the backlog ran twice');
        $this->assertContains($a->pid(), $a->tree(), 'the server kept running');
        $this->assertCount(5, $a->tree(), 'master, manager and three workers');
    }

    /**
     * SIGTERM, SIGINT or SIGQUIT sent to the manager alone is ignored
     * (README, *Signals*: the master stops it): mid-drain, no process dies
     * or is replaced, every acknowledged task runs exactly once, the server
     * takes new tasks, and a SIGTERM to the master then stops it cleanly.
     *
     * @dataProvider masterStopSignals
     */
    public function testStopSignalToTheManagerAloneIsIgnoredAndTheBacklogRunsExactlyOnce(int $signal, string $name): void
    {
        $redis = $this->startRedis();
        $settings = ['task_worker_num' => 2, 'task_claim_idle' => 60];
        $a = $this->taskServer('srv-a', '127.0.0.2', $redis->dsn(), $settings, ['TASKQ_TASK_US' => '3000']);
        $port = $this->port;
        $managers = array_unique(array_column($this->workerStarts('srv-a'), 'manager'));
        $this->assertCount(1, $managers);
        $manager = reset($managers);
        $before = $a->tree();
        $this->assertContains($manager, $before);
        $p = $this->produce('127.0.0.2', $port, 'm', 1500, 'acked', 'multi');
        $this->finishProducer($p, 60, 'producer');
        [$acked] = $this->submissions('acked');
        $this->assertCount(1500, $acked);

        $this->poll(fn () => count($this->runs()) >= 300, 60, 'server A running tasks', 0.05);
        $this->assertTrue(posix_kill($manager, $signal));
        $this->assertLessThan(1500, count($this->runs()), "the $name came mid-drain");
        $this->waitEveryAckedRan($redis, $acked, 60, 20);
        $this->assertRanOnceAndNothingReplaced($a, $before, "after the manager's $name");
        $this->assertStringNotContainsString('stopping', $this->log('taskq-srv-a.log'), 'no stop began');

        $this->assertIsInt($this->submitOne('127.0.0.2', $port, 'after')[0], 'still acknowledging tasks');
        $this->poll(fn () => isset($this->runsByPayload()['after']), 10, 'the task submitted after the signal to run');
        posix_kill($a->pid(), SIGTERM);
        $this->assertSame(0, $a->wait(10), "server A exited cleanly after a SIGTERM to its master\nlog:\n" . $this->log('taskq-srv-a.log'));
        $this->poll(fn () => $a->tree() === [], 5, 'every process of server A to exit');
        $this->assertSame(['entries' => 0, 'pending' => 0, 'delayed' => 0], $this->queueCounts($redis), 'nothing left in Redis');
    }

    /**
     * SIGHUP to the master mid-drain reopens the log file in every process
     * (taskq's choice; Swoole's master ignores SIGHUP, and neither stops on
     * it): after `mv` of the log a new one appears and takes the server's
     * later lines, no process dies or is replaced, and every acknowledged
     * task runs exactly once.
     */
    public function testSighupToTheMasterMidDrainReopensTheLogAndLosesAndDuplicatesNothing(): void
    {
        $redis = $this->startRedis();
        $settings = ['task_worker_num' => 2, 'task_claim_idle' => 60];
        $a = $this->taskServer('srv-a', '127.0.0.2', $redis->dsn(), $settings, ['TASKQ_TASK_US' => '3000']);
        $log = "$this->dir/taskq-srv-a.log";
        $before = $a->tree();
        $p = $this->produce('127.0.0.2', $this->port, 'h', 2000, 'acked', 'multi');
        $this->finishProducer($p, 60, 'producer');
        [$acked] = $this->submissions('acked');
        $this->assertCount(2000, $acked);

        $this->poll(fn () => count($this->runs()) >= 300, 60, 'server A running tasks', 0.05);
        $this->assertTrue(rename($log, "$log.1"));
        $this->assertTrue(posix_kill($a->pid(), SIGHUP));
        $this->poll(fn () => is_file($log), 5, 'the master to open a new log file');
        $this->assertLessThan(2000, count($this->runs()), 'the SIGHUP came mid-drain');

        $this->waitEveryAckedRan($redis, $acked, 60, 20);
        $this->assertRanOnceAndNothingReplaced($a, $before, 'after the SIGHUP');

        posix_kill($a->pid(), SIGTERM);
        $this->assertSame(0, $a->wait(10), "server A exited cleanly\nlog:\n" . $this->log('taskq-srv-a.log'));
        $this->assertStringContainsString('SIGTERM received; stopping', $this->log('taskq-srv-a.log'), 'the master writes to the new file');
        $this->assertStringNotContainsString('SIGTERM received', $this->log('taskq-srv-a.log.1'));
    }

    /**
     * SIGTERM while a task runs longer than `max_wait_time` (1 s): the
     * straggler is SIGKILLed, the server exits well before the task would
     * have ended, the tasks it finished are acknowledged, and the cut-off
     * task is still in Redis, so the server started again under its name
     * runs it again: at least once for that task (its first run was cut
     * off, possibly after side effects). The rest runs exactly once.
     */
    public function testSigtermWithATaskOutlastingMaxWaitTimeKillsItAndARestartRunsItAgain(): void
    {
        $redis = $this->startRedis();
        $settings = ['task_worker_num' => 2, 'task_claim_idle' => 60, 'max_wait_time' => 1];
        $env = ['TASKQ_TASK_US' => '3000'];
        $a = $this->taskServer('srv-a', '127.0.0.2', $redis->dsn(), $settings, $env);
        $portA = $this->port;
        [$id, $code, $msg] = $this->submitOne('127.0.0.2', $portA, ['kind' => 'block', 'label' => 'straggler']);
        $this->assertIsInt($id, "acknowledged (errCode $code: $msg)");
        $this->waitEvents('run', 1, 15, $a);
        $p = $this->produce('127.0.0.2', $portA, 'w', 1000, 'acked', 'multi');
        $this->finishProducer($p, 60, 'producer');
        [$acked] = $this->submissions('acked');
        $this->assertCount(1000, $acked);

        $this->poll(fn () => count($this->runs()) >= 200, 60, 'the other task worker draining the backlog', 0.05);
        posix_kill($a->pid(), SIGTERM);
        // "straggler" blocks for 20 s unless the file "go" exists: only the kill ends it sooner
        $this->assertSame(0, $a->wait(10), "server A exited cleanly within 10 s of SIGTERM\nlog:\n" . $this->log('taskq-srv-a.log'));
        $this->poll(fn () => $a->tree() === [], 5, 'every process of server A to exit');
        $this->assertStringContainsString('forced termination', $this->log('taskq-srv-a.log'), 'the straggler was killed');
        $this->assertSame([[], 1], [$this->labelled('done', 'straggler'), count($this->labelled('run', 'straggler'))], 'cut off mid-run');

        $ranBefore = $this->runsByPayload();
        $this->assertLessThan(1000, count($ranBefore), 'the stop came before the backlog was drained');
        // the kill ended a run: a failed attempt, settled like any failed run (a retry through the delayed set, due at once)
        $this->assertSame(['delayed'], $this->placesOf($redis, $id), 'the cut-off task is back in Redis once, as a retry');
        $this->assertSame(['1'], $redis->lines('HGET', 'taskq:{' . self::QUEUE . "}:delayed:$id", 'tries'), 'its cut-off run counted as one attempt');
        $stillHeld = $this->pendingPayloads($redis, 'srv-a', 0, [$id]);
        $this->assertSame([], array_diff($stillHeld, array_keys($acked)), 'every other entry srv-a still holds is one of the acknowledged tasks');
        $this->assertSame([], array_values(array_intersect($stillHeld, array_keys($ranBefore))), 'no task that ran is still pending under srv-a');
        $counts = $this->queueCounts($redis);
        $this->assertSame(1000 - count($ranBefore), $counts['entries'] + $counts['delayed'] - 1, 'Redis holds the cut-off task and exactly the others that did not run: ' . json_encode($counts));

        touch("$this->dir/go");
        $this->taskServer('srv-a', '127.0.0.2', $redis->dsn(), $settings, $env, [], $portA);
        $this->poll(fn () => count(array_diff_key($acked, $this->runsByPayload())) === 0 && $this->labelled('done', 'straggler') !== [], 60, 'every acknowledged task, the cut-off one included, to run after the restart', 0.5);
        $this->waitQueueDrained($redis, 20);
        $this->assertCount(2, $this->labelled('run', 'straggler'), 'the cut-off task ran again, once');
        $this->assertSame([], array_filter($this->runsByPayload(), fn ($c) => count($c) > 1), 'no task of the backlog ran twice');
        $this->assertSame([], $this->events('failed'), 'nothing was given up');
    }

    /**
     * Two live servers under one consumer name would share one pending list;
     * the second is told who holds the name, takes nothing and refuses
     * submissions until the first stops and frees it.
     */
    public function testSecondLiveServerUnderTheSameConsumerNameWaitsAndSaysWhoHoldsIt(): void
    {
        $redis = $this->startRedis();
        $a = $this->taskServer('dup', '127.0.0.2', $redis->dsn(), ['task_worker_num' => 1]);
        $this->taskServer('dup', '127.0.0.3', $redis->dsn(), ['task_worker_num' => 1, 'log_file' => "$this->dir/taskq-dup-b.log"]);
        $portB = $this->port;
        $this->poll(fn () => str_contains($this->log('taskq-dup-b.log'), 'consumer name "dup" is held by'), 10, "B's log naming the holder\n" . $this->log('taskq-dup-b.log'));
        $this->assertMatchesRegularExpression('/held by \S+ pid ' . $a->pid() . ' start \d+, another live server/', $this->log('taskq-dup-b.log'));
        [$id, $code, $msg] = $this->submitOne('127.0.0.3', $portB, 'refused');
        $this->assertSame([false, self::BACKEND], [$id, $code], "B refuses while A holds the name: $msg");
        $this->assertStringContainsString('give each server its own task_consumer', $msg);

        posix_kill($a->pid(), SIGTERM);
        $this->assertNotNull($a->wait(15), 'A stopped');
        $this->assertStringContainsString('consumer name "dup"', $this->log('taskq-dup-b.log'));
        $got = null;
        $this->poll(function () use ($portB, &$got) {
            $got = $this->submitOne('127.0.0.3', $portB, 'accepted');
            return is_int($got[0]);
        }, 15, 'B accepting tasks once A freed the name at its stop');
        $this->poll(fn () => in_array(['dup', 'accepted'], $this->runs(), true), 10, 'B running it');
        $this->assertNotContains(['dup', 'refused'], $this->runs(), 'the refused task was never queued');
    }

    public function testRedisRestartedMidSubmissionLosesNoAcknowledgedTaskAndRefusesMeanwhileWith9010(): void
    {
        $redis = $this->startRedis(durable: true);
        $timeout = 1.0;
        $bound = 3 * $timeout + 2;
        $a = $this->taskServer('srv-a', '127.0.0.2', $redis->dsn(), ['task_worker_num' => 2, 'task_backend_timeout' => $timeout]);
        $portA = $this->port;
        $master = $a->pid();
        $b = $this->taskServer('srv-b', '127.0.0.3', $redis->dsn(), ['task_worker_num' => 2, 'task_backend_timeout' => $timeout]);
        $portB = $this->port;

        $p1 = $this->produce('127.0.0.2', $portA, 'a', 0, 'acked-a', 'one', [], 2000);
        $p2 = $this->produce('127.0.0.3', $portB, 'b', 0, 'acked-b', 'one', [], 2000);
        $this->poll(fn () => count($this->submissions('acked-a', 'acked-b')[0]) >= 400, 30, '400 acknowledged tasks before the restart', 0.05);
        $redis->kill();
        $ackedBefore = count($this->submissions('acked-a', 'acked-b')[0]);
        $this->poll(fn () => count($this->submissions('acked-a')[1]) >= 2 && count($this->submissions('acked-b')[1]) >= 2, 30, 'refusals through both servers while Redis is down', 0.1);
        $redis->start();
        $this->poll(fn () => count($this->submissions('acked-a', 'acked-b')[0]) >= $ackedBefore + 400, 60, '400 more acknowledged tasks after Redis came back', 0.1);
        touch("$this->dir/acked-a.stop");
        touch("$this->dir/acked-b.stop");
        $this->finishProducer($p1, 20, 'producer through A');
        $this->finishProducer($p2, 20, 'producer through B');

        [$acked, $refused] = $this->submissions('acked-a', 'acked-b');
        $this->assertNotEmpty($refused);
        foreach ($refused as [$code, $seconds, $payload, $msg]) {
            $this->assertSame(self::BACKEND, (int) $code, "$payload refused with errCode $code: $msg");
            $this->assertNotSame('', trim($msg), "$payload: errMsg says why");
            $this->assertLessThan($bound, (float) $seconds, "$payload was refused only after {$seconds}s");
        }
        $this->poll(fn () => count(array_diff_key($acked, $this->runsByPayload())) === 0, 90, 'every acknowledged task to run: missing ' . json_encode(array_slice(array_keys(array_diff_key($acked, $this->runsByPayload())), 0, 20)), 0.5);
        $this->waitQueueDrained($redis, 30);
        $this->assertContains($master, $a->tree(), 'server A was not restarted: it reconnected on its own');
        $this->assertSame(2, $redis->starts());
    }

    public function testTaskRunningLongerThanTheClaimIdleTimeOnALiveServerIsNotRunTwice(): void
    {
        $redis = $this->startRedis();
        $this->taskServer('srv-a', '127.0.0.2', $redis->dsn());
        $portA = $this->port;
        $this->taskServer('srv-b', '127.0.0.3', $redis->dsn());
        foreach (['long-1', 'long-2', 'long-3'] as $label) {
            [$id, $code, $msg] = $this->submitOne('127.0.0.2', $portA, ['kind' => 'sleep', 'label' => $label, 'ms' => 4500]);
            $this->assertIsInt($id, "$label acknowledged (errCode $code: $msg)");
        }
        $this->waitUntil(fn () => count($this->events('done')) >= 3, 30, 'the three 4.5 s tasks (3x the 1.5 s claim idle time) to finish');
        // a stolen copy would have started 1.5 s into the run; give it one more claim period anyway
        usleep(2000000);
        foreach (['long-1', 'long-2', 'long-3'] as $label) {
            $this->assertCount(1, $this->labelled('run', $label), "$label ran once: " . json_encode($this->labelled('run', $label)));
        }
        $this->waitQueueDrained($redis, 10);
    }

    // ---------------------------------------------------------------- delay, priority, results

    public function testDelayedTasksAcrossTwoServersRunOnceAndNotEarly(): void
    {
        $redis = $this->startRedis();
        $this->taskServer('srv-a', '127.0.0.2', $redis->dsn());
        $portA = $this->port;
        $this->taskServer('srv-b', '127.0.0.3', $redis->dsn());
        $portB = $this->port;
        $submitted = [];
        for ($i = 0; $i < 10; $i++) {
            foreach (['127.0.0.2' => $portA, '127.0.0.3' => $portB] as $host => $port) {
                $label = "d-$host-$i";
                [$id, $code, $msg, , $t0] = $this->submitOne($host, $port, ['kind' => 'sleep', 'label' => $label, 'ms' => 0], ['delay' => 1.0]);
                $this->assertIsInt($id, "$label acknowledged (errCode $code: $msg)");
                $submitted[$label] = $t0;
            }
        }
        $this->waitUntil(fn () => count($this->events('run')) >= 20, 30, 'the 20 delayed tasks to run');
        usleep(500000);
        $servers = [];
        foreach ($submitted as $label => $t0) {
            $runs = $this->labelled('run', $label);
            $this->assertCount(1, $runs, "$label ran once");
            // Redis's clock in ms: allow its rounding, nothing more
            $this->assertGreaterThanOrEqual($t0 + 1.0 - 0.002, $runs[0]['t'], "$label did not run before its delay");
            $servers[$runs[0]['server']] = true;
        }
        $this->assertCount(2, $servers, 'both servers ran delayed tasks');
    }

    public function testHigherPriorityTasksRunFirstAcrossTwoServers(): void
    {
        $redis = $this->startRedis();
        // one task worker each, holding one task at a time: what waits, waits in Redis
        $settings = ['task_worker_num' => 1, 'task_window' => 1];
        $this->taskServer('srv-a', '127.0.0.2', $redis->dsn(), $settings);
        $portA = $this->port;
        $this->taskServer('srv-b', '127.0.0.3', $redis->dsn(), $settings);
        $portB = $this->port;
        // hold the only task worker of each server
        foreach (['block-1', 'block-2'] as $label) {
            $this->assertIsInt($this->submitOne('127.0.0.2', $portA, ['kind' => 'block', 'label' => $label])[0]);
        }
        $this->waitUntil(fn () => count(array_unique(array_column($this->events('run'), 'server'))) === 2, 15, 'a blocking task running on each server (' . json_encode($this->events('run')) . ')');
        foreach (['low' => 0, 'high' => 5] as $kind => $priority) {
            for ($i = 0; $i < 8; $i++) {
                [$host, $port] = $i % 2 ? ['127.0.0.3', $portB] : ['127.0.0.2', $portA];
                $this->assertIsInt($this->submitOne($host, $port, ['kind' => 'sleep', 'label' => "$kind-$i", 'ms' => 100], ['priority' => $priority])[0]);
            }
        }
        touch("$this->dir/go");
        $this->waitUntil(fn () => count($this->events('done')) >= 18, 30, 'the blocking, low and high tasks to finish');
        $order = array_values(array_filter(array_column($this->events('run'), 'label'), fn ($l) => !str_starts_with($l, 'block')));
        $this->assertCount(16, $order, json_encode($order));
        // two workers start tasks side by side: at most one low may slip in as the highs run out
        $lowsAmongFirst8 = count(array_filter(array_slice($order, 0, 8), fn ($l) => str_starts_with($l, 'low')));
        $this->assertLessThanOrEqual(1, $lowsAmongFirst8, 'the high-priority tasks ran first: ' . json_encode($order));
    }

    public function testOnFinishAndTaskwaitReachTheDispatchingServerWhenAnotherRanTheTask(): void
    {
        $redis = $this->startRedis();
        // A only submits: no task workers of its own
        $this->taskServer('srv-a', '127.0.0.2', $redis->dsn(), ['task_worker_num' => 0]);
        $portA = $this->port;
        $this->taskServer('srv-b', '127.0.0.3', $redis->dsn(), ['task_worker_num' => 2]);

        $id = $this->order('127.0.0.2', $portA, 'dispatch:f1')['id'];
        $this->assertIsInt($id, 'task() from A\'s worker returned its id (worker-local, as in Swoole)');
        $finish = $this->waitEvents('finish', 1, 15)[0];
        $this->assertSame(['srv-a', $id, 'result:f1:srv-b', 0], [$finish['server'], $finish['task_id'], $finish['data'], $finish['worker']], 'A\'s onFinish got B\'s result for the id task() returned');

        $cbId = $this->order('127.0.0.2', $portA, 'dispatchcb:f2')['id'];
        $cb = $this->waitEvents('callback', 1, 15)[0];
        $this->assertSame(['srv-a', $cbId, 'result:f2:srv-b'], [$cb['server'], $cb['task_id'], $cb['data']], 'the per-call finish callback ran on A');

        $this->assertSame('result:w1:srv-b', $this->order('127.0.0.2', $portA, 'wait:w1')['r'], 'taskwait() on A returned B\'s result');
        $this->assertSame(
            ['result:m1:srv-b', 'result:m2:srv-b', 'result:m3:srv-b'],
            $this->order('127.0.0.2', $portA, 'waitmulti:m1,m2,m3')['r'],
            'taskWaitMulti() on A returned B\'s results in order',
        );
        foreach ($this->events('run') as $run) {
            $this->assertSame('srv-b', $run['server'], 'only B has task workers');
        }
        $this->assertCount(6, $this->events('run'), 'each task ran once');
        $this->assertCount(1, $this->events('finish'), 'onFinish ran once (the callback task and the waited ones do not reach it)');
    }

    public function testWorkerTaskGivenUpOnAnotherServerReachesOnTaskFailedOnTheDispatchingServerOnce(): void
    {
        $redis = $this->startRedis();
        $this->taskServer('srv-a', '127.0.0.2', $redis->dsn(), ['task_worker_num' => 0]);
        $portA = $this->port;
        $this->taskServer('srv-b', '127.0.0.3', $redis->dsn(), ['task_worker_num' => 2]);

        $id = $this->order('127.0.0.2', $portA, 'dispatchthrow:lost')['id'];
        $this->assertIsInt($id);
        $failed = $this->waitEvents('failed', 1, 15)[0];
        $this->assertSame(['srv-a', $id, 'lost'], [$failed['server'], $failed['task_id'], $failed['label']], 'onTaskFailed ran on A, with the id task() returned there and the task\'s data: ' . json_encode($failed));
        $this->assertStringContainsString('boom lost', $failed['error']);
        usleep(500000);
        $this->assertCount(1, $this->events('failed'), 'once, and not on B, which ran it');
        $this->assertCount(1, $this->labelled('run', 'lost'), 'a worker task runs once by default, as in Swoole');
        $p = 'taskq:{' . self::QUEUE . '}';
        $ids = $redis->lines('ZRANGE', "$p:failed", '0', '-1');
        $this->assertCount(1, $ids, 'the failed list keeps it too');
        $meta = explode(' ', $redis->lines('HGET', "$p:failed:{$ids[0]}", 'meta')[0] ?? '');
        $this->assertSame((string) $id, $meta[3] ?? null, 'its meta (id prio worker ref max at origin) keeps the task() id as ref: ' . implode(' ', $meta));
    }

    public function testStatsShowTheWholeQueueAsRedisCountedItBesideThisServersSide(): void
    {
        $redis = $this->startRedis();
        $this->taskServer('srv-a', '127.0.0.2', $redis->dsn(), ['task_worker_num' => 0]);
        $port = $this->port;
        for ($i = 0; $i < 3; $i++) {
            $this->assertIsInt($this->submitOne('127.0.0.2', $port, "now:$i")[0]);
        }
        $this->assertIsInt($this->submitOne('127.0.0.2', $port, 'later', ['delay' => 60.0])[0]);
        $want = ['backend_queued_num' => 3, 'backend_pending_num' => 0, 'backend_delayed_num' => 1, 'backend_failed_num' => 0];
        $stats = [];
        $this->poll(function () use ($port, $want, &$stats) {
            $stats = $this->order('127.0.0.2', $port, 'stats');
            return array_intersect_key($stats, $want) == $want;
        }, 10, 'stats() with the queue-wide counts ' . json_encode($want));
        $this->assertEqualsWithDelta(microtime(true), $stats['backend_counted_at'], 5.0, 'counted within the last seconds: ' . json_encode($stats));
        $this->assertSame([0, 0], [$stats['task_queue_num'], $stats['tasking_num']], 'this server holds none of them: it has no task workers');
    }

    public function testTaskThatAlwaysThrowsEndsInTheRedisFailedListWithItsErrorAfterTwoRuns(): void
    {
        $redis = $this->startRedis();
        $settings = ['task_retry_delay' => 0.1];
        $this->taskServer('srv-a', '127.0.0.2', $redis->dsn(), $settings);
        $portA = $this->port;
        $this->taskServer('srv-b', '127.0.0.3', $redis->dsn(), $settings);
        [$id, $code, $msg] = $this->submitOne('127.0.0.2', $portA, ['kind' => 'throw', 'label' => 'doomed'], ['max_attempts' => 2]);
        $this->assertIsInt($id, "acknowledged (errCode $code: $msg)");

        $p = 'taskq:{' . self::QUEUE . '}';
        $this->poll(fn () => $redis->lines('ZRANGE', "$p:failed", '0', '-1') !== [], 20, 'the task in the failed list');
        $this->assertSame([(string) $id], $redis->lines('ZRANGE', "$p:failed", '0', '-1'));
        $record = $redis->lines('HGETALL', "$p:failed:$id");
        $fields = [];
        for ($i = 0; $i + 1 < count($record); $i += 2) {
            $fields[$record[$i]] = $record[$i + 1];
        }
        $this->assertStringContainsString('boom doomed', $fields['error'] ?? '', 'the failed record holds the exception: ' . json_encode($fields));
        $this->assertSame('2', $fields['attempts'] ?? null);
        $this->assertSame((string) $id, explode(' ', $fields['meta'] ?? '')[0], 'its meta field starts with the id: ' . json_encode($fields));
        usleep(1500000);
        $this->assertCount(2, $this->labelled('run', 'doomed'), 'ran exactly twice: ' . json_encode($this->labelled('run', 'doomed')));
        $failed = $this->waitEvents('failed', 1, 5);
        $this->assertCount(1, $failed, 'onTaskFailed ran once, on one server');
        $this->assertStringContainsString('boom doomed', $failed[0]['error']);
        $this->assertSame(['entries' => 0, 'pending' => 0, 'delayed' => 0], $this->queueCounts($redis), 'nothing of it is left in the queue');
    }

    /**
     * Whoever can write to Redis must not choose the objects a task worker
     * builds: serialized objects written straight into the queue are moved
     * to the failed list unrun, stray entries are dropped, and the tasks
     * around them run.
     */
    public function testObjectsAndJunkWrittenIntoRedisByOthersNeverBecomePhpObjects(): void
    {
        $redis = $this->startRedis();
        $this->taskServer('srv-a', '127.0.0.2', $redis->dsn(), ['task_worker_num' => 1]);
        $port = $this->port;
        $this->assertIsInt($this->submitOne('127.0.0.2', $port, 'first')[0]);
        $this->poll(fn () => in_array(['srv-a', 'first'], $this->runs(), true), 10, 'the first task to run');
        $p = 'taskq:{' . self::QUEUE . '}';
        $path = "$this->dir/pwned";
        $gadget = sprintf('O:6:"Gadget":1:{s:4:"path";s:%d:"%s";}', strlen($path), $path);
        foreach ([1 => 9001, 2 => 9002] as $encoding => $id) {
            $redis->cli('XADD', "$p:stream:0", '*', 'meta', "$id 0 -1 0 1 0 intruder", 'payload', chr($encoding) . $gadget);
        }
        $redis->cli('XADD', "$p:stream:0", '*', 'hello', 'world');
        $this->assertIsInt($this->submitOne('127.0.0.2', $port, 'last')[0]);

        $this->poll(fn () => in_array(['srv-a', 'last'], $this->runs(), true), 10, 'the task behind them to run');
        $this->poll(fn () => $redis->lines('ZRANGE', "$p:failed", '0', '-1') === ['9001', '9002'], 10, 'both injected tasks in the failed list');
        foreach (['9001', '9002'] as $id) {
            $this->assertStringContainsString('payload refused', $redis->lines('HGET', "$p:failed:$id", 'error')[0] ?? '', "task $id");
        }
        usleep(300000);
        $this->assertFileDoesNotExist("$path.wakeup", '__wakeup never ran');
        $this->assertFileDoesNotExist("$path.destruct", '__destruct never ran');
        $this->assertCount(2, $this->runs(), 'only the two real tasks ran: ' . json_encode($this->runs()));
        $this->assertStringContainsString('not written by taskq, acknowledged and deleted', $this->log('taskq-srv-a.log'));
        $this->assertSame(['entries' => 0, 'pending' => 0, 'delayed' => 0], $this->queueCounts($redis));
    }

    // ---------------------------------------------------------------- error paths

    /**
     * Runs set($settings) and start() on a server in a fresh process and
     * returns the TaskQ\Exception's message (from whichever refused);
     * fails when the server started instead (it shuts itself down then).
     */
    private function refusal(array $settings): string
    {
        $code = "<?php\n\$s = new TaskServer('127.0.0.1', " . self::freePort() . ");\n"
            . "\$s->on('Receive', function () {});\n\$s->on('Task', function () {});\n"
            . "\$s->on('WorkerStart', function (\$s) { \$s->shutdown(); });\n"
            . "try {\n    \$s->set(" . var_export($settings, true) . ");\n    \$s->start();\n    echo 'STARTED';\n"
            . "} catch (TaskQ\\Exception \$e) {\n    echo 'REFUSED ' . \$e->getMessage();\n}\n";
        [$exit, $out, $err] = $this->runPhp($code, 10);
        $this->assertStringStartsWith('REFUSED ', $out, 'settings ' . json_encode($settings) . " were not refused (exit $exit)\nstderr: $err");
        return substr($out, 8);
    }

    public function testInvalidBackendDsnIsRefusedNamingTheOptionWithoutThePassword(): void
    {
        $cases = [
            'http://127.0.0.1:6379' => 'scheme',
            'redis://127.0.0.1:0' => 'port',
            'redis://127.0.0.1:6379/first' => 'database',
            'unix://host/tmp/redis.sock' => 'host',
            'redis://:s3cret@127.0.0.1:6379/x' => 'database',
            'redis+cluster://:s3cret@127.0.0.1:7000,127.0.0.1:7001/1' => 'database',
            'redis+cluster://:s3cret@127.0.0.1:7000,,127.0.0.1:7001' => 'host',
            'rediss+cluster://:s3cret@127.0.0.1:7000,127.0.0.1:x' => 'port',
            '' => '',
        ];
        foreach ($cases as $dsn => $part) {
            $msg = $this->refusal(['task_worker_num' => 1, 'task_backend' => $dsn]);
            $this->assertStringContainsString('task_backend', $msg, "DSN '$dsn'");
            $this->assertStringContainsString($part, $msg, "DSN '$dsn' names the wrong part");
            $this->assertStringNotContainsString('s3cret', $msg, 'the password is not shown');
        }
    }

    public function testTaskBackendTogetherWithTaskStoreIsRefused(): void
    {
        $msg = $this->refusal(['task_worker_num' => 1, 'task_backend' => 'redis://127.0.0.1:6379', 'task_store' => "$this->dir/store"]);
        $this->assertStringContainsString('task_backend', $msg);
        $this->assertStringContainsString('task_store', $msg);
    }

    public function testServerStartsWhileRedisIsDownRefusesWith9010AndWorksOnceRedisIsUpWithoutRestart(): void
    {
        $redis = $this->startRedis(start: false);
        $timeout = 1.0;
        $server = $this->taskServer('srv-a', '127.0.0.2', $redis->dsn(), ['task_worker_num' => 1, 'task_backend_timeout' => $timeout]);
        $master = $server->pid();
        [$r, $code, $msg, $seconds] = $this->submitOne('127.0.0.2', $this->port, 'while-down');
        $this->assertFalse($r, 'not acknowledged while Redis is down');
        $this->assertSame(self::BACKEND, $code, "errCode (errMsg: $msg)");
        $this->assertNotSame('', $msg, 'errMsg says why');
        $this->assertLessThan(3 * $timeout + 2, $seconds, 'refused within the backend timeout');

        $redis->start();
        $code = "<?php\n\$c = new TaskClient(TASKQ_SOCK_TCP);\n"
            . "if (!\$c->connect('127.0.0.2', {$this->port}, 5)) { exit(3); }\n"
            . "\$until = microtime(true) + 20;\n"
            . "do { \$id = @\$c->task('after-up'); if (\$id !== false) break; usleep(200000); } while (microtime(true) < \$until);\n"
            . "echo json_encode([\$id, \$c->errCode, \$c->errMsg]);\n";
        [$exit, $out, $err] = $this->runPhp($code, 30);
        $this->assertSame([0, ''], [$exit, $err], $out);
        [$id, $code, $msg] = json_decode($out, true);
        $this->assertIsInt($id, "acknowledged once Redis is up (last errCode $code: $msg)");
        $this->poll(fn () => isset($this->runsByPayload()['after-up']), 15, 'the task to run');
        $this->assertSame(['srv-a'], $this->runsByPayload()['after-up']);
        $this->assertArrayNotHasKey('while-down', $this->runsByPayload(), 'the refused task was not queued');
        $this->assertContains($master, $server->tree(), 'the same server, not restarted');
    }

    // ---------------------------------------------------------------- many hosts

    /** Runs a command; returns [exit code, output]. */
    private static function sh(string ...$cmd): array
    {
        exec(implode(' ', array_map('escapeshellarg', $cmd)) . ' 2>&1', $out, $code);
        return [$code, implode("\n", $out)];
    }

    /**
     * Three "hosts" as network namespaces on one bridge: Redis on
     * 10.231.x.1, TaskServers on .2 and .3, all on the same port as on
     * real hosts, each submitting to the *other* host over the veth link.
     */
    public function testMultiHostRunInNetworkNamespaces(): void
    {
        if (posix_geteuid() !== 0) {
            $this->markTestSkipped('network namespaces need root (ip netns add)');
        }
        $probe = 'tqprobe' . bin2hex(random_bytes(3));
        [$code, $out] = self::sh('ip', 'netns', 'add', $probe);
        if ($code !== 0) {
            $this->markTestSkipped("this machine does not allow network namespaces: ip netns add: $out");
        }
        self::sh('ip', 'netns', 'del', $probe);
        $id = bin2hex(random_bytes(3));
        [$nsR, $nsA, $nsB] = ["tq$id-r", "tq$id-a", "tq$id-b"];
        $net = '10.231.' . random_int(1, 250);
        foreach ([$nsR, $nsA, $nsB] as $ns) {
            $this->assertSame(0, self::sh('ip', 'netns', 'add', $ns)[0]);
            $this->netns[] = $ns;
            self::sh('ip', '-n', $ns, 'link', 'set', 'lo', 'up');
        }
        $steps = [
            ['ip', '-n', $nsR, 'link', 'add', 'br0', 'type', 'bridge'],
            ['ip', '-n', $nsR, 'addr', 'add', "$net.1/24", 'dev', 'br0'],
            ['ip', '-n', $nsR, 'link', 'set', 'br0', 'up'],
        ];
        foreach (['a' => [$nsA, "$net.2"], 'b' => [$nsB, "$net.3"]] as $h => [$ns, $ip]) {
            array_push(
                $steps,
                ['ip', '-n', $nsR, 'link', 'add', "veth-$h", 'type', 'veth', 'peer', 'name', 'eth0', 'netns', $ns],
                ['ip', '-n', $nsR, 'link', 'set', "veth-$h", 'master', 'br0'],
                ['ip', '-n', $nsR, 'link', 'set', "veth-$h", 'up'],
                ['ip', '-n', $ns, 'addr', 'add', "$ip/24", 'dev', 'eth0'],
                ['ip', '-n', $ns, 'link', 'set', 'eth0', 'up'],
            );
        }
        foreach ($steps as $step) {
            [$code, $out] = self::sh(...$step);
            $this->assertSame(0, $code, implode(' ', $step) . ": $out");
        }
        $in = fn ($ns) => ['ip', 'netns', 'exec', $ns];

        $redis = $this->startRedis(host: "$net.1", port: 6379, wrapper: $in($nsR));
        $port = 9501;
        $a = $this->taskServer('host-a', "$net.2", $redis->dsn(), ['task_worker_num' => 2], [], $in($nsA), $port);
        $b = $this->taskServer('host-b', "$net.3", $redis->dsn(), ['task_worker_num' => 2], [], $in($nsB), $port);

        // each host's producer submits to the other host's server
        $p1 = $this->produce("$net.3", $port, 'from-a', 1000, 'acked-a', 'one', [], 0, 60, $in($nsA));
        $p2 = $this->produce("$net.2", $port, 'from-b', 1000, 'acked-b', 'multi', [], 0, 60, $in($nsB));
        $this->finishProducer($p1, 60, 'producer on host a');
        $this->finishProducer($p2, 60, 'producer on host b');
        [$acked, $refused] = $this->submissions('acked-a', 'acked-b');
        $this->assertSame([], $refused);
        $this->assertCount(2000, $acked);
        $this->poll(fn () => count($this->runs()) >= 2000, 60, '2,000 runs', 0.2);
        $this->waitQueueDrained($redis, 20);
        $by = $this->runsByPayload();
        $this->assertEqualsCanonicalizing(array_keys($acked), array_keys($by), 'exactly the acknowledged tasks ran');
        $this->assertSame([], array_keys(array_filter($by, fn ($c) => count($c) > 1)), 'each ran once');
        $per = array_count_values(array_merge(...array_values($by)));
        $this->assertGreaterThan(0, $per['host-a'] ?? 0, json_encode($per));
        $this->assertGreaterThan(0, $per['host-b'] ?? 0, json_encode($per));
        $this->assertNotSame([], $a->tree());
        $this->assertNotSame([], $b->tree());
    }
}
