<?php
use TaskQ\Tests\Support\TaskqTestCase;

/**
 * After start(), $server->setting holds what Swoole fills in (issue 13.3):
 * worker_num, task_worker_num, output_buffer_size, max_connection and the
 * other defaults, in event workers and task workers alike, so scripts can
 * tell task workers apart with `$workerId >= $serv->setting['worker_num']`.
 */
final class StartedSettingTest extends TaskqTestCase
{
    public function testOnWorkerStartSeesSwoolesDefaultsInEveryWorker(): void
    {
        $server = $this->startServer(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['task_worker_num' => 2, 'max_request' => 500, 'log_file' => "$dir/taskq.log"]);
record('before', ['setting' => $server->setting]);
$server->on('WorkerStart', function ($s, $id) {
    record('workerstart', ['id' => $id, 'setting' => $s->setting, 'is_task' => $id >= $s->setting['worker_num'], 'taskworker' => $s->taskworker]);
});
$server->on('Receive', function ($s, $fd, $rid, $data) {});
$server->on('Task', function ($s, $taskId, $src, $data) {});
$server->start();
PHP);
        $workers = (int) shell_exec('nproc');
        $starts = $this->waitEvents('workerstart', $workers + 2, 10, $server);
        $this->assertSame(['task_worker_num' => 2, 'max_request' => 500, 'log_file' => "{$this->dir}/taskq.log"], $this->events('before')[0]['setting'], 'before start(): only what set() was given');
        foreach ($starts as $e) {
            $setting = $e['setting'];
            $this->assertSame($e['taskworker'], $e['is_task'], "worker {$e['id']}: \$workerId >= setting['worker_num'] tells task workers apart");
            $this->assertSame($workers, $setting['worker_num'], 'the default worker_num (CPU count)');
            $this->assertSame(2, $setting['task_worker_num']);
            $this->assertSame(500, $setting['max_request'], 'what set() was given stays');
            $this->assertSame(4294967295, $setting['output_buffer_size']);
            $this->assertSame(4294967295, $setting['buffer_output_size']);
            $this->assertSame(100000, $setting['max_connection']);
            $this->assertSame(2, $setting['dispatch_mode']);
            $this->assertSame(1, $setting['task_ipc_mode']);
            $this->assertSame(0, $setting['task_max_request']);
            $this->assertSame(3, $setting['max_wait_time']);
            $this->assertSame(false, $setting['daemonize']);
            $this->assertSame('/tmp', $setting['task_tmpdir']);
        }
    }
}
