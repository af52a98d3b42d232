<?php
namespace TaskQ\Tests\Support;

use PHPUnit\Framework\TestCase;

/**
 * Base class for tests that run real servers. Every server is started in a
 * temp dir with a tag in its environment; tearDown kills the whole tagged
 * process tree (also after a failure) and fails the test if the server left
 * anything behind that the test did not expect.
 */
abstract class TaskqTestCase extends TestCase
{
    protected string $dir;
    /** @var ServerProcess[] */
    protected array $servers = [];
    /** startPhp() processes not yet finished, stopped in tearDown(). */
    private array $background = [];

    protected function setUp(): void
    {
        $this->dir = sys_get_temp_dir() . '/taskq-test-' . bin2hex(random_bytes(6));
        mkdir($this->dir, 0777, true);
    }

    protected function tearDown(): void
    {
        foreach ($this->background as $h) {
            $this->finishPhp($h, 0);
        }
        foreach ($this->servers as $server) {
            $server->destroy();
        }
        $this->servers = [];
        exec('rm -rf ' . escapeshellarg($this->dir));
    }

    /** A TCP port nobody listens on right now. */
    protected static function freePort(): int
    {
        $s = stream_socket_server('tcp://127.0.0.1:0', $errno, $errstr);
        $name = stream_socket_get_name($s, false);
        fclose($s);
        return (int) substr($name, strrpos($name, ':') + 1);
    }

    /**
     * Writes `$body` after the prelude into a script and runs it.
     * The script sees $port (a free port unless TASKQ_PORT is given) and $dir.
     */
    protected function startServer(string $body, array $env = [], bool $waitListening = true): ServerProcess
    {
        $port = $env['TASKQ_PORT'] ?? self::freePort();
        $script = "$this->dir/server-" . count($this->servers) . '.php';
        file_put_contents($script, "<?php\nrequire " . var_export(__DIR__ . '/prelude.php', true) . ";\n" . $body);
        $server = new ServerProcess($script, $this->dir, ['TASKQ_PORT' => (string) $port, 'TASKQ_DIR' => $this->dir] + $env);
        $this->servers[] = $server;
        $this->port = (int) $port;
        if ($waitListening) {
            $this->waitUntil(fn () => self::listening((int) $port), 10, "server listening on port $port", $server);
        }
        return $server;
    }

    /** Port of the most recently started server. */
    protected int $port = 0;

    /**
     * Whether a unix socket listens at `$path` (read from /proc/net/unix, no
     * connection made). The file alone is not enough: bind() creates it a
     * moment before listen(), and a connect in between is refused.
     */
    protected static function unixListening(string $path): bool
    {
        foreach (file('/proc/net/unix') ?: [] as $line) {
            $cols = preg_split('/\s+/', trim($line));
            // Flags 00010000 (__SO_ACCEPTCON): a listening socket.
            if (isset($cols[7], $cols[3]) && $cols[7] === $path && $cols[3] === '00010000') {
                return true;
            }
        }
        return false;
    }

    /** Whether something listens on 127.0.0.1:$port (read from /proc, no connection made). */
    protected static function listening(int $port): bool
    {
        $hex = sprintf(':%04X', $port);
        foreach (['/proc/net/tcp', '/proc/net/tcp6'] as $f) {
            foreach (file($f) ?: [] as $line) {
                $cols = preg_split('/\s+/', trim($line));
                if (isset($cols[1], $cols[3]) && str_ends_with($cols[1], $hex) && $cols[3] === '0A') {
                    return true;
                }
            }
        }
        return false;
    }

    /** Polls `$cond` every 10 ms for at most `$timeout` seconds; fails with `$what` otherwise. */
    protected function waitUntil(callable $cond, float $timeout, string $what, ?ServerProcess $server = null): mixed
    {
        $deadline = microtime(true) + $timeout;
        do {
            $v = $cond();
            if ($v) {
                return $v;
            }
            usleep(10000);
        } while (microtime(true) < $deadline);
        $extra = $server ? "\nstdout:\n" . $server->stdout() . "\nstderr:\n" . $server->stderr() : '';
        $this->fail("timed out after {$timeout}s waiting for $what$extra");
    }

