<?php
use TaskQ\Tests\Support\TaskqTestCase;

/**
 * Issue 13.6 and 13.7: the small Swoole functions real scripts call
 * (version, process names, global timers, the connection list) and a
 * truthful `$server->mode`.
 */
final class SwooleFunctionsTest extends TaskqTestCase
{
    public function testVersionIsTheSwooleApiLevelTaskqMirrors(): void
    {
        $this->assertSame('4.8.13', SWOOLE_VERSION);
        $this->assertSame(SWOOLE_VERSION, swoole_version());
        $this->assertSame(40813, SWOOLE_VERSION_ID);
        $this->assertSame([4, 8, 13], [SWOOLE_MAJOR_VERSION, SWOOLE_MINOR_VERSION, SWOOLE_RELEASE_VERSION]);
        $this->assertTrue(version_compare(SWOOLE_VERSION, '4.8.0', '>='));
        $this->assertNotSame(TASKQ_VERSION, SWOOLE_VERSION, "taskq's own version stays its own");
    }

    public function testBaseModeIsAcceptedButTheServerSaysItRunsProcessMode(): void
    {
        $base = new Swoole\Server('127.0.0.1', 0, SWOOLE_BASE);
        $this->assertSame(SWOOLE_PROCESS, $base->mode);
        $this->assertSame(SWOOLE_PROCESS, (new TaskQ\Server('127.0.0.1', 0))->mode);
    }

    public function testTimersOutsideAWorkerWarnAndReturnFalse(): void
    {
        $warnings = [];
        set_error_handler(function ($no, $msg) use (&$warnings) { $warnings[] = $msg; return true; });
        try {
            $this->assertFalse(swoole_timer_tick(10, fn () => null));
            $this->assertFalse(Swoole\Timer::after(10, fn () => null));
            $this->assertFalse(swoole_timer_clear(1));
        } finally {
            restore_error_handler();
        }
        $this->assertSame([
            'TaskQ\Timer::tick(): timers can only be used in worker processes after start()',
            'TaskQ\Timer::after(): timers can only be used in worker processes after start()',
        ], $warnings);
    }

    /** The name set in a worker is the one `ps` shows (comm and command line). */
    public function testSetProcessNameRenamesTheWorkerForPs(): void
    {
        $server = $this->startServer(<<<'PHP'
$s = new Swoole\Server('127.0.0.1', $port);
$s->set(['worker_num' => 1, 'task_worker_num' => 1, 'log_file' => "$dir/taskq.log"]);
$s->on('WorkerStart', function ($s, $id) {
    $kind = $s->taskworker ? 'task' : 'event';
    record('named', ['id' => $id, 'ok' => swoole_set_process_name("tq-$kind-$id")]);
});
$s->on('Receive', fn () => null);
$s->on('Task', fn () => null);
$s->start();
PHP);
        $named = $this->waitEvents('named', 2, 10, $server);
        foreach ($named as $e) {
            $this->assertTrue($e['ok']);
            $name = $e['id'] === 0 ? 'tq-event-0' : 'tq-task-1';
            $this->assertSame($name, trim(file_get_contents("/proc/{$e['pid']}/comm")));
            $this->assertSame($name, trim(shell_exec("ps -o args= -p {$e['pid']}")));
        }
    }

