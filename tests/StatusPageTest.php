<?php
use TaskQ\Tests\Support\AdminListener;
use TaskQ\Tests\Support\ProcessTree;
use TaskQ\Tests\Support\RedisServer;
use TaskQ\Tests\Support\ServerProcess;
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\WebDriver;

require_once __DIR__ . '/Support/WebDriver.php';

/**
 * The status page (issue 16, "Status page") in a real browser: headless
 * Chromium driven by chromedriver over WebDriver, against a real server
 * with `metrics_listen`. The page lists the workers with their pids, the
 * queue numbers and the charts drawn from the history the master kept
 * before the page was opened; a failed task shows its error, and its Retry
 * button re-queues it (the task runs again). With an `auth_token` the page
 * asks for the token and shows nothing until it is right; without one,
 * another site's page cannot act on the API. Batches get a progress bar
 * each (done green, failed red) with their failures grouped by error; a
 * batch name or error is shown as text, never as markup. Screenshots are
 * saved under tests/output/.
 */
final class StatusPageTest extends TaskqTestCase
{
    /**
     * onTask records its data; an array payload with 'block' waits (bounded)
     * for the file "release", one with 'fail' throws until the file "fixed"
     * exists.
     */
    private const SERVER = <<<'PHP'
$settings = json_decode(getenv('TASKQ_SETTINGS'), true)
    + ['worker_num' => 1, 'task_worker_num' => 2, 'log_file' => "$dir/taskq.log"];
$server = new TaskServer('127.0.0.1', $port);
$server->set($settings);
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) {});
$server->on('Task', function ($s, $taskId, $src, $data) use ($dir) {
    if (is_array($data) && !empty($data['block'])) {
        $deadline = microtime(true) + 30;
        while (!file_exists("$dir/release") && microtime(true) < $deadline) { usleep(5000); }
    }
    if (is_array($data) && !empty($data['fail']) && !file_exists("$dir/fixed")) {
        throw new RuntimeException("mailbox unavailable for task {$data['fail']}");
    }
    record('task', ['data' => $data]);
});
$server->start();
PHP;

    /** Where the screenshot goes (git-ignored). */
    private const OUTPUT = __DIR__ . '/output';

    use AdminListener;

    private ?WebDriver $browser = null;
    private ?RedisServer $redis = null;
    private string $tag = '';

    protected function setUp(): void
    {
        $missing = WebDriver::missing();
        if ($missing !== null) {
            $this->markTestSkipped("the browser test needs Chromium: $missing");
        }
        parent::setUp();
        $this->tag = 'browser-' . bin2hex(random_bytes(6));
    }

    protected function tearDown(): void
    {
        try {
            $this->browser?->stop();
        } finally {
            $this->browser = null;
            $this->redis?->kill();
            $this->redis = null;
            if ($this->tag !== '') {
                ProcessTree::killAll($this->tag);
            }
            parent::tearDown();
        }
    }

    private function server(array $settings = []): ServerProcess
    {
        return $this->startListening(self::SERVER, $settings, 3);
    }

    private function browser(): WebDriver
    {
        $this->browser = WebDriver::start($this->tag, self::freePort(), $this->dir, 1280, 1000);
        return $this->browser;
    }

    /** One API request (bounded by 5 s); returns [status, decoded JSON]. */
    private function api(string $method, string $path, ?array $body = null, ?string $token = null, array $extra = []): array
    {
        $headers = ($token === null ? '' : "Authorization: Bearer $token\r\n") . implode('', array_map(fn ($h) => "$h\r\n", $extra));
        $http = ['method' => $method, 'timeout' => 5, 'ignore_errors' => true];
        if ($body !== null) {
            $json = json_encode($body);
            $headers .= "Content-Type: application/json\r\nContent-Length: " . strlen($json) . "\r\n";
            $http['content'] = $json;
        }
        $http['header'] = $headers;
        $raw = @file_get_contents("http://127.0.0.1:{$this->apiPort}$path", false, stream_context_create(['http' => $http]));
        $this->assertNotFalse($raw, "$method $path answered within 5 s");
        $status = (int) explode(' ', $http_response_header[0])[1];
        return [$status, json_decode($raw, true)];
    }

    private function submit(array $task): int
    {
        [$status, $json] = $this->api('POST', '/tasks', $task);
        $this->assertSame(200, $status, json_encode($json));
        return $json['id'];
    }

    /** Polls `$cond` (which may throw while the page is still rendering) for at most `$timeout` s. */
    private function waitPage(callable $cond, float $timeout, string $what, ServerProcess $server): mixed
    {
        $last = null;
        $deadline = microtime(true) + $timeout;
        do {
            try {
                $v = $cond();
                if ($v) {
                    return $v;
                }
            } catch (\RuntimeException $e) {
                $last = $e->getMessage();
            }
            usleep(100000);
        } while (microtime(true) < $deadline);
        $this->fail("timed out after {$timeout}s waiting for the page to show $what" . ($last ? " (last error: $last)" : '') . "\nstderr:\n" . $server->stderr());
    }

    public function testThePageShowsWorkersQueueAndFailuresAndItsRetryButtonRequeues(): void
    {
        $server = $this->server();
        $failed = $this->submit(['data' => ['fail' => 7], 'max_attempts' => 1]);
        $this->waitUntil(fn () => count($this->api('GET', '/api/failed')[1]) === 1, 10, 'the task in the failed list', $server);
        $running = [$this->submit(['data' => ['block' => 1]]), $this->submit(['data' => ['block' => 2]])];
        foreach ([3, 4, 5] as $n) {
            $this->submit(['data' => ['block' => $n]]);
        }
        $stats = $this->waitUntil(function () {
            $stats = $this->api('GET', '/api/stats')[1];
            return $stats['tasks']['running'] === 2 && $stats['tasks']['waiting'] === 3 ? $stats : null;
        }, 10, 'two tasks running and three waiting', $server);
        // The history the page draws was kept before it was opened.
        $this->waitUntil(fn () => count($this->api('GET', '/api/history')[1]['time']) >= 3, 10, 'three history samples', $server);

        $page = $this->browser();
        $page->open("http://127.0.0.1:{$this->apiPort}/");

        $pids = array_column($stats['workers'], 'pid', 'id');
        $this->assertCount(3, $pids);
        $this->waitPage(fn () => $page->text('#workers tbody') !== '', 10, 'the workers', $server);
        $this->waitPage(fn () => $page->text('#batches-note') === 'No batches.', 10, 'no batches', $server);
        $this->assertFalse($page->displayed('#batches'), 'and no empty table');
        foreach ($pids as $id => $pid) {
            $row = $page->text("#workers tr[data-worker=\"$id\"]");
            $this->assertStringContainsString((string) $pid, $row, "worker $id is listed with its pid");
        }
        $this->assertSame('3', $page->text('#n-waiting'));
        $this->assertSame('2', $page->text('#n-running'));
        $this->assertSame('1', $page->text('#n-failed'));
        $busy = $page->text('#workers tbody');
        foreach ($running as $id) {
            $this->assertStringContainsString("#$id for", $busy, "the running task $id is shown with its worker");
        }
        $this->assertSame(2, substr_count($busy, 'busy'), $busy);
        $row = $page->text("#failed tr[data-failed=\"$failed\"]");
        $this->assertStringContainsString('mailbox unavailable for task 7', $row, 'the failure shows its error');
        $this->assertStringContainsString('"fail"', $row, 'and its data');
        $points = $page->script('return [...document.querySelectorAll("#chart-depth polyline")].map(p => p.points.length);');
        $this->assertCount(3, $points, 'waiting, running and delayed are drawn');
        $this->assertGreaterThanOrEqual(3, max($points), 'the depth chart starts before the page was opened');
        $page->screenshot(self::OUTPUT . '/status-page.png');
        $this->assertGreaterThan(10000, filesize(self::OUTPUT . '/status-page.png'));

        touch("$this->dir/release");
        $this->waitEvents('task', 5, 30, $server);
        touch("$this->dir/fixed");
        $this->assertSame([], array_filter($this->events('task'), fn ($e) => isset($e['data']['fail'])), 'the failed task has not run again yet');
        $page->click("#failed tr[data-failed=\"$failed\"] button.retry");
        $again = $this->waitUntil(
            fn () => array_values(array_filter($this->events('task'), fn ($e) => isset($e['data']['fail']))),
            10,
            'the retried task to run',
            $server
        );
        $this->assertSame(['fail' => 7], $again[0]['data'], 'Retry re-queued the failed task and it ran');
        $this->waitPage(fn () => $page->text('#failed-note') === 'No failed tasks kept.', 10, 'no failures left', $server);
        $this->waitPage(fn () => $page->text('#n-finished') === '6' && $page->text('#n-waiting') === '0', 10, 'the finished tasks counted', $server);
        $this->assertStringContainsString('idle', $page->text('#workers tbody'));
    }

    /** The row of batch `$name` as [classes, cells' text, bar widths in %], found by its name (data-batch is set as text). */
    private function batchRow(WebDriver $page, string $name): ?array
    {
        return $page->script(
            'const row = [...document.querySelectorAll("#batches tbody tr")].find(r => r.dataset.batch === arguments[0]);
             if (!row) return null;
             const bar = row.querySelector(".bar-track");
             return [row.className, [...row.cells].map(c => c.textContent),
                 [parseFloat(bar.querySelector(".done").style.width), parseFloat(bar.querySelector(".failed").style.width)]];',
            [$name]
        );
    }

    /**
     * A batch partly done: two tasks done, three failed (two with the same
     * error), two held running. Its bar, counts and grouped failures show
     * on the page; once the held tasks are released it shows finished.
     */
    public function testABatchShowsItsProgressBarAndFailuresUntilItFinishes(): void
    {
        $server = $this->server();
        $batch = 'newsletter 12';
        $tasks = fn (array $data) => ['tasks' => array_map(fn ($d) => ['data' => $d, 'batch' => $batch, 'max_attempts' => 1], $data)];
        [$status, $json] = $this->api('POST', '/tasks', $tasks([['fail' => 'x'], ['n' => 1], ['fail' => 'x'], ['n' => 2], ['fail' => 'y']]));
        $this->assertSame(200, $status, json_encode($json));
        $this->waitUntil(fn () => $this->api('GET', '/api/batches?name=' . urlencode($batch))[1]['pending'] === 0, 10, 'the first five tasks ended', $server);
        // A finished batch newer than the open one is listed after it.
        $this->submit(['data' => ['n' => 3], 'batch' => 'done already']);
        $this->waitUntil(fn () => $this->api('GET', '/api/batches?name=done+already')[1]['finished_at'] !== null, 10, 'the small batch finished', $server);
        [$status, $json] = $this->api('POST', '/tasks', $tasks([['block' => 1], ['block' => 2]]));
        $this->assertSame(200, $status, json_encode($json));
        $this->waitUntil(fn () => $this->api('GET', '/api/stats')[1]['tasks']['running'] === 2, 10, 'the two held tasks running', $server);

        $page = $this->browser();
        $page->open("http://127.0.0.1:{$this->apiPort}/");
        $row = $this->waitPage(fn () => $this->batchRow($page, $batch), 10, 'the batch', $server);
        [$class, $cells, $widths] = $row;
        $this->assertSame('running', $class);
        $this->assertSame($batch, $cells[0]);
        $this->assertSame('2/7', $cells[2], 'done/total');
        $this->assertSame('3', $cells[3], 'failed');
        $this->assertStringStartsWith('started ', $cells[4]);
        $this->assertStringContainsString('2× RuntimeException: mailbox unavailable for task x in ', $cells[5]);
        $this->assertStringContainsString('1× RuntimeException: mailbox unavailable for task y in ', $cells[5]);
        $this->assertEqualsWithDelta(200 / 7, $widths[0], 0.01, 'green: 2 of 7 done');
        $this->assertEqualsWithDelta(300 / 7, $widths[1], 0.01, 'red: 3 of 7 failed');
        $this->assertSame('2 done, 3 failed, 2 pending', $page->script('return document.querySelector("#batches tbody tr .bar-track").title;'));
        $this->assertSame(
            [$batch, 'done already'],
            $page->script('return [...document.querySelectorAll("#batches tbody tr")].map(r => r.cells[0].textContent);'),
            'the unfinished batch first'
        );
        $this->assertSame('', $page->text('#batches-note'));
        $page->screenshot(self::OUTPUT . '/status-page-batches.png');

        touch("$this->dir/release");
        [$class, $cells, $widths] = $this->waitPage(function () use ($page, $batch) {
            $row = $this->batchRow($page, $batch);
            return $row !== null && $row[0] === 'finished' ? $row : null;
        }, 10, 'the batch finished', $server);
        $this->assertSame('4/7', $cells[2]);
        $this->assertSame('3', $cells[3]);
        $this->assertStringStartsWith('finished ', $cells[4]);
        $this->assertEqualsWithDelta(400 / 7, $widths[0], 0.01);
        $this->assertEqualsWithDelta(300 / 7, $widths[1], 0.01, 'the bar is full: nothing pending');
    }

    /**
     * Batch names and errors are user data: a name or an error holding
     * markup is shown literally and runs nothing. Beyond 20 batches the
     * page says how many more there are.
     */
    public function testBatchNamesAndErrorsAreShownAsTextAndTheListIsCapped(): void
    {
        $server = $this->server();
        $ended = function (int $n) {
            $tasks = $this->api('GET', '/api/stats')[1]['tasks'];
            return $tasks['finished'] + $tasks['failed'] === $n;
        };
        $tasks = [];
        for ($i = 1; $i <= 21; $i++) {
            $tasks[] = ['data' => ['n' => $i], 'batch' => sprintf('batch %02d', $i)];
        }
        [$status, $json] = $this->api('POST', '/tasks', ['tasks' => $tasks]);
        $this->assertSame(200, $status, json_encode($json));
        $this->waitUntil(fn () => $ended(21), 10, 'the 21 tasks ended', $server);
        // Held open by its second task, so it is listed first.
        $hostile = '<img src=x onerror="window.pwned=1">';
        $this->submit(['data' => ['fail' => '<b id=bold>x</b>'], 'batch' => $hostile, 'max_attempts' => 1]);
        $this->submit(['data' => ['block' => 1], 'batch' => $hostile]);
        $this->waitUntil(fn () => $ended(22), 10, 'the hostile batch\'s failure', $server);

        $page = $this->browser();
        $page->open("http://127.0.0.1:{$this->apiPort}/");
        $this->waitPage(fn () => $page->text('#batches-note') === '2 more not shown.', 10, 'the note on the two batches left out', $server);
        $this->assertSame(20, $page->script('return document.querySelectorAll("#batches tbody tr").length;'));
        [$status, $recent] = $this->api('GET', '/api/batches?recent=20');
        $this->assertSame(200, $status);
        $this->assertSame(22, $recent['total']);
        $this->assertCount(20, $recent['batches']);
        $shown = $page->script('return [...document.querySelectorAll("#batches tbody tr")].map(r => r.cells[0].textContent);');
        $this->assertSame(array_column($recent['batches'], 'batch'), $shown, 'in the API\'s order');
        $this->assertSame($hostile, $shown[0], json_encode($recent));
        [, $cells] = $this->batchRow($page, $hostile);
        $this->assertSame($hostile, $cells[0], 'the name is shown literally');
        $this->assertStringContainsString('1× RuntimeException: mailbox unavailable for task <b id=bold>x</b> in ', $cells[5], 'and the error');
        $this->assertSame(0, $page->script('return document.querySelectorAll("#batches img, #batches b").length;'), 'no markup was made');
        $this->assertNull($page->script('return window.pwned === undefined ? null : window.pwned;'), 'no handler ran');
    }

    /** With task_backend (Redis) the master tracks no batches: the page says so instead of an error. */
    public function testWithARedisBackendThePageSaysBatchesAreNotTracked(): void
    {
        $this->redis = new RedisServer("$this->dir/redis", self::freePort());
        $this->redis->start();
        $server = $this->server([
            'task_backend' => $this->redis->dsn(),
            'task_queue' => 'status',
            'task_consumer' => 'status-a',
            'task_backend_timeout' => 1,
        ]);
        $this->assertSame(501, $this->api('GET', '/api/batches?recent=20')[0]);
        $page = $this->browser();
        $page->open("http://127.0.0.1:{$this->apiPort}/");
        $this->waitPage(
            fn () => $page->text('#batches-note') === 'Batches are not tracked with task_backend (Redis): each server sees only the tasks it ran.',
            10,
            'the note on batches with task_backend',
            $server
        );
        $this->assertFalse($page->displayed('#batches'));
    }

    /**
     * Without an auth_token, a page of another site that the operator's
     * browser opens must not be able to act on the API: a plain POST needs
     * no CORS preflight and would otherwise be answered.
     */
    public function testAnotherSitesPageCannotRetryPurgeOrStop(): void
    {
        $server = $this->server();
        $failed = $this->submit(['data' => ['fail' => 3], 'max_attempts' => 1]);
        $this->waitUntil(fn () => count($this->api('GET', '/api/failed')[1]) === 1, 10, 'the task in the failed list', $server);

        // Another origin on this host: a page served by PHP's built-in server.
        $site = "$this->dir/site";
        mkdir($site);
        file_put_contents("$site/index.html", '<!DOCTYPE html><title>elsewhere</title><p>elsewhere</p>');
        $sitePort = self::freePort();
        $php = proc_open(
            ['timeout', '60', PHP_BINARY, '-n', '-S', "127.0.0.1:$sitePort", '-t', $site],
            [0 => ['file', '/dev/null', 'r'], 1 => ['file', "$this->dir/site.log", 'w'], 2 => ['file', "$this->dir/site.log", 'a']],
            $pipes,
            null,
            array_merge(getenv(), ['TASKQ_TEST_TAG' => $this->tag])
        );
        try {
            $this->waitUntil(fn () => self::listening($sitePort), 5, 'the other site listening', $server);
            $page = $this->browser();
            $page->open("http://127.0.0.1:$sitePort/");
            $api = "http://127.0.0.1:{$this->apiPort}";
            // Each fetch resolves once the server answered (opaque to the page).
            $sent = $page->script(
                'const api = arguments[0];
                 const post = (path, body) => fetch(api + path, {method: "POST", mode: "no-cors", body})
                     .then(() => "answered", (e) => "error: " + e.message);
                 return Promise.all([
                     post("/api/failed/retry", "{\"all\": true}"),
                     post("/tasks", "{\"data\": {\"fail\": 9}}"),
                     post("/api/stop", ""),
                 ]);',
                [$api]
            );
            $this->assertSame(['answered', 'answered', 'answered'], $sent, 'the requests reached the server');
        } finally {
            ProcessTree::killAll($this->tag);
            proc_close($php);
        }
        // POST /api/stop would stop the server 50 ms after answering.
        usleep(500000);
        $this->assertSame([$failed], array_column($this->api('GET', '/api/failed')[1], 'id'));
        [$status, $stats] = $this->api('GET', '/api/stats');
        $this->assertSame(200, $status, 'not stopped');
        $this->assertNotEmpty($server->tree());
        $this->assertSame(1, $stats['tasks']['failed'], 'not retried (it would have failed again)');
        $this->assertSame(1, $stats['tasks']['submitted'], 'nothing queued');
        $this->assertSame([], $this->events('task'));

        [$status, $json] = $this->api('POST', '/api/failed/retry', ['all' => true], null, ['Origin: http://evil.example']);
        $this->assertSame(403, $status);
        $this->assertStringContainsString("requests from another site's page are refused", $json['error']);
        [$status, $json] = $this->api('POST', '/api/failed/retry', ['all' => true], null, ['Origin: http://127.0.0.1:' . $this->apiPort]);
        $this->assertSame([200, ['retried' => 1]], [$status, $json], 'the listener\'s own origin, as the status page sends it');
    }

    public function testWithAnAuthTokenThePageAsksForTheTokenAndKeepsItInTheTab(): void
    {
        $server = $this->server(['auth_token' => 's3cret']);
        $this->assertSame(401, $this->api('GET', '/api/stats')[0], 'the API still wants the token');
        $page = $this->browser();
        $page->open("http://127.0.0.1:{$this->apiPort}/status");
        $this->waitPage(fn () => $page->displayed('#login'), 10, 'the token form', $server);
        $this->assertFalse($page->displayed('#main'), 'nothing is shown without the token');

        $page->type('#token', 'wrong');
        $page->click('#login button');
        $this->waitPage(fn () => $page->text('#login-error') === 'The token was refused.', 10, 'the wrong token refused', $server);
        $this->assertFalse($page->displayed('#main'));

        $page->type('#token', 's3cret');
        $page->click('#login button');
        $this->waitPage(fn () => $page->displayed('#main') && $page->text('#workers tbody') !== '', 10, 'the page once the token is right', $server);
        $this->assertFalse($page->displayed('#login'));
        $this->assertSame('s3cret', $page->script('return sessionStorage.getItem("taskq.token");'), 'kept in this tab only');
        $this->assertNull($page->script('return localStorage.getItem("taskq.token");'));
        $stats = $this->api('GET', '/api/stats', null, 's3cret')[1];
        foreach ($stats['workers'] as $w) {
            $this->assertStringContainsString((string) $w['pid'], $page->text("#workers tr[data-worker=\"{$w['id']}\"]"));
        }

        // A reload in the same tab keeps the token; the URL never holds it.
        $page->open("http://127.0.0.1:{$this->apiPort}/status");
        $this->waitPage(fn () => $page->displayed('#main') && $page->text('#workers tbody') !== '', 10, 'the page after a reload', $server);
        $this->assertStringNotContainsString('s3cret', $page->script('return location.href;'));
    }
}
