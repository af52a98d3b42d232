<?php
// Every PHP test needs the freshly built extension; fail fast and clearly otherwise.
if (!extension_loaded('taskq')) {
    fwrite(STDERR, "the taskq extension is not loaded: run the tests with `make test`\n");
    exit(1);
}
if (!getenv('TASKQ_EXT') || !is_file(getenv('TASKQ_EXT'))) {
    fwrite(STDERR, "TASKQ_EXT must name the built taskq.so: run the tests with `make test`\n");
    exit(1);
}
require __DIR__ . '/Support/ProcessTree.php';
require __DIR__ . '/Support/ServerProcess.php';
require __DIR__ . '/Support/TaskqTestCase.php';
require __DIR__ . '/Support/RedisServer.php';
require __DIR__ . '/Support/ApiSurface.php';
require __DIR__ . '/Support/AdminListener.php';
require __DIR__ . '/Support/SmtpSink.php';
