<?php
// Queues N emails (default 10,000) on mail_server.php and shows progress.
// The request that queues them returns as soon as they are queued; the task
// workers send them meanwhile.
//
//   php -d extension=modules/taskq.so php/examples/mail_client.php [N]

$total = (int) ($argv[1] ?? 10000);
$port = (int) (getenv('TASKQ_PORT') ?: 9501);

$client = new swoole_client(SWOOLE_SOCK_TCP);
if (!$client->connect('127.0.0.1', $port, 1)) {
    fwrite(STDERR, "connect failed: {$client->errMsg}\n");
    exit(1);
}
$start = microtime(true);
for ($i = 1; $i <= $total; $i++) {
    $sent = $client->send([
        'from_email' => 'shop@example.com',
        'to_email' => "customer$i@example.com",
        'title' => "Your order #$i",
        'content' => "Thank you for your order #$i.",
        'headers' => ['X-Order' => (string) $i],
    ]);
    if ($sent === false) {
        fwrite(STDERR, "\nqueueing email $i failed: {$client->errMsg}\n");
        exit(1);
    }
    if ($i % 500 === 0 || $i === $total) {
        printf("\rqueued %d/%d emails (%.0f/s)", $i, $total, $i / max(microtime(true) - $start, 1e-6));
    }
}
$client->close();
printf("\nqueued %d emails in %.2f s\n", $total, microtime(true) - $start);
