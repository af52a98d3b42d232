<?php
use TaskQ\Tests\Support\ApiSurface;
use TaskQ\Tests\Support\TaskqTestCase;

/**
 * Issue 16 (IDE stubs): php/taskq.stub.php declares exactly what the loaded
 * extension declares (classes, methods, parameter names, order, optionality,
 * by-reference passing, types and defaults, properties, constants and their
 * values, functions, class aliases), so it cannot drift from the extension.
 * The stub is loaded in a `php -n` child, where taskq is not loaded, and
 * described there by the same Reflection code as the extension here.
 */
final class StubTest extends TaskqTestCase
{
    private const STUB = __DIR__ . '/../php/taskq.stub.php';

    /** The surface a stub file declares, read in a child PHP without extensions. */
    private function stubSurface(string $stub): array
    {
        $cmd = ['timeout', '-k', '1', '20', PHP_BINARY, '-n', '-d', 'display_errors=stderr', '-d', 'log_errors=0', __DIR__ . '/Support/stub_surface.php', $stub];
        $p = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes, $this->dir);
        $this->assertIsResource($p);
        $out = stream_get_contents($pipes[1]);
        $err = stream_get_contents($pipes[2]);
        fclose($pipes[1]);
        fclose($pipes[2]);
        $this->assertSame(0, proc_close($p), "loading $stub failed: $err");
        $this->assertSame('', $err);
        return json_decode($out, true, 512, JSON_THROW_ON_ERROR);
    }

    /** The extension's surface, through JSON like the stub's, so both sides hold the same PHP types. */
    private static function extensionSurface(): array
    {
        $json = json_encode(ApiSurface::ofExtension(), JSON_THROW_ON_ERROR | JSON_PRESERVE_ZERO_FRACTION);
        return json_decode($json, true, 512, JSON_THROW_ON_ERROR);
    }

    public function testStubIsValidPhp(): void
    {
        exec(escapeshellarg(PHP_BINARY) . ' -n -l ' . escapeshellarg(self::STUB) . ' 2>&1', $lines, $code);
        $this->assertSame(0, $code, implode("\n", $lines));
    }

    public function testStubDeclaresExactlyWhatTheExtensionDeclares(): void
    {
        $ext = self::extensionSurface();
        $this->assertSame([], ApiSurface::differences($ext, $this->stubSurface(self::STUB)));

        // The extension surface holds what the comparison must cover, so the
        // empty result above means something (lower bounds: members added
        // later are covered by the comparison itself).
        $this->assertSame([], array_diff(
            ['swoole\timer', 'taskq\client', 'taskq\exception', 'taskq\mailer', 'taskq\mailexception', 'taskq\server', 'taskq\timer'],
            array_keys($ext['classes']),
        ));
        $this->assertSame([], array_diff_assoc(
            ['swoole\client' => 'TaskQ\Client', 'swoole\server' => 'TaskQ\Server', 'swoole_client' => 'TaskQ\Client',
             'swoole_server' => 'TaskQ\Server', 'taskclient' => 'TaskQ\Client', 'taskserver' => 'TaskQ\Server'],
            $ext['aliases'],
        ));
        $this->assertSame([], array_diff(
            ['swoole_set_process_name', 'swoole_timer_after', 'swoole_timer_clear', 'swoole_timer_tick', 'swoole_version', 'taskq\set_process_name'],
            array_keys($ext['functions']),
        ));
        $this->assertGreaterThanOrEqual(53, count($ext['constants']));
        $this->assertGreaterThanOrEqual(28, count($ext['classes']['taskq\server']['methods']));
        $this->assertGreaterThanOrEqual(11, count($ext['classes']['taskq\server']['properties']));
    }

    /**
     * The comparison catches drift: a method missing from the stub, a
     * renamed parameter, a changed default, a missing constant, a wrong
     * constant value, a missing alias and an extra function.
     */
    public function testDriftBetweenStubAndExtensionIsNamed(): void
    {
        $stub = file_get_contents(self::STUB);
        $edits = [
            '/\n\s*public function isConnected\(\): bool \{\}/' => '',
            '/function task\(mixed \$data, \?int \$taskWorkerIndex/' => 'function task(mixed $data, ?int $dstWorkerId',
            "/bool \\\$permanent = true, \\?/" => 'bool $permanent = false, ?',
            '/\n\s*const TASKQ_LOG_NONE = 6;/' => '',
            '/const SWOOLE_VERSION_ID = 40813;/' => 'const SWOOLE_VERSION_ID = 50000;',
            '/\n\s*class swoole_client extends \\\\TaskQ\\\\Client \{\}/' => '',
            '/function swoole_version\(\): string \{\}/' => "function swoole_version(): string {}\n    function swoole_cpu_num(): int {}",
        ];
        foreach ($edits as $pattern => $replacement) {
            $stub = preg_replace($pattern, $replacement, $stub, -1, $count);
            $this->assertSame(1, $count, "edit $pattern applies once");
        }
        file_put_contents("$this->dir/drifted.stub.php", $stub);

        $this->assertEqualsCanonicalizing([
            'TaskQ\Client::isConnected(): in the extension, missing from the stub',
            'TaskQ\Server::task(): parameter #1 ($taskWorkerIndex): name: the extension has "taskWorkerIndex", the stub "dstWorkerId"',
            'TaskQ\MailException::__construct(): parameter #2 ($permanent): default: the extension has {"value":true}, the stub {"value":false}',
            'constant TASKQ_LOG_NONE: in the extension, missing from the stub',
            'constant SWOOLE_VERSION_ID: the extension has 40813, the stub 50000',
            'class alias swoole_client: in the extension, missing from the stub',
            'function swoole_cpu_num(): in the stub, not in the extension',
        ], ApiSurface::differences(self::extensionSurface(), $this->stubSurface("$this->dir/drifted.stub.php")));
    }
}
