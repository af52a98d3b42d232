<?php
// Queues emails on mail_server.php as one batch, then follows their
// delivery to the end and sums up what failed and why. Queueing returns as
// soon as the server holds them (a web request would stop there and show
// the progress later from TaskClient::batch()); the task workers send them
// meanwhile.
//
//   php -d extension=modules/taskq.so php/examples/mail_client.php [N] [RECIPIENTS_FILE]
//
// N emails (default 10,000) to customer1..N@example.com, or one email to
// each address in RECIPIENTS_FILE (one per line). Exits with 2 if any
// email was not sent.

$port = (int) (getenv('TASKQ_PORT') ?: 9501);
$recipients = isset($argv[2])
    ? file($argv[2], FILE_IGNORE_NEW_LINES | FILE_SKIP_EMPTY_LINES)
    : array_map(fn ($i) => "customer$i@example.com", range(1, (int) ($argv[1] ?? 10000)));
$total = count($recipients);

$client = new TaskClient(TASKQ_SOCK_TCP);
if (!$client->connect('127.0.0.1', $port, 5)) {
    fwrite(STDERR, "connect failed: {$client->errMsg}\n");
    exit(1);
}
$batch = sprintf('mail %s #%d', date('Y-m-d H:i:s'), getmypid());
$start = microtime(true);
$queued = 0;
foreach (array_chunk($recipients, 1000, true) as $chunk) {
    $emails = [];
    foreach ($chunk as $i => $to) {
        $order = $i + 1;
        $emails[] = [
            'from_email' => 'shop@example.com',
            'to_email' => $to,
            'title' => "Your order #$order",
            'content' => "Thank you for your order #$order.",
            'headers' => ['X-Order' => (string) $order],
        ];
    }
    $ids = $client->taskMulti($emails, ['batch' => $batch]);
    if ($ids === false || in_array(false, $ids, true)) {
        fwrite(STDERR, "\nqueueing failed after $queued emails: {$client->errMsg}\n");
        exit(1);
    }
    $queued += count($ids);
    printf("\rqueued %d/%d emails (%.0f/s)", $queued, $total, $queued / max(microtime(true) - $start, 1e-6));
}
printf("\nqueued %d emails in %.2f s as batch \"%s\"\n", $total, microtime(true) - $start, $batch);

do {
    usleep(200000);
    $progress = $client->batch($batch);
    if ($progress === false) {
        fwrite(STDERR, "\nprogress unavailable: {$client->errMsg}\n");
        exit(1);
    }
    printf("\rsent %d/%d, failed %d (%.0f/s)", $progress['done'], $progress['total'], $progress['failed'],
        ($progress['done'] + $progress['failed']) / max(microtime(true) - $start, 1e-6));
} while ($progress['pending'] > 0);

printf("\nsent %d, failed %d, in %.2f s\n", $progress['done'], $progress['failed'], microtime(true) - $start);
foreach ($progress['failures'] as $failure) {
    printf("%8d × %s\n", $failure['count'], $failure['error']);
}
exit($progress['failed'] > 0 ? 2 : 0);
