<?php
// The seed's task server, in the foreground and talkative: `make run`.
// Send it work with `php -d extension=modules/taskq.so php/examples/client.php`
// (or the seed's Client_test.php). Ctrl-C stops it cleanly.

$host = getenv('TASKQ_HOST') ?: '127.0.0.1';
$port = (int) (getenv('TASKQ_PORT') ?: 9501);

$server = new TaskServer($host, $port);
$server->set([
    'worker_num' => 1,
    'task_worker_num' => 4,
    'max_request' => 10000,
    'dispatch_mode' => 2,
]);

$server->on('Start', function (TaskServer $server) use ($host, $port) {
    echo "taskq listening on $host:$port (master {$server->master_pid}, manager {$server->manager_pid}); Ctrl-C stops\n";
});

$server->on('WorkerStart', function (TaskServer $server, int $workerId) {
    $kind = $server->taskworker ? 'task worker' : 'worker';
    echo "$kind #$workerId started (pid {$server->worker_pid})\n";
});

$server->on('Receive', function (TaskServer $server, int $fd, int $reactorId, string $data) {
    $taskId = $server->task($data);
    echo "session #$fd: queued task $taskId (" . strlen($data) . " bytes)\n";
});

$server->on('Task', function (TaskServer $server, int $taskId, int $srcWorkerId, $data) {
    $mail = json_decode($data, true);
    $to = is_array($mail) ? ($mail['to_email'] ?? '?') : '?';
    echo "task worker #{$server->worker_id}: task $taskId from worker #$srcWorkerId: would send email to $to\n";
    return ['to' => $to, 'sent' => true];
});

$server->on('Finish', function (TaskServer $server, int $taskId, $result) {
    echo "task $taskId finished: " . json_encode($result) . "\n";
});

$server->on('Shutdown', function () {
    echo "taskq stopped\n";
});

$server->start();
