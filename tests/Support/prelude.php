<?php
// Included first by every generated test server script.
// TASKQ_PORT and TASKQ_DIR come from the test; record() appends one JSON line
// per event to events.log so the test can assert what happened where.
$port = (int) getenv('TASKQ_PORT');
$dir = (string) getenv('TASKQ_DIR');

function record(string $event, array $fields = []): void
{
    $line = json_encode(['event' => $event, 'pid' => getmypid()] + $fields, JSON_INVALID_UTF8_SUBSTITUTE) . "\n";
    file_put_contents(getenv('TASKQ_DIR') . '/events.log', $line, FILE_APPEND | LOCK_EX);
}
