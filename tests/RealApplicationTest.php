<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;

/**
 * A realistic application: 2 event workers and 4 task workers serving several
 * TaskClient connections at once with task() + onFinish, task() + a finish
 * callback, taskwait(), taskWaitMulti(), sendMessage() and a tick() timer in
 * each event worker that submits tasks too; reloaded twice under load (SIGUSR1
 * to the master, then $server->reload(true) from a worker). Afterwards every
 * acknowledged task must have run (exactly once; duplicates are reported),
 * every result must have been delivered once to the right place, and the
 * numbers in stats() must add up with what the application saw.
 */
final class RealApplicationTest extends TaskqTestCase
{
    private const SERVER = <<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 2, 'task_worker_num' => 4, 'log_file' => "$dir/taskq.log"]);

function job(string $job, string $kind): array { return ['job' => $job, 'kind' => $kind]; }
function reply($s, int $fd, string $op, array $body): void {
    $data = json_encode($body);
    $s->send($fd, $data);
    record('replied', ['op' => $op, 'bytes' => strlen($data)]);
}

$server->on('WorkerStart', function ($s, $id) {
    record('workerstart', ['id' => $id]);
    if ($s->taskworker) {
        return;
    }
    // every event worker incarnation runs a timer for 10 ticks that submits a task each tick
    $n = 0;
    $GLOBALS['timer'] = $s->tick(50, function ($timerId) use ($s, $id, &$n) {
        $n++;
        $job = "timer-$id-" . getmypid() . "-$n";
        $tid = $s->task(job($job, 'timer'));
        if ($tid !== false) {
            record('submitted', ['job' => $job, 'kind' => 'timer', 'id' => $id]);
        }
        record('tick', ['id' => $id, 'n' => $n]);
        if ($n === 10) {
            $s->clearTimer($timerId);
            $GLOBALS['timer'] = null;
            record('timer_end', ['id' => $id, 'why' => 'done']);
        }
    });
});
$server->on('WorkerStop', function ($s, $id) {
    record('workerstop', ['id' => $id]);
    if (!$s->taskworker && $GLOBALS['timer'] !== null) {
        record('timer_end', ['id' => $id, 'why' => 'stopped']);
    }
});
$server->on('Connect', function ($s, $fd, $rid) { record('connect', ['fd' => $fd]); });
$server->on('Close', function ($s, $fd, $rid) { record('close', ['fd' => $fd]); });
$server->on('Receive', function ($s, $fd, $rid, $data) {
    record('received', ['bytes' => strlen($data), 'id' => $s->worker_id]);
    $req = json_decode($data, true);
    $op = $req['op'];
    switch ($op) {
        case 'async':
            $tid = $s->task(job($req['job'], 'async'));
            if ($tid !== false) {
                record('submitted', ['job' => $req['job'], 'kind' => 'async', 'id' => $s->worker_id]);
            }
            reply($s, $fd, $op, ['ack' => $tid === false ? null : $req['job']]);
            break;
        case 'callback':
            $job = $req['job'];
            $tid = $s->task(job($job, 'callback'), -1, function ($s, $taskId, $result) use ($job) {
                record('callback', ['job' => $job, 'result_job' => $result['job'], 'task_id' => $taskId, 'id' => $s->worker_id]);
            });
            if ($tid !== false) {
                record('submitted', ['job' => $job, 'kind' => 'callback', 'id' => $s->worker_id]);
            }
            reply($s, $fd, $op, ['ack' => $tid === false ? null : $job]);
            break;
        case 'wait':
            record('submitted', ['job' => $req['job'], 'kind' => 'wait', 'id' => $s->worker_id]);
            $r = $s->taskwait(job($req['job'], 'wait'), 3.0);
            reply($s, $fd, $op, ['result' => $r]);
            break;
        case 'multi':
            $tasks = [];
            foreach ($req['jobs'] as $k => $job) {
                $tasks[$k] = job($job, 'multi');
                record('submitted', ['job' => $job, 'kind' => 'multi', 'id' => $s->worker_id]);
            }
            $r = $s->taskWaitMulti($tasks, 3.0);
            reply($s, $fd, $op, ['results' => $r]);
            break;
        case 'notify':
            $ok = [];
            foreach ([1 - $s->worker_id, 2 + crc32($req['note']) % 4] as $to) {
                $note = "{$req['note']}>$to";
                if ($s->sendMessage(['note' => $note], $to)) {
                    record('sent_msg', ['note' => $note, 'to' => $to]);
                    $ok[] = $note;
                }
            }
            reply($s, $fd, $op, ['sent' => $ok]);
            break;
        case 'reload':
            reply($s, $fd, $op, ['ok' => $s->reload($req['only_tasks'])]);
            break;
        case 'stats':
            $s->send($fd, json_encode(['stats' => $s->stats()]));
            break;
    }
});
$server->on('Task', function ($s, $taskId, $src, $data) {
    record('ran', ['job' => $data['job'], 'kind' => $data['kind'], 'id' => $s->worker_id, 'src' => $src]);
    usleep(random_int(500, 4000));
    return ['job' => $data['job'], 'result' => md5($data['job']), 'by' => $s->worker_id];
});
$server->on('Finish', function ($s, $taskId, $result) {
    record('finished', ['job' => $result['job'], 'ok' => $result['result'] === md5($result['job']), 'task_id' => $taskId, 'id' => $s->worker_id]);
});
$server->on('PipeMessage', function ($s, $src, $msg) {
    record('pipe', ['note' => $msg['note'], 'src' => $src, 'id' => $s->worker_id]);
});
$server->start();
PHP;

    private const CLIENT = <<<'PHP'
