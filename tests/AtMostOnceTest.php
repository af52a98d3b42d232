<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;

/**
 * At-most-once where Swoole is at-most-once (issue 13.5): a task whose result
 * was delivered never runs again, $server->task()/taskwait() are not retried
 * by default, and acknowledged TaskClient jobs keep their retries.
 *
 * onReceive evaluates the PHP code a client sends ($s the server); a task's
 * data is PHP code onTask evaluates. Each run of a task is recorded.
 */
final class AtMostOnceTest extends TaskqTestCase
{
    private const SERVER = <<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'task_worker_num' => 1, 'task_retry_delay' => 0.05, 'log_file' => "$dir/taskq.log"]
    + (getenv('TASKQ_SETTINGS') ? json_decode(getenv('TASKQ_SETTINGS'), true) : []));
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) {
    $s->send($fd, serialize(evaluate($s, $data, ['fd' => $fd])));
});
$server->on('Task', function ($s, $taskId, $src, $data) use ($dir) {
    record('run', ['task_id' => $taskId, 'src' => $src]);
    return eval($data);
});
$server->on('Finish', function ($s, $taskId, $data) { record('finish', ['task_id' => $taskId, 'data' => $data]); });
$server->on('TaskFailed', function ($s, $taskId, $data, $error) { record('failed', ['task_id' => $taskId, 'error' => $error]); });
$server->start();
PHP;

    private function server(array $settings = []): ServerProcess
    {
        $server = $this->startServer(self::SERVER, $settings ? ['TASKQ_SETTINGS' => json_encode($settings)] : []);
        $this->waitEvents('workerstart', 2, 5, $server);
        return $server;
    }

    /** Lines appended to the test's "rows" file: the stand-in for a database INSERT. */
    private function rows(): array
    {
        return file("{$this->dir}/rows", FILE_IGNORE_NEW_LINES) ?: [];
    }

    /** Past every retry the settings would allow (0.05 + 0.1 s backoff), so a rerun would have happened. */
    private static function pastAnyRetry(): void
    {
        usleep(600_000);
    }

    public function testAServerTaskThatFinishesThenThrowsRunsOnceAndFiresOnFinishOnce(): void
    {
        $server = $this->server(['task_retry_max' => 2]);
        $reply = $this->evalInWorker('', <<<'CODE'
return $s->task('$s->finish("sent"); throw new RuntimeException("after finish");');
CODE);
        $this->assertSame(0, $reply['r']);
        $this->waitLog('after its result was delivered; it is not run again', 5, $server);
        self::pastAnyRetry();
        $this->assertCount(1, $this->events('run'), 'a task whose result was delivered never runs again, whatever task_retry_max says');
        $this->assertSame([[0, 'sent']], array_map(fn ($e) => [$e['task_id'], $e['data']], $this->events('finish')), 'onFinish once');
        $this->assertSame([], $this->events('failed'), 'its caller got its answer: no onTaskFailed');
        $this->assertStringContainsString('RuntimeException: after finish', $this->log(), 'the exception is logged');
    }

    public function testAServerTaskWhoseWorkerDiesAfterFinishIsNotRunAgain(): void
    {
        $server = $this->server(['task_retry_max' => 2]);
        $this->evalInWorker('', 'return $s->task(\'$s->finish("sent"); exit(3);\');');
        $this->waitLog('abnormal exit', 5, $server);
        $this->waitEvents('workerstart', 3, 5, $server);
        self::pastAnyRetry();
        $this->assertCount(1, $this->events('run'), 'its result was delivered: the crash does not run it again');
        $this->assertCount(1, $this->events('finish'));
        $this->assertSame([], $this->events('failed'));
    }

    public function testAThrowingServerTaskIsNotRetriedByDefaultAndIsReportedOnce(): void
    {
        $server = $this->server();
        $this->evalInWorker('', 'return $s->task(\'throw new RuntimeException("no retry");\');');
        $failed = $this->waitEvents('failed', 1, 5, $server);
        self::pastAnyRetry();
        $this->assertCount(1, $this->events('run'), 'task_retry_max defaults to 0 for $server->task(), as Swoole runs it once');
        $this->assertCount(1, $this->events('failed'));
        $this->assertStringContainsString('no retry', $failed[0]['error']);
        $this->assertStringContainsString('failed 1 time(s); given up', $this->log());
    }

    public static function taskwaitInserts(): array
    {
        return [
            'answered, then throws' => ['file_put_contents("$dir/rows", "row\n", FILE_APPEND); $s->finish("inserted"); throw new RuntimeException("late");', 'inserted'],
            'throws without answering' => ['file_put_contents("$dir/rows", "row\n", FILE_APPEND); throw new RuntimeException("db gone");', false],
        ];
    }

    /** @dataProvider taskwaitInserts */
    public function testATaskwaitInsertHappensOnceWhateverTheRetrySettings(string $task, mixed $answer): void
    {
        $server = $this->server(['task_retry_max' => 2]);
        $reply = $this->evalInWorker('', 'return $s->taskwait(' . var_export($task, true) . ', 1);');
        $this->assertSame($answer, $reply['r']);
        $this->waitUntil(fn () => str_contains($this->log(), 'not run again') || $this->events('failed'), 5, 'the run to be settled', $server);
        self::pastAnyRetry();
        $this->assertSame(['row'], $this->rows(), 'the INSERT ran once');
        $this->assertCount(1, $this->events('run'));
        $this->assertSame([], $this->events('finish'), 'a taskwait result never reaches onFinish');
    }

    public function testAThrowingClientJobIsStillRetriedByDefaultAndReachesOnTaskFailed(): void
    {
        $server = $this->server();
        $out = $this->client(<<<'CODE'
echo json_encode([$c->task('throw new RuntimeException("client job");'), $c->task('throw new RuntimeException("once");', ['max_attempts' => 1])]);
CODE);
        [$retried, $once] = json_decode($out, true);
        $this->assertIsInt($retried, $out);
        $failed = $this->waitUntil(fn () => count($this->events('failed')) >= 2 ? $this->events('failed') : null, 5, 'both jobs given up', $server);
        $runs = array_count_values(array_column($this->events('run'), 'task_id'));
        $this->assertSame(3, $runs[$retried], 'an acknowledged job whose producer has gone keeps task_retry_max 2 by default');
        $this->assertSame(1, $runs[$once], 'max_attempts per submission');
        $this->assertEqualsCanonicalizing([$retried, $once], array_column($failed, 'task_id'));
    }
}
