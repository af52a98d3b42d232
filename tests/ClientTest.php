<?php
use TaskQ\Tests\Support\TaskqTestCase;
use TaskQ\Tests\Support\ServerProcess;

/**
 * TaskClient against real servers: connect/send/recv/close, their error
 * paths (warnings, errCode, errMsg, exceptions), unix and TCP6 sockets and
 * the raw (taskq_protocol => false) mode.
 */
final class ClientTest extends TaskqTestCase
{
    /**
     * Runs `$fn` with every PHP warning/notice collected instead of raised;
     * returns its result and leaves the messages in `$warnings`.
     */
    private function collectWarnings(callable $fn, ?array &$warnings): mixed
    {
        $warnings = [];
        set_error_handler(function (int $no, string $msg) use (&$warnings): bool {
            $warnings[] = [$no, $msg];
            return true;
        });
        try {
            return $fn();
        } finally {
            restore_error_handler();
        }
    }

    /** Asserts exactly one E_WARNING was collected and that it contains `$needle`. */
    private function assertOneWarning(array $warnings, string $needle): void
    {
        $this->assertCount(1, $warnings, 'exactly one warning: ' . var_export($warnings, true));
        $this->assertSame(E_WARNING, $warnings[0][0], 'an E_WARNING: ' . $warnings[0][1]);
        $this->assertStringContainsString($needle, $warnings[0][1]);
    }

    /**
     * A server with one worker that records every connect/receive/close
     * (payload base64-encoded) and runs `$onReceive` (PHP code seeing
     * $server, $fd, $data) after recording.
     */
    private function recordingServer(string $onReceive = '', string $listen = "'127.0.0.1', \$port", string $extraSettings = '', bool $waitListening = true): ServerProcess
    {
        $body = <<<PHP
\$server = new TaskServer($listen);
\$server->set(['worker_num' => 1, 'log_file' => \$dir . '/taskq.log' $extraSettings]);
\$server->on('Connect', function (\$server, \$fd, \$rid) { record('connect', ['fd' => \$fd]); });
\$server->on('Receive', function (\$server, \$fd, \$rid, \$data) {
    record('receive', ['fd' => \$fd, 'data' => base64_encode(\$data)]);
    $onReceive
});
\$server->on('Close', function (\$server, \$fd, \$rid) { record('close', ['fd' => \$fd]); });
\$server->start();
PHP;
        return $this->startServer($body, [], $waitListening);
    }

    /** Payloads of the recorded receive events, decoded, in order. */
    private function received(): array
    {
        return array_map(fn ($e) => base64_decode($e['data']), $this->events('receive'));
    }

    private function echoServer(string $listen = "'127.0.0.1', \$port", bool $waitListening = true): ServerProcess
    {
        return $this->recordingServer('$server->send($fd, $data);', $listen, '', $waitListening);
    }

    // ---------------------------------------------------------------- connect

    public function testConnectToClosedPortFailsWithWarningAndErrno111(): void
    {
        $port = self::freePort();
        $client = new TaskClient(TASKQ_SOCK_TCP);
        $ok = $this->collectWarnings(fn () => $client->connect('127.0.0.1', $port), $w);
        $this->assertFalse($ok);
        $this->assertOneWarning($w, "connect to server[127.0.0.1:$port] failed");
        $this->assertStringContainsString('111', $w[0][1]);
        $this->assertSame(111, $client->errCode);
        $this->assertIsString($client->errMsg);
        $this->assertStringContainsString("127.0.0.1:$port", $client->errMsg);
        $this->assertStringContainsString('refused', strtolower($client->errMsg));
        $this->assertFalse($client->isConnected());
    }

    public function testConnectTwiceWarnsReturnsFalseAndKeepsTheFirstConnection(): void
    {
        $server = $this->echoServer();
        $client = new TaskClient(TASKQ_SOCK_TCP);
        $this->assertTrue($client->connect('127.0.0.1', $this->port, 2));
        $ok = $this->collectWarnings(fn () => $client->connect('127.0.0.1', $this->port, 2), $w);
        $this->assertFalse($ok);
        $this->assertOneWarning($w, 'already');
        $this->assertTrue($client->isConnected());
        // The first connection still works and is the only one the server saw.
        $this->assertSame(5, $client->send('hello'));
        $this->assertSame('hello', $client->recv());
        $this->assertCount(1, $this->events('connect'));
        $client->close();
    }

