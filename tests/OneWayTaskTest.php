<?php
use TaskQ\Tests\Support\TaskqTestCase;

/**
 * $server->task() from the master's onStart and the manager's onManagerStart
 * is delivered one-way, as in Swoole (issue 13.7): the task runs, nobody
 * gets its result (no onFinish, finish() returns false with a warning), and
 * every refusal of task() says why.
 */
final class OneWayTaskTest extends TaskqTestCase
{
    private const SERVER = <<<'PHP'
function attempt(string $where, callable $call): void
{
    $w = [];
    set_error_handler(function ($no, $msg) use (&$w) { $w[] = $msg; return true; });
    try {
        $r = $call();
    } finally {
        restore_error_handler();
    }
    record($where, ['r' => $r, 'w' => $w]);
}
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'task_worker_num' => 1, 'log_file' => "$dir/taskq.log"]);
$server->on('Start', function ($s) {
    attempt('start_task', fn () => $s->task(['from' => 'master']));
    attempt('start_taskwait', fn () => $s->taskwait('x', 0.1));
});
$server->on('ManagerStart', function ($s) {
    attempt('manager_task', fn () => $s->task(['from' => 'manager']));
});
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) {});
$server->on('Task', function ($s, $taskId, $src, $data) {
    attempt('finish_in_one_way', fn () => $s->finish('result'));
    record('task', ['task_id' => $taskId, 'src' => $src, 'from' => $data['from']]);
    return 'returned';
});
$server->on('Finish', function ($s, $taskId, $data) { record('finish', ['task_id' => $taskId]); });
$server->on('WorkerError', function ($s) { attempt('worker_error_task', fn () => $s->task(['from' => 'late'])); });
$server->start();
PHP;

    public function testTasksFromOnStartAndOnManagerStartRunOneWay(): void
    {
        $server = $this->startServer(self::SERVER);
        $tasks = $this->waitUntil(fn () => count($this->events('task')) >= 2 ? $this->events('task') : null, 5, 'both one-way tasks run', $server);
        $this->assertEqualsCanonicalizing(['master', 'manager'], array_column($tasks, 'from'));
        foreach (['start_task', 'manager_task'] as $where) {
            $e = $this->events($where)[0];
            $this->assertSame([0, []], [$e['r'], $e['w']], "$where: task() returns its id (from 0 in each process), no warning");
        }
        foreach ($tasks as $t) {
            $this->assertSame([0, -1], [$t['task_id'], $t['src']], 'onTask sees the id task() returned, and no source worker');
        }
        foreach ($this->events('finish_in_one_way') as $f) {
            $this->assertFalse($f['r'], 'finish() in a one-way task returns false');
            $this->assertCount(1, $f['w']);
            $this->assertStringContainsString('its result has nowhere to go', $f['w'][0]);
        }
        $wait = $this->events('start_taskwait')[0];
        $this->assertFalse($wait['r']);
        $this->assertSame(['TaskQ\\Server::taskwait(): taskwait() can only be used in an event worker; task() in onStart and onManagerStart is one-way'], $wait['w']);

        // a task worker crash runs onWorkerError in the manager: task() there is refused, saying why
        posix_kill($tasks[0]['pid'], SIGKILL);
        $late = $this->waitEvents('worker_error_task', 1, 5, $server)[0];
        $this->assertFalse($late['r']);
        $this->assertSame(['TaskQ\\Server::task(): task() cannot be used here: in the master and manager processes only task() works, one-way, in onStart and onManagerStart'], $late['w']);
        $this->assertSame([], $this->events('finish'), 'no onFinish anywhere');
        $this->assertStringNotContainsString('ERROR', $this->log());
    }

    /** The master cannot block on its own socket before its loop runs: what does not fit is refused, and says so. */
    public function testOneWayTasksThatDoNotFitBeforeTheMasterRunsAreRefusedWithAReason(): void
    {
        $server = $this->startServer(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'task_worker_num' => 1, 'log_file' => "$dir/taskq.log"]);
$server->on('Start', function ($s) {
    $w = [];
    set_error_handler(function ($no, $msg) use (&$w) { $w[] = $msg; return true; });
    $r = [];
    for ($i = 0; $i < 40; $i++) {
        $r[] = $s->task("$i:" . str_repeat('x', 100_000));
    }
    restore_error_handler();
    record('start', ['r' => $r, 'w' => $w]);
});
$server->on('Receive', function ($s, $fd, $rid, $data) {});
$server->on('Task', function ($s, $taskId, $src, $data) { record('task', ['n' => (int) $data]); });
$server->start();
PHP);
        $start = $this->waitEvents('start', 1, 5, $server)[0];
        $sent = array_values(array_filter($start['r'], 'is_int'));
        $this->assertNotEmpty($sent, 'tasks that fit were sent');
        $this->assertLessThan(40, count($sent), 'four megabytes do not fit in the socket buffer');
        $this->assertSame(range(0, count($sent) - 1), $sent, 'ids from 0, then only false');
        $this->assertSame(array_fill(0, 40 - count($sent), false), array_slice($start['r'], count($sent)));
        $this->assertStringContainsString('cannot send the task to the master process: Resource temporarily unavailable', $start['w'][0]);
        $this->assertCount(40 - count($sent), $start['w']);
        foreach (array_slice($start['w'], 1) as $w) {
            $this->assertStringContainsString('an earlier task() in this callback could not be sent to the master process', $w);
        }
        $ran = $this->waitUntil(fn () => count($this->events('task')) >= count($sent) ? $this->events('task') : null, 5, 'the tasks that were sent', $server);
        $this->assertEqualsCanonicalizing($sent, array_column($ran, 'n'), 'each sent task ran, none of the refused ones');
    }
}
