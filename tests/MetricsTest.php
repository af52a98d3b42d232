<?php
use TaskQ\Tests\Support\AdminListener;
use TaskQ\Tests\Support\SmtpSink;
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;

/**
 * Prometheus metrics (issue 16, "Metrics"): with `metrics_listen`, the
 * master serves GET /metrics over HTTP. The test scrapes it with a plain
 * socket and parses the exposition: every line a comment or a sample, the
 * counters right after a known run of tasks, the histograms complete; it
 * answers while every worker is busy, asks for the auth_token when one is
 * set, answers 404 elsewhere, refuses a bad address in set() and a busy one
 * in start(), and stops listening when the server stops.
 */
final class MetricsTest extends TaskqTestCase
{
    /**
     * Settings come from TASKQ_SETTINGS (JSON). onTask records each run; an
     * array payload may carry 'block' (wait, bounded, for the file
     * "release"), 'throw', 'exit', 'mail' ([dsn, to] pairs, each sent with
     * TaskQ\Mailer::send(), failures caught) and 'many' ([dsn, [to, ...]]
     * for sendMany()). onReceive "block" waits the same way; "mail DSN"
     * sends one message. With the file "mail-before-start" (a DSN), the
     * script sends one message before start(). A TaskQ\Exception from
     * start() is recorded as 'refused'.
     */
    private const SERVER = <<<'PHP'
$settings = json_decode(getenv('TASKQ_SETTINGS'), true)
    + ['worker_num' => 1, 'task_worker_num' => 2, 'log_file' => "$dir/taskq.log", 'task_retry_max' => 1, 'task_retry_delay' => 0.05];
$server = new TaskServer('127.0.0.1', $port);
$server->set($settings);
$release = function () use ($dir) {
    $deadline = microtime(true) + 20;
    while (!file_exists("$dir/release") && microtime(true) < $deadline) { usleep(5000); }
};
$mail = function (string $dsn, string $to) {
    try {
        (new TaskQ\Mailer($dsn))->send(['from' => 'shop@example.com', 'to' => $to, 'subject' => 'hi', 'text' => 'x']);
    } catch (TaskQ\MailException $e) {
    }
};
if (is_file("$dir/mail-before-start")) { $mail(file_get_contents("$dir/mail-before-start"), 'before@example.com'); }
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) use ($release, $mail) {
    if ($data === 'block') { record('blocked'); $release(); }
    if (str_starts_with($data, 'mail ')) { $mail(substr($data, 5), 'received@example.com'); }
    $s->send($fd, "ok:$data");
});
$server->on('Task', function ($s, $taskId, $src, $data) use ($release, $mail) {
    foreach ($data['mail'] ?? [] as [$dsn, $to]) { $mail($dsn, $to); }
    if (isset($data['many'])) {
        [$dsn, $tos] = $data['many'];
        (new TaskQ\Mailer($dsn))->sendMany(array_map(fn ($to) => ['from' => 'shop@example.com', 'to' => $to, 'subject' => 'hi', 'text' => 'x'], $tos));
    }
    record('task', ['label' => $data['label'] ?? null]);
    if (!empty($data['block'])) { $release(); }
    if (!empty($data['throw'])) { throw new RuntimeException('boom'); }
    if (!empty($data['exit'])) { exit(3); }
});
$server->on('TaskFailed', function ($s, $taskId, $data, $error) { record('failed', ['error' => $error]); });
try {
    $server->start();
} catch (TaskQ\Exception $e) {
    record('refused', ['message' => $e->getMessage()]);
}
PHP;

    use AdminListener;
    use SmtpSink;

    protected function tearDown(): void
    {
        $this->stopSinks();
        parent::tearDown();
    }

    private function server(array $settings = []): ServerProcess
    {
        return $this->startListening(self::SERVER, $settings, 3);
    }

    /** Submits each [data, options] with TaskClient::task(); every one must be acknowledged. */
    private function submit(array $tasks): void
    {
        $this->client('foreach (' . var_export($tasks, true) . ' as [$data, $options]) {'
            . ' if ($c->task($data, $options) === false) { fwrite(STDERR, "refused: {$c->errCode} {$c->errMsg}"); exit(5); } }');
    }

    /**
     * One HTTP/1.1 request over a plain socket (bounded by 5 s); returns
     * [status, headers with lower-case names, body].
     */
    private function http(string $path, ?string $authorization = null, string $method = 'GET'): array
    {
        $s = stream_socket_client("tcp://127.0.0.1:{$this->apiPort}", $errno, $errstr, 3);
        $this->assertNotFalse($s, "connect to the metrics port: $errno $errstr");
        stream_set_timeout($s, 5);
        fwrite($s, "$method $path HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            . ($authorization !== null ? "Authorization: $authorization\r\n" : '') . "\r\n");
        $raw = (string) stream_get_contents($s);
        $timedOut = stream_get_meta_data($s)['timed_out'];
        fclose($s);
        $this->assertFalse($timedOut, "no complete answer within 5 s; got: $raw");
        [$head, $body] = explode("\r\n\r\n", $raw, 2) + [1 => ''];
        $lines = explode("\r\n", $head);
        $this->assertMatchesRegularExpression('~^HTTP/1\.1 \d{3} ~', $lines[0]);
        $headers = [];
        foreach (array_slice($lines, 1) as $line) {
            [$name, $value] = explode(':', $line, 2);
            $headers[strtolower($name)] = trim($value);
        }
        return [(int) substr($lines[0], 9, 3), $headers, $body];
    }

    /**
     * Scrapes /metrics and parses it: every line must be a comment (HELP,
     * TYPE, EOF) or `name{labels} value`, every family must have HELP text
     * and a TYPE, every sample must belong to a described family. Returns
     * the samples as "name{labels}" => value.
     */
    private function scrape(?string $authorization = null): array
    {
        [$status, $headers, $body] = $this->http('/metrics', $authorization);
        $this->assertSame(200, $status, $body);
        $this->assertStringStartsWith('application/openmetrics-text', $headers['content-type']);
        $this->assertStringEndsWith("# EOF\n", $body);
        $help = $types = $samples = [];
        foreach (explode("\n", rtrim($body, "\n")) as $line) {
            if (preg_match('~^# (HELP|TYPE) (taskq_[a-z_]+) (.+)$~', $line, $m)) {
                $m[1] === 'HELP' ? $help[$m[2]] = $m[3] : $types[$m[2]] = $m[3];
                continue;
            }
            if ($line === '# EOF') {
                continue;
            }
            $this->assertMatchesRegularExpression('~^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_]+="[^"]*"(,[a-zA-Z_]+="[^"]*")*\})? (-?[0-9.eE+-]+|[+-]Inf|NaN)$~', $line, 'not a comment nor a sample');
            [$key, $value] = explode(' ', $line);
            $samples[$key] = (float) $value;
        }
        $this->assertSame(array_keys($types), array_keys($help), 'every family has HELP text and a TYPE');
        foreach ($help as $name => $text) {
            $this->assertGreaterThan(10, strlen($text), "$name HELP text");
        }
        foreach (array_keys($samples) as $key) {
            $family = preg_replace('~(_total|_bucket|_sum|_count)?(\{.*)?$~', '', $key);
            $this->assertArrayHasKey($family, $types, "$key belongs to a described family");
        }
        return $samples;
    }

    /** A histogram's _bucket samples (by bound, rising), _sum and _count, checked for consistency; returns [count, sum]. */
    private function histogram(array $samples, string $name): array
    {
        $buckets = [];
        foreach ($samples as $key => $value) {
            if (preg_match('~^' . $name . '_bucket\{le="([^"]+)"\}$~', $key, $m)) {
                $buckets[$m[1]] = $value;
            }
        }
        $this->assertGreaterThan(5, count($buckets), "$name has buckets");
        $this->assertArrayHasKey('+Inf', $buckets);
        $this->assertArrayHasKey("{$name}_sum", $samples);
        $this->assertArrayHasKey("{$name}_count", $samples);
        $this->assertSame($samples["{$name}_count"], $buckets['+Inf'], 'the +Inf bucket holds every observation');
        $previous = 0.0;
        foreach ($buckets as $le => $n) {
            $this->assertGreaterThanOrEqual($previous, $n, "$name buckets are cumulative (le=$le)");
            $previous = $n;
        }
        $this->assertGreaterThanOrEqual(0.0, $samples["{$name}_sum"]);
        return [$samples["{$name}_count"], $samples["{$name}_sum"]];
    }

    public function testTheCountersAndHistogramsMatchARunOfTasks(): void
    {
        $server = $this->server();
        $tasks = [];
        for ($i = 0; $i < 5; $i++) {
            $tasks[] = [['label' => "t$i"], []];
        }
        $tasks[] = [['label' => 'bad', 'throw' => true], []];
        $this->submit($tasks);
        // Bytes are those of onReceive messages and send() replies, as
        // stats() counts them: a task submission is not one.
        $this->assertSame('ok:ping', $this->client('$c->send("ping"); echo $c->recv(5);'));
        // The bad task runs twice (task_retry_max 1), then is given up.
        $this->waitEvents('task', 7, 10, $server);
        $this->waitEvents('failed', 1, 10, $server);
        $samples = $this->waitUntil(function () {
            $s = $this->scrape();
            return ($s['taskq_tasks_finished_total'] ?? 0) == 5 && ($s['taskq_tasks_failed_total'] ?? 0) == 1 ? $s : null;
        }, 10, 'the metrics to count 5 finished tasks and 1 failed', $server);

        $this->assertSame(6.0, $samples['taskq_tasks_submitted_total']);
        $this->assertSame(5.0, $samples['taskq_tasks_finished_total']);
        $this->assertSame(1.0, $samples['taskq_tasks_retried_total']);
        $this->assertSame(1.0, $samples['taskq_tasks_failed_total']);
        $this->assertSame(0.0, $samples['taskq_tasks_requeued_total']);
        foreach (['waiting', 'delayed', 'running'] as $state) {
            $this->assertSame(0.0, $samples["taskq_tasks{state=\"$state\"}"], $state);
        }
        [$runs] = $this->histogram($samples, 'taskq_task_run_seconds');
        $this->assertSame(5.0, $runs, 'one run time per finished task');
        [$waits] = $this->histogram($samples, 'taskq_task_queue_wait_seconds');
        $this->assertSame(7.0, $waits, 'one wait per hand-out: 5 tasks, and the bad one twice');
        $this->assertSame(2.0, $samples['taskq_connections_accepted_total'], 'the two clients');
        $this->assertSame(4.0, $samples['taskq_received_bytes_total'], 'ping');
        $this->assertSame(7.0, $samples['taskq_sent_bytes_total'], 'ok:ping');
        preg_match_all('~taskq_[a-z_]+~', (string) file_get_contents(__DIR__ . '/../contrib/grafana-taskq.json'), $m);
        $this->assertNotEmpty($m[0]);
        foreach (array_unique($m[0]) as $name) {
            $found = array_filter(array_keys($samples), fn ($key) => str_starts_with($key, $name));
            $this->assertNotEmpty($found, "the Grafana dashboard's $name is exposed");
        }
        foreach (['event', 'task'] as $kind) {
            foreach (['planned', 'task_timeout', 'died'] as $reason) {
                $this->assertSame(0.0, $samples["taskq_worker_restarts_total{kind=\"$kind\",reason=\"$reason\"}"], "$kind $reason");
            }
        }

        [$status, , $body] = $this->http('/nope');
        $this->assertSame(404, $status, $body);
        [$status] = $this->http('/metrics/x');
        $this->assertSame(404, $status);
        [$status, $headers] = $this->http('/metrics', null, 'POST');
        $this->assertSame(405, $status);
        $this->assertSame('GET, HEAD', $headers['allow']);

        $this->stopServer($server);
        $this->assertFalse(self::listening($this->apiPort), 'the metrics listener closed with the server');
        $this->assertStringContainsString("metrics served on http://127.0.0.1:{$this->apiPort}/metrics", $this->log());
    }

    public function testItAnswersWhileEveryWorkerIsBusy(): void
    {
        $server = $this->server();
        $blocker = $this->startPhp("<?php\n\$c = new TaskClient(TASKQ_SOCK_TCP);\n"
            . "if (!\$c->connect('127.0.0.1', {$this->port}, 3)) { exit(3); }\n"
            . "\$c->send('block');\necho \$c->recv(25);\n", 30);
        $this->submit([
            [['label' => 'a', 'block' => true], []],
            [['label' => 'b', 'block' => true], []],
            [['label' => 'c', 'block' => true], []],
            [['label' => 'later'], ['delay' => 60]],
        ]);
        $this->waitEvents('blocked', 1, 10, $server);
        $this->waitEvents('task', 2, 10, $server);

        $samples = $this->scrape();
        $this->assertSame(2.0, $samples['taskq_tasks{state="running"}'], 'both task workers run a task');
        $this->assertSame(1.0, $samples['taskq_tasks{state="waiting"}']);
        $this->assertSame(1.0, $samples['taskq_tasks{state="delayed"}']);
        $this->assertSame(4.0, $samples['taskq_tasks_submitted_total']);
        $this->assertGreaterThanOrEqual(1.0, $samples['taskq_connections'], 'the blocked client is connected');

        touch("$this->dir/release");
        $this->waitEvents('task', 3, 10, $server);
        [$exit, $out, $err] = $this->finishPhp($blocker, 15);
        $this->assertSame(0, $exit, $err);
        $this->assertSame('ok:block', $out);
    }

    public function testWorkerRestartsAreCountedByKindAndReason(): void
    {
        $server = $this->server(['task_retry_max' => 0, 'task_timeout' => 0.5]);
        $restarts = fn (array $s) => array_filter(
            $s,
            fn ($v, $k) => str_starts_with($k, 'taskq_worker_restarts_total') && $v > 0,
            ARRAY_FILTER_USE_BOTH,
        );
        $this->submit([[['label' => 'dies', 'exit' => true], []]]);
        $this->waitEvents('failed', 1, 10, $server);
        $this->waitEvents('workerstart', 4, 10, $server);
        $this->submit([[['label' => 'slow', 'block' => true], []]]);
        $this->waitEvents('failed', 2, 10, $server);
        $this->waitEvents('workerstart', 5, 10, $server);
        posix_kill($server->pid(), SIGUSR2);
        $this->waitEvents('workerstart', 7, 10, $server);
        $samples = $this->waitUntil(function () use ($restarts) {
            $s = $this->scrape();
            return array_sum($restarts($s)) >= 4 ? $s : null;
        }, 10, 'four restarts counted', $server);
        $this->assertSame([
            'taskq_worker_restarts_total{kind="task",reason="planned"}' => 2.0,
            'taskq_worker_restarts_total{kind="task",reason="task_timeout"}' => 1.0,
            'taskq_worker_restarts_total{kind="task",reason="died"}' => 1.0,
        ], $restarts($samples), 'the exit, the timeout kill, and the reload of both task workers');
        $this->assertSame(2.0, $samples['taskq_tasks_failed_total']);
    }

    /**
     * Mail sent with TaskQ\Mailer in task workers (send() and sendMany())
     * and in an event worker reaches the master's counters by outcome, from
     * a real SMTP server's answers; what the script sent before start() is
     * not counted (workers are forked after it).
     */
    public function testMailIsCountedBySmtpClassAcrossWorkers(): void
    {
        $sink = $this->startSink();
        $dsn = "smtp://127.0.0.1:$sink";
        $closed = "smtp://127.0.0.1:" . self::freePort();
        file_put_contents("$this->dir/mail-before-start", $dsn);
        $server = $this->server();
        $this->submit([
            [['label' => 'm1', 'mail' => [[$dsn, 'ok1@example.com'], [$dsn, 'reject1@example.com'], [$dsn, 'busy1@example.com']]], []],
            [['label' => 'm2', 'mail' => [[$dsn, 'ok2@example.com'], [$closed, 'ok3@example.com'], [$dsn, 'not an address']]], []],
            [['label' => 'm3', 'many' => [$dsn, ['ok4@example.com', 'reject2@example.com']]], []],
        ]);
        $this->assertSame("ok:mail $dsn", $this->client("\$c->send('mail $dsn'); echo \$c->recv(5);"));
        $this->waitEvents('task', 3, 15, $server);
        $failed = fn (string $class) => "taskq_mail_failed_total{class=\"$class\"}";
        $samples = $this->waitUntil(function () use ($failed) {
            $s = $this->scrape();
            return ($s['taskq_mail_sent_total'] ?? 0) >= 4 && ($s[$failed('5xx')] ?? 0) >= 2 ? $s : null;
        }, 10, 'the metrics to count 4 sent messages and 2 rejected with 5xx', $server);
        $this->assertSame(4.0, $samples['taskq_mail_sent_total'], 'ok1, ok2, ok4 and the event worker\'s');
        $this->assertSame(2.0, $samples[$failed('5xx')], 'reject1 and reject2');
        $this->assertSame(1.0, $samples[$failed('4xx')], 'busy1');
        $this->assertSame(1.0, $samples[$failed('connection')], 'the closed port');
        $this->assertSame(1.0, $samples[$failed('invalid')], 'not an address');
        $this->assertSame(0.0, $samples[$failed('tls')]);
        $this->assertSame(0.0, $samples[$failed('unsupported')]);
        $this->assertCount(5, $this->messages($sink), 'the four counted, and the one sent before start()');
        $this->assertArrayNotHasKey('taskq_backend_tasks{state="queued"}', $samples, 'no Redis, no Redis-wide counts');
    }

    public function testTheAuthTokenIsRequiredAsABearerToken(): void
    {
        $this->server(['auth_token' => 's3cret']);
        foreach ([null, 'Bearer wrong', 'Bearer s3cre', 'Basic czNjcmV0', 's3cret'] as $authorization) {
            [$status, $headers, $body] = $this->http('/metrics', $authorization);
            $this->assertSame(401, $status, var_export($authorization, true));
            $this->assertSame('Bearer realm="taskq"', $headers['www-authenticate']);
            $this->assertStringNotContainsString('taskq_', $body);
        }
        [$status] = $this->http('/elsewhere', 'Bearer wrong');
        $this->assertSame(401, $status, 'no page is shown without the token');
        $samples = $this->scrape('Bearer s3cret');
        $this->assertArrayHasKey('taskq_tasks_submitted_total', $samples);
        $this->assertSame(0.0, $samples['taskq_tasks_submitted_total']);
        [$status] = $this->http('/elsewhere', 'bearer s3cret');
        $this->assertSame(404, $status);
    }

    public function testABadAddressIsRefusedBySetAndABusyOneByStart(): void
    {
        $server = new TaskServer('127.0.0.1', 0);
        foreach (['localhost:9502', '127.0.0.1', '127.0.0.1:0', '::1:9502'] as $bad) {
            try {
                $server->set(['metrics_listen' => $bad]);
                $this->fail("metrics_listen '$bad' must be refused");
            } catch (TaskQ\Exception $e) {
                $this->assertSame("invalid value for option 'metrics_listen': '$bad' (allowed: an IP address and port, such as '127.0.0.1:9502' or '[::1]:9502' (port 1 to 65535))", $e->getMessage());
            }
        }
        $this->assertTrue($server->set(['metrics_listen' => '[::1]:9502']));
        unset($server);

        $busy = stream_socket_server('tcp://127.0.0.1:0', $errno, $errstr);
        $this->assertNotFalse($busy, $errstr);
        $name = stream_socket_get_name($busy, false);
        $server = $this->startServer(self::SERVER, ['TASKQ_SETTINGS' => json_encode(['metrics_listen' => $name])], false);
        $this->assertSame(0, $server->wait(10), 'start() returns instead of serving: ' . $server->stderr());
        fclose($busy);
        $refused = $this->events('refused');
        $this->assertCount(1, $refused, 'start() threw');
        $this->assertStringContainsString("cannot listen on metrics_listen $name: ", $refused[0]['message']);
        $this->assertStringContainsString('in use', $refused[0]['message']);
        $this->assertSame([], $this->events('workerstart'), 'no worker was forked');
        $this->assertSame([], $server->tree());
    }
}
