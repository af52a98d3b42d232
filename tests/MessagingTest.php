<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;

/**
 * sendMessage()/onPipeMessage, stats(), getClientInfo(), exists()/exist(),
 * getWorkerPid()/getWorkerStatus(), run in the workers of real servers.
 *
 * The server evaluates the PHP code a client sends in onReceive (with $s the
 * server and $ctx['fd'] the connection) and replies with serialize(['r' =>
 * result, 'w' => warnings, ...]); task data is PHP code that onTask evaluates.
 */
final class MessagingTest extends TaskqTestCase
{
    private const SERVER = <<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 2, 'task_worker_num' => 2, 'log_file' => "$dir/taskq.log"] + (getenv('TASKQ_SETTINGS') ? json_decode(getenv('TASKQ_SETTINGS'), true) : []));
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Connect', function ($s, $fd, $rid) { record('connect', ['fd' => $fd, 'id' => $s->worker_id]); });
$server->on('Close', function ($s, $fd, $rid) { record('close', ['fd' => $fd, 'id' => $s->worker_id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) {
    $s->send($fd, serialize(evaluate($s, $data, ['fd' => $fd])));
});
$server->on('Task', function ($s, $taskId, $src, $data) {
    record('task', ['task_id' => $taskId, 'id' => $s->worker_id]);
    return eval($data);
});
$server->on('Finish', function ($s, $taskId, $data) {
    record('finish', ['task_id' => $taskId, 'id' => $s->worker_id, 'data' => base64_encode(serialize($data))]);
});
$server->on('PipeMessage', function ($s, $src, $msg) {
    record('pipe', ['id' => $s->worker_id, 'src' => $src, 'taskworker' => $s->taskworker, 'msg' => base64_encode(serialize($msg))]);
    if (is_array($msg) && isset($msg['eval'])) {
        record('pipe_eval', ['id' => $s->worker_id, 'reply' => evaluate($s, $msg['eval'])]);
    }
});
$server->start();
PHP;

    // ---------------------------------------------------------------- helpers

    private function server(array $settings = []): ServerProcess
    {
        $server = $this->startServer(self::SERVER, $settings ? ['TASKQ_SETTINGS' => json_encode($settings)] : []);
        $this->waitEvents('workerstart', 4, 5, $server);
        return $server;
    }

    /** Pid of the current incarnation of worker $id (last WorkerStart). */
    private function pidOf(int $id): int
    {
        $starts = array_values(array_filter($this->events('workerstart'), fn ($e) => $e['id'] === $id));
        return end($starts)['pid'];
    }

    /** Asserts the given keys of $actual, in the order of $expected. */
    private function assertPicked(array $expected, array $actual): void
    {
        $picked = [];
        foreach (array_keys($expected) as $k) {
            $picked[$k] = array_key_exists($k, $actual) ? $actual[$k] : '(missing)';
        }
        $this->assertSame($expected, $picked);
    }

    private function assertOneWarning(string $needle, array $warnings): void
    {
        $this->assertCount(1, $warnings, 'exactly one warning: ' . implode(' | ', $warnings));
        $this->assertStringContainsString($needle, $warnings[0]);
    }

    private const STATS_KEYS = [
        'start_time', 'connection_num', 'abort_count', 'accept_count', 'close_count', 'worker_num',
        'task_worker_num', 'user_worker_num', 'idle_worker_num', 'dispatch_count', 'request_count',
        'response_count', 'total_recv_bytes', 'total_send_bytes', 'session_round', 'task_idle_worker_num',
        'tasking_num', 'task_count', 'task_queue_num', 'task_running_num', 'task_requeued_count',
        'task_failed_count', 'worker_request_count', 'worker_dispatch_count',
    ];

    // ---------------------------------------------------------------- sendMessage

    public function testSendMessageReachesOnPipeMessageOfEveryOtherWorkerWithItsSourceId(): void
    {
        $server = $this->server();
        $reply = $this->evalInWorker('', <<<'CODE'
$me = $s->worker_id;
$messages = [0 => "to-0\0bin\xff", 1 => ['to' => 1, 'n' => [1.5, null, true]], 2 => 12345, 3 => "to-3"];
$ok = [];
foreach ($messages as $id => $m) {
    if ($id !== $me) { $ok[$id] = $s->sendMessage($m, $id); }
}
return [$me, $ok, $messages];
CODE);
        [$me, $ok, $messages] = $reply['r'];
        $this->assertSame([], $reply['w']);
        $others = array_values(array_diff([0, 1, 2, 3], [$me]));
        $this->assertSame(array_fill_keys($others, true), $ok);
        $pipes = $this->waitEvents('pipe', 3, 5, $server);
        $this->assertCount(3, $pipes);
        $byTarget = array_column($pipes, null, 'id');
        ksort($byTarget);
        $this->assertSame($others, array_keys($byTarget), 'each other worker got one message');
        foreach ($byTarget as $id => $e) {
            $this->assertSame($this->pidOf($id), $e['pid'], "onPipeMessage ran in worker $id's process");
            $this->assertSame($me, $e['src'], 'the source worker id');
            $this->assertSame($id >= 2, $e['taskworker']);
            $this->assertSame($messages[$id], unserialize(base64_decode($e['msg'])), 'the message arrives identical');
        }
    }

    public function testSendMessageFromATaskWorkerCarriesTheTaskWorkerId(): void
    {
        $server = $this->server();
        $reply = $this->evalInWorker('', 'return $s->taskwait(\'return [$s->sendMessage("from-task", 0), $s->sendMessage(["x" => 1], 2)];\', 2, 1);');
        $this->assertSame([true, true], $reply['r']);
        $pipes = $this->waitEvents('pipe', 2, 5, $server);
        $byTarget = array_column($pipes, null, 'id');
        $this->assertSame(3, $byTarget[0]['src'], 'task worker 1 has worker id 3');
        $this->assertSame('from-task', unserialize(base64_decode($byTarget[0]['msg'])));
        $this->assertSame($this->pidOf(0), $byTarget[0]['pid']);
        $this->assertSame(3, $byTarget[2]['src'], 'task worker to task worker');
        $this->assertSame(['x' => 1], unserialize(base64_decode($byTarget[2]['msg'])));
        $this->assertSame($this->pidOf(2), $byTarget[2]['pid']);
    }

    public function testMessagesBetweenTwoWorkersArriveOnceAndInOrder(): void
    {
        $server = $this->server();
        $reply = $this->evalInWorker('', <<<'CODE'
$to = 1 - $s->worker_id;
$ok = 0;
for ($i = 0; $i < 300; $i++) { $ok += $s->sendMessage("seq-$i", $to) ? 1 : 0; }
for ($i = 0; $i < 30; $i++) { $ok += $s->sendMessage("big-$i:" . str_repeat(chr(65 + $i % 26), 20000), 2) ? 1 : 0; }
return [$to, $ok];
CODE);
        [$to, $ok] = $reply['r'];
        $this->assertSame(330, $ok);
        $this->waitEvents('pipe', 330, 5, $server);
        $seq = array_map(fn ($e) => unserialize(base64_decode($e['msg'])), array_values(array_filter($this->events('pipe'), fn ($e) => $e['id'] === $to)));
        $this->assertSame(array_map(fn ($i) => "seq-$i", range(0, 299)), $seq, 'every message once, in order');
        $big = array_map(fn ($e) => unserialize(base64_decode($e['msg'])), array_values(array_filter($this->events('pipe'), fn ($e) => $e['id'] === 2)));
        $this->assertSame(array_map(fn ($i) => "big-$i:" . str_repeat(chr(65 + $i % 26), 20000), range(0, 29)), $big);
    }

    public function testOnPipeMessageCanAnswerWithSendMessage(): void
    {
        $server = $this->server();
        $reply = $this->evalInWorker('', <<<'CODE'
return $s->sendMessage(['eval' => 'return $s->sendMessage("pong from " . $s->worker_id, ' . $s->worker_id . ');'], 3);
CODE);
        $this->assertTrue($reply['r']);
        $pipes = $this->waitEvents('pipe', 2, 5, $server);
        $this->assertSame(3, $pipes[1]['src']);
        $this->assertSame($reply['worker_id'], $pipes[1]['id']);
        $this->assertSame('pong from 3', unserialize(base64_decode($pipes[1]['msg'])));
        $this->assertTrue($this->events('pipe_eval')[0]['reply']['r']);
    }

    public function testSendMessageErrorPathsWarnAndReturnFalse(): void
    {
        $this->server();
        $reply = $this->evalInWorker('', <<<'CODE'
$out = [];
foreach ([$s->worker_id, 4, 99, -1] as $id) {
    $w = [];
    set_error_handler(function ($no, $msg) use (&$w) { $w[] = $msg; return true; });
    $r = $s->sendMessage('x', $id);
    restore_error_handler();
    $out[] = [$r, $w];
}
return $out;
CODE);
        [$self, $four, $ninetyNine, $minusOne] = $reply['r'];
        $this->assertFalse($self[0]);
        $this->assertOneWarning('self', $self[1]);
        foreach ([$four, $ninetyNine, $minusOne] as [$r, $w]) {
            $this->assertFalse($r);
            $this->assertCount(1, $w, 'one warning for an out-of-range worker id');
        }
        $this->assertStringContainsString('4', $four[1][0]);
        $this->assertSame([], $this->events('pipe'));
    }

    public function testSendMessageWithoutOnPipeMessageWarnsAndBeforeStartWarnsNotRunning(): void
    {
        $server = $this->startServer(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 2]);
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) {
    $w = [];
    set_error_handler(function ($no, $msg) use (&$w) { $w[] = $msg; return true; });
    $r = $s->sendMessage('x', 1 - $s->worker_id);
    restore_error_handler();
    $s->send($fd, serialize(['r' => $r, 'w' => $w, 'x' => null]));
});
$server->start();
PHP);
        $this->waitEvents('workerstart', 2, 5, $server);
        $reply = $this->evalInWorker('', 'x');
        $this->assertFalse($reply['r']);
        $this->assertOneWarning("require 'onPipeMessage' callback", $reply['w']);

        [$exit, $out, $err] = $this->runPhp(<<<'PHP'
<?php
$s = new TaskServer('127.0.0.1', 0);
$s->set(['worker_num' => 2]);
$s->on('PipeMessage', function () {});
var_dump($s->sendMessage('x', 1));
PHP);
        $this->assertSame([0, "bool(false)\n"], [$exit, $out], $err);
        $this->assertStringContainsString('server is not running', $err);
    }

    // ---------------------------------------------------------------- stats

    public function testStatsHasEveryKeyAndCountsConnectionsRequestsAndBytes(): void
    {
        $t0 = time();
        $server = $this->server();
        $first = $this->evalInWorker('', 'return $s->stats();');
        $st = $first['r'];
        $this->assertSame([], $first['w']);
        foreach (self::STATS_KEYS as $k) {
            $this->assertArrayHasKey($k, $st, "stats() has '$k'");
            $this->assertIsInt($st[$k], "stats()['$k'] is an int");
        }
        $this->assertGreaterThanOrEqual($t0, $st['start_time']);
        $this->assertLessThanOrEqual(time(), $st['start_time']);
        $this->assertPicked(
            ['worker_num' => 2, 'task_worker_num' => 2, 'user_worker_num' => 0, 'connection_num' => 1, 'accept_count' => 1, 'close_count' => 0, 'abort_count' => 0, 'request_count' => 1, 'session_round' => 1, 'task_count' => 0, 'tasking_num' => 0, 'task_idle_worker_num' => 2],
            $st,
        );
        $this->assertGreaterThanOrEqual(strlen('return $s->stats();'), $st['total_recv_bytes'], 'this request counts in total_recv_bytes');
        $this->assertLessThanOrEqual(strlen('return $s->stats();') + 8 + 5, $st['total_recv_bytes']);

        // two more connections with payloads of known size, then both closed
        $payloads = ['return str_repeat("a", 1000);', 'return str_repeat("b", 3000);   '];
        $code = "<?php\n\$out = [];\n";
        foreach ($payloads as $i => $p) {
            $code .= "\$c{$i} = new TaskClient(TASKQ_SOCK_TCP); \$c{$i}->connect('127.0.0.1', {$this->port}, 5);\n"
                . "\$c{$i}->send(" . var_export($p, true) . "); \$out[] = strlen(\$c{$i}->recv());\n";
        }
        $code .= "\$c0->close(); \$c1->close();\necho json_encode(\$out);\n";
        [$exit, $out, $err] = $this->runPhp($code);
        $this->assertSame([0, ''], [$exit, $err], $out);
        $replyLens = json_decode($out, true);
        $this->waitEvents('close', 3, 5, $server);

        $st = $this->evalInWorker('', 'return $s->stats();')['r'];
        $this->assertSame(4, $st['accept_count']);
        $this->assertSame(3, $st['close_count']);
        $this->assertSame(1, $st['connection_num'], 'connection_num = accept_count - close_count');
        $this->assertSame(4, $st['session_round']);
        $this->assertSame(4, $st['request_count'], 'one onReceive per client send');
        $this->assertSame(3, $st['response_count'], 'three replies were sent before this stats() call');
        $this->assertGreaterThanOrEqual($st['request_count'], $st['dispatch_count']);
        $sent = strlen('return $s->stats();') + array_sum(array_map('strlen', $payloads)) + strlen('return $s->stats();');
        $this->assertGreaterThanOrEqual($sent, $st['total_recv_bytes'], 'total_recv_bytes covers every payload');
        $this->assertLessThanOrEqual($sent + 4 * 8 + 4 * 5, $st['total_recv_bytes'], 'at most the framing on top');
        $replied = strlen(serialize($first)) + array_sum($replyLens);
        $this->assertGreaterThanOrEqual($replied, $st['total_send_bytes']);
        $this->assertLessThanOrEqual($replied + 3 * 5, $st['total_send_bytes']);
        $this->assertSame(1, $st['idle_worker_num'], 'the worker running stats() is busy, the other idle');
        $this->assertGreaterThanOrEqual(1, $st['worker_request_count']);
        $this->assertSame(0, $st['abort_count']);
    }

    public function testStatsTaskCountersWhileTasksAreQueuedAndRunning(): void
    {
        $server = $this->server();
        $release = "$this->dir/release";
        $reply = $this->evalInWorker('', <<<'CODE'
$block = 'for ($i = 0; $i < 400 && !file_exists(getenv("TASKQ_DIR") . "/release"); $i++) { usleep(10000); } return "done";';
for ($i = 0; $i < 5; $i++) { $s->task($block); }
for ($i = 0; $i < 200; $i++) {
    $st = $s->stats();
    if ($st['task_running_num'] === 2) { break; }
    usleep(10000);
}
return [$st, $s->getWorkerStatus(2), $s->getWorkerStatus(3)];
CODE);
        [$st, $status2, $status3] = $reply['r'];
        touch($release);
        $this->assertSame(5, $st['task_count']);
        $this->assertSame(5, $st['tasking_num'], 'queued + running');
        $this->assertSame(2, $st['task_running_num']);
        $this->assertSame(3, $st['task_queue_num']);
        $this->assertSame(0, $st['task_idle_worker_num']);
        $this->assertSame([1, 1], [$status2, $status3], 'both task workers busy');

        $this->waitUntil(fn () => count($this->events('finish')) === 5, 5, 'the 5 results', $server);
        $reply = $this->evalInWorker('', <<<'CODE'
for ($i = 0; $i < 200; $i++) {
    $st = $s->stats();
    if ($st['task_idle_worker_num'] === 2) { break; }
    usleep(10000);
}
return [$st, $s->getWorkerStatus(2), $s->getWorkerStatus(3)];
CODE);
        [$st, $status2, $status3] = $reply['r'];
        $this->assertPicked(
            ['task_count' => 5, 'tasking_num' => 0, 'task_running_num' => 0, 'task_queue_num' => 0, 'task_idle_worker_num' => 2, 'task_requeued_count' => 0, 'task_failed_count' => 0],
            $st,
        );
        $this->assertSame([2, 2], [$status2, $status3], 'both task workers idle');
    }

    public function testStatsStayCorrectAfterTaskWorkersDieWhileRunningTasks(): void
    {
        $server = $this->server(['task_retry_max' => 2]); // a worker's task() runs once unless retries are set
        $reply = $this->evalInWorker('', <<<'CODE'
// dies on its first run, succeeds on the retry
$once = '$f = getenv("TASKQ_DIR") . "/died-once"; if (!file_exists($f)) { touch($f); exec("kill -9 " . getmypid()); } return "survived";';
// dies every time: given up after 3 runs
$poison = 'exec("kill -9 " . getmypid()); return "never";';
$ids = [$s->task($once), $s->task($poison), $s->task('return "plain";')];
$st = null;
for ($i = 0; $i < 400; $i++) {
    $st = $s->stats();
    if ($st['task_failed_count'] === 1 && $st['tasking_num'] === 0 && $st['task_idle_worker_num'] === 2) { break; }
    usleep(10000);
}
return [$ids, $st];
CODE, 8);
        [$ids, $st] = $reply['r'];
        $this->assertSame([0, 1, 2], $ids);
        $this->assertPicked(
            ['task_count' => 3, 'tasking_num' => 0, 'task_running_num' => 0, 'task_queue_num' => 0, 'task_idle_worker_num' => 2, 'task_failed_count' => 1],
            $st,
        );
        $this->assertSame(3, $st['task_requeued_count'], 'requeued: once for the first task, twice for the poison task before it was given up');
        $this->waitUntil(fn () => count($this->events('finish')) >= 2, 3, 'two results', $server);
        $results = array_map(fn ($e) => unserialize(base64_decode($e['data'])), $this->events('finish'));
        sort($results);
        $this->assertSame(['plain', 'survived'], $results, 'each surviving task reached onFinish exactly once');
        $this->assertMatchesRegularExpression('/\tERROR\ttask \d+ \(id 1 from worker #\d\)[^\n]*3 time[^\n]*given up/', $this->log(), 'the poison task (id 1) is logged as given up after 3 runs');
    }

    // ---------------------------------------------------------------- getClientInfo / exists

    public function testGetClientInfoDescribesATaskqClientConnection(): void
    {
        $t0 = time();
        $server = $this->server();
        // two requests on one connection: the second sees the first reply's send time
        $code = "<?php\n\$c = new TaskClient(TASKQ_SOCK_TCP);\n\$c->connect('127.0.0.1', {$this->port}, 5);\n"
            . "\$c->send('return 1;'); \$c->recv();\n"
            . "\$c->send(" . var_export('return [$s->getClientInfo($ctx["fd"]), $ctx["fd"], microtime(true), $s->getClientInfo(999999), $s->exists($ctx["fd"]), $s->exist($ctx["fd"]), $s->exists(999999), $s->exist(999999)];', true) . ");\n"
            . "echo \$c->recv();\n";
        $reply = $this->evalReply($this->runPhp($code));
        [$info, $fd, $now, $unknown, $exists, $exist, $existsUnknown, $existUnknown] = $reply['r'];
        $this->assertSame([], $reply['w']);
        $this->assertFalse($unknown, 'getClientInfo of an unknown fd');
        $this->assertSame([true, true, false, false], [$exists, $exist, $existsUnknown, $existUnknown]);
        foreach (['server_port', 'server_fd', 'socket_fd', 'socket_type', 'remote_port', 'remote_ip', 'reactor_id', 'connect_time', 'last_time', 'last_recv_time', 'last_send_time', 'last_dispatch_time', 'close_errno', 'recv_queued_bytes', 'send_queued_bytes', 'worker_id', 'taskq_protocol'] as $k) {
            $this->assertArrayHasKey($k, $info, "getClientInfo() has '$k'");
        }
        $this->assertSame($this->port, $info['server_port']);
        $this->assertSame($fd, $info['socket_fd']);
        $this->assertSame(TASKQ_SOCK_TCP, $info['socket_type']);
        $this->assertSame('127.0.0.1', $info['remote_ip']);
        $this->assertIsInt($info['remote_port']);
        $this->assertGreaterThan(0, $info['remote_port']);
        $this->assertNotSame($this->port, $info['remote_port']);
        $this->assertSame($reply['worker_id'], $info['worker_id'], 'the worker that handles the connection');
        $this->assertTrue($info['taskq_protocol']);
        $this->assertSame(0, $info['close_errno']);
        $this->assertGreaterThanOrEqual($t0, $info['connect_time']);
        $this->assertLessThanOrEqual((int) $now, $info['connect_time']);
        $this->assertGreaterThanOrEqual($info['connect_time'], $info['last_time']);
        $this->assertGreaterThan(0, $info['last_send_time'], 'the first reply was sent');
        $this->assertGreaterThanOrEqual($info['last_send_time'], $info['last_recv_time'], 'the second request came after the first reply');
        $this->assertLessThanOrEqual($now, $info['last_recv_time']);
        $this->assertGreaterThanOrEqual($info['connect_time'], (int) $info['last_recv_time']);
    }

    public function testGetClientInfoOfARawClientHasItsAddressAndNoTaskqProtocol(): void
    {
        $server = $this->server();
        $code = <<<PHP
<?php
\$sock = stream_socket_client('tcp://127.0.0.1:{$this->port}', \$errno, \$errstr, 5);
stream_set_timeout(\$sock, 5);
\$local = stream_socket_get_name(\$sock, false);
fwrite(\$sock, 'return [\$s->getClientInfo(\$ctx["fd"]), \$ctx["fd"]];');
\$buf = '';
while ((\$r = @unserialize(\$buf)) === false) {
    \$chunk = fread(\$sock, 65536);
    if (\$chunk === '' || \$chunk === false) { fwrite(STDERR, 'no reply'); exit(4); }
    \$buf .= \$chunk;
}
echo json_encode([\$local, \$r]);
PHP;
        [$exit, $out, $err] = $this->runPhp($code);
        $this->assertSame([0, ''], [$exit, $err], $out);
        [$local, $reply] = json_decode($out, true);
        [$info, $fd] = $reply['r'];
        $this->assertIsArray($info);
        $this->assertSame($local, $info['remote_ip'] . ':' . $info['remote_port'], 'remote address = the client socket\'s local address');
        $this->assertFalse($info['taskq_protocol']);
        $this->assertSame($fd, $info['socket_fd']);
        $this->assertSame($this->port, $info['server_port']);
    }

    public function testAClosedConnectionNoLongerExists(): void
    {
        $server = $this->server();
        $first = $this->evalInWorker('', 'return $ctx["fd"];');
        $fd = $first['r'];
        $this->waitUntil(fn () => in_array($fd, array_column($this->events('close'), 'fd'), true), 5, "onClose of fd $fd", $server);
        $reply = $this->evalInWorker('', "return [\$s->exists($fd), \$s->exist($fd), \$s->getClientInfo($fd), \$s->exists(\$ctx['fd'])];");
        $this->assertSame([false, false, false, true], $reply['r']);
    }

    public function testQueriesStillWorkInAWorkerThatIsLeaving(): void
    {
        // after stop() (as during a reload) the worker finishes its callback;
        // methods that ask the master must keep working until it has left
        $this->server();
        $reply = $this->evalInWorker('', '$s->stop(); return [$s->stats()["worker_num"], $s->exists($ctx["fd"]), $s->getClientInfo($ctx["fd"])["socket_fd"] ?? null, $s->getWorkerPid(1 - $s->worker_id) > 0];');
        [$workerNum, $exists, $socketFd, $pidOk] = $reply['r'];
        $this->assertSame(2, $workerNum, 'stats()');
        $this->assertTrue($exists, 'exists()');
        $this->assertIsInt($socketFd, 'getClientInfo()');
        $this->assertTrue($pidOk, 'getWorkerPid()');
    }

    // ---------------------------------------------------------------- getWorkerPid / getWorkerStatus

    public function testGetWorkerPidReturnsThePidOfEachWorker(): void
    {
        $this->server();
        $reply = $this->evalInWorker('', <<<'CODE'
$w = [];
set_error_handler(function ($no, $msg) use (&$w) { $w[] = $msg; return true; });
$r = [
    'own' => $s->getWorkerPid(),
    'mine' => getmypid(),
    'ids' => array_map(fn ($id) => $s->getWorkerPid($id), [0, 1, 2, 3]),
    'out_of_range' => $s->getWorkerPid(4),
    'from_task' => $s->taskwait('return [$s->getWorkerPid(), getmypid(), $s->getWorkerPid(0)];', 2, 0),
];
restore_error_handler();
return $r;
CODE);
        $r = $reply['r'];
        $this->assertSame($r['mine'], $r['own']);
        $this->assertSame([$this->pidOf(0), $this->pidOf(1), $this->pidOf(2), $this->pidOf(3)], $r['ids']);
        $this->assertFalse($r['out_of_range']);
        $this->assertSame([$this->pidOf(2), $this->pidOf(2), $this->pidOf(0)], $r['from_task']);
    }

    public function testGetWorkerStatusBusyIdleAndExited(): void
    {
        // task worker 3 kills itself in WorkerStart while the file "die" exists,
        // so the manager's respawn backoff leaves it exited for a while
        $server = $this->startServer(str_replace(
            "\$server->on('WorkerStart', function (\$s, \$id) { record('workerstart', ['id' => \$id]); });",
            "\$server->on('WorkerStart', function (\$s, \$id) { record('workerstart', ['id' => \$id]); if (\$id === 3 && file_exists(getenv('TASKQ_DIR') . '/die')) { exec('kill -9 ' . getmypid()); } });",
            self::SERVER,
        ));
        $this->waitEvents('workerstart', 4, 5, $server);
        $reply = $this->evalInWorker('', <<<'CODE'
return [
    'own' => $s->getWorkerStatus(),
    'own_id' => $s->getWorkerStatus($s->worker_id),
    'other' => $s->getWorkerStatus(1 - $s->worker_id),
    'tasks' => [$s->getWorkerStatus(2), $s->getWorkerStatus(3)],
    'in_task' => $s->taskwait('return [$s->getWorkerStatus(), $s->getWorkerStatus(3)];', 2, 0),
    'bad' => $s->getWorkerStatus(99),
];
CODE);
        $r = $reply['r'];
        $this->assertSame(1, $r['own'], 'own status inside a callback: busy');
        $this->assertSame(1, $r['own_id']);
        $this->assertSame(2, $r['other'], 'the other event worker is idle');
        $this->assertSame([2, 2], $r['tasks']);
        $this->assertSame([1, 2], $r['in_task']);
        $this->assertFalse($r['bad']);

        touch("$this->dir/die");
        posix_kill($this->pidOf(3), SIGTERM);
        $reply = $this->evalInWorker('', <<<'CODE'
for ($i = 0; $i < 300; $i++) {
    if ($s->getWorkerStatus(3) === 3) { return 3; }
    usleep(5000);
}
return $s->getWorkerStatus(3);
CODE);
        $this->assertSame(3, $reply['r'], 'a worker waiting to be respawned is exited (3)');
        unlink("$this->dir/die");
        $reply = $this->evalInWorker('', <<<'CODE'
for ($i = 0; $i < 800; $i++) {
    if ($s->getWorkerStatus(3) === 2) { return 2; }
    usleep(5000);
}
return $s->getWorkerStatus(3);
CODE);
        $this->assertSame(2, $reply['r'], 'idle again once respawned');
    }
}
