<?php
use TaskQ\Tests\Support\TaskqTestCase;

/**
 * task_max_request is exact (issue 13.7, from Swoole's own task tests): a
 * task worker process runs at most its limit (grace included), also when
 * tasks travel to it in windows, and no task is lost or run twice.
 */
final class TaskMaxRequestTest extends TaskqTestCase
{
    private const SERVER = <<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'task_worker_num' => 1, 'log_file' => "$dir/taskq.log"] + json_decode(getenv('TASKQ_SETTINGS'), true));
$server->on('WorkerStart', function ($s, $id) { record('workerstart', ['id' => $id]); });
$server->on('Receive', function ($s, $fd, $rid, $data) {});
$server->on('Task', function ($s, $taskId, $src, $data) { record('run', ['n' => $data]); });
$server->start();
PHP;

    /** Runs 100 tasks; returns how many each task worker process ran, in the order the processes appeared. */
    private function runHundred(array $settings): array
    {
        $server = $this->startServer(self::SERVER, ['TASKQ_SETTINGS' => json_encode($settings)]);
        $this->waitEvents('workerstart', 2, 5, $server);
        $out = $this->client('echo json_encode($c->taskMulti(array_map(fn ($i) => "t$i", range(0, 99))));');
        $this->assertCount(100, array_filter(json_decode($out, true), 'is_int'), $out);
        $runs = $this->waitUntil(fn () => count($this->events('run')) >= 100 ? $this->events('run') : null, 20, '100 tasks run', $server);
        $names = array_column($runs, 'n');
        sort($names);
        $expected = array_map(fn ($i) => "t$i", range(0, 99));
        sort($expected);
        $this->assertSame($expected, $names, 'every task ran exactly once');
        $perProcess = [];
        foreach ($runs as $r) {
            $perProcess[$r['pid']] = ($perProcess[$r['pid']] ?? 0) + 1;
        }
        return array_values($perProcess);
    }

    public static function windows(): array
    {
        return ['windowed (default task_window)' => [64], 'task_window 1' => [1]];
    }

    /** @dataProvider windows */
    public function testEveryProcessRunsExactlyItsLimit(int $window): void
    {
        $counts = $this->runHundred(['task_max_request' => 10, 'task_window' => $window]);
        $this->assertSame(array_fill(0, 10, 10), $counts, 'ten processes of ten tasks each, as in Swoole');
    }

    public function testTheGraceIsPartOfTheLimit(): void
    {
        $counts = $this->runHundred(['task_max_request' => 8, 'task_max_request_grace' => 4]);
        $last = array_pop($counts);
        $this->assertLessThanOrEqual(12, $last);
        foreach ($counts as $n) {
            $this->assertGreaterThanOrEqual(9, $n, 'max + rand(1, grace)');
            $this->assertLessThanOrEqual(12, $n, 'never beyond max + grace');
        }
    }
}
