<?php
namespace TaskQ\Tests\Support;

/**
 * A test server with its HTTP listener (`metrics_listen`) on a free port,
 * and the built `taskq` command pointed at it: what the tests of the admin
 * API, the command, the metrics and the status page all start from. For
 * classes extending TaskqTestCase.
 */
trait AdminListener
{
    private int $apiPort = 0;

    /**
     * Starts `$script` with TASKQ_SETTINGS = `$settings` plus
     * metrics_listen, and waits (bounded) for `$workers` onWorkerStart
     * events and the listener.
     */
    private function startListening(string $script, array $settings, int $workers): ServerProcess
    {
        $this->apiPort = self::freePort();
        $settings += ['metrics_listen' => "127.0.0.1:{$this->apiPort}"];
        $server = $this->startServer($script, ['TASKQ_SETTINGS' => json_encode($settings)]);
        $this->waitEvents('workerstart', $workers, 10, $server);
        $this->waitUntil(fn () => self::listening($this->apiPort), 5, 'the HTTP listener (metrics_listen)', $server);
        return $server;
    }

    /** The built bin/taskq; fails the test when it is missing. */
    private static function binary(): string
    {
        $bin = dirname((string) getenv('TASKQ_EXT'), 2) . '/bin/taskq';
        if (!is_executable($bin)) {
            self::fail("$bin is missing: run make build");
        }
        return $bin;
    }

    /** The taskq command with `$args` (bounded by `$timeout`); returns [exit code, stdout, stderr]. */
    private function taskq(array $args, float $timeout = 15, array $env = []): array
    {
        $cmd = array_merge(['timeout', '-k', '1', (string) $timeout, self::binary()], $args);
        $env = array_merge(getenv(), ['TASKQ_URL' => "http://127.0.0.1:{$this->apiPort}"], $env);
        $p = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes, $this->dir, $env);
        $out = stream_get_contents($pipes[1]);
        $err = stream_get_contents($pipes[2]);
        fclose($pipes[1]);
        fclose($pipes[2]);
        return [proc_close($p), $out, $err];
    }
}
