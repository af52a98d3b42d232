<?php
namespace TaskQ\Tests\Support;

/**
 * A real /usr/bin/redis-server for one test: its own port and directory,
 * no RDB snapshots, optionally an append-only file fsynced on every write.
 * It can be stopped (SIGTERM, then SIGKILL), killed and restarted on the
 * same port and directory, so a test sees what survives a Redis restart.
 * Stopped by its pid, not by an environment tag as ServerProcess is:
 * redis-server overwrites its environment with its process title. A
 * `$wrapper` such as `ip netns exec` execs Redis in its own process, so the
 * pid proc_open reports is Redis's.
 */
final class RedisServer
{
    public const BINARY = '/usr/bin/redis-server';
    public const CLI = '/usr/bin/redis-cli';

    /** @var resource|null */
    private $proc = null;
    private int $pid = 0;
    public readonly string $logFile;
    private int $starts = 0;

    /**
     * @param string $dir     directory for the AOF and the log (created)
     * @param int    $port    port to listen on (pick with TaskqTestCase::freePort())
     * @param bool   $durable appendonly yes + appendfsync always
     * @param string $host    address to bind
     * @param array  $wrapper command prefix, e.g. ['ip', 'netns', 'exec', 'ns1']
     * @param array  $extra   more redis-server settings, e.g. ['--cluster-enabled', 'yes']
     */
    public function __construct(
        public readonly string $dir,
        public readonly int $port,
        public readonly bool $durable = false,
        public readonly string $host = '127.0.0.1',
        public readonly array $wrapper = [],
        public readonly array $extra = [],
    ) {
        if (!is_dir($dir)) {
            mkdir($dir, 0777, true);
        }
        $this->logFile = "$dir/redis.log";
    }

    /** The DSN a TaskServer's task_backend names for this Redis. */
    public function dsn(): string
    {
        return "redis://$this->host:$this->port";
    }

    /** Starts redis-server and waits (bounded) until it answers PING. */
    public function start(float $timeout = 10.0): void
    {
        if ($this->running()) {
            throw new \LogicException('redis-server is already running');
        }
        $cmd = array_merge($this->wrapper, [
            self::BINARY,
            '--port', (string) $this->port,
            '--bind', $this->host,
            '--dir', $this->dir,
            '--save', '',
            '--appendonly', $this->durable ? 'yes' : 'no',
            '--appendfsync', 'always',
            '--daemonize', 'no',
            '--protected-mode', 'no',
            '--logfile', $this->logFile,
        ], $this->extra);
        $this->proc = proc_open(
            $cmd,
            [0 => ['file', '/dev/null', 'r'], 1 => ['file', "$this->dir/redis.stdout", 'a'], 2 => ['file', "$this->dir/redis.stderr", 'a']],
            $pipes,
            $this->dir,
        );
        if (!is_resource($this->proc)) {
            throw new \RuntimeException('cannot start ' . self::BINARY);
        }
        $this->pid = proc_get_status($this->proc)['pid'];
        $this->starts++;
        $deadline = microtime(true) + $timeout;
        while (microtime(true) < $deadline) {
            if ($this->ping()) {
                return;
            }
            if (!$this->running()) {
                break;
            }
            usleep(20000);
        }
        $log = (string) @file_get_contents($this->logFile);
        $this->kill();
        throw new \RuntimeException("redis-server on port $this->port did not answer PING within {$timeout}s\nlog:\n$log");
    }

    /** Whether the redis-server this object started is still running. */
    public function running(): bool
    {
        return $this->proc !== null && proc_get_status($this->proc)['running'];
    }

    /** Whether Redis answers PING right now (one bounded redis-cli call). */
    public function ping(): bool
    {
        [$code, $out] = $this->cliRaw(['PING'], 2.0);
        return $code === 0 && trim($out) === 'PONG';
    }

    /**
     * Runs one Redis command through redis-cli (--raw: one value a line)
     * and returns its output; throws when redis-cli fails.
     */
    public function cli(string ...$args): string
    {
        [$code, $out, $err] = $this->cliRaw($args, 5.0);
        if ($code !== 0) {
            throw new \RuntimeException('redis-cli ' . implode(' ', $args) . " failed ($code): $out $err");
        }
        return $out;
    }

    /** The lines of a command's output (empty lines dropped). */
    public function lines(string ...$args): array
    {
        return array_values(array_filter(explode("\n", $this->cli(...$args)), fn ($l) => $l !== ''));
    }

    private function cliRaw(array $args, float $timeout): array
    {
        $cmd = array_merge($this->wrapper, ['timeout', '-k', '1', (string) $timeout, self::CLI, '-h', $this->host, '-p', (string) $this->port, '--raw'], $args);
        $p = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes);
        $out = stream_get_contents($pipes[1]);
        $err = stream_get_contents($pipes[2]);
        fclose($pipes[1]);
        fclose($pipes[2]);
        return [proc_close($p), (string) $out, (string) $err];
    }

    /** SIGTERM (Redis flushes its AOF and exits), SIGKILL after `$timeout`; waits until it is gone. */
    public function stop(float $timeout = 5.0): void
    {
        if ($this->proc === null) {
            return;
        }
        @posix_kill($this->pid, SIGTERM);
        $deadline = microtime(true) + $timeout;
        while (microtime(true) < $deadline && $this->running()) {
            usleep(20000);
        }
        $this->kill();
    }

    /** SIGKILL, as a crash of the Redis host's process; waits (bounded) until it is gone. */
    public function kill(): void
    {
        if ($this->proc === null) {
            return;
        }
        $deadline = microtime(true) + 5.0;
        while ($this->running() && microtime(true) < $deadline) {
            @posix_kill($this->pid, SIGKILL);
            usleep(10000);
        }
        if ($this->running()) {
            throw new \RuntimeException("redis-server pid $this->pid survived SIGKILL for 5 s");
        }
        proc_close($this->proc);
        $this->proc = null;
    }

    /** Stops it (gracefully unless `$crash`) and starts it again on the same port and directory. */
    public function restart(bool $crash = false): void
    {
        $crash ? $this->kill() : $this->stop();
        $this->start();
    }

    /** How often start() launched it. */
    public function starts(): int
    {
        return $this->starts;
    }

    /** The end of its log, for failure messages. */
    public function logTail(int $bytes = 4000): string
    {
        $log = (string) @file_get_contents($this->logFile);
        return substr($log, -$bytes);
    }
}
