<?php
use TaskQ\Tests\Support\TaskqTestCase;

/**
 * The onTask return value of a task no worker dispatched (a TaskClient job)
 * has no onFinish to go to, so it is dropped where it is made: it is not
 * serialize()d (an object's __serialize() does not run, a Closure logs no
 * error) and not sent to the master. A task an event worker dispatched
 * still brings its return value to onFinish. With and without a task_store,
 * where every task reports to the master over the socket.
 */
final class ResultWithoutDestinationTest extends TaskqTestCase
{
    private const SERVER = <<<'PHP'
final class Noisy
{
    public function __construct(public int $src) {}
    public function __serialize(): array
    {
        record('serialized', ['src' => $this->src]);
        return ['src' => $this->src];
    }
    public function __unserialize(array $data): void
    {
        $this->src = $data['src'];
    }
}
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'task_worker_num' => 1, 'task_retry_delay' => 0.05, 'log_file' => "$dir/taskq.log"]
    + (getenv('TASKQ_SETTINGS') ? json_decode(str_replace('$dir', $dir, getenv('TASKQ_SETTINGS')), true) : []));
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) {
    record('dispatched', ['id' => $s->task(['kind' => 'object'])]);
});
$server->on('Task', function ($s, $taskId, $src, $data) {
    record('run', ['task_id' => $taskId, 'src' => $src, 'kind' => $data['kind']]);
    return match ($data['kind']) {
        'object' => new Noisy($src),
        'closure' => function () {},
        'true' => true,
    };
});
$server->on('Finish', function ($s, $taskId, $data) {
    record('finish', ['task_id' => $taskId, 'class' => get_class($data), 'src' => $data->src]);
});
$server->on('TaskFailed', function ($s, $taskId, $data, $error) { record('failed', ['task_id' => $taskId, 'error' => $error]); });
$server->start();
PHP;

    public static function queues(): array
    {
        return [
            'in memory' => [[]],
            'with a task_store' => [['task_store' => '$dir/store']],
        ];
    }

    /** @dataProvider queues */
    public function testAClientJobsReturnValueIsNeitherSerializedNorSentAndAWorkersTaskStillFinishes(array $settings): void
    {
        $server = $this->startServer(self::SERVER, $settings ? ['TASKQ_SETTINGS' => json_encode($settings)] : []);
        $this->waitEvents('workerstart', 2, 5, $server);

        $ids = json_decode($this->client(<<<'PHP'
$ids = [$c->task(['kind' => 'object']), $c->task(['kind' => 'closure']), $c->task(['kind' => 'true'])];
echo json_encode($ids);
PHP), true);
        $this->assertCount(3, array_filter($ids, 'is_int'), 'three jobs acknowledged');
        $runs = $this->waitEvents('run', 3, 5, $server);
        $this->assertSame(['object', 'closure', 'true'], array_column($runs, 'kind'), 'each job ran once, in order');
        $this->assertSame([-1, -1, -1], array_column($runs, 'src'), 'no worker dispatched them');

        $this->client('$c->send("go"); echo "sent";');
        $this->waitEvents('finish', 1, 5, $server);
        $dispatched = $this->events('dispatched')[0]['id'];
        usleep(300_000); // past the retry delay: a job counted as failed would have run again

        $this->assertSame([['src' => 0]], array_map(fn ($e) => ['src' => $e['src']], $this->events('serialized')),
            'only the return value of the task the event worker dispatched was serialized');
        $this->assertSame([['task_id' => $dispatched, 'class' => 'Noisy', 'src' => 0]],
            array_map(fn ($e) => ['task_id' => $e['task_id'], 'class' => $e['class'], 'src' => $e['src']], $this->events('finish')),
            'that one reached onFinish, whole');
        $this->assertCount(4, $this->events('run'), 'nothing ran twice');
        $this->assertSame([], $this->events('failed'));
        $log = $this->log();
        $this->assertStringNotContainsString('onTask result of task', $log, 'a Closure nobody receives is not serialized, so nothing fails');
        $this->assertStringNotContainsString('ERROR', $log);
    }
}