    /** Events recorded by the server scripts so far, optionally of one kind. */
    protected function events(?string $kind = null): array
    {
        $file = "$this->dir/events.log";
        $out = [];
        foreach (is_file($file) ? file($file, FILE_IGNORE_NEW_LINES) : [] as $line) {
            $e = json_decode($line, true);
            if ($e !== null && ($kind === null || $e['event'] === $kind)) {
                $out[] = $e;
            }
        }
        return $out;
    }

    /** Waits until at least `$n` events of `$kind` were recorded and returns them. */
    protected function waitEvents(string $kind, int $n, float $timeout = 10, ?ServerProcess $server = null): array
    {
        $this->waitUntil(fn () => count($this->events($kind)) >= $n, $timeout, "$n '$kind' event(s)", $server);
        return $this->events($kind);
    }

    /** SIGTERMs the master and waits (bounded) until the whole tree is gone. */
    protected function stopServer(ServerProcess $server, int $signal = SIGTERM, ?int $masterPid = null): void
    {
        posix_kill($masterPid ?? $server->pid(), $signal);
        $this->waitUntil(fn () => $server->tree() === [], 10, 'every server process to exit', $server);
    }

    /** Runs a PHP client script with the extension; returns [exit code, stdout, stderr]. */
    protected function runPhp(string $code, float $timeout = 30, array $env = []): array
    {
        $script = "$this->dir/client-" . bin2hex(random_bytes(4)) . '.php';
        file_put_contents($script, $code);
        return $this->runScript($script, $timeout, $env);
    }