<?php
[$port, $k, $ops] = [(int) $argv[1], (int) $argv[2], (int) $argv[3]];
$cs = [];
for ($n = 0; $n < 2; $n++) {
    $c = new TaskClient(TASKQ_SOCK_TCP);
    // 5 s I/O timeout: every request is answered well within it (taskwait timeouts are 3 s)
    if (!$c->connect('127.0.0.1', $port, 5)) { fwrite(STDERR, "connect failed\n"); exit(3); }
    $cs[] = $c;
}
$out = ['acked' => [], 'waited' => [], 'multi' => [], 'notes' => [], 'errors' => []];
$kinds = ['async', 'callback', 'wait', 'multi', 'notify'];
for ($i = 0; $i < $ops; $i++) {
    $c = $cs[$i % 2];
    $op = $kinds[($i + $k) % 5];
    $job = "c$k-$i";
    $req = ['op' => $op, 'job' => $job];
    if ($op === 'multi') {
        $req['jobs'] = ["$job-m0", "$job-m1", "$job-m2", "$job-m3"];
    }
    if ($op === 'notify') {
        $req['note'] = $job;
    }
    $c->send($req);
    $raw = $c->recv();
    $r = is_string($raw) ? json_decode($raw, true) : null;
    if (!is_array($r)) { $out['errors'][] = [$job, $op, $raw, $c->errCode]; continue; }
    switch ($op) {
        case 'async': case 'callback':
            if ($r['ack'] === $job) { $out['acked'][] = [$job, $op]; } else { $out['errors'][] = [$job, $op, $r]; }
            break;
        case 'wait':
            $out['waited'][] = [$job, $r['result']];
            break;
        case 'multi':
            $out['multi'][] = [$req['jobs'], $r['results']];
            break;
        case 'notify':
            array_push($out['notes'], ...$r['sent']);
            break;
    }
    usleep(3000);
}
echo json_encode($out);
PHP;

    /** Starts a client process in the background. */
    private function spawnClient(int $k, int $ops): array
    {
        return $this->startPhp(self::CLIENT, 20, [(string) $this->port, (string) $k, (string) $ops], "$this->dir/app-client.php");
    }

    private static function running(array $h): bool
    {
        return proc_get_status($h[0])['running'];
    }

    /** One request on a fresh connection; returns the decoded reply. */
    private function request(array $req): array
    {
        $code = "<?php\n\$c = new TaskClient(TASKQ_SOCK_TCP);\n"
            . "if (!\$c->connect('127.0.0.1', {$this->port}, 5)) { exit(3); }\n"
            . '$c->send(' . var_export($req, true) . ");\necho \$c->recv();\n";
        [$exit, $out, $err] = $this->runPhp($code, 10);
        $this->assertSame([0, ''], [$exit, $err], $out);
        $r = json_decode($out, true);
        $this->assertIsArray($r, $out);
        return $r;
    }

    /** Values occurring more than once => their count. */
    private static function duplicates(array $values): array
    {
        return array_filter(array_count_values($values), fn ($n) => $n > 1);
    }

    public function testTwoWorkersFourTaskWorkersUnderLoadWithReloads(): void
    {
        $server = $this->startServer(self::SERVER);
        $this->waitEvents('workerstart', 6, 5, $server);
        $eventWorkerPids = array_column(array_filter($this->events('workerstart'), fn ($e) => $e['id'] < 2), 'pid');

        $clients = [];
        for ($k = 0; $k < 3; $k++) {
            $clients[] = $this->spawnClient($k, 60);
        }
        $anyRunning = fn () => array_filter($clients, fn ($h) => self::running($h)) !== [];

        // reload everything under load, by signal
        $this->waitUntil(fn () => count($this->events('ran')) >= 30, 5, '30 task runs', $server);
        $this->assertTrue($anyRunning(), 'the clients are still busy at the first reload');
        $this->assertTrue(posix_kill($server->pid(), SIGUSR1));
        // then the task workers only, from a worker
        $this->waitUntil(fn () => count($this->events('workerstart')) >= 12, 5, 'the full reload', $server);
        $this->waitUntil(fn () => count($this->events('received')) >= 110, 5, '110 requests', $server);
        $this->assertTrue($anyRunning(), 'the clients are still busy at the second reload');
        $this->assertSame(['ok' => true], $this->request(['op' => 'reload', 'only_tasks' => true]));

        $outputs = [];
        foreach ($clients as $k => $h) {
            [$exit, $out, $err] = $this->finishPhp($h, 15);
            $this->assertSame([0, ''], [$exit, $err], "client $k: $out\nserver log:\n" . $this->log());
            $outputs[$k] = json_decode($out, true);
            $this->assertIsArray($outputs[$k], "client $k output: $out");
            $this->assertSame([], $outputs[$k]['errors'], "client $k saw errors");
        }
        $this->waitUntil(fn () => count($this->events('workerstart')) >= 16, 5, 'the task-worker reload', $server);

        // quiescence: every timer incarnation ended, every submitted task ran, every result arrived
        $this->waitUntil(function () {
            $eventStarts = count(array_filter($this->events('workerstart'), fn ($e) => $e['id'] < 2));
            return count($this->events('timer_end')) >= $eventStarts;
        }, 5, 'the timers of every event worker incarnation to end', $server);
        $submitted = $this->events('submitted');
        $asyncKinds = ['async', 'callback', 'timer'];
        $this->waitUntil(function () use ($submitted, $asyncKinds) {
            $ran = array_unique(array_column($this->events('ran'), 'job'));
            $delivered = count($this->events('finished')) + count($this->events('callback'));
            $async = count(array_filter($submitted, fn ($e) => in_array($e['kind'], $asyncKinds, true)));
            return count(array_diff(array_column($submitted, 'job'), $ran)) === 0 && $delivered >= $async;
        }, 5, 'every submitted task to run and every async result to arrive', $server);
        $submitted = $this->events('submitted');

        // ---- every acknowledged task ran, exactly once
        $acked = array_merge(...array_map(fn ($o) => array_column($o['acked'], 0), $outputs));
        $this->assertCount(3 * 24, $acked, 'async + callback acks (12 + 12 per client)');
        $ranJobs = array_column($this->events('ran'), 'job');
        $this->assertSame([], array_values(array_diff($acked, $ranJobs)), 'acknowledged tasks that never ran');
        $this->assertSame([], self::duplicates($ranJobs), 'tasks that ran more than once (job => runs)');
        $submittedJobs = array_column($submitted, 'job');
        $this->assertSame([], self::duplicates($submittedJobs));
        $this->assertSame([], array_values(array_diff($submittedJobs, $ranJobs)), 'submitted tasks that never ran');
        $this->assertSame([], array_values(array_diff($ranJobs, $submittedJobs)), 'runs of tasks nobody submitted');

        // ---- taskwait / taskWaitMulti got their own results
        foreach ($outputs as $o) {
            foreach ($o['waited'] as [$job, $result]) {
                $this->assertIsArray($result, "taskwait($job) timed out");
                $this->assertSame([$job, md5($job)], [$result['job'], $result['result']], "taskwait($job) got its own result");
            }
            foreach ($o['multi'] as [$jobs, $results]) {
                $this->assertCount(4, $results, 'taskWaitMulti(' . implode(',', $jobs) . ') lost results');
                foreach ($jobs as $i => $job) {
                    $this->assertSame([$job, md5($job)], [$results[$i]['job'], $results[$i]['result']], "taskWaitMulti result $i is its own");
                }
            }
        }

        // ---- async results: exactly one delivery each, to onFinish or to the right callback
        $deliveries = array_merge(array_column($this->events('finished'), 'job'), array_column($this->events('callback'), 'result_job'));
        $asyncJobs = array_column(array_filter($submitted, fn ($e) => in_array($e['kind'], $asyncKinds, true)), 'job');
        $this->assertSame([], array_values(array_diff($asyncJobs, $deliveries)), 'async results never delivered');
        $this->assertSame([], self::duplicates($deliveries), 'async results delivered more than once');
        $this->assertSame([], array_values(array_diff($deliveries, $asyncJobs)), 'deliveries of results that were waited for (taskwait/taskWaitMulti results must not reach onFinish)');
        $wrong = array_filter($this->events('callback'), fn ($e) => $e['job'] !== $e['result_job']);
        $this->assertSame([], array_values($wrong), 'finish callbacks invoked with another task\'s result');
        foreach ($this->events('finished') as $f) {
            $this->assertTrue($f['ok']);
        }
        $srcOf = array_column($submitted, 'id', 'job');
        foreach (array_merge($this->events('finished'), array_map(fn ($e) => ['job' => $e['result_job']] + $e, $this->events('callback'))) as $d) {
            $this->assertSame($srcOf[$d['job']], $d['id'], "the result of {$d['job']} went to the worker id that dispatched it");
        }

        // ---- sendMessage: every message delivered exactly once, to the worker it was sent to
        $sent = $this->events('sent_msg');
        $this->assertCount(3 * 12 * 2, $sent, 'two messages per notify');
        $this->waitUntil(fn () => count($this->events('pipe')) >= count($sent), 3, 'every pipe message', $server);
        $pipes = array_column($this->events('pipe'), 'id', 'note');
        $this->assertSame([], self::duplicates(array_column($this->events('pipe'), 'note')), 'pipe messages delivered twice');
        foreach ($sent as $m) {
            $this->assertArrayHasKey($m['note'], $pipes, "message {$m['note']} lost");
            $this->assertSame($m['to'], $pipes[$m['note']], "message {$m['note']} reached worker {$m['to']}");
        }
        $notes = array_merge(...array_map(fn ($o) => $o['notes'], $outputs));
        $this->assertEqualsCanonicalizing(array_column($sent, 'note'), $notes);

        // ---- timers ran in every event worker incarnation, including the reloaded ones
        $tickPids = array_unique(array_column($this->events('tick'), 'pid'));
        $newEventPids = array_diff(array_column(array_filter($this->events('workerstart'), fn ($e) => $e['id'] < 2), 'pid'), $eventWorkerPids);
        $this->assertCount(2, $newEventPids, 'both event workers were reloaded once');
        foreach ($newEventPids as $pid) {
            $this->assertContains($pid, $tickPids, 'the reloaded event worker runs its timer');
        }

        // ---- stats add up (all previous connections closed first)
        $connects = count($this->events('connect'));
        $this->waitUntil(fn () => count($this->events('close')) === $connects, 3, 'every connection closed', $server);
        $repliedBefore = array_values(array_filter($this->events('replied'), fn ($e) => $e['op'] !== 'stats'));
        $receivedBefore = $this->events('received');
        $st = $this->request(['op' => 'stats'])['stats'];
        $ran = count($this->events('ran'));
        $report = json_encode($st, JSON_PRETTY_PRINT);
        $this->assertSame(count($submitted), $st['task_count'], "task_count = tasks the application submitted\n$report");
        $this->assertSame(0, $st['tasking_num'], $report);
        $this->assertSame(0, $st['task_queue_num'], $report);
        $this->assertSame(0, $st['task_running_num'], $report);
        $this->assertSame(4, $st['task_idle_worker_num'], $report);
        $this->assertSame(0, $st['task_failed_count'], $report);
        $this->assertSame($ran, $st['task_count'] + $st['task_requeued_count'], "runs = task_count + task_requeued_count\n$report");
        $this->assertSame(0, $st['task_requeued_count'], 'graceful reloads requeue nothing');
        $this->assertSame([2, 4, 0], [$st['worker_num'], $st['task_worker_num'], $st['user_worker_num']]);
        $this->assertSame($connects + 1, $st['accept_count'], 'accept_count = connections made (incl. this one)');
        $this->assertSame($connects, $st['close_count']);
        $this->assertSame(1, $st['connection_num']);
        $this->assertSame($st['accept_count'] - $st['close_count'], $st['connection_num']);
        $this->assertSame($st['accept_count'], $st['session_round']);
        $this->assertSame(0, $st['abort_count']);
        $this->assertSame(count($receivedBefore) + 1, $st['request_count'], 'request_count = onReceive calls (incl. this one)');
        $this->assertSame(count($repliedBefore), $st['response_count'], 'response_count = send() calls before this one');
        $recvBytes = array_sum(array_column($receivedBefore, 'bytes')) + strlen(json_encode(['op' => 'stats']));
        $this->assertGreaterThanOrEqual($recvBytes, $st['total_recv_bytes']);
        $this->assertLessThanOrEqual($recvBytes + 5 * $st['request_count'] + 8 * $st['accept_count'], $st['total_recv_bytes']);
        $sendBytes = array_sum(array_column($repliedBefore, 'bytes'));
        $this->assertGreaterThanOrEqual($sendBytes, $st['total_send_bytes']);
        $this->assertLessThanOrEqual($sendBytes + 5 * $st['response_count'], $st['total_send_bytes']);
        $this->assertGreaterThanOrEqual($st['request_count'] + $st['accept_count'] + $st['close_count'], $st['dispatch_count'], 'dispatch_count covers every routed receive/connect/close');
        $this->assertStringNotContainsString('abnormal exit', $this->log());
        $this->assertStringNotContainsString('lost', $this->log());
    }
}