    public function testConnectWithEmptyHostWarnsAndFails(): void
    {
        $client = new TaskClient(TASKQ_SOCK_TCP);
        $ok = $this->collectWarnings(fn () => $client->connect('', self::freePort()), $w);
        $this->assertFalse($ok);
        $this->assertCount(1, $w);
        $this->assertSame(E_WARNING, $w[0][0]);
        $this->assertNotSame(0, $client->errCode);
        $this->assertFalse($client->isConnected());
    }

    /**
     * A greeting sent in onConnect reaches the client before the client has
     * announced its protocol, so unframed; it is still the first message,
     * whether the client's first call is recv() or send().
     */
    public function testAGreetingFromOnConnectIsTheFirstMessage(): void
    {
        $server = $this->startServer(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'log_file' => $dir . '/taskq.log']);
$server->on('Connect', function ($server, $fd, $rid) { $server->send($fd, "welcome $fd"); record('connect', ['fd' => $fd]); });
$server->on('Receive', function ($server, $fd, $rid, $data) { $server->send($fd, "echo $data"); });
$server->start();
PHP);
        foreach (['recv first' => false, 'send first' => true] as $case => $sendFirst) {
            $n = count($this->events('connect')) + 1;
            $client = new TaskClient(TASKQ_SOCK_TCP);
            $this->assertTrue($client->connect('127.0.0.1', $this->port, 5));
            $this->waitUntil(fn () => count($this->events('connect')) >= $n, 5, 'onConnect ran', $server);
            usleep(50000); // the greeting reaches the client before its first call
            if ($sendFirst) {
                $this->assertSame(2, $client->send('hi'), $case);
            }
            $this->assertStringStartsWith('welcome ', (string) $client->recv(), $case);
            if ($sendFirst) {
                $this->assertSame('echo hi', $client->recv(), $case);
            }
            $client->close();
        }
    }

    /**
     * The race the hold closes: a client that sends at once after connect()
     * while onConnect greets. The master holds the greeting until the client
     * shows its protocol, then frames it, so it is never misread as a frame.
     */
    public function testAGreetingRacingTheFirstSendArrivesWholeEveryTime(): void
    {
        $server = $this->startServer(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 2, 'dispatch_mode' => 1, 'log_file' => $dir . '/taskq.log']);