    /**
     * swoole_timer_* and Swoole\Timer run on the worker's own timers: a tick
     * with parameters that clears itself after three runs, a one-shot after(),
     * in an event worker and in a task worker.
     */
    public function testGlobalTimersRunInsideWorkers(): void
    {
        $server = $this->startServer(<<<'PHP'
$s = new Swoole\Server('127.0.0.1', $port);
$s->set(['worker_num' => 1, 'task_worker_num' => 1, 'log_file' => "$dir/taskq.log"]);
$s->on('WorkerStart', function ($s, $id) {
    $runs = 0;
    swoole_timer_tick(20, function (int $timerId, string $tag) use ($id, &$runs) {
        record('tick', ['id' => $id, 'tag' => $tag, 'run' => ++$runs]);
        if ($runs === 3) {
            record('cleared', ['id' => $id, 'ok' => swoole_timer_clear($timerId)]);
        }
    }, "w$id");
    Swoole\Timer::after(10, fn (string $p) => record('after', ['id' => $id, 'p' => $p]), 'once');
    $gone = Swoole\Timer::after(60000, fn () => record('never'));
    record('clear-after', ['id' => $id, 'ok' => Swoole\Timer::clear($gone)]);
});
$s->on('Receive', fn () => null);
$s->on('Task', fn () => null);
$s->start();
PHP);
        $this->waitEvents('cleared', 2, 10, $server);
        $this->waitEvents('after', 2, 10, $server);
        usleep(200000); // ten tick periods: a tick that survived its clear would show
        foreach ([0, 1] as $id) {
            $this->assertSame([1, 2, 3], array_column($this->eventsOf('tick', $id), 'run'), "worker $id");
            $this->assertSame(["w$id"], array_values(array_unique(array_column($this->eventsOf('tick', $id), 'tag'))));
            $this->assertTrue($this->eventsOf('cleared', $id)[0]['ok']);
            $this->assertSame('once', $this->eventsOf('after', $id)[0]['p']);
            $this->assertTrue($this->eventsOf('clear-after', $id)[0]['ok']);
        }
        $this->assertSame([], $this->events('never'));
    }

    /** `$server->connections` and getClientList() list the sessions; a worker broadcasts to them. */
    public function testConnectionsAndClientListForBroadcasting(): void
    {
        $this->startServer(<<<'PHP'
$s = new Swoole\Server('127.0.0.1', $port);
$s->set(['worker_num' => 1, 'log_file' => "$dir/taskq.log"]);
$s->on('Receive', function ($s, $fd, $r, $data) {
    if ($data === 'list') {
        $all = [];
        foreach ($s->connections as $c) {
            $all[] = $c;
        }
        $first = $s->getClientList(0, 2);
        $rest = $s->getClientList(end($first), 10);
        set_error_handler(fn () => true);
        $big = $s->getClientList(0, 101);
        restore_error_handler();
        $s->send($fd, json_encode([$all, count($s->connections), $first, $rest, $s->getClientList(start_fd: max($all)), $big]));
    } elseif ($data === 'broadcast') {
        $start = 0;
        while ($page = $s->getClientList($start, 2)) {
            foreach ($page as $c) {
                $s->send($c, "hi $c");
            }
            $start = end($page);
        }
    }
});
$s->start();
PHP);
        $out = $this->client(<<<'PHP'
$d = new TaskClient(TASKQ_SOCK_TCP);
$e = new TaskClient(TASKQ_SOCK_TCP);
$d->connect('127.0.0.1', $port, 3);
$e->connect('127.0.0.1', $port, 3);
$d->send('hello'); // a TaskClient that sent nothing yet is not known to speak taskq's framing
$e->send('hello');
usleep(100000);
$c->send('list');
$list = json_decode($c->recv(), true);
$c->send('broadcast');
echo json_encode([$list, $c->recv(), $d->recv(), $e->recv()]);
PHP);
        [$list, $c, $d, $e] = json_decode($out, true);
        [$all, $count, $first, $rest, $after, $big] = $list;
        $this->assertCount(3, $all);
        $this->assertSame($all, array_values(array_unique($all)));
        $sorted = $all;
        sort($sorted);
        $this->assertSame($sorted, $all, 'ascending');
        $this->assertSame(3, $count);
        $this->assertSame(array_slice($all, 0, 2), $first);
        $this->assertSame(array_slice($all, 2), $rest);
        $this->assertSame([], $after, 'nothing above the highest session');
        $this->assertFalse($big, 'at most 100 per page, as Swoole');
        $this->assertSame(array_map(fn ($fd) => "hi $fd", $all), [$c, $d, $e]);
    }
}
