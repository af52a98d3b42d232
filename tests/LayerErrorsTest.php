<?php
use TaskQ\Tests\Support\TaskqTestCase;

/**
 * Arguments the PHP layer refuses before the engine sees them: each throws
 * TaskQ\Exception naming the value and what is allowed, with EINVAL (22) as
 * the code, like the engine's own argument errors.
 */
final class LayerErrorsTest extends TaskqTestCase
{
    /** @return array{0: string, 1: int, 2: string} class, code, message */
    private function thrown(callable $f): array
    {
        try {
            $f();
        } catch (Throwable $e) {
            return [get_class($e), $e->getCode(), $e->getMessage()];
        }
        $this->fail('no exception');
    }

    public function testAsyncClientIsRefused(): void
    {
        $this->assertSame(
            ['TaskQ\Exception', 22, 'the $async parameter is not supported: TaskClient is synchronous (use SWOOLE_SOCK_SYNC or omit it)'],
            $this->thrown(fn () => new TaskQ\Client(TASKQ_SOCK_TCP, true))
        );
    }

    public function testUnknownClientTypeIsRefused(): void
    {
        $this->assertSame(
            ['TaskQ\Exception', 22, 'unknown client type 99 (allowed: TASKQ_SOCK_TCP (1), TASKQ_SOCK_TCP6 (3), TASKQ_SOCK_UNIX_STREAM (5), optionally | TASKQ_KEEP)'],
            $this->thrown(fn () => new TaskQ\Client(99))
        );
    }

    public function testAnObjectAsAnOptionValueIsRefusedByServerAndClient(): void
    {
        $expected = ['TaskQ\Exception', 22, "invalid value for option 'timeout': an object or resource (allowed: scalars and arrays)"];
        $this->assertSame($expected, $this->thrown(fn () => (new TaskQ\Client(TASKQ_SOCK_TCP))->set(['timeout' => new stdClass()])));
        $expected[2] = "invalid value for option 'worker_num': an object or resource (allowed: scalars and arrays)";
        $this->assertSame($expected, $this->thrown(fn () => (new TaskQ\Server('127.0.0.1', 0))->set(['worker_num' => new stdClass()])));
    }

    public function testAValueTheClientCannotSerializeNamesTheFunction(): void
    {
        [$class, $code, $message] = $this->thrown(fn () => (new TaskQ\Client(TASKQ_SOCK_TCP))->task(fn () => 1));
        $this->assertSame(['TaskQ\Exception', 22], [$class, $code]);
        $this->assertStringStartsWith('serialize() failed: Exception: ', $message);
    }
}
