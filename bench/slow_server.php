<?php
// The issue's slow-task workload (issue 17 §1), written once for both
// servers so that scenario 13 can run it under taskq and under Swoole:
// Swoole's own names only (taskq aliases them when swoole is not loaded).
// onTask does nothing but usleep() and count; the event worker hands the
// tasks over in one burst when a client sends "go N".
//
//   php -d extension=taskq.so|swoole.so bench/slow_server.php PORT TASK_WORKERS SLEEP_US SHM_KEY
//
// Progress goes into the bench's shared segment (bench/lib.php's Shm): one
// 32-byte slot per worker id, pid / count / time of the last task.
const SLOT = 32;
[, $port, $workers, $sleepUs, $shmKey] = array_map('intval', $argv);
$shm = shmop_open($shmKey, 'w', 0, 0);

$server = new Swoole\Server('127.0.0.1', $port, SWOOLE_PROCESS, SWOOLE_SOCK_TCP);
$server->set(['worker_num' => 1, 'task_worker_num' => $workers, 'log_level' => 4]);
$count = 0;
$server->on('WorkerStart', function ($s, int $id) use ($shm) {
    shmop_write($shm, pack('J', getmypid()), $id * SLOT);
});
$server->on('Receive', function ($s, int $fd, int $reactorId, string $data) {
    if (preg_match('/^go (\d+)/', $data, $m)) {
        for ($i = 0; $i < (int) $m[1]; $i++) {
            $s->task('x');
        }
    }
});
$server->on('Task', function ($s, int $taskId, int $srcWorkerId, $data) use ($shm, $sleepUs, &$count) {
    usleep($sleepUs);
    $count++;
    shmop_write($shm, pack('JJ', $count, hrtime(true)), $s->worker_id * SLOT + 8);
    return true;
});
$server->on('Finish', function ($s, int $taskId, $result) {
});
$server->start();