$server->on('Connect', function ($server, $fd, $rid) { $server->send($fd, "welcome $fd"); });
$server->on('Receive', function ($server, $fd, $rid, $data) { $server->send($fd, "echo $data"); });
$server->start();
PHP);
        for ($i = 0; $i < 100; $i++) {
            $client = new TaskClient(TASKQ_SOCK_TCP);
            $this->assertTrue($client->connect('127.0.0.1', $this->port, 5));
            usleep(($i % 50) * 10); // 0 to 490 µs: sweeps the moment onConnect's greeting is written
            $this->assertSame(strlen("m$i"), $client->send("m$i"));
            $got = [(string) $client->recv(), (string) $client->recv()];
            sort($got);
            $this->assertSame("echo m$i", $got[0], "round $i: the reply, whole");
            $this->assertStringStartsWith('welcome ', $got[1], "round $i: the greeting, whole");
            $this->assertSame(0, $client->errCode, "round $i");
            $client->close();
        }
        $this->assertStringNotContainsString('connection closed', (string) @file_get_contents($this->dir . '/taskq.log'));
    }

    /**
     * A foreign client that waits for the server to speak first still gets
     * the greeting, unframed, once the hold (20 ms) is over.
     */
    public function testAForeignClientWaitingForAGreetingGetsItRaw(): void
    {
        $this->startServer(<<<'PHP'
$server = new TaskServer('127.0.0.1', $port);
$server->set(['worker_num' => 1, 'log_file' => $dir . '/taskq.log']);
$server->on('Connect', function ($server, $fd, $rid) { $server->send($fd, "220 welcome\r\n"); });
$server->on('Receive', function ($server, $fd, $rid, $data) { $server->send($fd, "250 ok\r\n"); });
$server->start();
PHP);
        $sock = stream_socket_client("tcp://127.0.0.1:{$this->port}", $errno, $errstr, 5);
        $this->assertIsResource($sock, $errstr);
        stream_set_timeout($sock, 5);
        $this->assertSame("220 welcome\r\n", fgets($sock), 'the greeting, unframed, without sending anything first');
        fwrite($sock, "HELO x\r\n");
        $this->assertSame("250 ok\r\n", fgets($sock));
        fclose($sock);
    }

    public function testRecvTimesOutWithErrno11WhenTheServerNeverReplies(): void
    {
        $server = $this->recordingServer(); // records, never replies
        $client = new TaskClient(TASKQ_SOCK_TCP);
        $this->assertTrue($client->connect('127.0.0.1', $this->port, 0.2));
        $this->assertSame(4, $client->send('ping'));
        $this->waitEvents('receive', 1, 5, $server);

        $t0 = microtime(true);
        $r = $this->collectWarnings(fn () => $client->recv(), $w);
        $elapsed = microtime(true) - $t0;
        $this->assertFalse($r, 'recv() returns false on timeout');
        $this->assertSame(11, $client->errCode, 'EAGAIN on timeout');
        $this->assertGreaterThanOrEqual(0.15, $elapsed, 'the connect timeout (0.2 s) is also the read timeout');
        $this->assertLessThan(2.0, $elapsed, 'recv() gives up after about the connect timeout');
        foreach ($w as [$no]) {
            $this->assertSame(E_WARNING, $no);
        }
        $client->close();
    }

    // ------------------------------------------------------------------- send

    public function testSendBeforeConnectWarnsWithErrCode5001(): void
    {
        $client = new TaskClient(TASKQ_SOCK_TCP);
        $r = $this->collectWarnings(fn () => $client->send('data'), $w);
        $this->assertFalse($r);
        $this->assertOneWarning($w, 'client is not connected to server');
        $this->assertSame(5001, $client->errCode);
    }

    public function testSendEmptyStringWarnsAndSendsNothing(): void
    {
        $server = $this->recordingServer();
        $client = new TaskClient(TASKQ_SOCK_TCP);
        $this->assertTrue($client->connect('127.0.0.1', $this->port, 2));
        $r = $this->collectWarnings(fn () => $client->send(''), $w);
        $this->assertFalse($r);
        $this->assertOneWarning($w, 'data to send is empty');
        $this->assertTrue($client->isConnected(), 'an empty send does not break the connection');
        $this->assertSame(5, $client->send('after'));
        $client->close();
        $this->waitEvents('close', 1, 5, $server);
        $this->assertSame(['after'], $this->received(), 'no empty message reached onReceive');
    }

    public function testSendObjectThrowsPhpsTypeErrorAndSendsNothing(): void
    {
        $server = $this->recordingServer();
        $client = new TaskClient(TASKQ_SOCK_TCP);
        $this->assertTrue($client->connect('127.0.0.1', $this->port, 2));
        try {
            $client->send(new stdClass());
            $this->fail('send(object) must throw');
        } catch (TypeError $e) {
            $this->assertSame('TaskQ\Client::send(): Argument #1 ($data) must be of type array|string, stdClass given', $e->getMessage());
        }
        $this->assertTrue($client->isConnected());
        $this->assertSame(2, $client->send('ok'));
        $client->close();
        $this->waitEvents('close', 1, 5, $server);
        $this->assertSame(['ok'], $this->received());
    }

    public function testSendArraySendsItsJsonEncoding(): void
    {
        $server = $this->recordingServer();
        $data = [
            'from_email' => 'a/b@example.com',
            'title' => "héllo wörld ✓ \"quoted\"\n",
            'n' => 42,
            'f' => 1.5,
            'list' => [1, 2, [3, null, true]],
            'empty' => [],
        ];
        $json = json_encode($data, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
        $client = new TaskClient(TASKQ_SOCK_TCP);
        $this->assertTrue($client->connect('127.0.0.1', $this->port, 2));
        $n = $client->send($data);
        $client->close();
        $this->waitEvents('close', 1, 5, $server);
        $got = $this->received();
        $this->assertCount(1, $got, 'one array = one onReceive');
        $this->assertSame($data, json_decode($got[0], true), 'onReceive gets JSON decoding to the same array');
        $this->assertSame($json, $got[0], 'byte-identical to json_encode(UNESCAPED_SLASHES|UNESCAPED_UNICODE)');
        $this->assertSame(strlen($got[0]), $n, 'send() returns the JSON byte count');
    }

    public function testSendReturnsThePayloadByteCount(): void
    {
        $server = $this->recordingServer();
        $client = new TaskClient(TASKQ_SOCK_TCP);
        $this->assertTrue($client->connect('127.0.0.1', $this->port, 2));
        $payloads = ['x', "ünï\0cødé", str_repeat('z', 70000), random_bytes(300000)];
        foreach ($payloads as $p) {
            $this->assertSame(strlen($p), $client->send($p));
        }
        $client->close();
        $this->waitEvents('close', 1, 10, $server);
        $this->assertSame($payloads, $this->received());
    }

    // ------------------------------------------------------------------- recv

    public function testRecvReturnsExactlyOneServerSendEachThenEmptyStringOnServerClose(): void
    {
        $server = $this->recordingServer(
            '$server->send($fd, "one"); $server->send($fd, "two:" . $data); $server->send($fd, str_repeat("3", 1000)); $server->close($fd);'
        );
        $client = new TaskClient(TASKQ_SOCK_TCP);
        $this->assertTrue($client->connect('127.0.0.1', $this->port, 3));
        $client->send('go');
        $this->assertSame('one', $client->recv());
        $this->assertSame('two:go', $client->recv());
        $this->assertSame(str_repeat('3', 1000), $client->recv());
        $this->assertSame('', $client->recv(), 'recv() returns "" once the server closed the connection');
        $client->close();
    }

    public function testRecvReturnsAWholeMessageLargerThanTheDefaultBufferSize(): void
    {
        $server = $this->recordingServer('$server->send($fd, str_repeat(md5($data), 10000)); $server->send($fd, "tail");');
        $client = new TaskClient(TASKQ_SOCK_TCP);
        $this->assertTrue($client->connect('127.0.0.1', $this->port, 3));
        $client->send('big');
        $big = $client->recv();
        $this->assertSame(320000, strlen((string) $big));
        $this->assertSame(str_repeat(md5('big'), 10000), $big);
        $this->assertSame('tail', $client->recv());
        $client->close();
    }

    // ------------------------------------------------------------------ close

    public function testCloseMakesIsConnectedFalseAndCloseTwiceWarns(): void
    {
        $server = $this->echoServer();
        $client = new TaskClient(TASKQ_SOCK_TCP);
        $this->assertFalse($client->isConnected());
        $this->assertTrue($client->connect('127.0.0.1', $this->port, 2));
        $this->assertTrue($client->isConnected());
        $this->assertTrue($client->close());
        $this->assertFalse($client->isConnected());
        $r = $this->collectWarnings(fn () => $client->close(), $w);
        $this->assertFalse($r);
        $this->assertCount(1, $w);
        $this->assertSame(E_WARNING, $w[0][0]);
        $this->waitEvents('close', 1, 5, $server);
        // A closed client behaves like a never-connected one.
        $r = $this->collectWarnings(fn () => $client->send('x'), $w);
        $this->assertFalse($r);
        $this->assertOneWarning($w, 'client is not connected to server');
        $this->assertSame(5001, $client->errCode);
    }

    public function testReconnectAfterCloseWorks(): void
    {
        $server = $this->echoServer();
        $client = new TaskClient(TASKQ_SOCK_TCP);
        $this->assertTrue($client->connect('127.0.0.1', $this->port, 2));
        $this->assertSame(5, $client->send('first'));
        $this->assertSame('first', $client->recv());
        $this->assertTrue($client->close());
        $this->waitEvents('close', 1, 5, $server);

        $this->assertTrue($client->connect('127.0.0.1', $this->port, 2));
        $this->assertTrue($client->isConnected());
        $this->assertSame(6, $client->send('second'));
        $this->assertSame('second', $client->recv());
        $this->assertTrue($client->close());
        $this->waitEvents('close', 2, 5, $server);

        $this->assertSame(['first', 'second'], $this->received());
        $connects = $this->events('connect');
        $this->assertCount(2, $connects);
        $receives = $this->events('receive');
        $this->assertSame($connects[0]['fd'], $receives[0]['fd']);
        $this->assertSame($connects[1]['fd'], $receives[1]['fd']);
    }

    // ---------------------------------------------------------- socket types

    public function testUnixSocketClient(): void
    {
        $path = "$this->dir/taskq.sock";
        $server = $this->echoServer(var_export($path, true) . ', 0, TASKQ_PROCESS, TASKQ_SOCK_UNIX_STREAM', false);
        $this->waitUntil(fn () => self::unixListening($path), 10, 'the unix socket to listen', $server);

        $client = new TaskClient(TASKQ_SOCK_UNIX_STREAM);
        $this->assertTrue($client->connect($path, 0, 2));
        $this->assertTrue($client->isConnected());
        $payload = "unix\0payload" . random_bytes(100);
        $this->assertSame(strlen($payload), $client->send($payload));
        $this->assertSame($payload, $client->recv());
        $this->assertTrue($client->close());
        $this->waitEvents('close', 1, 5, $server);
        $this->assertSame([$payload], $this->received());
    }

    public function testUnixSocketClientToAMissingPathFails(): void
    {
        $client = new TaskClient(TASKQ_SOCK_UNIX_STREAM);
        $r = $this->collectWarnings(fn () => $client->connect("$this->dir/nobody.sock", 0, 1), $w);
        $this->assertFalse($r);
        $this->assertCount(1, $w);
        $this->assertSame(E_WARNING, $w[0][0]);
        $this->assertSame(2, $client->errCode, 'ENOENT');
    }

    public function testTcp6ClientToLoopback(): void
    {
        $probe = @stream_socket_server('tcp://[::1]:0', $errno, $errstr);
        if ($probe === false) {
            $this->markTestSkipped("::1 cannot be bound on this machine: $errstr");
        }
        $name = stream_socket_get_name($probe, false);
        fclose($probe);
        $port = (int) substr($name, strrpos($name, ':') + 1);

        $server = $this->startServer(<<<'PHP'
$server = new TaskServer('::1', $port, TASKQ_PROCESS, TASKQ_SOCK_TCP6);
$server->set(['worker_num' => 1, 'log_file' => $dir . '/taskq.log']);
$server->on('Receive', function ($server, $fd, $rid, $data) {
    record('receive', ['data' => base64_encode($data)]);
    $server->send($fd, "v6:" . $data);
});
$server->start();
PHP, ['TASKQ_PORT' => $port]);

        $client = new TaskClient(TASKQ_SOCK_TCP6);
        $this->assertSame(TASKQ_SOCK_TCP6, $client->type);
        $this->assertTrue($client->connect('::1', $port, 2));
        $this->assertSame(5, $client->send('hello'));
        $this->assertSame('v6:hello', $client->recv());
        $client->close();
        $this->assertSame(['hello'], $this->received());
    }

    // --------------------------------------------------------- construction

    public function testUnknownClientTypeThrows(): void
    {
        foreach ([0, 2, 4, 6, 7, 99, -1] as $type) {
            try {
                new TaskClient($type);
                $this->fail("new TaskClient($type) must throw");
            } catch (TaskQ\Exception $e) {
                $this->assertStringContainsString((string) $type, $e->getMessage());
            }
        }
        $this->assertSame(TASKQ_SOCK_TCP, (new TaskClient())->type);
        $this->assertSame(TASKQ_SOCK_TCP, (new TaskClient(TASKQ_SOCK_TCP | TASKQ_KEEP))->type & 0xff);
    }

    public function testSetUnknownOptionWarnsButKeepsWorking(): void
    {
        $server = $this->echoServer();
        $client = new TaskClient(TASKQ_SOCK_TCP);
        $r = $this->collectWarnings(fn () => $client->set(['no_such_option' => 1, 'package_max_length' => 1 << 20]), $w);
        $this->assertNotFalse($r);
        $this->assertOneWarning($w, "unsupported option 'no_such_option'");
        $this->assertTrue($client->connect('127.0.0.1', $this->port, 2));
        $client->send('still works');
        $this->assertSame('still works', $client->recv());
        $client->close();
    }

    // -------------------------------------------------------------- raw mode

    public function testTaskqProtocolFalseMakesARawClient(): void
    {
        $server = $this->echoServer();
        $client = new TaskClient(TASKQ_SOCK_TCP);
        $client->set(['taskq_protocol' => false]);
        $this->assertTrue($client->connect('127.0.0.1', $this->port, 2));
        $payload = "raw bytes\0\x01\x02 no framing";
        $this->assertSame(strlen($payload), $client->send($payload));

        // Raw replies may come in pieces; gather until we have as much as we sent.
        $reply = '';
        $deadline = microtime(true) + 5;
        while (strlen($reply) < strlen($payload) && microtime(true) < $deadline) {
            $chunk = $client->recv();
            if ($chunk === false || $chunk === '') {
                break;
            }
            $reply .= $chunk;
        }
        $this->assertSame($payload, $reply, 'the echo comes back as the raw bytes, no taskq frame header');
        $client->close();
        $this->waitEvents('close', 1, 5, $server);
        $got = implode('', $this->received());
        $this->assertSame($payload, $got, 'the server saw the raw bytes: no magic, no frame header');
    }
}
