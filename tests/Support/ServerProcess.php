<?php
namespace TaskQ\Tests\Support;

/**
 * A PHP server script run with the built extension in a child process,
 * tagged so that its whole process tree can be found and killed.
 */
final class ServerProcess
{
    /** @var resource|null */
    private $proc;
    public readonly string $tag;
    public readonly string $stdoutFile;
    public readonly string $stderrFile;

    public function __construct(
        public readonly string $script,
        public readonly string $dir,
        array $env = [],
        array $phpArgs = [],
        array $wrapper = [],
    ) {
        $this->tag = bin2hex(random_bytes(8));
        $this->stdoutFile = "$dir/stdout.txt";
        $this->stderrFile = "$dir/stderr.txt";
        // $wrapper runs PHP through another command, e.g. ['ip', 'netns', 'exec', 'ns1'].
        $cmd = array_merge($wrapper, [PHP_BINARY, '-n', '-d', 'display_errors=stderr', '-d', 'log_errors=0', '-d', 'extension=' . getenv('TASKQ_EXT')], $phpArgs, [$script]);
        $env = array_merge(getenv(), ['TASKQ_TEST_TAG' => $this->tag], $env);
        $this->proc = proc_open(
            $cmd,
            [0 => ['file', '/dev/null', 'r'], 1 => ['file', $this->stdoutFile, 'a'], 2 => ['file', $this->stderrFile, 'a']],
            $pipes,
            $dir,
            $env,
        );
        if (!is_resource($this->proc)) {
            throw new \RuntimeException("cannot start $script");
        }
    }

    /** Pid of the process proc_open started (the master unless it daemonized). */
    public function pid(): int
    {
        return proc_get_status($this->proc)['pid'];
    }

    /** Whether the launched process itself is still running. */
    public function running(): bool
    {
        return $this->proc !== null && proc_get_status($this->proc)['running'];
    }

    /** Waits (bounded) for the launched process to exit; returns its exit code or null on timeout. */
    public function wait(float $timeout): ?int
    {
        $deadline = microtime(true) + $timeout;
        while (microtime(true) < $deadline) {
            $st = proc_get_status($this->proc);
            if (!$st['running']) {
                return $st['exitcode'];
            }
            usleep(10000);
        }
        return null;
    }

    public function stdout(): string
    {
        return (string) @file_get_contents($this->stdoutFile);
    }

    public function stderr(): string
    {
        return (string) @file_get_contents($this->stderrFile);
    }

    /** Every live process of this server (master, manager, workers). */
    public function tree(): array
    {
        return ProcessTree::pids($this->tag);
    }

    /** Kills whatever is left and reaps the launched process; never hangs. */
    public function destroy(): void
    {
        ProcessTree::killAll($this->tag);
        if ($this->proc !== null) {
            $this->wait(2.0);
            proc_close($this->proc);
            $this->proc = null;
        }
    }
}
