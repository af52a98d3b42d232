<?php
namespace TaskQ\Tests\Support;

/**
 * Real SMTP servers (tests/Support/smtp_sink.py on Debian's aiosmtpd) for
 * the tests that send mail, started on free loopback ports and stopped in
 * tearDown (call stopSinks()). For classes extending TaskqTestCase.
 */
trait SmtpSink
{
    /** @var array<int, array{proc: resource, dir: string}> sinks by port */
    private array $sinks = [];

    /** Stops every sink this test started; never hangs. */
    private function stopSinks(): void
    {
        foreach ($this->sinks as $sink) {
            $this->stopSink($sink['proc']);
        }
        $this->sinks = [];
    }

    /** Starts smtp_sink.py and returns its port once it accepts connections. */
    private function startSink(array $args = []): int
    {
        $dir = "$this->dir/sink-" . count($this->sinks);
        mkdir($dir);
        // Debian's interpreter: the one that sees python3-aiosmtpd.
        $cmd = array_merge(['/usr/bin/python3', __DIR__ . '/smtp_sink.py', '--dir', $dir, '--port-file', "$dir/port"], $args);
        $proc = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['file', "$dir/stdout", 'w'], 2 => ['file', "$dir/stderr", 'w']], $pipes);
        $this->assertIsResource($proc, 'cannot start the SMTP sink');
        $deadline = microtime(true) + 10;
        while (!is_file("$dir/port")) {
            if (!proc_get_status($proc)['running'] || microtime(true) > $deadline) {
                $this->stopSink($proc);
                $this->fail("the SMTP sink did not start:\n" . @file_get_contents("$dir/stderr"));
            }
            usleep(10000);
        }
        $port = (int) file_get_contents("$dir/port");
        $this->sinks[$port] = ['proc' => $proc, 'dir' => $dir];
        return $port;
    }

    /** SIGTERM, then SIGKILL if it is still there after 2 s; never hangs. */
    private function stopSink($proc): void
    {
        proc_terminate($proc, SIGTERM);
        $deadline = microtime(true) + 2;
        while (proc_get_status($proc)['running'] && microtime(true) < $deadline) {
            usleep(10000);
        }
        if (proc_get_status($proc)['running']) {
            proc_terminate($proc, SIGKILL);
        }
        proc_close($proc);
    }

    private function sinkDir(int $port): string
    {
        return $this->sinks[$port]['dir'];
    }

    /** Messages the sink stored, in arrival order, with the raw message under 'raw'. */
    private function messages(int $port): array
    {
        $out = [];
        foreach (glob($this->sinkDir($port) . '/msg-*.json') as $file) {
            $m = json_decode(file_get_contents($file), true);
            $m['raw'] = base64_decode($m['data']);
            $out[] = $m;
        }
        return $out;
    }

    /** Connections the sink accepted so far. */
    private function connections(int $port): int
    {
        return count(@file($this->sinkDir($port) . '/connections.log') ?: []);
    }
}
