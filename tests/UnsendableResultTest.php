<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;

/**
 * An onTask result that cannot be serialized (a Closure, the server object)
 * is reported against its own task and never touches the next task on that
 * worker (issue 13.7, from Swoole's own task tests).
 *
 * onReceive evaluates the PHP code a client sends ($s the server); a task's
 * data is PHP code onTask evaluates, and its value is onTask's return value.
 */
final class UnsendableResultTest extends TaskqTestCase
{
    private const SERVER = <<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'task_worker_num' => 1, 'task_retry_max' => 2, 'task_retry_delay' => 0.05, 'log_file' => "$dir/taskq.log"]);
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) {
    $s->send($fd, serialize(evaluate($s, $data, ['fd' => $fd])));
});
$server->on('Task', function ($s, $taskId, $src, $data) {
    $w = [];
    set_error_handler(function ($no, $msg) use (&$w) { $w[] = $msg; return true; });
    try {
        $r = eval($data);
    } finally {
        restore_error_handler();
    }
    record('run', ['task_id' => $taskId, 'warnings' => $w]);
    return $r;
});
$server->on('Finish', function ($s, $taskId, $data) { record('finish', ['task_id' => $taskId, 'data' => $data]); });
$server->on('TaskFailed', function ($s, $taskId, $data, $error) { record('failed', ['task_id' => $taskId, 'error' => $error]); });
$server->start();
PHP;

    private function server(): ServerProcess
    {
        $server = $this->startServer(self::SERVER);
        $this->waitEvents('workerstart', 2, 5, $server);
        return $server;
    }

    public static function unsendable(): array
    {
        return [
            'a Closure' => ['return function () {};', "Serialization of 'Closure' is not allowed"],
            'the server object' => ['return $s;', "Serialization of 'TaskQ\\Server' is not allowed"],
        ];
    }

    /** @dataProvider unsendable */
    public function testAnUnsendableReturnValueIsLoggedAgainstItsOwnTaskAndSparesTheNext(string $bad, string $why): void
    {
        $server = $this->server();
        $reply = $this->evalInWorker('', 'return [$s->task(' . var_export($bad, true) . '), $s->task(\'return "next ok";\')];');
        [$badId, $nextId] = $reply['r'];
        $this->waitUntil(fn () => $this->events('finish'), 5, 'onFinish of the next task', $server);
        $this->assertSame([[$nextId, 'next ok']], array_map(fn ($e) => [$e['task_id'], $e['data']], $this->events('finish')), 'the next task is untouched by the bad one');
        $this->assertSame([], $this->events('failed'), 'no task failed');
        $this->assertCount(2, $this->events('run'), 'each ran once');
        $this->assertMatchesRegularExpression('/onTask result of task ' . $badId . ': .*' . preg_quote($why, '/') . '/', $this->log(), 'logged against its own task');
    }

    public function testFinishWithAnUnsendableValueWarnsReturnsFalseAndTheTaskGoesOn(): void
    {
        $server = $this->server();
        $reply = $this->evalInWorker('', <<<'CODE'
return [$s->task('return [$s->finish(function () {}), $s->finish("after")];'), $s->task('return "next ok";')];
CODE);
        [$badId, $nextId] = $reply['r'];
        $this->waitUntil(fn () => count($this->events('finish')) >= 3, 5, 'three results', $server);
        $finishes = array_map(fn ($e) => [$e['task_id'], $e['data']], $this->events('finish'));
        $this->assertSame([[$badId, 'after'], [$badId, [false, true]], [$nextId, 'next ok']], $finishes, 'finish() returned false for the Closure, true for the string; the next task is untouched');
        $run = $this->events('run')[0];
        $this->assertCount(1, $run['warnings']);
        $this->assertStringContainsString("finish(): the result cannot be sent: serialize() failed: Exception: Serialization of 'Closure' is not allowed", $run['warnings'][0]);
        $this->assertSame([], $this->events('failed'));
    }
}