    /** Runs an existing PHP script with the extension, bounded in time. */
    protected function runScript(string $script, float $timeout = 30, array $env = [], ?string $cwd = null): array
    {
        $cmd = self::phpCommand($script, $timeout);
        $p = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes, $cwd ?? $this->dir, array_merge(getenv(), $env));
        $out = stream_get_contents($pipes[1]);
        $err = stream_get_contents($pipes[2]);
        fclose($pipes[1]);
        fclose($pipes[2]);
        return [proc_close($p), $out, $err];
    }

    /** The log file a server wrote, or '' when none. */
    protected function log(string $name = 'taskq.log'): string
    {
        return (string) @file_get_contents("$this->dir/$name");
    }

    /**
     * Runs `$body` in a client script where `$c` is a TaskClient connected to
     * the latest server; fails on a non-zero exit or any stderr output.
     */
    protected function client(string $body, float $timeout = 10): string
    {
        $code = "<?php\n\$port = {$this->port};\n"
            . "\$c = new TaskClient(TASKQ_SOCK_TCP);\n"
            . "if (!\$c->connect('127.0.0.1', \$port, 3)) { fwrite(STDERR, 'connect failed: ' . \$c->errCode); exit(3); }\n"
            . $body;
        [$exit, $out, $err] = $this->runPhp($code, $timeout);
        $this->assertSame(0, $exit, "client script failed\nstdout: $out\nstderr: $err");
        $this->assertSame('', $err, 'client script wrote to stderr');
        return $out;
    }

    /** Events of `$kind` recorded by worker `$id`. */
    protected function eventsOf(string $kind, int $id): array
    {
        return array_values(array_filter($this->events($kind), fn ($e) => ($e['id'] ?? null) === $id));
    }

    /** Index (recording order) of every event matching `$pred`. */
    protected function indexes(callable $pred): array
    {
        $out = [];
        foreach ($this->events() as $i => $e) {
            if ($pred($e)) {
                $out[] = $i;
            }
        }
        return $out;
    }

    /** Waits (bounded) until the server's log contains `$needle`. */
    protected function waitLog(string $needle, float $timeout, ServerProcess $server, string $file = 'taskq.log'): void
    {
        $this->waitUntil(fn () => str_contains($this->log($file), $needle), $timeout, "log line containing: $needle\nlog:\n" . $this->log($file), $server);
    }

    /**
     * For servers whose onReceive evaluates the PHP code a client sends and
     * replies with serialize(['r' => result, 'x' => exception, ...]): sends
     * `$prefix . $code` from a fresh client and returns the decoded reply.
     */
    protected function evalInWorker(string $prefix, string $code, float $timeout = 5): array
    {
        $client = "<?php\n\$c = new TaskClient(TASKQ_SOCK_TCP);\n"
            . "if (!\$c->connect('127.0.0.1', {$this->port}, $timeout)) { fwrite(STDERR, 'connect failed: ' . \$c->errCode); exit(3); }\n"
            . '$c->send(' . var_export($prefix . $code, true) . ");\n"
            . "\$r = \$c->recv();\n"
            . "if (\$r === false || \$r === '') { fwrite(STDERR, 'no reply: ' . \$c->errCode); exit(4); }\n"
            . "echo \$r;\n";
        return $this->evalReply($this->runPhp($client, $timeout + 5));
    }

    /** Decodes the reply of an evaluating server from a runPhp() result. */
    protected function evalReply(array $run): array
    {
        [$exit, $out, $err] = $run;
        $this->assertSame(0, $exit, "client failed\nstdout: $out\nstderr: $err");
        $this->assertSame('', $err);
        $reply = unserialize($out);
        $this->assertIsArray($reply, "reply: $out");
        $this->assertNull($reply['x'], 'the code threw: ' . $reply['x']);
        return $reply;
    }

    /** PHP with only the built extension loaded, warnings on stderr, killed after `$timeout` s. */
    protected static function phpCommand(string $script, float $timeout, array $args = []): array
    {
        return array_merge(
            ['timeout', '-k', '1', (string) $timeout, PHP_BINARY, '-n', '-d', 'display_errors=stderr', '-d', 'log_errors=0', '-d', 'extension=' . getenv('TASKQ_EXT'), $script],
            $args,
        );
    }

    /**
     * Starts a PHP script in the background (stdout and stderr to files next
     * to it); finish it with finishPhp().
     */
    protected function startPhp(string $code, float $timeout = 15, array $args = [], ?string $script = null): array
    {
        $script ??= "$this->dir/bg-" . bin2hex(random_bytes(4)) . '.php';
        if (!is_file($script)) {
            file_put_contents($script, $code);
        }
        $out = "$script." . bin2hex(random_bytes(3)) . '.out';
        $err = substr($out, 0, -4) . '.err';
        $p = proc_open(self::phpCommand($script, $timeout, $args), [0 => ['file', '/dev/null', 'r'], 1 => ['file', $out, 'w'], 2 => ['file', $err, 'w']], $pipes, $this->dir);
        $this->background[(int) $p] = [$p, $out, $err];
        return [$p, $out, $err];
    }

    /** Waits (bounded) for a startPhp() script; returns [exit code or null on timeout, stdout, stderr]. */
    protected function finishPhp(array $h, float $timeout = 10): array
    {
        [$p, $out, $err] = $h;
        unset($this->background[(int) $p]);
        $exited = function (float $within) use ($p): ?int {
            $deadline = microtime(true) + $within;
            do {
                $st = proc_get_status($p);
                if (!$st['running']) {
                    return $st['exitcode'];
                }
                usleep(10000);
            } while (microtime(true) < $deadline);
            return null;
        };
        $code = $exited($timeout);
        if ($code === null) {
            // `timeout` passes a TERM on to PHP; a KILL would end only
            // `timeout` and leave PHP running.
            proc_terminate($p, SIGTERM);
            if ($exited(2) === null) {
                exec('pkill -KILL -P ' . (int) proc_get_status($p)['pid']);
                proc_terminate($p, SIGKILL);
            }
        }
        proc_close($p);
        return [$code, (string) @file_get_contents($out), (string) @file_get_contents($err)];
    }
}
