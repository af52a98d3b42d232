<?php
// The benchmark's task server: the seed's shape (1 worker, 8 task workers,
// onReceive -> task(), onTask json_decode of the email JSON, onFinish
// counting), configured through the environment by bench/run.php.
//
// Progress is reported through a System V shared memory segment
// (BENCH_SHM_KEY) instead of through the server, so watching a run costs the
// server nothing: one 32-byte slot per worker id
//   [0] pid once onWorkerStart ran   [8] events counted (onFinish in the event
//   worker; onTask in task workers when BENCH_COUNT_TASKS=1)
//   [16] hrtime(true) of the last counted event   [24] failures counted
//
// Environment:
//   BENCH_HOST, BENCH_PORT     TCP listen address (port 0: the kernel picks)
//   BENCH_UNIX                 unix socket path instead of TCP
//   BENCH_PORT_FILE            where the chosen port is written
//   BENCH_SHM_KEY              progress segment (created by the runner)
//   BENCH_COUNT_TASKS          1: count in onTask too (client-submitted tasks
//                              have no onFinish)
//   BENCH_LAT_SHM_KEY          latency stamps: slot id*16 gets hrtime after
//                              task() returned, id*16+8 when onTask starts
//   BENCH_STORE                task_store directory
//   BENCH_QUEUE_MAX            task_queue_max (default: taskq's, 1,000,000)
//   BENCH_MAIL_DSN             onTask sends the email with TaskQ\Mailer
//   BENCH_LOG                  log_file
//   BENCH_TASK_WORKERS         task_worker_num (default 8; 0 with a backend:
//                              a server that only submits)
//   BENCH_BACKEND              task_backend (a Redis DSN); BENCH_QUEUE its
//                              task_queue
//   BENCH_TASK_SLEEP_US        onTask sleeps this long first (task workers
//                              as the bottleneck, not the CPU)
//   BENCH_TASK_SPIN            onTask first runs bench_spin() this many
//                              rounds (a CPU-bound task; see lib.php)
// A message starting with "\0" is a control message from the runner:
//   "\0stats"         -> the server answers with json_encode(stats())
//   "\0block:<path>"  -> (as a task) holds its task worker until <path> exists

const SLOT = 32;

$env = fn (string $k, $d = null) => ($v = getenv($k)) === false || $v === '' ? $d : $v;

$shm = shmop_open((int) $env('BENCH_SHM_KEY'), 'w', 0, 0);
$latKey = $env('BENCH_LAT_SHM_KEY');
$lat = null;
$latSize = 0;
$countTasks = $env('BENCH_COUNT_TASKS') === '1';
$mailDsn = $env('BENCH_MAIL_DSN');

if ($unix = $env('BENCH_UNIX')) {
    $server = new TaskServer($unix, 0, TASKQ_PROCESS, TASKQ_SOCK_UNIX_STREAM);
} else {
    $server = new TaskServer($env('BENCH_HOST', '127.0.0.1'), (int) $env('BENCH_PORT', 0));
    file_put_contents($env('BENCH_PORT_FILE'), (string) $server->port);
}

$settings = [
    'worker_num' => 1,
    'task_worker_num' => (int) $env('BENCH_TASK_WORKERS', 8),
    'dispatch_mode' => 2,
    'log_level' => 3, // warnings and up: a benchmark must not measure logging
];
if ($log = $env('BENCH_LOG')) {
    $settings['log_file'] = $log;
}
if ($store = $env('BENCH_STORE')) {
    $settings['task_store'] = $store;
}
if (($max = $env('BENCH_QUEUE_MAX')) !== null) {
    $settings['task_queue_max'] = (int) $max;
}
if ($backend = $env('BENCH_BACKEND')) {
    $settings['task_backend'] = $backend;
    $settings['task_queue'] = $env('BENCH_QUEUE', 'bench');
}
$taskSleepUs = (int) $env('BENCH_TASK_SLEEP_US', 0);
$taskSpin = (int) $env('BENCH_TASK_SPIN', 0);
if ($taskSpin > 0) {
    require __DIR__ . '/spin.php';
}
$server->set($settings);

// Per-process counters, mirrored into this process's slot.
$count = 0;
$failed = 0;
$mySlot = 0;
$mailer = null;

$server->on('WorkerStart', function (TaskServer $s, int $workerId) use ($shm, $latKey, &$lat, &$latSize, &$mySlot, &$count, &$failed) {
    $mySlot = $workerId * SLOT;
    // A respawned worker continues its predecessor's count.
    $cur = unpack('Jpid/Jcount/Jlast/Jfailed', shmop_read($shm, $mySlot, SLOT));
    $count = $cur['count'];
    $failed = $cur['failed'];
    if ($latKey !== null) {
        $lat = shmop_open((int) $latKey, 'w', 0, 0);
        $latSize = shmop_size($lat);
    }
    shmop_write($shm, pack('J', getmypid()), $mySlot);
});

$server->on('Receive', function (TaskServer $s, int $fd, int $reactorId, string $data) use (&$lat, &$latSize) {
    if ($data[0] === "\0") {
        if ($data === "\0stats") {
            $s->send($fd, json_encode($s->stats()));
        } else {
            $s->task($data);
        }
        return;
    }
    $id = $s->task($data);
    if ($lat !== null && $id * 16 + 16 <= $latSize) {
        shmop_write($lat, pack('J', hrtime(true)), $id * 16);
    }
});

$server->on('Task', function (TaskServer $s, int $taskId, int $srcWorkerId, $data) use (&$lat, &$latSize, $shm, $countTasks, &$mySlot, &$count, &$failed, $mailDsn, &$mailer, $taskSleepUs, $taskSpin) {
    if ($lat !== null && $taskId * 16 + 16 <= $latSize) {
        shmop_write($lat, pack('J', hrtime(true)), $taskId * 16 + 8);
    }
    if ($data[0] === "\0") {
        $path = substr($data, strlen("\0block:"));
        while (!file_exists($path)) {
            usleep(2000);
        }
        return true;
    }
    if ($taskSleepUs > 0) {
        usleep($taskSleepUs);
    }
    if ($taskSpin > 0) {
        bench_spin($taskSpin);
    }
    $mail = json_decode($data, true);
    $result = true;
    if ($mailDsn !== null) {
        $mailer ??= new TaskQ\Mailer($mailDsn);
        try {
            $mailer->send($mail);
        } catch (TaskQ\MailException $e) {
            $result = 'not sent: ' . $e->getMessage();
        }
    }
    if ($countTasks) {
        $result === true ? $count++ : $failed++;
        shmop_write($shm, pack('JJJ', $count, hrtime(true), $failed), $mySlot + 8);
    }
    return $result;
});

$server->on('Finish', function (TaskServer $s, int $taskId, $result) use ($shm, &$mySlot, &$count, &$failed) {
    $result === true ? $count++ : $failed++;
    shmop_write($shm, pack('JJJ', $count, hrtime(true), $failed), $mySlot + 8);
});

$server->start();
