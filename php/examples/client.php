<?php
// Queues N emails on the example server, one connection each, as a web
// request would: php -d extension=modules/taskq.so php/examples/client.php [N]

$n = (int) ($argv[1] ?? 10);
$port = (int) (getenv('TASKQ_PORT') ?: 9501);
$start = microtime(true);
for ($i = 0; $i < $n; $i++) {
    $client = new TaskClient(TASKQ_SOCK_TCP);
    if (!$client->connect('127.0.0.1', $port, 1)) {
        fwrite(STDERR, "connect failed: {$client->errMsg}\n");
        exit(1);
    }
    $client->send([
        'from_email' => 'shop@example.com',
        'to_email' => "customer$i@example.com",
        'title' => "Order #$i",
        'content' => 'Thank you for your order.',
    ]);
    $client->close();
}
printf("queued %d emails in %.1f ms\n", $n, (microtime(true) - $start) * 1000);
